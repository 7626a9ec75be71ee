"""Evaluate a saved network on its experiment's test split.

    python -m experiments.evaluate checkpoint=DIR [split=test|val] [out=FILE]

DIR is a saved network folder (network.json + variables.npz): ``<run>/networks/original``,
``<run>/networks/reduced``, or a published ``results/<exp>/surrogate/<which>``. The run's
``config.yaml`` is found in DIR or a parent folder and rebuilds the task. A combustion run
whose folder (or a parent, up to the config's) holds ``heldout.npz`` (its validation and test
splits, written by scripts/heldout.py) is evaluated on those, with the network's own
normalization, in seconds; otherwise the data are regenerated or read from the cache exactly as
in training. Prints the metric and writes it, with the task's extra evaluation (combustion:
a-priori and rollout errors) and its provenance (commit, machine, wall time), to FILE: by
default DIR/evaluation.json for a run's network, and a new temporary folder for a network under
the project's results/ (published folders are never written).
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

from condensation.files import write_json
from condensation.network import build_network, check_shapes, count_params
from condensation.provenance import git_commit, machine
from condensation.saved import load_network
from condensation.tasks import make_task
from condensation.train import evaluate

USAGE = "usage: python -m experiments.evaluate checkpoint=DIR [split=test|val] [out=FILE]"


def find_config(folder: Path) -> Path:
    for d in (folder, *folder.parents):
        if (d / "config.yaml").is_file():
            return d / "config.yaml"
    raise FileNotFoundError(f"no config.yaml in {folder} or any parent folder: evaluate a network "
                            "saved by experiments.run (its run directory holds config.yaml)")


def main(argv: list[str]) -> int:
    start = time.time()
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    unknown = [a for a in argv if "=" not in a] + [k for k in args
                                                  if k not in ("checkpoint", "split", "out")]
    if "checkpoint" not in args or unknown:
        print(USAGE, file=sys.stderr)
        return 2
    split = args.get("split", "test")
    if split not in ("test", "val"):
        print(f"error: split={split!r}; allowed: test, val", file=sys.stderr)
        return 2
    folder = Path(args["checkpoint"])
    try:
        saved_net, variables, meta = load_network(folder)
        config = find_config(folder)
        cfg = yaml.safe_load(config.read_text())
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args["out"]) if "out" in args else default_out(folder)
    heldout = next((d / "heldout.npz" for d in (folder, *folder.parents)
                    if (d / "heldout.npz").is_file() and config.parent in (d, *d.parents)), None)
    if heldout is not None and "surrogate" in meta:
        cfg["data"] = {**cfg["data"], "heldout": str(heldout), "normalizers": meta["surrogate"]}
    task = make_task(cfg["data"], int(cfg["seed"]), folder)
    try:
        net = build_network(cfg["model"], task.output_dim)
        if saved_net.arch != net.arch:
            raise ValueError(f"{folder} holds a {saved_net.arch} network but its run's config "
                             f"({find_config(folder)}) is for model.arch={net.arch}")
        net = net.with_widths(saved_net.widths)
        check_shapes(net, variables, task.input_shape)
    except ValueError as e:  # another architecture, or arrays that do not fit their widths
        print(f"error: checkpoint={folder}: {e}; evaluate a network saved by the run whose "
              "config.yaml is beside it", file=sys.stderr)
        return 2
    data = task.test if split == "test" else task.val
    scores = evaluate(variables, data, module=net.module(), loss=task.loss,
                      batch_size=int(cfg["train"].get("eval_batch_size", 4096)))
    result = {"checkpoint": str(folder), "split": split, "metric": f"{split}_{task.metric}",
              "value": scores[task.metric], "loss": scores["loss"], "widths": list(net.widths),
              "params": count_params(variables)}
    if task.extra_eval is not None:
        result["extra"] = task.extra_eval(net, variables, split)
    result.update(commit=git_commit(), machine=machine(), wall_time_s=round(time.time() - start, 1))
    write_json(out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "extra"}, indent=1))
    print(f"written to {out}", file=sys.stderr)
    return 0


def default_out(folder: Path) -> Path:
    """DIR/evaluation.json, unless DIR is published (under the project's results/): then a new
    temporary folder."""
    results = Path(__file__).resolve().parents[1] / "results"
    if results in folder.resolve().parents:
        return Path(tempfile.mkdtemp(prefix="evaluate-")) / "evaluation.json"
    return folder / "evaluation.json"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
