"""Training data for one-step chemistry surrogates: generation with Cantera, transforms, caching.

Pipeline (per initial condition (T0, P, phi), see `simulate_condition`):
1. integrate a constant-pressure autoignition in exact dt steps until the state has stayed close to
   equilibrium (|T - T_eq(HP)| < ``eq_tol_K`` for ``eq_hold_time``) or ``t_max`` is reached;
2. pick ``samples_per_trajectory`` states, half uniformly in time and half with probability
   proportional to |dT/dt| (ignition fronts are short but hard); each is labelled by the next
   recorded state, exactly dt later;
3. perturb each picked state ``n_perturb`` times across scales (every mass fraction times
   10^(s U(-1, 1)) with s log-uniform in ``perturb_decades``, renormalized; T times
   1 + ``perturb_T`` U(-1, 1)) and label each with a fresh one-dt Cantera step.

The split is by condition: train, val and test trajectories start from disjoint, independently
seeded draws of (T0, P, phi); every split gets both trajectory and perturbed samples (``kind``).

Representation, with the active species ``a`` (nonzero net stoichiometry; inert species such as N2
and AR in h2o2.yaml are carried unchanged and are neither inputs nor outputs):
  x = [T, log P, boxcox(Y_a)]                                   [N, 2 + na]
  y = [(T' - T)/dt, (boxcox(Y_a') - boxcox(Y_a))/dt]            [N, 1 + na]
with T in K, P in Pa, ' = one dt later.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cantera as ct
import numpy as np
from tqdm.auto import tqdm

from condensation.combustion import chem
from condensation.combustion.chem import array_namespace, boxcox, inv_boxcox

logger = logging.getLogger(__name__)

# Bump when the generation procedure or the file layout changes, to invalidate old caches.
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
KIND_TRAJECTORY, KIND_PERTURBED = 0, 1


@dataclass(frozen=True)
class CombustionDataConfig:
    """What to generate. Every field except ``workers`` enters the cache hash.

    For methane use ``mechanism="gri30.yaml", fuel="CH4:1"`` with a hotter ``T0_range`` and a
    longer ``t_max`` (CH4/air needs ~1500 K to ignite within milliseconds); nothing else changes.
    """

    mechanism: str = "h2o2.yaml"
    fuel: str = "H2:1"
    oxidizer: str = "O2:1, N2:3.76"
    T0_range: tuple[float, float] = (1000.0, 1400.0)  # K, uniform
    P_range_atm: tuple[float, float] = (0.5, 2.0)  # atm, log-uniform (stored in Pa)
    phi_range: tuple[float, float] = (0.5, 2.0)  # log-uniform
    dt: float = 1e-6  # s
    n_train_conditions: int = 200
    n_val_conditions: int = 20
    n_test_conditions: int = 40
    # Trajectory end: |T - T_eq| < eq_tol_K for eq_hold_time, or t_max (lean H2/air at 1000 K
    # and 2 atm ignites after ~6.5 ms and is within 1 K of equilibrium ~0.3 ms later).
    t_max: float = 20e-3  # s
    eq_tol_K: float = 1.0
    eq_hold_time: float = 50e-6  # s
    samples_per_trajectory: int = 200  # half uniform in time, half weighted by |dT/dt|
    n_perturb: int = 2  # perturbed copies per sampled trajectory state
    perturb_decades: tuple[float, float] = (0.03, 1.0)  # range of the log-uniform scale s
    perturb_T: float = 0.02  # relative
    # CVODE tolerances of every Cantera integration here. Cantera's default atol (1e-15) leaves
    # the Box-Cox labels of trace species wrong by up to ~1 % and is slower on perturbed states;
    # (1e-8, 1e-20) gives labels within ~1e-6 of a (1e-12, 1e-22) reference at ~1.7 ms/sample.
    rtol: float = 1e-8
    atol: float = 1e-20
    max_fail_fraction: float = 0.01  # of attempted samples; more raises
    seed: int = 0
    workers: int = 2  # processes; 1 runs in-process

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CombustionDataConfig:
        """From a plain or OmegaConf-like mapping; lists become tuples, unknown keys raise."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown CombustionDataConfig fields: {sorted(unknown)}")
        return cls(**{k: tuple(v) if not isinstance(v, str | int | float) else v
                      for k, v in d.items()})

    def n_conditions(self, split: str) -> int:
        return getattr(self, f"n_{split}_conditions")


def hash_config(cfg: CombustionDataConfig) -> str:
    """16 hex digits identifying the data `cfg` generates (workers excluded, Cantera included)."""
    d = dataclasses.asdict(cfg)
    d.pop("workers")
    d["_format_version"] = FORMAT_VERSION
    d["_cantera"] = ct.__version__
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(cfg: CombustionDataConfig, cache_dir: str | os.PathLike) -> Path:
    """Directory holding the cached data of `cfg`."""
    return Path(cache_dir) / f"combustion-{hash_config(cfg)}"


# ----------------------------------------------------------------------------- representation


def features(T, P, Y, active):
    """Network inputs [..., 2 + na] = [T, log P, boxcox(Y[..., active])] (numpy or JAX).

    T [...] K; P [...] or scalar, Pa; Y [..., ns]; active [na] int.
    """
    xp = array_namespace(T, P, Y)
    T = xp.asarray(T)
    logp = xp.broadcast_to(xp.log(xp.asarray(P, dtype=T.dtype)), T.shape)
    return xp.concatenate([T[..., None], logp[..., None], boxcox(Y[..., active])], axis=-1)


def labels(T, Y, T_next, Y_next, active, dt: float):
    """Network targets [..., 1 + na] = [(T' - T)/dt, (boxcox(Y'_a) - boxcox(Y_a))/dt].

    T, T_next [...] K; Y, Y_next [..., ns]; active [na]. Compute in float64: the increments of
    slow species are far below float32 resolution of the Box-Cox values.
    """
    xp = array_namespace(T, Y, T_next, Y_next)
    dT = (xp.asarray(T_next) - xp.asarray(T)) / dt
    dz = (boxcox(Y_next[..., active]) - boxcox(Y[..., active])) / dt
    return xp.concatenate([dT[..., None], dz], axis=-1)


def apply_labels(T, Y, rates, active, dt: float):
    """Advance a state by predicted rates: the inverse of `labels` (numpy or JAX).

    Args: T [...]; Y [..., ns]; rates [..., 1 + na] (unnormalized labels); active [na].
    Returns: (T_next [...], Y_next [..., ns]) with inert species copied and Y_next NOT
      renormalized; follow with `chem.project_elements` (and for T, enthalpy conservation via
      `chem.temperature_from_enthalpy`) in rollouts.
    """
    xp = array_namespace(T, Y, rates)
    T_next = T + dt * rates[..., 0]
    y_active = inv_boxcox(boxcox(Y[..., active]) + dt * rates[..., 1:])
    if xp is np:
        Y_next = np.array(Y, dtype=np.result_type(Y, y_active), copy=True)
        Y_next[..., active] = y_active
    else:
        Y_next = Y.at[..., active].set(y_active)
    return T_next, Y_next


@dataclass(frozen=True)
class Normalizer:
    """Affine z-scoring per column: apply(x) = (x - mean) / std. mean, std [d]."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Normalizer:
        """Column mean and std of x [N, d] (float64); constant columns get std 1."""
        x = np.asarray(x, dtype=np.float64)
        mean, std = x.mean(axis=0), x.std(axis=0)
        std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)
        return cls(mean=mean, std=std)

    def apply(self, x):
        """[..., d] -> [..., d]; numpy or JAX (returns the input's kind and float dtype)."""
        xp = array_namespace(x)
        dtype = x.dtype if xp.issubdtype(x.dtype, xp.floating) else np.float64
        return (x - xp.asarray(self.mean, dtype)) / xp.asarray(self.std, dtype)

    def invert(self, z):
        """Inverse of `apply`: [..., d] -> [..., d]."""
        xp = array_namespace(z)
        dtype = z.dtype if xp.issubdtype(z.dtype, xp.floating) else np.float64
        return z * xp.asarray(self.std, dtype) + xp.asarray(self.mean, dtype)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": np.asarray(self.mean).tolist(), "std": np.asarray(self.std).tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        return cls(mean=np.asarray(d["mean"], np.float64), std=np.asarray(d["std"], np.float64))


# ----------------------------------------------------------------------------- containers


@dataclass(frozen=True)
class SplitData:
    """Samples of one split (N samples from C initial conditions); floats are float64.

    T, T_next [N] K; P [N] Pa (constant along a step); Y, Y_next [N, ns]; condition [N] index
    into this split's conditions; kind [N] KIND_TRAJECTORY (0) or KIND_PERTURBED (1).
    Conditions: T0 [C] K, P0 [C] Pa, phi [C]; per condition from its Cantera trajectory: tau_ign
    [C] s (time of max dT/dt) and T_eq [C] K (HP equilibrium).
    """

    T: np.ndarray
    P: np.ndarray
    Y: np.ndarray
    T_next: np.ndarray
    Y_next: np.ndarray
    condition: np.ndarray
    kind: np.ndarray
    T0: np.ndarray
    P0: np.ndarray
    phi: np.ndarray
    tau_ign: np.ndarray
    T_eq: np.ndarray

    def __len__(self) -> int:
        return len(self.T)


@dataclass(frozen=True)
class CombustionData:
    """Generated data: species bookkeeping plus a `SplitData` per split ("train", "val", "test").

    active_index [na] lists the species that are network inputs/outputs; the others are inert.
    """

    mechanism: str
    fuel: str
    oxidizer: str
    species: tuple[str, ...]
    active_index: np.ndarray
    dt: float
    splits: dict[str, SplitData]
    config: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def n_active(self) -> int:
        return len(self.active_index)

    @property
    def inert_index(self) -> np.ndarray:
        return np.setdiff1d(np.arange(len(self.species)), self.active_index)

    @property
    def active_species(self) -> tuple[str, ...]:
        return tuple(self.species[i] for i in self.active_index)

    def __getitem__(self, split: str) -> SplitData:
        return self.splits[split]

    def xy(self, split: str, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
        """Unnormalized features x [N, 2 + na] and labels y [N, 1 + na] of `split`.

        Computed in float64, then cast to `dtype`.
        """
        s = self.splits[split]
        x = features(s.T, s.P, s.Y, self.active_index)
        y = labels(s.T, s.Y, s.T_next, s.Y_next, self.active_index, self.dt)
        return x.astype(dtype), y.astype(dtype)

    def normalizers(self) -> tuple[Normalizer, Normalizer]:
        """(input, label) normalizers fitted on the training split only."""
        x, y = self.xy("train", dtype=np.float64)
        return Normalizer.fit(x), Normalizer.fit(y)

    def save(self, directory: str | os.PathLike, *, splits: tuple[str, ...] | None = None,
             name: str = "data.npz", compressed: bool = False) -> Path:
        """Write `name` (default data.npz; atomically: temp file, then rename) into `directory`;
        only the `splits` given (default all), compressed if asked."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "species": np.array(self.species),
            "active_index": self.active_index,
            "meta": np.array(json.dumps({
                "mechanism": self.mechanism, "fuel": self.fuel, "oxidizer": self.oxidizer,
                "dt": self.dt, "config": self.config, "stats": self.stats,
            })),
        }
        for split_name, split in self.splits.items():
            if splits is not None and split_name not in splits:
                continue
            for f in dataclasses.fields(SplitData):
                arrays[f"{split_name}.{f.name}"] = getattr(split, f.name)
        path = directory / name
        tmp = directory / f".{name}.tmp-{os.getpid()}"
        with open(tmp, "wb") as fh:
            (np.savez_compressed if compressed else np.savez)(fh, **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> CombustionData:
        """Read what `save` wrote into `directory` (its data.npz), or the file `directory`."""
        path = Path(directory)
        with np.load(path if path.is_file() else path / "data.npz", allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            splits = {}
            names = sorted({k.split(".", 1)[0] for k in z.files if "." in k})
            for name in names:
                splits[name] = SplitData(
                    **{f.name: z[f"{name}.{f.name}"] for f in dataclasses.fields(SplitData)}
                )
            return cls(
                mechanism=meta["mechanism"],
                fuel=meta["fuel"],
                oxidizer=meta["oxidizer"],
                species=tuple(str(s) for s in z["species"]),
                active_index=z["active_index"],
                dt=float(meta["dt"]),
                splits=splits,
                config=meta["config"],
                stats=meta["stats"],
            )


# ----------------------------------------------------------------------------- generation


def draw_conditions(
    cfg: CombustionDataConfig,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Initial conditions per split: (T0 [C] K, P0 [C] Pa, phi [C]).

    Each split has its own seeded stream, so the val/test conditions do not change when only
    the number of training conditions does.
    """
    out = {}
    for s, split in enumerate(SPLITS):
        rng = np.random.default_rng([cfg.seed, 1, s])
        n = cfg.n_conditions(split)
        T0 = rng.uniform(*cfg.T0_range, size=n)
        P0 = np.exp(rng.uniform(*np.log(cfg.P_range_atm), size=n)) * ct.one_atm
        phi = np.exp(rng.uniform(*np.log(cfg.phi_range), size=n))
        out[split] = (T0, P0, phi)
    return out


def _integrate_to_equilibrium(gas: ct.Solution, cfg: CombustionDataConfig, T0, P, Y0):
    """Record T [n+1], Y [n+1, ns] every dt until near equilibrium or t_max; also T_eq."""
    gas.TPY = T0, P, Y0
    gas.equilibrate("HP")
    T_eq = gas.T
    gas.TPY = T0, P, Y0
    reactor = ct.IdealGasConstPressureReactor(gas, clone=False)
    net = ct.ReactorNet([reactor])
    net.rtol, net.atol = cfg.rtol, cfg.atol
    n_max = int(round(cfg.t_max / cfg.dt))
    hold = max(1, int(round(cfg.eq_hold_time / cfg.dt)))
    Ts, Ys = [gas.T], [gas.Y]
    close = 0
    for i in range(1, n_max + 1):
        net.advance(i * cfg.dt)
        Ts.append(gas.T)
        Ys.append(gas.Y)
        close = close + 1 if abs(Ts[-1] - T_eq) < cfg.eq_tol_K else 0
        if close >= hold:
            break
    return np.array(Ts), np.array(Ys), T_eq, close >= hold


def _pick_indices(rng: np.random.Generator, rate: np.ndarray, n_samples: int) -> np.ndarray:
    """n_samples indices into rate [n]: half uniform, half with probability ~ |rate|, distinct
    when the trajectory is long enough."""
    n = len(rate)
    n_uniform = n_samples // 2
    n_weighted = n_samples - n_uniform
    uniform = rng.choice(n, size=n_uniform, replace=n_uniform > n)
    rest = np.setdiff1d(np.arange(n), uniform) if n - n_uniform >= n_weighted else np.arange(n)
    w = np.abs(rate[rest])
    # A floor keeps every index drawable, so sampling without replacement cannot run dry.
    w = w + 1e-6 * w.max() + 1e-300
    weighted = rng.choice(rest, size=n_weighted, replace=n_weighted > len(rest), p=w / w.sum())
    return np.sort(np.concatenate([uniform, weighted]))


def label_state(
    gas: ct.Solution, T: float, P: float, Y: np.ndarray, dt: float, rtol: float, atol: float
):
    """One fresh constant-pressure step (new reactor) from (T, P, Y): (T', Y' [ns]).

    Raises ct.CanteraError on integrator failure and ValueError on a non-finite result.
    """
    gas.TPY = T, P, Y
    reactor = ct.IdealGasConstPressureReactor(gas, clone=False)
    net = ct.ReactorNet([reactor])
    net.rtol, net.atol = rtol, atol
    net.advance(dt)
    T_next, Y_next = gas.T, np.array(gas.Y)
    if not (np.isfinite(T_next) and np.all(np.isfinite(Y_next))):
        raise ValueError("non-finite Cantera state")
    return T_next, Y_next


def simulate_condition(
    cfg: CombustionDataConfig, T0: float, P: float, phi: float, seed: list[int]
) -> dict[str, Any]:
    """All samples of one initial condition (trajectory + perturbations), deterministic in seed.

    Returns a dict with T, P, Y, T_next, Y_next, kind (arrays over the M successful samples,
    M <= samples_per_trajectory * (1 + n_perturb)), n_attempted, n_failed, tau_ign, T_eq,
    equilibrated (bool), n_steps (trajectory length in dt).
    """
    gas = chem.load_solution(cfg.mechanism)
    ns = gas.n_species
    S, K = cfg.samples_per_trajectory, cfg.n_perturb
    n_attempted = S * (1 + K)
    rng = np.random.default_rng(seed)
    Y0 = chem.initial_mass_fractions(cfg.mechanism, phi, cfg.fuel, cfg.oxidizer)
    try:
        Ts, Ys, T_eq, equilibrated = _integrate_to_equilibrium(gas, cfg, T0, P, Y0)
    except (ct.CanteraError, ValueError) as err:
        logger.warning("trajectory T0=%.1f P=%.0f phi=%.3f failed: %s", T0, P, phi, err)
        empty = np.empty((0, ns))
        return dict(T=np.empty(0), P=np.empty(0), Y=empty, T_next=np.empty(0), Y_next=empty,
                    kind=np.empty(0, np.int8), n_attempted=n_attempted, n_failed=n_attempted,
                    tau_ign=np.nan, T_eq=np.nan, equilibrated=False, n_steps=0)

    t = np.arange(len(Ts)) * cfg.dt
    idx = _pick_indices(rng, np.diff(Ts) / cfg.dt, S)
    T_s, Y_s = Ts[idx], Ys[idx]
    # All random numbers are drawn before any Cantera call so failures cannot shift the stream.
    scale = np.exp(rng.uniform(*np.log(cfg.perturb_decades), size=(S, K, 1)))
    Y_p = Y_s[:, None, :] * 10.0 ** (scale * rng.uniform(-1.0, 1.0, size=(S, K, ns)))
    Y_p = (Y_p / Y_p.sum(axis=-1, keepdims=True)).reshape(S * K, ns)
    T_p = (T_s[:, None] * (1.0 + cfg.perturb_T * rng.uniform(-1.0, 1.0, size=(S, K)))).ravel()

    T_pn, Y_pn, ok = np.empty(S * K), np.empty((S * K, ns)), np.zeros(S * K, bool)
    for j in range(S * K):
        try:
            T_pn[j], Y_pn[j] = label_state(gas, T_p[j], P, Y_p[j], cfg.dt, cfg.rtol, cfg.atol)
            ok[j] = True
        except (ct.CanteraError, ValueError):
            pass

    return dict(
        T=np.concatenate([T_s, T_p[ok]]),
        P=np.full(S + ok.sum(), P),
        Y=np.concatenate([Y_s, Y_p[ok]]),
        T_next=np.concatenate([Ts[idx + 1], T_pn[ok]]),
        Y_next=np.concatenate([Ys[idx + 1], Y_pn[ok]]),
        kind=np.concatenate([np.full(S, KIND_TRAJECTORY, np.int8),
                             np.full(ok.sum(), KIND_PERTURBED, np.int8)]),
        n_attempted=n_attempted,
        n_failed=int(S * K - ok.sum()),
        tau_ign=float(chem.ignition_delay(t, Ts)),
        T_eq=float(T_eq),
        equilibrated=bool(equilibrated),
        n_steps=len(Ts) - 1,
    )


def _run_task(task: tuple) -> tuple[str, int, dict[str, Any]]:
    cfg, split, i, T0, P, phi = task
    seed = [cfg.seed, 2, SPLITS.index(split), i]
    return split, i, simulate_condition(cfg, T0, P, phi, seed)


def _split_data(rs: list[dict[str, Any]], condition_arrays) -> SplitData:
    """One split's samples from its conditions' simulation results, concatenated in order."""
    T0, P0, phi = condition_arrays
    return SplitData(
        T=np.concatenate([r["T"] for r in rs]),
        P=np.concatenate([r["P"] for r in rs]),
        Y=np.concatenate([r["Y"] for r in rs]),
        T_next=np.concatenate([r["T_next"] for r in rs]),
        Y_next=np.concatenate([r["Y_next"] for r in rs]),
        condition=np.concatenate([np.full(len(r["T"]), i, np.int32) for i, r in enumerate(rs)]),
        kind=np.concatenate([r["kind"] for r in rs]),
        T0=T0, P0=P0, phi=phi,
        tau_ign=np.array([r["tau_ign"] for r in rs]),
        T_eq=np.array([r["T_eq"] for r in rs]),
    )


def _simulate_all(cfg: CombustionDataConfig, conditions, path: Path,
                  progress: bool) -> dict[str, list[dict[str, Any]]]:
    """Every condition of every split simulated, in ``cfg.workers`` spawned processes."""
    tasks = [
        (cfg, split, i, float(T0[i]), float(P0[i]), float(phi[i]))
        for split, (T0, P0, phi) in conditions.items()
        for i in range(len(T0))
    ]
    logger.info("generating combustion data (%d conditions, %d workers) into %s",
                len(tasks), cfg.workers, path)
    results: dict[str, list] = {split: [None] * len(conditions[split][0]) for split in SPLITS}
    bar = tqdm(total=len(tasks), desc="cantera conditions", disable=not progress)
    if cfg.workers <= 1:
        for task in tasks:
            split, i, r = _run_task(task)
            results[split][i] = r
            bar.update()
    else:
        # Under a joblib (loky) worker the global start method is "loky", which spawned children
        # cannot set: they would crash and be respawned forever. Make it a real one first.
        if multiprocessing.get_start_method(allow_none=True) not in multiprocessing.get_all_start_methods():
            multiprocessing.set_start_method("spawn", force=True)
        with multiprocessing.get_context("spawn").Pool(cfg.workers) as pool:
            for split, i, r in pool.imap_unordered(_run_task, tasks):
                results[split][i] = r
                bar.update()
    bar.close()
    return results


def generate(
    cfg: CombustionDataConfig, cache_dir: str | os.PathLike, progress: bool = True
) -> CombustionData:
    """Generate (or load from cache) the data of `cfg`.

    Conditions are simulated in `cfg.workers` spawned processes (spawn: the parent may hold JAX
    threads, which fork would copy). Results do not depend on `workers`. The cache is
    ``cache_path(cfg, cache_dir)`` with data.npz (written last, atomically) and config.json.
    With workers > 1 the calling script needs the usual ``if __name__ == "__main__":`` guard, and
    each worker pays one import of the `condensation` package (~2 s).

    Raises RuntimeError when more than cfg.max_fail_fraction of the attempted samples failed.
    """
    path = cache_path(cfg, cache_dir)
    if (path / "data.npz").exists():
        logger.info("reusing cached combustion data %s", path)
        return CombustionData.load(path)

    conditions = draw_conditions(cfg)
    start = time.perf_counter()
    results = _simulate_all(cfg, conditions, path, progress)
    seconds = time.perf_counter() - start

    all_results = [r for split in SPLITS for r in results[split]]
    n_attempted = sum(r["n_attempted"] for r in all_results)
    n_failed = sum(r["n_failed"] for r in all_results)
    if n_failed > cfg.max_fail_fraction * n_attempted:
        raise RuntimeError(
            f"{n_failed} of {n_attempted} Cantera samples failed "
            f"(> max_fail_fraction={cfg.max_fail_fraction}); check the condition and "
            "perturbation ranges"
        )

    splits = {split: _split_data(results[split], conditions[split]) for split in SPLITS}
    n_samples = sum(len(s) for s in splits.values())
    stats = {
        "n_samples": {k: len(v) for k, v in splits.items()},
        "n_attempted": n_attempted,
        "n_failed": n_failed,
        "n_not_equilibrated": sum(not r["equilibrated"] for r in all_results),
        "trajectory_steps_mean": float(np.mean([r["n_steps"] for r in all_results])),
        "seconds": seconds,
        "samples_per_second": n_samples / seconds,
        "cantera": ct.__version__,
        "hash": hash_config(cfg),
    }
    mech = chem.Mechanism.load(cfg.mechanism)
    data = CombustionData(
        mechanism=cfg.mechanism,
        fuel=cfg.fuel,
        oxidizer=cfg.oxidizer,
        species=mech.species,
        active_index=mech.active_index,
        dt=cfg.dt,
        splits=splits,
        config=dataclasses.asdict(cfg),
        stats=stats,
    )
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f".config.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({"config": dataclasses.asdict(cfg), "stats": stats}, indent=2))
    os.replace(tmp, path / "config.json")
    data.save(path)
    logger.info("generated %d samples in %.1f s (%.0f samples/s): %s", n_samples, seconds,
                n_samples / seconds, path)
    return data


def data_of_run(data_cfg: dict[str, Any]) -> tuple[CombustionDataConfig, CombustionData]:
    """The data config and the data (from the cache, or generated) of a run config's ``data``
    section (its ``cache_dir``, ``name`` and ``rollout`` entries are not data settings)."""
    data_cfg = dict(data_cfg)
    cache = Path(data_cfg.pop("cache_dir", ".cache/condensation"))
    for key in ("name", "rollout"):
        data_cfg.pop(key, None)
    dcfg = CombustionDataConfig.from_dict(data_cfg)
    return dcfg, generate(dcfg, cache)
