"""The coupling spec of any JAX model, discovered from its traced computation.

:func:`discover` traces ``fn(variables, *args)`` with :func:`jax.make_jaxpr` and follows every
array axis through the graph. Axes that must always have the same size are joined into one
*class* (a union-find over the axes of every intermediate value and of every parameter):
an elementwise op joins its operands' axes, a matrix product joins the contracted axes of its
two operands, a convolution joins its input channels with its kernel's input axis (a depthwise
one joins input, output and kernel channels), ``add`` of two streams ties their channels, and
broadcasts, reshapes that keep an axis, transposes, reductions, slices and nested calls
(``jit``, ``custom_jvp``/``custom_vjp``) carry axes through. A class whose units some kernel
*creates* (a free axis of a product, a convolution's output channels) is a unit group:

- its producers are the kernels that create the units or pass them through (a depthwise
  kernel), each with the bias and BatchNorm that follow it, recognised by what the graph does
  with them (added; subtracted, scaled by ``rsqrt(var + eps)`` and shifted), not by names;
- its consumers are the kernels that contract it, each with its own output's bias or, without
  one, its BatchNorm (the convention of :mod:`condensation.coupling`).

A concatenation (a U-Net skip) or a flatten (channels into a dense layer) makes an axis of
several classes; a kernel that contracts it consumes each part at its place
(``Consumer.before``: the parts before it, whose sizes follow their own reductions;
``Consumer.split``: the flattened sizes).

Where an axis reaches something that cannot be resized by merging units, the class is left
alone and the report says which op stopped it: a reduction over the units (LayerNorm, softmax),
a reshape that splits the axis (attention heads), a product of two computed tensors (attention
scores), a slice or gather of the units, a parameter over a concatenation, the model's input or
output, a constant, a grouped convolution, a parameter axis that both computes and reads the
units (tied weights), or a primitive this module does not know.

The same analysis gives every intermediate's axis sizes after a reduction, which is how a
reduced model runs without rebuilding its modules (:mod:`condensation.reduce_model`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import jax
import numpy as np
from jax.extend import core as jcore

from condensation import coupling
from condensation.coupling import BatchNormRef, Consumer, Producer, Slot, UnitGroup

Path = tuple[Any, ...]
Node = tuple[int, int]  # (node id of an array, axis)

# Primitives whose operands and output have one shape (scalars aside) and line up axis by axis.
ELEMENTWISE = frozenset("""
    abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp convert_element_type copy
    copy_p cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1 floor ge gt igamma imag integer_pow
    is_finite le lgamma log log1p logistic lt max min mul ne neg nextafter not or pow real
    reduce_precision rem round rsqrt select_n sign sin sinh sqrt square stop_gradient sub tan tanh
    xor
""".split())
REDUCTIONS = frozenset("reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or "
                       "argmax argmin".split())
# Higher-order primitives whose body is followed: the parameter holding the body jaxpr.
CALLS = {"jit": "jaxpr", "pjit": "jaxpr", "custom_jvp_call": "call_jaxpr",
         "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr",
         "checkpoint": "jaxpr", "remat": "jaxpr", "closed_call": "call_jaxpr"}


def _dtype(x):
    return x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype


def leaf_paths(tree: Any) -> tuple[list[Path], list[Any]]:
    """The key path of every leaf of a nested dict, as plain tuples of keys, and the leaves."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    paths = [tuple(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in kp)
             for kp, _ in flat]
    return paths, [leaf for _, leaf in flat]


@dataclass
class _Array:
    """What the walk knows about one array of the graph."""

    shape: tuple[int, ...]
    kind: str                          # "data" (depends on the inputs), "param", "const"
    prov: tuple[frozenset, ...] = ()   # param: per axis, the (leaf, axis) it comes from
    leaves: frozenset = frozenset()    # param: every leaf it was computed from
    prod: tuple[int | None, ...] = ()  # data: per axis, the producer that last made the axis


@dataclass
class _Producer:
    slot: tuple[int, int]              # (leaf, axis)
    kind: str                          # "create" | "pass"
    # (primitive, leaves, site) applied after it, in order; site: ((scope, equation), data
    # operand, parameter operand, unit axis)
    events: list = field(default_factory=list)


@dataclass
class Discovery:
    """The result of :func:`discover`.

    ``spec``: the unit groups that can be reduced, in order of their first producer;
    ``stopped``: ``{name: reasons}`` for the unit groups left alone; ``paths``: every variable
    leaf's path. ``sizes_after(variables)`` gives every traced array's shape for variables of
    other widths (what :mod:`condensation.reduce_model` evaluates with).
    """

    spec: coupling.Spec
    stopped: dict[str, list[str]]
    paths: list[Path]
    closed_jaxpr: Any
    n_leaves: int
    _root: Callable[[Node], Node]
    _shapes: dict[int, tuple[int, ...]]
    _scopes: list[dict]
    _class_slot: dict[Node, tuple[int, int]]
    _composite: dict[Node, tuple[str, list[tuple[Node, int]]]]
    _reads: dict[tuple[int, int], list] = field(default_factory=dict)
    # every BatchNorm after a producer: (mean leaf, var leaf, where the mean is subtracted
    # ((scope, eqn), data operand, mean operand, unit axis), where eps is added to the variance
    # ((scope, eqn), variance operand))
    _norms: list[tuple] = field(default_factory=list)

    def report(self) -> str:
        lines = [f"{len(self.spec)} unit groups:"]
        lines += [f"  {g.name}: {len(g.producers)} producer(s), {len(g.consumers)} consumer(s)"
                  for g in self.spec]
        if self.stopped:
            lines.append(f"{len(self.stopped)} left alone:")
            lines += [f"  {name}: {'; '.join(why)}" for name, why in self.stopped.items()]
        return "\n".join(lines)

    def new_shapes(self, leaf_shapes: Sequence[tuple[int, ...]]) -> dict[int, tuple[int, ...]]:
        """Every array's shape when the parameter leaves have ``leaf_shapes``: each axis takes
        the size its class has in the parameters (unchanged where no parameter axis is in it)."""
        size: dict[Node, int] = {}
        for root, (leaf, axis) in self._class_slot.items():
            size[root] = int(leaf_shapes[leaf][axis])
        for root, (kind, items) in self._composite.items():
            sizes = [size.get(r, n) for r, n in items]
            size[root] = sum(sizes) if kind == "concat" else int(np.prod(sizes))
        out = {}
        for aid, shape in self._shapes.items():
            out[aid] = tuple(size.get(self._root((aid, a)), n) for a, n in enumerate(shape))
        return out


class _Walk:
    def __init__(self, n_leaves: int, paths: list[Path]):
        self.n_leaves, self.paths = n_leaves, paths
        self.parent: dict[Node, Node] = {}
        self.arrays: dict[int, _Array] = {}
        self.stops: dict[Node, list[str]] = {}
        self.producers: list[_Producer] = []
        self.roles: dict[tuple[int, int], set[str]] = {}   # (leaf, axis) -> kernel roles
        self.consumer_order: list[tuple[int, int]] = []
        # axes made of others: node -> ("concat" | "flat", [(part node, size), ...])
        self.composite: dict[Node, tuple[str, list[tuple[Node, int]]]] = {}
        self.eps: dict[int, float] = {}                     # leaf -> eps added to it
        self.eps_at: dict[int, tuple] = {}                  # leaf -> ((scope, eqn), operand)
        self.scopes: list[dict] = []
        self.next_id = 0
        # where each consumer kernel reads its input: (scope, equation) -> [(slot, operand, how)]
        self.reads: dict[tuple[int, int], list] = {}
        self.at: tuple[int, int] = (0, 0)

    # -- union-find over (array, axis) --------------------------------------------------------
    def find(self, n: Node) -> Node:
        root = n
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(n, n) != root:
            self.parent[n], n = root, self.parent[n]
        return root

    def join(self, a: Node, b: Node) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def stop(self, node: Node, why: str) -> None:
        self.stops.setdefault(node, []).append(why)

    def producer(self, slot: tuple[int, int], kind: str) -> int:
        """A new producer; a kernel that passes units through is one producer however many ops
        apply it (a depthwise filter applied tap by tap)."""
        self.roles.setdefault(slot, set()).add(kind)
        if kind == "pass":
            for i, p in enumerate(self.producers):
                if p.slot == slot and p.kind == "pass":
                    return i
        self.producers.append(_Producer(slot, kind))
        return len(self.producers) - 1

    def new(self, arr: _Array) -> int:
        aid = self.next_id
        self.next_id += 1
        self.arrays[aid] = arr
        return aid

    # -- the walk ------------------------------------------------------------------------------
    def run(self, closed, n_args_leaves: int) -> None:
        jaxpr = closed.jaxpr
        ids = []
        for i, v in enumerate(jaxpr.invars):
            shape = tuple(v.aval.shape)
            if i < self.n_leaves:
                aid = self.new(_Array(shape, "param", tuple(frozenset({(i, a)}) for a in range(len(shape))),
                                      frozenset({i})))
                assert aid == i
            else:
                aid = self.new(_Array(shape, "data", prod=(None,) * len(shape)))
                for a in range(len(shape)):
                    self.stop((aid, a), "an axis of the model's input")
            ids.append(aid)
        outs = self.body(closed, ids)
        for aid in outs:
            if aid is not None:
                for a in range(len(self.arrays[aid].shape)):
                    self.stop((aid, a), "the model's output")

    def body(self, closed, in_ids: list[int]) -> list[int]:
        jaxpr = closed.jaxpr
        env: dict = {}
        self.scopes.append(env)
        scope = len(self.scopes) - 1
        for v, c in zip(jaxpr.constvars, closed.consts, strict=False):
            env[v] = self.const(np.shape(c))
        for v, aid in zip(jaxpr.invars, in_ids, strict=True):
            env[v] = aid
        for k, eqn in enumerate(jaxpr.eqns):
            ins = [self.operand(env, x) for x in eqn.invars]
            self.at = (scope, k)
            outs = self.eqn(eqn, ins)
            for v, aid in zip(eqn.outvars, outs, strict=False):
                env[v] = aid
        return [self.operand(env, x) for x in jaxpr.outvars]

    def const(self, shape) -> int:
        aid = self.new(_Array(tuple(shape), "const"))
        for a, n in enumerate(shape):
            if n > 1:
                self.stop((aid, a), "a constant array")
        return aid

    def operand(self, env, x) -> int:
        if isinstance(x, jcore.Literal):
            return self.const(np.shape(x.val))
        return env[x]

    def out(self, eqn, i, kind, prov=None, leaves=frozenset(), prod=None) -> int:
        shape = tuple(eqn.outvars[i].aval.shape)
        nd = len(shape)
        return self.new(_Array(shape, kind, tuple(prov) if prov is not None else (frozenset(),) * nd,
                               leaves, tuple(prod) if prod is not None else (None,) * nd))

    def eqn(self, eqn, ins: list[int]) -> list[int]:
        name = eqn.primitive.name
        arrs = [self.arrays[i] for i in ins]
        if name in CALLS and CALLS[name] in eqn.params:
            sub = eqn.params[CALLS[name]]
            if not hasattr(sub, "jaxpr"):   # an open Jaxpr
                sub = jcore.ClosedJaxpr(sub, ())
            inner = self.body(sub, ins)
            outs = []
            for i, iid in enumerate(inner):
                oid = self.out(eqn, i, self.arrays[iid].kind, self.arrays[iid].prov,
                               self.arrays[iid].leaves, self.arrays[iid].prod)
                for a in range(len(self.arrays[oid].shape)):
                    self.join((oid, a), (iid, a))
                outs.append(oid)
            return outs
        if name in ELEMENTWISE:
            return [self.elementwise(eqn, ins, arrs)]
        handler = getattr(self, "op_" + name, None)
        if handler is not None:
            return handler(eqn, ins, arrs)
        for iid, arr in zip(ins, arrs, strict=True):
            for a, n in enumerate(arr.shape):
                if n > 1:
                    self.stop((iid, a), f"{name} (not followed)")
        kind = "data" if any(a.kind == "data" for a in arrs) else "const"
        outs = [self.out(eqn, i, kind) for i in range(len(eqn.outvars))]
        for oid in outs:   # what comes out cannot be resized either
            for a, n in enumerate(self.arrays[oid].shape):
                if n > 1:
                    self.stop((oid, a), f"{name} (not followed)")
        return outs

    def kind_of(self, arrs) -> str:
        kinds = {a.kind for a in arrs}
        return "data" if "data" in kinds else "param" if "param" in kinds else "const"

    def elementwise(self, eqn, ins, arrs) -> int:
        name = eqn.primitive.name
        shape = tuple(eqn.outvars[0].aval.shape)
        nd = len(shape)
        # operands of the output's rank; an axis of size 1 against a larger one is broadcast
        full = [(i, a) for i, a in zip(ins, arrs, strict=False) if len(a.shape) == nd and nd > 0]
        kind = self.kind_of(arrs)
        leaves = frozenset().union(*(a.leaves for a in arrs if a.kind == "param"))
        prov, prod = [], []
        for ax in range(nd):
            on = [a for _, a in full if a.shape[ax] == shape[ax]]
            prov.append(frozenset().union(*(a.prov[ax] for a in on if a.kind == "param")))
            prod.append(next((a.prod[ax] for a in on
                              if a.kind == "data" and a.prod[ax] is not None), None))
        oid = self.out(eqn, 0, kind, prov, leaves, prod)
        for iid, a in full:
            for ax in range(nd):
                if a.shape[ax] == shape[ax]:
                    self.join((oid, ax), (iid, ax))
        # a parameter combined with a computed array: a per-unit parameter of its producer, or
        # a kernel that passes the units through (a depthwise filter applied tap by tap)
        if kind == "data":
            data_at = next((j for j, a in enumerate(arrs) if a.kind == "data"), None)
            for _, p in full:
                if p.kind != "param":
                    continue
                param_at = next(j for j, a in enumerate(arrs) if a is p)
                for ax in range(nd):
                    if prod[ax] is None or p.shape[ax] != shape[ax] or shape[ax] == 1 \
                            or not p.prov[ax]:
                        continue
                    big = [(lf, la) for lf, la in p.prov[ax] if len(self.arrays[lf].shape) > 1]
                    if big and name == "mul" and len(big) == 1 and len(p.leaves) == 1:
                        prod[ax] = self.producer(big[0], "pass")
                        self.arrays[oid].prod = tuple(prod)
                    elif big:
                        self.stop((oid, ax), f"{name} with parameter "
                                  f"{'/'.join(map(str, self.paths[big[0][0]]))}, not a bias, "
                                  "BatchNorm or depthwise filter")
                    else:
                        self.producers[prod[ax]].events.append(
                            (name, p.leaves, (self.at, data_at, param_at, ax)))
        # eps of a normalisation: a parameter plus a scalar constant
        if name == "add" and kind == "param" and len(leaves) == 1:
            lits = [x for x in eqn.invars if isinstance(x, jcore.Literal)]
            if lits:
                self.eps_at[next(iter(leaves))] = (self.at, next(
                    j for j, x in enumerate(eqn.invars) if not isinstance(x, jcore.Literal)))
                # the literal is float32: read back the decimal it was written as (1e-05)
                self.eps[next(iter(leaves))] = float(str(np.asarray(lits[0].val).item()
                                                         if lits[0].aval.dtype == np.float64
                                                         else np.float32(lits[0].val)))
        return oid

    # -- structural ops ------------------------------------------------------------------------
    def mapped(self, eqn, iid, arr, mapping: dict[int, int]) -> int:
        """An output whose axis ``o`` is the operand's axis ``mapping[o]`` (others new)."""
        nd = len(eqn.outvars[0].aval.shape)
        prov = [arr.prov[mapping[o]] if o in mapping and arr.prov else frozenset() for o in range(nd)]
        prod = [arr.prod[mapping[o]] if o in mapping and arr.prod else None for o in range(nd)]
        oid = self.out(eqn, 0, arr.kind, prov, arr.leaves, prod)
        for o, i in mapping.items():
            self.join((oid, o), (iid, i))
        return oid

    def op_broadcast_in_dim(self, eqn, ins, arrs):
        shape = eqn.params["shape"]
        m = {o: i for i, o in enumerate(eqn.params["broadcast_dimensions"])
             if arrs[0].shape[i] == shape[o]}
        return [self.mapped(eqn, ins[0], arrs[0], m)]

    def op_transpose(self, eqn, ins, arrs):
        return [self.mapped(eqn, ins[0], arrs[0], dict(enumerate(eqn.params["permutation"])))]

    def op_squeeze(self, eqn, ins, arrs):
        keep = [a for a in range(len(arrs[0].shape)) if a not in set(eqn.params["dimensions"])]
        return [self.mapped(eqn, ins[0], arrs[0], dict(enumerate(keep)))]

    def op_expand_dims(self, eqn, ins, arrs):
        out_nd = len(eqn.outvars[0].aval.shape)
        new = set(d % out_nd for d in eqn.params["dimensions"])
        rest = [o for o in range(out_nd) if o not in new]
        return [self.mapped(eqn, ins[0], arrs[0], dict(zip(rest, range(len(arrs[0].shape)), strict=False)))]

    def op_reshape(self, eqn, ins, arrs):
        src, dst = arrs[0].shape, tuple(eqn.outvars[0].aval.shape)
        m, i, o, flat = {}, 0, 0, []
        while i < len(src) or o < len(dst):
            if i < len(src) and src[i] == 1:
                i += 1
                continue
            if o < len(dst) and dst[o] == 1:
                o += 1
                continue
            ii, oo, pi, po = [i], [o], src[i], dst[o]
            while pi != po:
                if pi < po:
                    i += 1
                    ii.append(i)
                    pi *= src[i]
                else:
                    o += 1
                    oo.append(o)
                    po *= dst[o]
            if len(ii) == 1 and len(oo) == 1:
                m[oo[0]] = ii[0]
            elif len(oo) == 1:
                flat.append((oo[0], ii))
            else:
                for a in ii:
                    self.stop((ins[0], a), "a reshape that splits it (e.g. attention heads)")
            i, o = i + 1, o + 1
        oid = self.mapped(eqn, ins[0], arrs[0], m)
        for o, ii in flat:   # a flatten: the output axis is the merged ones in row-major order
            self.composite[(oid, o)] = ("flat", [((ins[0], a), src[a]) for a in ii])
        return [oid]

    def reduce(self, eqn, ins, arrs, axes):
        for a in axes:
            self.stop((ins[0], a), f"{eqn.primitive.name} over it")
        keep = [a for a in range(len(arrs[0].shape)) if a not in set(axes)]
        return [self.mapped(eqn, ins[0], arrs[0], dict(enumerate(keep)))]

    def op_reduce_sum(self, eqn, ins, arrs):
        return self.reduce(eqn, ins, arrs, eqn.params["axes"])

    op_reduce_max = op_reduce_min = op_reduce_prod = op_reduce_and = op_reduce_or = op_reduce_sum

    def op_argmax(self, eqn, ins, arrs):
        return self.reduce(eqn, ins, arrs, eqn.params["axes"])

    op_argmin = op_argmax

    def same_size_axes(self, eqn, ins, arrs, what):
        out = tuple(eqn.outvars[0].aval.shape)
        m = {}
        for a, (n, k) in enumerate(zip(arrs[0].shape, out, strict=False)):
            if n == k and self.untouched(eqn, a):
                m[a] = a
            elif n > 1:
                self.stop((ins[0], a), f"a {what} of it")
        return [self.mapped(eqn, ins[0], arrs[0], m)]

    def untouched(self, eqn, a) -> bool:
        p = eqn.params
        if eqn.primitive.name == "slice":
            return p["start_indices"][a] == 0 and (p["strides"] is None or p["strides"][a] == 1)
        if eqn.primitive.name == "pad":
            return tuple(p["padding_config"][a]) == (0, 0, 0)
        if eqn.primitive.name == "rev":
            return a not in p["dimensions"]
        return True

    def op_slice(self, eqn, ins, arrs):
        return self.same_size_axes(eqn, ins, arrs, "slice")

    def op_pad(self, eqn, ins, arrs):
        return self.same_size_axes(eqn, ins[:1], arrs[:1], "padding")

    def op_rev(self, eqn, ins, arrs):
        return self.same_size_axes(eqn, ins, arrs, "reversal")

    def op_reduce_window_max(self, eqn, ins, arrs):
        """Pooling: axes with a window of 1 (the channels) pass through."""
        p = eqn.params
        m = {}
        for a in range(len(arrs[0].shape)):
            plain = (p["window_dimensions"][a] == 1 and p["window_strides"][a] == 1
                     and tuple(p["padding"][a]) == (0, 0)
                     and p.get("base_dilation", (1,) * 8)[a] == 1)
            if plain:
                m[a] = a
            elif arrs[0].shape[a] > 1:
                self.stop((ins[0], a), f"{eqn.primitive.name} over it")
        return [self.mapped(eqn, ins[0], arrs[0], m)]

    op_reduce_window_min = op_reduce_window_sum = op_reduce_window_max

    def op_cumsum(self, eqn, ins, arrs):
        self.stop((ins[0], eqn.params["axis"]), f"{eqn.primitive.name} along it")
        return [self.mapped(eqn, ins[0], arrs[0], {a: a for a in range(len(arrs[0].shape))})]

    op_cumprod = op_cummax = op_cummin = op_cumlogsumexp = op_cumsum

    def op_concatenate(self, eqn, ins, arrs):
        d = eqn.params["dimension"]
        nd = len(arrs[0].shape)
        kind = self.kind_of(arrs)
        oid = self.out(eqn, 0, kind)
        self.composite[(oid, d)] = ("concat", [((iid, d), a.shape[d])
                                               for iid, a in zip(ins, arrs, strict=True)])
        for iid in ins:
            for ax in range(nd):
                if ax != d:
                    self.join((oid, ax), (iid, ax))
        first = next((a for a in arrs if a.kind == "data"), None)
        if first is not None:
            self.arrays[oid].prod = tuple(p if ax != d else None for ax, p in enumerate(first.prod))
        return [oid]

    def op_iota(self, eqn, ins, arrs):
        return [self.const(eqn.outvars[0].aval.shape)]

    def kernel_slot(self, arr: _Array, ax: int, node: Node, what: str) -> tuple[int, int] | None:
        prov = arr.prov[ax]
        if len(prov) == 1:
            return next(iter(prov))
        if arr.shape[ax] > 1:
            self.stop(node, f"a {what} whose kernel axis comes from "
                      f"{'several parameters' if prov else 'no single parameter'}")
        return None

    def op_dot_general(self, eqn, ins, arrs):
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        (li, la), (ri, ra) = (ins[0], arrs[0]), (ins[1], arrs[1])
        lfree = [a for a in range(len(la.shape)) if a not in lc and a not in lb]
        rfree = [a for a in range(len(ra.shape)) if a not in rc and a not in rb]
        order = [("b", a, b) for a, b in zip(lb, rb, strict=False)] + [("l", a, None) for a in lfree] + \
                [("r", a, None) for a in rfree]
        kind = self.kind_of(arrs)
        both_data = la.kind == "data" and ra.kind == "data"
        prov, prod = [], []
        for tag, a, _ in order:
            src = la if tag in "bl" else ra
            prov.append(src.prov[a] if src.kind == "param" else frozenset())
            prod.append(src.prod[a] if src.kind == "data" else None)
        oid = self.out(eqn, 0, kind, prov, la.leaves | ra.leaves, prod)
        if both_data:
            for a in lb:
                self.stop((li, a), "a product of two computed arrays batched over it (e.g. "
                          "attention heads)")
        for a, b in zip(lc, rc, strict=False):
            self.join((li, a), (ri, b))
            if both_data:
                self.stop((li, a), "a product of two computed arrays over it (e.g. attention)")
            elif kind == "data":
                p_id, p_arr, p_ax = (ri, ra, b) if la.kind == "data" else (li, la, a)
                slot = self.kernel_slot(p_arr, p_ax, (p_id, p_ax), "product")
                if slot is not None:
                    self.roles.setdefault(slot, set()).add("consume")
                    self.consumer_order.append(slot)
                    d_idx, d_arr, d_ax = (0, la, a) if la.kind == "data" else (1, ra, b)
                    plain = (len(lc) == 1 and not lb and d_ax == len(d_arr.shape) - 1
                             and len(p_arr.shape) == 2)
                    self.reads.setdefault(self.at, []).append(
                        (slot, d_idx, ("dense",) if plain else "a product other than x[..., C] "
                                      "@ kernel[C, out]"))
        prod = list(self.arrays[oid].prod)
        for o, (tag, a, b) in enumerate(order):
            if tag == "b":
                self.join((oid, o), (li, a))
                self.join((oid, o), (ri, b))
                continue
            iid, arr = (li, la) if tag == "l" else (ri, ra)
            self.join((oid, o), (iid, a))
            if kind == "data" and arr.kind == "param":
                slot = self.kernel_slot(arr, a, (iid, a), "product")
                if slot is not None:
                    prod[o] = self.producer(slot, "create")
        self.arrays[oid].prod = tuple(prod)
        return [oid]

    def op_conv_general_dilated(self, eqn, ins, arrs):
        p = eqn.params
        dn = p["dimension_numbers"]
        lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
        (li, la), (ri, ra) = (ins[0], arrs[0]), (ins[1], arrs[1])
        oid = self.out(eqn, 0, self.kind_of(arrs))
        lf, rout, rin, of = lhs_spec[1], rhs_spec[0], rhs_spec[1], out_spec[1]
        for a in lhs_spec[2:]:
            self.stop((li, a), "a convolution's spatial axis")
        if la.kind != "data" or ra.kind != "param" or p.get("batch_group_count", 1) != 1:
            for iid, a in zip(ins, arrs, strict=False):
                for ax in range(len(a.shape)):
                    self.stop((iid, ax), "a convolution not of data by a parameter kernel")
            return [oid]
        g = p["feature_group_count"]
        prod = [None] * len(self.arrays[oid].shape)
        if g == 1:
            self.join((li, lf), (ri, rin))
            slot = self.kernel_slot(ra, rin, (ri, rin), "convolution")
            if slot is not None:
                self.roles.setdefault(slot, set()).add("consume")
                self.consumer_order.append(slot)
                nhwc = (tuple(lhs_spec) == (0, 3, 1, 2) and tuple(rhs_spec) == (3, 2, 0, 1)
                        and all(d == 1 for d in (p.get("lhs_dilation") or (1,)))
                        and all(d == 1 for d in (p.get("rhs_dilation") or (1,))))
                self.reads.setdefault(self.at, []).append(
                    (slot, 0, ("conv", tuple(p["window_strides"]), tuple(map(tuple, p["padding"])))
                     if nhwc else "a convolution not NHWC x HWIO or dilated"))
            self.join((oid, of), (ri, rout))
            slot = self.kernel_slot(ra, rout, (ri, rout), "convolution")
            if slot is not None:
                prod[of] = self.producer(slot, "create")
        elif g == la.shape[lf] and ra.shape[rin] == 1 and ra.shape[rout] == g:
            self.join((li, lf), (oid, of))
            self.join((oid, of), (ri, rout))
            slot = self.kernel_slot(ra, rout, (ri, rout), "depthwise convolution")
            if slot is not None:
                prod[of] = self.producer(slot, "pass")
        else:
            self.stop((li, lf), "a grouped convolution")
            self.stop((ri, rout), "a grouped convolution")
        self.arrays[oid].prod = tuple(prod)
        return [oid]


def _producer_parts(w: _Walk, pr: _Producer) -> tuple[tuple[int, int] | None, tuple | None, str | None]:
    """(bias leaf, BatchNorm (mean, var, scale, bias leaves, eps), problem) from the ops that
    followed a producer: ``add b``; then ``sub mean``, ``mul f(var + eps, scale)``, ``add beta``."""
    bias = bn = None
    ev = list(pr.events)
    if ev and ev[0][0] == "add" and len(ev[0][1]) == 1:
        bias = next(iter(ev.pop(0)[1]))
    if len(ev) >= 3 and ev[0][0] == "sub" and ev[1][0] == "mul" and ev[2][0] == "add":
        (mean,), (bias2,) = tuple(ev[0][1]), tuple(ev[2][1])
        var = [lf for lf in ev[1][1] if lf in w.eps]
        scale = [lf for lf in ev[1][1] if lf not in w.eps]
        if len(ev[0][1]) == 1 and len(ev[2][1]) == 1 and len(var) == 1 and len(scale) == 1:
            bn = (mean, var[0], scale[0], bias2, w.eps[var[0]])
            ev = ev[3:]
    if ev:
        names = ", ".join("/".join(map(str, w.paths[lf])) for e in ev for lf in sorted(e[1]))
        return bias, bn, f"per-unit parameters that are not a bias or a BatchNorm: {names}"
    return bias, bn, None


def discover(fn: Callable, variables: Any, *args: Any) -> Discovery:
    """Trace ``fn(variables, *args)`` and find its unit groups (see the module docstring).

    ``variables`` is a nested dict of arrays (or of ``jax.ShapeDtypeStruct``); the spec's paths
    index it. ``args`` are example inputs (only their shapes and dtypes matter).
    """
    paths, leaves = leaf_paths(variables)
    n = len(leaves)
    structs = [jax.ShapeDtypeStruct(np.shape(x), _dtype(x)) for x in leaves]
    treedef = jax.tree_util.tree_structure(variables)
    args_leaves, args_def = jax.tree_util.tree_flatten(args)

    def flat_fn(*flat):
        v = jax.tree_util.tree_unflatten(treedef, flat[:n])
        a = jax.tree_util.tree_unflatten(args_def, flat[n:])
        return fn(v, *a)

    arg_structs = [jax.ShapeDtypeStruct(np.shape(x), _dtype(x))
                   for x in args_leaves]
    closed = jax.make_jaxpr(flat_fn)(*structs, *arg_structs)
    w = _Walk(n, paths)
    w.run(closed, len(arg_structs))
    return _assemble(w, closed, paths)


def _composites(w: _Walk, stops, creator, slot_node, paths) -> dict:
    """Axes made of others (concatenations, flattens): one layout per class, of parts that are
    plain classes; what stops the whole stops each part (``stops`` is extended in place)."""
    composite: dict[Node, tuple[str, list[tuple[Node, int]]]] = {}
    for node, (kind, items) in w.composite.items():
        root = w.find(node)
        layout = (kind, [(w.find(n), size) for n, size in items])
        if composite.get(root, layout) != layout:
            for _, (_, its) in ((root, composite[root]), (root, layout)):
                for r, _ in its:
                    stops.setdefault(r, []).append("two different concatenations or flattens meet")
        composite.setdefault(root, layout)
    for root, (_, items) in composite.items():
        roots = [r for r, _ in items]
        nested = [r for r in roots if r in composite]
        if nested or len(set(roots)) < len(roots):
            why = ("a concatenation or flatten of another one" if nested
                   else "the same units twice in one concatenation")
            for r in [root, *nested]:
                stops.setdefault(r, []).append(why)
            for r in nested:
                for q, _ in composite[r][1]:
                    stops.setdefault(q, []).append(why)
    for root, (kind, items) in composite.items():
        units = [r for r, _ in items if r in creator]
        for r, _ in items:
            stops.setdefault(r, []).extend(stops.get(root, []))
            if kind == "flat" and len(units) > 1 and r in units:
                stops.setdefault(r, []).append("flattened together with another unit group")
        for lf, ax in slot_node:   # a parameter along the combined axis other than a kernel reading it
            if w.find((lf, ax)) == root and "consume" not in w.roles.get((lf, ax), set()):
                for r, _ in items:
                    stops.setdefault(r, []).append(
                        f"parameter {'/'.join(map(str, paths[lf]))} spans its concatenation")
    return composite


def _add_consumers(w: _Walk, by_root, composite, creator, slot_node, paths) -> None:
    """Each consumer kernel axis under its class in ``by_root``; one reading a concatenation or
    a flatten under each of its parts, with where the part sits (before/after, split)."""
    seen = set()
    for slot in w.consumer_order:
        if slot in seen:
            continue
        seen.add(slot)
        root = w.find(slot_node[slot])
        if root not in composite:
            by_root.setdefault(root, {"producers": [], "consumers": []})["consumers"].append(
                (slot, ((), ()), ()))
            continue
        kind, items = composite[root]
        for i, (r, _) in enumerate(items):
            if r not in creator:
                continue
            if kind == "concat":
                size = [Slot(tuple(paths[creator[q][0]]), creator[q][1]) if q in creator else n
                        for q, n in items]
                before, after, split = tuple(size[:i]), tuple(size[i + 1:]), ()
            else:
                before = after = ()
                split = tuple(None if j == i else n for j, (_, n) in enumerate(items))
            by_root.setdefault(r, {"producers": [], "consumers": []})["consumers"].append(
                (slot, (before, after), split))


def _computes_and_reads(w: _Walk, members: dict, path: Callable) -> list[str]:
    """Why a group cannot be merged when one parameter both computes and reads its units: on
    the same axis (tied transposed weights) or on two axes of one kernel (a layer applied again
    after a normalisation shared with the layer before it); a merge would change it twice."""
    made = {w.producers[i].slot for i in members["producers"]}
    read = {s for s, _, _ in members["consumers"]}
    why = []
    for lf in sorted({s[0] for s in made} & {s[0] for s in read}):
        how = ("tied weights" if any(s in read for s in made if s[0] == lf)
               else "a layer that reads the units it computes, through a shared normalisation")
        why.append(f"parameter {'/'.join(map(str, path(lf)))} both computes and reads the units "
                   f"({how})")
    return why


def _norm(w: _Walk, pr: _Producer) -> tuple | None:
    """(mean leaf, var leaf, where the mean is subtracted, where eps is added to var) when a
    normalisation follows the producer (after its bias, if any): the subtraction of a parameter,
    then a product with something of ``var + eps``; scale and shift optional."""
    ev = [e for e in pr.events if not (e[0] == "add" and e is pr.events[0])]
    if len(ev) < 2 or ev[0][0] != "sub" or ev[1][0] != "mul" or len(ev[0][1]) != 1:
        return None
    var = [lf for lf in ev[1][1] if lf in w.eps]
    return (next(iter(ev[0][1])), var[0], ev[0][2], w.eps_at[var[0]]) if len(var) == 1 else None


def _assemble(w: _Walk, closed, paths) -> Discovery:
    # every parameter axis in a class ties the class to that axis; two classes sharing one are
    # one class (shared weights)
    slot_node = {(lf, ax): (lf, ax) for lf in range(w.n_leaves)
                 for ax in range(len(w.arrays[lf].shape))}
    stops: dict[Node, list[str]] = {}
    for node, why in w.stops.items():
        stops.setdefault(w.find(node), []).extend(why)
    by_root: dict[Node, dict[str, list]] = {}
    for i, pr in enumerate(w.producers):
        by_root.setdefault(w.find(slot_node[pr.slot]), {"producers": [], "consumers": []})[
            "producers"].append(i)
    creator = {w.find(slot_node[pr.slot]): pr.slot   # class root -> its first creating kernel axis
               for pr in reversed(w.producers) if pr.kind == "create"}
    composite = _composites(w, stops, creator, slot_node, paths)
    _add_consumers(w, by_root, composite, creator, slot_node, paths)
    parts = {i: _producer_parts(w, pr) for i, pr in enumerate(w.producers)}
    by_kernel = {pr.slot[0]: i for i, pr in reversed(list(enumerate(w.producers)))}  # the first

    def path(lf):
        return tuple(paths[lf])

    def bn_ref(bn):
        mean, var, scale, bias, eps = bn
        return BatchNormRef(scale=path(scale), bias=path(bias), mean=path(mean), var=path(var),
                            eps=eps)

    spec, stopped = [], {}
    class_slot: dict[Node, tuple[int, int]] = {}
    for root, members in by_root.items():
        prods = [w.producers[i] for i in members["producers"]]
        if not any(p.kind == "create" for p in prods):
            continue
        first = next(p for p in prods if p.kind == "create")
        kpath = path(first.slot[0])
        inner = kpath[1:] if kpath[0] == "params" else kpath
        name = "/".join(map(str, inner[:-1] if len(inner) > 1 else inner))
        why = list(dict.fromkeys(stops.get(root, [])))
        why += _computes_and_reads(w, members, path)
        unique, producers = [], []
        for i in members["producers"]:
            if w.producers[i].slot in [w.producers[j].slot for j in unique]:
                continue
            unique.append(i)
        for i in unique:
            bias, bn, problem = parts[i]
            if problem:
                why.append(problem)
            lf, ax = w.producers[i].slot
            producers.append(Producer(Slot(path(lf), ax), path(bias) if bias is not None else None,
                                      bn_ref(bn) if bn else None))
        consumers = []
        for (lf, ax), (before, after), split in members["consumers"]:
            k = by_kernel.get(lf)
            cb, cbn = (parts[k][0], parts[k][1]) if k is not None else (None, None)
            consumers.append(Consumer(path(lf), ax, bias=path(cb) if cb is not None else None,
                                      bn=bn_ref(cbn) if (cb is None and cbn) else None,
                                      before=before, after=after, split=split))
        if not consumers:
            why.append("no kernel reads the units")
        if why:
            stopped[name] = list(dict.fromkeys(why))
            continue
        spec.append(UnitGroup(name, tuple(producers), tuple(consumers)))
        class_slot[root] = first.slot   # the reducible classes: their size is this axis's
    shapes = {aid: a.shape for aid, a in w.arrays.items()}
    norms = {n[2][0]: n for n in map(partial(_norm, w), w.producers) if n}  # one per site
    return Discovery(tuple(spec), stopped, paths, closed, w.n_leaves, w.find, shapes, w.scopes,
                     class_slot, composite, w.reads, list(norms.values()))
