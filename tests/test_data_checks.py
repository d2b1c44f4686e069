"""segkit.data.checks.check_dataset: statistics and every guard-rail error path, collected in one error."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkit.data import DataError, FolderDataset, SegDataset, SplitDataset, check_dataset
from segkit.data import io as dio


@pytest.fixture(autouse=True)
def _reset_warning_counts():
    dio._warn_counts.clear()


def img(path, size=(8, 10), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    im = Image.fromarray(a)
    if mode != "RGB":
        im = im.convert(mode)
    im.save(path)
    return str(path)


def lbl(path, values, size=(8, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.resize(np.asarray(values, np.uint8), size[0] * size[1]).reshape(size), "L").save(path)
    return str(path)


def test_camvid_train_counts_match_meta(camvid):
    # No wall-time assertion: timings belong in benchmarks/, and a cold disk cache on a 2-core
    # machine made this check take 12 s once (CI flake).
    ds = SplitDataset(camvid, "train")
    report = check_dataset(ds, progress=False)
    info = json.loads((camvid / "meta.json").read_text())["pixel_counts"]["train"]
    assert report.ok and report.num_samples == 367
    assert report.pixel_counts.tolist() == info["per_class"]
    assert report.ignore_pixels == info["ignore_255"] and report.total_pixels == info["total"]
    assert report.image_sizes == {(480, 360): 367}
    assert abs(report.frequencies.sum() - 1) < 1e-9
    table = report.table()
    assert "bicyclist" in table and "367 samples" in table


def test_all_problems_collected_in_one_error(tmp_path):
    samples = [
        (img(tmp_path / "ok.png"), lbl(tmp_path / "l" / "ok.png", [0, 1, 255])),
        (img(tmp_path / "oor.png"), lbl(tmp_path / "l" / "oor.png", [0, 1, 7, 9])),
        (img(tmp_path / "col.png"), img(tmp_path / "l" / "col.png")),  # colour mask
        (img(tmp_path / "mis.png"), lbl(tmp_path / "l" / "mis.png", [0], size=(8, 11))),
        (img(tmp_path / "nolabel.png"), str(tmp_path / "l" / "nolabel.png")),
        (img(tmp_path / "unlabelled.png"), None),
        (str(tmp_path / "junk.png"), lbl(tmp_path / "l" / "junk.png", [0])),
        (img(tmp_path / "trunc.png", size=(64, 64)), lbl(tmp_path / "l" / "trunc.png", [0], size=(64, 64))),
    ]
    (tmp_path / "junk.png").write_text("not an image")
    data = Path(samples[-1][0]).read_bytes()
    Path(samples[-1][0]).write_bytes(data[: len(data) // 2])
    ds = SegDataset(samples, ["a", "b", "c"], name="bad")
    with pytest.raises(DataError) as e:
        check_dataset(ds, progress=False)
    msg = str(e.value)
    assert msg.startswith("bad: 7 problem(s) in 8 samples")
    assert "oor.png: label values [7, 9] outside [0, 3)" in msg
    assert "col.png: label is a 3-channel colour mask" in msg and "colour_to_index" in msg
    assert "mis.png and" in msg and "image is 10x8" in msg
    assert "nolabel.png: label file not found (expected for image" in msg and "unlabelled.png: no label file" in msg
    assert "junk.png: not a readable image" in msg
    assert "trunc.png" in msg and "truncated" in msg
    kinds = e.value.report.problem_kinds
    assert kinds == {
        "out-of-range values": 1,
        "colour mask": 1,
        "size mismatch": 1,
        "missing label": 2,
        "unreadable image": 2,
    }
    # statistics still cover the readable labels; without raising the report carries the problems
    report = check_dataset(ds, progress=False, raise_on_error=False)
    assert len(report.problems) == 7 and report.out_of_range_pixels == 40 and report.pixel_counts[0] > 0


def test_num_classes_override_and_listing_limit(tmp_path):
    samples = [(img(tmp_path / f"{i}.png"), lbl(tmp_path / "l" / f"{i}.png", [0, 5])) for i in range(6)]
    ds = SegDataset(samples, [f"c{i}" for i in range(6)])
    assert check_dataset(ds, progress=False).ok
    with pytest.raises(DataError, match=r"6 problem\(s\)(.|\n)*\.\.\. and 2 more"):
        check_dataset(ds, num_classes=3, progress=False, max_listed=4)


def test_reduce_zero_label_reports_stored_values(tmp_path):
    samples = [(img(tmp_path / "a.png"), lbl(tmp_path / "l" / "a.png", [0, 1, 3, 4]))]
    ds = SegDataset(samples, ["x", "y"], reduce_zero_label=True)
    with pytest.raises(
        DataError, match=r"label values \[2, 3\] \(stored values \[3, 4\] before the label convention\)"
    ):
        check_dataset(ds, progress=False)


def test_conversion_warnings_and_hints(tmp_path):
    samples = [
        (img(tmp_path / "g.png", mode="L"), lbl(tmp_path / "l" / "g.png", [0, 255])),
        (img(tmp_path / "a.png", mode="RGBA"), lbl(tmp_path / "l" / "a.png", [0, 255])),
    ]
    report = check_dataset(SegDataset(samples, ["bg", "fg"]), progress=False)
    assert report.conversions == {"grayscale -> RGB": 1, "RGBA -> RGB (alpha dropped)": 1}
    assert any("label_map={255: 1}" in w for w in report.warnings)
    assert any("never occur: 1 fg" in w for w in report.warnings)
    one_based = [(img(tmp_path / "b.png"), lbl(tmp_path / "l" / "b.png", [1, 2, 3]))]
    with pytest.raises(DataError) as e:
        check_dataset(SegDataset(one_based, ["a", "b", "c"]), progress=False)
    assert any("1-based" in w for w in e.value.report.warnings)


def test_folder_dataset_check_with_progress(tmp_path, capsys):
    for i in range(3):
        img(tmp_path / "i" / f"{i}.jpg")
        lbl(tmp_path / "l" / f"{i}.png", [0, 1, 2])
    report = check_dataset(FolderDataset(tmp_path / "i", tmp_path / "l", classes=3), progress=True)
    assert report.pixel_counts.tolist() == [3 * 27, 3 * 27, 3 * 26]  # 80 px cycling 0,1,2 per label
    assert report.image_counts.tolist() == [3, 3, 3]
