"""Resumable outputs keyed by their inputs: what a stage's output is worth, asked one way by the real run and
by ``--dry-run``.

A stage (an LE stage in :mod:`learec.env.stages`, a training run) writes its output with a key computed
from its inputs, or a record of them (a run's ``config.yaml``). :class:`StageStatus` is what the stored
key and progress say about it for the inputs at hand; the code that decides to skip, resume or redo a stage
reads the same status that a dry run prints, so the two cannot disagree.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from learec.config import Config, config_differences
from learec.errors import UserError


class State(enum.Enum):
    """What a stage's output is worth for the inputs at hand."""

    CURRENT = "current"  # made from these inputs: skipped
    TO_MAKE = "to make"  # absent: made
    STALE = "stale"  # made from other inputs (or unusable): made again
    PARTIAL = "partial"  # begun and interrupted: resumes
    WAITS = "waits"  # an input (an earlier stage) is not made yet


@dataclass(frozen=True)
class StageStatus:
    """A stage's :class:`State` with a line for people (``detail``, what a dry run prints); ``key`` names a
    current output where later stages are keyed by it, ``found`` is what was read to decide (so the run
    need not read it again)."""

    stage: str
    state: State
    detail: str
    key: str | None = None
    found: Any = field(default=None, repr=False, compare=False)

    @property
    def current(self) -> bool:
        return self.state is State.CURRENT


class Stage(Protocol):
    """A stage of a run directory: its name and output paths; its ``key(...)`` and ``status(...)`` take
    the stage's own inputs."""

    name: str

    def outputs(self, run_dir: Path) -> list[Path]: ...


def keyed_status(stage: str, stored_key: str | None, key: str, *, missing: str = "to make",
                 current: str = "current", stale: str = "made from other inputs: redo", found: Any = None
                 ) -> StageStatus:
    """The status of an output stamped with ``stored_key`` (None: there is none) for inputs keyed ``key``."""
    if stored_key is None:
        return StageStatus(stage, State.TO_MAKE, missing)
    if stored_key == key:
        return StageStatus(stage, State.CURRENT, current, key=key, found=found)
    return StageStatus(stage, State.STALE, stale, found=found)


def check_saved_config(cfg: Config | None, saved: Config, run_dir: Path, hint: str) -> Config:
    """The run's saved config, refusing a different ``cfg`` (None: none given) with the keys that differ;
    every run directory that continues from its ``config.yaml`` checks it so."""
    if cfg is not None and cfg.to_dict() != saved.to_dict():
        raise UserError(f"The config given differs from the one {run_dir} was started with: "
                        + ", ".join(config_differences(cfg.to_dict(), saved.to_dict())), hint)
    return saved
