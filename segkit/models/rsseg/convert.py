"""Convert ViT / BEiT / CSWin checkpoints for the RSSeg family and its baselines.

Called by :func:`segkit.checkpoints.load_checkpoint` for models of the RSSeg family (RSSeg and its
ViT-Linear / BEiT-Linear / Segmenter baselines). The encoder sits in the segmentor at
``model.encoder_prefix`` (e.g. ``"backbone.vit."``; ``"backbone."`` when the attribute is
absent). segkit's encoder names *are* the public names (timm ViT, official BEiT, official
CSWin; :mod:`segkit.models.backbones.vit`, :mod:`~segkit.models.backbones.beit`, :mod:`~segkit.models.backbones.cswin`),
so converting is mostly prefixing, dropping classifiers and resizing position encodings.

=========================  ================================================================
format                     recognised by / what happens
=========================  ================================================================
``segkit``                 every encoder key of the model present under its prefix: passed
                           through (``pos_embed`` / BEiT tables of another size are resized)
``timm-vit``               ``cls_token``, ``pos_embed``, ``patch_embed.proj.*``,
                           ``blocks.{i}.attn.qkv.*`` at top level (timm / AugReg ``.npz``
                           converted): prefixed; ``head``/``pre_logits``/``head_dist`` dropped;
                           ``pos_embed`` resized (bicubic) to the model's grid; a DeiT
                           ``dist_token`` and its position entry dropped
``mmseg-vit``              mmseg's ``vit2mmseg`` names (``layers.{i}.ln1``,
                           ``attn.attn.in_proj_*``, ``ffn.layers.0.0`` …, ``tools/model_converters/vit2mmseg.py``):
                           renamed back to timm names, then as ``timm-vit``
``beit``                   official BEiT (``blocks.{i}.attn.q_bias`` /
                           ``relative_position_bias_table``): ``relative_position_index``
                           buffers dropped (recomputed); a shared
                           ``rel_pos_bias.relative_position_bias_table`` copied into every
                           block (reference loader); tables resized with the reference
                           geometric-sequence spline; ``head``, ``lm_head``, ``mask_token``
                           dropped; ``fc_norm`` (mean-pooling classifiers) → ``norm`` when the
                           checkpoint has no ``norm``; an absolute ``pos_embed`` (BEiT variants
                           trained with one) has no place in segkit's BEiT: reported unexpected
``mmseg-beit``             mmseg's ``beit2mmseg`` names: renamed back, then as ``beit``
``cswin``                  official CSWin (``stage1_conv_embed.0.weight``, ``stage{s}.{i}.…``,
                           ``merge{s}.…``): prefixed; the ImageNet ``norm`` and ``head``
                           dropped; the segmentation output norms ``norm1..norm4`` absent from
                           ImageNet files are set to identity (weight 1, bias 0 — the
                           official segmentation backbone's initialisation)
``<family>-in-<prefix>``   any of the above under a prefix (``backbone.`` of official
                           UPerNet checkpoints, ``encoder.`` of Segmenter's): the encoder part
                           is converted; keys outside it that the model lacks (foreign heads,
                           BEiT's ``fpn1..4``) are dropped and reported
=========================  ================================================================

Before anything is returned the converted encoder keys are checked against the model's
encoder: another depth or width raises :class:`~segkit.checkpoints.CheckpointError` naming the
key and both shapes.
"""

from __future__ import annotations

import math
import re

import torch

from segkit.errors import CheckpointError

_CLASSIFIER = re.compile(r"^(?:head|head_dist|pre_logits|lm_head|fc|classifier)(?:\.|$)")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_CSWIN_BLOCK = re.compile(r"^stage([1-4])\.(\d+)\.")

# mmseg → timm/official names inside a block (inverse of mmseg's vit2mmseg.py / beit2mmseg.py), tried in order.
_MMSEG_BLOCK_RULES = [
    (r"^ln1\.", "norm1."),
    (r"^ln2\.", "norm2."),
    (r"^attn\.attn\.in_proj_(weight|bias)$", r"attn.qkv.\1"),
    (r"^attn\.attn\.out_proj\.", "attn.proj."),
    (r"^ffn\.layers\.0\.0\.", "mlp.fc1."),
    (r"^ffn\.layers\.1\.", "mlp.fc2."),
]

_FOREIGN = {  # key fragment → what the checkpoint is
    "patch_embed1.": "a SegFormer/MiT or SegNeXt/MSCAN checkpoint",
    "block1.0.": "a SegFormer/MiT or SegNeXt/MSCAN checkpoint",
    "layer_scale_1": "a SegNeXt (MSCAN) checkpoint",
    "segformer.": "a Hugging Face SegFormer checkpoint",
    "layers.0.0.projection": "an mmseg MiT (SegFormer) checkpoint",
}


# ---------------------------------------------------------------------------- detection
def detect_family(state: dict) -> str | None:
    """Encoder kind of an un-prefixed state dict: ``vit``, ``mmseg-vit``, ``beit``, ``mmseg-beit``, ``cswin``, None."""
    keys = set(state)
    if "stage1_conv_embed.0.weight" in keys:
        return "cswin"
    beit_like = any(k.endswith(("attn.q_bias", "relative_position_bias_table")) for k in keys)
    if "patch_embed.projection.weight" in keys or any(re.match(r"^layers\.\d+\.ln1\.", k) for k in keys):
        return "mmseg-beit" if beit_like else "mmseg-vit"
    if "patch_embed.proj.weight" in keys and any(_BLOCK.match(k) for k in keys):
        return "beit" if beit_like else "vit"
    return None


_ANCHORS = ("stage1_conv_embed.0.weight", "patch_embed.proj.weight", "patch_embed.projection.weight")


def _find_prefix(state: dict) -> str | None:
    """Prefix (``"backbone."``, ``"encoder."`` …) under which an encoder of a known family sits.

    Among the candidate prefixes (keys ending in a patch-embedding anchor) the one whose
    sub-dict is a recognised encoder with the most keys wins.
    """
    candidates = {key[: -len(anchor)] for key in state for anchor in _ANCHORS if key.endswith("." + anchor)}
    best, best_n = None, 0
    for p in candidates:
        sub = {k[len(p) :]: None for k in state if k.startswith(p)}
        if detect_family(sub) is not None and len(sub) > best_n:
            best, best_n = p, len(sub)
    return best


# ---------------------------------------------------------------------------- helpers
def _square_side(n: int, what: str) -> int:
    s = math.isqrt(n)
    if s * s != n:
        raise CheckpointError(f"{what}: {n} positions do not form a square grid; cannot infer the checkpoint's size")
    return s


def _identity_norm(encoder_state: dict, name: str) -> dict:
    w = encoder_state[f"{name}.weight"]
    return {
        f"{name}.weight": torch.ones(w.shape, dtype=torch.float32),
        f"{name}.bias": torch.zeros(w.shape, dtype=torch.float32),
    }


def _rename_mmseg(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        new = key
        if key.startswith("patch_embed.projection."):
            new = "patch_embed.proj." + key[len("patch_embed.projection.") :]
        elif re.match(r"^(ln1|ln)\.", key):
            new = "norm." + key.split(".", 1)[1]
        elif key.startswith("fc_ln."):
            new = "fc_norm." + key[len("fc_ln.") :]
        else:
            m = re.match(r"^layers\.(\d+)\.", key)
            if m:
                rest = key[m.end() :]
                for pattern, repl in _MMSEG_BLOCK_RULES:
                    rest, n = re.subn(pattern, repl, rest, count=1)
                    if n:
                        break
                new = f"blocks.{m[1]}.{rest}"
        out[new] = value
    return out


def _encoder_state(encoder) -> dict:
    return {k: v for k, v in encoder.state_dict().items()} if encoder is not None else {}


# ---------------------------------------------------------------------------- family mappers
def _map_vit(state: dict, encoder, dropped: list, notes: list) -> dict:
    out = {}
    extra = 1
    for key, value in state.items():
        if _CLASSIFIER.match(key):
            dropped.append(key)
        elif key == "dist_token":
            dropped.append(key)
            extra = 2
        else:
            out[key] = value
    if any(k.startswith("head") or k.startswith("pre_logits") for k in dropped):
        notes.append("ImageNet classifier dropped (head / pre_logits): encoder-only checkpoint")
    pos = out.get("pos_embed")
    if pos is not None:
        n = pos.shape[1]
        side_tokens = n - extra
        if extra == 1 and math.isqrt(n) ** 2 == n and math.isqrt(n - 1) ** 2 != n - 1:
            # no cls entry in the position embedding (timm ``no_embed_class`` models): give it a zero one
            pos = torch.cat([pos.new_zeros(1, 1, pos.shape[2]), pos], dim=1)
            extra, side_tokens = 0, n
            notes.append("pos_embed has no cls entry: a zero entry was prepended")
        if extra == 2:
            pos = torch.cat([pos[:, :1], pos[:, 2:]], dim=1)
            notes.append("DeiT distillation token and its position entry dropped")
        if encoder is not None and hasattr(encoder, "grid_size"):
            gh, gw = encoder.grid_size
            if side_tokens != gh * gw:
                from segkit.models.backbones.vit import resize_pos_embed

                side = _square_side(side_tokens, "pos_embed")
                pos = resize_pos_embed(pos, (side, side), (gh, gw))
                notes.append(f"pos_embed resized from a {side}x{side} to a {gh}x{gw} patch grid (bicubic)")
        out["pos_embed"] = pos
    _final_norm(out, encoder, dropped, notes)
    return out


def _final_norm(out: dict, encoder, dropped: list, notes: list) -> None:
    """``fc_norm`` → ``norm`` for mean-pooling classifiers whose ``norm`` is an identity; else drop it."""
    has_fc = "fc_norm.weight" in out
    enc_state = _encoder_state(encoder)
    wants_norm = "norm.weight" in enc_state if encoder is not None else True
    if has_fc and "norm.weight" not in out and wants_norm:
        out["norm.weight"] = out.pop("fc_norm.weight")
        out["norm.bias"] = out.pop("fc_norm.bias")
        notes.append("checkpoint has no final norm (mean-pooling classifier): its fc_norm initialises norm")
    drop = [k for k in out if k.startswith("fc_norm.")]
    if encoder is not None and not wants_norm and any(k.startswith("norm.") for k in out):
        drop += [k for k in out if k.startswith("norm.")]
        notes.append("the model's encoder has no final norm (final_norm=False): the checkpoint's norm dropped")
    for k in drop:
        dropped.append(k)
        del out[k]
    if encoder is not None and "norm.weight" in enc_state and "norm.weight" not in out:
        out.update(_identity_norm(enc_state, "norm"))
        notes.append("checkpoint has no final norm: norm set to identity (weight 1, bias 0)")


def _map_beit(state: dict, encoder, dropped: list, notes: list) -> dict:
    out = {}
    shared = None
    for key, value in state.items():
        if _CLASSIFIER.match(key) or key == "mask_token" or key.endswith("relative_position_index"):
            dropped.append(key)
        elif key == "rel_pos_bias.relative_position_bias_table":
            shared = value
        else:
            out[key] = value
    if any(_CLASSIFIER.match(k) for k in dropped):
        notes.append("classifier / masked-image-modelling head dropped: encoder-only checkpoint")
    if shared is not None:
        depth = 1 + max((int(m[1]) for k in out if (m := _BLOCK.match(k))), default=-1)
        for i in range(depth):
            out[f"blocks.{i}.attn.relative_position_bias_table"] = shared.clone()
        notes.append(f"shared relative position bias table copied into each of the {depth} blocks")
    window = getattr(encoder, "window_size", None)
    if window is not None:
        from segkit.models.backbones.beit import NUM_EXTRA_REL, num_relative_distance, resize_rel_pos_table

        resized = None
        for key in [k for k in out if k.endswith("attn.relative_position_bias_table")]:
            table = out[key]
            if table.shape[0] == num_relative_distance(window):
                continue
            side = _square_side(table.shape[0] - NUM_EXTRA_REL, key)
            if side % 2 == 0:
                raise CheckpointError(f"{key}: {table.shape[0]} rows do not fit any (2W-1)^2+3 table")
            src = ((side + 1) // 2, (side + 1) // 2)
            out[key] = resize_rel_pos_table(table, src, window, mode="geometric")
            resized = src
        if resized is not None:
            notes.append(
                f"relative position bias tables resized from a {resized[0]}x{resized[1]} to a "
                f"{window[0]}x{window[1]} window (geometric-sequence spline, BEiT reference)"
            )
    _final_norm(out, encoder, dropped, notes)
    return out


def _map_cswin(state: dict, encoder, dropped: list, notes: list) -> dict:
    out = {}
    for key, value in state.items():
        if _CLASSIFIER.match(key) or key.startswith("norm."):
            dropped.append(key)
        else:
            out[key] = value
    if dropped:
        notes.append("ImageNet classifier (final norm, head) dropped: encoder-only checkpoint")
    enc_state = _encoder_state(encoder)
    added = [s for s in range(1, 5) if f"norm{s}.weight" in enc_state and f"norm{s}.weight" not in out]
    for s in added:
        out.update(_identity_norm(enc_state, f"norm{s}"))
    if added:
        notes.append(
            f"segmentation output norms {', '.join(f'norm{s}' for s in added)} are not in the checkpoint: "
            f"set to identity (weight 1, bias 0) as the official segmentation backbone initialises them"
        )
    return out


_MAPPERS = {"vit": _map_vit, "beit": _map_beit, "cswin": _map_cswin}


# ---------------------------------------------------------------------------- checks
def _check_encoder(mapped: dict, encoder, family: str) -> None:
    """Raise :class:`CheckpointError` for another architecture, depth or width than ``encoder``'s."""
    if encoder is None:
        return
    from segkit.models.backbones.beit import BEiT
    from segkit.models.backbones.cswin import CSWin
    from segkit.models.backbones.vit import VisionTransformer

    expected = {"vit": VisionTransformer, "beit": BEiT, "cswin": CSWin}[family]
    known = (VisionTransformer, BEiT, CSWin)
    if isinstance(encoder, known) and not isinstance(encoder, expected):
        raise CheckpointError(
            f"checkpoint holds a {family.upper()} encoder, the model's encoder is {type(encoder).__name__}"
        )
    own = encoder.state_dict()
    if family == "cswin":
        depths = {}
        for k in mapped:
            m = _CSWIN_BLOCK.match(k)
            if m:
                depths[int(m[1])] = max(depths.get(int(m[1]), 0), int(m[2]) + 1)
        model_depths = getattr(encoder, "depths", None)
        if model_depths is not None:
            ck = [depths.get(s, 0) for s in range(1, 5)]
            if ck != list(model_depths):
                raise CheckpointError(
                    f"checkpoint has stage depths {ck}, model encoder has {list(model_depths)}: wrong CSWin variant"
                )
    else:
        depth = 1 + max((int(m[1]) for k in mapped if (m := _BLOCK.match(k))), default=-1)
        layers = getattr(encoder, "num_layers", None)
        if layers is not None and depth != layers:
            raise CheckpointError(
                f"checkpoint has {depth} transformer blocks, model encoder has {layers}: wrong {family.upper()} variant"
            )
    first = [k for k in ("patch_embed.proj.weight", "stage1_conv_embed.0.weight") if k in mapped]
    for key in first + [k for k in mapped if k not in first]:  # the width-revealing key first
        value = mapped[key]
        if key in own and tuple(value.shape) != tuple(own[key].shape):
            hint = ""
            if key in ("patch_embed.proj.weight", "stage1_conv_embed.0.weight"):
                hint = f" (checkpoint width {value.shape[0]}, model {own[key].shape[0]}: wrong variant)"
            raise CheckpointError(
                f"checkpoint key {key!r} has shape {list(value.shape)}, the model's encoder "
                f"expects {list(own[key].shape)}{hint}"
            )


# ---------------------------------------------------------------------------- public API
def encoder_state_dict_to_segkit(
    state: dict[str, torch.Tensor], prefix: str, encoder=None
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Map a public encoder-only state dict (no prefix) onto segkit names under ``prefix``.

    Args:
        state: timm ViT / AugReg, official BEiT, official CSWin, or mmseg-renamed ViT/BEiT keys
            without any prefix (see the module table).
        prefix: where the encoder sits in the segmentor, e.g. ``"backbone.vit."`` (may be "").
        encoder: the target encoder module. When given, ``pos_embed`` and BEiT tables are
            resized to its patch grid, missing final/output norms are filled with identity,
            and depths/widths are checked. Without it keys are only renamed.

    Returns:
        ``(mapped, dropped, notes)``: the prefixed state, the original names of discarded keys
        (classifiers, index buffers …) and human-readable notes.

    Raises:
        CheckpointError: unknown key layout, another architecture/variant than ``encoder``,
            or a position encoding whose size cannot be inferred.
    """
    family = detect_family(state)
    if family is None:
        raise CheckpointError(
            f"not a ViT / BEiT / CSWin encoder checkpoint: no recognised key names (first keys: {list(state)[:5]})"
        )
    if family.startswith("mmseg-"):
        state = _rename_mmseg(state)
        family = family[len("mmseg-") :]
    dropped: list[str] = []
    notes: list[str] = []
    mapped = _MAPPERS[family](dict(state), encoder, dropped, notes)
    _check_encoder(mapped, encoder, family)
    return {prefix + k: v for k, v in mapped.items()}, dropped, notes


def _encoder_of(model, prefix: str):
    if not prefix:
        return model
    try:
        return model.get_submodule(prefix.rstrip("."))
    except AttributeError as e:
        raise CheckpointError(
            f"model {getattr(model, 'name', type(model).__name__)} has no encoder at encoder_prefix {prefix!r}"
        ) from e


def _resize_in_place(state: dict, prefix: str, encoder, notes: list) -> None:
    """Resize a segkit checkpoint's ``pos_embed`` / BEiT tables made for another input size."""
    own = encoder.state_dict()
    pos = state.get(prefix + "pos_embed")
    if pos is not None and "pos_embed" in own and pos.shape != own["pos_embed"].shape and hasattr(encoder, "grid_size"):
        from segkit.models.backbones.vit import resize_pos_embed

        side = _square_side(pos.shape[1] - 1, prefix + "pos_embed")
        state[prefix + "pos_embed"] = resize_pos_embed(pos, (side, side), encoder.grid_size)
        notes.append(f"pos_embed resized from a {side}x{side} to a {encoder.grid_size[0]}x{encoder.grid_size[1]} grid")
    window = getattr(encoder, "window_size", None)
    if window is None:
        return
    from segkit.models.backbones.beit import NUM_EXTRA_REL, resize_rel_pos_table

    for key in [k for k in state if k.startswith(prefix) and k.endswith("relative_position_bias_table")]:
        name = key[len(prefix) :]
        if name in own and state[key].shape != own[name].shape:
            side = _square_side(state[key].shape[0] - NUM_EXTRA_REL, key)
            state[key] = resize_rel_pos_table(state[key], ((side + 1) // 2,) * 2, window, mode="geometric")
            notes.append(f"{key} resized to a {window[0]}x{window[1]} window (geometric-sequence spline)")


def convert(state: dict[str, torch.Tensor], model) -> tuple[dict[str, torch.Tensor], str, list[str], list[str]]:
    """Rename a ViT/BEiT/CSWin checkpoint of any supported format to the model's segkit names.

    Args:
        state: flat ``{key: tensor}`` from :func:`segkit.checkpoints.read_state_dict`.
        model: the target segmentor; its encoder sits at ``model.encoder_prefix``
            (default ``"backbone."``).

    Returns:
        ``(converted_state, format_name, dropped_keys, notes)``.

    Raises:
        CheckpointError: the checkpoint belongs to another architecture (SegFormer, SegNeXt,
            another encoder family) or variant, or no known key layout is found.
    """
    prefix = getattr(model, "encoder_prefix", "backbone.")
    encoder = _encoder_of(model, prefix)
    own_enc = [k for k in encoder.state_dict()]
    dropped: list[str] = []
    notes: list[str] = []

    # 1. segkit's own names: every encoder key present under the prefix.
    if own_enc and all(prefix + k in state for k in own_enc):
        out = dict(state)
        _resize_in_place(out, prefix, encoder, notes)
        return out, "segkit", dropped, notes

    for frag, what in _FOREIGN.items():
        hit = next((k for k in state if k.startswith(frag) or f".{frag}" in k), None)
        if hit is not None:
            raise CheckpointError(f"this is {what} (key {hit!r}), not a ViT / BEiT / CSWin checkpoint")

    # 2. an encoder-only public checkpoint (no prefix).
    family = detect_family(state)
    if family is not None:
        out, dropped, notes = encoder_state_dict_to_segkit(state, prefix, encoder)
        return out, family, dropped, notes

    # 3. a public encoder under some prefix (official UPerNet ``backbone.``, Segmenter ``encoder.``).
    src = _find_prefix(state)
    if src is not None:
        sub = {k[len(src) :]: v for k, v in state.items() if k.startswith(src)}
        family = detect_family(sub)
        if family is not None:
            if family in ("beit", "mmseg-beit"):  # BEiT's UPerNet neck lives in the backbone
                for k in [k for k in sub if re.match(r"^fpn\d\.", k)]:
                    dropped.append(src + k)
                    del sub[k]
            out, d2, notes = encoder_state_dict_to_segkit(sub, prefix, encoder)
            dropped += [src + k for k in d2]
            own = model.state_dict()
            foreign = []
            for k, v in state.items():
                if k.startswith(src):
                    continue
                if k in own:
                    out[k] = v
                else:
                    foreign.append(k)
            dropped += foreign
            if foreign:
                notes.append(
                    f"{len(foreign)} key(s) outside the encoder that this model lacks were dropped "
                    f"(e.g. {foreign[:3]}; another decoder architecture)"
                )
            return out, f"{family}-in-{src}", dropped, notes
    raise CheckpointError(
        f"not a ViT / BEiT / CSWin checkpoint: no recognised key names (first keys: {list(state)[:5]})"
    )
