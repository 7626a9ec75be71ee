"""The published surrogates load in a fresh process and step like Cantera."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.export import main as export_main

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


def _published(which="reduced"):
    folder = PUBLISHED / "surrogate" / which
    if not (folder / "network.json").exists():
        pytest.skip(f"{folder} is not published")
    from condensation.combustion import load_surrogate
    return load_surrogate(folder)


def test_a_cold_mixture_stays_cold_under_the_guard():
    """300 K H2/air: frozen by the default guard (the raw network heats it), the state given back
    exactly, so that any number of steps leaves it as it is (20 steps here; 2,000 steps of 1 us
    took 15 s of the suite and checked nothing more)."""
    import numpy as np

    from condensation.combustion.chem import initial_mass_fractions
    s = _published()
    T0, P = np.full(4, 300.0), np.full(4, 101325.0)
    Y0 = np.tile(initial_mass_fractions(s.mechanism_name, 1.0), (4, 1))
    T, Y = T0, Y0
    for _ in range(20):
        T, Y, status = s.step(T, P, Y, return_guarded=True)
        assert np.all(status == 1)
    assert np.array_equal(T, T0) and np.array_equal(Y, Y0)


def test_outside_the_envelope_raises_or_falls_back_to_cantera():
    import numpy as np

    from condensation.combustion.chem import cantera_trajectory, step_cantera
    s = _published()
    _, T, Y = cantera_trajectory(s.mechanism_name, 1200.0, 20 * 101325.0, 1.0, s.dt, 30)
    with pytest.raises(ValueError, match=r"P = 2\.0265e\+06 \(state 0\); the envelope is "
                                         r"P in \[50664\.8, 202624\] \(Pa\)"):
        s.step(T[10:12], 20 * 101325.0, Y[10:12], guard="raise")
    T1, Y1, status = s.step(T[10:12], 20 * 101325.0, Y[10:12], return_guarded=True)
    assert list(status) == [2, 2]
    want = step_cantera(s.mechanism_name, T[10], 20 * 101325.0, Y[10], s.dt)
    assert abs(T1[0] - want[0]) < 1e-6 and np.allclose(Y1[0], want[1], atol=1e-12)
    with pytest.raises(ValueError, match="guard='nope'; allowed: cantera, frozen, raise, off"):
        s.step(T[:2], 101325.0, Y[:2], guard="nope")


def test_any_batch_size_compiles_a_handful_of_times(caplog):
    """Sizes 1..300 in random order: one compilation per power-of-two bucket and nothing else
    compiled (every XLA compilation counted from JAX's log), results equal to the network
    evaluated on exactly that batch."""
    import logging

    import jax
    import jax.numpy as jnp
    import numpy as np

    from condensation.combustion import surrogate as sur
    from condensation.combustion.chem import cantera_trajectory
    s = _published()
    _, T, Y = cantera_trajectory(s.mechanism_name, 1250.0, 101325.0, 1.0, s.dt, 300)
    s.step(T[:3], 101325.0, Y[:3])  # whatever the first call compiles once (bucket 16)
    sizes = np.random.default_rng(0).permutation(np.arange(1, 301))
    with jax.log_compiles(True), caplog.at_level(logging.WARNING, logger="jax"):
        for n in sizes:
            T1, Y1 = s.step(T[:n], 101325.0, Y[:n])
    compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert len(compiled) <= 5, compiled      # buckets 32, 64, ..., 512
    for n in (1, 37, 300):
        T1, Y1 = s.step(T[:n], 101325.0, Y[:n])
        T2, Y2 = sur._step(s, s.variables, jnp.asarray(T[:n], jnp.float32),
                           jnp.full(n, 101325.0, jnp.float32), jnp.asarray(Y[:n], jnp.float32))
        np.testing.assert_allclose(T1, T2, rtol=1e-5)
        np.testing.assert_allclose(Y1, Y2, rtol=1e-5, atol=1e-9)


def _heldout_states(n=512):
    import numpy as np
    z = np.load(PUBLISHED / "heldout.npz")
    pick = np.random.default_rng(0).choice(len(z["test.T"]), n, replace=False)
    return tuple(z[f"test.{k}"][pick].astype(np.float32) for k in "TPY")


def _equals_the_step_in_a_fresh_process(s, tmp_path, artifact, code):
    """Run ``code`` (argv: artifact, states.npz, out.npz) on held-out states in a fresh process;
    its T, Y must equal the JAX step's to 1e-5."""
    import numpy as np
    T, P, Y = _heldout_states()
    np.savez(tmp_path / "states.npz", T=T, P=P, Y=Y)
    run = subprocess.run([sys.executable, "-c", code, str(artifact),
                          str(tmp_path / "states.npz"), str(tmp_path / "out.npz")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    got = np.load(tmp_path / "out.npz")
    T1, Y1 = s.step(T, P, Y, guard="off")
    np.testing.assert_allclose(got["T"], T1, rtol=1e-5)
    np.testing.assert_allclose(got["Y"], Y1, rtol=1e-5, atol=1e-7)


def test_stablehlo_export_runs_in_a_fresh_process(tmp_path):
    """experiments.export writes the step as a serialized jax.export; a fresh process that
    imports neither Flax nor the surrogate code runs it, equal to the step to 1e-5 on held-out
    test states of the published run."""
    pytest.importorskip("flatbuffers")

    s = _published()
    folder = PUBLISHED / "surrogate" / "reduced"
    assert export_main([f"checkpoint={folder}", "format=stablehlo", f"out={tmp_path / 'step.shlo'}"]) == 0
    _equals_the_step_in_a_fresh_process(s, tmp_path, tmp_path / "step.shlo", (
        "import sys, json, numpy as np, jax, jax.numpy as jnp\n"
        "e = jax.export.deserialize(bytearray(open(sys.argv[1], 'rb').read()))\n"
        "z = np.load(sys.argv[2])\n"
        "T, Y = e.call(*(jnp.asarray(z[k]) for k in 'TPY'))\n"
        "assert 'flax' not in sys.modules and 'condensation' not in sys.modules\n"
        "np.savez(sys.argv[3], T=np.asarray(T), Y=np.asarray(Y))\n"))
    meta = json.loads((tmp_path / "step.shlo.json").read_text())
    assert meta["species"] == list(s.species) and meta["envelope"]["T"][0] > 900


def test_onnx_export_runs_in_a_fresh_process(tmp_path):
    """The step as ONNX, run by onnxruntime in a process without JAX, equals the JAX step to
    1e-5 on held-out test states of the published run."""
    pytest.importorskip("onnxruntime")

    from condensation.combustion.export import export_onnx
    s = _published()
    export_onnx(s, tmp_path / "step.onnx")
    _equals_the_step_in_a_fresh_process(s, tmp_path, tmp_path / "step.onnx", (
        "import sys, numpy as np, onnxruntime as ort\n"
        "z = np.load(sys.argv[2])\n"
        "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
        "T, Y = s.run(['T_next', 'Y_next'], {'T': z['T'], 'P': z['P'], 'Y': z['Y']})\n"
        "assert 'jax' not in sys.modules and 'condensation' not in sys.modules\n"
        "np.savez(sys.argv[3], T=T, Y=Y)\n"))
    assert json.loads((tmp_path / "step.onnx.json").read_text())["species"] == list(s.species)


def test_export_refuses_bad_input(tmp_path, capsys):
    assert export_main(["checkpoint=x", "format=tflite", f"out={tmp_path / 'a'}"]) == 2
    assert "format='tflite'; allowed: stablehlo, onnx" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_pasr_with_cold_inflow_guards_and_follows_cantera():
    """A small PaSR fed mostly cold gas: the guard freezes the cold particles, and the reduced
    surrogate's mean temperature stays within 2 % of Cantera's at every recorded time."""
    import numpy as np

    from condensation.combustion.pasr import PaSRConfig, Stream, cantera_chemistry, run_pasr
    s = _published()
    cfg = PaSRConfig(n_particles=8, t_end=3e-5, tau_res=2e-5, tau_mix=2e-5, record_every=5,
                     streams=(Stream(1100.0, 1.0, 0.5), Stream(300.0, 1.0, 0.5)))
    ref = run_pasr(cfg, cantera_chemistry(cfg))
    last = {}

    def step(T, P, Y):
        T1, Y1, status = s.step(T, P, Y, return_guarded=True)
        last["n"] = int((status > 0).sum())
        return T1, Y1

    got = run_pasr(cfg, step, guarded=lambda: last.get("n", 0))
    assert got.guarded.max() > 0 and np.all(got.t == ref.t)
    assert np.max(np.abs(got.mean_T / ref.mean_T - 1)) < 0.02


@pytest.mark.slow
def test_pasr_script_writes_its_results(tmp_path):
    import json

    if not (PUBLISHED / "surrogate" / "reduced" / "network.json").exists():
        pytest.skip("the surrogates are not published")
    out = subprocess.run([sys.executable, "scripts/pasr.py", "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    d = json.loads((tmp_path / "pasr.json").read_text())
    assert set(d["cases"]) == {"preheated", "cold"} and d["quick"] is True
    for case in d["cases"].values():
        assert set(case["runs"]) == {"cantera", "original", "reduced"}
        assert all(r["chemistry_s"] > 0 for r in case["runs"].values())
    assert (tmp_path / "pasr.png").stat().st_size > 0 and "| cold | reduced |" in \
        (tmp_path / "README.md").read_text()
