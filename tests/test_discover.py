"""Discovery of the coupling from the traced computation, and reduce_model on any Flax model.

The discovered specs must equal the hand-written ones of the four registered architectures;
every model of the zoo (tests/zoo.py) must survive the embedding-principle round trip: split
units of every reducible group, reduce at a threshold of ~1, and get the original widths and
outputs back; what cannot be reduced must be reported with the op that stopped it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_specs as ref
import zoo
from conftest import random_variables
from flax import nnx

from condensation.archs import architecture
from condensation.archs.mobilenetv2 import default_widths
from condensation.condense import condense_variables, split_unit
from condensation.coupling import Slot
from condensation.graph import discover
from condensation.reduce_model import ReducedModel, load_reduced, reduce_model

HERE = Path(__file__).resolve().parent


SMALL_STAGES = ((6, 8, 1, 1), (6, 12, 2, 2))  # block 0 expands; one stage with a residual


@pytest.mark.parametrize("arch, widths, options, spec_options, reference", [
    ("mlp", (7, 5, 6), {"out_dim": 3}, {}, lambda: ref.mlp_spec(3)),
    ("cnn", (4, 5, 6), {"n_conv": 2, "num_classes": 3}, {}, lambda: ref.cnn_spec(2, 1)),
    ("cnn", (4, 5, 6, 3), {"n_conv": 3, "num_classes": 3, "pool": False}, {},
     lambda: ref.cnn_spec(3, 1)),
    ("residual_cnn", (4, 5, 6), {"num_classes": 3}, {}, lambda: ref.residual_cnn_spec(2)),
    ("residual_cnn", (4, 5, 6), {"num_classes": 3}, {"tie_stream": False},
     lambda: ref.residual_cnn_spec(2, False)),
    ("mobilenetv2", default_widths(), {"num_classes": 10}, {},
     lambda: ref.mobilenetv2_spec(default_widths())),
    ("mobilenetv2", default_widths(with_streams=True), {"num_classes": 10},
     {"tie_stream": True}, lambda: ref.mobilenetv2_spec(default_widths(), tie_stream=True)),
    ("mobilenetv2", default_widths(SMALL_STAGES, with_streams=True),
     {"num_classes": 4, "stages": SMALL_STAGES}, {"tie_stream": True},
     lambda: ref.mobilenetv2_spec((), stages=SMALL_STAGES, tie_stream=True)),
])
def test_discovered_spec_equals_the_hand_written_one(arch, widths, options, spec_options,
                                                     reference):
    """The registered specs are discovered; they equal what was written by hand, names and
    order included (so every published run reduces the same groups in the same order)."""
    assert architecture(arch).spec(widths, **options, **spec_options) == reference()


def test_discovery_stops_only_at_the_output():
    module = architecture("mobilenetv2").build(default_widths(), num_classes=10)
    x = jnp.zeros((1, 32, 32, 3))
    found = discover(lambda v, x: module.apply(v, x),
                     jax.eval_shape(module.init, jax.random.key(0), x), x)
    assert len(found.stopped) == 1 and "the model's output" in next(iter(found.stopped.values()))


def _split_every_group(variables, spec):
    """One unit of every group split in two (fractions 0.3 / 0.7): same function, +1 width."""

    def split(variables):
        for g in spec:
            variables = split_unit(variables, g, 1, np.array([0.3, 0.7]))
        return variables

    return jax.jit(split)(variables)


LINEN_ZOO = [
    (zoo.ResNetish, (4, 5, 6, 7), (2, 8, 8, 3), 1),
    (zoo.UNetish, (4, 5, 6), (2, 8, 8, 3), 1),
    (zoo.FlattenCNN, (4, 5), (2, 6, 6, 3), 1),
    (zoo.MixerBlock, (5, 7), (2, 4, 12), 3),
    (zoo.TransformerBlock, (9,), (2, 4, 5), 4),
    (zoo.SharedLayer, (5,), (2, 6), 1),
]


@pytest.mark.parametrize("cls, widths, shape, n_stopped", LINEN_ZOO,
                         ids=[c[0].__name__ for c in LINEN_ZOO])
def test_linen_zoo_round_trip(cls, widths, shape, n_stopped):
    x = jax.random.normal(jax.random.key(1), shape)
    narrow = cls(widths)
    variables = random_variables(narrow.init, x)
    found = discover(lambda v, x: narrow.apply(v, x), variables, x)
    assert len(found.stopped) == n_stopped, found.report()
    wide_widths = list(widths)
    reducible = [g.name for g in found.spec]
    wide_vars = _split_every_group(variables, found.spec)
    # the model's own widths in the order of its groups (the zoo lists them so), +1 where reduced
    order = _reducible_width_index(cls, widths, x, reducible)
    for i in order:
        wide_widths[i] += 1
    wide = cls(tuple(wide_widths))
    shapes = jax.tree_util.tree_map(jnp.shape, jax.eval_shape(wide.init, jax.random.key(0), x))
    assert jax.tree_util.tree_map(jnp.shape, wide_vars) == shapes
    reduced = reduce_model(wide, wide_vars, x, threshold=0.99999)
    assert [(w.before, w.after) for w in reduced.widths] == \
        [(wide_widths[i], widths[i]) for i in order]
    apply = jax.jit(narrow.apply)
    np.testing.assert_allclose(reduced(x), apply(variables, x), atol=2e-5, rtol=1e-5)
    if cls is zoo.SharedLayer:   # another batch size: traced again (once is enough to test)
        x2 = jax.random.normal(jax.random.key(2), (5,) + shape[1:])
        np.testing.assert_allclose(reduced(x2), apply(variables, x2), atol=2e-5, rtol=1e-5)


def _reducible_width_index(cls, widths, x, names):
    """Which entries of ``widths`` the reducible groups are: the entries whose change changes
    that group's width."""
    base = cls(widths)
    v = jax.eval_shape(base.init, jax.random.key(0), x)
    d = discover(lambda v, x: base.apply(v, x), v, x)
    index = []
    for g in d.spec:
        k = g.producers[0].kernel
        for i in range(len(widths)):
            w = list(widths)
            w[i] += 1
            m = cls(tuple(w))
            shapes = jax.eval_shape(m.init, jax.random.key(0), x)
            leaf = shapes
            for key in k.path:
                leaf = leaf[key]
            if leaf.shape[k.axis] != _at(v, k.path).shape[k.axis]:
                index.append(i)
                break
    assert [g.name for g in d.spec] == names
    return index


def _at(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def test_attention_is_left_alone_and_reported():
    x = jnp.ones((2, 4, 5))
    m = zoo.TransformerBlock((9,))
    v = random_variables(m.init, x)
    found = discover(lambda v, x: m.apply(v, x), v, x)
    assert [g.name for g in found.spec] == ["Dense_2"]          # the MLP's hidden units
    why = " ".join(r for name, rs in found.stopped.items() for r in rs
                   if "MultiHeadDotProductAttention" in name)
    assert "two computed arrays" in why
    stream = found.stopped["Dense_0"]
    assert any("reduce_sum" in r for r in stream)                # LayerNorm over the stream


def test_tied_transposed_weights_are_reported():
    x = jnp.ones((2, 6))
    m = zoo.TiedAutoencoder((5,))
    v = random_variables(m.init, x)
    found = discover(lambda v, x: m.apply(v, x), v, x)
    assert found.spec == ()
    assert any("tied weights" in r for r in found.stopped["w"])
    reduced = reduce_model(m, v, x, threshold=0.5)
    assert reduced.widths == () and reduced.params_after == reduced.params_before


def test_nnx_round_trip_and_the_reduced_module():
    x = jax.random.normal(jax.random.key(1), (3, 4))
    narrow = zoo.NNXMLP((5, 6), rngs=nnx.Rngs(0))
    want = narrow(x)
    graphdef, state = nnx.split(narrow)
    found = discover(lambda v, x: _nnx_call(graphdef, state, v, x), nnx.to_pure_dict(state), x)
    assert [g.name for g in found.spec] == ["l1", "l2"]
    wide_vars = _split_every_group(nnx.to_pure_dict(state), found.spec)
    wide = zoo.NNXMLP((6, 7), rngs=nnx.Rngs(5))
    _, wide_state = nnx.split(wide)
    nnx.replace_by_pure_dict(wide_state, wide_vars)
    nnx.update(wide, wide_state)
    np.testing.assert_allclose(wide(x), want, atol=1e-5)
    reduced = reduce_model(wide, None, x, threshold=0.99999)
    assert [(w.before, w.after) for w in reduced.widths] == [(6, 5), (7, 6)]
    np.testing.assert_allclose(reduced(x), want, atol=1e-5)


def _nnx_call(graphdef, state, v, x):
    st = jax.tree_util.tree_map(lambda a: a, state)
    nnx.replace_by_pure_dict(st, v)
    return nnx.merge(graphdef, st)(x)


@pytest.mark.slow   # 11 s of compilation; the zoo round trips test the evaluator in the suite
def test_the_evaluator_equals_the_rebuilt_module_on_mobilenetv2():
    """A MobileNetV2 condensed with the hand-written spec, run by ReducedModel from the
    original's trace, gives what the module rebuilt at the new widths gives."""
    stages = ((1, 8, 1, 1), (6, 12, 2, 2))
    a = architecture("mobilenetv2")
    widths = default_widths(stages, stem=8, head=16)
    module = a.build(widths, num_classes=3, stages=stages)
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    variables = random_variables(module.init, x)
    spec = a.spec(widths, stages=stages)
    new_vars, groups = condense_variables(variables, spec, threshold=0.2, activation="relu6")
    new_widths = tuple(g.after for g in groups)
    assert new_widths != widths
    rebuilt = a.build(new_widths, num_classes=3, stages=stages)
    reduced = ReducedModel(lambda v, x: module.apply(v, x), variables, new_vars)
    np.testing.assert_allclose(reduced(x), jax.jit(rebuilt.apply)(new_vars, x), atol=1e-4, rtol=1e-4)


def test_saved_reduced_model_runs_in_a_fresh_process(tmp_path):
    x = jax.random.normal(jax.random.key(1), (2, 6))
    narrow = zoo.SharedLayer((5,))
    variables = random_variables(narrow.init, x)
    found = discover(lambda v, x: narrow.apply(v, x), variables, x)
    wide = zoo.SharedLayer((6,))
    reduced = reduce_model(wide, _split_every_group(variables, found.spec), x, threshold=0.99999)
    reduced.save(tmp_path / "reduced")
    np.save(tmp_path / "x.npy", np.asarray(x))
    code = (
        "import sys, numpy as np; sys.path.insert(0, sys.argv[1]);"
        "import zoo; from condensation.reduce_model import load_reduced;"
        "r = load_reduced(sys.argv[2] + '/reduced', zoo.SharedLayer((6,)));"
        "np.save(sys.argv[2] + '/y.npy', np.asarray(r(np.load(sys.argv[2] + '/x.npy'))));"
        "print(r.report())"
    )
    out = subprocess.run([sys.executable, "-c", code, str(HERE), str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Dense_0: 6 -> 5" in out.stdout
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), narrow.apply(variables, x), atol=2e-5)
    again = load_reduced(tmp_path / "reduced", wide)
    np.testing.assert_allclose(again(x), reduced(x), atol=1e-6)


def test_bad_input_is_refused_before_any_work(tmp_path):
    x = jnp.ones((2, 6))
    m = zoo.SharedLayer((5,))
    v = random_variables(m.init, x)
    with pytest.raises(TypeError, match="flax.linen.Module or a flax.nnx.Module"):
        reduce_model(lambda v, x: x, v, x, threshold=0.9)
    with pytest.raises(ValueError, match="threshold must be in"):
        reduce_model(m, v, x, threshold=1.5)
    with pytest.raises(ValueError, match="needs its variables"):
        reduce_model(m, None, x, threshold=0.9)
    with pytest.raises(ValueError, match="unknown groups"):
        reduce_model(m, v, x, threshold=0.9, groups=["nope"])
    with pytest.raises(ValueError, match="pass variables=None"):
        reduce_model(zoo.NNXMLP((3, 3), rngs=nnx.Rngs(0)), v, jnp.ones((2, 4)), threshold=0.9)
    with pytest.raises(FileNotFoundError, match="reduced.json"):
        load_reduced(tmp_path, m)


def test_reduce_to_widths_and_to_a_fraction():
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    m = zoo.ResNetish((4, 5, 6, 7))
    v = random_variables(m.init, x)
    r = reduce_model(m, v, x, widths={"Conv_1": 2, "Conv_4": 3})
    assert [(w.name, w.before, w.after) for w in r.widths] == [("Conv_1", 5, 2), ("Conv_4", 7, 3)]
    assert r(x).shape == (4, 3)
    r = reduce_model(m, v, x, keep=0.5)
    assert [w.after for w in r.widths] == [2, 3, 3, 4]
    with pytest.raises(ValueError, match="exactly one of"):
        reduce_model(m, v, x, threshold=0.9, keep=0.5)
    with pytest.raises(ValueError, match=r"widths\['Conv_1'\] = 9: allowed 1..5"):
        reduce_model(m, v, x, widths={"Conv_1": 9})


def test_concatenated_and_flattened_units_are_consumed_at_their_place():
    """A U-Net skip: the encoder's channels come after the middle's in the decoder's input; a
    flatten: each channel is every 4th row (3 x 3 positions, channels last) of the dense kernel."""
    x = jnp.ones((2, 8, 8, 3))
    m = zoo.UNetish((4, 5, 6))
    found = discover(lambda v, x: m.apply(v, x), jax.eval_shape(m.init, jax.random.key(0), x), x)
    enc = next(g for g in found.spec if g.name == "Conv_0")
    dec = next(c for c in enc.consumers if c.path == ("params", "Conv_2", "kernel"))
    assert dec.before == (Slot(("params", "Conv_1", "kernel"), 3),) and not dec.split
    x = jnp.ones((2, 6, 6, 3))
    m = zoo.FlattenCNN((4, 5))
    found = discover(lambda v, x: m.apply(v, x), jax.eval_shape(m.init, jax.random.key(0), x), x)
    (dense,) = found.spec[0].consumers
    assert dense.path == ("params", "Dense_0", "kernel") and dense.split == (3, 3, None)


@pytest.mark.slow
def test_every_zoo_model_saved_reduced_runs_in_a_fresh_process(tmp_path):
    """Each zoo model (linen and nnx) reduced to half its units per group, saved, and run by
    one fresh process from the saved folder and the model's own class: the same outputs."""
    cases = {name: (cls, widths, shape) for cls, widths, shape, _ in LINEN_ZOO
             for name in [cls.__name__]}
    code = ["import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import zoo",
            "from flax import nnx; from condensation.reduce_model import load_reduced"]
    for name, (cls, widths, shape) in cases.items():
        x = jax.random.normal(jax.random.key(1), shape)
        m = cls(widths)
        reduced = reduce_model(m, random_variables(m.init, x), x, keep=0.5)
        assert reduced.params_after < reduced.params_before
        reduced.save(tmp_path / name)
        np.save(tmp_path / f"{name}_x.npy", np.asarray(x))
        np.save(tmp_path / f"{name}_want.npy", np.asarray(reduced(x)))
        code.append(f"r = load_reduced(sys.argv[2] + '/{name}', zoo.{name}({widths!r}))")
        code.append(f"np.save(sys.argv[2] + '/{name}_got.npy', np.asarray(r(np.load(sys.argv[2] + "
                    f"'/{name}_x.npy'))))")
    x = jax.random.normal(jax.random.key(1), (3, 4))
    reduced = reduce_model(zoo.NNXMLP((5, 6), rngs=nnx.Rngs(0)), None, x, keep=0.5)
    reduced.save(tmp_path / "NNXMLP")
    np.save(tmp_path / "NNXMLP_x.npy", np.asarray(x))
    np.save(tmp_path / "NNXMLP_want.npy", np.asarray(reduced(x)))
    code.append("r = load_reduced(sys.argv[2] + '/NNXMLP', zoo.NNXMLP((5, 6), rngs=nnx.Rngs(7)))")
    code.append("np.save(sys.argv[2] + '/NNXMLP_got.npy', np.asarray(r(np.load(sys.argv[2] + "
                "'/NNXMLP_x.npy'))))")
    out = subprocess.run([sys.executable, "-c", "\n".join(code), str(HERE), str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for name in [*cases, "NNXMLP"]:
        np.testing.assert_allclose(np.load(tmp_path / f"{name}_got.npy"),
                                   np.load(tmp_path / f"{name}_want.npy"), atol=1e-5, err_msg=name)


@pytest.mark.parametrize("case", [
    pytest.param("resnet", marks=pytest.mark.slow),   # 15 s of compilation; the nnx case is fast
    "nnx_mlp"])
def test_compensation_through_the_trace_brings_the_outputs_back(case):
    """ResNet-like (convolutions, BatchNorm after them, residual streams) and an nnx MLP reduced
    to half their units: refitting each group's consumers on calibration data brings held-out
    outputs much closer to the original's than the merge alone."""
    cases = {"resnet": (lambda: zoo.ResNetish((8, 10, 12, 14)), (128, 6, 6, 3)),
             "nnx_mlp": (lambda: zoo.NNXMLP((12, 14), rngs=nnx.Rngs(0)), (256, 4))}
    for make, shape in [cases[case]]:
        m = make()
        x = jax.random.normal(jax.random.key(1), shape)
        held = jax.random.normal(jax.random.key(9), shape)
        v = None if isinstance(m, nnx.Module) else random_variables(m.init, x)
        want = m(held) if v is None else jax.jit(m.apply)(v, held)
        err = {}
        for comp in (False, True):
            r = reduce_model(m, v, x, keep=0.5, data=x, compensate=comp)
            err[comp] = float(jnp.abs(r(held) - want).mean() / jnp.abs(want).mean())
        assert err[True] < 0.7 * err[False], err
    with pytest.raises(ValueError, match="compensate=True needs calibration inputs"):
        reduce_model(m, None, x, keep=0.5, compensate=True)


def test_batchnorm_repair_is_training_mode_statistics():
    """repair=True re-estimates every BatchNorm's running statistics in one pass in which each
    normalises with its batch statistics: on an unreduced model exactly what flax's training
    mode computes (read through momentum from zero running statistics); on a reduced one the
    repaired statistics are those of the reduced network's own activations."""
    import flax.linen as nn

    class ConvBN(nn.Module):
        widths: tuple = (6, 8)

        @nn.compact
        def __call__(self, x, train: bool = False):
            for c in self.widths:
                x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.5)(
                    nn.Conv(c, (3, 3), use_bias=False)(x)))
            return nn.Dense(3)(x.mean((1, 2)))

    m = ConvBN()
    x = jax.random.normal(jax.random.key(1), (64, 6, 6, 3))
    v = random_variables(m.init, x)

    def training_mode_stats(module, variables):
        zero = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
        _, upd = module.apply({**variables, "batch_stats": zero}, x, train=True,
                              mutable=["batch_stats"])
        return jax.tree.map(lambda s: 2 * s, upd["batch_stats"])  # momentum 0.5

    same = reduce_model(m, v, x, threshold=1.0, data=x, repair=True)
    assert [w.after for w in same.widths] == [w.before for w in same.widths]
    assert not np.allclose(v["batch_stats"]["BatchNorm_1"]["var"],
                           training_mode_stats(m, v)["BatchNorm_1"]["var"])
    half = reduce_model(m, v, x, keep=0.5, data=x, repair=True)
    assert half.params_after < half.params_before
    small = ConvBN(tuple(w.after for w in half.widths))
    for r, module in ((same, m), (half, small)):
        want = training_mode_stats(module, r.variables)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                     r.variables["batch_stats"], want)
    with pytest.raises(ValueError, match="repair=True needs calibration inputs"):
        reduce_model(m, v, x, keep=0.5, repair=True)
    mlp = zoo.NNXMLP((5, 6), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="no BatchNorm after a kernel to re-estimate"):
        reduce_model(mlp, None, jnp.ones((2, 4)), keep=0.5, data=jnp.ones((2, 4)), repair=True)


def test_a_batchnorm_shared_by_two_layers_is_left_alone():
    """One BatchNorm after two convolutions ties the second's input and output channels: the
    group is left alone (a merge would change that kernel twice), and repair refuses one set of
    statistics for two applications."""
    import flax.linen as nn

    class Shared(nn.Module):
        @nn.compact
        def __call__(self, x):
            bn = nn.BatchNorm(use_running_average=True)
            x = nn.relu(bn(nn.Conv(4, (3, 3), use_bias=False)(x)))
            x = nn.relu(bn(nn.Conv(4, (3, 3), use_bias=False)(x)))
            return nn.Dense(3)(x.mean((1, 2)))

    m, x = Shared(), jnp.ones((2, 5, 5, 3))
    v = random_variables(m.init, x)
    found = discover(lambda v, x: m.apply(v, x), v, x)
    assert not found.spec and "shared normalisation" in " ".join(found.stopped["Conv_0"])
    with pytest.raises(ValueError, match="BatchNorm batch_stats/BatchNorm_0 is applied more "):
        reduce_model(m, v, x, keep=0.5, data=x, repair=True)


def test_what_cannot_be_followed_is_left_alone():
    """A gather's output (an embedding), a concatenation of a concatenation (DenseNet), the same
    units twice in one (CReLU): left alone and reported, and the reduced model still runs."""
    import flax.linen as nn

    class Embedded(nn.Module):
        @nn.compact
        def __call__(self, tok, f):
            return nn.Dense(3)(nn.relu(nn.Embed(10, 8)(tok) + nn.Dense(8)(f)))

    class DenseNetish(nn.Module):
        @nn.compact
        def __call__(self, x):
            x0 = nn.relu(nn.Conv(4, (3, 3))(x))
            c1 = jnp.concatenate([x0, nn.relu(nn.Conv(5, (3, 3))(x0))], -1)
            c2 = jnp.concatenate([c1, nn.relu(nn.Conv(6, (3, 3))(c1))], -1)
            return nn.Conv(3, (1, 1))(c2).mean((1, 2))

    class CReLU(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(6)(x)
            return nn.Dense(3)(jnp.concatenate([nn.relu(h), nn.relu(-h)], -1))

    cases = [(Embedded(), (jnp.zeros((2, 5), jnp.int32), jnp.ones((2, 5, 4))), "gather (not followed)"),
             (DenseNetish(), (jnp.ones((2, 6, 6, 3)),), "a concatenation or flatten of another one"),
             (CReLU(), (jnp.ones((2, 4)),), "the same units twice in one concatenation")]
    for m, args, why in cases:
        v = random_variables(m.init, *args)
        r = reduce_model(m, v, *args, keep=0.5)
        assert any(why in reason for reasons in r.stopped.values() for reason in reasons), r.report()
        assert r(*args).shape == m.apply(v, *args).shape
