"""The banded training loss (segkit.models.losses.upsampled_cross_entropy) equals the reference composition
F.cross_entropy(F.interpolate(logits)) — value and gradient — and the SegFormer head's fuse-first order
equals the official concat-then-conv order."""

import pytest
import torch
import torch.nn.functional as F

import segkit
from segkit.models.losses import upsampled_cross_entropy


def reference(logits, labels, weight=None, ignore_index=255, avg="valid", align_corners=False):
    up = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=align_corners)
    if avg == "valid":
        return F.cross_entropy(up, labels, weight=weight, ignore_index=ignore_index)
    per_pixel = F.cross_entropy(up, labels, weight=weight, ignore_index=ignore_index, reduction="none")
    return per_pixel.sum() / per_pixel.numel()


@pytest.mark.parametrize(
    "logit_shape,label_shape,avg,weighted,align_corners",
    [
        ((2, 7, 8, 8), (32, 32), "valid", False, False),  # stride 4 (power of two: the lerp path)
        ((2, 5, 6, 10), (48, 80), "all", True, False),  # stride 8, mmseg 0.x averaging, class weights
        ((1, 4, 9, 7), (40, 30), "valid", True, False),  # non-integer ratio: the index-table path
        ((1, 3, 8, 8), (32, 32), "valid", False, True),  # align_corners=True: the index-table path
        ((3, 150, 16, 16), (64, 64), "valid", False, False),  # many classes, several bands
    ],
)
def test_loss_and_gradient_equal_the_reference(logit_shape, label_shape, avg, weighted, align_corners, monkeypatch):
    import segkit.models.losses as losses

    monkeypatch.setattr(losses, "BAND_ELEMENTS", 4096)  # force many bands
    g = torch.Generator().manual_seed(sum(logit_shape))
    b, k = logit_shape[:2]
    logits = torch.randn(*logit_shape, generator=g, dtype=torch.float64).float()
    labels = torch.randint(0, k, (b, *label_shape), generator=g)
    labels[torch.rand(b, *label_shape, generator=g) < 0.1] = 255
    weight = torch.rand(k, generator=g) + 0.5 if weighted else None
    a = logits.clone().requires_grad_()
    ref = reference(a, labels, weight, avg=avg, align_corners=align_corners)
    ref.backward()
    c = logits.clone().contiguous(memory_format=torch.channels_last).requires_grad_()
    got = upsampled_cross_entropy(c, labels, weight=weight, avg=avg, align_corners=align_corners)
    got.backward()
    assert got.dtype == torch.float32
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6)
    scale = a.grad.abs().max()
    assert (c.grad - a.grad).abs().max() <= 1e-5 * scale


def test_loss_bf16_logits_computed_in_float32():
    logits = torch.randn(2, 6, 8, 8).bfloat16().requires_grad_()
    labels = torch.randint(0, 6, (2, 32, 32))
    loss = upsampled_cross_entropy(logits, labels)
    loss.backward()
    assert loss.dtype == torch.float32 and logits.grad.dtype == torch.bfloat16
    assert torch.allclose(loss, reference(logits.detach().float(), labels), rtol=1e-5)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="expected logits"):
        upsampled_cross_entropy(torch.randn(2, 3, 4, 4), torch.zeros(3, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="avg"):
        upsampled_cross_entropy(torch.randn(2, 3, 4, 4), torch.zeros(2, 8, 8, dtype=torch.long), avg="mean")


@pytest.mark.parametrize("name", ["segformer-b0", "segnext-t"])
def test_segmentor_training_loss_banded_equals_reference(name):
    """Segmentor.loss with banded_loss on / off: same loss and parameter gradients (eval mode: no dropout)."""
    torch.manual_seed(0)
    model = segkit.build_model(name, num_classes=9).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 64, 64, generator=g)
    y = torch.randint(0, 9, (2, 64, 64), generator=g)
    grads = []
    for banded in (False, True):
        model.banded_loss = banded
        model.zero_grad()
        loss = model.loss(x, y)["loss"]
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (l0, g0), (l1, g1) = grads
    assert torch.allclose(l0, l1, rtol=1e-5)
    assert g0.keys() == g1.keys()
    for n in g0:
        assert torch.allclose(g0[n], g1[n], rtol=1e-3, atol=1e-6 * float(g0[n].abs().max()) + 1e-9), n


def test_segformer_fuse_first_equals_official_order():
    torch.manual_seed(0)
    model = segkit.build_model("segformer-b1", num_classes=19).eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        model.decode_head.fuse_first = False
        official = model.encode_decode(x)
        model.decode_head.fuse_first = True
        ours = model.encode_decode(x)
        fused = model.fused().encode_decode(x)
    assert torch.allclose(ours, official, atol=1e-5 * float(official.abs().max()))
    assert torch.allclose(fused, official, atol=1e-5 * float(official.abs().max()))
    assert segkit.build_model("segformer-b0", num_classes=3, fuse_first=False).decode_head.fuse_first is False
