"""CVAT's "Segmentation mask 1.1" export (``type: cvat``), a Pascal-VOC-like layout:

    labelmap.txt                      # label:color_rgb:parts:actions, one class per line, in id order
    ImageSets/Segmentation/<split>.txt  # image stems (CVAT writes default.txt, or train/val/test.txt)
    JPEGImages/<stem>.<ext>
    SegmentationClass/<stem>.png      # colour masks, one colour per class of labelmap.txt

The colour masks are read with the labelmap's colours (class id = its line among the labels; CVAT
puts ``background`` with colour 0,0,0 first); a colour not in it is an error naming the file and
the colours (``unknown_colour: ignore`` maps such pixels to ``ignore_index`` instead).
``SegmentationObject/`` (instance masks) is not read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

from segkit.data.datasets import SegDataset, _read_list, _scan, _unknown_colour
from segkit.data.io import IMAGE_SUFFIXES, DataError


def read_labelmap(path: Path) -> tuple[list[str], list[list[int]]]:
    """Class names and RGB colours of a CVAT ``labelmap.txt`` (comment lines ``#`` skipped).

    Raises :class:`DataError` naming the file and line for a line that is not ``name:r,g,b:…``.
    """
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: not found; a CVAT 'Segmentation mask 1.1' export has a labelmap.txt") from None
    names, colours = [], []
    for n, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(":")
        try:
            rgb = [int(v) for v in parts[1].split(",")]
        except (IndexError, ValueError):
            raise DataError(f"{path}:{n}: expected 'name:r,g,b:parts:actions', got {line.strip()[:60]!r}") from None
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise DataError(f"{path}:{n}: colour must be r,g,b in 0..255, got {parts[1]!r}")
        if rgb in colours:
            raise DataError(
                f"{path}:{n}: {parts[0].strip()!r} has the colour {parts[1]} of {names[colours.index(rgb)]!r}: "
                f"a mask pixel of that colour cannot be told apart (give each label its own colour)"
            )
        names.append(parts[0].strip())
        colours.append(rgb)
    if not names:
        raise DataError(f"{path}: no labels")
    return names, colours


class CvatMaskDataset(SegDataset):
    """One split of a CVAT "Segmentation mask 1.1" export (module docstring).

    Args:
        root: the export folder (holding ``labelmap.txt``).
        split: a list in ``ImageSets/Segmentation/`` (default ``default``, what CVAT writes for a
            task without subsets).
        unknown_colour: ``"error"`` (default), ``"ignore"`` or a class id for colours not in the labelmap.
        ignore_index, label_map, transform, name: as :class:`~segkit.data.datasets.SegDataset`.

    Raises:
        DataError: a missing labelmap / split list (the available splits are listed) / image / mask.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "default",
        *,
        unknown_colour: str | int = "error",
        ignore_index: int = 255,
        label_map: Mapping[int, int] | None = None,
        classes: Sequence[str] | None = None,
        transform: Callable | None = None,
        name: str | None = None,
    ):
        root = Path(root)
        names, colours = read_labelmap(root / "labelmap.txt")
        lists = root / "ImageSets" / "Segmentation"
        list_path = lists / f"{split}.txt"
        if not list_path.is_file():
            have = sorted(p.stem for p in lists.glob("*.txt"))
            raise DataError(f"{list_path}: split {split!r} not found; {lists} holds {have}")
        stems = _read_list(list_path)
        images = _scan(root / "JPEGImages", IMAGE_SUFFIXES) if (root / "JPEGImages").is_dir() else {}
        samples = []
        for stem in stems:
            image = images.get(stem)
            if image is None:
                raise DataError(f"{list_path}: image {stem!r} not found in {root / 'JPEGImages'}")
            samples.append((image, str(root / "SegmentationClass" / f"{stem}.png")))
        super().__init__(
            samples,
            list(classes) if classes is not None else names,
            colours,
            ignore_index=ignore_index,
            label_map=label_map,
            transform=transform,
            name=name or f"{root.name}/{split}",
            label_colours=colours,
            unknown_colour=_unknown_colour(unknown_colour, ignore_index, "the data set spec (unknown_colour)"),
        )
        self.split = split
        self.label_hint = " (CVAT masks are SegmentationClass/<stem>.png)"


__all__ = ["CvatMaskDataset", "read_labelmap"]
