"""A JAX function as an ONNX graph: the function's jaxpr translated op by op.

``to_onnx(fn, *specs)`` traces ``fn`` with :func:`jax.make_jaxpr` on ``jax.ShapeDtypeStruct``
inputs, whose dimensions may be symbolic (``jax.export.symbolic_shape("b")``: the ONNX input
gets a named dynamic dimension), and writes every equation as ONNX operators (opset 17) built
with the ``onnx`` package. What it covers is what inference graphs of this project contain:

- element-wise arithmetic, comparisons, ``select_n``, casts, ``tanh``/``exp``/``log``/``erf``...;
- ``dot_general`` (as ``Einsum``), ``reduce_sum``/``max``/``min``, ``argmax``/``argmin``,
  ``broadcast_in_dim``, ``reshape``, ``squeeze``, ``transpose``, ``slice``, ``dynamic_slice``
  at constant offsets, ``concatenate``, ``stack``, ``split``, ``clamp``, ``pad``;
- ``conv_general_dilated`` (any layout, strides, padding, dilation, groups: depthwise
  included) as ``Conv``, max and sum pooling windows as ``MaxPool`` / ``AveragePool``;
- ``gather`` and ``scatter`` (set) whose indices are constants (``x[:, idx]``, ``jnp.diagonal``,
  ``x.at[:, idx].set(v)``; out-of-range indices clipped or dropped as their mode says, a
  gather that would fill refused), written as one ``Gather`` on the indexed axes flattened;
- nested calls (``jit``, ``custom_jvp``/``custom_vjp``: the primal) inlined, and ``scan`` /
  ``fori_loop`` with a fixed trip count unrolled.

Equations whose inputs are all constants are evaluated here (folded into initializers), so
``iota``, index arithmetic and the weights' own reshapes cost nothing at run time. Anything else
(a linear solve, ``sort``, a ``while_loop`` with a data-dependent end, gathers with computed
indices) stops the translation with one error naming the primitive; rewrite that part with the
ops above (e.g. :func:`condensation.combustion.chem.solve_small` for small batched systems).
Casts from floats to integers follow ONNX (out-of-range values are not saturated as in XLA),
and bitwise ``and``/``or``/``xor``/``not`` are translated for booleans only.

Why a translator here rather than jax2onnx: jax2onnx 0.17 pins orbax-checkpoint below the
version this project uses and pulls in equinox, dm-pix and huggingface-hub; its batched ``lu``
and closed-over ``fori_loop`` lowerings also failed on the surrogate step (measured).
"""
from __future__ import annotations

import itertools
import string
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.extend.core import Literal

try:
    import onnx
    from onnx import helper, numpy_helper
except ImportError:  # pragma: no cover - exercised without the extra
    onnx = None

OPSET = 17

_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min",
           "pow": "Pow", "and": "And", "or": "Or", "xor": "Xor", "lt": "Less",
           "le": "LessOrEqual", "gt": "Greater", "ge": "GreaterOrEqual", "eq": "Equal"}
_UNARY = {"neg": "Neg", "exp": "Exp", "log": "Log", "tanh": "Tanh", "logistic": "Sigmoid",
          "sqrt": "Sqrt", "abs": "Abs", "sign": "Sign", "floor": "Floor", "ceil": "Ceil",
          "erf": "Erf", "sin": "Sin", "cos": "Cos", "not": "Not", "stop_gradient": "Identity",
          "copy": "Identity", "copy_p": "Identity", "reduce_precision": "Identity",
          "optimization_barrier": "Identity"}
_REDUCE = {"reduce_sum": "ReduceSum", "reduce_max": "ReduceMax", "reduce_min": "ReduceMin"}
_CALLS = ("jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
          "custom_vjp_call_jaxpr", "remat", "checkpoint")


def _require_onnx() -> None:
    if onnx is None:
        raise ImportError("ONNX export needs the onnx package: pip install -e '.[export]'")


class _Const:
    """A value known at translation time; ``name``: its initializer, once written."""

    def __init__(self, value):
        self.value = np.asarray(value)
        self.name: str | None = None


class _Graph:
    """The ONNX graph being built, and the runtime sizes of the symbolic dimensions."""

    def __init__(self):
        self.nodes: list = []
        self.initializers: list = []
        self.dims: dict[str, str] = {}  # symbol -> name of an int64 [1] tensor holding it
        self._names = itertools.count()

    def name(self, hint: str = "t") -> str:
        return f"{hint}_{next(self._names)}"

    def const(self, value) -> str:
        name = self.name("c")
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs):
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if n_out == 1 else outs

    def dim(self, d) -> str:
        """An int64 [1] tensor holding dimension ``d`` (an int or ``c * symbol``)."""
        if _known(d):
            return self.const(np.array([d], np.int64))
        symbols = [s for s in self.dims if _linear(d, s) is not None]
        if not symbols:
            raise NotImplementedError(f"ONNX export: dimension {d} is not a multiple of one input "
                                      f"dimension ({', '.join(self.dims) or 'none symbolic'})")
        c = _linear(d, symbols[0])
        return self.dims[symbols[0]] if c == 1 else self.op(
            "Mul", [self.dims[symbols[0]], self.const(np.array([c], np.int64))])

    def shape(self, shape) -> str:
        if all(map(_known, shape)):
            return self.const(np.array(shape, np.int64))
        return self.op("Concat", [self.dim(d) for d in shape], axis=0)


def _linear(d, symbol: str):
    """``c`` when dimension expression ``d == c * symbol``, else None."""
    try:
        c = d._evaluate({symbol: 1})
        linear = all(d._evaluate({symbol: n}) == n * c for n in (2, 3, 7, 1000))
        return int(c) if linear and c > 0 else None
    except Exception:  # another symbol, or not a dimension expression
        return None


def _known(d) -> bool:
    """A dimension with a value (not a symbolic one)."""
    return isinstance(d, (int, np.integer))


def _is_static(aval) -> bool:
    return all(map(_known, getattr(aval, "shape", ())))


class _Translator:
    def __init__(self, graph: _Graph):
        self.g = graph

    # values: a _Const or the name of an ONNX tensor
    def name_of(self, v) -> str:
        if not isinstance(v, _Const):
            return v
        if v.name is None:
            v.name = self.g.const(v.value)
        return v.name

    def run(self, jaxpr, consts, args) -> list:
        env: dict = {}

        def read(var):
            if isinstance(var, Literal):
                return _Const(np.asarray(var.val, dtype=var.aval.dtype))
            return env[var]

        for var, value in zip(jaxpr.constvars, consts, strict=True):
            env[var] = value
        for var, value in zip(jaxpr.invars, args, strict=True):
            env[var] = value
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            outs = self.equation(eqn, ins)
            for var, value in zip(eqn.outvars, outs, strict=True):
                env[var] = value
        return [read(v) for v in jaxpr.outvars]

    def equation(self, eqn, ins) -> list:
        name = eqn.primitive.name
        if name == "scan":
            return self.scan(eqn, ins)
        if name in _CALLS:
            return self.call(eqn, ins)
        if name != "dim_as_value" and all(isinstance(v, _Const) for v in ins) and all(
                _is_static(v.aval) for v in eqn.outvars):
            out = eqn.primitive.bind(*[v.value for v in ins], **eqn.params)
            return [_Const(o) for o in (out if eqn.primitive.multiple_results else [out])]
        rule = _RULES.get(name)
        if rule is None:
            raise NotImplementedError(
                f"ONNX export: primitive {name!r} is not translated ({eqn}); supported: "
                f"{', '.join(sorted(set(_RULES) | set(_CALLS) | {'scan'}))}")
        out = rule(self, eqn, [self.name_of(v) if not isinstance(v, _Const) or name not in
                               _KEEP_CONST else v for v in ins])
        return out if isinstance(out, list) else [out]

    def call(self, eqn, ins) -> list:
        closed = next(p for k, p in eqn.params.items()
                      if k in ("jaxpr", "call_jaxpr", "fun_jaxpr") and p is not None)
        jaxpr, consts = (closed.jaxpr, closed.consts) if hasattr(closed, "consts") else (closed,
                                                                                          [])
        return self.run(jaxpr, [_Const(c) for c in consts], ins)

    def scan(self, eqn, ins) -> list:
        p = eqn.params
        n_c, n_carry = p["num_consts"], p["num_carry"]
        consts, carry, xs = ins[:n_c], list(ins[n_c:n_c + n_carry]), ins[n_c + n_carry:]
        body = p["jaxpr"]
        ys_steps = []
        order = range(p["length"] - 1, -1, -1) if p["reverse"] else range(p["length"])
        for i in order:
            x_i = [_Const(x.value[i]) if isinstance(x, _Const) else
                   self.g.op("Gather", [x, self.g.const(np.array(i, np.int64))], axis=0)
                   for x in xs]
            out = self.run(body.jaxpr, [_Const(c) for c in body.consts], consts + carry + x_i)
            carry, ys = out[:n_carry], out[n_carry:]
            ys_steps.append(ys)
        if p["reverse"]:
            ys_steps.reverse()
        stacked = []
        for k in range(len(eqn.outvars) - n_carry):
            parts = [self.g.op("Unsqueeze", [self.name_of(step[k]),
                                             self.g.const(np.array([0], np.int64))])
                     for step in ys_steps]
            stacked.append(self.g.op("Concat", parts, axis=0))
        return carry + stacked


# rules that need their indices (or, for convolutions, the kernel to lay out) as values
_KEEP_CONST = {"gather", "scatter", "dynamic_slice", "conv_general_dilated"}
_RULES: dict[str, Callable] = {}


def _rule(*names):
    def register(fn):
        for n in names:
            _RULES[n] = fn
        return fn
    return register


_LOGICAL = ("and", "or", "xor", "not")


def _elementwise(op: str):
    def rule(t, eqn, ins):
        if eqn.primitive.name in _LOGICAL and eqn.invars[0].aval.dtype != np.bool_:
            raise NotImplementedError(f"ONNX export: bitwise {eqn.primitive.name} on "
                                      f"{eqn.invars[0].aval.dtype} (only booleans) ({eqn})")
        return t.g.op(op, ins)
    return rule


for _name, _op in {**_BINARY, **_UNARY}.items():
    _RULES[_name] = _elementwise(_op)


@_rule("ne")
def _ne(t, eqn, ins):
    return t.g.op("Not", [t.g.op("Equal", ins)])


@_rule("rsqrt")
def _rsqrt(t, eqn, ins):
    return t.g.op("Reciprocal", [t.g.op("Sqrt", ins)])


@_rule("log1p", "expm1", "erfc", "square")
def _composite(t, eqn, ins):
    x, one = ins[0], t.g.const(np.ones((), eqn.invars[0].aval.dtype))
    name = eqn.primitive.name
    if name == "erfc":  # 1 - erf: absolute accuracy only (erfc(5) = 1.5e-12 comes out as 0)
        return t.g.op("Sub", [one, t.g.op("Erf", ins)])
    if name in ("log1p", "expm1"):
        # accurate near 0 (Goldberg / Kahan): log1p x = log(u) x / (u - 1) with u = 1 + x, and
        # expm1 x = (u - 1) x / log(u) with u = exp(x); x itself where u rounds to 1
        u = t.g.op("Add", [x, one]) if name == "log1p" else t.g.op("Exp", [x])
        um1, log_u = t.g.op("Sub", [u, one]), t.g.op("Log", [u])
        ratio = (t.g.op("Div", [t.g.op("Mul", [log_u, x]), um1]) if name == "log1p"
                 else t.g.op("Div", [t.g.op("Mul", [um1, x]), log_u]))
        if name == "expm1":  # exp overflows or underflows: exp(x) - 1 itself
            big = t.g.op("Greater", [t.g.op("Abs", [x]), t.g.const(np.array(20, np.float32)
                                                                   .astype(eqn.invars[0].aval.dtype))])
            ratio = t.g.op("Where", [big, um1, ratio])
        return t.g.op("Where", [t.g.op("Equal", [u, one]), x, ratio])
    return t.g.op("Mul", [x, x])


@_rule("integer_pow")
def _integer_pow(t, eqn, ins):
    y = eqn.params["y"]
    if y == 0:  # ones of x's shape
        return t.g.op("Pow", [ins[0], t.g.const(np.zeros((), eqn.invars[0].aval.dtype))])
    out, base, n = None, ins[0], abs(y)
    while n:  # exponentiation by squaring, as XLA does
        if n & 1:
            out = base if out is None else t.g.op("Mul", [out, base])
        n >>= 1
        if n:
            base = t.g.op("Mul", [base, base])
    return t.g.op("Reciprocal", [out]) if y < 0 else out


@_rule("select_n")
def _select_n(t, eqn, ins):
    pred, cases = ins[0], ins[1:]
    if eqn.invars[0].aval.dtype == np.bool_:
        return t.g.op("Where", [pred, cases[1], cases[0]])
    out = cases[0]
    for k in range(1, len(cases)):
        is_k = t.g.op("Equal", [pred, t.g.const(np.array(k, eqn.invars[0].aval.dtype))])
        out = t.g.op("Where", [is_k, cases[k], out])
    return out


@_rule("convert_element_type")
def _convert(t, eqn, ins):
    to = helper.np_dtype_to_tensor_dtype(np.dtype(eqn.params["new_dtype"]))
    return t.g.op("Cast", ins, to=to)


@_rule("broadcast_in_dim")
def _broadcast(t, eqn, ins):
    shape, kept = eqn.params["shape"], eqn.params["broadcast_dimensions"]
    new_axes = [a for a in range(len(shape)) if a not in kept]
    x = ins[0]
    if new_axes:
        x = t.g.op("Unsqueeze", [x, t.g.const(np.array(new_axes, np.int64))])
    return t.g.op("Expand", [x, t.g.shape(shape)])


@_rule("reshape")
def _reshape(t, eqn, ins):
    if eqn.params.get("dimensions") is not None:
        raise NotImplementedError("ONNX export: reshape with a dimension order")
    return t.g.op("Reshape", [ins[0], t.g.shape(eqn.params["new_sizes"])])


@_rule("squeeze")
def _squeeze(t, eqn, ins):
    return t.g.op("Squeeze", [ins[0], t.g.const(np.array(eqn.params["dimensions"], np.int64))])


@_rule("transpose")
def _transpose(t, eqn, ins):
    return t.g.op("Transpose", ins, perm=list(eqn.params["permutation"]))


@_rule("slice")
def _slice(t, eqn, ins):
    p = eqn.params
    rank = len(p["start_indices"])
    strides = p["strides"] or (1,) * rank
    ends = t.g.op("Concat", [t.g.dim(d) for d in p["limit_indices"]], axis=0)
    return t.g.op("Slice", [ins[0], t.g.const(np.array(p["start_indices"], np.int64)), ends,
                            t.g.const(np.arange(rank, dtype=np.int64)),
                            t.g.const(np.array(strides, np.int64))])


@_rule("dynamic_slice")
def _dynamic_slice(t, eqn, ins):
    x, starts = ins[0], ins[1:]
    if not all(isinstance(v, _Const) for v in starts):
        raise NotImplementedError(f"ONNX export: dynamic_slice at computed offsets ({eqn})")
    shape, sizes = eqn.invars[0].aval.shape, eqn.params["slice_sizes"]
    if any(not _known(shape[a]) and sizes[a] != shape[a] for a in range(len(shape))):
        raise NotImplementedError(f"ONNX export: dynamic_slice of part of a symbolic axis ({eqn})")
    # jax clamps each start into [0, dim - size]; a symbolic axis is taken whole (start 0)
    lo = [0 if sizes[a] == shape[a] else int(np.clip(int(starts[a].value), 0, shape[a] - sizes[a]))
          for a in range(len(shape))]
    ends = t.g.op("Concat", [t.g.dim(d) if lo[a] == 0 and sizes[a] == shape[a]
                             else t.g.dim(lo[a] + sizes[a]) for a, d in enumerate(shape)], axis=0)
    return t.g.op("Slice", [t.name_of(x), t.g.const(np.array(lo, np.int64)), ends,
                            t.g.const(np.arange(len(shape), dtype=np.int64))])


@_rule("dim_as_value")
def _dim_as_value(t, eqn, ins):
    d = t.g.op("Squeeze", [t.g.dim(eqn.params["dim"]), t.g.const(np.array([0], np.int64))])
    return t.g.op("Cast", [d], to=helper.np_dtype_to_tensor_dtype(
        np.dtype(eqn.outvars[0].aval.dtype)))


@_rule("clamp")
def _clamp(t, eqn, ins):
    lo, x, hi = ins
    return t.g.op("Min", [t.g.op("Max", [x, lo]), hi])


@_rule("argmax", "argmin")
def _argmax(t, eqn, ins):
    (axis,) = eqn.params["axes"]
    op = "ArgMax" if eqn.primitive.name == "argmax" else "ArgMin"
    idx = t.g.op(op, ins, axis=int(axis), keepdims=0)   # the first extreme, as jax
    return t.g.op("Cast", [idx], to=helper.np_dtype_to_tensor_dtype(
        np.dtype(eqn.params["index_dtype"])))


@_rule("conv_general_dilated")
def _conv(t, eqn, ins):
    p = eqn.params
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    if any(d != 1 for d in p["lhs_dilation"]) or p["batch_group_count"] != 1:
        raise NotImplementedError(f"ONNX export: transposed or batch-grouped convolution ({eqn})")
    x = t.g.op("Transpose", [t.name_of(ins[0])], perm=list(lhs_spec))    # N, C, spatial...
    w = ins[1]
    w = (t.g.const(np.transpose(w.value, rhs_spec)) if isinstance(w, _Const)
         else t.g.op("Transpose", [w], perm=list(rhs_spec)))            # O, I / groups, k...
    pads = [lo for lo, _ in p["padding"]] + [hi for _, hi in p["padding"]]
    y = t.g.op("Conv", [x, w], strides=list(p["window_strides"]), pads=pads,
               dilations=list(p["rhs_dilation"]), group=int(p["feature_group_count"]))
    return t.g.op("Transpose", [y], perm=list(np.argsort(out_spec)))  # back to jax's layout


@_rule("reduce_window_max", "reduce_window_sum")
def _pool(t, eqn, ins):
    p = eqn.params
    window, strides, padding = p["window_dimensions"], p["window_strides"], p["padding"]
    plain = [a for a in range(len(window)) if window[a] == 1 and strides[a] == 1
             and tuple(padding[a]) == (0, 0)]
    if len(plain) < 2 or any(d != 1 for d in (*p["base_dilation"], *p["window_dilation"])):
        raise NotImplementedError(f"ONNX export: a pooling window over all but one axis or "
                                  f"dilated ({eqn})")
    perm = plain[:2] + [a for a in range(len(window)) if a not in plain[:2]]
    x = t.g.op("Transpose", ins, perm=perm)
    spatial = perm[2:]
    attrs = dict(kernel_shape=[window[a] for a in spatial], strides=[strides[a] for a in spatial],
                 pads=[padding[a][0] for a in spatial] + [padding[a][1] for a in spatial])
    if eqn.primitive.name == "reduce_window_max":  # padding counts as -inf, as in jax
        y = t.g.op("MaxPool", [x], **attrs)
    else:  # the sum: the mean over the window, zero padding included, times its size
        y = t.g.op("Mul", [t.g.op("AveragePool", [x], count_include_pad=1, **attrs),
                           t.g.const(np.array(np.prod(window), eqn.invars[0].aval.dtype))])
    return t.g.op("Transpose", [y], perm=list(np.argsort(perm)))


@_rule("pad")
def _pad(t, eqn, ins):
    config = eqn.params["padding_config"]
    if any(interior for _, _, interior in config):
        raise NotImplementedError(f"ONNX export: interior padding ({eqn})")
    pads = [lo for lo, _, _ in config] + [hi for _, hi, _ in config]
    return t.g.op("Pad", [ins[0], t.g.const(np.array(pads, np.int64)), ins[1]], mode="constant")


@_rule("concatenate")
def _concatenate(t, eqn, ins):
    return t.g.op("Concat", ins, axis=eqn.params["dimension"])


@_rule("stack")
def _stack(t, eqn, ins):
    axis = t.g.const(np.array([eqn.params["axis"]], np.int64))
    return t.g.op("Concat", [t.g.op("Unsqueeze", [x, axis]) for x in ins],
                  axis=eqn.params["axis"])


@_rule("split")
def _split(t, eqn, ins):
    sizes = t.g.const(np.array(eqn.params["sizes"], np.int64))
    return list(np.atleast_1d(t.g.op("Split", [ins[0], sizes], n_out=len(eqn.params["sizes"]),
                                     axis=eqn.params["axis"])))


@_rule("dot_general")
def _dot_general(t, eqn, ins):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lr, rr = len(eqn.invars[0].aval.shape), len(eqn.invars[1].aval.shape)
    letters = iter(string.ascii_letters)
    lhs = [next(letters) for _ in range(lr)]
    rhs = [next(letters) for _ in range(rr)]
    for a, b in zip(lc, rc, strict=True):
        rhs[b] = lhs[a]
    for a, b in zip(lb, rb, strict=True):
        rhs[b] = lhs[a]
    out = ([lhs[a] for a in lb] + [lhs[a] for a in range(lr) if a not in lc and a not in lb]
           + [rhs[b] for b in range(rr) if b not in rc and b not in rb])
    return t.g.op("Einsum", ins, equation=f"{''.join(lhs)},{''.join(rhs)}->{''.join(out)}")


def _reduce(t, eqn, ins):
    axes = list(eqn.params["axes"])
    if not axes:  # ONNX reads "no axes" as "every axis"
        return t.g.op("Identity", ins)
    op = _REDUCE[eqn.primitive.name]
    if op == "ReduceSum":
        return t.g.op(op, [ins[0], t.g.const(np.array(axes, np.int64))], keepdims=0)
    return t.g.op(op, ins, axes=axes, keepdims=0)


for _name in _REDUCE:
    _RULES[_name] = _reduce


def _flatten_axes(t, x, shape, front: Sequence[int]) -> tuple[str, list]:
    """``x`` with axes ``front`` moved first and merged into one: ``[prod, rest...]``."""
    rest = [a for a in range(len(shape)) if a not in front]
    x = t.g.op("Transpose", [x], perm=list(front) + rest)
    size = int(np.prod([shape[a] for a in front]))
    return t.g.op("Reshape", [x, t.g.shape([size] + [shape[a] for a in rest])]), rest


@_rule("gather")
def _gather(t, eqn, ins):
    operand, indices = ins
    dn, p = eqn.params["dimension_numbers"], eqn.params
    shape = eqn.invars[0].aval.shape
    if not isinstance(indices, _Const) or dn.operand_batching_dims:
        raise NotImplementedError("ONNX export: gather with computed indices or batching dims "
                                  f"({eqn})")
    operand = t.name_of(operand)
    keys = list(dn.start_index_map)
    if not all(_known(shape[a]) for a in keys):
        raise NotImplementedError(f"ONNX export: gather along a symbolic axis ({eqn})")
    sizes = [p["slice_sizes"][a] for a in keys]
    partial = [a for a in range(len(shape)) if a not in keys and p["slice_sizes"][a] != shape[a]]
    if partial:
        raise NotImplementedError(f"ONNX export: gather of part of axes {partial} ({eqn})")
    starts = indices.value.reshape(-1, len(keys)).astype(np.int64)
    limit = np.array([shape[a] for a in keys]) - np.array(sizes)
    if p["mode"] == jax.lax.GatherScatterMode.FILL_OR_DROP and (
            np.any(starts < 0) or np.any(starts > limit)):
        raise NotImplementedError(f"ONNX export: gather out of bounds with a fill value ({eqn})")
    starts = np.clip(starts, 0, limit)  # CLIP (and what PROMISE_IN_BOUNDS promises)
    window = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), -1)
    coords = starts[:, None, :] + window.reshape(1, -1, len(keys))  # [N, W, K]
    flat = np.ravel_multi_index(tuple(np.moveaxis(coords, -1, 0)), [shape[a] for a in keys])
    flat = flat.reshape(indices.value.shape[:-1] + tuple(sizes))
    x, rest = _flatten_axes(t, operand, shape, keys)
    x = t.g.op("Gather", [x, t.g.const(flat)], axis=0)  # [batch..., sizes..., rest...]
    n_batch = indices.value.ndim - 1
    collapsed = [n_batch + i for i, a in enumerate(keys) if a in dn.collapsed_slice_dims]
    if collapsed:
        x = t.g.op("Squeeze", [x, t.g.const(np.array(collapsed, np.int64))])
    # now [batch..., kept keys..., rest...]; jax puts the slice axes (operand order) at
    # offset_dims and the batch axes elsewhere, in order
    kept = [a for a in keys if a not in dn.collapsed_slice_dims]
    slice_axes = sorted(kept + rest)
    current = [("b", i) for i in range(n_batch)] + [("s", a) for a in kept + rest]
    offsets = dict(zip(dn.offset_dims, slice_axes, strict=True))
    n_out = n_batch + len(slice_axes)
    batch = iter(range(n_batch))
    target = [("s", offsets[i]) if i in offsets else ("b", next(batch)) for i in range(n_out)]
    perm = [current.index(k) for k in target]
    return x if perm == list(range(n_out)) else t.g.op("Transpose", [x], perm=perm)


@_rule("scatter")
def _scatter(t, eqn, ins):
    operand, indices, updates = ins
    dn = eqn.params["dimension_numbers"]
    shape, ushape = eqn.invars[0].aval.shape, eqn.invars[2].aval.shape
    keys = list(dn.scatter_dims_to_operand_dims)
    if (not isinstance(indices, _Const) or sorted(keys) != sorted(dn.inserted_window_dims)
            or dn.operand_batching_dims or eqn.params.get("update_jaxpr") is not None):
        raise NotImplementedError("ONNX export: only scatter (set) of whole slices at constant "
                                  f"indices is translated ({eqn})")
    operand, updates = t.name_of(operand), t.name_of(updates)
    dims = [shape[a] for a in keys]
    starts = indices.value.reshape(-1, len(keys)).astype(np.int64)
    if eqn.params["mode"] != jax.lax.GatherScatterMode.FILL_OR_DROP:
        starts = np.clip(starts, 0, np.array(dims) - 1)  # CLIP; PROMISE_IN_BOUNDS alike
    valid = np.all((starts >= 0) & (starts < np.array(dims)), axis=1)  # FILL_OR_DROP drops
    size = int(np.prod(dims))
    source = np.arange(size)
    for n in np.flatnonzero(valid):  # the last update to a position wins, as in XLA on CPU
        source[np.ravel_multi_index(tuple(starts[n]), dims)] = size + n
    x, rest = _flatten_axes(t, operand, shape, keys)
    u_batch = [a for a in range(len(ushape)) if a not in dn.update_window_dims]
    u, _ = _flatten_axes(t, updates, ushape, u_batch)
    x = t.g.op("Gather", [t.g.op("Concat", [x, u], axis=0), t.g.const(source)], axis=0)
    x = t.g.op("Reshape", [x, t.g.shape(dims + [shape[a] for a in rest])])
    current = keys + rest
    return t.g.op("Transpose", [x], perm=[current.index(a) for a in range(len(shape))])


def _value_info(name: str, aval) -> Any:
    dims = [d if _known(d) else str(d) for d in aval.shape]
    return helper.make_tensor_value_info(
        name, helper.np_dtype_to_tensor_dtype(np.dtype(aval.dtype)), dims)


def to_onnx(fn: Callable, *specs: jax.ShapeDtypeStruct, input_names: Sequence[str] = (),
            output_names: Sequence[str] = (), doc: str = "") -> onnx.ModelProto:
    """The ONNX model of ``fn`` on inputs ``specs`` (module docstring: what is translated).

    Symbolic dimensions of ``specs`` become named dynamic dimensions of the ONNX inputs; every
    other shape is fixed. Raises ``NotImplementedError`` naming the first primitive (and its
    equation) that is not translated, before anything is written.
    """
    _require_onnx()
    closed = jax.make_jaxpr(fn)(*specs)
    jaxpr = closed.jaxpr
    input_names = list(input_names) or [f"input_{i}" for i in range(len(jaxpr.invars))]
    if len(input_names) != len(jaxpr.invars):
        raise ValueError(f"{len(input_names)} input names for {len(jaxpr.invars)} inputs")
    graph = _Graph()
    for name, var in zip(input_names, jaxpr.invars, strict=True):
        for axis, d in enumerate(var.aval.shape):
            if not _known(d) and str(d) not in graph.dims:
                graph.dims[str(d)] = graph.op("Shape", [name], start=axis, end=axis + 1)
    outs = _Translator(graph).run(jaxpr, [_Const(c) for c in closed.consts], input_names)
    output_names = list(output_names) or [f"output_{i}" for i in range(len(outs))]
    if len(output_names) != len(outs):
        raise ValueError(f"{len(output_names)} output names for {len(outs)} outputs")
    for name, value in zip(output_names, outs, strict=True):
        graph.nodes.append(helper.make_node("Identity", [_Translator(graph).name_of(value)],
                                            [name]))
    g = helper.make_graph(
        graph.nodes, "jax_function",
        [_value_info(n, v.aval) for n, v in zip(input_names, jaxpr.invars, strict=True)],
        [_value_info(n, v.aval) for n, v in zip(output_names, jaxpr.outvars, strict=True)],
        initializer=graph.initializers, doc_string=doc)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="condensation")
    model.ir_version = 8  # onnxruntime >= 1.14 and most C++ runtimes read IR 8 / opset 17
    onnx.checker.check_model(model)
    return model
