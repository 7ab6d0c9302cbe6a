"""What running a grid would do with each cell (finished, reuse, resume, new, stale), decided from the run
folders without touching them, and the finished runs of other grids that a cell may reuse."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learec.config import RESULT_NEUTRAL_SETTINGS, Config, config_differences, load_config
from learec.env.label import manifest_labels_key
from learec.errors import UserError
from learec.grid.cells import Grid, select_cells
from learec.stages import State
from learec.train.outputs import train_status
from learec.utils import stable_hash

CELL_STATUSES = ("finished", "reuse", "resume", "new", "stale", "waits")  # waits: pipeline cells before their labels


@dataclass(frozen=True)
class CellPlan:
    """What running the grid will do with one cell, decided before anything is touched."""

    name: str
    run_dir: Path
    cfg: Config
    status: str  # one of CELL_STATUSES
    detail: str = ""  # the reuse source, how far a run got, or a stale folder's config differences
    source: Path | None = None  # a finished run with the same config in a --reuse directory


def comparable(cfg: Config, labels: str | None = None) -> dict[str, Any]:
    """A config as a dict without the settings that do not change results (config.RESULT_NEUTRAL_SETTINGS).
    With ``labels`` (the key of the LE labels a run reads), where the labels lie is left out: runs on the same
    labels in two places, e.g. a grid's and a pipeline's, then compare equal."""
    tree = cfg.to_dict()
    if labels is not None:
        tree["lea"].update(cache=None, cache_key=labels)
    for dotted in RESULT_NEUTRAL_SETTINGS:
        *parents, leaf = dotted.split(".")
        node: Any = tree
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return tree


def check_reuse_dirs(dirs: list[Path]) -> None:
    for d in dirs:
        if not Path(d).is_dir():
            raise UserError(f"--reuse {d}: no such directory", "name the output directory of another grid")


def cell_labels_key(cfg: Config) -> str | None:
    """The key of the LE labels a cell will read: the one the config pins, else that of the complete cache
    at ``lea.cache``; None without LE inputs or labels."""
    if not cfg.lea.enabled:
        return None
    return cfg.lea.cache_key or (manifest_labels_key(Path(cfg.lea.cache) / "label") if cfg.lea.cache else None)


def run_labels_key(run: Path, cfg: Config) -> str | None:
    """The key of the LE labels a run was trained on: its ``le_cache.json``, or for runs made before runs
    wrote that file, the ``lea.cache_key`` of its config (training refused labels with another key); or None."""
    try:
        return str(json.loads((run / "le_cache.json").read_text())["key"])
    except (OSError, ValueError, KeyError, TypeError):
        return cfg.lea.cache_key


def finished_runs(dirs: list[Path]) -> dict[str, Path]:
    """Finished runs (metrics.json and config.yaml) directly under ``dirs``, by the hash of their config (and
    of the LE labels they were trained on, wherever those lay)."""
    check_reuse_dirs(dirs)
    found: dict[str, Path] = {}
    for d in dirs:
        for run in sorted(Path(d).iterdir()):
            if (run / "metrics.json").is_file() and (run / "config.yaml").is_file():
                try:
                    cfg = load_config(run / "config.yaml")
                except (UserError, ValueError) as err:  # e.g. a run of an older config schema
                    print(f"--reuse: skipping {run} (its config does not load: {str(err).splitlines()[0]})")
                    continue
                labels = run_labels_key(run, cfg) if cfg.lea.enabled else None
                found.setdefault(stable_hash(comparable(cfg, labels)), run)
    return found


def folder_differences(cfg: Config, run_dir: Path, labels: str | None) -> list[str]:
    """How the run in ``run_dir`` differs from ``cfg``. Where both name the key of their LE labels (a run
    records it once it starts training), the key stands for the labels, not where they lie: a run copied
    from another grid on the same labels is this cell's run; one trained on other labels is not, and is
    said so. ``labels``: :func:`cell_labels_key` of ``cfg``."""
    run_cfg = load_config(run_dir / "config.yaml")
    used = run_labels_key(run_dir, run_cfg)
    if labels is None or used is None:
        labels = used = None
    differences = config_differences(comparable(cfg, labels), comparable(run_cfg, used))
    if labels != used:
        differences = [d for d in differences if not d.startswith("lea.cache_key:")]
        differences.append(f"LE labels: trained on {used}, lea.cache now holds {labels} (relabelled since)")
    return differences


def run_config(cfg: Config, threads: int | None, workers: int) -> Config:
    """A copy of ``cfg`` as the grid saves it for a run: ``threads``, and no progress bars with several
    workers (interleaved bars are unreadable). Neither changes results."""
    update: dict[str, Any] = {}
    if threads:
        update["threads"] = threads
    if workers > 1:
        update["progress"] = False
    return cfg.model_copy(update={"train": cfg.train.model_copy(update=update)}) if update else cfg


def plan_grid(grid: Grid, only: list[str] | None = None, reuse: list[Path] | None = None,
              threads: int | None = None, workers: int = 1) -> list[CellPlan]:
    """The selected cells with their status. Reads the run folders and changes nothing, neither them nor
    ``grid``: each plan holds a new config with ``threads`` and (with several workers) no progress bars, as
    the run will be saved with."""
    reusable = finished_runs(reuse) if reuse else {}
    plans = []
    for name, _, cell_cfg in select_cells(grid, only or []):
        run_dir = grid.out / name
        cfg = run_config(cell_cfg, threads, workers)
        labels = cell_labels_key(cfg)
        source = reusable.get(stable_hash(comparable(cfg, labels)))
        if source is not None and source.resolve() == run_dir.resolve():
            source = None
        status, detail = "new", ""
        # A cell folder is named by its axis values only: make sure it holds this grid's experiment.
        differences = (run_dir / "config.yaml").is_file() and folder_differences(cfg, run_dir, labels)
        if differences:
            status, detail = "stale", ", ".join(differences)
        else:  # what `learec train --resume` will do with the folder
            trained = train_status(run_dir)
            if trained.current:
                status = "finished"
            elif trained.state is State.PARTIAL:
                status, detail = "resume", trained.detail
        if status in ("new", "resume") and source is not None:
            status, detail = "reuse", str(source)
        elif status == "stale" and source is not None:
            detail += f"; reusable from {source}"
        plans.append(CellPlan(name, run_dir, cfg, status, detail, source))
    return plans


def print_plan(plans: list[CellPlan], out: Path, redo_stale: bool = False) -> None:
    """One line per cell, then the counts: what ``learec grid`` (``redo_stale``: the pipeline) would do now."""
    for plan in plans:
        print(f"  {plan.status:<8} {plan.name}" + (f"  ({plan.detail})" if plan.detail else ""))
    counts = {s: sum(p.status == s for p in plans) for s in CELL_STATUSES}
    print(f"{len(plans)} runs -> {out}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    if counts["stale"] and redo_stale:
        print(f"the stale cells would be moved to {out / '.stale'} and run again")
    elif counts["stale"]:
        print("a run would stop at the stale cells (made with another config): move or delete those folders, or "
              "give the grid another `out`")
