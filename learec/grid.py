"""Grids of runs from one file: the cartesian product of config values, run (resumably) and tabulated.

Grid file::

    base: ml100k_sasrec.yaml        # a config, relative to the grid file
    set: [data.protocol=sqn]         # optional overrides for every run
    out: runs/grid-ml100k            # where the runs go (one folder per cell)
    axes:                            # dotted key -> values; the product is the grid
      model.backbone: [gru4rec, sasrec]
      objective: [ce, sqn, sa2c]
      seed: [0, 1, 2]
    baseline: {objective: ce}        # optional: what each row is tested against

A ``variants`` section names bundles of overrides and makes ``variant`` an axis (list it under
``axes``, e.g. ``variant: [ce, snqn, snqn+rm]``); a variant may name the variant it is also compared
with (``compare``), e.g. an LE variant with the same RL method without the LE::

    variants:
      ce: [objective=ce]
      snqn: [objective=snqn]
      snqn+rm: {set: [objective=snqn, lea.reward=true], compare: snqn}

Each cell is a normal run directory; a finished cell (metrics.json present) is skipped and an
interrupted one resumes. ``reuse`` directories (other grids' outputs) are searched for a finished run with
the same config (threads and progress bars aside), which is copied in rather than trained again: e.g. the
LEA pipeline's CE/SNQN/SA2C cells from the RL grid. That trusts the other run was made by the same code.
``learec grid --dry-run`` lists what a run would do with each cell (:func:`plan_grid`) and touches nothing.

The table averages over ``seed`` and reports mean ± std for every other cell, plus, with ``baseline``,
the difference in test NDCG@10 to the row with those axis values (same other values, same seeds) and a
paired t-test over test events (``learec.evaluate.significance``).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from learec.config import Config, config_differences, load_config, read_yaml
from learec.data.prepared import prepare
from learec.errors import UserError
from learec.utils import stable_hash

TABLE_METRICS = ["hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20"]


def axis_value_label(key: str, value: Any, sep: str = "") -> str:
    """A number carries its key's last part (``augment_k3``, or ``augment_k=3`` with ``sep="="``); a name
    stands alone (``snqn``)."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f"{key.split('.')[-1]}{sep}{value}" if numeric else str(value)


def _cell_name(values: dict[str, Any]) -> str:
    """``sasrec-snqn-seed0``, ``augment_k3-seed0``."""
    return "-".join(axis_value_label(k, v) for k, v in values.items())


@dataclass
class Grid:
    cells: list[tuple[str, dict[str, Any], Config]]  # (folder name, axis values, resolved config)
    out: Path
    axes: dict[str, list]
    baseline: dict[str, Any]
    compare: dict[str, str] = field(default_factory=dict)  # variant -> the variant it is also tested against


def _variants(spec: dict[str, Any], path: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """``variants:`` as (name -> overrides, name -> compared-with name)."""
    overrides, compare = {}, {}
    for name, value in (spec.get("variants") or {}).items():
        if isinstance(value, dict):
            unknown = set(value) - {"set", "compare"}
            if unknown:
                raise UserError(f"variant {name!r} in {path}: unknown key(s) {sorted(unknown)}", "allowed: set, compare")
            overrides[str(name)] = list(value.get("set") or [])
            if value.get("compare") is not None:
                compare[str(name)] = str(value["compare"])
        else:
            overrides[str(name)] = list(value or [])
    for name, other in compare.items():
        if other not in overrides:
            raise UserError(f"variant {name!r} in {path} is compared with {other!r}, which is not a variant")
    return overrides, compare


def load_grid(path: str | Path, extra_set: list[str] | None = None, extra_keys: tuple[str, ...] = (),
              out: str | Path | None = None) -> Grid:
    """The grid of ``path``; ``extra_set`` overrides are added to every cell (the pipeline sets lea.cache);
    ``out`` replaces the file's output directory."""
    path = Path(path)
    spec = read_yaml(path)
    unknown = set(spec) - {"base", "set", "out", "axes", "baseline", "variants"} - set(extra_keys)
    if unknown:
        raise UserError(f"Unknown key(s) {sorted(unknown)} in grid file {path}",
                        "allowed: base, set, out, axes, baseline, variants")
    if "base" not in spec or "axes" not in spec:
        raise UserError(f"Grid file {path} needs 'base' (a config file) and 'axes' (key -> list of values)")
    base = (path.parent / spec["base"]).resolve()
    axes = {k: (v if isinstance(v, list) else [v]) for k, v in spec["axes"].items()}
    out = Path(out or spec.get("out") or Path("runs") / path.stem)
    variants, compare = _variants(spec, path)
    if variants and "variant" not in axes:
        raise UserError(f"{path} defines variants but has no 'variant' axis", "add e.g. `variant: [ce, snqn]` to axes")
    missing = [v for v in axes.get("variant", []) if str(v) not in variants]
    if missing:
        raise UserError(f"variant(s) {missing} of the axis in {path} are not defined under 'variants'")
    cells = []
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo))
        overrides = [*spec.get("set", []), *(extra_set or [])]
        for k, v in values.items():
            overrides += variants[str(v)] if k == "variant" else [f"{k}={json.dumps(v)}"]
        cfg = load_config(base, overrides)
        if extra_set and not cfg.lea.enabled:  # runs without LE inputs do not depend on the LE cache
            cfg = cfg.model_copy(update={"lea": cfg.lea.model_copy(update={"cache": None, "cache_key": None})})
        cells.append((_cell_name(values), values, cfg))
    baseline = spec.get("baseline") or {}
    if set(baseline) - set(axes):
        raise UserError(f"baseline keys {sorted(set(baseline) - set(axes))} are not axes of {path}")
    return Grid(cells, out, axes, baseline, compare)


TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "MASTER_ADDR",
                "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def _run_cell(run_dir: Path, quiet: bool) -> int:
    """Each cell runs in its own process (its own threads and memory), resuming whatever is there."""
    cmd = [sys.executable, "-m", "learec", "train", "--resume", "--run-dir", str(run_dir)]
    # a run is one process: it must not join a process group its parent's environment describes
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    with open(run_dir / "stdout.log", "a") as out:
        return subprocess.run(cmd, stdout=out, stderr=out if quiet else None, env=env).returncode


def check_reuse_dirs(dirs: list[Path]) -> None:
    for d in dirs:
        if not Path(d).is_dir():
            raise UserError(f"--reuse {d}: no such directory", "name the output directory of another grid")


def finished_runs(dirs: list[Path]) -> dict[str, Path]:
    """Finished runs (metrics.json and config.yaml) directly under ``dirs``, by the hash of their config."""
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
                found.setdefault(stable_hash(_comparable(cfg)), run)
    return found


def _copy_run(source: Path, run_dir: Path) -> None:
    """Copy a finished run into ``run_dir`` all at once: a copy cut short never looks finished."""
    tmp = run_dir.parent / f".reuse-{run_dir.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp)
    (tmp / "reused_from.txt").write_text(f"{source.resolve()}\n")
    if run_dir.exists():  # an interrupted run of the same config: the finished one replaces it
        shutil.rmtree(run_dir)
    tmp.rename(run_dir)


CELL_STATUSES = ("finished", "reuse", "resume", "new", "stale", "waits")  # waits: pipeline cells before their labels


@dataclass
class CellPlan:
    """What running the grid will do with one cell, decided before anything is touched."""

    name: str
    run_dir: Path
    cfg: Config
    status: str  # one of CELL_STATUSES
    detail: str = ""  # the reuse source, how far a run got, or a stale folder's config differences
    source: Path | None = None  # a finished run with the same config in a --reuse directory


def plan_grid(grid: Grid, only: list[str] | None = None, reuse: list[Path] | None = None,
              threads: int | None = None, workers: int = 1) -> list[CellPlan]:
    """The selected cells with their status. Reads the run folders and changes none; the cells' configs get
    ``threads`` and (with several workers) no progress bars, as the runs will be saved with."""
    reusable = finished_runs(reuse) if reuse else {}
    plans = []
    for name, _, cfg in select_cells(grid, only or []):
        run_dir = grid.out / name
        if threads:
            cfg.train.threads = threads
        if workers > 1:
            cfg.train.progress = False  # interleaved progress bars are unreadable
        source = reusable.get(stable_hash(_comparable(cfg)))
        if source is not None and source.resolve() == run_dir.resolve():
            source = None
        status, detail = "new", ""
        # A cell folder is named by its axis values only: make sure it holds this grid's experiment.
        differences = ((run_dir / "config.yaml").is_file()
                       and config_differences(_comparable(cfg), _comparable(load_config(run_dir / "config.yaml"))))
        if differences:
            status, detail = "stale", ", ".join(differences)
        elif (run_dir / "metrics.json").is_file():
            status = "finished"
        elif (run_dir / "checkpoints" / "last.pt").is_file():
            status, detail = "resume", _progress_note(run_dir)
        if status in ("new", "resume") and source is not None:
            status, detail = "reuse", str(source)
        elif status == "stale" and source is not None:
            detail += f"; reusable from {source}"
        plans.append(CellPlan(name, run_dir, cfg, status, detail, source))
    return plans


def _progress_note(run_dir: Path) -> str:
    try:
        history = json.loads((run_dir / "history.json").read_text())
        # the last validation, not the checkpoint: a run may have trained further since
        return f"validated up to epoch {history[-1]['epoch']}" if history else ""
    except (OSError, ValueError, KeyError, IndexError):
        return ""


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


def run_grid(path: str | Path, workers: int = 1, threads: int | None = None, only: list[str] | None = None,
             grid: Grid | None = None, redo_stale: bool = False, reuse: list[Path] | None = None,
             dry_run: bool = False) -> Path:
    """Run the grid's unfinished cells (those matching every ``only`` ``key=value[,value...]``) and write the
    table; a finished run with the same config in one of the ``reuse`` directories is copied, not rerun.
    With ``dry_run``, print what would be done (:func:`plan_grid`) and change nothing.

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
            _copy_run(plan.source, plan.run_dir)
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
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_run_cell, p.run_dir, workers > 1): p.run_dir for p in todo}
        for future in tqdm(as_completed(futures), total=len(futures), desc="grid runs", unit="run"):
            if future.result() != 0:
                failed.append(str(futures[future]))
    write_table(grid)
    if failed:
        raise UserError(f"{len(failed)} run(s) failed: {failed}", "see stdout.log / train.log in each run directory")
    return out


def select_cells(grid: Grid, only: list[str]) -> list[tuple[str, dict[str, Any], Config]]:
    """The cells matching every ``--only``; an ``--only`` that matches none is an error, not a silent no-op."""
    cells = [c for c in grid.cells if cell_matches(c[1], only)]
    if only and not cells:
        choices = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in grid.axes.items())
        raise UserError(f"--only {' '.join(only)} selects no cell of the grid", f"the axes' values are {choices}")
    return cells


def cell_matches(values: dict[str, Any], only: list[str]) -> bool:
    """Whether a cell has, for every ``key=v1,v2`` of ``only``, one of the listed values."""
    for item in only:
        key, _, wanted = item.partition("=")
        if key not in values:
            raise UserError(f"--only {item}: '{key}' is not an axis of the grid", f"axes: {', '.join(values)}")
        if str(values[key]) not in wanted.split(","):
            return False
    return True


def _comparable(cfg: Config) -> dict[str, Any]:
    """A config as a dict without the settings that do not change results (threads, progress bars)."""
    tree = cfg.to_dict()
    tree["train"] = {k: v for k, v in tree["train"].items() if k not in ("threads", "progress")}
    return tree


def _format(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.4f}"


def write_cells(grid: Grid) -> Path:
    """``cells.json``: the axes, baseline, compared variants and which folder is which cell, so reports
    (learec.report) can read a grid, also while it runs."""
    path = grid.out / "cells.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"axes": grid.axes, "baseline": grid.baseline, "compare": grid.compare,
                                "cells": [{"name": n, "values": v} for n, v, _ in grid.cells]}, indent=1))
    return path


def write_table(grid: Grid, metric: str = "ndcg@10") -> tuple[Path, Path]:
    """cells.json, results.csv (one row per run) and results.md (mean ± std over seeds, and the paired test)."""
    write_cells(grid)
    csv_text, md_text = results_tables(grid.out, grid.axes, grid.baseline, grid.compare,
                                       [(name, values) for name, values, _ in grid.cells], metric)
    csv_path, md_path = grid.out / "results.csv", grid.out / "results.md"
    csv_path.write_text(csv_text)
    md_path.write_text(md_text)
    return csv_path, md_path


def results_tables(out: Path, axes: dict[str, list], baseline: dict[str, Any], compare: dict[str, str],
                   cells: list[tuple[str, dict[str, Any]]], metric: str = "ndcg@10") -> tuple[str, str]:
    """The CSV (one row per finished run) and the Markdown table (mean ± std over seeds, and the paired
    tests) of the finished runs among ``cells`` (folder name, axis values) under ``out``."""
    from learec.evaluate.significance import paired_test

    axis_keys = list(axes)
    rows, ranks = [], {}
    for name, values in cells:
        mpath = out / name / "metrics.json"
        if mpath.is_file():
            test = json.loads(mpath.read_text())["test"]
            rows.append({**values, **{m: test[m] for m in test if not m.endswith("events")}})
            if (out / name / "test_ranks.npy").is_file():
                ranks[tuple(values[k] for k in axis_keys)] = np.load(out / name / "test_ranks.npy")
    group_keys = [k for k in axis_keys if k != "seed"]
    metric_keys = [m for m in TABLE_METRICS if rows and m in rows[0]]
    prefixes = sorted({m.split("/")[0] for r in rows for m in r if "/" in m})  # event types, e.g. click
    metric_keys += [f"{p}/{m}" for p in prefixes for m in TABLE_METRICS if any(f"{p}/{m}" in r for r in rows)]
    header = [*axis_keys, *metric_keys]
    csv_lines = [",".join(header)] + [",".join(str(r.get(k, "")) for k in header) for r in rows]

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in group_keys), []).append(r)
    extra = [f"Δ{metric} vs {', '.join(f'{k}={v}' for k, v in baseline.items())}", "p"] if baseline else []
    if compare:
        # the row's `compare` variant, named in its own column (usually the same method without the LE)
        extra += ["compared with", f"Δ{metric} vs it", "p "]
    md = [f"| {' | '.join(group_keys)} | seeds | {' | '.join(metric_keys + extra)} |",
          "|" + "---|" * (len(group_keys) + 1 + len(metric_keys) + len(extra))]
    for key, rs in groups.items():
        cols = [_format([r[m] for r in rs if m in r]) for m in metric_keys]
        if baseline:
            cols += _significance(dict(zip(group_keys, key)), baseline, rs, ranks, axis_keys, metric, paired_test)
        if compare:
            variant = dict(zip(group_keys, key)).get("variant")
            other = compare.get(str(variant))
            cols += ([other, *_significance(dict(zip(group_keys, key)), {"variant": other}, rs, ranks, axis_keys,
                                            metric, paired_test)] if other else ["", "", ""])
        md.append(f"| {' | '.join(map(str, key))} | {len(rs)} | " + " | ".join(cols) + " |")
    return "\n".join(csv_lines) + "\n", "\n".join(md) + "\n"


def _significance(values: dict, baseline: dict, rows: list[dict], ranks: dict, axis_keys: list[str], metric: str,
                  paired_test) -> list[str]:
    """Paired test of a group against its baseline group over the seeds both have finished."""
    if all(values.get(k) == v for k, v in baseline.items()):
        return ["(baseline)", ""]
    base_values = {**values, **baseline}
    seeds = [r.get("seed") for r in rows]
    mine, theirs = [], []
    for seed in seeds:
        a = ranks.get(tuple({**values, "seed": seed}[k] for k in axis_keys))
        b = ranks.get(tuple({**base_values, "seed": seed}[k] for k in axis_keys))
        if a is not None and b is not None:
            mine.append(a)
            theirs.append(b)
    if not mine:
        return ["–", "–"]
    result = paired_test(mine, theirs, metric)
    mark = "*" if result["p"] < 0.05 else ""
    return [f"{result['diff']:+.4f}{mark}", f"{result['p']:.3g}"]
