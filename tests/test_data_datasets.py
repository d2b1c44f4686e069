"""segkit.data.datasets: every layout and label convention on tiny fixtures in the real on-disk layout."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segkit.data import (
    ADE20K,
    ISAID,
    Cityscapes,
    COCOStuff10k,
    COCOStuff164k,
    DataError,
    FolderDataset,
    PascalContext,
    PascalVOC,
    SegDataset,
    SplitDataset,
    TestTransform,
    TrainTransform,
    build_dataset,
    meta,
)
from segkit.data.io import index_to_colour

H, W = 12, 16


def write_image(path, seed=0, fmt=None, size=(H, W)):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(a).save(path, format=fmt)
    return a


def write_label(path, values, mode="L", size=(H, W), palette=None):
    """Label whose pixels cycle through ``values`` (row-major)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = size[0] * size[1]
    lbl = np.resize(np.asarray(values, np.uint8), n).reshape(size)
    img = Image.fromarray(lbl, mode)
    if palette is not None:
        img.putpalette(palette)
    img.save(path)
    return lbl


def values(ds, i):
    return set(np.unique(ds.load(i)[1]).tolist())


# ------------------------------------------------------------------------------ shared layout
def make_split_layout(root, stems=("a", "b"), split="train", extra_meta=None):
    info = {
        "name": "tiny",
        "classes": ["x", "y", "z"],
        "palette": [[1, 2, 3], [4, 5, 6], [7, 8, 9]],
        "ignore_index": 255,
        "splits": {split: len(stems)},
        "layout": {
            "image": "images/{split}/{stem}.webp",
            "label": "labels/{split}/{stem}.png",
            "list": "splits/{split}.txt",
        },
        **(extra_meta or {}),
    }
    (root / "splits").mkdir(parents=True)
    (root / "splits" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    (root / "meta.json").write_text(json.dumps(info))
    (root / "images" / split).mkdir(parents=True)
    for i, s in enumerate(stems):
        Image.fromarray(np.full((H, W, 3), 10 * i, np.uint8)).save(root / "images" / split / f"{s}.webp", lossless=True)
        write_label(root / "labels" / split / f"{s}.png", [0, 1, 2, 255])


def test_split_dataset_fixture(tmp_path):
    make_split_layout(tmp_path)
    ds = SplitDataset(tmp_path, "train")
    assert len(ds) == 2 and ds.classes == ["x", "y", "z"] and ds.palette[1] == [4, 5, 6] and ds.num_classes == 3
    item = ds[1]
    assert item["image"].shape == (H, W, 3) and item["image"][0, 0, 0] == 10
    assert item["label_path"].endswith("labels/train/b.png") and values(ds, 1) == {0, 1, 2, 255}
    with pytest.raises(DataError, match=r"split 'val' not found.*\['train'\]"):
        SplitDataset(tmp_path, "val")
    with pytest.raises(DataError, match="meta.json"):
        SplitDataset(tmp_path / "splits", "train")


def test_split_dataset_label_convention_from_meta(tmp_path):
    make_split_layout(tmp_path, extra_meta={"reduce_zero_label": True})
    assert values(SplitDataset(tmp_path, "train"), 0) == {255, 0, 1}


def test_real_camvid_samples(camvid):
    ds = SplitDataset(camvid, "train")
    assert len(ds) == 367 and ds.num_classes == 11 and ds.classes[0] == "sky"
    for i in (0, 100, 366):
        item = ds[i]
        assert item["image"].shape == (360, 480, 3) and item["image"].dtype == np.uint8
        assert item["label"].shape == (360, 480) and item["label"].dtype == np.uint8
        assert set(np.unique(item["label"]).tolist()) <= set(range(11)) | {255}
    ds.transform = TrainTransform(scale=(480, 360), crop_size=(256, 256))
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 256, 256) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (2, 256, 256) and batch["label"].dtype == torch.int64
    assert len(batch["image_path"]) == 2
    val = build_dataset(
        {"type": "split", "root": str(camvid), "split": "val"}, transform=TestTransform(scale=(480, 360))
    )
    item = val[0]
    assert item["image"].shape == (3, 384, 480) and item["label"].shape == (360, 480)


# ------------------------------------------------------------------------------ folder
def test_folder_dataset_matching_meta_and_split(tmp_path):
    for i, rel in enumerate(["a", "b", "sub/c", "d", "e"]):
        write_image(tmp_path / "imgs" / f"{rel}.jpg", seed=i)
        write_label(tmp_path / "masks" / f"{rel}_mask.png", [0, 1])
    write_image(tmp_path / "imgs" / "f.png", seed=9)
    write_label(tmp_path / "masks" / "flat" / "f_mask.png", [2])  # same stem, other folder
    (tmp_path / "meta.json").write_text(json.dumps({"classes": ["bg", "fg", "edge"], "palette": [[0, 0, 0]] * 3}))
    ds = FolderDataset(tmp_path / "imgs", tmp_path / "masks", label_suffix="_mask.png")
    assert len(ds) == 6 and ds.classes == ["bg", "fg", "edge"]
    pairs = {Path(i).stem: Path(l).name for i, l in ds.samples}
    assert pairs["c"] == "c_mask.png" and pairs["f"] == "f_mask.png"
    train = FolderDataset(tmp_path / "imgs", tmp_path / "masks", label_suffix="_mask.png", split="train", seed=1)
    val = FolderDataset(tmp_path / "imgs", tmp_path / "masks", label_suffix="_mask.png", split="val", seed=1)
    assert len(val) == round(6 * 0.2) and not set(train.samples) & set(val.samples)
    assert sorted(train.samples + val.samples) == sorted(ds.samples)
    again = FolderDataset(tmp_path / "imgs", tmp_path / "masks", label_suffix="_mask.png", split="val", seed=1)
    assert again.samples == val.samples


def test_folder_dataset_missing_labels_and_class_discovery(tmp_path):
    for i, rel in enumerate(["a", "b", "c"]):
        write_image(tmp_path / "i" / f"{rel}.png", seed=i)
    write_label(tmp_path / "l" / "a.png", [0, 3, 255])
    write_label(tmp_path / "l" / "b.png", [1])
    with pytest.raises(
        DataError, match=r"1 of 3 images have no label file.*label_suffix.*:\n.*c\.png \(expected .*c\.png\)"
    ):
        FolderDataset(tmp_path / "i", tmp_path / "l", classes=4)
    ds = FolderDataset(tmp_path / "i", tmp_path / "l", classes=4, allow_missing_labels=True)
    assert ds.classes == ["class_0", "class_1", "class_2", "class_3"]
    item = ds[2]
    assert "label" not in item and item["label_path"] == ""
    with pytest.warns(UserWarning, match=r"found label values \[0, 1, 3\].*4 classes"):
        disc = FolderDataset(tmp_path / "i", tmp_path / "l", allow_missing_labels=True)
    assert disc.num_classes == 4
    unl = FolderDataset(tmp_path / "i", classes=["a"])
    assert all(l is None for _, l in unl.samples) and len(unl) == 3


def test_size_mismatch_names_both_files(tmp_path):
    write_image(tmp_path / "i" / "a.png")
    write_label(tmp_path / "l" / "a.png", [0], size=(W, H))
    ds = FolderDataset(tmp_path / "i", tmp_path / "l", classes=2)
    with pytest.raises(
        DataError, match=r"i/a\.png and .*l/a\.png: image is 16x12 \(WxH\) but label is 12x16.*transposed"
    ):
        ds[0]


# ------------------------------------------------------------------------------ benchmarks
def test_ade20k(tmp_path):
    root = tmp_path / "ade" / "ADEChallengeData2016"
    for split in ("training", "validation"):
        write_image(root / "images" / split / "ADE_x_00000001.jpg")
        write_label(root / "annotations" / split / "ADE_x_00000001.png", [0, 1, 150, 255])
    ds = ADE20K(tmp_path / "ade", "train")  # parent dir and split alias accepted
    assert ds.num_classes == 150 and ds.classes[0] == "wall" and ds.palette[2] == [6, 230, 230]
    assert values(ds, 0) == {255, 0, 149}  # 0 -> 255, k -> k-1, 255 stays
    assert len(ADE20K(root, "validation")) == 1
    with pytest.raises(DataError, match="unknown split"):
        ADE20K(root, "test")


def test_cityscapes(tmp_path):
    for split in ("train", "val"):
        for city, frame in (("aachen", "aachen_000000_000019"), ("bremen", "bremen_000001_000019")):
            base = tmp_path / "gtFine" / split / city
            write_image(tmp_path / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png")
            write_label(base / f"{frame}_gtFine_labelTrainIds.png", [0, 18, 255])
            write_label(base / f"{frame}_gtFine_labelIds.png", [7, 26, 33, 0, 3])
            write_image(base / f"{frame}_gtFine_color.png")  # must be ignored by the suffix match
    ds = Cityscapes(tmp_path, "train")
    assert len(ds) == 2 and ds.num_classes == 19 and ds.classes[18] == "bicycle"
    assert all(l.endswith("_gtFine_labelTrainIds.png") for _, l in ds.samples)
    assert values(ds, 1) == {0, 18, 255}
    ids = Cityscapes(tmp_path, "val", label_type="labelIds")
    assert values(ids, 0) == {0, 13, 18, 255}  # 7->0 road, 26->13 car, 33->18 bicycle, others -> 255


def test_pascal_voc_and_trainaug(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2007_000032\n")
    (sets / "val.txt").write_text("2007_000033\n")
    (sets / "aug.txt").write_text("2008_000001\n2008_000002\n")
    pal = [v for c in meta.VOC_PALETTE for v in c] + [0] * (768 - 63)
    for i in ("2007_000032", "2007_000033", "2008_000001", "2008_000002"):
        write_image(root / "JPEGImages" / f"{i}.jpg")
    write_label(root / "SegmentationClass" / "2007_000032.png", [0, 15, 255], mode="P", palette=pal)
    write_label(root / "SegmentationClass" / "2007_000033.png", [20], mode="P", palette=pal)
    for i in ("2008_000001", "2008_000002"):
        write_label(root / "SegmentationClassAug" / f"{i}.png", [0, 1])
    train = PascalVOC(tmp_path / "VOCdevkit", "train")  # VOCdevkit accepted as root
    assert len(train) == 1 and train.num_classes == 21 and values(train, 0) == {0, 15, 255}  # indices, not colours
    aug = PascalVOC(root, "trainaug")
    assert len(aug) == 3
    assert "SegmentationClass/" in aug.samples[0][1] and all("SegmentationClassAug/" in l for _, l in aug.samples[1:])
    assert values(aug, 2) == {0, 1}
    (sets / "aug.txt").unlink()
    with pytest.raises(DataError, match=r"aug\.txt.*voc_aug"):
        PascalVOC(root, "trainaug")


def test_pascal_context_59_and_60(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2010"
    (root / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    (root / "ImageSets" / "SegmentationContext" / "val.txt").write_text("2008_000002\n")
    write_image(root / "JPEGImages" / "2008_000002.jpg")
    write_label(root / "SegmentationClassContext" / "2008_000002.png", [0, 1, 59])
    c59 = PascalContext(tmp_path / "VOCdevkit", "val")
    assert c59.num_classes == 59 and c59.classes[0] == "aeroplane" and values(c59, 0) == {255, 0, 58}
    c60 = PascalContext(root, "val", num_classes=60)
    assert c60.num_classes == 60 and c60.classes[0] == "background" and values(c60, 0) == {0, 1, 59}


def test_coco_stuff_164k(tmp_path):
    write_image(tmp_path / "images" / "val2017" / "000000000139.jpg")
    write_label(tmp_path / "annotations" / "val2017" / "000000000139_labelTrainIds.png", [0, 170, 255])
    write_label(tmp_path / "annotations" / "val2017" / "000000000139.png", [12, 26, 181, 255, 11])  # raw stuffthingmaps
    ds = COCOStuff164k(tmp_path, "val")
    assert ds.num_classes == 171 and ds.classes[0] == "person" and len(ds) == 1
    assert ds.samples[0][1].endswith("_labelTrainIds.png") and values(ds, 0) == {0, 170, 255}
    raw = COCOStuff164k(tmp_path, "val2017", label_type="raw")
    assert raw.samples[0][1].endswith("000000000139.png")
    assert values(raw, 0) == {11, 24, 170, 255}  # 12->11, 26->24, 181->170, 255 and unused 11 -> 255


def test_coco_stuff_10k(tmp_path):
    write_image(tmp_path / "images" / "train2014" / "COCO_train2014_000000000077.jpg")
    write_label(tmp_path / "annotations" / "train2014" / "COCO_train2014_000000000077_labelTrainIds.png", [0, 1, 171])
    ds = COCOStuff10k(tmp_path, "train")
    assert ds.num_classes == 171 and values(ds, 0) == {255, 0, 170}


def test_isaid_index_and_colour_masks(tmp_path):
    write_image(tmp_path / "img_dir" / "train" / "P0000_0_896_0_896.png")
    write_label(tmp_path / "ann_dir" / "train" / "P0000_0_896_0_896_instance_color_RGB.png", [0, 15])
    lbl = np.resize(np.array([0, 1, 9, 15], np.uint8), H * W).reshape(H, W)
    colour = index_to_colour(lbl, meta.ISAID_PALETTE)
    colour[0, 0] = (1, 2, 3)  # not in the colour table -> 0 (reference converter)
    write_image(tmp_path / "img_dir" / "val" / "P0001_0_896_0_896.png")
    (tmp_path / "ann_dir" / "val").mkdir(parents=True)
    Image.fromarray(colour).save(tmp_path / "ann_dir" / "val" / "P0001_0_896_0_896_instance_color_RGB.png")
    ds = ISAID(tmp_path, "train")
    assert ds.num_classes == 16 and ds.classes[1] == "ship" and values(ds, 0) == {0, 15}
    val = ISAID(tmp_path, "val")
    expected = lbl.copy()
    expected[0, 0] = 0
    assert np.array_equal(val.load(0)[1], expected)
    with pytest.raises(DataError, match=r"\(1, 2, 3\)"):
        ISAID(tmp_path, "val", unknown_colour="error").load(0)


def test_meta_tables_match_reference_counts():
    for classes, palette, n in [
        (meta.ADE20K_CLASSES, meta.ADE20K_PALETTE, 150),
        (meta.CITYSCAPES_CLASSES, meta.CITYSCAPES_PALETTE, 19),
        (meta.VOC_CLASSES, meta.VOC_PALETTE, 21),
        (meta.PASCAL_CONTEXT_59_CLASSES, meta.PASCAL_CONTEXT_59_PALETTE, 59),
        (meta.PASCAL_CONTEXT_60_CLASSES, meta.PASCAL_CONTEXT_60_PALETTE, 60),
        (meta.COCO_STUFF_CLASSES, meta.COCO_STUFF_PALETTE, 171),
        (meta.ISAID_CLASSES, meta.ISAID_PALETTE, 16),
    ]:
        assert len(classes) == len(palette) == n and len(set(classes)) == n
        assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in palette)
    assert meta.PASCAL_CONTEXT_60_CLASSES[1:] == meta.PASCAL_CONTEXT_59_CLASSES
    assert sorted(meta.COCO_STUFF164K_ID_TO_TRAINID.values()) == list(range(171))
    assert meta.CITYSCAPES_LABELID_TO_TRAINID[19] == 6 and meta.ADE20K_CLASSES[7] == "bed"


# ------------------------------------------------------------------------------ factory
def test_build_dataset_errors(tmp_path):
    make_split_layout(tmp_path)
    ds = build_dataset({"type": "split", "root": str(tmp_path), "split": "train"})
    assert isinstance(ds, SegDataset) and len(ds) == 2
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['crop', 'sploit'\]"):
        build_dataset({"type": "split", "root": str(tmp_path), "sploit": "train", "crop": 1})
    with pytest.raises(ValueError, match=r"missing key\(s\) \['split'\]"):
        build_dataset({"type": "split", "root": str(tmp_path)})
    with pytest.raises(ValueError, match="needs 'type'"):
        build_dataset({"type": "imagenet"})


def test_label_map_then_reduce_zero_label():
    ds = SegDataset([], ["a", "b"], label_map={255: 1, 3: 0}, reduce_zero_label=True)
    lut = ds.label_lut
    assert lut[255] == 0 and lut[3] == 255 and lut[0] == 255 and lut[2] == 1
    with pytest.raises(ValueError, match="palette has 1 colours for 2 classes"):
        SegDataset([], ["a", "b"], palette=[[0, 0, 0]])


def test_preload_caches_read_only_arrays(tmp_path):
    make_split_layout(tmp_path)
    ds = SplitDataset(tmp_path, "train")
    fresh = [ds.load(i) for i in range(len(ds))]
    with pytest.raises(ValueError, match="max_bytes"):
        ds.preload(max_bytes=100)
    assert ds._cache is None
    ds.preload()
    for i, (image, label) in enumerate(fresh):
        cached = ds.load(i)
        assert np.array_equal(cached[0], image) and np.array_equal(cached[1], label)
        assert not cached[0].flags.writeable
    ds.transform = TrainTransform(scale=(W, H), crop_size=(8, 8))
    assert ds[0]["image"].shape == (3, 8, 8)
