"""CamVid's index labels written out as a COCO polygon export, one per split (session 10's COCO run).

    python docs/results_data/budget_seeds_s10/export_coco.py OUT_DIR

Uses the exporter of ``tests/annotation_exports.py`` (one polygon per connected region). No background
category: all 11 classes are categories (ids 1..11); void pixels are covered by no annotation, so
``type: coco`` reads them back as ignore with ``background: null`` (``order: area`` keeps holes on top).
"""

import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests"))
from annotation_exports import to_coco  # noqa: E402

CLASSES = ["sky", "building", "pole", "road", "sidewalk", "tree", "sign_symbol", "fence", "car", "pedestrian"]
CLASSES.append("bicyclist")

root = Path(os.environ.get("SEGKIT_DATA", REPO.parent / "shared" / "data")) / "camvid"
out = Path(sys.argv[1])
for split in ("train", "val", "test"):
    pairs = []
    for img in sorted((root / "images" / split).iterdir()):
        pairs.append((img, np.array(Image.open(root / "labels" / split / (img.stem + ".png")))))
    print(split, len(pairs), to_coco(pairs, CLASSES, out / split, rle=False, background=None))
