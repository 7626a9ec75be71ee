"""Bad input stops a run before any work, with one message naming the key, the value and what is
allowed, and a non-zero exit; nothing already in the run directory changes -- even with
fresh=true, which would otherwise empty it."""
from __future__ import annotations

import hashlib
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import PYTHON, ROOT, TINY_TOY, compose_config

from condensation import fit as fit_module
from condensation.errors import ConfigError
from condensation.experiment import train_and_reduce
from condensation.network import Network
from condensation.runstate import Checkpoints
from condensation.saved import load_network, save_network
from experiments.evaluate import main as evaluate_main


def snapshot(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny toy run (its directory is copied, never changed, by the tests)."""
    workdir = tmp_path_factory.mktemp("finished")
    train_and_reduce(compose_config(TINY_TOY), workdir)
    return workdir


@pytest.fixture
def run_dir(finished, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(finished, target)
    return target


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


INVALID = [
    ("model.widths=[4,0]", "invalid config: model.widths=[4, 0]; allowed: a non-empty list of "
                           "positive integers"),
    ("reduce.auto.start=1.5", "invalid config: reduce.auto.start=1.5; allowed: a cosine threshold in (0, 1]"),
    ("model.activation=foo", "invalid config: model.activation='foo'; allowed: "),
    ("reduce.method=bogus", "invalid config: reduce.method='bogus'; allowed: "),
    ("logger=wandb", "invalid config: logger='wandb'; allowed: jsonl, tensorboard"),
    ("train.checkpoint_every_steps=-5", "invalid config: train.checkpoint_every_steps=-5"),
    ("train.optimizer=adamx", "invalid config: train.optimizer='adamx'; allowed: adam, adamw, sgd"),
]


@pytest.mark.parametrize("override, message", INVALID)
def test_invalid_value_leaves_a_finished_run_alone(run_dir, override, message):
    """In the process (what the command line calls after its own check, below): one line, and
    fresh=true empties nothing."""
    before = snapshot(run_dir)
    with pytest.raises(ConfigError) as err:
        train_and_reduce(compose_config([*TINY_TOY, override, "fresh=true"]), run_dir)
    assert str(err.value).startswith(message) and len(str(err.value).splitlines()) == 1, err.value
    assert snapshot(run_dir) == before


def test_invalid_value_on_the_command_line(run_dir):
    """The command line prints the same line after "error: " and exits with 2 (one value here: a
    fresh interpreter costs seconds; tests/test_schema.py refuses three more on the command line)."""
    override, message = INVALID[0]
    before = snapshot(run_dir)
    out = run_cli("experiments.run", *TINY_TOY, override, "fresh=true", f"hydra.run.dir={run_dir}")
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith(f"error: {message}"), out.stderr
    assert len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
    assert snapshot(run_dir) == before


def write_cifar_npz(folder, images_dtype=np.uint8, label_shape=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in [("cifar10_train.npz", 60), ("cifar10_test.npz", 20)]:
        images = rng.integers(0, 256, (n, 32, 32, 3)).astype(images_dtype)
        labels = np.arange(n) % 10
        np.savez(folder / name, images=images,
                 labels=labels.reshape(label_shape or labels.shape))
    return folder


CIFAR_TINY = ["+exp=cifar10", "data.n_val=20", "data.n_train=40", "train.epochs=1",
              "reduce.auto.max_rounds=1", "reduce.finetune_epochs=1", "fresh=true"]


@pytest.mark.parametrize("case, overrides, message", [
    ("images float32", ["data.source=npz"], "got images float32 [60, 32, 32, 3]"),
    ("labels 2-D", ["data.source=npz"], "labels int64 [30, 2]"),
    ("missing folder", ["data.source=npz", "data.npz_dir={tmp}/nowhere"], "nowhere"),
    ("missing mechanism", ["+exp=combustion", "data.mechanism=no_such_mech.yaml",
                           "data.cache_dir={tmp}/cache", "fresh=true"], "no_such_mech.yaml"),
])
def test_bad_data_leave_the_run_directory_alone(run_dir, tmp_path, case, overrides, message):
    npz = {"images float32": lambda f: write_cifar_npz(f, images_dtype=np.float32),
           "labels 2-D": lambda f: write_cifar_npz(f, label_shape=(-1, 2))}
    data = tmp_path / "data"
    if case in npz:
        npz[case](data)
    base = [] if overrides[0].startswith("+exp=") else [*CIFAR_TINY, f"data.npz_dir={data}"]
    cfg = compose_config([*base, *(o.replace("{tmp}", str(tmp_path)) for o in overrides)])
    before = snapshot(run_dir)
    with pytest.raises(ConfigError, match="data") as err:
        train_and_reduce(cfg, run_dir)
    assert message in str(err.value)
    assert snapshot(run_dir) == before


def test_bad_npz_on_the_command_line(run_dir, tmp_path):
    data = write_cifar_npz(tmp_path / "data", images_dtype=np.float32)
    before = snapshot(run_dir)
    out = run_cli("experiments.run", *CIFAR_TINY, "data.source=npz", f"data.npz_dir={data}",
                  f"hydra.run.dir={run_dir}")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "uint8" in out.stderr and "float32" in out.stderr and "Traceback" not in out.stderr
    assert snapshot(run_dir) == before


def foreign_network(folder, which: str) -> None:
    """Replace the saved network in ``folder`` by one the run's config does not describe."""
    if which == "another architecture":
        net = Network("cnn", (4, 8), {"n_conv": 1, "activation": "relu", "gamma": 1.0,
                                      "num_classes": 1})
        variables = net.module().init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    else:  # the run's network.json, with the arrays of an mlp with another number of layers
        net, _, _ = load_network(folder)
        variables = net.with_widths((8, 8, 8)).module().init(jax.random.key(0), jnp.zeros((1, 1)))
    save_network(folder, net, jax.tree.map(np.asarray, variables))


@pytest.mark.parametrize("which", ["another architecture", "arrays of other layers"])
def test_evaluate_refuses_a_network_of_another_architecture(run_dir, which, capsys):
    folder = run_dir / "networks" / "reduced"
    foreign_network(folder, which)
    before = snapshot(run_dir)
    assert evaluate_main([f"checkpoint={folder}"]) == 2  # the command's exit status
    err = capsys.readouterr().err
    assert f"checkpoint={folder}" in err, err
    assert ("holds a cnn network but its run's config" in err if which == "another architecture"
            else "variables do not fit mlp" in err), err
    assert not (folder / "evaluation.json").exists()
    assert snapshot(run_dir) == before


def test_evaluate_works_on_the_run_itself(run_dir):
    """The control of the test above: the run's own network evaluates."""
    assert evaluate_main([f"checkpoint={run_dir / 'networks' / 'reduced'}"]) == 0
    assert (run_dir / "networks" / "reduced" / "evaluation.json").is_file()


def test_malformed_data_directory(run_dir, tmp_path):
    """An npz folder without its test file, and a train file without the 'images' array."""
    data = write_cifar_npz(tmp_path / "data")
    (data / "cifar10_test.npz").unlink()
    cfg = compose_config([*CIFAR_TINY, "data.source=npz", f"data.npz_dir={data}"])
    before = snapshot(run_dir)
    with pytest.raises(ConfigError, match="cifar10_test.npz"):
        train_and_reduce(cfg, run_dir)
    np.savez(data / "cifar10_test.npz", pictures=np.zeros((2, 32, 32, 3), np.uint8),
             labels=np.zeros(2, np.int64))
    with pytest.raises(ConfigError, match="'images'"):
        train_and_reduce(cfg, run_dir)
    assert snapshot(run_dir) == before


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    """NaN inputs in the 3rd training epoch: the run stops with FloatingPointError; the
    checkpoint of epoch 2 is the latest and holds finite parameters; no results are written."""
    real = fit_module.train_epoch
    calls = []

    def poisoned(state, data, **kwargs):
        calls.append(kwargs["epoch"])
        if len(calls) == 3:
            data = (np.full_like(data[0], np.nan), data[1])
        return real(state, data, **kwargs)

    monkeypatch.setattr(fit_module, "train_epoch", poisoned)
    with pytest.raises(FloatingPointError, match="training loss became nan in epoch 2"):
        train_and_reduce(compose_config(TINY_TOY), tmp_path)
    ckpt = Checkpoints(tmp_path / "checkpoints")
    assert ckpt.mngr.restore(ckpt.mngr.latest_step())["meta"]["epoch"] == 2
    tree = ckpt.mngr.restore(ckpt.mngr.latest_step())["state"]
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(tree["params"]))
    assert not (tmp_path / "summary.json").exists()


def test_non_finite_loss_on_the_command_line(tmp_path):
    out = run_cli("experiments.run", *TINY_TOY, "train.optimizer=sgd", "train.lr=1e30",
                  f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 3, out.stdout + out.stderr
    assert "training loss became nan in epoch 0" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "summary.json").exists()
