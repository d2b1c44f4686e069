"""Config validation and the reference optimiser / schedule (docs/protocols.md)."""

import math

import pytest

import segkit
from segkit.config import ConfigError, apply_overrides, config_from_dict, load_config
from segkit.engine.optim import build_optimizer, build_scheduler, param_groups, poly_warmup_factor


def test_unknown_key_is_an_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"optim\.lrr"):
        config_from_dict({"optim": {"lrr": 1e-3}})
    p = tmp_path / "c.yaml"
    p.write_text("model: segnext-t\ntrain: {batch_sise: 4}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "train.batch_sise" in str(e.value) and str(p) in str(e.value)


def test_invalid_values_are_named():
    with pytest.raises(ConfigError, match="model"):
        config_from_dict({"model": "segnext-xxl"})
    with pytest.raises(ConfigError, match="train.amp"):
        config_from_dict({"train": {"amp": "fp8"}})
    with pytest.raises(ConfigError, match="eval.crop_size"):
        config_from_dict({"eval": {"mode": "slide"}})


def test_overrides_are_parsed_as_yaml():
    d = apply_overrides({"optim": {"lr": 1.0}}, ["optim.lr=3e-4", "train.max_iters=5", "eval.scales=[0.5, 1.0]"])
    assert d["optim"]["lr"] == 3e-4 and d["train"]["max_iters"] == 5 and d["eval"]["scales"] == [0.5, 1.0]
    with pytest.raises(ConfigError):
        apply_overrides({}, ["no_equals_sign"])


def test_yaml_is_loaded_safely(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("model: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(Exception) as e:
        load_config(p)
    assert "ConstructorError" in type(e.value).__name__ or "constructor" in str(e.value).lower()


def test_poly_warmup_matches_mmcv_formula():
    kw = dict(max_iters=1000, warmup_iters=100, warmup_ratio=1e-6, power=1.0)
    assert poly_warmup_factor(0, **kw) == pytest.approx(1e-6)
    it = 50
    poly = 1 - it / 1000
    assert poly_warmup_factor(it, **kw) == pytest.approx(poly * (1 - (1 - it / 100) * (1 - 1e-6)))
    assert poly_warmup_factor(500, **kw) == pytest.approx(0.5)
    assert poly_warmup_factor(1000, **kw) == 0.0
    assert poly_warmup_factor(250, max_iters=1000, warmup_iters=0, power=0.9) == pytest.approx(0.75**0.9)


def test_param_groups_reference_recipe():
    model = segkit.build_model("segnext-t", num_classes=11)
    groups = param_groups(model, lr=6e-5, weight_decay=0.01, head_lr_mult=10.0, norm_decay_rule="type")
    by_name = {n: g for g in groups for n in g["names"]}
    assert set(by_name) == {n for n, _ in model.named_parameters()}
    # head lr x10 (GroupNorm in head: no decay under the type rule), encoder lr x1
    assert by_name["decode_head.conv_seg.weight"]["lr"] == pytest.approx(6e-4)
    assert by_name["decode_head.conv_seg.weight"]["weight_decay"] == 0.01
    assert by_name["decode_head.squeeze.gn.weight"]["weight_decay"] == 0.0
    assert by_name["backbone.block1.0.attn.proj_1.weight"]["lr"] == pytest.approx(6e-5)
    # every norm affine has no decay, incl. the stem BatchNorms and stage-end LayerNorms
    for n in ("backbone.patch_embed1.proj.1.weight", "backbone.block1.0.norm1.bias", "backbone.norm4.weight"):
        assert by_name[n]["weight_decay"] == 0.0
    # reference substring rule: stem BNs decay (no 'norm' in name), head GN decays ('head' matches first)
    ref = {
        n: g for g in param_groups(model, lr=6e-5, weight_decay=0.01, norm_decay_rule="reference") for n in g["names"]
    }
    assert ref["backbone.patch_embed1.proj.1.weight"]["weight_decay"] == 0.01
    assert ref["decode_head.squeeze.gn.weight"]["weight_decay"] == 0.01
    assert ref["backbone.block1.0.norm1.weight"]["weight_decay"] == 0.0


def test_scheduler_drives_all_groups():
    cfg = config_from_dict({"optim": {"lr": 1e-3}, "schedule": {"max_iters": 10, "warmup_iters": 2}})
    model = segkit.build_model("segformer-b0", num_classes=4)
    opt = build_optimizer(model, cfg.optim)
    sched = build_scheduler(opt, cfg.schedule, cfg.optim.lr)
    lrs = []
    for _ in range(10):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    head = [g for g in opt.param_groups if g["lr_mult"] == 10.0][0]
    assert lrs[0][0] == pytest.approx(cfg.optim.lr * opt.param_groups[0]["lr_mult"] * 1e-6, rel=1e-3)
    assert lrs[5][opt.param_groups.index(head)] == pytest.approx(1e-2 * 0.5)
    assert math.isclose(opt.param_groups[0]["lr"], 0.0, abs_tol=1e-12)


def test_field_types_are_checked_and_exponents_coerced():
    cfg = config_from_dict({"optim": {"lr": "6e-5"}, "schedule": {"max_iters": 10.0}})
    assert cfg.optim.lr == 6e-5 and isinstance(cfg.schedule.max_iters, int)
    with pytest.raises(ConfigError, match="schedule.max_iters"):
        config_from_dict({"schedule": {"max_iters": "lots"}})
    with pytest.raises(ConfigError, match="train.preload"):
        config_from_dict({"train": {"preload": "yes"}})


def test_no_decay_1d_exempts_biases():
    model = segkit.build_model("segformer-b0", num_classes=4)
    groups = param_groups(model, lr=1e-3, weight_decay=0.05, no_decay_1d=True)
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["backbone.block1.0.attn.q.bias"]["weight_decay"] == 0.0
    assert by_name["backbone.block1.0.attn.q.weight"]["weight_decay"] == 0.05
    ref = {n: g for g in param_groups(model, lr=1e-3, weight_decay=0.05) for n in g["names"]}
    assert ref["backbone.block1.0.attn.q.bias"]["weight_decay"] == 0.05
