"""The run's metrics log: append-only JSON lines, optionally mirrored to TensorBoard."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from condensation.files import jsonable


class MetricsLog:
    """Append-only JSON lines; each line is flushed so a killed run keeps what it logged.

    With ``tensorboard=FOLDER`` the numbers of each record are also written as TensorBoard
    scalars there (tensorboardX: event files without TensorFlow), see ``scalars``.
    """

    def __init__(self, path: str | os.PathLike, tensorboard: str | os.PathLike | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = None
        if tensorboard is not None:
            from tensorboardX import SummaryWriter  # optional: checked by validate_config

            self.writer = SummaryWriter(str(tensorboard), flush_secs=10)

    def log(self, **record: Any) -> None:
        record = {"time": round(time.time(), 3), **record}
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=jsonable) + "\n")
            f.flush()
        if self.writer is not None:
            for tag, value, step in scalars(record):
                self.writer.add_scalar(tag, value, step, walltime=record["time"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def scalars(record: dict[str, Any]) -> list[tuple[str, float, int]]:
    """(tag, value, step) for the numbers of a metrics record: training epochs under
    ``train/``, fine-tuning epochs under ``finetune/round<r>/`` (step: epoch), reduction
    rounds under ``reduce/`` (step: round), the trained original under ``original/``."""
    event = record.get("event")
    if event == "epoch" and record.get("phase") == "finetune":
        prefix, step = f"finetune/round{record.get('round', 0)}", record.get("epoch", 0)
    elif event == "epoch":
        prefix, step = "train", record.get("epoch", 0)
    elif event in ("condensed", "round"):
        prefix, step = "reduce", record.get("round", 0)
    elif event in ("original", "done"):
        prefix, step = event, 0
    else:
        return []
    skip = {"time", "epoch", "round"}
    flat = {k: v for k, v in record.items() if k not in skip}
    for k, v in record.items():  # one level of nesting: groups {layer: count} -> groups/layer
        if isinstance(v, dict):
            flat.update({f"{k}/{sub}": x for sub, x in v.items()})
    return [(f"{prefix}/{k}", float(v), int(step)) for k, v in flat.items()
            if isinstance(v, int | float) and not isinstance(v, bool)]
