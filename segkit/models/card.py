"""The model card (``README.md``) that ``save_pretrained`` and ``push_to_hub`` write beside the weights.

A Hugging Face model card: YAML front matter (library, tags, licence, data set, metrics) and
Markdown sections — the architecture and its paper, how to load it with segkit, the classes, the
test protocol, the last evaluation (the per-class table), the training configuration, the
licence and the citation. Everything comes from the model itself (``config()``, ``paper``,
``source``, ``train_config``, ``eval_results``), so the card of a folder matches its weights.
"""

from __future__ import annotations

import json


def _licence(model) -> str:
    src = model.source or {}
    text = str(src.get("licence") or "")
    if text.lower().startswith("apache"):
        return "apache-2.0"
    return "other"


def _metrics_table(res: dict) -> list[str]:
    keys = [k for k in ("aAcc", "mIoU", "mAcc", "mDice", "mFscore") if isinstance(res.get(k), (int, float))]
    lines = [
        "| " + " | ".join(keys) + " |",
        "|" + "---:|" * len(keys),
        "| " + " | ".join(f"{res[k]:.2f}" for k in keys) + " |",
    ]
    if res.get("per_class"):
        lines += ["", "Per class:", "", res["per_class"].strip()]
    return lines


def model_card(model) -> str:
    """The card of a :class:`~segkit.models.segmentor.Segmentor` as Markdown text."""
    src = model.source or {}
    res = model.eval_results or {}
    dataset = src.get("dataset") or ""
    front = [
        "---",
        "library_name: segkit",
        "tags:",
        "- semantic-segmentation",
        "- segkit",
        f"- {model.name}",
        f"license: {_licence(model)}",
    ]
    if dataset:
        front.append(f"datasets:\n- {dataset}")
    if isinstance(res.get("mIoU"), (int, float)):
        front += ["metrics:", "- mean_iou"]
    front.append("---")
    paper = (model.paper or {}).get("title") or "a custom architecture"
    lines = [
        *front,
        "",
        f"# {model.name}",
        "",
        f"Semantic segmentation with **{model.name}** ({model.num_classes} classes), from {paper}.",
        "",
    ]
    if src.get("source"):
        lines += [
            f"Weights: `{src['source']}`"
            + (f", trained by {src['trained_by']}" if src.get("trained_by") else "")
            + ".",
            "",
        ]
    lines += [
        "## Use",
        "",
        "```python",
        "import segkit",
        "",
        'seg = segkit.Segmenter("<this folder or repo id>")',
        'result = seg("image.jpg")        # result.label: (H, W) class indices; result.overlay()',
        "```",
        "",
        "or `segkit predict <this folder or repo id> image.jpg --out pred`.",
        "",
    ]
    lines += ["## Classes", "", ", ".join(f"{i} {n}" for i, n in enumerate(model.class_names)), ""]
    protocol = model.test_protocol or (
        (model.train_config or {}).get("test_transform")
        and {**model.train_config.get("test_transform", {}), **model.train_config.get("eval", {})}
    )
    if protocol:
        lines += ["## Test protocol", "", "```json", json.dumps(protocol, indent=1, default=list), "```", ""]
    if res:
        lines += ["## Evaluation", ""]
        if res.get("settings", {}).get("dataset"):
            lines += [f"On `{res['settings']['dataset']}` ({res.get('num_images', '?')} images):", ""]
        lines += [*_metrics_table(res), ""]
    elif src.get("miou") is not None:
        lines += ["## Evaluation", "", f"mIoU {src['miou']} (single scale) as reported by the source.", ""]
    if model.train_config:
        import yaml

        lines += [
            "## Training configuration",
            "",
            "```yaml",
            yaml.safe_dump(model.train_config, sort_keys=False).strip(),
            "```",
            "",
        ]
    lines += [
        "## Licence",
        "",
        str(src.get("licence") or "Not stated: the weights inherit the terms of the data they were trained on."),
        "",
    ]
    citation = (model.paper or {}).get("citation")
    if citation:
        lines += ["## Citation", "", "```bibtex", citation, "```", ""]
    return "\n".join(lines)


__all__ = ["model_card"]
