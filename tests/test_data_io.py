"""segkit.data.io: image / label reading, conversions with warnings, errors naming the file."""

import warnings

import numpy as np
import pytest
from PIL import Image

from segkit.data import io as dio
from segkit.data.io import (
    DataError,
    colour_to_index,
    convert_colour_masks,
    index_to_colour,
    probe_image,
    read_image,
    read_label,
)


@pytest.fixture(autouse=True)
def _reset_warning_counts():
    dio._warn_counts.clear()
    yield
    dio._warn_counts.clear()


def rgb(h=20, w=30, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_read_rgb_png_webp_exact_and_jpeg(tmp_path):
    a = rgb()
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(a).save(tmp_path / "a.webp", lossless=True)
    Image.fromarray(a).save(tmp_path / "a.jpg", quality=95)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(read_image(tmp_path / "a.png"), a)
        assert np.array_equal(read_image(tmp_path / "a.webp"), a)
        j = read_image(tmp_path / "a.jpg")
    assert j.shape == (20, 30, 3) and j.dtype == np.uint8
    assert np.abs(j.astype(int) - np.asarray(Image.open(tmp_path / "a.jpg")).astype(int)).max() == 0


def test_grayscale_rgba_palette_16bit_images_warn_and_convert(tmp_path):
    g = rgb()[:, :, 0]
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    with pytest.warns(UserWarning, match=r"g\.png.*grayscale"):
        out = read_image(tmp_path / "g.png")
    assert out.shape == (20, 30, 3) and all(np.array_equal(out[:, :, c], g) for c in range(3))

    rgba = np.dstack([rgb(), np.full((20, 30), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    with pytest.warns(UserWarning, match=r"a\.png.*alpha"):
        assert np.array_equal(read_image(tmp_path / "a.png"), rgba[:, :, :3])

    p = Image.fromarray((g % 4).astype(np.uint8), "P")
    p.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9] + [0] * 756)
    p.save(tmp_path / "p.png")
    with pytest.warns(UserWarning, match="palette"):
        out = read_image(tmp_path / "p.png")
    assert np.array_equal(out[g % 4 == 1], np.tile([0, 255, 0], ((g % 4 == 1).sum(), 1)))

    v16 = np.array([[0, 257 * 100, 65535, 257 * 3]], np.uint16)
    Image.fromarray(v16).save(tmp_path / "s.png")
    with pytest.warns(UserWarning, match=r"s\.png.*16-bit"):
        out = read_image(tmp_path / "s.png")
    assert out[0, :, 0].tolist() == [0, 100, 255, 3] and out.dtype == np.uint8


def test_exif_orientation_applied(tmp_path):
    a = rgb(10, 16)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored pixels must be rotated 90 degrees clockwise for display
    Image.fromarray(a).save(tmp_path / "o.png", exif=exif.tobytes())
    out = read_image(tmp_path / "o.png")
    assert out.shape == (16, 10, 3)
    assert np.array_equal(out, np.rot90(a, k=-1))
    info = probe_image(tmp_path / "o.png")
    assert (info.height, info.width, info.orientation) == (16, 10, 6)
    Image.fromarray(a).save(tmp_path / "o.jpg", exif=exif.tobytes())
    assert read_image(tmp_path / "o.jpg").shape == (16, 10, 3)


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_truncated_image_raises_naming_file(tmp_path, fmt):
    big = np.random.default_rng(1).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    path = tmp_path / f"t.{fmt}"
    Image.fromarray(big).save(path, **({"lossless": True} if fmt == "webp" else {}))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"t\.{fmt}.*(truncated|corrupt)"):
        read_image(path)
    with pytest.raises(DataError, match=rf"t\.{fmt}"):
        probe_image(path)


def test_unreadable_missing_empty_files(tmp_path):
    (tmp_path / "x.png").write_text("this is not an image")
    with pytest.raises(DataError, match=r"x\.png: not a readable image"):
        read_image(tmp_path / "x.png")
    with pytest.raises(DataError, match=r"nope\.jpg: file not found"):
        read_image(tmp_path / "nope.jpg")
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"e\.png: empty file"):
        read_label(tmp_path / "e.png")
    with pytest.raises(DataError, match=r"x\.png"):
        read_label(tmp_path / "x.png")


def test_read_label_modes(tmp_path):
    lbl = np.random.default_rng(2).integers(0, 12, (20, 30)).astype(np.uint8)
    lbl[0, :5] = 255
    Image.fromarray(lbl, "L").save(tmp_path / "l.png")
    assert np.array_equal(read_label(tmp_path / "l.png"), lbl)
    # Pascal-VOC-style palette PNG: indices are returned, not colours
    p = Image.fromarray(lbl, "P")
    p.putpalette(list(np.random.default_rng(3).integers(0, 256, 768)))
    p.save(tmp_path / "p.png")
    assert np.array_equal(read_label(tmp_path / "p.png"), lbl)
    # 16-bit label with small values is fine; values > 255 are refused
    Image.fromarray(lbl.astype(np.uint16)).save(tmp_path / "s.png")
    assert np.array_equal(read_label(tmp_path / "s.png"), lbl)
    Image.fromarray(np.full((4, 4), 300, np.uint16)).save(tmp_path / "b.png")
    with pytest.raises(DataError, match=r"b\.png.*300"):
        read_label(tmp_path / "b.png")
    # three equal channels: accepted with a warning
    Image.fromarray(np.dstack([lbl] * 3)).save(tmp_path / "g3.png")
    with pytest.warns(UserWarning, match="three equal channels"):
        assert np.array_equal(read_label(tmp_path / "g3.png"), lbl)


def test_colour_mask_label_refused_with_conversion_hint(tmp_path):
    palette = [(128, 64, 128), (70, 70, 70), (0, 0, 142)]
    lbl = np.random.default_rng(4).integers(0, 3, (12, 16)).astype(np.uint8)
    Image.fromarray(index_to_colour(lbl, palette)).save(tmp_path / "c.png")
    with pytest.raises(DataError, match=r"c\.png: label is a 3-channel colour mask") as e:
        read_label(tmp_path / "c.png")
    assert "colour_to_index" in str(e.value) and "convert_colour_masks" in str(e.value)
    # converting with the palette gives the indices back; via read_label(colours=...) too
    assert np.array_equal(read_label(tmp_path / "c.png", colours=palette), lbl)
    n = convert_colour_masks(tmp_path, tmp_path / "out", palette)
    assert n == 1 and np.array_equal(read_label(tmp_path / "out" / "c.png"), lbl)


def test_colour_to_index_unknown_and_duplicates():
    palette = [(0, 0, 0), (255, 0, 0)]
    m = np.zeros((2, 3, 3), np.uint8)
    m[0, 0] = (255, 0, 0)
    m[1, 2] = (1, 2, 3)
    with pytest.raises(DataError, match=r"\(1, 2, 3\)"):
        colour_to_index(m, palette)
    out = colour_to_index(m, palette, unknown=255)
    assert out.tolist() == [[1, 0, 0], [0, 0, 255]]
    with pytest.raises(ValueError, match="duplicate"):
        colour_to_index(m, [(0, 0, 0), (0, 0, 0)])


def test_warning_limit(tmp_path):
    Image.fromarray(np.zeros((2, 2), np.uint8), "L").save(tmp_path / "g.png")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for _ in range(dio.WARNING_LIMIT + 5):
            read_image(tmp_path / "g.png")
    assert len(rec) == dio.WARNING_LIMIT and "suppressed" in str(rec[-1].message)
