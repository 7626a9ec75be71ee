"""Entry point: ``python -m experiments.run +exp=NAME [key=value ...]`` (``-m`` to sweep)."""
from __future__ import annotations

import hashlib
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from condensation.experiment import ConfigError, train_and_reduce


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


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    container = OmegaConf.to_container(cfg, resolve=True)
    try:
        summary = train_and_reduce(container, HydraConfig.get().runtime.output_dir)
    except ConfigError as e:
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
