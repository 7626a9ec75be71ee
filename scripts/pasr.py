"""The published surrogates inside a partially stirred reactor, against Cantera.

    python scripts/pasr.py                                   # about 10 min on 2 CPU cores
    python scripts/pasr.py --quick --out /tmp/pasr           # a smoke run (seconds)

Two cases (condensation/combustion/pasr.py for the reactor): *preheated*, every inflowing
particle H2/air at 1100 K and phi 1, inside the surrogates' training envelope; *cold*, 30 % of
the inflow at 300 K, so that the envelope guard freezes the particles below it. Each case runs
with Cantera (a fresh reactor per particle and step), the original and the reduced surrogate
(one guarded batched ``step`` per time step), the same random flow. Writes ``--out``
(default results/combustion/pasr): pasr.json (the curves, the final temperatures, the chemistry
wall times, the largest deviation of the mean temperature from Cantera's, command, commit,
machine, date, wall time), pasr.png and README.md (``--render``: redraw those two from pasr.json).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from condensation.combustion import load_surrogate  # noqa: E402
from condensation.combustion.pasr import PaSRConfig, Stream, cantera_chemistry, run_pasr  # noqa: E402
from condensation.files import atomic_write_text, write_json  # noqa: E402
from condensation.provenance import git_commit, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "preheated": (Stream(1100.0, 1.0),),
    "cold": (Stream(1100.0, 1.0, 0.7), Stream(300.0, 1.0, 0.3)),
}


def surrogate_chemistry(s):
    """The surrogate's guarded step, counting the particles it guarded at the last call."""
    last = {"guarded": 0}

    def step(T, P, Y):
        T1, Y1, status = s.step(T, P, Y, return_guarded=True)
        last["guarded"] = int((status > 0).sum())
        return T1, Y1

    return step, lambda: last["guarded"]


def run(args) -> dict:
    sur = {which: load_surrogate(args.surrogates / which) for which in ("original", "reduced")}
    out = {}
    for case, streams in CASES.items():
        cfg = PaSRConfig(n_particles=args.particles, t_end=args.t_end, streams=streams,
                         record_every=args.record_every, seed=args.seed)
        res = {"cantera": run_pasr(cfg, cantera_chemistry(cfg), f"{case}: cantera")}
        for which, s in sur.items():
            step, guarded = surrogate_chemistry(s)
            # compile before the clock runs (the network's step at this batch size)
            step(np.full(cfg.n_particles, 1500.0), np.full(cfg.n_particles, cfg.P),
                 np.tile(_air(s), (cfg.n_particles, 1)))
            res[which] = run_pasr(cfg, step, f"{case}: {which}", guarded)
        ref = res["cantera"]
        out[case] = {
            "config": {**dataclasses.asdict(cfg), "streams": [dataclasses.asdict(s) for s in streams]},
            "t_s": ref.t.tolist(),
            "runs": {
                name: {"mean_T": r.mean_T.tolist(), "mean_Y": {k: v.tolist() for k, v in r.mean_Y.items()},
                       "final_T": r.final_T.tolist(), "chemistry_s": r.chemistry_s,
                       "mixing_s": r.mixing_s, "guarded": r.guarded.tolist(),
                       "max_rel_dev_mean_T": float(np.max(np.abs(r.mean_T / ref.mean_T - 1))),
                       "chemistry_speedup_vs_cantera": ref.chemistry_s / r.chemistry_s}
                for name, r in res.items()},
        }
    return out


def _air(s) -> np.ndarray:
    """A warm-up state's mass fractions: the stoichiometric H2/air mixture."""
    from condensation.combustion.chem import initial_mass_fractions
    return initial_mass_fractions(s.mechanism_name, 1.0)


COLORS = {"cantera": "black", "original": "tab:blue", "reduced": "tab:orange"}


def plot(d: dict, path: Path) -> None:
    fig, axes = plt.subplots(len(d), 3, figsize=(14, 4 * len(d)), squeeze=False)
    for row, (case, c) in zip(axes, d.items(), strict=True):
        t = np.array(c["t_s"]) * 1e3
        for name, r in c["runs"].items():
            style = {"color": COLORS[name], "lw": 2 if name == "cantera" else 1.2,
                     "ls": "-" if name != "reduced" else "--"}
            row[0].plot(t, r["mean_T"], label=name, **style)
            row[1].plot(t, r["mean_Y"]["OH"], **style)
            row[1].plot(t, r["mean_Y"]["H2O"], alpha=0.6, **style)
            row[2].hist(r["final_T"], bins=30, histtype="step", color=COLORS[name], density=True,
                        label=name, lw=style["lw"])
        row[0].set(xlabel="t [ms]", ylabel="mean T [K]", title=f"{case}: mean temperature")
        row[1].set(xlabel="t [ms]", ylabel="mean mass fraction", yscale="log",
                   title=f"{case}: mean OH (lower) and H2O (upper)")
        row[2].set(xlabel="T [K]", ylabel="density", title=f"{case}: final temperature PDF")
        row[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def readme(d: dict, meta: dict) -> str:
    lines = ["# The surrogates in a partially stirred reactor", "",
             f"`{meta['command']}`: {meta['wall_s']:.0f} s, {meta['date']}, commit "
             f"{meta['commit'][:10]}, {meta['machine']}.", "",
             f"{next(iter(d.values()))['config']['n_particles']} particles at 1 atm for "
             f"{next(iter(d.values()))['config']['t_end'] * 1e3:g} ms, residence time 1 ms, IEM "
             "mixing time 0.2 ms, 1 us steps (the surrogates' dt); chemistry by operator "
             "splitting: Cantera (a fresh reactor per "
             "particle and step) or one guarded batched `step` of the surrogate; the same random "
             "flow for all (`condensation/combustion/pasr.py`). *preheated*: every inflow "
             "H2/air at 1100 K, phi 1; *cold*: 30 % of the inflow at 300 K, below the training "
             "envelope: the default guard freezes particles outside it below 600 K and hands the "
             "others (fresh gas mixed with burnt gas, 600-1000 K) to Cantera, inside the "
             "surrogate's chemistry time.", "",
             "| case | chemistry | largest deviation of the mean T from Cantera's | chemistry wall "
             "time | speed-up over Cantera | particles guarded (last step) |",
             "|---|---|---|---|---|---|"]
    for case, c in d.items():
        for name, r in c["runs"].items():
            lines.append(f"| {case} | {name} | {r['max_rel_dev_mean_T']:.2%} | "
                         f"{r['chemistry_s']:.1f} s | {r['chemistry_speedup_vs_cantera']:.2f}x | "
                         f"{r['guarded'][-1]} |")
    return "\n".join(lines + ["", "![PaSR](pasr.png)", ""])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--surrogates", type=Path, default=ROOT / "results/combustion/surrogate")
    ap.add_argument("--out", type=Path, default=ROOT / "results/combustion/pasr")
    ap.add_argument("--particles", type=int, default=128)
    ap.add_argument("--t-end", type=float, default=2e-3, help="s")
    ap.add_argument("--record-every", type=int, default=20, help="steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="8 particles for 40 us: a smoke run")
    ap.add_argument("--render", action="store_true",
                    help="only redraw pasr.png and README.md from --out's pasr.json")
    args = ap.parse_args(argv)
    if args.render:
        saved = json.loads((args.out / "pasr.json").read_text())
        plot(saved["cases"], args.out / "pasr.png")
        atomic_write_text(args.out / "README.md", readme(saved["cases"], saved))
        return
    if args.quick:
        args.particles, args.t_end, args.record_every = 8, 4e-5, 10
    for folder in (args.surrogates / "original", args.surrogates / "reduced"):
        if not (folder / "network.json").is_file():
            raise SystemExit(f"error: {folder} holds no surrogate (network.json)")
    commit = git_commit()
    start = time.perf_counter()
    d = run(args)
    meta = {"command": " ".join(["python scripts/pasr.py", *argv]), "commit": commit,
            "machine": machine(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "wall_s": round(time.perf_counter() - start, 1), "quick": args.quick}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "pasr.json", {**meta, "cases": d})
    plot(d, args.out / "pasr.png")
    atomic_write_text(args.out / "README.md", readme(d, meta))
    print(readme(d, meta))


if __name__ == "__main__":
    main()
