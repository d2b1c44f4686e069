"""The SegNeXt family: MSCAN encoder + LightHamHead, T/S/B/L (Guo et al., NeurIPS 2022).

Everything segkit knows about SegNeXt lives here, in reading order:

1. **Variants** (:data:`VARIANTS`): encoder and head settings per size, from the official
   configs (``Visual-Attention-Network/SegNeXt: local_configs/segnext/{tiny,small,base,large}/*.py``;
   paper Tab. 2): stage widths / depths / MLP ratios, the encoder's drop-path rate (0.1, L: 0.3),
   the head width (``ham_channels`` = ``channels``: 256 / 256 / 512 / 1024) and the NMF rank
   ``MD_R`` (16 / 16 / 64 / 64).
2. **Builder** (:func:`build_segnext`) with its architecture switches (:class:`SegNeXtArch`).
3. **Paper figures** (:data:`PAPER_ROWS`): parameters and GFLOPs of SegNeXt Tab. 9 (and the
   Cityscapes column). SegNeXt's figures come from ``tools/get_flops.py``, which runs
   ``torchprofile.profile_macs``: ``flops_convention = "torchprofile"`` (:mod:`segkit.tools.flops`).
4. **Configs** (:func:`configs`): the paper's recipes for the shipped YAML files.
5. **Checkpoint conversion** (:func:`convert`). segkit's SegNeXt names *are* the official
   names (``mmseg/models/backbones/mscan.py``, ``mmseg/models/decode_heads/ham_head.py``), so
   most files pass through. Formats, detected from the key names:

===========================  =================================================================
format                       recognised by / what happens
===========================  =================================================================
``segnext``                  ``backbone.…mlp.dwconv.dwconv.*`` (official SegNeXt release, mmseg
                             0.x, JSeg-converted, segkit's own): passed through
``mmseg-segnext``            mmseg 1.x names ``backbone.…mlp.dwconv.{weight,bias}`` (mmseg PR #2653):
                             renamed to ``mlp.dwconv.dwconv.*``; everything else is identical
``mscan-imagenet``           ImageNet ``mscan_{t,s,b,l}.pth``: MSCAN keys without ``backbone.``
                             (``patch_embed1.…``, ``block1.0.…``, ``norm1.…``): prefix added;
                             classifier-like keys (``head.*``, ``fc.*``, ``classifier.*`` …)
                             dropped and reported
``mmseg-mscan-imagenet``     the same with mmseg 1.x ``mlp.dwconv.*`` names
                             (e.g. ``mscan_t_20230227-119e8c9f.pth``): also renamed
===========================  =================================================================

An ``auxiliary_head.*`` (none in SegNeXt configs) is dropped and reported. Keys that no rule
places are kept under their original names so that
:func:`segkit.checkpoints.load_checkpoint` reports them as unexpected. Before anything is
loaded the stage depths and widths read from the keys are compared with the model's, so a
checkpoint of another variant (e.g. SegNeXt-B into SegNeXt-T) or of another family (SegFormer)
raises :class:`~segkit.errors.CheckpointError` with both configurations in the message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import Optional

import torch

from segkit.errors import CheckpointError, UsageError

from .backbones.mscan import MSCAN
from .classifier import Classifier
from .family import Family, PaperRow, Pretrained, arch_dict, split_kwargs
from .heads.ham_head import LightHamHead
from .heads.segformer_head import SegFormerHead
from .segmentor import Segmentor

# ---------------------------------------------------------------------------- 1. variants
VARIANTS: dict[str, dict] = {
    "t": dict(
        encoder=dict(embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2), mlp_ratios=(8, 8, 4, 4)),
        drop_path_rate=0.1,
        ham_channels=256,
        md_r=16,
    ),
    "s": dict(
        encoder=dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2), mlp_ratios=(8, 8, 4, 4)),
        drop_path_rate=0.1,
        ham_channels=256,
        md_r=16,
    ),
    "b": dict(
        encoder=dict(embed_dims=(64, 128, 320, 512), depths=(3, 3, 12, 3), mlp_ratios=(8, 8, 4, 4)),
        drop_path_rate=0.1,
        ham_channels=512,
        md_r=64,
    ),
    "l": dict(
        encoder=dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 27, 3), mlp_ratios=(8, 8, 4, 4)),
        drop_path_rate=0.3,
        ham_channels=1024,
        md_r=64,
    ),
}
# The MSCAN encoders alone (the ImageNet ``mscan_*`` models), a view of VARIANTS.
MSCAN_VARIANTS: dict[str, dict] = {k: v["encoder"] for k, v in VARIANTS.items()}


# ---------------------------------------------------------------------------- 2. builder
@dataclass
class SegNeXtArch:
    """Architecture switches of a SegNeXt (saved to ``config.json`` as ``arch``).

    ``None`` means "the variant's value" (:data:`VARIANTS`).

    Attributes:
        drop_path_rate: encoder stochastic depth (0.1; L: 0.3).
        ham_channels: LightHamHead width (``ham_channels`` = ``channels`` in the official configs).
        md_r: NMF rank R.
        dropout: ``Dropout2d`` before ``conv_seg`` (0.1).
        train_steps, eval_steps: NMF iterations in training / eval (6 / 7).
        one_step_grad: differentiate only the last NMF update (:class:`~segkit.models.heads.ham_head.NMF2D`).
        nmf_seed: seed of the deterministic eval-mode NMF bases.

    Ablations of the paper (defaults = the published SegNeXt; ``docs/segnext_ablations.md``):
        attention_unit: ``"msca"`` or ``"lka"`` (VAN's single large-kernel branch: Tab. 8 "w/o MSCA").
        msca_kernel_sizes, msca_channel_mixing, msca_attention: MSCA's parts (Tab. 6;
            :class:`~segkit.models.backbones.mscan.MSCA`).
        context: the decoder's global-context module, ``"ham"``, ``"cc"``, ``"ema"``, ``"nl"``
            (Tab. 5) or ``"msca"`` (supplement Tab. 2);
            :class:`~segkit.models.heads.ham_head.LightHamHead`.
        decoder: ``"ham"`` (Fig. 3 c, the LightHamHead) or ``"mlp"`` (Fig. 3 a, SegFormer's
            All-MLP decoder over stages 1–4 with embedding width ``ham_channels``; Tab. 7 (a)).
        head_in_index: the encoder stages the LightHamHead reads (0-based): ``(1, 2, 3)``;
            ``(3,)`` is Fig. 3 (b) / Tab. 7 (b), ``(0, 1, 2, 3)`` Tab. 7 "(c) w/ stage 1".
    """

    drop_path_rate: Optional[float] = None
    ham_channels: Optional[int] = None
    md_r: Optional[int] = None
    dropout: float = 0.1
    train_steps: int = 6
    eval_steps: int = 7
    one_step_grad: bool = False
    nmf_seed: int = 0
    attention_unit: str = "msca"
    msca_kernel_sizes: tuple[int, ...] = (7, 11, 21)
    msca_channel_mixing: bool = True
    msca_attention: bool = True
    context: str = "ham"
    decoder: str = "ham"
    head_in_index: tuple[int, ...] = (1, 2, 3)


def build_segnext(variant: str, num_classes: int = 150, **kwargs) -> Segmentor:
    """SegNeXt-``variant`` (T/S/B/L): MSCAN encoder + LightHamHead (SegNeXt paper §3).

    ``kwargs``: the fields of :class:`SegNeXtArch` and the ``Segmentor`` metadata
    (``class_names``, ``palette``, ``ignore_index``, ``mean``, ``std``, ``loss_avg``).
    Raises ``ValueError`` for an unknown variant and ``TypeError`` for an unknown keyword.
    """
    if variant not in VARIANTS:
        raise UsageError(f"unknown SegNeXt variant {variant!r}; choose from {sorted(VARIANTS)}")
    arch, meta = split_kwargs(SegNeXtArch, kwargs, f"segnext-{variant}")
    v = VARIANTS[variant]
    arch.drop_path_rate = v["drop_path_rate"] if arch.drop_path_rate is None else arch.drop_path_rate
    arch.ham_channels = arch.ham_channels or v["ham_channels"]
    arch.md_r = arch.md_r or v["md_r"]
    encoder = MSCAN(
        **v["encoder"],
        drop_path_rate=arch.drop_path_rate,
        attention_unit=arch.attention_unit,
        msca_kernel_sizes=tuple(arch.msca_kernel_sizes),
        msca_channel_mixing=arch.msca_channel_mixing,
        msca_attention=arch.msca_attention,
    )
    if arch.decoder == "mlp":
        if arch.context != "ham" or tuple(arch.head_in_index) != (1, 2, 3):
            raise UsageError("decoder='mlp' (SegFormer's All-MLP decoder) takes no context / head_in_index switch")
        head = SegFormerHead(
            encoder.out_channels, embed_dim=arch.ham_channels, num_classes=num_classes, dropout=arch.dropout
        )
    elif arch.decoder == "ham":
        in_index = tuple(int(i) for i in arch.head_in_index)
        if not in_index or any(i not in range(4) for i in in_index) or list(in_index) != sorted(set(in_index)):
            raise UsageError(f"head_in_index must be increasing stage indices in 0..3, got {list(arch.head_in_index)}")
        head = LightHamHead(
            [encoder.out_channels[i] for i in in_index],
            ham_channels=arch.ham_channels,
            channels=arch.ham_channels,
            num_classes=num_classes,
            md_r=arch.md_r,
            train_steps=arch.train_steps,
            eval_steps=arch.eval_steps,
            dropout=arch.dropout,
            one_step_grad=arch.one_step_grad,
            seed=arch.nmf_seed,
            in_index=in_index,
            context=arch.context,
        )
    else:
        raise UsageError(f"unknown SegNeXt decoder {arch.decoder!r}; choose 'ham' (Fig. 3 c) or 'mlp' (Fig. 3 a)")
    return Segmentor(
        encoder, head, num_classes, name=f"segnext-{variant}", family="segnext", arch=arch_dict(arch), **meta
    )


# The paper's ablation models that have parameter / GFLOP rows (docs/segnext_ablations.md);
# every other combination of switches is reachable through the SegNeXtArch keywords.
ABLATIONS: dict[str, tuple[str, dict]] = {
    # Tab. 5: global-context module of the decoder, on SegNeXt-B
    "segnext-b-cc": ("b", dict(context="cc")),
    "segnext-b-ema": ("b", dict(context="ema")),
    "segnext-b-nl": ("b", dict(context="nl")),
    # Tab. 7: decoder structures (Fig. 3), on SegNeXt-T
    "segnext-t-mlp-decoder": ("t", dict(decoder="mlp")),
    "segnext-t-last-stage-head": ("t", dict(head_in_index=(3,))),
    "segnext-t-with-stage1": ("t", dict(head_in_index=(0, 1, 2, 3))),
    # Tab. 8: w/o MSCA (VAN's large-kernel attention)
    "segnext-t-lka": ("t", dict(attention_unit="lka")),
    "segnext-s-lka": ("s", dict(attention_unit="lka")),
    # supplement Tab. 2: MSCA as the decoder's context module
    **{f"segnext-{v}-msca-head": (v, dict(context="msca")) for v in VARIANTS},
}


def _ablation_builder(name: str, variant: str, switches: dict):
    def build(num_classes: int = 150, **kwargs) -> Segmentor:
        model = build_segnext(variant, num_classes, **{**switches, **kwargs})
        model.name = name
        return model

    build.__doc__ = f"{name}: SegNeXt-{variant.upper()} with {switches} (see :data:`ABLATIONS`)."
    return build


MODELS = {f"segnext-{v}": partial(build_segnext, v) for v in VARIANTS}
MODELS.update({name: _ablation_builder(name, v, sw) for name, (v, sw) in ABLATIONS.items()})


# ---------------------------------------------------------------------------- 3. paper figures
# (params M, GFLOPs ADE20K 512², GFLOPs Cityscapes 2048×1024 with the 19-class head): SegNeXt Tab. 9.
_PAPER = {"t": (4.3, 6.6, 50.5), "s": (13.9, 15.9, 124.6), "b": (27.6, 34.9, 275.7), "l": (48.9, 70.0, 577.5)}
PAPER_ROWS: tuple[PaperRow, ...] = tuple(
    row
    for v, (params, ade, city) in _PAPER.items()
    for row in (
        PaperRow(f"SegNeXt-{v.upper()} (ADE20K)", f"segnext-{v}", {}, 150, (512, 512), params, ade, "SegNeXt Tab. 9"),
        PaperRow(
            f"SegNeXt-{v.upper()} (Cityscapes)", f"segnext-{v}", {}, 19, (1024, 2048), None, city, "SegNeXt Tab. 9"
        ),
    )
) + tuple(
    PaperRow(label, model, {}, classes, (512, 512), params, gflops, source)
    for label, model, classes, params, gflops, source in (
        # ADE20K ablations (150 classes)
        ("SegNeXt-B w/ CC", "segnext-b-cc", 150, 27.8, 35.7, "SegNeXt Tab. 5"),
        ("SegNeXt-B w/ EMA", "segnext-b-ema", 150, 27.4, 32.3, "SegNeXt Tab. 5"),
        ("SegNeXt-B w/ NL", "segnext-b-nl", 150, 27.6, 40.9, "SegNeXt Tab. 5"),
        ("SegNeXt-B w/ Ham", "segnext-b", 150, 27.6, 34.9, "SegNeXt Tab. 5"),
        ("SegNeXt-T (a)", "segnext-t-mlp-decoder", 150, 4.4, 10.0, "SegNeXt Tab. 7"),
        ("SegNeXt-T (b)", "segnext-t-last-stage-head", 150, 4.2, 4.9, "SegNeXt Tab. 7"),
        ("SegNeXt-T (c) w/ stage 1", "segnext-t-with-stage1", 150, 4.3, 12.1, "SegNeXt Tab. 7"),
        ("SegNeXt-T w/o MSCA", "segnext-t-lka", 150, 4.2, 6.5, "SegNeXt Tab. 8"),
        ("SegNeXt-S w/o MSCA", "segnext-s-lka", 150, 13.8, 15.8, "SegNeXt Tab. 8"),
        # the supplement's MSCA-head rows were measured on COCO-Stuff (171 classes)
        ("SegNeXt-T w/ MSCA head", "segnext-t-msca-head", 171, 4.4, 6.7, "SegNeXt supplement Tab. 2"),
        ("SegNeXt-S w/ MSCA head", "segnext-s-msca-head", 171, 14.0, 15.9, "SegNeXt supplement Tab. 2"),
        ("SegNeXt-B w/ MSCA head", "segnext-b-msca-head", 171, 28.0, 33.6, "SegNeXt supplement Tab. 2"),
        ("SegNeXt-L w/ MSCA head", "segnext-l-msca-head", 171, 50.1, 69.8, "SegNeXt supplement Tab. 2"),
    )
)


# ---------------------------------------------------------------------------- 3b. published weights
# mmsegmentation's SegNeXt checkpoints (``configs/segnext/metafile.yaml``: trained by mmseg with the
# official recipe; mmseg 1.x key names, converted on load) and the ImageNet MSCAN encoders its configs
# start from. The 8 hex digits at the end of each file name are the first digits of its SHA-256
# (mmseg ``tools/misc/publish_model.py``). Test protocol of the ADE20K configs: keep-ratio into
# 2048×512, sides to multiples of 32, whole. mIoU: single scale, as published in the metafile.
# mmseg's configs set the NMF rank MD_R = 16 for every size (the official B / L configs keep 64).
SEGNEXT_LICENCE = "Apache-2.0 (the SegNeXt authors ask to be contacted for commercial use)"
_MMSEG = "https://download.openmmlab.com/mmsegmentation/v0.5"
_ADE_FILES = {
    "t": ("segnext_mscan-t_1x16_512x512_adamw_160k_ade20k_20230210_140244-05bd8466.pth", 41.50),
    "s": ("segnext_mscan-s_1x16_512x512_adamw_160k_ade20k_20230214_113014-43013668.pth", 44.16),
    "b": ("segnext_mscan-b_1x16_512x512_adamw_160k_ade20k_20230209_172053-b6f6c70c.pth", 48.03),
    "l": ("segnext_mscan-l_1x16_512x512_adamw_160k_ade20k_20230209_172055-19b14b63.pth", 50.99),
}
_IMAGENET_FILES = {
    "t": "mscan_t_20230227-119e8c9f.pth",
    "s": "mscan_s_20230227-f33ccdf2.pth",
    "b": "mscan_b_20230227-3ab7d230.pth",
    "l": "mscan_l_20230227-cef260d4.pth",
}
PRETRAINED: tuple[Pretrained, ...] = (
    *(
        Pretrained(
            f"segnext-{v}_ade20k-512",
            f"segnext-{v}",
            "ade20k",
            150,
            SEGNEXT_LICENCE,
            url=f"{_MMSEG}/segnext/{f.rsplit('_', 2)[0]}/{f}",
            sha256=f.rsplit("-", 1)[1][:8],
            protocol=dict(scale=(2048, 512), keep_ratio=True, size_divisor=32, mode="whole"),
            miou=miou,
            trained_by="OpenMMLab (mmsegmentation), official recipe",
            arch={"md_r": 16},
        )
        for v, (f, miou) in _ADE_FILES.items()
    ),
    *(
        Pretrained(
            f"mscan-{v}_imagenet",
            f"segnext-{v}",
            "imagenet",
            0,
            SEGNEXT_LICENCE,
            url=f"{_MMSEG}/pretrain/segnext/{f}",
            sha256=f.rsplit("-", 1)[1][:8],
            trained_by="the SegNeXt authors (converted by OpenMMLab)",
        )
        for v, f in _IMAGENET_FILES.items()
    ),
)


# ---------------------------------------------------------------------------- 4. configs
def configs() -> dict[str, dict]:
    """The shipped configs of the family: ``{"dataset/model.yaml": config dict}``."""
    from segkit.recipes import PAPER_DATASETS, camvid_15min_config, paper_config, small_config

    out = {
        f"{dataset}/segnext-{v}.yaml": paper_config(f"segnext-{v}", dataset, eval_interval=8000)  # official: every 8k
        for dataset in PAPER_DATASETS
        for v in VARIANTS
    }
    # The ablation models on the data set of their table: ADE20K (Tabs. 5, 7, 8), COCO-Stuff
    # (supplement Tab. 2, the MSCA head), with the main recipe of that data set.
    for model in ABLATIONS:
        dataset = "coco_stuff164k" if model.endswith("-msca-head") else "ade20k"
        out[f"{dataset}/{model}.yaml"] = paper_config(model, dataset, eval_interval=8000)
    out["camvid/segnext-t_15min.yaml"] = camvid_15min_config()
    for dataset in ("camvid", "ccp"):
        for model in ("segnext-t", "segnext-s"):
            out[f"{dataset}/{model}.yaml"] = small_config(model, dataset)
    return out


# ---------------------------------------------------------------------------- 5. conversion
_MSCAN_KEY = re.compile(r"^(?:patch_embed[1-4]|block[1-4]|norm[1-4])\.")
_MMSEG_DWCONV = re.compile(r"(\.mlp\.dwconv)\.(weight|bias)$")
# Classifier of an ImageNet checkpoint: the released mscan_*.pth files have not been inspected
# here, so anything head-like at top level is treated as the classifier.
_CLASSIFIER_KEY = re.compile(r"^(?:head|heads|fc|classifier|cls_head|pre_logits|logits|last_linear)(?:\.|_|$)")
_BLOCK_KEY = re.compile(r"^block([1-4])\.(\d+)\.")


def _variant_name(depths, widths) -> str:
    for name, cfg in MSCAN_VARIANTS.items():
        if tuple(cfg["depths"]) == tuple(depths) and tuple(cfg["embed_dims"]) == tuple(widths):
            return f"SegNeXt-{name.upper()}"
    return "a non-standard MSCAN"


def _encoder_shape(enc: dict[str, torch.Tensor]) -> tuple[dict[int, int], dict[int, int]]:
    """Per-stage depth (1 + highest block index) and width read from encoder keys (without prefix)."""
    depths: dict[int, int] = {}
    widths: dict[int, int] = {}
    for k, v in enc.items():
        m = _BLOCK_KEY.match(k)
        if m:
            s, j = int(m[1]), int(m[2])
            depths[s] = max(depths.get(s, 0), j + 1)
    for s in range(1, 5):
        for k in (
            f"patch_embed{s}.proj.3.weight" if s == 1 else f"patch_embed{s}.proj.weight",
            f"norm{s}.weight",
            f"block{s}.0.norm1.weight",
        ):
            if k in enc and enc[k].ndim >= 1:
                widths[s] = int(enc[k].shape[0])
                break
    return depths, widths


def _check_variant(enc: dict[str, torch.Tensor], head: dict[str, torch.Tensor], model) -> None:
    backbone = getattr(model, "backbone", None)
    m_depths = getattr(backbone, "depths", None)
    m_widths = getattr(backbone, "embed_dims", None)
    if m_depths is None or m_widths is None:
        return
    depths, widths = _encoder_shape(enc)
    bad = [
        s
        for s in range(1, 5)
        if (s in depths and depths[s] != m_depths[s - 1]) or (s in widths and widths[s] != m_widths[s - 1])
    ]
    if bad:
        c_depths = [depths.get(s, "?") for s in range(1, 5)]
        c_widths = [widths.get(s, "?") for s in range(1, 5)]
        raise CheckpointError(
            f"checkpoint encoder has stage depths {c_depths} and widths {c_widths} "
            f"({_variant_name(c_depths, c_widths)}), but model {getattr(model, 'name', '')!r} has depths "
            f"{list(m_depths)} and widths {list(m_widths)} ({_variant_name(m_depths, m_widths)}); "
            f"build the matching model (stage(s) {bad} differ)"
        )
    squeeze = head.get("decode_head.squeeze.conv.weight")
    own = getattr(getattr(getattr(model, "decode_head", None), "squeeze", None), "conv", None)
    if squeeze is not None and own is not None and squeeze.shape[0] != own.weight.shape[0]:
        raise CheckpointError(
            f"checkpoint head has ham_channels={squeeze.shape[0]} but the model's head has "
            f"{own.weight.shape[0]} (wrong variant or ham_channels)"
        )


def convert(state: dict[str, torch.Tensor], model) -> tuple[dict[str, torch.Tensor], str, list[str], list[str]]:
    """Rename a SegNeXt/MSCAN state dict to segkit keys.

    Args:
        state: flat ``{key: tensor}`` (wrappers and ``module.`` already removed by
            :func:`segkit.checkpoints.read_state_dict`).
        model: the target zoo ``Segmentor`` (its ``backbone.depths`` / ``embed_dims`` and head
            width are used to detect a wrong variant).

    Returns:
        ``(state, format, dropped, notes)``: the renamed dict (``backbone.*`` / ``decode_head.*``),
        the format name (module docstring), the checkpoint keys dropped on purpose, and
        human-readable notes.

    Raises:
        CheckpointError: the checkpoint is not a SegNeXt/MSCAN one (e.g. SegFormer), is of
            another variant than the model, or holds a key twice under two namings.
    """
    enc: dict[str, torch.Tensor] = {}  # encoder keys without prefix, official names
    head: dict[str, torch.Tensor] = {}  # decode_head.* keys
    other: dict[str, torch.Tensor] = {}  # unplaced, kept under original names
    dropped: list[str] = []
    notes: list[str] = []
    classifier: list[str] = []
    n_renamed = 0
    prefixed = any(k.startswith(("backbone.", "decode_head.")) for k in state)
    own_keys = set(model.state_dict()) if hasattr(model, "state_dict") else set()  # e.g. EMA bases are kept

    for key, value in state.items():
        if key.startswith("decode_head."):
            if key.startswith("decode_head.hamburger.ham.") and "bases" in key and key not in own_keys:
                dropped.append(key)  # fixed bases of rand_init=False (not used by SegNeXt)
                notes.append(f"{key} dropped: segkit draws NMF bases at run time (rand_init=True)")
            else:
                head[key] = value
            continue
        if key.startswith("auxiliary_head."):
            dropped.append(key)
            continue
        name = key[len("backbone.") :] if key.startswith("backbone.") else key
        if not _MSCAN_KEY.match(name) or (not key.startswith("backbone.") and prefixed):
            if not prefixed and _CLASSIFIER_KEY.match(key):
                classifier.append(key)
                dropped.append(key)
            else:
                other[key] = value
            continue
        new = _MMSEG_DWCONV.sub(r"\1.dwconv.\2", name)
        n_renamed += new != name
        if new in enc:
            raise CheckpointError(
                f"key {key!r} maps to {'backbone.' + new!r}, which the checkpoint already "
                f"holds under another name (mixed official / mmseg 1.x names)"
            )
        enc[new] = value

    if enc and not any(".spatial_gating_unit." in k for k in enc):
        hint = (
            " It looks like a SegFormer/MiT checkpoint; build a segformer-* model for it."
            if any(re.search(r"\.attn\.(q|kv|sr)\.", k) for k in enc)
            else ""
        )
        raise CheckpointError(
            f"not a SegNeXt/MSCAN checkpoint: its encoder keys have no "
            f"'spatial_gating_unit' (MSCA) weights, e.g. {sorted(enc)[:3]}.{hint}"
        )
    if not enc and not head:
        hint = (
            " It looks like a SegFormer checkpoint." if any("linear_c" in k or "segformer" in k for k in state) else ""
        )
        raise CheckpointError(f"no SegNeXt/MSCAN keys found (first keys: {sorted(state)[:4]}).{hint}")
    _check_variant(enc, head, model)

    mmseg = n_renamed > 0
    if not prefixed:
        fmt = "mmseg-mscan-imagenet" if mmseg else "mscan-imagenet"
    else:
        fmt = "mmseg-segnext" if mmseg else "segnext"
    if mmseg:
        notes.append(f"renamed {n_renamed} mmseg 1.x key(s) mlp.dwconv.* -> mlp.dwconv.dwconv.*")
    if classifier:
        notes.append(f"ImageNet classifier dropped ({len(classifier)} key(s): {', '.join(sorted(classifier)[:4])})")
    if any(k.startswith("auxiliary_head.") for k in dropped):
        notes.append("auxiliary_head.* dropped (SegNeXt has no auxiliary head)")
    if not head:
        notes.append("encoder-only checkpoint")

    out = {f"backbone.{k}": v for k, v in enc.items()}
    out.update(head)
    out.update(other)
    return out, fmt, dropped, notes


def build_mscan_classifier(
    variant: str, num_classes: int = 1000, drop_path_rate: float = 0.1, head_dropout: float = 0.0
) -> Classifier:
    """MSCAN-``variant`` ImageNet classifier (SegNeXt §4.1, Table 3): MSCAN + mean pooling + Linear.

    ``drop_path_rate``: stochastic depth of the pretraining (DeiT's 0.1; the paper gives no value).
    With 1000 classes the parameter counts are Table 3's 4.2 / 14.0 / 26.8 / 45.2 M.
    """
    if variant not in VARIANTS:
        raise UsageError(f"unknown MSCAN variant {variant!r}; choose from {sorted(VARIANTS)}")
    encoder = MSCAN(**VARIANTS[variant]["encoder"], drop_path_rate=drop_path_rate)
    return Classifier(
        encoder,
        num_classes,
        name=f"mscan-{variant}",
        segmentation_model=f"segnext-{variant}",
        head_dropout=head_dropout,
    )


CLASSIFIERS = {f"mscan-{v}": partial(build_mscan_classifier, v) for v in VARIANTS}


# Parameters with K classes = base + K * per_class (only the classifier, and the class embeddings of
# Segmenter / RSSeg, depend on K): what `segkit models` prints without building anything. Checked
# against meta-device builds by tests/test_cli.py::test_models_parameter_table_matches_the_builds.
PARAM_COUNTS: dict[str, tuple[int, int]] = {
    "segnext-t": (4224864, 257),
    "segnext-s": (13894336, 257),
    "segnext-b": (27559360, 513),
    "segnext-l": (48772800, 1025),
    "segnext-b-cc": (27887681, 513),
    "segnext-b-ema": (27296704, 513),
    "segnext-b-nl": (27559616, 513),
    "segnext-t-mlp-decoder": (4298336, 257),
    "segnext-t-last-stage-head": (4167520, 257),
    "segnext-t-with-stage1": (4233056, 257),
    "segnext-t-lka": (4170464, 257),
    "segnext-s-lka": (13802944, 257),
    "segnext-t-msca-head": (4318816, 257),
    "segnext-s-msca-head": (13988288, 257),
    "segnext-b-msca-head": (27878336, 513),
    "segnext-l-msca-head": (49935040, 1025),
}

FAMILY = Family(
    name="segnext",
    paper="SegNeXt: Rethinking Convolutional Attention Design for Semantic Segmentation (Guo et al., NeurIPS 2022)",
    models=MODELS,
    convert=convert,
    flops_convention="torchprofile",
    paper_rows=PAPER_ROWS,
    configs=configs,
    param_counts=PARAM_COUNTS,
    pretrained=PRETRAINED,
    classifiers=CLASSIFIERS,
    citation="@inproceedings{guo2022segnext, title={SegNeXt: Rethinking Convolutional Attention Design for "
    "Semantic Segmentation}, author={Guo, Meng-Hao and Lu, Cheng-Ze and Hou, Qibin and Liu, Zhengning and "
    "Cheng, Ming-Ming and Hu, Shi-Min}, booktitle={NeurIPS}, year={2022}}",
)

__all__ = [
    "FAMILY",
    "PARAM_COUNTS",
    "VARIANTS",
    "MSCAN_VARIANTS",
    "SegNeXtArch",
    "build_segnext",
    "build_mscan_classifier",
    "CLASSIFIERS",
    "MODELS",
    "PAPER_ROWS",
    "configs",
    "convert",
]
