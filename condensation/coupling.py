"""Coupling specs: which axes of which arrays belong to one neuron or channel.

A spec is plain data, written once per architecture and tested; condensation never guesses it
from parameter names. Paths index the Flax variables dict, collection first
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

Path = tuple[str, ...]


@dataclass(frozen=True)
class Slot:
    """Axis ``axis`` of the array at ``path`` is indexed by the units."""

    path: Path
    axis: int


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
    consumers: tuple[Slot, ...]

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


def rows(name: str) -> Slot:
    """The input slices of a Dense kernel [in, out]."""
    return Slot(("params", name, "kernel"), 0)


def conv_in(name: str) -> Slot:
    """The input-channel slices of a conv kernel [kh, kw, cin, cout]."""
    return Slot(("params", name, "kernel"), 2)


def mlp_spec(n_hidden: int) -> Spec:
    """:class:`condensation.models.MLP` with ``n_hidden`` hidden layers (Dense_0..Dense_n)."""
    return tuple(
        UnitGroup(f"Dense_{i}", (dense(f"Dense_{i}"),), (rows(f"Dense_{i + 1}"),))
        for i in range(n_hidden)
    )


def cnn_spec(n_conv: int, n_dense: int) -> Spec:
    """:class:`condensation.models.CNN`: conv channels (BatchNorm folded), then dense units."""
    groups = []
    for i in range(n_conv):
        nxt = conv_in(f"Conv_{i + 1}") if i + 1 < n_conv else rows("Dense_0")
        groups.append(UnitGroup(f"Conv_{i}", (conv_bn(f"Conv_{i}", f"BatchNorm_{i}"),), (nxt,)))
    for i in range(n_dense):
        groups.append(UnitGroup(f"Dense_{i}", (dense(f"Dense_{i}"),), (rows(f"Dense_{i + 1}"),)))
    return tuple(groups)


def residual_cnn_spec(n_blocks: int, tie_stream: bool = True) -> Spec:
    """:class:`condensation.models.ResidualCNN`.

    The stream channels are produced by the stem and by every block's second conv, and read by
    every block's first conv and by the head: one group when ``tie_stream``. With
    ``tie_stream=False`` the stream is left alone (only the block-internal channels merge),
    which is always safe.
    """
    groups = []
    if tie_stream:
        producers = (conv_bn("stem", "stem_bn"),) + tuple(
            conv_bn(f"b{b}_conv2", f"b{b}_bn2") for b in range(n_blocks)
        )
        consumers = tuple(conv_in(f"b{b}_conv1") for b in range(n_blocks)) + (rows("head"),)
        groups.append(UnitGroup("stream", producers, consumers))
    for b in range(n_blocks):
        groups.append(
            UnitGroup(f"b{b}_hidden", (conv_bn(f"b{b}_conv1", f"b{b}_bn1"),), (conv_in(f"b{b}_conv2"),))
        )
    return tuple(groups)
