"""The published networks reproduce the published numbers through ``experiments.evaluate``.

CIFAR-10 evaluates 10,000 test images in seconds; the combustion run ships its held-out splits
(results/combustion/heldout.npz), so its networks are evaluated without regenerating data.
"""
from __future__ import annotations

import json

import pytest
from conftest import ROOT

from experiments import evaluate

RESULTS = ROOT / "results"
CASES = [
    # the headline network stays in the default suite; the others are the same check on other
    # networks (10,000 test images each, 12-18 s on 2 cores), kept out of the suite's time
    pytest.param("cifar10", "networks", id="cifar10", marks=pytest.mark.slow),
    pytest.param("cifar10/size_115/importance", "networks", id="cifar10_115_importance"),
    pytest.param("cifar10/size_115/condense", "networks", id="cifar10_115_condense",
                 marks=pytest.mark.slow),
    pytest.param("combustion", "surrogate", id="combustion", marks=pytest.mark.slow),
    # the converged original's 11.5 % reductions (its original: ORIGINALS below)
    *[pytest.param(f"cifar10/converged/{m}", "networks", id=f"cifar10_converged_{m}",
                   marks=pytest.mark.slow) for m in ("importance", "condense")],
]


def test_published_combustion_surrogate_evaluates_in_seconds_and_writes_nothing_there(
        tmp_path, monkeypatch):
    """From an empty working directory (no data cache): the held-out splits shipped with the
    run, the published test L1, and the output where asked (by default a temporary folder)."""
    folder = RESULTS / "combustion" / "surrogate" / "reduced"
    if not (RESULTS / "combustion" / "heldout.npz").is_file():
        pytest.skip("results/combustion/heldout.npz is not published")
    summary = json.loads((RESULTS / "combustion" / "summary.json").read_text())
    before = {p: p.stat().st_mtime_ns for p in (RESULTS / "combustion").rglob("*") if p.is_file()}
    monkeypatch.chdir(tmp_path)
    assert evaluate.main([f"checkpoint={folder}", f"out={tmp_path / 'e.json'}"]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["value"] == pytest.approx(summary["reduced_metric_after_finetune"], rel=1e-5)
    post, published = result["extra"]["a_posteriori"], summary["reduced_extra"]["a_posteriori"]
    assert post["ignition_delay_rel_error_max"] == pytest.approx(
        published["ignition_delay_rel_error_max"], rel=1e-9)
    # the delay between samples too (new since the run): its summary of the conditions
    assert post["ignition_delay_interp_rel_error_max"] == pytest.approx(
        max(c["tau_interp_rel_error"] for c in post["conditions"]))
    assert not (tmp_path / ".cache").exists()
    after = {p: p.stat().st_mtime_ns for p in (RESULTS / "combustion").rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.parametrize("exp, folder", CASES)
@pytest.mark.parametrize("which, key", [("original", "original_metric"),
                                        ("reduced", "reduced_metric_after_finetune")])
def test_evaluate_reproduces_the_published_metric(exp, folder, which, key, tmp_path):
    published = RESULTS / exp / folder / which
    if not (published / "network.json").is_file():
        pytest.skip(f"{published} is not published")
    summary = json.loads((RESULTS / exp / "summary.json").read_text())
    # evaluate writes evaluation.json beside the network: work on a copy of the results folder
    copy = tmp_path / exp
    for src in (RESULTS / exp).rglob("*"):
        if src.is_file() and (src.parent == RESULTS / exp or published in (src, *src.parents)):
            dst = copy / src.relative_to(RESULTS / exp)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    assert evaluate.main([f"checkpoint={copy / folder / which}"]) == 0
    result = json.loads((copy / folder / which / "evaluation.json").read_text())
    assert result["metric"] == summary["metric"]
    assert result["value"] == pytest.approx(summary[key], rel=1e-5, abs=1e-6)
    assert result["params"] == summary["original_params" if which == "original" else "reduced_params"]
    assert len(result["commit"].split("-")[0]) == 40 and "cores" in result["machine"]
    assert result["wall_time_s"] >= 0


# originals published alone (scripts/publish.py --original-only): their original.json's numbers
ORIGINALS = [pytest.param(f"cifar10/{d}/original", id=f"cifar10_{d}", marks=pytest.mark.slow)
             for d in ("converged", "converged_bn01")]


@pytest.mark.parametrize("folder", ORIGINALS)
def test_evaluate_reproduces_a_published_original(folder, tmp_path):
    published = RESULTS / folder
    if not (published / "original.json").is_file():
        pytest.skip(f"{published} is not published")
    record = json.loads((published / "original.json").read_text())
    out = tmp_path / "evaluation.json"
    assert evaluate.main([f"checkpoint={published / 'networks' / 'original'}", f"out={out}"]) == 0
    result = json.loads(out.read_text())
    assert result["metric"] == record["metric"]
    assert result["value"] == pytest.approx(record["original"]["test"], rel=1e-5, abs=1e-6)
    assert result["params"] == record["original"]["params"]
