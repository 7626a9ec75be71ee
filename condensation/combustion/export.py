"""A surrogate's step for codes outside Python: StableHLO through ``jax.export``, or ONNX.

``export_stablehlo(surrogate, path)`` writes ``path`` (the serialized ``jax.export`` artifact:
the whole ``step`` with the weights, the normalization, Box-Cox and the element / enthalpy
projections inside, batch size symbolic) and ``path.json`` (species order, dt, units, the
training envelope). Inputs T [B] K, P [B] Pa, Y [B, ns] float32; outputs T, Y one dt later.

``export_onnx(surrogate, path)`` writes the same step as an ONNX model (opset 17, inputs ``T``,
``P``, ``Y`` with a dynamic batch ``b``, outputs ``T_next``, ``Y_next``) translated from its
jaxpr by :mod:`condensation.jaxpr_onnx`; the element projection's 4x4 solves are unrolled
(``chem.solve_small``, equal to the LU solve to rounding) because ONNX has no linear solve.

The envelope guard of :meth:`Surrogate.step` runs on the host and is not in the graph: a caller
checks its states against ``path.json``'s ``envelope`` (cold states frozen, others to its own
chemistry solver).

In Python, ``load_stablehlo(path)`` gives a callable (``jax.export.deserialize`` underneath; no
condensation code or Flax needed beyond this module). From C++, the serialized module is run by
a PJRT plugin (the XLA CPU client: ``jax.export`` documents the format, ``Exported.mlir_module``
is the StableHLO text that IREE or XLA compile). ``load_onnx(path)`` runs the ONNX model with
onnxruntime; from C++ it is an ``Ort::Session`` on the file, fed float32 ``T`` [B], ``P`` [B],
``Y`` [B, ns] (README).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from condensation import jaxpr_onnx
from condensation.combustion import surrogate as sur
from condensation.files import atomic_write_bytes, write_json

FORMATS = ("stablehlo", "onnx")


def _needs_flatbuffers() -> None:
    try:
        import flatbuffers  # noqa: F401
    except ImportError:
        raise ImportError("serializing a jax.export artifact needs flatbuffers: "
                          "pip install -e '.[export]'") from None


def describe(s: sur.Surrogate) -> dict[str, Any]:
    return {"inputs": {"T": "[B] K, float32", "P": "[B] Pa, float32",
                       "Y": f"[B, {len(s.species)}] mass fractions, float32"},
            "outputs": {"T": "[B] K one dt later", "Y": "[B, ns] one dt later"},
            "species": list(s.species), "dt": s.dt, "mechanism": s.mechanism_name,
            "conserve": s.conserve, "envelope": s.envelope,
            "guard": "not in the graph: freeze states below envelope T, give other states "
                     "outside the envelope to another solver"}


def _specs(s: sur.Surrogate):
    (b,) = jax.export.symbolic_shape("b")
    return (jax.ShapeDtypeStruct((b,), jnp.float32), jax.ShapeDtypeStruct((b,), jnp.float32),
            jax.ShapeDtypeStruct((b, len(s.species)), jnp.float32))


def export_stablehlo(s: sur.Surrogate, path: str | os.PathLike) -> Path:
    """Write the step as a serialized ``jax.export`` (symbolic batch) and its description."""
    _needs_flatbuffers()
    path = Path(path)
    variables = s.variables

    def step(T, P, Y):
        return sur._step(s, variables, T, P, Y)

    exported = jax.export.export(jax.jit(step))(*_specs(s))
    atomic_write_bytes(path, bytes(exported.serialize()))
    write_json(path.with_name(path.name + ".json"), {"format": "stablehlo (jax.export)",
                                                     **describe(s)})
    return path


def load_stablehlo(path: str | os.PathLike):
    """``step(T, P, Y) -> (T, Y)`` from a file written by :func:`export_stablehlo`."""
    _needs_flatbuffers()
    exported = jax.export.deserialize(bytearray(Path(path).read_bytes()))

    def step(T, P, Y):
        return exported.call(jnp.asarray(T, jnp.float32), jnp.asarray(P, jnp.float32),
                             jnp.asarray(Y, jnp.float32))

    step.description = json.loads(Path(str(path) + ".json").read_text())
    return step


def export_onnx(s: sur.Surrogate, path: str | os.PathLike) -> Path:
    """Write the step as an ONNX model (module docstring) and its description."""
    path = Path(path)
    unrolled = dataclasses.replace(s, solver="unrolled")

    def step(T, P, Y):
        return sur._step(unrolled, unrolled.variables, T, P, Y)

    model = jaxpr_onnx.to_onnx(step, *_specs(s), input_names=("T", "P", "Y"),
                               output_names=("T_next", "Y_next"),
                               doc=f"{s.mechanism_name} surrogate, one step of {s.dt} s")
    atomic_write_bytes(path, model.SerializeToString())
    write_json(path.with_name(path.name + ".json"), {
        "format": f"onnx (opset {jaxpr_onnx.OPSET})", **describe(s),
        "names": {"inputs": ["T", "P", "Y"], "outputs": ["T_next", "Y_next"]}})
    return path


def load_onnx(path: str | os.PathLike):
    """``step(T, P, Y) -> (T, Y)`` (numpy) running a file written by :func:`export_onnx` with
    onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("running an ONNX model needs onnxruntime: pip install -e '.[export]'"
                          ) from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def step(T, P, Y):
        T = np.asarray(T, np.float32)
        return tuple(session.run(None, {"T": T, "P": np.broadcast_to(
            np.asarray(P, np.float32), T.shape).copy(), "Y": np.asarray(Y, np.float32)}))

    step.description = json.loads(Path(str(path) + ".json").read_text())
    return step
