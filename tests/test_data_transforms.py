"""segkit.data.transforms: reference semantics (docs/protocols.md) and invariants."""

import cv2
import numpy as np
import pytest
import torch

from segkit.data import transforms as T
from segkit.data.transforms import (
    TestTransform,
    TrainTransform,
    cat_max_ratio_crop_box,
    photometric_distortion,
    rescale_size,
)

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def test_rescale_size_reference_rounding():
    # factor = min(long_t / long, short_t / short); side' = int(side * factor + 0.5)
    assert rescale_size(360, 480, (2048, 512)) == (512, 683)  # 480 * 512/360 = 682.67
    assert rescale_size(360, 480, (480, 360)) == (360, 480)
    assert rescale_size(1024, 2048, (2048, 1024)) == (1024, 2048)
    assert rescale_size(853, 550, (2048, 512)) == (794, 512)  # short side limits: 853 * 512/550 = 794.07
    assert rescale_size(100, 1000, (2048, 512)) == (205, 2048)  # long side limits: 2048/1000


def test_train_output_shapes_padding_and_label_values():
    rng = np.random.default_rng(0)
    tr = TrainTransform(scale=(64, 48), crop_size=(40, 50), mean=MEAN, std=STD)
    np.random.seed(0)
    for h, w in [(48, 64), (20, 30), (100, 37)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        label = rng.choice(np.array([1, 4, 7, 255], np.uint8), size=(h, w))
        for _ in range(5):
            out = tr(image, label)
            assert out["image"].shape == (3, 40, 50) and out["image"].dtype == torch.float32
            assert out["label"].shape == (40, 50) and out["label"].dtype == torch.int64
            assert set(out["label"].unique().tolist()) <= {1, 4, 7, 255}
    # an image smaller than the crop (no resize): bottom/right padding, image 0 after normalisation, label 255
    small = TrainTransform(scale=None, crop_size=(16, 16), photometric=False, flip_prob=0.0, mean=MEAN, std=STD)
    out = small(np.full((10, 12, 3), 200, np.uint8), np.zeros((10, 12), np.uint8))
    assert (
        (out["label"][10:] == 255).all() and (out["label"][:, 12:] == 255).all() and (out["label"][:10, :12] == 0).all()
    )
    assert (out["image"][:, 10:] == 0).all() and (out["image"][:, :, 12:] == 0).all()
    expected = torch.tensor([(200 - m) / s for m, s in zip(MEAN, STD)])
    assert torch.allclose(out["image"][:, :10, :12], expected[:, None, None].expand(3, 10, 12), atol=1e-6)


def test_random_resize_range_keeps_aspect_ratio(monkeypatch):
    sizes = []
    real = cv2.resize
    monkeypatch.setattr(cv2, "resize", lambda img, dsize, **kw: sizes.append(dsize) or real(img, dsize, **kw))
    tr = TrainTransform(scale=(480, 360), ratio_range=(0.5, 2.0), crop_size=(64, 64), photometric=False)
    np.random.seed(1)
    image, label = np.zeros((360, 480, 3), np.uint8), np.zeros((360, 480), np.uint8)
    for _ in range(40):
        tr(image, label)
    widths = [w for w, h in sizes[::2]]
    assert all(abs(w / h - 480 / 360) < 0.01 for w, h in sizes)
    assert min(widths) >= 240 and max(widths) <= 960 and max(widths) - min(widths) > 400


def test_flip_and_crop_keep_image_and_label_aligned():
    h, w = 30, 40
    label = (np.arange(h * w).reshape(h, w) % 250).astype(np.uint8)
    image = np.dstack([label, 255 - label, np.full_like(label, 9)])
    tr = TrainTransform(
        scale=None,
        crop_size=(20, 25),
        photometric=False,
        flip_prob=0.5,
        cat_max_ratio=1.0,
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )
    np.random.seed(3)
    flipped = 0
    for _ in range(20):
        out = tr(image, label)
        im, lb = out["image"].numpy(), out["label"].numpy()
        assert np.array_equal(im[0], lb) and np.array_equal(im[1], 255 - lb)
        flipped += int(lb[0, 0] > lb[0, 1])  # labels increase left to right unless flipped
    assert 3 <= flipped <= 17


def test_resize_keeps_image_and_label_aligned():
    blocks = np.kron(np.arange(12, dtype=np.uint8).reshape(3, 4), np.ones((20, 20), np.uint8))  # 60x80
    palette = np.random.default_rng(0).integers(0, 256, (256, 3)).astype(np.uint8)
    image = palette[blocks]
    tr = TrainTransform(
        scale=(80, 60),
        ratio_range=(2.0, 2.0),
        crop_size=(120, 160),
        photometric=False,
        flip_prob=0.0,
        cat_max_ratio=1.0,
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )
    out = tr(image, blocks)
    im, lb = out["image"].numpy().transpose(1, 2, 0), out["label"].numpy()
    assert im.shape == (120, 160, 3)
    match = (np.abs(im - palette[lb]).max(axis=2) < 1e-3).mean()
    assert match > 0.9  # only the 1-pixel seams of the bilinear image differ


def test_cat_max_ratio_reference_semantics(monkeypatch):
    # crop = whole image, so every draw gives the same box and only the number of draws varies
    draws = []
    real = T.random_crop_box
    monkeypatch.setattr(T, "random_crop_box", lambda *a: draws.append(1) or real(*a))

    def run(label):
        draws.clear()
        T.cat_max_ratio_crop_box(label, label.shape, 0.75, 255)
        return len(draws)

    two = np.zeros((50, 50), np.uint8)
    two[:, 20:] = 1  # 40 % / 60 %: accepted at once
    assert run(two) == 1
    one_class = np.zeros((50, 50), np.uint8)  # one class only: 10 checks fail, the 11th box is used
    assert run(one_class) == 11
    skew = np.zeros((50, 50), np.uint8)
    skew[:, 45:] = 1  # 90 % / 10 %: rejected
    assert run(skew) == 11
    ignore = np.full((50, 50), 255, np.uint8)  # 60 % ignore; among the rest 0: 50 %, 1: 50 %
    ignore[:, :10], ignore[:, 10:20] = 0, 1
    assert run(ignore) == 1
    mostly_ignore = np.full((50, 50), 255, np.uint8)  # ignore is not a class: one real class -> rejected
    mostly_ignore[:, :10] = 3
    assert run(mostly_ignore) == 11
    at = np.zeros((40, 40), np.uint8)
    at[:, 30:] = 1  # exactly 75 %: not < 0.75, rejected
    assert run(at) == 11
    below = np.zeros((40, 40), np.uint8)
    below[:, 29:] = 1  # 72.5 %: accepted
    assert run(below) == 1
    assert run(np.full((40, 40), 255, np.uint8)) == 11  # nothing labelled


def test_cat_max_ratio_respected_where_random_crop_violates_it():
    label = np.zeros((200, 200), np.uint8)
    label[:, 100:] = 1  # 100x100 crops: majority share = max(x1, 100-x1)/100

    def violation_rate(ratio):
        np.random.seed(0)
        bad = 0
        for _ in range(200):
            y1, y2, x1, x2 = cat_max_ratio_crop_box(label, (100, 100), ratio, 255)
            counts = np.bincount(label[y1:y2, x1:x2].ravel(), minlength=2)
            bad += counts.max() / counts.sum() >= 0.75 or (counts > 0).sum() < 2
        return bad

    assert violation_rate(1.0) > 60
    assert violation_rate(0.75) <= 2


def _reference_photometric(img):
    """Straight float implementation of the reference PhotoMetricDistortion (np.random draws)."""

    def convert(x, alpha=1, beta=0):
        return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    if np.random.randint(2):
        img = convert(img, beta=np.random.uniform(-32, 32))
    mode = np.random.randint(2)
    if mode == 1 and np.random.randint(2):
        img = convert(img, alpha=np.random.uniform(0.5, 1.5))
    if np.random.randint(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[:, :, 1] = convert(hsv[:, :, 1], alpha=np.random.uniform(0.5, 1.5))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if np.random.randint(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + np.random.randint(-18, 18)) % 180
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if mode == 0 and np.random.randint(2):
        img = convert(img, alpha=np.random.uniform(0.5, 1.5))
    return img


def test_photometric_matches_reference_bit_exactly():
    img = np.random.default_rng(5).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    changed = 0
    for seed in range(40):
        np.random.seed(seed)
        ours = photometric_distortion(img)
        np.random.seed(seed)
        ref = _reference_photometric(img)
        assert ours.dtype == np.uint8 and np.array_equal(ours, ref), seed
        changed += not np.array_equal(ours, img)
    assert changed > 30


def test_reproducible_with_seed():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    label = rng.integers(0, 5, (90, 120)).astype(np.uint8)
    tr = TrainTransform(scale=(120, 90), crop_size=(64, 64))
    outs = []
    for seed in (7, 7, 8):
        np.random.seed(seed)
        outs.append(tr(image, label))
    assert torch.equal(outs[0]["image"], outs[1]["image"]) and torch.equal(outs[0]["label"], outs[1]["label"])
    assert not torch.equal(outs[0]["image"], outs[2]["image"])


def test_test_transform_sizes_and_original_label():
    image, label = np.zeros((360, 480, 3), np.uint8), np.ones((360, 480), np.uint8)
    out = TestTransform(scale=(2048, 512), size_divisor=32)(image, label)
    assert tuple(out["image"].shape) == (3, 512, 704)  # keep-ratio (512, 683), then ceil to multiples of 32
    assert out["label"].shape == (360, 480) and out["label"].dtype == torch.int64
    t = TestTransform(scale=None, size_divisor=32, mean=MEAN, std=STD)
    for h, w in [(360, 480), (853, 550), (33, 31), (64, 64)]:
        img = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)
        x = t(img)["image"]
        assert x.shape[1] % 32 == 0 and x.shape[2] % 32 == 0 and x.shape[1] >= h and x.shape[2] >= w
        assert x.shape[1] - h < 32 and x.shape[2] - w < 32
        assert tuple(x.shape[1:]) == t.output_size(h, w)
    assert TestTransform(scale=(100, 50), keep_ratio=False, size_divisor=None)(image)["image"].shape == (3, 50, 100)
    same = TestTransform(scale=None, size_divisor=None, mean=MEAN, std=STD)(image[:10, :10] + 77)["image"]
    assert torch.allclose(same[:, 0, 0], torch.tensor([(77 - m) / s for m, s in zip(MEAN, STD)]), atol=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match="needs a label"):
        TrainTransform()(np.zeros((4, 4, 3), np.uint8), None)
    with pytest.raises(ValueError, match="differ in size"):
        TrainTransform()(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), np.uint8))
