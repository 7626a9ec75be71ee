"""The jaxpr -> ONNX translator: each covered op family against JAX, run by onnxruntime."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_variables

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from condensation.jaxpr_onnx import to_onnx  # noqa: E402

B = jax.export.symbolic_shape("b")[0]


def _check(fn, specs, inputs_for, batches=(1, 5, 33), rtol=2e-6, atol=1e-6):
    model = to_onnx(fn, *specs)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    for n in batches:
        args = inputs_for(n)
        got = session.run(None, dict(zip(names, args, strict=True)))
        want = jax.tree.leaves(fn(*map(jnp.asarray, args)))
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape and g.dtype == w.dtype
            np.testing.assert_allclose(g, np.asarray(w), rtol=rtol, atol=atol)
    return model


def _rand(*shape, seed=0):
    return np.random.default_rng(seed + sum(shape)).normal(size=shape).astype(np.float32)


def test_dense_network_with_elementwise_ops_and_a_dynamic_batch():
    w1, w2 = _rand(6, 16), _rand(16, 3, seed=1)

    def fn(x, t):
        h = jax.nn.gelu(x @ w1 + 0.1, approximate=False) + jnp.tanh(x @ w1) ** 3
        h = jnp.where(h > 0.5, jax.nn.sigmoid(h), jnp.exp(-h ** 2))
        y = jnp.concatenate([h[:, :5], jnp.log1p(h[:, 5:] ** 2)], axis=1) @ w2
        y = y - jnp.max(y, axis=1, keepdims=True) + jnp.sum(x, axis=1)[:, None] * t[:, None]
        z = jnp.transpose(jnp.reshape(jnp.broadcast_to(y[:, None], (y.shape[0], 2, 3)),
                                      (y.shape[0], 6)))
        return y, jnp.clip(z, -1.0, 1.0), jax.lax.rsqrt(1.0 + x[:, 0] ** 2).astype(jnp.float32)

    model = _check(fn, [jax.ShapeDtypeStruct((B, 6), jnp.float32),
                        jax.ShapeDtypeStruct((B,), jnp.float32)],
                   lambda n: (_rand(n, 6), _rand(n)))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "b"


def test_a_convolutional_network_with_pooling_and_depthwise_filters():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))
            x = nn.max_pool(x, (2, 2), (2, 2))
            x = nn.avg_pool(x, (2, 2), (1, 1), padding="SAME")
            x = nn.Conv(8, (3, 3), feature_group_count=8, kernel_dilation=2)(x)
            x = jnp.pad(x, ((0, 0), (1, 0), (0, 2), (0, 0)))[:, :, 1:]
            return nn.Dense(3)(x.mean((1, 2)))

    m = Net()
    v = random_variables(m.init, jnp.ones((1, 16, 16, 3)))
    _check(lambda x: m.apply(v, x), [jax.ShapeDtypeStruct((B, 16, 16, 3), jnp.float32)],
           lambda n: (_rand(n, 16, 16, 3),), rtol=1e-5, atol=1e-5)


def test_a_reduced_model_exports():
    """reduce_model's result (a trace replayed on smaller arrays) is an ordinary JAX function:
    a conv net with a residual block, reduced to half its units, runs the same under
    onnxruntime."""
    import flax.linen as nn

    from condensation.reduce_model import reduce_model

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(6, (3, 3))(x))
            return nn.Dense(2)((x + nn.Conv(6, (3, 3))(nn.relu(nn.Conv(8, (3, 3))(x)))).mean((1, 2)))

    m, x = Net(), jnp.asarray(_rand(4, 6, 6, 3))
    v = random_variables(m.init, x)
    r = reduce_model(m, v, x, keep=0.5)
    assert r.params_after < r.params_before
    _check(r, [jax.ShapeDtypeStruct((B, 6, 6, 3), jnp.float32)], lambda n: (_rand(n, 6, 6, 3),),
           batches=(3,), rtol=1e-5, atol=1e-5)


def test_gather_and_scatter_at_constant_indices():
    idx = np.array([3, 0, 2])

    def fn(x, m):
        picked = x[:, idx] * jnp.diagonal(m, axis1=1, axis2=2)[:, :3]
        updated = x.at[:, idx].set(picked * 2.0)
        return picked, updated, m[:, 1], x[:, 1:4:2]

    _check(fn, [jax.ShapeDtypeStruct((B, 5), jnp.float32),
                jax.ShapeDtypeStruct((B, 4, 4), jnp.float32)],
           lambda n: (_rand(n, 5), _rand(n, 4, 4)))


def test_accuracy_near_zero_and_the_edges_of_indexing():
    """log1p/expm1 keep their relative accuracy at tiny arguments; an empty reduction is the
    identity; clipped scatters clip; constant dynamic slices, clamp and argmax translate."""
    tiny = np.array([1e-8, -3e-7, 1e-6, 1e-3, 0.5, -0.5, 30.0, -30.0], np.float32)

    def fn(x, y):
        return (jnp.log1p(jnp.abs(x[:, :8]) * tiny), jnp.expm1(x[:, :8] * tiny),
                jnp.sum(x, axis=()), x.at[:, jnp.array([1, 12])].set(100.0, mode="clip"),
                jax.lax.dynamic_slice_in_dim(x, 3, 4, axis=1), jnp.clip(x, -0.5, y[:, None]),
                jnp.argmax(x, axis=1), jnp.argmin(x, axis=1))

    _check(fn, [jax.ShapeDtypeStruct((B, 10), jnp.float32), jax.ShapeDtypeStruct((B,), jnp.float32)],
           lambda n: (np.abs(_rand(n, 10)) + 0.5, np.abs(_rand(n)) + 0.1), rtol=2e-6, atol=0)


def test_loops_with_fixed_trip_counts_are_unrolled():
    def fn(x):
        y = jax.lax.fori_loop(0, 4, lambda i, v: v - 0.1 * jnp.sin(v) * x + i, x)

        def body(carry, xi):
            return carry * 0.5 + xi, carry.sum()

        last, sums = jax.lax.scan(body, jnp.zeros(x.shape[0]), jnp.stack([x, -x, 2 * x]),
                                  reverse=True)
        return y, last, sums

    _check(fn, [jax.ShapeDtypeStruct((7,), jnp.float32)], lambda n: (_rand(7),), batches=(0,))


def test_small_batched_solve_equals_lu():
    from condensation.combustion.chem import solve_small
    rng = np.random.default_rng(0)
    a = rng.normal(size=(64, 4, 4)) + np.eye(4) * rng.uniform(0, 3, size=(64, 1, 1))
    a[:8, 0, 0] = 0.0  # these need a row exchange
    b = rng.normal(size=(64, 4))
    x = np.asarray(solve_small(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)))
    lu = np.asarray(jnp.linalg.solve(jnp.asarray(a, jnp.float32), jnp.asarray(b[..., None],
                                                                               jnp.float32)))
    exact = np.linalg.solve(a, b[..., None])[..., 0]
    err, lu_err = (np.abs(y - exact).max(axis=1) / np.abs(exact).max(axis=1)
                   for y in (x, lu[..., 0]))
    assert np.all(err <= 4 * lu_err + 1e-6)  # as accurate as LU in float32, system by system


def test_untranslated_primitives_are_named():
    with pytest.raises(NotImplementedError, match="'sort'"):
        to_onnx(lambda x: jnp.sort(x) * 2, jax.ShapeDtypeStruct((B,), jnp.float32))
    with pytest.raises(NotImplementedError, match="fill value"):
        to_onnx(lambda x: jnp.take(x, jnp.array([1, 7]), axis=1),
                jax.ShapeDtypeStruct((B, 4), jnp.float32))
    with pytest.raises(NotImplementedError, match="part of axes"):
        to_onnx(lambda x: jax.lax.gather(
            x, jnp.array([[0], [2]]), jax.lax.GatherDimensionNumbers(
                offset_dims=(1, 2), collapsed_slice_dims=(1,), start_index_map=(1,)),
            slice_sizes=(2, 1, 5), mode="clip"), jax.ShapeDtypeStruct((3, 4, 5), jnp.float32))
    with pytest.raises(NotImplementedError, match="computed indices"):
        to_onnx(lambda x, i: x[i], jax.ShapeDtypeStruct((5,), jnp.float32),
                jax.ShapeDtypeStruct((3,), jnp.int32))
