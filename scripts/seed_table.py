"""One row per run of a comparison: its seed, test and validation numbers, wall time.

    python scripts/seed_table.py results/combustion/paper_10/every_method   # -> seeds.md there

Reads a comparison folder written by ``scripts/compare.py`` (its ``runs.json``) and the
evaluations copied beside it, ``val/<method>_seed<S>.json`` and ``test/<method>_seed<S>.json``
(``python -m experiments.evaluate ... split=val|test``), and writes ``seeds.md``, atomically: per
run, the parameters, the test metric before and after fine-tuning (from the run), the test and
validation metric re-evaluated from the saved network, and, where the evaluations hold rollouts
(``extra.a_posteriori``, combustion), the ignition-delay error mean / max sampled and read
between samples and how many conditions ignite; then the wall time. Rows go by method (in
``METHODS`` order) and seed. A run without both evaluations is an error naming the missing
files: every row of the table is a re-evaluated network.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sizecurve import LABELS as SCRATCH_LABELS
from sizecurve import UNTRAINED

from condensation.files import atomic_write_text

METHODS = ("condense", "importance", "fold", "magnitude", "random", "scratch_finetune", "scratch",
           "none")
LABELS = {"fold": "model folding", "none": "original + the same epochs (yardstick)",
          **SCRATCH_LABELS}


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _rollouts(e: dict[str, Any]) -> list[str]:
    a = e["extra"]["a_posteriori"]
    return [f"{_pct(a['ignition_delay_rel_error_mean'])} / {_pct(a['ignition_delay_rel_error_max'])}",
            f"{_pct(a['ignition_delay_interp_rel_error_mean'])} / "
            f"{_pct(a['ignition_delay_interp_rel_error_max'])}",
            f"{a['n_conditions'] - a['n_not_ignited']}/{a['n_conditions']}"]


def evaluations(folder: Path, run: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A run's test and validation evaluation files, read."""
    name = f"{run['method']}_seed{run['seed']}.json"
    paths = [folder / split / name for split in ("test", "val")]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{run['dir']}: no evaluation {', '.join(missing)}; evaluate its "
                                "network with python -m experiments.evaluate (see RUN.md)")
    test, val = (json.loads(p.read_text()) for p in paths)
    return test, val


def row(run: dict[str, Any], test: dict[str, Any], val: dict[str, Any], rollouts: bool) -> list[str]:
    s = run["summary"]
    before = s.get("reduced_metric_before_finetune")
    cells = [LABELS.get(run["method"], run["method"]), str(run["seed"]), f"{test['params']:,}",
             "" if before is None or run["method"] in UNTRAINED else f"{before:.3g}",
             f"{s['reduced_metric_after_finetune']:.5f}", f"{test['value']:.5f}"]
    cells += _rollouts(test) if rollouts else []
    cells += [f"{val['value']:.5f}"] + (_rollouts(val)[:1] if rollouts else [])
    return cells + [f"{run['wall_time_s']:.0f} s"]


def table(folder: Path) -> str:
    runs = json.loads((folder / "runs.json").read_text())["runs"]
    order = {m: i for i, m in enumerate(METHODS)}
    runs = sorted(runs, key=lambda r: (order.get(r["method"], len(order)), r["method"], r["seed"]))
    evaluated = [(r, *evaluations(folder, r)) for r in runs]
    rollouts = "a_posteriori" in evaluated[0][1].get("extra", {})
    rows = [row(r, test, val, rollouts) for r, test, val in evaluated]
    metric = runs[0]["summary"]["metric"]
    head = ["method", "seed", "parameters", f"{metric} before fine-tuning",
            f"{metric} after (the run)", f"{metric}, re-evaluated"]
    if rollouts:
        head += ["test ignition-delay error mean / max, sampled", "the same, between samples",
                 "ignite", "val metric", "val ignition-delay error mean / max, sampled"]
    else:
        head += ["val metric"]
    head += ["wall time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a comparison folder with runs.json, val/ and test/")
    args = ap.parse_args(argv)
    if not (args.folder / "runs.json").is_file():
        print(f"error: {args.folder} has no runs.json (write it with scripts/compare.py)",
              file=sys.stderr)
        return 2
    try:
        text = table(args.folder)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    atomic_write_text(args.folder / "seeds.md", text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
