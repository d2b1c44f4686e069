"""``segkit analyze``: the analysis tools of :mod:`segkit.tools.analysis` run over images, writing PNGs
and the numbers behind them (JSON, and Markdown for ``sizes``) into one folder.

Each ``write_*`` function takes a model and its inputs, writes its files and returns the JSON
summary it wrote. File names: ``erf.png`` / ``erf.json`` / ``erf_<layer>.npy``,
``features.png`` / ``features.json``, ``attention.png`` / ``attention.json``, ``gradcam.png`` /
``gradcam.json``, ``sizes.png`` / ``sizes.json`` / ``sizes.md``. Existing files of the same name
are replaced (each write is atomic).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from segkit.errors import UsageError
from segkit.tools import analysis as A
from segkit.utils import atomic_open, atomic_write_bytes, json_safe


def stage_layers(model, with_head: bool = True) -> list[str]:
    """``backbone#0`` … ``backbone#{S-1}`` (every encoder stage), plus ``decode_head``."""
    param = next(model.parameters())
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            n = len(model.extract_features(torch.zeros(1, 3, 64, 64, device=param.device)).stages)
    finally:
        model.train(was)
    return [f"backbone#{i}" for i in range(n)] + (["decode_head"] if with_head else [])


def _write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, (json.dumps(json_safe(data), indent=2) + "\n").encode())


def _save_png(path: Path, save) -> Path:
    buf = io.BytesIO()
    save(buf)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _grid(panels, path: Path, columns: int, title: str) -> Path:
    return _save_png(path, lambda buf: A.save_grid(panels, buf, columns=columns, title=title))


def _class_name(model, c: int) -> str:
    names = getattr(model, "class_names", None)
    return names[c] if names and c < len(names) else str(c)


def resolve_classes(model, classes: Sequence[str] | None) -> list[int]:
    """Class names or indices → indices (``None`` = every class). Raises ``ValueError`` naming an unknown one."""
    k = int(model.num_classes)
    if not classes:
        return list(range(k))
    names = list(getattr(model, "class_names", None) or [])
    out = []
    for c in classes:
        if str(c).isdigit() and int(c) < k:
            out.append(int(c))
        elif c in names:
            out.append(names.index(c))
        else:
            raise UsageError(f"unknown class {c!r}: give an index 0..{k - 1} or one of {names or 'no names'}")
    return out


# ----------------------------------------------------------------------------- erf
def write_erf(model, samples: Iterable[A.Sample], layers: Sequence[str], out_dir, *, title: str = "") -> dict:
    """ERF of each layer (:func:`~segkit.tools.analysis.effective_receptive_field`): ``erf.png``
    (one log-scaled heat map per layer, RepLKNet's display), ``erf_<layer>.npy`` (the raw
    ``(H, W)`` float64 map), ``erf.json`` (area ratios, extent, shapes, image count)."""
    out = Path(out_dir)
    res = A.effective_receptive_field(model, samples, layers, progress=True)
    panels, summary = [], {"image_size": res["image_size"], "num_images": res["num_images"], "skipped": res["skipped"]}
    summary["layers"] = {}
    for spec in layers:
        r = res[spec]
        with atomic_open(out / f"erf_{A.safe_name(spec)}.npy") as f:
            np.save(f, r["erf"])
        ar = r["area_ratio"]
        heat = A.heatmap_rgb(r["erf"], "RdYlGn", log=True)
        panels.append((f"{spec}  r50 {ar['0.5']:.3f}  r99 {ar['0.99']:.3f}", heat))
        summary["layers"][spec] = {k: v for k, v in r.items() if k != "erf"}
    _grid(panels, out / "erf.png", columns=min(len(panels), 5), title=title or "effective receptive field (log scale)")
    _write_json(out / "erf.json", summary)
    return summary


# ----------------------------------------------------------------------------- features
def write_features(model, sample: A.Sample, layers: Sequence[str], out_dir: str | Path) -> dict:
    """``features.png``: the image, then per layer its PCA colours and feature-norm map;
    ``features.json``: the numbers of :func:`~segkit.tools.analysis.feature_maps`."""
    out = Path(out_dir)
    res = A.feature_maps(model, sample, layers)
    panels = [("input", sample.rgb), ("", None)]  # then one row per layer: PCA colours | feature norm
    summary = {"image": sample.name, "layers": {}}
    for spec, r in res.items():
        panels.append((f"{spec} PCA {r['shape'][1]}x{r['shape'][2]}", r["pca"]))
        caption = f"{spec} |f| (min-max)  neighbour cos {r['neighbour_cos']:.2f}"
        panels.append((caption, A.heatmap_rgb(r["norm"], "viridis", minmax=True)))
        summary["layers"][spec] = {k: v for k, v in r.items() if k not in ("pca", "norm")}
    _grid(panels, out / "features.png", columns=2, title=f"features of {sample.name}")
    _write_json(out / "features.json", summary)
    return summary


# ----------------------------------------------------------------------------- attention
def _mark(rgb: np.ndarray, yx, size: int = 6) -> np.ndarray:
    img = rgb.copy()
    y, x = int(yx[0]), int(yx[1])
    h, w = img.shape[:2]
    for dy in range(-size, size + 1):
        for yy, xx in ((y + dy, x), (y, x + dy)):
            if 0 <= yy < h and 0 <= xx < w:
                img[yy, xx] = (255, 255, 255)
    return img


def write_attention(
    model,
    sample: A.Sample,
    layers: Sequence[str] | None,
    out_dir: str | Path,
    *,
    query_yx=None,
    classes: Sequence[int] | None = None,
    max_classes: int = 12,
) -> dict:
    """``attention.png``: class-query maps (default: the classes the model predicts most in the
    image, at most ``max_classes``) or pixel-query maps (the query marked with a cross) over the
    image; ``attention.json``: per map its entropy and arg-max position."""
    out = Path(out_dir)
    res = A.attention_maps(model, sample, layers, query_yx=query_yx)
    with torch.no_grad():
        was = model.training
        pred = model.eval().predict(sample.image)[0]
        model.train(was)
    order = torch.bincount(pred.flatten(), minlength=model.num_classes).argsort(descending=True).tolist()
    shown = list(classes) if classes else [c for c in order if (pred == c).any()][:max_classes]
    panels = [("input", _mark(sample.rgb, res["query_yx"]) if _has_pixel(res) else sample.rgb)]
    summary = {"image": sample.name, "query_yx": res["query_yx"], "layers": {}}
    for name, r in res.items():
        if name == "query_yx":
            continue
        maps = r["maps"].float()
        entry = {"kind": r["kind"], "grid": list(maps.shape[-2:]), "maps": []}
        rows = range(maps.shape[0]) if r["kind"] == "pixel_query" else shown
        for i in rows:
            m = maps[i].numpy()
            peak = np.unravel_index(int(m.argmax()), m.shape)
            label = "query" if r["kind"] == "pixel_query" else _class_name(model, i)
            entry["maps"].append({"of": label, "entropy": r["entropy"][i], "argmax_yx": [int(peak[0]), int(peak[1])]})
            over = A.blend(sample.rgb, A.heatmap_rgb(m, "jet"), 0.55)
            if r["kind"] == "pixel_query":
                over = _mark(over, res["query_yx"])
            panels.append((f"{name.replace('decode_head.', 'head.')}: {label}", over))
        if "query_token" in r:
            entry["query_token"] = r["query_token"]
        summary["layers"][name] = entry
    _grid(panels, out / "attention.png", columns=4, title=f"attention maps on {sample.name}")
    _write_json(out / "attention.json", summary)
    return summary


def _has_pixel(res: dict) -> bool:
    return any(isinstance(r, dict) and r.get("kind") == "pixel_query" for r in res.values())


# ----------------------------------------------------------------------------- Grad-CAM
def write_gradcam(
    model,
    samples: Iterable[A.Sample],
    layer: str,
    out_dir: str | Path,
    *,
    classes: Sequence[int] | None = None,
    show: int = 2,
    ignore_index: int = 255,
) -> dict:
    """Grad-CAM of each class on ``layer`` over the images. ``gradcam.json``: per class the mean
    CAM inside and outside its ground-truth pixels, averaged over the images where the class
    occurs (the check that the map points at the class); ``gradcam.png``: the overlays of the
    first ``show`` images for the classes present in their ground truth (or prediction)."""
    out = Path(out_dir)
    classes = list(range(model.num_classes)) if classes is None else list(classes)
    inside = {c: [] for c in classes}
    outside = {c: [] for c in classes}
    panels = []
    n = 0
    for j, s in enumerate(A._progress(samples, True, "gradcam")):
        n += 1
        present = classes if s.label is None else [c for c in classes if bool((s.label == c).any())]
        if j < show:
            panels.append((f"{s.name}", s.rgb))
        for c in present:
            r = A.grad_cam(model, s, layer, c)
            if s.label is not None:
                io_ = A.cam_inside_outside(r["cam"], s.label, c, ignore_index)
                if io_ is not None:
                    inside[c].append(io_[0])
                    outside[c].append(io_[1])
            if j < show and len([p for p in panels if p[0].startswith(s.name + ":")]) < 7:
                panels.append((f"{s.name}: {_class_name(model, c)}", A.blend(s.rgb, A.heatmap_rgb(r["cam"], "jet"))))
    per_class = {}
    for c in classes:
        if inside[c]:
            i, o = float(np.mean(inside[c])), float(np.mean(outside[c]))
            ratio = i / max(o, 1e-12)
            per_class[_class_name(model, c)] = {"images": len(inside[c]), "inside": i, "outside": o, "ratio": ratio}
    summary = {"layer": layer, "num_images": n, "per_class": per_class}
    if per_class:
        summary["classes_higher_inside"] = sum(v["inside"] > v["outside"] for v in per_class.values())
        summary["classes_scored"] = len(per_class)
    if panels:
        _grid(panels, out / "gradcam.png", columns=4, title=f"Grad-CAM on {layer}")
    _write_json(out / "gradcam.json", summary)
    return summary


# ----------------------------------------------------------------------------- sizes
def sizes_table(res: dict, class_names: Sequence[str]) -> str:
    """Markdown: per class (sorted by mean object area) objects and IoU per size bucket, and the overall IoU."""
    s = res["sizes"]
    lines = [
        f"objects: connected components of each class in the ground truth; small < {s['thresholds'][0]} px, "
        f"large >= {s['thresholds'][1]} px (label resolution)",
        "",
        "| class | mean object area (px) | objects S/M/L | IoU small | IoU medium | IoU large | IoU |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def f(v):
        return "-" if v is None or not np.isfinite(v) else f"{v:.2f}"

    area = np.array([np.nan if a is None else a for a in s["mean_object_area"]], dtype=float)
    order = sorted(range(len(class_names)), key=lambda c: (np.isnan(area[c]), area[c]))
    for c in order:
        objs = "/".join(str(s[b]["objects"][c]) for b in A.BUCKETS)
        a = "-" if np.isnan(area[c]) else f"{area[c]:.0f}"
        ious = " | ".join(f(s[b]["IoU"][c]) for b in A.BUCKETS)
        lines.append(f"| {class_names[c]} | {a} | {objs} | {ious} | {f(res['IoU'][c])} |")
    lines.append(f"| **mean** | | | {' | '.join(f(s[b]['mIoU']) for b in A.BUCKETS)} | {f(res['mIoU'])} |")
    return "\n".join(lines) + "\n"


def write_sizes(res: dict, class_names: Sequence[str], out_dir: str | Path) -> dict:
    """``sizes.json`` (the evaluator's metrics with ``"sizes"``), ``sizes.md`` (:func:`sizes_table`)
    and ``sizes.png``: mIoU per bucket and each class's IoU against its mean object area."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out_dir)
    s = res["sizes"]
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    vals = [s[b]["mIoU"] for b in A.BUCKETS]
    heights = [0 if v is None or not np.isfinite(v) else v for v in vals]
    ax.bar(A.BUCKETS, heights, color=["#d95f02", "#7570b3", "#1b9e77"])
    ax.set_ylabel("mIoU (%)")
    ax.set_title("IoU by object size (mean over classes)")
    ax = fig.add_subplot(1, 2, 2)
    for c, name in enumerate(class_names):
        a, iou = s["mean_object_area"][c], res["IoU"][c]
        if a is not None and np.isfinite(a) and iou is not None and np.isfinite(iou):
            ax.scatter(a, iou, color="#1f78b4")
            ax.annotate(name, (a, iou), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("mean object area (pixels)")
    ax.set_ylabel("IoU (%)")
    ax.set_title("per-class IoU vs object size")
    fig.tight_layout()
    _save_png(out / "sizes.png", lambda buf: fig.savefig(buf, format="png"))
    table = sizes_table(res, class_names)
    atomic_write_bytes(out / "sizes.md", table.encode())
    keep = {k: v for k, v in res.items() if k not in ("per_class",)}
    keep["class_names"] = list(class_names)
    _write_json(out / "sizes.json", keep)
    return keep


__all__ = [
    "resolve_classes",
    "sizes_table",
    "stage_layers",
    "write_attention",
    "write_erf",
    "write_features",
    "write_gradcam",
    "write_sizes",
]
