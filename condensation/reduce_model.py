"""Reduce a user's own Flax model: :func:`reduce_model`, for ``flax.linen`` and ``flax.nnx``.

The coupling spec is discovered from the traced forward pass (:mod:`condensation.graph`),
the units of every group it finds are merged (condensation at a cosine threshold), and the
result is a :class:`ReducedModel` that runs, reports its widths and saves.

**How a reduced model runs.** A linen module checks each parameter's shape against its
attributes at ``apply`` time (``Dense(features=100)`` refuses a 60-column kernel), and a
user's module may compute widths from its own fields in ways no tool can rewrite. So the
reduced model is not a rebuilt module: it is an *evaluation that does not re-check shapes*.
``ReducedModel`` traces the original model with the original shapes (abstractly, nothing is
computed), then evaluates that trace equation by equation on the reduced arrays, with every
shape parameter (broadcasts, reshapes, slices, depthwise group counts) resized along the
merged axes, which the discovery knows for every intermediate. The same code runs linen and
nnx models, needs nothing from the model's author, and is differentiable and jittable. The
price: the original module's code is needed to run it (as for any Flax checkpoint), each new
input shape is traced once, and the bodies of ``custom_jvp``/``custom_vjp`` functions and of
``jax.checkpoint`` run inline: their custom gradient rules and rematerialisation do not carry
over to the reduced model (the values do).
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from condensation import graph as disc
from condensation.compensate import refit_consumers
from condensation.condense import (
    assign_groups,
    check_threshold,
    group_size,
    input_vectors,
    merge_group,
    num_groups,
)
from condensation.files import atomic_write_bytes, require_files, write_json
from condensation.graph import _dtype

logger = logging.getLogger(__name__)

__all__ = ["ReducedModel", "reduce_model", "load_reduced", "model_function",
           "repaired_batchnorms"]


def model_function(model: Any, apply_kwargs: Mapping[str, Any] | None = None):
    """``(fn, variables)``: the model as a pure function ``fn(variables, *args)`` and its
    variables as a nested dict. ``model`` is a ``flax.linen.Module`` (its variables are passed
    to :func:`reduce_model` separately) or a ``flax.nnx.Module`` (its state is read here)."""
    apply_kwargs = dict(apply_kwargs or {})
    import flax.linen as nn
    from flax import nnx

    if isinstance(model, nn.Module):
        return (lambda v, *a: model.apply(v, *a, **apply_kwargs)), None
    if isinstance(model, nnx.Module):
        graphdef, state = nnx.split(model)
        method = apply_kwargs.pop("method", "__call__")

        def fn(v, *a):
            st = jax.tree_util.tree_map(lambda x: x, state)
            nnx.replace_by_pure_dict(st, v)
            return getattr(nnx.merge(graphdef, st), method)(*a, **apply_kwargs)

        return fn, nnx.to_pure_dict(state)
    raise TypeError(f"model must be a flax.linen.Module or a flax.nnx.Module, got {type(model).__name__}")


def _structs(tree):
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), _dtype(x)), tree)


@dataclass
class GroupWidth:
    name: str
    before: int
    after: int


class ReducedModel:
    """A reduced model: ``reduced(*args)`` runs it on its reduced variables, ``apply(variables,
    *args)`` on others of the same shapes (fine-tuning), ``widths`` per group, ``save(folder)``.
    """

    def __init__(self, fn: Callable, original: Any, variables: Any,
                 widths: Sequence[GroupWidth] = (), stopped: Mapping[str, list[str]] | None = None):
        self.fn, self.original, self.variables = fn, _structs(original), variables
        self.widths, self.stopped = tuple(widths), dict(stopped or {})
        self._traces: dict = {}
        self._jitted = None

    def __call__(self, *args):
        """The reduced model on ``args``, compiled once per input shape."""
        if self._jitted is None:
            self._jitted = jax.jit(self.apply)
        return self._jitted(self.variables, *args)

    def apply(self, variables, *args):
        key = tuple((np.shape(x), str(getattr(x, "dtype", ""))) for x in jax.tree_util.tree_leaves(args))
        if key not in self._traces:
            d = disc.discover(self.fn, self.original, *args)
            names = {g.name for g in d.spec}
            lost = [w.name for w in self.widths if w.after < w.before and w.name not in names]
            if lost:
                why = "; ".join(f"{n}: {', '.join(d.stopped.get(n, ['not found']))}" for n in lost)
                raise ValueError(f"at input shapes {[k[0] for k in key]} the groups {lost} cannot "
                                 f"be reduced ({why}); they were reduced for the example input")
            self._traces[key] = d
        d = self._traces[key]
        leaves = jax.tree_util.tree_leaves(variables)
        if len(leaves) != d.n_leaves:
            raise ValueError(f"variables have {len(leaves)} arrays, the model has {d.n_leaves}")
        shapes = d.new_shapes([np.shape(x) for x in leaves])
        flat = leaves + jax.tree_util.tree_leaves(args)
        out = _evaluate(d, shapes, flat)
        out_tree = jax.tree_util.tree_structure(jax.eval_shape(self.fn, self.original, *args))
        return jax.tree_util.tree_unflatten(out_tree, out)

    @property
    def params_before(self) -> int:
        return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(self.original)))

    @property
    def params_after(self) -> int:
        return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(self.variables)))

    def report(self) -> str:
        lines = [f"{self.params_after:,} of {self.params_before:,} numbers "
                 f"({self.params_after / self.params_before:.1%})"]
        lines += [f"  {w.name}: {w.before} -> {w.after}" for w in self.widths]
        lines += [f"  left alone {name}: {'; '.join(why)}" for name, why in self.stopped.items()]
        return "\n".join(lines)

    def save(self, folder: str | os.PathLike) -> None:
        """``variables.npz`` (the reduced arrays, one per leaf) and ``reduced.json`` (their
        paths, the original shapes, the widths); plain formats, written atomically."""
        folder = Path(folder)
        paths, leaves = disc.leaf_paths(self.variables)
        opaths, oleaves = disc.leaf_paths(self.original)
        if paths != opaths:
            raise ValueError("the reduced variables do not have the original's structure")
        buf = io.BytesIO()
        np.savez(buf, **{f"leaf_{i}": np.asarray(x) for i, x in enumerate(leaves)})
        atomic_write_bytes(folder / "variables.npz", buf.getvalue())
        write_json(folder / "reduced.json", {
            "paths": [[_key(k) for k in p] for p in paths],
            "original_shapes": [list(s.shape) for s in oleaves],
            "original_dtypes": [str(s.dtype) for s in oleaves],
            "widths": [{"name": w.name, "before": w.before, "after": w.after} for w in self.widths],
            "stopped": self.stopped,
        })


def _key(k):
    return {"int": k} if isinstance(k, int) else k


def _unkey(k):
    return k["int"] if isinstance(k, dict) else k


def _nest(paths, leaves):
    tree: dict = {}
    for p, x in zip(paths, leaves, strict=False):
        node = tree
        for k in p[:-1]:
            node = node.setdefault(k, {})
        node[p[-1]] = x
    return tree


def load_reduced(folder: str | os.PathLike, model: Any, *,
                 apply_kwargs: Mapping[str, Any] | None = None) -> ReducedModel:
    """A saved :class:`ReducedModel` back, run with ``model`` (the original module, built as
    it was for training: linen module, or an nnx module with the original widths)."""
    meta_path, var_path = require_files(
        folder, "reduced.json", "variables.npz", what="a saved reduced model is a folder with "
        "reduced.json and variables.npz (ReducedModel.save)")
    meta = json.loads(meta_path.read_text())
    paths = [tuple(_unkey(k) for k in p) for p in meta["paths"]]
    with np.load(var_path) as z:
        leaves = [z[f"leaf_{i}"] for i in range(len(paths))]
    original = _nest(paths, [jax.ShapeDtypeStruct(tuple(s), np.dtype(d)) for s, d in
                             zip(meta["original_shapes"], meta["original_dtypes"], strict=False)])
    fn, _ = model_function(model, apply_kwargs)
    widths = [GroupWidth(**w) for w in meta["widths"]]
    return ReducedModel(fn, original, _nest(paths, leaves), widths, meta["stopped"])


def _check_amount(threshold, keep, widths, compensate, repair, data) -> None:
    if sum(v is not None for v in (threshold, keep, widths)) != 1:
        raise ValueError("give exactly one of threshold (cosine in (0, 1]), keep (a fraction of "
                         "each group's units in (0, 1]) or widths ({group name: units})")
    if threshold is not None:
        check_threshold(threshold)
    if keep is not None and not 0.0 < float(keep) <= 1.0:
        raise ValueError(f"keep must be a fraction in (0, 1], got {keep}")
    for stage, on in (("compensate", compensate), ("repair", repair)):
        if on and data is None:
            raise ValueError(f"{stage}=True needs calibration inputs: data=<a batch of inputs>")


def reduce_model(model: Any, variables: Any = None, *example_args: Any,
                 threshold: float | None = None, keep: float | None = None,
                 widths: Mapping[str, int] | None = None,
                 apply_kwargs: Mapping[str, Any] | None = None,
                 groups: Sequence[str] | None = None, data: Any = None,
                 compensate: bool = False, repair: bool = False) -> ReducedModel:
    """Condense a trained Flax model: in every discovered unit group, units whose input vectors
    (BatchNorm folded) are aligned are merged, the group's outgoing weights summed into its
    representative (the paper's merge). Say how far with exactly one of ``threshold``, ``keep``
    or ``widths``.

    Args:
      model: a ``flax.linen.Module`` (give its ``variables``) or a ``flax.nnx.Module`` (pass
        ``None`` for ``variables``; its state is used).
      example_args: inputs to trace the forward pass with (only shapes and dtypes matter).
      threshold: merge at cosine similarity >= ``threshold`` in (0, 1] (the paper).
      keep: a fraction in (0, 1]: each group down to ``ceil(keep * width)`` units, the
        threshold lowered per group until reached.
      widths: ``{group name: units}`` for the groups to reduce to a given width (the others
        are left as they are).
      apply_kwargs: keyword arguments of the call (``{'train': False}``; for nnx ``method``).
      groups: names of the discovered groups to reduce (default: all, or the keys of
        ``widths``); ``condensation.discover(...).report()`` lists them and what was left alone.
      data: calibration inputs (a batch, run in one pass), for ``compensate``.
      compensate: after each group's merge, refit its consumers' kernel slices (and bias, or
        the following BatchNorm's mean) by ridge least squares so that each consumer's output
        on ``data`` stays what it was before the merge (the experiments' ``lstsq`` stage;
        dense and NHWC convolution consumers).
      repair: after every merge, re-estimate the running statistics of each BatchNorm that
        follows a kernel on ``data`` (:func:`repaired_batchnorms`; the experiments' ``repair``
        stage). Give ``data`` as training saw it (augmented).
    """
    from condensation.reduction import threshold_for

    _check_amount(threshold, keep, widths, compensate, repair, data)
    fn, nnx_vars = model_function(model, apply_kwargs)
    if nnx_vars is not None:
        if variables is not None:
            raise ValueError("an nnx model carries its own state: pass variables=None")
        variables = nnx_vars
    elif variables is None:
        raise ValueError("a linen model needs its variables (model.init(...) or trained)")
    if not example_args:
        raise ValueError("give at least one example input to trace the model with")
    d = disc.discover(fn, variables, *example_args)
    if repair:
        _check_norms(d)
    reduced = _plain(variables)
    wanted = _check_groups(d, reduced, widths, groups)
    report = []
    for g in d.spec:
        if wanted is not None and g.name not in wanted:
            continue
        n = group_size(reduced, g)
        vectors = input_vectors(reduced, g)
        if threshold is not None:
            assignment = assign_groups(vectors, threshold)
        else:
            k = int(widths[g.name]) if widths is not None else max(1, math.ceil(keep * n))
            assignment = threshold_for(vectors, k)[1] if k < n else None
        k = n if assignment is None else num_groups(assignment)
        if k < n:
            inputs = traced_consumer_inputs(fn, variables, reduced, data, g.consumers) \
                if compensate else None
            merged = merge_group(reduced, assignment, group=g, n_groups=k)
            if compensate:
                survivors = np.nonzero(np.asarray(assignment) == np.arange(n))[0]
                merged = refit_consumers(reduced, merged, g, inputs, survivors)
            reduced = merged
        report.append(GroupWidth(g.name, n, k))
    if repair:
        reduced = repaired_batchnorms(fn, variables, reduced, data)
    return ReducedModel(fn, variables, reduced, report, d.stopped)


def _check_groups(d: disc.Discovery, variables, widths, groups) -> list[str] | None:
    """The names of the groups to reduce (None: all), after checking them and ``widths``."""
    names = [g.name for g in d.spec]
    wanted = list(widths) if widths is not None and groups is None else groups
    if wanted is not None:
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise ValueError(f"unknown groups {unknown}; discovered: {', '.join(names)}")
    if widths is not None:
        for g in d.spec:
            if g.name in widths and not 1 <= int(widths[g.name]) <= group_size(variables, g):
                raise ValueError(f"widths[{g.name!r}] = {widths[g.name]}: allowed 1.."
                                 f"{group_size(variables, g)} (its width now)")
    return wanted


def traced_consumer_inputs(fn: Callable, original: Any, variables: Any, x: Any,
                           consumers) -> dict:
    """What each consumer kernel reads when ``fn`` runs on ``x`` with ``variables`` (of any
    widths; ``original``: the original variables or their shapes), keyed by the kernel's path,
    with how it reads it (:class:`condensation.calibrate.Reader`): the calibration data of
    compensation, for any model."""
    from condensation.calibrate import Reader

    d = disc.discover(fn, _structs(original), x)
    leaves = jax.tree_util.tree_leaves(variables)
    slots = {(d.paths.index(c.path), c.axis): c for c in consumers}
    for c in consumers:
        if not c.plain:
            raise ValueError(f"{'/'.join(map(str, c.path))} reads its units concatenated or "
                             "flattened with others: compensation refits whole consumer axes only")
    shapes = d.new_shapes([np.shape(a) for a in leaves])
    hows: dict = {}

    @jax.jit
    def run(v, x):
        capture = dict.fromkeys(slots)
        _evaluate(d, shapes, v + jax.tree_util.tree_leaves(x), capture)
        hows.update({k: c[1] for k, c in capture.items() if c is not None})
        return {k: c[0] for k, c in capture.items() if c is not None}

    values = run(leaves, x)
    out = {}
    for key, c in slots.items():
        if key not in values:
            raise ValueError(f"{'/'.join(map(str, c.path))} was not applied in the forward pass")
        value, how = values[key], hows[key]
        if isinstance(how, str):
            raise ValueError(f"compensation refits dense and convolution consumers; "
                             f"{'/'.join(map(str, c.path))} is read by {how}")
        reader = Reader("dense") if how[0] == "dense" else Reader("conv", how[1], how[2])
        out[c.path] = (np.asarray(value), reader)
    return out


def repaired_batchnorms(fn: Callable, original: Any, variables: Any, x: Any,
                        d: disc.Discovery | None = None) -> Any:
    """``variables`` (of any widths) with the running mean and variance of every BatchNorm
    that follows a producer re-estimated on the batch ``x``: one pass in which each BatchNorm
    normalises with its input's statistics in this batch (training mode), so each is estimated
    on the repaired statistics before it. Use inputs as training saw them (with augmentation):
    statistics of un-augmented images cost accuracy (docs/usage.md)."""
    d = d if d is not None else disc.discover(fn, _structs(original), x)
    _check_norms(d)
    leaves = jax.tree_util.tree_leaves(variables)
    shapes = d.new_shapes([np.shape(a) for a in leaves])

    @jax.jit
    def run(v, x):
        stats: dict = {}
        _evaluate(d, shapes, v + jax.tree_util.tree_leaves(x), batch_stats=stats)
        return stats

    stats = run(leaves, x)
    stale = [i for i, p in enumerate(d.paths) if p[0] == "batch_stats" and i not in stats]
    if stale:
        logger.warning("repair: %d statistics are not after a recognised BatchNorm and stay as "
                       "they were: %s", len(stale), ", ".join("/".join(map(str, d.paths[i]))
                                                           for i in stale))
    new = [jnp.asarray(stats[i], leaves[i].dtype).reshape(np.shape(leaves[i])) if i in stats
           else leaves[i] for i in range(len(leaves))]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(variables), new)


def _check_norms(d: disc.Discovery) -> None:
    if not d._norms:
        raise ValueError("repair: the model has no BatchNorm after a kernel to re-estimate")
    sites = Counter(mean for mean, *_ in d._norms)
    shared = ["/".join(map(str, d.paths[m][:-1])) for m, k in sites.items() if k > 1]
    if shared:
        raise ValueError(f"repair: BatchNorm {', '.join(shared)} is applied more than once; one "
                         "running mean and variance cannot be re-estimated for each application")


def _plain(tree):
    """Nested plain dicts (FrozenDict and nnx pure dicts alike) of arrays."""
    if isinstance(tree, Mapping):
        return {k: _plain(v) for k, v in tree.items()}
    return jnp.asarray(tree)


# -- evaluation of a trace with resized shapes ----------------------------------------------------

def _evaluate(d: disc.Discovery, shapes: dict[int, tuple[int, ...]], flat: list,
              capture: dict | None = None, batch_stats: dict | None = None) -> list:
    """The trace on ``flat`` (variable leaves, then inputs) with the arrays ``shapes`` says;
    ``capture`` ({(leaf, axis): None}) is filled with what those consumer kernels read;
    with ``batch_stats`` (a dict, filled as {leaf: statistic}) every BatchNorm after a producer
    normalises with the mean and variance of its input in this batch instead of its stored
    ones (training-mode BatchNorm), and those are what the dict receives."""
    norms = None
    if batch_stats is not None:
        norms = {"sub": {site[0]: (mean, site[1:]) for mean, _, site, _ in d._norms},
                 "eps": {site[0]: (mean, var, site[1]) for mean, var, _, site in d._norms},
                 "out": batch_stats}
    return _body(d.closed_jaxpr, flat, {"scope": 0, "capture": capture, "norms": norms}, d,
                 shapes)


def _batch_statistics(norms: dict, at: tuple[int, int], ins: list) -> None:
    """At a BatchNorm's ``x - mean`` (or ``var + eps``) in the trace: the mean (variance) of
    this batch instead of the stored one, recorded in ``norms["out"]``."""
    if at in norms["sub"]:
        mean_leaf, (data, param, axis) = norms["sub"][at]
        x = ins[data]
        axes = tuple(a for a in range(np.ndim(x)) if a != axis)
        mean = jnp.mean(x, axis=axes)
        shape = [1] * np.ndim(x)
        shape[axis] = -1
        norms["out"][mean_leaf] = mean
        norms["out"][("var", mean_leaf)] = jnp.mean(jnp.square(x - mean.reshape(shape)),
                                                    axis=axes)
        ins[param] = mean.reshape(np.shape(ins[param])).astype(ins[param].dtype)
    if at in norms["eps"]:
        mean_leaf, var_leaf, operand = norms["eps"][at]
        if mean_leaf not in norms["out"]:
            raise ValueError("repair: a BatchNorm adds eps to its variance before it subtracts "
                             "its mean; this layout is not supported")
        var = norms["out"].pop(("var", mean_leaf))
        norms["out"][var_leaf] = var
        ins[operand] = var.reshape(np.shape(ins[operand])).astype(ins[operand].dtype)


def _body(closed, args, state, d, shapes):
    jaxpr = closed.jaxpr
    scope = state["scope"]
    ids = d._scopes[scope]
    state["scope"] += 1
    env: dict = {}
    for v, c in zip(jaxpr.constvars, closed.consts, strict=False):
        env[v] = c
    for v, x in zip(jaxpr.invars, args, strict=True):
        env[v] = x

    def read(x):
        return x.val if isinstance(x, jcore.Literal) else env[x]

    for k, eqn in enumerate(jaxpr.eqns):
        ins = [read(x) for x in eqn.invars]
        name = eqn.primitive.name
        if state["norms"] is not None:
            _batch_statistics(state["norms"], (scope, k), ins)
        if state["capture"] is not None:
            for slot, i, how in d._reads.get((scope, k), ()):
                if slot in state["capture"]:
                    state["capture"][slot] = (ins[i], how)
        if name in disc.CALLS and disc.CALLS[name] in eqn.params:
            sub = eqn.params[disc.CALLS[name]]
            if not hasattr(sub, "jaxpr"):
                sub = jcore.ClosedJaxpr(sub, ())
            outs = _body(sub, ins, state, d, shapes)
        else:
            new = [shapes[ids[v]] for v in eqn.outvars]
            params = _resized(eqn, [np.shape(x) for x in ins], new, d, ids)
            outs = eqn.primitive.bind(*ins, **params)
            if not eqn.primitive.multiple_results:
                outs = [outs]
        for v, x in zip(eqn.outvars, outs, strict=False):
            env[v] = x
    return [read(x) for x in jaxpr.outvars]


def _resized(eqn, in_shapes, out_shapes, d, ids) -> dict:
    """The equation's parameters for operands of ``in_shapes`` and outputs of ``out_shapes``."""
    p = dict(eqn.params)
    name = eqn.primitive.name
    out = out_shapes[0] if out_shapes else None
    old_in = [tuple(x.aval.shape) for x in eqn.invars]
    if name == "broadcast_in_dim":
        p["shape"] = out
    elif name == "reshape":
        p["new_sizes"] = out
    elif name == "iota":
        p["shape"] = out
    elif name == "conv_general_dilated" and p["feature_group_count"] > 1:
        lf = p["dimension_numbers"].lhs_spec[1]
        if p["feature_group_count"] == old_in[0][lf]:   # depthwise: one group per channel
            p["feature_group_count"] = in_shapes[0][lf]
    elif name == "slice":
        p["limit_indices"] = tuple(
            new if lim == old else lim
            for lim, old, new in zip(p["limit_indices"], old_in[0], in_shapes[0], strict=False))
    elif name in ("dynamic_slice", "gather"):
        p["slice_sizes"] = tuple(
            new if s == old else s
            for s, old, new in zip(p["slice_sizes"], old_in[0], in_shapes[0], strict=True))
    return p
