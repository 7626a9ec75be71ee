"""The data-aware stages (condensation.compensate): least-squares compensation, importance,
BatchNorm repair; and every method through every stage on the tiny configs."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_TOY, compose_config, random_variables

from condensation.calibrate import consumer_inputs
from condensation.compensate import importance, refit_consumers, repair_batchnorm
from condensation.condense import drop_units, merge_group
from condensation.experiment import train_and_reduce
from condensation.network import Network
from condensation.reduction import Stages, method, uniform_widths
from condensation.train import distill_loss

MLP = Network("mlp", (6, 5), {"out_dim": 2, "activation": "relu", "gamma": 0.5})
CNN = Network("cnn", (4, 6, 5), {"n_conv": 2, "num_classes": 3, "activation": "relu", "gamma": 0.5})


def init(net, shape, seed=0):
    v = net.module().init(jax.random.key(seed), jnp.ones((1, *shape)))
    return jax.tree.map(np.array, v)


def outputs(net, variables, x):
    return np.asarray(net.module().apply(variables, jnp.asarray(x)))


def mlp_with_a_scaled_copy():
    """Hidden unit 5 of layer 0 is 2 x unit 1 (ReLU): its activation is 2 a_1."""
    v = init(MLP, (3,))
    d0 = v["params"]["Dense_0"]
    d0["kernel"][:, 5] = 2 * d0["kernel"][:, 1]
    d0["bias"][5] = 2 * d0["bias"][1]
    return v


def test_compensation_is_exact_when_a_removed_unit_is_a_combination_of_the_survivors():
    v = mlp_with_a_scaled_copy()
    x = np.random.default_rng(0).normal(size=(512, 3)).astype(np.float32)
    group = MLP.spec()[0]
    inputs = consumer_inputs(MLP.module(), v, x, group.consumers)
    keep = np.arange(5)
    dropped = drop_units(v, group, keep)
    small = MLP.with_widths((5, 5))
    assert np.abs(outputs(small, dropped, x) - outputs(MLP, v, x)).max() > 1e-2  # dropping alone loses it
    fixed = refit_consumers(v, dropped, group, inputs, keep)
    np.testing.assert_allclose(outputs(small, fixed, x), outputs(MLP, v, x), atol=2e-3)
    # the refit row of unit 1 took unit 5's share: w_1 + 2 w_5
    want = v["params"]["Dense_1"]["kernel"][1] + 2 * v["params"]["Dense_1"]["kernel"][5]
    np.testing.assert_allclose(fixed["params"]["Dense_1"]["kernel"][1], want, atol=2e-3)


def test_compensation_reproduces_the_papers_sum_for_identical_units():
    v = init(MLP, (3,))
    d0 = v["params"]["Dense_0"]
    d0["kernel"][:, 5], d0["bias"][5] = d0["kernel"][:, 2], d0["bias"][2]  # unit 5 == unit 2
    group = MLP.spec()[0]
    x = np.random.default_rng(1).normal(size=(512, 3)).astype(np.float32)
    inputs = consumer_inputs(MLP.module(), v, x, group.consumers)
    assignment = jnp.asarray([0, 1, 2, 3, 4, 2])
    merged = merge_group(v, assignment, group=group, n_groups=5)
    refit = refit_consumers(v, merged, group, inputs, np.arange(5))
    np.testing.assert_allclose(refit["params"]["Dense_1"]["kernel"],
                               merged["params"]["Dense_1"]["kernel"], atol=2e-3)


def test_conv_consumers_are_refit_through_their_patches():
    """A duplicated conv channel (kernel, bias and BatchNorm) dropped: the 3x3 consumer conv
    refit on patches gives the network's outputs back."""
    v = init(CNN, (8, 8, 3))
    p, s = v["params"], v["batch_stats"]
    p["Conv_0"]["kernel"][..., 3] = p["Conv_0"]["kernel"][..., 1]
    p["Conv_0"]["bias"][3] = p["Conv_0"]["bias"][1]
    for name, coll in (("scale", p), ("bias", p), ("mean", s), ("var", s)):
        coll["BatchNorm_0"][name][3] = coll["BatchNorm_0"][name][1]
    group = CNN.spec()[0]
    x = np.random.default_rng(2).normal(size=(64, 8, 8, 3)).astype(np.float32)
    inputs = consumer_inputs(CNN.module(), v, x, group.consumers)
    keep = np.arange(3)
    fixed = refit_consumers(v, drop_units(v, group, keep), group, inputs, keep)
    np.testing.assert_allclose(outputs(CNN.with_widths((3, 6, 5)), fixed, x), outputs(CNN, v, x),
                               atol=2e-3)


def test_importance_is_zero_for_a_dead_unit():
    v = init(MLP, (3,))
    v["params"]["Dense_0"]["bias"][4] = -100.0  # ReLU never fires
    group = MLP.spec()[0]
    x = np.random.default_rng(3).normal(size=(256, 3)).astype(np.float32)
    score = importance(v, group, consumer_inputs(MLP.module(), v, x, group.consumers))
    assert score[4] == 0 and (np.delete(score, 4) > 0).all()


def test_batchnorm_repair_reproduces_the_datas_statistics():
    v = init(CNN, (8, 8, 3))
    v["batch_stats"] = jax.tree.map(lambda a: a + 7.0, v["batch_stats"])  # stale statistics
    x = np.random.default_rng(4).normal(size=(64, 8, 8, 3)).astype(np.float32)
    repaired = repair_batchnorm(CNN.module(), v, x, batch_size=64)
    k, b = v["params"]["Conv_0"]["kernel"], v["params"]["Conv_0"]["bias"]
    z = np.asarray(jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))) + b
    stats = repaired["batch_stats"]["BatchNorm_0"]
    np.testing.assert_allclose(stats["mean"], z.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["var"], z.var(axis=(0, 1, 2)), rtol=1e-3, atol=1e-5)


def test_constant_units_are_folded_exactly():
    """A dead unit and a unit stuck at a constant: removing them, their contribution moved to
    the consumer's bias, changes nothing."""
    v = init(MLP, (3,))
    d0 = v["params"]["Dense_0"]
    d0["kernel"][:, 4], d0["bias"][4] = 0.0, -1.0   # ReLU(-1) = 0 for every input: dead
    d0["kernel"][:, 5], d0["bias"][5] = 0.0, 0.7    # ReLU(0.7) = 0.7 for every input
    x = np.random.default_rng(6).normal(size=(256, 3)).astype(np.float32)
    small, new = method("condense").reduce(MLP, v, threshold=1.0, target=None, activation="relu",
                                           input_shape=(3,), rng=jax.random.key(0),
                                           stages=Stages(calib=x, fold_constant=True))
    assert small.widths == (4, 5)
    np.testing.assert_allclose(outputs(small, new, x), outputs(MLP, v, x), atol=1e-5)


def test_kernel_entries_no_input_reaches_are_zeroed_and_nothing_else_changes():
    """A MobileNetV2 on 8x8 images whose last stage runs at 2x2 -> 1x1 -> 1x1: the 3x3
    depthwise taps that only ever read padding are zeroed (all but the centre at 1x1; all but
    the bottom-right 2x2 of a stride-2 filter on a 2x2 image, padded by one on each side as
    torchvision does), every tap of a stride-1 filter on 2x2 is kept, and the outputs stay the
    same."""
    from condensation.archs.mobilenetv2 import default_widths
    from condensation.condense import set_paths
    from condensation.reduction import dead_inputs
    stages = [[1, 8, 1, 1], [6, 12, 2, 2], [6, 16, 2, 2]]
    net = Network("mobilenetv2", default_widths(stages, stem=8, head=64),
                  {"num_classes": 3, "stages": stages})
    v = jax.tree.map(np.array, random_variables(net.module().init, jnp.ones((1, 8, 8, 3))))
    x = np.random.default_rng(3).normal(size=(32, 8, 8, 3)).astype(np.float32)
    groups = {g.name: g for g in net.spec()}
    # 2x2 -> 2x2, 2x2 -> 1x1 (stride 2), 1x1 -> 1x1
    masks = dead_inputs(net.module(), v, x, [groups[f"b{b}_hidden"] for b in (2, 3, 4)])
    assert ("params", "b2_dw", "kernel") not in masks
    assert np.array_equal(masks["params", "b3_dw", "kernel"][..., 0, 0],
                          [[0, 0, 0], [0, 1, 1], [0, 1, 1]])
    assert np.array_equal(masks["params", "b4_dw", "kernel"][..., 0, 0],
                          [[0, 0, 0], [0, 1, 0], [0, 0, 0]])
    new = set_paths(v, {p: np.where(live, np.asarray(v["params"][p[1]]["kernel"]), 0)
                        for p, live in masks.items()})
    apply = jax.jit(net.module().apply)
    np.testing.assert_allclose(apply(new, x), apply(v, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("similarity", ["parts", "activations"])
def test_condensation_by_other_similarities(similarity):
    """Two identical units merge under every similarity (and the merge is exact)."""
    v = init(MLP, (3,))
    d0 = v["params"]["Dense_0"]
    d0["kernel"][:, 5], d0["bias"][5] = d0["kernel"][:, 2], d0["bias"][2]
    x = np.random.default_rng(7).normal(size=(256, 3)).astype(np.float32)
    small, new = method("condense").reduce(MLP, v, threshold=0.99999, target=None, activation="relu",
                                           input_shape=(3,), rng=jax.random.key(0),
                                           stages=Stages(calib=x, similarity=similarity))
    assert small.widths[0] == 5
    np.testing.assert_allclose(outputs(small, new, x), outputs(MLP, v, x), atol=1e-5)


@pytest.mark.parametrize("name", ["condense", "magnitude", "random", "importance", "fold"])
def test_every_selection_runs_with_compensation_and_repair(name):
    v = init(CNN, (8, 8, 3))
    x = np.random.default_rng(5).normal(size=(128, 8, 8, 3)).astype(np.float32)
    target = uniform_widths(CNN, 0.5, (8, 8, 3))
    stages = Stages(compensate=True, repair=True, calib=x, fold_constant=True,
                    zero_dead_inputs=True, similarity="parts" if name == "condense" else "weights")
    small, new = method(name).reduce(CNN, v, threshold=None, target=target, activation="relu",
                                     input_shape=(8, 8, 3), rng=jax.random.key(0), stages=stages)
    assert all(w <= t for w, t in zip(small.widths, target, strict=True))
    assert np.isfinite(outputs(small, new, x)).all()


@pytest.mark.parametrize("name", ["condense", "importance", "magnitude", "random",
                                  "merge_standard_init", "fold"])
def test_target_mode_with_every_stage_end_to_end(name, tmp_path):
    widths = {"fold": "importance", "condense": "importance", "magnitude": "reconstruction",
              "random": "reconstruction"}.get(name, "uniform")
    cfg = compose_config([*TINY_TOY, f"reduce={name}", "reduce.mode=target", "reduce.target=0.4",
                          "reduce.target_rounds=2", "reduce.compensate=lstsq", "reduce.repair=bn",
                          "reduce.calibration=64", "reduce.distill=0.5", f"reduce.widths={widths}"])
    summary = train_and_reduce(cfg, tmp_path / "run")
    assert summary["size_ratio"] <= 0.4 and summary["rounds"] == 2
    assert summary["pipeline"] == {"select": name, "mode": "target", "target": 0.4,
                                   "widths": widths, "similarity": "weights",
                                   "merge": "centroid" if name == "fold" else "sum",
                                   "constant_units": "keep", "dead_inputs": "keep",
                                   "compensate": "lstsq", "repair": "bn", "calibration": 64,
                                   "finetune_epochs": 2, "finetune_lr": None, "distill": 0.5}


def test_distillation_loss_is_zero_at_the_teacher_and_pulls_towards_it():
    logits = jax.random.normal(jax.random.key(0), (8, 10))
    assert np.allclose(distill_loss("cross_entropy", logits, logits, 4.0), 0, atol=1e-6)
    assert (distill_loss("cross_entropy", logits, -logits, 4.0) > 0).all()
    assert np.allclose(distill_loss("l1", logits, logits + 1, 1.0), 1.0)


def test_batchnorm_repair_of_a_network_with_dropout():
    """A model with a Dropout (MobileNetV2's model.dropout) gets a dropout stream in the
    repair's training-mode passes; its Dropout follows the BatchNorm, so the statistics are
    those of the same network without it."""
    import flax.linen as nn

    class Net(nn.Module):
        rate: float

        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.BatchNorm(use_running_average=not train)(nn.Dense(4)(x))
            return nn.Dense(2)(nn.Dropout(self.rate, deterministic=not train)(nn.relu(x)))

    x = np.random.default_rng(7).normal(size=(32, 3)).astype(np.float32)
    v = Net(0.0).init(jax.random.key(0), x[:1])
    a = repair_batchnorm(Net(0.0), v, x, batch_size=32)
    b = repair_batchnorm(Net(0.5), v, x, batch_size=32)
    jax.tree.map(lambda p, q: np.testing.assert_allclose(p, q, rtol=1e-6), a["batch_stats"], b["batch_stats"])

def test_normal_equations_keep_their_precision_when_centred():
    """Activations with a large mean and a small spread (mean / std = 1e4): the centred sums
    P^T P - (sum P)(sum P)^T / m match a float64 computation; from float32 products they lost
    every digit (and condensation's ill-conditioned refit changed with them)."""
    from condensation.calibrate import Reader
    from condensation.compensate import _normal_equations

    rng = np.random.default_rng(8)
    x = (1e3 + 0.1 * rng.normal(size=(512, 6))).astype(np.float32)
    kernel = rng.normal(size=(6, 2)).astype(np.float32)
    keep = np.array([0, 2, 3])
    ptp, pty, sp, sy, m = _normal_equations(x, keep, kernel, Reader("dense"))
    p, y = x[:, keep].astype(np.float64), x.astype(np.float64) @ kernel.astype(np.float64)
    pc, yc = p - p.mean(0), y - y.mean(0)
    np.testing.assert_allclose(ptp - np.outer(sp, sp) / m, pc.T @ pc, rtol=1e-6)
    np.testing.assert_allclose(pty - np.outer(sp, sy) / m, pc.T @ yc, rtol=1e-5)


def test_a_larger_ridge_shrinks_the_refit():
    """reduce.ridge (Stages.ridge): the refit consumers' kernels shrink as the ridge grows; at
    the default the refit is the least-squares one."""
    v = init(MLP, (3,))
    x = np.random.default_rng(9).normal(size=(256, 3)).astype(np.float32)
    norms = []
    for ridge in (1e-5, 1.0, 100.0):
        _, new = method("magnitude").reduce(MLP, v, threshold=None, target=(3, 5), activation="relu",
                                            input_shape=(3,), rng=jax.random.key(0),
                                            stages=Stages(compensate=True, calib=x, ridge=ridge))
        norms.append(float(np.linalg.norm(new["params"]["Dense_1"]["kernel"])))
    assert norms[0] > norms[1] > norms[2]
