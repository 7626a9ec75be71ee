"""Every method's metric against the size it was reduced to, before and after fine-tuning,
from several comparison folders (compare.py's ``comparison.csv``, one folder per size).

    python scripts/sizecurve.py results/cifar10/size_690 results/cifar10/size_417 \\
        results/cifar10/size_115 --out results/cifar10/curve

Writes ``--out/curve.csv`` (one row per folder and method: size, the metric before and after
fine-tuning, mean and std over its seeds, the number of seeds) and ``--out/curve.png`` (two
panels, before and after fine-tuning; the original at 100 % and as a dashed line, the original
trained for the same extra epochs (compare.py's ``none``) at 100 % after fine-tuning; bars: std
over seeds where there are several). Accuracies are drawn in percent, other metrics as they
are, on a log scale when every value is positive (a loss).
"""
from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from condensation.files import write_csv
from condensation.plots import color_cycle, save_figure, subplots

FIELDS = ("size_ratio", "reduced_metric_before_finetune", "reduced_metric_after_finetune",
          "original_metric")
# methods with no "before fine-tuning" point: nothing of the original is kept
UNTRAINED = ("scratch", "scratch_finetune")
LABELS = {"scratch": "scratch, the full budget", "scratch_finetune": "scratch, the fine-tuning budget"}


def read(folders: list[Path]) -> list[dict]:
    rows = []
    for folder in folders:
        path = folder / "comparison.csv"
        if not path.is_file():
            raise SystemExit(f"error: {path} does not exist (give folders written by "
                             "scripts/compare.py)")
        with path.open() as f:
            for r in csv.DictReader(f):
                row = {"folder": str(folder), "method": r["reduce.method"],
                       "metric": r["metric"], "n_seeds": int(r["n_seeds"])}
                for k in FIELDS:
                    row[k] = float(r[f"{k}_mean"]) if r.get(f"{k}_mean") else np.nan
                    row[k + "_std"] = float(r[f"{k}_std"]) if r.get(f"{k}_std") else np.nan
                rows.append(row)
    return rows


def plot(rows: list[dict], out: Path) -> None:
    fig, axes = subplots(1, 2, figsize=(11, 4.2), sharey=True)
    methods = sorted({r["method"] for r in rows if r["method"] != "none"})
    colors = dict(zip(methods, color_cycle() * 3, strict=False))
    metric = rows[0]["metric"]
    scale = 100.0 if "acc" in metric else 1.0  # accuracies in percent, losses as they are
    original = np.nanmean([r["original_metric"] for r in rows])
    # one tick per folder (its methods' sizes differ in the last digit: rounded widths) and 100
    per_folder = defaultdict(list)
    for r in rows:
        if r["method"] != "none":
            per_folder[r["folder"]].append(r["size_ratio"])
    sizes = sorted({round(100 * float(np.median(v)), 1) for v in per_folder.values()} | {100.0})
    yard = [r for r in rows if r["method"] == "none"]
    # a size within 25 % of the one before it (10 and 11.5) takes a second line, not its text
    labels_x = [("\n" if i and v < 1.25 * sizes[i - 1] else "") + f"{v:g}"
                for i, v in enumerate(sizes)]
    for ax, field, title in zip(axes, FIELDS[1:3], ("before fine-tuning", "after fine-tuning"),
                                strict=True):
        for m in methods:
            if field == FIELDS[1] and m in UNTRAINED:
                continue
            pts = sorted((r["size_ratio"], r[field], r[field + "_std"]) for r in rows
                         if r["method"] == m and np.isfinite(r[field]))
            if not pts:
                continue
            x, y, e = (np.array(v) for v in zip(*pts, strict=True))
            ax.errorbar(100 * x, scale * y, yerr=scale * np.nan_to_num(e), marker="o", capsize=3,
                        label=LABELS.get(m, m), color=colors[m])
        if yard and field == FIELDS[2]:
            ax.errorbar(100, scale * yard[0][field], yerr=scale * np.nan_to_num(yard[0][field + "_std"]),
                        marker="D", color="0.3", capsize=3, ls="none", zorder=5,
                        label="original + the same epochs (100 %)")
        ax.axhline(scale * original, color="0.5", ls="--")
        ax.plot(100, scale * original, marker="*", ms=9, color="k", ls="none",
                label="original (100 %; dashed)")
        ax.set_xscale("log")
        if scale == 1.0 and all(r[f] > 0 for r in rows for f in FIELDS[1:] if np.isfinite(r[f])):
            ax.set_yscale("log")  # a loss: positive, over decades
        ax.set_xticks(sizes, labels_x)
        ax.minorticks_off()
        ax.set_xlabel("size (% of the original's parameters)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(metric.replace("_", " ") + (" (%)" if scale == 100.0 else ""))
    handles, labels = axes[1].get_legend_handles_labels()  # below both panels, off the data
    fig.legend(handles, labels, fontsize=8, loc="upper center",
               bbox_to_anchor=(0.5, -0.04 if any("\n" in s for s in labels_x) else 0.0), ncol=4)
    save_figure(fig, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="comparison folders, one per size")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    rows = read(args.folders)
    metrics = {r["metric"] for r in rows}
    if len(metrics) != 1:
        raise SystemExit(f"error: the folders report different metrics: {sorted(metrics)}")
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "curve.csv", rows, list(rows[0]))
    plot(rows, args.out / "curve.png")
    print(f"{args.out / 'curve.csv'}, {args.out / 'curve.png'}: {len(rows)} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
