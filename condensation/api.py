"""The public one-call entry for plain MLPs in flax.linen's layout."""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import flax
import jax.numpy as jnp

from condensation.archs import architecture
from condensation.condense import condense_variables
from condensation.network import count_params

_DENSE = re.compile(r"Dense_(\d+)")


def _mlp_layers(params: dict[str, Any]) -> list[str]:
    if not isinstance(params, Mapping) or not params:
        raise ValueError("params must be a dict {'Dense_0': {'kernel', 'bias'}, ..., 'Dense_L': ...}")
    if "params" in params and len(params) == 1:
        raise ValueError("pass variables['params'], not the whole variables dict")
    names = sorted(params, key=lambda n: int(m.group(1)) if (m := _DENSE.fullmatch(n)) else -1)
    bad = [n for n in names if not _DENSE.fullmatch(n)]
    if bad or [int(_DENSE.fullmatch(n).group(1)) for n in names] != list(range(len(names))):
        raise ValueError(
            f"expected layers named Dense_0..Dense_L consecutively, got {sorted(params)}"
        )
    if len(names) < 2:
        raise ValueError("an MLP needs at least one hidden layer (Dense_0 and Dense_1)")
    for i, n in enumerate(names):
        layer = params[n]
        if set(layer) != {"kernel", "bias"}:
            raise ValueError(
                f"{n} must hold exactly 'kernel' [in, out] and 'bias' [out], got {sorted(layer)}"
            )
        k, b = jnp.shape(layer["kernel"]), jnp.shape(layer["bias"])
        if len(k) != 2 or b != (k[1],):
            raise ValueError(f"{n}: kernel {k} and bias {b} are not [in, out] and [out]")
        if i and k[0] != jnp.shape(params[names[i - 1]]["kernel"])[1]:
            raise ValueError(f"{n}: kernel has {k[0]} inputs but {names[i - 1]} has "
                             f"{jnp.shape(params[names[i - 1]]['kernel'])[1]} outputs")
    return names


def condense(params: dict[str, Any], *, threshold: float, activation: str):
    """Condense the hidden layers of a plain MLP.

    Args:
      params: ``{'Dense_0': {'kernel': [in, h0], 'bias': [h0]}, ..., 'Dense_L': {...}}`` —
        flax.linen's layout (``variables['params']`` of ``condensation.archs.mlp.MLP``).
      threshold: cosine similarity in (0, 1]; hidden neurons whose input vectors (incoming
        weights and bias) have cosine >= threshold with a group's representative are merged
        into it, their outgoing weights summed.
      activation: the network's activation (``'relu'`` makes the merge of positively scaled
        copies exact).

    Returns:
      ``(new_params, report)``: the same layout with fewer hidden units, and a dict with
      ``widths_before``, ``widths_after`` (hidden widths), ``params_before``,
      ``params_after`` and ``size_ratio``.
    """
    params = flax.core.unfreeze(params) if isinstance(params, flax.core.FrozenDict) else params
    names = _mlp_layers(params)
    widths = [int(jnp.shape(params[n]["kernel"])[1]) for n in names]
    spec = architecture("mlp").spec(widths[:-1], out_dim=widths[-1])
    new_vars, groups = condense_variables(
        {"params": params}, spec, threshold=threshold, activation=activation
    )
    new_params = new_vars["params"]
    before, after = count_params(params), count_params(new_params)
    report = {
        "widths_before": [g.before for g in groups],
        "widths_after": [g.after for g in groups],
        "params_before": before,
        "params_after": after,
        "size_ratio": after / before,
    }
    return new_params, report
