"""Trainer: resume fidelity, non-finite loss handling, checkpoint contents, CLI end to end."""

import json
from pathlib import Path

import pytest
import torch

from segkit.cli import main as cli
from segkit.config import config_from_dict
from segkit.engine.trainer import NonFiniteLossError, TrainBatchSampler, train


def tiny_cfg(root: Path, work_dir: Path, **train_over) -> dict:
    return {
        "model": "segformer-b0",
        "model_args": {"decoder_dim": 32},
        "data": {
            "train": {"type": "split", "root": str(root), "split": "train"},
            "val": {"type": "split", "root": str(root), "split": "val"},
        },
        "train_transform": {"scale": [120, 90], "crop_size": [64, 64]},
        "test_transform": {"scale": [120, 90]},
        "optim": {"lr": 1e-3},
        "schedule": {"max_iters": 4, "warmup_iters": 1},
        "train": {
            "batch_size": 2,
            "num_workers": 0,
            "eval_interval": 2,
            "log_interval": 1,
            "keep_last": 5,
            "work_dir": str(work_dir),
            "deterministic": True,
            "tensorboard": False,
            **train_over,
        },
    }


def test_batch_sampler_resumes_mid_epoch_and_splits_ranks():
    full = TrainBatchSampler(10, 4, seed=3)
    it = iter(full)
    seq = [next(it) for _ in range(5)]
    resumed = iter(TrainBatchSampler(10, 4, seed=3, start_iter=3))
    assert [next(resumed) for _ in range(2)] == seq[3:5]
    r0 = iter(TrainBatchSampler(10, 4, seed=3, rank=0, world_size=2))
    r1 = iter(TrainBatchSampler(10, 4, seed=3, rank=1, world_size=2))
    assert next(r0) + next(r1) == seq[0]
    with pytest.raises(ValueError, match="not divisible"):
        TrainBatchSampler(10, 3, seed=0, world_size=2)


def test_resume_gives_the_same_weights(synthetic_split, tmp_path):
    full = train(config_from_dict(tiny_cfg(synthetic_split, tmp_path / "a")), progress=False)
    assert full["iterations"] == 4
    a = tmp_path / "a"
    assert (a / "iter_2.pth").is_file() and (a / "iter_4.pth").is_file() and (a / "best.pth").is_file()
    assert (a / "final" / "model.safetensors").is_file() and (a / "curves.png").is_file()
    ck = torch.load(a / "iter_2.pth", weights_only=True)
    assert {"model", "optimizer", "scheduler", "iteration", "rng", "config", "best_metric"} <= set(ck)
    assert ck["iteration"] == 2
    train(config_from_dict(tiny_cfg(synthetic_split, tmp_path / "b")), resume=a / "iter_2.pth", progress=False)
    wa = torch.load(a / "iter_4.pth", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "iter_4.pth", weights_only=True)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    # and the run really trained: weights moved away from iteration 2
    assert any(not torch.equal(wa[k], ck["model"][k]) for k in wa if wa[k].is_floating_point())
    log = [json.loads(line) for line in open(a / "train_log.jsonl")]
    assert [r["iter"] for r in log if r["type"] == "train"] == [1, 2, 3, 4]
    assert any(r["type"] == "eval" for r in log)


def test_nonfinite_loss_stops_or_skips(synthetic_split, tmp_path, monkeypatch):
    from segkit.models.segmentor import Segmentor

    calls = {"n": 0}
    orig = Segmentor.head_seg_loss

    def flaky(self, logits, labels):
        calls["n"] += 1
        loss = orig(self, logits, labels)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(Segmentor, "head_seg_loss", flaky)
    with pytest.raises(NonFiniteLossError, match=r"iteration 3.*iter_2\.pth"):
        # the pre-step memory probe would be the first seg_loss call: count training steps only
        train(config_from_dict(tiny_cfg(synthetic_split, tmp_path / "stop", memory_check=False)), progress=False)
    calls["n"] = 0
    out = train(
        config_from_dict(tiny_cfg(synthetic_split, tmp_path / "skip", on_nonfinite="skip", memory_check=False)),
        progress=False,
    )
    assert out["skipped_steps"] == 1 and out["iterations"] == 4


def test_cli_train_eval_predict(synthetic_split, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(tiny_cfg(synthetic_split, tmp_path / "run")))
    assert cli(["train", str(cfg), "--no-progress", "--set", "schedule.max_iters=2"]) == 0
    final = tmp_path / "run" / "final"
    assert (
        cli(["eval", str(final), "--data", str(synthetic_split), "--split", "test", "--out", str(tmp_path / "ev")]) == 0
    )
    out = capsys.readouterr().out
    assert "mIoU" in out and "person" in out
    assert (tmp_path / "ev" / "metrics.json").is_file()
    # final/ carries the training config: `segkit eval final --data …` resizes as the config's test
    # transform (120x90 here), not with the library default (2048x512 keep-ratio)
    from segkit import load_model
    from segkit.data.protocol import TestProtocol

    model = load_model(final)
    assert model.train_config["test_transform"]["scale"] == [120, 90]
    protocol = TestProtocol.of(model)
    assert protocol.scale == (120, 90) and protocol.transform(model.mean, model.std).scale == (120, 90)
    model.train_config = None
    assert TestProtocol.of(model).scale == (2048, 512)
    img = next((synthetic_split / "images" / "test").iterdir())
    assert cli(["predict", str(final), str(img), "--out", str(tmp_path / "pred")]) == 0
    files = sorted(p.name for p in (tmp_path / "pred").iterdir())
    assert any(f.endswith("_overlay.png") for f in files) and any(f.endswith("_label.png") for f in files)
    # bad config key -> clear error, exit code 2
    assert cli(["train", str(cfg), "--set", "train.bogus=1"]) == 2
    assert "train.bogus" in capsys.readouterr().err


def test_transforms_use_the_models_normalisation(synthetic_split, tmp_path):
    from segkit.engine.trainer import build_train_data

    cfg = config_from_dict(tiny_cfg(synthetic_split, tmp_path / "n"))
    train_ds, val_ds = build_train_data(cfg, mean=(127.5,) * 3, std=(127.5,) * 3)  # plain-ViT statistics
    for item in (train_ds[0], val_ds[0]):
        img = item["image"]
        assert img.min() >= -1.0 - 1e-6 and img.max() <= 1.0 + 1e-6 and img.min() < -0.5


# ----------------------------------------------------------------------------- class weights
def test_median_frequency_weights_by_hand():
    from segkit.engine.trainer import median_frequency_weights

    # shares 0.1, 0.3, 0.6 -> median 0.3 -> weights 3, 1, 0.5
    assert median_frequency_weights([10, 30, 60]) == pytest.approx([3.0, 1.0, 0.5])
    assert median_frequency_weights([10, 30, 60], power=0.5) == pytest.approx([3**0.5, 1.0, 0.5**0.5])
    with pytest.warns(UserWarning, match=r"classes \[1\] have no training pixels"):
        w = median_frequency_weights([25, 0, 75])  # median over present classes: 0.5
    assert w == pytest.approx([2.0, 0.0, 2 / 3])
    with pytest.raises(ValueError, match="no labelled pixel"):
        median_frequency_weights([0, 0])


def test_weighted_seg_loss_matches_hand_computation():
    import segkit

    model = segkit.build_model("segformer-b0", num_classes=3, decoder_dim=32)
    logits = torch.randn(1, 3, 2, 2)
    labels = torch.tensor([[[0, 1], [2, 255]]])
    model.set_class_weight([1.0, 2.0, 0.5])
    logp = torch.log_softmax(logits, dim=1)[0]
    nll = torch.stack([-logp[0, 0, 0], -logp[1, 0, 1], -logp[2, 1, 0]])
    w = torch.tensor([1.0, 2.0, 0.5])
    torch.testing.assert_close(model.seg_loss(logits, labels), (w * nll).sum() / w.sum())
    model.loss_avg = "all"  # mmseg reference averaging: divide by every pixel, ignored ones included
    torch.testing.assert_close(model.seg_loss(logits, labels), (w * nll).sum() / 4)
    with pytest.raises(ValueError, match="3 finite non-negative"):
        model.set_class_weight([1.0, 2.0])
    model.set_class_weight(None)
    assert model.class_weight is None


def test_class_weight_config_is_validated_and_used(synthetic_split, tmp_path, capsys):
    from segkit.config import ConfigError

    with pytest.raises(ConfigError, match="train.class_weight"):
        config_from_dict(tiny_cfg(synthetic_split, tmp_path / "x", class_weight="inverse"))
    cfg = config_from_dict(
        tiny_cfg(synthetic_split, tmp_path / "w", class_weight="median_freq", class_weight_power=0.5, eval_interval=100)
    )
    cfg.schedule.max_iters = 1
    train(cfg, progress=False)
    printed = capsys.readouterr().out
    line = next(ln for ln in printed.splitlines() if ln.startswith("class weights:"))
    assert len(line.split(",")) == 5  # one weight per class


def test_ema_averages_resumes_exactly_and_is_what_final_holds(synthetic_split, tmp_path):
    """train.ema: the average follows timm's warm-up formula, resumes bit-identically, and final/ and
    load_model(iter_*.pth) give the averaged weights."""
    import segkit
    from segkit.engine.trainer import WeightEMA

    model = torch.nn.Linear(2, 1)
    ema = WeightEMA(model, 0.9)
    w0 = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    d = min(0.9, 2 / 11)
    assert torch.allclose(ema.module.weight, d * w0 + (1 - d) * model.weight)

    full = train(config_from_dict(tiny_cfg(synthetic_split, tmp_path / "a", ema=0.99)), progress=False)
    assert full["iterations"] == 4
    a = tmp_path / "a"
    ck = torch.load(a / "iter_4.pth", weights_only=True)
    assert ck["ema"]["updates"] == 4
    raw, avg = ck["model"], ck["ema"]["weights"]
    assert any(not torch.equal(raw[k], avg[k]) for k in raw if raw[k].is_floating_point())
    final = segkit.load_model(a / "final").state_dict()
    assert all(torch.equal(final[k], avg[k]) for k in avg)
    from_pth = segkit.load_model(a / "iter_4.pth").state_dict()
    assert all(torch.equal(from_pth[k], avg[k]) for k in avg)
    train(
        config_from_dict(tiny_cfg(synthetic_split, tmp_path / "b", ema=0.99)), resume=a / "iter_2.pth", progress=False
    )
    resumed = torch.load(tmp_path / "b" / "iter_4.pth", weights_only=True)["ema"]["weights"]
    assert all(torch.equal(resumed[k], avg[k]) for k in avg)
    with pytest.raises(Exception, match="train.ema"):
        config_from_dict(tiny_cfg(synthetic_split, tmp_path / "c", ema=1.5))
