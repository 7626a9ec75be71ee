"""Sweeps: Hydra multirun under the joblib and submitit launchers, and scripts/aggregate.py, which
turns a sweep folder into a table and a plot with the mean and spread over seeds."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import statistics
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import PYTHON, ROOT, compose_config

AGGREGATE = ROOT / "scripts" / "aggregate.py"
_spec = importlib.util.spec_from_file_location("aggregate", AGGREGATE)
aggregate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(aggregate)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# A toy run of a few seconds: 3 epochs, then one automatic round with one fine-tuning epoch.
TINY_TOY_SWEEP = ["+exp=toy", "model.widths=[8,8]", "data.n_train=64", "data.n_val=32",
                  "data.n_test=32", "train.batch_size=32", "train.epochs=3",
                  "reduce.finetune_epochs=1", "reduce.auto.max_rounds=1"]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _fake_run(folder: Path, cfg: dict, summary: dict) -> None:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (folder / "summary.json").write_text(json.dumps(summary))


# Hand-written sweep of 2 seeds x 2 thresholds: (threshold, seed) -> summary numbers.
FAKE = {
    (0.99, 0): {"size_ratio": 0.50, "original_metric": 0.10, "reduced_metric_after_finetune": 0.12,
                "reduced_params": 50, "accepted_round": 0},
    (0.99, 1): {"size_ratio": 0.60, "original_metric": 0.14, "reduced_metric_after_finetune": 0.16,
                "reduced_params": 60, "accepted_round": None},
    (0.95, 0): {"size_ratio": 0.20, "original_metric": 0.10, "reduced_metric_after_finetune": 0.20,
                "reduced_params": 20, "accepted_round": 1},
    (0.95, 1): {"size_ratio": 0.30, "original_metric": 0.14, "reduced_metric_after_finetune": 0.30,
                "reduced_params": 30, "accepted_round": 1},
}


@pytest.fixture
def fake_sweep(tmp_path) -> Path:
    sweep = tmp_path / "multirun" / "toy"
    for (t, seed), numbers in FAKE.items():
        cfg = {"model": {"name": "mlp", "widths": [64, 64]},
               "reduce": {"mode": "manual", "thresholds": [t], "auto": {"start": 0.99}},
               "seed": seed, "name": "toy",
               "fresh": seed == 1}  # fresh does not change a result: it must not split groups
        summary = {"experiment": "toy", "original_params": 100, "metric": "test_loss",
                   "higher_is_better": False, "log_metric": False, "seed": seed,
                   "commit": "abc", "widths_after": [3, 4], "original_extra": {"x": {"y": seed}},
                   **numbers}
        _fake_run(sweep / f"reduce.thresholds=[{t}],seed={seed}", cfg, summary)
    # not finished (no summary.json): ignored
    (sweep / "reduce.thresholds=[0.9],seed=0").mkdir()
    (sweep / "reduce.thresholds=[0.9],seed=0" / "config.yaml").write_text("seed: 0\n")
    # Hydra's own copy of the config in .hydra/ is not a run either
    (sweep / "reduce.thresholds=[0.95],seed=0" / ".hydra").mkdir()
    (sweep / "reduce.thresholds=[0.95],seed=0" / ".hydra" / "config.yaml").write_text("seed: 0\n")
    return sweep


def test_aggregate_table_and_plot(fake_sweep, tmp_path, capsys):
    out = tmp_path / "results" / "toy" / "sweep"
    assert aggregate.main([str(fake_sweep), "--out", str(out),
                           "--field", "original_extra.x.y"]) == 0
    rows = _read_csv(out / "sweep.csv")
    assert [r["group"] for r in rows] == ["reduce.thresholds=[0.95]", "reduce.thresholds=[0.99]"]
    assert [r["reduce.thresholds"] for r in rows] == ["[0.95]", "[0.99]"]
    for row in rows:
        t = float(row["reduce.thresholds"].strip("[]"))
        assert row["n_seeds"] == "2" and row["seeds"] == "0 1" and row["metric"] == "test_loss"
        for field in ("size_ratio", "original_metric", "reduced_metric_after_finetune",
                      "reduced_params"):
            values = [FAKE[(t, s)][field] for s in (0, 1)]
            assert float(row[f"{field}_mean"]) == pytest.approx(statistics.fmean(values))
            assert float(row[f"{field}_std"]) == pytest.approx(statistics.stdev(values))  # ddof=1
        assert float(row["original_params_mean"]) == 100 and float(row["original_params_std"]) == 0
        assert float(row["original_extra.x.y_mean"]) == 0.5  # --field: a nested number
    # a null field is left out of its group's statistics: one value, no spread
    r99 = rows[1]
    assert float(r99["accepted_round_mean"]) == 0 and r99["accepted_round_std"] == ""
    # exact numbers of one cell, spelled out
    assert float(rows[0]["size_ratio_mean"]) == pytest.approx(0.25)
    assert float(rows[0]["size_ratio_std"]) == pytest.approx(0.0707106781, rel=1e-6)
    for col in ("seed_mean", "fresh", "seed", "model.widths", "commit_mean", "widths_after_mean",
                "higher_is_better_mean"):
        assert col not in rows[0]

    md = (out / "sweep.md").read_text()
    assert "| reduce.thresholds |" in md and "| [0.95] | test_loss | 2 | 0.25 ± 0.07071 |" in md
    assert "The same in every run: original_params = 100" in md
    png = (out / "sweep.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5000
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporary files
    assert "4 runs, 2 groups" in capsys.readouterr().out


def test_aggregate_without_differences_is_one_group(tmp_path):
    for seed in (0, 1, 2):
        _fake_run(tmp_path / "sweep" / f"seed={seed}", {"seed": seed, "name": "toy", "a": 1},
                  {"seed": seed, "size_ratio": 0.1 * seed, "original_metric": 1.0,
                   "reduced_metric_after_finetune": 2.0, "metric": "test_loss"})
    result = aggregate.aggregate(tmp_path / "sweep")
    assert result["keys"] == [] and len(result["rows"]) == 1
    row = result["rows"][0]
    assert row["group"] == "all runs" and row["n_seeds"] == 3
    assert row["size_ratio_mean"] == pytest.approx(0.1) and row["size_ratio_std"] == pytest.approx(0.1)
    assert aggregate.default_out(result, tmp_path / "sweep") == ROOT / "results" / "toy" / "sweep"


def test_aggregate_groups_runs_across_operational_keys(tmp_path):
    """A run made before train.track_groups_at existed, or with other checkpoint frequencies or
    logger, has the same outcome: one group; a key that changes the outcome still splits."""
    train = {"epochs": 3, "checkpoint_every": 1, "checkpoint_every_steps": 100,
             "track_groups_at": 0.95}
    older = {k: v for k, v in train.items() if k not in ("checkpoint_every_steps", "track_groups_at")}
    for seed, tr, logger in ((0, older, "jsonl"), (1, train, "tensorboard"),
                             (2, {**train, "checkpoint_every": 5}, "jsonl")):
        _fake_run(tmp_path / "sweep" / f"seed={seed}",
                  {"seed": seed, "name": "toy", "train": tr, "logger": logger},
                  {"seed": seed, "size_ratio": 0.5, "original_metric": 1.0,
                   "reduced_metric_after_finetune": 2.0, "metric": "test_loss"})
    result = aggregate.aggregate(tmp_path / "sweep")
    assert result["keys"] == [] and result["rows"][0]["n_seeds"] == 3
    _fake_run(tmp_path / "sweep" / "seed=3", {"seed": 3, "name": "toy", "logger": "jsonl",
                                              "train": {**train, "epochs": 4}},
              {"seed": 3, "size_ratio": 0.5, "original_metric": 1.0,
               "reduced_metric_after_finetune": 2.0, "metric": "test_loss"})
    assert aggregate.aggregate(tmp_path / "sweep")["keys"] == ["train.epochs"]


def test_aggregate_without_finished_runs_is_a_clear_error(tmp_path):
    (tmp_path / "sweep" / "seed=0").mkdir(parents=True)
    (tmp_path / "sweep" / "seed=0" / "config.yaml").write_text("seed: 0\n")
    result = subprocess.run([PYTHON, str(AGGREGATE), str(tmp_path / "sweep"),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "no finished runs under" in result.stderr and "summary.json" in result.stderr
    assert "1 run directories have config.yaml but no summary.json" in result.stderr
    assert not (tmp_path / "out").exists()
    missing = subprocess.run([PYTHON, str(AGGREGATE), str(tmp_path / "nothing")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "is not a folder" in missing.stderr


@pytest.mark.parametrize("launcher", ["slurm", "local"])
def test_launcher_configs_compose(launcher):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")  # the `cluster` extra
    cfg = compose_config(["+exp=toy", f"hydra/launcher={launcher}"])
    assert cfg["name"] == "toy"  # +exp=... composes with the launcher group chosen


def test_slurm_launcher_config_makes_a_valid_sbatch_script(tmp_path, monkeypatch):
    """conf/hydra/launcher/slurm.yaml's keys are all accepted by submitit and end up in the
    sbatch script (no cluster needed: a stand-in ``srun`` on PATH)."""
    submitit = pytest.importorskip("submitit")
    from hydra import compose, initialize_config_dir
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3", job_name="run"):
        cfg = compose(config_name="config", return_hydra_config=True, overrides=[
            "+exp=combustion", "hydra/launcher=slurm", "hydra.launcher.partition=cpu",
            f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params["_target_"].endswith("SlurmLauncher")
    params.pop("_target_")
    # as hydra_plugins.hydra_submitit_launcher.submitit_launcher.BaseSubmititLauncher.launch does
    executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -m experiments.run", "uid")
    for line in ("--cpus-per-task=4", "--mem=8GB", "--time=240", "--partition=cpu",
                 f"--output={tmp_path / 'sweep'}/.submitit/"):
        assert f"#SBATCH {line}" in script, script


def _sweep(overrides: list[str], sweep_dir: Path, timeout: float) -> subprocess.CompletedProcess:
    cmd = [PYTHON, "-m", "experiments.run", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def _check_sweep(sweep_dir: Path, out: Path, key: str, values: list[str]) -> list[dict[str, str]]:
    """One run directory per job under the sweep dir, named by its overrides (shortened with a
    hash when long); aggregate.py makes a table of len(values) groups of 2 seeds."""
    runs = sorted(p.parent for p in sweep_dir.glob("*/summary.json"))
    assert len(runs) == 2 * len(values), sorted(p.name for p in sweep_dir.iterdir())
    for run in runs:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert f"seed={cfg['seed']}" in run.name.split(",") or len(run.name) > 100
        assert (run / "curve.csv").is_file() and (run / "size_vs_metric.png").is_file()
    assert len({r.name for r in runs}) == len(runs)
    result = subprocess.run([PYTHON, str(AGGREGATE), str(sweep_dir), "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = _read_csv(out / "sweep.csv")
    assert [r[key] for r in rows] == values
    assert [r["n_seeds"] for r in rows] == ["2"] * len(values)
    assert all(r["seeds"] == "0 1" for r in rows)
    assert all(0 < float(r["size_ratio_mean"]) <= 1 for r in rows)
    assert (out / "sweep.png").read_bytes().startswith(PNG_MAGIC)
    assert (out / "sweep.md").is_file()
    return rows


@pytest.mark.slow   # 16 s; the launchers' configs compose in test_launcher_configs_compose
def test_joblib_sweep_of_the_toy_experiment(tmp_path):
    """2 seeds x 2 starting thresholds in 2 parallel processes (about 30 s on 2 cores)."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    result = _sweep([*TINY_TOY_SWEEP, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     "seed=0,1", "reduce.auto.start=0.999,0.99"], sweep, timeout=600)
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    rows = _check_sweep(sweep, tmp_path / "agg", "reduce.auto.start", ["0.99", "0.999"])
    # every run of a group shares the original network: same seeds, same training
    assert rows[0]["original_metric_mean"] == rows[1]["original_metric_mean"]


@pytest.mark.slow
def test_submitit_local_sweep_of_the_quick_combustion_experiment(tmp_path):
    """The quick combustion config, 2 seeds x 2 thresholds, through submitit on this machine
    (conf/hydra/launcher/local.yaml, i.e. submitit_local): the four jobs run at once, so this
    takes about 4 quick runs' time on 2 cores. The data come from (or go to) the default cache,
    .cache/condensation, shared with ``python -m experiments.run +exp=combustion``."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    _sweep(["+exp=combustion", "hydra/launcher=local", "seed=0,1",
            "reduce.thresholds=[0.99],[0.95]"], sweep, timeout=3 * 3600)
    assert list((sweep / ".submitit").glob("*/*_log.out")), "submitit logs are missing"
    rows = _check_sweep(sweep, tmp_path / "agg", "reduce.thresholds", ["[0.95]", "[0.99]"])
    assert all(r["metric"] == "test_loss" for r in rows)
