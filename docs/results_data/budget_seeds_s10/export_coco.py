"""CamVid's index labels written out as a COCO polygon export (tests/annotation_exports.to_coco), one per split.
No background class: all 11 classes are categories (ids 1..11), void pixels are covered by no annotation."""
import sys
from pathlib import Path
import numpy as np
from PIL import Image
sys.path.insert(0, "/work/main/tests")
from annotation_exports import to_coco

root = Path("/work/shared/data/camvid")
classes = ["sky", "building", "pole", "road", "sidewalk", "tree", "sign_symbol", "fence", "car", "pedestrian", "bicyclist"]
for split in ("train", "val", "test"):
    pairs = []
    for img in sorted((root / "images" / split).iterdir()):
        lab = np.array(Image.open(root / "labels" / split / (img.stem + ".png")))
        pairs.append((img, lab))
    p = to_coco(pairs, classes, Path(f"/work/runs/camvid_coco/{split}"), rle=False, background=None)
    print(split, len(pairs), p)
