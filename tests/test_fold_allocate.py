"""Model folding's selection (k-means, centroid merge) and per-layer widths (by importance, by
the compensated reconstruction error)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condensation.allocate import (
    _greedy_gains,
    allocated_widths,
    importance_widths,
    reconstruction_shares,
    reconstruction_widths,
    uniform_widths,
)
from condensation.condense import merge_group
from condensation.network import Network, abstract_variables, count_params
from condensation.reduction import kmeans, representatives

MLP = Network("mlp", (8, 8), {"out_dim": 2, "activation": "relu", "gamma": 0.5})


def init(net, shape, seed=0):
    v = net.module().init(jax.random.key(seed), jnp.ones((1, *shape)))
    return jax.tree.map(np.array, v)


def test_kmeans_finds_separated_clusters_and_fills_every_one():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 5)) * 10
    truth = rng.integers(4, size=60)
    x = centres[truth] + rng.normal(size=(60, 5)) * 0.01
    labels = kmeans(x, 4, seed=1)
    # the same partition as the truth, up to the labels' names
    assert len({(a, b) for a, b in zip(truth, labels, strict=True)}) == 4
    # more clusters than distinct points: still k non-empty clusters
    labels = kmeans(np.repeat(x[:3], 2, axis=0), 5, seed=0)
    assert sorted(np.bincount(labels, minlength=5)) == [1, 1, 1, 1, 2]


def test_representatives_are_the_first_unit_of_each_cluster():
    np.testing.assert_array_equal(representatives(np.array([2, 0, 2, 1, 0])), [0, 1, 0, 3, 1])


def test_centroid_merge_averages_the_producers_and_sums_the_consumers():
    v = init(MLP, (3,))
    group = MLP.spec()[0]
    assignment = jnp.asarray([0, 1, 0, 3, 4, 5, 6, 1])  # units 2 -> 0 and 7 -> 1
    new = merge_group(v, assignment, group=group, n_groups=6, centroid=True)
    k0, k1 = v["params"]["Dense_0"]["kernel"], v["params"]["Dense_1"]["kernel"]
    nk0, nk1 = np.asarray(new["params"]["Dense_0"]["kernel"]), np.asarray(new["params"]["Dense_1"]["kernel"])
    np.testing.assert_allclose(nk0[:, 0], (k0[:, 0] + k0[:, 2]) / 2, rtol=1e-6)
    np.testing.assert_allclose(nk0[:, 1], (k0[:, 1] + k0[:, 7]) / 2, rtol=1e-6)
    np.testing.assert_allclose(nk0[:, 2], k0[:, 3], rtol=1e-6)
    np.testing.assert_allclose(nk1[0], k1[0] + k1[2], rtol=1e-6)
    np.testing.assert_allclose(nk1[1], k1[1] + k1[7], rtol=1e-6)
    # identical units: the centroid merge is the paper's sum, and exact
    v["params"]["Dense_0"]["kernel"][:, 2] = k0[:, 0]
    v["params"]["Dense_0"]["bias"][2] = v["params"]["Dense_0"]["bias"][0]
    a = jnp.asarray([0, 1, 0, 3, 4, 5, 6, 7])
    merged = merge_group(v, a, group=group, n_groups=7, centroid=True)
    small = MLP.with_widths((7, 8))
    x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    np.testing.assert_allclose(small.module().apply(merged, x), MLP.module().apply(v, x), atol=1e-5)


def test_importance_widths_shrink_the_layer_whose_units_are_dead():
    v = init(MLP, (3,))
    # layer 1: six of eight units dead (zero input weights, negative bias under ReLU)
    v["params"]["Dense_1"]["kernel"][:, 2:] = 0.0
    v["params"]["Dense_1"]["bias"][2:] = -1.0
    x = np.random.default_rng(0).normal(size=(256, 3)).astype(np.float32)
    fraction = 0.6
    widths = importance_widths(MLP, v, fraction, (3,), x)
    full = count_params(abstract_variables(MLP, (3,)))
    assert count_params(abstract_variables(MLP.with_widths(widths), (3,))) <= fraction * full
    assert widths[1] == 2 and widths[0] > uniform_widths(MLP, fraction, (3,))[0]


def test_greedy_gains_explain_the_output_energy_and_copies_add_nothing():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    x = np.concatenate([x, x[:, :1] + 2 * x[:, 1:2], np.zeros((400, 1))], axis=1)
    # unit 3 = unit 0 + 2 x unit 1; unit 4 dead
    w = rng.normal(size=(5, 4))
    g = x.T @ x / len(x)
    gains = _greedy_gains([(g, w, 1e-9)], 5)
    energy = np.sum((x @ w) ** 2) / len(x)
    assert gains.sum() == pytest.approx(energy, rel=1e-6)
    assert gains[3:].max() < 1e-6 * energy  # whichever three come first explain everything
    # a conv consumer's unit is its block of taps: two taps, unit 1 the copy of unit 0
    xt = rng.normal(size=(400, 2, 1))
    xt = np.concatenate([xt, xt, rng.normal(size=(400, 2, 1))], axis=2).reshape(400, 6)  # (tap, unit)
    wt = rng.normal(size=(6, 3))
    gt = _greedy_gains([(xt.T @ xt / 400, wt, 1e-9)], 3)
    assert gt[2] < 1e-6 * gt.sum() and gt[:2].min() > 1e-3 * gt.sum()
    with pytest.raises(FloatingPointError, match="not finite"):
        _greedy_gains([(g * np.nan, w, 1e-9)], 5)


def test_reconstruction_through_a_conv_consumer_sees_copied_channels():
    """A conv layer whose channels 2 and 3 copy 0 and 1 (kernel, bias, BatchNorm): read by a
    3x3 conv, the copies add nothing to what a refit reconstructs."""
    cnn = Network("cnn", (4, 6, 5), {"n_conv": 2, "num_classes": 3, "activation": "relu",
                                     "gamma": 0.5})
    v = init(cnn, (8, 8, 3), seed=2)
    for coll, name in (("params", "Conv_0"), ("params", "BatchNorm_0"), ("batch_stats", "BatchNorm_0")):
        for a in v[coll][name].values():
            a[..., 2:] = a[..., :2]
    x = np.random.default_rng(1).normal(size=(64, 8, 8, 3)).astype(np.float32)
    shares = reconstruction_shares(cnn, v, x)
    assert [len(s) for s in shares] == [4, 6, 5]
    assert shares[0][2:].sum() < 1e-4 and shares[0][:2].min() > 0.05
    assert all(s.sum() == pytest.approx(1.0) for s in shares)


def test_allocation_from_descending_shares_keeps_no_worthless_unit_within_budget():
    """Descending shares with ties and zeros (dead units): the widths fit the budget, and a
    unit of zero share is never kept (beyond a layer's one) while a unit worth something is
    dropped elsewhere."""
    net = Network("mlp", (8, 8, 8), {"out_dim": 2, "activation": "relu", "gamma": 0.5})
    rng = np.random.default_rng(4)
    for _ in range(5):
        shares = []
        for _layer in range(3):
            s = np.sort(rng.choice([0.0, 1.0, 2.0, 3.0], size=8))[::-1]  # ties and zeros
            shares.append(s / s.sum())
        for fraction in (0.3, 0.6):
            widths = allocated_widths(net, fraction, (3,), shares)
            full = count_params(abstract_variables(net, (3,)))
            assert count_params(abstract_variables(net.with_widths(widths), (3,))) <= fraction * full
            dropped_something = any(w < 8 and s[w] > 0 for w, s in zip(widths, shares, strict=True))
            kept_nothing = any(w > 1 and s[w - 1] == 0 for w, s in zip(widths, shares, strict=True))
            assert not (dropped_something and kept_nothing)
            assert widths != (8, 8, 8)


def test_reconstruction_widths_shrink_the_layer_of_copies_that_importance_keeps():
    """Layer 0: four distinct units and their four copies (the same input vectors: a condensed
    layer). A least-squares refit makes up for every copy, so the reconstruction allocation
    keeps at most the four distinct units there and gives the budget to layer 1; importance
    counts a copy like any unit."""
    v = init(MLP, (3,), seed=1)
    k0, b0 = v["params"]["Dense_0"]["kernel"], v["params"]["Dense_0"]["bias"]
    k0[:, 4:], b0[4:] = k0[:, :4], b0[:4]
    x = np.random.default_rng(0).normal(size=(512, 3)).astype(np.float32)
    shares = reconstruction_shares(MLP, v, x)
    assert [len(s) for s in shares] == [8, 8]
    assert shares[0][4:].sum() < 1e-4 and shares[0].sum() == pytest.approx(1.0)
    fraction = 0.7
    full = count_params(abstract_variables(MLP, (3,)))
    rec = reconstruction_widths(MLP, v, fraction, (3,), x)
    imp = importance_widths(MLP, v, fraction, (3,), x)
    assert count_params(abstract_variables(MLP.with_widths(rec), (3,))) <= fraction * full
    assert rec[0] <= 4 < imp[0] and rec[1] > imp[1]


def test_compensation_after_a_centroid_merge_fits_the_merged_units():
    """The centroid changes the survivors: the consumers are refit on what they now read, which
    can only bring the output closer (least squares) than the merge alone."""
    from condensation.reduction import Stages, method
    v = init(MLP, (3,))
    x = np.random.default_rng(3).normal(size=(512, 3)).astype(np.float32)
    out = np.asarray(MLP.module().apply(v, x))
    errors = {}
    for compensate in (False, True):
        small, new = method("fold").reduce(
            MLP, v, threshold=None, target=(4, 8), activation="relu", input_shape=(3,),
            rng=jax.random.key(0), stages=Stages(compensate=compensate, calib=x, merge="centroid"))
        errors[compensate] = float(np.mean((np.asarray(small.module().apply(new, x)) - out) ** 2))
    assert small.widths == (4, 8)
    assert errors[True] < 0.5 * errors[False]
