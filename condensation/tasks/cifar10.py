"""CIFAR-10: from tensorflow-datasets (prepared array_record data) or a folder of two npz files.

``cifar10_task(cfg, seed, workdir)`` (``data.name=cifar10``) returns a
:class:`~condensation.tasks.base.Task` with in-memory splits: images float32 [N, 32, 32, 3],
normalized per channel with the training split's statistics, labels int32 [N]. The validation
split is taken from the training set (stratified, seeded by ``split_seed``), the test split is
the data set's own. ``augment`` (random 32x32 crop of the 4-pixel padded image, horizontal flip)
is applied inside the jitted train step.

Sources (``cfg['source']``):

- ``npz``: ``<dir>/cifar10_train.npz`` and ``<dir>/cifar10_test.npz``, each with ``images`` uint8
  [N, 32, 32, 3] and ``labels`` integer [N] in 0..9. ``<dir>`` is ``cfg['npz_dir']``, else the
  environment variable ``CIFAR10_NPZ_DIR``, else ``../shared/data/cifar10`` beside the repository
  (the offline JPEG copy, labelled "CIFAR-10 (JPEG copy)").
- ``tfds``: ``tfds.data_source('cifar10', data_dir=cfg['tfds_data_dir'])`` over a prepared
  array_record data set; reading needs no TensorFlow (preparing it does).
- ``auto``: tfds when a prepared data set is there, else npz.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from condensation.errors import ConfigError
from condensation.tasks.base import Task, register

REPO = Path(__file__).resolve().parents[2]
DEFAULT_NPZ_DIR = REPO.parent / "shared" / "data" / "cifar10"
NPZ_FILES = {"train": "cifar10_train.npz", "test": "cifar10_test.npz"}
ENV_VAR = "CIFAR10_NPZ_DIR"
SOURCES = ("auto", "npz", "tfds")
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
PAD = 4

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (images uint8 [N,32,32,3], labels int32 [N])


class CIFAR10DataError(ConfigError, FileNotFoundError):
    """The data are missing or malformed; raised before any training (the CLI prints it)."""


# ---- sources ---------------------------------------------------------------------------------

def _explicit_npz_dir(cfg: dict[str, Any]) -> tuple[Path | None, str]:
    if cfg.get("npz_dir"):
        return Path(cfg["npz_dir"]).expanduser(), "data.npz_dir"
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser(), ENV_VAR
    return None, ""


def npz_dir(cfg: dict[str, Any]) -> Path | None:
    """The folder to read: ``data.npz_dir``, else $CIFAR10_NPZ_DIR, else the shared copy if there.

    A folder given explicitly is used as given (a typo is an error, not a silent fallback).
    """
    folder, _ = _explicit_npz_dir(cfg)
    if folder is not None:
        return folder
    return DEFAULT_NPZ_DIR if all((DEFAULT_NPZ_DIR / f).is_file() for f in NPZ_FILES.values()) else None


def _check_arrays(images: Any, labels: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = np.asarray(images), np.asarray(labels)
    ok = (images.dtype == np.uint8 and images.ndim == 4 and images.shape[1:] == IMAGE_SHAPE
          and labels.ndim == 1 and len(labels) == len(images) and len(images) > 0
          and np.issubdtype(labels.dtype, np.integer)
          and labels.min() >= 0 and labels.max() < NUM_CLASSES)
    if not ok:
        lab = f"{labels.dtype} {list(labels.shape)}"
        if labels.size and labels.dtype.kind in "iuf":
            lab += f" in {labels.min()}..{labels.max()}"
        raise CIFAR10DataError(
            f"{where}: expected 'images' uint8 [N, 32, 32, 3] and 'labels' integer [N] in "
            f"0..{NUM_CLASSES - 1}; got images {images.dtype} {list(images.shape)}, labels {lab}"
        )
    return images, labels.astype(np.int32)


def load_npz(folder: str | os.PathLike) -> Arrays:
    """``{'train': (images, labels), 'test': ...}`` from ``folder``'s two npz files, validated."""
    folder = Path(folder)
    out = {}
    for split, name in NPZ_FILES.items():
        path = folder / name
        if not path.is_file():
            raise CIFAR10DataError(f"{path} does not exist (a CIFAR-10 npz folder holds "
                                   f"{' and '.join(NPZ_FILES.values())})")
        with np.load(path) as f:
            missing = {"images", "labels"} - set(f.files)
            if missing:
                raise CIFAR10DataError(f"{path}: expected arrays 'images' uint8 [N, 32, 32, 3] and "
                                       f"'labels' [N]; it lacks {sorted(missing)} (has {f.files})")
            out[split] = _check_arrays(f["images"], f["labels"], str(path))
    return out


def tfds_prepared(data_dir: str | None) -> bool:
    """Whether tfds finds a prepared cifar10 (array_record) in ``data_dir`` (None: tfds' default)."""
    try:
        import tensorflow_datasets as tfds
        from tensorflow_datasets.core.constants import get_default_data_dir
    except ImportError:
        return False
    root = Path(data_dir or get_default_data_dir()).expanduser()
    if not (root / "cifar10").is_dir():  # spares tfds' warnings about a missing data set
        return False
    try:
        builder = tfds.builder("cifar10", data_dir=data_dir)
        if not builder.is_prepared():
            return False
        fmt = builder.info.file_format
        return fmt is not None and "array_record" in str(getattr(fmt, "value", fmt))
    except Exception:  # an unreadable data dir counts as no data set
        return False


def load_tfds(data_dir: str | None) -> Arrays:
    """The same arrays from ``tfds.data_source('cifar10')`` (no TensorFlow needed to read)."""
    import tensorflow_datasets as tfds

    sources = tfds.data_source("cifar10", split=["train", "test"], data_dir=data_dir, download=False)
    out = {}
    for split, source in zip(["train", "test"], sources, strict=True):
        n = len(source)
        images = np.empty((n, *IMAGE_SHAPE), np.uint8)
        labels = np.empty(n, np.int64)
        for i in range(n):
            ex = source[i]
            images[i], labels[i] = ex["image"], ex["label"]
        out[split] = _check_arrays(images, labels, f"tfds cifar10 {split}")
    return out


def _not_found(cfg: dict[str, Any], why: str) -> CIFAR10DataError:
    folder, origin = _explicit_npz_dir(cfg)
    looked = f"{folder} ({origin})" if folder is not None else f"{DEFAULT_NPZ_DIR} (the default)"
    return CIFAR10DataError(
        f"CIFAR-10 data not found ({why}). Provide them one of two ways: "
        f"(1) npz: a folder with {NPZ_FILES['train']} and {NPZ_FILES['test']} (arrays 'images' "
        f"uint8 [N, 32, 32, 3], 'labels' [N]) given as data.npz_dir=DIR or ${ENV_VAR}=DIR "
        f"(looked in {looked}); "
        f"(2) tfds: a prepared array_record cifar10 (`tfds build cifar10 --file_format=array_record "
        f"--data_dir=DIR`, which needs TensorFlow and the network) given as data.tfds_data_dir=DIR "
        f"(looked in {cfg.get('tfds_data_dir') or 'the tfds default data dir'})."
    )


def load_cifar10(cfg: dict[str, Any]) -> tuple[Arrays, dict[str, Any]]:
    """The raw train/test arrays and where they came from (``info``)."""
    source = cfg.get("source", "auto")
    if source not in SOURCES:
        raise CIFAR10DataError(f"invalid config: data.source={source!r}; allowed: {', '.join(SOURCES)}")
    tfds_dir = cfg.get("tfds_data_dir")
    if source == "tfds" or (source == "auto" and tfds_prepared(tfds_dir)):
        try:
            arrays = load_tfds(tfds_dir)
        except CIFAR10DataError:
            raise
        except Exception as e:  # not prepared, not array_record, tfds missing, ...
            raise _not_found(cfg, f"data.source={source}: tfds could not read cifar10: "
                                  f"{type(e).__name__}: {e}") from e
        return arrays, {"source": "tfds", "tfds_data_dir": tfds_dir, "dataset_label": "CIFAR-10"}
    folder = npz_dir(cfg)
    if folder is None or not all((folder / f).is_file() for f in NPZ_FILES.values()):
        why = ("no prepared tfds data set and no npz folder" if source == "auto"
               else "data.source=npz and no npz folder")
        raise _not_found(cfg, why)
    return load_npz(folder), {"source": "npz", "npz_dir": str(folder),
                              "dataset_label": "CIFAR-10 (JPEG copy)"}


# ---- splits, normalization, augmentation -----------------------------------------------------

def interleaved_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation in which every prefix is (as nearly as possible) stratified by class.

    Random within each class; classes take turns (the k-th sample of every class, then the
    (k+1)-th ...). The offline copy is stored class by class, so caps and splits need this.
    """
    perm = rng.permutation(len(labels))
    lab = labels[perm]
    by_class = np.argsort(lab, kind="stable")
    starts = np.searchsorted(lab[by_class], lab[by_class])  # first position of each class
    rank = np.empty(len(lab), np.int64)
    rank[by_class] = np.arange(len(lab)) - starts
    return perm[np.lexsort((lab, rank))]


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std [3] of uint8 images [N, H, W, 3], in float64."""
    s = np.zeros(3)
    ss = np.zeros(3)
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].reshape(-1, 3).astype(np.float64)
        s += x.sum(0)
        ss += np.square(x).sum(0)
    n = images.shape[0] * images.shape[1] * images.shape[2]
    mean = s / n
    return mean, np.sqrt(np.maximum(ss / n - mean**2, 1e-12))


def normalize(images: np.ndarray, mean: np.ndarray, std: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """uint8 [N, 32, 32, 3] -> float32 (x - mean) / std, chunked (no float64 copy of the set)."""
    out = np.empty(images.shape, np.float32)
    m, inv = mean.astype(np.float32), (1.0 / std).astype(np.float32)
    for i in range(0, len(images), chunk):
        out[i:i + chunk] = (images[i:i + chunk].astype(np.float32) - m) * inv
    return out


Augment = Callable[[jax.Array, jax.Array], jax.Array]


def make_augment(pad_value: np.ndarray | None = None, pad: int = PAD) -> Augment:
    """``augment(rng, x [N, H, W, C] float) -> x``: random crop of the ``pad``-padded image (pad
    filled with ``pad_value`` [C], the normalized black pixel, as torchvision pads before
    normalizing) and a horizontal flip with probability 1/2. Jit-able; same shape and dtype."""
    pad_value = np.zeros(3, np.float32) if pad_value is None else np.asarray(pad_value, np.float32)

    def augment(rng: jax.Array, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        k_off, k_flip = jax.random.split(rng)
        fill = jnp.asarray(pad_value, x.dtype)
        padded = jnp.broadcast_to(fill, (n, h + 2 * pad, w + 2 * pad, c))
        padded = jax.lax.dynamic_update_slice(padded, x, (0, pad, pad, 0))
        offsets = jax.random.randint(k_off, (n, 2), 0, 2 * pad + 1)
        crop = jax.vmap(lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c)))
        x = crop(padded, offsets)
        flip = jax.random.bernoulli(k_flip, 0.5, (n,))
        return jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)

    return augment


def _cap(value: Any, key: str, available: int) -> int:
    if value is None:
        return available
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"invalid config: data.{key}={value!r}; allowed: a positive integer or null")
    return min(value, available)


@register("cifar10")
def cifar10_task(cfg: dict[str, Any], seed: int, workdir: Path) -> Task:
    """The CIFAR-10 task (see the module docstring). ``seed`` is unused: the split has its own
    ``split_seed`` so that runs of different seeds see the same validation set."""
    arrays, info = load_cifar10(cfg)
    x_all, y_all = arrays["train"]
    x_test, y_test = arrays["test"]
    rng = np.random.default_rng([int(cfg.get("split_seed", 0)), 10])
    n_val = cfg.get("n_val", 5000)
    if isinstance(n_val, bool) or not isinstance(n_val, int) or not 0 < n_val < len(x_all):
        raise ConfigError(f"invalid config: data.n_val={n_val!r}; allowed: an integer in "
                          f"1..{len(x_all) - 1} (the validation split comes from the training set)")
    order = interleaved_order(y_all, rng)
    val_idx = order[:n_val]
    rest = order[n_val:]
    train_idx = rest[:_cap(cfg.get("n_train"), "n_train", len(rest))]
    test_idx = interleaved_order(y_test, rng)[:_cap(cfg.get("n_test"), "n_test", len(x_test))]
    # The training order is reshuffled every epoch by the trainer; keep index order for locality.
    train_idx, val_idx, test_idx = np.sort(train_idx), np.sort(val_idx), np.sort(test_idx)

    mean, std = channel_stats(x_all[train_idx])
    prep = lambda x, idx: normalize(x[idx], mean, std)
    info.update(n_train=len(train_idx), n_val=len(val_idx), n_test=len(test_idx),
                mean=mean.round(3).tolist(), std=std.round(3).tolist())
    return Task(
        "cifar10", IMAGE_SHAPE, NUM_CLASSES,
        train=(prep(x_all, train_idx), y_all[train_idx]),
        val=(prep(x_all, val_idx), y_all[val_idx]),
        test=(prep(x_test, test_idx), y_test[test_idx]),
        loss="cross_entropy", metric="accuracy", higher_is_better=True,
        augment=make_augment(-mean / std), info=info,
    )
