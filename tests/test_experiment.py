"""train_and_reduce on the tiny toy: resuming after an interruption, reruns, run-directory
guards, automatic mode's rollback, and the saved networks against the summary."""
from __future__ import annotations

import csv
import json
import shutil
import struct

import jax
import pytest
import yaml
from conftest import TINY_TOY, check_results, compose_config

from condensation import fit as fit_module
from condensation.config import validate_config
from condensation.errors import ConfigError
from condensation.experiment import train_and_reduce
from condensation.network import count_params
from condensation.saved import load_network
from condensation.tasks import make_task
from condensation.train import evaluate

VOLATILE = {"wall_time_s", "commit", "time"}


def stable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in VOLATILE}


def read_json(path):
    return json.loads(path.read_text())


def count_calls(monkeypatch, fail_on: int | None = None, error: type[BaseException] = KeyboardInterrupt):
    """Wrap fit_module.train_epoch: count its calls and raise ``error`` on call ``fail_on``."""
    calls = []
    real = fit_module.train_epoch

    def wrapped(*args, **kwargs):
        calls.append(kwargs.get("epoch"))
        if fail_on is not None and len(calls) == fail_on:
            raise error(f"interrupted at call {fail_on}")
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_module, "train_epoch", wrapped)
    return calls


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted tiny toy run: (config, run dir, summary, number of train_epoch calls)."""
    cfg = compose_config(TINY_TOY)
    workdir = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp:
        calls = count_calls(mp)
        summary = train_and_reduce(cfg, workdir)
    return cfg, workdir, summary, len(calls)


def test_reference_run_is_complete(reference):
    cfg, workdir, summary, n_calls = reference
    rows = list(csv.DictReader((workdir / "curve.csv").open()))
    assert 1 <= len(rows) <= 2 and summary["rounds"] == len(rows)
    # 3 training epochs, then 2 fine-tuning epochs per round
    assert n_calls == cfg["train"]["epochs"] + cfg["reduce"]["finetune_epochs"] * len(rows)
    assert summary == read_json(workdir / "summary.json")
    assert yaml.safe_load((workdir / "config.yaml").read_text()) == cfg
    check_results(workdir)


def test_saved_networks_match_the_summary(reference):
    """networks/original and networks/reduced reproduce the published numbers."""
    cfg, workdir, summary, _ = reference
    task = make_task(cfg["data"], cfg["seed"], workdir)
    for which, params, widths, metric in [
        ("original", "original_params", "widths_before", "original_metric"),
        ("reduced", "reduced_params", "widths_after", "reduced_metric_after_finetune"),
    ]:
        net, variables, _ = load_network(workdir / "networks" / which)
        assert list(net.widths) == summary[widths], which
        assert count_params(variables) == summary[params], which
        test = evaluate(variables, task.test, module=net.module(), loss=task.loss)
        assert test[task.metric] == pytest.approx(summary[metric], rel=1e-5), which
    assert summary["size_ratio"] == pytest.approx(summary["reduced_params"] / summary["original_params"])


# calls 1-3 train the original (a checkpoint after each); 4-5 fine-tune round 0
@pytest.mark.parametrize("interrupt_at", [2, 5], ids=["during-training", "during-finetuning"])
def test_resume_after_interruption_gives_the_same_result(reference, tmp_path, monkeypatch, interrupt_at):
    cfg, ref_dir, ref_summary, ref_calls = reference
    workdir = tmp_path / "run"

    calls = count_calls(monkeypatch, fail_on=interrupt_at)
    with pytest.raises(KeyboardInterrupt):
        train_and_reduce(cfg, workdir)
    assert len(calls) == interrupt_at
    assert not (workdir / "summary.json").exists()

    calls = count_calls(monkeypatch)
    summary = train_and_reduce(cfg, workdir)

    # every finished epoch was checkpointed: only the interrupted one and those after it run again
    assert len(calls) == ref_calls - (interrupt_at - 1)
    assert stable(summary) == stable(ref_summary)
    assert stable(read_json(workdir / "summary.json")) == stable(read_json(ref_dir / "summary.json"))
    assert (workdir / "curve.csv").read_text() == (ref_dir / "curve.csv").read_text()
    events = [json.loads(line)["event"] for line in (workdir / "metrics.jsonl").open()]
    assert events.count("resume") == 1 and events.count("done") == 1


def test_rerun_of_a_finished_run_does_not_train(reference, tmp_path, monkeypatch):
    cfg, ref_dir, ref_summary, _ = reference
    workdir = tmp_path / "run"  # a copy: the rerun rewrites the summary the other tests read
    shutil.copytree(ref_dir, workdir)
    curve = (workdir / "curve.csv").read_text()
    calls = count_calls(monkeypatch, fail_on=1, error=AssertionError)  # any training fails
    summary = train_and_reduce(cfg, workdir)
    assert calls == []
    assert stable(summary) == stable(ref_summary)
    assert (workdir / "curve.csv").read_text() == curve


def test_other_config_in_the_same_directory_is_refused(reference, tmp_path, monkeypatch):
    cfg, ref_dir, ref_summary, _ = reference
    workdir = tmp_path / "run"
    shutil.copytree(ref_dir, workdir)
    config_text = (workdir / "config.yaml").read_text()

    other = compose_config([*TINY_TOY, "data.n_train=48", "seed=1"])
    calls = count_calls(monkeypatch)
    with pytest.raises(ConfigError, match=r"different config \(differs in: data, seed\).*fresh=true"):
        train_and_reduce(other, workdir)
    assert calls == []
    assert (workdir / "config.yaml").read_text() == config_text
    assert stable(read_json(workdir / "summary.json")) == stable(ref_summary)

    other["fresh"] = True
    summary = train_and_reduce(other, workdir)
    assert calls, "fresh=true must start over"
    assert summary["seed"] == 1
    assert yaml.safe_load((workdir / "config.yaml").read_text()) == other
    # a fresh run keeps its directory: the same config (fresh or not) resumes it
    other["fresh"] = False
    calls.clear()
    assert stable(train_and_reduce(other, workdir)) == stable(summary)
    assert calls == []


def test_interrupted_fresh_run_leaves_no_stale_results(reference, tmp_path, monkeypatch):
    _, ref_dir, _, _ = reference
    workdir = tmp_path / "run"
    shutil.copytree(ref_dir, workdir)
    other = compose_config([*TINY_TOY, "seed=1", "fresh=true"])
    count_calls(monkeypatch, fail_on=1)
    with pytest.raises(KeyboardInterrupt):
        train_and_reduce(other, workdir)
    assert yaml.safe_load((workdir / "config.yaml").read_text())["seed"] == 1
    stale = [f for f in ("summary.json", "curve.csv", "size_vs_metric.png") if (workdir / f).exists()]
    assert not stale, f"results of the previous run (seed 0) left beside a seed-1 config: {stale}"


def test_auto_mode_rolls_back_a_rejected_round(tmp_path):
    # relative tolerance -1: the validation loss would have to drop to 0 (100 % better)
    cfg = compose_config([*TINY_TOY, "reduce.auto.tolerance=-1.0", "reduce.auto.tolerance_mode=relative"])
    summary = train_and_reduce(cfg, tmp_path)

    rows = list(csv.DictReader((tmp_path / "curve.csv").open()))
    assert len(rows) == 1 and rows[0]["accepted"] == "False" and rows[0]["round"] == "0"
    assert float(rows[0]["size_ratio"]) < 1.0  # the round did shrink the network
    assert summary["size_ratio"] == 1.0
    assert summary["reduced_params"] == summary["original_params"]
    assert summary["widths_after"] == summary["widths_before"]
    assert summary["accepted_round"] is None and summary["rounds"] == 1
    assert summary["reduced_metric_after_finetune"] == summary["original_metric"]
    net_o, vars_o, _ = load_network(tmp_path / "networks" / "original")
    net_r, vars_r, _ = load_network(tmp_path / "networks" / "reduced")
    assert net_r.widths == net_o.widths
    assert count_params(vars_r) == count_params(vars_o)
    check_results(tmp_path)


def test_manual_mode_accepts_every_round(tmp_path):
    cfg = compose_config([*TINY_TOY, "reduce.mode=manual", "reduce.thresholds=[0.999,0.9]",
                          "reduce.finetune_epochs=0"])
    summary = train_and_reduce(cfg, tmp_path)
    rows = list(csv.DictReader((tmp_path / "curve.csv").open()))
    assert [r["threshold"] for r in rows] == ["0.999", "0.9"]
    assert all(r["accepted"] == "True" for r in rows)
    assert summary["accepted_round"] == 1 and summary["threshold"] == 0.9
    # a lower threshold merges at least as much, and no fine-tuning changes nothing
    assert int(rows[1]["params"]) <= int(rows[0]["params"]) <= summary["original_params"]
    assert summary["reduced_params"] == int(rows[1]["params"])
    for r in rows:
        assert r["metric_before_finetune"] == r["metric_after_finetune"]


def test_zero_epochs_is_refused_or_works(tmp_path):
    cfg = compose_config([*TINY_TOY, "train.epochs=0"])
    try:
        train_and_reduce(cfg, tmp_path)
    except ConfigError as e:
        assert "train.epochs" in str(e)
        assert not (tmp_path / "config.yaml").exists()


def test_scalar_thresholds_are_a_config_error():
    cfg = compose_config([*TINY_TOY, "reduce.mode=manual", "reduce.thresholds=0.9"])
    with pytest.raises(ConfigError, match="reduce.thresholds"):
        validate_config(cfg)


def test_unknown_tolerance_mode_is_a_config_error():
    cfg = compose_config([*TINY_TOY, "reduce.auto.tolerance_mode=relatve"])
    with pytest.raises(ConfigError, match="reduce.auto.tolerance_mode"):
        validate_config(cfg)


@pytest.mark.parametrize("override, key", [
    ("model.widths=[4,0]", "model.widths"),
    ("model.widths=[]", "model.widths"),
    ("model.arch=transformer", "model.arch"),
    ("model.activation=foo", "model.activation"),
    ("reduce.method=bogus", "reduce.method"),
    ("reduce.mode=sometimes", "reduce.mode"),
    ("reduce.auto.start=1.5", "reduce.auto.start"),
    ("reduce.finetune_epochs=-1", "reduce.finetune_epochs"),
    ("train.batch_size=0", "train.batch_size"),
])
def test_invalid_config_is_refused_before_any_work(tmp_path, override, key):
    cfg = compose_config([*TINY_TOY, override])
    with pytest.raises(ConfigError, match=f"invalid config: {key}="):
        train_and_reduce(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_new_reduce_settings_keep_the_trained_original(reference, tmp_path):
    """Only reduce.* changed: no training again; the rounds start over from the original and
    end where a run made with those settings from the start ends."""
    cfg, ref_dir, _, _ = reference
    workdir = tmp_path / "run"
    shutil.copytree(ref_dir, workdir)
    new = compose_config([*TINY_TOY, "reduce.mode=manual", "reduce.thresholds=[0.9]"])
    with pytest.MonkeyPatch.context() as mp:
        calls = count_calls(mp)
        summary = train_and_reduce(new, workdir)
    assert calls == list(range(new["reduce"]["finetune_epochs"]))  # fine-tuning only
    direct = train_and_reduce(new, tmp_path / "direct")
    assert stable(summary) == stable(direct)
    assert (workdir / "curve.csv").read_text() == (tmp_path / "direct" / "curve.csv").read_text()
    events = [json.loads(line)["event"] for line in (workdir / "metrics.jsonl").open()]
    assert "reduce_anew" in events


def interrupt_inside_epoch(monkeypatch, at_save: int) -> list[dict]:
    """Wrap fit_module.train_epoch: record its keyword arguments and raise KeyboardInterrupt
    right after the ``at_save``-th checkpoint taken inside an epoch."""
    calls, saves = [], []
    real = fit_module.train_epoch

    def wrapped(*args, **kwargs):
        calls.append({k: kwargs[k] for k in ("epoch", "start_step", "loss_sum")})
        inner = kwargs["save"]

        def save(*a):
            inner(*a)
            saves.append(a[1])
            if len(saves) == at_save:
                raise KeyboardInterrupt(f"interrupted after in-epoch save {at_save}")

        return real(*args, **{**kwargs, "save": save})

    monkeypatch.setattr(fit_module, "train_epoch", wrapped)
    return calls


# 2 steps per epoch and a checkpoint after step 1 of each: saves 1-3 in training, 4-5 in the
# fine-tuning of round 0
@pytest.mark.parametrize("at_save", [2, 5], ids=["training", "fine-tuning"])
def test_resume_inside_an_epoch_continues_from_the_data_position(reference, tmp_path, monkeypatch,
                                                                 at_save):
    _, ref_dir, ref_summary, _ = reference
    cfg = compose_config([*TINY_TOY, "train.checkpoint_every_steps=1"])
    workdir = tmp_path / "run"
    interrupt_inside_epoch(monkeypatch, at_save)
    with pytest.raises(KeyboardInterrupt):
        train_and_reduce(cfg, workdir)

    calls = interrupt_inside_epoch(monkeypatch, at_save=-1)
    summary = train_and_reduce(cfg, workdir)
    # the interrupted epoch continues at step 1 with the loss sum of step 0, not from the start
    assert calls[0]["start_step"] == 1 and calls[0]["loss_sum"] > 0
    assert all(c["start_step"] == 0 for c in calls[1:])
    # checkpointing inside epochs changes nothing: the same result as the reference run
    assert stable(summary) == stable(ref_summary)
    assert (workdir / "curve.csv").read_text() == (ref_dir / "curve.csv").read_text()
    losses = [(r["phase"], r.get("round"), r["epoch"], r["train_loss"])
              for r in map(json.loads, (ref_dir / "metrics.jsonl").open()) if r["event"] == "epoch"]
    resumed = [(r["phase"], r.get("round"), r["epoch"], r["train_loss"])
               for r in map(json.loads, (workdir / "metrics.jsonl").open()) if r["event"] == "epoch"]
    assert resumed == losses


def test_same_seed_and_config_give_an_identical_run(reference, tmp_path):
    """Determinism on CPU: summary, curve, every logged loss and the reduced network's arrays."""
    cfg, ref_dir, ref_summary, _ = reference
    summary = train_and_reduce(cfg, tmp_path)
    assert stable(summary) == stable(ref_summary)
    assert (tmp_path / "curve.csv").read_text() == (ref_dir / "curve.csv").read_text()

    def records(folder):  # (other tests rerun the reference: it also logged resume, done)
        return [{k: v for k, v in r.items() if k != "time"}
                for r in map(json.loads, (folder / "metrics.jsonl").open())
                if r["event"] in ("init", "epoch", "original", "condensed", "round")]

    assert records(tmp_path) == records(ref_dir)
    for which in ("original", "reduced"):
        _, a, _ = load_network(tmp_path / "networks" / which)
        _, b, _ = load_network(ref_dir / "networks" / which)
        assert jax.tree.all(jax.tree.map(lambda x, y: bool((x == y).all()), a, b)), which


def test_a_different_seed_gives_a_different_run(reference, tmp_path):
    """The control of the test above: it can fail."""
    cfg, _, ref_summary, _ = reference
    summary = train_and_reduce({**cfg, "seed": 1}, tmp_path)
    assert summary["original_metric"] != ref_summary["original_metric"]


def read_events(folder) -> dict[str, list[tuple[int, float]]]:
    """Scalars of the TensorBoard event files in ``folder`` (TFRecord frames of Event protos)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_tensorboard_logger_writes_the_logged_metrics(reference, tmp_path):
    pytest.importorskip("tensorboardX")
    _, _, ref_summary, _ = reference
    cfg = compose_config([*TINY_TOY, "logger=tensorboard"])
    summary = train_and_reduce(cfg, tmp_path)
    assert stable(summary) == stable(ref_summary)  # the logger does not change the run
    events = read_events(tmp_path / "tensorboard")
    logged = [r for r in map(json.loads, (tmp_path / "metrics.jsonl").open())
              if r["event"] == "epoch" and r["phase"] == "train"]
    assert [s for s, _ in events["train/train_loss"]] == [r["epoch"] for r in logged]
    assert [v for _, v in events["train/train_loss"]] == pytest.approx(
        [r["train_loss"] for r in logged], rel=1e-6)
    assert [v for _, v in events["train/val_loss"]] == pytest.approx(
        [r["val_loss"] for r in logged], rel=1e-6)
    rounds = list(csv.DictReader((tmp_path / "curve.csv").open()))
    assert [v for _, v in events["reduce/size_ratio"]] == pytest.approx(
        [float(r["size_ratio"]) for r in rounds], rel=1e-6)
    assert "finetune/round0/train_loss" in events
    assert [v for _, v in events["train/groups/Dense_1"]] == [r["groups"]["Dense_1"] for r in logged]


def damage(checkpoint, what: str) -> None:
    """Garbage over a checkpoint's run state (``meta``), its arrays, or both."""
    files = []
    if what in ("meta", "both"):
        files.append(checkpoint / "meta" / "metadata")
    if what in ("arrays", "both"):
        files += [p for p in (checkpoint / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    for p in files:
        p.write_bytes(b"\x00garbage{" * 40)


@pytest.mark.parametrize("what", ["meta", "arrays", "both"])
def test_a_damaged_checkpoint_is_named_and_the_previous_one_resumes(reference, tmp_path, monkeypatch,
                                                                    capsys, what):
    cfg, ref_dir, ref_summary, _ = reference
    workdir = tmp_path / "run"
    count_calls(monkeypatch, fail_on=5)  # in the fine-tuning of round 0
    with pytest.raises(KeyboardInterrupt):
        train_and_reduce(cfg, workdir)
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    latest = workdir / "checkpoints" / str(steps[-1])
    damage(latest, what)
    capsys.readouterr()

    count_calls(monkeypatch)
    summary = train_and_reduce(cfg, workdir)
    err = capsys.readouterr().err
    assert f"checkpoint {latest} is damaged" in err and f"resuming from checkpoint {steps[-2]}" in err
    assert stable(summary) == stable(ref_summary)
    assert (workdir / "curve.csv").read_text() == (ref_dir / "curve.csv").read_text()
    assert any((workdir / "checkpoints.damaged").iterdir())  # set aside, not deleted
    events = [json.loads(line)["event"] for line in (workdir / "metrics.jsonl").open()]
    assert "damaged_checkpoint" in events


def test_when_every_checkpoint_is_damaged_the_run_says_how_to_start_over(tmp_path, monkeypatch):
    cfg = compose_config(TINY_TOY)
    workdir = tmp_path / "run"
    count_calls(monkeypatch, fail_on=3)
    with pytest.raises(KeyboardInterrupt):
        train_and_reduce(cfg, workdir)
    for p in (workdir / "checkpoints").iterdir():
        if p.name.isdigit():
            damage(p, "meta")
    with pytest.raises(ConfigError, match="every checkpoint in .* is damaged.*fresh=true"):
        train_and_reduce(cfg, workdir)
    cfg["fresh"] = True
    assert train_and_reduce(cfg, workdir)["reduced_params"] > 0
