"""Files: networks as (network.json, variables.npz), atomic writes, the metrics log.

A saved network is a folder with ``network.json`` (architecture, widths, options, plus any
metadata the caller adds) and ``variables.npz`` whose keys are '/'-joined variable paths
(``params/Dense_0/kernel``). Both are plain formats readable without this package.
"""
from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from condensation.network import Network

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are for everyone to read
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def write_csv(path: str | os.PathLike, rows: list[dict[str, Any]], columns: list[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray | jax.Array):
        return np.asarray(o).tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


class MetricsLog:
    """Append-only JSON lines; each line is flushed so a killed run keeps what it logged.

    With ``tensorboard=FOLDER`` the numbers of each record are also written as TensorBoard
    scalars there (tensorboardX: event files without TensorFlow), see ``scalars``.
    """

    def __init__(self, path: str | os.PathLike, tensorboard: str | os.PathLike | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = None
        if tensorboard is not None:
            from tensorboardX import SummaryWriter  # optional: checked by validate_config

            self.writer = SummaryWriter(str(tensorboard), flush_secs=10)

    def log(self, **record: Any) -> None:
        record = {"time": round(time.time(), 3), **record}
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=_jsonable) + "\n")
            f.flush()
        if self.writer is not None:
            for tag, value, step in scalars(record):
                self.writer.add_scalar(tag, value, step, walltime=record["time"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def scalars(record: dict[str, Any]) -> list[tuple[str, float, int]]:
    """(tag, value, step) for the numbers of a metrics record: training epochs under
    ``train/``, fine-tuning epochs under ``finetune/round<r>/`` (step: epoch), reduction
    rounds under ``reduce/`` (step: round), the trained original under ``original/``."""
    event = record.get("event")
    if event == "epoch" and record.get("phase") == "finetune":
        prefix, step = f"finetune/round{record.get('round', 0)}", record.get("epoch", 0)
    elif event == "epoch":
        prefix, step = "train", record.get("epoch", 0)
    elif event in ("condensed", "round"):
        prefix, step = "reduce", record.get("round", 0)
    elif event in ("original", "done"):
        prefix, step = event, 0
    else:
        return []
    skip = {"time", "epoch", "round"}
    flat = {k: v for k, v in record.items() if k not in skip}
    for k, v in record.items():  # one level of nesting: groups {layer: count} -> groups/layer
        if isinstance(v, dict):
            flat.update({f"{k}/{sub}": x for sub, x in v.items()})
    return [(f"{prefix}/{k}", float(v), int(step)) for k, v in flat.items()
            if isinstance(v, int | float) and not isinstance(v, bool)]


def flatten(variables: dict[str, Any]) -> dict[str, np.ndarray]:
    return {
        "/".join(str(k.key) for k in path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(variables)
    }


def unflatten(flat: dict[str, np.ndarray]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *heads, last = key.split("/")
        node = tree
        for h in heads:
            node = node.setdefault(h, {})
        node[last] = value
    return tree


def save_network(folder: str | os.PathLike, net: Network, variables: dict[str, Any],
                 **metadata: Any) -> None:
    folder = Path(folder)
    buf = io.BytesIO()
    np.savez(buf, **flatten(variables))
    atomic_write_bytes(folder / "variables.npz", buf.getvalue())
    write_json(folder / "network.json", {**net.to_dict(), **metadata})


def load_network(folder: str | os.PathLike) -> tuple[Network, dict[str, Any], dict[str, Any]]:
    """Returns (network, variables as numpy arrays, the whole network.json)."""
    folder = Path(folder)
    meta_path, var_path = folder / "network.json", folder / "variables.npz"
    for p in (meta_path, var_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing: a saved network is a folder with "
                                    "network.json and variables.npz")
    meta = json.loads(meta_path.read_text())
    with np.load(var_path) as z:
        variables = unflatten({k: z[k] for k in z.files})
    return Network.from_dict(meta), variables, meta


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd or Path(__file__).parent, capture_output=True,
                               text=True).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    """What a run's numbers depend on besides its code, config and seed: the CPU, by model name
    and, where /proc/cpuinfo has them, family and model (a name like "AMD EPYC" does not say
    which generation XLA compiled for, and the same seed trains differently on different ones:
    results/cifar10/comparison/RUN.md), the numeric packages' versions and the allocator."""
    cpu = platform.processor() or platform.machine()
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
        info = {k.strip(): v.strip() for k, _, v in
                (line.partition(":") for line in first.splitlines())}
        cpu = ", ".join([info.get("model name", cpu)] + [f"{k} {info[k]}" for k in
                                                           ("cpu family", "model") if k in info])
    except OSError:
        pass
    versions = ", ".join(f"{name} {_version(name)}" for name in ("jax", "jaxlib", "flax", "optax"))
    return (f"{os.cpu_count()} CPU cores ({cpu}), {platform.system()}, "
            f"{versions} on {jax.default_backend()}, malloc: {allocator()}")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# tcmalloc where Debian/Ubuntu's libtcmalloc-minimal4 puts it: LD_PRELOAD it to train faster on CPU
TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")


def allocator() -> str:
    """The malloc this process runs on: a preloaded ``tcmalloc``/``jemalloc``/``mimalloc`` or
    ``system``. On CPU it sets how fast XLA's temporary buffers come and go (README: Benchmarks)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    return next((name for name in ("tcmalloc", "jemalloc", "mimalloc") if name in maps), "system")
