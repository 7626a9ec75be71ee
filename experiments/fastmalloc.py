"""A faster malloc for the command line, chosen before anything heavy is loaded (standard library
only: importing the ``condensation`` package would load JAX first).

On a Linux CPU, XLA's training loop spends much of its time getting fresh memory from the system
malloc; tcmalloc or mimalloc in ``LD_PRELOAD`` makes it 1.4-1.5x as fast with bit-identical
results (docs/usage.md, Speed; ``scripts/benchmark.py --only malloc``).
"""
from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

# tcmalloc where Debian/Ubuntu's libtcmalloc-minimal4 puts it
TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
# mimalloc as the cmeel-mimalloc wheel installs it (a dependency on x86-64 Linux)
MIMALLOC = Path(sysconfig.get_paths()["purelib"]) / "cmeel.prefix" / "lib" / "libmimalloc.so"
# in order of preference (the faster first, as measured by the benchmark)
FAST_MALLOCS = (TCMALLOC, MIMALLOC)
# Options set with a library unless the environment sets them already. mimalloc: never return
# freed memory to the system (purging made 860 minor page faults per MobileNetV2 training step,
# 10 % of the CPU time in the kernel) and allow large OS pages; a training process keeps its
# peak memory, which it needs again at the next step anyway.
OPTIONS = {MIMALLOC: {"MIMALLOC_PURGE_DELAY": "-1", "MIMALLOC_ALLOW_LARGE_OS_PAGES": "1"}}


def fast_malloc() -> Path | None:
    """The first of :data:`FAST_MALLOCS` installed here (Linux only), else None."""
    if sys.platform != "linux":
        return None
    return next((p for p in FAST_MALLOCS if p.is_file()), None)


def preload_env(lib: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default: this process's) with ``lib`` preloaded and its :data:`OPTIONS`."""
    environ = dict(os.environ if environ is None else environ)
    return {**OPTIONS.get(lib, {}), **environ, "LD_PRELOAD": str(lib)}


def preload_fast_malloc(argv: list[str]) -> None:
    """Start this command again (``os.execve``, same process id) with a faster malloc preloaded,
    when one is installed and nothing is preloaded yet; ``CONDENSATION_MALLOC=system`` keeps
    the system's."""
    if os.environ.get("CONDENSATION_MALLOC") == "system" or os.environ.get("LD_PRELOAD"):
        return
    lib = fast_malloc()
    if lib is not None:
        os.execve(sys.executable, [sys.executable, *argv], preload_env(lib))
