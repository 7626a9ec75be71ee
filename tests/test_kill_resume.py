"""SIGKILL at a random point of a run, then the same command: it resumes and ends as if never
interrupted (the final summary and curve equal an uninterrupted run's)."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["+exp=toy", "model.widths=[16,16]", "data.n_train=128", "data.n_val=64", "data.n_test=64",
        "train.batch_size=32", "train.epochs=30", "train.checkpoint_every=1",
        "reduce.finetune_epochs=8", "reduce.auto.max_rounds=2"]
VOLATILE = {"wall_time_s", "commit", "machine"}


def command(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "experiments.run", *ARGS, f"hydra.run.dir={run_dir}"]


def finish(run_dir: Path) -> tuple[dict, str]:
    out = subprocess.run(command(run_dir), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    return ({k: v for k, v in summary.items() if k not in VOLATILE},
            (run_dir / "curve.csv").read_text())


def test_sigkill_then_same_command_resumes_to_the_same_result(tmp_path):
    start = time.time()
    reference = finish(tmp_path / "reference")
    whole = time.time() - start
    run_dir = tmp_path / "killed"
    start = time.time()
    proc = subprocess.Popen(command(run_dir), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    # wait until training has finished a checkpoint (a step folder; the manager creates the
    # folder itself before any), then kill at a random moment
    def checkpointed() -> bool:
        folder = run_dir / "checkpoints"
        return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())

    deadline = time.time() + 120
    while not checkpointed() and time.time() < deadline:
        time.sleep(0.1)
    assert checkpointed(), "no checkpoint within 2 minutes"
    # a random moment within the rest of the run, as long as the uninterrupted one took: on a
    # fast machine a fixed window can outlast it
    rest = max(whole - (time.time() - start), 0.2)
    time.sleep(random.Random().uniform(0.1, 0.8 * rest))
    killed = proc.poll() is None
    if killed:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # it ended between the poll and the kill
            killed = False
    proc.wait()
    if killed and (run_dir / "summary.json").exists():
        # killed after the summary was written (it is written whole, after the curve; only the
        # plot, the log's last line and interpreter exit follow): it is already the final one
        summary = json.loads((run_dir / "summary.json").read_text())
        assert {k: v for k, v in summary.items() if k not in VOLATILE} == reference[0]
    assert finish(run_dir) == reference
    events = [json.loads(line)["event"] for line in (run_dir / "metrics.jsonl").open()]
    assert not killed or "resume" in events
