"""Condensation against every baseline at the same sizes, over seeds: runs, table and plot.

    python scripts/compare.py --root runs/compare/combustion --seeds 0 1 2 -- +exp=combustion
    python scripts/compare.py --root runs/compare/combustion --no-run   # tables and plot only

For each seed, runs ``python -m experiments.run OVERRIDES seed=S reduce=condense`` into
``ROOT/seedS`` and then each baseline (``reduce=<method> reduce.targets=ROOT/seedS``) into
``ROOT/seedS/baselines/<method>``: the baselines reduce to the sizes of that seed's
condensation rounds with the same fine-tuning (conf/reduce/). Only the methods in ``--methods``
run (condensation among them by default): with ``reduce.mode=target`` and a saved
``reduce.original`` no method needs the condensation run, so a later session can add a method
to a seed whose condensation run survives only in runs.json. A finished run is skipped and an
unfinished one resumes, so the command can be repeated until everything is done. Then writes,
from every finished run under ``--root`` (whatever ``--seeds`` says) and every run that
``--out``'s runs.json keeps from earlier, to ``--out`` (default
``results/<experiment>/comparison``), atomically:

- ``comparison.csv`` / ``comparison.md``: per method, at the final size (the condensation run's
  last accepted round): size ratio, the original's metric, the metric before and after
  fine-tuning and any ``--field``, mean ± sample std over seeds (scripts/aggregate.py's
  statistics);
- ``comparison.png``: size ratio versus metric for every method and round (after fine-tuning:
  filled, before: hollow), mean and std over seeds, and beside it the same after fine-tuning
  only, on its own axes;
- ``curves.csv``: the points behind it, one row per method, round and seed (a method's own
  rounds: scratch with ``--scratch-sizes final`` has one, round 0, at the final size);
- ``paired.csv`` / ``paired.md``: per method, its metric minus ``--paired-against``'s
  (condensation by default) seed by seed, before and after fine-tuning, and their mean ± std;
- ``runs.json``: the command, the machine, and a record of every run: its directory, seed,
  method, wall time (summed over resumes), ``commit`` (of the process that finished it),
  ``commits`` (of every process that worked on it, in order, from its metrics.jsonl, where
  the events record one), the summary fields of the table, its accepted rounds and its
  resolved config.

The records let a comparison span sessions or machines: a run whose directory is gone (a
session's scratch space, another machine) stays in the table from its record in ``--out``'s
runs.json, the runs of every session are checked to share one config but for method and seed,
and a run found under ``--root`` replaces its record.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from condensation.files import atomic_write_text, write_csv, write_json
from condensation.plots import color_cycle, save_figure, subplots
from condensation.provenance import machine
from condensation.results import (
    CURVE_FIELDS,
    DEFAULT_IGNORE,
    METHODS,
    NoRunsError,
    format_value,
    load_runs,
    markdown,
    mean_std,
    record,
    table,
)

ROOT = Path(__file__).resolve().parents[1]

def run_dir(root: Path, seed: int, method: str) -> Path:
    return root / f"seed{seed}" if method == "condense" else root / f"seed{seed}" / "baselines" / method


def command(overrides: list[str], root: Path, seed: int, method: str,
            scratch_sizes: str = "all") -> list[str]:
    # reduce= always: an experiment's default selection need not be condensation
    extra = [f"reduce={method}"]
    if method != "condense":
        extra.append(f"reduce.targets={run_dir(root, seed, 'condense')}")
    if method.startswith("scratch") and scratch_sizes != "all":
        extra.append(f"reduce.sizes={scratch_sizes}")
    return [sys.executable, "-m", "experiments.run", *overrides, f"seed={seed}", *extra,
            f"hydra.run.dir={run_dir(root, seed, method)}"]


def run_all(overrides: list[str], root: Path, seeds: list[int], methods: list[str],
            scratch_sizes: str = "all") -> None:
    """Each seed's listed methods, condensation first when listed (the others take their widths
    from its run unless ``reduce.mode=target`` with a saved ``reduce.original``)."""
    order = sorted(methods, key=lambda m: m != "condense")  # stable: the rest keep their order
    for seed in seeds:
        for m in order:
            if (run_dir(root, seed, m) / "summary.json").is_file():
                continue
            cmd = command(overrides, root, seed, m, scratch_sizes)
            print("+", " ".join(cmd[1:]), flush=True)
            if subprocess.run(cmd, cwd=ROOT).returncode != 0:
                raise SystemExit(f"error: the {m} run of seed {seed} failed: {' '.join(cmd)}")


# Config keys a baseline may differ in from the condensation run it is compared with.
# (reduce.merge: fold's own, conf/reduce/fold.yaml.)
IGNORE = ("reduce.targets", "reduce.sizes", "model.gamma", "reduce.merge")


def previous_records(out: Path, found: set[tuple[str, Any]]) -> list[dict[str, Any]]:
    """The runs that ``out/runs.json`` keeps whose directories are not among ``found``
    ((method, seed) of the runs under --root): a comparison that spans sessions, or machines,
    keeps its finished runs without their directories. A kept run that lacks its record (a
    runs.json written before they were kept) cannot be tabled again: that is an error, so
    that no published run drops out of the table unnoticed."""
    path = out / "runs.json"
    if not path.is_file():
        return []
    kept = [r for r in json.loads(path.read_text()).get("runs", [])
            if (r.get("method"), r.get("seed")) not in found]
    bare = [f"{r.get('method')} seed {r.get('seed')} ({r.get('dir')})" for r in kept
            if "summary" not in r or "curve" not in r]
    if bare:
        raise NoRunsError(f"{path} lists runs that are not under --root and has no record of "
                          f"them to table again: {', '.join(bare)}; put their run directories "
                          "under --root, or write to another --out")
    return kept


def check_configs(records: list[dict[str, Any]]) -> None:
    """The runs of one comparison differ only in the method and the seed (and in ``IGNORE``
    and the operational keys); records without a config (recovered ones) are not checked."""
    configs = [r["config"] for r in records if r.get("config")]
    ignored = (*DEFAULT_IGNORE, *IGNORE, "reduce.method")
    keys = sorted(k for k in {k for c in configs for k in c}
                  if not any(k == i or k.startswith(f"{i}.") for i in ignored)
                  # a key missing from an older run is one added since with a null default
                  # that keeps the old behaviour (config.reduce_outcome): the same as null
                  and len({format_value(c.get(k)) for c in configs}) > 1)
    if keys:
        raise NoRunsError(f"the comparison's runs differ in more than the method and seed: "
                          f"{keys}; give each comparison its own --root and --out")


def plot(result: dict[str, Any], path: Path, title: str) -> None:
    """Two panels: every method before (hollow) and after (filled) fine-tuning, and the same
    after fine-tuning only, on its own y-range (the methods end close together)."""

    lines: dict[str, dict[int, list[dict[str, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in result["records"]:
        for point in r["curve"]:
            lines[r["method"]][point["round"]].append(point)
    fig, axes = subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"wspace": 0.3})
    colors = dict(zip(METHODS, color_cycle(), strict=False))
    originals = {row["reduce.method"]: row for row in result["rows"]}
    summaries = [r["summary"] for r in result["records"]]
    metric = summaries[0].get("metric") or "metric"
    keys = (("metric_after_finetune", "-o"), ("metric_before_finetune", ":o"))
    for ax, panel_keys in zip(axes, (keys, keys[:1]), strict=True):
        for method in [m for m in METHODS if m in lines]:
            rounds = sorted(lines[method])
            for key, style in panel_keys:
                x = [mean_std([r["size_ratio"] for r in lines[method][k]]) for k in rounds]
                y = [mean_std([r[key] for r in lines[method][k]]) for k in rounds]
                after = key == "metric_after_finetune"
                ax.errorbar([m for m, _ in x], [m for m, _ in y], xerr=[s or 0.0 for _, s in x],
                            yerr=[s or 0.0 for _, s in y], fmt=style, color=colors[method], capsize=3,
                            mfc=colors[method] if after else "white",
                            label=f"{method} ({'after' if after else 'before'} fine-tuning)")
        for method, label in (("condense", "original (small init.)"),
                              ("merge_standard_init", "original (standard init.)")):
            if method in originals:
                o = originals[method]
                ax.errorbar([1.0], [o["original_metric_mean"]],
                            yerr=[o["original_metric_std"] or 0.0], fmt="*", ms=12,
                            color="k" if method == "condense" else colors[method], capsize=3,
                            label=label)
        if all(s.get("log_metric") for s in summaries):
            ax.set_yscale("log")
        ax.set_xlabel("parameters / original parameters (mean ± std over seeds)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].set_xlim(0, 1.05)
    axes[0].set_title("before (hollow) and after (filled) fine-tuning", fontsize=9)
    axes[1].set_title("after fine-tuning only (own axes)", fontsize=9)
    axes[0].legend(fontsize=7, ncol=4, loc="upper left", bbox_to_anchor=(0.0, -0.14))
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


PAIRED = ("reduced_metric_before_finetune", "reduced_metric_after_finetune")


def paired(records: list[dict[str, Any]], reference: str = "condense") -> list[dict[str, Any]]:
    """Per method, its metric minus ``reference``'s in the same seed, before and after
    fine-tuning: the per-seed differences and their mean and sample std (the seeds both have)."""
    by = {(r["method"], str(r["seed"])): r["summary"] for r in records}
    rows = []
    for method in [m for m in METHODS if m != reference] + sorted(
            {r["method"] for r in records} - set(METHODS)):
        seeds = sorted(s for m, s in by if m == method and (reference, s) in by)
        if not seeds:
            continue
        row: dict[str, Any] = {"method": method, "reference": reference, "seeds": " ".join(seeds)}
        for f in PAIRED:
            diffs = [by[(method, s)][f] - by[(reference, s)][f] for s in seeds
                     if by[(method, s)].get(f) is not None and by[(reference, s)].get(f) is not None]
            row[f"{f}_diff_mean"], row[f"{f}_diff_std"] = mean_std(diffs)
            row[f"{f}_diffs"] = " ".join(format_value(round(d, 6)) for d in diffs)
        rows.append(row)
    return rows


def paired_markdown(rows: list[dict[str, Any]]) -> str:
    head = ["method", "minus", "seeds", *(f"{f}: per seed" for f in PAIRED),
            *(f"{f}: mean ± std" for f in PAIRED)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        means = [("" if r[f"{f}_diff_mean"] is None else f"{r[f'{f}_diff_mean']:+.4g}")
                 + ("" if r[f"{f}_diff_std"] is None else f" ± {r[f'{f}_diff_std']:.2g}") for f in PAIRED]
        lines.append("| " + " | ".join([r["method"], r["reference"], r["seeds"],
                                        *(r[f"{f}_diffs"] for f in PAIRED), *means]) + " |")
    return "\n".join(lines) + "\n"


def write(root: Path, out: Path, command: str = "", fields: tuple[str, ...] = (),
          reference: str = "condense") -> dict[str, Any]:
    """Table, plot, curves and records of every finished run under ``root`` and of every run
    that ``out/runs.json`` keeps from earlier (a run under ``root`` replaces its record)."""
    try:
        records = [record(r, fields) for r in load_runs(root)]
    except NoRunsError:
        records = []
    records += previous_records(out, {(r["method"], r["seed"]) for r in records})
    if not records:
        raise NoRunsError(f"no finished runs under {root} and none kept in {out / 'runs.json'}")
    check_configs(records)
    result = table(records, fields)
    out.mkdir(parents=True, exist_ok=True)
    cols = ["reduce.method", "metric", "n_seeds", "seeds"] + [f"{f}_{s}" for f in result["fields"]
                                                             for s in ("mean", "std")]
    write_csv(out / "comparison.csv", result["rows"], cols)
    atomic_write_text(out / "comparison.md", markdown(result))
    pairs = paired(records, reference)
    columns = [f"{f}_{k}" for f in PAIRED for k in ("diffs", "diff_mean", "diff_std")]
    write_csv(out / "paired.csv", pairs, ["method", "reference", "seeds", *columns])
    atomic_write_text(out / "paired.md", paired_markdown(pairs))
    points = [{"method": row["reduce.method"], "seed": r["seed"], **p} for row in result["rows"]
              for r in records if r["method"] == row["reduce.method"] for p in r["curve"]]
    write_csv(out / "curves.csv", sorted(points, key=lambda p: (  # stable: by method, round
        [row["reduce.method"] for row in result["rows"]].index(p["method"]), p["round"],
        str(p["seed"]))), ["method", "round", "seed", *CURVE_FIELDS])
    n = {row["n_seeds"] for row in result["rows"]}
    plot(result, out / "comparison.png",
         f"{root.name}: every method at the condensation run's sizes, "
         f"{'/'.join(map(str, sorted(n)))} seed{'' if n == {1} else 's'}")
    write_json(out / "runs.json", {"command": command, "machine": machine(), "runs": records})
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--root", type=Path, required=True, help="folder of the comparison's runs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="seeds to run; the table and plot take every finished run under --root "
                         "and every run kept in --out's runs.json")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--out", type=Path, default=None,
                    help="results folder (default: results/<experiment>/comparison)")
    ap.add_argument("--scratch-sizes", choices=("all", "final"), default="all",
                    help="the scratch baseline at every size of the condensation curve, or only "
                         "at the final one (each trains for the full schedule; final saves most of "
                         "the comparison's time for networks that take hours)")
    ap.add_argument("--no-run", action="store_true", help="only table the finished runs (and the kept ones)")
    ap.add_argument("--field", action="append", default=[],
                    help="extra summary.json field for the table, dotted path (repeatable), e.g. "
                         "reduced_extra.a_posteriori.ignition_delay_rel_error_mean")
    ap.add_argument("--paired-against", default="condense", choices=METHODS,
                    help="paired.md: every method's metric minus this method's, seed by seed")
    ap.add_argument("overrides", nargs="*", help="experiment overrides, after --")
    args = ap.parse_args(argv)
    if not args.no_run:
        run_all(args.overrides, args.root, args.seeds, args.methods, args.scratch_sizes)
    try:
        command = "python scripts/compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
        result = write(args.root, args.out or ROOT / "results" / _name(args.root) / "comparison",
                       command=command, fields=tuple(args.field), reference=args.paired_against)
    except NoRunsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(result), end="")
    return 0


def _name(root: Path) -> str:
    for summary in root.rglob("summary.json") if root.is_dir() else ():
        return json.loads(summary.read_text()).get("experiment") or root.name
    return root.name


if __name__ == "__main__":
    sys.exit(main())
