"""Write the shipped YAML configs under ``segkit/configs/`` from the papers' recipes.

The recipes are facts from architectures.md §6 (iterations, batch, crops, test protocol);
this script only lays them out as one small, flat YAML file per (model, dataset) so that
every config is readable on its own (no inheritance). ``tests/test_configs.py`` checks the
files are in sync with this script and that every one validates.

    python scripts/make_configs.py          # rewrite segkit/configs/
"""
from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1] / "segkit" / "configs"

SEGNEXT = ["segnext-t", "segnext-s", "segnext-b", "segnext-l"]
SEGFORMER = ["segformer-b0", "segformer-b1", "segformer-b2", "segformer-b3", "segformer-b4", "segformer-b5"]

# dataset -> (data specs, train scale, crop, iterations, global batch, test scale, eval protocol)
PAPER = {
    "ade20k": dict(data={"train": {"type": "ade20k", "root": "data/ade/ADEChallengeData2016", "split": "training"},
                         "val": {"type": "ade20k", "root": "data/ade/ADEChallengeData2016", "split": "validation"}},
                   scale=[2048, 512], crop=[512, 512], iters=160000, batch=16, test_scale=[2048, 512],
                   eval={"mode": "whole"}),
    "cityscapes": dict(data={"train": {"type": "cityscapes", "root": "data/cityscapes", "split": "train"},
                             "val": {"type": "cityscapes", "root": "data/cityscapes", "split": "val"}},
                       scale=[2048, 1024], crop=[1024, 1024], iters=160000, batch=8, test_scale=[2048, 1024],
                       eval={"mode": "slide", "crop_size": [1024, 1024], "stride": [768, 768]}),
    "coco_stuff164k": dict(data={"train": {"type": "coco_stuff164k", "root": "data/coco_stuff164k", "split": "train2017"},
                                 "val": {"type": "coco_stuff164k", "root": "data/coco_stuff164k", "split": "val2017"}},
                           scale=[2048, 512], crop=[512, 512], iters=80000, batch=16, test_scale=[2048, 512],
                           eval={"mode": "whole"}),
    "voc_aug": dict(data={"train": {"type": "voc", "root": "data/VOCdevkit/VOC2012", "split": "trainaug"},
                          "val": {"type": "voc", "root": "data/VOCdevkit/VOC2012", "split": "val"}},
                    scale=[2048, 512], crop=[512, 512], iters=80000, batch=16, test_scale=[2048, 512],
                    eval={"mode": "whole"}),
    "pascal_context59": dict(data={"train": {"type": "pascal_context", "root": "data/VOCdevkit/VOC2010", "split": "train"},
                                   "val": {"type": "pascal_context", "root": "data/VOCdevkit/VOC2010", "split": "val"}},
                             scale=[520, 520], crop=[480, 480], iters=80000, batch=16, test_scale=[520, 520],
                             eval={"mode": "slide", "crop_size": [480, 480], "stride": [320, 320]}),
    "isaid": dict(data={"train": {"type": "isaid", "root": "data/iSAID", "split": "train"},
                        "val": {"type": "isaid", "root": "data/iSAID", "split": "val"}},
                  scale=[896, 896], crop=[896, 896], iters=160000, batch=16, test_scale=[896, 896],
                  eval={"mode": "whole"}),
}


def paper_config(model: str, dataset: str) -> dict:
    r = PAPER[dataset]
    scale, crop, test_scale = list(r["scale"]), list(r["crop"]), list(r["test_scale"])
    if model == "segformer-b5" and dataset == "ade20k":  # B5 trains at 640 on ADE20K (architectures.md §6.2)
        scale, crop, test_scale = [2048, 640], [640, 640], [2048, 640]
    seg_next = model.startswith("segnext")
    eval_interval = 8000 if seg_next else (4000 if dataset == "cityscapes" else 16000)
    return {
        "model": model,
        "pretrained": None,
        "data": r["data"],
        "train_transform": {"scale": scale, "ratio_range": [0.5, 2.0], "crop_size": crop, "cat_max_ratio": 0.75,
                            "flip_prob": 0.5, "photometric": True},
        "test_transform": {"scale": test_scale, "keep_ratio": True, "size_divisor": 32},
        "optim": {"lr": 6.0e-5, "betas": [0.9, 0.999], "weight_decay": 0.01, "head_lr_mult": 10.0},
        "schedule": {"max_iters": r["iters"], "warmup_iters": 1500, "warmup_ratio": 1.0e-6, "power": 1.0},
        "train": {"batch_size": r["batch"], "num_workers": 4, "eval_interval": eval_interval,
                  "work_dir": f"work_dirs/{model}_{dataset}"},
        "eval": r["eval"],
    }


def small_config(model: str, dataset: str) -> dict:
    """CamVid / CCP: the reference recipe at the datasets' own image scale.

    The papers do not train on CamVid or CCP; crop and iterations here are our choices for
    these small sets (one image scale, 20k iterations, batch 8), with the reference optimiser.
    Set ``pretrained`` to an ImageNet encoder checkpoint (mit_b*.pth / mscan_*.pth) to fine-tune.
    """
    root = {"camvid": "../shared/data/camvid", "ccp": "../shared/data/ccp"}[dataset]
    scale = {"camvid": [480, 360], "ccp": [825, 550]}[dataset]
    crop = {"camvid": [360, 360], "ccp": [512, 512]}[dataset]
    return {
        "model": model,
        "pretrained": None,
        "data": {"train": {"type": "split", "root": root, "split": "train"},
                 "val": {"type": "split", "root": root, "split": "val" if dataset == "camvid" else "test"},
                 "test": {"type": "split", "root": root, "split": "test"}},
        "train_transform": {"scale": scale, "ratio_range": [0.5, 2.0], "crop_size": crop, "cat_max_ratio": 0.75,
                            "flip_prob": 0.5, "photometric": True},
        "test_transform": {"scale": scale, "keep_ratio": True, "size_divisor": 32},
        "optim": {"lr": 6.0e-5, "betas": [0.9, 0.999], "weight_decay": 0.01, "head_lr_mult": 10.0},
        "schedule": {"max_iters": 20000, "warmup_iters": 1500, "warmup_ratio": 1.0e-6, "power": 1.0},
        "train": {"batch_size": 8, "num_workers": 2, "eval_interval": 2000, "work_dir": f"work_dirs/{model}_{dataset}"},
        "eval": {"mode": "whole"},
    }


def all_configs() -> dict[str, dict]:
    out = {}
    for dataset in PAPER:
        for model in SEGNEXT + SEGFORMER:
            out[f"{dataset}/{model}.yaml"] = paper_config(model, dataset)
    for dataset in ("camvid", "ccp"):
        for model in ("segnext-t", "segnext-s", "segformer-b0", "segformer-b1"):
            out[f"{dataset}/{model}.yaml"] = small_config(model, dataset)
    return out


HEADER = "# Generated by scripts/make_configs.py from the papers' recipes (architectures.md §6). Edit the script.\n"


def render(cfg: dict) -> str:
    return HEADER + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None, width=120)


def main() -> None:
    for rel, cfg in all_configs().items():
        path = ROOT / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(cfg))
    print(f"wrote {len(all_configs())} configs under {ROOT}")


if __name__ == "__main__":
    main()
