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
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: the package is in the checkout
    sys.path.insert(0, str(ROOT))

from condensation.experiment import OPERATIONAL_KEYS  # noqa: E402
from condensation.io import atomic_write_text, write_csv  # noqa: E402

# Keys that never make runs differ: the seed is what a group averages over, and the keys that
# change how a run is carried out, not its outcome (logger, checkpoint frequencies, ...), so runs
# made before such a key existed group with those made after.
DEFAULT_IGNORE = ("seed", *OPERATIONAL_KEYS)
# Always first in the table, in this order; then the other numeric top-level summary fields.
MAIN_FIELDS = ("size_ratio", "original_metric", "reduced_metric_after_finetune")
SKIP_FIELDS = {"seed"}
_UNSET = object()  # a key that a run's config does not have


class NoRunsError(RuntimeError):
    """The sweep folder holds no finished run."""


def find_runs(sweep_dir: str | Path) -> list[Path]:
    """Run directories below ``sweep_dir`` holding both summary.json and config.yaml, sorted."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise NoRunsError(f"{sweep_dir} is not a folder")
    runs = sorted(p.parent for p in sweep_dir.rglob("summary.json")
                  if (p.parent / "config.yaml").is_file())
    if not runs:
        started = sorted(p.parent for p in sweep_dir.rglob("config.yaml")
                         if p.parent.name != ".hydra")
        hint = (f"; {len(started)} run directories have config.yaml but no summary.json yet "
                "(still running, or failed: see their metrics.jsonl)" if started else "")
        raise NoRunsError(f"no finished runs under {sweep_dir}: a finished run directory holds "
                          f"summary.json and config.yaml{hint}")
    return runs


def flatten_config(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{'reduce': {'auto': {'start': 0.99}}}`` -> ``{'reduce.auto.start': 0.99}``; lists stay."""
    if isinstance(cfg, dict) and cfg:
        out: dict[str, Any] = {}
        for k, v in cfg.items():
            out.update(flatten_config(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: cfg}


def format_value(v: Any) -> str:
    """A config value as one would type it in an override: 0.99, [0.99,0.95], true, null."""
    if v is _UNSET:
        return "unset"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list | tuple):
        return "[" + ",".join(format_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return str(v)


def _sort_key(v: Any) -> tuple:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, format_value(v))


def _number(v: Any) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def _lookup(summary: dict[str, Any], dotted: str) -> Any:
    node: Any = summary
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def load_runs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    runs = []
    for d in find_runs(sweep_dir):
        try:
            cfg = yaml.safe_load((d / "config.yaml").read_text()) or {}
            summary = json.loads((d / "summary.json").read_text())
        except (OSError, ValueError, yaml.YAMLError) as e:
            print(f"warning: skipping {d}: {e}", file=sys.stderr)
            continue
        runs.append({"dir": d, "config": flatten_config(cfg), "summary": summary})
    if not runs:
        raise NoRunsError(f"no readable finished runs under {sweep_dir}")
    return runs


def aggregate(sweep_dir: str | Path, fields: list[str] | tuple[str, ...] = (),
              ignore: list[str] | tuple[str, ...] = DEFAULT_IGNORE) -> dict[str, Any]:
    """Group the finished runs below ``sweep_dir``; returns ``{keys, fields, rows, runs}``.

    ``keys`` are the config keys that differ between runs (the seed and ``ignore`` aside),
    ``rows`` one dict per group with the columns of sweep.csv (numbers, None when empty).
    """
    runs = load_runs(sweep_dir)
    ignored = set(ignore) | set(DEFAULT_IGNORE)
    all_keys = sorted(k for k in {k for r in runs for k in r["config"]}
                      if not any(k == i or k.startswith(f"{i}.") for i in ignored))
    keys = [k for k in all_keys
            if len({format_value(r["config"].get(k, _UNSET)) for r in runs}) > 1]

    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[tuple(format_value(r["config"].get(k, _UNSET)) for k in keys)].append(r)

    numeric = list(MAIN_FIELDS)
    for r in runs:
        for k, v in r["summary"].items():
            if k not in numeric and k not in SKIP_FIELDS and _number(v) is not None:
                numeric.append(k)
    numeric += [f for f in fields if f not in numeric]

    def order(item):
        members = item[1]
        return tuple(_sort_key(members[0]["config"].get(k, _UNSET)) for k in keys)

    rows = []
    for values, members in sorted(groups.items(), key=order):
        seeds = [m["config"].get("seed", m["summary"].get("seed")) for m in members]
        members = [m for _, m in sorted(zip(seeds, members, strict=True), key=lambda t: _sort_key(t[0]))]
        seeds = sorted(seeds, key=_sort_key)
        if len(set(map(str, seeds))) < len(seeds):
            print(f"warning: group {_group_name(keys, values)} has the same seed more than once "
                  f"({' '.join(str(m['dir']) for m in members)}); pass --ignore for the key that "
                  "tells them apart if it does not matter", file=sys.stderr)
        row: dict[str, Any] = {"group": _group_name(keys, values), **dict(zip(keys, values, strict=True)),
                               "metric": " ".join(sorted({str(m["summary"].get("metric"))
                                                          for m in members})),
                               "n_seeds": len(members), "seeds": " ".join(map(str, seeds))}
        for f in numeric:
            vals = [x for m in members if (x := _number(_lookup(m["summary"], f))) is not None]
            row[f"{f}_mean"], row[f"{f}_std"] = _mean_std(vals)
        row["_runs"] = members
        rows.append(row)
    constants = {}
    for f in numeric:
        vals = [_number(_lookup(r["summary"], f)) for r in runs]
        if f not in MAIN_FIELDS and None not in vals and len(set(vals)) == 1:
            constants[f] = vals[0]
    return {"keys": keys, "fields": numeric, "rows": rows, "runs": runs, "constants": constants}


def _group_name(keys: list[str], values: tuple[str, ...]) -> str:
    return ",".join(f"{k}={v}" for k, v in zip(keys, values, strict=True)) or "all runs"


def columns(result: dict[str, Any]) -> list[str]:
    cols = ["group", *result["keys"], "metric", "n_seeds", "seeds"]
    for f in result["fields"]:
        cols += [f"{f}_mean", f"{f}_std"]
    return cols


def _fmt(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.4g}"  # parameters, FLOPs: all digits
    return str(x)


def markdown(result: dict[str, Any]) -> str:
    """sweep.csv's rows as ``mean ± std``; fields equal in every run go below the table."""
    constants = result.get("constants", {})
    fields = [f for f in result["fields"] if f not in constants]
    head = [*(result["keys"] or ["group"]), "metric", "n_seeds", *fields]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["rows"]:
        cells = [str(row[k]) for k in result["keys"] or ["group"]] + [row["metric"], str(row["n_seeds"])]
        for f in fields:
            mean, std = row[f"{f}_mean"], row[f"{f}_std"]
            cells.append("" if mean is None else _fmt(mean) + ("" if std is None else f" ± {_fmt(std)}"))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if constants:
        lines += ["", "The same in every run: "
                  + ", ".join(f"{k} = {_fmt(v)}" for k, v in constants.items()) + "."]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from condensation.plots import save_figure

    rows = result["rows"]
    summaries = [r["summary"] for r in result["runs"]]
    metrics = sorted({str(s.get("metric")) for s in summaries})
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
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
