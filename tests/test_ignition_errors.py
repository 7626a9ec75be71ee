"""scripts/ignition_errors.py: every condition's ignition-delay error, sampled and between samples."""
from __future__ import annotations

import csv
import json
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import ignition_errors  # noqa: E402


def _condition(T0, tau, tau_net, interp_error):
    return {"T0": T0, "P": 101325.0, "phi": 1.0, "tau_cantera": tau, "tau_net": tau_net,
            "tau_rel_error": abs(tau_net - tau) / tau, "tau_cantera_interp": tau + 2e-8,
            "tau_net_interp": tau_net + 2e-8, "tau_interp_rel_error": interp_error,
            "ignited": True}


def _write(path, conditions, split="test"):
    path.write_text(json.dumps({"split": split, "extra": {"a_posteriori": {"conditions": conditions}}}))
    return path


@pytest.fixture
def two(tmp_path):
    a = _write(tmp_path / "a.json", [_condition(1260.0, 19.5e-6, 18.5e-6, 0.0025),
                                     _condition(1050.0, 157.5e-6, 157.5e-6, 0.003)])
    b = _write(tmp_path / "b.json", [_condition(1260.0, 19.5e-6, 19.5e-6, 0.01),
                                     _condition(1050.0, 157.5e-6, 158.5e-6, 0.004)])
    return a, b


def test_a_condition_that_does_not_ignite_is_left_out_of_the_figure_not_the_table(tmp_path):
    unlit = {**_condition(1000.0, 3e-4, 3e-4, 0.0), "tau_net": float("nan"),
             "tau_rel_error": float("nan"), "tau_interp_rel_error": float("nan"), "ignited": False}
    a = _write(tmp_path / "a.json", [unlit, _condition(1260.0, 19.5e-6, 18.5e-6, 0.0025)])
    out = tmp_path / "out"
    assert ignition_errors.main([f"{a}=first", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "ignition_errors.csv").open()))
    assert [r["ignited"] for r in rows] == ["False", "True"]
    assert ignition_errors.legend_label("first", [unlit, _condition(1260.0, 19.5e-6, 18.5e-6, 0.0025)]) \
        == "first: max 5.13 % sampled, 0.25 % between, 1 of 2 not igniting"
    assert (out / "ignition_errors.png").is_file()


def test_one_row_per_network_and_condition_and_a_figure(two, tmp_path):
    a, b = two
    out = tmp_path / "out"
    assert ignition_errors.main([f"{a}=first", f"{b}=second", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "ignition_errors.csv").open()))
    assert [(r["network"], float(r["T0_K"])) for r in rows] == [
        ("first", 1260.0), ("first", 1050.0), ("second", 1260.0), ("second", 1050.0)]
    assert float(rows[0]["rel_error"]) == pytest.approx(1 / 19.5)   # one 1-us step early
    assert float(rows[2]["rel_error"]) == 0.0
    assert float(rows[3]["interp_rel_error"]) == 0.004
    assert (out / "ignition_errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("case, message", [
    ("other conditions", "evaluated on other conditions"),
    ("other split", "split val against test"),
    ("no label", "expected EVAL.json=LABEL"),
    ("same label", "labels must differ"),
    ("no rollouts", "not a combustion evaluation with rollouts"),
    ("missing file", "no such evaluation file"),
])
def test_bad_input_is_refused_before_anything_is_written(two, tmp_path, capsys, case, message):
    a, b = two
    c = tmp_path / "c.json"
    same = json.loads(a.read_text())["extra"]["a_posteriori"]["conditions"]
    if case == "other conditions":
        _write(c, [_condition(1100.0, 1e-4, 1e-4, 0.0)])
    elif case == "other split":
        _write(c, same, split="val")
    elif case == "no rollouts":
        c.write_text(json.dumps({"value": 0.9}))
    args = {"no label": [str(a)], "same label": [f"{a}=x", f"{b}=x"],
            "missing file": [f"{tmp_path / 'nowhere.json'}=x"]}.get(case, [f"{a}=x", f"{c}=y"])
    out = tmp_path / "out"
    assert ignition_errors.main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
