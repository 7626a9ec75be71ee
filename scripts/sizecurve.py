"""Every method's metric against the size it was reduced to, before and after fine-tuning,
from several comparison folders (compare.py's ``comparison.csv``, one folder per size).

    python scripts/sizecurve.py results/cifar10/size_690 results/cifar10/size_417 \\
        results/cifar10/size_115 --out results/cifar10/curve

Writes ``--out/curve.csv`` (one row per folder and method: size, the metric before and after
fine-tuning, mean and std over its seeds, the number of seeds) and ``--out/curve.png`` (two
panels, before and after fine-tuning; the original as a dashed line; bars: std over seeds
where there are several).
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
    original = np.nanmean([r["original_metric"] for r in rows])
    # one tick per folder (its methods' sizes differ in the last digit: rounded widths)
    per_folder = defaultdict(list)
    for r in rows:
        if r["method"] != "none":
            per_folder[r["folder"]].append(r["size_ratio"])
    sizes = sorted({round(100 * float(np.median(v)), 1) for v in per_folder.values()})
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
            ax.errorbar(100 * x, 100 * y, yerr=100 * np.nan_to_num(e), marker="o", capsize=3,
                        label=LABELS.get(m, m), color=colors[m])
        yard = [r for r in rows if r["method"] == "none"]
        if yard and field == FIELDS[2]:
            ax.axhline(100 * yard[0][field], color="0.3", ls=":", label="original + same epochs")
        ax.axhline(100 * original, color="0.5", ls="--", label="original")
        ax.set_xscale("log")
        ax.set_xticks(sizes, [f"{v:g}" for v in sizes])
        ax.minorticks_off()
        if len(sizes) == 1:
            ax.set_xlim(sizes[0] / 1.5, sizes[0] * 1.5)
        ax.set_xlabel("size (% of the original's parameters)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{rows[0]['metric'].replace('_', ' ')} (%)")
    handles, labels = axes[1].get_legend_handles_labels()  # below both panels, off the data
    fig.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4)
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
