"""Figures made from the files of a run directory (curve.csv, summary.json) only."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

from condensation.files import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def subplots(*args, figsize=None, **kwargs):
    """``(figure, axes)`` like ``pyplot.subplots``, without pyplot: no global figure registry
    and no backend chosen at import, so nothing of the caller's matplotlib state changes.
    matplotlib is imported here, when a figure is made: a run that is refused or resumed to its
    end starts half a second sooner."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def color_cycle() -> list[str]:
    """The default colour cycle."""
    import matplotlib

    return matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]


def save_figure(fig: Figure, path: str | Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_size_vs_metric(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Size ratio versus metric, before and after fine-tuning, one point per round."""
    run_dir = Path(run_dir)
    rows = list(csv.DictReader((run_dir / "curve.csv").open()))
    summary = json.loads((run_dir / "summary.json").read_text())
    metric = summary["metric"]
    fig, ax = subplots(figsize=(5.5, 4))
    ratio = [float(r["size_ratio"]) for r in rows]
    before = [float(r["metric_before_finetune"]) for r in rows]
    after = [float(r["metric_after_finetune"]) for r in rows]
    ax.plot(ratio, before, "o--", color="tab:orange", label="after condensation")
    ax.plot(ratio, after, "o-", color="tab:blue", label="after fine-tuning")
    for r, a, row in zip(ratio, after, rows, strict=True):
        label = f"τ={float(row['threshold']):g}" if row["threshold"] else f"round {row['round']}"
        ax.annotate(label, (r, a), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    ax.scatter([1.0], [summary["original_metric"]], marker="*", s=140, color="k", zorder=3,
               label="original")
    rejected = [i for i, row in enumerate(rows) if row.get("accepted") == "False"]
    if rejected:
        ax.scatter([ratio[i] for i in rejected], [after[i] for i in rejected], s=120,
                   facecolors="none", edgecolors="tab:red", zorder=4,
                   label="rejected (over tolerance): rolled back")
    ax.axvline(summary["size_ratio"], color="gray", lw=0.8, ls=":",
               label=f"result: {summary['size_ratio']:.1%} of the parameters")
    ax.set_xlabel("parameters / original parameters")
    ax.set_ylabel(metric)
    if summary.get("log_metric"):
        ax.set_yscale("log")
    ax.set_xlim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{summary.get('experiment', '')}: size versus {metric}")
    out = Path(out) if out else run_dir / "size_vs_metric.png"
    save_figure(fig, out)
    return out
