"""MobileNetV2: torchvision's parameter count, the shifted depthwise convolution, and channel
condensation through BatchNorm, depthwise filters and residual streams (the embedding principle
on a small MobileNetV2-like network, and what goes wrong without each coupling)."""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condensation.archs.mobilenetv2 import Conv1x1, DepthwiseConv3x3, default_widths, parse_widths
from condensation.condense import (
    assign_groups,
    condense_variables,
    get,
    input_vectors,
    merge_group,
    num_groups,
    set_paths,
    split_unit,
)
from condensation.coupling import UnitGroup
from condensation.network import Network, abstract_variables, check_shapes, count_params, widths_of

TAU = 0.9999
# A small MobileNetV2-like network: a t = 1 first block, a stride-2 stage of two blocks (one
# residual) and a stride-1 stage of two blocks (one residual); 8x8 inputs.
SMALL_STAGES = ((1, 4, 1, 1), (2, 6, 2, 2), (2, 5, 2, 1))
SMALL = {"num_classes": 3, "gamma": 0.5, "stem_stride": 1, "stages": SMALL_STAGES}


def small_net(tie_stream: bool, activation: str = "relu6") -> Network:
    widths = default_widths(SMALL_STAGES, stem=6, head=7, with_streams=tie_stream)
    return Network("mobilenetv2", widths, {**SMALL, "activation": activation}, {"tie_stream": tie_stream})


def small_variables(net: Network, seed: int = 0):
    """Inputs [4, 8, 8, 3] and random variables in the module's layout, drawn with numpy (module.init
    would compile for a long time): kernels ~ N(0, 1/fan_in), every BatchNorm entry random (identity
    statistics would hide folding bugs), nonzero classifier bias."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4, 8, 8, 3)).astype(np.float32)
    layout = jax.eval_shape(net.module().init, jax.random.key(0), x)

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            value = rng.normal(size=leaf.shape) / math.sqrt(math.prod(leaf.shape[:-1]))
        elif name in ("var", "scale"):
            value = rng.uniform(0.5, 2.0, leaf.shape)
        else:  # BatchNorm bias and mean, classifier bias
            value = rng.normal(0, 0.5, leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    return x, jax.tree_util.tree_map_with_path(draw, layout)


@functools.partial(jax.jit, static_argnums=0)
def _apply(module, variables, x):
    return module.apply(variables, x)


def apply(net: Network, variables, x):
    """Eval-mode outputs (running BatchNorm statistics) [N, classes]."""
    return np.asarray(_apply(net.module(), variables, x))


def group_named(net: Network, name: str) -> UnitGroup:
    return next(g for g in net.spec() if g.name == name)


@pytest.mark.parametrize("with_streams", [False, True])
def test_torchvision_parameter_count_and_width_order(with_streams):
    widths = default_widths(with_streams=with_streams)
    assert widths[:3] == (32, 96, 144) and widths[17] == 1280
    net = Network("mobilenetv2", widths, {"num_classes": 10}, {"tie_stream": with_streams})
    variables = abstract_variables(net, (32, 32, 3))  # shapes only, nothing allocated
    assert count_params(variables) == 2_236_682
    assert widths_of(net, variables) == widths
    assert [g.name for g in net.spec()][:2] == ["stem", "b1_hidden"]
    out = jax.eval_shape(lambda v, x: net.module().apply(v, x), variables,
                         jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))
    assert out.shape == (2, 10)


def test_widths_are_checked():
    with pytest.raises(ValueError, match="18 entries"):
        parse_widths(default_widths()[:-1])
    net = Network("mobilenetv2", default_widths(with_streams=True), {"num_classes": 10})
    with pytest.raises(ValueError, match="tie_stream"):
        net.spec()


def assert_same_function(ours, ref, kernel, x, grad_atol):
    """The two one-kernel modules give the same outputs and gradients (kernel's and input's)
    of a nonlinear loss; returns our output."""
    @jax.jit
    def value_and_grads(k, x):
        f = lambda m, k, x: m.apply({"params": {"kernel": k}}, x)
        loss = lambda m, k, x: jnp.sum(jnp.sin(f(m, k, x)))
        return (f(ours, k, x), f(ref, k, x),
                jax.grad(loss, (1, 2))(ours, k, x), jax.grad(loss, (1, 2))(ref, k, x))

    y, y_ref, g, g_ref = value_and_grads(kernel, x)
    np.testing.assert_allclose(y, y_ref, atol=1e-5, rtol=1e-5)
    for ours_g, ref_g in zip(g, g_ref, strict=True):
        np.testing.assert_allclose(ours_g, ref_g, atol=grad_atol, rtol=1e-5)
    return y


@pytest.mark.parametrize("stride, size", [(1, 7), (2, 7), (2, 8), (1, 1), (2, 2), (2, 1)])
def test_shifted_depthwise_equals_grouped_conv(stride, size):
    """Same kernel layout, same outputs and gradients (its own gradient rule) as XLA's grouped
    convolution, odd and even sizes, down to 1x1."""
    c = 5
    rng = np.random.default_rng(size + stride)
    x = jnp.asarray(rng.normal(size=(2, size, size, c)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 1, c)), jnp.float32)
    ours = DepthwiseConv3x3(stride)
    ref = nn.Conv(c, (3, 3), strides=stride, padding=1, feature_group_count=c, use_bias=False)
    assert jax.eval_shape(ref.init, jax.random.key(0), x)["params"]["kernel"].shape == kernel.shape
    assert jax.eval_shape(ours.init, jax.random.key(0), x)["params"]["kernel"].shape == kernel.shape

    y = assert_same_function(ours, ref, kernel, x, grad_atol=1e-4)
    assert y.shape == (2, -(-size // stride), -(-size // stride), c)


def test_conv1x1_equals_flax_conv():
    """Same parameter (name, shape and initial draws), outputs and gradients (kernel and input)
    as ``nn.Conv(d, (1, 1), use_bias=False)``, which it replaces for speed; an nn.Conv to
    whoever reads modules (compensation's consumers); anything but a plain 1x1 refused."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(3, 5, 4, 6)), jnp.float32)
    ours = Conv1x1(7)
    ref = nn.Conv(7, (1, 1), use_bias=False)
    assert isinstance(ours, nn.Conv)
    with pytest.raises(ValueError, match=r"plain 1x1 .*'strides': 2, 'padding': 1"):
        Conv1x1(7, strides=2, padding=1).init(jax.random.key(0), x)
    init_ours, init_ref = ours.init(jax.random.key(4), x), ref.init(jax.random.key(4), x)
    assert jax.tree.structure(init_ours) == jax.tree.structure(init_ref)
    np.testing.assert_array_equal(init_ours["params"]["kernel"], init_ref["params"]["kernel"])
    kernel = jnp.asarray(rng.normal(size=(1, 1, 6, 7)), jnp.float32)

    y = assert_same_function(ours, ref, kernel, x, grad_atol=1e-5)
    assert y.shape == (3, 5, 4, 7)


@pytest.mark.parametrize("tie_stream, activation, seed", [(True, "relu6", 1), (False, "gelu", 2)])
def test_embedding_principle_small_mobilenet(tie_stream, activation, seed):
    """Split one unit of every group (stem, expansions, head, streams) into 2-3 copies whose
    outgoing slices sum to the original: the function is unchanged; condensation at 0.9999 gives
    back the widths and the function (eval mode, random BatchNorm statistics). A group that misses
    an array its channels touch fails here (the split or merged network no longer fits)."""
    net = small_net(tie_stream, activation)
    x, variables = small_variables(net, seed)
    y = apply(net, variables, x)
    rng = np.random.default_rng(seed)
    big = variables
    for group in net.spec():
        k = get(big, group.producers[0].kernel.path).shape[group.producers[0].kernel.axis]
        raw = rng.uniform(-1.5, 1.5, rng.integers(1, 3))
        big = split_unit(big, group, int(rng.integers(k)), np.append(raw, 1 - raw.sum()))
    big_net = net.with_widths(widths_of(net, big))
    assert all(b > a for a, b in zip(net.widths, big_net.widths, strict=True))
    check_shapes(big_net, big, x.shape[1:])
    np.testing.assert_allclose(apply(big_net, big, x), y, atol=1e-5, rtol=1e-4)

    small, reports = condense_variables(big, big_net.spec(), threshold=TAU, activation=activation)
    assert widths_of(net, small) == net.widths, reports
    check_shapes(net, small, x.shape[1:])
    np.testing.assert_allclose(apply(net, small, x), y, atol=1e-5, rtol=1e-4)


def _perturb_copy(variables, path, rng):
    """Give the last unit (the appended copy) of the kernel at ``path`` (axis 3) new values."""
    k = np.array(get(variables, path))
    k[..., -1] = rng.normal(0, 3.0, k[..., -1].shape)
    return set_paths(variables, {path: jnp.asarray(k)})


def _merge_judged_by(variables, judge: UnitGroup, carried: UnitGroup):
    """Group by ``judge``'s input vectors, move the arrays of ``carried``."""
    assignment = assign_groups(input_vectors(variables, judge), TAU)
    return merge_group(variables, assignment, group=carried, n_groups=num_groups(assignment))


def test_depthwise_stage_cannot_be_left_out():
    """Two expansion channels with the same expansion filter but different depthwise filters
    compute different things. The spec (both stages) keeps them apart and the function intact;
    judged by the expansion conv alone they merge and the function changes; and a group without
    the depthwise producer does not even carry its filters (the network no longer fits).
    (Seed 4's channel is alive under ReLU6 on these inputs; a dead channel outputs the same zero
    whatever its depthwise filter, and merging it would be harmless.)"""
    net = small_net(tie_stream=False)
    x, variables = small_variables(net, 4)
    group = group_named(net, "b2_hidden")
    big = split_unit(variables, group, 2, np.array([-1.0, 2.0]))
    big_net = net.with_widths(widths_of(net, big))
    # exact copies: the spec merges them back
    back, _ = condense_variables(big, big_net.spec(), threshold=TAU, activation="relu6")
    np.testing.assert_allclose(apply(net, back, x), apply(net, variables, x), atol=1e-5, rtol=1e-4)

    rng = np.random.default_rng(4)
    diff = _perturb_copy(big, ("params", "b2_dw", "kernel"), rng)   # a genuinely different channel
    y = apply(big_net, diff, x)
    kept, _ = condense_variables(diff, big_net.spec(), threshold=TAU, activation="relu6")
    assert widths_of(net, kept) == big_net.widths
    np.testing.assert_allclose(apply(big_net, kept, x), y, atol=1e-5, rtol=1e-4)

    expand_only = UnitGroup("expand_only", group.producers[:1], group.consumers)
    wrong = _merge_judged_by(diff, expand_only, group)
    assert widths_of(net, wrong) == net.widths
    assert np.abs(apply(net, wrong, x) - y).max() > 1e-2

    not_carried = _merge_judged_by(diff, expand_only, expand_only)
    with pytest.raises(ValueError, match="do not fit"):
        check_shapes(net, not_carried, x.shape[1:])


def test_residual_stream_coupling_cannot_be_ignored():
    """Stream channels are written by every projection of their stage. Merged as if only the
    block that creates the stream produced them, the network no longer fits; judged by that
    block alone, two channels that the residual branch treats differently merge and the
    function changes; the tied spec keeps them apart."""
    net = small_net(tie_stream=True)
    x, variables = small_variables(net, 4)
    stream = group_named(net, "stage1_stream")
    assert [p.kernel.path[1] for p in stream.producers] == ["b1_project", "b2_project"]
    assert [c.path[1] for c in stream.consumers] == ["b2_expand", "b3_expand"]
    big = split_unit(variables, stream, 1, np.array([-1.0, 2.0]))
    big_net = net.with_widths(widths_of(net, big))
    np.testing.assert_allclose(apply(big_net, big, x), apply(net, variables, x), atol=1e-5, rtol=1e-4)

    creator_only = UnitGroup("creator_only", stream.producers[:1], stream.consumers)
    untied = _merge_judged_by(big, creator_only, creator_only)
    with pytest.raises(ValueError, match="do not fit"):
        check_shapes(net, untied, x.shape[1:])

    rng = np.random.default_rng(4)
    diff = _perturb_copy(big, ("params", "b2_project", "kernel"), rng)  # the residual branch
    y = apply(big_net, diff, x)
    kept, _ = condense_variables(diff, big_net.spec(), threshold=TAU, activation="relu6")
    assert widths_of(net, kept) == big_net.widths
    np.testing.assert_allclose(apply(big_net, kept, x), y, atol=1e-5, rtol=1e-4)
    wrong = _merge_judged_by(diff, creator_only, stream)
    assert widths_of(net, wrong) == net.widths
    assert np.abs(apply(net, wrong, x) - y).max() > 1e-2


def test_classifier_dropout_acts_in_training_only():
    """model.dropout (torchvision: 0.2) drops features before the classifier when training,
    with the train step's dropout stream; evaluation is deterministic; 0 leaves no Dropout."""
    stages = ((1, 4, 1, 1), (2, 6, 2, 2))
    widths = default_widths(stages, stem=4, head=8)
    net = Network("mobilenetv2", widths, {"num_classes": 3, "stages": stages, "dropout": 0.5})
    x, variables = small_variables(net)
    m = net.module()
    a = m.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})[0]
    b = m.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)})[0]
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(m.apply(variables, x), m.apply(variables, x))
    plain = Network("mobilenetv2", widths, {"num_classes": 3, "stages": stages})
    np.testing.assert_allclose(apply(plain, variables, x), apply(net, variables, x), rtol=1e-6)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        Network("mobilenetv2", widths, {"num_classes": 3, "stages": stages, "dropout": 1.0}).module()


def test_bn_scale_sets_every_batchnorm_scale_at_initialization():
    """model.bn_scale: every BatchNorm starts with that scale (1 by default, as before)."""
    stages = ((1, 4, 1, 1), (2, 6, 2, 2))
    widths = default_widths(stages, stem=4, head=8)
    x = jnp.ones((1, 8, 8, 3))
    scales = {}
    for s in (None, 0.1):
        opts = {"num_classes": 3, "stages": stages} | ({} if s is None else {"bn_scale": s})
        # an RBG key: its random-number programs compile in half the time of the default's
        key = jax.random.key(0, impl="rbg")
        params = Network("mobilenetv2", widths, opts).module().init(key, x)["params"]
        scales[s] = [np.asarray(v["scale"]) for k, v in params.items() if k.endswith("_bn")]
    assert len(scales[None]) == 2 + 3 * 3 - 1  # stem, head; 3 per block, block 0 without expand
    assert all(np.all(v == 1.0) for v in scales[None])
    assert all(np.allclose(v, 0.1) for v in scales[0.1])
    with pytest.raises(ValueError, match="bn_scale must be > 0"):
        Network("mobilenetv2", widths, {"num_classes": 3, "stages": stages, "bn_scale": 0.0}).module()
