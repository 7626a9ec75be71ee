"""Record the training envelope in exported combustion surrogates that predate it.

    python scripts/envelope.py results/combustion/surrogate/original results/combustion/surrogate/reduced

Each folder's run config (``config.yaml`` in the folder or a parent) names its training data;
the data are read from the cache (or regenerated, as training did) and the ranges of T, P and
the equivalence ratio over the training states along the Cantera trajectories (and, as
``reach``, over all of them, perturbed ones included) are written into ``network.json``
(``surrogate.envelope``, atomically). New runs record it when they export.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from condensation.combustion.chem import Mechanism
from condensation.combustion.data import KIND_TRAJECTORY, data_of_run
from condensation.combustion.surrogate import training_envelope
from condensation.files import write_json
from experiments.evaluate import find_config


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="exported surrogate folders")
    args = ap.parse_args(argv)
    for folder in args.folders:
        meta_path = folder / "network.json"
        meta = json.loads(meta_path.read_text())
        if "surrogate" not in meta:
            raise SystemExit(f"{meta_path} is not an exported combustion surrogate")
        dcfg, data = data_of_run(yaml.safe_load(find_config(folder).read_text())["data"])
        train = data["train"]
        meta["surrogate"]["envelope"] = training_envelope(
            Mechanism.load(dcfg.mechanism), train.T, train.P, train.Y,
            along=train.kind == KIND_TRAJECTORY)
        write_json(meta_path, meta)
        print(f"{folder}: {meta['surrogate']['envelope']}")


if __name__ == "__main__":
    main()
