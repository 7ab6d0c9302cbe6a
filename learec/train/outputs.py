"""How far a training run directory got, read from its files (torch-free: the grid plans from it).

``learec train`` acts on this status (a finished run is not trained again, a run with a checkpoint is
resumed or refused), and ``learec grid``/``learec pipeline`` plan their cells from it, so both agree.
"""

from __future__ import annotations

import json
from pathlib import Path

from learec.stages import State, StageStatus

STAGE = "training"


def last_checkpoint(run_dir: Path) -> Path:
    """The resume point (written by :class:`learec.train.trainer.Trainer`)."""
    return run_dir / "checkpoints" / "last.pt"


def metrics_file(run_dir: Path) -> Path:
    """Written last: the run is finished once it exists."""
    return run_dir / "metrics.json"


def train_status(run_dir: Path) -> StageStatus:
    """``current`` (finished), ``partial`` (a checkpoint to resume from, with how far it was validated) or
    ``to make``; whether the run's config is the one wanted is its caller's check (its ``config.yaml``)."""
    if metrics_file(run_dir).is_file():
        return StageStatus(STAGE, State.CURRENT, "finished")
    if last_checkpoint(run_dir).is_file():
        return StageStatus(STAGE, State.PARTIAL, _progress_note(run_dir))
    return StageStatus(STAGE, State.TO_MAKE, "new")


def _progress_note(run_dir: Path) -> str:
    try:
        history = json.loads((run_dir / "history.json").read_text())
        # the last validation, not the checkpoint: a run may have trained further since
        return f"validated up to epoch {history[-1]['epoch']}" if history else ""
    except (OSError, ValueError, KeyError, IndexError):
        return ""
