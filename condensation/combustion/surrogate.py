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
"""
from __future__ import annotations

import dataclasses
import functools
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

    def _key(self):
        return (self.net.arch, self.net.widths, repr(sorted(self.net.options.items())),
                id(self.mechanism), tuple(self.active_index.tolist()), self.dt,
                self.x_norm.mean.tobytes(), self.x_norm.std.tobytes(),
                self.y_norm.mean.tobytes(), self.y_norm.std.tobytes(), self.conserve)

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, Surrogate) and self._key() == other._key()

    @property
    def species(self) -> tuple[str, ...]:
        return tuple(self.mechanism.species)

    def step(self, T, P, Y):
        """Advance by ``dt``. T [B] K, P [B] Pa, Y [B, ns] -> (T_next [B], Y_next [B, ns])."""
        T = jnp.asarray(T, jnp.float32)
        P = jnp.broadcast_to(jnp.asarray(P, jnp.float32), T.shape)
        Y = jnp.asarray(Y, jnp.float32)
        if Y.ndim != T.ndim + 1 or Y.shape[-1] != len(self.species):
            raise ValueError(f"Y must be [B, {len(self.species)}] (mass fractions over "
                             f".species), got {Y.shape} for T {T.shape}")
        return _step(self, self.variables, T, P, Y)

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


def _advance(s: Surrogate, variables, T, P, Y, h, elements):
    x = s.x_norm.apply(features(T, P, Y, s.active_index))
    rates = s.y_norm.invert(s.net.module().apply(variables, x))
    T_next, Y_next = apply_labels(T, Y, rates, s.active_index, s.dt)
    if s.conserve:
        Y_next = chem.project_elements(s.mechanism, Y_next, elements)
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


def make_surrogate(net: Network, variables, meta: dict[str, Any], conserve: bool = True) -> Surrogate:
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
        conserve=conserve,
    )


def export_surrogate(folder: str | Path, net: Network, variables, meta: dict[str, Any],
                     **extra) -> None:
    save_network(folder, net, variables, surrogate=meta, **extra)


def load_surrogate(path: str | Path, conserve: bool = True) -> Surrogate:
    """Load an exported surrogate folder (no Hydra, no training code needed)."""
    net, variables, meta = load_network(path)
    if "surrogate" not in meta:
        raise ValueError(f"{path}/network.json has no 'surrogate' entry: not an exported "
                         "combustion surrogate (see condensation.combustion.export_surrogate)")
    return make_surrogate(net, variables, meta["surrogate"], conserve=conserve)
