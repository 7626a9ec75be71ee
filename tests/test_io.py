"""Files and sizes: saved networks, atomic writes, the metrics log, parameter and FLOP counts."""
from __future__ import annotations

import csv
import importlib.metadata
import json
import os
import stat
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from condensation import files as cfiles
from condensation import provenance as cprov
from condensation.files import atomic_write_bytes, atomic_write_text, write_csv, write_json
from condensation.metrics_log import MetricsLog
from condensation.network import Network, abstract_variables, count_flops, count_params
from condensation.saved import flatten, load_network, save_network, unflatten
from experiments import fastmalloc


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def random_variables(net, input_shape, seed=0):
    """Variables of ``net`` drawn with numpy in the shapes of its module (nothing compiled)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: rng.normal(size=a.shape).astype(a.dtype),
                        abstract_variables(net, input_shape))


def leftovers(folder):
    """Anything an atomic write may have left behind: hidden or .tmp files."""
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp")


# ---- save_network / load_network ----------------------------------------------------------

NETWORKS = {
    "mlp": (Network("mlp", (5, 3), {"out_dim": 2, "activation": "relu", "gamma": 1.0}), (4,)),
    "cnn": (Network("cnn", (3, 4, 5), {"num_classes": 3, "n_conv": 2, "activation": "gelu",
                                       "gamma": 0.5, "pool": True}), (4, 4, 3)),
    "residual_cnn": (Network("residual_cnn", (4, 3), {"num_classes": 2, "activation": "relu"},
                             {"tie_stream": False}), (4, 4, 3)),
}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_save_load_round_trip(tmp_path, name):
    net, input_shape = NETWORKS[name]
    variables = random_variables(net, input_shape)
    folder = tmp_path / "net"
    save_network(folder, net, variables, epoch=3, metrics={"val": 0.25, "widths": [1, 2]})

    net2, variables2, meta = load_network(folder)

    assert net2 == net
    assert_trees_equal(variables2, variables)
    assert meta["epoch"] == 3 and meta["metrics"] == {"val": 0.25, "widths": [1, 2]}
    assert meta["arch"] == net.arch and meta["widths"] == list(net.widths)
    assert sorted(p.name for p in folder.iterdir()) == ["network.json", "variables.npz"]
    # the loaded network rebuilds a module that runs on the loaded variables
    x = jnp.ones((2, *input_shape))
    np.testing.assert_array_equal(jax.jit(net2.module().apply)(variables2, x),
                                  jax.jit(net.module().apply)(variables, x))


def test_save_overwrites_a_previous_network(tmp_path):
    net, shape = NETWORKS["mlp"]
    small = net.with_widths((2, 1))
    v_big, v_small = random_variables(net, shape, 0), random_variables(small, shape, 1)
    save_network(tmp_path, net, v_big)
    save_network(tmp_path, small, v_small, round=2)
    net2, v2, meta = load_network(tmp_path)
    assert net2 == small and meta["round"] == 2
    assert_trees_equal(v2, v_small)
    assert leftovers(tmp_path) == []


def test_load_missing_file_names_it(tmp_path):
    net, shape = NETWORKS["mlp"]
    save_network(tmp_path, net, random_variables(net, shape))
    (tmp_path / "variables.npz").unlink()
    with pytest.raises(FileNotFoundError, match="variables.npz is missing"):
        load_network(tmp_path)


_leaf = arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.int32, np.bool_]),
    shape=array_shapes(min_dims=0, max_dims=3, max_side=4),
)
_names = st.text("abcdefgh_0123456789", min_size=1, max_size=6)
_trees = st.recursive(_leaf, lambda children: st.dictionaries(_names, children, min_size=1, max_size=3),
                      max_leaves=8).filter(lambda t: isinstance(t, dict))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=_trees)
def test_flatten_unflatten_round_trip(tree):
    """Any nested dict of arrays (nan and inf included) survives the npz key scheme."""
    flat = flatten(tree)
    assert all(isinstance(k, str) for k in flat)
    assert_trees_equal(unflatten(flat), tree)


# ---- atomic writes ------------------------------------------------------------------------

def test_writes_leave_no_temporary_files(tmp_path):
    net, shape = NETWORKS["cnn"]
    save_network(tmp_path / "n", net, random_variables(net, shape))
    write_json(tmp_path / "s.json", {"a": np.float32(1.5), "b": jnp.arange(3), "c": tmp_path})
    write_csv(tmp_path / "c.csv", [{"x": 1, "y": 2, "extra": 3}], ["x", "y"])
    atomic_write_text(tmp_path / "deep" / "er" / "t.txt", "hello")
    assert leftovers(tmp_path) == []
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": str(tmp_path)}
    assert list(csv.DictReader((tmp_path / "c.csv").open())) == [{"x": "1", "y": "2"}]
    assert (tmp_path / "deep" / "er" / "t.txt").read_text() == "hello"


def _fail(*args, **kwargs):
    raise OSError("disk full")


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("where", ["os.fsync", "os.replace"])
@pytest.mark.parametrize("error", [_fail, _interrupt], ids=["OSError", "KeyboardInterrupt"])
def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch, where, error):
    path = tmp_path / "summary.json"
    write_json(path, {"version": 1})
    monkeypatch.setattr(cfiles.os, where.split(".")[1], error)
    with pytest.raises((OSError, KeyboardInterrupt)):
        write_json(path, {"version": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"version": 1}
    assert leftovers(tmp_path) == []


def test_failed_write_of_bad_data_keeps_the_old_file(tmp_path):
    path = tmp_path / "blob"
    atomic_write_bytes(path, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # fails inside the write, after the temp file exists
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json(path, {"x": object()})
    assert path.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_failed_save_network_keeps_the_old_network(tmp_path, monkeypatch):
    net, shape = NETWORKS["mlp"]
    v = random_variables(net, shape)
    save_network(tmp_path, net, v, epoch=1)
    monkeypatch.setattr(cfiles.os, "replace", _fail)
    with pytest.raises(OSError):
        save_network(tmp_path, net.with_widths((2, 2)), jax.tree.map(lambda a: a * 0, v), epoch=2)
    monkeypatch.undo()
    net2, v2, meta = load_network(tmp_path)
    assert net2 == net and meta["epoch"] == 1
    assert_trees_equal(v2, v)
    assert leftovers(tmp_path) == []


def test_atomic_write_has_the_permissions_of_a_plain_write(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    mode = lambda p: oct(stat.S_IMODE(os.stat(p).st_mode))
    assert mode(tmp_path / "atomic.txt") == mode(plain)


# ---- the metrics log ----------------------------------------------------------------------

def test_metrics_log_appends_json_lines(tmp_path):
    path = tmp_path / "sub" / "metrics.jsonl"
    MetricsLog(path).log(event="start", x=np.float32(0.5), arr=jnp.ones(2))
    MetricsLog(path).log(event="epoch", epoch=1)  # a new log on the same file appends
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["event"] for r in lines] == ["start", "epoch"]
    assert lines[0]["x"] == 0.5 and lines[0]["arr"] == [1.0, 1.0] and lines[1]["epoch"] == 1
    assert all(isinstance(r["time"], float) for r in lines)


# ---- sizes ---------------------------------------------------------------------------------

def test_count_params_paper_fcn_without_allocation():
    net = Network("mlp", (3200, 1600, 800, 400), {"out_dim": 22, "activation": "gelu"})
    variables = abstract_variables(net, (22,))
    assert all(isinstance(a, jax.ShapeDtypeStruct) for a in jax.tree.leaves(variables))
    assert count_params(variables) == 6_805_222


def test_count_params_paper_fcn_from_config(compose_cfg):
    model = compose_cfg(["model=fcn_paper"])["model"]
    net = Network(model["arch"], tuple(model["widths"]),
                  {"out_dim": 22, "activation": model["activation"], "gamma": model["gamma"]})
    assert count_params(abstract_variables(net, (22,))) == 6_805_222


def test_count_params_ignores_batch_statistics():
    net, shape = NETWORKS["cnn"]
    variables = abstract_variables(net, shape)
    assert "batch_stats" in variables
    assert count_params(variables) == count_params(variables["params"])
    # conv 3x3: 3->3, 3->4 with bias; BatchNorm scale+bias; dense 4->5->3
    expected = (27 * 3 + 3) + (27 * 4 + 4) + 2 * (3 + 4) + (4 * 5 + 5) + (5 * 3 + 3)
    assert count_params(variables) == expected


def dense_flops(dims):
    return 2 * sum(a * b for a, b in zip(dims[:-1], dims[1:], strict=True))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(widths=st.lists(st.integers(1, 64), min_size=1, max_size=4), in_dim=st.integers(1, 16),
       out_dim=st.integers(1, 8), activation=st.sampled_from(["relu", "tanh", "gelu"]),
       data=st.data())
def test_count_flops_of_mlp(widths, in_dim, out_dim, activation, data):
    net = Network("mlp", tuple(widths), {"out_dim": out_dim, "activation": activation})
    dims = [in_dim, *widths, out_dim]
    flops = count_flops(net, (in_dim,))
    units = sum(widths) + out_dim
    # the matrix products of one sample, plus a few operations per unit (bias, activation)
    assert dense_flops(dims) <= flops <= dense_flops(dims) + 40 * units
    layer = data.draw(st.integers(0, len(widths) - 1))
    if widths[layer] > 1:
        smaller = list(widths)
        smaller[layer] = data.draw(st.integers(1, widths[layer] - 1))
        assert count_flops(net.with_widths(smaller), (in_dim,)) < flops


def test_count_flops_paper_fcn():
    net = Network("mlp", (3200, 1600, 800, 400), {"out_dim": 22, "activation": "gelu"})
    flops = count_flops(net, (22,))
    assert dense_flops([22, 3200, 1600, 800, 400, 22]) <= flops <= 1.01 * dense_flops(
        [22, 3200, 1600, 800, 400, 22])
    assert count_flops(net.with_widths((1600, 800, 400, 200)), (22,)) < flops / 3


def test_machine_names_the_allocator():
    expected = "tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "system"
    assert cprov.machine().endswith(f", malloc: {expected}")
    if not fastmalloc.TCMALLOC.exists():
        pytest.skip(f"{fastmalloc.TCMALLOC} is not installed")
    code = "from condensation.provenance import allocator; print(allocator())"
    out = subprocess.run([sys.executable, "-c", code],
                         env={**os.environ, "LD_PRELOAD": str(fastmalloc.TCMALLOC)}, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "tcmalloc"


def test_machine_names_the_cpu_generation_and_package_versions(tmp_path, monkeypatch):
    """The CPU's family and model, not only its name, and the versions that set the numbers."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n\n"
                       "processor\t: 1\ncpu family\t: 99\nmodel name\t: other\n")
    real_path = cprov.Path
    monkeypatch.setattr(cprov, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    m = cprov.machine()
    assert "(AMD EPYC, cpu family 26, model 2)" in m
    assert f"jax {jax.__version__}" in m and f"flax {importlib.metadata.version('flax')}" in m
    assert "optax " in m and "jaxlib " in m


def test_the_command_line_preloads_a_faster_malloc_once(monkeypatch, tmp_path):
    """Started again (execve) with the first faster malloc installed, unless one is preloaded
    already or CONDENSATION_MALLOC=system; without any installed, not at all."""
    lib = tmp_path / "libfast.so"
    lib.write_bytes(b"")
    calls = []
    monkeypatch.setattr(fastmalloc.os, "execve", lambda exe, argv, env: calls.append((argv, env)))
    monkeypatch.setattr(fastmalloc, "FAST_MALLOCS", (tmp_path / "missing.so", lib))
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("CONDENSATION_MALLOC", raising=False)
    fastmalloc.preload_fast_malloc(["-m", "experiments.run", "+exp=toy"])
    assert len(calls) == 1 and calls[0][0][1:] == ["-m", "experiments.run", "+exp=toy"]
    assert calls[0][1]["LD_PRELOAD"] == str(lib)
    monkeypatch.setenv("LD_PRELOAD", str(lib))
    fastmalloc.preload_fast_malloc(["-m", "experiments.run"])
    monkeypatch.delenv("LD_PRELOAD")
    monkeypatch.setenv("CONDENSATION_MALLOC", "system")
    fastmalloc.preload_fast_malloc(["-m", "experiments.run"])
    monkeypatch.delenv("CONDENSATION_MALLOC")
    monkeypatch.setattr(fastmalloc, "FAST_MALLOCS", (tmp_path / "missing.so",))
    fastmalloc.preload_fast_malloc(["-m", "experiments.run"])
    assert len(calls) == 1


def test_a_preloaded_malloc_gets_its_options_unless_the_user_set_them(monkeypatch):
    lib = fastmalloc.MIMALLOC
    env = fastmalloc.preload_env(lib, {"PATH": "/bin", "MIMALLOC_PURGE_DELAY": "10"})
    assert env["LD_PRELOAD"] == str(lib) and env["PATH"] == "/bin"
    assert env["MIMALLOC_PURGE_DELAY"] == "10"  # the user's value stays
    assert env["MIMALLOC_ALLOW_LARGE_OS_PAGES"] == "1"
    assert "MIMALLOC_PURGE_DELAY" not in fastmalloc.preload_env(fastmalloc.TCMALLOC, {})
