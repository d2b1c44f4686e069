"""Image classification data for encoder pretraining (``segkit pretrain``): an ImageNet-style folder,
DeiT's train / eval transforms, and Mixup / CutMix.

**Folder layout** (torchvision's ``ImageFolder``): ``<root>/<split>/<class>/<image>``, one
sub-folder per class (sorted names → indices 0…K−1), image suffixes of
:data:`segkit.utils.IMAGE_SUFFIXES`. The validation split must have the same class folders.

**Train transform** (DeiT, Touvron et al. 2021, §6 / Table 9; the timm ``create_transform`` call
of ``deit/datasets.py``): random-resized crop (scale 0.08–1, ratio 3/4–4/3, bicubic), horizontal
flip 0.5, RandAugment (2 operations, magnitude 9 of 10, "rand-m9-mstd0.5-inc1"), normalise,
random erasing (p 0.25). RandAugment and random erasing come from **kornia**
(``kornia.augmentation.auto.RandAugment``, ``kornia.augmentation.RandomErasing``; install
``segkit[pretrain]``), applied per image. Two differences from timm, kornia having no switch for
them: the magnitude is fixed (timm samples it with std 0.5 around 9), and erased boxes are
filled with 0 (= the mean colour after normalisation) where timm draws per-pixel Gaussian noise.
kornia's magnitude scale is 0–30, so DeiT's 9/10 is ``m=27``.

**Eval transform**: resize the short side to ``size / 0.875`` (bicubic), centre crop ``size``
(DeiT's ``eval_crop_ratio`` 0.875), normalise.

**Mixup / CutMix** (:func:`mixup_cutmix`): DeiT's Mixup 0.8 / CutMix 1.0, switch probability
0.5, applied to every batch, label smoothing 0.1 inside the soft targets (timm ``Mixup`` in
``mode="batch"``): each batch is mixed with itself reversed.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from segkit.data.meta import IMAGENET_MEAN, IMAGENET_STD
from segkit.errors import DataError
from segkit.utils import IMAGE_SUFFIXES, require


class ImageFolder:
    """``<root>/<split>/<class>/*`` images with integer labels.

    Args:
        root: the folder holding ``train/`` and ``val/``.
        split: sub-folder to read.
        transform: ``uint8 (H, W, 3)`` RGB → tensor; ``None`` returns the array.
        classes: class names to require (the training split's, for validation); default the
            sorted sub-folder names.

    A map-style data set (``len`` / indexing) for ``torch.utils.data.DataLoader``; torch-free at
    import like the rest of :mod:`segkit.data`. Items: ``(image, label)`` with ``label`` an int in
    ``[0, K)``. Raises :class:`DataError` for a
    missing split, a split without class folders or images, or class folders that differ from
    ``classes``.
    """

    def __init__(self, root: str | Path, split: str = "train", transform=None, classes: Sequence[str] | None = None):
        from segkit.data.datasets import resolve_root

        self.root = resolve_root(root)
        folder = self.root / split
        if not folder.is_dir():
            raise DataError(f"{folder}: no such folder (expected {self.root}/{split}/<class>/<image>)")
        found = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if not found:
            raise DataError(f"{folder}: no class sub-folders (expected {folder}/<class>/<image>)")
        if classes is not None and list(classes) != found:
            missing = sorted(set(classes) - set(found))
            extra = sorted(set(found) - set(classes))
            raise DataError(
                f"{folder}: class folders differ from the training split's (missing {missing[:5]}, extra {extra[:5]})"
            )
        self.classes = list(classes) if classes is not None else found
        self.samples: list[tuple[str, int]] = []
        empty = []
        for i, name in enumerate(self.classes):
            files = sorted(p for p in (folder / name).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                empty.append(name)
            self.samples += [(str(p), i) for p in files]
        if not self.samples:
            raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the class folders")
        self.empty_classes = empty
        self.split, self.transform = split, transform

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from segkit.data.io import read_image

        path, label = self.samples[index]
        image = read_image(path)
        return (self.transform(image) if self.transform is not None else image), label


def _normalise(image: np.ndarray, mean, std):
    import torch

    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    return (t - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


class ClassificationTrainTransform:
    """DeiT's training augmentation (module docstring): ``uint8 (H, W, 3)`` → float32 ``(3, size, size)``.

    Args:
        size: output side (224).
        scale, ratio: random-resized-crop area fraction and aspect range.
        hflip: flip probability.
        rand_augment: ``(n, m)`` for kornia's RandAugment (m on kornia's 0–30 scale), ``None`` = off.
        erase_prob: random-erasing probability (0 = off).
        mean, std: normalisation on the 0–255 scale.

    Uses Python's ``random`` for the crop/flip and torch's RNG for kornia (both seeded per worker
    by the DataLoader).
    """

    def __init__(
        self,
        size: int = 224,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        rand_augment: Sequence[int] | None = (2, 27),
        erase_prob: float = 0.25,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        self.size, self.scale, self.ratio, self.hflip = int(size), tuple(scale), tuple(ratio), float(hflip)
        self.mean, self.std = tuple(mean), tuple(std)
        self.rand_augment = self.erasing = None
        if rand_augment or erase_prob > 0:
            require("kornia", "pretrain", "RandAugment / random erasing of segkit pretrain")
            from kornia.augmentation import RandomErasing
            from kornia.augmentation.auto import RandAugment

            if rand_augment:
                n, m = rand_augment
                self.rand_augment = RandAugment(n=int(n), m=int(m))
            if erase_prob > 0:
                self.erasing = RandomErasing(p=float(erase_prob), scale=(0.02, 1 / 3), ratio=(0.3, 3.3), value=0.0)

    def crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """``(y, x, h, w)`` of a random-resized crop (10 tries, then the central crop; torchvision's rule)."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * random.uniform(*self.scale)
            aspect = math.exp(random.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return random.randint(0, height - h), random.randint(0, width - w), h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, image: np.ndarray):
        import torch

        y, x, h, w = self.crop_box(*image.shape[:2])
        out = cv2.resize(image[y : y + h, x : x + w], (self.size, self.size), interpolation=cv2.INTER_CUBIC)
        if random.random() < self.hflip:
            out = out[:, ::-1]
        t = torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).float().div_(255.0)
        if self.rand_augment is not None:
            t = self.rand_augment(t[None])[0].clamp_(0.0, 1.0)
        t = (t * 255.0 - torch.tensor(self.mean).view(3, 1, 1)) / torch.tensor(self.std).view(3, 1, 1)
        if self.erasing is not None:
            t = self.erasing(t[None])[0]
        return t.contiguous()


class ClassificationEvalTransform:
    """Resize the short side to ``size / crop_ratio`` (bicubic), centre crop ``size``, normalise."""

    def __init__(
        self,
        size: int = 224,
        crop_ratio: float = 0.875,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        self.size, self.crop_ratio, self.mean, self.std = int(size), float(crop_ratio), tuple(mean), tuple(std)

    def __call__(self, image: np.ndarray):
        h, w = image.shape[:2]
        short = int(self.size / self.crop_ratio)
        f = short / min(h, w)
        nh, nw = max(self.size, int(round(h * f))), max(self.size, int(round(w * f)))
        out = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_CUBIC)
        y, x = (nh - self.size) // 2, (nw - self.size) // 2
        return _normalise(out[y : y + self.size, x : x + self.size], self.mean, self.std)


# ----------------------------------------------------------------------------- Mixup / CutMix
def smooth_one_hot(labels, num_classes: int, smoothing: float = 0.0):
    """``(B,)`` int64 tensor of labels → ``(B, K)`` float targets: ``1 − s + s/K`` on the label, ``s/K`` elsewhere."""
    import torch

    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return out.scatter_(1, labels.view(-1, 1), 1.0 - smoothing + off)


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of a CutMix box of area ``(1 − lam)·H·W`` (centre uniform, clipped at the edges)."""
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, height)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, width)
    return y0, y1, x0, x1


def mixup_cutmix(
    images,
    labels,
    num_classes: int,
    *,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    prob: float = 1.0,
    switch_prob: float = 0.5,
    smoothing: float = 0.1,
    rng: np.random.Generator | None = None,
) -> tuple:
    """Mixup or CutMix of a batch with itself reversed (Zhang et al. 2018; Yun et al. 2019; timm ``Mixup``).

    Args:
        images: ``(B, C, H, W)`` float; mixed in place and returned.
        labels: ``(B,)`` int64 class indices.
        num_classes: K.
        mixup_alpha, cutmix_alpha: Beta(α, α) parameters (0 disables one).
        prob: probability of mixing this batch at all.
        switch_prob: with both enabled, probability of CutMix instead of Mixup.
        smoothing: label smoothing of the targets.
        rng: NumPy generator for every random draw (default a fresh unseeded one).

    Returns ``(images, targets (B, K) float rows summing to 1, info)`` with ``info`` the method
    (``"mixup"``, ``"cutmix"`` or ``"none"``) and ``lam``, the share of each image kept — for
    CutMix recomputed from the clipped box (timm's ``correct_lam``).
    """
    rng = rng if rng is not None else np.random.default_rng()
    y1 = smooth_one_hot(labels, num_classes, smoothing)
    if not ((mixup_alpha > 0 or cutmix_alpha > 0) and images.shape[0] > 1 and rng.random() < prob):
        return images, y1, {"method": "none", "lam": 1.0}
    y2 = y1.flip(0)
    if cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < switch_prob):
        h, w = images.shape[-2:]
        y0, yb, x0, xb = cutmix_box(h, w, float(rng.beta(cutmix_alpha, cutmix_alpha)), rng)
        images[:, :, y0:yb, x0:xb] = images.flip(0)[:, :, y0:yb, x0:xb]
        lam, method = 1.0 - (yb - y0) * (xb - x0) / float(h * w), "cutmix"
    else:
        lam, method = float(rng.beta(mixup_alpha, mixup_alpha)), "mixup"
        flipped = images.flip(0).mul_(1.0 - lam)  # a copy, taken before images is scaled in place
        images.mul_(lam).add_(flipped)
    return images, y1 * lam + y2 * (1.0 - lam), {"method": method, "lam": lam}


def soft_target_cross_entropy(logits, targets):
    """Mean over the batch of ``−Σ_k t_k log softmax(logits)_k`` (``(B, K)`` tensors), in float32."""
    return (-targets * logits.float().log_softmax(-1)).sum(-1).mean()


__all__ = [
    "ClassificationEvalTransform",
    "ClassificationTrainTransform",
    "ImageFolder",
    "cutmix_box",
    "mixup_cutmix",
    "smooth_one_hot",
    "soft_target_cross_entropy",
]
