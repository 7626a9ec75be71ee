"""The toy task (``data.name: toy``): 1-D regression, the small test bed of the phenomenon."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from condensation.tasks.base import Task, register


@register("toy")
def toy_task(cfg: dict[str, Any], seed: int, workdir: Path) -> Task:
    """1-D regression y = f(x) on [-1, 1]: the small test bed of the phenomenon."""
    rng = np.random.default_rng([seed, 1234])
    fn = {
        "sin": lambda x: np.sin(3 * x),
        "abs": lambda x: np.abs(x) - 0.5,
        "mix": lambda x: np.tanh(4 * x) + 0.5 * np.sin(5 * x),
    }[cfg.get("function", "mix")]

    def split(n):
        x = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
        return x, fn(x).astype(np.float32)

    return Task("toy", (1,), 1, split(cfg.get("n_train", 256)), split(cfg.get("n_val", 256)),
                split(cfg.get("n_test", 256)), loss="mse", metric="loss", log_metric=True)
