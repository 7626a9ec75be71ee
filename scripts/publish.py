"""Publish a finished run directory into results/<exp>/ (the results contract, no checkpoints).

    python scripts/publish.py RUN_DIR results/combustion \
        --command "python -m experiments.run +exp=combustion_paper"

Copies summary.json, curve.csv, size_vs_metric.png, config.yaml, metrics.jsonl and every other
figure (*.png) of the run, the exported surrogates (surrogate/) when present, with
``--networks`` the original and reduced networks (networks/{original,reduced}: network.json +
variables.npz, evaluable with ``python -m experiments.evaluate checkpoint=DEST/networks/...``;
``--original-at DIR`` leaves the original out when it is published there already),
and writes RUN.md: the command, seed, commit, wall time and machine. Files larger than
--max-mb are refused (networks are published only when small).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

FILES = ("summary.json", "curve.csv", "size_vs_metric.png", "config.yaml", "metrics.jsonl")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--command", required=True, help="the command that produced the run")
    ap.add_argument("--max-mb", type=float, default=40.0)
    ap.add_argument("--networks", action="store_true",
                    help="also publish networks/original and networks/reduced")
    ap.add_argument("--original-at", type=Path, default=None,
                    help="the original network is published already in this folder (a run that "
                         "reduced it with reduce.original): leave its copies out, say where it is")
    args = ap.parse_args()
    run, dest = args.run_dir, args.dest
    missing = [f for f in FILES if not (run / f).is_file()]
    if missing:
        print(f"error: {run} is not a finished run (missing {', '.join(missing)})", file=sys.stderr)
        return 2
    sources = [run / f for f in FILES] + sorted(p for p in run.glob("*.png") if p.name not in FILES)
    if (run / "surrogate").is_dir():
        sources += sorted(p for p in (run / "surrogate").rglob("*") if p.is_file())
    if args.networks:
        sources += [run / "networks" / w / f for w in ("original", "reduced")
                    for f in ("network.json", "variables.npz")]
    if args.original_at is not None:
        sources = [p for p in sources if "original" not in p.relative_to(run).parts]
    too_big = [p for p in sources if p.stat().st_size > args.max_mb * 2**20]
    if too_big:
        print(f"error: larger than {args.max_mb} MB: {', '.join(map(str, too_big))}", file=sys.stderr)
        return 2
    tmp = dest.with_name(f".{dest.name}.publishing")
    shutil.rmtree(tmp, ignore_errors=True)
    for src in sources:
        target = tmp / src.relative_to(run)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    s = json.loads((run / "summary.json").read_text())
    (tmp / "RUN.md").write_text(
        f"# {s.get('experiment', dest.name)}: how this was produced\n\n"
        f"    {args.command}\n\n"
        f"- seed: {s['seed']}\n- commit: {s['commit']}\n"
        f"- wall time: {s['wall_time_s']:.0f} s ({s['wall_time_s'] / 3600:.2f} h), "
        "summed over resumed sessions\n"
        f"- machine: {s['machine']}\n- resolved config: config.yaml; per-epoch log: metrics.jsonl\n"
        + (f"- the original network: {args.original_at} (not copied here)\n"
           if args.original_at is not None else "")
    )
    # swap in the new folder whole: a reader never sees half of one and half of another
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    checker = Path(__file__).resolve().parents[2] / "shared" / "tools" / "check-results"
    if checker.exists():
        return subprocess.run([sys.executable, str(checker), str(dest)]).returncode
    print(f"published {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
