"""Per-layer widths for a parameter budget.

``uniform``: every width scaled by the same factor. The two others give each layer (unit group)
a *loss* at ``k`` units, a share of that layer in [0, 1], and choose the widths that minimise
the summed loss over the layers under the budget (a Lagrange multiplier found by bisection, the
parameter cost of a unit re-measured at the widths found, a few times):

- ``importance``: the share of the layer's importance (output energy x outgoing squared norm on
  calibration data, :func:`condensation.compensate.importance`) carried by the units beyond its
  ``k`` most important: what removing them costs if nothing makes up for them. Dead units carry
  no importance and go first; a layer whose importance sits in a few units shrinks more than one
  that spreads it evenly.
- ``reconstruction``: the share of the energy of the layer's consumers' outputs (centred where
  the consumer has a bias or BatchNorm to take the constant) that the best ``k`` units, chosen
  greedily, leave unexplained after a (ridge) least-squares refit of the consumers: what
  removing the others costs once least-squares compensation has made up what it can. Units
  whose activations are linear combinations of others cost nothing here (a condensed layer's
  copies), while importance counts them like any other.

All read only the original network, so every method reducing it gets the same widths.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from condensation.calibrate import consumer_inputs
from condensation.compensate import RIDGE, _input_of, _normal_equations, importance
from condensation.condense import group_size
from condensation.coupling import UnitGroup, get
from condensation.network import Network, abstract_variables, count_params

Variables = dict[str, Any]
ALLOCATIONS = ("uniform", "importance", "reconstruction")


class _Params:
    """Parameter count of ``net`` at given widths (from shapes alone, cached)."""

    def __init__(self, net: Network, input_shape: Sequence[int]):
        self.net, self.input_shape, self.cache = net, tuple(input_shape), {}

    def __call__(self, widths: Sequence[int]) -> int:
        key = tuple(int(w) for w in widths)
        if key not in self.cache:
            self.cache[key] = count_params(abstract_variables(self.net.with_widths(key), self.input_shape))
        return self.cache[key]


def uniform_widths(net: Network, fraction: float, input_shape) -> tuple[int, ...]:
    """The widths, every one scaled by the same factor, whose network has at most ``fraction``
    of ``net``'s parameters (the largest such factor, by bisection)."""
    params = _Params(net, input_shape)
    full = params(net.widths)

    def widths(q: float) -> tuple[int, ...]:
        return tuple(max(1, int(round(q * w))) for w in net.widths)

    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if params(widths(mid)) <= fraction * full:
            lo = mid
        else:
            hi = mid
    return widths(lo)


def target_sizes(net: Network, target: Sequence[int], input_shape) -> dict[str, int]:
    """Units per coupled group of ``net`` at widths ``target``."""
    small = net.with_widths(target)
    shapes = abstract_variables(small, input_shape)
    return {g.name: group_size(shapes, g) for g in small.spec()}


def _width_of_group(net: Network, input_shape) -> dict[int, int]:
    """{index into ``net.widths``: index of the spec group whose size it sets}; a width that
    sets no group's size alone (e.g. a stem outside every group) is left out."""
    base = {g.name: i for i, g in enumerate(net.spec())}
    ref, found = target_sizes(net, net.widths, input_shape), {}
    for j, w in enumerate(net.widths):
        if w < 2:
            continue
        smaller = net.widths[:j] + (w - 1,) + net.widths[j + 1:]
        changed = [name for name, n in target_sizes(net, smaller, input_shape).items() if n != ref[name]]
        if len(changed) == 1:
            found[j] = base[changed[0]]
    return found


def importance_shares(net: Network, variables: Variables, calib: np.ndarray) -> list[np.ndarray]:
    """Per spec group, each unit's share of the group's importance on ``calib``, descending."""
    spec = net.spec()
    inputs = consumer_inputs(net.module(), variables, calib, [g.consumers[0] for g in spec])
    shares = []
    for g in spec:
        s = np.sort(np.asarray(importance(variables, g, inputs), np.float64))[::-1]
        total = s.sum()
        shares.append(s / total if total > 0 else np.full(len(s), 1.0 / len(s)))
    return shares


def _greedy_gains(grams: list[tuple[np.ndarray, np.ndarray, float]], n: int) -> np.ndarray:
    """[n]: the output energy each unit adds, in the order a greedy forward selection takes
    them, to what the units before it explain by ridge least squares; the energy explained by a
    set of units S is tr(C_S^T (G_SS + lam I)^-1 C_S) summed over the consumers, with G a
    consumer's feature Gram matrix, lam its ridge and C = G W the features' products with its
    output (the features times its kernel W). A unit's features are the ``taps`` consecutive
    blocks of ``n`` columns (a conv's kernel rows (kh, kw, unit)); each step takes the unit of
    largest gain and projects it out of every (ridged) Gram matrix."""
    state = []
    for g, w, lam in grams:
        taps = len(g) // n
        idx = (np.arange(taps)[None, :] * n + np.arange(n)[:, None])  # [n, taps]: a unit's columns
        state.append([g + lam * np.eye(len(g)), g @ w, idx])
    left, gains = np.ones(n, bool), np.zeros(n)
    for step in range(n):
        units = np.flatnonzero(left)  # a unit taken has been projected out: its block is 0
        total = np.zeros(len(units))
        for g, c, idx in state:
            cols = idx[units]  # [u, taps]
            blocks = g[cols[:, :, None], cols[:, None, :]]  # [u, taps, taps]
            cb = c[cols]  # [u, taps, out]
            total += np.einsum("ntk,ntk->n", cb, np.linalg.solve(blocks, cb))
        if not np.all(np.isfinite(total)):
            raise FloatingPointError("the reconstruction gains are not finite (a consumer's "
                                     "calibration inputs hold inf or nan)")
        best = int(np.argmax(total))
        j = int(units[best])
        gains[step], left[j] = max(total[best], 0.0), False
        for st in state:
            g, c, idx = st
            cols = idx[j]
            inv = np.linalg.inv(g[np.ix_(cols, cols)])
            gj = g[:, cols]  # [F, taps]
            st[0] = g - gj @ inv @ gj.T
            st[1] = c - gj @ (inv @ c[cols])
    return gains


def reconstruction_shares(net: Network, variables: Variables, calib: np.ndarray,
                          ridge: float = RIDGE) -> list[np.ndarray]:
    """Per spec group, the share of its consumers' output energy on ``calib`` that each unit
    adds to what the units before it reconstruct (greedy order, module docstring)."""
    spec = net.spec()
    inputs = consumer_inputs(net.module(), variables, calib, [c for g in spec for c in g.consumers])
    return [_reconstruction_gains(variables, g, inputs, ridge) for g in spec]


def _reconstruction_gains(variables: Variables, group: UnitGroup, inputs, ridge: float) -> np.ndarray:
    grams, n = [], None
    for c in group.consumers:
        x, reader = _input_of(inputs, c)
        kernel = np.moveaxis(np.asarray(get(variables, c.path), np.float32), c.axis, -2)
        n = kernel.shape[-2]
        ptp, _, sp, _, m = _normal_equations(x, np.arange(n), kernel, reader)
        if c.bias is not None or c.bn is not None:  # the constant goes to the bias: centre
            ptp = ptp - np.outer(sp, sp) / m
        ptp = ptp / m
        w = np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1])
        grams.append((ptp, w, ridge * max(np.trace(ptp) / len(ptp), 1e-12)))
    gains = _greedy_gains(grams, n)
    total = gains.sum()
    # nothing to explain (every unit dead, or constant and centred away): all alike
    return gains / total if total > 0 else np.full(n, 1.0 / n)


def importance_widths(net: Network, variables: Variables, fraction: float, input_shape,
                      calib: np.ndarray, iterations: int = 4) -> tuple[int, ...]:
    """The widths of at most ``fraction`` of ``net``'s parameters that keep the most of each
    layer's importance per parameter (module docstring)."""
    return allocated_widths(net, fraction, input_shape, importance_shares(net, variables, calib),
                            iterations)


def reconstruction_widths(net: Network, variables: Variables, fraction: float, input_shape,
                          calib: np.ndarray, iterations: int = 4) -> tuple[int, ...]:
    """The widths of at most ``fraction`` of ``net``'s parameters that leave the least of each
    layer's consumers' outputs unexplained after a least-squares refit (module docstring)."""
    return allocated_widths(net, fraction, input_shape,
                            reconstruction_shares(net, variables, calib), iterations)


def allocated_widths(net: Network, fraction: float, input_shape, gains: list[np.ndarray],
                     iterations: int = 4) -> tuple[int, ...]:
    """The widths of at most ``fraction`` of ``net``'s parameters that keep the most of the
    layers' summed ``gains`` (per spec group, what its 1st, 2nd, ... unit adds, a share of the
    group) per parameter."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction {fraction}; allowed: 0 < fraction <= 1")
    params = _Params(net, input_shape)
    budget = fraction * params(net.widths)
    groups = _width_of_group(net, input_shape)
    kept = [np.concatenate([[0.0], np.cumsum(g)]) for g in gains]  # share kept at k units
    descending = [bool(np.all(np.diff(g) <= 0)) for g in gains]
    widths = uniform_widths(net, fraction, input_shape)
    for _ in range(iterations):
        base = params(widths)
        cost = {j: max(base - params(widths[:j] + (widths[j] - 1,) + widths[j + 1:]), 1)
                if widths[j] > 1 else max(params(widths[:j] + (2,) + widths[j + 1:]) - base, 1)
                for j in groups}

        def at(lam: float, widths=widths, cost=cost) -> tuple[int, ...]:
            # per layer, the k that maximises the share kept minus lam x its parameters (for
            # descending gains: the units whose gain exceeds lam x a unit's cost)
            w = list(widths)
            for j, g in groups.items():
                if descending[g]:  # exactly the units worth more than their cost (no rounding)
                    w[j] = max(1, int(np.sum(gains[g] > lam * cost[j])))
                else:
                    w[j] = max(1, int(np.argmax(kept[g] - lam * cost[j] * np.arange(len(kept[g])))))
            return tuple(w)

        lo, hi = 1e-12, 1.0  # log-bisection: at hi every layer keeps one unit
        for _ in range(50):
            mid = (lo * hi) ** 0.5
            lo, hi = (lo, mid) if params(at(mid)) <= budget else (mid, hi)
        widths = at(hi)
    return widths
