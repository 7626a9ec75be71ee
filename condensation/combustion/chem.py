"""Mechanism-level chemistry utilities: Box-Cox transform, NASA7 thermodynamics in JAX,
element projection, ignition delay, and Cantera reference trajectories.

Shapes use ``ns`` for the number of species and ``ne`` for the number of elements; ``...`` is
any number of leading batch axes. The JAX functions take a `Mechanism` (plain numpy arrays, no
Cantera object), so they can be traced under ``jax.jit`` by closing over the mechanism or by
passing it as a static argument (it hashes by identity and `Mechanism.load` caches instances).
They compute in the dtype of their inputs: enable x64 for ~1e-12 agreement with Cantera, in
float32 the temperature recovered from the enthalpy is good to about 1e-3 K.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cantera as ct
import jax
import jax.numpy as jnp
import numpy as np

BOXCOX_LAMBDA = 0.1
# Mass fractions are clipped here before the power so that zeros map to a finite value
# (boxcox(0) = (1e-30**0.1 - 1)/0.1 = -9.99); representable in float32.
Y_FLOOR = 1e-30

DEFAULT_FUEL = "H2:1"
DEFAULT_OXIDIZER = "O2:1, N2:3.76"


def array_namespace(*arrays):
    """jnp if any argument is a JAX array (including tracers), else numpy."""
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def boxcox(y, lam: float = BOXCOX_LAMBDA):
    """Box-Cox transform (y^lam - 1)/lam of mass fractions, elementwise, y clipped at Y_FLOOR.

    Works on numpy and JAX arrays (returns the same kind).
    """
    xp = array_namespace(y)
    y = xp.asarray(y)
    return (xp.maximum(y, Y_FLOOR) ** lam - 1.0) / lam


def inv_boxcox(z, lam: float = BOXCOX_LAMBDA):
    """Inverse of `boxcox`: (lam*z + 1)^(1/lam), elementwise.

    The base is clipped at Y_FLOOR^lam, so outputs are >= Y_FLOOR and inv_boxcox(boxcox(y)) == y
    (to rounding) for every y >= Y_FLOOR; a network predicting below boxcox(0) maps to Y_FLOOR.
    """
    xp = array_namespace(z)
    z = xp.asarray(z)
    return xp.maximum(lam * z + 1.0, Y_FLOOR**lam) ** (1.0 / lam)


@functools.lru_cache(maxsize=8)
def load_solution(name: str) -> ct.Solution:
    """A per-process cached Cantera Solution for mechanism file `name`.

    Shared: callers must set the full state (TPY) before using it.
    """
    try:
        return ct.Solution(name)
    except ct.CanteraError as err:
        if "not found" in str(err):
            raise ValueError(
                f"mechanism file {name!r} not found: Cantera ships 'h2o2.yaml' (H2/O2, 10 species)"
                " and 'gri30.yaml' (methane, 53 species); otherwise pass a path to a Cantera YAML"
                " mechanism file"
            ) from None
        raise ValueError(f"Cantera could not load mechanism {name!r}: {err}") from err


@dataclass(frozen=True, eq=False)
class Mechanism:
    """Species, element and NASA7 thermodynamic data of a Cantera mechanism as numpy arrays.

    Picklable and free of Cantera objects. ``eq=False``: equality and hash are by identity, so an
    instance can be a static argument of ``jax.jit`` (`load` returns one cached instance per name).

    Attributes:
      name: the mechanism file name or path it was loaded from.
      species: species names, length ns.
      elements: element names, length ne.
      molecular_weights: [ns] kg/kmol.
      element_matrix: [ne, ns] mass of element m per unit mass of species k.
      t_mid: [ns] K, switch temperature of the two NASA7 polynomials (low if T <= t_mid).
      nasa_low, nasa_high: [ns, 7] NASA7 coefficients a1..a7 below / above t_mid.
      t_min, t_max: [ns] K, validity range of the polynomials (outside, they are extrapolated).
      gas_constant: J/(kmol K).
      active_index: [na] int, species with a nonzero net stoichiometric coefficient in some
        reaction; the others (``inert_index``) never change in a closed reactor.
      inert_index: [ns - na] int.
      projector: [ns, ne + 1] Euclidean minimum-norm correction matrix of `project_elements`.
      sum_implied: whether the element rows imply sum(Y) = 1 (true for neutral species).
      constraint_matrix: [nc, ns] independent constraint rows of the weighted projection: the
        element rows, plus a row of ones unless `sum_implied`.
    """

    name: str
    species: tuple[str, ...]
    elements: tuple[str, ...]
    molecular_weights: np.ndarray
    element_matrix: np.ndarray
    t_mid: np.ndarray
    nasa_low: np.ndarray
    nasa_high: np.ndarray
    t_min: np.ndarray
    t_max: np.ndarray
    gas_constant: float
    active_index: np.ndarray
    inert_index: np.ndarray
    projector: np.ndarray
    sum_implied: bool
    constraint_matrix: np.ndarray

    @property
    def n_species(self) -> int:
        return len(self.species)

    @property
    def inert_species(self) -> tuple[str, ...]:
        return tuple(self.species[i] for i in self.inert_index)

    @property
    def active_species(self) -> tuple[str, ...]:
        return tuple(self.species[i] for i in self.active_index)

    def species_index(self, name: str) -> int:
        return self.species.index(name)

    @classmethod
    @functools.lru_cache(maxsize=8)
    def load(cls, name: str) -> Mechanism:
        """Read mechanism `name` ("h2o2.yaml", "gri30.yaml" or a path to a YAML file)."""
        gas = load_solution(name)
        ns, ne = gas.n_species, gas.n_elements
        mw = np.asarray(gas.molecular_weights, dtype=np.float64)
        aw = np.asarray(gas.atomic_weights, dtype=np.float64)
        atoms = np.array([[gas.n_atoms(k, m) for k in range(ns)] for m in range(ne)])
        element_matrix = atoms * aw[:, None] / mw[None, :]

        t_mid, low, high = np.empty(ns), np.empty((ns, 7)), np.empty((ns, 7))
        t_min, t_max = np.empty(ns), np.empty(ns)
        for k in range(ns):
            thermo = gas.species(k).thermo
            if not isinstance(thermo, ct.NasaPoly2):
                raise ValueError(
                    f"species {gas.species_names[k]!r} of {name!r} uses "
                    f"{type(thermo).__name__} thermo; only NASA7 (two-range NasaPoly2) is supported"
                )
            # Cantera's layout: [T_mid, 7 high-range coefficients, 7 low-range coefficients].
            c = np.asarray(thermo.coeffs, dtype=np.float64)
            t_mid[k], high[k], low[k] = c[0], c[1:8], c[8:15]
            t_min[k], t_max[k] = thermo.min_temp, thermo.max_temp

        nu = gas.product_stoich_coeffs - gas.reactant_stoich_coeffs
        nu = np.asarray(nu.todense() if hasattr(nu, "todense") else nu)
        active = np.abs(nu).sum(axis=1) > 0

        # The sum row is usually a combination of the element rows (element masses of a species
        # add up to its mass), so A A^T is singular: the pseudo-inverse gives the minimum-norm
        # correction and stays least-squares if the targets are inconsistent.
        A = np.vstack([element_matrix, np.ones((1, ns))])
        projector = A.T @ np.linalg.pinv(A @ A.T)
        coef = np.linalg.lstsq(element_matrix.T, np.ones(ns), rcond=None)[0]
        sum_implied = bool(np.allclose(element_matrix.T @ coef, 1.0, rtol=0, atol=1e-9))

        return cls(
            name=name,
            species=tuple(gas.species_names),
            elements=tuple(gas.element_names),
            molecular_weights=mw,
            element_matrix=element_matrix,
            t_mid=t_mid,
            nasa_low=low,
            nasa_high=high,
            t_min=t_min,
            t_max=t_max,
            gas_constant=float(ct.gas_constant),
            active_index=np.flatnonzero(active),
            inert_index=np.flatnonzero(~active),
            projector=projector,
            sum_implied=sum_implied,
            constraint_matrix=element_matrix if sum_implied else A,
        )


def _float_dtype(*arrays):
    dtype = jnp.result_type(*arrays)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def _enthalpy_and_cp(mech: Mechanism, T, Y):
    """Mixture h [J/kg] and cp [J/(kg K)] at T [...], Y [..., ns]."""
    dtype = _float_dtype(T, Y)
    T = jnp.asarray(T, dtype)[..., None]
    Y = jnp.asarray(Y, dtype)
    low = jnp.asarray(mech.nasa_low, dtype)
    high = jnp.asarray(mech.nasa_high, dtype)
    use_low = T <= jnp.asarray(mech.t_mid, dtype)  # [..., ns]
    a = [jnp.where(use_low, low[:, i], high[:, i]) for i in range(7)]
    h_rt = a[0] + T * (a[1] / 2 + T * (a[2] / 3 + T * (a[3] / 4 + T * a[4] / 5))) + a[5] / T
    cp_r = a[0] + T * (a[1] + T * (a[2] + T * (a[3] + T * a[4])))
    r_w = mech.gas_constant / jnp.asarray(mech.molecular_weights, dtype)
    h = jnp.sum(Y * r_w * T * h_rt, axis=-1)
    cp = jnp.sum(Y * r_w * cp_r, axis=-1)
    return h, cp


def enthalpy_mass(mech: Mechanism, T, Y):
    """Specific enthalpy [J/kg] of an ideal-gas mixture, from the NASA7 polynomials.

    Args: T [...] K; Y [..., ns] mass fractions (used as given, not renormalized).
    Returns: [...].
    """
    return _enthalpy_and_cp(mech, T, Y)[0]


def cp_mass(mech: Mechanism, T, Y):
    """Specific heat at constant pressure [J/(kg K)]. T [...], Y [..., ns] -> [...]."""
    return _enthalpy_and_cp(mech, T, Y)[1]


def temperature_from_enthalpy(mech: Mechanism, h, Y, T_guess, n_iter: int = 8):
    """Temperature [K] with enthalpy_mass(T, Y) == h, by `n_iter` Newton steps from T_guess.

    A fixed step count keeps it jit/scan friendly; from a guess within ~500 K it converges to
    rounding in 4-5 steps. Iterates are clipped to [0.5 * min t_min, 2 * max t_max] so that a wild
    guess cannot run into the negative-temperature branch of the polynomials.

    Args: h [...] J/kg; Y [..., ns]; T_guess [...] K (e.g. the previous or predicted T).
    Returns: T [...].
    """
    dtype = _float_dtype(h, Y, T_guess)
    h = jnp.asarray(h, dtype)
    lo, hi = 0.5 * float(np.min(mech.t_min)), 2.0 * float(np.max(mech.t_max))
    T0 = jnp.clip(jnp.broadcast_to(jnp.asarray(T_guess, dtype), h.shape), lo, hi)

    def newton(_, T):
        h_T, cp = _enthalpy_and_cp(mech, T, Y)
        return jnp.clip(T - (h_T - h) / cp, lo, hi)

    return jax.lax.fori_loop(0, n_iter, newton, T0)


def element_mass_fractions(mech: Mechanism, Y):
    """Element mass fractions [..., ne] of mass fractions Y [..., ns] (numpy or JAX)."""
    xp = array_namespace(Y)
    Y = xp.asarray(Y)
    return Y @ xp.asarray(mech.element_matrix, dtype=Y.dtype).T


def solve_small(a, b):
    """``x`` with ``a @ x == b`` for many small systems: a [..., n, n], b [..., n] -> [..., n].

    Gaussian elimination with partial pivoting, unrolled over n (meant for n <= ~8): only
    element-wise operations, so it runs wherever the step is exported (ONNX has no linear solve;
    see :mod:`condensation.jaxpr_onnx`). Same result as ``jnp.linalg.solve`` to rounding.
    """
    n = a.shape[-1]

    def at(m, i, axis):
        return jax.lax.index_in_dim(m, i, axis, keepdims=False)

    rows = [[at(at(a, i, -2), j, -1) for j in range(n)] + [at(b, i, -1)] for i in range(n)]
    for k in range(n):
        for i in range(k + 1, n):  # bring the largest |pivot| of column k to row k
            swap = jnp.abs(rows[i][k]) > jnp.abs(rows[k][k])
            pairs = list(zip(rows[i], rows[k], strict=True))
            rows[k] = [jnp.where(swap, u, v) for u, v in pairs]
            rows[i] = [jnp.where(swap, v, u) for u, v in pairs]
        for i in range(k + 1, n):
            f = rows[i][k] / rows[k][k]
            rows[i] = rows[i][:k] + [u - f * v
                                     for u, v in zip(rows[i][k:], rows[k][k:], strict=True)]
    x = [None] * n
    for i in reversed(range(n)):
        acc = rows[i][n]
        for j in range(i + 1, n):
            acc = acc - rows[i][j] * x[j]
        x[i] = acc / rows[i][i]
    return jnp.concatenate([v[..., None] for v in x], axis=-1)


SOLVERS = {"lu": lambda a, b: jnp.linalg.solve(a, b[..., None])[..., 0], "unrolled": solve_small}


def project_elements(mech: Mechanism, Y, element_mass, weighted: bool = True,
                     solver: str = "lu"):
    """Least-squares projection of Y onto {E Y = element_mass, sum(Y) = 1}, clipped, renormalized.

    ``weighted=True`` (default) minimizes sum(dY_k^2 / Y_k): corrections are proportional to
    Y_k, so zero species stay zero, trace species change by the same relative amount as major
    ones, and nothing is clipped unless a correction exceeds -100 %; conservation is then exact
    to rounding. Cost: one small batched linear solve, ~0.9 us/state at batch 4096 (float32).
    ``weighted=False``: the Euclidean minimum-norm correction, one precomputed matrix product
    (~0.1 us/state). It spreads the correction evenly over the species carrying the elements,
    so trace species get pushed negative; clipping them and renormalizing breaks conservation
    by about the clipped amount (~1e-3 for 1 % noise on an H2/air state). Either way, a
    species that is the only carrier of its element (N2 in h2o2.yaml) is restored exactly.

    Args: Y [..., ns]; element_mass [..., ne] target element mass fractions (e.g. of the
      initial state, via `element_mass_fractions`); solver: "lu" (``jnp.linalg.solve``) or
      "unrolled" (:func:`solve_small`, for exported graphs).
    Returns: [..., ns], >= 0 and summing to 1.
    """
    dtype = _float_dtype(Y, element_mass)
    Y = jnp.asarray(Y, dtype)
    target = jnp.asarray(element_mass, dtype)
    if weighted:
        # Solve on the element rows only when they already imply sum(Y) = 1 (always, for neutral
        # species): the Gram matrix is then regular except for elements absent from Y, whose
        # zero rows get a unit diagonal (their residual is 0 too). solve() is ~10x cheaper than
        # a batched pinv here.
        if not mech.sum_implied:
            target = jnp.concatenate([target, jnp.ones(target.shape[:-1] + (1,), dtype)], axis=-1)
        A = jnp.asarray(mech.constraint_matrix, dtype)  # [nc, ns]
        residual = Y @ A.T - target
        w = jnp.maximum(Y, 0.0)
        gram = jnp.einsum("ik,...k,jk->...ij", A, w, A)
        diag = jnp.diagonal(gram, axis1=-2, axis2=-1)
        tiny = jnp.finfo(dtype).tiny ** 0.5
        gram = gram + jnp.eye(A.shape[0], dtype=dtype) * jnp.where(diag <= tiny, 1.0, 0.0)[
            ..., None, :
        ]
        mu = SOLVERS[solver](gram, residual)
        Y = Y - w * (mu @ A)
    else:
        target = jnp.concatenate([target, jnp.ones(target.shape[:-1] + (1,), dtype)], axis=-1)
        E = jnp.asarray(mech.element_matrix, dtype)
        A = jnp.concatenate([E, jnp.ones((1, E.shape[1]), dtype)], axis=0)  # [ne + 1, ns]
        residual = Y @ A.T - target
        Y = Y - residual @ jnp.asarray(mech.projector, dtype).T
    Y = jnp.maximum(Y, 0.0)
    return Y / jnp.sum(Y, axis=-1, keepdims=True)


def ignition_delay(t, T, interpolate: bool = False):
    """Ignition delay: time of maximum dT/dt, along the last axis.

    dT/dt is taken as forward differences, located at interval midpoints. With ``interpolate``,
    the peak is the vertex of the parabola through the largest difference and its two
    neighbours (a time between samples; the midpoint itself where the peak lies at an end or
    the three do not bend down).

    Args: t [..., n] (or [n], broadcast against T) s; T [..., n] K.
    Returns: [...] s (numpy). A trajectory that never ignites still returns the time of its
      largest dT/dt; check the temperature rise to detect that.
    """
    T = np.asarray(T, dtype=np.float64)
    t = np.broadcast_to(np.asarray(t, dtype=np.float64), T.shape)
    rate = np.diff(T, axis=-1) / np.diff(t, axis=-1)
    i = np.argmax(rate, axis=-1)[..., None]
    mid = 0.5 * (t[..., :-1] + t[..., 1:])
    peak = np.take_along_axis(mid, i, axis=-1)[..., 0]
    if not interpolate or rate.shape[-1] < 3:
        return peak
    j = np.clip(i, 1, rate.shape[-1] - 2)
    x = [np.take_along_axis(mid, j + k, axis=-1)[..., 0] - peak for k in (-1, 0, 1)]
    y = [np.take_along_axis(rate, j + k, axis=-1)[..., 0] for k in (-1, 0, 1)]
    # the parabola through the three points, in time relative to the sampled peak
    den = (x[0] - x[1]) * (x[0] - x[2]) * (x[1] - x[2])
    a = (x[2] * (y[1] - y[0]) + x[1] * (y[0] - y[2]) + x[0] * (y[2] - y[1])) / den
    b = (x[2] ** 2 * (y[0] - y[1]) + x[1] ** 2 * (y[2] - y[0]) + x[0] ** 2 * (y[1] - y[2])) / den
    inside = (i[..., 0] == j[..., 0]) & (a < 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.clip(-b / (2 * a), x[0], x[2])
    return np.where(inside, peak + vertex, peak)


def initial_mass_fractions(
    mech_name: str, phi: float, fuel: str = DEFAULT_FUEL, oxidizer: str = DEFAULT_OXIDIZER
) -> np.ndarray:
    """Mass fractions [ns] of a fuel/oxidizer mixture at equivalence ratio phi (mole basis)."""
    gas = load_solution(mech_name)
    gas.TP = 300.0, ct.one_atm
    gas.set_equivalence_ratio(phi, fuel, oxidizer)
    return np.array(gas.Y)


def _set_tolerances(net: ct.ReactorNet, rtol: float | None, atol: float | None) -> None:
    if rtol is not None:
        net.rtol = rtol
    if atol is not None:
        net.atol = atol


def step_cantera(
    mech_name: str, T: float, P: float, Y, dt: float, rtol: float | None = None,
    atol: float | None = None,
) -> tuple[float, np.ndarray]:
    """One fresh constant-pressure Cantera step: a new reactor from (T, P, Y) advanced by dt.

    Args: T K; P Pa; Y [ns]; dt s; rtol/atol CVODE tolerances (None: Cantera's defaults).
    Returns (T(t+dt), Y(t+dt) [ns]).
    """
    gas = load_solution(mech_name)
    gas.TPY = T, P, Y
    reactor = ct.IdealGasConstPressureReactor(gas, clone=False)
    net = ct.ReactorNet([reactor])
    _set_tolerances(net, rtol, atol)
    net.advance(dt)
    return gas.T, np.array(gas.Y)


def cantera_trajectory(
    mech_name: str | Mechanism,
    T0: float,
    P: float,
    phi: float,
    dt: float,
    n_steps: int,
    fuel: str = DEFAULT_FUEL,
    oxidizer: str = DEFAULT_OXIDIZER,
    rtol: float | None = None,
    atol: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference autoignition: a constant-pressure reactor sampled at exact multiples of dt.

    Args: T0 K; P Pa; phi equivalence ratio (mole basis); dt s; n_steps; rtol/atol CVODE
      tolerances (None: Cantera's defaults, 1e-9 and 1e-15).
    Returns: t [n_steps + 1] s, T [n_steps + 1] K, Y [n_steps + 1, ns]; index 0 is the initial
      state.
    """
    name = mech_name.name if isinstance(mech_name, Mechanism) else mech_name
    gas = load_solution(name)
    gas.TPY = T0, P, initial_mass_fractions(name, phi, fuel, oxidizer)
    reactor = ct.IdealGasConstPressureReactor(gas, clone=False)
    net = ct.ReactorNet([reactor])
    _set_tolerances(net, rtol, atol)
    t = np.arange(n_steps + 1) * dt
    T = np.empty(n_steps + 1)
    Y = np.empty((n_steps + 1, gas.n_species))
    T[0], Y[0] = gas.T, gas.Y
    for i in range(1, n_steps + 1):
        net.advance(t[i])
        T[i], Y[i] = gas.T, gas.Y
    return t, T, Y
