"""FLOP counting that reproduces the figures published in the SegFormer and SegNeXt papers.

``count_flops(model, (H, W))`` returns **GMACs** (multiply-accumulates, 10⁹): one MAC counts as
one FLOP, the convention of both papers' "GFLOPs" columns. Nothing is computed: the forward
runs under :class:`torch._subclasses.fake_tensor.FakeTensorMode` (shape propagation only), so
a full-width model at 2048×1024 is counted in about a second on a CPU.

The papers do not use one counter, so "the number of FLOPs" depends on the tool. Four
conventions are implemented; ``mode="paper"`` picks the one each paper used:

``"torch"`` — :class:`torch.utils.flop_counter.FlopCounterMode`, divided by 2 (it counts a
    multiply-add as 2 FLOPs). Counts only convolutions (no bias), matrix products (``mm``,
    ``addmm``/``linear`` without bias, ``bmm``, ``matmul``) and attention. Adds one thing it
    misses: ``scaled_dot_product_attention`` on the CPU (PyTorch ≤ 2.13 registers only the
    CUDA attention kernels), counted with the same formula ``B·heads·Lq·Lk·(E + Ev)``.

``"mmcv"`` — mmcv's ``get_model_complexity_info`` (forward hooks on modules, as used by
    ``NVlabs/SegFormer:tools/get_flops.py``) plus the attention products that script adds by
    hand (``sra_flops``: ``2·N·N'·C`` per block, i.e. ``Q·Kᵀ`` and ``A·V``). Per module:

    * ``nn.Conv1d/2d/3d``: ``prod(kernel)·C_in·C_out/groups`` per output position, **plus
      the bias** (``C_out`` per output position);
    * ``nn.Linear``: ``numel(input)·out_features`` (no bias);
    * ``nn.BatchNorm*``, ``nn.GroupNorm``, ``nn.InstanceNorm*``, ``nn.LayerNorm``:
      ``numel(input)``, ×2 with an affine transform;
    * ``nn.ReLU``, ``nn.PReLU``, ``nn.ELU``, ``nn.LeakyReLU``, ``nn.ReLU6``: ``numel(output)``
      (``nn.GELU`` and functional activations: 0);
    * max/avg (adaptive) pooling modules: ``numel(input)``; ``nn.Upsample``:
      ``numel(output)``; ``nn.ConvTranspose2d``: as mmcv;
    * everything functional is invisible: ``F.interpolate``, ``torch.bmm``/``matmul`` (so
      the NMF iterations of SegNeXt's head), element-wise products, ``F.layer_norm`` —
      except ``F.scaled_dot_product_attention``, counted ``B·heads·Lq·Lk·(E + Ev)``
      (= ``sra_flops`` of the NVlabs script, which uses ``N' = (H/r)·(W/r)``; identical for
      sizes that are multiples of 32).

    The official SegFormer head uses ``SyncBatchNorm``, which mmcv's table does not list (so
    0); our head has ``nn.BatchNorm2d`` and it is counted (≤ 0.1 % of the total).

``"torchprofile"`` — ``torchprofile.profile_macs`` (used by
    ``Visual-Attention-Network/SegNeXt:tools/get_flops.py``, which prints it as "GFLOPs"). It
    counts each traced op as called from Python:

    * convolutions, ``linear``, ``addmm``, ``mm``, ``bmm``, ``matmul``: MACs without bias
      (taken from FlopCounterMode); ``scaled_dot_product_attention``: its two products;
    * element-wise ``mul``/``mul_``: ``numel(output)`` (layer scale, ``attn ⊙ u``, the NMF
      multiplicative updates, ``inv_t · …``). ``addcmul`` — our fused ``x + ls ⊙ f(x)`` — is
      counted as the ``mul`` the reference performs;
    * ``batch_norm``/``group_norm``/``layer_norm``/``instance_norm`` with affine:
      ``numel(output)``; bilinear upsampling: ``4·numel(output)``; average pooling and
      ``mean``: ``numel(output)``; ``leaky_relu``: ``numel(output)``;
    * free: ``add``, ``div``, ``relu``, ``gelu``, ``softmax``, reshapes, ``cat``, dropout.

``"paper"`` (default) — the convention of the model's family (``Family.flops_convention``):
    ``"mmcv"`` for SegFormer (whose numbers come from the NVlabs script), ``"torchprofile"`` for
    SegNeXt; ``"torch"`` for RSSeg (whose counter is not published) and for models without a family.

Whatever the mode, the network is counted in its published evaluation order: heads that compute
the same function in a cheaper order at run time (``SegFormerHead(fuse_first=True)``, which
applies the 1×1 fuse conv before upsampling) are switched to the official order while counting,
so the figures describe the architecture, not segkit's execution of it.

Why these choices (checked against the papers at 512×512 and 2048×1024, see
``docs/model_zoo.md``): SegNeXt's figures include the NMF ``bmm`` iterations (7 eval steps +
the final coef update and reconstruction; ~4 % of SegNeXt-T, ~7 % of SegNeXt-L), the
element-wise products and the norms, which only torchprofile counts; SegFormer's figures
include conv biases and LayerNorms (mmcv) and the attention products the NVlabs script adds.
Attention is 53 % of SegFormer-B0 at 2048×1024: FlopCounterMode alone gives 58.8 G there (it
has no formula for the CPU attention kernel), ``"torch"`` (with it) 125.4 G, ``"mmcv"`` 125.6 G,
published 125.5 G. At 2048×1024 the published SegFormer figures are those of the 150-class
ADE20K model and the SegNeXt figures those of the 19-class Cityscapes models.

Under ``"paper"`` every figure agrees with the papers to ≤ 0.3 % except SegNeXt-L at
2048×1024 (553.7 G vs 577.5 G published, −4.1 %; its 512² figure agrees to 0.1 %).

What is counted is the module's ``forward`` on one input ``(batch, 3, H, W)``: for a
:class:`~segkit.models.segmentor.Segmentor` this includes the final bilinear resize of the
logits to the input size (the reference ``forward_dummy`` does the same). The model is put in
eval mode for the count (NMF runs its 7 eval steps, dropout is off) and restored afterwards;
its parameters are not modified.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from segkit.errors import UsageError

MODES = ("paper", "torch", "mmcv", "torchprofile")

# ------------------------------------------------------------------------------ op tables
# Ops are matched on the name of their overload packet (``aten.mul.Tensor`` → ``mul``). A
# dispatch mode on top of the stack sees ops as called from Python (``linear``,
# ``layer_norm`` …); older PyTorch versions show their decompositions, also listed.
_CONV = {
    "conv1d",
    "conv2d",
    "conv3d",
    "convolution",
    "_convolution",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "cudnn_convolution",
    "mkldnn_convolution",
    "_slow_conv2d_forward",
}
_LINEAR = {"linear", "addmm", "mm", "_addmm_activation"}
_MATMUL = {"bmm", "baddbmm", "matmul", "einsum"}
_SDPA = {
    "scaled_dot_product_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
}
_MUL = {"mul", "mul_", "addcmul", "addcmul_"}
# norm op → index of its weight argument (affine iff not None)
_NORM = {
    "layer_norm": 2,
    "native_layer_norm": 2,
    "group_norm": 2,
    "native_group_norm": 1,
    "batch_norm": 1,
    "native_batch_norm": 1,
    "_native_batch_norm_legit_no_training": 1,
    "_native_batch_norm_legit": 1,
    "instance_norm": 1,
}
_UPSAMPLE_BILINEAR = {"upsample_bilinear2d", "_upsample_bilinear2d_aa"}
_AVG = {
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "_adaptive_avg_pool2d",
    "mean",
}
_LEAKY = {"leaky_relu", "leaky_relu_"}
# FlopCounterMode's attention entries (CUDA kernels); we count attention ourselves.
_FC_ATTENTION = {
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_cudnn_attention",
    "_flash_attention_forward",
    "_efficient_attention_forward",
    "flex_attention",
}


def _numel(x) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel()
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return x[0].numel()  # native_* norms return (out, mean, rstd)
    return 0


def _sdpa_macs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    """``Q·Kᵀ`` + ``A·V`` of attention on ``(…, L, E)`` tensors: ``prod(batch)·Lq·Lk·(E + Ev)``."""
    batch = math.prod(q.shape[:-2])
    return batch * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])


class _OpRecorder(TorchDispatchMode):
    """Records, per op as called from Python, the MACs of each convention.

    Sits on top of a :class:`FlopCounterMode` (entered before it) and attributes that counter's
    increase during each op to the op, so matrix-product / convolution MACs are FlopCounterMode's.
    """

    def __init__(self, fc: FlopCounterMode):
        super().__init__()
        self.fc = fc
        self.torch = defaultdict(int)  # category → MACs, "torch" convention
        self.torchprofile = defaultdict(int)  # category → MACs, "torchprofile" convention
        self.attention = 0  # SDPA MACs (mmcv mode adds these)

    def _fc_total(self) -> int:
        counts = self.fc.flop_counts.get("Global", {})  # op packet → FLOPs (empty before the first counted op)
        return sum(v for k, v in counts.items() if getattr(k, "__name__", str(k)) not in _FC_ATTENTION)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        before = self._fc_total()
        out = func(*args, **kwargs)
        fc_macs = (self._fc_total() - before) // 2
        name = func.overloadpacket.__name__
        if name in _SDPA:
            macs = _sdpa_macs(args[0], args[1], args[2])
            self.attention += macs
            self.torch["attention"] += macs
            self.torchprofile["attention"] += macs
        elif name in _CONV:
            self.torch["conv"] += fc_macs
            self.torchprofile["conv"] += fc_macs
        elif name in _LINEAR:
            self.torch["linear"] += fc_macs
            self.torchprofile["linear"] += fc_macs
        elif name in _MATMUL:
            self.torch["matmul"] += fc_macs
            self.torchprofile["matmul"] += fc_macs
        else:
            if fc_macs:  # any other op FlopCounterMode knows
                self.torch["other"] += fc_macs
                self.torchprofile["other"] += fc_macs
            if name in _MUL:
                self.torchprofile["mul"] += _numel(out)
            elif name in _NORM:
                idx = _NORM[name]
                weight = args[idx] if len(args) > idx else kwargs.get("weight")
                if weight is not None:
                    self.torchprofile["norm"] += _numel(out)
            elif name in _UPSAMPLE_BILINEAR:
                self.torchprofile["upsample"] += 4 * _numel(out)
            elif name in _AVG:
                self.torchprofile["pool"] += _numel(out)
            elif name in _LEAKY:
                self.torchprofile["activation"] += _numel(out)
        return out


# ------------------------------------------------------------------------ mmcv module hooks
def _mmcv_conv(m: nn.Module, inp, out) -> tuple[str, int]:
    per_position = math.prod(m.kernel_size) * m.in_channels * (m.out_channels // m.groups)
    positions = out.shape[0] * math.prod(out.shape[2:])
    return "conv", per_position * positions + (m.out_channels * positions if m.bias is not None else 0)


def _mmcv_deconv(m: nn.Module, inp, out) -> tuple[str, int]:
    x = inp[0]
    per_position = math.prod(m.kernel_size) * m.in_channels * (m.out_channels // m.groups)
    flops = per_position * x.shape[0] * math.prod(x.shape[2:])
    if m.bias is not None:  # mmcv multiplies by output_height twice (a known quirk); reproduced
        flops += m.out_channels * out.shape[0] * out.shape[2] * out.shape[2]
    return "conv", flops


def _mmcv_linear(m: nn.Module, inp, out) -> tuple[str, int]:
    return "linear", inp[0].numel() * out.shape[-1]


def _mmcv_norm(m: nn.Module, inp, out) -> tuple[str, int]:
    affine = getattr(m, "affine", False) or getattr(m, "elementwise_affine", False)
    return "norm", inp[0].numel() * (2 if affine else 1)


def _mmcv_act(m: nn.Module, inp, out) -> tuple[str, int]:
    return "activation", out.numel()


def _mmcv_pool(m: nn.Module, inp, out) -> tuple[str, int]:
    return "pool", inp[0].numel()


def _mmcv_upsample(m: nn.Module, inp, out) -> tuple[str, int]:
    return "upsample", out.numel()


_MMCV_HOOKS: list[tuple[tuple[type, ...], callable]] = [
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d), _mmcv_conv),
    ((nn.ConvTranspose2d,), _mmcv_deconv),
    ((nn.Linear,), _mmcv_linear),
    (
        (
            nn.BatchNorm1d,
            nn.BatchNorm2d,
            nn.BatchNorm3d,
            nn.GroupNorm,
            nn.InstanceNorm1d,
            nn.InstanceNorm2d,
            nn.InstanceNorm3d,
            nn.LayerNorm,
        ),
        _mmcv_norm,
    ),
    ((nn.ReLU, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6), _mmcv_act),
    (
        (
            nn.MaxPool1d,
            nn.MaxPool2d,
            nn.MaxPool3d,
            nn.AvgPool1d,
            nn.AvgPool2d,
            nn.AvgPool3d,
            nn.AdaptiveMaxPool1d,
            nn.AdaptiveMaxPool2d,
            nn.AdaptiveMaxPool3d,
            nn.AdaptiveAvgPool1d,
            nn.AdaptiveAvgPool2d,
            nn.AdaptiveAvgPool3d,
        ),
        _mmcv_pool,
    ),
    ((nn.Upsample,), _mmcv_upsample),
]


def _mmcv_rule(module: nn.Module):
    for types, rule in _MMCV_HOOKS:
        # exact type as mmcv (``type(m) in mapping``): SyncBatchNorm, a BatchNorm subclass, is not counted
        if type(module) in types:
            return rule
    return None


# ------------------------------------------------------------------------------ public API
def paper_mode(model: nn.Module) -> str:
    """The convention of the paper that published ``model``'s architecture (see module docstring).

    The ``flops_convention`` of the model's family (:class:`~segkit.models.family.Family`, found
    by the model's ``family`` attribute): ``"mmcv"`` for SegFormer, ``"torchprofile"`` for
    SegNeXt, ``"torch"`` for RSSeg and for models without a family.
    """
    from segkit.models.zoo import family_of

    family = family_of(model)
    return family.flops_convention if family is not None else "torch"


def count_flops(
    model: nn.Module, shape: Sequence[int] = (512, 512), batch: int = 1, mode: str = "paper", in_chans: int = 3
) -> dict:
    """GMACs (= the papers' GFLOPs) and parameter count of ``model`` on a ``(batch, in_chans, H, W)`` input.

    Args:
        model: any ``nn.Module`` taking one image tensor (e.g. a zoo ``Segmentor``). It is run
            in eval mode on fake tensors (no arithmetic, no memory for activations); its
            training flag is restored and its parameters are untouched.
        shape: ``(H, W)`` of the input image, positive ints.
        batch: batch size; the returned MACs are for the whole batch (per image × batch).
        mode: ``"paper"`` (default), ``"torch"``, ``"mmcv"`` or ``"torchprofile"`` — what is
            counted is defined in the module docstring.
        in_chans: input channels (3).

    Returns:
        ``dict(gmacs=float, params=int, mode=str, shape=(H, W), batch=int,
        breakdown={category: gmacs})`` where ``mode`` is the resolved convention (never
        ``"paper"``), ``params`` counts all parameters (BN running statistics excluded) and
        the breakdown categories are ``conv``, ``linear``, ``matmul`` (functional ``bmm``/
        ``matmul``), ``attention``, ``norm``, ``mul``, ``upsample``, ``pool``, ``activation``,
        ``other`` (only non-zero ones are listed); they sum to ``gmacs``.

    Raises:
        ValueError: unknown ``mode``, or ``shape``/``batch`` not positive.
    """
    if mode not in MODES:
        raise UsageError(f"unknown FLOP-count mode {mode!r}; choose from {MODES}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1 or batch < 1:
        raise UsageError(f"shape must be (H, W) with positive sizes and batch >= 1, got shape={shape} batch={batch}")
    resolved = paper_mode(model) if mode == "paper" else mode
    params = sum(p.numel() for p in model.parameters())
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    if device.type == "meta":  # a model built under ``torch.device("meta")``: count as on the CPU
        device = torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32

    mmcv = defaultdict(int)
    handles = []
    if resolved == "mmcv":
        for m in model.modules():
            rule = _mmcv_rule(m)
            if rule is not None:

                def hook(mod, inp, out, rule=rule):
                    cat, n = rule(mod, inp, out)
                    mmcv[cat] += n

                handles.append(m.register_forward_hook(hook))

    from torch._subclasses.fake_tensor import FakeTensorMode

    flags = [(m, m.training) for m in model.modules()]  # restored one by one (frozen submodules stay frozen)
    # Count the network in its published evaluation order: a head that evaluates the same
    # function in a cheaper order (SegFormerHead.fuse_first) is switched back while counting.
    orders = [(m, m.fuse_first) for m in model.modules() if isinstance(getattr(m, "fuse_first", None), bool)]
    model.eval()
    for m, _ in orders:
        m.fuse_first = False
    try:
        with torch.inference_mode(), FakeTensorMode(allow_non_fake_inputs=True):
            # Shape-only stand-ins for the weights: the real ones (possibly on ``meta``) are not touched.
            state = {
                name: torch.empty(t.shape, dtype=t.dtype, device=device)
                for name, t in [
                    *model.named_parameters(remove_duplicate=False),
                    *model.named_buffers(remove_duplicate=False),
                ]
            }
            x = torch.empty(batch, in_chans, *shape, device=device, dtype=dtype)
            fc = FlopCounterMode(display=False)
            with fc:
                rec = _OpRecorder(fc)
                with rec:
                    torch.func.functional_call(model, state, (x,))
    finally:
        for h in handles:
            h.remove()
        for m, training in flags:
            m.training = training
        for m, order in orders:
            m.fuse_first = order

    if resolved == "torch":
        counts = dict(rec.torch)
    elif resolved == "torchprofile":
        counts = dict(rec.torchprofile)
    else:
        counts = dict(mmcv)
        if rec.attention:
            counts["attention"] = rec.attention
    breakdown = {k: v / 1e9 for k, v in sorted(counts.items()) if v}
    return dict(
        gmacs=sum(counts.values()) / 1e9,
        params=int(params),
        mode=resolved,
        shape=shape,
        batch=int(batch),
        breakdown=breakdown,
    )
