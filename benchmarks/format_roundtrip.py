"""Round trips of real label maps through the annotation formats segkit reads.

CamVid's test labels (233 images, 11 classes, void = 255) are written out as the tools export them
(`tests/annotation_exports.py`: COCO polygons and RLE, YOLO polygons, LabelMe JSON, a CVAT mask
export, a Hugging Face `save_to_disk` folder), read back through `segkit.data.build_dataset` and
compared pixel by pixel with the original index maps. Writes JSON + markdown to
`benchmarks/results/format_roundtrip.{json,md}`.

    SEGKIT_DATA=... python benchmarks/format_roundtrip.py [--max-images N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

from annotation_exports import to_coco, to_cvat, to_labelme, to_yolo  # noqa: E402
from latency import run_info  # noqa: E402

import segkit.data as D  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-images", type=int, help="only the first N test images")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "format_roundtrip"))
    args = ap.parse_args()
    info = run_info("format_roundtrip.py", None)
    info["load_average_before"] = os.getloadavg()
    src = D.SplitDataset(D.resolve_root("${SEGKIT_DATA}/camvid"), "test")
    n = min(len(src), args.max_images or len(src))
    pairs = [(src.samples[i][0], D.read_label(src.samples[i][1])) for i in range(n)]
    classes, palette = src.classes, src.palette
    rows = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tmp = Path(tmp)
        specs = {
            "coco (RLE)": {"type": "coco", "annotations": str(to_coco(pairs, classes, tmp / "rle", rle=True,
                           background=None)), "images": str(tmp / "rle" / "images")},
            "coco (polygons)": {"type": "coco", "annotations": str(to_coco(pairs, classes, tmp / "poly",
                                background=None)), "images": str(tmp / "poly" / "images")},
            "yolo": {"type": "yolo", "root": str(to_yolo(pairs, classes, tmp / "yolo", background=None).parent)},
            "labelme": {"type": "labelme", "root": str(to_labelme(pairs, classes, tmp / "lm", background=None)),
                        "classes": classes},
            "cvat": {"type": "cvat", "root": str(to_cvat(pairs, classes, palette, tmp / "cvat"))},
        }  # fmt: skip
        import datasets

        hf = datasets.Dataset.from_dict({"image": [p for p, _ in pairs], "annotation": [s[1] for s in src.samples[:n]]})
        hf = hf.cast_column("image", datasets.Image()).cast_column("annotation", datasets.Image())
        hf.save_to_disk(str(tmp / "hf"))
        specs["hf (save_to_disk)"] = {"type": "hf", "path": str(tmp / "hf"), "classes": classes}
        for name, spec in specs.items():
            extra = {} if spec["type"] in ("cvat", "hf") else {"background": None, "order": "area"}
            t = time.perf_counter()
            ds = D.build_dataset({**spec, **extra})
            agree, exact = [], 0
            for i, (_, label) in enumerate(pairs):
                got = ds.read_raw_label(i)
                ref = np.where(label == 255, 0, label + 1) if spec["type"] == "cvat" else label
                agree.append(float((got == ref).mean()))
                exact += bool((got == ref).all())
            rows.append(
                {
                    "format": name,
                    "images": n,
                    "pixel_agreement_mean": float(np.mean(agree)),
                    "pixel_agreement_min": float(np.min(agree)),
                    "exact_images": exact,
                    "read_s_per_label": (time.perf_counter() - t) / n,
                }
            )
            print(rows[-1], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info["load_average_after"] = os.getloadavg()
    out.with_suffix(".json").write_text(json.dumps({**info, "rows": rows}, indent=2) + "\n")
    lines = [
        f"CamVid test labels ({n} images) written out and read back (`{info['command']}`).",
        "",
        f"Machine: {info['machine']['cpu']}, {info['machine']['logical_cpus']} logical CPUs; load average "
        f"{info['load_average_before'][0]:.2f} before, {info['load_average_after'][0]:.2f} after ({info['date']}).",
        "",
        "| format | pixel agreement, mean | min over images | images identical | read + draw, ms / label |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['format']} | {100 * r['pixel_agreement_mean']:.3f} % | {100 * r['pixel_agreement_min']:.3f} % | "
            f"{r['exact_images']} / {r['images']} | {1000 * r['read_s_per_label']:.1f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
