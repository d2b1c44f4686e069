"""SegNeXt family: MSCAN encoder, LightHamHead / NMF2D, checkpoint conversion."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import segkit
from segkit.checkpoints import CheckpointError, load_checkpoint
from segkit.models.backbones.mscan import MSCAN, FusedMSCABlock
from segkit.models.contract import Features
from segkit.models.fuse import fuse_for_inference
from segkit.models.heads.ham_head import NMF2D
from segkit.models.segnext import convert

torch.set_num_threads(1)
KEYS_DIR = Path(__file__).resolve().parent / "data" / "checkpoint-keys"

# computed from the reference module definitions (official mscan.py / ham_head.py); docs/model_zoo.md.
COUNTS = {  # variant: (encoder, total ADE K=150, total Cityscapes K=19)
    "t": (3_903_584, 4_263_414, 4_229_747),
    "s": (13_450_176, 13_932_886, 13_899_219),
    "b": (26_277_824, 27_636_310, 27_569_107),
    "l": (44_636_864, 48_926_550, 48_792_275),
}


@pytest.fixture(scope="module")
def tiny_t():
    torch.manual_seed(0)
    return segkit.build_model("segnext-t", num_classes=150).eval()


# ----------------------------------------------------------------------------- counts
@pytest.mark.parametrize("variant", list(COUNTS))
def test_parameter_counts(variant):
    enc, ade, city = COUNTS[variant]
    model = segkit.build_model(f"segnext-{variant}", num_classes=150)
    assert segkit.count_parameters(model.backbone) == enc
    assert segkit.count_parameters(model) == ade
    assert model.backbone.out_channels == list(model.backbone.embed_dims)
    model19 = segkit.build_model(f"segnext-{variant}", num_classes=19)
    assert segkit.count_parameters(model19) == city


def test_variant_table_and_drop_path():
    from segkit.models.layers import DropPath

    model = segkit.build_model("segnext-l")
    assert model.backbone.depths == (3, 5, 27, 3)
    rates = [m.drop_prob for m in model.backbone.modules() if isinstance(m, DropPath)]
    # linspace(0, 0.3, 38): first block has rate 0 (Identity), the last 0.3
    assert len(rates) == 37 and rates[-1] == pytest.approx(0.3) and rates[0] == pytest.approx(0.3 / 37)
    blk = model.backbone.block1[0]
    assert torch.all(blk.layer_scale_1 == 1e-2) and blk.layer_scale_1.shape == (64,)
    assert model.backbone.norm1.eps == 1e-5


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("size", [(64, 64), (72, 88)])
def test_output_shapes(tiny_t, size):
    h, w = size
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        feats = tiny_t.backbone(x).stages
        logits8 = tiny_t.encode_decode(x)
        logits = tiny_t(x)
    hs, ws = [-(-h // 4)], [-(-w // 4)]
    for _ in range(3):
        hs.append(-(-hs[-1] // 2))
        ws.append(-(-ws[-1] // 2))
    assert [tuple(f.shape) for f in feats] == [(2, c, a, b) for c, a, b in zip((32, 64, 160, 256), hs, ws)]
    assert tuple(logits8.shape) == (2, 150, hs[1], ws[1])
    assert tuple(logits.shape) == (2, 150, h, w)
    assert torch.isfinite(logits).all()


def test_training_step_backward():
    torch.manual_seed(0)
    model = segkit.build_model("segnext-t", num_classes=5).train()
    x = torch.randn(2, 3, 64, 64)
    y = torch.randint(0, 5, (2, 64, 64))
    loss = model.loss(x, y)["loss"]
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.backbone.block1[0].attn.spatial_gating_unit.conv2_2.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------ reference math
def _ref_mscan(enc: MSCAN, x: torch.Tensor) -> list[torch.Tensor]:
    """MSCAN in the reference's token layout, written with functional ops from the state dict."""
    sd = enc.state_dict()

    def bn(t, p):
        return F.batch_norm(
            t, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"], False, 0.0, 1e-5
        )

    def conv(t, p, stride=1, groups=1):
        w = sd[p + ".weight"]
        return F.conv2d(t, w, sd[p + ".bias"], stride, (w.shape[2] // 2, w.shape[3] // 2), 1, groups)

    outs = []
    for s in range(1, 5):
        if s == 1:
            x = bn(
                conv(F.gelu(bn(conv(x, "patch_embed1.proj.0", 2), "patch_embed1.proj.1")), "patch_embed1.proj.3", 2),
                "patch_embed1.proj.4",
            )
        else:
            x = bn(conv(x, f"patch_embed{s}.proj", 2), f"patch_embed{s}.norm")
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        for j in range(enc.depths[s - 1]):
            p = f"block{s}.{j}."
            x = tokens.transpose(1, 2).reshape(b, c, h, w)
            y = bn(x, p + "norm1")
            u = F.gelu(conv(y, p + "attn.proj_1"))
            g = p + "attn.spatial_gating_unit."
            a = conv(u, g + "conv0", groups=c)
            br = [conv(conv(a, g + f"conv{i}_1", groups=c), g + f"conv{i}_2", groups=c) for i in range(3)]
            att = conv(a + br[0] + br[1] + br[2], g + "conv3")
            y = conv(att * u, p + "attn.proj_2") + y
            x = x + sd[p + "layer_scale_1"].view(-1, 1, 1) * y
            z = bn(x, p + "norm2")
            hid = sd[p + "mlp.fc1.weight"].shape[0]
            z = conv(F.gelu(conv(conv(z, p + "mlp.fc1"), p + "mlp.dwconv.dwconv", groups=hid)), p + "mlp.fc2")
            x = x + sd[p + "layer_scale_2"].view(-1, 1, 1) * z
            tokens = x.flatten(2).transpose(1, 2)
        tokens = F.layer_norm(tokens, (c,), sd[f"norm{s}.weight"], sd[f"norm{s}.bias"], 1e-5)
        x = tokens.reshape(b, h, w, c).permute(0, 3, 1, 2)
        outs.append(x)
    return outs


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                r = torch.rand(t.shape, generator=g)
                t.copy_(0.5 + r if name.endswith(("running_var", ".weight")) and t.ndim == 1 else r - 0.5)


@pytest.mark.parametrize("channels_last,fused", [(False, True), (True, True), (True, False), (False, False)])
def test_mscan_matches_reference_math(channels_last, fused):
    """Eval forward, plain or fused (BN + layer scale folded into the 1×1 convs), equals the reference math."""
    enc = MSCAN(embed_dims=(8, 16, 24, 32), depths=(1, 2, 1, 1), mlp_ratios=(2, 2, 4, 4)).eval()
    _randomise(enc, seed=1)
    x = torch.randn(2, 3, 40, 56)
    enc.cpu_channels_last = channels_last
    run = fuse_for_inference(enc) if fused else enc
    if fused:  # stem, 3 down-sampling convs and 5 blocks replaced; the original is untouched
        assert run.num_fused_modules == 1 + 3 + 5 and not any(isinstance(m, FusedMSCABlock) for m in enc.modules())
        assert sum(isinstance(m, FusedMSCABlock) for m in run.modules()) == 5
    with torch.no_grad():
        ours, ref = run(x).stages, _ref_mscan(enc, x)
    assert ours[0].is_contiguous(memory_format=torch.channels_last) == channels_last
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def _ref_nmf(x: torch.Tensor, bases: torch.Tensor, steps: int, eps: float = 1e-6) -> torch.Tensor:
    """Per-sample NMF with explicit matrices: X (D, N) ≈ Bs (D, R) · Cᵀ (R, N)."""
    out = []
    for i in range(x.shape[0]):
        xm = x[i].reshape(x.shape[1], -1).double()
        bs = bases[i].double()
        co = torch.softmax(xm.T @ bs, dim=1)
        for _ in range(steps):
            co = co * (xm.T @ bs) / (co @ (bs.T @ bs) + eps)
            bs = bs * (xm @ co) / (bs @ (co.T @ co) + eps)
        co = co * (xm.T @ bs) / (co @ (bs.T @ bs) + eps)
        out.append((bs @ co.T).reshape(x.shape[1:]))
    return torch.stack(out).float()


def test_nmf_matches_reference_and_eval_bases():
    nmf = NMF2D(md_r=4, eval_steps=7).eval()
    x = torch.rand(2, 8, 5, 6)
    g = torch.Generator().manual_seed(0)
    seeded = F.normalize(torch.rand((1, 8, 4), generator=g), dim=1)
    expected = _ref_nmf(x, seeded.expand(2, -1, -1), steps=7)
    torch.testing.assert_close(nmf(x), expected, rtol=1e-4, atol=1e-5)
    # explicit bases, train-mode step count
    b = F.normalize(torch.rand(2, 8, 4), dim=1)
    nmf.train()
    torch.testing.assert_close(nmf(x, bases=b), _ref_nmf(x, b, steps=6), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="bases must have shape"):
        nmf(x, bases=b[:1])


def test_nmf_per_sample_eval_bases_follow_the_issue_formula():
    x = torch.rand(3, 8, 5, 6)
    nmf = NMF2D(md_r=4, eval_steps=7, per_sample_eval_bases=True, seed=5).eval()
    per_sample = F.normalize(torch.rand((3, 8, 4), generator=torch.Generator().manual_seed(5)), dim=1)
    torch.testing.assert_close(nmf(x), _ref_nmf(x, per_sample, steps=7), rtol=1e-4, atol=1e-5)
    shared = NMF2D(md_r=4, eval_steps=7, seed=5).eval()
    torch.testing.assert_close(nmf(x[:1]), shared(x[:1]))  # identical at batch 1
    assert not torch.allclose(nmf(x)[1], shared(x)[1])  # per batch position beyond


def test_nmf_channels_last_matches_contiguous_and_runs_on_meta():
    nmf = NMF2D(md_r=4).eval()
    x = torch.rand(2, 8, 5, 6)
    out_cl = nmf(x.contiguous(memory_format=torch.channels_last))
    assert out_cl.is_contiguous(memory_format=torch.channels_last) and not out_cl.is_contiguous()
    torch.testing.assert_close(out_cl, nmf(x), rtol=1e-5, atol=1e-6)
    # the FLOP counter traces on the meta device, which has no autocast
    assert nmf(torch.empty(2, 8, 5, 6, device="meta")).shape == (2, 8, 5, 6)


def test_nmf_float32_under_autocast():
    nmf = NMF2D(md_r=4).eval()
    x = torch.rand(1, 8, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = nmf(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), nmf(x), rtol=1e-2, atol=1e-2)


# ------------------------------------------------------------- NMF randomness
def test_head_eval_deterministic_train_random(tiny_t):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = tiny_t.encode_decode(x), tiny_t.encode_decode(x)
        assert torch.equal(a, b)
        fresh = segkit.build_model("segnext-t", num_classes=150)
        fresh.load_state_dict(tiny_t.state_dict())
        assert torch.equal(fresh.eval().encode_decode(x), a)
        # batch-invariant: an image's prediction does not depend on its batch
        both = tiny_t.encode_decode(torch.cat([torch.randn(1, 3, 64, 64), x]))
        torch.testing.assert_close(both[1:], a, rtol=1e-4, atol=1e-4)
        # another seed -> other bases -> other logits
        fresh.decode_head.hamburger.ham.seed = 1
        assert not torch.allclose(fresh.encode_decode(x), a)
    head = tiny_t.decode_head
    feats = Features(stages=[f.detach() for f in tiny_t.backbone(x).stages])
    head.train()
    try:
        head.dropout.p = 0.0  # isolate the NMF bases as the only source of randomness
        with torch.no_grad():
            t1, t2 = head(feats), head(feats)
        assert not torch.allclose(t1, t2)
    finally:
        head.dropout.p = 0.1
        head.eval()


def _graph_size(t: torch.Tensor) -> int:
    seen, stack = set(), [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        stack.extend(f for f, _ in fn.next_functions)
    return len(seen)


def test_one_step_grad():
    x = torch.rand(2, 16, 6, 6)
    bases = F.normalize(torch.rand(2, 16, 4), dim=1)
    outs, grads, sizes = [], [], []
    for one_step in (False, True):
        nmf = NMF2D(md_r=4, one_step_grad=one_step).train()
        xi = x.clone().requires_grad_(True)
        out = nmf(xi, bases=bases)
        sizes.append(_graph_size(out))
        (out * torch.linspace(0, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append(xi.grad)
    assert torch.equal(outs[0], outs[1])  # same forward values
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert sizes[1] < sizes[0] / 4  # far smaller autograd graph
    assert not torch.allclose(grads[0], grads[1])  # a different (approximate) gradient
    model = segkit.build_model("segnext-t", num_classes=3, one_step_grad=True)
    assert model.decode_head.hamburger.ham.one_step_grad
    model.loss(torch.randn(1, 3, 64, 64), torch.randint(0, 3, (1, 64, 64)))["loss"].backward()
    assert model.decode_head.squeeze.conv.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------ checkpoints
def _listing(name: str) -> dict[str, torch.Tensor]:
    """Random state dict with exactly the names/shapes/dtypes of a key listing file."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for line in (KEYS_DIR / name).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        shape = [int(s) for s in re.findall(r"\d+", shape)]
        if dtype == "int64":
            state[key] = torch.randint(0, 1000, shape, generator=g)
        else:
            state[key] = torch.rand(shape, generator=g) + 0.1
    return state


def _official_name(mmseg_key: str) -> str:
    return re.sub(r"\.mlp\.dwconv\.(weight|bias)$", r".mlp.dwconv.dwconv.\1", mmseg_key)


@pytest.mark.parametrize("listing,variant", [("mmseg_segnext-t.txt", "t"), ("mmseg_segnext-b.txt", "b")])
def test_mmseg_listing_loads_strictly(tmp_path, listing, variant):
    src = _listing(listing)
    assert any(re.search(r"\.mlp\.dwconv\.weight$", k) for k in src)
    path = tmp_path / "mmseg.pth"
    torch.save({"meta": {}, "state_dict": src}, path)
    model = segkit.build_model(f"segnext-{variant}", num_classes=150)
    report = load_checkpoint(model, path, strict=True, verbose=False)
    assert report.format == "mmseg-segnext"
    assert not report.missing and not report.unexpected and not report.dropped
    own = model.state_dict()
    assert len(own) == len(src)
    for k, v in src.items():
        assert torch.equal(own[_official_name(k)], v), k


def test_official_names_pass_through(tmp_path):
    torch.manual_seed(3)
    src_model = segkit.build_model("segnext-t", num_classes=19)
    _randomise(src_model, seed=3)
    src = src_model.state_dict()
    path = tmp_path / "official.pth"
    torch.save(src, path)
    model = segkit.build_model("segnext-t", num_classes=19)
    report = load_checkpoint(model, path, verbose=False)
    assert report.format == "segnext"
    for k, v in model.state_dict().items():
        assert torch.equal(v, src[k]), k


@pytest.mark.parametrize("mmseg_names", [False, True])
def test_imagenet_encoder_only(tmp_path, mmseg_names):
    src = {k[len("backbone.") :]: v for k, v in _listing("mmseg_segnext-t.txt").items() if k.startswith("backbone.")}
    if not mmseg_names:
        src = {_official_name(k): v for k, v in src.items()}
    src["head.weight"] = torch.randn(1000, 256)
    src["head.bias"] = torch.randn(1000)
    path = tmp_path / "mscan_t.pth"
    torch.save({"state_dict": src}, path)
    model = segkit.build_model("segnext-t", num_classes=150)
    head_before = {k: v.clone() for k, v in model.decode_head.state_dict().items()}
    report = load_checkpoint(model, path, strict=True, verbose=False)
    assert report.format == ("mmseg-mscan-imagenet" if mmseg_names else "mscan-imagenet")
    assert sorted(report.dropped) == ["head.bias", "head.weight"]
    assert any("classifier" in n for n in report.notes)
    assert report.missing and all(k.startswith("decode_head.") for k in report.missing)
    for k, v in model.decode_head.state_dict().items():
        assert torch.equal(v, head_before[k]), k
    own = model.backbone.state_dict()
    for k, v in src.items():
        if not k.startswith("head."):
            assert torch.equal(own[_official_name(k)], v), k


def test_wrong_variant_and_family(tmp_path):
    model_t = segkit.build_model("segnext-t", num_classes=150)
    with pytest.raises(CheckpointError, match=r"SegNeXt-B.*SegNeXt-T"):
        convert(_listing("mmseg_segnext-b.txt"), model_t)
    path = tmp_path / "b.pth"
    torch.save(_listing("mmseg_segnext-b.txt"), path)
    with pytest.raises(CheckpointError, match=str(path).replace(".", r"\.")):
        load_checkpoint(model_t, path, strict=False, verbose=False)
    # same widths, other depths (T-sized head): S weights into a B model
    s_model = segkit.build_model("segnext-s", num_classes=150)
    with pytest.raises(CheckpointError, match="depths"):
        convert(s_model.state_dict(), segkit.build_model("segnext-b", num_classes=150))
    # a SegFormer/MiT-like encoder is refused with a hint
    mit_like = {
        "backbone.block1.0.attn.q.weight": torch.zeros(32, 32),
        "backbone.block1.0.attn.kv.weight": torch.zeros(64, 32),
    }
    with pytest.raises(CheckpointError, match="SegFormer"):
        convert(mit_like, model_t)
    with pytest.raises(CheckpointError, match="no SegNeXt"):
        convert({"foo.weight": torch.zeros(1)}, model_t)


def test_missing_encoder_key_strict_vs_non_strict(tmp_path):
    src = _listing("mmseg_segnext-t.txt")
    gone = "backbone.block2.1.attn.spatial_gating_unit.conv1_2.weight"
    del src[gone]
    path = tmp_path / "partial.pth"
    torch.save(src, path)
    model = segkit.build_model("segnext-t", num_classes=150)
    before = model.state_dict()[gone].clone()
    with pytest.raises(CheckpointError, match="encoder key"):
        load_checkpoint(model, path, strict=True, verbose=False)
    report = load_checkpoint(model, path, strict=False, verbose=False)
    assert report.missing == [gone]
    assert torch.equal(model.state_dict()[gone], before)
    assert torch.equal(
        model.state_dict()["backbone.block2.1.attn.proj_1.weight"], src["backbone.block2.1.attn.proj_1.weight"]
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_nmf_eval_exportable():
    """Eval bases are a cached constant, so tracing/ONNX export sees no random generator."""
    pytest.importorskip("onnx")
    import io

    nmf = NMF2D(md_r=4, channels=8).eval()
    x = torch.rand(1, 8, 4, 4)
    buf = io.BytesIO()
    torch.onnx.export(nmf, (x,), buf, dynamo=False, opset_version=17)
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(buf.getvalue())
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out), nmf(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("amp", [None, "bf16"])
def test_horizontal_strip_trick_has_the_plain_convs_values_and_gradients(amp, monkeypatch):
    """MSCA's 1×k convs compute their weight gradient on transposed maps in CPU training (speed
    only): values and all gradients equal the plain ``nn.Conv2d`` path's, with and without autocast."""
    import segkit.models.backbones.mscan as mscan

    if amp == "bf16" and not torch.backends.mkldnn.is_available():
        pytest.skip("bf16 autocast needs oneDNN")
    torch.manual_seed(0)
    # 32 channels: with <= 16 channels, torch 2.13's oneDNN bf16 depth-wise 1×21 conv on a
    # channels_last map hangs (with or without this trick); MSCAN's widths are >= 32.
    m = mscan.MSCA(32)
    x0 = torch.randn(2, 32, 40, 48).contiguous(memory_format=torch.channels_last)
    calls = []
    original = mscan._HorizontalStripConv.apply
    monkeypatch.setattr(mscan._HorizontalStripConv, "apply", lambda *a: calls.append(1) or original(*a))

    def run(min_pixels):
        monkeypatch.setattr(mscan, "STRIP_TRICK_MIN_PIXELS", min_pixels)
        m.zero_grad()
        x = x0.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            y = m(x)
        y.float().square().mean().backward()
        return y.float(), x.grad, {n: p.grad.clone() for n, p in m.named_parameters()}

    y_plain, gx_plain, g_plain = run(10**9)
    assert not calls
    y, gx, g = run(1024)
    assert len(calls) == 3  # the three 1×k convs (40·48 ≥ 1024 pixels)
    tol = dict(rtol=2e-2, atol=2e-2) if amp else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y, y_plain, **tol)
    torch.testing.assert_close(gx, gx_plain, **tol)
    for name in g_plain:
        torch.testing.assert_close(g[name], g_plain[name], **tol, msg=name)
    assert g["conv2_1.weight"].dtype == torch.float32 and g["conv2_1.weight"].shape == (32, 1, 1, 21)
