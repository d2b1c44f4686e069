"""Train and test transforms of the reference pipelines (official configs' ``train_pipeline`` / ``test_pipeline``;
docs/protocols.md).

Train (``TrainTransform``), in the reference order:

1. **Resize** with a random ratio: ``r ~ U[ratio_range)`` (``np.random.random_sample``), target
   scale ``(int(long·r), int(short·r))``, keep-ratio rescale factor
   ``min(long_t / long_side, short_t / short_side)``, new size ``int(side·factor + 0.5)``
   (mmcv ``rescale_size``); image ``cv2.INTER_LINEAR``, label ``cv2.INTER_NEAREST``.
2. **RandomCrop** with ``cat_max_ratio``: offsets ``np.random.randint(0, margin + 1)`` (rows,
   then columns). The reference checks the crop up to 10 times and re-draws after each failure:
   accepted when the crop holds more than one non-ignore class and the most frequent one covers
   less than ``cat_max_ratio`` of the non-ignore pixels; after 10 failed checks the 11th draw is
   used unchecked (reference behaviour, kept).
3. **RandomFlip** horizontal, ``np.random.rand() < flip_prob``.
4. **PhotoMetricDistortion** on the uint8 crop: brightness (p 0.5, delta ~ U(-32, 32)); mode =
   randint(2); if mode == 1 contrast (p 0.5, alpha ~ U(0.5, 1.5)); saturation (p 0.5, alpha ~
   U(0.5, 1.5) on S of HSV); hue (p 0.5, delta ~ randint(-18, 18), i.e. -18..17, added to H mod
   180); if mode == 0 contrast. Every op works in float32 on the uint8 image, clips to
   [0, 255] and truncates back to uint8, and saturation / hue each do their own RGB->HSV->RGB
   round trip (OpenCV 8-bit HSV: H in 0..179), exactly as the reference. The per-pixel float
   ops are computed once per value into 256-entry lookup tables (bit-identical, much faster).
5. **Normalize** ``(x - mean) / std`` (0-255 scale) and **Pad** bottom/right to the crop size
   with 0 for the image (after normalisation, as the reference) and ``ignore_index`` for the label.

All random draws come from the global ``np.random`` state, in the reference order, so a
seeded run repeats (DataLoader workers reseed NumPy per worker).

Test (``TestTransform``): keep-ratio resize to ``scale`` (same rounding), then
``ResizeToMultiple``: each side ceiled to a multiple of ``size_divisor`` and the image stretched
to it (a second bilinear resize, as SegNeXt ``ResizeToMultiple`` / SegFormer ``AlignedResize``);
the label is returned at its original size.

Speed: one resize per image and per label, the crop taken before flip and photometric ops,
everything in uint8 until the final LUT normalisation, which writes straight into the padded
``(3, H, W)`` float32 output.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from segkit.data.meta import IMAGENET_MEAN, IMAGENET_STD
from segkit.errors import DataError, UsageError

# The encoders (MiT, MSCAN, ViT, CSWin) downsample 32x: the smallest image side segkit feeds them.
MIN_SIDE = 32

__all__ = [
    "MIN_SIDE",
    "TrainTransform",
    "TestTransform",
    "rescale_size",
    "random_scale",
    "random_crop_box",
    "cat_max_ratio_crop_box",
    "photometric_distortion",
    "normalize_to_tensor",
    "normalize_to_array",
]


def rescale_size(height: int, width: int, scale: Sequence[int]) -> tuple[int, int]:
    """Keep-ratio target size ``(H', W')`` for ``scale = (long, short)`` (order of the pair does not matter).

    factor = min(max(scale) / max(H, W), min(scale) / min(H, W)); side' = int(side·factor + 0.5)
    (mmcv ``rescale_size``, used by the reference Resize with ``keep_ratio=True``), but at least 1 pixel
    per side: mmcv's rounding gives 0 for an extreme aspect ratio (a 1 x 100000 strip), which no resize takes.
    """
    long_t, short_t = max(scale), min(scale)
    factor = min(long_t / max(height, width), short_t / min(height, width))
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


def random_scale(scale: Sequence[int], ratio_range: Sequence[float]) -> tuple[int, int]:
    """``(int(scale[0]·r), int(scale[1]·r))``, ``r ~ U[lo, hi)`` from ``np.random``.

    Reference: mmseg ``Resize.random_sample_ratio``.
    """
    lo, hi = ratio_range
    r = np.random.random_sample() * (hi - lo) + lo
    return int(scale[0] * r), int(scale[1] * r)


def random_crop_box(height: int, width: int, crop_size: Sequence[int]) -> tuple[int, int, int, int]:
    """Random ``(y1, y2, x1, x2)`` of a ``crop_size = (h, w)`` window (clipped to the image)."""
    margin_h, margin_w = max(height - crop_size[0], 0), max(width - crop_size[1], 0)
    y1 = np.random.randint(0, margin_h + 1)
    x1 = np.random.randint(0, margin_w + 1)
    return y1, min(y1 + crop_size[0], height), x1, min(x1 + crop_size[1], width)


def cat_max_ratio_crop_box(
    label: np.ndarray,
    crop_size: Sequence[int],
    cat_max_ratio: float = 0.75,
    ignore_index: int = 255,
    max_checks: int = 10,
) -> tuple[int, int, int, int]:
    """Reference RandomCrop box selection with the ``cat_max_ratio`` constraint (see module doc).

    A box passes when its label has more than one non-``ignore_index`` value and the most
    frequent one is below ``cat_max_ratio`` of the non-ignore pixels. Up to ``max_checks``
    boxes are checked; after that the last drawn box is returned unchecked.
    ``cat_max_ratio >= 1`` disables the constraint.
    """
    h, w = label.shape[:2]
    box = random_crop_box(h, w, crop_size)
    if cat_max_ratio >= 1.0:
        return box
    for _ in range(max_checks):
        y1, y2, x1, x2 = box
        counts = np.bincount(label[y1:y2, x1:x2].ravel(), minlength=256)
        counts[ignore_index] = 0
        nz = counts[counts > 0]
        if len(nz) > 1 and nz.max() / nz.sum() < cat_max_ratio:
            break
        box = random_crop_box(h, w, crop_size)
    return box


def _convert_lut(alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """uint8 -> uint8 table of the reference ``convert``: float32(v)·alpha + beta, clip [0, 255], truncate."""
    return np.clip(np.arange(256, dtype=np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def photometric_distortion(
    img: np.ndarray,
    brightness_delta: int = 32,
    contrast_range: Sequence[float] = (0.5, 1.5),
    saturation_range: Sequence[float] = (0.5, 1.5),
    hue_delta: int = 18,
) -> np.ndarray:
    """Reference PhotoMetricDistortion on a ``uint8 (H, W, 3)`` RGB image -> new uint8 image.

    Random draws (global ``np.random``), in the reference order: brightness, mode, [contrast],
    saturation, hue, [contrast]; each op applies with probability 0.5 (see module doc).

    Multi-band images ``(H, W, C)``: with ``C > 3`` the distortion (the same draws) changes the first three
    bands (RGB) only and keeps the others (NIR …), because saturation and hue are defined on RGB and a colour
    jitter of a NIR band has no physical meaning; with ``C < 3`` the image is returned unchanged (no draws).
    """
    if img.ndim == 2 or img.shape[2] < 3:
        return img
    if img.shape[2] > 3:
        rgb = photometric_distortion(
            np.ascontiguousarray(img[:, :, :3]), brightness_delta, contrast_range, saturation_range, hue_delta
        )
        return np.concatenate([rgb, img[:, :, 3:]], axis=2)
    if np.random.randint(2):
        img = cv2.LUT(img, _convert_lut(beta=np.random.uniform(-brightness_delta, brightness_delta)))
    mode = np.random.randint(2)
    if mode == 1 and np.random.randint(2):
        img = cv2.LUT(img, _convert_lut(alpha=np.random.uniform(*contrast_range)))
    if np.random.randint(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[:, :, 1] = cv2.LUT(hsv[:, :, 1], _convert_lut(alpha=np.random.uniform(*saturation_range)))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if np.random.randint(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        delta = np.random.randint(-hue_delta, hue_delta)
        hsv[:, :, 0] = cv2.LUT(hsv[:, :, 0], ((np.arange(256) + delta) % 180).astype(np.uint8))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if mode == 0 and np.random.randint(2):
        img = cv2.LUT(img, _convert_lut(alpha=np.random.uniform(*contrast_range)))
    return img


def _normalize_lut(mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    v = np.arange(256, dtype=np.float64)
    return ((v[None, :] - np.asarray(mean, np.float64)[:, None]) / np.asarray(std, np.float64)[:, None]).astype(
        np.float32
    )


def normalize_to_array(img: np.ndarray, lut: np.ndarray, out_size: Sequence[int] | None = None) -> np.ndarray:
    """``uint8 (H, W, C)`` -> normalised ``float32 (C, H', W')`` array, zero-padded bottom/right to ``out_size``.

    ``lut``: ``(C, 256)`` float32 table ``(v - mean_c) / std_c`` (exact per value); C = 3 for RGB, one row
    per band for multi-band images. Raises :class:`~segkit.errors.DataError` when the image has another
    number of channels than the table.
    """
    img = img[:, :, None] if img.ndim == 2 else img  # OpenCV drops the axis of one-channel images
    h, w = img.shape[:2]
    k = len(lut)
    if img.shape[2] != k:
        raise DataError(f"image has {img.shape[2]} channel(s) but mean/std have {k} values (model in_channels)")
    oh, ow = (h, w) if out_size is None else (int(out_size[0]), int(out_size[1]))
    out = np.zeros((k, oh, ow), np.float32) if (oh, ow) != (h, w) else np.empty((k, h, w), np.float32)
    for c in range(k):
        np.take(lut[c], img[:, :, c], out=out[c, :h, :w], mode="clip")  # uint8 indices are always in range
    return out


def normalize_to_tensor(img: np.ndarray, lut: np.ndarray, out_size: Sequence[int] | None = None):
    """:func:`normalize_to_array` as a ``torch.Tensor`` (shares memory with the array)."""
    import torch

    return torch.from_numpy(normalize_to_array(img, lut, out_size))


def _pair(x, name: str) -> tuple[int, int]:
    if isinstance(x, (int, np.integer)):
        return int(x), int(x)
    if len(x) != 2:
        raise UsageError(f"{name} must be an int or a pair, got {x!r}")
    return int(x[0]), int(x[1])


class TrainTransform:
    """Reference training augmentation (docs/protocols.md); see the module docstring.

    Args:
        scale: ``(long, short)`` base scale of the random resize (ADE20K (2048, 512),
            Cityscapes (2048, 1024), CamVid e.g. (480, 360)); None = no resize.
        ratio_range: ``(lo, hi)`` of the scale ratio; None = resize to ``scale`` exactly (keep-ratio).
        crop_size: ``(h, w)`` (or an int) of the output.
        cat_max_ratio: RandomCrop class-ratio constraint (1.0 disables it).
        flip_prob: probability of a horizontal flip.
        photometric: apply PhotoMetricDistortion.
        mean, std: per-channel RGB statistics on the 0-255 scale (one per band for multi-band images:
            ``(H, W, C)`` uint8 images with C values each go through the same steps, the photometric
            distortion changing the RGB bands only, :func:`photometric_distortion`).
        ignore_index: label padding value and the class ignored by ``cat_max_ratio``.

    ``__call__(image uint8 (H, W, 3) RGB, label uint8 (H, W))`` ->
    ``{"image": float32 tensor (3, crop_h, crop_w), "label": int64 tensor (crop_h, crop_w)}``.

    Raises:
        ValueError: missing label, or image and label of different sizes.
    """

    def __init__(
        self,
        scale: Sequence[int] | None = (2048, 512),
        ratio_range: Sequence[float] | None = (0.5, 2.0),
        crop_size: Sequence[int] | int = (512, 512),
        cat_max_ratio: float = 0.75,
        flip_prob: float = 0.5,
        photometric: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        ignore_index: int = 255,
    ):
        self.scale = None if scale is None else _pair(scale, "scale")
        self.ratio_range = None if ratio_range is None else (float(ratio_range[0]), float(ratio_range[1]))
        if self.ratio_range is not None and not 0 < self.ratio_range[0] <= self.ratio_range[1]:
            raise UsageError(f"ratio_range must satisfy 0 < lo <= hi, got {ratio_range}")
        self.crop_size = _pair(crop_size, "crop_size")
        self.cat_max_ratio = float(cat_max_ratio)
        self.flip_prob = float(flip_prob)
        self.photometric = bool(photometric)
        self.mean, self.std = tuple(map(float, mean)), tuple(map(float, std))
        self.ignore_index = int(ignore_index)
        self._lut = _normalize_lut(self.mean, self.std)

    def to_dict(self) -> dict:
        return {
            "type": "train",
            "scale": self.scale,
            "ratio_range": self.ratio_range,
            "crop_size": self.crop_size,
            "cat_max_ratio": self.cat_max_ratio,
            "flip_prob": self.flip_prob,
            "photometric": self.photometric,
            "mean": self.mean,
            "std": self.std,
            "ignore_index": self.ignore_index,
        }

    def __repr__(self) -> str:
        return "TrainTransform(" + ", ".join(f"{k}={v}" for k, v in self.to_dict().items() if k != "type") + ")"

    def __call__(self, image: np.ndarray, label: np.ndarray | None) -> dict:
        if label is None:
            raise UsageError("TrainTransform needs a label")
        if image.shape[:2] != label.shape[:2]:
            raise DataError(f"image {image.shape[:2]} and label {label.shape[:2]} differ in size")
        if self.scale is not None:
            target = random_scale(self.scale, self.ratio_range) if self.ratio_range else self.scale
            h, w = rescale_size(image.shape[0], image.shape[1], target)
            if (h, w) != image.shape[:2]:
                image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
                label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
        y1, y2, x1, x2 = cat_max_ratio_crop_box(label, self.crop_size, self.cat_max_ratio, self.ignore_index)
        image, label = image[y1:y2, x1:x2], label[y1:y2, x1:x2]
        if np.random.rand() < self.flip_prob:
            image, label = cv2.flip(image, 1), cv2.flip(label, 1)
        if self.photometric:
            image = photometric_distortion(np.ascontiguousarray(image))
        out_label = np.full(self.crop_size, self.ignore_index, np.int64)
        out_label[: label.shape[0], : label.shape[1]] = label
        import torch

        return {"image": normalize_to_tensor(image, self._lut, self.crop_size), "label": torch.from_numpy(out_label)}


class TestTransform:
    """Reference single-scale test preprocessing (``Resize`` + ``ResizeToMultiple`` / ``AlignedResize``
    of the official SegNeXt / SegFormer test pipelines; ``docs/protocols.md``).

    Args:
        scale: ``(long, short)`` for the keep-ratio resize (ADE20K / COCO-Stuff (2048, 512));
            with ``keep_ratio=False`` it is the exact output ``(W, H)`` (reference convention);
            None = no resize (Cityscapes at (2048, 1024) is the identity).
        keep_ratio: see ``scale``.
        size_divisor: after the resize, ceil H and W to multiples of it and stretch the image
            (bilinear) to that size; None = off.
        mean, std: normalisation on the 0-255 scale.
        min_side: after the resize, an image whose short side is below this is upscaled (keep
            ratio) so that it is ``min_side``: the encoders downsample 32× (:data:`MIN_SIDE`).

    ``__call__(image uint8 (H, W, 3), label uint8 (H, W) | None)`` -> ``{"image": float32
    tensor (3, h', w')}`` plus ``"label": int64 tensor (H, W)`` at the ORIGINAL size when a
    label is given (metrics are computed at the original resolution).
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(
        self,
        scale: Sequence[int] | None = (2048, 512),
        keep_ratio: bool = True,
        size_divisor: int | None = 32,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        min_side: int = MIN_SIDE,
    ):
        self.scale = None if scale is None else _pair(scale, "scale")
        self.keep_ratio = bool(keep_ratio)
        self.min_side = int(min_side)
        self.size_divisor = None if not size_divisor else int(size_divisor)
        self.mean, self.std = tuple(map(float, mean)), tuple(map(float, std))
        self._lut = _normalize_lut(self.mean, self.std)

    def to_dict(self) -> dict:
        return {
            "type": "test",
            "scale": self.scale,
            "keep_ratio": self.keep_ratio,
            "size_divisor": self.size_divisor,
            "mean": self.mean,
            "std": self.std,
            "min_side": self.min_side,
        }

    def __repr__(self) -> str:
        return "TestTransform(" + ", ".join(f"{k}={v}" for k, v in self.to_dict().items() if k != "type") + ")"

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(H', W')`` of the network input for an ``H x W`` image (what :meth:`resize` produces)."""
        h, w = height, width
        if self.scale is not None:
            h, w = rescale_size(h, w, self.scale) if self.keep_ratio else (self.scale[1], self.scale[0])
        if min(h, w) < self.min_side:  # the encoders downsample 32x: upscale tiny images (keep ratio)
            f = self.min_side / min(h, w)
            h, w = max(self.min_side, int(h * f + 0.5)), max(self.min_side, int(w * f + 0.5))
        if self.size_divisor:
            d = self.size_divisor
            h, w = int(math.ceil(h / d)) * d, int(math.ceil(w / d)) * d
        return h, w

    def resize(self, image: np.ndarray) -> np.ndarray:
        """The resize part alone: ``uint8 (H, W, 3)`` -> ``uint8 (H', W', 3)`` (:meth:`output_size`).

        Keep-ratio resize to ``scale`` (or exact with ``keep_ratio=False``), an upscale to
        ``min_side`` for tiny images, then the stretch to multiples of ``size_divisor``; each
        step is one ``cv2.INTER_LINEAR`` resize and is skipped when it would not change the size.
        """
        h, w = image.shape[:2]
        if self.scale is not None:
            nh, nw = rescale_size(h, w, self.scale) if self.keep_ratio else (self.scale[1], self.scale[0])
            if (nh, nw) != (h, w):
                image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        nh, nw = image.shape[:2]
        if min(nh, nw) < self.min_side:
            f = self.min_side / min(nh, nw)
            nh, nw = max(self.min_side, int(nh * f + 0.5)), max(self.min_side, int(nw * f + 0.5))
            image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        if self.size_divisor:
            d = self.size_divisor
            mh, mw = int(math.ceil(nh / d)) * d, int(math.ceil(nw / d)) * d
            if (mh, mw) != (nh, nw):
                image = cv2.resize(image, (mw, mh), interpolation=cv2.INTER_LINEAR)
        return image

    def to_array(self, image: np.ndarray) -> np.ndarray:
        """``uint8 (H, W, 3)`` RGB -> normalised ``float32 (3, H', W')`` NumPy array (no PyTorch needed)."""
        return normalize_to_array(self.resize(image), self._lut)

    def __call__(self, image: np.ndarray, label: np.ndarray | None = None) -> dict:
        out = {"image": normalize_to_tensor(self.resize(image), self._lut)}
        if label is not None:
            import torch

            out["label"] = torch.from_numpy(label.astype(np.int64))
        return out
