"""Reading finished run directories, and the statistics over seeds that the scripts table.

``scripts/aggregate.py`` (sweeps) and ``scripts/compare.py`` (a method against the baselines)
and ``scripts/recover_records.py`` share these: a run is ``{dir, config (flattened, dotted
keys), summary}``; numbers are reported as mean and sample standard deviation over seeds.
"""
from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from condensation.config import OPERATIONAL_KEYS
from condensation.reduction import REDUCERS

# Keys that never make runs differ: the seed is what a group averages over, and the keys that
# change how a run is carried out, not its outcome (logger, checkpoint frequencies, ...), so runs
# made before such a key existed group with those made after.
DEFAULT_IGNORE = ("seed", *OPERATIONAL_KEYS)
# Always first in the table, in this order; then the other numeric top-level summary fields.
MAIN_FIELDS = ("size_ratio", "original_metric", "reduced_metric_after_finetune")
SKIP_FIELDS = {"seed"}
UNSET = object()  # a key that a run's config does not have


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
    if v is UNSET:
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


def sort_key(v: Any) -> tuple:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, format_value(v))


def number(v: Any) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def lookup(summary: dict[str, Any], dotted: str) -> Any:
    node: Any = summary
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
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
            if len({format_value(r["config"].get(k, UNSET)) for r in runs}) > 1]

    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[tuple(format_value(r["config"].get(k, UNSET)) for k in keys)].append(r)

    numeric = list(MAIN_FIELDS)
    for r in runs:
        for k, v in r["summary"].items():
            if k not in numeric and k not in SKIP_FIELDS and number(v) is not None:
                numeric.append(k)
    numeric += [f for f in fields if f not in numeric]

    def order(item):
        members = item[1]
        return tuple(sort_key(members[0]["config"].get(k, UNSET)) for k in keys)

    rows = []
    for values, members in sorted(groups.items(), key=order):
        seeds = [m["config"].get("seed", m["summary"].get("seed")) for m in members]
        members = [m for _, m in sorted(zip(seeds, members, strict=True), key=lambda t: sort_key(t[0]))]
        seeds = sorted(seeds, key=sort_key)
        if len(set(map(str, seeds))) < len(seeds):
            print(f"warning: group {group_name(keys, values)} has the same seed more than once "
                  f"({' '.join(str(m['dir']) for m in members)}); pass --ignore for the key that "
                  "tells them apart if it does not matter", file=sys.stderr)
        row: dict[str, Any] = {"group": group_name(keys, values), **dict(zip(keys, values, strict=True)),
                               "metric": " ".join(sorted({str(m["summary"].get("metric"))
                                                          for m in members})),
                               "n_seeds": len(members), "seeds": " ".join(map(str, seeds))}
        for f in numeric:
            vals = [x for m in members if (x := number(lookup(m["summary"], f))) is not None]
            row[f"{f}_mean"], row[f"{f}_std"] = mean_std(vals)
        row["_runs"] = members
        rows.append(row)
    constants = {}
    for f in numeric:
        vals = [number(lookup(r["summary"], f)) for r in runs]
        if f not in MAIN_FIELDS and None not in vals and len(set(vals)) == 1:
            constants[f] = vals[0]
    return {"keys": keys, "fields": numeric, "rows": rows, "runs": runs, "constants": constants}


def group_name(keys: list[str], values: tuple[str, ...]) -> str:
    return ",".join(f"{k}={v}" for k, v in zip(keys, values, strict=True)) or "all runs"


def columns(result: dict[str, Any]) -> list[str]:
    cols = ["group", *result["keys"], "metric", "n_seeds", "seeds"]
    for f in result["fields"]:
        cols += [f"{f}_mean", f"{f}_std"]
    return cols


def fmt(x: Any) -> str:
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
            cells.append("" if mean is None else fmt(mean) + ("" if std is None else f" ± {fmt(std)}"))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if constants:
        lines += ["", "The same in every run: "
                  + ", ".join(f"{k} = {fmt(v)}" for k, v in constants.items()) + "."]
    return "\n".join(lines) + "\n"


METHODS = tuple(REDUCERS)  # condense first, then the baselines
FIELDS = ("size_ratio", "original_metric", "reduced_metric_before_finetune",
          "reduced_metric_after_finetune", "wall_time_s")


CURVE_FIELDS = ("size_ratio", "metric_before_finetune", "metric_after_finetune")
def process_commits(run: Path) -> list[str]:
    """The commits of the processes that worked on a run, in order: from the
    ``start`` and ``resume`` events of its metrics.jsonl (a resumed run may span several),
    consecutive repeats collapsed, so the last is the commit that finished it. Events of
    the project's earliest runs record none: their RUN.md says which code they ran."""
    out: list[str] = []
    path = run / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        event = json.loads(line)
        commit = event.get("commit")
        if event.get("event") in ("start", "resume") and commit and out[-1:] != [commit]:
            out.append(commit)
    return out


def record(run: dict[str, Any], fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """What the comparison keeps of a finished run (``load_runs``' dict): enough to table and
    plot it again once its directory is gone: its config, the summary's fields that the
    table uses and its accepted rounds."""
    d, cfg, s = Path(run["dir"]), run["config"], run["summary"]
    with (d / "curve.csv").open() as f:
        curve = [{"round": int(r["round"]), **{k: float(r[k]) for k in CURVE_FIELDS}}
                 for r in csv.DictReader(f) if r["accepted"] == "True"]
    return {"dir": str(d), "method": cfg.get("reduce.method", "condense"),
            "seed": cfg.get("seed", s.get("seed")), "commit": s.get("commit"),
            "commits": process_commits(d), "wall_time_s": s.get("wall_time_s"),
            "summary": {f: lookup(s, f) for f in ("metric", "log_metric", *FIELDS, *fields)},
            "curve": curve, "config": cfg}


def table(records: list[dict[str, Any]], fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """One row per method (METHODS' order) at the final size: mean and sample std over seeds
    of every field (aggregate.py's statistics), in aggregate.markdown's form."""
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (str(r["seed"]), r["dir"])):
        by_method[r["method"]].append(r)
    order = [m for m in METHODS if m in by_method] + sorted(set(by_method) - set(METHODS))
    names = [f for f in (*FIELDS, *fields)
             if any(number(r["summary"].get(f)) is not None for r in records)]
    rows = []
    for m in order:
        recs = by_method[m]
        seeds = [r["seed"] for r in recs]
        if len(set(map(str, seeds))) < len(seeds):
            print(f"warning: {m} has the same seed more than once: "
                  f"{' '.join(r['dir'] for r in recs)}", file=sys.stderr)
        row: dict[str, Any] = {
            "reduce.method": m, "n_seeds": len(recs), "seeds": " ".join(map(str, seeds)),
            "metric": " ".join(sorted({str(r["summary"].get("metric")) for r in recs}))}
        for f in names:
            vals = [x for r in recs if (x := number(r["summary"].get(f))) is not None]
            row[f"{f}_mean"], row[f"{f}_std"] = mean_std(vals)
        rows.append(row)
    return {"keys": ["reduce.method"], "fields": names, "rows": rows, "constants": {},
            "records": records}
