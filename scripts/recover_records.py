"""Give a comparison's runs.json, written before compare.py kept run records, the records of
its runs, from the comparison's own files, so that it can go on without the run directories.

    python scripts/recover_records.py results/cifar10/comparison \
        --original condense:0=0.7949 --original merge_standard_init:1=0.8141

For every run in ``OUT/runs.json`` without a record: its accepted rounds from ``curves.csv``;
size ratio and metric before and after fine-tuning at the final size from its last round; the
metric's name from ``comparison.csv``; the original network's metric from ``--original`` or,
where a method's seeds are all known but one, from that method's mean in ``comparison.csv``.
The baselines that start from the condensation run's trained network (``reuses_original`` in
condensation/reduction.py) share its original per seed. The config is unknown (``null``:
compare.py does not check it) and ``recovered`` says where the record came from. Refuses to
write unless the records reproduce every mean and std of ``comparison.csv``.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

from condensation.files import write_json
from condensation.reduction import REDUCERS, original_of_targets
from condensation.results import CURVE_FIELDS, NoRunsError, table


def recover(out: Path, originals: dict[tuple[str, int], float], note: str) -> dict:
    runs_json = json.loads((out / "runs.json").read_text())
    rows = {r["reduce.method"]: r for r in csv.DictReader((out / "comparison.csv").open())}
    curves: dict[tuple[str, int], list[dict]] = {}
    for p in csv.DictReader((out / "curves.csv").open()):
        curves.setdefault((p["method"], int(p["seed"])), []).append(
            {"round": int(p["round"]), **{k: float(p[k]) for k in CURVE_FIELDS}})
    # the methods that start from the condensation run's trained original share its metric
    shared = {m for m, spec in REDUCERS.items() if spec.start is original_of_targets} | {"condense"}
    known = dict(originals)
    for (m, seed), v in originals.items():  # the same trained network, the same original
        if m in shared:
            known.update({(s, seed): v for s in shared})
    runs = runs_json["runs"]
    for m in rows:  # one unknown seed per method: from the mean
        seeds = [r["seed"] for r in runs if r["method"] == m]
        missing = [s for s in seeds if (m, s) not in known]
        if len(missing) == 1:
            mean = float(rows[m]["original_metric_mean"])
            known[(m, missing[0])] = len(seeds) * mean - sum(
                known[(m, s)] for s in seeds if s != missing[0])
    for r in runs:
        if "summary" in r:
            continue
        key = (r["method"], r["seed"])
        if key not in known or key not in curves:
            raise NoRunsError(f"cannot recover {r['method']} seed {r['seed']}: its original "
                              "metric (give --original) or its rounds (curves.csv) are unknown")
        curve = sorted(curves[key], key=lambda p: p["round"])
        last = curve[-1]
        r.update(summary={"metric": rows[r["method"]]["metric"], "original_metric": known[key],
                          "size_ratio": last["size_ratio"],
                          "reduced_metric_before_finetune": last["metric_before_finetune"],
                          "reduced_metric_after_finetune": last["metric_after_finetune"],
                          "wall_time_s": r["wall_time_s"]},
                 curve=curve, config=None, recovered=note)
    for row in table(runs)["rows"]:  # the records must say what the comparison said
        for k, v in row.items():
            if k.endswith(("_mean", "_std")) and v is not None:
                old = float(rows[row["reduce.method"]][k])
                if not math.isclose(v, old, rel_tol=1e-9, abs_tol=1e-12):
                    raise NoRunsError(f"recovered {row['reduce.method']} {k} = {v}, but "
                                      f"comparison.csv says {old}")
    return runs_json


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="a folder written by scripts/compare.py")
    ap.add_argument("--original", action="append", default=[], metavar="METHOD:SEED=VALUE",
                    help="a run's original metric that comparison.csv's mean cannot tell")
    ap.add_argument("--note", default="", help="where the original metrics given came from")
    args = ap.parse_args(argv)
    originals = {}
    for item in args.original:
        try:
            key, value = item.split("=")
            method, seed = key.split(":")
            originals[(method, int(seed))] = float(value)
        except ValueError:
            ap.error(f"--original {item!r}: expected METHOD:SEED=VALUE, e.g. condense:0=0.7949")
    try:
        runs_json = recover(args.out, originals, "from comparison.csv and curves.csv by "
                            "scripts/recover_records.py; " + (args.note or "no run directory"))
    except NoRunsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_json(args.out / "runs.json", runs_json)
    print(f"{args.out / 'runs.json'}: {len(runs_json['runs'])} runs, each with its record")
    return 0


if __name__ == "__main__":
    sys.exit(main())
