"""An mmseg-style SegNeXt (MSCAN + LightHamHead), written for same-process speed comparisons only.

mmcv has no wheel for the torch used here, so mmseg itself cannot run next to segkit. This module
rebuilds the network with the *structure* of the official implementation
(``Visual-Attention-Network/SegNeXt:mmseg/models/backbones/mscan.py`` and
``mmseg/models/decode_heads/ham_head.py``, as in mmseg 1.x): tokens ``(B, N, C)`` between blocks
with a reshape to ``(B, C, H, W)`` inside every block, BatchNorm and layer scale applied as
separate ops, the seven depth-wise strip convolutions of MSCA as separate modules summed one by
one, float32 NCHW throughout, the NMF iterations with autograd through every step, and the loss on
logits upsampled to the label size. Parameter names equal the official checkpoint keys, so
``segkit.checkpoints.convert`` loads the same weights into segkit's model (used by
``benchmarks/train_speed.py`` to check that both compute the same loss before timing them).

Hyper-parameters are those of SegNeXt-T (SegNeXt paper Table 2; official ADE20K config):
widths 32/64/160/256, depths 3/3/5/2, MLP ratios 8/8/4/4, LightHamHead on stages 2–4 with 256
channels, NMF rank 64, 6 training / 7 evaluation steps, ``inv_t = 1``.

Not part of the package: nothing in ``segkit`` imports it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DropPath(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class MSCA(nn.Module):
    """Multi-scale convolutional attention: 5×5 DW, three strip-conv branches (7, 11, 21), 1×1, product."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        for i, k in ((0, 7), (1, 11), (2, 21)):
            setattr(self, f"conv{i}_1", nn.Conv2d(dim, dim, (1, k), padding=(0, k // 2), groups=dim))
            setattr(self, f"conv{i}_2", nn.Conv2d(dim, dim, (k, 1), padding=(k // 2, 0), groups=dim))
        self.conv3 = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        u = x.clone()
        attn = self.conv0(x)
        a0 = self.conv0_2(self.conv0_1(attn))
        a1 = self.conv1_2(self.conv1_1(attn))
        a2 = self.conv2_2(self.conv2_1(attn))
        attn = attn + a0 + a1 + a2
        return self.conv3(attn) * u


class SpatialAttention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = MSCA(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        shortcut = x.clone()
        x = self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))
        return x + shortcut


class Block(nn.Module):
    def __init__(self, dim: int, mlp_ratio: int, drop_path: float):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        self.layer_scale_1 = nn.Parameter(1e-2 * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(1e-2 * torch.ones(dim))

    def forward(self, x, h, w):
        b, n, c = x.shape
        x = x.permute(0, 2, 1).view(b, c, h, w)
        x = x + self.drop_path(self.layer_scale_1.unsqueeze(-1).unsqueeze(-1) * self.attn(self.norm1(x)))
        x = x + self.drop_path(self.layer_scale_2.unsqueeze(-1).unsqueeze(-1) * self.mlp(self.norm2(x)))
        return x.view(b, c, n).permute(0, 2, 1)


class StemConv(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(cin, cout // 2, 3, 2, 1),
            nn.BatchNorm2d(cout // 2),
            nn.GELU(),
            nn.Conv2d(cout // 2, cout, 3, 2, 1),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        x = self.proj(x)
        _, _, h, w = x.shape
        return x.flatten(2).transpose(1, 2), h, w


class OverlapPatchEmbed(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 3, 2, 1)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = self.norm(self.proj(x))
        _, _, h, w = x.shape
        return x.flatten(2).transpose(1, 2), h, w


class MSCAN(nn.Module):
    def __init__(self, dims=(32, 64, 160, 256), depths=(3, 3, 5, 2), mlp_ratios=(8, 8, 4, 4), drop_path=0.1):
        super().__init__()
        rates = torch.linspace(0, drop_path, sum(depths)).tolist()
        k = 0
        for i in range(4):
            embed = StemConv(3, dims[0]) if i == 0 else OverlapPatchEmbed(dims[i - 1], dims[i])
            setattr(self, f"patch_embed{i + 1}", embed)
            blocks = [Block(dims[i], mlp_ratios[i], rates[k + j]) for j in range(depths[i])]
            setattr(self, f"block{i + 1}", nn.ModuleList(blocks))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dims[i], eps=1e-6))
            k += depths[i]

    def forward(self, x):
        b = x.shape[0]
        outs = []
        for i in range(1, 5):
            x, h, w = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                x = blk(x, h, w)
            x = getattr(self, f"norm{i}")(x)
            x = x.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return outs


class ConvGN(nn.Module):
    """1×1 conv (no bias) + GroupNorm(32) [+ ReLU], named like mmcv's ConvModule (``conv``, ``gn``)."""

    def __init__(self, cin: int, cout: int, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.gn = nn.GroupNorm(32, cout)
        self.relu = relu

    def forward(self, x):
        x = self.gn(self.conv(x))
        return F.relu(x) if self.relu else x


class ConvBias(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return self.conv(x)


class NMF2D(nn.Module):
    def __init__(self, rank=64, train_steps=6, eval_steps=7, inv_t=1.0, eps=1e-6):
        super().__init__()
        self.rank, self.train_steps, self.eval_steps, self.inv_t, self.eps = rank, train_steps, eval_steps, inv_t, eps
        self.bases = None  # set by the caller to fix the initial bases (loss comparison); else drawn per forward

    def _coef(self, x, bases, coef):
        num = torch.bmm(x.transpose(1, 2), bases)
        den = coef.bmm(bases.transpose(1, 2).bmm(bases))
        return coef * num / (den + self.eps)

    def forward(self, x):
        b, c, h, w = x.shape
        x = x.view(b, c, h * w)
        if self.bases is not None:
            bases = self.bases.repeat(b, 1, 1)
        else:
            bases = F.normalize(torch.rand((b, c, self.rank)), dim=1)
        coef = torch.softmax(self.inv_t * torch.bmm(x.transpose(1, 2), bases), dim=-1)
        for _ in range(self.train_steps if self.training else self.eval_steps):
            coef = self._coef(x, bases, coef)
            num = torch.bmm(x, coef)
            den = bases.bmm(coef.transpose(1, 2).bmm(coef))
            bases = bases * num / (den + self.eps)
        coef = self._coef(x, bases, coef)
        return torch.bmm(bases, coef.transpose(1, 2)).view(b, c, h, w)


class Hamburger(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.ham_in = ConvBias(c)
        self.ham = NMF2D()
        self.ham_out = ConvGN(c, c, relu=False)

    def forward(self, x):
        y = self.ham_out(self.ham(F.relu(self.ham_in(x))))
        return F.relu(x + y)


class LightHamHead(nn.Module):
    def __init__(self, in_channels=(64, 160, 256), channels=256, num_classes=150, dropout=0.1):
        super().__init__()
        self.squeeze = ConvGN(sum(in_channels), channels)
        self.hamburger = Hamburger(channels)
        self.align = ConvGN(channels, channels)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats):
        feats = feats[1:]
        size = feats[0].shape[2:]
        feats = [f if f.shape[2:] == size else F.interpolate(f, size, mode="bilinear") for f in feats]
        x = self.align(self.hamburger(self.squeeze(torch.cat(feats, dim=1))))
        return self.conv_seg(self.dropout(x))


class SegNeXtT(nn.Module):
    """``EncoderDecoder(MSCAN-T, LightHamHead)``; ``loss(x, y)`` = CE (ignore 255) on logits upsampled to y's size."""

    def __init__(self, num_classes: int = 150):
        super().__init__()
        self.backbone = MSCAN()
        self.decode_head = LightHamHead(num_classes=num_classes)

    def forward(self, x):
        return self.decode_head(self.backbone(x))

    def loss(self, x, y):
        logits = F.interpolate(self(x), y.shape[-2:], mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, y, ignore_index=255)
