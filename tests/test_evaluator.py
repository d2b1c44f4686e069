"""Evaluator on tiny stand-in segmentors and stub datasets (and SegFormer-B0 at small size)."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import segkit
from segkit.engine.evaluator import evaluate
from segkit.engine.metrics import ConfusionMatrix
from segkit.engine.visualize import plot_confusion_matrix
from segkit.models.contract import DecodeHead, Features
from segkit.models.segmentor import Segmentor

torch.set_num_threads(1)
K = 3


class OneConvBackbone(nn.Module):
    def __init__(self, out_channels=3, kernel=1, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(3, out_channels, kernel, stride, kernel // 2)

    def forward(self, x):
        return Features(stages=[self.conv(x)])


class OneConvHead(DecodeHead):
    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, 1)
        self.modes_seen = []

    def forward(self, feats):
        self.modes_seen.append(self.training)
        return self.conv(feats.stages[-1])


def perfect_model(**kw):
    """Per-pixel identity model: input channel c is the logit of class c (K = 3)."""
    backbone, head = OneConvBackbone(3), OneConvHead(3, K)
    with torch.no_grad():
        for conv in (backbone.conv, head.conv):
            conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            conv.bias.zero_()
    return Segmentor(backbone, head, K, **kw)


def random_model(stride=2, seed=0):
    torch.manual_seed(seed)
    return Segmentor(OneConvBackbone(8, kernel=3, stride=stride), OneConvHead(8, K), K)


def random_labels(sizes, seed=0):
    rng = np.random.default_rng(seed)
    labels = []
    for h, w in sizes:
        lab = rng.integers(0, K, size=(h, w)).astype(np.uint8)
        lab[: h // 5, : w // 4] = 255  # an ignored block
        labels.append(lab)
    return labels


def one_hot_image(label, value=10.0):
    """Float (3, H, W): channel c = value where label == c (0 on ignore pixels)."""
    lab = torch.from_numpy(label.astype(np.int64))
    img = torch.zeros(3, *lab.shape)
    for c in range(K):
        img[c][lab == c] = value
    return img


class StubDataset(torch.utils.data.Dataset):
    """Yields the interface dict; ``raw=True`` mimics a dataset without transform (numpy uint8 image)."""

    def __init__(self, images, labels, raw=False, classes=("a", "b", "c")):
        self.images, self.labels, self.raw = images, labels, raw
        self.classes = list(classes)
        self.ignore_index = 255
        self.name = "stub"

    @property
    def num_classes(self):
        return len(self.classes)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        image = self.images[i]
        if not self.raw:
            image, label = image, torch.from_numpy(self.labels[i].astype(np.int64))
        else:
            label = self.labels[i]
        return {"image": image, "label": label, "image_path": f"img_{i}.png", "label_path": f"lab_{i}.png"}


SIZES = [(40, 56), (33, 47), (48, 48)]


def manual_matrix(model, dataset):
    """Reference: plain forward + argmax + numpy confusion matrix (no evaluator, no ConfusionMatrix)."""
    m = np.zeros((K, K), dtype=np.int64)
    model.eval()
    with torch.no_grad():
        for i in range(len(dataset)):
            item = dataset[i]
            pred = model(item["image"][None]).argmax(1)[0].numpy()
            lab = np.asarray(item["label"])
            valid = lab != 255
            np.add.at(m, (lab[valid], pred[valid]), 1)
    return m


def test_perfect_model_gives_100_and_restores_training_mode(tmp_path):
    labels = random_labels(SIZES)
    ds = StubDataset([one_hot_image(lab) for lab in labels], labels)
    model = perfect_model()
    model.train()
    res = evaluate(model, ds, progress=False, out_dir=tmp_path)
    for key in ("aAcc", "mIoU", "mAcc", "mDice", "mFscore", "mPrecision", "mRecall"):
        assert res[key] == pytest.approx(100.0), key
    assert res["num_images"] == 3
    assert res["num_pixels"] == sum(int((lab != 255).sum()) for lab in labels)
    assert model.training, "training mode must be restored"
    assert model.decode_head.modes_seen and not any(model.decode_head.modes_seen), "forward ran in train mode"
    assert "| a " in res["per_class"] and res["sec_per_image"] > 0

    # metrics.json: strict JSON (NaN written as null), same numbers; confusion-matrix PNG readable
    data = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert data["mIoU"] == pytest.approx(100.0)
    assert np.array_equal(np.array(data["confusion_matrix"]), np.diag(np.diag(np.array(res["confusion_matrix"]))))
    with Image.open(tmp_path / "confusion_matrix.png") as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_raw_numpy_items_are_normalised_with_model_stats():
    labels = random_labels(SIZES, seed=1)
    images = [(one_hot_image(lab, 1.0).permute(1, 2, 0).numpy() * 255).astype(np.uint8) for lab in labels]
    ds = StubDataset(images, labels, raw=True)
    # mean 0, std 25.5: uint8 255 -> 10, as the one-hot logits above
    res = evaluate(perfect_model(mean=(0, 0, 0), std=(25.5, 25.5, 25.5)), ds, progress=False)
    assert res["mIoU"] == pytest.approx(100.0)


def test_matches_plain_forward_and_absent_class_rules():
    labels = random_labels(SIZES, seed=2)
    for lab in labels:  # class 2 never in the ground truth
        lab[lab == 2] = 0
    rng = torch.Generator().manual_seed(0)
    ds = StubDataset([torch.randn(3, h, w, generator=rng) for h, w in SIZES], labels)
    model = random_model()
    res = evaluate(model, ds, progress=False)
    ref = manual_matrix(model, ds)
    assert np.array_equal(np.array(res["confusion_matrix"]), ref)
    tp, gt, pr = np.diag(ref), ref.sum(1), ref.sum(0)
    assert gt[2] == 0 and pr[2] > 0  # predicted, never in the ground truth
    iou = tp / (gt + pr - tp)
    # default: mmseg's rule, class 2 scores IoU 0 and counts in the mean
    assert res["settings"]["absent"] == "union"
    assert res["IoU"][2] == 0.0
    assert res["mIoU"] == pytest.approx(100 * iou.mean())
    # "gt": class 2 left out
    res_gt = evaluate(model, ds, progress=False, absent="gt")
    assert res_gt["confusion_matrix"] == res["confusion_matrix"] and res_gt["settings"]["absent"] == "gt"
    assert math.isnan(res_gt["IoU"][2])
    assert res_gt["mIoU"] == pytest.approx(100 * iou[:2].mean())
    with pytest.raises(ValueError, match="absent"):
        evaluate(model, ds, progress=False, absent="mmseg")


def test_whole_equals_slide_when_window_covers_image():
    labels = random_labels(SIZES, seed=3)
    rng = torch.Generator().manual_seed(1)
    ds = StubDataset([torch.randn(3, h, w, generator=rng) for h, w in SIZES], labels)
    model = random_model(stride=2)
    whole = evaluate(model, ds, progress=False)
    slide = evaluate(model, ds, mode="slide", crop_size=(64, 64), stride=(48, 48), progress=False)
    assert whole["confusion_matrix"] == slide["confusion_matrix"]
    # per-pixel model: overlapping small windows see the same logits as the whole image
    pix = perfect_model()
    ds2 = StubDataset([one_hot_image(lab) + 0.1 * torch.randn(3, *lab.shape, generator=rng) for lab in labels], labels)
    a = evaluate(pix, ds2, progress=False)
    b = evaluate(pix, ds2, mode="slide", crop_size=(16, 24), stride=(10, 10), progress=False)
    assert a["confusion_matrix"] == b["confusion_matrix"] and b["mIoU"] == pytest.approx(100.0)


def test_multiscale_flip_shapes_and_max_images():
    labels = random_labels(SIZES, seed=4)
    rng = torch.Generator().manual_seed(2)
    ds = StubDataset([torch.randn(3, h, w, generator=rng) for h, w in SIZES], labels)
    model = random_model()
    x = ds[1]["image"][None]
    probs = model.inference(x, scales=(0.5, 1.0, 1.5), flip=True, out_size=(66, 94))
    assert probs.shape == (1, K, 66, 94)
    assert torch.allclose(probs.sum(1), torch.ones(1, 66, 94), atol=1e-5)
    res = evaluate(model, ds, scales=(0.75, 1.25), flip=True, progress=False, max_images=2)
    assert res["num_images"] == 2
    assert res["num_pixels"] == sum(int((lab != 255).sum()) for lab in labels[:2])
    assert res["settings"]["flip"] is True and res["settings"]["scales"] == [0.75, 1.25]
    # the per-pixel perfect model is flip- and scale-equivariant enough to stay perfect with flip
    ds2 = StubDataset([one_hot_image(lab) for lab in labels], labels)
    assert evaluate(perfect_model(), ds2, flip=True, progress=False)["mIoU"] == pytest.approx(100.0)


def test_errors_name_the_problem():
    labels = random_labels(SIZES[:1])
    ds = StubDataset([one_hot_image(labels[0])], labels, classes=("a", "b"))
    with pytest.raises(ValueError, match="2 classes"):
        evaluate(perfect_model(), ds, progress=False)
    bad = labels[0].copy()
    bad[-1, -1] = 7
    ds = StubDataset([one_hot_image(labels[0])], [bad])
    with pytest.raises(ValueError, match="lab_0.png"):
        evaluate(perfect_model(), ds, progress=False)


def test_plot_confusion_matrix(tmp_path):
    m = np.array([[5, 1, 0], [0, 0, 0], [2, 2, 4]])
    path = plot_confusion_matrix(m, ["sky", "road", "car"], tmp_path / "sub" / "cm.png")
    with Image.open(path) as im:
        assert im.format == "PNG"
    with pytest.raises(ValueError):
        plot_confusion_matrix(m, ["a", "b"], tmp_path / "x.png")


def test_segformer_b0_whole_slide_msflip():
    model = segkit.build_model("segformer-b0", num_classes=K)
    labels = random_labels([(64, 64), (48, 80)], seed=5)
    rng = torch.Generator().manual_seed(3)
    ds = StubDataset([torch.randn(3, *lab.shape, generator=rng) for lab in labels], labels)
    whole = evaluate(model, ds, progress=False)
    slide = evaluate(model, ds, mode="slide", crop_size=(96, 96), stride=(64, 64), progress=False)
    assert whole["confusion_matrix"] == slide["confusion_matrix"]
    ms = evaluate(
        model, ds, mode="slide", crop_size=(32, 32), stride=(24, 24), scales=(0.75, 1.0), flip=True, progress=False
    )
    assert ms["num_pixels"] == whole["num_pixels"]


# ------------------------------------------------------------------------- distributed (2 gloo ranks)
def _ddp_worker(rank, world, init_file, out_file):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cm = ConfusionMatrix(K)
        cm.update(torch.tensor([rank]), torch.tensor([rank]))  # rank r adds one pixel at (r, r)
        cm.all_reduce()
        labels = random_labels(SIZES, seed=6)
        rng = torch.Generator().manual_seed(4)
        ds = StubDataset([torch.randn(3, h, w, generator=rng) for h, w in SIZES], labels)
        res = evaluate(random_model(), ds, progress=False)
        if rank == 0:
            with open(out_file, "w") as f:
                json.dump({"cm": cm.matrix.tolist(), "eval": res["confusion_matrix"], "n": res["num_images"]}, f)
    finally:
        dist.destroy_process_group()


def test_distributed_sharding_and_all_reduce(tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "out.json"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    got = json.loads(out.read_text())
    assert got["cm"] == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    labels = random_labels(SIZES, seed=6)
    rng = torch.Generator().manual_seed(4)
    ds = StubDataset([torch.randn(3, h, w, generator=rng) for h, w in SIZES], labels)
    single = evaluate(random_model(), ds, progress=False)
    assert got["n"] == 3 and got["eval"] == single["confusion_matrix"]


# ------------------------------------------------------------------------- real dataset classes
def write_split_layout(root, labels):
    """A tiny dataset in the shared layout (meta.json, images/val, labels/val, splits/val.txt)."""
    for sub in ("images/val", "labels/val", "splits"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    stems = []
    for i, lab in enumerate(labels):
        stem = f"s{i}"
        rgb = np.zeros((*lab.shape, 3), dtype=np.uint8)
        for c in range(K):
            rgb[lab == c, c] = 255  # channel c lit where the class is c
        Image.fromarray(rgb).save(root / "images/val" / f"{stem}.png")
        Image.fromarray(lab, mode="L").save(root / "labels/val" / f"{stem}.png")
        stems.append(stem)
    (root / "splits/val.txt").write_text("\n".join(stems) + "\n")
    meta = {
        "name": "tiny",
        "classes": ["a", "b", "c"],
        "palette": [[255, 0, 0], [0, 255, 0], [0, 0, 255]],
        "ignore_index": 255,
        "layout": {
            "image": "images/{split}/{stem}.png",
            "label": "labels/{split}/{stem}.png",
            "list": "splits/{split}.txt",
        },
    }
    (root / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("with_transform", [False, True])
def test_split_dataset_perfect_model(tmp_path, with_transform):
    from segkit.data.datasets import SplitDataset

    labels = random_labels([(64, 96), (32, 64)], seed=7)
    write_split_layout(tmp_path, labels)
    stats = dict(mean=(0.0, 0.0, 0.0), std=(25.5, 25.5, 25.5))  # uint8 255 -> logit 10
    transform = None
    if with_transform:
        transforms = pytest.importorskip("segkit.data.transforms")
        transform = transforms.TestTransform(scale=None, size_divisor=32, **stats)  # sizes already multiples of 32
    ds = SplitDataset(tmp_path, "val", transform=transform)
    res = evaluate(perfect_model(**stats), ds, progress=False, num_workers=0)
    assert res["mIoU"] == pytest.approx(100.0) and res["num_images"] == 2
    assert res["num_pixels"] == sum(int((lab != 255).sum()) for lab in labels)
    assert res["class_names"] == ["a", "b", "c"]
