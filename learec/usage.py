"""Wall time and peak memory of a run directory's stages, recorded as they run and read back by
``learec usage``: what a stage costs on the machine at hand, without sampling it from outside.

Each stage that does work (item tokens, LE training, labelling, the LE report, a training run) appends one
line to ``usage.jsonl`` in its run directory when it ends, interrupted or not; a resumed stage appends another,
and :func:`summarize` adds their seconds. Peak memory is the process's resident high-water mark (``VmHWM``) over
the stage: on Linux it is reset when a stage starts (``/proc/self/clear_refs``), so a stage's figure is its
own even when an earlier stage of the same process held more; elsewhere it is the process's peak so far
(``peak_scope: process``). Under torchrun rank 0 records its own figures.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from learec import distributed

USAGE_FILE = "usage.jsonl"
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")

log = logging.getLogger("learec")

# the peaks (MiB) of the stages open in this process, outermost first: a nested stage resets the
# high-water mark, so it hands what it read before and its own peak to the stages around it
_open: list[list[float]] = []


def peak_mib() -> float:
    """The process's resident high-water mark in MiB (since the last reset where resets work)."""
    try:
        found = re.search(r"^VmHWM:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        found = None
    if found:
        return int(found.group(1)) / 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def reset_peak() -> bool:
    """Reset the high-water mark to the current resident size; False where the system does not allow it."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


@contextlib.contextmanager
def recorded(run_dir: Path, stage: str) -> Iterator[None]:
    """Time ``stage`` and take its peak memory; one line is appended to ``run_dir/usage.jsonl`` when it ends,
    with ``completed`` false when it was interrupted (the exception goes on)."""
    if not distributed.is_main():
        yield
        return
    before = peak_mib()
    for outer in _open:
        outer[0] = max(outer[0], before)
    own = reset_peak()
    mine = [0.0]
    _open.append(mine)
    start, completed = time.monotonic(), False
    try:
        yield
        completed = True
    finally:
        _open.pop()
        peak = max(mine[0], peak_mib())
        for outer in _open:
            outer[0] = max(outer[0], peak)
        line = {"stage": stage, "seconds": round(time.monotonic() - start, 2), "peak_mib": round(peak, 1),
                "peak_scope": "stage" if own else "process", "completed": completed,
                "threads": torch.get_num_threads(), "ended": time.strftime("%Y-%m-%dT%H:%M:%S")}
        try:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            with open(Path(run_dir) / USAGE_FILE, "a") as out:
                out.write(json.dumps(line) + "\n")
        except OSError as err:  # a record is never worth the stage's own result
            log.warning("could not record the usage of %s in %s: %s", stage, run_dir, err)


@dataclass(frozen=True)
class StageUsage:
    """One stage of one run directory over all its invocations: seconds summed, the largest peak."""

    run_dir: Path
    stage: str
    seconds: float
    peak_mib: float
    invocations: int
    completed: bool  # the last invocation ended normally
    threads: int


def read_usage(run_dir: Path) -> list[StageUsage]:
    """The stages recorded in ``run_dir/usage.jsonl``, in the order they first ran (a torn last line, from a
    process killed while writing it, is skipped)."""
    stages: dict[str, list[dict]] = {}
    path = Path(run_dir) / USAGE_FILE
    for text in path.read_text().splitlines() if path.is_file() else []:
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            continue
        stages.setdefault(line["stage"], []).append(line)
    return [StageUsage(Path(run_dir), stage, sum(x["seconds"] for x in lines), max(x["peak_mib"] for x in lines),
                       len(lines), lines[-1]["completed"], lines[-1]["threads"]) for stage, lines in stages.items()]


def find_usage(paths: list[Path]) -> list[StageUsage]:
    """Every recorded stage under ``paths`` (run directories or folders holding them), sorted by directory."""
    files = sorted({f.resolve() for p in paths for f in ([Path(p) / USAGE_FILE] if (Path(p) / USAGE_FILE).is_file()
                                                         else Path(p).rglob(USAGE_FILE))})  # a folder inside another: once
    return [usage for f in files for usage in read_usage(f.parent)]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def usage_table(usages: list[StageUsage], each: bool = False, root: Path | None = None) -> str:
    """A Markdown table of ``usages``: by default one row per stage name (how many directories, total, mean
    and longest wall time, largest peak); with ``each`` one row per directory and stage."""
    if each:
        rows = ["| run | stage | wall time | peak memory | invocations | threads | completed |", "|---|---|---|---|---|---|---|"]
        for u in usages:
            name = u.run_dir.relative_to(root) if root is not None and u.run_dir.is_relative_to(root) else u.run_dir
            rows.append(f"| {name} | {u.stage} | {_duration(u.seconds)} | {u.peak_mib:,.0f} MiB | {u.invocations} | "
                        f"{u.threads} | {'yes' if u.completed else 'no'} |")
        return "\n".join(rows)
    groups: dict[str, list[StageUsage]] = {}
    for u in usages:
        groups.setdefault(u.stage, []).append(u)
    rows = ["| stage | runs | total wall time | mean | longest | peak memory | unfinished |", "|---|---|---|---|---|---|---|"]
    for stage, group in groups.items():
        total = sum(u.seconds for u in group)
        rows.append(f"| {stage} | {len(group)} | {_duration(total)} | {_duration(total / len(group))} | "
                    f"{_duration(max(u.seconds for u in group))} | {max(u.peak_mib for u in group):,.0f} MiB | "
                    f"{sum(not u.completed for u in group)} |")
    return "\n".join(rows)
