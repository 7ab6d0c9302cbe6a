"""The LEA pipeline from one file: item tokens -> LE training -> labelling -> LE report -> grid -> report.

Labelling includes the LE states of the evaluation events when a run sets lea.state_to_actor.

Pipeline file = a grid file (see :mod:`learec.grid`, usually with ``variants``) plus::

    le: le_ml100k.yaml            # the LE config (data + le sections), relative to this file
    le_set: [le.train.epochs=2]   # optional overrides of it
    le_run: runs/lea-ml100k/le    # the LE run directory (default: <out>/le)
    report: runs/lea-ml100k/report  # where the report goes (default: <out>/report)

A cell reads the LE's labels, or, with ``lea.source: oracle`` or ``popularity``, those of a control label
source (:mod:`learec.lea.sources`), which the pipeline labels from the LE config's data and ``le.label``
settings into ``<out>/sources/<source>`` (no LLM, seconds) before the grid runs; e.g. the variant
``snqn+oracle: {set: [objective=snqn, lea.source=oracle, lea.augment=true], compare: snqn}``.

Every stage is skipped when its output is valid for its inputs and redone otherwise: the LE stages by
their keys (learec.env.run), the control sources by their caches' fingerprints (learec.lea.control), the
grid runs by their configs, which name the key of the labels they read, so runs trained on older labels
are moved aside and run again. ``--dry-run`` reads those keys and prints what each stage and each grid
cell would do, without loading the LLM.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from learec.config import Config, load_config
from learec.errors import UserError
from learec.grid import (Cell, CellPlan, Grid, GridSpec, check_reuse_dirs, expand_grid, plan_grid, print_plan,
                         read_spec, run_grid, select_cells)

log = logging.getLogger("learec")


class PipelineSpec(GridSpec):
    """A pipeline file: a grid file plus the LE its LE variants read."""

    le: str = Field(description="the LE config file (data + le sections), relative to the pipeline file")
    le_set: list[str] = Field(default_factory=list, description="overrides of the LE config")
    le_run: str | None = Field(None, description="the LE run directory (default <out>/le)")
    report: str | None = Field(None, description="where the report goes (default <out>/report)")

    @field_validator("le_set", mode="before")
    @classmethod
    def _no_le_set_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v


PIPELINE_KEYS = tuple(k for k in PipelineSpec.model_fields if k not in GridSpec.model_fields)


def _paths(spec: PipelineSpec, out: Path, out_given: bool) -> tuple[Path, Path]:
    """The LE run and report directories; the file's own ``le_run``/``report`` belong to its own ``out``."""
    le_run = Path((None if out_given else spec.le_run) or out / "le").resolve()  # runs read it from their processes
    return le_run, Path((None if out_given else spec.report) or out / "report")


# the control label sources a pipeline labels itself (a teacher needs a finished run: `learec env label`)
PIPELINE_SOURCES = ("oracle", "popularity")


def grid_sources(grid: Grid) -> list[str]:
    """The control label sources the grid's cells read (``lea.source``), in :data:`PIPELINE_SOURCES` order;
    a teacher is refused."""
    used = {c.cfg.lea.source for c in grid.cells if c.cfg.lea.enabled and c.cfg.lea.source != "le"}
    teacher = [c.name for c in grid.cells if c.cfg.lea.enabled and c.cfg.lea.source == "teacher"]
    if teacher:
        raise UserError(f"lea.source=teacher in {len(teacher)} cell(s) (e.g. {teacher[0]}): the pipeline labels the "
                        f"{' and '.join(PIPELINE_SOURCES)} sources itself, but a teacher's labels need a finished run",
                        "label them with `learec env label --source teacher --teacher RUN_DIR --run-dir DIR` and "
                        "train on them with `learec grid` (lea.source=teacher, lea.cache=DIR)")
    return [s for s in PIPELINE_SOURCES if s in used]


def sources_dir(out: Path) -> Path:
    """Where the pipeline's control label sources go: ``<out>/sources/<source>``."""
    return (out / "sources").resolve()  # runs read them from their processes


def with_le_cache(grid: Grid, le_run_dir: Path, cache_key: str,
                  sources: dict[str, tuple[Path, str]] | None = None) -> Grid:
    """The grid with every LE variant reading the labels of ``le_run_dir`` under ``cache_key``, and every cell
    of a control source (``lea.source``) those of ``sources[source]`` (run directory, key), so relabelled
    labels make exactly the runs that read them stale; cells without LE inputs name no cache, so they depend
    on none."""
    cells = []
    for cell in grid.cells:
        lea = cell.cfg.lea
        if not lea.enabled:
            lea = lea.model_copy(update={"cache": None, "cache_key": None})
        else:
            run_dir, key = (le_run_dir, cache_key) if lea.source == "le" else (sources or {})[lea.source]
            lea = lea.model_copy(update={"cache": str(run_dir), "cache_key": key})
        cells.append(Cell(cell.name, cell.values, cell.cfg.model_copy(update={"lea": lea})))
    return replace(grid, cells=cells)


def label_sources(names: list[str], le_cfg: Config, root: Path) -> dict[str, tuple[Path, str]]:
    """Label (or reuse) each control source of ``names`` in ``root/<source>`` with the LE config's data and
    ``le.label`` settings (the pipeline file is the record: a changed config replaces the saved one, and
    changed settings relabel); returns source -> (run directory, labels' key)."""
    from learec.lea.control import label_control

    labelled = {}
    for source in names:
        run_dir = root / source
        cache = label_control(source, le_cfg, run_dir, replace_config=True)
        print(f"  {source} labels: {cache.path}")
        labelled[source] = (run_dir, cache.key)
    return labelled


def run_pipeline(path: str | Path, workers: int = 1, threads: int | None = None, le_set: list[str] | None = None,
                 out: str | Path | None = None, only: list[str] | None = None,
                 reuse: list[Path] | None = None, dry_run: bool = False,
                 overrides: list[str] | None = None) -> Path:
    """Run (or finish) the pipeline of ``path``; returns the report directory. ``le_set`` adds LE overrides
    and ``out`` replaces the output directory, so one file serves every point of an LE ablation; ``only``
    and ``reuse`` select grid cells and copy finished runs as in :func:`learec.grid.run_grid`.
    ``overrides`` (``--set``) change a key in every grid cell, after the file's ``set``, and in the LE config,
    before ``le_set``, so a data setting such as ``data.raw`` stays the same for the labels and the runs. With
    ``dry_run``, print what each stage would do (:func:`print_dry_run`) and run nothing."""
    from learec.env.run import LERun, le_run_log
    from learec.env.stages import REPORT
    from learec.report import build_report
    from learec.usage import find_usage, usage_table

    path = Path(path)
    spec = read_spec(path, PipelineSpec, kind="pipeline file")
    le_cfg = load_config(path.parent / spec.le, [*spec.le_set, *(overrides or []), *(le_set or [])])
    # The grid is read once; its LE variants need some lea.cache to validate, and get the real one and
    # its key from with_le_cache once the labels are known.
    grid = expand_grid(spec, path, extra_set=["lea.cache=.", *(overrides or [])], out=out)
    le_run_dir, report_dir = _paths(spec, grid.out, out is not None)
    selected = [c.cfg for c in select_cells(grid, only or [])]  # a bad --only fails now, not after the LE
    sources = grid_sources(grid)  # likewise a source the pipeline cannot label
    check_reuse_dirs(reuse or [])  # likewise a missing --reuse directory
    mismatched = [c.name for c in grid.cells if c.cfg.data != le_cfg.data]
    if mismatched:
        raise UserError(f"The grid's data section differs from the LE config's in {len(mismatched)} cell(s) "
                        f"(e.g. {mismatched[0]}): the labels would not line up with the transitions",
                        "give the LE config and the grid the same data settings")

    eval_states = any(cfg.lea.state_to_actor for cfg in selected)  # their CE head reads LE states at evaluation
    if dry_run:
        print_dry_run(grid, le_cfg, le_run_dir, only, reuse, workers, threads, eval_states, sources)
        return report_dir

    print(f"[1/4] LE: item tokens and LE training -> {le_run_dir}")
    le = LERun(le_run_dir, le_cfg, replace_config=True)
    with le_run_log(le):  # as `learec env train|label|report`: the LE run's lock, and its le.log
        le.model(train=True)
        print("[2/4] LE: labelling every training transition, and the LE quality report"
              + (f"; control label sources {', '.join(sources)} -> {sources_dir(grid.out)}" if sources else ""))
        cache = le.label()
        assert cache is not None
        if eval_states:
            le.eval_states()
        if not REPORT.status(le_run_dir, le.cfg, cache.key).current:
            le.report()  # stamped with its key
    labelled = label_sources(sources, le_cfg, sources_dir(grid.out))

    print(f"[3/4] RL grid -> {grid.out}")
    grid = with_le_cache(grid, le_run_dir, cache.key, labelled)
    run_grid(path, workers=workers, threads=threads, grid=grid, redo_stale=True, only=only, reuse=reuse)

    print(f"[4/4] report -> {report_dir}")
    build_report([grid.out], report_dir, le_run=le_run_dir)
    print(f"report: {report_dir / 'report.md'} and {report_dir / 'report.html'}")
    print(f"what making the current outputs cost, by stage, over every session that worked on them "
          f"(`learec usage {le_run_dir} {grid.out}`; --each for every run):")
    print(usage_table(find_usage([le_run_dir, grid.out])))
    return report_dir


def print_dry_run(grid: Grid, le_cfg: Config, le_run_dir: Path, only: list[str] | None,
                  reuse: list[Path] | None, workers: int, threads: int | None, eval_states: bool = False,
                  sources: list[str] | None = None) -> None:
    """The LE stages' status (:func:`learec.env.stages.le_status`, what the run itself acts on), the control
    sources' (:func:`learec.lea.control.control_status`, likewise), then the grid's plan
    (:func:`learec.grid.plan_grid`). Until labels are complete, the cells that read them wait: their config
    names the labels' key."""
    from learec.data.prepared import prepare
    from learec.env.stages import LABELLING, le_status
    from learec.lea.control import control_status

    data = prepare(le_cfg.data)
    statuses = le_status(le_cfg, le_run_dir, data, eval_states=eval_states)
    print(f"LE run {le_run_dir}:")
    for status in statuses:
        print(f"  {status.stage:<12} {status.detail}")
    cache_key = next(s.key for s in statuses if s.stage == LABELLING.name)
    keys: dict[str, str | None] = {"le": cache_key}
    if sources:
        root = sources_dir(grid.out)
        print(f"Control label sources {root}:")
        for source in sources:
            status = control_status(source, le_cfg, data, root / source)
            print(f"  {source:<12} {status.detail}")
            keys[source] = status.key
    grid = with_le_cache(grid, le_run_dir, cache_key or "pending",
                         {s: (sources_dir(grid.out) / s, keys[s] or "pending") for s in sources or []})

    def waiting(plan: CellPlan) -> CellPlan:
        """A cell planned against a placeholder key waits (a folder of its would look stale)."""
        source = plan.cfg.lea.source
        if not plan.cfg.lea.enabled or keys[source] is not None:
            return plan
        return replace(plan, status="waits", detail=f"for the {'LE' if source == 'le' else source} labels")

    plans = [waiting(p) for p in plan_grid(grid, only, reuse, threads, workers)]
    print(f"RL grid {grid.out}:")
    print_plan(plans, grid.out, redo_stale=True)
