"""Export a combustion surrogate for a solver outside Python.

    python -m experiments.export checkpoint=DIR format=stablehlo|onnx out=FILE

DIR is an exported surrogate folder (``results/combustion/surrogate/reduced``). Writes FILE and
FILE.json (see :mod:`condensation.combustion.export`).
"""
from __future__ import annotations

import sys
from pathlib import Path

from condensation.combustion import load_surrogate
from condensation.combustion.export import FORMATS, export_onnx, export_stablehlo

USAGE = f"usage: python -m experiments.export checkpoint=DIR format={'|'.join(FORMATS)} out=FILE"


def main(argv: list[str]) -> int:
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    unknown = [a for a in argv if "=" not in a] + [k for k in args
                                                  if k not in ("checkpoint", "format", "out")]
    if unknown or not {"checkpoint", "out"} <= set(args):
        print(USAGE, file=sys.stderr)
        return 2
    fmt = args.get("format", "stablehlo")
    if fmt not in FORMATS:
        print(f"error: format={fmt!r}; allowed: {', '.join(FORMATS)}", file=sys.stderr)
        return 2
    try:
        s = load_surrogate(args["checkpoint"])
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = (export_onnx if fmt == "onnx" else export_stablehlo)(s, Path(args["out"]))
    print(f"{out} ({out.stat().st_size / 1e6:.1f} MB) and {out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
