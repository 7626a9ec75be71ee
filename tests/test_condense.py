"""The mathematics of the merge: the embedding principle, run forwards and backwards.

Split random units of random networks into copies whose outgoing weights sum to the original
(the function is unchanged); condensation must give back the original widths and function.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_variables
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from condensation import coupling
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
from condensation.network import Network, check_shapes, widths_of

# Every example has new shapes and so compiles anew: few examples, each splitting several units.
# Shrinking recompiles for every candidate; a failure is reported unshrunk to stay fast.
SETTINGS = settings(max_examples=5, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CONV_SETTINGS = settings(SETTINGS, max_examples=3)
TAU = 0.9999


def randomize_batchnorm(variables, rng):
    """BatchNorm with identity statistics would hide folding bugs: make every entry random."""
    updates = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
        keys = tuple(k.key for k in path)
        if any("bn" in k.lower() or k.startswith("BatchNorm") for k in keys):
            if keys[-1] in ("var", "scale"):
                updates[keys] = jnp.asarray(rng.uniform(0.5, 2.0, leaf.shape), leaf.dtype)
            else:
                updates[keys] = jnp.asarray(rng.normal(0, 0.5, leaf.shape), leaf.dtype)
    return set_paths(variables, updates)


def split_random_units(variables, spec, draw, homogeneous):
    """Split 1-3 random units into 2-3 copies; returns the new variables."""
    for _ in range(draw(st.integers(1, 3))):
        gi = draw(st.integers(0, len(spec) - 1))
        group = spec[gi]
        n = get(variables, group.producers[0].kernel.path).shape[group.producers[0].kernel.axis]
        unit = draw(st.integers(0, n - 1))
        k = draw(st.integers(2, 3))
        raw = np.array(draw(st.lists(st.floats(-2, 2), min_size=k - 1, max_size=k - 1)))
        fractions = np.append(raw, 1.0 - raw.sum())
        scales = None
        if homogeneous and len(group.producers) == 1:
            scales = np.array(draw(st.lists(st.floats(0.2, 5.0), min_size=k, max_size=k)))
            scales[0] = 1.0
        variables = split_unit(variables, group, unit, fractions, scales)
    return variables


def assert_embedding_roundtrip(net, variables, x, activation, draw):
    spec = net.spec()
    homogeneous = activation == "relu"
    big = split_random_units(variables, spec, draw, homogeneous)
    big_net = net.with_widths(widths_of(net, big))
    check_shapes(big_net, big, x.shape[1:])
    apply = jax.jit(net.module().apply)  # one program per network, not one per operation
    y = apply(variables, x)
    np.testing.assert_allclose(jax.jit(big_net.module().apply)(big, x), y, atol=1e-5, rtol=1e-4)

    small, reports = condense_variables(big, big_net.spec(), threshold=TAU, activation=activation)
    assert widths_of(net, small) == net.widths, reports
    check_shapes(net, small, x.shape[1:])
    np.testing.assert_allclose(apply(small, x), y, atol=1e-5, rtol=1e-4)


@SETTINGS
@given(data=st.data(), activation=st.sampled_from(["tanh", "gelu", "relu"]))
def test_mlp_embedding_principle(data, activation):
    draw = data.draw
    widths = tuple(draw(st.lists(st.integers(2, 7), min_size=1, max_size=3)))
    in_dim = draw(st.integers(4, 6))  # low-dimensional random vectors could be parallel by chance
    net = Network("mlp", widths, {"out_dim": 3, "activation": activation, "gamma": 0.5})
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = jnp.asarray(rng.normal(size=(16, in_dim)), jnp.float32)
    variables = random_variables(net.module().init, x, seed=rng)  # biases too are not 0
    assert_embedding_roundtrip(net, variables, x, activation, draw)


@CONV_SETTINGS
@given(data=st.data(), activation=st.sampled_from(["tanh", "gelu", "relu"]))
def test_cnn_with_batchnorm_embedding_principle(data, activation):
    draw = data.draw
    widths = tuple(draw(st.lists(st.integers(2, 5), min_size=3, max_size=3)))
    net = Network("cnn", widths, {"num_classes": 3, "n_conv": 2, "activation": activation,
                                  "gamma": 0.5})
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = jnp.asarray(rng.normal(size=(4, 8, 8, 3)), jnp.float32)
    variables = randomize_batchnorm(random_variables(net.module().init, x, seed=rng), rng)
    assert_embedding_roundtrip(net, variables, x, activation, draw)


@CONV_SETTINGS
@given(data=st.data(), activation=st.sampled_from(["tanh", "gelu", "relu"]))
def test_residual_cnn_embedding_principle(data, activation):
    draw = data.draw
    widths = tuple(draw(st.lists(st.integers(2, 5), min_size=3, max_size=3)))  # stream, 2 blocks
    net = Network("residual_cnn", widths, {"num_classes": 3, "activation": activation,
                                           "gamma": 0.5})
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = jnp.asarray(rng.normal(size=(4, 6, 6, 3)), jnp.float32)
    variables = randomize_batchnorm(random_variables(net.module().init, x, seed=rng), rng)
    assert_embedding_roundtrip(net, variables, x, activation, draw)


def test_residual_coupling_cannot_be_ignored():
    """Merging the stem's channels without the residual branches that add into them breaks."""
    net = Network("residual_cnn", (4, 3), {"num_classes": 2, "activation": "relu", "gamma": 0.5})
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
    variables = net.module().init(jax.random.key(0), x)
    stream = net.spec()[0]
    big = split_unit(variables, stream, 1, np.array([0.3, 0.7]))
    untied = coupling.UnitGroup("stem_only", stream.producers[:1], stream.consumers)
    assignment = assign_groups(input_vectors(big, untied), TAU)
    merged = merge_group(big, assignment, group=untied, n_groups=num_groups(assignment))
    with pytest.raises(ValueError, match="do not fit"):
        check_shapes(net, merged, x.shape[1:])


def test_nonparallel_units_left_alone():
    net = Network("mlp", (32, 16), {"out_dim": 2, "activation": "gelu", "gamma": 0.5})
    x = jnp.ones((1, 8))
    variables = net.module().init(jax.random.key(3), x)
    out, reports = condense_variables(variables, net.spec(), threshold=TAU, activation="gelu")
    assert [(r.before, r.after) for r in reports] == [(32, 32), (16, 16)]
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), out, variables))


def test_positive_multiples_need_homogeneity():
    """cos = 1 for c v and v; the norm-ratio scaling is what makes the ReLU merge exact."""
    net = Network("mlp", (3,), {"out_dim": 1, "activation": "relu", "gamma": 0.5})
    x = jax.random.normal(jax.random.key(0), (64, 4))
    variables = net.module().init(jax.random.key(1), x)
    group = net.spec()[0]
    big = split_unit(variables, group, 0, np.array([0.5, 0.5]), np.array([1.0, 3.0]))
    y = net.module().apply(variables, x)
    small, _ = condense_variables(big, net.spec(), threshold=TAU, activation="relu")
    np.testing.assert_allclose(net.module().apply(small, x), y, atol=1e-5)
    # the same merge without the scaling (as for a non-homogeneous activation) is wrong here
    wrong, _ = condense_variables(big, net.spec(), threshold=TAU, activation="gelu")
    assert not np.allclose(net.module().apply(wrong, x), y, atol=1e-3)


def test_grouping_is_greedy_and_deterministic():
    v = jnp.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [1.0, 1.0], [0.0, 3.0]])
    assert assign_groups(v, 0.99).tolist() == [0, 1, 0, 3, 1]
    assert assign_groups(v, 0.7).tolist() == [0, 1, 0, 0, 1]
    assert num_groups(assign_groups(v, 0.99)) == 3


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_threshold_outside_range_is_refused(threshold):
    net = Network("mlp", (3,), {"out_dim": 1})
    variables = net.module().init(jax.random.key(0), jnp.ones((1, 2)))
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        condense_variables(variables, net.spec(), threshold=threshold, activation="relu")


def test_a_spec_that_does_not_fit_the_variables_is_named():
    """Before any work: the group, the path, the axis and the sizes that do not fit."""
    from reference_specs import mlp_spec

    variables = {"params": {"Dense_0": {"kernel": np.ones((3, 4)), "bias": np.ones(4)},
                            "Dense_1": {"kernel": np.ones((4, 2)), "bias": np.ones(2)}}}
    with pytest.raises(ValueError, match=r"group 'Dense_1': params/Dense_2/kernel is not in the "
                                         r"variables \(they hold params/\{Dense_0, Dense_1\}\)"):
        condense_variables(variables, mlp_spec(2), threshold=0.9, activation="relu")
    short = {"params": {**variables["params"],
                        "Dense_1": {"kernel": np.ones((5, 2)), "bias": np.ones(2)}}}
    with pytest.raises(ValueError, match=r"group 'Dense_0': params/Dense_1/kernel has 5 entries "
                                         r"along axis 0 \(shape \(5, 2\)\) but the group has 4"):
        condense_variables(short, mlp_spec(1), threshold=0.9, activation="relu")
