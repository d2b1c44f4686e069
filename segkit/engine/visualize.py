"""Pictures of label maps: colour masks, overlays, legends, comparison panels, confusion matrices.

All image helpers take and return ``numpy`` ``uint8`` arrays ``(H, W, 3)`` RGB; label maps are
integer arrays or tensors ``(H, W)`` of class indices with ``ignore_index`` (default 255) for
unlabelled pixels. Drawing uses Pillow; the confusion-matrix plot uses matplotlib's Agg canvas
directly (no pyplot, no global backend switch), so it works headless and in worker processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from segkit.errors import UsageError

IGNORE_COLOUR = (0, 0, 0)


def label_png(label, palette: Sequence[Sequence[int]], mask_values: Sequence[int] | None = None):
    """``PIL.Image`` mode ``P`` of an ``(H, W)`` class-index map (values 0..K-1) with ``palette`` (K ≤ 256 RGB triples).

    Opens in colour in an image viewer and as indices with ``np.array(Image.open(path))``.
    ``mask_values``: a binary model's ``[background, foreground]`` values as its training masks stored them
    (``[0, 255]`` or ``[0, 1]``): the label ``(H, W)`` in {0, 1} is written as a grayscale (mode ``L``) mask with
    those values instead. Raises ``ValueError`` for more than 256 classes.
    """
    from PIL import Image

    if mask_values is not None:
        lut = np.asarray(list(mask_values), dtype=np.uint8)
        return Image.fromarray(lut[np.asarray(label).astype(np.intp)], mode="L")

    if len(palette) > 256:
        raise UsageError(f"{len(palette)} classes do not fit an 8-bit label PNG")
    img = Image.fromarray(np.asarray(label).astype(np.uint8), mode="L").convert("P")
    flat = [int(v) for colour in palette for v in colour]
    img.putpalette(flat + [0] * (768 - len(flat)))
    return img


def png_bytes(img) -> bytes:
    """A ``PIL.Image`` (or ``uint8`` array) encoded as PNG bytes (for atomic writes)."""
    import io

    from PIL import Image

    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _as_label(label) -> np.ndarray:
    if hasattr(label, "detach"):
        label = label.detach().cpu().numpy()
    label = np.asarray(label)
    if label.ndim != 2:
        raise UsageError(f"label map must be 2-D (H, W), got shape {label.shape}")
    if not np.issubdtype(label.dtype, np.integer):
        raise UsageError(f"label map must hold integers, got dtype {label.dtype}")
    return label


def _as_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UsageError(f"image must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
    return image


def _palette_array(palette: Sequence[Sequence[int]]) -> np.ndarray:
    pal = np.asarray(palette, dtype=np.int64)
    if pal.ndim != 2 or pal.shape[1] != 3 or pal.min(initial=0) < 0 or pal.max(initial=0) > 255:
        raise UsageError(f"palette must be a list of [r, g, b] triples in 0-255, got shape {pal.shape}")
    return pal.astype(np.uint8)


def colorize(label, palette: Sequence[Sequence[int]], ignore_index: int = 255) -> np.ndarray:
    """Colour mask ``uint8 (H, W, 3)`` of a label map ``(H, W)``: class ``c`` → ``palette[c]``.

    ``ignore_index`` pixels are black. Raises ``ValueError`` for any other value outside
    ``[0, len(palette))``.
    """
    label = _as_label(label)
    pal = _palette_array(palette)
    ignore = label == ignore_index
    bad = ~ignore & ((label < 0) | (label >= len(pal)))
    if bad.any():
        raise UsageError(
            f"label values {np.unique(label[bad])[:10].tolist()} have no colour "
            f"(palette of {len(pal)}, ignore_index={ignore_index})"
        )
    out = pal[np.where(ignore, 0, label)]
    out[ignore] = IGNORE_COLOUR
    return out


def overlay(image, label, palette: Sequence[Sequence[int]], alpha: float = 0.5, ignore_index: int = 255) -> np.ndarray:
    """Blend the colour mask onto ``image``: ``(1 − alpha)·image + alpha·colour``, uint8 ``(H, W, 3)``.

    ``ignore_index`` pixels keep the original image. ``image`` and ``label`` must have the same
    ``H, W`` (``ValueError`` otherwise); ``alpha`` in ``[0, 1]``.
    """
    image = _as_image(image)
    label = _as_label(label)
    if image.shape[:2] != label.shape:
        raise UsageError(f"image size {image.shape[:2]} != label size {label.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"alpha must be in [0, 1], got {alpha}")
    colour = colorize(label, palette, ignore_index).astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colour
    out = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    ignore = label == ignore_index
    out[ignore] = image[ignore]
    return out


def present_classes(*labels, num_classes: int | None = None, ignore_index: int = 255) -> list[int]:
    """Sorted class ids occurring in any of the label maps (ignore excluded)."""
    ids: set[int] = set()
    for lab in labels:
        ids.update(int(v) for v in np.unique(_as_label(lab)) if v != ignore_index)
    if num_classes is not None:
        ids = {i for i in ids if 0 <= i < num_classes}
    return sorted(ids)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


def legend(
    class_ids: Sequence[int],
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]],
    *,
    row_height: int = 20,
    font_size: int = 13,
    min_height: int = 0,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Legend image ``uint8 (H, W, 3)``: one row per class id, a colour swatch then ``"id name"``.

    ``H = max(len(class_ids) · row_height + padding, min_height)``; ``W`` fits the longest name.
    An empty ``class_ids`` gives a legend reading "(no class)". Raises ``ValueError`` for an id
    without name or colour.
    """
    from PIL import Image, ImageDraw

    pal = _palette_array(palette)
    for c in class_ids:
        if not (0 <= int(c) < min(len(pal), len(class_names))):
            raise UsageError(f"class id {c} has no name/colour ({len(class_names)} names, {len(pal)} colours)")
    font = _font(font_size)
    texts = [f"{int(c)} {class_names[int(c)]}" for c in class_ids] or ["(no class)"]
    pad, swatch = 6, row_height - 6
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max(probe.textbbox((0, 0), t, font=font)[2] for t in texts)
    width = pad + swatch + pad + text_w + pad
    height = max(pad * 2 + row_height * len(texts), int(min_height))
    img = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(img)
    for row, text in enumerate(texts):
        y = pad + row * row_height
        if class_ids:
            colour = tuple(int(v) for v in pal[int(class_ids[row])])
            draw.rectangle([pad, y, pad + swatch, y + swatch], fill=colour, outline=(0, 0, 0))
        draw.text((pad + swatch + pad, y + 1), text, fill=(0, 0, 0), font=font)
    return np.asarray(img, dtype=np.uint8).copy()


def hstack(
    panels: Sequence[np.ndarray], gap: int = 4, background: tuple[int, int, int] = (255, 255, 255)
) -> np.ndarray:
    """Place uint8 ``(H_i, W_i, 3)`` panels side by side, top-aligned, ``gap`` pixels apart."""
    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    out = np.empty((height, width, 3), dtype=np.uint8)
    out[:] = background
    x = 0
    for p in panels:
        out[: p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + gap
    return out


def overlay_with_legend(
    image,
    label,
    palette: Sequence[Sequence[int]],
    class_names: Sequence[str],
    *,
    alpha: float = 0.5,
    ignore_index: int = 255,
) -> np.ndarray:
    """Overlay of ``label`` on ``image`` with the legend of the classes present to its right.

    Returns uint8 ``(max(H, H_legend), W + gap + W_legend, 3)``; the image sits at the top-left,
    so ``out[:H, :W]`` is exactly :func:`overlay`.
    """
    ov = overlay(image, label, palette, alpha, ignore_index)
    ids = present_classes(label, num_classes=len(palette), ignore_index=ignore_index)
    return hstack([ov, legend(ids, class_names, palette, min_height=ov.shape[0])])


def comparison_figure(
    image,
    pred,
    palette: Sequence[Sequence[int]],
    class_names: Sequence[str],
    label=None,
    *,
    alpha: float = 0.5,
    ignore_index: int = 255,
) -> np.ndarray:
    """Panel ``image | ground truth (if given) | prediction overlay | legend``, uint8 ``(H', W', 3)``.

    The legend lists the classes present in the prediction or the ground truth.
    """
    image = _as_image(image)
    panels = [image]
    maps = [pred]
    if label is not None:
        panels.append(overlay(image, label, palette, alpha, ignore_index))
        maps.append(label)
    panels.append(overlay(image, pred, palette, alpha, ignore_index))
    ids = present_classes(*maps, num_classes=len(palette), ignore_index=ignore_index)
    panels.append(legend(ids, class_names, palette, min_height=image.shape[0]))
    return hstack(panels)


def plot_confusion_matrix(
    matrix,
    class_names: Sequence[str] | None,
    path: str | Path,
    *,
    normalize: bool = True,
    title: str | None = None,
    annotate: bool | None = None,
    dpi: int = 100,
) -> Path:
    """Save a confusion-matrix heat map as PNG at ``path`` and return the path.

    Args:
        matrix: ``(K, K)`` counts, rows = ground truth, columns = prediction.
        class_names: K names for the axes (default ``0 … K−1``).
        normalize: divide each row by its ground-truth total (rows with no pixel stay 0), so a
            cell reads "fraction of class g predicted as p"; otherwise raw counts.
        annotate: write the values in the cells; default only when K <= 30 (readability).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = np.asarray(matrix.detach().cpu() if hasattr(matrix, "detach") else matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise UsageError(f"confusion matrix must be square (K, K), got shape {m.shape}")
    k = m.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise UsageError(f"{len(names)} class names given for a {k}x{k} confusion matrix")
    if normalize:
        rows = m.sum(axis=1, keepdims=True)
        m = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    annotate = k <= 30 if annotate is None else annotate
    side = min(max(4.0, 0.45 * k + 2.5), 40.0)
    fig = Figure(figsize=(side + 1.0, side), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(m, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    fontsize = 8 if k <= 30 else 5
    ax.set_xticklabels(names, rotation=90, fontsize=fontsize)
    ax.set_yticklabels(names, fontsize=fontsize)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(title or ("confusion matrix (row-normalised)" if normalize else "confusion matrix"))
    if annotate:
        vmax = 1.0 if normalize else (m.max() if m.size else 0.0)  # top of the colour scale
        for g in range(k):
            for p in range(k):
                v = m[g, p]
                txt = f"{v:.2f}" if normalize else f"{int(v)}"
                ax.text(
                    p,
                    g,
                    txt,
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if vmax > 0 and v > 0.5 * vmax else "black",
                )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), format="png")
    return path
