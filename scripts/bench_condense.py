"""Time one condensation pass of the paper-size MLP 22-3200-1600-800-400-22.

    python scripts/bench_condense.py [--repeats 5] [--out results/benchmarks/condense_time.json]

Every hidden neuron is made a noisy copy of one of ``--fraction`` x width prototype neurons
(outgoing weights split), so that the pass really merges (about that fraction of neurons
remain). Reports compile time (first call) and the median of warm calls: the whole
``condensation.condense`` (similarity, grouping, host sync of the group counts, merge).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import condensation
from condensation.io import git_commit, machine, write_json
from condensation.models import MLP


def redundant_mlp(widths, in_dim, out_dim, fraction, noise, seed=0):
    """MLP params whose hidden neurons are noisy copies of fewer prototypes."""
    rng = np.random.default_rng(seed)
    params = MLP(widths, out_dim, "gelu", 0.5).init(jax.random.key(seed), jnp.ones((1, in_dim)))
    params = jax.tree.map(np.array, params["params"])
    for i, w in enumerate(widths):
        layer = params[f"Dense_{i}"]
        protos = rng.integers(0, max(1, int(fraction * w)), w)
        layer["kernel"] = layer["kernel"][:, protos] * (1 + noise * rng.standard_normal((1, w)))
        layer["kernel"] += noise * rng.standard_normal(layer["kernel"].shape) * np.abs(layer["kernel"]).mean()
        layer["bias"] = layer["bias"][protos]
    return jax.tree.map(jnp.asarray, params)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--fraction", type=float, default=0.4)
    ap.add_argument("--out", default="results/benchmarks/condense_time.json")
    args = ap.parse_args()
    widths = (3200, 1600, 800, 400)
    params = redundant_mlp(widths, 22, 22, args.fraction, noise=1e-3)

    def run():
        t = time.perf_counter()
        new, report = condensation.condense(params, threshold=args.threshold, activation="gelu")
        jax.block_until_ready(new)
        return time.perf_counter() - t, report

    first, report = run()
    warm = [run()[0] for _ in range(args.repeats)]
    result = {
        "what": "condensation.condense on MLP 22-3200-1600-800-400-22 (gelu)",
        "threshold": args.threshold,
        "widths_before": report["widths_before"], "widths_after": report["widths_after"],
        "params_before": report["params_before"], "params_after": report["params_after"],
        "first_call_s": round(first, 3), "warm_median_s": round(statistics.median(warm), 4),
        "warm_s": [round(w, 4) for w in warm],
        "command": "python scripts/bench_condense.py", "commit": git_commit(), "machine": machine(),
    }
    write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
