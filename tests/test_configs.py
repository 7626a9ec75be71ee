"""Every experiment config composes, validates and runs end to end at a tiny size; the command
line refuses invalid values before doing any work."""
from __future__ import annotations

import pytest
import yaml
from conftest import CONF, check_results, compose_config

from condensation.config import validate_config
from condensation.errors import ConfigError
from condensation.experiment import train_and_reduce
from condensation.saved import load_network

EXPERIMENTS = sorted(p.stem for p in CONF.glob("exp/*.yaml"))
DEBUG_PRESETS = sorted(p.stem for p in CONF.glob("debug/*.yaml"))

# The debug preset (conf/debug/<name>.yaml) that makes each experiment's run take seconds (tiny
# widths, tiny data); SMOKE goes on top. A new experiment needs a line here.
DEBUG = {"toy": "toy", "combustion": "combustion", "combustion_paper": "combustion",
         "combustion_paper_10": "combustion_paper_10",
         "cifar10": "cifar10", "cifar10_mobilenetv2": "cifar10_mobilenetv2",
         "cifar10_115": "cifar10_115", "cifar10_converged": "cifar10_115"}
SMOKE = ["train.epochs=1", "reduce.finetune_epochs=1"]

RUN_FILES = ["config.yaml", "metrics.jsonl", "summary.json", "curve.csv", "size_vs_metric.png",
             "networks/original/network.json", "networks/original/variables.npz",
             "networks/reduced/network.json", "networks/reduced/variables.npz"]


def test_experiments_exist():
    assert "toy" in EXPERIMENTS
    assert not (CONF / "exp_size").exists()  # an experiment file holds all of its values


def test_every_experiment_has_a_debug_preset_and_every_preset_is_used():
    assert set(DEBUG) == set(EXPERIMENTS)
    # cifar10_mobilenetv2 includes cifar10, combustion_paper_10 combustion, cifar10_115 both
    assert set(DEBUG.values()) | {"cifar10", "combustion"} == set(DEBUG_PRESETS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_validates(name):
    cfg = compose_config([f"+exp={name}"])
    assert {"model", "data", "train", "reduce", "seed", "name", "fresh"} <= set(cfg)
    validate_config(cfg)
    yaml.safe_dump(cfg)  # the run directory's config.yaml can hold it
    validate_config(compose_config([f"+exp={name}", f"+debug={DEBUG[name]}", *SMOKE]))


@pytest.mark.parametrize("name, model", [("combustion", "fcn_paper"), ("cifar10", "mobilenetv2"),
                                         ("combustion_paper", "fcn_small"), ("toy", "fcn_small")])
def test_choosing_a_model_changes_only_the_model(name, model):
    """No value of an experiment depends on its model choice (as conf/exp_size/ once did)."""
    base, other = compose_config([f"+exp={name}"]), compose_config([f"+exp={name}", f"model={model}"])
    assert other["model"]["name"] == model
    assert {k: v for k, v in other.items() if k != "model"} == {k: v for k, v in base.items() if k != "model"}


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
    """One data cache for the smoke runs (combustion and combustion_paper share their tiny data),
    in a temporary folder, not the checkout's."""
    return tmp_path_factory.mktemp("cache")


# The MobileNetV2 smoke runs take 30-40 s each (compilation) and stay out of the default suite's
# 10 minutes: the 11.5 % pipeline's stages run on tiny networks in tests/test_fold_allocate.py and
# test_compensate.py, the CIFAR-10 loop in the plain CNN's smoke run, MobileNetV2 itself in
# tests/test_mobilenet.py and test_published.py (its published networks evaluated);
# `python -m pytest -m slow` runs them.
SLOW_SMOKE = {"cifar10_115", "cifar10_mobilenetv2", "cifar10_converged"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_SMOKE else n
                                  for n in EXPERIMENTS])
def test_experiment_smoke_run(name, tmp_path, data_cache):
    cfg = compose_config([f"+exp={name}", f"+debug={DEBUG[name]}", *SMOKE])
    if "cache_dir" in cfg["data"]:
        cfg["data"]["cache_dir"] = str(data_cache)
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
def test_default_config_refuses_invalid_values(override, key):
    """The default config (the toy in manual mode) with one invalid value: one line naming it.
    The command line prints that line after "error: " and exits with 2 before Hydra creates the
    run directory (tests/test_schema.py, test_bad_input.py run it)."""
    with pytest.raises(ConfigError) as err:
        validate_config(compose_config([override]))
    assert str(err.value).startswith(f"invalid config: {key}="), err.value
    assert len(str(err.value).splitlines()) == 1, err.value
