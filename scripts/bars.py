"""A labelled bar chart of one or two fields of a table (aggregate.py's sweep.csv, compare.py's
comparison.csv): one bar group per row, named by the given label columns (or ``--names``).

    python scripts/bars.py results/cifar10/size_115/probes/sweep.csv \\
        --fields reduced_val_metric_mean reduced_metric_after_finetune_mean \\
        --legend validation test --label reduce.method reduce.similarity reduce.merge \\
        --title "MobileNetV2 at 11.5 %, before fine-tuning" --out results/cifar10/size_115/probes/probes.png
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from condensation.plots import color_cycle, save_figure, subplots


def label(row: dict[str, str], keys: list[str]) -> str:
    parts = [f"{k.split('.')[-1]}={row[k]}" for k in keys if row.get(k) not in (None, "", "null", "unset")]
    return ", ".join(parts) or "(defaults)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("table", type=Path)
    ap.add_argument("--fields", nargs="+", required=True, help="numeric columns, one bar each")
    ap.add_argument("--legend", nargs="+", help="a name per field (default: the column names)")
    ap.add_argument("--label", nargs="*", default=[], help="columns that name a row")
    ap.add_argument("--names", nargs="+", help="row names instead of --label, in the table's order")
    ap.add_argument("--reference", type=float, help="a vertical line (e.g. the original's metric)")
    ap.add_argument("--reference-label", default="original")
    ap.add_argument("--xlabel", default="")
    ap.add_argument("--title", default="")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    with args.table.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"error: {args.table} has no rows")
    missing = [c for c in args.fields if c not in rows[0]]
    if missing:
        raise SystemExit(f"error: {args.table} has no column {missing}; columns: {', '.join(rows[0])}")
    if args.names and len(args.names) != len(rows):
        raise SystemExit(f"error: --names gives {len(args.names)} names for {len(rows)} rows")
    names = args.names or [label(r, args.label) for r in rows]
    values = np.array([[float(r[c]) if r[c] not in ("", "None") else np.nan for c in args.fields]
                       for r in rows])
    order = np.argsort(np.nan_to_num(values[:, -1], nan=-np.inf))
    fig, ax = subplots(figsize=(8, 0.45 * len(rows) + 1.9))
    height = 0.8 / len(args.fields)
    for j, color in zip(range(len(args.fields)), color_cycle(), strict=False):
        y = np.arange(len(rows)) + (j - (len(args.fields) - 1) / 2) * height
        v = values[order, j]
        ax.barh(y, v, height=height, color=color, label=(args.legend or args.fields)[j])
        for yi, vi in zip(y, v, strict=True):
            if np.isfinite(vi):
                ax.text(vi, yi, f" {vi:.3g}", va="center", fontsize=7)
    if args.reference is not None:
        ax.axvline(args.reference, color="k", ls="--", lw=1, label=args.reference_label)
    ax.set_yticks(np.arange(len(rows)), [names[i] for i in order], fontsize=8)
    ax.set_xlabel(args.xlabel)
    ax.set_title(args.title, fontsize=10)
    # below the axes: inside, it hides the bars it names
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    save_figure(fig, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
