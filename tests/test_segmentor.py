"""Segmentor inference: slide windows, bounded-memory slide prediction, multi-scale + flip, save/load."""

import pytest
import torch

import segkit
from segkit.models.segmentor import slide_windows


def test_slide_windows_cover_every_pixel_and_clamp():
    boxes = slide_windows(100, 70, (40, 40), (30, 30))
    cover = torch.zeros(100, 70)
    for y1, y2, x1, x2 in boxes:
        assert y2 - y1 == 40 and x2 - x1 == 40 and y2 <= 100 and x2 <= 70
        cover[y1:y2, x1:x2] += 1
    assert cover.min() >= 1
    assert slide_windows(20, 20, (40, 40), (30, 30)) == [(0, 20, 0, 20)]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return segkit.build_model("segformer-b0", num_classes=5, decoder_dim=32).eval()


def test_streaming_slide_equals_full_slide(model):
    x = torch.randn(2, 3, 150, 110)
    full = model.slide_logits(x, (64, 64), (48, 48)).argmax(1)
    stream = model.slide_predict(x, (64, 64), (48, 48), window_batch=3)
    assert stream.dtype == torch.int64 and stream.shape == (2, 150, 110)
    assert torch.equal(stream.long(), full)


def test_streaming_slide_accepts_uint8(model):
    img = torch.randint(0, 256, (1, 3, 100, 90), dtype=torch.uint8)
    a = model.slide_predict(img, (64, 64), (40, 40))
    b = model.slide_predict(model.normalize(img), (64, 64), (40, 40))
    assert torch.equal(a, b)


def test_slide_equals_whole_when_window_covers_image(model):
    x = torch.randn(1, 3, 64, 96)
    whole = model.inference(x)
    slide = model.inference(x, mode="slide", crop_size=(64, 96), stride=(64, 96))
    assert torch.allclose(whole, slide, atol=1e-6)


def test_multiscale_flip_shapes_and_probabilities(model):
    x = torch.randn(1, 3, 64, 64)
    p = model.inference(x, scales=(0.5, 1.0, 1.5), flip=True, out_size=(50, 70))
    assert p.shape == (1, 5, 50, 70)
    assert torch.allclose(p.sum(1), torch.ones(1, 50, 70), atol=1e-5)
    with pytest.raises(ValueError, match="crop_size"):
        model.inference(x, mode="slide")


def test_save_pretrained_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    again = segkit.from_pretrained(tmp_path / "m")
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(model(x), again(x))
    assert again.config() == model.config()
