"""A model family written in this file alone — encoder, head, builder, architecture switches —
plugged into segkit through the public API, then trained, evaluated, saved, reloaded, counted and
segmented without touching segkit's source. Also: the zoo's families are consistent."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn as nn

import segkit
from segkit.config import config_from_dict
from segkit.engine.evaluator import evaluate
from segkit.engine.trainer import train
from segkit.models.family import arch_dict, split_kwargs
from segkit.tools.flops import count_flops


# ----------------------------------------------------------------------------- the toy family
class TinyEncoder(nn.Module):
    """Two stride-2 convs: ``(B, 3, H, W)`` → stages at strides 2 and 4."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.out_channels = [width, 2 * width]

    def forward(self, x):
        a = torch.relu(self.conv1(x))
        return segkit.Features(stages=[a, torch.relu(self.conv2(a))])


class TinyHead(segkit.DecodeHead):
    """1×1 classifier on the last stage, plus an auxiliary loss on the first (to exercise ``loss``)."""

    def __init__(self, in_channels, num_classes: int, aux_weight: float):
        super().__init__()
        self.cls = nn.Conv2d(in_channels[-1], num_classes, 1)
        self.aux = nn.Conv2d(in_channels[0], num_classes, 1)
        self.aux_weight = aux_weight

    def forward(self, features):
        return self.cls(features.stages[-1])

    def loss(self, features, labels, seg_loss):
        losses = super().loss(features, labels, seg_loss)
        if self.aux_weight:
            losses["loss_aux"] = self.aux_weight * seg_loss(self.aux(features.stages[0]), labels)
        return losses


@dataclass
class ToyArch:
    width: int = 8
    aux_weight: float = 0.4


def build_toy(num_classes: int = 5, **kwargs):
    arch, meta = split_kwargs(ToyArch, kwargs, "toy-s")
    encoder = TinyEncoder(arch.width)
    head = TinyHead(encoder.out_channels, num_classes, arch.aux_weight)
    return segkit.Segmentor(encoder, head, num_classes, name="toy-s", family="toy", arch=arch_dict(arch), **meta)


TOY = segkit.Family(name="toy", paper="a test family", models={"toy-s": build_toy})


@pytest.fixture
def toy_family():
    segkit.add_family(TOY)
    yield TOY
    segkit.FAMILIES.pop("toy")
    segkit.MODELS.pop("toy-s")


# ----------------------------------------------------------------------------- the test
def test_a_family_defined_outside_segkit_trains_evaluates_saves_and_loads(toy_family, synthetic_split, tmp_path):
    assert "toy-s" in segkit.list_models()
    with pytest.raises(ValueError, match="already"):
        segkit.add_family(TOY)
    model = segkit.build_model("toy-s", 5, width=4)
    assert model.arch == {"width": 4, "aux_weight": 0.4} and model.family == "toy"
    with pytest.raises(TypeError, match="depth"):
        segkit.build_model("toy-s", 5, depth=3)

    cfg = config_from_dict(
        {
            "model": "toy-s",
            "model_args": {"width": 6},
            "data": {
                "train": {"type": "split", "root": str(synthetic_split), "split": "train"},
                "val": {"type": "split", "root": str(synthetic_split), "split": "val"},
            },
            "train_transform": {"scale": [120, 90], "crop_size": [64, 64]},
            "test_transform": {"scale": [120, 90]},
            "optim": {"lr": 1e-2, "head_lr_mult": 1.0},
            "schedule": {"max_iters": 4, "warmup_iters": 0},
            "train": {
                "batch_size": 2,
                "num_workers": 0,
                "eval_interval": 4,
                "log_interval": 1,
                "work_dir": str(tmp_path / "run"),
                "tensorboard": False,
            },
        }
    )
    summary = train(cfg, progress=False)
    assert summary["iterations"] == 4 and summary["final_mIoU"] is not None
    log = (tmp_path / "run" / "train_log.jsonl").read_text()
    assert '"loss_aux"' in log and '"loss_seg"' in log  # the head's own loss terms were trained and logged

    model = segkit.from_pretrained(tmp_path / "run" / "final")  # rebuilt by the toy builder from config.json
    assert model.family == "toy" and model.arch["width"] == 6 and model.num_classes == 5
    assert segkit.TestProtocol.of(model).scale == (120, 90)

    from segkit.data import build_dataset

    ds = build_dataset(
        {"type": "split", "root": str(synthetic_split), "split": "test"},
        transform=segkit.TestProtocol.of(model).transform(model.mean, model.std),
    )
    res = evaluate(model, ds, progress=False)
    assert res["num_images"] == 2 and 0 <= res["mIoU"] <= 100

    x = torch.randn(1, 3, 64, 64)
    losses = model.train().loss(x, torch.randint(0, 5, (1, 64, 64)))
    assert set(losses) == {"loss", "loss_seg", "loss_aux"}
    assert torch.allclose(losses["loss"], losses["loss_seg"] + losses["loss_aux"])

    # the FLOP counter and the checkpoint loader look the family up: its convention / no converter
    flops = count_flops(model.eval(), (64, 64))
    assert flops["mode"] == "torch" and flops["gmacs"] > 0
    report = segkit.load_checkpoint(model, tmp_path / "run" / "final" / "model.safetensors", verbose=False)
    assert report.format == "segkit" and not report.missing

    # and it segments files through the same path as every zoo model
    from PIL import Image

    from segkit.engine.predict import predict_paths

    image = next((synthetic_split / "images" / "test").iterdir())
    written = predict_paths(model, image, tmp_path / "pred", progress=False)
    label = np.array(Image.open(written[0]))
    assert label.shape == (360, 480) and label.max() < 5


def test_families_are_consistent():
    seen = set()
    for name, family in segkit.FAMILIES.items():
        assert family.name == name and family.models and family.paper
        assert not (set(family.models) & seen), f"{name}: model names shared with another family"
        seen |= set(family.models)
        with torch.device("meta"):
            for model_name, builder in family.models.items():
                model = builder(3)
                assert model.family == name and model.name == model_name
                # the architecture is stored once: rebuilding from `arch` gives the same network
                again = segkit.build_model(model_name, 3, **model.arch)
                assert again.arch == model.arch
                assert [(k, v.shape) for k, v in again.state_dict().items()] == [
                    (k, v.shape) for k, v in model.state_dict().items()
                ]
    assert seen == set(segkit.MODELS)
