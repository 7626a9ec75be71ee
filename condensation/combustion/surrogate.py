"""An exported chemistry surrogate: one dt of a constant-pressure reactor, in physical units.

Stored as a folder (see :func:`condensation.saved.save_network`): ``variables.npz`` (the network's
arrays, keys like ``params/Dense_0/kernel``) and ``network.json`` holding the architecture and
widths plus a ``surrogate`` entry: mechanism, species, active species indices, dt [s] and the
input/label normalization (``x_mean``, ``x_std``, ``y_mean``, ``y_std``). The network maps
``(x - x_mean) / x_std`` with x = [T, log P, boxcox(Y_active)] to ``(y - y_mean) / y_std`` with
y = [dT/dt, d boxcox(Y_active)/dt]; inert species are carried unchanged.

    from condensation.combustion import load_surrogate
    s = load_surrogate("results/combustion/surrogate/reduced")
    T1, Y1 = s.step(T, P, Y)          # T [B] K, P [B] Pa, Y [B, len(s.species)]

**The training envelope** (``network.json``: ``surrogate.envelope``, the ranges of T, P and the
equivalence ratio over the training states) guards every ``step``; states outside it are not
given to the network as if it knew them. ``guard`` (at load or per call):

- ``"cantera"`` (default): outside states below ``frozen_below`` (600 K; CFD codes freeze
  chemistry below such a cutoff; a 300 K mixture stays at 300 K) are returned unchanged, other
  outside states are advanced by a fresh Cantera reactor (exact, slow);
- ``"frozen"``: every outside state is returned unchanged;
- ``"raise"``: one ``ValueError`` naming the variable, the offending value and the envelope;
- ``"off"``: no check (the network extrapolates).

``step(..., return_guarded=True)`` also returns per state 0 (network), 1 (frozen) or 2 (Cantera).
**Any batch size** runs compiled: batches are padded to the next power of two (at least 16),
so a solver whose number of cells changes every step compiles a handful of times.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from condensation.combustion import chem
from condensation.combustion.data import Normalizer, apply_labels, features
from condensation.network import Network
from condensation.saved import load_network, save_network

logger = logging.getLogger(__name__)


GUARDS = ("cantera", "frozen", "raise", "off")
# Below this temperature the "cantera" guard freezes chemistry instead of calling Cantera. Not
# the envelope's lower edge: a fresh mixture mixed with burnt gas carries radicals that react
# at 700-1000 K within microseconds (measured: in a small PaSR fed half cold gas, as in
# tests/test_surrogate.py, freezing everything below the envelope put the mean temperature
# 2.4 % below Cantera's after 30 us).
FROZEN_BELOW = 600.0
ENVELOPE_UNITS = {"T": "K", "P": "Pa", "phi": "equivalence ratio from the elements"}


@dataclass(frozen=True, eq=False)
class Surrogate:
    """A network plus everything needed to use it as a chemistry step.

    ``conserve`` (default True) projects every step's mass fractions onto the input state's
    element masses and recomputes T from the input state's enthalpy (constant pressure), as the
    rollouts that validated these networks did.
    """

    net: Network
    variables: Any
    mechanism: chem.Mechanism
    mechanism_name: str
    active_index: np.ndarray
    dt: float
    x_norm: Normalizer
    y_norm: Normalizer
    conserve: bool = True
    envelope: dict[str, Any] | None = None
    guard: str = "cantera"
    frozen_below: float = FROZEN_BELOW
    solver: str = "lu"  # the element projection's small solve (chem.SOLVERS; ONNX: "unrolled")

    def _key(self):
        return (self.net.arch, self.net.widths, repr(sorted(self.net.options.items())),
                id(self.mechanism), tuple(self.active_index.tolist()), self.dt,
                self.x_norm.mean.tobytes(), self.x_norm.std.tobytes(),
                self.y_norm.mean.tobytes(), self.y_norm.std.tobytes(), self.conserve, self.solver)

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, Surrogate) and self._key() == other._key()

    @property
    def species(self) -> tuple[str, ...]:
        return tuple(self.mechanism.species)

    def step(self, T, P, Y, guard: str | None = None, return_guarded: bool = False):
        """Advance by ``dt``. T [B] K, P [B] Pa, Y [B, ns] -> (T_next [B], Y_next [B, ns]) as
        float64 numpy arrays (frozen states exactly as given), states outside the training
        envelope handled by ``guard`` (default: the surrogate's;
        see the module docstring); with ``return_guarded`` also a [B] int8 array: 0 network,
        1 frozen, 2 Cantera."""
        guard = self.guard if guard is None else guard
        if guard not in GUARDS:
            raise ValueError(f"guard={guard!r}; allowed: {', '.join(GUARDS)}")
        T = np.atleast_1d(np.asarray(T, np.float64))
        P = np.broadcast_to(np.asarray(P, np.float64), T.shape)
        Y = np.asarray(Y, np.float64)
        if T.ndim != 1 or Y.shape != (len(T), len(self.species)):
            raise ValueError(f"T must be [B] and Y [B, {len(self.species)}] (mass fractions over "
                             f".species), got T {T.shape} and Y {Y.shape}")
        status = self.guarded(T, P, Y, guard)
        n = len(T)
        m = bucket(n)
        pad = lambda a: np.concatenate([a, np.repeat(a[:1], m - n, axis=0)]) if m > n else a
        # float32 on the host: jnp.asarray(x, jnp.float32) would compile a cast per bucket
        T1, Y1 = _step(self, self.variables, *(pad(a).astype(np.float32) for a in (T, P, Y)))
        # slice on the host: slicing the device arrays would compile a slice for every new n
        T1, Y1 = np.asarray(T1, np.float64)[:n], np.asarray(Y1, np.float64)[:n]
        if status.any():
            frozen = status == 1
            T1[frozen], Y1[frozen] = T[frozen], Y[frozen]
            for i in np.nonzero(status == 2)[0]:
                T1[i], Y1[i] = chem.step_cantera(self.mechanism_name, T[i], P[i], Y[i], self.dt)
            logger.debug("surrogate step: %d of %d states outside the envelope (%d frozen, "
                         "%d by Cantera)", int((status > 0).sum()), n, int(frozen.sum()),
                         int((status == 2).sum()))
        return (T1, Y1, status) if return_guarded else (T1, Y1)

    def guarded(self, T, P, Y, guard: str | None = None) -> np.ndarray:
        """[B] int8: what ``guard`` does with each state (0 network, 1 frozen, 2 Cantera);
        ``raise`` raises for the first variable outside the envelope."""
        guard = self.guard if guard is None else guard
        status = np.zeros(len(T), np.int8)
        if guard == "off" or not self.envelope:
            return status
        values = {"T": T, "P": P, "phi": equivalence_ratio(self.mechanism, Y)}
        outside = np.zeros(len(T), bool)
        for name, v in values.items():
            lo, hi = self.envelope[name]
            bad = ~((v >= lo) & (v <= hi))   # NaN is outside too
            if guard == "raise" and bad.any():
                i = int(np.argmax(bad))
                raise ValueError(
                    f"{int(bad.sum())} state(s) outside the surrogate's training envelope: "
                    f"{name} = {v[i]:.6g} (state {i}); the envelope is {name} in [{lo:.6g}, "
                    f"{hi:.6g}] ({ENVELOPE_UNITS[name]}). Use guard='cantera' or 'frozen' to "
                    "step such states without the network")
            outside |= bad
        status[outside] = 1 if guard == "frozen" else 2
        status[outside & (T < self.frozen_below)] = 1
        return status

    def rollout(self, T0, P, Y0, n_steps: int):
        """Iterate ``step`` ``n_steps`` times in one compiled loop.

        T0 [B] K, P [B] Pa, Y0 [B, ns] -> T [B, n+1], Y [B, n+1, ns] (index 0 = initial state).
        """
        T0 = jnp.asarray(T0, jnp.float32)
        P = jnp.broadcast_to(jnp.asarray(P, jnp.float32), T0.shape)
        return _rollout(self, self.variables, T0, P, jnp.asarray(Y0, jnp.float32), int(n_steps))

    def with_variables(self, variables) -> Surrogate:
        """The same surrogate with other weights of the same shapes (reuses compiled code)."""
        return dataclasses.replace(self, variables=variables)




def bucket(n: int) -> int:
    """The padded batch size of ``n`` states: the next power of two, at least 16."""
    return max(16, 1 << max(0, int(n) - 1).bit_length())


def equivalence_ratio(mech: chem.Mechanism, Y) -> np.ndarray:
    """[B] the equivalence ratio of each mixture from its elements,
    ``(2 n_C + n_H / 2) / n_O`` (moles per unit mass; nitrogen and noble gases inert): the
    same for a mixture before and after it burns."""
    Z = np.asarray(chem.element_mass_fractions(mech, np.asarray(Y, np.float64)))
    moles = {e: Z[..., i] / ATOMIC_WEIGHTS[e] for i, e in enumerate(mech.elements)
             if e in ATOMIC_WEIGHTS}
    fuel = 2 * moles.get("C", 0.0) + 0.5 * moles.get("H", 0.0)
    return fuel / np.maximum(moles.get("O", 0.0), 1e-300)


ATOMIC_WEIGHTS = {"C": 12.011, "H": 1.008, "O": 15.999}


def training_envelope(mech: chem.Mechanism, T, P, Y, along=None) -> dict[str, Any]:
    """The ranges of T [K], P [Pa] and the equivalence ratio over the training states ``along``
    the Cantera trajectories (a boolean mask; default all): what ``step`` guards; and under
    ``reach`` the same over every training state, perturbed ones included (how far the
    multi-scale perturbations reach: far in composition, so not a useful guard)."""
    phi = equivalence_ratio(mech, Y)
    along = np.ones(len(T), bool) if along is None else np.asarray(along, bool)

    def ranges(mask):
        return {"T": [float(np.min(T[mask])), float(np.max(T[mask]))],
                "P": [float(np.min(P[mask])), float(np.max(P[mask]))],
                "phi": [float(np.min(phi[mask])), float(np.max(phi[mask]))]}

    return {**ranges(along), "n_states": int(along.sum()),
            "reach": {**ranges(np.ones(len(T), bool)), "n_states": int(len(T))}}


def _advance(s: Surrogate, variables, T, P, Y, h, elements):
    x = s.x_norm.apply(features(T, P, Y, s.active_index))
    rates = s.y_norm.invert(s.net.module().apply(variables, x))
    T_next, Y_next = apply_labels(T, Y, rates, s.active_index, s.dt)
    if s.conserve:
        Y_next = chem.project_elements(s.mechanism, Y_next, elements, solver=s.solver)
        T_next = chem.temperature_from_enthalpy(s.mechanism, h, Y_next, T_next)
    return T_next, Y_next


# The Surrogate is static (hashed by its key: everything but the weights); the weights are traced,
# so one compiled step serves every checkpoint of the same widths.
@functools.partial(jax.jit, static_argnums=0)
def _step(s: Surrogate, variables, T, P, Y):
    h = chem.enthalpy_mass(s.mechanism, T, Y)
    elements = chem.element_mass_fractions(s.mechanism, Y)
    return _advance(s, variables, T, P, Y, h, elements)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _rollout(s: Surrogate, variables, T0, P, Y0, n_steps: int):
    h = chem.enthalpy_mass(s.mechanism, T0, Y0)
    elements = chem.element_mass_fractions(s.mechanism, Y0)

    def body(carry, _):
        T, Y = _advance(s, variables, carry[0], P, carry[1], h, elements)
        return (T, Y), (T, Y)

    _, (Ts, Ys) = jax.lax.scan(body, (T0, Y0), None, length=n_steps)
    T = jnp.concatenate([T0[:, None], Ts.T], axis=1)
    Y = jnp.concatenate([Y0[:, None], jnp.moveaxis(Ys, 0, 1)], axis=1)
    return T, Y


def surrogate_metadata(mechanism: str, species, active_index, dt: float, x_norm: Normalizer,
                       y_norm: Normalizer, **extra) -> dict[str, Any]:
    return {"mechanism": mechanism, "species": list(species),
            "active_index": [int(i) for i in active_index], "dt": float(dt),
            "x_mean": x_norm.to_dict()["mean"], "x_std": x_norm.to_dict()["std"],
            "y_mean": y_norm.to_dict()["mean"], "y_std": y_norm.to_dict()["std"], **extra}


def make_surrogate(net: Network, variables, meta: dict[str, Any], conserve: bool = True,
                   guard: str = "cantera") -> Surrogate:
    mech = chem.Mechanism.load(meta["mechanism"])
    if list(mech.species) != list(meta["species"]):
        raise ValueError(f"mechanism {meta['mechanism']} has species {list(mech.species)}, "
                         f"the surrogate was trained on {meta['species']}")
    return Surrogate(
        net=net, variables=jax.tree.map(jnp.asarray, variables), mechanism=mech,
        mechanism_name=meta["mechanism"], active_index=np.asarray(meta["active_index"]),
        dt=float(meta["dt"]),
        x_norm=Normalizer.from_dict({"mean": meta["x_mean"], "std": meta["x_std"]}),
        y_norm=Normalizer.from_dict({"mean": meta["y_mean"], "std": meta["y_std"]}),
        conserve=conserve, envelope=meta.get("envelope"), guard=guard,
    )


def export_surrogate(folder: str | Path, net: Network, variables, meta: dict[str, Any],
                     **extra) -> None:
    save_network(folder, net, variables, surrogate=meta, **extra)


def load_surrogate(path: str | Path, conserve: bool = True, guard: str = "cantera") -> Surrogate:
    """Load an exported surrogate folder (no Hydra, no training code needed); ``guard`` is what
    ``step`` does with states outside the training envelope (module docstring)."""
    if guard not in GUARDS:
        raise ValueError(f"guard={guard!r}; allowed: {', '.join(GUARDS)}")
    net, variables, meta = load_network(path)
    if "surrogate" not in meta:
        raise ValueError(f"{path}/network.json has no 'surrogate' entry: not an exported "
                         "combustion surrogate (see condensation.combustion.export_surrogate)")
    if guard != "off" and "envelope" not in meta["surrogate"]:
        logger.warning("%s has no training envelope (exported before it was recorded): its "
                       "steps are not guarded; scripts/envelope.py adds it", path)
    return make_surrogate(net, variables, meta["surrogate"], conserve=conserve, guard=guard)
