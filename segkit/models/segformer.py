"""The SegFormer family: MiT encoder + All-MLP decoder, B0–B5 (Xie et al., NeurIPS 2021).

Everything segkit knows about SegFormer lives here, in reading order:

1. **Variants** (:data:`VARIANTS`): encoder and head settings per size, from the official
   code (``NVlabs/SegFormer: mmseg/models/backbones/mix_transformer.py`` — the ``mit_b0`` …
   ``mit_b5`` classes hard-code them — and ``local_configs/segformer/B*/*.py`` for the decoder
   width E: 256 for B0/B1, 768 for B2–B5; paper Tab. 1 / §3.2).
2. **Builder** (:func:`build_segformer`) with its architecture switches (:class:`SegFormerArch`).
3. **Paper figures** (:data:`PAPER_ROWS`): parameters and GFLOPs of SegFormer Tab. 1a / Tab. 2.
   The paper's FLOPs come from ``tools/get_flops.py`` (mmcv's counter plus the attention
   products): ``flops_convention = "mmcv"`` (:mod:`segkit.tools.flops`).
4. **Configs** (:func:`configs`): the paper's recipes for the shipped YAML files.
5. **Checkpoint conversion** (:func:`convert`) of every public naming to segkit's names.
   segkit's names *are* the official NVlabs names (``mmseg/models/decode_heads/segformer_head.py``
   and the backbone above), so official checkpoints only lose their unused
   ``decode_head.conv_seg``. Other formats, detected from their key names:

==========================  ===========================================================
format                      recognised by / what happens
==========================  ===========================================================
``nvlabs-segformer``        ``backbone.patch_embed1…`` + ``decode_head.conv_seg``: conv_seg dropped
``segkit``                  the same names without ``conv_seg``: passed through
``nvlabs-mit-imagenet``     ``patch_embed1…`` without prefix (``mit_b*.pth``): ``backbone.`` added,
                            ImageNet classifier ``head.*`` dropped
``hf-segformer``            Hugging Face Hub names ``segformer.encoder.…`` / ``decode_head.linear_c.0…``
                            (``transformers: models/segformer/convert_segformer_original_to_pytorch.py``):
                            renamed, ``key`` + ``value`` concatenated into ``kv``
``hf-segformer-v5``         transformers-5 in-memory names ``segformer.stages.…``,
                            ``attention.q_proj`` …, ``decode_head.linear_projections…``
``mmseg-segformer``         mmseg 1.x ``backbone.layers.…`` (``mmseg/models/backbones/mit.py``; the
                            name map of ``tools/model_converters/mit2mmseg.py``): encoder renamed,
                            ``in_proj`` split into ``q`` / ``kv``, 1×1-conv FFN weights reshaped to
                            Linear; mmseg's ``SegformerHead`` is a different architecture → head dropped
==========================  ===========================================================

A Hugging Face ``SegformerForImageClassification`` checkpoint (``classifier.*`` at top level)
is handled like the ImageNet ``mit_b*`` files. Keys that no rule places are kept under their
original names so that :func:`segkit.checkpoints.load_checkpoint` reports them as unexpected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import Optional

import torch

from segkit.errors import CheckpointError, UsageError

from .backbones.mit import MixVisionTransformer
from .classifier import Classifier
from .family import NVIDIA_SCL, Family, PaperRow, Pretrained, arch_dict, split_kwargs
from .heads.segformer_head import SegFormerHead
from .segmentor import Segmentor

# ---------------------------------------------------------------------------- 1. variants
_MIT_COMMON = dict(num_heads=(1, 2, 5, 8), mlp_ratios=(4, 4, 4, 4), sr_ratios=(8, 4, 2, 1))
VARIANTS: dict[str, dict] = {
    "b0": dict(encoder=dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2), **_MIT_COMMON), decoder_dim=256),
    "b1": dict(encoder=dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 2, 2), **_MIT_COMMON), decoder_dim=256),
    "b2": dict(encoder=dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3), **_MIT_COMMON), decoder_dim=768),
    "b3": dict(encoder=dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 18, 3), **_MIT_COMMON), decoder_dim=768),
    "b4": dict(encoder=dict(embed_dims=(64, 128, 320, 512), depths=(3, 8, 27, 3), **_MIT_COMMON), decoder_dim=768),
    "b5": dict(encoder=dict(embed_dims=(64, 128, 320, 512), depths=(3, 6, 40, 3), **_MIT_COMMON), decoder_dim=768),
}
# The MiT encoders alone (the ImageNet ``mit_b*`` models), a view of VARIANTS.
MIT_VARIANTS: dict[str, dict] = {k: v["encoder"] for k, v in VARIANTS.items()}


# ---------------------------------------------------------------------------- 2. builder
@dataclass
class SegFormerArch:
    """Architecture switches of a SegFormer (saved to ``config.json`` as ``arch``).

    Attributes:
        drop_path_rate: encoder stochastic depth (official 0.1 for every size).
        decoder_dim: All-MLP decoder width E; ``None`` = the variant's (256 B0/B1, 768 B2–B5).
        dropout: ``Dropout2d`` before the classifier (official 0.1).
        fuse_first: apply the decoder's 1×1 fuse conv per stage before upsampling (same function,
            less work; :class:`~segkit.models.heads.segformer_head.SegFormerHead`); ``False`` =
            the official evaluation order.
    """

    drop_path_rate: float = 0.1
    decoder_dim: Optional[int] = None
    dropout: float = 0.1
    fuse_first: bool = True


def build_segformer(variant: str, num_classes: int = 150, **kwargs) -> Segmentor:
    """SegFormer-``variant`` (B0–B5): MiT encoder + All-MLP decoder (SegFormer paper §3).

    ``kwargs``: the fields of :class:`SegFormerArch` and the ``Segmentor`` metadata
    (``class_names``, ``palette``, ``ignore_index``, ``mean``, ``std``, ``loss_avg``).
    Raises ``ValueError`` for an unknown variant and ``TypeError`` for an unknown keyword.
    """
    if variant not in VARIANTS:
        raise UsageError(f"unknown SegFormer variant {variant!r}; choose from {sorted(VARIANTS)}")
    arch, meta = split_kwargs(SegFormerArch, kwargs, f"segformer-{variant}")
    v = VARIANTS[variant]
    arch.decoder_dim = arch.decoder_dim or v["decoder_dim"]
    encoder = MixVisionTransformer(**v["encoder"], drop_path_rate=arch.drop_path_rate)
    head = SegFormerHead(
        encoder.out_channels, arch.decoder_dim, num_classes, dropout=arch.dropout, fuse_first=arch.fuse_first
    )
    return Segmentor(
        encoder, head, num_classes, name=f"segformer-{variant}", family="segformer", arch=arch_dict(arch), **meta
    )


MODELS = {f"segformer-{v}": partial(build_segformer, v) for v in VARIANTS}


# ---------------------------------------------------------------------------- 3. paper figures
_CITY = (1024, 2048)
# (params M, GFLOPs ADE20K 512² (B5: 640²), GFLOPs Cityscapes 2048×1024): SegFormer Tab. 1a and
# Tab. 2 (the Cityscapes figures are those of the 150-class ADE20K model run at 2048×1024:
# they match it within 0.1 %, with 19 classes they would be 0.8–3.4 % lower).
_PAPER = {
    "b0": (3.8, 8.4, 125.5),
    "b1": (13.7, 15.9, 243.7),
    "b2": (27.5, 62.4, 717.1),
    "b3": (47.3, 79.0, 962.9),
    "b4": (64.1, 95.7, 1240.6),
    "b5": (84.7, 183.3, 1460.4),
}
PAPER_ROWS: tuple[PaperRow, ...] = tuple(
    row
    for v, (params, ade, city) in _PAPER.items()
    for row in (
        PaperRow(
            f"SegFormer-{v.upper()} (ADE20K)",
            f"segformer-{v}",
            {},
            150,
            (640, 640) if v == "b5" else (512, 512),
            params,
            ade,
            "SegFormer Tab. 1a",
        ),
        PaperRow(
            f"SegFormer-{v.upper()} (Cityscapes)", f"segformer-{v}", {}, 150, _CITY, params, city, "SegFormer Tab. 1a"
        ),
    )
)


# ---------------------------------------------------------------------------- 3b. published weights
# NVIDIA's original training runs, in transformers format on the Hugging Face Hub (``nvidia/*``),
# converted from the NVlabs release by ``transformers: models/segformer/convert_segformer_original_to_pytorch.py``.
# Test protocols: the official configs (``local_configs/segformer/B*/*``): ADE20K keep-ratio into
# 2048×512 (B5-640: 2048×640) with sides to multiples of 32, whole; Cityscapes 2048×1024, slide 1024 / 768.
# The NVlabs release publishes no per-model mIoU table, so none is listed.
_ADE = dict(scale=(2048, 512), keep_ratio=True, size_divisor=32, mode="whole")
_CITY = dict(
    scale=(2048, 1024), keep_ratio=True, size_divisor=32, mode="slide", crop_size=(1024, 1024), stride=(768, 768)
)
PRETRAINED: tuple[Pretrained, ...] = (
    *(
        Pretrained(
            f"segformer-{v}_ade20k-{c}",
            f"segformer-{v}",
            "ade20k",
            150,
            NVIDIA_SCL,
            repo_id=f"nvidia/segformer-{v}-finetuned-ade-{c}-{c}",
            protocol={**_ADE, "scale": (2048, c)},
            trained_by="NVIDIA (SegFormer authors)",
        )
        for v, c in (("b0", 512), ("b1", 512), ("b2", 512), ("b3", 512), ("b4", 512), ("b5", 640))
    ),
    *(
        Pretrained(
            f"segformer-{v}_cityscapes-1024",
            f"segformer-{v}",
            "cityscapes",
            19,
            NVIDIA_SCL,
            repo_id=f"nvidia/segformer-{v}-finetuned-cityscapes-1024-1024",
            protocol=_CITY,
            trained_by="NVIDIA (SegFormer authors)",
        )
        for v in VARIANTS
    ),
    # the MiT encoders pretrained on ImageNet-1k (transformers SegformerForImageClassification)
    *(
        Pretrained(
            f"mit-{v}_imagenet",
            f"segformer-{v}",
            "imagenet",
            0,
            NVIDIA_SCL,
            repo_id=f"nvidia/mit-{v}",
            trained_by="NVIDIA (SegFormer authors)",
        )
        for v in VARIANTS
    ),
)


# ---------------------------------------------------------------------------- 4. configs
def configs() -> dict[str, dict]:
    """The shipped configs of the family: ``{"dataset/model.yaml": config dict}``."""
    from segkit.recipes import PAPER_DATASETS, camvid_2h30_config, camvid_10min_config, paper_config, small_config

    out = {
        "camvid/segformer-b0_10min.yaml": camvid_10min_config(),
        "camvid/segformer-b0_2h30.yaml": camvid_2h30_config(),
    }
    for dataset in PAPER_DATASETS:
        for model in MODELS:
            kw = {}
            if model == "segformer-b5" and dataset == "ade20k":  # B5 trains at 640 on ADE20K (SegFormer §4.1)
                kw = dict(scale=[2048, 640], crop=[640, 640], test_scale=[2048, 640])
            # official configs: evaluation every 4k iterations on Cityscapes, 16k elsewhere
            out[f"{dataset}/{model}.yaml"] = paper_config(
                model, dataset, eval_interval=4000 if dataset == "cityscapes" else 16000, **kw
            )
    for dataset in ("camvid", "ccp"):
        for model in ("segformer-b0", "segformer-b1"):
            out[f"{dataset}/{model}.yaml"] = small_config(model, dataset)
    return out


# ---------------------------------------------------------------------------- 5. conversion
# rename rules
# Each rule: (regex on the full key, replacement). Applied in order, first match wins.
# ``attn.k`` / ``attn.v`` are intermediate names merged into ``attn.kv`` afterwards.
_HF_BLOCK_RULES = [  # inside a block, after ``backbone.block{s}.{j}.``; Hub and v5 names
    (r"^layer_norm_1\.|^layernorm_before\.", "norm1."),
    (r"^layer_norm_2\.|^layernorm_after\.", "norm2."),
    (r"^attention\.self\.query\.|^attention\.q_proj\.", "attn.q."),
    (r"^attention\.self\.key\.|^attention\.k_proj\.", "attn.k."),
    (r"^attention\.self\.value\.|^attention\.v_proj\.", "attn.v."),
    (r"^attention\.output\.dense\.|^attention\.o_proj\.", "attn.proj."),
    (r"^attention\.self\.sr\.|^attention\.sequence_reduction\.sequence_reduction\.", "attn.sr."),
    (r"^attention\.self\.layer_norm\.|^attention\.sequence_reduction\.layer_norm\.", "attn.norm."),
    (r"^mlp\.dense1\.|^mlp\.fc1\.", "mlp.fc1."),
    (r"^mlp\.dense2\.|^mlp\.fc2\.", "mlp.fc2."),
    (r"^mlp\.dwconv\.dwconv\.", "mlp.dwconv.dwconv."),
]

_HF_HEAD_RULES = [
    (
        r"^decode_head\.(?:linear_c|linear_projections)\.(\d)\.proj\.",
        lambda m: f"decode_head.linear_c{int(m[1]) + 1}.proj.",
    ),
    (r"^decode_head\.linear_fuse\.weight$", "decode_head.linear_fuse.conv.weight"),
    (r"^decode_head\.batch_norm\.", "decode_head.linear_fuse.bn."),
    (r"^decode_head\.classifier\.", "decode_head.linear_pred."),
]


def _apply_rules(rest: str, rules) -> str | None:
    for pattern, repl in rules:
        new, n = re.subn(pattern, repl, rest, count=1)
        if n:
            return new
    return None


def _rename_hf(key: str) -> str | None:
    """One Hugging Face key (Hub or transformers-5 names, ``segformer.`` prefix removed) → segkit name."""
    m = re.match(r"^encoder\.patch_embeddings\.(\d)\.|^stages\.(\d)\.patch_embeddings\.", key)
    if m:
        stage = int(m[1] or m[2]) + 1
        rest = key[m.end() :].replace("layer_norm.", "norm.", 1)
        return f"backbone.patch_embed{stage}.{rest}"
    m = re.match(r"^encoder\.block\.(\d)\.(\d+)\.|^stages\.(\d)\.blocks\.(\d+)\.", key)
    if m:
        stage, j = (m[1], m[2]) if m[1] is not None else (m[3], m[4])
        rest = _apply_rules(key[m.end() :], _HF_BLOCK_RULES)
        return None if rest is None else f"backbone.block{int(stage) + 1}.{j}.{rest}"
    m = re.match(r"^encoder\.layer_norm\.(\d)\.|^stages\.(\d)\.layer_norm\.", key)
    if m:
        return f"backbone.norm{int(m[1] or m[2]) + 1}.{key[m.end() :]}"
    return _apply_rules(key, _HF_HEAD_RULES)


def _rename_mmseg(key: str) -> str | None:
    """One mmseg-1.x MiT key (``backbone.`` prefix removed) → segkit name.

    The inverse of mmseg's ``tools/model_converters/mit2mmseg.py`` name map.

    ``in_proj`` / FFN keys come back under intermediate names (``attn.in_proj.*``,
    ``mlp.fc1`` with a 4-D weight) and are fixed by :func:`_convert_mmseg`.
    """
    m = re.match(r"^layers\.(\d)\.0\.projection\.", key)
    if m:
        return f"backbone.patch_embed{int(m[1]) + 1}.proj.{key[m.end() :]}"
    m = re.match(r"^layers\.(\d)\.0\.norm\.", key)
    if m:
        return f"backbone.patch_embed{int(m[1]) + 1}.norm.{key[m.end() :]}"
    m = re.match(r"^layers\.(\d)\.2\.", key)
    if m:
        return f"backbone.norm{int(m[1]) + 1}.{key[m.end() :]}"
    m = re.match(r"^layers\.(\d)\.1\.(\d+)\.", key)
    if not m:
        return None
    rest = _apply_rules(
        key[m.end() :],
        [
            (r"^(norm1|norm2|attn\.sr|attn\.norm)\.", r"\1."),
            (r"^attn\.attn\.in_proj_(weight|bias)$", r"attn.in_proj.\1"),
            (r"^attn\.attn\.out_proj\.", "attn.proj."),
            (r"^ffn\.layers\.0\.", "mlp.fc1."),
            (r"^ffn\.layers\.1\.", "mlp.dwconv.dwconv."),
            (r"^ffn\.layers\.4\.", "mlp.fc2."),
        ],
    )
    return None if rest is None else f"backbone.block{int(m[1]) + 1}.{m[2]}.{rest}"


# ---------------------------------------------------------------------------- per format
def _convert_hf(state: dict, dropped: list, notes: list) -> tuple[dict, str]:
    v5 = any(re.match(r"^(segformer\.)?stages\.\d", k) or "linear_projections" in k for k in state)
    out, k_parts, v_parts = {}, {}, {}
    for key, value in state.items():
        short = key[len("segformer.") :] if key.startswith("segformer.") else key
        if re.match(r"^classifier\.", short):  # SegformerForImageClassification ImageNet head
            dropped.append(key)
            continue
        new = _rename_hf(short)
        if new is None:
            out[key] = value  # unknown: reported as unexpected by load_checkpoint
        elif ".attn.k." in new:
            k_parts[new.replace(".attn.k.", ".attn.kv.")] = (key, value)
        elif ".attn.v." in new:
            v_parts[new.replace(".attn.v.", ".attn.kv.")] = (key, value)
        else:
            out[new] = value
    for name in sorted(set(k_parts) | set(v_parts)):
        if name not in k_parts or name not in v_parts:
            have = (k_parts.get(name) or v_parts.get(name))[0]
            raise CheckpointError(
                f"key/value projections must come in pairs: {have!r} has no "
                f"{'value' if name in k_parts else 'key'} counterpart"
            )
        out[name] = torch.cat([k_parts[name][1], v_parts[name][1]], dim=0)  # official kv = [K; V] rows
    if dropped:
        notes.append("Hugging Face image-classification head (classifier.*) dropped: encoder-only checkpoint")
    notes.append(
        "transformers' SegFormer uses LayerNorm eps 1e-5 in the block and stage-end norms where the "
        "official code (and segkit) use 1e-6; logits differ very slightly from transformers' own"
    )
    return out, "hf-segformer-v5" if v5 else "hf-segformer"


def _convert_mmseg(state: dict, dropped: list, notes: list) -> dict:
    out = {}
    head = []
    for key, value in state.items():
        if key.startswith(("decode_head.", "auxiliary_head.")):
            head.append(key)
            continue
        if key.startswith(("head.", "backbone.head.")):  # ImageNet classifier of a pre-training file
            dropped.append(key)
            continue
        short = key[len("backbone.") :] if key.startswith("backbone.") else key
        new = _rename_mmseg(short)
        if new is None:
            out[key] = value
        elif new.endswith(("attn.in_proj.weight", "attn.in_proj.bias")):
            dim = value.shape[0] // 3
            if value.shape[0] != 3 * dim:
                raise CheckpointError(f"{key}: expected 3·C rows (q, k, v stacked), got shape {list(value.shape)}")
            base, kind = new.rsplit(".in_proj.", 1)
            out[f"{base}.q.{kind}"] = value[:dim]
            out[f"{base}.kv.{kind}"] = value[dim:]
        elif re.search(r"\.mlp\.fc[12]\.weight$", new) and value.ndim == 4:
            out[new] = value.flatten(1)  # 1×1 conv [out, in, 1, 1] → Linear [out, in]
        else:
            out[new] = value
    if head:
        dropped.extend(head)
        notes.append(
            "mmseg SegformerHead weights dropped: mmseg's head (1×1 Conv+BN+ReLU per stage, "
            "concat [c1..c4], 256 channels for all variants) is a different architecture from the "
            "official All-MLP decoder; only the encoder was converted, decode_head stays initialised"
        )
    notes.append(
        "mmseg MiT uses LayerNorm eps 1e-6 in the patch-embedding and reduction norms where the "
        "official code (and segkit) use 1e-5; outputs differ very slightly"
    )
    return out


# ---------------------------------------------------------------------------- checks
def _stage_layout(state: dict) -> tuple[dict[int, int], dict[int, int]]:
    """Per stage (1–4): width from ``patch_embed{s}.proj.weight`` and depth from ``block{s}.{j}`` keys."""
    widths, depths = {}, {}
    for key, value in state.items():
        m = re.match(r"^backbone\.patch_embed(\d)\.proj\.weight$", key)
        if m:
            widths[int(m[1])] = int(value.shape[0])
        m = re.match(r"^backbone\.block(\d)\.(\d+)\.", key)
        if m:
            depths[int(m[1])] = max(depths.get(int(m[1]), 0), int(m[2]) + 1)
    return widths, depths


def _variant_name(widths: dict, depths: dict) -> str | None:
    for name, cfg in MIT_VARIANTS.items():
        if all(widths.get(s, cfg["embed_dims"][s - 1]) == cfg["embed_dims"][s - 1] for s in range(1, 5)) and all(
            depths.get(s, cfg["depths"][s - 1]) == cfg["depths"][s - 1] for s in range(1, 5)
        ):
            return name.upper()
    return None


def _check_variant(state: dict, model) -> None:
    """Raise :class:`CheckpointError` when the checkpoint's stage widths/depths differ from the model's."""
    enc = getattr(model, "backbone", None)
    if enc is None or not hasattr(enc, "depths"):
        return
    widths, depths = _stage_layout(state)
    guess = _variant_name(widths, depths)
    like = f" ({guess}-like)" if guess else ""
    name = getattr(model, "name", type(model).__name__)
    for s in range(1, 5):
        if s in widths and widths[s] != enc.out_channels[s - 1]:
            raise CheckpointError(
                f"checkpoint has width {widths[s]} in stage {s}{like}, model {name} has "
                f"{enc.out_channels[s - 1]}: wrong SegFormer variant"
            )
        if s in depths and depths[s] != enc.depths[s - 1]:
            raise CheckpointError(
                f"checkpoint has {depths[s]} blocks in stage {s}{like}, model {name} has "
                f"{enc.depths[s - 1]}: wrong SegFormer variant"
            )


_FOREIGN = {  # key fragment → what the checkpoint is
    "layer_scale_1": "a SegNeXt (MSCAN) checkpoint",
    "spatial_gating_unit": "a SegNeXt (MSCAN) checkpoint",
    "decode_head.hamburger": "a SegNeXt (LightHamHead) checkpoint",
}


# ---------------------------------------------------------------------------- entry point
def convert(state: dict[str, torch.Tensor], model) -> tuple[dict[str, torch.Tensor], str, list[str], list[str]]:
    """Rename a SegFormer/MiT state dict of any supported format to segkit names.

    Args:
        state: flat ``{key: tensor}`` as returned by :func:`segkit.checkpoints.read_state_dict`.
        model: the target SegFormer ``Segmentor`` (its encoder depths/widths are checked).

    Returns:
        ``(converted_state, format_name, dropped_keys, notes)``; ``dropped_keys`` are the
        original names of tensors discarded on purpose (``conv_seg``, ImageNet classifier,
        mmseg head).

    Raises:
        CheckpointError: the checkpoint belongs to another architecture, to another SegFormer
            variant (stage widths or depths differ, e.g. "checkpoint has 4 blocks in stage 2
            (B2-like), model segformer-b0 has 2"), or a key/value pair is incomplete.
    """
    for frag, what in _FOREIGN.items():
        hit = next((k for k in state if frag in k), None)
        if hit is not None:
            raise CheckpointError(f"this is {what} (key {hit!r}), not a SegFormer checkpoint")
    dropped: list[str] = []
    notes: list[str] = []
    keys = list(state)
    if any(k.startswith(("backbone.layers.", "layers.")) for k in keys):
        out, fmt = _convert_mmseg(state, dropped, notes), "mmseg-segformer"
    elif any(
        k.startswith(
            (
                "segformer.",
                "encoder.patch_embeddings.",
                "stages.",
                "decode_head.linear_c.",
                "decode_head.linear_projections.",
                "decode_head.batch_norm.",
            )
        )
        for k in keys
    ):
        out, fmt = _convert_hf(state, dropped, notes)
    elif any(k.startswith("backbone.") for k in keys):
        out = {}
        for k, v in state.items():
            if k.startswith(("decode_head.conv_seg.", "backbone.head.")):
                dropped.append(k)
            else:
                out[k] = v
        fmt = "nvlabs-segformer" if any(k.startswith("decode_head.conv_seg.") for k in dropped) else "segkit"
        if dropped:
            notes.append("unused official keys dropped: " + ", ".join(dropped))
    elif any(k.startswith(("patch_embed1.", "block1.")) for k in keys):
        out = {}
        for k, v in state.items():
            if k.startswith("head."):
                dropped.append(k)
            else:
                out[f"backbone.{k}"] = v
        fmt = "nvlabs-mit-imagenet"
        if dropped:
            notes.append("ImageNet classifier (head.*) dropped: encoder-only checkpoint")
    else:
        raise CheckpointError(f"not a SegFormer checkpoint: no recognised key names (first keys: {keys[:5]})")
    _check_variant(out, model)
    pred = out.get("decode_head.linear_pred.weight")
    num_classes = getattr(model, "num_classes", None)
    if pred is not None and num_classes is not None and pred.shape[0] != num_classes:
        notes.append(
            f"checkpoint classifier has {pred.shape[0]} classes, model has {num_classes}: "
            f"load with strict=False to keep everything but decode_head.linear_pred"
        )
    return out, fmt, dropped, notes


def build_mit_classifier(
    variant: str, num_classes: int = 1000, drop_path_rate: float = 0.1, head_dropout: float = 0.0
) -> Classifier:
    """MiT-``variant`` ImageNet classifier (SegFormer §3.1; official ``mix_transformer.py``): MiT + mean
    pooling of the normalised last stage + Linear. MiT-B0 with 1000 classes: 3,576,392 parameters."""
    if variant not in VARIANTS:
        raise UsageError(f"unknown MiT variant {variant!r}; choose from {sorted(VARIANTS)}")
    encoder = MixVisionTransformer(**VARIANTS[variant]["encoder"], drop_path_rate=drop_path_rate)
    return Classifier(
        encoder,
        num_classes,
        name=f"mit-{variant}",
        segmentation_model=f"segformer-{variant}",
        head_dropout=head_dropout,
    )


CLASSIFIERS = {f"mit-{v}": partial(build_mit_classifier, v) for v in VARIANTS}


# Parameters with K classes = base + K * per_class (only the classifier, and the class embeddings of
# Segmenter / RSSeg, depend on K): what `segkit models` prints without building anything. Checked
# against meta-device builds by tests/test_cli.py::test_models_parameter_table_matches_the_builds.
PARAM_COUNTS: dict[str, tuple[int, int]] = {
    "segformer-b0": (3714144, 257),
    "segformer-b1": (13677248, 257),
    "segformer-b2": (27346624, 769),
    "segformer-b3": (47222464, 769),
    "segformer-b4": (63993024, 769),
    "segformer-b5": (84593344, 769),
}

FAMILY = Family(
    name="segformer",
    paper="SegFormer: Simple and Efficient Design for Semantic Segmentation with Transformers "
    "(Xie et al., NeurIPS 2021)",
    models=MODELS,
    convert=convert,
    flops_convention="mmcv",
    paper_rows=PAPER_ROWS,
    configs=configs,
    param_counts=PARAM_COUNTS,
    pretrained=PRETRAINED,
    classifiers=CLASSIFIERS,
    citation="@inproceedings{xie2021segformer, title={SegFormer: Simple and Efficient Design for Semantic "
    "Segmentation with Transformers}, author={Xie, Enze and Wang, Wenhai and Yu, Zhiding and Anandkumar, "
    "Anima and Alvarez, Jose M and Luo, Ping}, booktitle={NeurIPS}, year={2021}}",
)

__all__ = [
    "FAMILY",
    "PARAM_COUNTS",
    "VARIANTS",
    "MIT_VARIANTS",
    "SegFormerArch",
    "build_segformer",
    "build_mit_classifier",
    "CLASSIFIERS",
    "MODELS",
    "PAPER_ROWS",
    "configs",
    "convert",
]
