"""BEiT encoder (plain ViT with per-layer relative position bias and layer scale) for dense prediction.

Paper: Bao et al., "BEiT: BERT Pre-Training of Image Transformers", ICLR 2022 (backbone of
RSSeg-BEiT, RSSeg paper §4.2). Structure and sizes: the official BEiT segmentation backbone
(``microsoft/unilm: beit/semantic_segmentation/backbone/beit.py``) and the official
semantic-segmentation backbone (``microsoft/unilm:beit/semantic_segmentation/backbone/beit.py``):

* no absolute position embedding; a cls token;
* per block, a relative position bias table of ``(2Wh−1)(2Ww−1) + 3`` rows × heads for a
  ``Wh × Ww`` patch grid ("window"); the 3 extra rows are cls→token, token→cls, cls→cls;
  it is indexed with the ``relative_position_index`` buffer (recomputed, not stored in the
  state dict: ``persistent=False``);
* ``qkv`` Linear without bias plus separate ``q_bias`` and ``v_bias`` (the key bias is zero);
* layer scale ``gamma_1`` / ``gamma_2`` (init 0.1 for B, 1e-6 for L);
* pre-norm blocks, LayerNorm eps 1e-6, GELU MLP.

State-dict keys are the official names (``cls_token``, ``patch_embed.proj``,
``blocks.{i}.{norm1, attn.qkv, attn.q_bias, attn.v_bias, attn.relative_position_bias_table,
attn.proj, norm2, mlp.fc1, mlp.fc2, gamma_1, gamma_2}``, final ``norm``).

Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention` with the
relative position bias as a float ``attn_mask``.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from segkit.errors import UsageError

from ..contract import Features
from ..layers import DropPath, drop_path_rates, init_trunc_normal
from .vit import Mlp, PatchEmbed, check_out_indices, layer_id_bert, pad_to_multiple, to_2tuple

# mmseg UPerNet BEiT configs (configs/beit/*.py): layer-scale init and stochastic depth per size.
BEIT_VARIANTS: dict[str, dict] = {
    "b": dict(embed_dim=768, depth=12, num_heads=12, init_values=0.1, drop_path_rate=0.1),
    "l": dict(embed_dim=1024, depth=24, num_heads=16, init_values=1e-6, drop_path_rate=0.2),
}

NUM_EXTRA_REL = 3  # cls→token, token→cls, cls→cls


# --------------------------------------------------------------------------- relative positions
def num_relative_distance(window: Sequence[int]) -> int:
    """Rows of the bias table for a ``(Wh, Ww)`` window: ``(2Wh−1)(2Ww−1) + 3``."""
    return (2 * window[0] - 1) * (2 * window[1] - 1) + NUM_EXTRA_REL


def relative_position_index(h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Index into the bias table for every (query, key) pair of ``1 + h·w`` tokens (cls first).

    Token pairs get ``(dy + h − 1)·(2w − 1) + (dx + w − 1)`` with ``(dy, dx)`` = query − key
    position; cls-query row → ``L − 3``, cls-key column → ``L − 2``, cls↔cls → ``L − 1``
    (``L`` = table rows), exactly as the official code. Returns int64 ``(1 + h·w, 1 + h·w)``.
    """
    # (dy + h − 1)(2w − 1) + (dx + w − 1) = a_query − a_key + const with a = y(2w − 1) + x
    a = (torch.arange(h, device=device)[:, None] * (2 * w - 1) + torch.arange(w, device=device)[None, :]).flatten()
    total = num_relative_distance((h, w))
    index = torch.empty(h * w + 1, h * w + 1, dtype=torch.long, device=device)
    torch.sub(a[:, None], a[None, :], out=index[1:, 1:])
    index[1:, 1:] += (h - 1) * (2 * w - 1) + (w - 1)
    index[0, :] = total - 3
    index[:, 0] = total - 2
    index[0, 0] = total - 1
    return index


def geometric_spline_weights(src_len: int, dst_len: int) -> torch.Tensor:
    """Linear map ``(dst_len, src_len)`` (float64) of BEiT's geometric-sequence table interpolation, one axis.

    The reference (``unilm/beit/semantic_segmentation/mmcv_custom/checkpoint.py``; used by
    mmseg's ``mmseg/models/backbones/beit.py``) places the ``src_len`` offsets of the old table at
    ``0, ±1, ±(1+q), ±(1+q+q²), …`` where ``q`` ∈ [1.01, 1.5] is found by bisection so that
    the outermost offset reaches ``dst_len // 2``; it then evaluates a cubic interpolating
    spline (scipy ``interp2d(kind='cubic')`` = FITPACK with s=0, i.e. the not-a-knot
    spline) at the integer offsets ``−dst_len//2 … dst_len//2``. Near offsets stay almost
    unchanged, far ones are stretched. Here the spline is written as a matrix so that the 2-D
    interpolation is ``W_y · table · W_xᵀ`` (tensor-product spline = the reference on a
    rectilinear grid), which also handles non-square windows (one ``q`` per axis).
    ``src_len < 4``: piecewise-linear instead (a cubic spline needs 4 points).
    """
    return _geometric_spline_weights(int(src_len), int(dst_len)).clone()


@lru_cache(maxsize=64)
def _geometric_spline_weights(src_len: int, dst_len: int) -> torch.Tensor:
    if src_len == dst_len:
        return torch.eye(src_len, dtype=torch.float64)
    n = src_len // 2
    target = dst_len // 2
    left, right, q = 1.01, 1.5, 1.01
    while right - left > 1e-6:
        q = (left + right) / 2.0
        if (1.0 - q**n) / (1.0 - q) > target:
            right = q
        else:
            left = q
    dis, cur = [], 1.0
    for i in range(n):
        dis.append(cur)
        cur += q ** (i + 1)
    x = torch.tensor([-d for d in reversed(dis)] + [0.0] + dis, dtype=torch.float64)
    t = torch.arange(-float(target), target + 0.1, 1.0, dtype=torch.float64)
    return _spline_matrix(x, t)


def _spline_matrix(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Rows: weights on the values at knots ``x`` (increasing) giving the not-a-knot cubic spline at ``t``.

    Outside ``[x₀, x_last]`` the end polynomials extrapolate (FITPACK ``ext=0``).
    """
    m = x.numel()
    if m == 1:
        return torch.ones(t.numel(), 1, dtype=torch.float64)
    j = torch.clamp(torch.searchsorted(x, t, right=True) - 1, 0, m - 2)
    h = x[1:] - x[:-1]
    hj = h[j]
    a = (x[j + 1] - t) / hj
    b = (t - x[j]) / hj
    eye = torch.eye(m, dtype=torch.float64)
    if m < 4:
        return a[:, None] * eye[j] + b[:, None] * eye[j + 1]
    # Second derivatives Mpp = S · y from the tridiagonal system with not-a-knot end conditions.
    A = torch.zeros(m, m, dtype=torch.float64)
    B = torch.zeros(m, m, dtype=torch.float64)
    A[0, 0], A[0, 1], A[0, 2] = h[1], -(h[0] + h[1]), h[0]
    A[-1, -3], A[-1, -2], A[-1, -1] = h[-1], -(h[-2] + h[-1]), h[-2]
    for i in range(1, m - 1):
        A[i, i - 1], A[i, i], A[i, i + 1] = h[i - 1], 2 * (h[i - 1] + h[i]), h[i]
        B[i, i - 1], B[i, i], B[i, i + 1] = 6 / h[i - 1], -6 / h[i - 1] - 6 / h[i], 6 / h[i]
    S = torch.linalg.solve(A, B)
    c = ((x[j + 1] - t) ** 3 / hj - hj * (x[j + 1] - t)) / 6
    d = ((t - x[j]) ** 3 / hj - hj * (t - x[j])) / 6
    return a[:, None] * eye[j] + b[:, None] * eye[j + 1] + c[:, None] * S[j] + d[:, None] * S[j + 1]


def resize_rel_pos_table(
    table: torch.Tensor, src_window: Sequence[int], dst_window: Sequence[int], mode: str = "geometric"
) -> torch.Tensor:
    """Resize a BEiT relative position bias table ``(L_src, heads)`` to another window.

    The ``(2Wh−1) × (2Ww−1)`` offset grid is resized to the new window's; the 3 cls rows are
    kept. ``mode="geometric"``: the reference geometric-sequence spline
    (:func:`geometric_spline_weights`); ``mode="bicubic"``: ``F.interpolate`` bicubic,
    ``align_corners=False`` (the centre offset stays at the centre). Both are linear in the
    table, so gradients flow; computed in float32 (float64 weights for ``geometric``) and cast
    back. Returns ``(L_dst, heads)``.

    Raises:
        ValueError: the table length does not match ``src_window`` or ``mode`` is unknown.
    """
    sh, sw = 2 * int(src_window[0]) - 1, 2 * int(src_window[1]) - 1
    dh, dw = 2 * int(dst_window[0]) - 1, 2 * int(dst_window[1]) - 1
    if table.ndim != 2 or table.shape[0] != sh * sw + NUM_EXTRA_REL:
        raise UsageError(
            f"relative position table of shape {tuple(table.shape)} does not fit a "
            f"{src_window[0]}x{src_window[1]} window ({sh * sw + NUM_EXTRA_REL} rows expected)"
        )
    if (sh, sw) == (dh, dw):
        return table
    heads = table.shape[1]
    grid, extra = table[:-NUM_EXTRA_REL], table[-NUM_EXTRA_REL:]
    if mode == "geometric":
        wy = geometric_spline_weights(sh, dh).to(table.device)
        wx = geometric_spline_weights(sw, dw).to(table.device)
        g = grid.double().reshape(sh, sw, heads)
        out = torch.einsum("ys,sth,xt->yxh", wy, g, wx).reshape(dh * dw, heads)
    elif mode == "bicubic":
        g = grid.float().reshape(sh, sw, heads).permute(2, 0, 1).unsqueeze(0)
        out = F.interpolate(g, size=(dh, dw), mode="bicubic", align_corners=False)
        out = out[0].permute(1, 2, 0).reshape(dh * dw, heads)
    else:
        raise UsageError(f"table resize mode must be 'geometric' or 'bicubic', got {mode!r}")
    return torch.cat([out.to(table.dtype), extra], dim=0)


# --------------------------------------------------------------------------- modules
class BEiTAttention(nn.Module):
    """Self-attention with q/v biases (zero k bias) and a relative position bias.

    ``(B, 1 + h·w, C)`` + the patch grid ``(h, w)`` → same shape. When ``(h, w)`` differs from
    ``window_size`` the table is resized on the fly with ``table_resize`` mode and the index
    recomputed (nothing cached on the module).
    """

    def __init__(self, dim: int, num_heads: int, window_size: tuple[int, int], table_resize: str = "bicubic"):
        super().__init__()
        if dim % num_heads:
            raise UsageError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.window_size = tuple(window_size)
        self.table_resize = table_resize
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_relative_distance(window_size), num_heads))
        # built on the CPU (fast) and moved to the default device (cheap on "meta")
        index = relative_position_index(*window_size, device="cpu").to(torch.empty(0).device)
        self.register_buffer("relative_position_index", index, persistent=False)
        self.proj = nn.Linear(dim, dim)

    def relative_position_bias(self, h: int, w: int) -> torch.Tensor:
        """Bias ``(heads, 1 + h·w, 1 + h·w)`` for an ``h × w`` patch grid."""
        if (h, w) == self.window_size:
            table, index = self.relative_position_bias_table, self.relative_position_index
        else:
            table = resize_rel_pos_table(self.relative_position_bias_table, self.window_size, (h, w), self.table_resize)
            index = relative_position_index(h, w, device=table.device)
        n = h * w + 1
        return table[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, N, C)`` → q, k, v, each ``(B, heads, N, C/heads)`` (q and v biased, k not)."""
        b, n, c = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias)
        return qkv.reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.project_qkv(x)
        mask = self.relative_position_bias(h, w).unsqueeze(0).to(q.dtype)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class BEiTBlock(nn.Module):
    """``x + DropPath(γ1 · Attn(LN(x)))``, ``x + DropPath(γ2 · MLP(LN(x)))`` (no γ when ``init_values`` is None)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: tuple[int, int],
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        init_values: float | None = 0.1,
        norm_eps: float = 1e-6,
        table_resize: str = "bicubic",
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = BEiTAttention(dim, num_heads, window_size, table_resize)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        if init_values is not None:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(init_values)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(init_values)))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        a = self.attn(self.norm1(x), h, w)
        x = x + self.drop_path(a if self.gamma_1 is None else self.gamma_1 * a)
        m = self.mlp(self.norm2(x))
        return x + self.drop_path(m if self.gamma_2 is None else self.gamma_2 * m)


class BEiT(nn.Module):
    """BEiT encoder returning feature maps of chosen blocks (BEiT paper; official ``beit.py``).

    Args:
        img_size: ``(H, W)`` (or int) defining the window ``(H // p, W // p)`` the relative
            position tables are made for. Inputs with another patch grid (non-square
            included) resize each layer's table on the fly (``table_resize``).
        patch_size, embed_dim, depth, num_heads, mlp_ratio: transformer size
            (:data:`BEIT_VARIANTS`).
        drop_path_rate: stochastic depth, ``linspace(0, rate, depth)``.
        init_values: layer-scale init (B 0.1, L 1e-6); ``None`` disables layer scale.
        out_indices: 0-based block indices to return, strictly increasing (blocks after the
            last one are not run).
        norm_eps: LayerNorm eps (1e-6).
        final_norm: LayerNorm ``norm`` on the last block's output when tapped (other taps
            are raw block outputs). The official segmentation backbone has no final norm;
            ImageNet fine-tuned checkpoints carry ``fc_norm`` instead (the converter maps it).
        in_chans: input channels.
        table_resize: run-time table resizing for a grid other than the window:
            ``"bicubic"`` (default; cheap, differentiable) or ``"geometric"`` (the
            reference's checkpoint-loading scheme, see :func:`resize_rel_pos_table`).
            Checkpoint conversion always uses ``"geometric"``.

    Input ``(B, in_chans, H, W)``; H, W not multiples of p are zero-padded bottom/right.
    Output: list of ``(B, C, ceil(H/p), ceil(W/p))`` maps (cls token dropped), one per
    ``out_indices``. Attributes as :class:`~segkit.models.backbones.vit.VisionTransformer`
    (``embed_dim``, ``patch_size``, ``num_layers``, ``out_indices``, ``img_size``,
    ``window_size``; :meth:`layer_id`).

    Scratch init (official): Linear truncated normal std .02 with zero bias, LayerNorm 1/0,
    cls token truncated normal .02, tables zero; ``attn.proj`` and ``mlp.fc2`` weights of
    block ``i`` (1-based) divided by ``sqrt(2·i)``.
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = (512, 512),
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        init_values: float | None = 0.1,
        out_indices: Sequence[int] = (11,),
        norm_eps: float = 1e-6,
        final_norm: bool = True,
        in_chans: int = 3,
        table_resize: str = "bicubic",
    ):
        super().__init__()
        if table_resize not in ("bicubic", "geometric"):
            raise UsageError(f"table_resize must be 'bicubic' or 'geometric', got {table_resize!r}")
        self.img_size = to_2tuple(img_size, "img_size")
        self.patch_size = int(patch_size)
        self.window_size = (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)
        if min(self.window_size) < 1:
            raise UsageError(f"img_size {self.img_size} is smaller than one patch of {patch_size}")
        self.grid_size = self.window_size
        self.embed_dim = int(embed_dim)
        self.num_layers = int(depth)
        self.out_indices = check_out_indices(out_indices, depth)
        self.final_norm = bool(final_norm)

        self.patch_embed = PatchEmbed(self.patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        dpr = drop_path_rates(drop_path_rate, [depth])
        self.blocks = nn.ModuleList(
            BEiTBlock(embed_dim, num_heads, self.window_size, mlp_ratio, dpr[i], init_values, norm_eps, table_resize)
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if final_norm else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """Scratch initialisation of the official code (see class docstring)."""
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        init_trunc_normal(self)
        with torch.no_grad():
            for i, blk in enumerate(self.blocks, start=1):
                blk.attn.proj.weight.div_(math.sqrt(2.0 * i))
                blk.mlp.fc2.weight.div_(math.sqrt(2.0 * i))

    def layer_id(self, param_name: str) -> int:
        """0 for cls_token/patch_embed, ``i + 1`` for ``blocks.i``, else ``num_layers + 1`` (BEiT lr decay)."""
        return layer_id_bert(param_name, self.num_layers)

    def forward(self, x: torch.Tensor) -> Features:
        if x.ndim != 4:
            raise UsageError(f"expected input of shape (B, C, H, W), got {tuple(x.shape)}")
        x, (h, w) = self.patch_embed(pad_to_multiple(x, self.patch_size))
        b = x.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        outs = []
        for i, blk in enumerate(self.blocks[: self.out_indices[-1] + 1]):
            x = blk(x, h, w)
            if i in self.out_indices:
                y = self.norm(x) if i == self.num_layers - 1 else x
                outs.append(y[:, 1:].transpose(1, 2).reshape(b, self.embed_dim, h, w))
        return Features(stages=outs)


__all__ = [
    "BEIT_VARIANTS",
    "BEiT",
    "relative_position_index",
    "resize_rel_pos_table",
    "geometric_spline_weights",
    "num_relative_distance",
]
