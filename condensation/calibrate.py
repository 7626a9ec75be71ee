"""Calibration data through a network: what the consumers of a unit group read.

Compensation and importance need, for one :class:`~condensation.coupling.UnitGroup`, the
activations of its units on calibration inputs. Every consumer of a group reads exactly the
group's units (its input's last axis), so a consumer's *input* is the units' activations.
They are captured with ``flax.linen.intercept_methods`` at the consumer modules' ``__call__``
(the module at a consumer slot's path ``('params', *module, 'kernel')``) in one forward pass,
together with how the module applies its kernel (a Dense, or a Conv's strides and padding).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from condensation.coupling import Slot

Variables = dict[str, Any]


@dataclass(frozen=True)
class Reader:
    """How a consumer module applies its kernel to its input: ``dense`` (x [..., C] @ kernel
    [C, out]) or ``conv`` (NHWC input, HWIO kernel, these strides and padding)."""

    kind: str
    strides: tuple[int, ...] = (1, 1)
    padding: Any = "SAME"


def module_path(slot: Slot) -> tuple[str, ...]:
    """The module a slot's array belongs to: its path without collection and array name."""
    return tuple(slot.path[1:-1])


def _reader(module: nn.Module) -> Reader:
    if isinstance(module, nn.Dense):
        return Reader("dense")
    if isinstance(module, nn.Conv) and module.feature_group_count == 1:
        strides = module.strides or 1
        strides = (strides,) * 2 if isinstance(strides, int) else tuple(strides)
        padding = module.padding
        if isinstance(padding, int):
            padding = ((padding, padding),) * 2
        return Reader("conv", strides, padding)
    raise ValueError(f"consumer module {module.path} is a {type(module).__name__}: compensation "
                     "refits Dense and (ungrouped) Conv consumers only")


def consumer_inputs(module: nn.Module, variables: Variables, x: np.ndarray, consumers: Iterable[Slot],
                    batch_size: int = 256) -> dict[tuple[str, ...], tuple[np.ndarray, Reader]]:
    """The input [N, ..., C] of every consumer's module on ``x`` (evaluation mode) and how the
    module reads it, by module path. Raises ValueError if a consumer's module is not called."""
    consumers = list(consumers)
    mixed = [s for s in consumers if not getattr(s, "plain", True)]
    if mixed:
        raise ValueError(f"{'/'.join(mixed[0].path)} reads its units concatenated or flattened "
                         "with others: compensation and importance refit whole consumer axes only")
    wanted = {module_path(s) for s in consumers}
    readers: dict[tuple[str, ...], Reader] = {}

    def capture(variables, xb):
        seen: dict[tuple[str, ...], jax.Array] = {}

        def interceptor(next_fun, args, kwargs, context):
            path = tuple(context.module.path)
            if context.method_name == "__call__" and path in wanted and path not in seen:
                seen[path] = args[0]
                readers[path] = _reader(context.module)
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            module.apply(variables, xb)
        return seen

    fn = jax.jit(capture)
    chunks: dict[tuple[str, ...], list[np.ndarray]] = {p: [] for p in wanted}
    for start in range(0, len(x), batch_size):
        seen = fn(variables, jnp.asarray(x[start:start + batch_size]))
        missing = wanted - set(seen)
        if missing:
            raise ValueError(f"consumer modules {sorted(missing)} are not called by the network")
        for p, a in seen.items():
            chunks[p].append(np.asarray(a))
    return {p: (np.concatenate(c), readers[p]) for p, c in chunks.items()}
