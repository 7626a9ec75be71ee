"""Turn a sweep folder into one table and one plot: mean and spread over seeds.

    python scripts/aggregate.py SWEEP_DIR [--out results/<name>/sweep] [--field DOTTED.KEY ...]
                                          [--ignore KEY ...]

    python -m experiments.run -m +exp=toy seed=0,1,2 reduce.auto.start=0.999,0.99
    python scripts/aggregate.py multirun/toy            # -> results/toy/sweep/

Finds every run directory below SWEEP_DIR that holds ``summary.json`` and ``config.yaml``
(a finished run; any launcher, any folder layout), reads each run's resolved ``config.yaml``
and groups the runs by every config value that differs between them except the seed (and the
operational keys: ``fresh``, ``logger``, checkpoint frequencies; more keys or whole sections
with ``--ignore``, e.g. ``--ignore data.cache_dir``). A group is named by its differing keys,
e.g. ``reduce.auto.start=0.99``; its runs are the seeds. Writes into --out (default
``results/<experiment name>/sweep``), each file atomically:

- ``sweep.csv``: one row per group: ``group``, one column per differing key, ``metric`` (the
  summary's metric name), ``n_seeds``, ``seeds``, then ``<field>_mean`` and ``<field>_std`` for
  size_ratio, original_metric, reduced_metric_after_finetune and every other numeric top-level
  field of summary.json (parameters, FLOPs, final threshold, rounds, wall time, ...) plus any
  ``--field`` (a dotted path into summary.json, e.g.
  ``reduced_extra.a_posteriori.ignition_delay_rel_error_mean``). std is the sample standard
  deviation over seeds (ddof=1), empty for a single seed; a field missing or null in a run is
  left out of that run's group statistics.
- ``sweep.md``: the same rows as a markdown table, each field as ``mean ± std``; the fields
  that are equal in every run (e.g. original_params of a threshold sweep) are listed once below.
- ``sweep.png``: size ratio versus the reduced network's metric after fine-tuning, one point per
  group (mean, error bars one std over seeds), labelled, with the original networks' metric.

Exits with status 2 and a message when SWEEP_DIR holds no finished run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from condensation.files import atomic_write_text, write_csv
from condensation.plots import color_cycle, save_figure, subplots
from condensation.results import (
    NoRunsError,
    aggregate,
    columns,
    markdown,
)

ROOT = Path(__file__).resolve().parents[1]

def plot(result: dict[str, Any], path: Path, title: str) -> None:

    rows = result["rows"]
    summaries = [r["summary"] for r in result["runs"]]
    metrics = sorted({str(s.get("metric")) for s in summaries})
    fig, ax = subplots(figsize=(6.5, 4.5))
    colors = color_cycle()
    originals = [r["original_metric_mean"] for r in rows if r["original_metric_mean"] is not None]
    shared_original = bool(originals) and max(originals) - min(originals) <= 1e-9 * max(
        1.0, abs(max(originals)))
    for i, row in enumerate(rows):
        x, y = row["size_ratio_mean"], row["reduced_metric_after_finetune_mean"]
        if x is None or y is None:
            continue
        c = colors[i % len(colors)]
        ax.errorbar([x], [y], xerr=[row["size_ratio_std"] or 0.0],
                    yerr=[row["reduced_metric_after_finetune_std"] or 0.0], fmt="o", color=c,
                    capsize=3, label=f"{row['group']} (n={row['n_seeds']})")
        label = ",".join(str(row[k]) for k in result["keys"]) or row["group"]
        # staggered, so that groups at the same point stay readable
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4 + 9 * (i % 4)),
                    fontsize=7, color=c)
        if not shared_original and row["original_metric_mean"] is not None:
            ax.errorbar([1.0], [row["original_metric_mean"]], yerr=[row["original_metric_std"] or 0.0],
                        fmt="*", ms=10, color=c, capsize=3)
    if shared_original:
        ax.errorbar([1.0], [originals[0]], yerr=[rows[0]["original_metric_std"] or 0.0], fmt="*",
                    ms=12, color="k", capsize=3, zorder=3, label="original")
    else:
        ax.scatter([], [], marker="*", s=100, color="gray", label="original (per group, same colour)")
    ax.set_xlabel("parameters / original parameters (mean ± std over seeds)")
    ax.set_ylabel(f"{' / '.join(metrics)} after reduction and fine-tuning")
    if summaries and all(s.get("log_metric") for s in summaries):
        ax.set_yscale("log")
    ax.set_xlim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def default_out(result: dict[str, Any], sweep_dir: Path) -> Path:
    names = {str(r["config"].get("name")) for r in result["runs"] if r["config"].get("name")}
    name = names.pop() if len(names) == 1 else sweep_dir.resolve().name
    return ROOT / "results" / name / "sweep"


def write(result: dict[str, Any], out: Path, title: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "sweep.csv", out / "sweep.md", out / "sweep.png"]
    write_csv(paths[0], result["rows"], columns(result))
    atomic_write_text(paths[1], markdown(result))
    plot(result, paths[2], title)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("sweep_dir", type=Path, help="folder holding the sweep's run directories")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default: results/<experiment name>/sweep)")
    ap.add_argument("--field", action="append", default=[],
                    help="extra summary.json field to average, dotted path (repeatable)")
    ap.add_argument("--ignore", action="append", default=[],
                    help="config key (or section, e.g. data) that does not define a group, "
                         "besides seed and fresh (repeatable)")
    args = ap.parse_args(argv)
    try:
        result = aggregate(args.sweep_dir, fields=args.field, ignore=args.ignore)
    except NoRunsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or default_out(result, args.sweep_dir)
    where = "/".join(args.sweep_dir.resolve().parts[-2:])
    title = f"{where}: {len(result['runs'])} runs in {len(result['rows'])} groups"
    paths = write(result, out, title)
    print(markdown(result), end="")
    print(f"{len(result['runs'])} runs, {len(result['rows'])} groups -> "
          + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
