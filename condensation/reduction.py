"""Reduction methods, keyed by name so that one config line switches between them.

A method maps ``(network, variables, threshold, activation, input_shape, rng)`` to a smaller
``(network, variables)``. ``condense`` merges aligned units; the baselines added later reduce
to the same sizes by other means.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from condensation.network import Network, reduce_network

Reducer = Callable[..., tuple[Network, dict[str, Any]]]


def _condense(net: Network, variables, *, threshold: float, activation: str, input_shape, rng=None):
    return reduce_network(net, variables, threshold=threshold, activation=activation,
                          input_shape=input_shape)


REDUCERS: dict[str, Reducer] = {"condense": _condense}


def reducer(name: str) -> Reducer:
    try:
        return REDUCERS[name]
    except KeyError:
        raise ValueError(
            f"reduce.method={name!r}; allowed: {', '.join(sorted(REDUCERS))}"
        ) from None
