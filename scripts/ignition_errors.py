"""Every held-out condition's ignition-delay error, sampled and read between samples, in one figure.

    python scripts/ignition_errors.py EVAL.json=LABEL [EVAL.json=LABEL ...] --out DIR [--dt 1e-6]

Each EVAL.json is the output of ``python -m experiments.evaluate ... split=val|test`` for a
combustion network (its ``extra.a_posteriori.conditions``). Writes to ``--out``, atomically:

- ``ignition_errors.png``: the relative ignition-delay error of every condition against Cantera's delay,
  one marker per network; left, the delay at the rollout's sampling step (the step of largest
  dT/dt: the goal's metric), right, the same peak read between samples (``interpolate=True`` in
  ``chem.ignition_delay``). The line ``dt / delay`` on the left is what one sampling step costs:
  a sampled error is 0 or on or above it, so on the fastest ignitions one step already crosses
  the goal's 5 %.
- ``ignition_errors.csv``: the numbers behind it, one row per network and condition.

All networks must be evaluated on the same conditions (the same split); anything else is refused
before any file is written.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from condensation.files import write_csv
from condensation.plots import save_figure, subplots

GOAL_MAX = 0.05   # the combustion goal's largest ignition-delay error


def _read(spec: str) -> tuple[str, list[dict[str, Any]], str]:
    """``path=label`` -> (label, conditions, split); a clear error for anything unreadable."""
    path, sep, label = spec.partition("=")
    if not sep or not label:
        raise ValueError(f"{spec!r}: expected EVAL.json=LABEL (an evaluation file, '=', its label)")
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{path}: no such evaluation file")
    try:
        e = json.loads(p.read_text())
        conditions = e["extra"]["a_posteriori"]["conditions"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a combustion evaluation with rollouts "
                         f"(extra.a_posteriori.conditions; {type(err).__name__}: {err})") from None
    if not conditions:
        raise ValueError(f"{path}: holds no conditions")
    return label, conditions, str(e.get("split", "?"))


def load(specs: list[str]) -> tuple[list[tuple[str, list[dict[str, Any]]]], str]:
    """Read every evaluation; refuse networks evaluated on different conditions or splits."""
    read = [_read(s) for s in specs]
    labels = [label for label, _, _ in read]
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must differ, got {labels}")
    key = lambda cs: [(round(c["T0"], 6), round(c["P"], 3), round(c["phi"], 6)) for c in cs]
    first = key(read[0][1])
    for (_, cs, split), spec in zip(read, specs, strict=True):
        if key(cs) != first or split != read[0][2]:
            raise ValueError(f"{spec.partition('=')[0]}: evaluated on other conditions than "
                             f"{specs[0].partition('=')[0]} (split {split} against {read[0][2]}); "
                             "every network must be evaluated on the same split")
    return [(label, cs) for label, cs, _ in read], read[0][2]


# the CSV's columns and the condition's field each one holds
COLUMNS = {"T0_K": "T0", "P_Pa": "P", "phi": "phi", "tau_cantera_s": "tau_cantera",
           "tau_net_s": "tau_net", "rel_error": "tau_rel_error",
           "tau_cantera_interp_s": "tau_cantera_interp", "tau_net_interp_s": "tau_net_interp",
           "interp_rel_error": "tau_interp_rel_error", "ignited": "ignited"}


def rows(networks: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    return [{"network": label, **{col: c[field] for col, field in COLUMNS.items()}}
            for label, cs in networks for c in cs]


def legend_label(label: str, conditions: list[dict[str, Any]]) -> str:
    """A network's legend entry: its largest errors over the conditions that ignite (one that
    does not has no delay, and is counted instead)."""
    lit = [c for c in conditions if c["ignited"]]
    worst = [100 * max((c[f] for c in lit), default=float("nan"))
             for f in ("tau_rel_error", "tau_interp_rel_error")]
    unlit = len(conditions) - len(lit)
    return (f"{label}: max {worst[0]:.2f} % sampled, {worst[1]:.2f} % between"
            + (f", {unlit} of {len(conditions)} not igniting" if unlit else ""))


def figure(path: Path, networks: list[tuple[str, list[dict[str, Any]]]], split: str,
           dt: float) -> None:
    import numpy as np
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    fig, axes = subplots(1, 2, figsize=(11, 5), sharey=True)
    taus = np.array([c["tau_cantera"] for c in networks[0][1]])
    grid = np.geomspace(taus.min() * 0.9, taus.max() * 1.1, 100)
    markers = "os^Dv<>p"
    for ax, (field, tau_field, title) in zip(axes, [
            ("tau_rel_error", "tau_cantera", "sampled every dt (the goal's metric)"),
            ("tau_interp_rel_error", "tau_cantera_interp", "read between samples")], strict=True):
        for i, (label, cs) in enumerate(networks):
            x = [c[tau_field] * 1e6 for c in cs if c["ignited"]]
            y = [max(c[field], 1e-5) * 100 for c in cs if c["ignited"]]
            ax.scatter(x, y, marker=markers[i % len(markers)], s=28, alpha=0.75,
                       label=legend_label(label, cs))
        ax.axhline(100 * GOAL_MAX, color="k", ls="--", lw=1, label="the goal's max, 5 %")
        if field == "tau_rel_error":
            ax.plot(grid * 1e6, 100 * dt / grid, color="0.5", lw=1,
                    label=f"one sampling step, dt / delay (dt = {dt * 1e6:g} us)")
        ax.set(xscale="log", yscale="log", xlabel="Cantera's ignition delay (us)", title=title)
        ax.xaxis.set_major_locator(FixedLocator([10, 20, 50, 100, 200, 500]))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.02), ncol=2)
    axes[0].set_ylabel("ignition-delay error (%), 0 drawn at 0.001 %")
    n = len(networks[0][1])
    fig.suptitle(f"ignition delay of the {n} {split} conditions, each network against Cantera")
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("evaluations", nargs="+", metavar="EVAL.json=LABEL")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dt", type=float, default=1e-6,
                    help="the rollouts' time step in s (conf/data/combustion.yaml: 1e-6)")
    args = ap.parse_args(argv)
    try:
        if not args.dt > 0:
            raise ValueError(f"--dt must be a positive time step in s, got {args.dt}")
        networks, split = load(args.evaluations)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "ignition_errors.csv", rows(networks), ["network", *COLUMNS])
    figure(args.out / "ignition_errors.png", networks, split, args.dt)
    print(f"wrote {args.out / 'ignition_errors.png'} and ignition_errors.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
