"""Coupling specs: which axes of which arrays belong to one neuron or channel.

A spec is plain data, written once per architecture (``condensation/archs/``) and tested;
condensation never guesses it from parameter names. Paths index the Flax variables dict, collection first
(``('params', 'Dense_0', 'kernel')``, ``('batch_stats', 'BatchNorm_0', 'mean')``).

A :class:`UnitGroup` is one set of mergeable units (the neurons of a hidden layer, the output
channels of a conv, or channels tied together through residual additions):

- ``producers`` compute the units. Each is a kernel whose ``axis`` indexes the units, an optional
  bias and an optional BatchNorm applied right after. The units' *input vectors* (used for the
  similarity) are the concatenation over producers of the BatchNorm-folded kernel slices and
  biases. Producer arrays are kept from each group's representative.
- ``consumers`` read the units: the next layer's input slices. They are summed over each group.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

Path = tuple[str, ...]


def get(tree: dict[str, Any], path: Path) -> Any:
    """The array at ``path`` of a nested variables dict."""
    for key in path:
        tree = tree[key]
    return tree


@dataclass(frozen=True)
class Slot:
    """Axis ``axis`` of the array at ``path`` is indexed by the units."""

    path: Path
    axis: int


@dataclass(frozen=True)
class Consumer(Slot):
    """A slot that reads the units (the next layer's input slices), with what follows that
    layer's output: its ``bias`` or, for a layer without one, the ``bn`` normalizing it.
    Compensation folds the constant part of its refit there; neither: no constant.

    When the layer reads the units among others, its axis is longer than the group:

    - ``before``, ``after``: the units were concatenated with other parts (a U-Net skip); the
      parts before and after them, each a fixed size or the unit axis of another group's
      kernel (its current size), so the offset follows the other groups as they shrink;
    - ``split``: the units were flattened with other axes (a conv's channels flattened into a
      dense layer); the axis is these sizes in row-major order, ``None`` where the units are.
    """

    bias: Path | None = None
    bn: BatchNormRef | None = None
    before: tuple[Slot | int, ...] = ()
    after: tuple[Slot | int, ...] = ()
    split: tuple[int | None, ...] = ()

    @property
    def plain(self) -> bool:
        """The axis holds exactly the units (no concatenation, no flatten)."""
        return not self.before and not self.after and not self.split


def _sizes(variables: dict[str, Any], parts) -> int:
    return sum(p if isinstance(p, int) else int(np.shape(get(variables, p.path))[p.axis])
               for p in parts)


def unit_offset(variables: dict[str, Any], c: Consumer) -> int:
    """Where a consumer's units start along its axis (0 unless concatenated after others)."""
    return _sizes(variables, c.before)


def consumer_length(variables: dict[str, Any], c: Consumer, n: int) -> int:
    """The length the consumer's axis must have when the group has ``n`` units."""
    if c.split:
        return int(np.prod([n if d is None else d for d in c.split]))
    return _sizes(variables, c.before) + n + _sizes(variables, c.after)


def read_units(variables: dict[str, Any], c: Consumer, n: int):
    """The consumer's slices for the ``n`` units, unit axis first: ``[n, ...]`` (for a flatten,
    ``[n, other flattened axes..., rest]``)."""
    x = jnp.moveaxis(get(variables, c.path), c.axis, 0)
    if c.split:
        j = c.split.index(None)
        x = x.reshape(tuple(n if d is None else d for d in c.split) + x.shape[1:])
        return jnp.moveaxis(x, j, 0)
    off = unit_offset(variables, c)
    return x if c.plain else x[off:off + n]


def write_units(variables: dict[str, Any], c: Consumer, n: int, units):
    """The consumer's whole array with its ``n`` units' slices replaced by ``units`` [m, ...]
    (the layout :func:`read_units` gives), ``m`` units now."""
    if c.split:
        j = c.split.index(None)
        x = jnp.moveaxis(units, 0, j)
        x = x.reshape((-1,) + x.shape[len(c.split):])
        return jnp.moveaxis(x, 0, c.axis)
    full = jnp.moveaxis(get(variables, c.path), c.axis, 0)
    off = unit_offset(variables, c)
    x = jnp.concatenate([full[:off], units.astype(full.dtype), full[off + n:]], axis=0)
    return jnp.moveaxis(x, 0, c.axis)


@dataclass(frozen=True)
class BatchNormRef:
    """A BatchNorm over the units: y = scale * (x - mean) / sqrt(var + eps) + bias. All [C]."""

    scale: Path
    bias: Path
    mean: Path
    var: Path
    eps: float = 1e-5

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.scale, self.bias, self.mean, self.var)

    @classmethod
    def flax(cls, name: str, eps: float = 1e-5) -> BatchNormRef:
        """The layout of ``flax.linen.BatchNorm`` called ``name``."""
        return cls(
            scale=("params", name, "scale"),
            bias=("params", name, "bias"),
            mean=("batch_stats", name, "mean"),
            var=("batch_stats", name, "var"),
            eps=eps,
        )


@dataclass(frozen=True)
class Producer:
    kernel: Slot
    bias: Path | None = None
    bn: BatchNormRef | None = None


@dataclass(frozen=True)
class UnitGroup:
    name: str
    producers: tuple[Producer, ...]
    consumers: tuple[Consumer, ...]

    @property
    def unit_slots(self) -> tuple[Slot, ...]:
        """Every array axis that has one entry per unit and is kept from the representative."""
        slots = []
        for p in self.producers:
            slots.append(p.kernel)
            if p.bias is not None:
                slots.append(Slot(p.bias, 0))
            if p.bn is not None:
                slots.extend(Slot(path, 0) for path in p.bn.paths)
        return tuple(slots)


Spec = tuple[UnitGroup, ...]


def dense(name: str) -> Producer:
    return Producer(Slot(("params", name, "kernel"), 1), ("params", name, "bias"))


def conv_bn(conv: str, bn: str, bias: bool = True) -> Producer:
    """A conv [kh, kw, cin, cout] followed by a flax BatchNorm over cout."""
    return Producer(
        Slot(("params", conv, "kernel"), 3),
        ("params", conv, "bias") if bias else None,
        BatchNormRef.flax(bn),
    )


def rows(name: str) -> Consumer:
    """The input slices of a Dense kernel [in, out] (with its bias)."""
    return Consumer(("params", name, "kernel"), 0, bias=("params", name, "bias"))


def conv_in(name: str, bias: bool = True, bn: str | None = None) -> Consumer:
    """The input-channel slices of a conv kernel [kh, kw, cin, cout]; its bias, or the flax
    BatchNorm ``bn`` after a conv without one."""
    return Consumer(("params", name, "kernel"), 2, bias=("params", name, "bias") if bias else None,
                    bn=BatchNormRef.flax(bn) if bn else None)
