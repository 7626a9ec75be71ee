"""Train, then reduce in rounds of condense -> fine-tune; resumable; writes the run directory.

``train_and_reduce(cfg, workdir)`` takes the resolved config as a plain dict. The run directory
always holds: ``config.yaml``, ``metrics.jsonl``, ``checkpoints/`` (orbax, every epoch and
every round), ``networks/original`` and ``networks/reduced`` (widths + variables),
``summary.json``, ``curve.csv`` and ``size_vs_metric.png``. Started again with the same config
and directory, a run continues from its last checkpoint.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
import yaml
from absl import logging as absl_logging
from tqdm.auto import tqdm

from condensation.condense import check_threshold, count_groups
from condensation.io import (
    MetricsLog,
    atomic_write_text,
    git_commit,
    load_network,
    machine,
    save_network,
    write_csv,
    write_json,
)
from condensation.models import ACTIVATIONS
from condensation.network import ARCHITECTURES, Network, check_shapes, count_flops, count_params
from condensation.plots import plot_size_vs_metric
from condensation.reduction import REDUCERS, method
from condensation.tasks import Task, make_task
from condensation.train import (
    OptimConfig,
    TrainState,
    create_train_state,
    evaluate,
    make_optimizer,
    train_epoch,
)

CURVE_COLUMNS = ["round", "threshold", "params", "size_ratio", "metric_before_finetune",
                 "metric_after_finetune", "val_before_finetune", "val_after_finetune", "accepted",
                 "widths", "flops"]


LOGGERS = ("jsonl", "tensorboard")  # jsonl: metrics.jsonl; tensorboard: also <run>/tensorboard


class ConfigError(ValueError):
    """A config value that cannot work; raised before any work is done."""


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"invalid config: {key}={value!r}; allowed: {allowed}")


def validate_config(cfg: dict[str, Any]) -> None:
    model, train, red = cfg["model"], cfg["train"], cfg["reduce"]
    if model.get("arch") not in ARCHITECTURES:
        _fail("model.arch", model.get("arch"), ", ".join(sorted(ARCHITECTURES)))
    widths = model.get("widths")
    if not isinstance(widths, list | tuple) or not widths or any(
        not isinstance(w, int) or isinstance(w, bool) or w <= 0 for w in widths
    ):
        _fail("model.widths", widths, "a non-empty list of positive integers")
    if model.get("activation") not in ACTIVATIONS:
        _fail("model.activation", model.get("activation"), ", ".join(sorted(ACTIVATIONS)))
    if red.get("method") not in REDUCERS:
        _fail("reduce.method", red.get("method"), ", ".join(sorted(REDUCERS)))
    if red.get("mode") not in ("manual", "auto"):
        _fail("reduce.mode", red.get("mode"), "manual, auto")
    if red["mode"] == "manual" and not isinstance(red.get("thresholds"), list | tuple):
        _fail("reduce.thresholds", red.get("thresholds"), "a list of cosine thresholds in (0, 1]")
    thresholds = red["thresholds"] if red["mode"] == "manual" else [red["auto"]["start"]]
    for t in thresholds:
        try:
            check_threshold(t)
        except (TypeError, ValueError):
            _fail("reduce.thresholds" if red["mode"] == "manual" else "reduce.auto.start", t,
                  "cosine thresholds in (0, 1]")
    for key in ("epochs", "batch_size"):
        v = train.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            _fail(f"train.{key}", v, "a positive integer")
    if not (isinstance(train.get("lr"), int | float) and train["lr"] > 0):
        _fail("train.lr", train.get("lr"), "a positive number")
    if red["mode"] == "auto":
        auto = red["auto"]
        if auto.get("tolerance_mode") not in ("relative", "absolute"):
            _fail("reduce.auto.tolerance_mode", auto.get("tolerance_mode"), "relative, absolute")
        if not (isinstance(auto.get("factor"), int | float) and auto["factor"] > 1):
            _fail("reduce.auto.factor", auto.get("factor"), "a number > 1 (1 - tau grows by it)")
        if not (isinstance(auto.get("min_threshold"), int | float) and 0 < auto["min_threshold"] <= 1):
            _fail("reduce.auto.min_threshold", auto.get("min_threshold"), "a number in (0, 1]")
        if not (isinstance(auto.get("max_rounds"), int) and auto["max_rounds"] >= 1):
            _fail("reduce.auto.max_rounds", auto.get("max_rounds"), "an integer >= 1")
    if red.get("sizes", "all") not in ("all", "final"):  # conf/reduce/scratch.yaml
        _fail("reduce.sizes", red.get("sizes"), "all, final (the sizes a scratch baseline trains: "
              "every accepted round of the condensation run in reduce.targets, or only its last)")
    if not isinstance(red.get("finetune_epochs"), int) or red["finetune_epochs"] < 0:
        _fail("reduce.finetune_epochs", red.get("finetune_epochs"), "an integer >= 0")
    if cfg.get("logger", "jsonl") not in LOGGERS:
        _fail("logger", cfg.get("logger"), ", ".join(LOGGERS))
    if cfg.get("logger") == "tensorboard" and importlib.util.find_spec("tensorboardX") is None:
        raise ConfigError("invalid config: logger='tensorboard' needs the tensorboardX package: "
                          "pip install -e '.[tensorboard]' (or logger=jsonl)")
    t = train.get("track_groups_at")
    if t is not None:
        try:
            check_threshold(t)
        except (TypeError, ValueError):
            _fail("train.track_groups_at", t, "a cosine threshold in (0, 1], or null (off)")
    v = train.get("checkpoint_every_steps", 0)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        _fail("train.checkpoint_every_steps", v, "an integer >= 0 (0: only at epoch ends)")


def build_network(model_cfg: dict[str, Any], task: Task) -> Network:
    arch = ARCHITECTURES[model_cfg["arch"]]
    options = {k: v for k, v in model_cfg.items()
               if k not in ("name", "arch", "widths", "spec_options")}
    options[arch.output_arg] = task.output_dim
    return Network(arch.name, tuple(model_cfg["widths"]), options,
                   dict(model_cfg.get("spec_options") or {}))


def optim_config(train_cfg: dict[str, Any], **overrides) -> OptimConfig:
    fields = OptimConfig.__dataclass_fields__
    return OptimConfig(**{**{k: v for k, v in train_cfg.items() if k in fields}, **overrides})


class Checkpoints:
    """Orbax checkpoints holding a TrainState and a JSON ``meta`` (phase, epoch, round, ...)."""

    def __init__(self, folder: Path):
        self.mngr = ocp.CheckpointManager(
            folder.absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False),
        )

    def save(self, state: TrainState, meta: dict[str, Any]) -> None:
        step = (self.mngr.latest_step() or 0) + 1
        self.mngr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
        self.mngr.wait_until_finished()

    def latest_meta(self) -> dict[str, Any] | None:
        step = self.mngr.latest_step()
        if step is None:
            return None
        return self.mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore_state(self, abstract: TrainState) -> TrainState:
        step = self.mngr.latest_step()
        return self.mngr.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]


# Keys that change how a run is carried out, not its outcome: a run may resume under other values.
OPERATIONAL = {"fresh": None, "logger": None,
               "train": ("checkpoint_every", "checkpoint_every_steps", "track_groups_at")}
OPERATIONAL_KEYS = tuple(key if sub is None else f"{key}.{k}" for key, sub in OPERATIONAL.items()
                         for k in (sub or (None,)))  # dotted: "fresh", "train.checkpoint_every", ...


def _outcome_config(cfg: dict[str, Any]) -> dict[str, Any]:
    out = dict(cfg)
    for key, sub in OPERATIONAL.items():
        if sub is None:
            out.pop(key, None)
        elif isinstance(out.get(key), dict):
            out[key] = {k: v for k, v in out[key].items() if k not in sub}
    if isinstance(out.get("reduce"), dict):
        out["reduce"] = _reduce_outcome(out["reduce"])
    return out


def _reduce_outcome(rcfg: dict[str, Any]) -> dict[str, Any]:
    """A reduce config without its null keys (a key added later with a null default, like
    ``targets``, leaves older runs as they were)."""
    return {k: v for k, v in rcfg.items() if v is not None}


def load_targets(cfg: dict[str, Any]) -> tuple[Path, list[dict[str, Any]]]:
    """A baseline's sizes: the accepted rounds of the condensation run in ``reduce.targets``
    (run directory; widths, threshold and round of each; only the last with
    ``reduce.sizes=final``), checked against this run's config."""
    rcfg = cfg["reduce"]
    folder = Path(str(rcfg.get("targets")))
    need = [folder / "curve.csv", folder / "config.yaml", folder / "networks" / "original" / "network.json"]
    if rcfg.get("targets") is None or any(not p.is_file() for p in need):
        _fail("reduce.targets", rcfg.get("targets"),
              f"the directory of a finished condensation run (curve.csv, config.yaml, "
              f"networks/original) whose sizes the {rcfg['method']} baseline matches: run "
              "the condensation first, or set reduce.targets=DIR")
    theirs = yaml.safe_load((folder / "config.yaml").read_text())
    if theirs["reduce"]["method"] != "condense":
        _fail("reduce.targets", str(folder), f"a condensation run; {folder} is a "
              f"{theirs['reduce']['method']} run")
    mine, other = _outcome_config(cfg), _outcome_config(theirs)
    if rcfg["method"] == "merge_standard_init":  # trained from another initialization scale
        mine["model"], other["model"] = ({k: v for k, v in c["model"].items() if k != "gamma"}
                                         for c in (mine, other))
    diff = [k for k in ("model", "data", "train", "seed") if mine.get(k) != other.get(k)]
    if diff:
        _fail("reduce.targets", str(folder), f"a run of the same {', '.join(diff)} (it differs "
              "in them): a baseline is compared with the condensation of the same network")
    with (folder / "curve.csv").open() as f:
        rows = [{"widths": tuple(int(w) for w in r["widths"].split()),
                 "threshold": float(r["threshold"]), "round": int(r["round"])}
                for r in csv.DictReader(f) if r["accepted"] == "True"]
    if not rows:
        _fail("reduce.targets", str(folder), "a condensation run with at least one accepted round")
    return folder, rows[-1:] if rcfg.get("sizes", "all") == "final" else rows


def _check_run_dir(workdir: Path, cfg: dict[str, Any]) -> bool:
    """Refuse to resume a run directory that holds a run of another config.

    A run that differs only in ``reduce`` may continue: its trained original is kept and the
    reduction starts over with the new settings. Returns whether that is the case.
    """
    old_path = workdir / "config.yaml"
    if cfg.get("fresh"):
        return False
    if not (workdir / "checkpoints").exists() or not old_path.exists():
        return False
    old, new = _outcome_config(yaml.safe_load(old_path.read_text())), _outcome_config(cfg)
    diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if diff and diff != ["reduce"]:
        raise ConfigError(
            f"{workdir} holds a run with a different config (differs in: {', '.join(diff)}); "
            "choose another hydra.run.dir, or pass fresh=true to start this directory over "
            "(a run that differs only in reduce.* keeps its trained network and reduces anew)"
        )
    return diff == ["reduce"]


def _clear_run_dir(workdir: Path) -> None:
    """fresh=true: remove a previous run's results and checkpoints (its metrics log is kept
    under a time-stamped name)."""
    for name in ("checkpoints", "networks", "surrogate", "tensorboard"):
        shutil.rmtree(workdir / name, ignore_errors=True)
    for name in ("summary.json", "curve.csv", "size_vs_metric.png"):
        (workdir / name).unlink(missing_ok=True)
    if (workdir / "metrics.jsonl").exists():
        (workdir / "metrics.jsonl").rename(workdir / f"metrics.{int(time.time())}.jsonl")


def train_and_reduce(cfg: dict[str, Any], workdir: str | Path) -> dict[str, Any]:
    """Run (or resume) one experiment into ``workdir``; returns the summary."""
    t_start = time.time()
    commit = git_commit()  # the code this process runs (later commits do not change it)
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
    validate_config(cfg)
    meth = method(cfg["reduce"]["method"])
    targets_dir, targets = load_targets(cfg) if meth.needs_targets else (None, None)
    workdir = Path(workdir)
    reduce_anew = _check_run_dir(workdir, cfg)
    seed = int(cfg["seed"])
    try:  # before the run directory is touched (fresh=true empties it): bad data lose nothing
        task = make_task(cfg["data"], seed, workdir)
    except ConfigError:
        raise
    except (ValueError, FileNotFoundError) as e:  # a missing mechanism, data folder, bad arrays
        raise ConfigError(f"data ({cfg['data'].get('name')}): {e}") from e
    if cfg.get("fresh"):
        _clear_run_dir(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    net = build_network(cfg["model"], task)
    # written only once the data are known to be usable: a bad value overwrites nothing
    atomic_write_text(workdir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    log = MetricsLog(workdir / "metrics.jsonl",
                     tensorboard=workdir / "tensorboard" if cfg.get("logger") == "tensorboard" else None)
    ckpt = Checkpoints(workdir / "checkpoints")
    tcfg, rcfg = cfg["train"], cfg["reduce"]
    bs = int(tcfg["batch_size"])
    steps_per_epoch = max(1, len(task.train[0]) // min(bs, len(task.train[0])))
    eval_bs = int(tcfg.get("eval_batch_size", 4096))
    activation = cfg["model"]["activation"]
    nets = workdir / "networks"

    def measure(n: Network, variables, extra: bool = False) -> dict[str, Any]:
        module = n.module()
        val = evaluate(variables, task.val, module=module, loss=task.loss, batch_size=eval_bs)
        test = evaluate(variables, task.test, module=module, loss=task.loss, batch_size=eval_bs)
        out = {"val": val[task.metric], "test": test[task.metric],
               "val_loss": val["loss"], "test_loss": test["loss"]}
        if extra and task.extra_eval is not None:
            out["extra"] = task.extra_eval(n, variables, "test")
        return out

    def abstract_state(n: Network, tx) -> TrainState:
        x = jnp.zeros((1, *task.input_shape), jnp.float32)
        return jax.eval_shape(lambda: create_train_state(
            n.module().init(jax.random.PRNGKey(0), x), tx, jax.random.PRNGKey(0)))

    meta = ckpt.latest_meta()
    if meta is None:
        meta = {"phase": "train", "epoch": 0, "elapsed_s": 0.0, "best": None, "round": 0,
                "rows": [], "round_state": None, "accepted_round": None}
        log.log(event="start", network=net.to_dict(), commit=commit)
    else:
        log.log(event="resume", phase=meta["phase"], epoch=meta["epoch"], round=meta["round"],
                commit=commit)
        # the reduction settings the checkpoint was made with (older checkpoints: config.yaml's)
        previous = meta.get("reduce_cfg", None if reduce_anew else rcfg)
        changed = previous is None or _reduce_outcome(previous) != _reduce_outcome(rcfg)
        if changed and meta["phase"] != "train":
            # new reduction settings: start the rounds over from the trained original
            _, original_vars, _ = load_network(nets / "original")
            save_network(nets / "reduced", net, original_vars, metrics=meta["original"], round=None)
            meta.update(phase="reduce", round=0, rows=[], round_state=None, accepted_round=None,
                        reduced=meta["original"])
            log.log(event="reduce_anew", reduce=rcfg)
    meta["reduce_cfg"] = rcfg
    elapsed0 = meta["elapsed_s"]

    def save(state: TrainState) -> None:
        meta["elapsed_s"] = elapsed0 + time.time() - t_start
        ckpt.save(state, meta)

    every_steps = int(tcfg.get("checkpoint_every_steps") or 0)

    def tracked_groups(variables) -> dict[str, Any]:
        """The condensation diagnostic: each group's number of groups at a fixed cosine."""
        t = tcfg.get("track_groups_at")
        return {} if t is None else {"groups_at": t, "groups": count_groups(variables, net.spec(), t)}

    def resume_inside(holder: dict[str, Any], epoch: int, save_state) -> dict[str, Any]:
        """train_epoch's arguments to checkpoint inside an epoch and to continue from such a
        checkpoint; the data position lives in ``holder["position"]`` (meta or round state)."""
        pos = holder.get("position")
        start = pos if pos and pos["epoch"] == epoch else {"step": 0, "loss_sum": 0.0}
        holder["position"] = None  # set again by every save inside this epoch

        def save_inside(state: TrainState, step: int, loss_sum: float) -> None:
            holder["position"] = {"epoch": epoch, "step": step, "loss_sum": loss_sum}
            save_state(state)
            holder["position"] = None

        return {"start_step": start["step"], "loss_sum": start["loss_sum"],
                "save_every": every_steps, "save": save_inside}

    # ---- phase 1: train the original network --------------------------------------------
    if meta["phase"] == "train" and meth.reuses_original:
        # a baseline that starts from the condensation run's trained network
        _, original_vars, their = load_network(targets_dir / "networks" / "original")
        check_shapes(net, original_vars, task.input_shape)
        meta["best"] = {"score": None, "epoch": their.get("metrics", {}).get("epoch"),
                        "from": str(targets_dir)}
        meta["phase"] = "original"
        state = create_train_state(original_vars, make_optimizer(optim_config(tcfg), 1, 1),
                                   jax.random.PRNGKey(seed + 1))  # what the checkpoint holds
    if meta["phase"] == "train":
        epochs = int(tcfg["epochs"])
        tx = make_optimizer(optim_config(tcfg), steps_per_epoch, epochs)
        if meta["epoch"] == 0:
            x = jnp.zeros((1, *task.input_shape), jnp.float32)
            variables = net.module().init(jax.random.PRNGKey(seed), x)
            state = create_train_state(variables, tx, jax.random.PRNGKey(seed + 1))
            log.log(event="init", params=count_params(variables), widths=list(net.widths),
                    **tracked_groups(variables))
        else:
            state = ckpt.restore_state(abstract_state(net, tx))
        module = net.module()
        select_every = int(tcfg.get("select_every", 1))
        ckpt_every = int(tcfg.get("checkpoint_every", 1))
        for epoch in tqdm(range(meta["epoch"], epochs), desc="train", initial=meta["epoch"],
                          total=epochs, mininterval=2):
            state, m = train_epoch(state, task.train, module=module, tx=tx, loss=task.loss,
                                   batch_size=bs, seed=seed, epoch=epoch, augment=task.augment,
                                   **resume_inside(meta, epoch, save))
            val = evaluate(state.variables, task.val, module=module, loss=task.loss,
                           batch_size=eval_bs)
            rec = {"event": "epoch", "phase": "train", "epoch": epoch + 1, **m,
                   **{f"val_{k}": v for k, v in val.items()}, **tracked_groups(state.variables)}
            last = epoch + 1 == epochs
            if (epoch + 1) % select_every == 0 or last:
                score = (task.selection(net, state.variables) if task.selection is not None
                         else val["loss"])
                rec["select"] = score
                if meta["best"] is None or score < meta["best"]["score"]:
                    meta["best"] = {"score": score, "epoch": epoch + 1}
                    save_network(nets / "best", net, state.variables, epoch=epoch + 1)
            log.log(**rec)
            meta["epoch"] = epoch + 1
            if (epoch + 1) % ckpt_every == 0 or last:
                save(state)
        _, original_vars, _ = load_network(nets / "best")
        meta["phase"] = "original"
    if meta["phase"] == "original":
        orig = measure(net, original_vars, extra=True)
        orig.update(params=count_params(original_vars), flops=count_flops(net, task.input_shape),
                    widths=list(net.widths), epoch=meta["best"]["epoch"])
        save_network(nets / "original", net, original_vars, metrics=orig)
        save_network(nets / "reduced", net, original_vars, metrics=orig, round=None)
        log.log(event="original", **orig)
        meta.update(phase="reduce", original=orig, reduced=orig)
        save(state)

    # ---- phase 2: rounds of reduce -> fine-tune --------------------------------------------
    orig = meta["original"]
    tol_ok = _tolerance(rcfg, task, orig["val"])
    while meta["phase"] == "reduce":
        r = meta["round"]
        if targets is not None:  # a baseline: the sizes of the condensation run's rounds
            threshold, target = ((targets[r]["threshold"], targets[r]["widths"]) if r < len(targets)
                                 else (None, None))
        else:
            threshold, target = _threshold(rcfg, r), None
        if threshold is None:
            meta["phase"] = "done"
            break
        ft_epochs = int(rcfg["finetune_epochs"])
        if meth.from_scratch:  # the training schedule, for as many epochs as the merged network got
            ft_epochs = int(tcfg["epochs"]) + (targets[r]["round"] + 1) * ft_epochs
            tx = make_optimizer(optim_config(tcfg), steps_per_epoch, ft_epochs)
        else:
            ft_lr = float(rcfg.get("finetune_lr") or tcfg["lr"])
            tx = make_optimizer(optim_config(tcfg, lr=ft_lr, warmup_epochs=0.0), steps_per_epoch,
                                max(ft_epochs, 1))
        rs = meta["round_state"]
        if rs is None:
            base_net, base_vars, _ = load_network(nets / "reduced")
            base_net = net.with_widths(base_net.widths)
            red_net, red_vars = meth.reduce(
                base_net, base_vars, threshold=threshold, target=target, activation=activation,
                input_shape=task.input_shape, rng=jax.random.PRNGKey(seed + 100 + r))
            before = measure(red_net, red_vars)
            rs = {"threshold": threshold, "widths": list(red_net.widths), "ft_epoch": 0,
                  "before": before, "params": count_params(red_vars)}
            meta["round_state"] = rs
            state = create_train_state(red_vars, tx, jax.random.PRNGKey(seed + 200 + r))
            log.log(event="condensed", round=r, threshold=threshold, widths=rs["widths"],
                    params=rs["params"], **{f"before_{k}": v for k, v in before.items()})
            save(state)
        else:
            red_net = net.with_widths(rs["widths"])
            state = ckpt.restore_state(abstract_state(red_net, tx))
        module = red_net.module()
        for e in tqdm(range(rs["ft_epoch"], ft_epochs), desc=f"round {r} (tau={threshold:g})",
                      initial=rs["ft_epoch"], total=ft_epochs, mininterval=2):
            state, m = train_epoch(state, task.train, module=module, tx=tx, loss=task.loss,
                                   batch_size=bs, seed=seed * 1000 + r + 1, epoch=e,
                                   augment=task.augment, desc=f"round {r} fine-tune",
                                   **resume_inside(rs, e, save))
            log.log(event="epoch", phase="finetune", round=r, epoch=e + 1, **m)
            rs["ft_epoch"] = e + 1
            save(state)
        after = measure(red_net, state.variables)
        accepted = rcfg["mode"] == "manual" or targets is not None or tol_ok(after["val"])
        row = {"round": r, "threshold": threshold, "params": rs["params"],
               "size_ratio": rs["params"] / orig["params"],
               "metric_before_finetune": rs["before"]["test"], "metric_after_finetune": after["test"],
               "val_before_finetune": rs["before"]["val"], "val_after_finetune": after["val"],
               "accepted": accepted, "widths": " ".join(map(str, rs["widths"])),
               "flops": count_flops(red_net, task.input_shape)}
        log.log(event="round", **row)
        meta["rows"].append(row)
        if accepted:
            meta["accepted_round"] = r
            meta["reduced"] = {"val": after["val"], "test": after["test"], "params": rs["params"],
                               "widths": rs["widths"], "before": rs["before"]["test"],
                               "flops": row["flops"], "threshold": threshold}
            save_network(nets / "reduced", red_net, state.variables, round=r, threshold=threshold)
        else:
            meta["phase"] = "done"  # roll back: the previous accepted network stays the result
        meta["round"] = r + 1
        meta["round_state"] = None
        save(state)

    return _finish(cfg, workdir, task, net, meta, log, elapsed0 + time.time() - t_start, commit)


def _threshold(rcfg: dict[str, Any], r: int) -> float | None:
    if rcfg["mode"] == "manual":
        ts = list(rcfg["thresholds"])
        return float(ts[r]) if r < len(ts) else None
    auto = rcfg["auto"]
    if r >= int(auto["max_rounds"]):
        return None
    t = 1.0 - (1.0 - float(auto["start"])) * float(auto["factor"]) ** r
    return round(t, 6) if t >= float(auto["min_threshold"]) else None


def _tolerance(rcfg: dict[str, Any], task: Task, original: float):
    tol = float(rcfg["auto"]["tolerance"])
    if rcfg["auto"].get("tolerance_mode", "relative") == "relative":
        bound = original * (1 - tol) if task.higher_is_better else original * (1 + tol)
    else:
        bound = original - tol if task.higher_is_better else original + tol
    return (lambda v: v >= bound) if task.higher_is_better else (lambda v: v <= bound)



def _finish(cfg, workdir: Path, task: Task, net: Network, meta, log: MetricsLog,
            wall: float, commit: str) -> dict[str, Any]:
    orig = meta["original"]
    red_net, red_vars, red_meta = load_network(workdir / "networks" / "reduced")
    red_net = net.with_widths(red_net.widths)
    reduced = meta["reduced"]
    if "extra" not in reduced and task.extra_eval is not None:
        reduced["extra"] = task.extra_eval(red_net, red_vars, "test")
    accepted = meta["accepted_round"]
    summary = {
        "experiment": cfg.get("name", task.name),
        "original_params": int(orig["params"]),
        "reduced_params": int(reduced["params"]),
        "size_ratio": reduced["params"] / orig["params"],
        "metric": f"test_{task.metric}",
        "higher_is_better": task.higher_is_better,
        "log_metric": task.log_metric,
        "original_metric": float(orig["test"]),
        "reduced_metric_before_finetune": float(reduced.get("before", orig["test"])),
        "reduced_metric_after_finetune": float(reduced["test"]),
        "original_val_metric": float(orig["val"]),
        "reduced_val_metric": float(reduced["val"]),
        "widths_before": list(orig["widths"]),
        "widths_after": list(reduced["widths"]),
        "flops_before": orig["flops"],
        "flops_after": reduced["flops"],
        "accepted_round": accepted,
        "threshold": reduced.get("threshold"),
        "rounds": len(meta["rows"]),
        "original_epoch": orig.get("epoch"),
        "seed": int(cfg["seed"]),
        "commit": commit,  # of the process that finished the run (metrics.jsonl: every one)
        "wall_time_s": round(float(wall), 1),
        "machine": machine(),
    }
    if task.extra_eval is not None:
        summary["original_extra"] = orig.get("extra")
        summary["reduced_extra"] = reduced.get("extra")
    if task.finalize is not None:
        _, orig_vars, _ = load_network(workdir / "networks" / "original")
        task.finalize(workdir, (net, orig_vars), (red_net, red_vars))
    write_csv(workdir / "curve.csv", meta["rows"], CURVE_COLUMNS)
    write_json(workdir / "summary.json", summary)
    plot_size_vs_metric(workdir)
    log.log(event="done", **{k: v for k, v in summary.items() if not isinstance(v, dict)})
    log.close()
    print(json.dumps({k: summary[k] for k in ("original_params", "reduced_params", "size_ratio",
                                              "metric", "original_metric",
                                              "reduced_metric_after_finetune")}, indent=1))
    return summary
