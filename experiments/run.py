"""Entry point: ``python -m experiments.run +exp=NAME [key=value ...]`` (``-m`` to sweep).

A config the schema refuses (condensation/config.py) stops the command with ``error: <one line>``
and exit status 2 before anything is written: a single run is checked before Hydra creates its
run directory (``hydra.callbacks`` in conf/config.yaml); a sweep's job is checked here, and the
empty directory Hydra made for it is removed.
"""
from __future__ import annotations

import sys

if __name__ == "__main__":  # before JAX is loaded: a faster malloc, when installed (README)
    from experiments.fastmalloc import preload_fast_malloc

    preload_fast_malloc(["-m", "experiments.run", *sys.argv[1:]])

import hashlib
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from condensation.config import resolved, validate_config
from condensation.errors import ConfigError
from condensation.experiment import train_and_reduce

STARTED = time.time()  # before Hydra creates any directory for this process's jobs


def safe_dirname(overrides: str) -> str:
    """A sweep job's folder name from its overrides: no '/', at most 120 characters."""
    name = overrides.replace("/", "_") or "default"
    if len(name) > 120:
        name = f"{name[:100]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return name


def baseline_subdir(method: str) -> str:
    """A baseline's run directory sits inside the condensation run it is compared with."""
    return "" if method == "condense" else f"/baselines/{method}"


OmegaConf.register_new_resolver("safe_dirname", safe_dirname, replace=True)
OmegaConf.register_new_resolver("baseline_subdir", baseline_subdir, replace=True)


def discard_if_new(folder: Path) -> None:
    """Remove ``folder`` if it is empty and was created by this process (Hydra makes a job's
    directory before the job runs); a directory that existed before is left alone."""
    try:
        if folder.is_dir() and not any(folder.iterdir()) and folder.stat().st_ctime >= STARTED:
            folder.rmdir()
    except OSError:
        pass


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    workdir = Path(HydraConfig.get().runtime.output_dir)
    try:
        container = resolved(cfg)
        validate_config(container)  # again for a sweep's job (a single run's was checked already)
        summary = train_and_reduce(container, workdir)
    except ConfigError as e:  # raised before the run directory is touched
        discard_if_new(workdir)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except FloatingPointError as e:
        print(f"error: {e}; checkpoints of the epochs before it are kept in the run directory "
              "(to change train.lr or train.grad_clip, rerun with fresh=true or another "
              "hydra.run.dir)", file=sys.stderr)
        sys.exit(3)
    return summary["reduced_metric_after_finetune"]


if __name__ == "__main__":
    main()
