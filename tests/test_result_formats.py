"""Results in other tools' formats: SegResult.masks / rle / polygons / to_json, segkit predict --format json|coco."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import segkit
from segkit.cli import main
from segkit.engine.result_formats import mask_polygons, present_classes
from segkit.engine.segmenter import SegResult

mask_utils = pytest.importorskip("pycocotools.mask")
COCO = pytest.importorskip("pycocotools.coco").COCO
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")  # NumPy 2 copy keyword


def _draw(polys, shape) -> np.ndarray:
    """The test's own rasterisation of polygons with holes (OpenCV's contour convention: rings through
    boundary pixel centres, a hole's ring on the foreground pixels around it), drawn in order."""
    out = np.zeros(shape, np.uint8)
    for p in polys:
        cv2.fillPoly(out, [np.asarray(p["exterior"], np.int32)], 1)
        holes = [np.asarray(h, np.int32) for h in p["holes"]]
        if holes:
            cv2.fillPoly(out, holes, 0)
            cv2.polylines(out, holes, True, 1)
    return out.astype(bool)


@pytest.fixture(scope="module")
def camvid_results(camvid):
    """SegResults holding real CamVid label maps (the ground truth of 8 test images: real object shapes)."""
    meta = json.loads((camvid / "meta.json").read_text())
    stems = (camvid / "splits" / "test.txt").read_text().split()[::29][:8]
    out = []
    for s in stems:
        label = np.array(Image.open(camvid / "labels" / "test" / f"{s}.png"))
        image = np.zeros((*label.shape, 3), np.uint8)
        out.append(SegResult(label=label, classes=meta["classes"], palette=meta["palette"], image=image, name=s))
    return out


def test_rle_decoded_by_pycocotools_equals_masks(camvid_results):
    for res in camvid_results:
        masks, rles = res.masks(), res.rle()
        ids = [k for k in range(len(res.classes)) if (res.label == k).any()]
        assert list(masks) == list(rles) == [res.classes[k] for k in ids]  # present classes, class-id order
        for k in ids:
            name = res.classes[k]
            assert masks[name].dtype == bool and np.array_equal(masks[name], res.label == k)
            rle = rles[name]
            assert rle["size"] == list(res.label.shape) and isinstance(rle["counts"], str)
            decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
            assert np.array_equal(decoded.astype(bool), masks[name])
            assert int(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()})) == masks[name].sum()
        assert 255 in res.label and not any((m & (res.label == 255)).any() for m in masks.values())  # ignore: no class
    all_masks = camvid_results[0].masks(all_classes=True)
    assert list(all_masks) == camvid_results[0].classes


def test_polygons_rasterised_back_agree_with_the_masks(camvid_results):
    worst = {}
    for tol in (0.0, 1.0):
        agree = []
        for res in camvid_results:
            polys, masks = res.polygons(tolerance=tol), res.masks()
            assert list(polys) == list(masks)
            for name, mask in masks.items():
                for p in polys[name]:
                    assert p["exterior"].dtype == np.int32 and p["exterior"].shape[1] == 2 and len(p["exterior"]) >= 3
                agree.append((_draw(polys[name], mask.shape) == mask).mean())
        worst[tol] = min(agree)
    assert worst[1.0] >= 0.99 and worst[0.0] >= worst[1.0]
    n0 = sum(len(p["exterior"]) for p in camvid_results[0].polygons(tolerance=0)["road"])
    n2 = sum(len(p["exterior"]) for p in camvid_results[0].polygons(tolerance=2)["road"])
    assert n2 < n0  # the tolerance simplifies


def test_polygons_holes_and_islands_in_holes_exactly():
    mask = np.zeros((40, 50), bool)
    mask[5:35, 5:45] = True
    mask[10:30, 10:40] = False  # a hole
    mask[15:25, 20:30] = True  # an island in the hole
    mask[18:22, 23:27] = False  # a hole in the island
    polys = mask_polygons(mask, tolerance=0)
    assert len(polys) == 2 and [len(p["holes"]) for p in polys] == [1, 1]
    assert np.array_equal(_draw(polys, mask.shape), mask)
    assert mask_polygons(np.zeros((5, 5), bool)) == []
    assert len(mask_polygons(np.eye(6, dtype=bool))) == 0 and len(mask_polygons(np.eye(6, dtype=bool), min_points=1))
    with pytest.raises(ValueError, match="tolerance"):
        mask_polygons(mask, tolerance=-1)


def test_to_json(camvid_results):
    res = camvid_results[1]
    doc = json.loads(res.to_json(polygons=True))
    assert (doc["height"], doc["width"], doc["name"]) == (*res.label.shape, res.name)
    ids = [c["id"] for c in doc["classes"]]
    assert ids == present_classes(res.label, len(res.classes))
    for c in doc["classes"]:
        mask = res.label == c["id"]
        ys, xs = np.nonzero(mask)
        assert c["name"] == res.classes[c["id"]] and c["area"] == mask.sum()
        assert c["fraction"] == pytest.approx(mask.mean())
        assert c["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert np.array_equal(mask_utils.decode({**c["rle"], "counts": c["rle"]["counts"].encode()}), mask)
        assert (_draw(c["polygons"], mask.shape) == mask).mean() >= 0.99
    assert "polygons" not in json.loads(res.to_json())["classes"][0]


@pytest.fixture(scope="module")
def camvid_folder(tmp_path_factory, camvid):
    """3 CamVid test images (symlinks), a tiny CamVid-class model, and a COCO ground truth from the labels."""
    meta = json.loads((camvid / "meta.json").read_text())
    d = tmp_path_factory.mktemp("formats")
    (d / "images").mkdir()
    stems = (camvid / "splits" / "test.txt").read_text().split()[:3]
    images, anns = [], []
    for i, s in enumerate(stems):
        (d / "images" / f"{s}.webp").symlink_to(camvid / "images" / "test" / f"{s}.webp")
        label = np.array(Image.open(camvid / "labels" / "test" / f"{s}.png"))
        images.append({"id": 100 + i, "file_name": f"{s}.webp", "height": label.shape[0], "width": label.shape[1]})
        for k in np.unique(label):
            if k == 255:
                continue
            rle = mask_utils.encode(np.asfortranarray((label == k).astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            anns.append(
                {"id": len(anns) + 1, "image_id": 100 + i, "category_id": int(k) + 1, "segmentation": rle,
                 "area": float(mask_utils.area(rle)), "bbox": list(mask_utils.toBbox(rle)), "iscrowd": 0}
            )  # fmt: skip
    cats = [{"id": k + 1, "name": c} for k, c in enumerate(meta["classes"])]
    gt = {"images": images, "annotations": anns, "categories": cats}
    (d / "gt.json").write_text(json.dumps(gt))
    model = segkit.build_model("segformer-b0", num_classes=11, class_names=meta["classes"], palette=meta["palette"])
    ckpt = model.save_pretrained(d / "ckpt")
    return d, ckpt, stems


def test_predict_format_coco_and_json_read_back(camvid_folder):
    d, ckpt, stems = camvid_folder
    out = d / "pred"
    args = ["predict", str(ckpt), str(d / "images"), "--scale", "160", "120", "--device", "cpu"]
    assert main(args + ["--format", "png", "json", "coco", "--out", str(out)]) == 0
    results = json.loads((out / "coco_results.json").read_text())
    assert {r["image_id"] for r in results} == {f"{s}.webp" for s in stems}  # image_id = file name
    for s in stems:
        label = np.array(Image.open(out / f"{s}_label.png"))
        doc = json.loads((out / f"{s}.json").read_text())
        mine = [r for r in results if r["image_id"] == f"{s}.webp"]
        assert [r["category_id"] - 1 for r in mine] == [c["id"] for c in doc["classes"]] == sorted(np.unique(label))
        for r, c in zip(mine, doc["classes"]):
            assert r["segmentation"] == c["rle"] and r["score"] == 1.0
            assert np.array_equal(
                mask_utils.decode({**c["rle"], "counts": c["rle"]["counts"].encode()}), label == c["id"]
            )
    own = COCO(str(out / "coco_images.json"))  # the file written beside the results
    loaded = own.loadRes(str(out / "coco_results.json"))
    assert len(loaded.getAnnIds()) == len(results)

    out2 = d / "pred_gt"
    assert main(args + ["--format", "coco", "--coco-gt", str(d / "gt.json"), "--out", str(out2)]) == 0
    assert sorted(p.name for p in out2.iterdir()) == ["coco_results.json"]
    gt = COCO(str(d / "gt.json"))
    res = gt.loadRes(str(out2 / "coco_results.json"))  # the GT's integer ids, matched by file name
    assert {a["image_id"] for a in res.anns.values()} == {100, 101, 102}
    for a in res.anns.values():  # same masks as the file-name run
        b = [r for r in results if r["image_id"] == gt.imgs[a["image_id"]]["file_name"]]
        assert a["segmentation"] in [r["segmentation"] for r in b]
    from pycocotools.cocoeval import COCOeval

    ev = COCOeval(gt, res, "segm")  # what COCO-style evaluators run on it
    ev.evaluate()
    ev.accumulate()


def test_predict_format_errors(camvid_folder, tmp_path, capsys):
    d, ckpt, _ = camvid_folder
    base = ["predict", str(ckpt), str(d / "images"), "--device", "cpu"]
    assert main(base + ["--polygons", "--out", str(tmp_path / "a")]) == 2
    assert "--polygons is for --format json" in capsys.readouterr().err
    assert main(base + ["--format", "png", "--coco-gt", str(d / "gt.json"), "--out", str(tmp_path / "b")]) == 2
    (tmp_path / "bad.json").write_text(json.dumps({"images": [], "categories": [{"id": 1, "name": "x"}]}))
    assert main(base + ["--format", "coco", "--coco-gt", str(tmp_path / "bad.json"), "--out", str(tmp_path / "c")]) == 1
    assert "bad.json: none of the model's classes" in capsys.readouterr().err
    gt = json.loads((d / "gt.json").read_text())
    gt["images"] = gt["images"][:1]
    (tmp_path / "short.json").write_text(json.dumps(gt))
    assert (
        main(base + ["--format", "coco", "--coco-gt", str(tmp_path / "short.json"), "--out", str(tmp_path / "e")]) == 1
    )
    err = capsys.readouterr().err
    assert "short.json: no image with file_name" in err and "1 other input" in err
    assert not (tmp_path / "e").exists() or not any((tmp_path / "e").iterdir())
    video = tmp_path / "v" / "clip.mp4"
    video.parent.mkdir()
    video.write_bytes(b"")
    assert main(["predict", str(ckpt), str(video), "--format", "json", "--out", str(tmp_path / "f")]) == 2
    assert "is for images" in capsys.readouterr().err


def test_format_json_refuses_to_replace_results(camvid_folder, tmp_path, capsys):
    d, ckpt, stems = camvid_folder
    out = tmp_path / "o"
    out.mkdir()
    (out / f"{stems[0]}.json").write_text("{}")
    image = d / "images" / f"{stems[0]}.webp"
    args = ["predict", str(ckpt), str(image), "--scale", "120", "90", "--format", "json", "--out", str(out)]
    assert main(args) == 2
    assert (out / f"{stems[0]}.json").read_text() == "{}"
    assert main(args + ["--overwrite"]) == 0
    assert Path(out / f"{stems[0]}.json").read_text() != "{}"


def test_docs_deploy_python_block_runs_as_written(tmp_path, camvid, monkeypatch):
    """The Python block of docs/deploy.md, run as written in a folder laid out like a clone beside the data
    (the README model's folder made here: random weights, CamVid classes, a small test resize)."""
    import re

    from conftest import REPO

    from segkit.data.protocol import TestProtocol

    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "deploy.md").read_text(), re.S)
    assert len(blocks) == 1
    clone = tmp_path / "parent" / "clone"
    (clone / "work_dirs").mkdir(parents=True)
    (tmp_path / "parent" / "shared").mkdir()
    (tmp_path / "parent" / "shared" / "data").symlink_to(camvid.parent)
    meta = json.loads((camvid / "meta.json").read_text())
    model = segkit.build_model("segformer-b0", num_classes=11, class_names=meta["classes"], palette=meta["palette"])
    model.test_protocol = TestProtocol(scale=(96, 72), keep_ratio=True, size_divisor=32).to_dict()
    model.save_pretrained(clone / "work_dirs" / "segformer-b0_camvid_10min" / "final")
    monkeypatch.chdir(clone)
    ns: dict = {}
    exec(compile(blocks[0], "docs/deploy.md", "exec"), ns)
    res = ns["result"]
    present = [res.classes[k] for k in np.unique(res.label)]
    assert list(ns["masks"]) == list(ns["rles"]) == list(ns["polygons"]) == present
    assert [c["name"] for c in json.loads(ns["doc"])["classes"]] == list(ns["masks"])
