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


# ----------------------------------------------------------------------------- OHEM and Dice options
def _probs_of_truth(logits, labels):
    valid = labels != 255
    p = torch.softmax(logits, 1).gather(1, labels.masked_fill(~valid, 0).unsqueeze(1)).squeeze(1)
    return p, valid


def test_ohem_keeps_pixels_below_threshold_and_at_least_min_kept():
    from segkit.models.losses import ohem_pixel_weights

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 16, 16, generator=g) * 3
    labels = torch.randint(0, 5, (2, 16, 16), generator=g)
    labels[:, :2] = 255
    p, valid = _probs_of_truth(logits, labels)
    # threshold dominates (min_kept small): exactly the valid pixels with p < 0.7
    w = ohem_pixel_weights(logits, labels, thresh=0.7, min_kept=1)
    assert torch.equal(w.bool(), valid & (p < 0.7))
    assert 0 < int(w.sum()) < int(valid.sum())
    # min_kept dominates (threshold tiny): the 2·40 least confident valid pixels
    w = ohem_pixel_weights(logits, labels, thresh=1e-6, min_kept=40)
    assert int(w.sum()) == 80
    assert float(p[w.bool()].max()) <= float(p[valid & ~w.bool()].min())
    assert not bool(w[~valid].any())


def test_segmentor_ohem_and_dice_losses_against_direct_computation():
    from segkit.models.losses import dice_loss, ohem_pixel_weights

    torch.manual_seed(0)
    model = segkit.build_model("segformer-b0", num_classes=50).eval()
    x = torch.randn(2, 3, 64, 64)
    y = torch.randint(0, 50, (2, 64, 64))
    y[:, :4] = 255
    with torch.no_grad():
        full = F.interpolate(model.encode_decode(x), (64, 64), mode="bilinear", align_corners=False)
        ce = F.cross_entropy(full, y, ignore_index=255, reduction="none")
        plain = float(model.loss(x, y)["loss"])
        assert plain == pytest.approx(float(F.cross_entropy(full, y, ignore_index=255)), rel=1e-5)
        model.set_loss_options(ohem_thresh=0.7, ohem_min_kept=10)
        keep = ohem_pixel_weights(full, y, 0.7, 10)
        assert float(model.loss(x, y)["loss"]) == pytest.approx(float((ce * keep).sum() / keep.sum()), rel=1e-5)
        model.set_loss_options(dice_weight=0.5)
        expect = float(F.cross_entropy(full, y, ignore_index=255) + 0.5 * dice_loss(full, y))
        assert float(model.loss(x, y)["loss"]) == pytest.approx(expect, rel=1e-5)
    with pytest.raises(ValueError, match="ohem_thresh"):
        model.set_loss_options(ohem_thresh=1.5)


def test_dice_loss_values():
    from segkit.models.losses import dice_loss

    labels = torch.tensor([[[0, 1], [2, 255]]])
    perfect = F.one_hot(labels.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 100
    assert float(dice_loss(perfect, labels)) == pytest.approx(0.0, abs=1e-6)
    # uniform prediction over 3 classes, one pixel per class: per class (2/3 + 1) / (3/9 + 1 + 1)
    uniform = torch.zeros(1, 3, 2, 2)
    assert float(dice_loss(uniform, labels)) == pytest.approx(1 - (2 / 3 + 1) / (3 / 9 + 1 + 1), rel=1e-6)
    # the ignored pixel does not count: changing its logits changes nothing
    other = uniform.clone()
    other[0, :, 1, 1] = torch.tensor([9.0, -9.0, 0.0])
    assert float(dice_loss(other, labels)) == pytest.approx(float(dice_loss(uniform, labels)))


def test_config_rejects_bad_loss_options():
    from segkit.config import config_from_dict
    from segkit.errors import ConfigError

    for key, value in (("ohem_thresh", 0.0), ("ohem_min_kept", -1), ("dice_weight", -0.1)):
        with pytest.raises(ConfigError, match=f"train.{key}"):
            config_from_dict({"train": {key: value}}).validate()
