"""Zoo builders for RSSeg (plain ViT/BEiT and CSWin) and its plain-ViT baselines.

Each builder takes ``num_classes`` plus its architecture switches — one dataclass per builder
(:class:`RSSegPlainArch`, :class:`RSSegPyramidArch`, :class:`LinearArch`,
:class:`SegmenterArch`), which is what ``Segmentor.arch`` records and ``from_pretrained``
feeds back — and the zoo's metadata keywords (``class_names``, ``palette``, ``ignore_index``,
``mean``, ``std``, ``loss_avg``). Unknown keywords raise ``TypeError``. Every model gets an
``encoder_prefix`` attribute — where the ImageNet encoder lives in the state dict
(``backbone.vit.``, ``backbone.cswin.`` or ``backbone.``) — for :mod:`segkit.models.rsseg.convert`.

RSSeg Table 3 settings ("sampling indices start from 0"): ViT-B/BEiT-B taps [1, 3, 5, 7], LSB
width 256, expand 2, SASM 12 × 64; ViT-L/BEiT-L [3, 7, 11, 15], 384, 2, 16 × 64; CSWin-T
stage-3 interval 3 (taps [2, 5, …, 23]), width 64, expand 4; CSWin-S uses the "CSWin-B" row
(interval 4, taps [5, 9, …, 37], width 128, expand 2). ViT-Ti (ours, for small data sets): the
ViT-B taps, width 64, SASM 3 × 64.

Plain ViT/BEiT models normalise with mean = std = 127.5 (the AugReg / BEiT / Segmenter
convention: ``rstrudel/segmenter: segm/data/utils.py``, ``microsoft/unilm: beit/semantic_segmentation
/configs``); CSWin with the ImageNet statistics.

Ablations (RSSeg Tables 4–8) are keyword presets: ``build_model("rsseg-vit-b", 150,
**PLAIN_ABLATIONS["1-sasm"])``; :data:`PYRAMID_ABLATIONS` for CSWin.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional, Sequence, Union

import torch

from segkit.errors import UsageError

from ..backbones.tapped import PlainEncoder, PyramidEncoder
from ..family import arch_dict, split_kwargs
from ..segmentor import Segmentor

PLAIN_MEAN_STD = (127.5, 127.5, 127.5)

PLAIN_VARIANTS: dict[str, dict] = {
    "vit-ti": dict(taps=(1, 3, 5, 7), lsb_dim=64, expand=2, sasm_groups=3),
    "vit-b": dict(taps=(1, 3, 5, 7), lsb_dim=256, expand=2, sasm_groups=12),
    "vit-l": dict(taps=(3, 7, 11, 15), lsb_dim=384, expand=2, sasm_groups=16),
    "beit-b": dict(taps=(1, 3, 5, 7), lsb_dim=256, expand=2, sasm_groups=12),
    "beit-l": dict(taps=(3, 7, 11, 15), lsb_dim=384, expand=2, sasm_groups=16),
}
PYRAMID_VARIANTS: dict[str, dict] = {
    "cswin-t": dict(tap_interval=3, dim=64, expand=4),
    "cswin-s": dict(tap_interval=4, dim=128, expand=2),
}

# Table 4 (ADE20K, ViT-B) rows before the full model, Table 5 (SASM), Table 6 (DCA).
PLAIN_ABLATIONS: dict[str, dict] = {
    "transformer-decoder": dict(two_pathway=False, num_sasm=0, dca=False),
    "two-pathway": dict(num_sasm=0, dca=False),
    "sasm": dict(dca=False),
    "1-sasm": dict(num_sasm=1),
    "filter-norm": dict(filter_norm="filter_norm"),
    "groups-1": dict(sasm_groups=1),
    "q2r-only": dict(p2r_weight=0.0),
    "p2r-only": dict(q2r_weight=0.0),
    "no-l2-norm": dict(l2_norm=False),
    # RSSeg §3.5, eqs. 12-15 taken literally: single-head cross-attention over the full channel
    # dimension C (Q_norm in R^{B,N_class,C}, K_norm in R^{B,N,C}: one L2 norm over C, one 1/s),
    # hard (nearest) down-sampled labels, softmax over all N_class region embeddings (absent
    # classes' zero vectors included). The default is C/64 heads, area-weighted labels, absent
    # regions masked. The single head has 11 fewer parameters than ViT-B's 12 (one 1/s, not 12).
    "dca-literal": dict(label_downsample="nearest", mask_absent=False, decoder_heads=1),
}
# Table 7 / Table 8 (Cityscapes, CSWin-T). "9-lsbs-af" (Table 7) and "conv3x3" (Table 8) are the same
# network (both tables report 82.7 mIoU for it). "9-lsbs" and "9-lsbs-10x" are the same network too:
# Table 7's lr of the LSBs (1x for "+3/5/9 LSBs", 10x from "+9 LSBs, 10x lr" on) is set by the configs.
PYRAMID_ABLATIONS: dict[str, dict] = {
    "mlp-decoder": dict(local_path=False),
    "3-lsbs": dict(tap_interval=21, fusion="add", local_op="dw3", boundary_weight=0.0),
    "5-lsbs": dict(tap_interval=7, fusion="add", local_op="dw3", boundary_weight=0.0),
    "9-lsbs": dict(fusion="add", local_op="dw3", boundary_weight=0.0),
    "9-lsbs-10x": dict(fusion="add", local_op="dw3", boundary_weight=0.0),
    "9-lsbs-af": dict(local_op="dw3", boundary_weight=0.0),
    "conv3x3": dict(local_op="dw3", boundary_weight=0.0),
    "large-kernel": dict(local_op="large", boundary_weight=0.0),
    "dilated": dict(local_op="dilated", boundary_weight=0.0),
    "conv3x3-boundary": dict(local_op="dw3"),
}


def default_plain_taps(depth: int) -> tuple[int, ...]:
    """Four evenly spaced 0-based taps in the first two thirds (Table 3 pattern: 12 → [1, 3, 5, 7],
    24 → [3, 7, 11, 15]); for shallow encoders every block before the last."""
    step = depth // 6
    if step >= 1:
        return tuple(step * (i + 1) - 1 for i in range(4))
    return tuple(range(depth - 1))


def pyramid_taps(depths: Sequence[int], interval: int) -> tuple[int, ...]:
    """0-based global block indices (Table 3 convention): the stage-2 output, then every
    ``interval``-th stage-3 block counted back from the stage-3 output. CSWin-T (1, 2, 21, 1), 3 →
    [2, 5, …, 23]; CSWin-S (2, 4, 32, 2), 4 → [5, 9, …, 37]; Table 7 intervals 21 / 7 give 3 / 5 LSBs."""
    if interval < 1:
        raise UsageError(f"tap_interval must be >= 1, got {interval}")
    s2_end = depths[0] + depths[1] - 1
    s3_end = s2_end + depths[2]
    return (s2_end, *reversed(range(s3_end, s2_end, -interval)))


def _plain_encoder(variant: str, *, img_size, out_indices, drop_path_rate, embed_dim, depth, num_heads):
    from ..backbones.beit import BEIT_VARIANTS, BEiT
    from ..backbones.vit import VIT_VARIANTS, VisionTransformer

    family, size = variant.split("-")
    if family == "vit":
        base, cls, default_dpr = dict(VIT_VARIANTS[variant]), VisionTransformer, 0.1
    else:
        base, cls = dict(BEIT_VARIANTS[size]), BEiT
        default_dpr = base.pop("drop_path_rate")
    for key, value in dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads).items():
        if value is not None:
            base[key] = value
    dpr = default_dpr if drop_path_rate is None else drop_path_rate
    return cls(img_size=img_size, out_indices=out_indices, drop_path_rate=dpr, **base), dpr


def _check_variant(variant: str, table: dict, what: str) -> None:
    if variant not in table:
        raise UsageError(f"unknown {what} variant {variant!r}; choose from {sorted(table)}")


def copy_patch_embed_hook(
    module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
) -> None:
    """``load_state_dict`` pre-hook: initialise the local path's overlapping patch embedding like the ViT's.

    For each ``dst → src`` of ``module.init_copies``, when a state dict being loaded holds
    ``src`` (the pretrained ``backbone.vit.patch_embed.proj.*``) but not ``dst``
    (``decode_head.local_embed.proj.*``), ``dst`` is set to a copy of ``src`` — so loading an
    ImageNet encoder gives the local path "the same initialization as the vanilla patch
    embedding layer" (RSSeg paper §3.2.1). Full RSSeg checkpoints carry ``dst`` and are untouched.
    """
    for dst, src in getattr(module, "init_copies", {}).items():
        if prefix + dst not in state_dict and prefix + src in state_dict:
            state_dict[prefix + dst] = state_dict[prefix + src].clone()


def _depth_of(variant: str) -> int:
    from ..backbones.beit import BEIT_VARIANTS
    from ..backbones.vit import VIT_VARIANTS

    family, size = variant.split("-")
    return VIT_VARIANTS[variant]["depth"] if family == "vit" else BEIT_VARIANTS[size]["depth"]


def _size(img_size):
    return img_size if isinstance(img_size, int) else list(img_size)


def _plain_meta(meta: dict) -> dict:
    meta.setdefault("mean", PLAIN_MEAN_STD)
    meta.setdefault("std", PLAIN_MEAN_STD)
    return meta


# ----------------------------------------------------------------------------- RSSeg, plain ViT / BEiT
@dataclass
class RSSegPlainArch:
    """Architecture switches of RSSeg on a plain ViT/BEiT; ``None`` = the variant / paper default.

    ``img_size`` sets the encoder's position-embedding grid / BEiT window (= training crop;
    other sizes are interpolated at run time). ``embed_dim``/``depth``/``num_heads`` override
    the encoder size (tests); ``taps`` are 0-based block indices (Table 3). The other switches
    are documented in :class:`~segkit.models.heads.rsseg.plain_head.RSSegHead` and
    :class:`~segkit.models.heads.rsseg.dca.MaskDecoder`.
    """

    img_size: Union[int, Sequence[int]] = 512
    drop_path_rate: Optional[float] = None
    embed_dim: Optional[int] = None
    depth: Optional[int] = None
    num_heads: Optional[int] = None
    taps: Optional[Sequence[int]] = None
    lsb_dim: Optional[int] = None
    expand: Optional[int] = None
    sasm_groups: Optional[int] = None
    num_sasm: int = 2
    two_pathway: bool = True
    local_op: str = "lhf"
    lsb_norm: str = "bn"
    lsb_act: str = "relu"
    fusion: str = "attention"
    af_norm: str = "bn"
    filter_norm: str = "softmax"
    decoder_layers: int = 1
    decoder_heads: Optional[int] = None
    decoder_mlp_ratio: float = 4.0
    decoder_dropout: float = 0.0
    dca: bool = True
    l2_norm: Optional[bool] = None
    q2r_weight: float = 1.0
    p2r_weight: float = 1.0
    init_inv_scale: float = 10.0
    patch_proj: Optional[bool] = None
    label_downsample: str = "area"
    mask_absent: bool = True


def build_rsseg_plain(variant: str, num_classes: int = 150, **kwargs) -> Segmentor:
    """RSSeg-``variant`` with a plain encoder (ViT-Ti/B/L, BEiT-B/L): RSSeg paper §3, Fig. 4a.

    ``kwargs``: the fields of :class:`RSSegPlainArch` and the ``Segmentor`` metadata.
    """
    from ..heads.rsseg.plain_head import RSSegHead

    _check_variant(variant, PLAIN_VARIANTS, "RSSeg plain-ViT")
    a, meta = split_kwargs(RSSegPlainArch, kwargs, f"rsseg-{variant}")
    d = PLAIN_VARIANTS[variant]
    if a.taps is None:
        a.taps = d["taps"] if a.depth is None else default_plain_taps(a.depth)
    a.taps = tuple(int(t) for t in a.taps)
    a.lsb_dim, a.expand, a.sasm_groups = (
        a.lsb_dim or d["lsb_dim"],
        a.expand or d["expand"],
        a.sasm_groups or d["sasm_groups"],
    )
    vit, a.drop_path_rate = _plain_encoder(
        variant,
        img_size=a.img_size,
        out_indices=(*a.taps, (a.depth or _depth_of(variant)) - 1),
        drop_path_rate=a.drop_path_rate,
        embed_dim=a.embed_dim,
        depth=a.depth,
        num_heads=a.num_heads,
    )
    a.img_size = _size(a.img_size)
    decoder = dict(
        num_layers=a.decoder_layers,
        num_heads=a.decoder_heads,
        mlp_ratio=a.decoder_mlp_ratio,
        dropout=a.decoder_dropout,
        dca=a.dca,
        l2_norm=a.l2_norm,
        q2r_weight=a.q2r_weight,
        p2r_weight=a.p2r_weight,
        init_inv_scale=a.init_inv_scale,
        label_downsample=a.label_downsample,
        mask_absent=a.mask_absent,
        ignore_index=meta.get("ignore_index", 255),
    )
    head = RSSegHead(
        vit.embed_dim,
        num_classes,
        len(a.taps),
        patch_size=vit.patch_size,
        lsb_dim=a.lsb_dim,
        expand=a.expand,
        sasm_groups=a.sasm_groups,
        num_sasm=a.num_sasm,
        two_pathway=a.two_pathway,
        local_op=a.local_op,
        lsb_norm=a.lsb_norm,
        lsb_act=a.lsb_act,
        fusion=a.fusion,
        af_norm=a.af_norm,
        filter_norm=a.filter_norm,
        decoder=decoder,
        patch_proj=a.patch_proj,
    )
    model = Segmentor(
        PlainEncoder(vit, len(a.taps)),
        head,
        num_classes,
        name=f"rsseg-{variant}",
        family="rsseg",
        arch=arch_dict(a),
        **_plain_meta(meta),
    )
    model.encoder_prefix = "backbone.vit."
    if a.two_pathway:
        model.init_copies = {
            f"decode_head.local_embed.proj.{p}": f"backbone.vit.patch_embed.proj.{p}" for p in ("weight", "bias")
        }
        with torch.no_grad():  # same initialisation as the ViT patch embedding (also from scratch)
            head.local_embed.proj.weight.copy_(vit.patch_embed.proj.weight)
            head.local_embed.proj.bias.copy_(vit.patch_embed.proj.bias)
        model.register_load_state_dict_pre_hook(copy_patch_embed_hook)
    return model


# ----------------------------------------------------------------------------- baselines
@dataclass
class LinearArch:
    """Architecture switches of ViT-Linear / BEiT-Linear (encoder size overrides; see :class:`RSSegPlainArch`)."""

    img_size: Union[int, Sequence[int]] = 512
    drop_path_rate: Optional[float] = None
    embed_dim: Optional[int] = None
    depth: Optional[int] = None
    num_heads: Optional[int] = None


@dataclass
class SegmenterArch(LinearArch):
    """Architecture switches of Segmenter: the encoder's plus the mask transformer's depth and dropout."""

    decoder_layers: int = 2
    decoder_dropout: float = 0.1


def build_linear(variant: str, num_classes: int = 150, **kwargs) -> Segmentor:
    """ViT-Linear / BEiT-Linear baseline: encoder + ``Linear(C, K)`` on the last map (Segmenter; RSSeg Table 4)."""
    from ..heads.vit_baselines import LinearHead

    _check_variant(variant, PLAIN_VARIANTS, "ViT-Linear")
    family, size = variant.split("-")
    a, meta = split_kwargs(LinearArch, kwargs, f"{family}-linear-{size}")
    vit, a.drop_path_rate = _plain_encoder(
        variant,
        img_size=a.img_size,
        out_indices=((a.depth or _depth_of(variant)) - 1,),
        drop_path_rate=a.drop_path_rate,
        embed_dim=a.embed_dim,
        depth=a.depth,
        num_heads=a.num_heads,
    )
    a.img_size = _size(a.img_size)
    model = Segmentor(
        vit,
        LinearHead(vit.embed_dim, num_classes),
        num_classes,
        name=f"{family}-linear-{size}",
        family="rsseg",
        arch=arch_dict(a),
        **_plain_meta(meta),
    )
    model.encoder_prefix = "backbone."
    return model


def build_segmenter(variant: str, num_classes: int = 150, **kwargs) -> Segmentor:
    """Segmenter (mask transformer, 2 layers, d = encoder width; ``rstrudel/segmenter: segm/model/decoder.py``)."""
    from ..heads.vit_baselines import SegmenterMaskHead

    _check_variant(variant, PLAIN_VARIANTS, "Segmenter")
    a, meta = split_kwargs(SegmenterArch, kwargs, f"segmenter-{variant}")
    vit, a.drop_path_rate = _plain_encoder(
        variant,
        img_size=a.img_size,
        out_indices=((a.depth or _depth_of(variant)) - 1,),
        drop_path_rate=a.drop_path_rate,
        embed_dim=a.embed_dim,
        depth=a.depth,
        num_heads=a.num_heads,
    )
    a.img_size = _size(a.img_size)
    head = SegmenterMaskHead(vit.embed_dim, num_classes, num_layers=a.decoder_layers, dropout=a.decoder_dropout)
    model = Segmentor(
        vit, head, num_classes, name=f"segmenter-{variant}", family="rsseg", arch=arch_dict(a), **_plain_meta(meta)
    )
    model.encoder_prefix = "backbone."
    return model


# ----------------------------------------------------------------------------- RSSeg, CSWin
@dataclass
class RSSegPyramidArch:
    """Architecture switches of RSSeg on CSWin; ``None`` = the variant / paper default.

    ``taps`` (0-based global block indices, Table 3) default to :func:`pyramid_taps` with the
    variant's ``tap_interval``. ``embed_dim``/``depths``/``num_heads``/``split_size`` override
    the encoder size (tests). Other switches:
    :class:`~segkit.models.heads.rsseg.pyramid_head.PyramidHead`.
    """

    drop_path_rate: Optional[float] = None
    embed_dim: Optional[int] = None
    depths: Optional[Sequence[int]] = None
    num_heads: Optional[Sequence[int]] = None
    split_size: Optional[Sequence[int]] = None
    taps: Optional[Sequence[int]] = None
    tap_interval: Optional[int] = None
    dim: Optional[int] = None
    expand: Optional[int] = None
    local_path: bool = True
    local_op: str = "lhf"
    lsb_norm: str = "bn"
    lsb_act: str = "relu"
    fusion: str = "attention"
    af_norm: str = "bn"
    fusion_head: str = "concat_mlp"
    head_dim: int = 512
    dropout: float = 0.1
    boundary_weight: float = 0.4
    boundary_loss: str = "bce_dice"


def build_rsseg_pyramid(variant: str, num_classes: int = 19, **kwargs) -> Segmentor:
    """RSSeg-CSWin-``T/S``: CSWin + local path + MLP fusion head + boundary loss (RSSeg Fig. 4b, eq. 17).

    ``kwargs``: the fields of :class:`RSSegPyramidArch` and the ``Segmentor`` metadata.
    """
    from ..backbones.cswin import CSWIN_VARIANTS, CSWin
    from ..heads.rsseg.pyramid_head import PyramidHead

    _check_variant(variant, PYRAMID_VARIANTS, "RSSeg pyramid")
    a, meta = split_kwargs(RSSegPyramidArch, kwargs, f"rsseg-{variant}")
    d = PYRAMID_VARIANTS[variant]
    enc = dict(CSWIN_VARIANTS[variant.split("-")[1]])
    for key in ("embed_dim", "depths", "num_heads", "split_size", "drop_path_rate"):
        value = getattr(a, key)
        if value is not None:
            enc[key] = tuple(value) if isinstance(value, (list, tuple)) else value
    a.drop_path_rate = enc["drop_path_rate"]
    a.tap_interval = a.tap_interval or d["tap_interval"]
    taps = a.taps if a.taps is not None else pyramid_taps(enc["depths"], a.tap_interval)
    a.taps = tuple(int(t) for t in taps) if a.local_path else ()
    cswin = CSWin(**enc, tap_blocks=a.taps, tap_base=0)
    a.dim, a.expand = a.dim or d["dim"], a.expand or d["expand"]
    head = PyramidHead(
        cswin.out_channels,
        cswin.tap_channels,
        num_classes,
        dim=a.dim,
        expand=a.expand,
        local_path=a.local_path,
        local_op=a.local_op,
        lsb_norm=a.lsb_norm,
        lsb_act=a.lsb_act,
        fusion=a.fusion,
        af_norm=a.af_norm,
        fusion_head=a.fusion_head,
        head_dim=a.head_dim,
        dropout=a.dropout,
        boundary_weight=a.boundary_weight,
        boundary_loss=a.boundary_loss,
        ignore_index=meta.get("ignore_index", 255),
    )
    model = Segmentor(
        PyramidEncoder(cswin), head, num_classes, name=f"rsseg-{variant}", family="rsseg", arch=arch_dict(a), **meta
    )
    model.encoder_prefix = "backbone.cswin."
    return model


RSSEG_MODELS: dict[str, Callable[..., Segmentor]] = {
    **{f"rsseg-{v}": partial(build_rsseg_plain, v) for v in PLAIN_VARIANTS},
    **{f"rsseg-{v}": partial(build_rsseg_pyramid, v) for v in PYRAMID_VARIANTS},
    **{f"vit-linear-{s}": partial(build_linear, f"vit-{s}") for s in ("ti", "b", "l")},
    **{f"beit-linear-{s}": partial(build_linear, f"beit-{s}") for s in ("b", "l")},
    **{f"segmenter-vit-{s}": partial(build_segmenter, f"vit-{s}") for s in ("ti", "b", "l")},
}

__all__ = [
    "RSSEG_MODELS",
    "PLAIN_VARIANTS",
    "PYRAMID_VARIANTS",
    "PLAIN_ABLATIONS",
    "PYRAMID_ABLATIONS",
    "RSSegPlainArch",
    "RSSegPyramidArch",
    "LinearArch",
    "SegmenterArch",
    "build_rsseg_plain",
    "build_rsseg_pyramid",
    "build_linear",
    "build_segmenter",
    "default_plain_taps",
    "pyramid_taps",
    "copy_patch_embed_hook",
]
