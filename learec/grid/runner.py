"""Running a grid: each unfinished cell in its own ``learec train`` process, finished runs of other grids
copied in, and the tables written at the end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm.auto import tqdm

from learec.config import Config, load_config
from learec.data.prepared import prepare
from learec.errors import UserError
from learec.grid.cells import Grid, load_grid
from learec.grid.plan import plan_grid, print_plan
from learec.grid.results import write_cells, write_table
from learec.interrupt import Terminated

STOPPED = 130  # the exit status given to a cell that a stopped grid did not start
TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "MASTER_ADDR",
                "MASTER_PORT", "TORCHELASTIC_RUN_ID")


class _CellProcesses:
    """The ``learec train`` processes of the cells now running. When the grid is stopped (Ctrl-C, SIGTERM)
    :meth:`stop` ends them and no further cell starts: the thread pool alone would start every queued cell
    while it waited for the running ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self._stopping = False

    def run(self, run_dir: Path, quiet: bool) -> int:
        """Run one cell in its own process (its own threads and memory), resuming whatever is there."""
        cmd = [sys.executable, "-m", "learec", "train", "--resume", "--run-dir", str(run_dir)]
        # a run is one process: it must not join a process group its parent's environment describes
        env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
        with self._lock:
            if self._stopping:
                return STOPPED
            with open(run_dir / "stdout.log", "a") as out:  # the child holds its own copy of the handle
                proc = subprocess.Popen(cmd, stdout=out, stderr=out if quiet else None, env=env)
            self._running.add(proc)
        try:
            return proc.wait()
        finally:
            with self._lock:
                self._running.discard(proc)

    def stop(self, grace_s: float) -> None:
        """Start no more cells and end the running ones: give them ``grace_s`` seconds to end by themselves
        (a Ctrl-C reaches them too), then send SIGTERM, on which a run ends as on Ctrl-C (learec.interrupt),
        its checkpoints and stage record kept. Stopped again meanwhile, it sends SIGTERM to all at once."""
        with self._lock:
            self._stopping = True
            running = list(self._running)
        try:
            deadline = time.monotonic() + grace_s
            for proc in running:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.terminate()
            for proc in running:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:  # a run that does not end on SIGTERM within a minute
                    proc.kill()
                    proc.wait()
        except BaseException:  # a second Ctrl-C: no cell may outlive the grid, which now waits for them
            for proc in running:
                if proc.poll() is None:
                    proc.terminate()
            raise


def _copy_run(source: Path, run_dir: Path, cfg: Config | None = None) -> None:
    """Copy a finished run into ``run_dir`` all at once: a copy cut short never looks finished. A run on LE
    labels (matched by their key) gets the cell's ``lea.cache``/``lea.cache_key`` in its config, so it
    names this grid's copy of those labels, not the other grid's."""
    tmp = run_dir.parent / f".reuse-{run_dir.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp)
    (tmp / "reused_from.txt").write_text(f"{source.resolve()}\n")
    if cfg is not None and cfg.lea.enabled:
        copied = load_config(tmp / "config.yaml")
        copied.lea = copied.lea.model_copy(update={"cache": cfg.lea.cache, "cache_key": cfg.lea.cache_key})
        copied.save(tmp / "config.yaml")
    if run_dir.exists():  # an interrupted run of the same config: the finished one replaces it
        shutil.rmtree(run_dir)
    tmp.rename(run_dir)


def run_grid(path: str | Path, workers: int = 1, threads: int | None = None, only: list[str] | None = None,
             grid: Grid | None = None, redo_stale: bool = False, reuse: list[Path] | None = None,
             dry_run: bool = False) -> Path:
    """Run the grid's unfinished cells (those matching every ``only`` ``key=value[,value...]``) and write the
    table; a finished run with the same config in one of the ``reuse`` directories is copied, not rerun.
    With ``dry_run``, print what would be done (:func:`learec.grid.plan.plan_grid`) and change nothing.

    A cell folder started with another config is an error, or, with ``redo_stale``, moved aside to
    ``out/.stale/`` and run again (the pipeline does this when its LE cache changed).
    """
    grid = grid or load_grid(path)
    out = grid.out
    plans = plan_grid(grid, only, reuse, threads, workers)
    if dry_run:
        print_plan(plans, out, redo_stale)
        return out
    stale = [f"{p.run_dir} ({p.detail})" for p in plans if p.status == "stale"]
    if stale and not redo_stale:
        raise UserError("These runs were started with another config than the grid now gives them: " + "; ".join(stale),
                        "move or delete those folders, or give the grid another `out`")
    todo, reused = [], []
    for plan in plans:
        if plan.status == "finished":
            continue
        if plan.status == "stale":
            aside = out / ".stale" / f"{plan.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            plan.run_dir.rename(aside)
            print(f"{plan.run_dir} was made with another config ({plan.detail}): moved to {aside}")
        if plan.source is not None:
            _copy_run(plan.source, plan.run_dir, plan.cfg)
            reused.append(plan.name)
            continue
        if not (plan.run_dir / "config.yaml").is_file():
            plan.cfg.save(plan.run_dir / "config.yaml")
        todo.append(plan)
    for data_cfg in {json.dumps(p.cfg.data.model_dump(mode="json"), sort_keys=True): p.cfg.data for p in todo}.values():
        prepare(data_cfg)  # once, before the workers start, rather than racing in each of them
    if reused:
        print(f"reused {len(reused)} finished run(s) with the same config from {', '.join(map(str, reuse or []))}")
    print(f"grid {path}: {len(plans)} runs, {len(plans) - len(todo)} already finished, {len(todo)} to run -> {out}")
    write_cells(grid)  # a report made while the grid runs finds its cells
    failed = []
    cells = _CellProcesses()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            futures = {pool.submit(cells.run, p.run_dir, workers > 1): p.run_dir for p in todo}
            for future in tqdm(as_completed(futures), total=len(futures), desc="grid runs", unit="run",
                               disable=None):
                if future.result() != 0:
                    failed.append(str(futures[future]))
        except BaseException as err:  # Ctrl-C, SIGTERM or an error: queued cells never start, running ones end
            pool.shutdown(wait=False, cancel_futures=True)
            # a SIGTERM may have reached the grid alone (kill PID): its cells are told at once
            cells.stop(grace_s=0.0 if isinstance(err, Terminated) else 5.0)
            raise
    write_table(grid)
    if failed:
        raise UserError(f"{len(failed)} run(s) failed: {failed}", "see stdout.log / train.log in each run directory")
    return out
