"""SIGKILL at a random point of a run, then the same command: it resumes and ends as if never
interrupted (the final summary and curve equal an uninterrupted run's, made in the test's
process by the function the command calls)."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import compose_config

from condensation.experiment import train_and_reduce

ROOT = Path(__file__).resolve().parents[1]
# 16 epochs and up to 2 rounds of 5: 16-26 checkpoints to kill between (each costs ~0.13 s)
ARGS = ["+exp=toy", "model.widths=[16,16]", "data.n_train=128", "data.n_val=64", "data.n_test=64",
        "train.batch_size=32", "train.epochs=16", "train.checkpoint_every=1",
        "reduce.finetune_epochs=5", "reduce.auto.max_rounds=2"]
VOLATILE = {"wall_time_s", "commit", "machine"}


def command(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "experiments.run", *ARGS, f"hydra.run.dir={run_dir}"]


def finish(run_dir: Path) -> tuple[dict, str]:
    out = subprocess.run(command(run_dir), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return result(run_dir)


def result(run_dir: Path) -> tuple[dict, str]:
    summary = json.loads((run_dir / "summary.json").read_text())
    return ({k: v for k, v in summary.items() if k not in VOLATILE},
            (run_dir / "curve.csv").read_text())


def _latest_checkpoint(run_dir: Path) -> int:
    folder = run_dir / "checkpoints"
    steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return max(steps, default=0)


def test_sigkill_then_same_command_resumes_to_the_same_result(tmp_path):
    train_and_reduce(compose_config(ARGS), tmp_path / "reference")
    reference = result(tmp_path / "reference")
    # kill once checkpoint k of the reference's n is written (k at random, the last few left out
    # so the kill lands before the end whatever the load), a random fraction of a second later
    n = _latest_checkpoint(tmp_path / "reference")
    assert n >= 10, f"the reference run wrote {n} checkpoints"
    rng = random.Random()
    k = rng.randint(1, n - 5)
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(command(run_dir), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while _latest_checkpoint(run_dir) < k and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(rng.uniform(0, 0.05))
    assert proc.poll() is None, f"the run ended before checkpoint {k} of {n} was seen"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "summary.json").exists()
    assert finish(run_dir) == reference
    events = [json.loads(line)["event"] for line in (run_dir / "metrics.jsonl").open()]
    assert "resume" in events
