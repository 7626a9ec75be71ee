"""scripts/seed_table.py: one row per run, from runs.json and the evaluations beside it."""
from __future__ import annotations

import json
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import seed_table  # noqa: E402


def _evaluation(value, ign_max):
    rollouts = {"n_conditions": 40, "n_not_ignited": 1, "ignition_delay_rel_error_mean": 0.003,
                "ignition_delay_rel_error_max": ign_max,
                "ignition_delay_interp_rel_error_mean": 0.002,
                "ignition_delay_interp_rel_error_max": 0.02}
    return {"value": value, "params": 675215, "extra": {"a_posteriori": rollouts}}


def _folder(tmp_path, methods):
    runs = [{"dir": f"runs/x/{m}{s}", "method": m, "seed": s, "wall_time_s": 100.4 + s,
             "summary": {"metric": "test_loss", "reduced_metric_before_finetune": 0.0444,
                         "reduced_metric_after_finetune": 0.0047 + s / 1e4}}
            for m, s in methods]
    (tmp_path / "runs.json").write_text(json.dumps({"runs": runs}))
    for split in ("test", "val"):
        (tmp_path / split).mkdir()
        for m, s in methods:
            e = _evaluation(0.0047 + s / 1e4 if split == "test" else 0.0041, 0.0513)
            (tmp_path / split / f"{m}_seed{s}.json").write_text(json.dumps(e))
    return tmp_path


def test_rows_go_by_method_then_seed_with_every_number(tmp_path):
    folder = _folder(tmp_path, [("scratch", 0), ("fold", 1), ("condense", 1), ("condense", 0)])
    assert seed_table.main([str(folder)]) == 0
    lines = (folder / "seeds.md").read_text().splitlines()
    assert [line.split(" | ")[0:2] for line in lines[2:]] == [
        ["| condense", "0"], ["| condense", "1"], ["| model folding", "1"],
        ["| scratch, the full budget", "0"]]
    assert lines[3] == ("| condense | 1 | 675,215 | 0.0444 | 0.00480 | 0.00480 | 0.30 % / 5.13 % "
                        "| 0.20 % / 2.00 % | 39/40 | 0.00410 | 0.30 % / 5.13 % | 101 s |")
    assert "| scratch, the full budget | 0 | 675,215 |  |" in lines[5]
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_a_run_without_its_evaluation_is_an_error_naming_the_file(tmp_path, capsys):
    folder = _folder(tmp_path, [("condense", 0), ("fold", 0)])
    (folder / "val" / "fold_seed0.json").unlink()
    assert seed_table.main([str(folder)]) == 2
    assert "val/fold_seed0.json" in capsys.readouterr().err
    assert not (folder / "seeds.md").exists()
