"""Wall time and peak memory of a run directory's stages, recorded as they run and read back by
``learec usage``: what a stage costs on the machine at hand, without sampling it from outside.

Each stage that makes its output (item tokens, LE training, labelling, eval states, the LE report, a training
run) appends one line to ``usage.jsonl`` in its run directory when it ends, also when an exception, Ctrl-C or
SIGTERM (learec.interrupt) stops it (``completed: false``); a process killed by SIGKILL writes no line, so the
time it had spent is missing from the sum. A stage that starts afresh (nothing to resume, or its old output was
made from other inputs) marks its line ``fresh``, and :func:`read_usage` adds up the seconds from a stage's
last fresh line on: what the current output cost, resumed parts included, not what outputs made before it
cost. A stage whose output is current records nothing.

Peak memory is the process's resident high-water mark (``VmHWM``) over the stage: on Linux it is reset when
a stage starts (``/proc/self/clear_refs``), so a stage's figure is its own even when an earlier stage of the
same process held more; elsewhere it is the process's peak so far (``peak_scope: process``). On a GPU the
stage's peak of allocated CUDA memory is recorded beside it. Under torchrun rank 0 records its own figures.
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
# high-water mark, so it first hands the mark so far to the stages around it (what comes after the reset,
# they read at their own end)
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


class StageRecord:
    """What :func:`recorded` yields: ``skip()`` when the stage turns out to make nothing (e.g. it copied its
    output from elsewhere), so that no line is written."""

    def __init__(self) -> None:
        self.skipped = False

    def skip(self) -> None:
        self.skipped = True


def _append(path: Path, line: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as out:  # appends go to the end whatever was read
        torn = False
        if out.seek(0, 2):
            out.seek(-1, 2)
            torn = out.read(1) != b"\n"  # a line cut off by a kill: ours starts on a line of its own
        out.write((("\n" if torn else "") + json.dumps(line) + "\n").encode())


@contextlib.contextmanager
def recorded(run_dir: Path, stage: str, fresh: bool = True) -> Iterator[StageRecord]:
    """Time ``stage`` and take its peak memory; one line is appended to ``run_dir/usage.jsonl`` when it ends,
    with ``completed`` false when it was interrupted (the exception goes on). ``fresh``: the stage starts
    over rather than resuming, so what earlier lines of it recorded no longer counts."""
    record = StageRecord()
    if not distributed.is_main():
        yield record
        return
    before = peak_mib()
    for outer in _open:
        outer[0] = max(outer[0], before)
    own = reset_peak()
    gpu = torch.cuda.is_available() and torch.cuda.is_initialized()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    mine = [0.0]
    _open.append(mine)
    start, completed = time.monotonic(), False
    try:
        yield record
        completed = True
    finally:
        _open.pop()
        peak = max(mine[0], peak_mib())  # the mark since the last reset: ours, or a nested stage's
        gpu = gpu or (torch.cuda.is_available() and torch.cuda.is_initialized())  # first used by this stage
        line = {"stage": stage, "seconds": round(time.monotonic() - start, 2), "peak_mib": round(peak, 1),
                "peak_scope": "stage" if own else "process", "completed": completed, "fresh": fresh,
                "threads": torch.get_num_threads(), "ended": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if gpu:
            line["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        if not record.skipped:
            try:
                _append(Path(run_dir) / USAGE_FILE, line)
            except OSError as err:  # a record is never worth the stage's own result
                log.warning("could not record the usage of %s in %s: %s", stage, run_dir, err)


@dataclass(frozen=True)
class StageUsage:
    """One stage of one run directory, from its last fresh start on: seconds summed, the largest peaks."""

    run_dir: Path
    stage: str
    seconds: float
    peak_mib: float
    gpu_peak_mib: float | None
    invocations: int
    completed: bool  # the last invocation ended normally
    threads: int
    whole_process: bool  # some peak is the process's, not the stage's own (no reset on this system)
    first_ended: str
    reused: bool  # the run directory is a copy (`learec grid --reuse`): its cost was spent where it came from


def read_usage(run_dir: Path) -> list[StageUsage]:
    """The stages recorded in ``run_dir/usage.jsonl``, in the order they first ran. Lines that cannot be
    read (a torn line of a killed process) are skipped."""
    stages: dict[str, list[dict]] = {}
    path = Path(run_dir) / USAGE_FILE
    for text in path.read_text().splitlines() if path.is_file() else []:
        try:
            line = json.loads(text)
            stage = str(line["stage"])
            line["seconds"], line["peak_mib"] = float(line["seconds"]), float(line["peak_mib"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        if line.get("fresh", True):
            stages.pop(stage, None)  # made again from scratch: the earlier lines were another output's
        stages.setdefault(stage, []).append(line)
    reused = (Path(run_dir) / "reused_from.txt").is_file()
    found = []
    for stage, lines in stages.items():
        gpu = [x["gpu_peak_mib"] for x in lines if x.get("gpu_peak_mib") is not None]
        found.append(StageUsage(Path(run_dir), stage, sum(x["seconds"] for x in lines),
                                max(x["peak_mib"] for x in lines), max(gpu) if gpu else None, len(lines),
                                bool(lines[-1].get("completed")), int(lines[-1].get("threads", 0)),
                                any(x.get("peak_scope") == "process" for x in lines), str(lines[0].get("ended", "")),
                                reused))
    return sorted(found, key=lambda u: u.first_ended)


def find_usage(paths: list[Path]) -> list[StageUsage]:
    """Every recorded stage under ``paths`` (run directories or folders holding them), in the order they ran;
    hidden folders (a grid's ``.stale`` runs) are left out."""
    files = set()
    for p in map(Path, paths):
        top = p / USAGE_FILE
        found = [top] if top.is_file() else p.rglob(USAGE_FILE)
        files |= {f.resolve() for f in found if not any(part.startswith(".") for part in f.relative_to(p).parts)}
    return sorted((u for f in files for u in read_usage(f.parent)), key=lambda u: u.first_ended)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _peak(u: StageUsage) -> str:
    return f"{u.peak_mib:,.0f} MiB" + ("¹" if u.whole_process else "")


def usage_table(usages: list[StageUsage], each: bool = False, root: Path | None = None) -> str:
    """A Markdown table of ``usages``: by default one row per stage name (how many directories, total, mean
    and longest wall time of the finished ones, largest peak; copies made by ``--reuse`` left out); with
    ``each`` one row per directory and stage. Notes under the table say what was left out or differs."""
    gpu = any(u.gpu_peak_mib is not None for u in usages)
    gpu_head, gpu_rule = (" GPU peak |", "---|") if gpu else ("", "")
    notes = []
    if any(u.whole_process for u in usages):
        notes.append("¹ the process's peak up to then: this system cannot reset the high-water mark per stage")
    if each:
        rows = [f"| run | stage | wall time | peak RSS |{gpu_head} invocations | threads | completed |",
                f"|---|---|---|---|{gpu_rule}---|---|---|"]
        for u in usages:
            name = u.run_dir
            if root is not None and u.run_dir.is_relative_to(root):
                name = u.run_dir.relative_to(root) if u.run_dir != root else Path(root.name)
            cells = [str(name) + (" (reused)" if u.reused else ""), u.stage, _duration(u.seconds), _peak(u)]
            cells += [f"{u.gpu_peak_mib:,.0f} MiB" if u.gpu_peak_mib is not None else ""] if gpu else []
            cells += [str(u.invocations), str(u.threads), "yes" if u.completed else "no"]
            rows.append("| " + " | ".join(cells) + " |")
        return "\n".join(rows + notes)
    groups: dict[str, list[StageUsage]] = {}
    for u in usages:
        if not u.reused:
            groups.setdefault(u.stage, []).append(u)
    rows = [f"| stage | runs | total wall time | mean (finished) | longest (finished) | peak RSS |{gpu_head} unfinished |",
            f"|---|---|---|---|---|---|{gpu_rule}---|"]
    for stage, group in groups.items():
        done = [u.seconds for u in group if u.completed]
        cells = [stage, str(len(group)), _duration(sum(u.seconds for u in group)),
                 _duration(sum(done) / len(done)) if done else "", _duration(max(done)) if done else "",
                 _peak(max(group, key=lambda u: u.peak_mib))]
        gpus = [u.gpu_peak_mib for u in group if u.gpu_peak_mib is not None]
        cells += [f"{max(gpus):,.0f} MiB" if gpus else ""] if gpu else []
        cells += [str(sum(not u.completed for u in group))]
        rows.append("| " + " | ".join(cells) + " |")
    reused = sum(u.reused for u in usages)
    if reused:
        notes.append(f"{reused} stage(s) of runs copied with --reuse left out: their cost was spent where they "
                     "were made (--each lists them)")
    return "\n".join(rows + notes)
