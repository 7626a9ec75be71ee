"""The phenomenon condensation rests on, in figures: aligned input vectors after training from
small initialization, and not from standard initialization.

    python scripts/diagnostics.py RUN [--standard RUN] [--layer NAME] [--threshold 0.8] [--out DIR]

RUN is a condensation run directory (small initialization); ``--standard`` a run trained from
standard initialization, by default ``RUN/baselines/merge_standard_init`` (scripts/compare.py
makes it). Writes to ``--out`` (default ``results/<experiment>/diagnostics``):

- ``cosine.png``: for one hidden layer (``--layer``, default the layer condensation shrank the
  most), the unit-by-unit cosine similarity of the input vectors (BatchNorm folded, bias
  included) at initialization, after training and after reduction; one row per run. Units are
  ordered by their group at ``--threshold`` in the trained network (largest group first), the
  same order at initialization; the reduced network's units by their own groups.
- ``groups_vs_epoch.png``: each layer's number of groups at the tracked threshold
  (``train.track_groups_at``), as a fraction of its width, at initialization and after every
  training epoch, one panel per run (from metrics.jsonl; runs made before the tracking existed
  are skipped).
- ``diagnostics.json``: the numbers behind both (groups per matrix, the source runs), and every
  layer's groups at ``--threshold`` in each trained network (``trained_layers``).

The initial network is rebuilt from the run's seed exactly as experiments.run initialized it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from condensation.condense import assign_groups, cosine_similarity, input_vectors
from condensation.files import write_json
from condensation.network import input_shape_of
from condensation.plots import color_cycle, save_figure, subplots
from condensation.provenance import git_commit
from condensation.saved import load_network

ROOT = Path(__file__).resolve().parents[1]


def load_run(run: Path) -> dict[str, Any]:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    net, trained, _ = load_network(run / "networks" / "original")
    reduced_net, reduced, _ = load_network(run / "networks" / "reduced")
    shape = input_shape_of(net, trained)
    init = net.module().init(jax.random.PRNGKey(int(cfg["seed"])), jnp.zeros((1, *shape), jnp.float32))
    return {"dir": run, "cfg": cfg, "net": net, "reduced_net": reduced_net,
            "variables": {"initialization": init, "trained": trained, "reduced": reduced}}


def group_order(vectors: jax.Array, threshold: float) -> tuple[np.ndarray, int]:
    """Unit order by group (largest first, then by representative) and the number of groups."""
    assign = np.asarray(assign_groups(vectors, threshold))
    reps, sizes = np.unique(assign, return_counts=True)
    rank = {r: i for i, r in enumerate(reps[np.lexsort((reps, -sizes))])}
    return np.argsort([rank[a] for a in assign], kind="stable"), len(reps)


def pick_layer(run: dict[str, Any]) -> str:
    """The layer whose width condensation cut the most (relative)."""
    groups = run["net"].spec()
    before, after = run["net"].widths, run["reduced_net"].widths
    sizes = {g.name: (b, a) for g, b, a in zip(groups, before, after, strict=False)}
    return min(sizes, key=lambda k: sizes[k][1] / sizes[k][0])


def matrices(run: dict[str, Any], layer: str, threshold: float) -> dict[str, Any]:
    group = {g.name: g for g in run["net"].spec()}[layer]
    vecs = {k: input_vectors(v, group) for k, v in run["variables"].items()}
    order, n_trained = group_order(vecs["trained"], threshold)
    red_order, n_reduced = group_order(vecs["reduced"], threshold)
    orders = {"initialization": order, "trained": order, "reduced": red_order}
    out = {}
    for k, v in vecs.items():
        sim = np.asarray(cosine_similarity(v))[np.ix_(orders[k], orders[k])]
        out[k] = {"matrix": sim, "units": int(v.shape[0]),
                  "groups": int(group_order(v, threshold)[1])}
    assert out["trained"]["groups"] == n_trained and out["reduced"]["groups"] == n_reduced
    return out


def plot_cosine(rows: list[tuple[str, dict[str, Any]]], layer: str, threshold: float, path: Path) -> None:
    fig, axes = subplots(len(rows), 3, figsize=(10, 3.4 * len(rows)), squeeze=False)
    for i, (label, mats) in enumerate(rows):
        for j, stage in enumerate(("initialization", "trained", "reduced")):
            ax, m = axes[i, j], mats[stage]
            im = ax.imshow(m["matrix"], cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_title(f"{label}, {stage}\n{m['units']} units, {m['groups']} groups at "
                         f"cos >= {threshold:g}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="cosine similarity")
    fig.suptitle(f"layer {layer}: input-vector cosine similarity, units ordered by group", fontsize=10)
    save_figure(fig, path)


def groups_history(run: Path) -> tuple[float | None, dict[str, list[tuple[int, float]]]]:
    """layer -> [(epoch, groups / width)] from metrics.jsonl (init = epoch 0)."""
    history: dict[str, list[tuple[int, float]]] = {}
    threshold = None
    for line in (run / "metrics.jsonl").open():
        r = json.loads(line)
        if "groups" not in r or r.get("phase", "train") != "train" or r["event"] not in ("init", "epoch"):
            continue
        threshold = r["groups_at"]
        epoch = r.get("epoch", 0) if r["event"] == "epoch" else 0
        if r["event"] == "init":
            history.clear()  # a fresh start in the same directory
        for layer, n in r["groups"].items():
            history.setdefault(layer, []).append((epoch, n))
    net, _, _ = load_network(run / "networks" / "original")
    sizes = dict(zip([g.name for g in net.spec()], net.widths, strict=False))
    return threshold, {k: [(e, n / sizes[k]) for e, n in v] for k, v in history.items() if k in sizes}


def plot_groups(histories: list[tuple[str, float, dict]], path: Path) -> None:
    """One panel per run (side by side, same axes), one line per layer."""
    fig, axes = subplots(1, len(histories), figsize=(1 + 4.6 * len(histories), 4.2),
                             sharey=True, squeeze=False)
    colors = color_cycle()
    for ax, (label, _, hist) in zip(axes[0], histories, strict=True):
        for i, (layer, pts) in enumerate(hist.items()):
            ax.plot(*zip(*pts, strict=True), color=colors[i % len(colors)],
                    ls=("-", "--", ":")[i // len(colors) % 3], marker=".", ms=3, label=layer)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("training epoch (0 = initialization)")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6 if len(hist) > 6 else 8, ncol=1 + len(hist) // 7, loc="lower left")
    axes[0, 0].set_ylabel(f"groups at cosine >= {histories[0][1]:g} / layer width")
    fig.suptitle("condensation during training: distinct input directions per layer", fontsize=10)
    save_figure(fig, path)


def layer_groups(run: dict[str, Any], threshold: float) -> dict[str, dict[str, int]]:
    """Every unit group of the trained network: its width and its groups at ``threshold``."""
    trained = run["variables"]["trained"]
    return {g.name: {"units": int(v.shape[0]), "groups": group_order(v, threshold)[1]}
            for g in run["net"].spec() for v in [input_vectors(trained, g)]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("run", type=Path, help="condensation run directory (small initialization)")
    ap.add_argument("--standard", type=Path, default=None,
                    help="run from standard initialization (default RUN/baselines/merge_standard_init)")
    ap.add_argument("--layer", default=None, help="unit group name (default: the one cut most)")
    ap.add_argument("--threshold", type=float, default=0.8,
                    help="cosine that defines the groups of the matrices (default 0.8)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    commit = git_commit()  # before this script's own outputs change the tree
    standard = args.standard or args.run / "baselines" / "merge_standard_init"
    runs = [("small init.", args.run)] + ([("standard init.", standard)]
                                         if (standard / "networks" / "original").is_dir() else [])
    if len(runs) == 1:
        print(f"warning: no standard-initialization run at {standard}: small init. only",
              file=sys.stderr)
    loaded = [(label, load_run(d)) for label, d in runs]
    layer = args.layer or pick_layer(loaded[0][1])
    cfg = loaded[0][1]["cfg"]
    out = args.out or ROOT / "results" / str(cfg.get("name")) / "diagnostics"
    out.mkdir(parents=True, exist_ok=True)
    mats = [(label, matrices(run, layer, args.threshold)) for label, run in loaded]
    plot_cosine(mats, layer, args.threshold, out / "cosine.png")
    histories = [(label, *groups_history(d)) for label, d in runs]
    histories = [h for h in histories if h[1] is not None]
    if histories:
        plot_groups(histories, out / "groups_vs_epoch.png")
    else:
        print("warning: no tracked group counts in metrics.jsonl (train.track_groups_at): "
              "groups_vs_epoch.png not made", file=sys.stderr)
    write_json(out / "diagnostics.json", {
        "command": "python scripts/diagnostics.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": commit, "layer": layer, "threshold": args.threshold,
        "runs": {label: str(d) for label, d in runs},
        "cosine": {label: {k: {"units": v["units"], "groups": v["groups"]} for k, v in m.items()}
                   for label, m in mats},
        "trained_layers": {label: layer_groups(run, args.threshold) for label, run in loaded},
        "groups_vs_epoch": {label: {"threshold": t, "fraction": h} for label, t, h in histories},
    })
    print(f"layer {layer} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
