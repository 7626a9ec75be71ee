"""Train, then reduce in rounds of reduce -> fine-tune; resumable; writes the run directory.

``train_and_reduce(cfg, workdir)`` takes the resolved config as a plain dict and runs four
phases, each a function below: :func:`train_original`, :func:`record_original`, the
:func:`reduction_round` s and :func:`finish`. What a phase leaves behind is in the run state
(:class:`~condensation.runstate.RunState`), checkpointed with the train state after every epoch
and round, so a run started again with the same config and directory continues where it
stopped. The run directory always holds: ``config.yaml``, ``metrics.jsonl``, ``checkpoints/``,
``networks/original`` and ``networks/reduced`` (widths + variables), ``summary.json``,
``curve.csv`` and ``size_vs_metric.png``.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import yaml
from absl import logging as absl_logging

from condensation.allocate import importance_widths, reconstruction_widths
from condensation.compensate import RIDGE
from condensation.condense import count_groups
from condensation.config import reduce_outcome, validate_config
from condensation.errors import ConfigError
from condensation.files import atomic_write_text, write_csv, write_json
from condensation.fit import Loop, fit
from condensation.metrics_log import MetricsLog
from condensation.network import Network, build_network, check_shapes, count_flops, count_params
from condensation.plots import plot_size_vs_metric
from condensation.provenance import git_commit, machine
from condensation.reduction import Method, Round, Schedule, Setup, Stages, Start, method
from condensation.rundir import check_run_dir, clear_run_dir, load_targets
from condensation.runstate import Checkpoints, RoundState, RunState
from condensation.saved import load_network, save_network
from condensation.tasks import Task, make_task
from condensation.train import Distill, TrainState, create_train_state, evaluate, make_optimizer

CURVE_COLUMNS = ["round", "threshold", "params", "size_ratio", "metric_before_finetune",
                 "metric_after_finetune", "val_before_finetune", "val_after_finetune", "accepted",
                 "widths", "flops"]


@dataclass
class Run:
    """What one process works with: rebuilt from the config at every start; only ``state``
    (and ``train_state``) come from the checkpoint."""

    cfg: dict[str, Any]
    workdir: Path
    task: Task
    net: Network
    method: Method
    setup: Setup
    schedule: Schedule
    ckpt: Checkpoints
    log: MetricsLog
    commit: str
    state: RunState = field(default_factory=RunState)
    train_state: TrainState | None = None  # restored from the checkpoint, until used
    t_start: float = field(default_factory=time.time)
    elapsed0: float = 0.0

    @property
    def nets(self) -> Path:
        return self.workdir / "networks"

    @property
    def seed(self) -> int:
        return int(self.cfg["seed"])

    @property
    def batch_size(self) -> int:
        return int(self.cfg["train"]["batch_size"])

    @property
    def steps_per_epoch(self) -> int:
        n = len(self.task.train[0])
        return max(1, n // min(self.batch_size, n))

    def save(self, state: Any) -> None:
        self.state.elapsed_s = self.elapsed0 + time.time() - self.t_start
        self.ckpt.save(state, self.state)

    def measure(self, net: Network, variables, extra: bool = False) -> dict[str, Any]:
        """Metric and loss on the validation and test splits (and the task's extra evaluation)."""
        module, task = net.module(), self.task
        bs = int(self.cfg["train"].get("eval_batch_size", 4096))
        val = evaluate(variables, task.val, module=module, loss=task.loss, batch_size=bs)
        test = evaluate(variables, task.test, module=module, loss=task.loss, batch_size=bs)
        out = {"val": val[task.metric], "test": test[task.metric],
               "val_loss": val["loss"], "test_loss": test["loss"]}
        if extra and task.extra_eval is not None:
            out["extra"] = task.extra_eval(net, variables, "test")
        return out

    def abstract_state(self, net: Network, tx: optax.GradientTransformation) -> TrainState:
        x = jnp.zeros((1, *self.task.input_shape), jnp.float32)
        return jax.eval_shape(lambda: create_train_state(
            net.module().init(jax.random.PRNGKey(0), x), tx, jax.random.PRNGKey(0)))

    def train_tx(self) -> optax.GradientTransformation:
        return make_optimizer(self.setup.optim(), self.steps_per_epoch, int(self.cfg["train"]["epochs"]))

    def round_tx(self, r: int) -> tuple[int, optax.GradientTransformation]:
        epochs, optim = self.method.budget(self.setup, r)
        return epochs, make_optimizer(optim, self.steps_per_epoch, max(epochs, 1))


def train_and_reduce(cfg: dict[str, Any], workdir: str | Path) -> dict[str, Any]:
    """Run (or resume) one experiment into ``workdir``; returns the summary."""
    run = open_run(cfg, Path(workdir))
    # a trained original from elsewhere (the method's start hook), loaded once for both phases
    start = run.method.start(run.setup) if run.state.phase in ("train", "original") else None
    if run.state.phase == "train":
        train_original(run, start)
    if run.state.phase == "original":
        record_original(run, start)
    while run.state.phase == "reduce":
        reduction_round(run)
    return finish(run)


# ---- setting up: everything that can refuse the config runs before the directory is touched --

def _targets(cfg: dict[str, Any], meth: Method) -> tuple[Path | None, tuple]:
    """A baseline's condensation run (``reduce.targets``) and the sizes it matches. With
    ``reduce.mode=target`` the baseline has its own sizes and needs no condensation run; but
    when it trains no original of its own (``reduce.original`` null) and ``reduce.targets`` is
    a finished condensation run, it reduces that run's original, as in the other modes (the very
    same network, not a retrained one)."""
    rcfg = cfg["reduce"]
    if not meth.needs_targets:
        return None, ()
    if rcfg["mode"] != "target":
        return load_targets(cfg, meth.own_model_keys)
    folder = rcfg.get("targets")
    if rcfg.get("original") is None and folder is not None and (Path(folder) / "curve.csv").is_file():
        return load_targets(cfg, meth.own_model_keys)[0], ()
    return None, ()


def open_run(cfg: dict[str, Any], workdir: Path) -> Run:
    commit = git_commit()  # the code this process runs (later commits do not change it)
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
    validate_config(cfg)
    meth = method(cfg["reduce"]["method"])
    targets_dir, targets = _targets(cfg, meth)
    reduce_anew = check_run_dir(workdir, cfg)
    try:  # before the run directory is touched (fresh=true empties it): bad data lose nothing
        task = make_task(cfg["data"], int(cfg["seed"]), workdir)
    except ConfigError:
        raise
    except (ValueError, FileNotFoundError) as e:  # a missing mechanism, data folder, bad arrays
        raise ConfigError(f"data ({cfg['data'].get('name')}): {e}") from e
    if cfg.get("fresh"):
        clear_run_dir(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(workdir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    log = MetricsLog(workdir / "metrics.jsonl",
                     tensorboard=workdir / "tensorboard" if cfg.get("logger") == "tensorboard" else None)
    net = build_network(cfg["model"], task.output_dim)
    setup = Setup(cfg, task.higher_is_better, targets_dir, targets, net, task.input_shape)
    run = Run(cfg, workdir, task, net, meth, setup, meth.schedule(setup),
              Checkpoints(workdir / "checkpoints"), log, commit)
    resume(run, reduce_anew)
    return run


def resume(run: Run, reduce_anew: bool) -> None:
    """Take the newest intact checkpoint, if any; with new reduction settings, keep the trained
    original and start the rounds over."""
    rcfg = run.cfg["reduce"]

    def changed(st: RunState) -> bool:
        previous = st.reduce_cfg if st.reduce_cfg is not None or reduce_anew else rcfg
        return previous is None or reduce_outcome(previous) != reduce_outcome(rcfg)

    def abstract(st: RunState) -> TrainState | None:
        if st.phase == "train":
            return run.abstract_state(run.net, run.train_tx())
        if st.phase == "reduce" and st.round_state is not None and not changed(st):
            return run.abstract_state(run.net.with_widths(st.round_state.widths),
                                      run.round_tx(st.round)[1])
        return None  # nothing of the train state is needed to go on

    def report(message: str) -> None:
        print(message, file=sys.stderr)
        run.log.log(event="damaged_checkpoint", message=message)

    restored = run.ckpt.restore(abstract, report)
    if restored is None:
        run.log.log(event="start", network=run.net.to_dict(), commit=run.commit, machine=machine())
    else:
        run.state, run.train_state = restored
        st = run.state
        run.log.log(event="resume", phase=st.phase, epoch=st.epoch, round=st.round, commit=run.commit,
                    machine=machine())
        if changed(st) and st.phase != "train":
            _, original_vars, _ = load_network(run.nets / "original")
            save_network(run.nets / "reduced", run.net, original_vars, metrics=st.original, round=None)
            st.phase, st.round, st.rows, st.accepted_round, st.reduced = "reduce", 0, [], None, st.original
            st.start_round()
            run.train_state = None
            run.log.log(event="reduce_anew", reduce=rcfg)
    run.state.reduce_cfg = rcfg
    run.elapsed0 = run.state.elapsed_s


# ---- phase 1: the original -------------------------------------------------------------------

def train_original(run: Run, start: Start | None) -> None:
    """Train the original network, keeping the epoch the task's selection prefers in
    ``networks/best`` — unless the method starts from another run's trained network."""
    if start is not None:
        check_shapes(run.net, start.variables, run.task.input_shape)
        run.state.best = {"score": None, "epoch": start.epoch, "from": start.source}
        run.state.phase = "original"
        return
    tcfg, tx = run.cfg["train"], run.train_tx()
    state = run.train_state
    if state is None:
        x = jnp.zeros((1, *run.task.input_shape), jnp.float32)
        variables = run.net.module().init(jax.random.PRNGKey(run.seed), x)
        state = create_train_state(variables, tx, jax.random.PRNGKey(run.seed + 1))
        run.log.log(event="init", params=count_params(variables), widths=list(run.net.widths),
                    **_tracked_groups(run, variables))
    run.train_state = None
    epochs = int(tcfg["epochs"])
    loop = Loop(run.net.module(), tx, run.task, run.seed, run.batch_size, "train",
                int(tcfg.get("checkpoint_every", 1)), int(tcfg.get("checkpoint_every_steps") or 0))
    fit(state, run.state, loop, epochs, save=run.save,
        log=lambda **rec: run.log.log(event="epoch", phase="train", **rec),
        after_epoch=lambda epoch, st: _validate_and_select(run, epoch, st, epochs))
    run.state.phase = "original"


def _validate_and_select(run: Run, epoch: int, state: TrainState, epochs: int) -> dict[str, Any]:
    """The validation metrics of a training epoch; every ``select_every`` epochs (and at the
    last) the selection score, and the network itself when it is the best so far."""
    task = run.task
    val = evaluate(state.variables, task.val, module=run.net.module(), loss=task.loss,
                   batch_size=int(run.cfg["train"].get("eval_batch_size", 4096)))
    rec = {f"val_{k}": v for k, v in val.items()} | _tracked_groups(run, state.variables)
    if (epoch + 1) % int(run.cfg["train"].get("select_every", 1)) == 0 or epoch + 1 == epochs:
        score = task.selection(run.net, state.variables) if task.selection else val["loss"]
        rec["select"] = score
        best = run.state.best
        if best is None or score < best["score"]:
            run.state.best = {"score": score, "epoch": epoch + 1}
            save_network(run.nets / "best", run.net, state.variables, epoch=epoch + 1)
    return rec


def _tracked_groups(run: Run, variables) -> dict[str, Any]:
    """The condensation diagnostic: each group's number of groups at a fixed cosine."""
    t = run.cfg["train"].get("track_groups_at")
    return {} if t is None else {"groups_at": t, "groups": count_groups(variables, run.net.spec(), t)}


def record_original(run: Run, start: Start | None) -> None:
    """Measure the original (with the task's extra evaluation) and save it; it is also the
    reduced network until a round is accepted."""
    variables = start.variables if start is not None else load_network(run.nets / "best")[1]
    orig = run.measure(run.net, variables, extra=True)
    orig.update(params=count_params(variables), flops=count_flops(run.net, run.task.input_shape),
                widths=list(run.net.widths), epoch=run.state.best["epoch"])
    save_network(run.nets / "original", run.net, variables, metrics=orig)
    save_network(run.nets / "reduced", run.net, variables, metrics=orig, round=None)
    run.log.log(event="original", **orig)
    run.state.phase, run.state.original, run.state.reduced = "reduce", orig, orig
    run.save(variables)


# ---- phase 2: rounds of reduce -> fine-tune --------------------------------------------------

def reduction_round(run: Run) -> None:
    """One round: reduce the last accepted network, fine-tune it, accept it or stop."""
    st, r = run.state, run.state.round
    rnd = run.schedule.next_round(r)
    if rnd is None:
        st.phase = "done"
        return
    epochs, tx = run.round_tx(r)
    if st.round_state is None:
        red_net, state = _reduce(run, rnd, tx)
    else:
        red_net, state = run.net.with_widths(st.round_state.widths), run.train_state
    run.train_state = None
    label = f"tau={rnd.threshold:g}" if rnd.threshold is not None else f"{st.round_state.params:,} params"
    loop = Loop(red_net.module(), tx, run.task, run.seed * 1000 + r + 1, run.batch_size,
                f"round {r} ({label})", 1, int(run.cfg["train"].get("checkpoint_every_steps") or 0),
                *_teacher(run))
    state = fit(state, st, loop, epochs, save=run.save,
                log=lambda **rec: run.log.log(event="epoch", phase="finetune", round=r, **rec))
    _end_round(run, red_net, state)


def _reduce(run: Run, rnd: Round, tx: optax.GradientTransformation) -> tuple[Network, TrainState]:
    st, r = run.state, run.state.round
    base_net, base_vars, _ = load_network(run.nets / "reduced")
    target = rnd.target if rnd.fraction is None else _allocated(run, rnd.fraction, base_net.widths)
    red_net, red_vars = run.method.reduce(
        run.net.with_widths(base_net.widths), base_vars, threshold=rnd.threshold, target=target,
        activation=run.cfg["model"]["activation"], input_shape=run.task.input_shape,
        rng=jax.random.PRNGKey(run.seed + 100 + r), stages=_stages(run, r))
    before = run.measure(red_net, red_vars)
    st.start_round()
    st.round_state = RoundState(rnd.threshold, list(red_net.widths), count_params(red_vars), before)
    state = create_train_state(red_vars, tx, jax.random.PRNGKey(run.seed + 200 + r))
    run.log.log(event="condensed", round=r, threshold=rnd.threshold, widths=list(red_net.widths),
                params=st.round_state.params, **{f"before_{k}": v for k, v in before.items()})
    run.save(state)
    return red_net, state


def _allocated(run: Run, fraction: float, current: tuple[int, ...]) -> tuple[int, ...]:
    """``reduce.widths=importance`` or ``reconstruction``: widths for ``fraction`` of the
    parameters, from the original and the first round's calibration inputs (the same for every
    method and round), none above the ``current`` widths (a later round only shrinks a layer)."""
    net, variables, _ = load_network(run.nets / "original")
    allocate = {"importance": importance_widths,
                "reconstruction": reconstruction_widths}[run.cfg["reduce"]["widths"]]
    widths = allocate(net, variables, fraction, run.task.input_shape, _stages(run, 0).calib)
    return tuple(min(w, c) for w, c in zip(widths, current, strict=True))


def _teacher(run: Run) -> tuple[Distill | None, Any]:
    """``reduce.distill``: fine-tune towards the original's outputs with that weight."""
    rcfg = run.cfg["reduce"]
    if not rcfg.get("distill"):
        return None, None
    _, original_vars, _ = load_network(run.nets / "original")
    return (Distill(run.net.module(), float(rcfg["distill"]),
                    float(rcfg.get("distill_temperature") or 4.0)),
            jax.tree.map(jnp.asarray, original_vars))


def calibration_inputs(x: np.ndarray, n: int, seed: int, r: int) -> np.ndarray:
    """Round ``r``'s calibration inputs: ``n`` of ``x`` (all when fewer), drawn from the seed
    and the round, in their original order."""
    pick = np.sort(np.random.default_rng([seed, 300 + r]).choice(len(x), min(n, len(x)), replace=False))
    return x[pick]


def _stages(run: Run, r: int) -> Stages:
    """The configured stages after selection, with ``reduce.calibration`` training inputs
    (a subset drawn from the seed and the round; default 2048) as their data."""
    rcfg = run.cfg["reduce"]
    calib = calibration_inputs(run.task.train[0], int(rcfg.get("calibration") or 2048), run.seed, r)
    return Stages(compensate=rcfg.get("compensate") == "lstsq", repair=rcfg.get("repair") == "bn",
                  calib=calib, augment=run.task.augment,
                  fold_constant=rcfg.get("constant_units") == "fold",
                  zero_dead_inputs=rcfg.get("dead_inputs") == "zero",
                  similarity=rcfg.get("similarity") or "weights", merge=rcfg.get("merge") or "sum",
                  ridge=float(rcfg.get("ridge") or RIDGE))


def _end_round(run: Run, red_net: Network, state: TrainState) -> None:
    st, rs, r = run.state, run.state.round_state, run.state.round
    after = run.measure(red_net, state.variables)
    accepted = run.schedule.accepts(after["val"], st.original["val"])
    row = {"round": r, "threshold": rs.threshold, "params": rs.params,
           "size_ratio": rs.params / st.original["params"],
           "metric_before_finetune": rs.before["test"], "metric_after_finetune": after["test"],
           "val_before_finetune": rs.before["val"], "val_after_finetune": after["val"],
           "accepted": accepted, "widths": " ".join(map(str, rs.widths)),
           "flops": count_flops(red_net, run.task.input_shape)}
    run.log.log(event="round", **row)
    st.rows.append(row)
    if accepted:
        st.accepted_round = r
        st.reduced = {"val": after["val"], "test": after["test"], "params": rs.params,
                      "widths": rs.widths, "before": rs.before["test"], "flops": row["flops"],
                      "threshold": rs.threshold}
        save_network(run.nets / "reduced", red_net, state.variables, round=r, threshold=rs.threshold)
    else:
        st.phase = "done"  # roll back: the previous accepted network stays the result
    st.round = r + 1
    st.start_round()
    run.save(state)


# ---- phase 3: the results --------------------------------------------------------------------

def finish(run: Run) -> dict[str, Any]:
    """Write summary.json, curve.csv, the size-versus-metric plot and the task's figures."""
    task, st = run.task, run.state
    red_net, red_vars, _ = load_network(run.nets / "reduced")
    red_net = run.net.with_widths(red_net.widths)
    if "extra" not in st.reduced and task.extra_eval is not None:
        st.reduced["extra"] = task.extra_eval(red_net, red_vars, "test")
    summary = _summary(run, run.elapsed0 + time.time() - run.t_start)
    if task.finalize is not None:
        _, orig_vars, _ = load_network(run.nets / "original")
        task.finalize(run.workdir, (run.net, orig_vars), (red_net, red_vars))
    write_csv(run.workdir / "curve.csv", st.rows, CURVE_COLUMNS)
    write_json(run.workdir / "summary.json", summary)
    plot_size_vs_metric(run.workdir)
    run.log.log(event="done", **{k: v for k, v in summary.items() if not isinstance(v, dict)})
    run.log.close()
    print(json.dumps({k: summary[k] for k in ("original_params", "reduced_params", "size_ratio",
                                              "metric", "original_metric",
                                              "reduced_metric_after_finetune")}, indent=1))
    return summary


def _pipeline(rcfg: dict[str, Any]) -> dict[str, Any]:
    """The reduction's stages as configured: selection, sizes, compensation, repair, fine-tuning."""
    return {"select": rcfg["method"], "mode": rcfg["mode"],
            "target": rcfg.get("target_sizes") or rcfg.get("target"),
            "widths": rcfg.get("widths") or ("uniform" if rcfg["mode"] == "target" else None),
            "similarity": rcfg.get("similarity") or "weights", "merge": rcfg.get("merge") or "sum",
            "constant_units": rcfg.get("constant_units") or "keep",
            "dead_inputs": rcfg.get("dead_inputs") or "keep",
            "compensate": rcfg.get("compensate") or "none",
            **({"ridge": rcfg["ridge"]} if rcfg.get("ridge") is not None else {}),
            "repair": rcfg.get("repair") or "none",
            "calibration": rcfg.get("calibration") or 2048,
            "finetune_epochs": rcfg["finetune_epochs"], "finetune_lr": rcfg.get("finetune_lr"),
            "distill": rcfg.get("distill") or 0.0}


def _summary(run: Run, wall: float) -> dict[str, Any]:
    task, orig, red = run.task, run.state.original, run.state.reduced
    summary = {
        "experiment": run.cfg.get("name", task.name),
        "original_params": int(orig["params"]),
        "reduced_params": int(red["params"]),
        "size_ratio": red["params"] / orig["params"],
        "metric": f"test_{task.metric}",
        "higher_is_better": task.higher_is_better,
        "log_metric": task.log_metric,
        "original_metric": float(orig["test"]),
        "reduced_metric_before_finetune": float(red.get("before", orig["test"])),
        "reduced_metric_after_finetune": float(red["test"]),
        "original_val_metric": float(orig["val"]),
        "reduced_val_metric": float(red["val"]),
        "widths_before": list(orig["widths"]),
        "widths_after": list(red["widths"]),
        "flops_before": orig["flops"],
        "flops_after": red["flops"],
        "accepted_round": run.state.accepted_round,
        "threshold": red.get("threshold"),
        "rounds": len(run.state.rows),
        "pipeline": _pipeline(run.cfg["reduce"]),
        "original_epoch": orig.get("epoch"),
        "seed": run.seed,
        "commit": run.commit,  # of the process that finished the run (metrics.jsonl: every one)
        "wall_time_s": round(float(wall), 1),
        "machine": machine(),
    }
    if task.extra_eval is not None:
        summary["original_extra"] = orig.get("extra")
        summary["reduced_extra"] = red.get("extra")
    return summary
