"""Benchmarks: original against reduced networks, the surrogate against Cantera, one condensation
pass, training throughput, the training loop's default path against the earlier ones.
Benchmarks, not tests: every figure is the median of repeated warm runs (the first call, which
compiles, is reported apart), all in one process (the malloc section: in child processes), and
the runs of the functions compared alternate, so that a change of machine load hits them alike.

    python scripts/benchmark.py                        # 11 min on 2 CPU cores (227 s + malloc 425 s)
    python scripts/benchmark.py --quick --out /tmp/b   # a smoke run, mostly compiling: 1.7 min, and
                                                       # malloc's 5 processes compile a MobileNetV2 each
    python scripts/benchmark.py --only inference cantera

``--combustion DIR`` (default results/combustion/surrogate) and ``--mobilenet DIR`` (default
results/cifar10/networks) are folders with ``original/`` and ``reduced/`` saved networks
(``--combustion-reduced DIR``: the reduced surrogate from elsewhere); a pair that is not there
is skipped, with the reason in the json. Writes to ``--out`` (default
results/benchmarks) one json per section, each with command, commit, machine, date, wall time:

- inference.json: seconds per sample of the jit-compiled forward pass of each pair at batch 1,
  256 and 4096 (MobileNetV2: 1, 256 and 1024; at 4096 images one activation tensor alone takes
  400 MB), on random inputs; the measured speed-up next to the ideal one (the FLOP ratio).
- cantera.json: the same states (along H2/air ignitions) advanced one dt by a fresh Cantera
  reactor per state, as a CFD code calls the chemistry per cell, and, per sample in one batch,
  by each surrogate's ``step`` (network + element/enthalpy projections) and by its network
  alone; then along one ignition a running Cantera reactor (``ReactorNet.advance`` per dt)
  against the surrogates' compiled ``rollout``, per step and sample, at batch 1 and a batch.
- condense.json: one pass of ``condensation.reduce_network`` on the paper-size MLP
  22-3200-1600-800-400-22 made redundant (hidden neurons are noisy copies of 40 % as many
  prototypes), on the published combustion FCN and on a freshly initialized MobileNetV2.
- training.json: ``train_step`` throughput (samples/s) of each model on a fixed random batch
  (a fresh MobileNetV2 when no pair is given) and its GFLOP/s (XLA's FLOPs of the whole step:
  forward, backward, optimizer; also by the 3 x forward convention), against a 2048x2048 f32
  matmul timed in the same runs.
- malloc.json: MobileNetV2's training loop (host batches, on-device augmentation, as
  experiments.run trains) in child processes under the system malloc and under each faster one
  installed (mimalloc; a preloaded tcmalloc with ``--tcmalloc PATH``), and, under the system
  malloc and the default one, with the 1x1 convolutions computed as ``nn.Conv`` does (their
  form before ``Conv1x1``), taking turns: steps/s, minor page faults per step, the system share
  of the CPU time, whether the trained parameters are bit-identical across allocators, and each
  form's loss gradient against float64 (:func:`gradient_agreement`).
- discover.json: ``condensation.discover`` (``jax.make_jaxpr`` of the forward pass and the
  coupling analysis) of MobileNetV2 and of the residual CNN (the registered architectures' specs
  are discovered; tests/test_discover.py checks them against the specs once written by hand).
- README.md: the tables, generated from the json files present.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import yaml
from tqdm.auto import tqdm

from condensation.archs import architecture
from condensation.combustion import Surrogate, load_surrogate
from condensation.combustion.chem import cantera_trajectory, initial_mass_fractions, step_cantera
from condensation.combustion.data import features
from condensation.files import atomic_write_text, write_json
from condensation.network import (
    Network,
    abstract_variables,
    build_network,
    count_flops,
    count_params,
    input_shape_of,
    reduce_network,
)
from condensation.provenance import allocator, git_commit, machine
from condensation.saved import load_network
from condensation.tasks.cifar10 import make_augment
from condensation.train import (
    OptimConfig,
    create_train_state,
    loss_fn,
    make_optimizer,
    train_epoch,
    train_step,
)
from experiments.fastmalloc import MIMALLOC, TCMALLOC, fast_malloc, preload_env

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("inference", "cantera", "condense", "training", "malloc", "discover")
PAIR = ("original", "reduced")
CIFAR_SHAPE = (32, 32, 3)
ONE_ATM = 101325.0
BATCHES = {"mlp": (1, 256, 4096), "mobilenetv2": (1, 256, 1024)}
TRAIN = {  # batch size, optimizer and loss of each architecture's published training
    "mlp": (512, OptimConfig(optimizer="adam", lr=1e-3), "l1"),
    "mobilenetv2": (128, OptimConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4),
                    "cross_entropy"),
}
MATMUL = 2048
CONV1X1 = ("dot", "convolution")  # MobileNetV2's 1x1 convolutions: Conv1x1, or as nn.Conv
BEFORE = "system, 1x1 as convolution"  # the malloc section's yardstick path
PAPER_WIDTHS = (3200, 1600, 800, 400)


@dataclass(frozen=True)
class Budget:
    repeats: int        # warm runs per function; the median is reported
    run_s: float        # a warm run repeats its call until it lasts about this long
    train_run_s: float
    n_states: int       # states advanced by Cantera and the surrogates (the surrogates' batch)
    rollout_steps: int
    rollout_batch: int
    malloc_steps: int   # training steps per timed epoch of the malloc section
    malloc_repeats: int  # child processes per allocator, the allocators taking turns


FULL = Budget(repeats=7, run_s=0.3, train_run_s=2.0, n_states=4096, rollout_steps=200, rollout_batch=64,
              malloc_steps=60, malloc_repeats=3)
QUICK = Budget(repeats=2, run_s=0.0, train_run_s=0.0, n_states=16, rollout_steps=5, rollout_batch=4,
               malloc_steps=2, malloc_repeats=1)


# ---- timing ------------------------------------------------------------------------------------

def sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def _seconds(fn: Callable[[], Any], calls: int = 1) -> tuple[float, Any]:
    t = time.perf_counter()
    for _ in range(calls):
        out = jax.block_until_ready(fn())
    return (time.perf_counter() - t) / calls, out


def bench(fns: dict[str, Callable[[], Any]], budget: Budget, desc: str,
          run_s: float | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Seconds per call of each ``fn()`` (its result blocked on), and each one's last result.

    The first call (compilation) is timed apart; then ``budget.repeats`` warm runs per function,
    each of n back-to-back calls (n set so that a run lasts about ``run_s``), the functions taking
    turns run by run. ``median_s`` is the median of the runs.
    """
    run_s = budget.run_s if run_s is None else run_s
    first = {name: _seconds(fn)[0] for name, fn in fns.items()}
    calls = {name: max(1, round(run_s / _seconds(fn)[0])) if run_s else 1 for name, fn in fns.items()}
    runs: dict[str, list[float]] = {name: [] for name in fns}
    outputs = {}
    for _ in tqdm(range(budget.repeats), desc=desc, leave=False):
        for name, fn in fns.items():
            seconds, outputs[name] = _seconds(fn, calls[name])
            runs[name].append(seconds)
    return {name: {"first_call_s": sig(first[name]), "median_s": sig(statistics.median(runs[name])),
                   "runs_s": [sig(r) for r in runs[name]], "calls_per_run": calls[name]}
            for name in fns}, outputs


# ---- networks ----------------------------------------------------------------------------------

def rel(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def pair_dirs(folder: Path, reduced: Path | None = None) -> dict[str, Path]:
    """The original's and the reduced network's folders: ``folder/original`` and
    ``folder/reduced``, or ``reduced`` when given (a reduction published apart)."""
    return {"original": folder / "original", "reduced": reduced or folder / "reduced"}


def missing(folder: Path, reduced: Path | None = None) -> str | None:
    """Why ``folder`` holds no original/reduced pair, or None when it does."""
    for path in pair_dirs(folder, reduced).values():
        if not (path / "network.json").is_file():
            return f"{rel(path)} is not there (not published yet, or give its folder)"
    return None


def load_pair(folder: Path, reduced: Path | None = None) -> dict[str, Any]:
    """{'original': (net, variables), 'reduced': (net, variables)}, or {'skipped': why}."""
    why = missing(folder, reduced)
    if why:
        return {"skipped": why}
    return {which: load_network(path)[:2] for which, path in pair_dirs(folder, reduced).items()}


def describe(net: Network, variables) -> dict[str, Any]:
    return {"arch": net.arch, "widths": list(net.widths), "params": count_params(variables),
            "flops_per_sample": count_flops(net, input_shape_of(net, variables))}


def forward(net: Network, variables, x: jax.Array) -> Callable[[], jax.Array]:
    """The jit-compiled forward pass on ``x`` [B, ...], variables already on the device."""
    apply, variables = jax.jit(net.module().apply), jax.device_put(variables)
    return lambda: apply(variables, x)


@functools.cache
def fresh_mobilenetv2() -> tuple[Network, Any]:
    """MobileNetV2 as conf/model/mobilenetv2.yaml builds it for CIFAR-10, freshly initialized."""
    cfg = yaml.safe_load((ROOT / "conf/model/mobilenetv2.yaml").read_text())
    net = build_network(cfg, 10)
    init = jax.jit(net.module().init)  # eager init takes twice as long
    return net, init(jax.random.key(0), jnp.zeros((1, *CIFAR_SHAPE)))


def redundant_mlp(dim=22, fraction=0.4, noise=1e-3, seed=0) -> tuple[Network, Any]:
    """The paper-size GELU MLP dim-3200-1600-800-400-dim whose hidden neurons are noisy copies
    of ``fraction`` x width prototypes, so that a pass at 0.95 really merges (to about that
    fraction of the neurons)."""
    rng, widths = np.random.default_rng(seed), PAPER_WIDTHS
    net = Network("mlp", widths, {"out_dim": dim, "activation": "gelu", "gamma": 0.5})
    params = jax.tree.map(np.array, net.module().init(jax.random.key(seed), jnp.ones((1, dim)))["params"])
    for i, w in enumerate(widths):
        layer = params[f"Dense_{i}"]
        protos = rng.integers(0, max(1, int(fraction * w)), w)
        layer["kernel"] = layer["kernel"][:, protos] * (1 + noise * rng.standard_normal((1, w)))
        layer["kernel"] += noise * rng.standard_normal(layer["kernel"].shape) * np.abs(layer["kernel"]).mean()
        layer["bias"] = layer["bias"][protos]
    return net, {"params": jax.tree.map(jnp.asarray, params)}


# ---- sections ----------------------------------------------------------------------------------

def inference(args, budget: Budget) -> dict[str, Any]:
    out = {}
    for name, folder, reduced in (("combustion_fcn", args.combustion, args.combustion_reduced),
                                  ("mobilenetv2", args.mobilenet, None)):
        pair = load_pair(folder, reduced)
        out[name] = pair if "skipped" in pair else {"folder": rel(folder), **inference_pair(pair, budget)}
    return out


def inference_pair(pair: dict[str, Any], budget: Budget) -> dict[str, Any]:
    info = {which: describe(*pair[which]) for which in PAIR}
    ideal = info["original"]["flops_per_sample"] / info["reduced"]["flops_per_sample"]
    net, variables = pair["original"]
    rows = []
    for batch in BATCHES[net.arch]:
        x = jax.random.normal(jax.random.key(batch), (batch, *input_shape_of(net, variables)))
        t, _ = bench({which: forward(*pair[which], x) for which in PAIR}, budget,
                     f"inference {net.arch} batch {batch}")
        for which in PAIR:
            t[which]["per_sample_s"] = sig(t[which]["median_s"] / batch)
        speedup = t["original"]["median_s"] / t["reduced"]["median_s"]
        rows.append({"batch": batch, **t, "speedup": sig(speedup),
                     "speedup_over_ideal": sig(speedup / ideal)})
    return {**info, "ideal_speedup": sig(ideal), "batches": rows}


def ignition_states(mech: str, dt: float, n: int, seed: int = 0, ignitions: int = 12, steps: int = 400):
    """n distinct states (T [n] K, P [n] Pa, Y [n, ns]) drawn from ``ignitions`` H2/air ignitions
    of ``steps`` dt, their T0, P and phi uniform in the training ranges (1000-1400 K, 0.5-2 atm,
    0.5-2)."""
    rng = np.random.default_rng(seed)
    T, P, Y = [], [], []
    for T0, p, phi in zip(rng.uniform(1000, 1400, ignitions), rng.uniform(0.5, 2, ignitions) * ONE_ATM,
                          rng.uniform(0.5, 2, ignitions), strict=True):
        _, Ti, Yi = cantera_trajectory(mech, T0, p, phi, dt, steps)
        T.append(Ti)
        P.append(np.full(len(Ti), p))
        Y.append(Yi)
    T, P, Y = (np.concatenate(a) for a in (T, P, Y))
    pick = rng.choice(len(T), n, replace=False)
    return T[pick], P[pick], Y[pick]


def cantera_steps(mech: str, T, P, Y, dt: float) -> np.ndarray:
    """A fresh Cantera reactor per state, advanced by dt; returns T(t + dt) [n]."""
    return np.array([step_cantera(mech, T[i], P[i], Y[i], dt)[0] for i in range(len(T))])


def cantera(args, budget: Budget) -> dict[str, Any]:
    why = missing(args.combustion, args.combustion_reduced)
    if why:
        return {"skipped": why}
    dirs = pair_dirs(args.combustion, args.combustion_reduced)
    s = {which: load_surrogate(path) for which, path in dirs.items()}
    return {"folder": rel(args.combustion), "reduced_folder": rel(dirs["reduced"]),
            "mechanism": s["reduced"].mechanism_name, "dt": s["reduced"].dt,
            "one_step": one_step(s, budget), "trajectory": trajectory(s, budget)}


def one_step(s: dict[str, Surrogate], budget: Budget) -> dict[str, Any]:
    mech, dt, n = s["reduced"].mechanism_name, s["reduced"].dt, budget.n_states
    T, P, Y = ignition_states(mech, dt, n)
    states = jax.device_put(tuple(np.asarray(a, np.float32) for a in (T, P, Y)))
    fns = {"cantera_cold": lambda: cantera_steps(mech, T, P, Y, dt)}
    what = {"cantera_cold": "Cantera, a fresh reactor per state"}
    for which, sur in s.items():
        fns[f"step_{which}"] = lambda sur=sur: sur.step(*states)
        fns[f"network_{which}"] = forward(sur.net, sur.variables,
                                          sur.x_norm.apply(features(*states, sur.active_index)))
        what |= {f"step_{which}": f"{which} surrogate step (network + projections)",
                 f"network_{which}": f"{which} network only"}
    fns |= onnx_steps(s, (T, P, Y), what)
    t, out = bench(fns, budget, f"one step, {n} states")
    t = {name: {"what": what[name], **row, "per_sample_s": sig(row["median_s"] / n),
                "speedup_vs_cantera": sig(t["cantera_cold"]["median_s"] / row["median_s"])}
         for name, row in t.items()}
    for key in [f"step_{w}" for w in PAIR] + [f"onnx_{w}" for w in PAIR if f"onnx_{w}" in t]:
        T_next = np.asarray(out[key][0], np.float64)
        t[key]["T_mae_vs_cantera_K"] = sig(float(np.abs(T_next - out["cantera_cold"]).mean()))
    return {"n_states": n, "batch": n, "states": "drawn without replacement from 12 Cantera H2/air "
            "ignitions of 400 dt (T0 1000-1400 K, 0.5-2 atm, phi 0.5-2)", "timings": t}


def onnx_steps(s: dict[str, Surrogate], states, what: dict) -> dict:
    """The same steps exported to ONNX and run by onnxruntime (when the export extra is
    installed): what a C++ solver would call."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return {}
    import tempfile

    from condensation.combustion.export import export_onnx, load_onnx
    fns = {}
    T, P, Y = (np.asarray(a, np.float32) for a in states)
    with tempfile.TemporaryDirectory() as tmp:
        for which, sur in s.items():
            step = load_onnx(export_onnx(sur, Path(tmp) / f"{which}.onnx"))
            fns[f"onnx_{which}"] = lambda step=step: step(T, P, Y)
            what[f"onnx_{which}"] = f"{which} surrogate step exported to ONNX, onnxruntime (CPU)"
    return fns


def trajectory(s: dict[str, Surrogate], budget: Budget, T0=1200.0, P=ONE_ATM, phi=1.0) -> dict[str, Any]:
    mech, dt, n = s["reduced"].mechanism_name, s["reduced"].dt, budget.rollout_steps
    Y0 = initial_mass_fractions(mech, phi)
    fns = {"cantera_reactor": lambda: cantera_trajectory(mech, T0, P, phi, dt, n)[1]}
    about = {"cantera_reactor": ("Cantera, one running reactor", 1)}
    for b in (1, budget.rollout_batch):
        start = jax.device_put((np.full(b, T0, np.float32), np.full(b, P, np.float32),
                                np.tile(Y0.astype(np.float32), (b, 1))))
        for which, sur in s.items():
            fns[f"rollout_{which}_batch{b}"] = lambda sur=sur, start=start: sur.rollout(*start, n)
            about[f"rollout_{which}_batch{b}"] = (f"{which} surrogate, compiled rollout", b)
    t, _ = bench(fns, budget, f"trajectory, {n} steps")
    reactor = t["cantera_reactor"]["median_s"]
    return {"T0_K": T0, "P_Pa": P, "phi": phi, "n_steps": n, "timings": {
        name: {"what": about[name][0], "batch": about[name][1], **row,
               "per_step_per_sample_s": sig(row["median_s"] / n / about[name][1]),
               "speedup_vs_cantera": sig(reactor * about[name][1] / row["median_s"])}
        for name, row in t.items()}}


def condense(args, budget: Budget) -> dict[str, Any]:
    cases = {"mlp_paper_redundant": (*redundant_mlp(), 0.95,
                                     "synthetic: hidden neurons are noisy copies of 40 % as many prototypes")}
    pair = load_pair(args.combustion, args.combustion_reduced)
    if "skipped" not in pair:
        cases["combustion_fcn"] = (*pair["original"], 0.95, f"{rel(args.combustion)}/original, the "
                                   "published run's first round threshold")
    cases["mobilenetv2_fresh"] = (*fresh_mobilenetv2(), 0.99, "freshly initialized (conf/model/"
                                  "mobilenetv2.yaml): merges little, times the pass only")
    out = {}
    for name, (net, variables, threshold, note) in cases.items():
        variables = jax.device_put(variables)
        run = lambda net=net, v=variables, th=threshold: reduce_network(
            net, v, threshold=th, activation=net.options["activation"], input_shape=input_shape_of(net, v))
        t, result = bench({"pass": run}, budget, f"condense {name}")
        new_net, new_vars = result["pass"]
        out[name] = {"what": note, "arch": net.arch, "threshold": threshold,
                     "widths_before": list(net.widths), "widths_after": list(new_net.widths),
                     "params_before": count_params(variables), "params_after": count_params(new_vars),
                     **t["pass"]}
    return out


def train_fn(net: Network, variables) -> tuple[Callable[[], jax.Array], int, float, dict[str, Any]]:
    """(one train_step per call on a fixed random batch, its state carried; batch size; XLA's
    FLOPs of one step; the setting)."""
    batch, opt, loss = TRAIN[net.arch]
    module, tx = net.module(), make_optimizer(opt, steps_per_epoch=1000, epochs=1)
    state = create_train_state(jax.device_put(variables), tx, jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (batch, *input_shape_of(net, variables)))
    out_dim = net.options[architecture(net.arch).output_arg]
    y = (jax.random.randint(jax.random.key(2), (batch,), 0, out_dim) if loss == "cross_entropy"
         else jax.random.normal(jax.random.key(2), (batch, out_dim)))
    cost = train_step.lower(state, (x, y), module=module, tx=tx, loss=loss).cost_analysis()
    flops = float((cost[0] if isinstance(cost, list | tuple) else cost)["flops"])

    def step():
        nonlocal state
        state, metrics = train_step(state, (x, y), module=module, tx=tx, loss=loss)
        return metrics["loss"]

    return step, batch, flops, {"optimizer": opt.optimizer, "loss": loss}


def training(args, budget: Budget) -> dict[str, Any]:
    models, notes = {}, {}
    combustion = load_pair(args.combustion, args.combustion_reduced)
    mobilenet = load_pair(args.mobilenet)
    for name, pair in (("combustion_fcn", combustion), ("mobilenetv2", mobilenet)):
        if "skipped" in pair:
            notes[name] = pair["skipped"]
        else:
            models |= {f"{name}_{which}": pair[which] for which in PAIR}
    if "skipped" in mobilenet:
        models["mobilenetv2_fresh"] = fresh_mobilenetv2()
        notes["mobilenetv2"] += "; mobilenetv2_fresh (conf/model/mobilenetv2.yaml) stands in"
    a, b = (jax.random.normal(jax.random.key(i), (MATMUL, MATMUL)) for i in (0, 1))
    matmul = jax.jit(jnp.matmul)
    fns, info = {"matmul": lambda: matmul(a, b)}, {}
    for name, (net, variables) in models.items():
        fns[name], batch, flops, setting = train_fn(net, variables)
        info[name] = {"arch": net.arch, "widths": list(net.widths), "batch": batch, **setting,
                      "step_flops": flops,
                      "forward_flops_x3": 3 * batch * count_flops(net, input_shape_of(net, variables))}
    t, _ = bench(fns, budget, "training", budget.train_run_s)
    peak = 2 * MATMUL**3 / t["matmul"]["median_s"] / 1e9
    rows = {}
    for name, row in info.items():
        seconds = t[name]["median_s"]
        gflops = row["step_flops"] / seconds / 1e9
        rows[name] = {**row, **t[name], "samples_per_s": sig(row["batch"] / seconds),
                      "gflops": sig(gflops), "fraction_of_matmul": sig(gflops / peak),
                      "gflops_forward_x3": sig(row["forward_flops_x3"] / seconds / 1e9)}
    return {"matmul": {"size": MATMUL, **t["matmul"], "gflops": sig(peak)}, "models": rows,
            "missing_pairs": notes}


# ---- malloc: the training loop's default path against the earlier ones -------------------

@contextlib.contextmanager
def conv1x1_as_convolution() -> Iterator[None]:
    """Inside: MobileNetV2 computes its 1x1 convolutions as ``nn.Conv`` does (their form before
    ``Conv1x1``, the same parameters), the earlier path of the malloc section."""
    import flax.linen as nn

    import condensation.archs.mobilenetv2 as mobilenetv2
    dot = mobilenetv2.Conv1x1
    mobilenetv2.Conv1x1 = lambda features, kernel_init, name: nn.Conv(
        features, (1, 1), use_bias=False, kernel_init=kernel_init, name=name)
    try:
        yield
    finally:
        mobilenetv2.Conv1x1 = dot


def conv1x1_form(conv1x1: str):
    if conv1x1 not in CONV1X1:
        raise ValueError(f"conv1x1 must be one of {CONV1X1}, got {conv1x1!r}")
    return conv1x1_as_convolution() if conv1x1 == "convolution" else contextlib.nullcontext()


def malloc_child(steps: int, conv1x1: str = "dot") -> dict[str, Any]:
    """MobileNetV2's training loop as experiments.run runs it (host batches of 128, on-device
    crop + flip, SGD) on random CIFAR-shaped images: one epoch of ``steps`` to compile, one
    timed. Runs in a child process, under whatever malloc it was started with; ``conv1x1``
    ``convolution``: the 1x1 convolutions as ``nn.Conv`` computes them."""
    with conv1x1_form(conv1x1):
        net, variables = fresh_mobilenetv2()
        batch, opt, loss = TRAIN["mobilenetv2"]
        tx = make_optimizer(opt, steps_per_epoch=steps, epochs=2)
        state = create_train_state(variables, tx, jax.random.key(1))
        rng = np.random.default_rng(0)
        data = (rng.normal(size=(batch * steps, *CIFAR_SHAPE)).astype(np.float32),
                rng.integers(0, 10, batch * steps).astype(np.int32))
        kw = {"module": net.module(), "tx": tx, "loss": loss, "batch_size": batch, "seed": 0,
              "augment": make_augment()}
        state, _ = train_epoch(state, data, epoch=0, **kw)
        r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        state, _ = train_epoch(state, data, epoch=1, **kw)
        seconds = time.perf_counter() - t
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(state.params):
        digest.update(np.asarray(leaf).tobytes())
    return {"allocator": allocator(), "conv1x1": conv1x1, "steps_per_s": steps / seconds,
            "minor_faults_per_step": (r1.ru_minflt - r0.ru_minflt) / steps,
            "system_cpu_share": (r1.ru_stime - r0.ru_stime)
            / max(r1.ru_stime - r0.ru_stime + r1.ru_utime - r0.ru_utime, 1e-9),
            "params_sha256": digest.hexdigest()}


def gradient_agreement() -> dict[str, float]:
    """MobileNetV2's loss gradient (train mode, fresh initialization, one batch of random
    images) by each 1x1 form in float32 against the same gradient in float64: relative
    differences over all parameters (Euclidean norms). Rounding, when each form is as far from
    float64 as the forms are from each other."""
    net, variables = fresh_mobilenetv2()
    batch, _, loss = TRAIN["mobilenetv2"]
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(batch, *CIFAR_SHAPE)), rng.integers(0, 10, batch)

    def gradient(dtype) -> list[np.ndarray]:
        v = jax.tree.map(lambda a: jnp.asarray(a, dtype), variables)

        def objective(params):
            out, _ = net.module().apply({**v, "params": params}, jnp.asarray(x, dtype), train=True,
                                        mutable=["batch_stats"])
            return loss_fn(loss, out, jnp.asarray(y)).mean()
        return [np.asarray(g, np.float64) for g in jax.tree.leaves(jax.jit(jax.grad(objective))(v["params"]))]

    def rel(a, b):
        return math.sqrt(sum(float(np.sum((u - w) ** 2)) for u, w in zip(a, b, strict=True))
                         / max(sum(float(np.sum(w ** 2)) for w in b), 1e-300))

    with jax.enable_x64(True):
        exact, dot = gradient(jnp.float64), gradient(jnp.float32)
        with conv1x1_as_convolution():
            conv = gradient(jnp.float32)
    return {"dot_vs_float64": sig(rel(dot, exact)), "convolution_vs_float64": sig(rel(conv, exact)),
            "dot_vs_convolution": sig(rel(dot, conv))}


def malloc(args, budget: Budget) -> dict[str, Any]:
    """The training loop under the system malloc and under every faster one installed (the
    command line preloads the first of them: ``default``), and under the system malloc and the
    default one with the 1x1 convolutions computed as convolutions (the earlier paths), taking
    turns, in child processes."""
    libs = {name: path for name, path in (("tcmalloc", args.tcmalloc), ("mimalloc", MIMALLOC))
            if path.is_file()}
    if not libs:
        return {"skipped": f"neither tcmalloc ({args.tcmalloc}: apt install libtcmalloc-minimal4) "
                           f"nor mimalloc ({MIMALLOC}: pip install cmeel-mimalloc) is installed"}
    default = fast_malloc()
    default_name = next((n for n, p in libs.items() if p == default), "system")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("MIMALLOC_")}
    envs = {"system": env, **{name: preload_env(p, env) for name, p in libs.items()}}
    if "mimalloc" in libs:  # what its options (experiments.fastmalloc.OPTIONS) are worth
        envs["mimalloc, its defaults"] = {**env, "LD_PRELOAD": str(libs["mimalloc"])}
    paths = {name: (e, "dot") for name, e in envs.items()}
    for name in dict.fromkeys(("system", default_name)):
        paths[f"{name}, 1x1 as convolution"] = (envs[name], "convolution")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    for _ in tqdm(range(budget.malloc_repeats), desc="malloc", leave=False):
        for name, (e, form) in paths.items():
            cmd = [sys.executable, str(Path(__file__).resolve()), "--malloc-child",
                   str(budget.malloc_steps), "--conv1x1", form]
            out = subprocess.run(cmd, env=e, capture_output=True, text=True, check=True).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
    rows = {name: {"allocator": rs[0]["allocator"], "conv1x1": rs[0]["conv1x1"],
                   **{k: sig(statistics.median(r[k] for r in rs))
                      for k in ("steps_per_s", "minor_faults_per_step", "system_cpu_share")},
                   "runs_steps_per_s": [sig(r["steps_per_s"]) for r in rs]} for name, rs in runs.items()}
    identical = {form: len({r["params_sha256"] for name, rs in runs.items() for r in rs
                            if paths[name][1] == form}) == 1 for form in CONV1X1}
    return {"setting": f"MobileNetV2 training loop (train_epoch, batch {TRAIN['mobilenetv2'][0]}, crop + "
                       f"flip on device), {budget.malloc_steps} timed steps per child process after "
                       "an epoch that compiles; the paths' processes take turns",
            "libraries": {name: str(p) for name, p in libs.items()}, "allocators": rows,
            "speedup": {name: sig(rows[name]["steps_per_s"] / rows["system"]["steps_per_s"])
                        for name in paths if name != "system"},
            "speedup_over_before": {name: sig(rows[name]["steps_per_s"] / rows[BEFORE]["steps_per_s"])
                                    for name in paths if name != BEFORE},
            "options": {name: {k: v for k, v in e.items() if k.startswith(("MIMALLOC_", "TCMALLOC_"))}
                        for name, (e, _) in paths.items()},
            "default": default_name,
            "params_identical": identical["dot"] and identical["convolution"],
            "params_identical_per_form": identical,
            "gradient_agreement": gradient_agreement()}


def discover(args, budget: Budget) -> dict[str, Any]:
    """``condensation.discover`` (trace + coupling analysis) of MobileNetV2 as conf/model builds
    it, and of the residual CNN."""
    from condensation.graph import discover as find

    cfg = yaml.safe_load((ROOT / "conf/model/mobilenetv2.yaml").read_text())
    cases = {"mobilenetv2": build_network(cfg, 10),
             "residual_cnn": Network("residual_cnn", (16, 32, 32, 32), {"num_classes": 10})}
    out = {}
    for name, net in cases.items():
        module = net.module()
        variables = abstract_variables(net, CIFAR_SHAPE)
        x = jax.ShapeDtypeStruct((1, *CIFAR_SHAPE), jnp.float32)
        t, result = bench({"discover": lambda m=module, v=variables, x=x: find(
            lambda v, x: m.apply(v, x), v, x)}, budget, f"discover {name}", run_s=0)
        found = result["discover"]
        out[name] = {"groups": len(found.spec), "left_alone": len(found.stopped),
                     "params": count_params(variables), **t["discover"]}
    return out


RUN = {"inference": inference, "cantera": cantera, "condense": condense, "training": training,
       "malloc": malloc, "discover": discover}


# ---- README ------------------------------------------------------------------------------------

def fmt_s(s: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows), ""]


def inference_md(d: dict[str, Any]) -> list[str]:
    lines = []
    for name in ("combustion_fcn", "mobilenetv2"):
        pair = d[name]
        if "skipped" in pair:
            lines += [f"**{name}**: skipped, {pair['skipped']}.", ""]
            continue
        o, r = pair["original"], pair["reduced"]
        lines += [f"**{name}** ({pair['folder']}): {o['params']:,} -> {r['params']:,} parameters, "
                  f"{o['flops_per_sample'] / 1e6:.3g} -> {r['flops_per_sample'] / 1e6:.3g} MFLOP per sample: "
                  f"ideal speed-up {pair['ideal_speedup']:.3g}x.", ""]
        lines += table(["batch", "original / sample", "reduced / sample", "speed-up", "of ideal"],
                       [[b["batch"], fmt_s(b["original"]["per_sample_s"]),
                         fmt_s(b["reduced"]["per_sample_s"]), f"{b['speedup']:.3g}x",
                         f"{b['speedup_over_ideal']:.0%}"] for b in pair["batches"]])
    return lines


def cantera_md(d: dict[str, Any]) -> list[str]:
    if "skipped" in d:
        return [f"Skipped: {d['skipped']}.", ""]
    one, traj = d["one_step"], d["trajectory"]
    lines = [f"One dt ({d['dt']:g} s, {d['mechanism']}) on the same {one['n_states']} states, the "
             f"surrogates at batch {one['batch']}:", ""]
    lines += table(["", "per sample", "vs Cantera", "T MAE vs Cantera"],
                   [[r["what"], fmt_s(r["per_sample_s"]), f"{r['speedup_vs_cantera']:.3g}x",
                     f"{r['T_mae_vs_cantera_K']:.3g} K" if "T_mae_vs_cantera_K" in r else ""]
                    for r in one["timings"].values()])
    lines += [f"Along one ignition (T0 {traj['T0_K']:g} K, {traj['P_Pa']:g} Pa, phi {traj['phi']:g}), "
              f"{traj['n_steps']} steps:", ""]
    return lines + table(["", "batch", "per step and sample", "vs Cantera"],
                         [[r["what"], r["batch"], fmt_s(r["per_step_per_sample_s"]),
                           f"{r['speedup_vs_cantera']:.3g}x"] for r in traj["timings"].values()])


def condense_md(d: dict[str, Any]) -> list[str]:
    cases = {k: v for k, v in d.items() if isinstance(v, dict)}
    return table(["network", "threshold", "params before -> after", "first call", "warm (median)"],
                 [[f"{k} ({v['what']})", v["threshold"], f"{v['params_before']:,} -> {v['params_after']:,}",
                   fmt_s(v["first_call_s"]), fmt_s(v["median_s"])] for k, v in cases.items()])


def training_md(d: dict[str, Any]) -> list[str]:
    m = d["matmul"]
    lines = table(["model", "batch", "optimizer", "samples/s", "GFLOP/s (XLA step)", "of matmul"],
                  [[k, v["batch"], v["optimizer"], f"{v['samples_per_s']:,.0f}", f"{v['gflops']:.3g}",
                    f"{v['fraction_of_matmul']:.0%}"] for k, v in d["models"].items()])
    lines += [f"Reference: a {m['size']}x{m['size']} f32 matmul at {m['gflops']:.3g} GFLOP/s, timed in "
              "the same runs.", ""]
    return lines + [f"{k} pair: {why}." for k, why in d["missing_pairs"].items()] + [""]


def malloc_md(d: dict[str, Any]) -> list[str]:
    if "skipped" in d:
        return [f"Skipped: {d['skipped']}.", ""]
    lines = [f"{d['setting']}:", ""]
    lines += table(["path", "steps/s", f"vs {BEFORE}",
                    "minor page faults / step", "system CPU share"],
                   [[name + (" (the default)" if name == d["default"] else ""),
                     f"{r['steps_per_s']:.2f}",
                     f"{d['speedup_over_before'].get(name, 1.0):.3g}x",
                     f"{r['minor_faults_per_step']:,.0f}", f"{r['system_cpu_share']:.0%}"]
                    for name, r in d["allocators"].items()])

    def options(name):
        return " ".join(f"{k}={v}" for k, v in d.get("options", {}).get(name, {}).items()) or "no options"

    libs = [n for n in d["allocators"] if n != "system" and "1x1" not in n]
    fast = "; ".join(f"{name}: {options(name)}" for name in libs)
    out = [f"The allocators' options: {fast}. `python -m experiments.run` preloads {d['default']} here."]
    same, g = d["params_identical_per_form"], d["gradient_agreement"]
    out.append(
        "MobileNetV2 computes its 1x1 convolutions as matrix products (`Conv1x1`); \"1x1 as "
        "convolution\" is the `nn.Conv` form it had before (same parameters). The trained "
        f"parameters are {'bit-identical' if same['dot'] else 'NOT identical'} across the "
        f"allocators with either form ({'bit-identical' if same['convolution'] else 'NOT identical'}"
        " among the convolution-form processes). The two forms agree to float rounding: their "
        "loss gradients (fresh network, one batch) differ from the float64 gradient by "
        f"{g['dot_vs_float64']:.2g} (matrix products) and {g['convolution_vs_float64']:.2g} "
        f"(convolutions) of its norm, and from each other by {g['dot_vs_convolution']:.2g}.")
    return lines + [" ".join(out), ""]


def discover_md(d: dict[str, Any]) -> list[str]:
    cases = {k: v for k, v in d.items() if isinstance(v, dict)}
    return table(["network", "parameters", "unit groups (left alone)", "first call",
                  "warm (median)"],
                 [[k, f"{v['params']:,}", f"{v['groups']} ({v['left_alone']})",
                   fmt_s(v["first_call_s"]), fmt_s(v["median_s"])] for k, v in cases.items()])


MARKDOWN = {"inference": inference_md, "cantera": cantera_md, "condense": condense_md,
            "training": training_md, "malloc": malloc_md, "discover": discover_md}
TITLES = {"inference": "Inference: original against reduced", "condense": "One condensation pass",
          "cantera": "Combustion: surrogate against Cantera", "training": "Training throughput",
          "malloc": "Training loop: the default path against the earlier ones (malloc, 1x1 convolutions)",
          "discover": "Discovering the coupling of a model from its trace"}


def short_commit(commit: str) -> str:
    """The first 10 digits, keeping a ``-dirty`` mark (the tree had uncommitted changes)."""
    return commit[:10] + ("-dirty" if commit.endswith("-dirty") else "")


def render(out: Path) -> str:
    lines = ["# Benchmarks", "", "Generated by `scripts/benchmark.py` from the json files in this folder. "
             "Times are medians of warm runs (compilation excluded).", ""]
    for section in SECTIONS:
        path = out / f"{section}.json"
        if not path.is_file():
            continue
        d = json.loads(path.read_text())
        lines += [f"## {TITLES[section]}", "",
                  f"`{d['command']}`{' (quick: not figures)' if d['quick'] else ''}: {d['wall_s']:.0f} s, "
                  f"{d['date']}, commit {short_commit(d['commit'])}, {d['machine']}.", "",
                  *MARKDOWN[section](d)]
    return "\n".join(lines).rstrip() + "\n"


# ---- main --------------------------------------------------------------------------------------

def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: 2 repeats, 16 states, 5 rollout steps")
    ap.add_argument("--out", type=Path, default=ROOT / "results/benchmarks")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--combustion", type=Path, default=ROOT / "results/combustion/surrogate")
    ap.add_argument("--combustion-reduced", type=Path, default=None,
                    help="the reduced combustion surrogate's folder, when not <--combustion>/reduced")
    ap.add_argument("--mobilenet", type=Path, default=ROOT / "results/cifar10/networks")
    ap.add_argument("--tcmalloc", type=Path, default=TCMALLOC, help=f"the library (default {TCMALLOC})")
    ap.add_argument("--malloc-child", type=int, metavar="STEPS", help=argparse.SUPPRESS)
    ap.add_argument("--conv1x1", choices=CONV1X1, default="dot", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.malloc_child:  # one process of the malloc section: its result as the last line
        print(json.dumps(malloc_child(args.malloc_child, args.conv1x1)))
        return
    budget = QUICK if args.quick else FULL
    commit = git_commit()  # before the first json written here changes the tree
    for section in args.only:
        start = time.perf_counter()
        result = RUN[section](args, budget)
        write_json(args.out / f"{section}.json", {
            "command": " ".join(["python scripts/benchmark.py", *argv]), "commit": commit,
            "machine": machine(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "wall_s": round(time.perf_counter() - start, 1), "quick": args.quick,
            "timing": "seconds per call: median of warm runs, the functions compared taking turns; "
                      "first_call_s includes compilation", **result})
        print(f"{section}: {time.perf_counter() - start:.0f} s -> {rel(args.out / f'{section}.json')}")
    atomic_write_text(args.out / "README.md", render(args.out))


if __name__ == "__main__":
    main()
