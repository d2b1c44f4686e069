"""Train loss and val mIoU against wall time for the CPU-budget runs (docs/results.md, issue 25 item 4).

    python docs/results_data/budget_2h30_s11/plot_budget_curves.py

Reads the ``train_log.jsonl`` of each run listed in RUNS (paths relative to the repository root) and writes
``budget_curves.png`` next to this script. Train records carry their wall time (``time``, seconds since the start
of training); an evaluation record carries only its iteration, so its time is interpolated between the train
records around it (the evaluation itself is a few seconds to a minute, within the marker).
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
RUNS = {
    "7 min budget (README job, run H, idle machine)": ROOT / "docs/results_data/readme_budget_H/train_log.jsonl",
    "2 h 30 min budget, first attempt (loaded machine, stopped at 1430 it.)": HERE / "stopped_attempt_train_log.jsonl",
    "2 h 30 min budget, run J (idle machine, float32, 20613 it., test 59.04)": ROOT
    / "docs/results_data/budget_2h30_s12/train_log.jsonl",
}


def read(path: Path):
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [(r["iter"], r["time"], r["loss"]) for r in records if r.get("type") == "train"]
    evals = [(r["iter"], r["mIoU"]) for r in records if r.get("type") == "eval"]
    its, times, losses = (np.array(v, dtype=float) for v in zip(*train))
    eval_its = np.array([e[0] for e in evals], dtype=float)
    eval_times = np.interp(eval_its, its, times)
    return times / 60, losses, eval_times / 60, np.array([e[1] for e in evals])


def main() -> None:
    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(11, 4))
    for name, path in RUNS.items():
        t, loss, et, miou = read(path)
        ax_loss.plot(t, loss, label=name, lw=1)
        ax_miou.plot(et, miou, "o-", label=name, ms=4)
    ax_loss.set(xlabel="wall time of training (min)", ylabel="train loss (weighted CE + Dice)", xscale="log")
    ax_miou.set(xlabel="wall time of training (min)", ylabel="val mIoU (%)", xscale="log")
    ax_miou.set_ylim(35, 75)
    for ax in (ax_loss, ax_miou):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right" if ax is ax_loss else "upper left")
    fig.suptitle("SegFormer-B0 from scratch on CamVid, 2 CPU cores")
    fig.tight_layout()
    fig.savefig(HERE / "budget_curves.png", dpi=110)
    print(HERE / "budget_curves.png")


if __name__ == "__main__":
    main()
