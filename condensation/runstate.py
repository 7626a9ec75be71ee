"""The run's state (what a checkpoint's JSON holds) and the checkpoints themselves.

A run is in one of four phases: ``train`` (the original is training; ``epoch`` counts its
epochs), ``original`` (trained; to be measured and saved), ``reduce`` (rounds of reduce ->
fine-tune; ``epoch`` counts the current round's fine-tuning epochs) and ``done``. ``position``
is where an unfinished epoch stopped (checkpoints inside epochs), so a resumed epoch continues
with the next batch.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from condensation.errors import ConfigError

PHASES = ("train", "original", "reduce", "done")


@dataclass
class Position:
    """Inside epoch ``epoch``: the next step and the loss summed over the steps before it."""

    epoch: int
    step: int
    loss_sum: float


@dataclass
class RoundState:
    """The reduced network of the current round, before its fine-tuning."""

    threshold: float
    widths: list[int]
    params: int
    before: dict[str, Any]  # its metrics right after the reduction


@dataclass
class RunState:
    phase: str = "train"
    epoch: int = 0
    position: Position | None = None
    best: dict[str, Any] | None = None       # the selected epoch of training: score, epoch
    original: dict[str, Any] | None = None   # the trained original's metrics
    round: int = 0
    round_state: RoundState | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)  # curve.csv, one per finished round
    reduced: dict[str, Any] | None = None    # the last accepted round's metrics (or the original's)
    accepted_round: int | None = None
    elapsed_s: float = 0.0
    reduce_cfg: dict[str, Any] | None = None  # the reduction settings the rounds ran with

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunState:
        if d.get("phase") not in PHASES:
            raise ValueError(f"phase {d.get('phase')!r} is none of {PHASES}")
        d = dict(d)
        d["position"] = Position(**d["position"]) if d.get("position") else None
        d["round_state"] = RoundState(**d["round_state"]) if d.get("round_state") else None
        return cls(**d)

    def start_round(self) -> None:
        """The next round starts from scratch: no reduced network, no fine-tuning epoch yet."""
        self.round_state, self.epoch, self.position = None, 0, None


class DamagedCheckpoints(ConfigError):
    """Every checkpoint of a run directory is damaged: the run cannot resume."""


class Checkpoints:
    """Orbax checkpoints, each a train state (a pytree) and the run state as JSON.

    ``restore`` takes the newest checkpoint that can be read entirely; a damaged one (a crash
    while the disk filled, a copy gone wrong) is moved to ``checkpoints.damaged/`` and named,
    and the previous one is used.
    """

    def __init__(self, folder: Path, keep: int = 2):
        self.folder = folder.absolute()
        self.keep = keep
        self.mngr = self._manager()

    def _manager(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(self.folder, options=ocp.CheckpointManagerOptions(
            max_to_keep=self.keep, enable_async_checkpointing=False))

    def save(self, state: Any, run: RunState) -> None:
        step = (self.mngr.latest_step() or 0) + 1
        self.mngr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(run.to_json())))
        self.mngr.wait_until_finished()

    def restore(self, abstract_state, report=print) -> tuple[RunState, Any] | None:
        """The newest readable (run state, train state); None if there is no checkpoint.

        ``abstract_state(run)`` gives the shapes of the train state a run state goes with, or
        None when it needs none. Raises :class:`DamagedCheckpoints` if none is readable.
        """
        steps = sorted(self.mngr.all_steps(), reverse=True)
        damaged = []
        for step in steps:
            try:
                meta = self.mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
                run = RunState.from_json(meta["meta"])
                abstract = abstract_state(run)
                state = None if abstract is None else self.mngr.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
            except Exception as e:  # noqa: BLE001 - any failure to read means a damaged checkpoint
                damaged.append((step, f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"))
                continue
            self._set_aside(damaged, report, kept=step)
            return run, state
        if damaged:
            self._set_aside(damaged, report, kept=None)
            raise DamagedCheckpoints(
                f"every checkpoint in {self.folder} is damaged (moved to "
                f"{self.folder.parent / 'checkpoints.damaged'}): start the run over with fresh=true")
        return None

    def _set_aside(self, damaged: list[tuple[int, str]], report, kept: int | None) -> None:
        if not damaged:
            return
        aside = self.folder.parent / "checkpoints.damaged"
        aside.mkdir(exist_ok=True)
        for step, why in damaged:
            shutil.move(str(self.folder / str(step)), str(aside / f"{step}-{int(time.time())}"))
            where = f"resuming from checkpoint {kept}" if kept is not None else "no intact checkpoint left"
            report(f"warning: checkpoint {self.folder / str(step)} is damaged ({why}); moved to "
                   f"{aside}; {where}")
        self.mngr = self._manager()
