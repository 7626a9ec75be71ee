"""scripts/benchmark.py: every section runs and writes its json and the README tables. Benchmarks,
not timed tests: only the structure is checked, and that every figure is finite and positive."""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from condensation.archs.mobilenetv2 import default_widths
from condensation.combustion.chem import Mechanism
from condensation.combustion.data import Normalizer
from condensation.combustion.surrogate import export_surrogate, surrogate_metadata
from condensation.network import Network, abstract_variables
from condensation.saved import save_network

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "benchmark.py"
SECTIONS = ("inference", "cantera", "condense", "training", "malloc", "discover")
PROVENANCE = ("command", "commit", "machine", "date", "wall_s", "quick")
TINY_STAGES = ((1, 4, 1, 1), (2, 6, 2, 2))


@pytest.fixture
def benchmark(monkeypatch):
    """scripts/benchmark.py as a module (registered while it runs: its dataclass needs that)."""
    spec = importlib.util.spec_from_file_location("benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "benchmark", module)
    spec.loader.exec_module(module)
    return module


def random_variables(net: Network, input_shape, seed: int = 0):
    """Variables in the module's layout drawn with numpy (init would compile for long): kernels
    ~ N(0, 1/fan_in), BatchNorm scale and variance 1, biases and means 0."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            return rng.normal(size=leaf.shape).astype(np.float32) / math.sqrt(math.prod(leaf.shape[:-1]))
        return (np.ones if name in ("scale", "var") else np.zeros)(leaf.shape, np.float32)

    return jax.tree_util.tree_map_with_path(draw, abstract_variables(net, input_shape))


def tiny_surrogates(folder: Path) -> Path:
    """An original/reduced pair of small H2/O2 surrogates with identity normalization."""
    mech = Mechanism.load("h2o2.yaml")
    active = [mech.species_index(s) for s in mech.active_species]
    dim = 2 + len(active)
    meta = surrogate_metadata("h2o2.yaml", mech.species, active, 1e-6,
                              Normalizer(np.zeros(dim), np.ones(dim)),
                              Normalizer(np.zeros(dim - 1), np.ones(dim - 1)))
    for which, widths in (("original", (24, 16)), ("reduced", (12, 8))):
        net = Network("mlp", widths, {"out_dim": dim - 1, "activation": "gelu", "gamma": 1.0})
        export_surrogate(folder / which, net, random_variables(net, (dim,)), meta)
    return folder


def tiny_mobilenet(widths) -> tuple[Network, dict]:
    net = Network("mobilenetv2", widths, {"num_classes": 10, "activation": "relu6", "gamma": 1.0,
                                          "stages": TINY_STAGES})
    return net, random_variables(net, (32, 32, 3))


def tiny_mobilenets(folder: Path) -> Path:
    full = default_widths(TINY_STAGES, stem=8, head=16)
    for which, widths in (("original", full), ("reduced", tuple(max(1, w // 2) for w in full))):
        save_network(folder / which, *tiny_mobilenet(widths))
    return folder


def numbers(tree):
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in numbers(v)]
    if isinstance(tree, list):
        return [x for v in tree for x in numbers(v)]
    return [tree] if isinstance(tree, int | float) and not isinstance(tree, bool) else []


TITLES = {"inference": "## Inference", "cantera": "## Combustion", "condense": "## One condensation",
          "training": "## Training throughput", "malloc": "## Training loop",
          "discover": "## Discovering the coupling"}


def read(out: Path, sections=SECTIONS) -> dict[str, dict]:
    """The sections' json files, checked for provenance and finite non-negative numbers."""
    got = {s: json.loads((out / f"{s}.json").read_text()) for s in sections}
    for d in got.values():
        assert all(k in d for k in PROVENANCE) and d["quick"] is True
        assert all(math.isfinite(x) and x >= 0 for x in numbers(d))
    readme = (out / "README.md").read_text()
    assert all(TITLES[s] in readme for s in sections)
    return got


def check_inference(d: dict, mobilenet_pair: bool) -> None:
    batches = {"combustion_fcn": [1, 256, 4096], "mobilenetv2": [1, 256, 1024]}
    if not mobilenet_pair:
        assert "skipped" in d["mobilenetv2"]
        del batches["mobilenetv2"]
    for name, sizes in batches.items():
        assert [b["batch"] for b in d[name]["batches"]] == sizes
        for b in d[name]["batches"]:
            assert b["speedup"] > 0 and b["original"]["per_sample_s"] > 0 and b["reduced"]["median_s"] > 0
        assert d[name]["ideal_speedup"] > 1


def check_cantera(d: dict) -> None:
    one, traj = d["one_step"]["timings"], d["trajectory"]["timings"]
    jax_rows = {"cantera_cold", "step_original", "step_reduced", "network_original",
                "network_reduced"}
    onnx_rows = {"onnx_original", "onnx_reduced"}   # with the export extra (onnxruntime)
    assert set(one) in (jax_rows, jax_rows | onnx_rows)
    for row in onnx_rows & set(one):   # the exported step gives the JAX step's temperatures
        assert one[row]["T_mae_vs_cantera_K"] == pytest.approx(
            one[row.replace("onnx", "step")]["T_mae_vs_cantera_K"], rel=1e-3, abs=1e-4)
    assert all(r["per_sample_s"] > 0 and r["speedup_vs_cantera"] > 0 for r in one.values())
    assert "cantera_reactor" in traj and all(r["per_step_per_sample_s"] > 0 for r in traj.values())


def check_condense(d: dict) -> None:
    for case in ("mlp_paper_redundant", "combustion_fcn", "mobilenetv2_fresh"):
        assert d[case]["median_s"] > 0 and d[case]["params_after"] <= d[case]["params_before"]
    assert d["mlp_paper_redundant"]["params_after"] < d["mlp_paper_redundant"]["params_before"]


def check_discover(d: dict) -> None:
    for case in ("mobilenetv2", "residual_cnn"):
        assert d[case]["median_s"] > 0 and d[case]["groups"] > 0
    assert d["mobilenetv2"]["groups"] == 25


def check_training(d: dict) -> None:
    assert d["matmul"]["gflops"] > 0
    assert all(m["samples_per_s"] > 0 and m["gflops"] > 0 for m in d["models"].values())


def check_malloc(d: dict) -> None:
    if "skipped" in d:
        assert "tcmalloc" in d["skipped"] and "mimalloc" in d["skipped"]
        return
    # each library as preloaded by default, mimalloc also with its own defaults, and the system
    # malloc and the default one with MobileNetV2's 1x1 convolutions in their earlier form
    expected = {"system": ("system", "dot"), **{name: (name, "dot") for name in d["libraries"]}}
    if "mimalloc" in d["libraries"]:
        expected["mimalloc, its defaults"] = ("mimalloc", "dot")
    for name in ("system", d["default"]):
        expected[f"{name}, 1x1 as convolution"] = (name, "convolution")
    assert {k: (r["allocator"], r["conv1x1"]) for k, r in d["allocators"].items()} == expected
    assert all(r["steps_per_s"] > 0 for r in d["allocators"].values())
    assert set(d["speedup"]) == set(expected) - {"system"} and all(x > 0 for x in d["speedup"].values())
    assert set(d["speedup_over_before"]) == set(expected) - {"system, 1x1 as convolution"}
    assert d["default"] in d["libraries"]
    # the allocator must not change what is trained; the 1x1 form only by float rounding
    assert d["params_identical"] is True
    g = d["gradient_agreement"]  # the forms as close to each other as float32 is to float64
    assert g["dot_vs_convolution"] <= 3 * max(g["dot_vs_float64"], g["convolution_vs_float64"]) + 1e-12
    assert 0 < g["dot_vs_float64"] < 0.05 and 0 < g["convolution_vs_float64"] < 0.05


def test_malloc_child_trains_and_reports(benchmark, monkeypatch):
    import condensation.archs.mobilenetv2 as mobilenetv2
    monkeypatch.setattr(benchmark, "fresh_mobilenetv2", lambda: tiny_mobilenet(default_widths(TINY_STAGES)))
    monkeypatch.setitem(benchmark.TRAIN, "mobilenetv2", (4, *benchmark.TRAIN["mobilenetv2"][1:]))
    dot_form = mobilenetv2.Conv1x1
    a = benchmark.malloc_child(3)
    assert a["allocator"] in ("system", "tcmalloc", "mimalloc") and a["steps_per_s"] > 0
    assert a["minor_faults_per_step"] >= 0 and 0 <= a["system_cpu_share"] <= 1
    assert len(a["params_sha256"]) == 64  # the same in every process: the full runs' check
    with pytest.raises(ValueError, match="conv1x1 must be one of"):
        benchmark.malloc_child(3, "winograd")
    # the 1x1 forms (the convolution form patched in and put back) against float64
    g = benchmark.gradient_agreement()
    assert mobilenetv2.Conv1x1 is dot_form and not jax.config.jax_enable_x64
    assert 0 < g["dot_vs_float64"] < 1e-3 and 0 < g["convolution_vs_float64"] < 1e-3
    assert 0 < g["dot_vs_convolution"] < 1e-3


def test_malloc_without_a_faster_malloc_is_skipped_with_the_reason(benchmark, tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark, "MIMALLOC", tmp_path / "no-mimalloc.so")
    out = tmp_path / "bench"
    benchmark.main(["--quick", "--out", str(out), "--only", "malloc", "--tcmalloc", str(tmp_path / "no.so")])
    d = json.loads((out / "malloc.json").read_text())
    assert "neither tcmalloc" in d["skipped"] and "Skipped: neither" in (out / "README.md").read_text()


def test_inference_and_cantera_on_small_surrogates(benchmark, tmp_path):
    out = tmp_path / "bench"
    benchmark.main(["--quick", "--out", str(out), "--only", "inference", "cantera",
                    "--combustion", str(tiny_surrogates(tmp_path / "comb")),
                    "--mobilenet", str(tmp_path / "none")])
    got = read(out, ("inference", "cantera"))
    check_inference(got["inference"], mobilenet_pair=False)
    check_cantera(got["cantera"])


def test_missing_networks_are_skipped_with_the_reason(benchmark, tmp_path):
    out, none = tmp_path / "bench", tmp_path / "none"
    benchmark.main(["--quick", "--out", str(out), "--only", "inference", "cantera",
                    "--combustion", str(none), "--mobilenet", str(none)])
    inference = json.loads((out / "inference.json").read_text())
    cantera = json.loads((out / "cantera.json").read_text())
    for skipped in (inference["combustion_fcn"], inference["mobilenetv2"], cantera):
        assert "none/original is not there" in skipped["skipped"]
    assert not (out / "condense.json").exists()
    assert "skipped" in (out / "README.md").read_text()


@pytest.mark.slow
def test_quick_run_of_every_section_on_small_networks(benchmark, tmp_path, monkeypatch):
    """The whole script on small stand-ins (surrogates, a MobileNetV2 pair, the fresh MobileNetV2
    and the 'paper-size' MLP): about a minute, compilation mostly."""
    monkeypatch.setattr(benchmark, "PAPER_WIDTHS", (40, 24, 16, 8))
    monkeypatch.setattr(benchmark, "fresh_mobilenetv2", lambda: tiny_mobilenet(default_widths(TINY_STAGES)))
    out = tmp_path / "bench"
    benchmark.main(["--quick", "--out", str(out), "--combustion", str(tiny_surrogates(tmp_path / "comb")),
                    "--mobilenet", str(tiny_mobilenets(tmp_path / "mbv2"))])
    got = read(out)
    check_inference(got["inference"], mobilenet_pair=True)
    check_cantera(got["cantera"])
    check_condense(got["condense"])
    check_training(got["training"])
    check_malloc(got["malloc"])
    check_discover(got["discover"])
    assert set(got["training"]["models"]) == {"combustion_fcn_original", "combustion_fcn_reduced",
                                              "mobilenetv2_original", "mobilenetv2_reduced"}


@pytest.mark.slow
def test_quick_command_on_the_published_networks(tmp_path):
    """The documented --quick command on the full-size networks (about 2 minutes: compilation)."""
    if not (ROOT / "results/combustion/surrogate/reduced/network.json").exists():
        pytest.skip("the combustion surrogates are not published")
    result = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    got = read(tmp_path)
    check_inference(got["inference"], mobilenet_pair=(ROOT / "results/cifar10/networks/reduced").exists())
    check_cantera(got["cantera"])
    check_condense(got["condense"])
    check_training(got["training"])
    check_malloc(got["malloc"])
    check_discover(got["discover"])
    assert got["inference"]["combustion_fcn"]["original"]["params"] == 6_761_609


def test_a_commit_is_shortened_with_its_dirty_mark_kept(benchmark):
    assert benchmark.short_commit("a" * 40 + "-dirty") == "a" * 10 + "-dirty"
    assert benchmark.short_commit("b" * 40) == "b" * 10
