"""The README's main command demonstrates the method: a real reduction with the error kept.

Slow (about 1.5 minutes on 2 cores with data generation): ``python -m pytest -m slow``. Its wall
time is measured where the README says, not asserted here.
"""
from __future__ import annotations

import pytest
from conftest import compose_config

from condensation.experiment import train_and_reduce


@pytest.mark.slow
def test_quick_combustion_default_reduces_to_40_percent_keeping_the_error(tmp_path):
    cfg = compose_config(["+exp=combustion", f"data.cache_dir={tmp_path / 'cache'}"])
    summary = train_and_reduce(cfg, tmp_path / "run")
    assert summary["size_ratio"] <= 0.40
    assert summary["reduced_metric_after_finetune"] <= 1.2 * summary["original_metric"]
    assert summary["reduced_extra"]["a_posteriori"]["n_not_ignited"] == 0
