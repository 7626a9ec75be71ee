"""MobileNetV2 for 32x32 inputs (torchvision's layout, 10-class head) and its coupling spec.

Layout: stem conv 3x3 -> BN -> act; inverted residual blocks, each
``[expand 1x1 -> BN -> act] -> depthwise 3x3 -> BN -> act -> project 1x1 -> BN (linear)``,
added to its input when the block is not the first of its stage; head conv 1x1 -> BN -> act;
global average pool; Dense classifier. Convolutions have no bias (a BatchNorm follows each).
torchvision's dropout before the classifier is the option ``dropout`` (default 0: left out, as
in the published runs; torchvision uses 0.2); ``bn_scale`` is every BatchNorm's initial scale
(default 1, torchvision's; a small one starts the network small, like a small initialization).

Stages are torchvision's ``(t, c, n, s)``: expansion ratio, output channels, blocks, stride of the
first block. Block ``b`` (0..16 at the default) names its layers ``b{b}_expand``, ``b{b}_dw``,
``b{b}_project`` (BatchNorms: the same name + ``_bn``); the rest are ``stem_conv``/``stem_bn``,
``head_conv``/``head_bn`` and ``classifier``.

**Widths** (what condensation changes; one entry per group of :func:`mobilenetv2_spec`, in order):

- ``stem``: the stem's output channels. Block 0 has t = 1 (no expansion conv): its depthwise
  filters act on these channels, so they form one group with the stem, like an expansion group.
- one hidden (expansion) width per block with an expansion conv (t != 1; blocks 1..16): the
  channels of ``expand -> BN -> act -> depthwise -> BN -> act`` — the main target.
- ``head``: the head conv's channels (1280), read by the classifier.
- optionally, one bottleneck ("stream") width per stage: the projection outputs of the stage,
  tied through its residual additions. Merged only with the spec option ``tie_stream``; without
  them in ``widths`` they are the stages' ``c``.

So ``widths`` has ``2 + n_expanding_blocks`` entries (18 at the default) or that plus
``n_stages`` (25): see :func:`default_widths`.

Depthwise convolution is :class:`DepthwiseConv3x3`, nine shifted multiply-adds with the usual
``(3, 3, 1, C)`` kernel: XLA's grouped convolution is 4-5x slower on CPU (docs/measurements.md).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from condensation import coupling
from condensation.activations import activation as get_activation
from condensation.archs.base import (
    Architecture,
    check_widths,
    discovered_spec,
    image_input,
    register,
    scaled_normal,
)

# torchvision's inverted residual setting: (expansion t, channels c, repeats n, stride s)
TORCHVISION_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def _taps(xp: jax.Array, s: int, ho: int, wo: int):
    """(i, j, view) for the 3x3 taps: the view [N, ho, wo, C] of the padded ``xp`` that tap
    (i, j) reads at stride ``s``."""
    for i in range(3):
        for j in range(3):
            yield i, j, xp[:, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s, :]


def _shift_sum(xp: jax.Array, kernel: jax.Array, s: int, ho: int, wo: int) -> jax.Array:
    """sum over the taps of kernel[i, j, 0] times the view tap (i, j) reads: nine shifted
    multiply-adds."""
    out = None
    for i, j, view in _taps(xp, s, ho, wo):
        out = view * kernel[i, j, 0] if out is None else out + view * kernel[i, j, 0]
    return out


def _depthwise3x3_padded(x: jax.Array, kernel: jax.Array, stride: int) -> tuple[jax.Array, jax.Array]:
    """The output and the padded input it was computed from."""
    _, h, w, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return _shift_sum(xp, kernel, stride, (h - 1) // stride + 1, (w - 1) // stride + 1), xp


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise3x3(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """x [N, H, W, C], kernel [3, 3, 1, C] -> [N, ceil(H / stride), ceil(W / stride), C]: the
    depthwise 3x3 convolution with padding 1, as nine shifted multiply-adds. Its gradient rule
    computes the same derivatives as differentiating this function, in the form XLA's CPU backend
    runs fastest: the input's as one more shifted multiply-add (of the cotangent, spread by the
    stride and padded, with the kernel flipped), the kernel's as one reduction per tap."""
    return _depthwise3x3_padded(x, kernel, stride)[0]


def _depthwise3x3_fwd(x, kernel, stride):
    out, xp = _depthwise3x3_padded(x, kernel, stride)
    return out, (xp, kernel)


def _depthwise3x3_bwd(stride, residuals, g):
    xp, kernel = residuals
    h, w, c = xp.shape[1] - 2, xp.shape[2] - 2, xp.shape[3]
    ho, wo = g.shape[1:3]
    # g spread to the stride (s - 1 zeros between entries) and padded so that input row r
    # receives sum_i g[(r + 1 - i) / s] * k[i]: the correlation with the flipped kernel
    zero = jnp.zeros((), g.dtype)
    gp = jax.lax.pad(g, zero, ((0, 0, 0), (1, h - stride * (ho - 1), stride - 1),
                               (1, w - stride * (wo - 1), stride - 1), (0, 0, 0)))
    dx = _shift_sum(gp, kernel[::-1, ::-1], 1, h, w)
    dk = jnp.stack([jnp.sum(view * g, axis=(0, 1, 2)) for _, _, view in _taps(xp, stride, ho, wo)])
    return dx, dk.reshape(3, 3, 1, c).astype(kernel.dtype)


depthwise3x3.defvjp(_depthwise3x3_fwd, _depthwise3x3_bwd)


class DepthwiseConv3x3(nn.Module):
    """Depthwise 3x3 convolution, padding 1, no bias: x [N, H, W, C] -> [N, H', W', C].

    H' = ceil(H / stride). The param ``kernel`` [3, 3, 1, C] is the one
    ``nn.Conv(C, (3, 3), strides=stride, padding=1, feature_group_count=C, use_bias=False)``
    would hold, and the output is the same; computed as nine strided slices of the padded input
    times one kernel tap each, which XLA runs several times faster on CPU than a grouped conv,
    with its own gradient rule (:func:`depthwise3x3`).
    """

    stride: int = 1
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.stride not in (1, 2):
            raise ValueError(f"DepthwiseConv3x3 supports stride 1 or 2, got {self.stride}")
        kernel = self.param("kernel", self.kernel_init, (3, 3, 1, x.shape[-1]))
        return depthwise3x3(x, kernel, self.stride)


class Conv1x1(nn.Conv):
    """1x1 convolution, no bias: x [N, H, W, C] -> [N, H, W, features], a matrix product over C.

    An ``nn.Conv(features, (1, 1), use_bias=False)`` (so read as one wherever a Conv is: the
    param ``kernel`` [1, 1, C, features] has the same name, shape and initial draws, and the
    output is the same) computed as a matrix product: as a convolution, XLA's CPU backend takes
    the kernel's gradient as a convolution with an HxW window over transposed activations
    (MobileNetV2's b1 at 16x16: 20 ms of a 320-ms training step), as a product it is a dot.
    """

    kernel_size: Sequence[int] = (1, 1)
    use_bias: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        one = (None, 1, (1, 1))
        checks = {"kernel_size": tuple(self.kernel_size) == (1, 1), "use_bias": not self.use_bias,
                  "strides": self.strides in one, "input_dilation": self.input_dilation in one,
                  "kernel_dilation": self.kernel_dilation in one,
                  "feature_group_count": self.feature_group_count == 1, "mask": self.mask is None,
                  "padding": self.padding in ("SAME", "VALID", 0, ((0, 0), (0, 0)))}
        wrong = {k: getattr(self, k) for k, ok in checks.items() if not ok}
        if wrong:
            raise ValueError("Conv1x1 is a plain 1x1 convolution (kernel_size (1, 1), no bias, "
                             f"padding, strides, dilation, groups or mask), got {wrong}")
        kernel = self.param("kernel", self.kernel_init, (1, 1, x.shape[-1], self.features),
                            self.param_dtype)
        x, kernel = self.promote_dtype(x, kernel, dtype=self.dtype)
        return jnp.dot(x, kernel[0, 0], precision=self.precision)


@dataclass(frozen=True)
class Block:
    """One inverted residual block, from the stage layout alone (never from the widths)."""

    index: int
    stage: int
    expand: bool     # has an expansion conv (t != 1)
    stride: int
    residual: bool   # adds its input: every block of a stage but the first


def blocks_of(stages: Sequence[Sequence[int]], strides: Sequence[int] | None = None) -> tuple[Block, ...]:
    stages = _check_stages(stages)
    if strides is not None:
        strides = tuple(int(s) for s in strides)
        if len(strides) != len(stages) or any(s not in (1, 2) for s in strides):
            raise ValueError(
                f"strides must hold one stride (1 or 2) per stage ({len(stages)}), got {list(strides)}"
            )
    out = []
    for k, (t, _, n, s) in enumerate(stages):
        for i in range(n):
            stride = (strides[k] if strides is not None else s) if i == 0 else 1
            out.append(Block(len(out), k, t != 1, stride, i > 0))
    if any(not b.expand for b in out[1:]):
        raise ValueError("only the first block may have expansion ratio t = 1 (as in torchvision)")
    return tuple(out)


def _check_stages(stages) -> tuple[tuple[int, int, int, int], ...]:
    stages = tuple(tuple(int(v) for v in st) for st in stages)
    if not stages or any(len(st) != 4 or min(st) < 1 for st in stages):
        raise ValueError(f"stages must be a list of (t, c, n, s) positive integers, got {stages}")
    return stages


def default_widths(stages: Sequence[Sequence[int]] = TORCHVISION_STAGES, *, stem: int = STEM_CHANNELS,
                   head: int = HEAD_CHANNELS, with_streams: bool = False) -> tuple[int, ...]:
    """torchvision's widths: ``(stem, hidden of each expanding block (in * t), head[, streams])``."""
    stages = _check_stages(stages)
    hidden, cin = [], stem
    for t, c, n, _ in stages:
        for _ in range(n):
            if t != 1:
                hidden.append(cin * t)
            cin = c
    streams = tuple(c for _, c, _, _ in stages) if with_streams else ()
    return (stem, *hidden, head, *streams)


@dataclass(frozen=True)
class Layout:
    """``widths`` read per layer: hidden[b] is None for a block without expansion conv."""

    stem: int
    hidden: tuple[int | None, ...]
    head: int
    streams: tuple[int, ...]
    has_streams: bool  # the stream widths were given in ``widths``


def parse_widths(widths: Sequence[int], stages: Sequence[Sequence[int]] = TORCHVISION_STAGES) -> Layout:
    stages = _check_stages(stages)
    widths = check_widths(widths)
    blocks = blocks_of(stages)
    n_exp = sum(b.expand for b in blocks)
    base = 2 + n_exp
    if len(widths) not in (base, base + len(stages)):
        raise ValueError(
            f"mobilenetv2 widths must have {base} entries (stem, {n_exp} expansion widths, head) or "
            f"{base + len(stages)} (the same plus {len(stages)} stage stream widths), got "
            f"{len(widths)}: {list(widths)}"
        )
    it = iter(widths[1:1 + n_exp])
    hidden = tuple(next(it) if b.expand else None for b in blocks)
    has_streams = len(widths) > base
    streams = widths[base:] if has_streams else tuple(c for _, c, _, _ in stages)
    return Layout(widths[0], hidden, widths[1 + n_exp], tuple(streams), has_streams)


class MobileNetV2(nn.Module):
    """MobileNetV2 x [N, H, W, 3] -> logits [N, num_classes]; widths as in the module docstring.

    ``stem_stride`` 2 and torchvision's stage strides take 32x32 inputs to 1x1 before the head:
    the fast choice on CPU (measurements.md); ``strides`` overrides the stages' strides.
    """

    widths: Sequence[int]
    num_classes: int
    activation: str = "relu6"
    gamma: float = 1.0
    stem_stride: int = 2
    strides: Sequence[int] | None = None
    stages: Sequence[Sequence[int]] = TORCHVISION_STAGES
    dropout: float = 0.0
    bn_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = get_activation(self.activation)
        init = scaled_normal(self.gamma)
        lay = parse_widths(self.widths, self.stages)
        blocks = blocks_of(self.stages, self.strides)

        def bn(name):
            return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                scale_init=nn.initializers.constant(self.bn_scale), name=name)

        def conv1x1(c, name):
            return Conv1x1(c, kernel_init=init, name=name)

        x = nn.Conv(lay.stem, (3, 3), strides=self.stem_stride, padding=1, use_bias=False,
                    kernel_init=init, name="stem_conv")(x)
        x = act(bn("stem_bn")(x))
        for blk in blocks:
            p = f"b{blk.index}_"
            y = x
            if blk.expand:
                y = act(bn(p + "expand_bn")(conv1x1(lay.hidden[blk.index], p + "expand")(y)))
            y = DepthwiseConv3x3(blk.stride, kernel_init=init, name=p + "dw")(y)
            y = act(bn(p + "dw_bn")(y))
            y = bn(p + "project_bn")(conv1x1(lay.streams[blk.stage], p + "project")(y))
            x = x + y if blk.residual else y
        x = act(bn("head_bn")(conv1x1(lay.head, "head_conv")(x)))
        x = x.mean(axis=(1, 2))
        if self.dropout > 0:
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, kernel_init=init, name="classifier")(x)


def build(widths, *, num_classes, activation="relu6", gamma=1.0, stem_stride=2, strides=None,
          stages=TORCHVISION_STAGES, dropout=0.0, bn_scale=1.0) -> MobileNetV2:
    """The ``mobilenetv2`` architecture's builder (options as stored in network.json)."""
    stages = _check_stages(stages)
    strides = None if strides is None else tuple(int(s) for s in strides)
    blocks_of(stages, strides)  # fail here, not inside init
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
    parse_widths(widths, stages)
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if not float(bn_scale) > 0:
        raise ValueError(f"bn_scale must be > 0, got {bn_scale}")
    return MobileNetV2(widths=check_widths(widths), num_classes=int(num_classes),
                       activation=activation, gamma=float(gamma), stem_stride=int(stem_stride),
                       strides=strides, stages=stages, dropout=float(dropout),
                       bn_scale=float(bn_scale))


def mobilenetv2_spec(widths, *, stages=TORCHVISION_STAGES, tie_stream: bool = False,
                     **options) -> coupling.Spec:
    """Coupling spec, discovered from the traced network; its groups in the order of ``widths``
    (see the module docstring):

    - ``stem``: producers stem conv+BN and block 0's depthwise+BN; consumer block 0's projection.
    - ``b{b}_hidden``: producers the expansion conv+BN **and** the depthwise filter+BN (a channel
      is the whole path expand -> BN -> act -> depthwise -> BN -> act: both stages must agree for
      the merge to be exact); consumer the projection's input slices.
    - ``head``: producer head conv+BN; consumer the classifier's rows.
    - with ``tie_stream``, ``stage{k}_stream``: producers every projection conv+BN of stage k (the
      first block creates the stream, the others add into it); consumers the expansion inputs of
      the stage's other blocks and the next stage's first block (or the head conv). Without it
      the stream channels are left alone, which is always safe.
    """
    stages = _check_stages(stages)
    lay = parse_widths(widths, stages)
    if lay.has_streams and not tie_stream:
        raise ValueError(
            "these mobilenetv2 widths include the stage stream widths (their stream channels were "
            "condensed with tie_stream); condense them with spec option tie_stream=true"
        )
    stage_of = {b.index: b.stage for b in blocks_of(stages)}

    def name(g):
        layer = g.name.rsplit("_", 1)
        if g.name in ("stem_conv", "head_conv"):
            return ((0, 0) if g.name == "stem_conv" else (2, 0)), layer[0]
        b = int(layer[0][1:])
        if layer[1] == "expand":
            return (1, b), f"b{b}_hidden"
        return ((3, stage_of[b]), f"stage{stage_of[b]}_stream") if tie_stream else None

    return discovered_spec(build, widths, {"num_classes": 1, **options, "stages": stages},
                           (32, 32, 3), name)


ARCH = register(Architecture(
    "mobilenetv2", build, mobilenetv2_spec, "num_classes",
    lambda variables: image_input(variables, ("params", "stem_conv", "kernel")),
))
