"""The run directory: whether a config may resume it, starting it over, and the condensation
run a baseline is compared with."""
from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from condensation.config import outcome_config
from condensation.errors import ConfigError, fail
from condensation.reduction import Target


def load_targets(cfg: dict[str, Any], own_model_keys: tuple[str, ...] = ()
                 ) -> tuple[Path, tuple[Target, ...]]:
    """A baseline's sizes: the accepted rounds of the condensation run in ``reduce.targets``
    (run directory; widths, threshold and round of each; only the last with
    ``reduce.sizes=final``), checked against this run's config: the same model (but for
    ``own_model_keys``, which the method sets itself), data, training and seed."""
    rcfg = cfg["reduce"]
    folder = Path(str(rcfg.get("targets")))
    need = [folder / "curve.csv", folder / "config.yaml", folder / "networks" / "original" / "network.json"]
    if rcfg.get("targets") is None or any(not p.is_file() for p in need):
        fail("reduce.targets", rcfg.get("targets"),
             f"the directory of a finished condensation run (curve.csv, config.yaml, "
             f"networks/original) whose sizes the {rcfg['method']} baseline matches: run "
             "the condensation first, or set reduce.targets=DIR")
    theirs = yaml.safe_load((folder / "config.yaml").read_text())
    if theirs["reduce"]["method"] != "condense":
        fail("reduce.targets", str(folder), f"a condensation run; {folder} is a "
             f"{theirs['reduce']['method']} run")
    mine, other = outcome_config(cfg), outcome_config(theirs)
    mine["model"], other["model"] = ({k: v for k, v in c["model"].items() if k not in own_model_keys}
                                     for c in (mine, other))
    diff = [k for k in ("model", "data", "train", "seed") if mine.get(k) != other.get(k)]
    if diff:
        fail("reduce.targets", str(folder), f"a run of the same {', '.join(diff)} (it differs "
             "in them): a baseline is compared with the condensation of the same network")
    with (folder / "curve.csv").open() as f:
        rows = tuple(Target(int(r["round"]), float(r["threshold"]) if r["threshold"] else None,
                            tuple(int(w) for w in r["widths"].split()))
                     for r in csv.DictReader(f) if r["accepted"] == "True")
    if not rows:
        fail("reduce.targets", str(folder), "a condensation run with at least one accepted round")
    return folder, rows[-1:] if rcfg.get("sizes", "all") == "final" else rows


def check_run_dir(workdir: Path, cfg: dict[str, Any]) -> bool:
    """Refuse to resume a run directory that holds a run of another config.

    A run that differs only in ``reduce`` may continue: its trained original is kept and the
    reduction starts over with the new settings. Returns whether that is the case.
    """
    old_path = workdir / "config.yaml"
    if cfg.get("fresh"):
        return False
    if not (workdir / "checkpoints").exists() or not old_path.exists():
        return False
    old, new = outcome_config(yaml.safe_load(old_path.read_text())), outcome_config(cfg)
    diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if diff and diff != ["reduce"]:
        raise ConfigError(
            f"{workdir} holds a run with a different config (differs in: {', '.join(diff)}); "
            "choose another hydra.run.dir, or pass fresh=true to start this directory over "
            "(a run that differs only in reduce.* keeps its trained network and reduces anew)"
        )
    return diff == ["reduce"]


def clear_run_dir(workdir: Path) -> None:
    """fresh=true: remove a previous run's results and checkpoints (its metrics log is kept
    under a time-stamped name)."""
    for name in ("checkpoints", "checkpoints.damaged", "networks", "surrogate", "tensorboard"):
        shutil.rmtree(workdir / name, ignore_errors=True)
    for name in ("summary.json", "curve.csv", "size_vs_metric.png"):
        (workdir / name).unlink(missing_ok=True)
    if (workdir / "metrics.jsonl").exists():
        (workdir / "metrics.jsonl").rename(workdir / f"metrics.{int(time.time())}.jsonl")
