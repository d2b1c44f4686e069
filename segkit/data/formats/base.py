"""What the annotation formats share: a :class:`~segkit.data.datasets.SegDataset` whose labels are
drawn from shapes when a sample is read (module docstring of :mod:`segkit.data.formats`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from segkit.data.datasets import SegDataset
from segkit.data.io import DataError

ORDERS = ("file", "area")


@dataclass
class Shape:
    """One annotated region of an image: its class id (raw, before ``label_map``), what to draw
    (format-specific: polygon points, an RLE, a box …), its area in pixels (for ``order: area``)
    and whether it is a crowd region (drawn as ignore)."""

    class_id: int
    geometry: Any
    area: float = 0.0
    crowd: bool = False


@dataclass
class ImageEntry:
    """An image and its shapes; ``size`` (H, W) when the export states it, else read from the file."""

    path: str
    shapes: list[Shape] = field(default_factory=list)
    size: tuple[int, int] | None = None
    ref: str = ""  # what names the annotations in messages, e.g. "instances.json image 17"


class AnnotatedDataset(SegDataset):
    """A dataset whose label maps are drawn from shapes (polygons, RLE, boxes …) when read.

    Subclasses build the :class:`ImageEntry` list and implement :meth:`draw` (one shape into a
    label map). Everything else — the fill of unannotated pixels, the order of overlapping shapes,
    crowd regions as ignore, the label convention — is here.

    Args:
        entries: the images and their shapes.
        classes: class names, index = class id.
        fill: label value of pixels no shape covers (the background class id, or ``ignore_index``).
        order: ``"file"`` — shapes drawn in the export's order, a later one on top of an earlier
            one (what the tools show); ``"area"`` — larger first, so smaller shapes end on top.
        others: as :class:`~segkit.data.datasets.SegDataset`.
    """

    def __init__(
        self,
        entries: Sequence[ImageEntry],
        classes: Sequence[str],
        palette: Sequence[Sequence[int]] | None = None,
        *,
        fill: int,
        order: str = "file",
        ignore_index: int = 255,
        label_map=None,
        transform: Callable | None = None,
        name: str = "annotations",
    ):
        if order not in ORDERS:
            raise DataError(f"{name}: order must be one of {ORDERS}, got {order!r}")
        if len(classes) > 255:
            raise DataError(f"{name}: {len(classes)} classes do not fit 8-bit label maps (at most 255)")
        self.entries = list(entries)
        self.fill, self.order = int(fill), order
        samples = [(e.path, e.ref or e.path) for e in self.entries]
        super().__init__(
            samples, classes, palette, ignore_index=ignore_index, label_map=label_map, transform=transform, name=name
        )

    # ------------------------------------------------------------------ drawing
    def image_size(self, i: int) -> tuple[int, int]:
        """``(H, W)`` of sample ``i``: from the export, else from the image file's header."""
        entry = self.entries[i]
        if entry.size is None:
            from segkit.data.io import probe_image

            info = probe_image(entry.path, data=self.image_bytes(i))
            entry.size = (info.height, info.width)
        return entry.size

    def draw(self, label: np.ndarray, shape: Shape, value: int, i: int) -> None:
        """Set the pixels of ``shape`` in ``label`` (uint8 (H, W)) to ``value``; format-specific."""
        raise NotImplementedError

    def read_raw_label(self, i: int) -> np.ndarray:
        """The label map of sample ``i``, drawn from its shapes: ``uint8 (H, W)`` class ids, ``fill``
        where no shape is, ``ignore_index`` on crowd regions (drawn last, on top of everything).

        Raises:
            DataError: a shape that cannot be drawn (the message names the file and annotation).
        """
        h, w = self.image_size(i)
        label = np.full((h, w), self.fill, np.uint8)
        shapes = self.entries[i].shapes
        if self.order == "area":
            shapes = sorted(shapes, key=lambda s: -s.area)  # stable: equal areas keep the file order
        for shape in [s for s in shapes if not s.crowd] + [s for s in shapes if s.crowd]:
            self.draw(label, shape, self.ignore_index if shape.crowd else shape.class_id, i)
        return label


def background_classes(names: Sequence[str], background: str | None) -> list[str]:
    """``[background, *names]``, or ``names`` when ``background`` is None (unannotated = ignore)."""
    return ([str(background)] if background is not None else []) + [str(n) for n in names]


__all__ = ["AnnotatedDataset", "ImageEntry", "ORDERS", "Shape", "background_classes"]
