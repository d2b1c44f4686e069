"""Convert SegNeXt / MSCAN checkpoints to segkit's names (architectures.md §0.6, §5.4).

segkit's SegNeXt names *are* the official SegNeXt names, so most files pass through. Formats,
detected from the key names:

===========================  =================================================================
format                       recognised by / what happens
===========================  =================================================================
``segnext``                  ``backbone.…mlp.dwconv.dwconv.*`` (official SegNeXt release, mmseg
                             0.x, JSeg-converted, segkit's own): passed through
``mmseg-segnext``            mmseg 1.x names ``backbone.…mlp.dwconv.{weight,bias}`` (PR #2653):
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
raises :class:`~segkit.checkpoints.CheckpointError` with both configurations in the message.
"""
from __future__ import annotations

import re

import torch

from . import CheckpointError

_MSCAN_KEY = re.compile(r"^(?:patch_embed[1-4]|block[1-4]|norm[1-4])\.")
_MMSEG_DWCONV = re.compile(r"(\.mlp\.dwconv)\.(weight|bias)$")
# Classifier of an ImageNet checkpoint; its exact names are unverified (architectures.md §5.4),
# so anything head-like at top level is treated as classifier.
_CLASSIFIER_KEY = re.compile(r"^(?:head|heads|fc|classifier|cls_head|pre_logits|logits|last_linear)(?:\.|_|$)")
_BLOCK_KEY = re.compile(r"^block([1-4])\.(\d+)\.")


def _variant_name(depths, widths) -> str:
    from segkit.models.mscan import MSCAN_VARIANTS

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
        for k in (f"patch_embed{s}.proj.3.weight" if s == 1 else f"patch_embed{s}.proj.weight",
                  f"norm{s}.weight", f"block{s}.0.norm1.weight"):
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
    bad = [s for s in range(1, 5)
           if (s in depths and depths[s] != m_depths[s - 1]) or (s in widths and widths[s] != m_widths[s - 1])]
    if bad:
        c_depths = [depths.get(s, "?") for s in range(1, 5)]
        c_widths = [widths.get(s, "?") for s in range(1, 5)]
        raise CheckpointError(
            f"checkpoint encoder has stage depths {c_depths} and widths {c_widths} "
            f"({_variant_name(c_depths, c_widths)}), but model {getattr(model, 'name', '')!r} has depths "
            f"{list(m_depths)} and widths {list(m_widths)} ({_variant_name(m_depths, m_widths)}); "
            f"build the matching model (stage(s) {bad} differ)")
    squeeze = head.get("decode_head.squeeze.conv.weight")
    own = getattr(getattr(getattr(model, "decode_head", None), "squeeze", None), "conv", None)
    if squeeze is not None and own is not None and squeeze.shape[0] != own.weight.shape[0]:
        raise CheckpointError(
            f"checkpoint head has ham_channels={squeeze.shape[0]} but the model's head has "
            f"{own.weight.shape[0]} (wrong variant or ham_channels)")


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
    enc: dict[str, torch.Tensor] = {}      # encoder keys without prefix, official names
    head: dict[str, torch.Tensor] = {}     # decode_head.* keys
    other: dict[str, torch.Tensor] = {}    # unplaced, kept under original names
    dropped: list[str] = []
    notes: list[str] = []
    classifier: list[str] = []
    n_renamed = 0
    prefixed = any(k.startswith(("backbone.", "decode_head.")) for k in state)

    for key, value in state.items():
        if key.startswith("decode_head."):
            if key.startswith("decode_head.hamburger.ham.") and "bases" in key:
                dropped.append(key)  # fixed bases of rand_init=False (not used by SegNeXt)
                notes.append(f"{key} dropped: segkit draws NMF bases at run time (rand_init=True)")
            else:
                head[key] = value
            continue
        if key.startswith("auxiliary_head."):
            dropped.append(key)
            continue
        name = key[len("backbone."):] if key.startswith("backbone.") else key
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
            raise CheckpointError(f"key {key!r} maps to {'backbone.' + new!r}, which the checkpoint already "
                                  f"holds under another name (mixed official / mmseg 1.x names)")
        enc[new] = value

    if enc and not any(".spatial_gating_unit." in k for k in enc):
        hint = (" It looks like a SegFormer/MiT checkpoint; build a segformer-* model for it."
                if any(re.search(r"\.attn\.(q|kv|sr)\.", k) for k in enc) else "")
        raise CheckpointError(f"not a SegNeXt/MSCAN checkpoint: its encoder keys have no "
                              f"'spatial_gating_unit' (MSCA) weights, e.g. {sorted(enc)[:3]}.{hint}")
    if not enc and not head:
        hint = (" It looks like a SegFormer checkpoint." if any("linear_c" in k or "segformer" in k for k in state)
                else "")
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
