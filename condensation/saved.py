"""A saved network: a folder with ``network.json`` and ``variables.npz``.

``network.json`` holds the architecture, widths and options (plus any metadata the caller adds);
``variables.npz`` holds the arrays keyed by their '/'-joined variable paths
(``params/Dense_0/kernel``). Both are plain formats readable without this package.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from condensation.files import atomic_write_bytes, require_files, write_json
from condensation.network import Network


def flatten(variables: dict[str, Any]) -> dict[str, np.ndarray]:
    """``{'params/Dense_0/kernel': array, ...}``: the npz layout."""
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(variables, sep="/").items()}


def unflatten(flat: dict[str, np.ndarray]) -> dict[str, Any]:
    return traverse_util.unflatten_dict(dict(flat), sep="/")


def save_network(folder: str | os.PathLike, net: Network, variables: dict[str, Any],
                 **metadata: Any) -> None:
    folder = Path(folder)
    buf = io.BytesIO()
    np.savez(buf, **flatten(variables))
    atomic_write_bytes(folder / "variables.npz", buf.getvalue())
    write_json(folder / "network.json", {**net.to_dict(), **metadata})


def load_network(folder: str | os.PathLike) -> tuple[Network, dict[str, Any], dict[str, Any]]:
    """Returns (network, variables as numpy arrays, the whole network.json)."""
    meta_path, var_path = require_files(
        folder, "network.json", "variables.npz",
        what="a saved network is a folder with network.json and variables.npz")
    meta = json.loads(meta_path.read_text())
    with np.load(var_path) as z:
        variables = unflatten({k: z[k] for k in z.files})
    return Network.from_dict(meta), variables, meta
