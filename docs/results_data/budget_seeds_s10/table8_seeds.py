"""SegNeXt Table 8 in miniature: MSCA (``segnext-t``) vs VAN's LKA (``segnext-t-lka``), 3 seeds each, at the README
budget's iteration count for SegNeXt-T (760, float32, 1 thread; ``job.sh``). Prints the Markdown tables of
docs/results.md from the runs' files beside this script (``<model>_s<seed>/``: ``train_log.jsonl``,
``test_metrics.json``).

    python docs/results_data/budget_seeds_s10/table8_seeds.py
"""

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODELS = {"segnext-t": "MSCA (`segnext-t`)", "segnext-t-lka": "LKA (`segnext-t-lka`)"}
SEEDS = (0, 1, 2)


def run(model: str, seed: int) -> dict:
    d = HERE / f"{model}_s{seed}"
    log = [json.loads(line) for line in (d / "train_log.jsonl").read_text().splitlines() if line.strip()]
    val = [r["mIoU"] for r in log if r.get("type") == "eval"][-1]
    test = json.loads((d / "test_metrics.json").read_text())
    return {"val": val, "test": test["mIoU"], "iou": np.array(test["IoU"], dtype=float), "classes": test["class_names"]}


def mean_std(values) -> str:
    v = np.array(values, dtype=float)
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"


def main() -> None:
    runs = {m: [run(m, s) for s in SEEDS] for m in MODELS}
    columns = ["attention", "val mIoU, seeds 0 / 1 / 2", "val mean ± std", "test mIoU, seeds 0 / 1 / 2"]
    print("| " + " | ".join(columns) + " | **test mean ± std** |")
    print("|---|---|---:|---|---:|")
    for m, name in MODELS.items():
        r = runs[m]
        vals, tests = [x["val"] for x in r], [x["test"] for x in r]
        print(
            f"| {name} | {' / '.join(f'{v:.2f}' for v in vals)} | {mean_std(vals)} | "
            f"{' / '.join(f'{v:.2f}' for v in tests)} | **{mean_std(tests)}** |"
        )
    diff_val = [a["val"] - b["val"] for a, b in zip(runs["segnext-t"], runs["segnext-t-lka"])]
    diff_test = [a["test"] - b["test"] for a, b in zip(runs["segnext-t"], runs["segnext-t-lka"])]
    print(f"\nMSCA − LKA per seed (same data order): val {' / '.join(f'{d:+.2f}' for d in diff_val)}, "
          f"test {' / '.join(f'{d:+.2f}' for d in diff_test)}; mean val {np.mean(diff_val):+.2f}, "
          f"test {np.mean(diff_test):+.2f}")  # fmt: skip
    classes = runs["segnext-t"][0]["classes"]
    print("\n| class | MSCA test IoU (mean ± std) | LKA test IoU (mean ± std) | MSCA − LKA |")
    print("|---|---:|---:|---:|")
    for k, c in enumerate(classes):
        a = [x["iou"][k] for x in runs["segnext-t"]]
        b = [x["iou"][k] for x in runs["segnext-t-lka"]]
        print(f"| {c} | {mean_std(a)} | {mean_std(b)} | {np.mean(a) - np.mean(b):+.2f} |")


if __name__ == "__main__":
    main()
