"""condensation: reduce networks trained from small initialization by merging aligned neurons.

The names below are loaded on first use, so that ``import condensation.<module>`` of a light
module (``provenance``, ``errors``) does not load JAX.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "condense": "condensation.api",
    **dict.fromkeys(("assign_groups", "condense_variables", "cosine_similarity", "input_vectors",
                     "merge_group", "split_unit"), "condensation.condense"),
    **dict.fromkeys(("Network", "check_shapes", "count_flops", "count_params", "reduce_network",
                     "widths_of"), "condensation.network"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'condensation' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
