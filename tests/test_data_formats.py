"""Annotation-tool exports as datasets (segkit.data.formats): round trips on real CamVid labels,
the drawing rules (background, order, crowd, category maps), and bad exports named by file."""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from annotation_exports import to_coco, to_cvat, to_labelme, to_yolo
from conftest import require_dataset
from PIL import Image

import segkit.data as D
from segkit.cli import main as cli
from segkit.data import DataError, build_dataset, check_dataset


@pytest.fixture(scope="module")
def camvid_pairs():
    ds = D.SplitDataset(require_dataset("camvid"), "test")
    return ds.classes, [(ds.samples[i][0], D.read_label(ds.samples[i][1])) for i in range(4)]


def _agreement(dataset, pairs) -> list[float]:
    assert len(dataset) == len(pairs)
    return [float((dataset.read_raw_label(i) == label).mean()) for i, (_, label) in enumerate(pairs)]


def test_coco_rle_round_trip_is_exact(camvid_pairs, tmp_path):
    classes, pairs = camvid_pairs
    ann = to_coco(pairs, classes, tmp_path / "coco", rle=True, background=None)
    ds = build_dataset({"type": "coco", "annotations": str(ann), "images": str(tmp_path / "coco" / "images"),
                        "background": None, "order": "area"})  # fmt: skip
    assert ds.classes == classes and ds.ignore_index == 255
    for i, (_, label) in enumerate(pairs):
        np.testing.assert_array_equal(ds.read_raw_label(i), label)  # void (255) pixels: no annotation → ignore
    item = ds[0]
    assert item["image"].shape == (360, 480, 3) and item["label"].dtype == np.uint8


def test_cvat_mask_round_trip_is_exact(camvid_pairs, tmp_path):
    classes, pairs = camvid_pairs
    palette = D.SplitDataset(require_dataset("camvid"), "test").palette
    to_cvat(pairs, classes, palette, tmp_path / "cvat")
    ds = build_dataset({"type": "cvat", "root": str(tmp_path / "cvat")})
    assert ds.classes == ["background", *classes] and ds.palette[1:] == palette
    for i, (_, label) in enumerate(pairs):  # CVAT shifts by the background class; void → background
        np.testing.assert_array_equal(ds.read_raw_label(i), np.where(label == 255, 0, label + 1))
    with pytest.raises(DataError, match=r"split 'train' not found; .* holds \['default'\]"):
        build_dataset({"type": "cvat", "root": str(tmp_path / "cvat"), "split": "train"})
    with open(tmp_path / "cvat" / "labelmap.txt", "a") as f:
        f.write("broken line\n")
    with pytest.raises(DataError, match=r"labelmap.txt:14: expected 'name:r,g,b:parts:actions'"):
        build_dataset({"type": "cvat", "root": str(tmp_path / "cvat")})


@pytest.mark.parametrize("kind", ["coco", "yolo", "labelme", "labelme-embedded"])
def test_polygon_round_trips_agree_on_99_percent(camvid_pairs, tmp_path, kind):
    classes, pairs = camvid_pairs
    out = tmp_path / kind
    common = {"background": None, "order": "area"}
    if kind == "coco":
        spec = {"type": "coco", "annotations": str(to_coco(pairs, classes, out, background=None)),
                "images": str(out / "images"), **common}  # fmt: skip
    elif kind == "yolo":
        to_yolo(pairs, classes, out, background=None)
        spec = {"type": "yolo", "root": str(out), **common}
    else:
        to_labelme(pairs, classes, out, embed=kind.endswith("embedded"), background=None)
        spec = {"type": "labelme", "root": str(out), "classes": classes, **common}
    ds = build_dataset(spec)
    agreement = _agreement(ds, pairs)
    assert min(agreement) >= 0.99, agreement
    assert ds.classes == classes
    if kind == "labelme-embedded":
        assert not any(Path(out).glob("*.png")) and ds.load(0)[0].shape == (360, 480, 3)


def _tiny_coco(tmp_path, annotations, categories=None, images=None):
    (tmp_path / "images").mkdir(exist_ok=True)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    doc = {
        "images": images or [{"id": 1, "file_name": "a.png", "width": 12, "height": 10}],
        "categories": categories or [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
        "annotations": annotations,
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(doc))
    return {"type": "coco", "annotations": str(path), "images": str(tmp_path / "images")}


def _box(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def test_coco_background_order_crowd_and_category_map(tmp_path):
    anns = [
        {"id": 1, "image_id": 1, "category_id": 3, "segmentation": _box(0, 0, 12, 10), "area": 120, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 7, "segmentation": _box(0, 0, 12, 10), "area": 120, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 3, "segmentation": _box(2, 2, 4, 4), "area": 4, "iscrowd": 0},
    ]
    spec = _tiny_coco(tmp_path, anns)
    ds = build_dataset(spec)
    assert ds.classes == ["background", "cat", "dog"]
    lab = ds.read_raw_label(0)
    assert lab[0, 0] == 2 and lab[3, 3] == 1  # file order: dog over cat, then the small cat on top
    area = build_dataset({**spec, "order": "area"}).read_raw_label(0)
    assert area[3, 3] == 1 and area[0, 0] == 2  # equal areas keep the file order; the small one on top
    anns[1]["segmentation"] = _box(0, 0, 6, 10)
    anns[1]["area"] = 60
    spec = _tiny_coco(tmp_path, anns)
    by_area = build_dataset({**spec, "order": "area"}).read_raw_label(0)
    assert by_area[5, 2] == 2 and by_area[3, 3] == 1 and by_area[5, 10] == 1
    anns[2]["iscrowd"] = 1
    spec = _tiny_coco(tmp_path, anns)
    assert build_dataset(spec).read_raw_label(0)[3, 3] == 255  # crowd → ignore by default
    assert build_dataset({**spec, "crowd": "class"}).read_raw_label(0)[3, 3] == 1
    merged = build_dataset(
        {**spec, "classes": ["background", "animal"], "category_map": {"cat": "animal", 7: "animal"}}
    )
    assert merged.classes == ["background", "animal"] and set(np.unique(merged.read_raw_label(0))) <= {1, 255}
    dropped = build_dataset({**spec, "category_map": {"dog": None}, "crowd": "class"}).read_raw_label(0)
    assert dropped[5, 2] == 255 and dropped[5, 10] == 1  # a dropped category is ignore, not background
    empty = _tiny_coco(tmp_path, [])
    assert (build_dataset(empty).read_raw_label(0) == 0).all()
    assert (build_dataset({**empty, "background": None}).read_raw_label(0) == 255).all()


@pytest.mark.parametrize(
    "annotations, images, match",
    [
        ([{"id": 5, "image_id": 1, "category_id": 3, "segmentation": [[1, 1, 5, 5]]}], None,
         r"annotation 5: a polygon of 4 coordinates; polygons need at least 3 points"),
        ([{"id": 6, "image_id": 1, "category_id": 3, "segmentation": {"size": [20, 20], "counts": [400]}}], None,
         r"annotation 6: RLE of size 20x20 \(HxW\) on image 1 of 10x12"),
        ([], [{"id": 9, "file_name": "missing.png", "width": 3, "height": 3}], r"image id 9: .*missing.png not found"),
        ([{"id": 7, "image_id": 1, "category_id": 42, "segmentation": _box(0, 0, 2, 2)}], None,
         r"annotation 7: category_id 42 is not in 'categories' \(\[3, 7\]\)"),
        ([{"id": 8, "image_id": 4, "category_id": 3, "segmentation": _box(0, 0, 2, 2)}], None,
         r"annotation 8: image_id 4 is not in 'images'"),
    ],
)  # fmt: skip
def test_bad_coco_exports_are_named(tmp_path, annotations, images, match):
    spec = _tiny_coco(tmp_path, annotations, images=images)
    with pytest.raises(DataError, match=match) as e:
        build_dataset(spec)
    assert str(tmp_path / "ann.json") in str(e.value)


def _tiny_yolo(tmp_path, lines: str):
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(tmp_path / "images" / "train" / "a.jpg")
    (tmp_path / "labels" / "train" / "a.txt").write_text(lines)
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train", "names": ["cat", "dog"]}))
    return {"type": "yolo", "root": str(tmp_path)}


def test_yolo_boxes_background_and_ultralytics_rule(tmp_path):
    ds = build_dataset(_tiny_yolo(tmp_path, "1 0.0 0.0 0.5 0.0 0.5 1.0 0.0 1.0\n0 0.75 0.5 0.5 1.0\n"))
    assert ds.classes == ["background", "cat", "dog"]
    lab = ds.read_raw_label(0)
    assert lab[5, 2] == 2 and lab[5, 15] == 1  # polygon (dog → 2), box cx cy w h (cat → 1)
    assert check_dataset(ds).ok


@pytest.mark.parametrize(
    "line, match",
    [
        ("0 0.1 0.1 0.2 0.2 0.3", r"a.txt:2: 5 coordinates; a polygon needs an even count"),
        ("0 0.1 0.1 1.2 0.2 0.3 0.3", r"a.txt:2: coordinates must be normalised to 0..1, found 1.2"),
        ("5 0.1 0.1 0.2 0.2 0.3 0.3", r"a.txt:2: class 5 is not in data.yaml's names"),
    ],
)
def test_bad_yolo_lines_are_named_with_their_line(tmp_path, line, match):
    with pytest.raises(DataError, match=match):
        build_dataset(_tiny_yolo(tmp_path, "0 0.1 0.1 0.2 0.1 0.2 0.2\n" + line + "\n"))


def test_yolo_missing_split_and_missing_label_files(tmp_path):
    spec = _tiny_yolo(tmp_path, "")
    with pytest.raises(DataError, match=r"data.yaml: no split 'val'; it lists \['train'\]"):
        build_dataset({**spec, "split": "val"})
    (tmp_path / "labels" / "train" / "a.txt").unlink()
    with pytest.warns(UserWarning, match="1 of 1 images have no label file"):
        ds = build_dataset(spec)
    assert (ds.read_raw_label(0) == 0).all()


def test_labelme_shapes_discovered_classes_and_bad_files(tmp_path):
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(tmp_path / "a.png")
    doc = {
        "imagePath": "a.png",
        "imageHeight": 10,
        "imageWidth": 20,
        "shapes": [
            {"label": "road", "points": [[0, 0], [19, 9]], "shape_type": "rectangle"},
            {"label": "car", "points": [[15, 5], [17, 5]], "shape_type": "circle"},
            {"label": "lane", "points": [[0, 0], [5, 5]], "shape_type": "line"},
        ],
    }
    (tmp_path / "a.json").write_text(json.dumps(doc))
    with pytest.warns(UserWarning) as rec:
        ds = build_dataset({"type": "labelme", "root": str(tmp_path)})
    text = " ".join(str(w.message) for w in rec)
    assert "using ['background', 'car', 'road']" in text and "not drawn: 1 line" in text
    lab = ds.read_raw_label(0)
    assert lab[0, 0] == 2 and lab[5, 15] == 1 and lab[5, 14] == 1 and lab[5, 12] == 2 and lab[7, 15] == 1
    with pytest.raises(DataError, match=r"a.json: shape 0 has label 'road', which is not in classes"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build_dataset({"type": "labelme", "root": str(tmp_path), "classes": ["background", "car"]})
    doc["imagePath"] = "gone.png"
    (tmp_path / "a.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"a.json: image .*gone.png not found and no embedded imageData"):
        build_dataset({"type": "labelme", "root": str(tmp_path), "classes": ["background", "car", "road"]})


def test_a_coco_config_trains_and_check_data_names_a_bad_export(synthetic_split, tmp_path, capsys):
    """The synthetic split exported as COCO polygons: `segkit check-data --config` and two
    iterations of `segkit train` from the config alone; a broken export is one line, exit 1."""
    ds = D.SplitDataset(synthetic_split, "train")
    pairs = [(ds.samples[i][0], D.read_label(ds.samples[i][1])) for i in range(len(ds))]
    ann = to_coco(pairs, ds.classes, tmp_path / "coco", background=None)
    spec = {"type": "coco", "annotations": str(ann), "images": str(tmp_path / "coco" / "images"),
            "background": None, "order": "area"}  # fmt: skip
    cfg = {
        "model": "segformer-b0",
        "model_args": {"decoder_dim": 32},
        "data": {"train": {**spec, "split": "train"}, "val": {**spec, "split": "val"}},
        "train_transform": {"scale": [120, 90], "crop_size": [64, 64]},
        "test_transform": {"scale": [120, 90]},
        "schedule": {"max_iters": 2, "warmup_iters": 1},
        "train": {"batch_size": 2, "eval_interval": 2, "work_dir": str(tmp_path / "w"), "tensorboard": False,
                  "class_weight": None},
    }  # fmt: skip
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert cli(["check-data", "--config", str(tmp_path / "cfg.yaml")]) == 0
    assert "sky" in capsys.readouterr().out
    assert cli(["train", str(tmp_path / "cfg.yaml"), "--no-progress"]) == 0
    final = json.loads((tmp_path / "w" / "final" / "config.json").read_text())
    assert final["class_names"] == ds.classes
    doc = json.loads(Path(ann).read_text())
    doc["annotations"][0]["segmentation"] = [[1, 2, 3, 4]]
    Path(ann).write_text(json.dumps(doc))
    assert cli(["check-data", "--config", str(tmp_path / "cfg.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "annotation 1: a polygon of 4 coordinates" in err[0] and "Traceback" not in err[0]
    shutil.rmtree(tmp_path / "coco")


def _hf_dataset(pairs, tmp_path):
    import datasets

    labels = []
    for k, (_, label) in enumerate(pairs):
        Image.fromarray(label).save(tmp_path / f"label_{k}.png")
        labels.append(str(tmp_path / f"label_{k}.png"))
    data = datasets.Dataset.from_dict({"image": [p for p, _ in pairs], "annotation": labels})
    data = data.cast_column("image", datasets.Image()).cast_column("annotation", datasets.Image())
    return datasets.DatasetDict({"train": data, "validation": data.select([0])})


def test_hf_datasets_round_trip_exact(camvid_pairs, tmp_path):
    classes, pairs = camvid_pairs
    data = _hf_dataset(pairs, tmp_path)
    data.save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "saved" / "id2label.json").write_text(json.dumps({str(k): c for k, c in enumerate(classes)}))
    import datasets as datasets_lib

    datasets_lib.load_from_disk(str(tmp_path / "saved"))["train"].to_parquet(str(tmp_path / "train.parquet"))
    for label in tmp_path.glob("label_*.png"):
        label.unlink()  # the saved dataset holds the bytes, not links to these files
    ds = build_dataset({"type": "hf", "path": str(tmp_path / "saved"), "split": "train"})
    assert ds.classes == classes and len(ds) == len(pairs)
    for i, (image_path, label) in enumerate(pairs):
        np.testing.assert_array_equal(ds.read_raw_label(i), label)
        np.testing.assert_array_equal(ds.load(i)[0], D.read_image(image_path))
    assert check_dataset(ds).ok
    assert len(build_dataset({"type": "hf", "path": str(tmp_path / "saved"), "split": "validation"})) == 1
    reduced = build_dataset({"type": "hf", "path": str(tmp_path / "train.parquet"), "classes": classes[1:],
                             "reduce_labels": True})  # fmt: skip
    np.testing.assert_array_equal(
        reduced[0]["label"], np.where(pairs[0][1] == 0, 255, np.where(pairs[0][1] == 255, 255, pairs[0][1] - 1))
    )  # noqa: E501
    with pytest.raises(DataError, match=r"no split 'test'; it holds \['train', 'validation'\]"):
        build_dataset({"type": "hf", "path": str(tmp_path / "saved"), "split": "test"})
    with pytest.raises(DataError, match=r"no label column 'gt'; columns: \['image', 'annotation'\]"):
        build_dataset({"type": "hf", "path": str(tmp_path / "saved"), "label_column": "gt"})


def test_hf_hub_id_not_in_the_cache_is_named_quickly(tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a closed port, were anything to be fetched
    t = time.monotonic()
    with pytest.raises(DataError) as e:
        build_dataset({"type": "hf", "path": "segkit-test/no-such-dataset"})
    assert time.monotonic() - t < 10  # the cache only: no network retries
    msg = str(e.value)
    assert msg.startswith("segkit-test/no-such-dataset: Hugging Face dataset not found locally")
    assert "save_to_disk" in msg and "cache" in msg
