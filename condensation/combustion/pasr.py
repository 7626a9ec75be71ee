"""A partially stirred reactor (PaSR): the classic test bed of chemistry acceleration.

``N`` particles at constant pressure. Every time step ``dt`` (the surrogate's step):

1. **flow**: each particle leaves with probability ``dt / tau_res`` and is replaced by an
   inflow particle (a stream drawn by its mass share);
2. **mixing** (IEM): enthalpy and mass fractions relax towards the particles' means,
   ``d phi / dt = -(phi - <phi>) / (2 tau_mix)``; T follows from the mixed enthalpy;
3. **chemistry** (operator splitting): each particle's (T, Y) advanced by ``dt`` by the given
   chemistry: a fresh Cantera reactor per particle (the reference) or one batched surrogate
   ``step`` (guarded).

The random stream (which particles leave, which stream enters) depends on the seed only, so two
runs with different chemistry see the same flow. The chemistry's wall time is measured apart.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from condensation.combustion import chem

Chemistry = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Stream:
    """An inflow: temperature [K], equivalence ratio, share of the inflowing mass."""

    T: float
    phi: float
    share: float = 1.0


@dataclass(frozen=True)
class PaSRConfig:
    mechanism: str = "h2o2.yaml"
    fuel: str = "H2:1"
    oxidizer: str = "O2:1, N2:3.76"
    P: float = 101325.0              # Pa
    n_particles: int = 64
    tau_res: float = 1e-3            # s
    tau_mix: float = 2e-4            # s
    t_end: float = 2e-3              # s
    dt: float = 1e-6                 # s: the surrogate's step
    record_every: int = 20           # steps
    streams: tuple[Stream, ...] = (Stream(1100.0, 1.0),)
    initial: Stream = Stream(1100.0, 1.0)   # burnt to equilibrium at this T0 and phi
    seed: int = 0
    species: tuple[str, ...] = ("OH", "H2O")


@dataclass
class PaSRResult:
    t: np.ndarray                     # [R] s
    mean_T: np.ndarray                # [R] K
    mean_Y: dict[str, np.ndarray]     # species -> [R]
    final_T: np.ndarray               # [N] K
    chemistry_s: float                # wall time spent in the chemistry
    mixing_s: float                   # wall time of flow and mixing
    guarded: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [R] guarded particles


def _mixture(cfg: PaSRConfig, s: Stream) -> np.ndarray:
    return chem.initial_mass_fractions(cfg.mechanism, s.phi, cfg.fuel, cfg.oxidizer)


def _burnt(cfg: PaSRConfig) -> tuple[float, np.ndarray]:
    gas = chem.load_solution(cfg.mechanism)
    gas.TPY = cfg.initial.T, cfg.P, _mixture(cfg, cfg.initial)
    gas.equilibrate("HP")
    return float(gas.T), np.array(gas.Y)


def run_pasr(cfg: PaSRConfig, chemistry: Chemistry, desc: str = "PaSR",
             guarded: Callable[[], int] | None = None) -> PaSRResult:
    """Run the PaSR with ``chemistry(T, P, Y) -> (T, Y)`` advancing every particle by ``dt``."""
    mech = chem.Mechanism.load(cfg.mechanism)
    rng = np.random.default_rng(cfg.seed)
    n = cfg.n_particles
    T_b, Y_b = _burnt(cfg)
    T, Y = np.full(n, T_b), np.tile(Y_b, (n, 1))
    P = np.full(n, cfg.P)
    inflow_T = np.array([s.T for s in cfg.streams])
    inflow_Y = np.stack([_mixture(cfg, s) for s in cfg.streams])
    inflow_h = np.asarray(chem.enthalpy_mass(mech, inflow_T, inflow_Y), np.float64)
    shares = np.array([s.share for s in cfg.streams], float)
    shares /= shares.sum()
    idx = [mech.species_index(s) for s in cfg.species]
    steps = int(round(cfg.t_end / cfg.dt))
    rec_t, rec_T, rec_Y, rec_g = [], [], {s: [] for s in cfg.species}, []
    chem_s = mix_s = 0.0
    decay = np.exp(-cfg.dt / (2 * cfg.tau_mix))

    def record(k):
        rec_t.append(k * cfg.dt)
        rec_T.append(T.mean())
        for s, i in zip(cfg.species, idx, strict=True):
            rec_Y[s].append(Y[:, i].mean())
        rec_g.append(guarded() if guarded is not None else 0)

    record(0)
    for k in tqdm(range(1, steps + 1), desc=desc, leave=False, disable=None):
        t0 = time.perf_counter()
        # flow: the same draws whatever the chemistry
        leave = rng.random(n) < cfg.dt / cfg.tau_res
        which = rng.choice(len(shares), size=n, p=shares)
        T, Y = _flow_and_mix(mech, T, Y, leave, inflow_h[which], inflow_Y[which],
                             inflow_T[which], decay)
        T, Y = np.asarray(T, np.float64), np.asarray(Y, np.float64)
        t1 = time.perf_counter()
        T, Y = chemistry(T, P, Y)
        T, Y = np.asarray(T, np.float64), np.asarray(Y, np.float64)
        t2 = time.perf_counter()
        mix_s += t1 - t0
        chem_s += t2 - t1
        if k % cfg.record_every == 0 or k == steps:
            record(k)
    return PaSRResult(np.array(rec_t), np.array(rec_T), {s: np.array(v) for s, v in rec_Y.items()},
                      T.copy(), chem_s, mix_s, np.array(rec_g))


@functools.partial(jax.jit, static_argnums=0)
def _flow_and_mix(mech, T, Y, leave, h_in, Y_in, T_in, decay):
    """Replace the leaving particles by inflow, then IEM-mix enthalpy and mass fractions
    (the exact decay over the step); T from the mixed enthalpy."""
    h = jnp.where(leave, h_in, chem.enthalpy_mass(mech, T, Y))
    Y = jnp.where(leave[:, None], Y_in, Y)
    T = jnp.where(leave, T_in, T)
    h = h.mean() + (h - h.mean()) * decay
    Y = Y.mean(axis=0) + (Y - Y.mean(axis=0)) * decay
    return chem.temperature_from_enthalpy(mech, h, Y, T), Y


def cantera_chemistry(cfg: PaSRConfig) -> Chemistry:
    """A fresh constant-pressure Cantera reactor per particle and step (Cantera's default
    tolerances), as a CFD code calls its chemistry per cell."""

    def step(T, P, Y):
        out = [chem.step_cantera(cfg.mechanism, T[i], P[i], Y[i], cfg.dt) for i in range(len(T))]
        return np.array([o[0] for o in out]), np.stack([o[1] for o in out])

    return step
