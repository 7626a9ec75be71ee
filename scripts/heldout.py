"""Ship a combustion run's held-out data beside its published networks.

    python scripts/heldout.py results/combustion

Reads the run's ``config.yaml`` (in the folder), its data from the cache (or regenerates them,
as training did), and writes ``heldout.npz`` there: the validation and test splits, compressed,
with the data config. ``experiments.evaluate`` uses it, so a published network is evaluated in
seconds on a fresh clone.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from condensation.combustion.data import data_of_run


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a combustion run's folder with config.yaml")
    args = ap.parse_args(argv)
    _, data = data_of_run(yaml.safe_load((args.folder / "config.yaml").read_text())["data"])
    path = data.save(args.folder, splits=("val", "test"), name="heldout.npz", compressed=True)
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
