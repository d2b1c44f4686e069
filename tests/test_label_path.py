"""The label path (segkit.models.inference.resize_argmax, Segmentor.predict / slide_predict) gives the
reference's labels — resize step by step with F.interpolate, softmax, arg-max — on real CamVid images,
except at float32 near-ties, which every differing pixel must be."""

import pytest
import torch
import torch.nn.functional as F

import segkit
from segkit.data.interp import composite_taps
from segkit.data.io import read_image
from segkit.data.transforms import TestTransform
from segkit.models.inference import resize, resize_argmax

# a differing pixel counts as a near-tie when the reference's logits of the two labels differ by
# less than this, relative to the logit magnitude (float32 epsilon is 1.2e-7; two resizes and the
# composite weights' rounding stay well inside)
TIE_RTOL = 2e-5


def reference_labels(logits: torch.Tensor, sizes) -> tuple[torch.Tensor, torch.Tensor]:
    """Step-by-step bilinear resizes as the reference; returns (resized logits, arg-max of the softmax)."""
    x = logits.float()
    for size in sizes:
        x = resize(x, size)
    return x, x.softmax(1).argmax(1)


def assert_same_or_near_tie(got: torch.Tensor, ref_logits: torch.Tensor, ref: torch.Tensor, max_frac: float = 1e-4):
    """``got`` equals ``ref`` except at pixels where the reference's logits of both labels are within rounding."""
    assert got.shape == ref.shape
    diff = got != ref
    frac = diff.float().mean().item()
    assert frac <= max_frac, f"{frac:.2e} of the pixels differ"
    if diff.any():
        b, y, x = diff.nonzero(as_tuple=True)
        a = ref_logits[b, got[b, y, x], y, x]
        r = ref_logits[b, ref[b, y, x], y, x]
        scale = ref_logits[b, :, y, x].abs().amax(1).clamp(min=1.0)
        assert ((a - r).abs() <= TIE_RTOL * scale).all(), "a differing pixel is not a float32 near-tie"


# ----------------------------------------------------------------------------- synthetic logits
@pytest.mark.parametrize(
    "shape,sizes",
    [
        ((2, 150, 16, 16), [(64, 64)]),  # stride-4 upsampling, one resize
        ((1, 19, 12, 16), [(96, 128), (90, 120)]),  # stride 8 to a 32-multiple input, then original size
        ((1, 19, 12, 16), [(96, 128), (200, 301)]),  # then upscaled
        ((1, 7, 30, 40), [(23, 17)]),  # downscaling
        ((1, 300, 5, 6), [(40, 48), (37, 50)]),  # more than 256 classes
        ((1, 3, 1, 9), [(4, 36)]),  # a single source row
    ],
)
def test_resize_argmax_matches_reference_on_random_logits(shape, sizes):
    g = torch.Generator().manual_seed(sum(shape))
    logits = torch.randn(*shape, generator=g)
    # smooth them a little so that blocks with one candidate occur too
    logits = logits + 3 * torch.randn(shape[0], shape[1], 1, 1, generator=g)
    ref_logits, ref = reference_labels(logits, sizes)
    got = resize_argmax(logits, sizes, band_pixels=97)  # many bands
    assert got.dtype == torch.int64
    assert_same_or_near_tie(got, ref_logits, ref, max_frac=1e-3)


def test_resize_argmax_channels_last_and_align_corners_and_dtype():
    logits = torch.randn(1, 11, 20, 24, generator=torch.Generator().manual_seed(0))
    cl = logits.contiguous(memory_format=torch.channels_last)
    ref_logits = F.interpolate(logits, size=(77, 91), mode="bilinear", align_corners=True)
    got = resize_argmax(cl, [(77, 91)], align_corners=True, out_dtype=torch.uint8)
    assert got.dtype == torch.uint8
    assert_same_or_near_tie(got.long(), ref_logits, ref_logits.argmax(1), max_frac=1e-3)


def test_exact_ties_go_to_the_lower_class_index():
    logits = torch.zeros(1, 5, 4, 4)
    logits[:, 3] = 1.0
    logits[:, 1] = 1.0  # classes 1 and 3 tie everywhere
    assert (resize_argmax(logits, [(16, 16)]) == 1).all()
    assert (resize_argmax(logits, [(16, 16), (9, 13)]) == 1).all()


def test_identity_chain_is_a_plain_argmax():
    logits = torch.randn(2, 6, 9, 10)
    assert torch.equal(resize_argmax(logits, [(9, 10)]), logits.argmax(1))


def test_composite_taps_reproduce_two_resizes():
    """The composite filter applied to a signal equals F.interpolate step by step (to float32 rounding)."""
    x = torch.randn(13, generator=torch.Generator().manual_seed(1))
    for sizes in ([52], [52, 47], [52, 90], [5], [13, 26]):
        base, w = composite_taps(13, sizes)
        idx = (torch.from_numpy(base)[:, None] + torch.arange(w.shape[1])).clamp(max=12)
        got = (x[idx] * torch.from_numpy(w)).sum(1)
        ref = x[None, None, None]
        for s in sizes:
            ref = resize(ref, (1, s))
        assert got.shape == (sizes[-1],) and torch.allclose(got, ref.flatten(), atol=1e-6)


# ----------------------------------------------------------------------------- real images, real models
@pytest.fixture(scope="module")
def camvid_batch(camvid):
    """Three CamVid test images through the README model's test transform (keep-ratio 480x360, x32)."""
    stems = (camvid / "splits" / "test.txt").read_text().split()[:3]
    tf = TestTransform(scale=(480, 360), keep_ratio=True, size_divisor=32)
    images = [read_image(camvid / "images" / "test" / f"{s}.webp") for s in stems]
    return torch.stack([tf(im)["image"] for im in images]), images[0].shape[:2]


@pytest.mark.parametrize("name,classes", [("segnext-t", 11), ("segformer-b0", 150)])
def test_whole_predict_equals_reference_on_camvid(camvid_batch, name, classes):
    torch.manual_seed(0)
    model = segkit.build_model(name, num_classes=classes).eval().fused()
    x, size = camvid_batch
    with torch.inference_mode():
        logits = model.encode_decode(x)
        ref_logits, ref = reference_labels(logits, [x.shape[-2:], size])
        assert torch.equal(model.inference(x, out_size=size).argmax(1), ref)
        got = model.predict(x, out_size=size)
    assert got.shape == (3, *size)
    assert_same_or_near_tie(got, ref_logits, ref)


def test_slide_predict_equals_reference_on_camvid(camvid_batch):
    torch.manual_seed(0)
    model = segkit.build_model("segnext-t", num_classes=11).eval().fused()
    x, size = camvid_batch
    kw = dict(mode="slide", crop_size=(256, 256), stride=(171, 171))
    with torch.inference_mode():
        merged = model.slide_logits(x, (256, 256), (171, 171))
        for out in (size, tuple(x.shape[-2:]), (500, 700)):  # original size, input size, larger
            ref_logits, ref = reference_labels(merged, [out])
            assert torch.equal(model.inference(x, out_size=out, **kw).argmax(1), ref)
            got = model.predict(x, out_size=out, window_batch=3, **kw)
            assert got.shape == (3, *out)
            assert_same_or_near_tie(got, ref_logits, ref)


def test_multiscale_flip_averages_probabilities(camvid_batch):
    """MS + flip: softmax of every (scale, flip) pass at the output size, averaged — the reference aug_test."""
    torch.manual_seed(0)
    model = segkit.build_model("segformer-b0", num_classes=11).eval()
    x, size = camvid_batch
    x = x[:1]
    scales = (0.75, 1.0, 1.25)
    with torch.inference_mode():
        probs = 0
        for s in scales:
            xs = resize(x, (int(x.shape[2] * s + 0.5), int(x.shape[3] * s + 0.5)))
            for flip in (False, True):
                logits = model(xs.flip(-1) if flip else xs)
                logits = logits.flip(-1) if flip else logits
                probs = probs + resize(logits, size).softmax(1)
        ref = (probs / 6).argmax(1)
        got = model.predict(x, out_size=size, scales=scales, flip=True)
        assert torch.equal(got, ref)
        # averaging logits instead gives other labels here, so the test tells the two apart
        avg_logits = sum(
            resize(model(resize(x, (int(x.shape[2] * s + 0.5), int(x.shape[3] * s + 0.5)))), size) for s in scales
        )
        assert not torch.equal(model.predict(x, out_size=size, scales=scales), avg_logits.argmax(1))


def test_argmax_classes_equals_argmax_with_first_index_on_ties():
    from segkit.models.inference import argmax_classes

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (7, 33, 45), generator=g).float()  # many exact ties
    assert torch.equal(argmax_classes(x), x.argmax(0))
    cl = x.permute(1, 2, 0).contiguous().permute(2, 0, 1)  # classes innermost: argmax itself
    assert torch.equal(argmax_classes(cl), x.argmax(0))
    assert torch.equal(argmax_classes(x[:1]), torch.zeros(33, 45, dtype=torch.int64))
