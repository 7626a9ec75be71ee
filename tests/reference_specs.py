"""The coupling specs of the four registered architectures as they were written by hand before
discovery replaced them: the references that the discovered specs must equal (names, order,
producers, consumers and BatchNorms)."""
from __future__ import annotations

from condensation import coupling
from condensation.archs.mobilenetv2 import TORCHVISION_STAGES, _check_stages, blocks_of
from condensation.coupling import Producer, UnitGroup


def mlp_spec(n_hidden: int) -> coupling.Spec:
    return tuple(
        coupling.UnitGroup(f"Dense_{i}", (coupling.dense(f"Dense_{i}"),),
                           (coupling.rows(f"Dense_{i + 1}"),))
        for i in range(n_hidden)
    )


def cnn_spec(n_conv: int, n_dense: int) -> coupling.Spec:
    """Conv channels (BatchNorm folded), then dense units; each read by the next layer."""
    groups = []
    for i in range(n_conv):
        nxt = coupling.conv_in(f"Conv_{i + 1}") if i + 1 < n_conv else coupling.rows("Dense_0")
        groups.append(coupling.UnitGroup(
            f"Conv_{i}", (coupling.conv_bn(f"Conv_{i}", f"BatchNorm_{i}"),), (nxt,)))
    for i in range(n_dense):
        groups.append(coupling.UnitGroup(
            f"Dense_{i}", (coupling.dense(f"Dense_{i}"),), (coupling.rows(f"Dense_{i + 1}"),)))
    return tuple(groups)


def residual_cnn_spec(n_blocks: int, tie_stream: bool = True) -> coupling.Spec:
    """The stream channels are produced by the stem and by every block's second conv, and read
    by every block's first conv and by the head: one group when ``tie_stream``. With
    ``tie_stream=False`` the stream is left alone (only the block-internal channels merge),
    which is always safe.
    """
    conv_bn, conv_in = coupling.conv_bn, coupling.conv_in
    groups = []
    if tie_stream:
        producers = (conv_bn("stem", "stem_bn"),) + tuple(
            conv_bn(f"b{b}_conv2", f"b{b}_bn2") for b in range(n_blocks)
        )
        consumers = tuple(conv_in(f"b{b}_conv1") for b in range(n_blocks)) + (coupling.rows("head"),)
        groups.append(coupling.UnitGroup("stream", producers, consumers))
    for b in range(n_blocks):
        groups.append(coupling.UnitGroup(
            f"b{b}_hidden", (conv_bn(f"b{b}_conv1", f"b{b}_bn1"),), (conv_in(f"b{b}_conv2"),)))
    return tuple(groups)


def _conv_bn(conv: str, bn: str) -> Producer:
    return coupling.conv_bn(conv, bn, bias=False)


def mobilenetv2_spec(widths, *, stages=TORCHVISION_STAGES, tie_stream: bool = False, **_) -> coupling.Spec:
    """The spec as written by hand (the module docstring of archs/mobilenetv2.py)."""
    stages = _check_stages(stages)
    blocks = blocks_of(stages)
    if blocks[0].expand:
        stem_group = UnitGroup("stem", (_conv_bn("stem_conv", "stem_bn"),),
                               (coupling.conv_in("b0_expand", False, "b0_expand_bn"),))
    else:
        stem_group = UnitGroup("stem", (_conv_bn("stem_conv", "stem_bn"), _conv_bn("b0_dw", "b0_dw_bn")),
                               (coupling.conv_in("b0_project", False, "b0_project_bn"),))
    groups = [stem_group]
    for b in blocks:
        if b.expand:
            p = f"b{b.index}_"
            groups.append(UnitGroup(
                p + "hidden",
                (_conv_bn(p + "expand", p + "expand_bn"), _conv_bn(p + "dw", p + "dw_bn")),
                (coupling.conv_in(p + "project", False, p + "project_bn"),),
            ))
    groups.append(UnitGroup("head", (_conv_bn("head_conv", "head_bn"),),
                            (coupling.rows("classifier"),)))
    if tie_stream:
        for k in range(len(stages)):
            members = [b for b in blocks if b.stage == k]
            nxt = next((b for b in blocks if b.stage == k + 1), None)
            readers = [(f"b{b.index}_expand", f"b{b.index}_expand_bn") for b in members[1:]]
            readers.append((f"b{nxt.index}_expand", f"b{nxt.index}_expand_bn") if nxt is not None
                           else ("head_conv", "head_bn"))
            groups.append(UnitGroup(
                f"stage{k}_stream",
                tuple(_conv_bn(f"b{b.index}_project", f"b{b.index}_project_bn") for b in members),
                tuple(coupling.conv_in(conv, False, bn) for conv, bn in readers),
            ))
    return tuple(groups)


