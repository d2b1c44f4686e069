"""Plain ViT, BEiT and CSWin encoders (segkit.models.backbones.vit/beit/cswin) and their checkpoint converter."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from segkit.checkpoints import CheckpointError, load_checkpoint
from segkit.models.backbones.beit import (
    BEIT_VARIANTS,
    BEiT,
    geometric_spline_weights,
    relative_position_index,
    resize_rel_pos_table,
)
from segkit.models.backbones.cswin import CSWIN_VARIANTS, CSWin, LePEAttention
from segkit.models.backbones.vit import VIT_VARIANTS, VisionTransformer, resize_pos_embed
from segkit.models.rsseg.convert import encoder_state_dict_to_segkit

TINY = dict(embed_dim=64, depth=3, num_heads=2, out_indices=(2,))
TINY_CSWIN = dict(embed_dim=32, depths=(1, 2, 2, 1), num_heads=(2, 4, 8, 16), split_size=(1, 2, 7, 7))


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# =============================================================================== shapes
@pytest.mark.parametrize("cls", [VisionTransformer, BEiT])
@pytest.mark.parametrize("size, grid", [((64, 64), (4, 4)), ((64, 96), (4, 6)), ((50, 70), (4, 5))])
def test_plain_encoders_shapes_finite(cls, size, grid):
    torch.manual_seed(0)
    m = cls(img_size=64, drop_path_rate=0.0, **{**TINY, "out_indices": (0, 2)}).eval()
    with torch.no_grad():
        outs = m(torch.randn(2, 3, *size)).stages
    assert [tuple(o.shape) for o in outs] == [(2, 64, *grid)] * 2
    assert all(torch.isfinite(o).all() for o in outs)
    assert (m.embed_dim, m.patch_size, m.num_layers, m.out_indices) == (64, 16, 3, (0, 2))


def test_beit_geometric_runtime_resize_finite_and_differentiable():
    torch.manual_seed(0)
    m = BEiT(img_size=64, table_resize="geometric", **TINY)
    for blk in m.blocks:
        nn.init.normal_(blk.attn.relative_position_bias_table, std=0.5)
    out = m(torch.randn(1, 3, 80, 48)).stages[0]
    assert out.shape == (1, 64, 5, 3) and torch.isfinite(out).all()
    out.sum().backward()
    assert m.blocks[0].attn.relative_position_bias_table.grad.abs().sum() > 0


def test_final_norm_only_on_last_block():
    m = VisionTransformer(img_size=32, drop_path_rate=0.0, **{**TINY, "out_indices": (1, 2)}).eval()
    nn.init.constant_(m.norm.weight, 2.0)
    nn.init.constant_(m.norm.bias, 5.0)
    with torch.no_grad():
        raw, last = m(torch.randn(1, 3, 32, 32)).stages
    # LayerNorm output has zero mean over channels, so the normalised map's channel mean is the bias
    assert torch.allclose(last.mean(1), torch.full_like(last.mean(1), 5.0), atol=1e-4)
    assert not torch.allclose(raw.mean(1), torch.full_like(raw.mean(1), 5.0), atol=1e-1)
    m2 = VisionTransformer(img_size=32, final_norm=False, **TINY)
    assert not any(k.startswith("norm.") for k in m2.state_dict())


def test_out_indices_validation_and_layer_id():
    with pytest.raises(ValueError, match="increasing"):
        VisionTransformer(img_size=32, **{**TINY, "out_indices": (2, 1)})
    with pytest.raises(ValueError, match="0-based"):
        BEiT(img_size=32, **{**TINY, "out_indices": (3,)})
    m = VisionTransformer(img_size=32, **TINY)
    assert [
        m.layer_id(n)
        for n in (
            "cls_token",
            "pos_embed",
            "patch_embed.proj.weight",
            "blocks.0.norm1.weight",
            "blocks.2.mlp.fc2.bias",
            "norm.weight",
            "backbone.vit.blocks.1.attn.qkv.weight",
            "backbone.local_patch_embed.weight",
        )
    ] == [0, 0, 0, 1, 3, 4, 2, 4]


def test_pos_embed_resize_keeps_cls_and_constants():
    pos = torch.cat([torch.full((1, 1, 8), 7.0), torch.full((1, 6, 8), -3.0)], dim=1)  # cls + 2x3 grid
    out = resize_pos_embed(pos, (2, 3), (5, 4))
    assert out.shape == (1, 21, 8)
    assert torch.equal(out[:, 0], pos[:, 0])
    assert torch.allclose(out[:, 1:], torch.full_like(out[:, 1:], -3.0), atol=1e-5)
    assert resize_pos_embed(pos, (2, 3), (2, 3)) is pos
    with pytest.raises(ValueError, match="grid"):
        resize_pos_embed(pos, (3, 3), (4, 4))


def test_relative_position_index_semantics():
    idx = relative_position_index(2, 3)  # table: (2·2−1)(2·3−1) = 15 offsets + 3
    assert idx.shape == (7, 7)
    assert (idx[0, 0], idx[0, 3], idx[4, 0]) == (17, 15, 16)
    coords = [(y, x) for y in range(2) for x in range(3)]
    for i, (yi, xi) in enumerate(coords):
        for j, (yj, xj) in enumerate(coords):
            assert idx[1 + i, 1 + j] == (yi - yj + 1) * 5 + (xi - xj + 2)


def test_rel_pos_table_resize_modes():
    torch.manual_seed(0)
    table = torch.randn(7 * 7 + 3, 2)  # 4x4 window
    for mode in ("geometric", "bicubic"):
        out = resize_rel_pos_table(table, (4, 4), (3, 6), mode=mode)
        assert out.shape == (5 * 11 + 3, 2) and torch.isfinite(out).all()
        assert torch.equal(out[-3:], table[-3:])
        const = resize_rel_pos_table(torch.full_like(table, 0.25), (4, 4), (6, 3), mode=mode)
        assert torch.allclose(const, torch.full_like(const, 0.25), atol=1e-5)
    # the geometric spline interpolates: the zero offset (a knot) keeps its value when enlarging
    big = resize_rel_pos_table(table, (4, 4), (9, 9), mode="geometric")
    assert torch.allclose(big[(17 * 17) // 2], table[(7 * 7) // 2], atol=1e-5)
    with pytest.raises(ValueError, match="window"):
        resize_rel_pos_table(table, (3, 3), (4, 4))


def test_geometric_weights_match_reference_spline():
    """The reference evaluates scipy's cubic interp2d (FITPACK, s=0) on geometric knots (27 → 63 for 224 → 512)."""
    interpolate = pytest.importorskip("scipy.interpolate")
    import numpy as np

    def reference_knots(src, dst):
        left, right = 1.01, 1.5
        while right - left > 1e-6:
            q = (left + right) / 2.0
            if (1.0 - q ** (src // 2)) / (1.0 - q) > dst // 2:
                right = q
            else:
                left = q
        dis, cur = [], 1.0
        for i in range(src // 2):
            dis.append(cur)
            cur += q ** (i + 1)
        return np.array([-d for d in reversed(dis)] + [0.0] + dis), np.arange(-(dst // 2), dst // 2 + 0.1, 1.0)

    rng = np.random.default_rng(0)
    for src, dst in ((27, 63), (13, 7)):
        z = rng.standard_normal((src, src))
        x, t = reference_knots(src, dst)
        ref = interpolate.RectBivariateSpline(x, x, z, kx=3, ky=3, s=0)(t, t)
        w = geometric_spline_weights(src, dst).numpy()
        assert np.abs(w @ z @ w.T - ref).max() < 1e-8


def test_cswin_shapes_taps_and_padding():
    torch.manual_seed(0)
    m = CSWin(**TINY_CSWIN, drop_path_rate=0.0, tap_blocks=(1, 2, 4, 6)).eval()
    assert m.out_channels == [32, 64, 128, 256] and m.depths == [1, 2, 2, 1]
    # official branch order: attns.0 = full-height stripes of split_size columns, attns.1 = rows; stage 4 full
    assert [a.mode for a in m.stage2[0].attns] == ["col", "row"] and [a.mode for a in m.stage4[0].attns] == ["full"]
    for size in ((64, 64), (64, 96), (70, 50)):  # stage-3 maps (4x4, 4x6, 5x4) are padded to the stripe width 7
        with torch.no_grad():
            out = m(torch.randn(2, 3, *size))
            stages, taps = out.stages, out.taps
        h = (size[0] - 3) // 4 + 1
        w = (size[1] - 3) // 4 + 1
        exp = []
        for c in m.out_channels:
            exp.append((2, c, h, w))
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        assert [tuple(s.shape) for s in stages] == exp
        assert [tuple(t.shape) for t in taps] == [exp[0], exp[1], exp[2], exp[3]]
        assert all(torch.isfinite(t).all() for t in stages + taps)
    # tap 1 is the raw output of stage 1's only block: norm1 of it is the stage-1 output
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = m(x)
        stages, taps = out.stages, out.taps
        normed = m.norm1(taps[0].flatten(2).transpose(1, 2)).transpose(1, 2).reshape_as(stages[0])
        assert torch.allclose(normed, stages[0], atol=1e-5)
        no_taps = CSWin(**TINY_CSWIN, drop_path_rate=0.0).eval()
        no_taps.load_state_dict(m.state_dict())
        assert no_taps(x).taps is None
        assert [o.shape for o in no_taps(x).stages] == [s.shape for s in stages]
    # 0-based taps (RSSeg Table 3 convention) name the same blocks shifted by one
    m0 = CSWin(**TINY_CSWIN, drop_path_rate=0.0, tap_blocks=(0, 1, 3, 5), tap_base=0).eval()
    m0.load_state_dict(m.state_dict())
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(m0(x).taps, taps))
    with pytest.raises(ValueError, match="tap_blocks"):
        CSWin(**TINY_CSWIN, tap_blocks=(7,))


# =============================================================================== parameter counts
def test_vit_param_counts():
    # timm vit_base_patch16_224 has 86,567,656 parameters; its ImageNet head Linear(768, 1000) has 769,000.
    with torch.device("meta"):
        vit_b = VisionTransformer(img_size=224, **VIT_VARIANTS["vit-b"])
        vit_l = VisionTransformer(img_size=224, **VIT_VARIANTS["vit-l"])
        vit_b512 = VisionTransformer(img_size=512, **VIT_VARIANTS["vit-b"])
    assert n_params(vit_b) == 85_798_656 == 86_567_656 - 769_000
    # timm vit_large_patch16_224: 304,326,632 with its 1,025,000-parameter head
    assert n_params(vit_l) == 304_326_632 - 1_025_000
    # 512² input: 32x32 = 1024 patches instead of 196 in the position embedding
    assert n_params(vit_b512) - n_params(vit_b) == (1024 - 196) * 768


def test_beit_param_counts():
    # BEiT-B/16 at 224², by hand: patch embed 590,592 + cls 768 + final LN 1,536 + 12 blocks × 7,097,424
    # (LN 1,536; qkv weight 1,769,472; q/v biases 1,536; table (27² + 3) × 12 = 8,784; proj 590,592; LN 1,536;
    # MLP 4,722,432; γ1/γ2 1,536) = 85,761,984 = 86,530,984 (timm beit_base_patch16_224) − 769,000 (head)
    with torch.device("meta"):
        beit_b = BEiT(img_size=224, **BEIT_VARIANTS["b"])
        beit_b512 = BEiT(img_size=512, **BEIT_VARIANTS["b"])
        beit_l = BEiT(img_size=224, **BEIT_VARIANTS["l"])
    assert n_params(beit_b) == 86_530_984 - 769_000
    # per block: table rows (2·32−1)² + 3 instead of (2·14−1)² + 3, 12 heads, 12 blocks
    assert n_params(beit_b512) - n_params(beit_b) == 12 * 12 * (63**2 - 27**2)
    assert BEIT_VARIANTS["l"]["init_values"] == 1e-6 and beit_l.num_layers == 24


def _cswin_formula(c: int, depths, head: int = 0, seg_norms: bool = True) -> int:
    """Parameters from the architecture description (official ``cswin.py``), counted by hand.

    Block of width d: LN (2d) + qkv (3d² + 3d) + LePE depth-wise 3×3 with bias over all d channels
    (10d) + proj (d² + d) + LN (2d) + MLP (4d² + 4d + 4d² + d) = 12d² + 23d.
    """
    dims = [c * 2**i for i in range(4)]
    n = 3 * 49 * c + c + 2 * c  # stem conv + LN
    for s, d in enumerate(dims):
        if s:
            n += dims[s - 1] * d * 9 + d + 2 * d  # merge conv + LN
        n += depths[s] * (12 * d * d + 23 * d) + (2 * d if seg_norms else 0)
    return n + (2 * dims[3] + dims[3] * head + head if head else 0)


def test_cswin_param_counts():
    paper_imagenet = {"t": 23e6, "s": 35e6, "b": 78e6}  # CSWin paper / README (ImageNet-1k models)
    for name, cfg in CSWIN_VARIANTS.items():
        with torch.device("meta"):
            m = CSWin(**cfg)
        assert n_params(m) == _cswin_formula(cfg["embed_dim"], cfg["depths"])
        with_head = _cswin_formula(cfg["embed_dim"], cfg["depths"], head=1000, seg_norms=False)
        assert abs(with_head - paper_imagenet[name]) / paper_imagenet[name] < 0.04
    # RSSeg-CSWin-T totals 23.2M (RSSeg paper Table 9): the encoder alone must stay below it
    with torch.device("meta"):
        assert n_params(CSWin(**CSWIN_VARIANTS["t"])) < 23.2e6


# =============================================================================== SDPA vs naive
def test_vit_attention_matches_naive():
    torch.manual_seed(0)
    m = VisionTransformer(img_size=32, **TINY)
    attn = m.blocks[0].attn
    nn.init.normal_(attn.qkv.bias)
    x = torch.randn(2, 5, 64)
    q, k, v = (x @ attn.qkv.weight.T + attn.qkv.bias).split(64, dim=-1)
    heads = lambda t: t.reshape(2, 5, 2, 32).transpose(1, 2)  # noqa: E731
    a = torch.softmax(heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(32), dim=-1)
    ref = attn.proj((a @ heads(v)).transpose(1, 2).reshape(2, 5, 64))
    assert (attn(x) - ref).abs().max() <= 1e-5


def test_beit_attention_matches_naive():
    torch.manual_seed(0)
    m = BEiT(img_size=(48, 64), **TINY)  # window 3x4
    attn = m.blocks[1].attn
    for p in (attn.q_bias, attn.v_bias, attn.relative_position_bias_table):
        nn.init.normal_(p)
    h, w, n = 3, 4, 13
    x = torch.randn(2, n, 64)
    wq, wk, wv = attn.qkv.weight.split(64)
    q, k, v = x @ wq.T + attn.q_bias, x @ wk.T, x @ wv.T + attn.v_bias  # no key bias
    heads = lambda t: t.reshape(2, n, 2, 32).transpose(1, 2)  # noqa: E731
    table = attn.relative_position_bias_table
    rows = (2 * h - 1) * (2 * w - 1)
    bias = torch.empty(2, n, n)
    for i in range(n):
        for j in range(n):
            if i == 0 and j == 0:
                r = rows + 2
            elif i == 0:
                r = rows
            elif j == 0:
                r = rows + 1
            else:
                (yi, xi), (yj, xj) = divmod(i - 1, w), divmod(j - 1, w)
                r = (yi - yj + h - 1) * (2 * w - 1) + (xi - xj + w - 1)
            bias[:, i, j] = table[r]
    a = torch.softmax(heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(32) + bias, dim=-1)
    ref = attn.proj((a @ heads(v)).transpose(1, 2).reshape(2, n, 64))
    assert (attn(x, h, w) - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("mode, sw", [("col", 2), ("row", 3), ("full", 7)])
def test_cswin_stripe_attention_matches_naive(mode, sw):
    """Window loop written from the official description: centred zero padding of q/k/v, per-window softmax
    attention and per-window LePE conv, crop back."""
    torch.manual_seed(0)
    dim, heads, hgt, wid = 8, 2, 5, 7
    attn = LePEAttention(dim, heads, mode, sw)
    q, k, v = (torch.randn(1, dim, hgt, wid) for _ in range(3))
    hs, ws = {"col": (hgt, sw), "row": (sw, wid), "full": (hgt, wid)}[mode]
    ph, pw = (-hgt) % hs, (-wid) % ws
    pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    qp, kp, vp = (F.pad(t, pad) for t in (q, k, v))
    out = torch.zeros_like(qp)
    hd = dim // heads
    for y0 in range(0, hgt + ph, hs):
        for x0 in range(0, wid + pw, ws):
            sl = (slice(None), slice(None), slice(y0, y0 + hs), slice(x0, x0 + ws))
            vw = vp[sl]
            lepe = F.conv2d(vw, attn.get_v.weight, attn.get_v.bias, padding=1, groups=dim)
            for hh in range(heads):
                c = slice(hh * hd, (hh + 1) * hd)
                qt, kt, vt = (t[sl][0, c].reshape(hd, -1).T for t in (qp, kp, vp))
                o = torch.softmax(qt @ kt.T / math.sqrt(hd), dim=-1) @ vt
                out[0, c, y0 : y0 + hs, x0 : x0 + ws] = o.T.reshape(hd, hs, ws) + lepe[0, c]
    ref = out[:, :, pad[2] : pad[2] + hgt, pad[0] : pad[0] + wid]
    assert (attn(q, k, v) - ref).abs().max() <= 1e-5


# =============================================================================== converters
class _Wrapper(nn.Module):
    """Stand-in RSSeg-family segmentor: the encoder under ``backbone.`` (``backbone.vit.`` with ``nested``)."""

    def __init__(self, encoder: nn.Module, name: str, nested: bool = False):
        super().__init__()
        self.name = name
        self.family = "rsseg"  # load_checkpoint picks the converter by family, not by name
        if nested:
            self.backbone = nn.Module()
            self.backbone.vit = encoder
            self.encoder_prefix = "backbone.vit."
        else:
            self.backbone = encoder


def timm_vit_state(c: int, depth: int, grid: int, classes: int = 1000) -> dict:
    """A timm ViT state dict written from the public key list (values random)."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    sd = {
        "cls_token": r(1, 1, c),
        "pos_embed": r(1, 1 + grid * grid, c),
        "patch_embed.proj.weight": r(c, 3, 16, 16),
        "patch_embed.proj.bias": r(c),
        "norm.weight": r(c),
        "norm.bias": r(c),
        "head.weight": r(classes, c),
        "head.bias": r(classes),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update(
            {
                p + "norm1.weight": r(c),
                p + "norm1.bias": r(c),
                p + "attn.qkv.weight": r(3 * c, c),
                p + "attn.qkv.bias": r(3 * c),
                p + "attn.proj.weight": r(c, c),
                p + "attn.proj.bias": r(c),
                p + "norm2.weight": r(c),
                p + "norm2.bias": r(c),
                p + "mlp.fc1.weight": r(4 * c, c),
                p + "mlp.fc1.bias": r(4 * c),
                p + "mlp.fc2.weight": r(c, 4 * c),
                p + "mlp.fc2.bias": r(c),
            }
        )
    return sd


def beit_state(c: int, depth: int, heads: int, window: int, shared: bool = False) -> dict:
    """Official BEiT ImageNet fine-tuned names: q/v biases, per-layer tables + index buffers, fc_norm, head."""
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    rows = (2 * window - 1) ** 2 + 3
    sd = {
        "cls_token": r(1, 1, c),
        "patch_embed.proj.weight": r(c, 3, 16, 16),
        "patch_embed.proj.bias": r(c),
        "fc_norm.weight": r(c),
        "fc_norm.bias": r(c),
        "head.weight": r(1000, c),
        "head.bias": r(1000),
    }
    if shared:
        sd["rel_pos_bias.relative_position_bias_table"] = r(rows, heads)
        sd["rel_pos_bias.relative_position_index"] = relative_position_index(window, window)
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update(
            {
                p + "gamma_1": r(c),
                p + "gamma_2": r(c),
                p + "norm1.weight": r(c),
                p + "norm1.bias": r(c),
                p + "attn.q_bias": r(c),
                p + "attn.v_bias": r(c),
                p + "attn.qkv.weight": r(3 * c, c),
                p + "attn.proj.weight": r(c, c),
                p + "attn.proj.bias": r(c),
                p + "norm2.weight": r(c),
                p + "norm2.bias": r(c),
                p + "mlp.fc1.weight": r(4 * c, c),
                p + "mlp.fc1.bias": r(4 * c),
                p + "mlp.fc2.weight": r(c, 4 * c),
                p + "mlp.fc2.bias": r(c),
            }
        )
        if not shared:
            sd[p + "attn.relative_position_bias_table"] = r(rows, heads)
            sd[p + "attn.relative_position_index"] = relative_position_index(window, window)
    return sd


def cswin_state(c: int, depths, heads) -> dict:
    """Official CSWin ImageNet names: ``stage1_conv_embed.{0,2}``, ``stage{s}.{i}``, ``merge{s}``, ``norm``, ``head``"""
    g = torch.Generator().manual_seed(2)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    sd = {
        "stage1_conv_embed.0.weight": r(c, 3, 7, 7),
        "stage1_conv_embed.0.bias": r(c),
        "stage1_conv_embed.2.weight": r(c),
        "stage1_conv_embed.2.bias": r(c),
    }
    for s in range(4):
        d = c * 2**s
        if s:
            sd.update(
                {
                    f"merge{s}.conv.weight": r(d, d // 2, 3, 3),
                    f"merge{s}.conv.bias": r(d),
                    f"merge{s}.norm.weight": r(d),
                    f"merge{s}.norm.bias": r(d),
                }
            )
        branches = [(0, d)] if s == 3 else [(0, d // 2), (1, d // 2)]
        for i in range(depths[s]):
            p = f"stage{s + 1}.{i}."
            sd.update(
                {
                    p + "qkv.weight": r(3 * d, d),
                    p + "qkv.bias": r(3 * d),
                    p + "norm1.weight": r(d),
                    p + "norm1.bias": r(d),
                    p + "proj.weight": r(d, d),
                    p + "proj.bias": r(d),
                    p + "mlp.fc1.weight": r(4 * d, d),
                    p + "mlp.fc1.bias": r(4 * d),
                    p + "mlp.fc2.weight": r(d, 4 * d),
                    p + "mlp.fc2.bias": r(d),
                    p + "norm2.weight": r(d),
                    p + "norm2.bias": r(d),
                }
            )
            for j, bd in branches:
                sd.update({p + f"attns.{j}.get_v.weight": r(bd, 1, 3, 3), p + f"attns.{j}.get_v.bias": r(bd)})
    sd.update({"norm.weight": r(8 * c), "norm.bias": r(8 * c), "head.weight": r(1000, 8 * c), "head.bias": r(1000)})
    return sd


def _save(tmp_path, sd, name="ck.pth"):
    path = tmp_path / name
    torch.save(sd, path)
    return path


def test_timm_vit_224_into_512_model(tmp_path):
    sd = timm_vit_state(64, 3, 14)
    sd["pos_embed"][:, 1:] = 0.5  # constant grid part: any interpolation must keep it
    model = _Wrapper(VisionTransformer(img_size=512, **TINY), "vit-test")
    rep = load_checkpoint(model, _save(tmp_path, {"model": sd}), verbose=False)
    assert rep.format == "vit" and not rep.missing and not rep.unexpected
    assert sorted(rep.dropped) == ["head.bias", "head.weight"]
    pos = model.backbone.pos_embed
    assert pos.shape == (1, 1 + 32 * 32, 64)
    assert torch.equal(pos[:, 0], sd["pos_embed"][:, 0])
    assert torch.allclose(pos[:, 1:], torch.full_like(pos[:, 1:], 0.5), atol=1e-5)
    assert torch.equal(model.backbone.blocks[2].attn.qkv.weight, sd["blocks.2.attn.qkv.weight"])
    with torch.no_grad():
        assert torch.isfinite(model.backbone(torch.randn(1, 3, 64, 96)).stages[0]).all()


def test_vit_converter_resizes_to_non_square_grid_and_nested_prefix(tmp_path):
    sd = timm_vit_state(64, 3, 14)
    model = _Wrapper(VisionTransformer(img_size=(512, 1024), **TINY), "rsseg-test", nested=True)
    rep = load_checkpoint(model, _save(tmp_path, sd), verbose=False)
    assert all(k.startswith("backbone.vit.") for k in rep.loaded)
    assert model.backbone.vit.pos_embed.shape == (1, 1 + 32 * 64, 64)
    mapped, dropped, notes = encoder_state_dict_to_segkit(sd, "enc.")  # without encoder: rename only
    assert mapped["enc.pos_embed"].shape == (1, 197, 64) and "head.weight" in dropped
    no_norm = VisionTransformer(img_size=224, final_norm=False, **TINY)
    mapped, dropped, _ = encoder_state_dict_to_segkit(sd, "", no_norm)
    assert "norm.weight" in dropped and no_norm.load_state_dict(mapped, strict=True) is not None


def test_mmseg_vit_names(tmp_path):
    sd = timm_vit_state(64, 3, 4)
    mm = {}
    for k, v in sd.items():
        if k.startswith("head."):
            continue
        k = (
            k.replace("patch_embed.proj", "patch_embed.projection")
            .replace("blocks.", "layers.")
            .replace("norm1", "ln1")
            .replace("norm2", "ln2")
            .replace("attn.qkv.", "attn.attn.in_proj_")
            .replace("attn.proj", "attn.attn.out_proj")
            .replace("mlp.fc1", "ffn.layers.0.0")
            .replace("mlp.fc2", "ffn.layers.1")
        )
        mm["ln1." + k[5:] if k.startswith("norm.") else k] = v
    mm = {k.replace("in_proj_.", "in_proj_"): v for k, v in mm.items()}
    model = _Wrapper(VisionTransformer(img_size=64, **TINY), "vit-test")
    rep = load_checkpoint(model, _save(tmp_path, mm), verbose=False)
    assert rep.format == "mmseg-vit" and len(rep.loaded) == len(sd) - 2
    assert torch.equal(model.backbone.norm.weight, sd["norm.weight"])
    assert torch.equal(model.backbone.blocks[1].attn.qkv.bias, sd["blocks.1.attn.qkv.bias"])


@pytest.mark.parametrize("shared", [False, True])
def test_beit_224_into_512_model(tmp_path, shared):
    sd = beit_state(64, 3, 2, 14, shared=shared)
    model = _Wrapper(BEiT(img_size=512, **TINY), "rsseg-beit-test", nested=True)
    rep = load_checkpoint(model, _save(tmp_path, sd), verbose=False)
    assert rep.format == "beit" and not rep.missing and not rep.unexpected
    assert not any("relative_position_index" in k for k in rep.loaded)
    assert any(k.endswith("relative_position_index") for k in rep.dropped) and "head.weight" in rep.dropped
    enc = model.backbone.vit
    src = sd["rel_pos_bias.relative_position_bias_table" if shared else "blocks.1.attn.relative_position_bias_table"]
    table = enc.blocks[1].attn.relative_position_bias_table
    assert table.shape == (63 * 63 + 3, 2)
    assert torch.equal(table[-3:], src[-3:])  # cls rows untouched
    assert torch.allclose(table[(63 * 63) // 2], src[(27 * 27) // 2], atol=1e-5)  # zero offset is a knot
    assert torch.equal(enc.norm.weight, sd["fc_norm.weight"])  # mean-pooling classifier: fc_norm → norm
    with torch.no_grad():
        assert torch.isfinite(enc(torch.randn(1, 3, 64, 96)).stages[0]).all()


def test_cswin_imagenet_checkpoint(tmp_path):
    sd = cswin_state(32, (1, 2, 2, 1), (2, 4, 8, 16))
    model = _Wrapper(CSWin(**TINY_CSWIN), "cswin-test")
    rep = load_checkpoint(model, _save(tmp_path, sd), verbose=False)
    assert rep.format == "cswin" and not rep.missing and not rep.unexpected
    assert sorted(rep.dropped) == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    enc = model.backbone
    assert torch.equal(enc.stage3[1].attns[1].get_v.weight, sd["stage3.1.attns.1.get_v.weight"])
    assert torch.equal(enc.stage1_conv_embed[2].weight, sd["stage1_conv_embed.2.weight"])
    assert torch.equal(enc.norm4.weight, torch.ones(256)) and torch.equal(enc.norm2.bias, torch.zeros(64))


def test_prefixed_official_checkpoint_and_segkit_passthrough(tmp_path):
    sd = {f"backbone.{k}": v for k, v in beit_state(64, 3, 2, 4).items()}
    sd["backbone.fpn1.0.weight"] = torch.randn(64, 64, 2, 2)
    sd["decode_head.conv_seg.weight"] = torch.randn(150, 512, 1, 1)
    model = _Wrapper(BEiT(img_size=64, **TINY), "beit-test")
    rep = load_checkpoint(model, _save(tmp_path, sd), verbose=False)
    assert rep.format == "beit-in-backbone." and not rep.missing and not rep.unexpected
    assert "backbone.fpn1.0.weight" in rep.dropped and "decode_head.conv_seg.weight" in rep.dropped
    # Segmenter's official layout: {'model': {encoder.<timm names>, decoder.*}}
    seg = {f"encoder.{k}": v for k, v in timm_vit_state(64, 3, 4).items()}
    seg["decoder.head.weight"] = torch.randn(150, 64)
    model = _Wrapper(VisionTransformer(img_size=64, **TINY), "segmenter-test")
    rep = load_checkpoint(model, _save(tmp_path, {"model": seg}, "seg.pth"), verbose=False)
    assert rep.format == "vit-in-encoder." and not rep.missing and not rep.unexpected
    assert {"encoder.head.weight", "decoder.head.weight"} <= set(rep.dropped)
    # segkit's own checkpoint of a ViT trained at 64² loads into a 96² model: pos_embed resized
    src = VisionTransformer(img_size=64, **TINY)
    model = _Wrapper(VisionTransformer(img_size=96, **TINY), "vit-test")
    rep = load_checkpoint(
        model, _save(tmp_path, {f"backbone.{k}": v for k, v in src.state_dict().items()}, "s.pth"), verbose=False
    )
    assert rep.format == "segkit" and model.backbone.pos_embed.shape == (1, 37, 64)
    assert torch.equal(model.backbone.blocks[0].mlp.fc1.weight, src.blocks[0].mlp.fc1.weight)


def test_converter_errors(tmp_path):
    model = _Wrapper(VisionTransformer(img_size=64, **TINY), "vit-test")
    with pytest.raises(CheckpointError, match=r"patch_embed\.proj\.weight.*\[32, 3, 16, 16\].*\[64, 3, 16, 16\]"):
        load_checkpoint(model, _save(tmp_path, timm_vit_state(32, 3, 4)), verbose=False)
    with pytest.raises(CheckpointError, match="4 transformer blocks, model encoder has 3"):
        load_checkpoint(model, _save(tmp_path, timm_vit_state(64, 4, 4)), verbose=False)
    with pytest.raises(CheckpointError, match="BEIT encoder"):
        load_checkpoint(model, _save(tmp_path, beit_state(64, 3, 2, 4)), verbose=False)
    with pytest.raises(CheckpointError, match="SegFormer"):
        load_checkpoint(model, _save(tmp_path, {"patch_embed1.proj.weight": torch.zeros(1)}), verbose=False)
    cs = _Wrapper(CSWin(**TINY_CSWIN), "cswin-test")
    with pytest.raises(CheckpointError, match=r"stage depths \[1, 2, 3, 1\]"):
        load_checkpoint(cs, _save(tmp_path, cswin_state(32, (1, 2, 3, 1), (2, 4, 8, 16))), verbose=False)
