"""The combustion task: one-step surrogate training data, a-priori and a-posteriori evaluation.

A priori: one dt from held-out states, error of T [K] and of each mass fraction against Cantera.
A posteriori: from held-out initial conditions, iterate the network (with element and
enthalpy conservation) and compare with Cantera's integration: ignition delay (time of max
dT/dt), whether it ignites at all, the temperature history and the final temperature. The
validation conditions' rollout error chooses the checkpoint (``task.selection``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from condensation.combustion import chem
from condensation.combustion.data import (
    KIND_TRAJECTORY,
    CombustionData,
    CombustionDataConfig,
    Normalizer,
    apply_labels,
    features,
    generate,
)
from condensation.combustion.surrogate import (
    Surrogate,
    make_surrogate,
    surrogate_metadata,
    training_envelope,
)
from condensation.tasks.base import Task, register

logger = logging.getLogger(__name__)

ROLLOUT_DEFAULTS = {"n_val": 10, "n_test": 12, "horizon_factor": 2.0, "extra_steps": 300,
                    "max_steps": 12000, "batch_size": 8192}


@dataclasses.dataclass
class Reference:
    """Cantera trajectories of some initial conditions, padded to a common length."""

    T0: np.ndarray      # [C] K
    P: np.ndarray       # [C] Pa
    phi: np.ndarray     # [C]
    Y0: np.ndarray      # [C, ns]
    T: np.ndarray       # [C, n+1] K
    steps: np.ndarray   # [C] the horizon of each condition (<= n)
    tau: np.ndarray     # [C] s
    tau_interp: np.ndarray  # [C] s, between samples (chem.ignition_delay(interpolate=True))


def cantera_reference(dcfg: CombustionDataConfig, split, n: int, rollout: dict) -> Reference:
    idx = np.arange(min(n, len(split.T0)))
    T0, P, phi = split.T0[idx], split.P0[idx], split.phi[idx]
    steps = np.minimum(
        np.ceil(split.tau_ign[idx] * rollout["horizon_factor"] / dcfg.dt) + rollout["extra_steps"],
        rollout["max_steps"]).astype(int)
    n_max = int(steps.max())
    Ts, Y0s = [], []
    for c in idx:
        _, T, Y = chem.cantera_trajectory(dcfg.mechanism, T0[c], P[c], phi[c], dcfg.dt, n_max,
                                          dcfg.fuel, dcfg.oxidizer)
        Ts.append(T)
        Y0s.append(Y[0])
    T = np.stack(Ts)
    t = np.arange(n_max + 1) * dcfg.dt
    tau, tau_interp = (np.array([chem.ignition_delay(t[:s + 1], T[c, :s + 1], interpolate=i)
                                 for c, s in enumerate(steps)]) for i in (False, True))
    return Reference(T0, P, phi, np.stack(Y0s), T, steps, tau, tau_interp)


def rollout_errors(surrogate: Surrogate, ref: Reference) -> dict[str, Any]:
    """Iterate the surrogate from ``ref``'s initial states; compare with Cantera."""
    n_max = int(ref.steps.max())
    T_net, _ = surrogate.rollout(ref.T0, ref.P, ref.Y0, n_max)
    T_net = np.asarray(T_net, np.float64)
    t = np.arange(n_max + 1) * surrogate.dt
    per = []
    for c, s in enumerate(ref.steps):
        Tn, Tc = T_net[c, :s + 1], ref.T[c, :s + 1]
        rise = Tc[-1] - Tc[0]
        finite = bool(np.all(np.isfinite(Tn)))
        ignited = finite and (Tn.max() - Tn[0]) >= 0.5 * rise
        tau, tau_i = ((float(chem.ignition_delay(t[:s + 1], Tn, interpolate=i)) if finite
                       else float("nan")) for i in (False, True))
        per.append({
            "T0": float(ref.T0[c]), "P": float(ref.P[c]), "phi": float(ref.phi[c]),
            "tau_cantera": float(ref.tau[c]), "tau_net": tau, "ignited": bool(ignited),
            "tau_rel_error": abs(tau - ref.tau[c]) / ref.tau[c] if ignited else float("nan"),
            # the same between samples (the peak of dT/dt interpolated, for both)
            "tau_cantera_interp": float(ref.tau_interp[c]), "tau_net_interp": tau_i,
            "tau_interp_rel_error": (abs(tau_i - ref.tau_interp[c]) / ref.tau_interp[c]
                                     if ignited else float("nan")),
            "T_mae_K": float(np.abs(Tn - Tc).mean()) if finite else float("inf"),
            "T_final_error_K": float(abs(Tn[-1] - Tc[-1])) if finite else float("inf"),
        })
    err = np.array([p["tau_rel_error"] for p in per])
    err_i = np.array([p["tau_interp_rel_error"] for p in per])
    ok = np.array([p["ignited"] for p in per])
    return {
        "n_conditions": len(per),
        "all_ignited": bool(ok.all()),
        "n_not_ignited": int((~ok).sum()),
        "ignition_delay_rel_error_mean": float(np.nanmean(err)) if ok.any() else float("nan"),
        "ignition_delay_rel_error_max": float(np.nanmax(err)) if ok.any() else float("nan"),
        "ignition_delay_interp_rel_error_mean": float(np.nanmean(err_i)) if ok.any() else float("nan"),
        "ignition_delay_interp_rel_error_max": float(np.nanmax(err_i)) if ok.any() else float("nan"),
        "T_mae_K_mean": float(np.mean([p["T_mae_K"] for p in per])),
        "T_final_error_K_mean": float(np.mean([p["T_final_error_K"] for p in per])),
        "T_final_error_K_max": float(np.max([p["T_final_error_K"] for p in per])),
        "conditions": per,
    }


def rollout_score(errors: dict[str, Any]) -> float:
    """One number to minimise: ignition-delay error, temperature error, and failures."""
    if not errors["all_ignited"] or not np.isfinite(errors["ignition_delay_rel_error_mean"]):
        return 10.0 + errors["n_not_ignited"] + min(errors["T_mae_K_mean"], 1e4) / 1000
    return errors["ignition_delay_rel_error_mean"] + errors["T_mae_K_mean"] / 1000


def a_priori_errors(surrogate: Surrogate, split, batch_size: int) -> dict[str, Any]:
    """One dt from every held-out state (no conservation projection): MAE in physical units."""
    dT, dY = [], []
    for start in range(0, len(split.T), batch_size):
        sl = slice(start, start + batch_size)
        T, P, Y = (jnp.asarray(a, jnp.float32) for a in (split.T[sl], split.P[sl], split.Y[sl]))
        x = surrogate.x_norm.apply(features(T, P, Y, surrogate.active_index))
        rates = surrogate.y_norm.invert(surrogate.net.module().apply(surrogate.variables, x))
        T1, Y1 = apply_labels(T, Y, rates, surrogate.active_index, surrogate.dt)
        dT.append(np.abs(np.asarray(T1, np.float64) - split.T_next[sl]))
        dY.append(np.abs(np.asarray(Y1, np.float64) - split.Y_next[sl]))
    dT, dY = np.concatenate(dT), np.concatenate(dY)
    return {"T_mae_K": float(dT.mean()),
            "Y_mae": dict(zip(surrogate.species, map(float, dY.mean(axis=0)), strict=True))}


@register("combustion")
def combustion_task(cfg: dict[str, Any], seed: int, workdir: Path) -> Task:
    cfg = dict(cfg)
    rollout = {**ROLLOUT_DEFAULTS, **(cfg.pop("rollout", None) or {})}
    cache_dir = Path(cfg.pop("cache_dir", ".cache/condensation"))
    heldout, saved_norm = cfg.pop("heldout", None), cfg.pop("normalizers", None)
    cfg.pop("name", None)
    dcfg = CombustionDataConfig.from_dict(cfg)
    if heldout is None:
        data = generate(dcfg, cache_dir)
        x_norm, y_norm = data.normalizers()
        names = ("train", "val", "test")
    else:   # evaluation of a published network: its held-out splits, its own normalization
        data = CombustionData.load(heldout)
        same = [{k: v for k, v in json.loads(json.dumps(c)).items() if k != "workers"}
                for c in (data.config, dataclasses.asdict(dcfg))]
        if same[0] != same[1]:
            raise ValueError(f"{heldout} holds the held-out data of another data config than "
                             "the run's config.yaml")
        x_norm = Normalizer.from_dict({"mean": saved_norm["x_mean"], "std": saved_norm["x_std"]})
        y_norm = Normalizer.from_dict({"mean": saved_norm["y_mean"], "std": saved_norm["y_std"]})
        names = ("val", "test")
    splits = {s: data.xy(s) for s in names}
    if heldout is not None:
        splits["train"] = tuple(np.zeros((0, v.shape[1]), np.float32) for v in splits["test"])
    norm = {s: (x_norm.apply(x).astype(np.float32), y_norm.apply(y).astype(np.float32))
            for s, (x, y) in splits.items()}
    if heldout is None:
        train = data["train"]
        envelope = training_envelope(chem.Mechanism.load(dcfg.mechanism), train.T, train.P,
                                     train.Y, along=train.kind == KIND_TRAJECTORY)
    else:
        envelope = saved_norm.get("envelope")
    meta = surrogate_metadata(dcfg.mechanism, data.species, data.active_index, dcfg.dt,
                              x_norm, y_norm, fuel=dcfg.fuel, oxidizer=dcfg.oxidizer,
                              envelope=envelope)
    refs: dict[str, Reference] = {}
    surrogates: dict[tuple, Surrogate] = {}

    def surrogate(net, variables) -> Surrogate:
        key = (net.arch, net.widths)
        if key not in surrogates:
            surrogates[key] = make_surrogate(net, variables, meta)
        return surrogates[key].with_variables(jax.tree.map(jnp.asarray, variables))

    def reference(split: str) -> Reference:
        if split not in refs:
            n = rollout["n_val"] if split == "val" else rollout["n_test"]
            refs[split] = cantera_reference(dcfg, data[split], n, rollout)
        return refs[split]

    def extra_eval(net, variables, split: str = "test") -> dict[str, Any]:
        s = surrogate(net, variables)
        return {"a_priori": a_priori_errors(s, data[split], rollout["batch_size"]),
                "a_posteriori": rollout_errors(s, reference(split))}

    def selection(net, variables) -> float:
        return rollout_score(rollout_errors(surrogate(net, variables), reference("val")))

    n_active = len(data.active_index)
    return Task(
        name="combustion", input_shape=(2 + n_active,), output_dim=1 + n_active,
        train=norm["train"], val=norm["val"], test=norm["test"], loss="l1", metric="loss",
        log_metric=True, extra_eval=extra_eval,
        selection=selection if rollout["n_val"] > 0 else None,
        finalize=lambda workdir, original, reduced: finalize(workdir, original, reduced,
                                                             surrogate, reference, data, norm, meta),
        info={"surrogate": meta, "n_train": len(norm["train"][0])},
    )


def finalize(workdir: Path, original, reduced, surrogate, reference, data, norm, meta) -> None:
    """Export both networks as surrogates and draw the ignition and parity plots."""
    from condensation.combustion.surrogate import export_surrogate
    from condensation.tasks.combustion.plots import plot_ignition, plot_parity

    sur = {}
    for tag, (net, variables) in (("original", original), ("reduced", reduced)):
        export_surrogate(workdir / "surrogate" / tag, net, variables, meta)
        sur[tag] = surrogate(net, variables)
    ref = reference("test")
    n_max = int(ref.steps.max())
    rollouts = {tag: np.asarray(s.rollout(ref.T0, ref.P, ref.Y0, n_max)[0]) for tag, s in sur.items()}
    plot_ignition(workdir / "ignition.png", ref, rollouts, data.dt)
    x, y = norm["test"]
    pick = np.random.default_rng(0).choice(len(x), min(len(x), 4000), replace=False)
    preds = {tag: np.asarray(s.net.module().apply(s.variables, jnp.asarray(x[pick])))
             for tag, s in sur.items()}
    plot_parity(workdir / "parity.png", y[pick], preds, ("T",) + tuple(data.active_species))
