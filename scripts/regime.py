"""How much a trained network condensed, layer by layer: issue 19's "a regime that condenses".

    python scripts/regime.py LABEL=RUN [LABEL=RUN ...] [--reduced LABEL=RUN ...]
        [--threshold 0.95] [--calibration N] --out DIR

Each ``RUN`` is a run directory with ``config.yaml`` and ``networks/original`` (the trained
network, e.g. from ``python -m experiments.run +exp=cifar10_mobilenetv2 model.dropout=0.2``).
For every unit group of its network (``net.spec()``): the width; the number of groups of
aligned units at cosine >= ``--threshold``, comparing the input vectors (BatchNorm folded, what
the paper compares) and each producer's part at unit norm (``reduce.similarity=parts``), both
after the kernel entries that no calibration input reaches are set to 0 (``reduce.dead_inputs=
zero``: the outer depthwise taps at 1x1 resolution only ever shrink by weight decay, so they
would measure the training length rather than condensation); and the units constant on the
calibration inputs, of which those exactly 0 (dead); and the groups the live (non-constant) units
form among themselves (a layer whose units all stopped learning would otherwise count as
condensed). The calibration inputs are drawn as the
experiments draw round 0's (the run's seed; ``--calibration`` of them, by default the run's
``reduce.calibration`` or 2048). A group whose consumers read its units flattened with others
(a plain CNN's classifier) is listed as skipped. ``--reduced LABEL=RUN`` adds
that run's accuracy before and after fine-tuning (its ``summary.json``; e.g. the 11.5 %
pipeline, ``+exp=cifar10_115 reduce.original=RUN/networks/original``) to the label's row.

Writes ``DIR/regime.json`` (every number, the runs, commit) and ``DIR/regime.png`` (per layer:
groups / width for both similarities, groups among live units / live units, and constant units /
width, one line per run).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from condensation.calibrate import consumer_inputs, module_path
from condensation.compensate import constant_units
from condensation.condense import assign_groups, num_groups
from condensation.experiment import calibration_inputs
from condensation.files import write_json
from condensation.plots import color_cycle, save_figure, subplots
from condensation.provenance import git_commit
from condensation.reduction import unit_vectors, zero_dead_inputs
from condensation.saved import load_network
from condensation.tasks import make_task

ROOT = Path(__file__).resolve().parents[1]


def labelled(items: list[str], what: str) -> dict[str, Path]:
    out = {}
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"{what}: {item!r} is not LABEL=RUN (e.g. dropout=runs/cifar10/drop/seed0)")
        if label in out:
            raise SystemExit(f"{what}: label {label!r} given twice")
        out[label] = Path(path)
    return out


def check_runs(runs: dict[str, Path], reduced: dict[str, Path]) -> None:
    """Every problem with the arguments at once, before any work."""
    problems = [f"{label}: {run} has no {need}" for label, run in runs.items()
                for need in ("config.yaml", "networks/original") if not (run / need).exists()]
    problems += [f"--reduced {label}: no run of that label (labels: {', '.join(runs)})"
                 for label in reduced if label not in runs]
    problems += [f"--reduced {label}: {run} has no summary.json" for label, run in reduced.items()
                 if not (run / "summary.json").exists()]
    if problems:
        raise SystemExit("regime.py: " + "; ".join(problems))


def calibration(cfg: dict[str, Any], n: int | None) -> np.ndarray:
    """``n`` (default: the run's ``reduce.calibration`` or 2048) training inputs drawn as the
    experiments draw round 0's calibration set."""
    seed, n = int(cfg["seed"]), n or int(cfg["reduce"].get("calibration") or 2048)
    return calibration_inputs(make_task(cfg["data"], seed, ROOT).train[0], n, seed, 0)


def measure(run: Path, threshold: float, n_calib: int | None) -> list[dict[str, Any]]:
    """Per unit group of the run's original network: width, groups (two similarities), constant
    and dead units."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    net, variables, _ = load_network(run / "networks" / "original")
    x, module, rows = calibration(cfg, n_calib), net.module(), []
    for group in tqdm(net.spec(), desc=run.name, unit="group"):
        try:
            inputs = consumer_inputs(module, variables, x, group.consumers)
        except ValueError as e:  # read flattened with other units: no per-unit activations
            rows.append({"group": group.name, "skipped": str(e)})
            continue
        acts, _ = inputs[module_path(group.consumers[0])]
        acts = np.asarray(acts).reshape(-1, acts.shape[-1])
        constant = constant_units(inputs, group)
        row = {"group": group.name, "width": int(acts.shape[1]), "constant": int(constant.sum()),
               "dead": int((np.abs(acts).max(axis=0) == 0).sum()), "live": int((~constant).sum())}
        zeroed = zero_dead_inputs(module, variables, x, group)
        for sim in ("weights", "parts"):
            vectors = unit_vectors(zeroed, group, inputs, sim)
            row[f"groups_{sim}"] = num_groups(assign_groups(vectors, threshold))
            live = vectors[np.flatnonzero(~constant)]
            row[f"groups_{sim}_live"] = num_groups(assign_groups(live, threshold)) if len(live) else 0
        rows.append(row)
    return rows


def accuracy(run: Path) -> dict[str, Any]:
    s = json.loads((run / "summary.json").read_text())
    return {"run": str(run), "size_ratio": s.get("size_ratio"),
            "before_finetune": s.get("reduced_metric_before_finetune"),
            "after_finetune": s.get("reduced_metric_after_finetune"),
            "val_after_finetune": s.get("reduced_val_metric")}


def plot(results: dict[str, dict[str, Any]], threshold: float, path: Path) -> None:
    panels = (("groups_weights", f"groups at cos >= {threshold:g} / width\n(input vectors)"),
              ("groups_parts", f"groups at cos >= {threshold:g} / width\n(producer parts at unit norm)"),
              ("groups_weights_live",
               f"groups at cos >= {threshold:g} among live\nunits / live units (input vectors)"),
              ("constant", "constant units / width\n(on the calibration images)"))
    fig, axes = subplots(len(panels), 1, figsize=(10, 10), sharex=True)
    for (label, res), color in zip(results.items(), color_cycle(), strict=False):
        rows = res["layers"]
        for ax, (key, _) in zip(axes, panels, strict=True):
            per = "live" if key.endswith("_live") else "width"
            ax.plot([np.nan if "skipped" in r or not r[per] else r[key] / r[per] for r in rows], "o-",
                    color=color, ms=3, label=label)
    for ax, (_, title) in zip(axes, panels, strict=True):
        ax.set_ylabel(title, fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    names = [r["group"] for r in next(iter(results.values()))["layers"]]
    axes[-1].set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    axes[0].legend(fontsize=8)
    fig.suptitle("How much each trained network condensed, per unit group", fontsize=10)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="LABEL=RUN: a run directory with networks/original")
    ap.add_argument("--reduced", nargs="*", default=[], help="LABEL=RUN: that original's reduction")
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--calibration", type=int, default=None,
                    help="calibration inputs (default: the run's reduce.calibration or 2048)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if not 0 < args.threshold <= 1 or (args.calibration is not None and args.calibration < 1):
        raise SystemExit(f"regime.py: --threshold must be in (0, 1] (got {args.threshold}) and "
                         f"--calibration >= 1 (got {args.calibration})")
    runs, reduced = labelled(args.runs, "runs"), labelled(args.reduced, "--reduced")
    check_runs(runs, reduced)
    results = {label: {"run": str(run), "layers": measure(run, args.threshold, args.calibration)}
               for label, run in runs.items()}
    for label, run in reduced.items():
        results[label]["reduced"] = accuracy(run)
    for res in results.values():
        res["totals"] = {k: sum(r[k] for r in res["layers"] if "skipped" not in r)
                         for k in ("width", "groups_weights", "groups_parts", "constant", "dead",
                                   "live", "groups_weights_live", "groups_parts_live")}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "regime.json", {"threshold": args.threshold, "calibration": args.calibration,
                                           "commit": git_commit(), "command": " ".join(sys.argv),
                                           "results": results})
    plot(results, args.threshold, args.out / "regime.png")
    for label, res in results.items():
        print(label, res["totals"], res.get("reduced", ""))


if __name__ == "__main__":
    main()
