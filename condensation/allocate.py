"""Per-layer widths for a parameter budget.

``uniform``: every width scaled by the same factor. ``importance``: the widths that remove the
least of each layer's importance (output energy x outgoing squared norm on calibration data,
:func:`condensation.compensate.importance`) for the parameters they save. A layer's *loss* at
``k`` units is the share of its total importance carried by the units beyond its ``k`` most
important; the widths minimise the summed loss over the layers under the budget (a Lagrange
multiplier found by bisection, the parameter cost of a unit re-measured at the widths found, a
few times). Dead units carry no importance and go first; a layer whose importance sits in a few
units shrinks more than one that spreads it evenly.

Both read only the original network, so every method reducing it gets the same widths.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from condensation.calibrate import consumer_inputs
from condensation.compensate import importance
from condensation.condense import group_size
from condensation.network import Network, abstract_variables, count_params

Variables = dict[str, Any]
ALLOCATIONS = ("uniform", "importance")


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


def importance_widths(net: Network, variables: Variables, fraction: float, input_shape,
                      calib: np.ndarray, iterations: int = 4) -> tuple[int, ...]:
    """The widths of at most ``fraction`` of ``net``'s parameters that keep the most of each
    layer's importance per parameter (module docstring)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction {fraction}; allowed: 0 < fraction <= 1")
    params = _Params(net, input_shape)
    budget = fraction * params(net.widths)
    groups = _width_of_group(net, input_shape)
    shares = importance_shares(net, variables, calib)
    widths = uniform_widths(net, fraction, input_shape)
    for _ in range(iterations):
        base = params(widths)
        cost = {j: max(base - params(widths[:j] + (widths[j] - 1,) + widths[j + 1:]), 1)
                if widths[j] > 1 else max(params(widths[:j] + (2,) + widths[j + 1:]) - base, 1)
                for j in groups}

        def at(lam: float, widths=widths, cost=cost) -> tuple[int, ...]:
            w = list(widths)
            for j, g in groups.items():
                w[j] = max(1, int(np.sum(shares[g] > lam * cost[j])))
            return tuple(w)

        lo, hi = 1e-12, 1.0  # log-bisection: at hi every layer keeps one unit
        for _ in range(50):
            mid = (lo * hi) ** 0.5
            lo, hi = (lo, mid) if params(at(mid)) <= budget else (mid, hi)
        widths = at(hi)
    return widths
