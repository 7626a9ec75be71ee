"""What a run's numbers depend on besides its config and seed: the code's commit and the machine
(CPU, package versions, the malloc in use)."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path


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
    import jax

    versions = ", ".join(f"{name} {_version(name)}" for name in ("jax", "jaxlib", "flax", "optax"))
    return (f"{os.cpu_count()} CPU cores ({cpu}), {platform.system()}, "
            f"{versions} on {jax.default_backend()}, malloc: {allocator()}")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def allocator() -> str:
    """The malloc this process runs on: a preloaded ``tcmalloc``/``jemalloc``/``mimalloc`` or
    ``system``. On CPU it sets how fast XLA's temporary buffers come and go (docs/usage.md, Speed;
    ``experiments/fastmalloc.py`` preloads one)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    return next((name for name in ("tcmalloc", "jemalloc", "mimalloc") if name in maps), "system")
