"""Shared fixtures: configs composed with Hydra exactly as ``python -m experiments.run`` does."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# shared/ sits beside the work tree, here and in CI's fresh clone
CHECK_RESULTS = ROOT.parent / "shared" / "tools" / "check-results"
PYTHON = sys.executable

# One XLA compilation cache for the whole session, the child processes of the tests included:
# many tests compile the same small programs (the toy runs, the tiny MobileNetV2s) under fresh
# jit objects, and a cached executable is the one XLA would compile again. Set before jax is
# imported (the children read the same environment); removed when the session ends.
_XLA_CACHE = tempfile.mkdtemp(prefix="condensation-tests-xla-")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _XLA_CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# Under pytest-xdist each worker (and its children) gets a cache of its own: the controller's
# value is inherited, and JAX writes an entry in place, so two workers compiling the same
# program at once could read each other's half-written entry.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE


def pytest_sessionstart(session):
    import jax

    if jax.config.jax_compilation_cache_dir != os.environ["JAX_COMPILATION_CACHE_DIR"]:
        raise pytest.UsageError("jax was imported before tests/conftest.py set its compilation "
                                "cache: import jax inside functions there")


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_XLA_CACHE, ignore_errors=True)


# The test files that take longest, longest first (seconds of both processes together, measured
# with README's command and --durations=0 on 2 cores of an AMD EPYC family 25 model 1 at
# 81713d6). README's command runs the files in this order (--dist loadfile
# --no-loadscope-reorder): the last files to start are short ones and the two processes end
# together. xdist's own order (files with more tests first) left single slow tests, such as the
# 38-s kill/resume run, for the end, one process working alone for the last 50 s.
LONGEST_FIRST = [
    "test_baselines.py",      # 114
    "test_configs.py",        # 111
    "test_compensate.py",     # 99
    "test_mobilenet.py",      # 87
    "test_discover.py",       # 86
    "test_experiment.py",     # 76
    "test_surrogate.py",      # 60
    "test_condense.py",       # 54
    "test_published.py",      # 48
    "test_schema.py",         # 40
    "test_benchmark.py",      # 39
    "test_kill_resume.py",    # 38
    "test_jaxpr_onnx.py",     # 36
    "test_published_configs.py",  # 33
    "test_bad_input.py",      # 33
    "test_data_parallel.py",  # 25
    "test_readme.py",         # 24
    "test_api.py",            # 24
    "test_phenomenon.py",     # 19
    "test_combustion_data.py",  # 13
    "test_fold_allocate.py",  # 12
    "test_sweeps.py",         # 10
]


def pytest_collection_modifyitems(session, config, items):
    """Files in LONGEST_FIRST's order, then the others; the tests of a file keep their order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))

# A toy run that takes a few seconds (conf/debug/toy.yaml): 3 epochs (a checkpoint after each),
# then at most two automatic rounds of condense -> 2 fine-tuning epochs. 7 calls of train_epoch
# when both rounds are accepted, at least 5 in any case.
TINY_TOY = ["+exp=toy", "+debug=toy"]


def compose_config(overrides: list[str]) -> dict[str, Any]:
    """The resolved config as a plain dict, as experiments/run.py hands it to train_and_reduce."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name="tests"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def random_variables(init: Callable[..., Any], *args: Any,
                     seed: int | np.random.Generator = 0) -> Any:
    """Random, generic variables with the structure ``init(key, *args)`` returns, drawn by NumPy.

    ``init`` is traced for its shapes only: a model's own initializer would compile its random
    number programs for every new shape (about a second each on 2 cores), and the tests that
    need no particular initialization only need units that differ. Arrays of two or more axes
    ~ N(0, 1 / fan-in) (fan-in: the product of all axes but the last), vectors ~ N(0, 0.3^2),
    BatchNorm ``var`` in [0.5, 2] and ``scale`` in 1 + N(0, 0.3^2). ``seed`` may be a NumPy
    Generator, which the draws then continue (inputs drawn from a generator seeded alike would
    repeat the first kernel's numbers)."""
    # imported here: JAX reads the compilation cache's settings above when it is imported
    import jax
    import jax.numpy as jnp

    shapes = jax.eval_shape(init, jax.random.key(0), *args)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = getattr(path[-1], "key", None)
        if name == "var":
            value = rng.uniform(0.5, 2.0, leaf.shape)
        elif len(leaf.shape) >= 2:
            value = rng.normal(0.0, 1.0 / np.sqrt(np.prod(leaf.shape[:-1])), leaf.shape)
        else:
            value = rng.normal(1.0 if name == "scale" else 0.0, 0.3, leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def check_results(folder: Path) -> None:
    """Run shared/tools/check-results (the results contract) on a run directory."""
    if not CHECK_RESULTS.exists():
        pytest.skip(f"{CHECK_RESULTS} is not here")
    result = subprocess.run([PYTHON, str(CHECK_RESULTS), str(folder)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def compose_cfg() -> Callable[[list[str]], dict[str, Any]]:
    """``compose_cfg(overrides) -> dict``."""
    return compose_config


@pytest.fixture
def tiny_toy_cfg() -> dict[str, Any]:
    """A fresh copy of the tiny toy config (tests may change it)."""
    return compose_config(TINY_TOY)
