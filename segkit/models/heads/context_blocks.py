"""Global-context modules compared with the Hamburger in SegNeXt's decoder (SegNeXt §4.2, Tab. 5).

SegNeXt Tab. 5 swaps the global-context module of SegNeXt-B's decoder — CCNet's criss-cross
attention, EMANet's expectation-maximisation attention, the non-local block, and the Hamburger
(NMF) — and reports parameters, GFLOPs and mIoU. The paper names the modules but not how they
were placed; :class:`~segkit.models.heads.ham_head.LightHamHead` (``context=…``) places them as
follows, chosen so that the counts come out as Tab. 5's (see ``docs/segnext_ablations.md``):

* ``"cc"``, ``"ema"`` (and the supplement's ``"msca"``): the Hamburger's "bread" stays
  (``ham_in`` 1×1 conv → ReLU → *filling* → ``ham_out`` 1×1 conv + GN → ReLU(x + ·)) and only
  its NMF "ham" is replaced — the comparison protocol of the Hamburger paper (Geng et al.,
  ICLR 2021, §4), and the structure of CCNet's RCCA module (conv → CCA × R → conv) and
  EMANet's EMAU (conv → EM → conv + norm → ReLU(x + ·)) with 1×1 convs. For ``"ema"`` the
  input conv is left out (:class:`~segkit.models.heads.ham_head.Hamburger`, ``ham_in``):
  EMAU's ``conv1`` gets no gradient in the reference, and Tab. 5's counts are those without it.
* ``"nl"``: a whole non-local block (which has its own 1×1 convs and residual) in place of the
  whole Hamburger.

Counts at 512² with 150 classes (segkit's torchprofile convention, :mod:`segkit.tools.flops`)
against Tab. 5: CC 27.96 M / 35.62 G (27.8 / 35.7), EMA 27.37 / 32.19 (27.4 / 32.3), NL
27.64 / 40.92 (27.6 / 40.9), Ham 27.64 / 34.89 (27.6 / 34.9).

Modules here (all ``(B, C, H, W)`` → ``(B, C, H, W)``, float32/bfloat16):

* :class:`CrissCrossAttention` — Huang et al., "CCNet: Criss-Cross Attention for Semantic
  Segmentation", ICCV 2019, §3.2 (eqs. 1–2); :class:`RecurrentCrissCross` applies it R = 2
  times with shared weights (§3.3, RCCA).
* :class:`EMAModule` — Li et al., "Expectation-Maximization Attention Networks for Semantic
  Segmentation", ICCV 2019, §3.2–3.3 (E-step eq. 12, M-step eq. 13, base maintenance §3.3).
* :class:`NonLocal2d` — Wang et al., "Non-local Neural Networks", CVPR 2018, §3.2–3.3
  (embedded Gaussian, eq. 3; non-local block eq. 6).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from segkit.errors import UsageError

from ..layers import ConvModule


def _softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim, computed in float32 for float16/bfloat16 input (in the input dtype otherwise)."""
    return torch.softmax(x, dim=-1, dtype=torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else None)


class CrissCrossAttention(nn.Module):
    """Criss-cross attention (CCNet §3.2): every pixel attends to the pixels of its row and column.

    For pixel ``u = (i, j)`` the keys are ``Ω_u`` = column ``j`` ∪ row ``i`` (``H + W − 1``
    positions; ``u`` itself once: the column term skips it, as in the reference
    ``CrissCrossAttention`` of ``speedinghzl/CCNet`` / mmcv)::

        q, k = query_conv(x), key_conv(x)          # (B, C/8, H, W)
        v = value_conv(x)                          # (B, C, H, W)
        A_u = softmax_{p ∈ Ω_u}(q_u · k_p)         # joint softmax over row and column
        out_u = gamma · Σ_{p ∈ Ω_u} A_u,p v_p + x_u

    ``gamma`` is a learned scalar initialised to 0 (the module starts as the identity).
    Names follow the reference: ``query_conv``, ``key_conv``, ``value_conv`` (1×1 convs with
    bias), ``gamma`` (shape ``[1]``). Computed with dense einsums (memory ``B·H·W·(H+W)``),
    no custom kernel. ``reduction``: query/key width ``C // reduction`` (8 in CCNet).
    """

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        inner = max(1, channels // reduction)
        self.query_conv = nn.Conv2d(channels, inner, 1)
        self.key_conv = nn.Conv2d(channels, inner, 1)
        self.value_conv = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention weights ``(A_col (B, H, W, H), A_row (B, H, W, W))``; they sum to 1 per pixel."""
        q, k = self.query_conv(x), self.key_conv(x)
        h = x.shape[2]
        e_col = torch.einsum("bchw,bcgw->bhwg", q, k)  # key (g, j) for query (h, j)
        self_mask = torch.eye(h, dtype=torch.bool, device=x.device).view(1, h, 1, h)
        e_col = e_col.masked_fill(self_mask, float("-inf"))  # (i, j) is counted in the row term
        e_row = torch.einsum("bchw,bchg->bhwg", q, k)  # key (i, g) for query (i, w)
        a = _softmax(torch.cat([e_col, e_row], dim=-1)).to(x.dtype)
        return a[..., :h], a[..., h:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a_col, a_row = self.attention(x)
        v = self.value_conv(x)
        out = torch.einsum("bhwg,bcgw->bchw", a_col, v) + torch.einsum("bhwg,bchg->bchw", a_row, v)
        return self.gamma * out + x


class RecurrentCrissCross(nn.Module):
    """RCCA's recurrence (CCNet §3.3): the same :class:`CrissCrossAttention` applied ``recurrence`` times.

    Two passes (CCNet's default R = 2) connect every pixel with every other. The module is held
    as ``cca`` (keys ``cca.query_conv.*`` …). ``(B, C, H, W)`` → same shape.
    """

    def __init__(self, channels: int, recurrence: int = 2, reduction: int = 8):
        super().__init__()
        if recurrence < 1:
            raise UsageError(f"recurrence must be >= 1, got {recurrence}")
        self.recurrence = int(recurrence)
        self.cca = CrissCrossAttention(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.recurrence):
            x = self.cca(x)
        return x


class EMAModule(nn.Module):
    """Expectation-maximisation attention (EMANet §3.2–3.3), the parameter-free core of EMAU.

    ``X`` = the input as ``(B, C, N)``, ``N = H·W``; bases ``μ (C, K)`` (buffer ``bases``,
    shape ``(1, C, K)``, initialised ``N(0, sqrt(2/K))`` and L2-normalised over C)::

        repeat num_stages times (no gradient, as the reference):
            Z = softmax_K(Xᵀ μ)                        # E-step (B, N, K)
            μ = l2norm_C(X · Z / Σ_N Z)                # M-step (B, C, K)
        output = μ Zᵀ, as (B, C, H, W)

    Training mode also maintains the bases (§3.3, "moving averaging"): after the forward,
    ``bases ← (1 − momentum)·bases + momentum·l2norm(mean over the batch of μ)`` (averaged
    over processes under torch.distributed), as mmseg's ``EMAModule``; the reference EMANet
    code does the same update in its training loop with ``em_mom = 0.9`` (= momentum 0.1).

    Gradient: with ``em_grad=False`` (default, the reference) the iterations run under
    ``torch.no_grad()``, so nothing before the module receives a gradient through it (a
    residual around it still does). ``em_grad=True`` differentiates the final E-step
    ``Z = softmax(Xᵀ μ)`` w.r.t. ``X`` (μ detached) — our option, so that a conv feeding only
    this module is trained.

    Args: channels C; num_bases K (64); num_stages (3); momentum (0.1); em_grad (above).
    Runs in float32 for float16/bfloat16 input (autocast disabled), output cast back to the input dtype.
    """

    def __init__(
        self, channels: int, num_bases: int = 64, num_stages: int = 3, momentum: float = 0.1, em_grad: bool = False
    ):
        super().__init__()
        if num_stages < 1:
            raise UsageError(f"num_stages must be >= 1, got {num_stages}")
        self.num_bases = int(num_bases)
        self.num_stages = int(num_stages)
        self.momentum = float(momentum)
        self.em_grad = bool(em_grad)
        bases = torch.empty(1, channels, self.num_bases).normal_(0, math.sqrt(2.0 / self.num_bases))
        self.register_buffer("bases", F.normalize(bases, dim=1))

    def extra_repr(self) -> str:
        return f"K={self.num_bases}, stages={self.num_stages}, momentum={self.momentum}, em_grad={self.em_grad}"

    def em(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """EM iterations on ``x (B, C, N)``: returns ``(μ (B, C, K), Z (B, N, K))`` in ``x``'s dtype."""
        mu = self.bases.to(x.dtype).expand(x.shape[0], -1, -1)
        with torch.no_grad():
            for _ in range(self.num_stages):
                z = torch.softmax(torch.bmm(x.transpose(1, 2), mu), dim=2)
                z_norm = z / (1e-6 + z.sum(dim=1, keepdim=True))
                mu = F.normalize(torch.bmm(x, z_norm), dim=1)
        if self.em_grad:
            z = torch.softmax(torch.bmm(x.transpose(1, 2), mu), dim=2)
        return mu, z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        no_autocast = (
            torch.autocast(device_type=x.device.type, enabled=False)
            if torch.amp.is_autocast_available(x.device.type)
            else contextlib.nullcontext()
        )
        with no_autocast:
            work = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
            mu, z = self.em(x.to(work).reshape(b, c, h * w))
            out = torch.bmm(mu, z.transpose(1, 2)).reshape(b, c, h, w).to(x.dtype)
        if self.training:
            with torch.no_grad():
                mean = mu.detach().mean(dim=0, keepdim=True)
                if dist.is_available() and dist.is_initialized():
                    dist.all_reduce(mean)
                    mean /= dist.get_world_size()
                new = F.normalize(mean, dim=1).to(self.bases.dtype)
                self.bases.mul_(1 - self.momentum).add_(new, alpha=self.momentum)
        return out


class NonLocal2d(nn.Module):
    """Non-local block, embedded Gaussian (Wang et al. 2018, eqs. 3 and 6), as mmcv's ``NonLocal2d``.

    ``θ, φ, g``: 1×1 convs ``C → C/reduction`` (with bias); ``f = softmax_j(θ_iᵀ φ_j / sqrt(C'))``
    (``use_scale``, mmcv's default); ``y_i = Σ_j f_ij g_j``; output
    ``x + conv_out(y)`` with ``conv_out`` a 1×1 conv ``C' → C`` followed by GroupNorm (the
    norm of the head it sits in; mmcv uses the head's norm, BN in mmseg's NLHead). The norm's
    weight starts at 0, so the block starts as the identity (mmcv ``zeros_init``); θ, φ, g
    are initialised N(0, 0.01) (mmcv). Names: ``theta``, ``phi``, ``g``, ``conv_out.conv``,
    ``conv_out.gn``. ``(B, C, H, W)`` → same shape; memory ``B·N²`` for the affinity
    (``N = H·W``, 4096 at stride 8 of 512²).
    """

    def __init__(self, channels: int, reduction: int = 2, num_groups: int = 32, use_scale: bool = True):
        super().__init__()
        inner = max(1, channels // reduction)
        self.inner = inner
        self.use_scale = bool(use_scale)
        self.g = nn.Conv2d(channels, inner, 1)
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.conv_out = ConvModule(inner, channels, 1, norm="gn", num_groups=num_groups, act=False)
        self.init_weights()

    def init_weights(self) -> None:
        for conv in (self.g, self.theta, self.phi):
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.conv_out.conv.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv_out.gn.weight)
        nn.init.zeros_(self.conv_out.gn.bias)

    def affinity(self, x: torch.Tensor) -> torch.Tensor:
        """``f (B, N, N)``: row i holds the weights of query pixel i over all pixels (rows sum to 1)."""
        theta = self.theta(x).flatten(2)  # (B, C', N)
        phi = self.phi(x).flatten(2)
        logits = torch.bmm(theta.transpose(1, 2), phi)
        if self.use_scale:
            logits = logits / math.sqrt(self.inner)
        return _softmax(logits).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        g = self.g(x).flatten(2)  # (B, C', N)
        y = torch.bmm(g, self.affinity(x).transpose(1, 2)).reshape(b, self.inner, h, w)
        return x + self.conv_out(y)


__all__ = ["CrissCrossAttention", "RecurrentCrissCross", "EMAModule", "NonLocal2d"]
