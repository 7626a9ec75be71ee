"""What a run's numbers depend on besides its config and seed: the code's commit and the machine;
and the faster malloc that the command line preloads. Imports the standard library only (jax
when asked for the machine), so that ``experiments/run.py`` can decide about the allocator
before anything heavy is loaded."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import sysconfig
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


# tcmalloc where Debian/Ubuntu's libtcmalloc-minimal4 puts it: LD_PRELOAD it to train faster on CPU
TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
# mimalloc as the cmeel-mimalloc wheel installs it (a dependency on x86-64 Linux)
MIMALLOC = Path(sysconfig.get_paths()["purelib"]) / "cmeel.prefix" / "lib" / "libmimalloc.so"


def allocator() -> str:
    """The malloc this process runs on: a preloaded ``tcmalloc``/``jemalloc``/``mimalloc`` or
    ``system``. On CPU it sets how fast XLA's temporary buffers come and go (README: Benchmarks)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    return next((name for name in ("tcmalloc", "jemalloc", "mimalloc") if name in maps), "system")


# The allocators the command line preloads, in order of preference (scripts/benchmark.py's
# malloc section measures them against the system's on MobileNetV2's training loop).
FAST_MALLOCS = (TCMALLOC, MIMALLOC)


def fast_malloc() -> Path | None:
    """The first of :data:`FAST_MALLOCS` installed here (Linux only), else None."""
    if sys.platform != "linux":
        return None
    return next((p for p in FAST_MALLOCS if p.is_file()), None)


def preload_fast_malloc(argv: list[str]) -> None:
    """Start this command again with a faster malloc preloaded (``os.execv``), when one is
    installed and nothing is preloaded yet; ``CONDENSATION_MALLOC=system`` keeps the system's.
    The parameters a run computes are the same under any allocator (benchmark: malloc)."""
    if os.environ.get("CONDENSATION_MALLOC") == "system" or os.environ.get("LD_PRELOAD"):
        return
    lib = fast_malloc()
    if lib is not None:
        os.execve(sys.executable, [sys.executable, *argv], {**os.environ, "LD_PRELOAD": str(lib)})
