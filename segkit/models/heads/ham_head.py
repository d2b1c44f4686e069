"""LightHamHead: the SegNeXt decoder (SegNeXt paper §3.2, Fig. 3c) built on the Hamburger of
Geng et al., "Is Attention Better Than Matrix Decomposition?" (ICLR 2021), with NMF as the
matrix decomposition. Structure, names and settings: the official
``Visual-Attention-Network/SegNeXt: mmseg/models/decode_heads/ham_head.py`` and
``local_configs/segnext/*``; docs/implementation_notes.md (NMF).

Checkpoint keys (prefix ``decode_head.``): ``squeeze.conv.weight``, ``squeeze.gn.*``,
``hamburger.ham_in.conv.{weight,bias}``, ``hamburger.ham_out.conv.weight``,
``hamburger.ham_out.gn.*``, ``align.conv.weight``, ``align.gn.*``, ``conv_seg.*``.
NMF has no parameters and no buffers.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from segkit.errors import UsageError

from ..backbones.mscan import MSCA
from ..contract import DecodeHead, Features
from ..layers import ConvModule
from .context_blocks import EMAModule, NonLocal2d, RecurrentCrissCross


class NMF2D(nn.Module):
    """Non-negative matrix factorisation of a feature map by multiplicative updates (Hamburger "ham").

    The map ``(B, C, H, W)`` is viewed as ``X`` of shape ``(B·S, D, N)`` with ``D = C/S``,
    ``N = H·W`` (S = 1 in SegNeXt) and approximated as ``X ≈ bases · coefᵀ`` with
    ``bases (B·S, D, R)``, ``coef (B·S, N, R)``, ``R = md_r``. Algorithm (official ``ham_head.py``,
    Lee & Seung multiplicative updates)::

        coef = softmax(inv_t · Xᵀ bases, over R)
        repeat steps times (6 in training, 7 in eval):
            coef  ← coef  ⊙ (Xᵀ bases) / (coef (basesᵀ bases) + 1e-6)
            bases ← bases ⊙ (X coef)   / (bases (coefᵀ coef)  + 1e-6)
        coef ← coef ⊙ (Xᵀ bases) / (coef (basesᵀ bases) + 1e-6)      # one extra coef update
        output = bases · coefᵀ, reshaped to (B, C, H, W)

    The input must be non-negative (the Hamburger applies a ReLU before it).

    Choices:
        * ``inv_t = 1``: the reference configs set ``INV_T=100`` (mmseg 1.x ``inv_t=100``) but
          the official ``NMF2D.__init__`` overrides it with 1, so 1 is what the released models
          were trained with (docs/implementation_notes.md, NMF).
        * Initial bases: in training, fresh ``U[0, 1)`` bases are drawn every forward with
          ``torch.rand`` on the input's device, one set per sample, L2-normalised over D — as
          the reference (``rand_init=True``). The reference also re-draws them at test time,
          which makes its predictions seed-dependent; here, in eval mode the bases are
          deterministic: ``F.normalize(torch.rand((S, D, R), generator=Generator().manual_seed(seed)), dim=1)``
          drawn on the CPU (so identical on every device), moved to the input's device and
          shared by all samples of the batch, so a prediction does not depend on the batch
          it is in (the draw equals the first sample's draw of a ``(B·S, D, R)`` tensor), and an
          ONNX export keeps a dynamic batch axis. ``per_sample_eval_bases=True`` instead draws
          ``F.normalize(torch.rand((B·S, D, R), generator=Generator().manual_seed(seed)), dim=1)``
          per forward (the formula of the model-zoo issue): sample i of a batch then gets the
          i-th slice, so at batch 1 both settings are identical. Change ``seed`` (attribute) to
          sample another set.
        * Gradient: with ``one_step_grad=False`` (default, official PyTorch SegNeXt and mmseg)
          autograd goes through every unrolled step. With ``one_step_grad=True`` the
          iterations run under ``torch.no_grad()`` and only the final coef update is
          differentiated (the "one-step gradient" of the Hamburger paper, as in JSeg): same
          forward values, much smaller graph and memory, different gradients.
        * Precision: the updates divide small numbers (eps 1e-6) and are unstable in
          float16/bfloat16, so NMF always runs in float32 — autocast is disabled inside and the
          input is upcast; the output is cast back to the input dtype.

    Args:
        md_r: rank R. md_s: number of groups S (C must be divisible by S).
        train_steps, eval_steps: iterations in training / eval mode.
        inv_t: softmax temperature inverse for the coef initialisation.
        one_step_grad: see above. seed: eval-mode bases seed.
        per_sample_eval_bases: eval bases per batch position instead of shared (see above).
        channels: C, if known, to draw the eval bases at construction (then tracing /
            ONNX export records them as a constant instead of a random-generator call).

    Forward: ``x (B, C, H, W)`` float, non-negative; optional ``bases (B·S, D, R)`` to use
    instead of the random initial bases (for tests / analysis). Returns ``(B, C, H, W)``.
    """

    def __init__(
        self,
        md_r: int = 16,
        train_steps: int = 6,
        eval_steps: int = 7,
        inv_t: float = 1.0,
        one_step_grad: bool = False,
        seed: int = 0,
        md_s: int = 1,
        eps: float = 1e-6,
        channels: int | None = None,
        per_sample_eval_bases: bool = False,
    ):
        super().__init__()
        self.per_sample_eval_bases = bool(per_sample_eval_bases)
        self.S = int(md_s)
        self.R = int(md_r)
        self.train_steps = int(train_steps)
        self.eval_steps = int(eval_steps)
        self.inv_t = float(inv_t)
        self.one_step_grad = bool(one_step_grad)
        self.seed = int(seed)
        self.eps = float(eps)
        self._eval_cache: dict[tuple, torch.Tensor] = {}
        if channels is not None:  # draw the eval bases now, so that tracing/export sees a constant
            self.eval_bases(channels // self.S)

    def extra_repr(self) -> str:
        return (
            f"S={self.S}, R={self.R}, train_steps={self.train_steps}, eval_steps={self.eval_steps}, "
            f"inv_t={self.inv_t}, one_step_grad={self.one_step_grad}, seed={self.seed}"
        )

    def eval_bases(self, dim: int) -> torch.Tensor:
        """The deterministic eval-mode bases ``(S, dim, R)`` float32 on the CPU (cached per seed)."""
        dim = int(dim)
        key = (self.seed, self.S, dim, self.R)
        bases = self._eval_cache.get(key)
        if bases is None:
            gen = torch.Generator().manual_seed(self.seed)
            bases = F.normalize(torch.rand((self.S, dim, self.R), generator=gen), dim=1)
            self._eval_cache = {key: bases}
        return bases

    def initial_bases(self, batch: int, dim: int, device: torch.device) -> torch.Tensor:
        """Initial bases ``(batch·S, dim, R)`` float32, L2-normalised over ``dim`` (see class doc)."""
        if self.training:
            return F.normalize(torch.rand((batch * self.S, dim, self.R), device=device), dim=1)
        if self.per_sample_eval_bases:
            gen = torch.Generator().manual_seed(self.seed)
            return F.normalize(torch.rand((batch * self.S, dim, self.R), generator=gen), dim=1).to(device)
        return self.eval_bases(dim).to(device).repeat(batch, 1, 1)

    def _coef_update(self, x: torch.Tensor, bases: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        numerator = torch.bmm(x.transpose(1, 2), bases)  # (BS, N, R)
        denominator = coef.bmm(bases.transpose(1, 2).bmm(bases))  # (BS, N, R)
        return coef * numerator / (denominator + self.eps)

    def _iterate(self, x: torch.Tensor, bases: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        coef = torch.softmax(self.inv_t * torch.bmm(x.transpose(1, 2), bases), dim=-1)
        for _ in range(steps):
            coef = self._coef_update(x, bases, coef)
            numerator = torch.bmm(x, coef)  # (BS, D, R)
            denominator = bases.bmm(coef.transpose(1, 2).bmm(coef))  # (BS, D, R)
            bases = bases * numerator / (denominator + self.eps)
        return bases, coef

    def forward(self, x: torch.Tensor, bases: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4:
            raise UsageError(f"NMF2D expects (B, C, H, W), got shape {tuple(x.shape)}")
        b, c, h, w = x.shape
        if c % self.S:
            raise UsageError(f"NMF2D: channels {c} not divisible by md_s={self.S}")
        d = c // self.S
        in_dtype = x.dtype
        # Channels-last input (segkit's CPU default): (B, C, H·W) is a strided view of it, and
        # the output is built as (B, H·W, C) and returned channels-last, so no layout copy.
        channels_last = self.S == 1 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        # NMF runs in fp32 even under autocast (the reference disables it as well); devices
        # without autocast support (e.g. "meta", used for FLOP counting) need no guard.
        no_autocast = (
            torch.autocast(device_type=x.device.type, enabled=False)
            if torch.amp.is_autocast_available(x.device.type)
            else contextlib.nullcontext()
        )
        with no_autocast:
            x = x.float().reshape(b * self.S, d, h * w)
            if bases is None:
                bases = self.initial_bases(b, d, x.device)
            elif tuple(bases.shape) != (b * self.S, d, self.R):
                raise UsageError(f"NMF2D: bases must have shape {(b * self.S, d, self.R)}, got {tuple(bases.shape)}")
            bases = bases.float()
            steps = self.train_steps if self.training else self.eval_steps
            if self.one_step_grad:
                with torch.no_grad():
                    bases, coef = self._iterate(x, bases, steps)
            else:
                bases, coef = self._iterate(x, bases, steps)
            coef = self._coef_update(x, bases, coef)
            if channels_last:
                out = torch.bmm(coef, bases.transpose(1, 2))  # (B, N, D) = ((bases @ coef^T))^T
                return out.view(b, h, w, c).permute(0, 3, 1, 2).to(in_dtype)
            out = torch.bmm(bases, coef.transpose(1, 2))
        return out.reshape(b, c, h, w).to(in_dtype)


FILLINGS = ("nmf", "cc", "ema", "msca")
CONTEXTS = ("ham", "cc", "ema", "nl", "msca")


def make_filling(kind: str, channels: int, **nmf_kwargs) -> nn.Module:
    """The "ham" of a :class:`Hamburger`: ``"nmf"`` (:class:`NMF2D`, SegNeXt) or an ablation module.

    ``"cc"``: :class:`~segkit.models.heads.context_blocks.RecurrentCrissCross` (R = 2);
    ``"ema"``: :class:`~segkit.models.heads.context_blocks.EMAModule` (K = 64, 3 stages);
    ``"msca"``: :class:`~segkit.models.backbones.mscan.MSCA` (the supplement's "MSCA head").
    ``nmf_kwargs`` apply to ``"nmf"`` only. Raises ``ValueError`` for another kind.
    """
    if kind == "nmf":
        return NMF2D(channels=channels, **nmf_kwargs)
    if kind == "cc":
        return RecurrentCrissCross(channels, recurrence=2)
    if kind == "ema":
        return EMAModule(channels, num_bases=64, num_stages=3)
    if kind == "msca":
        return MSCA(channels)
    raise UsageError(f"unknown Hamburger filling {kind!r}; choose from {FILLINGS}")


class Hamburger(nn.Module):
    """Light Hamburger: ``ham_in`` (1×1 conv with bias) → ReLU → ham → ``ham_out`` (1×1 conv + GN) → ReLU(x + ·).

    ``(B, C, H, W)`` → ``(B, C, H, W)`` with ``C = ham_channels`` (official ``ham_head.py``).
    ``filling`` chooses the ham (:func:`make_filling`): ``"nmf"`` for SegNeXt; the others are
    SegNeXt Tab. 5's / the supplement's decoder ablations with the same bread.

    ``ham_in=False`` drops the input conv (and its ReLU: the head's ``squeeze`` already ends
    in a ReLU). The ``"ema"`` filling uses it: EMANet's EMAU is ``conv1 → EM → conv2 + norm →
    ReLU(x + ·)``, but its EM runs without gradient, so ``conv1`` is never trained in the
    reference; SegNeXt Tab. 5's EMA counts (27.4 M / 32.3 G) are those of the block without it
    (27.38 M / 32.2 G here; with it 27.64 M / 33.27 G). ``None`` (default) means "all but
    ``"ema"``".
    """

    def __init__(
        self,
        ham_channels: int = 512,
        num_groups: int = 32,
        filling: str = "nmf",
        ham_in: bool | None = None,
        **nmf_kwargs,
    ):
        super().__init__()
        if ham_in is None:
            ham_in = filling != "ema"
        # None when dropped: no parameters, so the state-dict keys stay those of the reference
        self.ham_in = ConvModule(ham_channels, ham_channels, 1, norm=None, act=False) if ham_in else None
        self.ham = make_filling(filling, ham_channels, **nmf_kwargs)
        self.ham_out = ConvModule(ham_channels, ham_channels, 1, norm="gn", num_groups=num_groups, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        enjoy = F.relu(self.ham_in(x)) if self.ham_in is not None else x
        enjoy = self.ham_out(self.ham(enjoy))
        return F.relu(x + enjoy)


class LightHamHead(DecodeHead):
    """SegNeXt decode head (paper §3.2; official ``ham_head.py``).

    Args:
        in_channels: channels of the features it uses, stages 2–4 (e.g. ``[64, 160, 256]``).
        ham_channels: width of ``squeeze`` and the Hamburger. channels: width of ``align``.
        num_classes: K.
        md_r, train_steps, eval_steps, inv_t, one_step_grad, seed: NMF settings (:class:`NMF2D`).
        dropout: Dropout2d rate before ``conv_seg`` (0.1).
        num_groups: GroupNorm groups (32).
        in_index: which backbone outputs to use (``(1, 2, 3)``: strides 8, 16, 32). SegNeXt
            Tab. 7: ``(3,)`` is Fig. 3 (b) (the encoder's last output only), ``(0, 1, 2, 3)``
            "(c) w/ stage 1" (then everything runs at stride 4).
        context: the global-context module between ``squeeze`` and ``align``: ``"ham"``
            (default, the Hamburger with NMF) or SegNeXt Tab. 5's ablations ``"cc"``, ``"ema"``
            (the Hamburger with its NMF replaced: :func:`make_filling`), ``"nl"`` (a
            :class:`~segkit.models.heads.context_blocks.NonLocal2d` block, reduction 2, held
            as ``nl_block``, in place of the whole Hamburger), and the supplement's
            ``"msca"`` (the Hamburger with MSCA as its ham). Placement and counts:
            :mod:`segkit.models.heads.context_blocks`.

    Forward: :class:`~segkit.models.contract.Features` whose ``stages`` are the backbone's
    feature maps ``(B, C_i, H_i, W_i)`` (all 4); the ``in_index`` ones are resized (bilinear,
    align_corners=False) to the first selected map's
    size (stride 8), concatenated in order, then ``squeeze`` (1×1 conv + GN + ReLU) →
    Hamburger → ``align`` (1×1 conv + GN + ReLU) → Dropout2d → ``conv_seg`` (1×1).
    Returns logits ``(B, K, H_2, W_2)`` (output stride 8).

    Init: mmcv's defaults, which the reference head uses — ConvModule convs Kaiming-normal
    (fan_out, ReLU gain), bias 0; GroupNorm 1/0; ``conv_seg`` normal(0, 0.01), bias 0.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        ham_channels: int,
        channels: int,
        num_classes: int,
        md_r: int = 16,
        train_steps: int = 6,
        eval_steps: int = 7,
        inv_t: float = 1.0,
        dropout: float = 0.1,
        num_groups: int = 32,
        one_step_grad: bool = False,
        seed: int = 0,
        in_index: Sequence[int] = (1, 2, 3),
        context: str = "ham",
    ):
        super().__init__()
        if context not in CONTEXTS:
            raise UsageError(f"unknown LightHamHead context {context!r}; choose from {CONTEXTS}")
        self.context = context
        self.in_channels = [int(c) for c in in_channels]
        self.in_index = tuple(int(i) for i in in_index)
        if len(self.in_channels) != len(self.in_index):
            raise UsageError(f"in_channels {self.in_channels} and in_index {self.in_index} differ in length")
        self.num_classes = int(num_classes)
        self.squeeze = ConvModule(sum(self.in_channels), ham_channels, 1, norm="gn", num_groups=num_groups)
        if context == "nl":
            self.nl_block = NonLocal2d(ham_channels, reduction=2, num_groups=num_groups)
        else:
            nmf = dict(
                md_r=md_r,
                train_steps=train_steps,
                eval_steps=eval_steps,
                inv_t=inv_t,
                one_step_grad=one_step_grad,
                seed=seed,
            )
            self.hamburger = Hamburger(
                ham_channels,
                num_groups,
                filling="nmf" if context == "ham" else context,
                **(nmf if context == "ham" else {}),
            )
        self.align = ConvModule(ham_channels, channels, 1, norm="gn", num_groups=num_groups)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.init_weights()

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)
        if self.context == "nl":
            self.nl_block.init_weights()  # mmcv's non-local init (zero-init output norm)

    def forward(self, features: Features) -> torch.Tensor:
        stages = features.stages
        if len(stages) <= max(self.in_index):
            raise UsageError(f"LightHamHead uses feature indices {self.in_index} but got {len(stages)} feature maps")
        feats = [stages[i] for i in self.in_index]
        for f, c in zip(feats, self.in_channels):
            if f.ndim != 4 or f.shape[1] != c:
                raise UsageError(
                    f"LightHamHead expected features with channels {self.in_channels}, "
                    f"got shapes {[tuple(f.shape) for f in feats]}"
                )
        size = feats[0].shape[-2:]
        feats = [feats[0]] + [
            f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            for f in feats[1:]
        ]
        x = self.squeeze(torch.cat(feats, dim=1))
        x = self.align(self.nl_block(x) if self.context == "nl" else self.hamburger(x))
        return self.conv_seg(self.dropout(x))
