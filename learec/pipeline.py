"""The LEA pipeline from one file: item tokens -> LE training -> labelling -> LE report -> grid -> report.

Labelling includes the LE states of the evaluation events when a run sets lea.state_to_actor.

Pipeline file = a grid file (see :mod:`learec.grid`, usually with ``variants``) plus::

    le: le_ml100k.yaml            # the LE config (data + le sections), relative to this file
    le_set: [le.train.epochs=2]   # optional overrides of it
    le_run: runs/lea-ml100k/le    # the LE run directory (default: <out>/le)
    report: runs/lea-ml100k/report  # where the report goes (default: <out>/report)

Every stage is skipped when its output is valid for its inputs and redone otherwise: the LE stages by
their keys (learec.env.run), the grid runs by their configs, which name the labelling cache's key, so
runs trained on an older cache are moved aside and run again. ``--dry-run`` reads those keys and prints
what each stage and each grid cell would do, without loading the LLM.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from learec.config import Config, load_config, read_yaml
from learec.errors import UserError
from learec.grid import check_reuse_dirs, load_grid, plan_grid, print_plan, run_grid, select_cells

log = logging.getLogger("learec")

PIPELINE_KEYS = ("le", "le_set", "le_run", "report")


def _paths(spec: dict[str, Any], out: Path) -> tuple[Path, Path]:
    le_run = Path(spec.get("le_run") or out / "le").resolve()  # runs read it from their own processes
    report = Path(spec.get("report") or out / "report")
    return le_run, report


def run_pipeline(path: str | Path, workers: int = 1, threads: int | None = None, le_set: list[str] | None = None,
                 out: str | Path | None = None, only: list[str] | None = None,
                 reuse: list[Path] | None = None, dry_run: bool = False) -> Path:
    """Run (or finish) the pipeline of ``path``; returns the report directory. ``le_set`` adds LE overrides
    and ``out`` replaces the output directory, so one file serves every point of an LE ablation; ``only``
    and ``reuse`` select grid cells and copy finished runs as in :func:`learec.grid.run_grid`. With
    ``dry_run``, print what each stage would do (:func:`print_dry_run`) and run nothing."""
    from learec.env.run import LERun, report_key
    from learec.report import build_report

    path = Path(path)
    spec = read_yaml(path)
    if "le" not in spec:
        raise UserError(f"Pipeline file {path} needs 'le': the LE config file (data + le sections)")
    le_cfg = load_config(path.parent / spec["le"], [*(spec.get("le_set") or []), *(le_set or [])])
    probe = load_grid(path, extra_set=["lea.cache=."], extra_keys=PIPELINE_KEYS, out=out)
    if out is not None:  # the file's le_run/report belong to its own out
        spec = {k: v for k, v in spec.items() if k not in ("le_run", "report")}
    le_run_dir, report_dir = _paths(spec, probe.out)
    selected = [cfg for _, _, cfg in select_cells(probe, only or [])]  # a bad --only fails now, not after the LE
    check_reuse_dirs(reuse or [])  # likewise a missing --reuse directory
    mismatched = [name for name, _, cfg in probe.cells if cfg.data != le_cfg.data]
    if mismatched:
        raise UserError(f"The grid's data section differs from the LE config's in {len(mismatched)} cell(s) "
                        f"(e.g. {mismatched[0]}): the labels would not line up with the transitions",
                        "give the LE config and the grid the same data settings")

    if dry_run:
        print_dry_run(path, le_cfg, le_run_dir, out, only, reuse, workers, threads)
        return report_dir

    print(f"[1/4] LE: item tokens and LE training -> {le_run_dir}")
    le = LERun(le_run_dir, le_cfg, replace_config=True)
    le.model(train=True)
    print("[2/4] LE: labelling every training transition, and the LE quality report")
    cache = le.label()
    assert cache is not None
    if any(cfg.lea.state_to_actor for cfg in selected):  # their CE head reads LE states at evaluation
        le.eval_states()
    if not _report_is_current(le_run_dir / "le_report.json", report_key(cache.key, le.cfg)):
        le.report()  # stamped with its report_key

    print(f"[3/4] RL grid -> {probe.out}")
    grid = load_grid(path, extra_set=[f"lea.cache={le_run_dir}", f"lea.cache_key={cache.key}"],
                     extra_keys=PIPELINE_KEYS, out=out)
    run_grid(path, workers=workers, threads=threads, grid=grid, redo_stale=True, only=only, reuse=reuse)

    print(f"[4/4] report -> {report_dir}")
    build_report([grid.out], report_dir, le_run=le_run_dir)
    print(f"report: {report_dir / 'report.md'} and {report_dir / 'report.html'}")
    return report_dir


def print_dry_run(path: Path, le_cfg: Config, le_run_dir: Path, out: str | Path | None, only: list[str] | None,
                  reuse: list[Path] | None, workers: int, threads: int | None) -> None:
    """The LE stages' status from their keys, then the grid's plan (:func:`learec.grid.plan_grid`). Until the
    labels are complete, the cells that read them wait: their config names the labels' key."""
    from learec.env.run import report_key, stage_status

    status, cache_key = stage_status(le_cfg, le_run_dir)
    if cache_key is not None:
        current = _report_is_current(le_run_dir / "le_report.json", report_key(cache_key, le_cfg))
        status["LE report"] = "current" if current else "to make"
    print(f"LE run {le_run_dir}:")
    for stage, what in status.items():
        print(f"  {stage:<12} {what}")
    grid = load_grid(path, extra_set=[f"lea.cache={le_run_dir}", f"lea.cache_key={cache_key or 'pending'}"],
                     extra_keys=PIPELINE_KEYS, out=out)
    plans = plan_grid(grid, only, reuse, threads, workers)
    if cache_key is None:
        for plan in plans:
            if plan.cfg.lea.enabled:  # planned against a placeholder key, so a folder of theirs would look stale
                plan.status, plan.detail = "waits", "for the LE labels"
    print(f"RL grid {grid.out}:")
    print_plan(plans, grid.out, redo_stale=True)


def _report_is_current(path: Path, key: str) -> bool:
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("report_key") == key
    except (OSError, ValueError):
        return False
