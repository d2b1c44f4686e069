"""RSSeg (RSSeg paper §3–4): LHF, SASM, AF, DCA losses, boundary loss, wiring of every variant,
checkpoint/optimiser integration, and parameter / FLOP counts against the paper's tables."""

import math

import pytest
import torch
import torch.nn.functional as F

import segkit
from segkit.engine.optim import config_param_groups, param_groups
from segkit.models.heads.rsseg import dca
from segkit.models.heads.rsseg import pyramid_head as pyramid
from segkit.models.heads.rsseg.sasm import SASM
from segkit.models.heads.rsseg.two_pathway import AttentionFusion, LearnableHighPass, LocalSeparationBlock
from segkit.models.rsseg.builders import PLAIN_ABLATIONS, PYRAMID_ABLATIONS, RSSEG_MODELS
from segkit.models.zoo import build_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: one intra-op thread is faster and does not contend with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY_PLAIN = dict(embed_dim=64, depth=4, num_heads=2, lsb_dim=16, sasm_groups=4)
TINY_BASELINE = dict(embed_dim=64, depth=2, num_heads=2)
TINY_PYRAMID = dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(2, 2, 2, 2), dim=8, head_dim=16)


def tiny(name: str, num_classes: int = 5, **kw):
    base = (
        TINY_PLAIN
        if name.startswith("rsseg-") and "cswin" not in name
        else (TINY_PYRAMID if "cswin" in name else TINY_BASELINE)
    )
    torch.manual_seed(0)
    return build_model(name, num_classes, **{**base, **kw})


def batch(h=64, w=64, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, h, w, generator=g)
    y = torch.randint(0, k, (2, h, w), generator=g)
    y[:, :6] = 255
    return x, y


# ----------------------------------------------------------------------------- LHF, LSB, AF
def test_lhf_kernels_sum_to_zero_and_remove_constants():
    torch.manual_seed(0)
    lhf = LearnableHighPass(6, 5)
    k = lhf.kernel()
    assert k.shape == (6, 1, 5, 5)
    torch.testing.assert_close(k.sum(dim=(1, 2, 3)), torch.zeros(6), atol=1e-6, rtol=0)
    torch.testing.assert_close(k.flatten(1), lhf.weight.flatten(1).softmax(-1) - 1 / 25)  # eq. 5
    assert (k > -1 / 25).all() and (k < 1 - 1 / 25).all()
    flat = lhf(torch.full((1, 6, 12, 12), 3.7))
    assert flat[..., 2:-2, 2:-2].abs().max() < 1e-5  # no DC response inside the map
    edge = torch.zeros(1, 6, 12, 12)
    edge[..., 6:] = 1.0
    assert lhf(edge)[..., 2:-2, 4:8].abs().max() > 1e-3  # responds to an edge


def test_lsb_uses_lhf_followed_by_a_norm_and_is_residual():
    blk = LocalSeparationBlock(8, expand=2, local_op="lhf")
    assert isinstance(blk.local, LearnableHighPass) and isinstance(blk.norm2, torch.nn.BatchNorm2d)
    assert blk.expand.out_channels == 16
    with torch.no_grad():
        blk.norm3.weight.zero_()  # kill the branch → identity
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(blk.eval()(x), x)


def test_attention_fusion_is_a_per_channel_gate_plus_the_global_map():
    torch.manual_seed(0)
    af = AttentionFusion(4).eval()
    local, glob = torch.randn(2, 4, 5, 5) + 2.0, torch.randn(2, 4, 5, 5)
    ratio = (af(local, glob) - glob) / local
    assert torch.allclose(ratio, ratio[..., :1, :1].expand_as(ratio), atol=1e-5)  # constant over space
    assert (ratio > 0).all() and (ratio < 1).all()  # sigmoid gate
    add = AttentionFusion(4, mode="add")
    torch.testing.assert_close(add(local, glob), local + glob)


# ----------------------------------------------------------------------------- SASM
def _sasm_reference(x, filters):
    """Independent eq. 11: unfold the 3×3 neighbourhoods, weight them, place sub-pixel k at (k // 2, k % 2)."""
    b, c, h, w = x.shape
    g = filters.shape[1]
    unf = F.unfold(x, 3, padding=1).view(b, g, c // g, 9, h, w)
    sub = torch.einsum("bgctyx,bgktyx->bgckyx", unf, filters)  # (B, G, Cg, 4, H, W)
    sub = sub.reshape(b, c, 2, 2, h, w)
    return sub.permute(0, 1, 4, 2, 5, 3).reshape(b, c, 2 * h, 2 * w)


def test_sasm_shape_convex_filters_and_reference():
    torch.manual_seed(0)
    m = SASM(guide_dim=8, channels=12, groups=3)
    with torch.no_grad():
        m.mlp.weight.normal_()
    guide, x = torch.randn(2, 8, 5, 7), torch.randn(2, 12, 5, 7)
    f = m.filters(guide)
    assert f.shape == (2, 3, 4, 9, 5, 7)
    assert (f >= 0).all()
    torch.testing.assert_close(f.sum(3), torch.ones(2, 3, 4, 5, 7))  # convex combinations
    out = m(guide, x)
    assert out.shape == (2, 12, 10, 14)
    torch.testing.assert_close(out, _sasm_reference(x, f), atol=1e-5, rtol=1e-5)
    # a filter that picks the centre tap gives nearest-neighbour 2x up-sampling
    with torch.no_grad():
        m.mlp.weight.zero_()
        m.mlp.bias.copy_(torch.tensor([30.0 if t == 4 else 0.0 for t in range(9)]).repeat(3 * 4))
    torch.testing.assert_close(m(guide, x), x.repeat_interleave(2, -1).repeat_interleave(2, -2), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="differ in size"):
        m(guide[..., :4], x)


def test_sasm_filters_start_near_uniform_in_a_built_model():
    model = tiny("rsseg-vit-b").eval()
    x, _ = batch()
    with torch.no_grad():
        feats = model.backbone(x)
        outs = model.decode_head.local(model.decode_head.local_embed(feats.image), feats.taps)
        f = model.decode_head.sasm2.filters(outs[-2])
    assert (f - 1 / 9).abs().max() < 0.1


def test_sasm_filter_norm_variant_is_zero_mean():
    m = SASM(4, 8, 2, filter_norm="filter_norm")
    with torch.no_grad():
        m.mlp.weight.normal_()
    f = m.filters(torch.randn(1, 4, 3, 3))
    torch.testing.assert_close(f.mean(3), torch.zeros_like(f.mean(3)), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- DCA losses
def test_region_weights_area_and_nearest():
    labels = torch.tensor([[[0, 0, 1, 1], [0, 255, 1, 2], [2, 2, 0, 0], [2, 2, 0, 0]]])
    w = dca.region_weights(labels, (2, 2), (2, 2), 3, mode="area")[0]  # (K, cells)
    expected = torch.tensor([[0.75, 0, 0, 1], [0, 0.75, 0, 0], [0, 0.25, 1, 0]])
    torch.testing.assert_close(w, expected)
    n = dca.region_weights(labels, (2, 2), (2, 2), 3, mode="nearest")[0]  # centres (1,1),(1,3),(3,1),(3,3)
    torch.testing.assert_close(n, torch.tensor([[0.0, 0, 0, 1], [0, 0, 0, 0], [0, 1, 1, 0]]))


def _hand_built(scale_dim=8):
    """4 classes along orthogonal directions; tokens labelled [0, 0, 1, 2, 2, 2]; class 3 absent."""
    basis = torch.eye(scale_dim)[:4]
    tok = torch.tensor([0, 0, 1, 2, 2, 2])
    keys = basis[tok][None, None]  # (1, 1, 6, d)
    weights = F.one_hot(tok, 4).T[None].float()  # (1, K, 6)
    return basis, keys, weights


def test_query_to_region_loss_perfect_permuted_and_absent():
    basis, keys, weights = _hand_built()
    regions = dca.region_embeddings(keys, weights)
    present = weights.sum(-1) > 0
    good = dca.query_to_region_loss(basis[None, None], regions, present, 10.0)
    # each present query: cos 1 with its region, 0 with the other two present regions (absent one masked)
    assert good.item() == pytest.approx(math.log(1 + 2 * math.exp(-10)), abs=1e-6)
    bad = dca.query_to_region_loss(basis[[1, 2, 0, 3]][None, None], regions, present, 10.0)
    assert bad.item() > 9.0
    other = basis.clone()
    other[3] = torch.randn(8)  # the absent class's query
    torch.testing.assert_close(dca.query_to_region_loss(other[None, None], regions, present, 10.0), good)


def test_patch_to_region_loss_perfect_wrong_and_ignored_patches():
    basis, keys, weights = _hand_built()
    regions = dca.region_embeddings(keys, weights)
    good = dca.patch_to_region_loss(keys, regions, weights, 10.0)
    assert good.item() == pytest.approx(math.log(1 + 2 * math.exp(-10)), abs=1e-6)
    wrong = basis[torch.tensor([1, 1, 2, 0, 0, 0])][None, None]  # every patch on another region
    assert dca.patch_to_region_loss(wrong, regions, weights, 10.0).item() > 9.0
    w2 = weights.clone()
    w2[..., 5] = 0  # patch 5: only ignored pixels
    k2 = keys.clone()
    k2[..., 5, :] = basis[0]
    r2 = dca.region_embeddings(k2, w2)
    torch.testing.assert_close(dca.patch_to_region_loss(k2, r2, w2, 10.0), good)


def test_losses_are_zero_not_nan_when_everything_is_ignored():
    _, keys, weights = _hand_built()
    empty = torch.zeros_like(weights)
    regions = dca.region_embeddings(keys, empty)
    assert dca.query_to_region_loss(keys[..., :4, :], regions, empty.sum(-1) > 0, 10.0).item() == 0.0
    assert dca.patch_to_region_loss(keys, regions, empty, 10.0).item() == 0.0


def test_dca_attention_is_cosine_with_learnable_scale():
    attn = dca.CrossAttention(16, 2, l2_norm=True)
    assert torch.equal(attn.inv_scale.detach(), torch.full((2,), 10.0))
    out, q, k = attn(torch.randn(1, 3, 16), torch.randn(1, 7, 16))
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(1, 2, 3))
    torch.testing.assert_close(k.norm(dim=-1), torch.ones(1, 2, 7))
    assert not hasattr(dca.CrossAttention(16, 2, l2_norm=False), "inv_scale")


def test_aux_losses_in_training_only(monkeypatch):
    model = tiny("rsseg-vit-b")
    x, y = batch()
    losses = model.loss(x, y)
    assert {"loss_seg", "loss_q2r", "loss_p2r"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    torch.testing.assert_close(losses["loss"], losses["loss_seg"] + losses["loss_q2r"] + losses["loss_p2r"])

    def boom(*args, **kwargs):
        raise AssertionError("auxiliary loss computed at inference")

    for fn in ("region_weights", "region_embeddings", "query_to_region_loss", "patch_to_region_loss"):
        monkeypatch.setattr(dca, fn, boom)
    monkeypatch.setattr(pyramid, "boundary_loss", boom)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 5, 64, 64)
    probs = model.inference(x, mode="slide", crop_size=(48, 48), stride=(32, 32))
    assert probs.shape == (2, 5, 64, 64)
    cswin = tiny("rsseg-cswin-t").eval()
    with torch.no_grad():
        assert cswin(x).shape == (2, 5, 64, 64)


def test_loss_weights_switch_losses_off():
    x, y = batch()
    assert "loss_p2r" not in tiny("rsseg-vit-b", p2r_weight=0.0).loss(x, y)
    assert "loss_q2r" not in tiny("rsseg-vit-b", q2r_weight=0.0).loss(x, y)
    assert set(tiny("rsseg-vit-b", dca=False).loss(x, y)) == {"loss", "loss_seg"}


# ----------------------------------------------------------------------------- boundary loss
def test_boundary_targets_and_loss():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, :, 4:] = 1
    labels[:, 0] = 255
    target, valid = pyramid.boundary_targets(labels)
    expected = torch.zeros(8, 8)
    expected[1:, 3:5] = 1
    torch.testing.assert_close(target[0], expected)
    assert not valid[0, 0].any() and valid[0, 1:].all()
    good = pyramid.boundary_loss((expected * 20 - 10)[None, None], labels)
    bad = pyramid.boundary_loss((10 - expected * 20)[None, None], labels)
    assert good < 0.05 < 1.0 < bad


def test_cswin_training_has_weighted_boundary_loss():
    x, y = batch()
    model = tiny("rsseg-cswin-t", drop_path_rate=0.0)  # deterministic in train mode
    losses = model.loss(x, y)
    assert set(losses) == {"loss", "loss_seg", "loss_boundary"}
    feats = model.backbone(x)
    _, last_lsb = model.decode_head._run(feats)
    raw = pyramid.boundary_loss(model.decode_head.boundary(last_lsb), y)
    torch.testing.assert_close(losses["loss_boundary"], 0.4 * raw)
    assert "loss_boundary" not in tiny("rsseg-cswin-t", boundary_weight=0.0).loss(x, y)


# ----------------------------------------------------------------------------- wiring of every variant
CASES = [(name, {}) for name in RSSEG_MODELS]
CASES += [("rsseg-vit-b", dict(a)) for a in PLAIN_ABLATIONS.values()]
CASES += [("rsseg-cswin-t", dict(a)) for a in PYRAMID_ABLATIONS.values()]
CASES += [
    ("rsseg-vit-b", dict(local_op="dw5", lsb_norm="ln", lsb_act="gelu", af_norm="ln", label_downsample="nearest"))
]
CASES += [("rsseg-cswin-t", dict(fusion_head="segformer", boundary_loss="bce"))]


@pytest.mark.parametrize(
    "name,kw", CASES, ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in CASES]
)
def test_every_variant_trains_and_predicts(name, kw):
    model = tiny(name, **kw)
    x, y = batch(32, 48)
    model.train()
    losses = model.loss(x, y)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, f"parameters without gradient: {unused[:5]}"
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 5, 32, 48) and torch.isfinite(out).all()


def test_odd_input_sizes():
    for name in ("rsseg-vit-b", "rsseg-cswin-t"):
        model = tiny(name).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, 50, 70)).shape == (1, 5, 50, 70)


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="two_pathway"):
        tiny("rsseg-vit-b", two_pathway=False)
    with pytest.raises(TypeError, match="bogus"):
        tiny("rsseg-vit-b", bogus=1)
    with pytest.raises(ValueError, match="local_op"):
        tiny("rsseg-vit-b", local_op="sobel")
    with pytest.raises(ValueError, match="num_sasm"):
        tiny("rsseg-vit-b", num_sasm=3)


# ----------------------------------------------------------------------------- checkpoints, optimiser
def test_imagenet_encoder_initialises_the_overlapping_patch_embedding(tmp_path):
    model = tiny("rsseg-vit-b")
    enc = {k: torch.randn_like(v) for k, v in model.backbone.vit.state_dict().items()}
    enc["head.weight"], enc["head.bias"] = torch.randn(1000, 64), torch.zeros(1000)
    torch.save(enc, tmp_path / "vit.pth")
    report = segkit.load_checkpoint(model, tmp_path / "vit.pth", verbose=False)
    # the report counts the copied keys as loaded, not missing
    assert {"decode_head.local_embed.proj.weight", "decode_head.local_embed.proj.bias"} <= set(report.loaded)
    assert not any(k.startswith("decode_head.local_embed.proj.") for k in report.missing), report.missing
    assert any("initialised by the model" in n for n in report.notes)
    assert torch.equal(model.backbone.vit.patch_embed.proj.weight, enc["patch_embed.proj.weight"])
    assert torch.equal(model.decode_head.local_embed.proj.weight, enc["patch_embed.proj.weight"])
    assert torch.equal(model.decode_head.local_embed.proj.bias, enc["patch_embed.proj.bias"])


def test_save_and_from_pretrained_rebuild_the_same_network(tmp_path):
    x, _ = batch()
    for i, (name, kw) in enumerate(
        [("rsseg-vit-b", PLAIN_ABLATIONS["1-sasm"]), ("rsseg-cswin-s", {}), ("segmenter-vit-b", {})]
    ):
        model = tiny(name, **kw).eval()
        model.save_pretrained(tmp_path / str(i))
        again = segkit.from_pretrained(tmp_path / str(i))
        with torch.no_grad():
            torch.testing.assert_close(again(x), model(x))
        assert again.arch == model.arch and again.encoder_prefix == model.encoder_prefix


def test_paper_lr_recipe_is_expressible():
    model = tiny("rsseg-vit-b")
    groups = param_groups(
        model,
        lr=1.0,
        weight_decay=0.05,
        head_lr_mult=10.0,
        layer_decay=0.9,
        custom_lr_mult={"decode_head.decoder.": 1.0, "decode_head.local_embed.proj.": 1.0},
    )
    lr = {n: g["lr"] for g in groups for n in g["names"]}
    assert lr["decode_head.decoder.cls_emb"] == 1.0  # queries
    assert lr["decode_head.decoder.layers.0.attn.q.weight"] == 1.0  # transformer decoder
    assert lr["decode_head.local.blocks.0.local.weight"] == 10.0  # LSB (random init)
    assert lr["decode_head.sasm1.mlp.weight"] == 10.0
    assert lr["backbone.vit.blocks.3.attn.qkv.weight"] == pytest.approx(0.9)  # layer decay (depth 4)
    assert lr["backbone.vit.patch_embed.proj.weight"] == pytest.approx(0.9**5)


# ----------------------------------------------------------------------------- Table 3
def test_table3_structure():
    with torch.device("meta"):
        b, t, s = (build_model(n, 19) for n in ("rsseg-vit-b", "rsseg-cswin-t", "rsseg-cswin-s"))
    assert b.backbone.vit.out_indices == (1, 3, 5, 7, 11) and len(b.decode_head.local.blocks) == 5
    assert t.arch["taps"] == [2, 5, 8, 11, 14, 17, 20, 23] and len(t.decode_head.local.blocks) == 9
    assert s.arch["taps"] == [5, 9, 13, 17, 21, 25, 29, 33, 37] and len(s.decode_head.local.blocks) == 10
    assert b.decode_head.sasm1.groups == 12 and b.decode_head.local.dim == 256


def _lr_mults(cfg_name: str) -> dict[str, float]:
    """Parameter name -> lr multiplier for a shipped config, from the optimizer's own grouping."""
    from segkit.config import load_config
    from segkit.models.layers import skip_init
    from segkit.models.zoo import build_model

    cfg = load_config(cfg_name)
    with torch.device("meta"), skip_init():
        model = build_model(cfg.model, 19, **cfg.model_args)
    groups = config_param_groups(model, cfg.optim)
    return {n: g["lr_mult"] for g in groups for n in g["names"]}


@pytest.mark.parametrize(
    "tag,lsb_mult", [("3-lsbs", 1.0), ("5-lsbs", 1.0), ("9-lsbs", 1.0), ("9-lsbs-10x", 10.0), ("9-lsbs-af", 10.0)]
)
def test_table7_lsb_learning_rate_per_row(tag, lsb_mult):
    """Table 7: "+3/5/9 LSBs" train the LSBs at 1× lr; "10×lr" rows at 10× (the MLP head is 10× in all)."""
    mults = _lr_mults(f"cityscapes/rsseg-cswin-t_{tag}")
    lsb = {n: m for n, m in mults.items() if n.startswith("decode_head.local.")}
    assert any(n.startswith("decode_head.local.blocks.") for n in lsb), sorted(lsb)[:5]  # the LSBs
    assert set(lsb.values()) == {lsb_mult}
    head = [m for n, m in mults.items() if n.startswith("decode_head.linear_")]
    assert head and set(head) == {10.0}
    assert {m for n, m in mults.items() if n.startswith("backbone.")} == {1.0}


def test_cityscapes_ablation_configs_follow_section_4_3():
    from segkit.config import load_config
    from segkit.models.rsseg.builders import PYRAMID_ABLATIONS

    for tag in PYRAMID_ABLATIONS:
        cfg = load_config(f"cityscapes/rsseg-cswin-t_{tag}")
        assert cfg.train_transform.crop_size == [768, 768], tag
        assert cfg.schedule.max_iters == 80000, tag
        assert cfg.eval.mode == "slide" and cfg.eval.crop_size == [768, 768], tag
    main = load_config("cityscapes/rsseg-cswin-t")  # Table 9: SegFormer's protocol
    assert main.train_transform.crop_size == [1024, 1024] and main.schedule.max_iters == 160000


def test_segmenter_pascal_context_and_vit_l_warmup():
    from segkit.config import load_config

    for size in ("b", "l"):
        assert load_config(f"pascal_context59/segmenter-vit-{size}").schedule.max_iters == 40000  # §4.4.3
        assert load_config(f"pascal_context59/rsseg-vit-{size}").schedule.max_iters == 30000
    for model in ("rsseg-vit-l", "vit-linear-l", "segmenter-vit-l", "rsseg-beit-l"):
        assert load_config(f"ade20k/{model}").schedule.warmup_iters == 3000, model
    assert load_config("ade20k/rsseg-vit-b").schedule.warmup_iters == 1500


def test_lhf_logits_decay_like_conv_weights():
    """The 4-D LHF logits get weight decay (as mmseg's default constructor); 1-D parameters do not."""
    from segkit.models.heads.rsseg.two_pathway import LearnableHighPass
    from segkit.models.zoo import build_model

    model = build_model("rsseg-vit-ti", 11, img_size=64)
    lhf = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, LearnableHighPass)]
    assert lhf
    groups = param_groups(model, lr=1e-4, weight_decay=0.05, head_lr_mult=10.0, no_decay_1d=True)
    decay = {n: g["weight_decay"] for g in groups for n in g["names"]}
    assert all(decay[n] == 0.05 for n in lhf)
    assert all(decay[n] == 0.0 for n, p in model.named_parameters() if p.ndim <= 1)


def test_dca_literal_losses_on_a_hand_made_case():
    """Eqs. 13–15 written out by hand: 4×4 labels on a 2×2 token grid (stride 2), 3 classes of
    which class 2 is absent, one head, 2-D keys; hard (centre-pixel) labels, softmax over all
    three region embeddings — the ``dca-literal`` preset."""
    from segkit.models.rsseg.builders import PLAIN_ABLATIONS

    assert PLAIN_ABLATIONS["dca-literal"] == dict(label_downsample="nearest", mask_absent=False, decoder_heads=1)
    labels = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [255, 1, 0, 0]]])
    # cell centres (1,1), (1,3), (3,1), (3,3) -> classes 0, 1, 1, 0
    keys = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, 1.0]]
    queries = [[1.0, 1.0], [-1.0, 2.0], [0.5, 0.5]]
    scale = 10.0
    cls = [0, 1, 1, 0]

    def norm(v):
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v] if n > 0 else [0.0 for _ in v]

    kn = [norm(k) for k in keys]
    qn = [norm(q) for q in queries]
    re = [norm([sum(kn[i][d] for i in range(4) if cls[i] == c) for d in range(2)]) for c in range(3)]  # eq. 13
    assert re[2] == [0.0, 0.0]

    def ce(vec, target):  # -log softmax(scale * <vec, RE_c>)[target] over all 3 regions
        logits = [scale * sum(a * b for a, b in zip(vec, r)) for r in re]
        m = max(logits)
        return -(logits[target] - m - math.log(sum(math.exp(x - m) for x in logits)))

    q2r_hand = (ce(qn[0], 0) + ce(qn[1], 1)) / 2  # eq. 14; the absent class's query is skipped
    p2r_hand = sum(ce(kn[i], cls[i]) for i in range(4)) / 4  # eq. 15

    weights = dca.region_weights(labels, (2, 2), (2, 2), 3, mode="nearest")
    k = torch.nn.functional.normalize(torch.tensor(keys), dim=-1)[None, None]
    q = torch.nn.functional.normalize(torch.tensor(queries), dim=-1)[None, None]
    regions = dca.region_embeddings(k, weights)
    present = weights.sum(-1) > 0
    q2r = dca.query_to_region_loss(q, regions, present, scale, mask_absent=False)
    p2r = dca.patch_to_region_loss(k, regions, weights, scale, mask_absent=False)
    assert q2r.item() == pytest.approx(q2r_hand, rel=1e-5)
    assert p2r.item() == pytest.approx(p2r_hand, rel=1e-5)
    # the default (masked) differs here: the zero embedding of class 2 leaves the softmax
    assert abs(dca.patch_to_region_loss(k, regions, weights, scale).item() - p2r_hand) > 1e-5


def test_dca_literal_config_builds_a_single_head_decoder():
    """The shipped ``ade20k/rsseg-vit-b_dca-literal`` config: one head over the full width C = 768
    (eq. 12's ``Q_norm ∈ R^{B,N_class,C}``), one ``1/s``; 11 parameters fewer than the full
    model's 12 per-head scales, everything else identical."""
    from segkit.config import load_config
    from segkit.models.layers import skip_init

    cfg = load_config("ade20k/rsseg-vit-b_dca-literal")
    assert cfg.model == "rsseg-vit-b" and cfg.model_args["decoder_heads"] == 1
    with torch.device("meta"), skip_init():
        literal = build_model(cfg.model, 150, **cfg.model_args)
        full = build_model("rsseg-vit-b", 150, img_size=512)
    dec = literal.decode_head.decoder
    assert (dec.label_downsample, dec.mask_absent) == ("nearest", False)
    assert [layer.attn.num_heads for layer in dec.layers] == [1]
    assert dec.layers[0].attn.inv_scale.shape == (1,)
    assert [layer.attn.num_heads for layer in full.decode_head.decoder.layers] == [12]  # default C/64
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(full) - count(literal) == 11
    assert literal.arch["decoder_heads"] == 1


def test_dca_literal_model_matches_eqs_12_to_15_by_hand():
    """The decoder of a model built with the ``dca-literal`` preset, against RSSeg eqs. 12–15
    written out by hand for ONE head over the full channel dimension C. The encoder width 192
    would give 3 heads by default, so a multi-head preset fails here (per-head L2 norms and
    scales give other attention maps and other losses).

    Labels 4×6 on a 2×3 token grid (stride 2): cell centres hold classes [0, 1, 2, 2, 255, 1];
    class 3 appears only off-centre, so nearest down-sampling makes it absent (its query is
    skipped, its zero region embedding stays among the softmax candidates); cell 4 is ignored.
    """
    torch.manual_seed(0)
    model = build_model(
        "rsseg-vit-b", 4, embed_dim=192, depth=4, num_heads=3, lsb_dim=16, sasm_groups=4,
        **PLAIN_ABLATIONS["dca-literal"],
    )  # fmt: skip
    dec = model.decode_head.decoder
    layer = dec.layers[0]
    attn = layer.attn
    assert len(dec.layers) == 1 and attn.num_heads == 1
    with torch.no_grad():
        attn.inv_scale.fill_(7.5)  # a learnt-looking 1/s, not the initial 10
    c = 192

    def lin(m, x):
        return x @ m.weight.T + m.bias

    def eq12(queries, tokens):  # Softmax(Q_norm K_normᵀ / s) V, then the output projection
        qn = F.normalize(lin(attn.q, queries), dim=-1)  # L2 over all C channels
        kn = F.normalize(lin(attn.k, tokens), dim=-1)
        a = torch.softmax(qn @ kn.T * attn.inv_scale[0], dim=-1)
        return lin(attn.proj, a @ lin(attn.v, tokens)), qn, kn

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        # eq. 12 on small random queries (5) and tokens (7)
        queries, tokens = torch.randn(5, c, generator=g), torch.randn(7, c, generator=g)
        out, q, k = attn(queries[None], tokens[None])
        out_hand, qn, kn = eq12(queries, tokens)
        torch.testing.assert_close(out[0], out_hand, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(q[0, 0], qn, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(k[0, 0], kn, atol=1e-5, rtol=1e-5)

        # the decoder with labels: the same attention inside the layer, and the two DCA losses
        feats = torch.randn(1, c, 2, 3, generator=g)
        labels = torch.tensor([[[3, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2], [2, 2, 0, 0, 1, 1], [2, 2, 0, 255, 1, 1]]])
        _, losses = dec(feats, None, labels, (4, 6))
        x = lin(dec.dec_proj, feats.flatten(2)[0].T)  # (N = 6, C) decoder input tokens
        _, qn, kn = eq12(layer.norm_q(dec.cls_emb[0]), layer.norm_kv(x))
        centre = [0, 1, 2, 2, 255, 1]  # labels[2i + 1, 2j + 1]
        gt = torch.zeros(4, 6)  # Flatten(GT), hard one-hot
        for n, cls in enumerate(centre):
            if cls != 255:
                gt[cls, n] = 1.0
        re = gt @ kn  # eq. 13: RE = Flatten(GT) K_norm
        re_norm = torch.stack([r / r.norm() if r.norm() > 0 else r for r in re])  # class 3: zero vector
        s_inv = attn.inv_scale[0]
        sim_q = (qn @ re_norm.T * s_inv).log_softmax(-1)  # eq. 14, softmax over all 4 regions
        sim_p = (kn @ re_norm.T * s_inv).log_softmax(-1)  # eq. 15
        q2r_hand = -torch.stack([sim_q[i, i] for i in (0, 1, 2)]).mean()  # the absent class's query skipped
        p2r_hand = -torch.stack([sim_p[n, cls] for n, cls in enumerate(centre) if cls != 255]).mean()
    assert set(losses) == {"loss_q2r", "loss_p2r"}
    torch.testing.assert_close(losses["loss_q2r"], q2r_hand, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(losses["loss_p2r"], p2r_hand, atol=1e-5, rtol=1e-5)
