"""scripts/sizecurve.py: every method's metric against its size, from compare.py's folders."""
from __future__ import annotations

import csv
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import sizecurve  # noqa: E402

HEADER = ["reduce.method", "metric", "n_seeds", "seeds", "size_ratio_mean", "size_ratio_std",
          "original_metric_mean", "original_metric_std", "reduced_metric_before_finetune_mean",
          "reduced_metric_before_finetune_std", "reduced_metric_after_finetune_mean",
          "reduced_metric_after_finetune_std"]


def folder(path, rows, metric="test_accuracy"):
    """A compare.py folder: rows of (method, size, before, after, after_std, n_seeds)."""
    path.mkdir()
    with (path / "comparison.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for method, size, before, after, std, n in rows:
            w.writerow([method, metric, n, "0", size, "", 0.79, "", before, "", after, std])
    return path


def test_a_curve_from_two_sizes(tmp_path):
    a = folder(tmp_path / "size_417", [("condense", 0.4159, 0.768, 0.798, "", 1),
                                      ("scratch_finetune", 0.4169, 0.10, 0.718, "", 1)])
    b = folder(tmp_path / "size_115", [("condense", 0.115, 0.722, 0.795, 0.0004, 3),
                                      ("none", 1.0, 0.79, 0.798, 0.001, 3)])
    assert sizecurve.main([str(a), str(b), "--out", str(tmp_path / "curve")]) == 0
    with (tmp_path / "curve" / "curve.csv").open() as f:
        rows = list(csv.DictReader(f))
    got = {(r["folder"].rsplit("/", 1)[-1], r["method"]): r for r in rows}
    assert set(got) == {("size_417", "condense"), ("size_417", "scratch_finetune"),
                        ("size_115", "condense"), ("size_115", "none")}
    assert float(got["size_115", "condense"]["reduced_metric_after_finetune"]) == 0.795
    assert float(got["size_115", "condense"]["reduced_metric_after_finetune_std"]) == 0.0004
    assert int(got["size_115", "condense"]["n_seeds"]) == 3
    assert (tmp_path / "curve" / "curve.png").stat().st_size > 10_000


def test_folders_of_other_metrics_or_without_a_table_are_refused(tmp_path):
    a = folder(tmp_path / "a", [("condense", 0.4, 0.7, 0.8, "", 1)])
    b = folder(tmp_path / "b", [("condense", 0.1, 0.1, 0.01, "", 1)], metric="test_loss")
    with pytest.raises(SystemExit, match="different metrics"):
        sizecurve.main([str(a), str(b), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="does not exist"):
        sizecurve.main([str(a), str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_a_loss_curve_is_drawn_as_it_is_on_a_log_scale(tmp_path):
    a = folder(tmp_path / "a", [("condense", 0.4, 0.02, 0.005, "", 1),
                                ("importance", 0.4, 0.01, 0.0048, "", 1)], metric="test_loss")
    b = folder(tmp_path / "b", [("condense", 0.05, 0.2, 0.009, "", 1)], metric="test_loss")
    fig = {}
    real = sizecurve.save_figure
    sizecurve.save_figure = lambda f, path: (fig.setdefault("fig", f), real(f, path))
    try:
        assert sizecurve.main([str(a), str(b), "--out", str(tmp_path / "out")]) == 0
    finally:
        sizecurve.save_figure = real
    ax = fig["fig"].axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "test loss"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["5", "40", "100"]
    ys = [y for line in ax.get_lines() for y in line.get_ydata()]
    assert 0.02 in ys and 2.0 not in ys  # not scaled to percent
