"""The public entry ``condensation.condense(params, *, threshold, activation)`` on plain MLPs.

Hidden neurons are duplicated by hand in flax.linen's layout (a copy of the kernel column and
bias, the next layer's row split so that the copies' rows sum to the original); condense must
give back the original widths, the original function and a correct report.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import condensation
from condensation.activations import ACTIVATIONS, POSITIVELY_HOMOGENEOUS
from condensation.archs.mlp import MLP

# Every example has new shapes and so compiles anew: few examples, each duplicating several
# neurons; no shrinking (it would recompile for every candidate).
SETTINGS = settings(max_examples=8, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TAU = 0.9999
REPORT_KEYS = {"widths_before", "widths_after", "params_before", "params_after", "size_ratio"}


def make_mlp(widths, in_dim, out_dim, activation, seed):
    """An MLP from condensation.archs.mlp and random params in its layout (numpy, nonzero biases).

    The params are drawn with numpy rather than ``module.init``, which compiles anew for every
    shape; their layout is checked against the module's own.
    """
    module = MLP(widths=tuple(widths), out_dim=out_dim, activation=activation, gamma=0.5)
    rng = np.random.default_rng(seed)
    dims = [in_dim, *widths, out_dim]
    params = {f"Dense_{i}": {"kernel": (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32),
                             "bias": rng.normal(0, 0.3, b).astype(np.float32)}
              for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True))}
    layout = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, in_dim)))["params"]
    assert jax.tree.map(lambda a: a.shape, layout) == jax.tree.map(np.shape, params)
    return module, params


def hidden_widths(params):
    return [params[f"Dense_{i}"]["bias"].shape[0] for i in range(len(params) - 1)]


def n_params(params):
    return sum(a.size for layer in params.values() for a in layer.values())


def duplicate(params, layer, unit, fractions, scales=None):
    """Split hidden neuron ``unit`` of ``Dense_{layer}`` into ``len(fractions)`` neurons.

    Copy k has input vector ``scales[k]`` times the original's and outgoing row
    ``fractions[k] / scales[k]`` times the original's; copies 1.. are appended at the end.
    The function is unchanged if ``sum(fractions) == 1`` (and, with scales != 1, the
    activation is positively homogeneous).
    """
    fractions = np.asarray(fractions, np.float32)
    scales = np.ones_like(fractions) if scales is None else np.asarray(scales, np.float32)
    src, dst = f"Dense_{layer}", f"Dense_{layer + 1}"
    k, b = params[src]["kernel"], params[src]["bias"]
    nxt = params[dst]["kernel"]
    cols = [k[:, unit] * s for s in scales]
    biases = [b[unit] * s for s in scales]
    rows_ = [nxt[unit] * (f / s) for f, s in zip(fractions, scales, strict=True)]
    k, b, nxt = k.copy(), b.copy(), nxt.copy()
    k[:, unit], b[unit], nxt[unit] = cols[0], biases[0], rows_[0]
    new = dict(params)
    new[src] = {"kernel": np.concatenate([k, np.stack(cols[1:], axis=1)], axis=1),
                "bias": np.concatenate([b, np.array(biases[1:], np.float32)])}
    new[dst] = {"kernel": np.concatenate([nxt, np.stack(rows_[1:])]), "bias": params[dst]["bias"]}
    return new


def permute(params, layer, perm):
    """Reorder the hidden neurons of ``Dense_{layer}`` (the function is unchanged)."""
    src, dst = f"Dense_{layer}", f"Dense_{layer + 1}"
    new = dict(params)
    new[src] = {"kernel": params[src]["kernel"][:, perm], "bias": params[src]["bias"][perm]}
    new[dst] = {"kernel": params[dst]["kernel"][perm], "bias": params[dst]["bias"]}
    return new


def apply(widths, out_dim, activation, params, x):
    module = MLP(widths=tuple(widths), out_dim=out_dim, activation=activation)
    # one compiled program per network: run op by op, each operation compiles for each shape
    return np.asarray(jax.jit(module.apply)({"params": params}, x))


@SETTINGS
@given(data=st.data(), activation=st.sampled_from(sorted(ACTIVATIONS)))
def test_duplicated_neurons_condense_back(data, activation):
    draw = data.draw
    widths = draw(st.lists(st.integers(2, 6), min_size=1, max_size=3), label="widths")
    in_dim = draw(st.integers(4, 6), label="in_dim")  # low dimensions could align by chance
    out_dim = draw(st.integers(1, 3), label="out_dim")
    seed = draw(st.integers(0, 2**16), label="seed")
    _, params = make_mlp(widths, in_dim, out_dim, activation, seed)
    x = np.random.default_rng(seed + 1).normal(size=(32, in_dim)).astype(np.float32)
    y = apply(widths, out_dim, activation, params, x)

    big = params
    for _ in range(draw(st.integers(1, 4), label="n_splits")):
        layer = draw(st.integers(0, len(widths) - 1))
        unit = draw(st.integers(0, hidden_widths(big)[layer] - 1))
        k = draw(st.integers(2, 3))
        raw = draw(st.lists(st.floats(-1.0, 1.0), min_size=k - 1, max_size=k - 1))
        fractions = [*raw, 1.0 - sum(raw)]
        scales = None
        if activation in POSITIVELY_HOMOGENEOUS and draw(st.booleans()):
            scales = [1.0, *draw(st.lists(st.floats(0.25, 4.0), min_size=k - 1, max_size=k - 1))]
        big = duplicate(big, layer, unit, fractions, scales)
    for layer in range(len(widths)):  # the copies are not always last, nor the original first
        perm = draw(st.permutations(range(hidden_widths(big)[layer])))
        big = permute(big, layer, np.array(perm))
    big_widths = hidden_widths(big)
    np.testing.assert_allclose(apply(big_widths, out_dim, activation, big, x), y,
                               rtol=1e-5, atol=1e-5)  # the duplication itself is exact

    small, report = condensation.condense(big, threshold=TAU, activation=activation)

    assert set(small) == set(params)
    assert hidden_widths(small) == list(widths)
    for name in params:
        for key in ("kernel", "bias"):
            assert np.shape(small[name][key]) == params[name][key].shape, (name, key)
    np.testing.assert_allclose(apply(widths, out_dim, activation, small, x), y, rtol=1e-5, atol=1e-5)
    assert set(report) == REPORT_KEYS
    assert report["widths_before"] == big_widths
    assert report["widths_after"] == list(widths)
    assert report["params_before"] == n_params(big)
    assert report["params_after"] == n_params(params)
    assert report["size_ratio"] == pytest.approx(n_params(params) / n_params(big))


def test_report_numbers_by_hand():
    """5 -> (4, 3) -> 2: 47 parameters; one neuron of each layer duplicated -> (5, 5): 72."""
    module, params = make_mlp([4, 3], 5, 2, "tanh", seed=7)
    big = duplicate(params, 0, 1, [0.25, 0.75])
    big = duplicate(big, 1, 2, [0.5, 0.3, 0.2])
    x = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)

    small, report = condensation.condense(big, threshold=0.999, activation="tanh")

    assert report == {"widths_before": [5, 5], "widths_after": [4, 3], "params_before": 72,
                      "params_after": 47, "size_ratio": pytest.approx(47 / 72)}
    np.testing.assert_allclose(module.apply({"params": small}, x),
                               module.apply({"params": params}, x), rtol=1e-5, atol=1e-5)
    # the merged neuron's outgoing row is the sum of the copies' rows, i.e. the original's
    np.testing.assert_allclose(small["Dense_1"]["kernel"][1], params["Dense_1"]["kernel"][1],
                               rtol=1e-6, atol=1e-6)


def test_nothing_to_merge_is_identity():
    _, params = make_mlp([6, 5], 4, 2, "gelu", seed=3)
    small, report = condensation.condense(params, threshold=TAU, activation="gelu")
    assert report["widths_before"] == report["widths_after"] == [6, 5]
    assert report["params_before"] == report["params_after"] == n_params(params)
    assert report["size_ratio"] == 1.0
    for name in params:
        for key in ("kernel", "bias"):
            np.testing.assert_array_equal(small[name][key], params[name][key])


def test_input_is_not_modified():
    _, params = make_mlp([4, 3], 5, 2, "relu", seed=1)
    big = duplicate(params, 0, 2, [0.5, 0.5], [1.0, 2.0])
    snapshot = jax.tree.map(np.copy, big)
    condensation.condense(big, threshold=TAU, activation="relu")
    assert jax.tree.structure(big) == jax.tree.structure(snapshot)
    jax.tree.map(np.testing.assert_array_equal, big, snapshot)


def test_threshold_one_merges_exact_copies():
    failures = []
    for seed in range(20):
        _, params = make_mlp([6], 7, 1, "tanh", seed=seed)
        big = duplicate(params, 0, seed % 6, [0.5, 0.5])
        _, report = condensation.condense(big, threshold=1.0, activation="tanh")
        if report["widths_after"] != [6]:
            failures.append(seed)
    assert not failures, f"exact copies not merged at threshold 1.0 for seeds {failures}"


# ---- bad inputs: one clear ValueError each ----------------------------------------------

def _params():
    return make_mlp([4, 3], 5, 2, "tanh", seed=0)[1]


def _without(name):
    p = _params()
    del p[name]
    return p


def _bias_mismatch():
    p = _params()
    p["Dense_1"] = {"kernel": p["Dense_1"]["kernel"], "bias": np.zeros(2, np.float32)}
    return p


def _kernel_3d():
    p = _params()
    p["Dense_1"] = {"kernel": p["Dense_1"]["kernel"][:, :, None], "bias": p["Dense_1"]["bias"]}
    return p


def _chain_mismatch():
    p = _params()
    p["Dense_1"] = {"kernel": p["Dense_1"]["kernel"][:2], "bias": p["Dense_1"]["bias"]}
    return p


def _missing_bias():
    p = _params()
    p["Dense_1"] = {"kernel": p["Dense_1"]["kernel"]}
    return p


BAD_PARAMS = {
    "whole variables dict": (lambda: {"params": _params()}, r"variables\['params'\]"),
    "missing Dense_1": (lambda: _without("Dense_1"), r"Dense_0\.\.Dense_L"),
    "only Dense_0": (lambda: {"Dense_0": _params()["Dense_0"]}, "at least one hidden layer"),
    "kernel/bias shape mismatch": (_bias_mismatch, r"Dense_1: kernel \(4, 3\) and bias \(2,\)"),
    "3-d kernel": (_kernel_3d, "Dense_1: kernel"),
    "consecutive layers do not chain": (_chain_mismatch, "Dense_1: kernel has 2 inputs"),
    "missing bias": (_missing_bias, "Dense_1 must hold exactly 'kernel'"),
    "foreign layer name": (lambda: {**_params(), "head": {}}, r"Dense_0\.\.Dense_L"),
    "empty": (dict, "params must be a dict"),
    "not a dict": (lambda: [_params()], "params must be a dict"),
}


@pytest.mark.parametrize("case", sorted(BAD_PARAMS))
def test_bad_params_raise_one_clear_error(case):
    build, match = BAD_PARAMS[case]
    with pytest.raises(ValueError, match=match):
        condensation.condense(build(), threshold=0.9, activation="tanh")


@pytest.mark.parametrize("threshold", [0.0, 1.5, -0.5])
def test_threshold_outside_unit_interval(threshold):
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        condensation.condense(_params(), threshold=threshold, activation="tanh")


def test_unknown_activation_when_something_merges():
    big = duplicate(_params(), 0, 0, [0.5, 0.5])
    with pytest.raises(ValueError, match="unknown activation 'foo'"):
        condensation.condense(big, threshold=0.9, activation="foo")


def test_unknown_activation_is_refused_even_if_nothing_merges():
    with pytest.raises(ValueError, match="unknown activation 'foo'"):
        condensation.condense(_params(), threshold=TAU, activation="foo")
