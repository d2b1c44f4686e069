"""SegNeXt's ablation models (paper Tabs. 5–8, supplement Tab. 2): the context modules against
independent per-pixel formulas, the MSCA switches, and every switch through a training step.

The parameter / GFLOP figures of the named ablation models are checked with all other paper
rows in ``test_paper_figures.py`` (they are in ``segkit.models.segnext.PAPER_ROWS``).
"""

import math

import pytest
import torch
import torch.nn.functional as F

from segkit.models.backbones.mscan import LKA, MSCA, MSCAN
from segkit.models.heads.context_blocks import CrissCrossAttention, EMAModule, NonLocal2d, RecurrentCrissCross
from segkit.models.heads.ham_head import Hamburger, LightHamHead
from segkit.models.segnext import ABLATIONS, PAPER_ROWS, build_segnext
from segkit.models.zoo import MODELS, build_model

torch.manual_seed(0)


def _randomise(module: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial parameters (zero-initialised gammas / norms would hide the attention terms)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return module


# ----------------------------------------------------------------------------- context modules
def test_criss_cross_attention_matches_a_per_pixel_loop():
    c, h, w = 16, 3, 4
    cca = _randomise(CrissCrossAttention(c)).double()
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    q, k, v = cca.query_conv(x), cca.key_conv(x), cca.value_conv(x)
    expected = torch.empty_like(x)
    for b in range(2):
        for i in range(h):
            for j in range(w):
                keys = [(g, j) for g in range(h) if g != i] + [(i, g) for g in range(w)]  # (i, j) once
                assert len(keys) == h + w - 1
                e = torch.stack([q[b, :, i, j] @ k[b, :, r, s] for r, s in keys])
                a = torch.softmax(e, 0)
                agg = sum(a[n] * v[b, :, r, s] for n, (r, s) in enumerate(keys))
                expected[b, :, i, j] = cca.gamma * agg + x[b, :, i, j]
    torch.testing.assert_close(cca(x), expected)
    a_col, a_row = cca.attention(x)
    torch.testing.assert_close(a_col.sum(-1) + a_row.sum(-1), torch.ones(2, h, w, dtype=torch.float64))


def test_recurrence_two_reaches_every_pixel_and_shares_weights():
    rcca = _randomise(RecurrentCrissCross(8, recurrence=2))
    assert sum(p.numel() for p in rcca.parameters()) == sum(p.numel() for p in rcca.cca.parameters())
    x = torch.randn(1, 8, 5, 6, requires_grad=True)
    rcca(x)[0, :, 0, 0].sum().backward()
    assert (x.grad.abs().sum(1) > 0).all(), "after two criss-cross passes every pixel reaches (0, 0)"
    one = RecurrentCrissCross(8, recurrence=1)
    one.load_state_dict(rcca.state_dict())
    x.grad = None
    one(x)[0, :, 0, 0].sum().backward()
    assert (x.grad.abs().sum(1) == 0).sum() == 4 * 5, "one pass only reaches row 0 and column 0"


def test_ema_module_matches_an_independent_em_loop():
    c, k, n_stages = 6, 4, 3
    ema = EMAModule(c, num_bases=k, num_stages=n_stages, momentum=0.1).double().eval()
    x = torch.rand(2, c, 3, 3, dtype=torch.float64)
    bases0 = ema.bases.clone()
    for b in range(2):
        X = x[b].reshape(c, 9)
        mu = bases0[0].clone()
        for _ in range(n_stages):
            z = torch.stack([torch.softmax(X[:, n] @ mu, 0) for n in range(9)])  # (N, K) E-step
            mu = torch.stack([(X * (z[:, j] / (1e-6 + z[:, j].sum()))).sum(1) for j in range(k)], 1)  # M-step
            mu = mu / mu.norm(dim=0, keepdim=True).clamp_min(1e-12)
        expected = (mu @ z.T).reshape(c, 3, 3)
        torch.testing.assert_close(ema(x)[b], expected)
    assert torch.equal(ema.bases, bases0), "eval mode leaves the bases alone"


def test_ema_moving_average_of_the_bases_in_training():
    ema = EMAModule(6, num_bases=4, num_stages=2, momentum=0.25).double().train()
    x = torch.rand(3, 6, 4, 4, dtype=torch.float64)
    before = ema.bases.clone()
    mu, _ = ema.em(x.reshape(3, 6, 16))
    ema(x)
    new = F.normalize(mu.mean(0, keepdim=True), dim=1)
    torch.testing.assert_close(ema.bases, 0.75 * before + 0.25 * new)


def test_ema_gradient_only_with_em_grad():
    x = torch.rand(1, 6, 4, 4, requires_grad=True)
    assert not EMAModule(6, num_bases=4).eval()(x).requires_grad, "reference EMA: no gradient through EM"
    EMAModule(6, num_bases=4, em_grad=True).eval()(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_non_local_matches_the_embedded_gaussian_formula():
    c, h, w = 8, 2, 3
    nl = _randomise(NonLocal2d(c, reduction=2, num_groups=2)).double()
    x = torch.randn(1, c, h, w, dtype=torch.float64)
    th, ph, g = (m(x)[0].reshape(4, h * w) for m in (nl.theta, nl.phi, nl.g))
    y = torch.empty(4, h * w, dtype=torch.float64)
    for i in range(h * w):
        f = torch.tensor([math.exp((th[:, i] @ ph[:, j]).item() / math.sqrt(4)) for j in range(h * w)])
        y[:, i] = (g * (f / f.sum())).sum(1)
    expected = x + nl.conv_out(y.reshape(1, 4, h, w))
    torch.testing.assert_close(nl(x), expected)


def test_non_local_and_cc_start_as_identity():
    x = torch.randn(1, 32, 5, 5)
    torch.testing.assert_close(NonLocal2d(32)(x), x)  # zero-initialised output norm
    torch.testing.assert_close(CrissCrossAttention(32)(x), x)  # gamma = 0


# ----------------------------------------------------------------------------- MSCA switches
def test_msca_switches():
    u = torch.randn(2, 8, 9, 9)
    full = MSCA(8)
    assert [n for n, _ in full.named_children()] == [
        "conv0", "conv0_1", "conv0_2", "conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3"
    ]  # fmt: skip
    only21 = MSCA(8, kernel_sizes=(21,))
    assert only21.conv0_1.kernel_size == (1, 21) and not hasattr(only21, "conv1_1")
    a = only21.conv0(u)
    torch.testing.assert_close(only21(u), only21.conv3(only21.conv0_2(only21.conv0_1(a)) + a) * u)
    no_att = MSCA(8, attention=False)
    no_att.load_state_dict(full.state_dict())
    torch.testing.assert_close(no_att(u) * u, full(u))
    no_mix = MSCA(8, channel_mixing=False)
    assert "conv3.weight" not in no_mix.state_dict()
    sd = {k: v for k, v in full.state_dict().items() if not k.startswith("conv3")}
    no_mix.load_state_dict(sd)
    a = full.conv0(u)
    s = a + sum(getattr(full, f"conv{i}_2")(getattr(full, f"conv{i}_1")(a)) for i in range(3))
    torch.testing.assert_close(no_mix(u), s * u)
    with pytest.raises(ValueError, match="odd"):
        MSCA(8, kernel_sizes=(8,))


def test_lka_is_vans_unit():
    lka = LKA(8)
    assert lka.conv_spatial.dilation == (3, 3) and lka.conv_spatial.kernel_size == (7, 7)
    u = torch.randn(1, 8, 30, 30)
    torch.testing.assert_close(lka(u), lka.conv1(lka.conv_spatial(lka.conv0(u))) * u)
    enc = MSCAN(attention_unit="lka")
    assert "block1.0.attn.spatial_gating_unit.conv_spatial.weight" in enc.state_dict()
    with pytest.raises(ValueError, match="msca_"):
        MSCAN(attention_unit="lka", msca_kernel_sizes=(7,))


# ----------------------------------------------------------------------------- models
def test_named_ablation_models_are_in_the_zoo_and_have_paper_rows():
    assert set(ABLATIONS) <= set(MODELS)
    rows = {r.model for r in PAPER_ROWS}
    assert set(ABLATIONS) <= rows
    m = build_model("segnext-b-nl", 19)
    assert m.name == "segnext-b-nl" and m.arch["context"] == "nl" and hasattr(m.decode_head, "nl_block")
    assert not hasattr(m.decode_head, "hamburger")
    ema = build_model("segnext-b-ema", 19).decode_head.hamburger
    assert ema.ham_in is None and isinstance(ema.ham, EMAModule)
    with pytest.raises(ValueError, match="context"):
        LightHamHead([64, 160, 256], 256, 256, 19, context="aspp")
    with pytest.raises(ValueError, match="head_in_index"):
        build_segnext("t", 19, head_in_index=(3, 1))


SWITCHES = [
    dict(context="cc"),
    dict(context="ema"),
    dict(context="nl"),
    dict(context="msca"),
    dict(decoder="mlp"),
    dict(head_in_index=(3,)),
    dict(head_in_index=(0, 1, 2, 3)),
    dict(attention_unit="lka"),
    dict(msca_kernel_sizes=(7,)),
    dict(msca_channel_mixing=False),
    dict(msca_attention=False),
]


@pytest.mark.parametrize("switch", SWITCHES, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_training_step_on_camvid_sized_input(switch):
    torch.manual_seed(0)
    model = build_segnext("t", num_classes=11, **switch).train()
    x = torch.randn(2, 3, 360, 480)
    y = torch.randint(0, 11, (2, 360, 480))
    logits = model(x)
    assert logits.shape == (2, 11, 360, 480)
    F.cross_entropy(logits, y).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    # conv_out.conv of the non-local block: its GroupNorm weight starts at 0 (identity block),
    # so the conv before it gets a zero gradient in the first step only.
    expected = ["decode_head.nl_block.conv_out.conv.weight"] if switch.get("context") == "nl" else []
    if switch.get("context") == "nl":  # and θ/φ/g sit behind conv_out as well
        expected += [f"decode_head.nl_block.{m}.{t}" for m in ("g", "theta", "phi") for t in ("weight", "bias")]
    if switch.get("context") == "cc":  # gamma = 0 hides q/k/v in the first step
        expected = [f"decode_head.hamburger.ham.cca.{m}.{t}" for m in ("query_conv", "key_conv", "value_conv")
                    for t in ("weight", "bias")]  # fmt: skip
    if switch.get("context") == "ema":  # the reference EM passes no gradient to squeeze's path through it
        expected = []
    assert sorted(no_grad) == sorted(expected)
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 11, 360, 480)


def test_ablation_model_round_trips_through_save_pretrained(tmp_path):
    model = build_model("segnext-b-ema", 11).eval()
    with torch.no_grad():
        model.decode_head.hamburger.ham.bases.mul_(-1)  # a trained state differs from the init
    model.save_pretrained(tmp_path / "m")
    from segkit.checkpoints import from_pretrained

    back = from_pretrained(tmp_path / "m")
    assert back.name == "segnext-b-ema"
    torch.testing.assert_close(back.decode_head.hamburger.ham.bases, model.decode_head.hamburger.ham.bases)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x))


def test_hamburger_without_ham_in():
    h = Hamburger(64, num_groups=8, filling="nmf", ham_in=False)
    assert "ham_in.conv.weight" not in h.state_dict()
    x = torch.rand(1, 64, 8, 8)
    assert h(x).shape == x.shape


def test_ema_bases_are_averaged_over_processes(tmp_path):
    """torchrun 2 processes (gloo): each rank sees other data, both end with the same bases, the moving
    average of the mean over ranks of their batch-mean μ (mmseg's reduce_mean)."""
    import subprocess

    from conftest import TORCHRUN_ENV, torchrun_command

    script = tmp_path / "ema_ddp.py"
    script.write_text(
        "import torch, torch.distributed as dist, torch.nn.functional as F\n"
        "from segkit.models.heads.context_blocks import EMAModule\n"
        "dist.init_process_group('gloo')\n"
        "r = dist.get_rank()\n"
        "torch.manual_seed(0)\n"
        "m = EMAModule(8, num_bases=4, num_stages=2, momentum=0.5).train()\n"
        "b0 = m.bases.clone()\n"
        "x = torch.randn(2, 8, 3, 3, generator=torch.Generator().manual_seed(100 + r))\n"
        "mu, _ = m.em(x.reshape(2, 8, 9))\n"
        "local = mu.mean(0, keepdim=True)\n"
        "m(x)\n"
        "parts = [torch.empty_like(local) for _ in range(2)]\n"
        "dist.all_gather(parts, local)\n"
        "assert not torch.allclose(parts[0], parts[1])\n"
        "expected = 0.5 * b0 + 0.5 * F.normalize((parts[0] + parts[1]) / 2, dim=1)\n"
        "assert torch.allclose(m.bases, expected, atol=1e-6)\n"
        "both = [torch.empty_like(m.bases) for _ in range(2)]\n"
        "dist.all_gather(both, m.bases)\n"
        "assert torch.equal(both[0], both[1])\n"
        "print('ok', r)\n"
        "dist.barrier()\n"
        "dist.destroy_process_group()  # without it gloo's teardown can abort the process at exit\n"
    )
    r = subprocess.run(
        torchrun_command(2, str(script)),
        capture_output=True,
        text=True,
        env=TORCHRUN_ENV,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("ok") == 2
