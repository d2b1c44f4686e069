"""Analysis tools behind the papers' figures: ERF, feature maps, attention maps, Grad-CAM, IoU by object size.

Every tool reads the model through **forward hooks on named modules** (``model.named_modules()``
names, e.g. ``backbone.block4.1.attn`` or ``decode_head``), so no model code knows about them
and any model of the zoo — or any ``Segmentor`` — can be analysed. A *layer spec* is a module
name, optionally followed by ``#i`` to pick element ``i`` of a list / tuple / ``Features`` output
(``backbone#3`` = the encoder's fourth stage). Outputs that are token sequences ``(B, N, C)``
are turned into maps ``(B, C, h, w)`` (:func:`as_map`). ``segkit analyze layers MODEL`` lists the
names with their output shapes.

* :func:`effective_receptive_field` — SegFormer §3.3 / Fig. 3: the gradient of the centre pixel
  of a feature map with respect to the input image (Luo et al., "Understanding the effective
  receptive field", NeurIPS 2016), averaged over real images; numbers: RepLKNet's
  high-contribution area ratios (Ding et al., CVPR 2022, §5.2).
* :func:`feature_maps` — RSSeg Figs. 3 and 8: three principal components of a layer's features
  as RGB, the per-position feature norm, and over-smoothness numbers (cosine similarity of
  neighbouring and of all positions; RSSeg §1/§3 argue ViT features are over-smooth).
* :func:`attention_maps` — RSSeg Fig. 7: attention of each class query of the DCA / mask
  transformer decoders over the patches; MiT efficient self-attention (SegFormer §3.1) and ViT
  self-attention of one query pixel.
* :func:`grad_cam` — SegNeXt supplementary Fig. 2: Grad-CAM (Selvaraju et al., ICCV 2017) of a
  class on any layer, with the segmentation target of Vinogradova et al. (AAAI 2020): the sum of
  the class logit over the pixels predicted as that class.
* :func:`object_size_iou` — RSSeg §4.5 / Tables 1–2 / Figs. 9–10 (over-smoothness hurts small
  objects): IoU grouped by object size, objects being the connected components of each class in
  the ground truth.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from segkit.errors import UnknownNameError, UsageError
from segkit.models.contract import Features

# ============================================================================= hooks
_SPEC_SEP = "#"


def parse_layer(spec: str) -> tuple[str, int | None]:
    """``"backbone#3"`` → ``("backbone", 3)``; ``"decode_head"`` → ``("decode_head", None)``."""
    name, sep, index = str(spec).partition(_SPEC_SEP)
    if not sep:
        return name, None
    try:
        return name, int(index)
    except ValueError:
        raise UsageError(f"layer {spec!r}: the part after '#' must be an integer index") from None


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The sub-module called ``name`` in ``model.named_modules()`` (``""`` = the model itself).

    Raises :class:`~segkit.errors.UnknownNameError` (a ``KeyError``) naming the closest module names when there
    is none.
    """
    from segkit.utils import nearest_names

    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    close = nearest_names(name, list(modules), n=5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownNameError(f"model has no module {name!r}{hint} (list them with `segkit analyze layers MODEL`)")


class _Stop(Exception):
    """Raised by a hook to end a forward pass once every wanted output has been captured."""


@contextlib.contextmanager
def capture(model: nn.Module, names: Sequence[str], *, stop: bool = False, inputs: bool = False) -> Iterator[dict]:
    """Forward hooks on the modules ``names``; yields a dict ``name -> output`` (``(args, output)``
    with ``inputs=True``) filled by the next forward pass. Outputs keep their autograd graph.

    With ``stop`` the forward pass is cut short (an internal exception caught by
    :func:`run_until`) as soon as all modules have fired: an ERF of stage 1 does not pay for
    the decoder. A module called more than once keeps its last output.
    """
    store: dict = {}
    handles = []
    wanted = set(names)

    def make(name):
        def hook(module, args, output):
            store[name] = (args, output) if inputs else output
            if stop and wanted.issubset(store):
                raise _Stop

        return hook

    try:
        for name in dict.fromkeys(names):
            handles.append(get_module(model, name).register_forward_hook(make(name)))
        yield store
    finally:
        for h in handles:
            h.remove()


def run_until(model: nn.Module, images: torch.Tensor) -> torch.Tensor | None:
    """``model.encode_decode(images)`` (logits at the decoder stride), or ``None`` when a
    :func:`capture` hook with ``stop=True`` ended the pass early."""
    try:
        return model.encode_decode(images)
    except _Stop:
        return None


def token_grid(n: int, image_hw: Sequence[int]) -> tuple[int, int, int]:
    """``(h, w, extra)`` with ``h·w + extra = n``: the token grid of an ``H × W`` input.

    ``h / w`` is the factorisation of ``n`` (or of ``n − 1`` … ``n − 8``: class / distillation
    tokens in front) closest to the image's aspect ratio. Raises ``ValueError`` when none is
    within 25 % of it.
    """
    H, W = int(image_hw[0]), int(image_hw[1])
    ratio = H / W
    for extra in range(0, 9):
        m = n - extra
        if m <= 0:
            break
        h = max(1, round(math.sqrt(m * ratio)))
        for hh in (h, h - 1, h + 1):
            if hh > 0 and m % hh == 0 and abs(math.log((hh / (m // hh)) / ratio)) < math.log(1.25):
                return hh, m // hh, extra
    raise ValueError(f"cannot lay {n} tokens out as a grid with the aspect ratio of a {H}x{W} input")


def _pick(items, index: int | None, default: int, spec: str, what: str):
    if index is None:
        return items[default]
    n = len(items)
    if not -n <= index < n:
        raise UsageError(
            f"layer {spec or f'#{index}'!r}: index {index} is out of range; this module outputs {n} {what}: valid "
            f"indices {', '.join(f'#{i}' for i in range(n))} (or #-1 … #-{n} from the end)"
        )
    return items[index]


def as_map(output, image_hw: Sequence[int], index: int | None = None, spec: str = "") -> torch.Tensor:
    """A hooked module's output as a ``(B, C, h, w)`` float map.

    ``Features`` → ``stages[index]`` (default the last); list / tuple → ``output[index]``
    (default the first); ``(B, C, h, w)`` as is; ``(B, N, C)`` tokens → map on the grid of
    :func:`token_grid` (leading class tokens dropped). ``spec`` (``"backbone#9"``) names the layer in
    messages. Raises :class:`~segkit.errors.UsageError` for an index out of range (listing the valid
    ones) or on a single tensor, ``ValueError`` for an output that is no map.
    """
    if isinstance(output, Features):
        output = _pick(output.stages, index, -1, spec, "stages")
    elif isinstance(output, (list, tuple)):
        output = _pick(output, index, 0, spec, "outputs")
        if isinstance(output, Features):
            output = output.stages[-1]
    elif index is not None:
        raise UsageError(
            f"layer {spec or f'#{index}'!r}: '#{index}' picks from a list/tuple/Features output, this output is a "
            f"single tensor (drop the '#{index}')"
        )
    if not torch.is_tensor(output):
        raise ValueError(f"output is a {type(output).__name__}, not a tensor")
    if output.ndim == 4:
        return output
    if output.ndim == 3:
        b, n, c = output.shape
        h, w, extra = token_grid(n, image_hw)
        return output[:, extra:].transpose(1, 2).reshape(b, c, h, w)
    raise ValueError(f"cannot read an output of shape {tuple(output.shape)} as a (B, C, h, w) map")


def layer_shapes(model: nn.Module, image_hw: Sequence[int] = (256, 256), max_depth: int | None = None) -> list[dict]:
    """Each module's name, type and output shape(s) on a ``(1, 3, H, W)`` zero input (``segkit analyze layers``)."""
    rows: dict[str, dict] = {}
    handles = []

    def shapes(out):
        if isinstance(out, Features):
            return [list(t.shape) for t in out.stages]
        if isinstance(out, (list, tuple)):
            return [list(t.shape) if torch.is_tensor(t) else type(t).__name__ for t in out]
        return list(out.shape) if torch.is_tensor(out) else type(out).__name__

    for name, module in model.named_modules():
        if not name or (max_depth is not None and name.count(".") >= max_depth):
            continue

        def hook(m, a, out, name=name):
            rows[name] = {"name": name, "type": type(m).__name__, "output": shapes(out)}

        handles.append(module.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model.encode_decode(torch.zeros(1, 3, *image_hw, device=next(model.parameters()).device))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    order = [n for n, _ in model.named_modules() if n in rows]
    return [rows[n] for n in order]


# ============================================================================= inputs
@dataclass
class Sample:
    """One analysed image.

    Attributes:
        image: ``(1, 3, h, w)`` float32 normalised network input (the model's test resize).
        rgb: ``(h, w, 3)`` uint8 the same image before normalisation (for overlays).
        label: ``(H, W)`` int64 ground truth at the original size, or ``None``.
        name: file name stem.
    """

    image: torch.Tensor
    rgb: np.ndarray
    label: torch.Tensor | None
    name: str


def load_samples(
    model,
    *,
    images: str | Path | None = None,
    dataset=None,
    limit: int | None = None,
    transform=None,
    device: str | torch.device = "cpu",
) -> Iterator[Sample]:
    """Samples from image files (``images``: a file or a folder) or from a dataset whose items
    carry raw ``uint8`` images and labels (``build_dataset(spec)`` without transform), prepared
    with ``transform`` (default: the model's test protocol). Lazy: one image in memory at a time."""
    from segkit.data.io import read_image
    from segkit.data.protocol import TestProtocol
    from segkit.utils import list_images

    if transform is None:
        transform = TestProtocol.of(model).transform(model.mean, model.std)
    if (images is None) == (dataset is None):
        raise UsageError("give either image files or a dataset")
    if images is not None:
        files = list_images(images)
        items = ({"image": read_image(p), "label": None, "image_path": str(p)} for p in files)
    else:
        items = (dataset[i] for i in range(len(dataset)))
    for i, item in enumerate(items):
        if limit is not None and i >= limit:
            return
        raw = item["image"]
        out = transform(raw)
        label = item.get("label")
        yield Sample(
            image=out["image"][None].to(device),
            rgb=transform.resize(raw),
            label=None if label is None else torch.from_numpy(np.asarray(label).astype(np.int64)),
            name=Path(item.get("image_path", f"image{i}")).stem,
        )


# ============================================================================= ERF
def effective_receptive_field(
    model: nn.Module,
    samples: Iterable[Sample],
    layers: Sequence[str],
    *,
    progress: bool = False,
) -> dict:
    """Effective receptive field of the centre position of each layer's output map.

    For every image ``x`` and layer output ``F (B, C, h, w)``: ``g = |∂ Σ_c ReLU(F[0, c, h//2, w//2]) / ∂x|``
    summed over the three input channels — Luo et al.'s gradient-of-the-centre method, as used for
    SegFormer Fig. 3 — then averaged over the images. The ReLU is RepLKNet's
    (``erf/visualize_erf.py``): a stage that ends in a LayerNorm with unit scale has a channel sum
    of exactly 0 at every position, so the plain sum would have no gradient. Images of another
    size than the first are skipped with a count (an average needs one grid); the model runs in
    ``eval()`` mode (BN statistics frozen).

    Returns ``{layer: {"erf": (H, W) float64 numpy array, "area_ratio": {t: r}, "extent_px": σ,
    "map_shape": [C, h, w]}, "image_size": [H, W], "num_images": n, "skipped": m}``.
    ``area_ratio[t]`` is the smallest fraction of the image's pixels that holds a share ``t`` of
    the total gradient mass (t = 0.2, 0.3, 0.5, 0.99; RepLKNet §5.2; larger = wider ERF);
    ``extent_px`` the gradient-weighted RMS distance of a pixel from the centre.
    """
    layer_names = [parse_layer(s) for s in layers]
    sums: dict[str, np.ndarray] = {}
    shapes: dict[str, list[int]] = {}
    size, n, skipped = None, 0, 0
    was = model.training
    model.eval()
    try:
        for s in _progress(samples, progress, "erf"):
            x = s.image.detach().clone().requires_grad_(True)
            if size is None:
                size = tuple(x.shape[-2:])
            elif tuple(x.shape[-2:]) != size:
                skipped += 1
                continue
            with torch.enable_grad(), capture(model, [m for m, _ in layer_names], stop=True) as out:
                run_until(model, x)
                maps = [as_map(out[m], size, i, spec) for spec, (m, i) in zip(layers, layer_names)]
                centres = [F.relu(f[0, :, f.shape[-2] // 2, f.shape[-1] // 2].float()).sum() for f in maps]
                for spec, f, c in zip(layers, maps, centres):
                    (g,) = torch.autograd.grad(c, x, retain_graph=True)
                    g = g[0].abs().sum(0).double().cpu().numpy()
                    sums[spec] = sums.get(spec, 0.0) + g
                    shapes[spec] = list(f.shape[1:])
            n += 1
    finally:
        model.train(was)
    if n == 0:
        raise UsageError("no image to compute the ERF on")
    result: dict = {"image_size": list(size), "num_images": n, "skipped": skipped}
    for spec in layers:
        erf = sums[spec] / n
        result[spec] = {
            "erf": erf,
            "area_ratio": area_ratios(erf),
            "extent_px": _extent(erf),
            "map_shape": shapes[spec],
        }
    return result


def area_ratios(erf: np.ndarray, thresholds: Sequence[float] = (0.2, 0.3, 0.5, 0.99)) -> dict:
    """``{t: smallest fraction of pixels whose ERF values sum to ≥ t of the total}`` (RepLKNet §5.2)."""
    v = np.sort(np.asarray(erf, dtype=np.float64).ravel())[::-1]
    total = v.sum()
    if total <= 0:
        return {str(t): float("nan") for t in thresholds}
    cum = np.cumsum(v) / total
    return {str(t): float((np.searchsorted(cum, t) + 1) / v.size) for t in thresholds}


def _extent(erf: np.ndarray) -> float:
    h, w = erf.shape
    total = erf.sum()
    if total <= 0:
        return float("nan")
    yy, xx = np.mgrid[0:h, 0:w]
    d2 = (yy - h // 2) ** 2 + (xx - w // 2) ** 2
    return float(np.sqrt((erf * d2).sum() / total))


# ============================================================================= feature maps
def feature_maps(model: nn.Module, sample: Sample, layers: Sequence[str]) -> dict:
    """Features of ``layers`` on one image: PCA colours, norm map and over-smoothness numbers.

    Returns ``{layer: {"pca": (h, w, 3) uint8 — the first three principal components of the C-dim
    features mapped to RGB (each min–max scaled), "norm": (h, w) float32 L2 norm per position,
    "shape": [C, h, w], "neighbour_cos": mean cosine similarity of horizontally / vertically
    adjacent positions, "mean_pairwise_cos": mean cosine similarity over all pairs of distinct
    positions, "explained_variance": share of variance of the three components}}``.
    High cosine similarities = over-smooth features (RSSeg §1: neighbouring patches of different
    classes look alike after many self-attention layers).
    """
    layer_names = [parse_layer(s) for s in layers]
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), capture(model, [m for m, _ in layer_names], stop=True) as out:
            run_until(model, sample.image)
            hw = sample.image.shape[-2:]
            maps = {spec: as_map(out[m], hw, i, spec)[0].float() for spec, (m, i) in zip(layers, layer_names)}
    finally:
        model.train(was)
    return {spec: _feature_stats(f) for spec, f in maps.items()}


def _feature_stats(f: torch.Tensor) -> dict:
    c, h, w = f.shape
    x = f.reshape(c, h * w).T  # (N, C)
    unit = F.normalize(x, dim=1)
    n = x.shape[0]
    m = unit.mean(0)
    # mean over i != j of cos(i, j) = (N² |mean unit|² − N) / (N (N − 1)) — no N × N matrix needed
    pairwise = float((n * n * m.dot(m) - n) / (n * (n - 1))) if n > 1 else float("nan")
    u = F.normalize(f, dim=0)
    cos = []
    if w > 1:
        cos.append((u[:, :, 1:] * u[:, :, :-1]).sum(0).flatten())
    if h > 1:
        cos.append((u[:, 1:] * u[:, :-1]).sum(0).flatten())
    neighbour = float(torch.cat(cos).mean()) if cos else float("nan")
    centred = x - x.mean(0)
    k = min(3, c, n)
    _, s, v = torch.linalg.svd(centred, full_matrices=False)
    comps = centred @ v[:k].T  # (N, k)
    lo, hi = comps.min(0).values, comps.max(0).values
    comps = (comps - lo) / (hi - lo).clamp_min(1e-12)
    rgb = torch.zeros(n, 3)
    rgb[:, :k] = comps
    var = s.pow(2)
    return {
        "pca": (rgb.reshape(h, w, 3).numpy() * 255).round().astype(np.uint8),
        "norm": x.norm(dim=1).reshape(h, w).numpy().astype(np.float32),
        "shape": [c, h, w],
        "neighbour_cos": neighbour,
        "mean_pairwise_cos": pairwise,
        "explained_variance": float(var[:k].sum() / var.sum().clamp_min(1e-12)),
    }


# ============================================================================= attention
def _kind(module: nn.Module) -> str | None:
    """Which attention a module computes, by type: ``"class_query"`` (RSSeg DCA / mask decoder
    cross-attention; Segmenter's joint self-attention) or ``"pixel_query"`` (MiT efficient
    self-attention, ViT and BEiT self-attention), else ``None``."""
    from segkit.models.backbones.beit import BEiTAttention
    from segkit.models.backbones.mit import EfficientSelfAttention
    from segkit.models.backbones.vit import Attention as ViTAttention
    from segkit.models.heads.rsseg.dca import CrossAttention
    from segkit.models.heads.vit_baselines import SelfAttention as SegmenterAttention

    if isinstance(module, (CrossAttention, SegmenterAttention)):
        return "class_query"
    if isinstance(module, (EfficientSelfAttention, ViTAttention, BEiTAttention)):
        return "pixel_query"
    return None


def attention_layers(model: nn.Module) -> list[str]:
    """Default modules for :func:`attention_maps`: every class-query attention of the decoder, else
    the last pixel-query attention of each encoder stage (MiT: ``block1`` … ``block4``)."""
    found = [(n, _kind(m)) for n, m in model.named_modules()]
    cls = [n for n, k in found if k == "class_query"]
    if cls:
        return cls
    last: dict[str, str] = {}
    for n, k in found:
        if k == "pixel_query":
            last[n.split(".")[1] if n.count(".") >= 2 else n] = n
    if not last:
        raise UsageError(
            "the model has no attention module segkit can read (RSSeg DCA / Segmenter decoders, MiT, ViT, BEiT); "
            "CSWin's stripe attention is not supported"
        )
    return list(last.values())


def _probs(q: torch.Tensor, k: torch.Tensor, scale) -> torch.Tensor:
    """``softmax(scale · q kᵀ)`` averaged over heads: ``(B, heads, M, d), (B, heads, N, d)`` → ``(B, M, N)``."""
    if torch.is_tensor(scale):
        scale = scale.view(1, -1, 1, 1).to(q.dtype)
    return ((q @ k.transpose(-2, -1)) * scale).softmax(-1).mean(1)


def _query_token(query_yx, grid_hw, image_hw) -> tuple[int, int]:
    """The token of an ``(h, w)`` grid under network-input pixel ``query_yx`` of an ``(H, W)`` input."""
    (h, w), (H, W) = grid_hw, image_hw
    return min(int(query_yx[0] * h / H), h - 1), min(int(query_yx[1] * w / W), w - 1)


def _attention_of(module: nn.Module, args: tuple, output, image_hw, query_yx, num_class_tokens: int | None) -> dict:
    from segkit.models.backbones.beit import BEiTAttention
    from segkit.models.backbones.mit import EfficientSelfAttention, map_to_tokens, tokens_to_map
    from segkit.models.backbones.vit import Attention as ViTAttention
    from segkit.models.heads.rsseg.dca import CrossAttention
    from segkit.models.heads.vit_baselines import SelfAttention as SegmenterAttention

    if isinstance(module, BEiTAttention):  # q/v biases and the relative position bias, [CLS] first
        x, h, w = args[:3]
        q, k, _ = module.project_qkv(x)
        extra = x.shape[1] - h * w
        qy, qx = _query_token(query_yx, (h, w), image_hw)
        i = extra + qy * w + qx
        logits = (q[:, :, i : i + 1].float() @ k.float().transpose(-2, -1)) * q.shape[-1] ** -0.5
        logits = logits + module.relative_position_bias(h, w)[:, i : i + 1].float()
        attn = logits.softmax(-1).mean(1)  # (B, 1, n): the rest of the mass is on [CLS]
        return {"kind": "pixel_query", "maps": attn[0, :, extra:].reshape(1, h, w), "query_token": [qy, qx]}
    if isinstance(module, CrossAttention):  # output (out, q, k) with q, k as used in the logits
        _, q, k = output
        attn = _probs(q.float(), k.float(), module.logit_scale())  # (B, K, N)
        h, w, extra = token_grid(attn.shape[-1], image_hw)
        return {"kind": "class_query", "maps": attn[0, :, extra:].reshape(-1, h, w)}
    if isinstance(module, SegmenterAttention):  # joint attention over [patches, class tokens]
        (x,) = args
        b, n, c = x.shape
        qkv = module.qkv(x).reshape(b, n, 3, module.num_heads, c // module.num_heads).permute(2, 0, 3, 1, 4)
        attn = _probs(qkv[0].float(), qkv[1].float(), (c // module.num_heads) ** -0.5)
        if num_class_tokens is None:
            raise ValueError("a Segmenter attention module outside a SegmenterMaskHead: unknown number of class tokens")
        h, w, _ = token_grid(n - num_class_tokens, image_hw)
        return {"kind": "class_query", "maps": attn[0, n - num_class_tokens :, : h * w].reshape(-1, h, w)}
    if isinstance(module, EfficientSelfAttention):
        x, h, w = args[:3]
        b, n, c = x.shape
        d = module.head_dim
        q = module.q(x).reshape(b, n, module.num_heads, d).transpose(1, 2)
        kv_in, kh, kw = x, h, w
        if module.sr_ratio > 1:
            reduced = module.sr(tokens_to_map(x, h, w))
            kh, kw = reduced.shape[-2:]
            kv_in = module.norm(map_to_tokens(reduced))
        k = module.kv(kv_in).reshape(b, -1, 2, module.num_heads, d).permute(2, 0, 3, 1, 4)[0]
    elif isinstance(module, ViTAttention):
        (x,) = args
        b, n, c = x.shape
        d = c // module.num_heads
        qkv = module.qkv(x).reshape(b, n, 3, module.num_heads, d).permute(2, 0, 3, 1, 4)
        h, w, extra = token_grid(n, image_hw)
        q, k = qkv[0][:, :, extra:], qkv[1][:, :, extra:]
        kh, kw = h, w
    else:
        raise UsageError(f"{type(module).__name__} is not an attention module segkit can read")
    qy, qx = _query_token(query_yx, (h, w), image_hw)
    attn = _probs(q[:, :, qy * w + qx : qy * w + qx + 1].float(), k.float(), d**-0.5)  # (B, 1, N')
    return {"kind": "pixel_query", "maps": attn[0].reshape(1, kh, kw), "query_token": [qy, qx]}


def attention_maps(
    model: nn.Module,
    sample: Sample,
    layers: Sequence[str] | None = None,
    *,
    query_yx: Sequence[int] | None = None,
) -> dict:
    """Attention maps of ``layers`` (default :func:`attention_layers`) on one image.

    Class-query modules give one ``(h, w)`` map per class (the softmax attention of class query
    ``k`` over the patch tokens, heads averaged; RSSeg Fig. 7; in Segmenter's joint attention the
    maps sum to less than 1, the rest falling on the class tokens). Pixel-query modules give the
    attention of the token under ``query_yx`` (network-input pixels, default the centre) over
    the keys — for MiT the ``sr_ratio``-reduced key grid (SegFormer eq. 2); for BEiT with its
    relative position bias, the maps summing to less than 1 (the rest on the [CLS] token).

    Returns ``{layer: {"kind", "maps": (M, h, w) float tensor (rows sum to 1 over the grid),
    "entropy": [M] normalised entropies (1 = uniform), "query_token": [y, x] (pixel queries)}}``
    plus ``"query_yx"``. Raises ``ValueError`` for a module that is not an attention of a
    supported type.
    """
    from segkit.models.heads.vit_baselines import SegmenterMaskHead

    layers = list(layers) if layers else attention_layers(model)
    H, W = sample.image.shape[-2:]
    query_yx = tuple(query_yx) if query_yx is not None else (H // 2, W // 2)
    if not (0 <= query_yx[0] < H and 0 <= query_yx[1] < W):
        raise UsageError(
            f"query pixel {list(query_yx)} (--query Y X) is outside the {H}x{W} network input: give 0 <= Y < {H}, "
            f"0 <= X < {W}"
        )
    for name in layers:
        if _kind(get_module(model, name)) is None:
            raise UsageError(
                f"{name} ({type(get_module(model, name)).__name__}) is not an attention module segkit can read; "
                f"attention modules of this model: {', '.join(n for n, m in model.named_modules() if _kind(m))}"
            )
    # Segmenter appends one token per class after the patches: the head that owns a module knows K
    class_tokens = {
        id(sub): int(head.num_classes)
        for head in model.modules()
        if isinstance(head, SegmenterMaskHead)
        for sub in head.modules()
    }
    was = model.training
    model.eval()
    result: dict = {"query_yx": list(query_yx)}
    try:
        with torch.no_grad(), capture(model, layers, inputs=True) as out:
            run_until(model, sample.image)
            for name in layers:
                if name not in out:
                    raise UsageError(f"{name} did not run in the forward pass")
                args, output = out[name]
                module = get_module(model, name)
                r = _attention_of(module, args, output, (H, W), query_yx, class_tokens.get(id(module)))
                maps = r["maps"]
                p = maps.flatten(1).clamp_min(1e-12)
                r["entropy"] = (-(p * p.log()).sum(1) / math.log(p.shape[1])).tolist() if p.shape[1] > 1 else [0.0]
                result[name] = r
    finally:
        model.train(was)
    return result


# ============================================================================= Grad-CAM
def grad_cam(model: nn.Module, sample: Sample, layer: str, class_index: int) -> dict:
    """Grad-CAM of class ``class_index`` on ``layer`` for one image.

    Target ``y = Σ_{p: argmax = c} logit_c(p)`` over the decoder-stride logits (all pixels when
    no pixel is predicted as ``c``); weights ``α_k = mean_{i,j} ∂y/∂A_k``; map
    ``ReLU(Σ_k α_k A_k)`` upsampled (bilinear) to the network input and divided by its maximum.

    Returns ``{"cam": (h, w) float32 numpy in [0, 1] at the network-input size, "target_pixels":
    predicted pixels of the class at the decoder stride, "max": raw maximum before scaling}``.
    """
    name, index = parse_layer(layer)
    was = model.training
    model.eval()
    try:
        with torch.enable_grad(), capture(model, [name]) as out:
            logits = model.encode_decode(sample.image)
            a = as_map(out[name], sample.image.shape[-2:], index, layer)
            mask = logits.argmax(1, keepdim=True) == class_index
            target_pixels = int(mask.sum())
            sel = logits[:, class_index : class_index + 1]
            y = (sel * mask).sum() if target_pixels else sel.sum()
            (g,) = torch.autograd.grad(y, a)
    finally:
        model.train(was)
    cam = F.relu((g.float().mean((2, 3), keepdim=True) * a.detach().float()).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=sample.image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    top = float(cam.max())
    cam = cam / top if top > 0 else cam
    return {"cam": cam.numpy().astype(np.float32), "target_pixels": target_pixels, "max": top}


def cam_inside_outside(cam: np.ndarray, label: torch.Tensor, class_index: int, ignore_index: int = 255):
    """Mean Grad-CAM inside and outside the ground-truth pixels of a class, the CAM resized to the
    label's size; ``None`` when the class is absent or covers every labelled pixel."""
    import cv2

    lab = label.numpy()
    H, W = lab.shape
    c = cv2.resize(cam, (W, H), interpolation=cv2.INTER_LINEAR)
    valid = lab != ignore_index
    inside = (lab == class_index) & valid
    outside = valid & ~inside
    if not inside.any() or not outside.any():
        return None
    return float(c[inside].mean()), float(c[outside].mean())


# ============================================================================= IoU by object size
DEFAULT_SIZE_THRESHOLDS = (32 * 32, 96 * 96)
BUCKETS = ("small", "medium", "large")


class ObjectSizeCounter:
    """Per-class, per-size-bucket TP / GT / FP pixel counts from (prediction, label) pairs.

    An *object* is a connected component (8-connectivity, OpenCV) of one class in the ground
    truth; its bucket is ``small`` (area < ``thresholds[0]`` pixels at label resolution),
    ``medium`` or ``large`` (≥ ``thresholds[1]``); defaults 32² and 96², COCO's object-size
    convention (RSSeg ranks classes by size but gives no thresholds). A true positive counts for
    the object it lies in; a false positive of class ``c`` (predicted ``c`` on a labelled
    non-``c`` pixel) counts for the nearest object of ``c`` in that image, or for the bucket
    ``none`` when the image has no ``c``. Every pixel is counted once, so summed over the
    buckets TP, GT and FP equal the confusion matrix's diagonal, row sums and column sums minus
    the diagonal.
    """

    def __init__(self, num_classes: int, thresholds: Sequence[int] = DEFAULT_SIZE_THRESHOLDS, ignore_index: int = 255):
        small, large = (int(t) for t in thresholds)
        if not 0 < small <= large:
            raise UsageError(f"size thresholds must satisfy 0 < small <= large, got {list(thresholds)}")
        self.k, self.thresholds, self.ignore_index = int(num_classes), (small, large), int(ignore_index)
        self.tp = np.zeros((self.k, 3), np.int64)
        self.gt = np.zeros((self.k, 3), np.int64)
        self.fp = np.zeros((self.k, 4), np.int64)  # last column: images without the class
        self.objects = np.zeros((self.k, 3), np.int64)

    def bucket(self, area: np.ndarray) -> np.ndarray:
        return np.digitize(area, self.thresholds)  # 0 small, 1 medium, 2 large

    def update(self, pred, label) -> None:
        import cv2

        pred = np.asarray(pred.cpu() if torch.is_tensor(pred) else pred)
        label = np.asarray(label.cpu() if torch.is_tensor(label) else label)
        valid = label != self.ignore_index
        for c in range(self.k):
            is_c = label == c
            pred_c = (pred == c) & valid
            fp = pred_c & ~is_c
            if not is_c.any():
                self.fp[c, 3] += int(fp.sum())
                continue
            n, comp, stats, _ = cv2.connectedComponentsWithStats(is_c.astype(np.uint8), connectivity=8)
            bucket_of = self.bucket(stats[1:, cv2.CC_STAT_AREA])  # per object 1..n-1
            self.objects[c] += np.bincount(bucket_of, minlength=3)
            self.gt[c] += np.bincount(bucket_of, weights=stats[1:, cv2.CC_STAT_AREA], minlength=3).astype(np.int64)
            tp_obj = np.bincount(comp[pred_c & is_c], minlength=n)[1:]
            self.tp[c] += np.bincount(bucket_of, weights=tp_obj, minlength=3).astype(np.int64)
            if fp.any():
                # nearest object: OpenCV labels every pixel with the nearest zero-pixel component of
                # `src`; zeros are the class's pixels, mapped to our component ids via any member pixel
                _, near = cv2.distanceTransformWithLabels(
                    (~is_c).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_CCOMP
                )
                to_ours = np.zeros(int(near.max()) + 1, np.int64)
                to_ours[near[is_c]] = comp[is_c]
                obj = to_ours[near[fp]]
                self.fp[c, :3] += np.bincount(bucket_of[obj - 1], minlength=3)

    def compute(self) -> dict:
        """Per bucket ``{"IoU": [K] % (NaN where the class has no object of that size), "mIoU",
        "gt_pixels", "tp_pixels", "fp_pixels", "objects"}`` plus ``"fp_no_object"`` and totals.

        A bucket's false positives all belong to objects in it, so a class with no object of a
        size has no pixel of that bucket at all (union 0): the IoU is NaN under both of
        :func:`~segkit.engine.metrics.metrics_from_matrix`'s ``absent`` rules."""
        out: dict = {"thresholds": list(self.thresholds)}
        for b, name in enumerate(BUCKETS):
            den = self.gt[:, b] + self.fp[:, b]
            iou = np.where(self.gt[:, b] > 0, 100.0 * self.tp[:, b] / np.maximum(den, 1), np.nan)
            out[name] = {
                "IoU": iou.tolist(),
                "mIoU": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
                "gt_pixels": self.gt[:, b].tolist(),
                "tp_pixels": self.tp[:, b].tolist(),
                "fp_pixels": self.fp[:, b].tolist(),
                "objects": self.objects[:, b].tolist(),
            }
        out["fp_no_object"] = self.fp[:, 3].tolist()
        out["totals"] = {
            "gt_pixels": self.gt.sum(1).tolist(),
            "tp_pixels": self.tp.sum(1).tolist(),
            "fp_pixels": self.fp.sum(1).tolist(),
        }
        count = self.objects.sum(1)
        areas = np.divide(self.gt.sum(1), count, out=np.full(self.k, np.nan), where=count > 0)
        out["mean_object_area"] = areas.tolist()
        return out


def object_size_iou(
    model,
    dataset,
    *,
    thresholds: Sequence[int] = DEFAULT_SIZE_THRESHOLDS,
    **evaluate_kwargs,
) -> dict:
    """Evaluate ``model`` on ``dataset`` (:func:`segkit.engine.evaluator.evaluate`, same arguments,
    ``absent`` included: the overall metrics) and group the IoU by object size (:class:`ObjectSizeCounter`).

    Returns the evaluator's result with ``"sizes"`` added (:meth:`ObjectSizeCounter.compute`).
    """
    from segkit.engine.evaluator import evaluate

    ignore = int(getattr(dataset, "ignore_index", getattr(model, "ignore_index", 255)))
    counter = ObjectSizeCounter(int(model.num_classes), thresholds, ignore)
    res = evaluate(model, dataset, on_image=lambda pred, label: counter.update(pred, label), **evaluate_kwargs)
    res["sizes"] = counter.compute()
    return res


# ============================================================================= pictures
def _progress(it, show: bool, desc: str):
    if not show:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, dynamic_ncols=True)


def heatmap_rgb(values: np.ndarray, cmap: str = "jet", log: bool = False, minmax: bool = False) -> np.ndarray:
    """``(h, w)`` values → ``(h, w, 3)`` uint8 colours of a matplotlib colour map, scaled to [0, 1]
    by the maximum (``minmax``: from the minimum to the maximum; ``log``: ``log10(1 + v)`` first,
    RepLKNet's ERF display)."""
    from matplotlib import colormaps

    v = np.asarray(values, dtype=np.float64)
    if log:
        v = np.log10(1.0 + v / max(v.max(), 1e-30) * 1e3) / 3.0
    elif minmax:
        v = (v - v.min()) / max(v.max() - v.min(), 1e-30)
    else:
        v = v / v.max() if v.max() > 0 else v
    return (colormaps[cmap](np.clip(v, 0, 1))[..., :3] * 255).round().astype(np.uint8)


def blend(rgb: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Heat map ``(h', w', 3)`` resized (bilinear) onto the image ``(h, w, 3)`` and blended."""
    import cv2

    heat = cv2.resize(heat, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    return (rgb.astype(np.float32) * (1 - alpha) + heat.astype(np.float32) * alpha).round().astype(np.uint8)


def save_grid(panels: Sequence[tuple[str, np.ndarray]], path, columns: int = 4, title: str | None = None):
    """Panels ``(caption, (h, w, 3) uint8)`` in a grid, saved as PNG to a path or file object (matplotlib Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    h, w = next(p[1] for p in panels if p[1] is not None).shape[:2]
    cell = 3.2
    fig = Figure(figsize=(cell * columns, cell * rows * h / w + (0.4 if title else 0) + 0.3 * rows), dpi=100)
    FigureCanvasAgg(fig)
    for i, (caption, img) in enumerate(panels):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.axis("off")
        if img is None:  # an empty cell
            continue
        ax.imshow(img, interpolation="nearest")
        ax.set_title(caption, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if hasattr(path, "write"):  # a file object (atomic writes)
        fig.savefig(path, format="png")
        return path
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), format="png")
    return Path(path)


def safe_name(spec: str) -> str:
    """A layer spec as a file-name part: ``backbone.block4#3`` → ``backbone.block4_3``."""
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in spec)


__all__ = [
    "BUCKETS",
    "DEFAULT_SIZE_THRESHOLDS",
    "ObjectSizeCounter",
    "Sample",
    "area_ratios",
    "as_map",
    "attention_layers",
    "attention_maps",
    "blend",
    "cam_inside_outside",
    "capture",
    "effective_receptive_field",
    "feature_maps",
    "get_module",
    "grad_cam",
    "heatmap_rgb",
    "layer_shapes",
    "load_samples",
    "object_size_iou",
    "parse_layer",
    "run_until",
    "save_grid",
    "token_grid",
]
