"""The model card (``README.md``) that ``save_pretrained`` and ``push_to_hub`` write beside the weights.

A Hugging Face model card: the metadata block the Hub reads (:func:`card_metadata`: library, pipeline tag,
licence, tags, data set, base model, ``model-index`` with the metrics and their test protocol) and
Markdown sections — the architecture and its paper, how to load it with segkit, the classes, the
test protocol, the last evaluation (the per-class table), the training configuration, the
licence and the citation. Everything comes from the model itself (``config()``, ``paper``,
``source``, ``train_config``, ``eval_results``), so the card of a folder matches its weights;
``segkit push`` (:mod:`segkit.publish`) adds what only the run knows: the test metrics, the base model.
"""

from __future__ import annotations

import json

NVIDIA_LICENCE_NAME = "nvidia-source-code-license"
NVIDIA_LICENCE_LINK = "https://github.com/NVlabs/SegFormer/blob/master/LICENSE"


def licence_fields(text: str | None) -> dict:
    """The Hub's licence metadata of a licence as segkit records it (the registry's ``licence`` text, a Hub
    identifier such as ``apache-2.0``, or ``None``): ``{"license": id}`` for the licences the Hub knows;
    ``{"license": "other", "license_name": ..., "license_link": ...}`` for NVIDIA's Source Code License (the
    SegFormer / MiT weights) and any other text (its first URL as the link); ``{}`` for ``None`` / empty."""
    import re

    text = str(text or "").strip()
    if not text:
        return {}
    low = text.lower()
    if re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", low) and low != "other":  # already a Hub identifier
        return {"license": low}
    if "nvidia" in low:
        return {"license": "other", "license_name": NVIDIA_LICENCE_NAME, "license_link": NVIDIA_LICENCE_LINK}
    first = low.split()[0].strip(",;:()")
    if first.startswith("apache"):  # the registry's "Apache-2.0 (…)"
        return {"license": "apache-2.0"}
    if first == "mit":
        return {"license": "mit"}
    name = re.sub(r"[^a-z0-9]+", "-", low.split("(")[0].split(";")[0]).strip("-")[:60] or "custom"
    url = re.search(r"https?://\S+", text)
    return {"license": "other", "license_name": name, **({"license_link": url.group(0).rstrip(").,;")} if url else {})}


def licence_requires_file(fields: dict) -> bool:
    """Whether redistributing weights under this licence requires a copy of it beside them (Apache-2.0 §4(a),
    NVIDIA's Source Code License §3.1, MIT / BSD: the notice; ``other``: assumed)."""
    return bool(fields) and fields.get("license") not in ("cc0-1.0", "unlicense")


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


def _results_entry(res: dict, split: str, protocol: dict | None) -> dict | None:
    """One ``model-index`` result of an evaluation (:func:`segkit.engine.evaluator.evaluate`'s dict)."""
    keys = [k for k in ("mIoU", "aAcc", "mAcc", "mDice", "mFscore", "fgIoU", "fgDice") if _number(res.get(k))]
    if not keys:
        return None
    settings = res.get("settings") or {}
    dataset = str(settings.get("dataset") or "").split("/")[0] or "custom"
    kinds = {"mIoU": "mean_iou", "aAcc": "accuracy", "mAcc": "mean_accuracy", "mDice": "mean_dice"}
    args = {k: v for k, v in {**(protocol or {}), **settings}.items() if k not in ("dataset", "world_size")}
    if res.get("num_images"):
        args["num_images"] = int(res["num_images"])
    return {
        "task": {"type": "image-segmentation", "name": "Semantic segmentation"},
        "dataset": {"type": dataset, "name": dataset, "split": split},
        "metrics": [
            {"type": kinds.get(k, k.lower()), "value": round(float(res[k]), 2), "name": k, "args": args} for k in keys
        ],
    }


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x  # not NaN


def card_metadata(
    model,
    *,
    repo_id: str | None = None,
    licence: str | None = None,
    base_model: str | None = None,
    results: list[tuple[str, dict]] | None = None,
) -> dict:
    """The YAML metadata block of the card (what the Hub shows beside the model): ``library_name: segkit``,
    ``pipeline_tag: image-segmentation``, ``license`` (+ ``license_name`` / ``license_link`` for NVIDIA's and other
    non-standard licences, :func:`licence_fields`), ``tags``, ``datasets``, ``base_model`` (a Hub id, when given)
    and ``model-index``: one result per ``(split, evaluation)`` in ``results`` (``metrics.json`` of ``segkit eval``),
    else the run's stored last validation (``eval_results``), each metric with the test protocol it was measured
    with (``args``).

    ``licence``: overrides the weights' own (``model.source["licence"]``, set for registry and Hub models)."""
    src = model.source or {}
    fields = licence_fields(licence if licence is not None else src.get("licence"))
    train_data = ((model.train_config or {}).get("data") or {}).get("train") or {}
    dataset = src.get("dataset") or (str(train_data.get("name") or "") if isinstance(train_data, dict) else "")
    for res in [r for _, r in results or []] + [model.eval_results or {}]:  # else the evaluated data set's name
        dataset = dataset or str((res.get("settings") or {}).get("dataset") or "").split("/")[0]
    meta: dict = {"library_name": "segkit", "pipeline_tag": "image-segmentation", **fields}
    meta["tags"] = ["semantic-segmentation", "segkit", *([model.family] if model.family else []), model.name]
    if dataset:
        meta["datasets"] = [dataset]
    if base_model:
        meta["base_model"] = base_model
    protocol = _protocol(model)
    entries = [_results_entry(res, split, protocol) for split, res in (results or [])]
    if not results and model.eval_results:
        entries = [_results_entry(model.eval_results, "validation", protocol)]
    entries = [e for e in entries if e]
    if entries:
        meta["model-index"] = [{"name": repo_id or model.name, "results": entries}]
    return meta


def _protocol(model) -> dict | None:
    return model.test_protocol or (
        (model.train_config or {}).get("test_transform")
        and {**model.train_config.get("test_transform", {}), **model.train_config.get("eval", {})}
    )


def model_card(
    model,
    *,
    repo_id: str | None = None,
    licence: str | None = None,
    base_model: str | None = None,
    results: list[tuple[str, dict]] | None = None,
) -> str:
    """The card of a :class:`~segkit.models.segmentor.Segmentor` as Markdown text: the metadata block of
    :func:`card_metadata` (same arguments) as YAML front matter, then the sections."""
    import yaml

    from segkit.utils import json_safe

    src = model.source or {}
    res = model.eval_results or {}
    meta = card_metadata(model, repo_id=repo_id, licence=licence, base_model=base_model, results=results)
    meta = json.loads(json.dumps(json_safe(meta), default=list))  # tuples → lists, NaN → null: plain YAML
    front = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip(), "---"]
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
    if base_model:
        lines += [f"Fine-tuned from [`{base_model}`](https://huggingface.co/{base_model}).", ""]
    protocol = _protocol(model)
    if protocol:
        lines += ["## Test protocol", "", "```json", json.dumps(protocol, indent=1, default=list), "```", ""]
    for split, r in results or []:
        lines += [f"## Evaluation ({split})", ""]
        if (r.get("settings") or {}).get("dataset"):
            lines += [f"On `{r['settings']['dataset']}` ({r.get('num_images', '?')} images):", ""]
        lines += [*_metrics_table(r), ""]
    if res:
        lines += ["## Evaluation" + (" (last validation of the run)" if results else ""), ""]
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
    text = licence or src.get("licence")
    lines += [
        "## Licence",
        "",
        str(text or "Not stated: the weights inherit the terms of the data they were trained on."),
        "",
    ]
    citation = (model.paper or {}).get("citation")
    if citation:
        lines += ["## Citation", "", "```bibtex", citation, "```", ""]
    return "\n".join(lines)


__all__ = ["model_card", "card_metadata", "licence_fields", "licence_requires_file"]
