"""A network is data: an architecture name, its widths and its variables.

Each architecture (``condensation/archs/``) knows how to build its Flax module from widths,
its coupling spec, and how to read its widths back from variable shapes. A reduced network is
rebuilt from its widths and checked against its variables with ``jax.eval_shape``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from condensation import coupling
from condensation.archs import architecture
from condensation.archs.base import group_widths
from condensation.condense import Variables, condense_variables


@dataclass(frozen=True)
class Network:
    """(architecture, widths, options): everything needed to rebuild the module.

    ``options`` are the architecture's keyword arguments other than the widths (output size,
    activation, gamma, ...); ``spec_options`` are those of its coupling spec only.
    """

    arch: str
    widths: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)
    spec_options: dict[str, Any] = field(default_factory=dict)

    def module(self) -> nn.Module:
        return architecture(self.arch).build(self.widths, **self.options)

    def spec(self) -> coupling.Spec:
        return architecture(self.arch).spec(self.widths, **self.options, **self.spec_options)

    def with_widths(self, widths: Sequence[int]) -> Network:
        return Network(self.arch, tuple(int(w) for w in widths), self.options, self.spec_options)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "widths": list(self.widths), "options": dict(self.options),
                "spec_options": dict(self.spec_options)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Network:
        return cls(d["arch"], tuple(d["widths"]), dict(d.get("options", {})),
                   dict(d.get("spec_options", {})))


def build_network(model_cfg: Mapping[str, Any], output_dim: int) -> Network:
    """The network of a config's ``model`` section (``arch``, ``widths``, the architecture's
    options, ``spec_options``) with the task's output size."""
    arch = architecture(model_cfg["arch"])
    options = {k: v for k, v in model_cfg.items()
               if k not in ("name", "arch", "widths", "spec_options")}
    options[arch.output_arg] = output_dim
    return Network(arch.name, tuple(model_cfg["widths"]), options,
                   dict(model_cfg.get("spec_options") or {}))


def abstract_variables(net: Network, input_shape: Sequence[int]) -> Variables:
    """Shapes and dtypes of ``net``'s variables, from ``jax.eval_shape`` (nothing allocated)."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    return jax.eval_shape(lambda k, x: net.module().init(k, x), jax.random.key(0), x)


def input_shape_of(net: Network, variables: Variables) -> tuple[int, ...]:
    """An input shape (no batch axis) that fits saved ``variables`` (the architecture's own
    rule: an MLP's input width, a conv net's channels at 32x32)."""
    return architecture(net.arch).input_shape(variables)


def check_shapes(net: Network, variables: Variables, input_shape: Sequence[int]) -> None:
    """Raise if ``variables`` do not have exactly the shapes ``net`` (rebuilt) expects."""
    want = jax.tree.map(lambda a: tuple(a.shape), abstract_variables(net, input_shape))
    have = jax.tree.map(lambda a: tuple(np.shape(a)), variables)
    if jax.tree.structure(want) != jax.tree.structure(have) or want != have:
        diff = [
            f"{jax.tree_util.keystr(p)}: expected {w}, got {h}"
            for (p, w), h in zip(jax.tree_util.tree_leaves_with_path(want),
                                 jax.tree.leaves(have), strict=False)
            if w != h
        ]
        raise ValueError(
            f"variables do not fit {net.arch} with widths {list(net.widths)}: "
            + ("; ".join(diff[:5]) or "different tree structure")
        )


def widths_of(net: Network, variables: Variables) -> tuple[int, ...]:
    """Read the widths back from the variable shapes through the coupling spec."""
    read = architecture(net.arch).widths_of or group_widths
    return tuple(read(variables, net.spec()))


def reduce_network(
    net: Network, variables: Variables, *, threshold: float, activation: str,
    input_shape: Sequence[int],
) -> tuple[Network, Variables]:
    """Condense ``variables`` of ``net``; returns the reduced (network, variables), shape-checked."""
    new_vars, _ = condense_variables(variables, net.spec(), threshold=threshold, activation=activation)
    new_net = net.with_widths(widths_of(net, new_vars))
    check_shapes(new_net, new_vars, input_shape)
    return new_net, new_vars


def count_params(variables: Variables) -> int:
    """Trainable parameters (the ``params`` collection; BatchNorm statistics are not counted)."""
    tree = variables.get("params", variables) if isinstance(variables, dict) else variables
    return int(sum(np.prod(np.shape(a)) for a in jax.tree.leaves(tree)))


def count_flops(net: Network, input_shape: Sequence[int]) -> float:
    """FLOPs of one forward pass of one sample, from XLA's cost analysis of the shapes alone."""
    variables = abstract_variables(net, input_shape)
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    lowered = jax.jit(lambda v, x: net.module().apply(v, x)).lower(variables, x)
    cost = lowered.cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0]
    return float(cost["flops"])
