"""The published surrogates load in a fresh process and step like Cantera."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "results" / "combustion"

CHECK = r"""
import json, sys
import numpy as np
from condensation.combustion import load_surrogate
from condensation.combustion.chem import cantera_trajectory, element_mass_fractions

s = load_surrogate(sys.argv[1])
# Fresh states along two ignitions that no split was drawn from exactly.
T_err, dT = [], []
for T0, P, phi in ((1123.0, 101325.0, 0.8), (1287.0, 150000.0, 1.3)):
    _, T, Y = cantera_trajectory(s.mechanism_name, T0, P, phi, s.dt, 400)
    idx = np.arange(0, 400, 20)
    T1, Y1 = s.step(T[idx], np.full(len(idx), P), Y[idx])
    T1, Y1 = np.asarray(T1, np.float64), np.asarray(Y1, np.float64)
    assert np.allclose(Y1.sum(-1), 1.0, atol=1e-5)
    assert np.allclose(element_mass_fractions(s.mechanism, Y1),
                       element_mass_fractions(s.mechanism, Y[idx]), atol=1e-5)
    T_err.append(np.abs(T1 - T[idx + 1]))
    dT.append(np.abs(T[idx + 1] - T[idx]))
print(json.dumps({"species": list(s.species), "dt": s.dt,
                  "T_mae": float(np.concatenate(T_err).mean()),
                  "dT_mean": float(np.concatenate(dT).mean())}))
"""


@pytest.mark.parametrize("which", ["original", "reduced"])
def test_published_surrogate_steps_like_cantera(which):
    folder = PUBLISHED / "surrogate" / which
    if not (folder / "network.json").exists():
        pytest.skip(f"{folder} is not published yet")
    out = subprocess.run([sys.executable, "-c", CHECK, str(folder)], capture_output=True,
                         text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["dt"] == 1e-6 and "H2" in got["species"]
    summary = json.loads((PUBLISHED / "summary.json").read_text())
    published = summary[f"{which}_extra"]["a_priori"]["T_mae_K"]
    # The one-step error on fresh states must be of the order the run published (held-out
    # states include perturbed ones, so the published figure is the harder of the two), and
    # the step must track Cantera's temperature change, not merely stay near the input.
    assert got["T_mae"] <= 3 * published + 0.1
    assert got["T_mae"] < got["dT_mean"]
