"""CIFAR-10 loading: both sources (a tiny npz folder; tfds under tfds.testing.mock_data, which
reads through the real tfds.data_source without TensorFlow), the automatic choice, the errors,
the splits and normalization, and the augmentation."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from condensation.errors import ConfigError
from condensation.tasks import cifar10, make_task
from condensation.tasks.cifar10 import (
    CIFAR10DataError,
    cifar10_task,
    interleaved_order,
    load_cifar10,
    make_augment,
)


def write_npz(folder, n_train=200, n_test=60, seed=0, **overrides):
    """A tiny npz folder in the offline copy's layout (class-major order, like the copy)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in [("cifar10_train.npz", n_train), ("cifar10_test.npz", n_test)]:
        arrays = {"images": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                  "labels": np.sort(np.arange(n) % 10).astype(np.uint8)}
        arrays.update(overrides)
        np.savez(folder / name, **arrays)
    return folder


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("CIFAR10_NPZ_DIR", raising=False)


def npz_cfg(folder, **kw):
    return {"name": "cifar10", "source": "npz", "npz_dir": str(folder), "tfds_data_dir": None,
            "n_val": 50, "n_train": None, "n_test": None, **kw}


def test_npz_task(tmp_path, no_env):
    folder = write_npz(tmp_path / "data")
    task = make_task(npz_cfg(folder, n_train=100, n_test=40), seed=0, workdir=tmp_path)
    assert (task.input_shape, task.output_dim, task.loss, task.metric) == ((32, 32, 3), 10,
                                                                           "cross_entropy", "accuracy")
    assert task.higher_is_better and task.info["dataset_label"] == "CIFAR-10 (JPEG copy)"
    (xt, yt), (xv, yv), (xs, ys) = task.train, task.val, task.test
    assert xt.shape == (100, 32, 32, 3) and xv.shape == (50, 32, 32, 3) and xs.shape == (40, 32, 32, 3)
    assert xt.dtype == np.float32 and yt.dtype == np.int32
    # stratified: every class equally represented in the capped splits of class-major data
    assert np.bincount(yv, minlength=10).tolist() == [5] * 10
    assert np.bincount(yt, minlength=10).tolist() == [10] * 10
    assert np.bincount(ys, minlength=10).tolist() == [4] * 10
    # training statistics: the training split is normalized per channel
    np.testing.assert_allclose(xt.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(xt.std(axis=(0, 1, 2)), 1, atol=1e-3)
    # the validation split comes from the training set, is disjoint from the training split and
    # is the same for every run seed
    raw = np.load(folder / "cifar10_train.npz")["images"]
    mean, std = np.array(task.info["mean"]), np.array(task.info["std"])
    restore = lambda x: np.round(x * std + mean).astype(np.uint8).tobytes()
    raw_keys = {im.tobytes() for im in raw}
    assert all(restore(im) in raw_keys for im in xv)
    assert not {restore(im) for im in xv} & {restore(im) for im in xt}
    again = cifar10_task(npz_cfg(folder, n_train=100, n_test=40), seed=7, workdir=tmp_path)
    np.testing.assert_array_equal(again.val[0], xv)


def test_interleaved_order_is_stratified_prefix():
    labels = np.repeat(np.arange(10), [30, 30, 30, 30, 30, 30, 30, 30, 30, 3])
    order = interleaved_order(labels, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(len(labels)))
    assert np.bincount(labels[order[:20]], minlength=10).tolist() == [2] * 10
    assert np.bincount(labels[order[:48]], minlength=10).tolist() == [5] * 9 + [3]


def test_tfds_source_with_mock_data(tmp_path):
    """mock_data replaces the prepared files; tfds.data_source and its decoding are the real ones."""
    with tfds.testing.mock_data(num_examples=40):
        task = make_task({"name": "cifar10", "source": "tfds", "tfds_data_dir": str(tmp_path / "tfds"),
                          "n_val": 10}, seed=0, workdir=tmp_path)
    assert task.info["source"] == "tfds" and task.info["dataset_label"] == "CIFAR-10"
    assert task.train[0].shape == (30, 32, 32, 3) and task.val[0].shape == (10, 32, 32, 3)
    assert task.test[0].shape == (40, 32, 32, 3)
    assert task.train[1].dtype == np.int32 and task.train[1].max() < 10


def test_auto_prefers_prepared_tfds(tmp_path, monkeypatch, no_env):
    folder = write_npz(tmp_path / "data")
    cfg = {**npz_cfg(folder), "source": "auto", "tfds_data_dir": str(tmp_path / "tfds")}
    assert load_cifar10(cfg)[1]["source"] == "npz"   # nothing prepared there
    monkeypatch.setattr(cifar10, "tfds_prepared", lambda data_dir: True)
    with tfds.testing.mock_data(num_examples=20):
        assert load_cifar10(cfg)[1]["source"] == "tfds"


def test_npz_dir_from_environment(tmp_path, monkeypatch):
    folder = write_npz(tmp_path / "env")
    monkeypatch.setenv("CIFAR10_NPZ_DIR", str(folder))
    arrays, info = load_cifar10({"source": "npz"})
    assert info["npz_dir"] == str(folder) and arrays["train"][0].shape == (200, 32, 32, 3)


@pytest.mark.parametrize("source", ["auto", "npz", "tfds"])
def test_no_data_names_both_ways(tmp_path, monkeypatch, source, no_env):
    monkeypatch.setattr(cifar10, "DEFAULT_NPZ_DIR", tmp_path / "nothing")
    cfg = {"source": source, "npz_dir": None, "tfds_data_dir": str(tmp_path / "no_tfds")}
    with pytest.raises(CIFAR10DataError) as err:
        load_cifar10(cfg)
    msg = str(err.value)
    assert "data.npz_dir" in msg and "CIFAR10_NPZ_DIR" in msg and "data.tfds_data_dir" in msg
    assert isinstance(err.value, ConfigError)  # the command line prints it without a traceback


@pytest.mark.parametrize("override, match", [
    ({"images": np.zeros((20, 32, 32, 3), np.float32)}, "images float32"),
    ({"images": np.zeros((20, 3, 32, 32), np.uint8)}, r"\[20, 3, 32, 32\]"),
    ({"labels": np.arange(20) + 5}, r"in 5\.\.24"),
    ({"labels": np.zeros(7, np.int64)}, r"labels int64 \[7\]"),
])
def test_bad_npz_is_refused(tmp_path, override, match, no_env):
    folder = write_npz(tmp_path / "bad", n_train=20, n_test=20, **override)
    with pytest.raises(CIFAR10DataError, match=match) as err:
        load_cifar10(npz_cfg(folder))
    assert "expected 'images' uint8 [N, 32, 32, 3]" in str(err.value)


def test_bad_caps_are_refused(tmp_path, no_env):
    folder = write_npz(tmp_path / "data")
    with pytest.raises(ConfigError, match="data.n_val"):
        cifar10_task(npz_cfg(folder, n_val=200), 0, tmp_path)
    with pytest.raises(ConfigError, match="data.n_train"):
        cifar10_task(npz_cfg(folder, n_train=0), 0, tmp_path)


def test_augmentation_crops_and_flips():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(64, 32, 32, 3)), jnp.float32)
    pad_value = np.array([-1.0, -2.0, -3.0], np.float32)
    augment = jax.jit(make_augment(pad_value))
    y = np.asarray(augment(jax.random.key(0), x))
    assert y.shape == x.shape and y.dtype == np.float32
    x = np.asarray(x)
    padded = np.broadcast_to(pad_value, (64, 40, 40, 3)).copy()
    padded[:, 4:36, 4:36] = x
    kinds = []
    for i in range(64):  # each output is one of the 9 x 9 crops of the padded image, maybe flipped
        crops = {(dy, dx): padded[i, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)}
        match = [(dy, dx, flip) for (dy, dx), c in crops.items() for flip in (False, True)
                 if np.array_equal(y[i], c[:, ::-1] if flip else c)]
        assert match, f"sample {i} is no crop/flip of its padded input"
        kinds.append(match[0])
    assert any(f for _, _, f in kinds) and not all(f for _, _, f in kinds)
    assert len({(dy, dx) for dy, dx, _ in kinds}) > 10
    assert np.array_equal(np.asarray(augment(jax.random.key(0), x)), y)  # a function of the key


def test_unknown_source_is_refused():
    with pytest.raises(ConfigError, match=r"data.source='hdf5'; allowed: auto, npz, tfds"):
        load_cifar10({"source": "hdf5"})
