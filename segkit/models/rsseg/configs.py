"""The shipped configs of the RSSeg family (RSSeg paper §4.2–4.4 and its baselines).

RSSeg recipe (§4.2): batch 16; crops Cityscapes 768, ADE20K 512 (640 for the large models),
Pascal Context 480, COCO-Stuff-10k 512, COCO-Stuff-164k 640; iterations 80k / 80k / 30k / 30k /
80k; slide inference with window = crop. BEiT: the BEiT protocol (AdamW, layer-wise lr decay
0.9 / 0.95, lr 3e-5 / 2e-5, weight decay 0.05, warm-up 1500 / 3000; ``microsoft/unilm:
beit/semantic_segmentation/configs/beit/upernet/*``); ViT-AugReg: the same with lr 2e-5 and
weight decay 0.01. "10× lr for randomly initialised parameters except the transformer decoder
and the queries": ``head_lr_mult`` 10 with ``decode_head.decoder.*`` back at 1× (the local
path's patch embedding is initialised from the ViT's, so it also stays at 1×). CSWin on
Cityscapes follows SegFormer's recipe (crop 1024, 160k, batch 8, lr 6e-5, slide 1024/768).

Ablations (§4.3: "768×768 crop size, 80K iterations for Cityscapes"): the CSWin-T ablations of
Tables 7–8 train with 768² crops for 80k iterations (slide window 768, stride 576 — SegFormer's
3/4 overlap; batch 8 as the CSWin protocol, the paper gives none for them). Table 7's "+3/5/9
LSBs" rows keep the local path (LSBs, their fusions and input projection) at 1× lr; "10×lr"
(Table 7 caption: "we impose the 10× learning rate on LSBs") is its own row ``9-lsbs-10x`` and
holds for every later row and for Table 8. Segmenter on Pascal Context trains 40k iterations
(§4.4.3, "we retrain the models with 40K iterations"). ViT-AugReg models use "the same training
settings with our BEiT models", so ViT-L gets BEiT-L's 3000 warm-up iterations.

Weight decay: with ``no_decay_1d`` (BEiT's convention) biases, norms and other 1-D parameters
(DCA scales) do not decay. The LHF logits (``LearnableHighPass.weight``, shape ``(C, 1, k, k)``)
are convolution weights and decay like every other conv weight: the paper says nothing about
them, and mmseg's default optimizer constructor, which the paper used, decays them.
"""

from __future__ import annotations

from segkit.recipes import PAPER_DATASETS, paper_config, small_config

from .builders import PLAIN_ABLATIONS, PYRAMID_ABLATIONS

PLAIN = ["rsseg-vit-b", "rsseg-vit-l", "rsseg-beit-b", "rsseg-beit-l"]
BASELINES = ["vit-linear-b", "vit-linear-l", "beit-linear-b", "beit-linear-l", "segmenter-vit-b", "segmenter-vit-l"]
DATA = {
    "ade20k": dict(data=PAPER_DATASETS["ade20k"]["data"], scale=[2048, 512], crop=512, crop_large=640, iters=80000),
    "cityscapes": dict(
        data=PAPER_DATASETS["cityscapes"]["data"], scale=[2048, 1024], crop=768, crop_large=768, iters=80000
    ),
    "pascal_context59": dict(
        data=PAPER_DATASETS["pascal_context59"]["data"], scale=[520, 520], crop=480, crop_large=480, iters=30000
    ),
    "coco_stuff10k": dict(
        data={
            "train": {"type": "coco_stuff10k", "root": "data/coco_stuff10k", "split": "train"},
            "val": {"type": "coco_stuff10k", "root": "data/coco_stuff10k", "split": "test"},
        },
        scale=[2048, 512],
        crop=512,
        crop_large=512,
        iters=30000,
    ),
    "coco_stuff164k": dict(
        data=PAPER_DATASETS["coco_stuff164k"]["data"], scale=[2048, 640], crop=640, crop_large=640, iters=80000
    ),
}
LR_MULT = {"decode_head.decoder.": 1.0, "decode_head.local_embed.proj.": 1.0}
# Table 7's 1× rows: the CSWin local path (LSBs, AFs, tap projections, input projection) at 1×.
LSB_1X = {"decode_head.local.": 1.0, "decode_head.in_proj.": 1.0}
LSB_1X_ROWS = ("3-lsbs", "5-lsbs", "9-lsbs")
ABLATION_CROP, ABLATION_ITERS = 768, 80000  # §4.3, Cityscapes ablations


def _optim(model: str) -> tuple[dict, int]:
    large = model.endswith("-l")
    if "beit" in model:
        optim = {"lr": 2.0e-5 if large else 3.0e-5, "weight_decay": 0.05, "layer_decay": 0.95 if large else 0.9}
        warmup = 3000 if large else 1500
    else:  # ViT-AugReg: "the same training settings with our BEiT models", lr 2e-5, wd 0.01
        optim = {"lr": 2.0e-5, "weight_decay": 0.01, "layer_decay": 0.95 if large else 0.9}
        warmup = 3000 if large else 1500
    if model.startswith("segmenter"):  # the whole head is a transformer decoder with queries: 1x
        optim.update(head_lr_mult=1.0, custom_lr_mult={})
    elif model.startswith("rsseg"):
        optim.update(head_lr_mult=10.0, custom_lr_mult=dict(LR_MULT))
    else:  # linear classifier: randomly initialised, 10x
        optim.update(head_lr_mult=10.0, custom_lr_mult={})
    # BEiT/ViT fine-tuning convention: biases, norms and other 1-D parameters (DCA scales) do not
    # decay; the 4-D LHF logits decay like the other conv weights (module docstring).
    return {"lr": optim.pop("lr"), "betas": [0.9, 0.999], **optim, "no_decay_1d": True}, warmup


def plain_config(model: str, dataset: str, model_args: dict | None = None, tag: str = "") -> dict:
    """RSSeg / baseline on a plain ViT or BEiT: the recipe above for ``dataset``."""
    r = DATA[dataset]
    crop = r["crop_large"] if model.endswith("-l") else r["crop"]
    scale = [r["scale"][0] * crop // r["scale"][1], crop] if r["scale"][1] < crop else list(r["scale"])
    stride = crop * 2 // 3
    optim, warmup = _optim(model)
    iters = 40000 if model.startswith("segmenter") and dataset == "pascal_context59" else r["iters"]  # §4.4.3
    name = model + (f"_{tag}" if tag else "")
    return {
        "model": model,
        "model_args": {"img_size": crop, **(model_args or {})},
        "pretrained": None,
        "data": r["data"],
        "train_transform": {
            "scale": scale,
            "ratio_range": [0.5, 2.0],
            "crop_size": [crop, crop],
            "cat_max_ratio": 0.75,
            "flip_prob": 0.5,
            "photometric": True,
        },
        "test_transform": {"scale": list(scale), "keep_ratio": True, "size_divisor": None},
        "optim": optim,
        "schedule": {"max_iters": iters, "warmup_iters": warmup, "warmup_ratio": 1.0e-6, "power": 1.0},
        "train": {
            "batch_size": 16,
            "num_workers": 4,
            "eval_interval": 8000 if iters > 40000 else 4000,
            "work_dir": f"work_dirs/{name}_{dataset}",
        },
        "eval": {"mode": "slide", "crop_size": [crop, crop], "stride": [stride, stride]},
    }


def cswin_config(model: str, model_args: dict | None = None, tag: str = "", ablation: bool = False) -> dict:
    """RSSeg-CSWin on Cityscapes: SegFormer's Cityscapes recipe; ``ablation``: §4.3's 768² / 80k (module doc)."""
    crop = ABLATION_CROP
    cfg = paper_config(model, "cityscapes", eval_interval=4000, crop=[crop, crop] if ablation else None)
    name = model + (f"_{tag}" if tag else "")
    cfg["model_args"] = dict(model_args or {})
    cfg["train"]["work_dir"] = f"work_dirs/{name}_cityscapes"
    if ablation:
        cfg["schedule"]["max_iters"] = ABLATION_ITERS
        cfg["eval"] = {"mode": "slide", "crop_size": [crop, crop], "stride": [crop * 3 // 4, crop * 3 // 4]}
        if tag in LSB_1X_ROWS:
            cfg["optim"]["custom_lr_mult"] = dict(LSB_1X)
    return {k: cfg[k] for k in ("model", "model_args", *[k for k in cfg if k not in ("model", "model_args")])}


def configs() -> dict[str, dict]:
    """``{"dataset/name.yaml": config dict}`` for every RSSeg-family config shipped."""
    out = {}
    for dataset in DATA:
        for model in PLAIN + BASELINES:
            out[f"{dataset}/{model}.yaml"] = plain_config(model, dataset)
    for model in ("rsseg-cswin-t", "rsseg-cswin-s"):
        out[f"cityscapes/{model}.yaml"] = cswin_config(model)
    # Ablations: Tables 4-6 on ADE20K with ViT-B, Tables 7-8 on Cityscapes with CSWin-T.
    for tag, args in PLAIN_ABLATIONS.items():
        out[f"ade20k/rsseg-vit-b_{tag}.yaml"] = plain_config("rsseg-vit-b", "ade20k", args, tag)
    for tag, args in PYRAMID_ABLATIONS.items():
        out[f"cityscapes/rsseg-cswin-t_{tag}.yaml"] = cswin_config("rsseg-cswin-t", args, tag, ablation=True)
    # CamVid (not in the paper): the small-data recipe with ViT-Ti, crop 352 (a multiple of 16).
    for model in ("rsseg-vit-ti", "vit-linear-ti"):
        cfg = small_config(model, "camvid")
        cfg["train_transform"]["crop_size"] = [352, 352]
        cfg = {"model": model, "model_args": {"img_size": 352}, **{k: v for k, v in cfg.items() if k != "model"}}
        if model.startswith("rsseg"):
            cfg["optim"]["custom_lr_mult"] = dict(LR_MULT)
        out[f"camvid/{model}.yaml"] = cfg
    return out


__all__ = ["configs", "plain_config", "cswin_config", "LR_MULT", "LSB_1X", "LSB_1X_ROWS"]
