"""Every experiment config composes, validates and runs end to end at a tiny size; the command
line refuses invalid values before doing any work."""
from __future__ import annotations

import subprocess

import pytest
import yaml
from conftest import CONF, PYTHON, ROOT, check_results, compose_config

from condensation.experiment import train_and_reduce, validate_config
from condensation.io import load_network

EXPERIMENTS = sorted(p.stem for p in CONF.glob("exp/*.yaml"))

# Per-experiment overrides that make a run take seconds (tiny widths, tiny data), on top of
# SMOKE. An experiment without an entry is skipped by the smoke test: add one line here.
TINY = {
    "toy": ["model.widths=[8,8]", "data.n_train=64", "data.n_val=32", "data.n_test=32",
            "train.batch_size=32", "reduce.auto.max_rounds=2"],
    # {tmp} is the test's temporary folder: the data cache goes there, not into the checkout
    "combustion": ["model.widths=[16,8]", "data.n_train_conditions=3", "data.n_val_conditions=1",
                   "data.n_test_conditions=1", "data.samples_per_trajectory=30",
                   "data.n_perturb=1", "data.workers=1", "data.cache_dir={tmp}/cache",
                   "data.rollout.n_val=1", "data.rollout.n_test=1", "data.rollout.max_steps=200",
                   "train.batch_size=32", "train.select_every=1", "reduce.thresholds=[0.9]"],
    "cifar10": ["data.n_train=256", "data.n_val=128", "data.n_test=128",
                "reduce.auto.max_rounds=1"],
}
SMOKE = ["train.epochs=1", "reduce.finetune_epochs=1"]

RUN_FILES = ["config.yaml", "metrics.jsonl", "summary.json", "curve.csv", "size_vs_metric.png",
             "networks/original/network.json", "networks/original/variables.npz",
             "networks/reduced/network.json", "networks/reduced/variables.npz"]


def test_experiments_exist():
    assert "toy" in EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_validates(name):
    cfg = compose_config([f"+exp={name}"])
    assert {"model", "data", "train", "reduce", "seed", "name", "fresh"} <= set(cfg)
    validate_config(cfg)
    yaml.safe_dump(cfg)  # the run directory's config.yaml can hold it


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_smoke_run(name, tmp_path):
    if name not in TINY:
        pytest.skip(f"conf/exp/{name}.yaml has no tiny overrides yet: add an entry to TINY in {__file__}")
    cfg = compose_config([f"+exp={name}", *SMOKE,
                          *(o.replace("{tmp}", str(tmp_path)) for o in TINY[name])])
    run_dir = tmp_path / "run"
    summary = train_and_reduce(cfg, run_dir)

    missing = [f for f in RUN_FILES if not (run_dir / f).is_file()]
    assert not missing, f"run directory lacks {missing}"
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == cfg
    assert (run_dir / "size_vs_metric.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for which, key in [("original", "widths_before"), ("reduced", "widths_after")]:
        net, _, _ = load_network(run_dir / "networks" / which)
        assert list(net.widths) == summary[key]
    check_results(run_dir)


@pytest.mark.parametrize("override, key", [
    ("model.widths=[0]", "model.widths"),
    ("reduce.thresholds=[1.5]", "reduce.thresholds"),
    ("model.activation=foo", "model.activation"),
    ("reduce.method=bogus", "reduce.method"),
])
def test_command_line_refuses_invalid_values(tmp_path, override, key):
    """The default config (the toy in manual mode) with one invalid value."""
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [PYTHON, "-m", "experiments.run", override, f"hydra.run.dir={run_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0, result.stdout
    assert f"invalid config: {key}=" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert not list(tmp_path.rglob("summary.json"))
    assert not (run_dir / "checkpoints").exists()


def test_missing_mechanism_is_refused_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [PYTHON, "-m", "experiments.run", "+exp=combustion", "data.mechanism=no_such_mech.yaml",
         f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "no_such_mech.yaml" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (run_dir / "config.yaml").exists() and not (run_dir / "checkpoints").exists()
