"""The ``Segmentor``: encoder + decode head + loss + inference, and its save/load format.

A ``Segmentor`` holds ``backbone`` and ``decode_head`` under exactly those attribute names so
that its ``state_dict`` keys are the official checkpoint keys (``backbone.*``,
``decode_head.*``, as in the official SegFormer / SegNeXt ``EncoderDecoder``). The two talk
through the contract of :mod:`segkit.models.contract` (``Features`` in, logits out, and the
head's ``loss``). Inference modes follow the reference test protocol (mmseg
``EncoderDecoder.whole_inference`` / ``slide_inference`` / ``aug_test``; ``docs/protocols.md``):
*whole* (one forward over the full image), *slide* (overlapping windows, logits averaged over
overlaps) and *multi-scale + flip* (softmax probabilities averaged over scales and horizontal
flips).

**Binary task** (``task="binary"``, one logit per pixel): the head has one output channel, the loss is
the binary cross-entropy with logits (:meth:`Segmentor.seg_loss`), a pixel is foreground where
``sigmoid(logit) >= threshold`` and the label space has two classes (0 background, 1 foreground).

**Input channels** (``in_channels=N``): every convolution that reads the image takes ``N`` channels
(:func:`image_convolutions`), so multi-band input (RGB + NIR …) goes through any encoder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from segkit.data.meta import IMAGENET_MEAN, IMAGENET_STD, default_palette
from segkit.errors import UsageError, UsageTypeError

from .contract import DecodeHead, Features
from .inference import Taps, argmax_classes, labels_for_rows, resize, resize_argmax, slide_windows
from .losses import (
    BANDED_LOSS_MIN_CLASSES,
    binary_dice_loss,
    dice_loss,
    ohem_pixel_weights,
    upsampled_cross_entropy,
)

TASKS = ("multiclass", "binary")


def _check_inference_args(mode, crop_size, stride, scales) -> None:
    """:class:`~segkit.errors.UsageError` for inference arguments that cannot give a prediction for every pixel:
    an unknown mode, slide without a window, a stride larger than the window (pixels between windows would get
    none), a scale that is not positive."""
    import math

    if mode not in ("whole", "slide"):
        raise UsageError(f"mode must be 'whole' or 'slide', got {mode!r}")
    if mode == "slide" and crop_size is None:
        raise UsageError("slide inference needs crop_size=(h, w)")
    if mode == "slide" and stride is not None and any(int(s) > int(c) for s, c in zip(stride, crop_size)):
        raise UsageError(
            f"slide stride {tuple(stride)} is larger than the window {tuple(crop_size)} (--stride / --crop): pixels "
            f"between the windows would get no prediction; use a stride <= the window"
        )
    if any(not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0) for v in scales):
        raise UsageError(f"test scales must be positive ratios, got {list(scales)} (--scales)")


def image_convolutions(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The ``(name, Conv2d)`` pairs of ``model`` that read the input image: every 2-D convolution with 3 input
    channels (the encoder's stem / patch embedding, and for RSSeg the head's local patch embedding, which also
    reads the image). Choice: found by their channel count rather than by name, so that it holds for every
    family (no internal layer of the zoo's models has 3 input channels; ``tests/test_multiband.py`` checks
    that a 4-channel build of each family runs)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3]


def _set_input_channels(model: nn.Module, n: int) -> list[str]:
    """Replace every :func:`image_convolutions` module by one with ``n`` input channels (new random weights of
    PyTorch's default initialisation; pretrained 3-channel weights are adapted when loaded,
    :func:`segkit.checkpoints.adapt_input_conv`). Returns the names of the replaced modules."""
    names = []
    for name, conv in image_convolutions(model):
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        new = nn.Conv2d(
            n,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
        ).to(conv.weight.device, conv.weight.dtype)
        setattr(parent, name.rsplit(".", 1)[-1], new)
        names.append(name)
    return names


class Segmentor(nn.Module):
    """Encoder–decoder semantic segmentation model.

    Args:
        backbone: encoder, ``(B, 3, H, W)`` normalised float → :class:`~segkit.models.contract.Features`.
        decode_head: a :class:`~segkit.models.contract.DecodeHead`: ``Features`` → logits
            ``(B, K, h, w)`` at its own output stride (1/4 for SegFormer, 1/8 for SegNeXt).
        num_classes: K.
        name: model name in the zoo (``segnext-t`` …), used by ``save_pretrained``.
        family: name of the model family (:mod:`segkit.models.family`) whose checkpoint
            converter and FLOP convention apply; ``None`` for a hand-assembled model.
        arch: the architecture switches the zoo builder used (saved so that
            ``from_pretrained`` rebuilds the same architecture).
        class_names, palette: optional metadata (palette: K RGB triples 0–255).
        ignore_index: label value excluded from the loss and metrics (default 255).
        mean, std: normalisation on the 0–255 scale applied by :meth:`normalize`.
        loss_avg: ``"valid"`` averages the cross-entropy over non-ignored pixels
            (``torch.nn.CrossEntropyLoss`` semantics, our default); ``"all"`` divides by all
            pixels, ignored ones included, as mmseg 0.x's ``CrossEntropyLoss(avg_non_ignore=False)``
            does (the official SegFormer / SegNeXt code).
        align_corners: bilinear resizing convention (reference: False).
        task: ``"multiclass"`` (K logits, softmax cross-entropy; the papers) or ``"binary"`` (one logit,
            binary cross-entropy; ``num_classes`` must be 1 and the label space is {0 background,
            1 foreground}: ``class_names`` / ``palette`` then have two entries, default
            ``["background", "foreground"]``).
        threshold: binary task: a pixel is foreground where ``sigmoid(logit) >= threshold`` (in (0, 1);
            default 0.5). Saved with the model; ``segkit eval`` / ``predict`` use it.
        mask_values: binary task: the stored values of background and foreground in the training
            masks, ``(0, 255)`` or ``(0, 1)``; ``segkit predict`` writes its masks with them.
        in_channels: channels of the input image (3 = RGB; e.g. 4 for RGB + NIR). The convolutions that
            read the image (:func:`image_convolutions`) are rebuilt with this many input channels, and
            ``mean`` / ``std`` need one value per channel.

    Input to :meth:`forward`: ``(B, C, H, W)`` float32 normalised images (``C = in_channels``). Output:
    logits ``(B, K, H, W)`` at input resolution (``K = 1`` for the binary task).

    Raises :class:`~segkit.errors.UsageError` for an unknown task, a binary model with ``num_classes != 1``,
    a threshold outside (0, 1), or ``mean`` / ``std`` whose length is not ``in_channels``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        decode_head: nn.Module,
        num_classes: int,
        *,
        name: str = "custom",
        family: str | None = None,
        arch: dict | None = None,
        class_names: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        ignore_index: int = 255,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        loss_avg: str = "valid",
        align_corners: bool = False,
        task: str = "multiclass",
        threshold: float = 0.5,
        mask_values: Sequence[int] | None = None,
        in_channels: int = 3,
    ):
        super().__init__()
        if not isinstance(decode_head, DecodeHead):
            raise UsageTypeError(
                f"decode_head must be a segkit.models.contract.DecodeHead, got {type(decode_head).__name__}"
            )
        if loss_avg not in ("valid", "all"):
            raise UsageError(f"loss_avg must be 'valid' or 'all', got {loss_avg!r}")
        if task not in TASKS:
            raise UsageError(f"task must be one of {TASKS}, got {task!r}")
        if task == "binary" and int(num_classes) != 1:
            raise UsageError(f"a binary model has one logit (num_classes=1), got num_classes={num_classes}")
        if not 0.0 < float(threshold) < 1.0:
            raise UsageError(f"threshold must be in (0, 1), got {threshold}")
        labels_k = 2 if task == "binary" else int(num_classes)
        if class_names is not None and len(class_names) != labels_k:
            raise UsageError(f"{len(class_names)} class names given for {labels_k} classes ({task})")
        if palette is not None and len(palette) != labels_k:
            raise UsageError(f"palette has {len(palette)} colours for {labels_k} classes ({task})")
        if isinstance(in_channels, bool) or int(in_channels) < 1:
            raise UsageError(f"in_channels must be an integer >= 1, got {in_channels!r}")
        if len(mean) != int(in_channels) or len(std) != int(in_channels):
            raise UsageError(
                f"mean and std need one value per input channel ({in_channels}), got {len(mean)} and {len(std)}; "
                f"give model_args mean: [...] and std: [...] (segkit check-data --stats computes them)"
            )
        self.backbone = backbone
        self.decode_head = decode_head
        self.num_classes = int(num_classes)
        self.task = task
        self.threshold = float(threshold)
        self.mask_values = None if mask_values is None else [int(v) for v in mask_values]
        self.in_channels = int(in_channels)
        if self.in_channels != 3:
            _set_input_channels(self, self.in_channels)
        self.name = name
        self.family = family
        self.arch = dict(arch or {})
        default_names = ["background", "foreground"] if task == "binary" else [f"class_{i}" for i in range(labels_k)]
        self.class_names = list(class_names) if class_names is not None else default_names
        self.palette = [list(map(int, c)) for c in palette] if palette is not None else default_palette(labels_k)
        self.ignore_index = int(ignore_index)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.loss_avg = loss_avg
        self.align_corners = align_corners
        # see set_class_weight; a non-persistent buffer: moves with .to(device), not in checkpoints
        self.register_buffer("class_weight", None, persistent=False)
        # the training config (``Config.to_dict()``) this model came from, or None: saved in
        # config.json so that ``segkit eval`` uses the same test resize / eval protocol by default
        self.train_config: dict | None = None
        # the test protocol of published weights (segkit.data.protocol.TestProtocol fields), their
        # source / licence, and the last evaluation (metrics dict): all saved in config.json
        self.test_protocol: dict | None = None
        self.source: dict | None = None
        self.eval_results: dict | None = None
        # the family's paper and citation for the model card (set by segkit.models.zoo.build_model)
        self.paper: dict | None = None
        self.is_fused = False
        # fused upsampling + cross-entropy in the training loss (head_seg_loss); False = reference composition.
        # On by default from BANDED_LOSS_MIN_CLASSES classes: below that the full-resolution map is
        # small and PyTorch's own kernels are faster (segkit.models.losses)
        self.banded_loss = self.num_classes >= BANDED_LOSS_MIN_CLASSES
        # optional loss terms (set_loss_options; training settings, not saved with the model)
        self.ohem: tuple[float, int] | None = None
        self.dice_weight = 0.0

    @property
    def is_binary(self) -> bool:
        """Whether this is a one-logit binary model (``task="binary"``)."""
        return self.task == "binary"

    @property
    def num_labels(self) -> int:
        """Classes of the label space: 2 for the binary task (background, foreground), else ``num_classes``."""
        return 2 if self.is_binary else self.num_classes

    def _binary_labels(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` logits → ``(B, H, W)`` int64 labels, 1 where ``sigmoid(logit) >= threshold``
        (compared on the logit, ``log(t / (1 − t))``, without computing the sigmoid)."""
        import math

        t = self.threshold
        return (logits[:, 0].float() >= math.log(t / (1.0 - t))).long()

    # ------------------------------------------------------------------ forward
    def extract_features(self, images: torch.Tensor) -> Features:
        """The encoder's :class:`~segkit.models.contract.Features` for normalised ``(B, C, H, W)`` images."""
        features = self.backbone(images)
        if not isinstance(features, Features):
            raise UsageTypeError(
                f"the encoder {type(self.backbone).__name__} returned {type(features).__name__}; "
                f"an encoder must return segkit.models.contract.Features"
            )
        return features

    def encode_decode(self, images: torch.Tensor) -> torch.Tensor:
        """Logits at the head's output stride: ``(B, 3, H, W)`` → ``(B, K, H/s, W/s)``."""
        return self.decode_head(self.extract_features(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` at input resolution (bilinear, align_corners=False)."""
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise UsageError(f"expected images of shape (B, {self.in_channels}, H, W), got {tuple(images.shape)}")
        return resize(self.encode_decode(images), images.shape[-2:], self.align_corners)

    # --------------------------------------------------------------------- loss
    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training losses for ``images (B, 3, H, W)`` and integer ``labels (B, H, W)``.

        The head's :meth:`~segkit.models.contract.DecodeHead.loss` computes them, given
        :meth:`head_seg_loss` as the pixel-wise criterion (logits upsampled to the label size
        before the cross-entropy, as the reference); heads with auxiliary objectives (RSSeg's
        DCA and boundary losses) add their terms there, so they cost nothing at inference.
        Returns a dict of scalar tensors whose key ``"loss"`` is the total to back-propagate.
        """
        if labels.ndim != 3:
            raise UsageError(f"expected labels of shape (B, H, W), got {tuple(labels.shape)}")
        if self.is_fused:
            raise RuntimeError("a fused model (Segmentor.fused()) is for inference only; train the original model")
        labels = labels.long()
        losses = dict(self.decode_head.loss(self.extract_features(images), labels, self.head_seg_loss))
        losses["loss"] = sum(losses.values())
        return losses

    def head_seg_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """:meth:`seg_loss` of head-resolution ``logits (B, K, h, w)``, bilinearly resized to ``labels (B, H, W)``.

        With ``banded_loss`` (the default from 48 classes) the resize and the cross-entropy run
        fused, band by band (:func:`~segkit.models.losses.upsampled_cross_entropy`): the same loss
        and gradient to float32 rounding, without the ``K × H × W`` map; ``banded_loss = False``
        runs the reference composition (``F.interpolate`` then ``F.cross_entropy``).
        """
        plain = self.ohem is None and not self.dice_weight
        if plain and self.banded_loss and tuple(logits.shape[-2:]) != tuple(labels.shape[-2:]):
            return upsampled_cross_entropy(
                logits,
                labels,
                weight=self.class_weight,
                ignore_index=self.ignore_index,
                avg=self.loss_avg,
                align_corners=self.align_corners,
            )
        return self.seg_loss(resize(logits, labels.shape[-2:], self.align_corners), labels)

    def set_class_weight(self, weights: Sequence[float] | None) -> None:
        """Per-class weights of :meth:`seg_loss` (``None`` = unweighted, the papers' default).

        ``weights``: K non-negative numbers (``ValueError`` otherwise). A training setting: it is
        not part of the checkpoint or ``config.json``. With ``loss_avg="valid"`` the weighted
        sum is divided by the sum of the valid pixels' weights (``F.cross_entropy`` semantics).
        """
        if weights is None:
            self.class_weight = None
            return
        w = torch.as_tensor([float(v) for v in weights], dtype=torch.float32)
        if w.numel() != self.num_labels or bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
            raise UsageError(
                f"class weights must be {self.num_labels} finite non-negative numbers, got {list(weights)}"
            )
        param = next(self.parameters(), None)
        self.class_weight = w if param is None else w.to(param.device)

    def set_loss_options(
        self, ohem_thresh: float | None = None, ohem_min_kept: int = 100000, dice_weight: float = 0.0
    ) -> None:
        """Optional terms of :meth:`seg_loss` (training settings; the papers' recipes use none).

        ``ohem_thresh``: online hard example mining (:func:`~segkit.models.losses.ohem_pixel_weights`)
        — only pixels whose true-class probability is below the threshold (at least
        ``ohem_min_kept`` per image) enter the cross-entropy, averaged over the kept pixels'
        (class) weights with ``loss_avg="valid"`` or over all pixels with ``"all"`` (mmseg's
        reduction). ``dice_weight`` > 0 adds ``dice_weight ×`` :func:`~segkit.models.losses.dice_loss`.
        Both need the full-resolution logits, so they bypass the banded loss. ``ValueError`` on
        a threshold outside (0, 1], a negative ``ohem_min_kept`` or ``dice_weight``.
        """
        if ohem_thresh is not None and not 0 < float(ohem_thresh) <= 1:
            raise UsageError(f"ohem_thresh must be in (0, 1], got {ohem_thresh}")
        if int(ohem_min_kept) < 0 or float(dice_weight) < 0:
            raise UsageError(f"ohem_min_kept and dice_weight must be >= 0, got {ohem_min_kept}, {dice_weight}")
        if ohem_thresh is not None and self.is_binary:
            raise UsageError("ohem_thresh is for the multi-class cross-entropy; the binary task does not take it")
        self.ohem = None if ohem_thresh is None else (float(ohem_thresh), int(ohem_min_kept))
        self.dice_weight = float(dice_weight)

    def seg_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Pixel-wise cross-entropy with ``ignore_index`` and optional class weights; averaging set by ``loss_avg``.

        Plus the optional OHEM selection and Dice term of :meth:`set_loss_options`. The binary task:
        :meth:`binary_seg_loss`.
        """
        if self.is_binary:
            return self.binary_seg_loss(logits, labels)
        weight = self.class_weight
        logits = logits.float()
        if self.ohem is None and self.loss_avg == "valid":
            loss = F.cross_entropy(logits, labels, weight=weight, ignore_index=self.ignore_index)
        else:
            per_pixel = F.cross_entropy(logits, labels, weight=weight, ignore_index=self.ignore_index, reduction="none")
            if self.ohem is None:
                loss = per_pixel.sum() / per_pixel.numel()
            else:
                keep = ohem_pixel_weights(logits, labels, *self.ohem, ignore_index=self.ignore_index)
                if self.loss_avg == "all":
                    loss = (per_pixel * keep).sum() / per_pixel.numel()
                else:
                    w = keep if weight is None else keep * weight[labels.masked_fill(keep == 0, 0)]
                    loss = (per_pixel * keep).sum() / w.sum().clamp_min(1e-12)
        if self.dice_weight:
            loss = loss + self.dice_weight * dice_loss(logits, labels, self.ignore_index)
        return loss

    def binary_seg_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Binary task: ``F.binary_cross_entropy_with_logits`` of ``logits (B, 1, H, W)`` against ``labels (B, H, W)``
        (1 = foreground, 0 = background, ``ignore_index`` skipped), averaged over the valid pixels
        (``loss_avg="valid"``) or all pixels (``"all"``); with class weights ``[w_bg, w_fg]`` each pixel is
        weighted by its class's weight (and the ``"valid"`` mean divides by the weights' sum, as
        ``F.cross_entropy``). Plus ``dice_weight ×`` :func:`~segkit.models.losses.binary_dice_loss`. Scalar float32.
        """
        logit = logits.float()[:, 0]
        valid = labels != self.ignore_index
        target = (labels == 1).float()
        per_pixel = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
        w = valid.float()
        if self.class_weight is not None:
            w = w * self.class_weight[(labels == 1).long()]
        if self.loss_avg == "valid":
            loss = (per_pixel * w).sum() / w.sum().clamp_min(1e-12)
        else:
            loss = (per_pixel * w).sum() / per_pixel.numel()
        if self.dice_weight:
            loss = loss + self.dice_weight * binary_dice_loss(logit, labels, self.ignore_index)
        return loss

    # ---------------------------------------------------------------- inference
    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` uint8 (0–255; C = ``in_channels``, RGB for 3) → normalised float32 with this
        model's mean/std."""
        c = len(self.mean)
        mean = torch.tensor(self.mean, device=images_uint8.device).view(1, c, 1, 1)
        std = torch.tensor(self.std, device=images_uint8.device).view(1, c, 1, 1)
        return (images_uint8.float() - mean) / std

    @torch.no_grad()
    def inference(
        self,
        images: torch.Tensor,
        *,
        mode: str = "whole",
        crop_size: Sequence[int] | None = None,
        stride: Sequence[int] | None = None,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        out_size: Sequence[int] | None = None,
        window_batch: int = 4,
        accumulate_on_cpu: bool = False,
    ) -> torch.Tensor:
        """Class probabilities ``(B, K, H_out, W_out)`` (softmax, float32) for normalised images; for the binary
        task ``(B, 2, H_out, W_out)`` = ``[1 − p, p]`` with ``p = sigmoid(logit)``.

        Args:
            images: ``(B, 3, H, W)`` normalised float tensor (already resized by the test transform).
            mode: ``"whole"`` or ``"slide"``.
            crop_size, stride: window size and step ``(h, w)`` in pixels for slide mode.
            scales: image-scale ratios for multi-scale testing (reference: 0.5 … 1.75).
            flip: also run the horizontally flipped image and average (flipped back).
            out_size: size to resize the probabilities to (the original label size); default input size.
            window_batch: how many slide windows go through the model at once (bounds memory).
            accumulate_on_cpu: keep the slide accumulation buffers on the CPU (for very large images on GPU).

        Probabilities of every (scale, flip) pass are resized to ``out_size`` and averaged
        (reference aug_test). Raises ``ValueError`` on an unknown mode or missing crop size.
        """
        _check_inference_args(mode, crop_size, stride, scales)
        out_size = tuple(out_size) if out_size is not None else tuple(images.shape[-2:])
        total = None
        n = 0
        for scale in scales:
            if scale == 1.0:
                scaled = images
            else:
                h, w = images.shape[-2:]
                scaled = resize(images, (int(h * scale + 0.5), int(w * scale + 0.5)), self.align_corners)
            for flipped in (False, True) if flip else (False,):
                x = scaled.flip(-1) if flipped else scaled
                if mode == "whole":
                    logits = self(x)
                else:
                    logits = self.slide_logits(x, crop_size, stride or crop_size, window_batch, accumulate_on_cpu)
                if flipped:
                    logits = logits.flip(-1)
                probs = resize(logits.float(), out_size, self.align_corners)
                if self.is_binary:
                    p = probs.sigmoid()
                    probs = torch.cat([1.0 - p, p], dim=1)
                else:
                    probs = probs.softmax(dim=1)
                total = probs if total is None else total.add_(probs)
                n += 1
        return total.div_(n)

    def slide_logits(
        self,
        images: torch.Tensor,
        crop_size: Sequence[int],
        stride: Sequence[int],
        window_batch: int = 4,
        accumulate_on_cpu: bool = False,
    ) -> torch.Tensor:
        """Sliding-window logits ``(B, K, H, W)``: overlapping windows, logits averaged per pixel.

        Windows are run ``window_batch`` at a time (all images of the batch together), and
        accumulated into one preallocated ``(B, K, H, W)`` buffer plus a per-pixel count, so
        peak memory is bounded by the window batch plus that buffer, not by the number of windows.
        """
        if window_batch < 1:
            raise UsageError(f"window_batch must be >= 1, got {window_batch}")
        b, _, h, w = images.shape
        acc_device = torch.device("cpu") if accumulate_on_cpu else images.device
        logits_sum = torch.zeros((b, self.num_classes, h, w), dtype=torch.float32, device=acc_device)
        count = torch.zeros((1, 1, h, w), dtype=torch.float32, device=acc_device)
        boxes = slide_windows(h, w, crop_size, stride)
        for start in range(0, len(boxes), window_batch):
            chunk = boxes[start : start + window_batch]
            crops = torch.cat([images[:, :, y1:y2, x1:x2] for (y1, y2, x1, x2) in chunk], dim=0)
            out = self(crops).float().to(acc_device)
            for i, (y1, y2, x1, x2) in enumerate(chunk):
                logits_sum[:, :, y1:y2, x1:x2] += out[i * b : (i + 1) * b]
                count[:, :, y1:y2, x1:x2] += 1
        return (logits_sum / count).to(images.device)

    @torch.no_grad()
    def slide_predict(
        self,
        images: torch.Tensor,
        crop_size: Sequence[int],
        stride: Sequence[int] | None = None,
        window_batch: int = 4,
        accumulate_on_cpu: bool = False,
        out_size: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Label map ``(B, H_out, W_out)`` int64 by slide inference, holding only a band of logits.

        Same windows and per-pixel logit averaging as :meth:`slide_logits`, but averaged logits are
        kept only for the rows that later windows can still reach (at most ``crop_h + stride_h``
        rows) plus the rows the resize to ``out_size`` still needs: once a window row is done,
        every row above the next window row is final, and the output rows that read only final
        rows are labelled by :func:`~segkit.models.inference.labels_for_rows` (bilinear resize to
        ``out_size`` + arg-max, default the input size). Peak memory is about
        ``K · (crop_h + stride_h) · W`` floats plus the window batch, independent of the image
        height, instead of ``K · H · W``.

        ``images`` may be normalised float ``(B, 3, H, W)`` or uint8 RGB (0–255), in which case each
        window is normalised on the fly (the full image is never converted to float).
        """
        if window_batch < 1:
            raise UsageError(f"window_batch must be >= 1, got {window_batch}")
        crop_size = tuple(int(c) for c in crop_size)
        stride = tuple(int(s) for s in (stride or crop_size))
        b, _, h, w = images.shape
        out_h, out_w = (int(out_size[0]), int(out_size[1])) if out_size is not None else (h, w)
        dev = torch.device("cpu") if accumulate_on_cpu else images.device
        row_taps = Taps.of(h, [out_h], self.align_corners, dev)
        col_taps = Taps.of(w, [out_w], self.align_corners, dev)
        last_row = row_taps.last_source(h)  # the last input row each output row reads
        identity = (out_h, out_w) == (h, w)
        boxes = slide_windows(h, w, crop_size, stride)
        rows: dict[int, list] = {}
        for box in boxes:
            rows.setdefault(box[0], []).append(box)
        row_starts = sorted(rows)
        out = torch.empty((b, out_h, out_w), dtype=torch.int64, device=dev)
        lo = 0  # first input row held in the accumulation band
        acc = torch.zeros((b, self.num_classes, 0, w), dtype=torch.float32, device=dev)
        cnt = torch.zeros((1, 1, 0, w), dtype=torch.float32, device=dev)
        final = acc  # averaged logits of final input rows fin_lo … lo - 1 that output rows still need
        fin_lo, y_next = 0, 0
        for r, y1 in enumerate(row_starts):
            y2 = max(bx[1] for bx in rows[y1])
            if y2 - lo > acc.shape[2]:  # grow the band down to this window row's bottom
                grow = y2 - lo - acc.shape[2]
                acc = torch.cat([acc, acc.new_zeros((b, self.num_classes, grow, w))], dim=2)
                cnt = torch.cat([cnt, cnt.new_zeros((1, 1, grow, w))], dim=2)
            chunk_boxes = rows[y1]
            for start in range(0, len(chunk_boxes), window_batch):
                chunk = chunk_boxes[start : start + window_batch]
                crops = torch.cat([images[:, :, a:c, x1:x2] for (a, c, x1, x2) in chunk], dim=0)
                if crops.dtype == torch.uint8:
                    crops = self.normalize(crops)
                logits = self(crops).float().to(dev)
                for i, (a, c, x1, x2) in enumerate(chunk):
                    acc[:, :, a - lo : c - lo, x1:x2] += logits[i * b : (i + 1) * b]
                    cnt[:, :, a - lo : c - lo, x1:x2] += 1
            done = row_starts[r + 1] if r + 1 < len(row_starts) else h  # rows above the next window row are final
            if done <= lo:
                continue
            n = done - lo
            averaged = acc[:, :, :n] / cnt[:, :, :n]
            if identity:  # no resize: the final rows' labels are their averaged logits' arg-max
                for i in range(b):
                    out[i, lo:done] = argmax_classes(averaged[i])
            else:
                final = torch.cat([final, averaged], dim=2)
            acc, cnt, lo = acc[:, :, n:].contiguous(), cnt[:, :, n:].contiguous(), done
            if not identity:
                y_end = int((last_row < done).sum())  # output rows whose sources are all final
                if y_end > y_next:
                    taps = row_taps.rows(y_next, y_end, shift=fin_lo)
                    for i in range(b):
                        out[i, y_next:y_end] = labels_for_rows(final[i], taps, col_taps)
                    y_next = y_end
                    keep = int(row_taps.base[y_next]) if y_next < out_h else lo  # first row still needed
                    final, fin_lo = final[:, :, keep - fin_lo :].contiguous(), keep
        return out.to(images.device)

    @torch.no_grad()
    def predict(
        self,
        images: torch.Tensor,
        *,
        mode: str = "whole",
        crop_size: Sequence[int] | None = None,
        stride: Sequence[int] | None = None,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        out_size: Sequence[int] | None = None,
        window_batch: int = 4,
        accumulate_on_cpu: bool = False,
    ) -> torch.Tensor:
        """Label map ``(B, H_out, W_out)`` int64 — the arg-max of :meth:`inference` (same arguments).

        Without test-time augmentation no probabilities are computed: whole inference takes the
        decoder's logits through :func:`~segkit.models.inference.resize_argmax` (bilinear resize to
        the input, then to ``out_size``, fused with the arg-max; only candidate classes are
        interpolated), slide inference goes through :meth:`slide_predict` (memory bounded by a band
        of rows). Labels equal ``inference(...).argmax(1)`` except at float32 near-ties
        (:mod:`segkit.models.inference`). With ``scales`` / ``flip`` the softmax probabilities of
        all passes are averaged first, as the reference (``inference``).
        """
        _check_inference_args(mode, crop_size, stride, scales)
        if tuple(scales) != (1.0,) or flip:  # test-time augmentation: the passes' probabilities averaged first
            probs = self.inference(
                images,
                mode=mode,
                crop_size=crop_size,
                stride=stride,
                scales=scales,
                flip=flip,
                out_size=out_size,
                window_batch=window_batch,
                accumulate_on_cpu=accumulate_on_cpu,
            )
            return (probs[:, 1] >= self.threshold).long() if self.is_binary else probs.argmax(dim=1)
        if self.is_binary:
            return self._binary_predict(images, mode, crop_size, stride, out_size, window_batch, accumulate_on_cpu)
        if mode == "slide":
            return self.slide_predict(images, crop_size, stride or crop_size, window_batch, accumulate_on_cpu, out_size)
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise UsageError(f"expected images of shape (B, {self.in_channels}, H, W), got {tuple(images.shape)}")
        size = tuple(images.shape[-2:])
        out_size = tuple(out_size) if out_size is not None else size
        return resize_argmax(self.encode_decode(images), [size, out_size], align_corners=self.align_corners)

    def _binary_predict(self, images, mode, crop_size, stride, out_size, window_batch, accumulate_on_cpu):
        """:meth:`predict` of the binary task without test-time augmentation (with it, :meth:`predict` thresholds
        the averaged foreground probability of :meth:`inference`): the logits (whole, or slide-averaged) resized
        as the multi-class path resizes them (to the input size, then to ``out_size``) and thresholded."""
        if images.dtype == torch.uint8:
            images = self.normalize(images)
        size = tuple(images.shape[-2:])
        out_size = tuple(out_size) if out_size is not None else size
        if mode == "slide":
            logits = self.slide_logits(images, crop_size, stride or crop_size, window_batch, accumulate_on_cpu)
        else:
            logits = resize(self.encode_decode(images), size, self.align_corners)
        if out_size != size:
            logits = resize(logits.float(), out_size, self.align_corners)
        return self._binary_labels(logits)

    def fused(self) -> "Segmentor":
        """An eval-mode copy for inference with eval-time BatchNorms / layer scales folded into convolutions.

        Same outputs as ``self.eval()`` up to float32 rounding (:mod:`segkit.models.fuse`); the
        copy's parameters do not require gradients, it refuses :meth:`loss` and
        :meth:`save_pretrained`, and ``self`` is unchanged. Calling it on a fused model returns it.
        """
        if self.is_fused:
            return self
        from .fuse import fuse_for_inference

        out = fuse_for_inference(self)
        out.is_fused = True
        return out

    # ---------------------------------------------------------------- save/load
    def config(self) -> dict:
        """JSON-serialisable description used by :meth:`save_pretrained`."""
        return {
            "model": self.name,
            "family": self.family,
            "arch": self.arch,
            "num_classes": self.num_classes,
            **({"task": self.task, "threshold": self.threshold} if self.is_binary else {}),
            **({"mask_values": self.mask_values} if self.is_binary and self.mask_values else {}),
            **({"in_channels": self.in_channels} if self.in_channels != 3 else {}),
            "class_names": self.class_names,
            "palette": self.palette,
            "ignore_index": self.ignore_index,
            "mean": list(self.mean),
            "std": list(self.std),
            "loss_avg": self.loss_avg,
            "format": "segkit",
            "format_version": 1,
            **({"train_config": self.train_config} if self.train_config else {}),
            **({"test_protocol": self.test_protocol} if self.test_protocol else {}),
            **({"source": self.source} if self.source else {}),
            **({"eval_results": self.eval_results} if self.eval_results else {}),
        }

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` (weights, BN statistics included), ``config.json`` and a model card
        ``README.md`` (:func:`segkit.models.card.model_card`) to ``directory``.

        Files are written through :func:`segkit.utils.atomic_open` (temporary name, fsync,
        rename), so an interrupted save never leaves a truncated file under the final name.
        Returns the directory. Raises ``RuntimeError`` for a fused model (:meth:`fused`).
        """
        from safetensors.torch import save

        from segkit.utils import atomic_write_bytes, json_safe

        if self.is_fused:
            raise RuntimeError(
                "refusing to save a fused model (Segmentor.fused()): its weights are folded; save the original model"
            )
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write_bytes(
            directory / "model.safetensors", save(state, metadata={"format": "pt", "segkit_model": self.name})
        )
        atomic_write_bytes(directory / "config.json", json.dumps(json_safe(self.config()), indent=2).encode())
        from .card import model_card

        atomic_write_bytes(directory / "README.md", model_card(self).encode())
        return directory

    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        private: bool = False,
        commit_message: str = "Upload segkit model",
        revision: str | None = None,
    ) -> str:
        """Upload ``model.safetensors``, ``config.json`` and the model card to the Hugging Face Hub repo ``repo_id``.

        Needs the ``segkit[hub]`` extra (``huggingface_hub``). The repository is created when it
        does not exist. Returns the URL of the commit. Raises
        :class:`~segkit.errors.MissingDependencyError` without ``huggingface_hub``.
        """
        import tempfile

        from segkit.utils import require

        hub = require("huggingface_hub", "hub", "push_to_hub")
        api = hub.HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            info = api.upload_folder(folder_path=tmp, repo_id=repo_id, commit_message=commit_message, revision=revision)
        return str(getattr(info, "commit_url", info))


__all__ = ["Segmentor", "resize", "slide_windows", "IMAGENET_MEAN", "IMAGENET_STD", "default_palette"]
