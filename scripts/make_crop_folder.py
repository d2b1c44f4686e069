"""Build a small ImageNet-style classification folder from a segmentation data set (for `segkit pretrain`).

Each crop is labelled by the class that covers most of its labelled pixels; it is kept only when
that class covers at least ``--min-share`` of them. Crops come from two sources per image:
the bounding box (10 % margin, square, at least ``--min-side`` px) of every connected component
of a class with at least ``--min-area`` pixels, and ``--random`` random squares (side 64–192 px).
Classes are balanced by keeping at most ``--per-class`` crops per class and split; a class with
fewer than ``--min-count`` crops in either split is left out (both splits need the same class
folders). Train crops come from the data set's train split, val crops from its val split (no
image in both).

    python scripts/make_crop_folder.py --data ${SEGKIT_DATA}/camvid --out /tmp/camvid_crops

The crops are derived from the data set and carry its licence: write them outside the repository.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import cv2
import numpy as np

from segkit.data import build_dataset


def crops_of(image, label, ignore, rng: random.Random, min_area, min_side, n_random, min_share):
    h, w = label.shape
    boxes = []
    for c in np.unique(label):
        if c == ignore:
            continue
        n, _, stats, _ = cv2.connectedComponentsWithStats((label == c).astype(np.uint8), connectivity=8)
        for x, y, bw, bh, area in stats[1:]:
            if area < min_area:
                continue
            side = max(int(max(bw, bh) * 1.1), min_side)
            cx, cy = x + bw // 2, y + bh // 2
            boxes.append((cy - side // 2, cx - side // 2, side))
    for _ in range(n_random):
        side = rng.randint(64, min(192, h, w))
        boxes.append((rng.randint(0, h - side), rng.randint(0, w - side), side))
    for y, x, side in boxes:
        y, x = min(max(y, 0), max(h - side, 0)), min(max(x, 0), max(w - side, 0))
        lab = label[y : y + side, x : x + side]
        valid = lab[lab != ignore]
        if valid.size < 0.5 * lab.size:
            continue
        counts = np.bincount(valid.ravel())
        c = int(counts.argmax())
        if counts[c] >= min_share * valid.size:
            yield c, image[y : y + side, x : x + side]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="segmentation data set root (split layout)")
    ap.add_argument("--out", required=True, help="folder to write train/<class>/*.png and val/<class>/*.png")
    ap.add_argument("--splits", nargs=2, default=["train", "val"], metavar=("TRAIN", "VAL"))
    ap.add_argument("--per-class", type=int, nargs=2, default=[300, 60], metavar=("TRAIN", "VAL"))
    ap.add_argument("--min-area", type=int, default=400)
    ap.add_argument("--min-side", type=int, default=48)
    ap.add_argument("--random", type=int, default=8, help="random squares per image")
    ap.add_argument("--min-share", type=float, default=0.5)
    ap.add_argument("--min-count", type=int, default=15, help="classes with fewer crops in a split are left out")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty")
    found: dict[str, dict[int, list]] = {}
    names = None
    for split in args.splits:
        ds = build_dataset({"type": "split", "root": args.data, "split": split})
        names = ds.classes
        rng = random.Random(args.seed)
        found[split] = {}
        for i in range(len(ds)):
            item = ds[i]
            crops = crops_of(
                item["image"],
                item["label"],
                ds.ignore_index,
                rng,
                args.min_area,
                args.min_side,
                args.random,
                args.min_share,
            )
            for c, crop in crops:
                found[split].setdefault(c, []).append((Path(item["image_path"]).stem, crop))
    # an ImageFolder needs the same classes in both splits: keep those with enough crops in each
    keep = [c for c in range(len(names)) if all(len(found[s].get(c, [])) >= args.min_count for s in args.splits)]
    rng = random.Random(args.seed)
    for split, cap in zip(args.splits, args.per_class):
        for c in keep:
            items = found[split][c]
            rng.shuffle(items)
            folder = out / split / f"{c:02d}_{names[c]}"
            folder.mkdir(parents=True, exist_ok=True)
            for j, (stem, crop) in enumerate(items[:cap]):
                cv2.imwrite(str(folder / f"{stem}_{j:04d}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        print(split, {names[c]: min(len(found[split][c]), cap) for c in keep})
    dropped = [names[c] for c in range(len(names)) if c not in keep]
    print(f"classes with fewer than {args.min_count} crops in a split, left out: {dropped}")


if __name__ == "__main__":
    main()
