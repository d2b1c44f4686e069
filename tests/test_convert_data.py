"""``segkit convert-data`` (segkit.data.convert): any dataset type written out in the split layout and
read back exactly; a bad export leaves nothing behind; the output policy; in-memory (hf) images."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from annotation_exports import to_coco
from conftest import REPO, require_dataset
from PIL import Image

import segkit.data as D
from segkit.cli import main as cli
from segkit.data.convert import convert_to_split_layout


@pytest.fixture(scope="module")
def camvid_pairs():
    ds = D.SplitDataset(require_dataset("camvid"), "test")
    return ds, [(ds.samples[i][0], D.read_label(ds.samples[i][1])) for i in range(4)]


@pytest.fixture
def coco(camvid_pairs, tmp_path):
    """Four CamVid test labels as a COCO RLE export (void pixels: no annotation) and its inline spec."""
    src, pairs = camvid_pairs
    ann = to_coco(pairs, src.classes, tmp_path / "coco", rle=True, background=None)
    spec = {"type": "coco", "annotations": str(ann), "images": str(tmp_path / "coco" / "images"),
            "background": None, "order": "area"}  # fmt: skip
    return spec, tmp_path / "coco"


def _left_over(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name == out.name or p.name.startswith(f".{out.name}."))


def test_config_round_trip_is_exact(camvid_pairs, coco, tmp_path, capsys):
    src, pairs = camvid_pairs
    spec, export = coco
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({"data": {"train": {**spec, "split": "train"}, "val": {**spec, "split": "val"}}}))
    out = tmp_path / "layout"
    assert cli(["convert-data", str(config), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "train: 3 images" in stdout and "val: 1 images" in stdout and str(out) in stdout.splitlines()[-1]

    meta = json.loads((out / "meta.json").read_text())
    assert meta["classes"] == src.classes and meta["ignore_index"] == 255 and meta["splits"] == {"train": 3, "val": 1}
    assert meta["layout"]["image"] == "images/{split}/{stem}.webp"
    originals = {Path(p).stem: (p, label) for p, label in pairs}
    seen = 0
    for split in ("train", "val"):
        ds = D.build_dataset({"type": "split", "root": str(out), "split": split})
        assert ds.classes == src.classes and ds.palette == meta["palette"]
        counts = np.zeros(256, np.int64)
        for i, (image_path, label_path) in enumerate(ds.samples):
            original_image, original_label = originals[Path(image_path).stem]
            image, label = ds.load(i)
            np.testing.assert_array_equal(label, original_label)  # exact, ignore (255) included
            assert Path(image_path).read_bytes() == Path(original_image).read_bytes()
            png = Image.open(label_path)
            assert png.mode == "P" and png.getpalette()[:33] == sum(ds.palette, [])  # colours for a viewer
            counts += np.bincount(label.ravel(), minlength=256)
            seen += 1
        assert meta["pixel_counts"][split]["per_class"] == counts[: len(src.classes)].tolist()
    assert seen == 4 and _left_over(out) == ["layout"]
    assert (export / "images").is_dir()  # the export is untouched


def test_bad_export_leaves_nothing(coco, tmp_path, capsys):
    spec, export = coco
    out = tmp_path / "layout"
    ann = Path(spec["annotations"])
    doc = json.loads(ann.read_text())
    good = json.dumps(doc)
    doc["annotations"][0]["segmentation"] = [[1, 1, 5, 5]]  # a polygon of 2 points
    ann.write_text(json.dumps(doc))
    assert cli(["convert-data", json.dumps(spec), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(ann) in err[0] and "polygons need at least 3 points" in err[0], err
    assert _left_over(out) == []

    ann.write_text(good)  # a broken image, found while writing: the partial folder goes too
    broken = sorted((export / "images").iterdir())[2]
    data = broken.read_bytes()
    broken.chmod(0o644)
    broken.write_bytes(data[: len(data) // 2])
    assert cli(["convert-data", json.dumps(spec), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"segkit convert-data: error: {broken}:"), err
    assert _left_over(out) == []


def test_output_policy(coco, tmp_path, capsys):
    spec, _ = coco
    out = tmp_path / "layout"
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    (tmp_path / f".layout.partial-{dead.pid}" / "images").mkdir(parents=True)  # a killed run's: removed
    args = ["convert-data", json.dumps(spec), "--split", "test", "--out", str(out)]
    assert cli(args) == 0
    assert _left_over(out) == ["layout"]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "already holds" in err and "--overwrite" in err
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()} == before
    assert cli([*args, "--overwrite"]) == 0
    (prev,) = tmp_path.glob("layout.prev-*")
    moved = sorted(p.relative_to(prev) for p in prev.rglob("*") if p.is_file())
    assert moved == sorted(p.relative_to(out) for p in before)
    assert len(D.SplitDataset(out, "test")) == 4 and not list(tmp_path.glob(".layout.partial-*"))


def test_hf_in_memory_images_become_png(camvid_pairs, tmp_path, capsys):
    import datasets

    src, pairs = camvid_pairs
    labels = []
    for k, (_, label) in enumerate(pairs[:2]):
        Image.fromarray(label).save(tmp_path / f"label_{k}.png")
        labels.append(str(tmp_path / f"label_{k}.png"))
    data = datasets.Dataset.from_dict({"image": [p for p, _ in pairs[:2]], "annotation": labels})
    data = data.cast_column("image", datasets.Image()).cast_column("annotation", datasets.Image())
    datasets.DatasetDict({"validation": data}).save_to_disk(str(tmp_path / "hf"))
    (tmp_path / "hf" / "id2label.json").write_text(json.dumps(dict(enumerate(src.classes))))
    out = tmp_path / "layout"
    spec = f"{{type: hf, path: {tmp_path / 'hf'}, split: validation}}"
    assert cli(["convert-data", spec, "--split", "val", "--out", str(out)]) == 0
    assert "val: 2 images (2 encoded as PNG)" in capsys.readouterr().out
    ds = D.SplitDataset(out, "val")
    assert ds.classes == src.classes
    for i, (image_path, label) in enumerate(pairs[:2]):
        assert ds.samples[i][0] == str(out / "images" / "val" / f"{Path(image_path).stem}.png")
        image, read = ds.load(i)
        np.testing.assert_array_equal(image, D.read_image(image_path))
        np.testing.assert_array_equal(read, label)


def test_shared_stems_and_mixed_formats(tmp_path, capsys):
    """Two images named x in two folders, one PNG and one JPEG: stems x and x_2, one layout suffix (.png)."""
    for sub, suffix in (("a", ".png"), ("b", ".jpg")):
        (tmp_path / "imgs" / sub).mkdir(parents=True)
        Image.fromarray(np.full((6, 8, 3), 90, np.uint8)).save(tmp_path / "imgs" / sub / f"x{suffix}")
    doc = {
        "images": [{"id": 1, "file_name": "a/x.png", "width": 8, "height": 6},
                   {"id": 2, "file_name": "b/x.jpg", "width": 8, "height": 6}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "segmentation": [[0, 0, 4, 0, 4, 3, 0, 3]]}],
    }  # fmt: skip
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    out = tmp_path / "layout"
    spec = {"type": "coco", "annotations": str(tmp_path / "ann.json"), "images": str(tmp_path / "imgs")}
    with pytest.warns(UserWarning) as caught:
        assert convert_to_split_layout({"train": spec}, out) == out
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and "x.jpg → x_2" in messages[0] and "(.jpg: 1, .png: 1)" in messages[1], messages
    ds = D.SplitDataset(out, "train")
    assert [Path(p).name for p, _ in ds.samples] == ["x.png", "x_2.png"]
    assert (out / "images" / "train" / "x.png").read_bytes() == (tmp_path / "imgs" / "a" / "x.png").read_bytes()
    np.testing.assert_array_equal(ds.load(1)[0], D.read_image(tmp_path / "imgs" / "b" / "x.jpg"))
    assert ds.load(1)[1][:3, :4].tolist() == [[1] * 4] * 3 and ds.load(0)[1].max() == 0

    out2 = tmp_path / "layout2"
    assert cli(["convert-data", json.dumps(spec), "--out", str(out2), "--copy"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(err) == 2 and "x.jpg → x_2" in err[0] and "written as PNG" in err[1], err
    assert (out2 / "images" / "train" / "x.png").stat().st_nlink == 1  # --copy: no hard link


def test_convert_module_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None\nimport segkit.data.convert\nprint('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
