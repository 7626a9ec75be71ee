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

    python scripts/publish.py RUN_DIR results/cifar10/converged/original --original-only \
        --command "python -m experiments.run +exp=cifar10_converged seed=0 reduce=condense"

``--original-only`` publishes a run's trained original as soon as it is recorded (the
``original`` event of metrics.jsonl, networks/original), before or without its reductions: a
network that takes most of a session to train, so that later sessions can reduce it with
``reduce.original=DEST/networks/original``. It writes config.yaml, networks/original, the log
up to that event (metrics.jsonl), ``original.json`` (the original's metrics, epoch, seed, the
commits of the processes that trained it, the wall time summed over them, each from its
``start``/``resume`` event to its last event, and the machine), ``training.png`` (the per-epoch
losses and validation metric) and RUN.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

FILES = ("summary.json", "curve.csv", "size_vs_metric.png", "config.yaml", "metrics.jsonl")
ORIGINAL = ("config.yaml", "networks/original/network.json", "networks/original/variables.npz")
PROCESS = ("start", "resume")  # the events that begin a process's part of metrics.jsonl


def original_record(run: Path) -> tuple[list[str], list[dict], dict]:
    """The lines of ``run/metrics.jsonl`` up to its last ``original`` event; the events of the
    processes that trained that original (from the ``start`` before its ``init`` on: a log may
    hold an earlier attempt before); and a record: the original's metrics, those processes'
    commits, the last one's machine (None in logs older than the field) and their wall time,
    each process counted from its ``start``/``resume`` event to its last event. ValueError when
    no original is recorded or this run did not train its own (it started from
    ``reduce.original``)."""
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines()
    events = [json.loads(line) for line in lines]
    kinds = [e.get("event") for e in events]
    if "original" not in kinds:
        raise ValueError(f"{path} has no 'original' event: the original is not trained and "
                         "recorded yet")
    end = len(kinds) - 1 - kinds[::-1].index("original")
    inits = [i for i in range(end) if kinds[i] == "init"]
    if not inits:
        raise ValueError(f"{path}: this run did not train its original (no 'init' event before "
                         "it: it started from reduce.original); publish the run that trained it")
    begin = max(i for i in range(inits[-1] + 1) if kinds[i] == "start")
    wall, processes, began, last = 0.0, [], 0.0, 0.0
    for e in events[begin:end + 1]:
        if e.get("event") in PROCESS:
            wall += last - began if processes else 0.0  # the process before ended at its last event
            began = e["time"]
            processes.append(e)
        last = e["time"]
    wall += last - began
    original = {k: v for k, v in events[end].items() if k not in ("time", "event")}
    return lines[:end + 1], events[begin:end + 1], {"original": original,
                                                    "commits": [p.get("commit") for p in processes],
                                                    "machine": processes[-1].get("machine"),
                                                    "wall_time_s": round(wall, 1)}


def plot_training(events: list[dict], metric: str, path: Path) -> None:
    """Per training epoch: the training and validation losses, and the validation metric."""
    from condensation.plots import save_figure, subplots

    # an epoch logged twice (a process killed after it, before its checkpoint): the later one
    epochs = sorted({e["epoch"]: e for e in events
                     if e.get("event") == "epoch" and e.get("phase") == "train"}.values(),
                    key=lambda e: e["epoch"])
    xs = [e["epoch"] for e in epochs]
    fig, (ax, ax2) = subplots(1, 2, figsize=(10, 3.8))
    ax.plot(xs, [e["train_loss"] for e in epochs], label="training (on augmented batches)")
    ax.plot(xs, [e["val_loss"] for e in epochs], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax2.plot(xs, [e[f"val_{metric}"] for e in epochs], color="tab:orange")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel(f"validation {metric}")
    ax2.grid(alpha=0.3)
    fig.suptitle("training the original", fontsize=10)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
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
    ap.add_argument("--original-only", action="store_true",
                    help="publish the trained original alone, once it is recorded (see above)")
    args = ap.parse_args(argv)
    run, dest = args.run_dir, args.dest
    if args.original_only:
        return publish_original(run, dest, args.command, args.max_mb)
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
    if too_big_refused(sources, args.max_mb):
        return 2
    tmp = staged(run, dest, sources)
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
    swap_in(tmp, dest)
    checker = Path(__file__).resolve().parents[2] / "shared" / "tools" / "check-results"
    if checker.exists():
        return subprocess.run([sys.executable, str(checker), str(dest)]).returncode
    print(f"published {dest}")
    return 0


def publish_original(run: Path, dest: Path, command: str, max_mb: float) -> int:
    missing = [f for f in (*ORIGINAL, "metrics.jsonl") if not (run / f).is_file()]
    if missing:
        print(f"error: {run} has no recorded original (missing {', '.join(missing)})", file=sys.stderr)
        return 2
    saved = json.loads((run / "networks" / "original" / "network.json").read_text()).get("metrics", {})
    try:
        lines, events, record = original_record(run)
        o = record["original"]
        if (o.get("test"), o.get("epoch")) != (saved.get("test"), saved.get("epoch")):
            raise ValueError(f"{run}/networks/original is not the network of the log's last "
                             f"'original' event (test {saved.get('test')} at epoch "
                             f"{saved.get('epoch')}, the log: {o.get('test')} at {o.get('epoch')})")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sources = [run / f for f in ORIGINAL]
    if too_big_refused(sources, max_mb):
        return 2
    import yaml

    from condensation.provenance import machine

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    # the task's metric: a training epoch's validation entry besides the loss, else the loss
    metric = next((k[4:] for e in events if e.get("event") == "epoch" for k in e
                   if k.startswith("val_") and k != "val_loss"), "loss")
    if record["machine"] is None:  # a log older than the field: say whose it is
        record["machine"] = f"{machine()} (of the publishing process: the log records none)"
    record = {"experiment": cfg.get("name"), "metric": f"test_{metric}", "seed": cfg["seed"], **record}
    try:
        shown = dest.resolve().relative_to(Path.cwd())
    except ValueError:
        shown = dest.resolve()
    tmp = staged(run, dest, sources)
    (tmp / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (tmp / "original.json").write_text(json.dumps(record, indent=2) + "\n")
    plot_training(events, metric, tmp / "training.png")
    o, wall = record["original"], record["wall_time_s"]
    (tmp / "RUN.md").write_text(
        f"# {record['experiment']}: the trained original, how it was produced\n\n"
        "The training phase of this command, published at its `original` event (what the "
        "command does after it, reducing the network, is not part of this folder):\n\n"
        f"    {command}\n\n"
        f"- test {metric} {o['test']:.4f}, validation {o['val']:.4f}, {o['params']:,} parameters, "
        f"the network of epoch {o.get('epoch')}\n"
        f"- seed: {record['seed']}\n- commits: {', '.join(map(str, record['commits']))}\n"
        f"- wall time: {wall:.0f} s ({wall / 3600:.2f} h), summed over its processes\n"
        f"- machine: {record['machine']}\n"
        "- resolved config: config.yaml; per-epoch log: metrics.jsonl (to the original); "
        "training.png; original.json\n"
        f"- reduce it: `reduce.original={shown / 'networks' / 'original'}`\n"
    )
    swap_in(tmp, dest)
    print(f"published {dest}")
    return 0


def too_big_refused(sources: list[Path], max_mb: float) -> bool:
    too_big = [p for p in sources if p.stat().st_size > max_mb * 2**20]
    if too_big:
        print(f"error: larger than {max_mb} MB: {', '.join(map(str, too_big))}", file=sys.stderr)
    return bool(too_big)


def staged(run: Path, dest: Path, sources: list[Path]) -> Path:
    """A fresh temporary folder beside ``dest`` with ``sources`` copied in (paths kept)."""
    tmp = dest.with_name(f".{dest.name}.publishing")
    shutil.rmtree(tmp, ignore_errors=True)
    for src in sources:
        target = tmp / src.relative_to(run)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return tmp


def swap_in(tmp: Path, dest: Path) -> None:
    """Replace ``dest`` by ``tmp`` whole: a reader never sees half of one and half of another."""
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
