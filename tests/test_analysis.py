"""segkit analyze: ERF, feature maps, attention maps, Grad-CAM and IoU by object size (segkit/tools/analysis.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from segkit.engine.metrics import ConfusionMatrix
from segkit.models.contract import DecodeHead, Features
from segkit.models.segmentor import Segmentor
from segkit.models.zoo import build_model
from segkit.tools import analysis as A


# ----------------------------------------------------------------------------- toy models
class _ConvStack(nn.Module):
    """Two 3x3 convolutions, stride 1, positive weights: the ERF support of a centre pixel is 5x5."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        with torch.no_grad():
            self.c1.weight.abs_().add_(0.1)
            self.c2.weight.abs_().add_(0.1)

    def forward(self, x):
        a = self.c1(x)
        return Features(stages=[a, self.c2(a)])


class _Linear1x1(DecodeHead):
    def __init__(self, cin, k):
        super().__init__()
        self.conv = nn.Conv2d(cin, k, 1)

    def forward(self, f: Features):
        return self.conv(f.stages[-1])


def _sample(h=24, w=32, seed=0) -> A.Sample:
    g = torch.Generator().manual_seed(seed)
    return A.Sample(image=torch.rand(1, 3, h, w, generator=g), rgb=np.zeros((h, w, 3), np.uint8), label=None, name="t")


def test_erf_support_of_a_conv_stack_is_its_theoretical_receptive_field():
    model = Segmentor(_ConvStack(), _Linear1x1(4, 2), num_classes=2)
    res = A.effective_receptive_field(model, [_sample(), _sample(seed=1)], ["backbone#0", "backbone#1"])
    for spec, half in (("backbone#0", 1), ("backbone#1", 2)):
        erf = res[spec]["erf"]
        support = np.argwhere(erf > 0)
        cy, cx = 24 // 2, 32 // 2
        assert support[:, 0].min() == cy - half and support[:, 0].max() == cy + half
        assert support[:, 1].min() == cx - half and support[:, 1].max() == cx + half
        assert (erf[cy - half : cy + half + 1, cx - half : cx + half + 1] > 0).all()
    assert res["num_images"] == 2 and res["image_size"] == [24, 32]
    assert res["backbone#1"]["area_ratio"]["0.99"] <= 25 / (24 * 32) + 1e-12


def test_area_ratios_of_uniform_and_point_maps():
    uniform = A.area_ratios(np.ones((10, 10)))
    assert uniform["0.5"] == pytest.approx(0.5) and uniform["0.99"] == pytest.approx(0.99)
    point = np.zeros((10, 10))
    point[5, 5] = 3.0
    assert A.area_ratios(point)["0.99"] == pytest.approx(0.01)


def test_erf_of_trained_weights_differs_from_random_init():
    """Same architecture, other weights → other ERF (the tool reads the weights, not only the wiring)."""
    torch.manual_seed(0)
    a = build_model("segformer-b0", num_classes=3)
    torch.manual_seed(1)
    b = build_model("segformer-b0", num_classes=3)
    with torch.no_grad():
        for p in b.backbone.block4.parameters():
            p.mul_(3.0)
    s = [_sample(64, 64)]
    ea = A.effective_receptive_field(a, s, ["backbone#3"])["backbone#3"]["erf"]
    eb = A.effective_receptive_field(b, s, ["backbone#3"])["backbone#3"]["erf"]
    assert np.abs(ea / ea.sum() - eb / eb.sum()).sum() > 0.05


def test_token_grid_and_as_map():
    assert A.token_grid(12 * 16, (360, 480)) == (12, 16, 0)
    assert A.token_grid(12 * 16 + 1, (360, 480)) == (12, 16, 1)  # a class token in front
    with pytest.raises(ValueError, match="grid"):
        A.token_grid(7, (100, 1000))
    t = torch.arange(2 * 7 * 6 * 5, dtype=torch.float32).reshape(2, 7, 6 * 5)  # (B, C, N)
    tokens = torch.cat([torch.zeros(2, 1, 7), t.transpose(1, 2)], 1)  # (B, 1 + N, C)
    assert torch.equal(A.as_map(tokens, (60, 50)), t.reshape(2, 7, 6, 5))
    f = Features(stages=[torch.zeros(1, 2, 4, 4), torch.ones(1, 3, 2, 2)])
    assert A.as_map(f, (16, 16), 0).shape == (1, 2, 4, 4) and A.as_map(f, (16, 16)).shape == (1, 3, 2, 2)
    with pytest.raises(ValueError, match="picks from a list"):
        A.as_map(torch.zeros(1, 2, 3, 3), (3, 3), 1)
    with pytest.raises(ValueError, match="integer"):
        A.parse_layer("backbone#x")


def test_unknown_module_names_the_closest():
    model = build_model("segformer-b0", num_classes=3)
    with pytest.raises(KeyError, match="backbone.block4"):
        A.get_module(model, "backbone.blok4")


def test_feature_statistics_against_brute_force():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(8, 5, 6, generator=g) + 0.5
    st = A._feature_stats(f)
    x = F.normalize(f.reshape(8, -1).T, dim=1)
    cos = x @ x.T
    n = cos.shape[0]
    assert st["mean_pairwise_cos"] == pytest.approx(float((cos.sum() - n) / (n * (n - 1))), abs=1e-5)
    u = F.normalize(f, dim=0)
    nb = torch.cat([(u[:, :, 1:] * u[:, :, :-1]).sum(0).flatten(), (u[:, 1:] * u[:, :-1]).sum(0).flatten()])
    assert st["neighbour_cos"] == pytest.approx(float(nb.mean()), abs=1e-6)
    assert st["pca"].shape == (5, 6, 3) and st["pca"].dtype == np.uint8 and st["norm"].shape == (5, 6)
    const = A._feature_stats(torch.ones(4, 3, 3))
    assert const["neighbour_cos"] == pytest.approx(1.0) and const["mean_pairwise_cos"] == pytest.approx(1.0)


def test_mit_attention_map_reproduces_the_module_output():
    """One head: the map of the query token, applied to the values, is the attention's output there."""
    from segkit.models.backbones.mit import EfficientSelfAttention, map_to_tokens, tokens_to_map

    torch.manual_seed(0)
    m = EfficientSelfAttention(16, num_heads=1, sr_ratio=2).eval()
    h, w = 6, 8
    x = torch.randn(1, h * w, 16)
    with torch.no_grad():
        out = m(x, h, w)
        r = A._attention_of(m, (x, h, w), out, (24, 32), (9, 21), None)
        qy, qx = r["query_token"]
        assert (qy, qx) == (9 * h // 24, 21 * w // 32)
        kv_in = m.norm(map_to_tokens(m.sr(tokens_to_map(x, h, w))))
        v = m.kv(kv_in)[..., 16:]
        expect = m.proj(r["maps"].reshape(1, 1, -1) @ v)[0, 0]
    assert r["maps"].shape == (1, h // 2, w // 2)
    assert torch.allclose(expect, out[0, qy * w + qx], atol=1e-5)


def test_beit_attention_map_reproduces_the_module_output():
    """One head, random q/v biases and relative position table: map (+ the [CLS] remainder) × values = output."""
    from segkit.models.backbones.beit import BEiTAttention

    torch.manual_seed(0)
    m = BEiTAttention(16, num_heads=1, window_size=(4, 5)).eval()
    with torch.no_grad():
        for p in (m.q_bias, m.v_bias, m.relative_position_bias_table):
            p.normal_()
    for h, w in [(4, 5), (3, 6)]:  # the window the table was made for, and a resized table
        x = torch.randn(1, 1 + h * w, 16)
        with torch.no_grad():
            out = m(x, h, w)
            r = A._attention_of(m, (x, h, w), out, (16 * h, 16 * w), (9, 13), None)
            qy, qx = r["query_token"]
            v = F.linear(x, m.qkv.weight[32:], m.v_bias)[0]
            a = r["maps"].flatten()
            expect = m.proj((1 - a.sum()) * v[0] + a @ v[1:])
        assert r["maps"].shape == (1, h, w) and 0 < float(a.sum()) < 1
        assert torch.allclose(expect, out[0, 1 + qy * w + qx], atol=1e-5)


def test_dca_class_query_maps_reproduce_the_cross_attention_output():
    from segkit.models.heads.rsseg.dca import CrossAttention

    torch.manual_seed(0)
    m = CrossAttention(16, num_heads=1, l2_norm=True).eval()
    q, t = torch.randn(1, 3, 16), torch.randn(1, 4 * 5, 16)
    with torch.no_grad():
        out = m(q, t)
        r = A._attention_of(m, (q, t), out, (32, 40), (0, 0), None)
        expect = m.proj(r["maps"].reshape(1, 3, -1) @ m.v(t))
    assert r["kind"] == "class_query" and r["maps"].shape == (3, 4, 5)
    assert torch.allclose(r["maps"].flatten(1).sum(1), torch.ones(3), atol=1e-6)
    assert torch.allclose(expect, out[0], atol=1e-5)


@pytest.mark.parametrize("name", ["segformer-b0", "rsseg-vit-ti", "segmenter-vit-b", "beit-linear-b"])
def test_attention_maps_of_zoo_models(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=4)
    res = A.attention_maps(model, _sample(64, 96))
    layers = [k for k in res if k != "query_yx"]
    assert layers
    for k in layers:
        maps = res[k]["maps"]
        mass = maps.flatten(1).sum(1)
        if name == "segmenter-vit-b":  # joint attention: the rest of the mass is on the class tokens
            assert ((mass > 0.5) & (mass < 1)).all()
        elif name == "beit-linear-b":  # the rest of the mass is on [CLS]
            assert ((mass > 0) & (mass < 1)).all() and res[k]["kind"] == "pixel_query"
        else:
            assert torch.allclose(mass, torch.ones(maps.shape[0]), atol=1e-4)
        if res[k]["kind"] == "class_query":
            assert maps.shape[0] == 4
    with pytest.raises(ValueError, match="not an attention module"):
        A.attention_maps(model, _sample(64, 96), ["decode_head"])


def test_grad_cam_points_at_the_class_region():
    """Features = the image's channels; class c's logit = channel c: its CAM is the pixels where channel c is lit."""
    enc = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        enc.weight.zero_()
        enc.weight[0, 0] = 1.0
        enc.weight[1, 1] = 1.0

    class Enc(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = enc

        def forward(self, x):
            return Features(stages=[self.conv(x)])

    head = _Linear1x1(2, 2)
    with torch.no_grad():
        head.conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        head.conv.bias.zero_()
    model = Segmentor(Enc(), head, num_classes=2)
    img = torch.zeros(1, 3, 16, 16)
    img[:, 0, :, :8] = 1.0  # class 0 on the left
    img[:, 1, :, 8:] = 1.0  # class 1 on the right
    s = A.Sample(image=img, rgb=np.zeros((16, 16, 3), np.uint8), label=None, name="t")
    for c, (inside, outside) in enumerate(((slice(0, 8), slice(8, 16)), (slice(8, 16), slice(0, 8)))):
        r = A.grad_cam(model, s, "backbone#0", c)
        assert r["target_pixels"] == 128
        assert r["cam"][:, inside].min() == pytest.approx(1.0) and r["cam"][:, outside].max() == pytest.approx(0.0)
    label = torch.zeros(16, 16, dtype=torch.int64)
    label[:, 8:] = 1
    i, o = A.cam_inside_outside(A.grad_cam(model, s, "backbone#0", 1)["cam"], label, 1)
    assert i == pytest.approx(1.0) and o == pytest.approx(0.0)


# ----------------------------------------------------------------------------- sizes
def test_object_size_counter_by_hand():
    """Class 1: a 2x2 object (small) and a 4x5 object (medium with thresholds 5, 20 → 20 px is large)."""
    label = np.zeros((10, 12), np.int64)
    label[0:2, 0:2] = 1  # 4 px → small (< 5)
    label[5:9, 6:11] = 1  # 20 px → large (>= 20)
    label[9, 0] = 255
    pred = label.copy()
    pred[9, 0] = 1  # on an ignored pixel: not counted
    pred[0, 0] = 0  # one missed pixel of the small object
    pred[0, 4] = 1  # FP nearest to the small object
    pred[9, 11] = 1  # FP nearest to the large object
    c = A.ObjectSizeCounter(2, thresholds=(5, 20))
    c.update(torch.from_numpy(pred), torch.from_numpy(label))
    r = c.compute()
    assert r["small"]["objects"][1] == 1 and r["large"]["objects"][1] == 1 and r["medium"]["objects"][1] == 0
    assert r["small"]["gt_pixels"][1] == 4 and r["small"]["tp_pixels"][1] == 3 and r["small"]["fp_pixels"][1] == 1
    assert r["large"]["gt_pixels"][1] == 20 and r["large"]["tp_pixels"][1] == 20 and r["large"]["fp_pixels"][1] == 1
    assert r["small"]["IoU"][1] == pytest.approx(100 * 3 / 5) and r["large"]["IoU"][1] == pytest.approx(100 * 20 / 21)
    assert np.isnan(r["medium"]["IoU"][1])
    cm = ConfusionMatrix(2)
    cm.update(torch.from_numpy(pred), torch.from_numpy(label))
    m = cm.matrix.numpy()
    assert r["totals"]["gt_pixels"] == m.sum(1).tolist()
    assert r["totals"]["tp_pixels"] == np.diag(m).tolist()
    assert r["totals"]["fp_pixels"] == (m.sum(0) - np.diag(m)).tolist()


def test_object_size_counter_false_positive_without_object():
    label = np.zeros((4, 4), np.int64)
    pred = label.copy()
    pred[0, 0] = 1
    c = A.ObjectSizeCounter(2)
    c.update(pred, label)
    r = c.compute()
    assert r["fp_no_object"] == [0, 1] and r["totals"]["fp_pixels"] == [0, 1]
    with pytest.raises(ValueError, match="thresholds"):
        A.ObjectSizeCounter(2, thresholds=(10, 5))


def test_sizes_buckets_sum_to_the_evaluators_confusion_matrix(mini_camvid):
    from segkit.data import build_dataset
    from segkit.data.protocol import TestProtocol

    torch.manual_seed(0)
    model = build_model("segformer-b0", num_classes=11)
    ds = build_dataset(
        {"type": "split", "root": str(mini_camvid), "split": "test"},
        transform=TestProtocol(scale=(240, 180)).transform(model.mean, model.std),
    )
    res = A.object_size_iou(model, ds, progress=False)
    m = np.array(res["confusion_matrix"])
    t = res["sizes"]["totals"]
    assert t["gt_pixels"] == m.sum(1).tolist()
    assert t["tp_pixels"] == np.diag(m).tolist()
    assert t["fp_pixels"] == (m.sum(0) - np.diag(m)).tolist()
    assert sum(sum(res["sizes"][b]["objects"]) for b in A.BUCKETS) > 10


# ----------------------------------------------------------------------------- CLI
def _segkit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "segkit", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_erf_features_attention_gradcam_write_pngs_and_json(tmp_path, mini_camvid):
    from PIL import Image

    from segkit.data.protocol import TestProtocol

    torch.manual_seed(0)
    model = build_model("segformer-b0", num_classes=11)
    model.test_protocol = TestProtocol(scale=(320, 240)).to_dict()  # the tools use the model's test resize
    model.save_pretrained(tmp_path / "m")
    img = mini_camvid / "images" / "test"
    common = ["--data", str(mini_camvid), "--split", "test"]
    runs = {
        "erf": ["--num", "1", "--layer", "backbone#1", "--layer", "decode_head"],
        "features": ["--layer", "backbone#3"],
        "attention": ["--query", "100", "200"],
        "gradcam": ["--num", "1", "--classes", "0", "2"],
    }
    for tool, extra in runs.items():
        out = tmp_path / tool
        r = _segkit("analyze", tool, str(tmp_path / "m"), *common, *extra, "--out", str(out))
        assert r.returncode == 0, r.stderr
        png = Image.open(out / f"{tool}.png")
        assert png.size[0] > 100 and png.size[1] > 100
        data = json.loads((out / f"{tool}.json").read_text())
        assert data
    erf = json.loads((tmp_path / "erf" / "erf.json").read_text())
    assert set(erf["layers"]) == {"backbone#1", "decode_head"}
    assert np.load(tmp_path / "erf" / "erf_backbone_1.npy").shape == tuple(erf["image_size"])
    r = _segkit("analyze", "attention", "segformer-b0", "--images", str(img), "--out", str(tmp_path / "a2"))
    assert r.returncode == 0, r.stderr


def test_cli_analyze_bad_inputs(tmp_path, mini_camvid):
    images = str(mini_camvid / "images" / "test")
    out = str(tmp_path / "o")
    r = _segkit("analyze", "erf", "segformer-b0", "--images", images, "--layer", "backbone.nope", "--out", out)
    assert r.returncode == 2 and "no module 'backbone.nope'" in r.stderr and "Traceback" not in r.stderr  # usage
    r = _segkit("analyze", "erf", "segformer-b0", "--images", str(tmp_path / "missing.png"), "--out", out)
    assert r.returncode == 1 and "missing.png" in r.stderr and "Traceback" not in r.stderr
    r = _segkit(
        "analyze",
        "gradcam",
        "segformer-b0",
        "--num-classes",
        "11",
        "--images",
        images,
        "--classes",
        "bogus",
        "--out",
        out,
    )
    assert r.returncode == 2 and "unknown class 'bogus'" in r.stderr  # a bad option value: usage, as everywhere
    r = _segkit("analyze", "features", "segformer-b0", "--images", images, "--index", "5", "--out", out)
    assert r.returncode == 2 and "--index 5" in r.stderr
    r = _segkit("analyze", "layers", "segformer-b0", "--depth", "1")
    assert r.returncode == 0 and "decode_head" in r.stdout and "MixVisionTransformer" in r.stdout


def test_cli_sizes(tmp_path, mini_camvid):
    torch.manual_seed(0)
    build_model("segformer-b0", num_classes=11).save_pretrained(tmp_path / "m")
    out = tmp_path / "sizes"
    r = _segkit(
        "analyze", "sizes", str(tmp_path / "m"), "--data", str(mini_camvid), "--scale", "240", "180", "--out", str(out)
    )
    assert r.returncode == 0, r.stderr
    data = json.loads((out / "sizes.json").read_text())
    m = np.array(data["confusion_matrix"])
    assert data["sizes"]["totals"]["gt_pixels"] == m.sum(1).tolist() and data["num_images"] == 2
    assert "IoU small" in (out / "sizes.md").read_text() and (out / "sizes.png").stat().st_size > 1000
