"""A control labelling run: ``learec env label --source oracle|popularity|teacher --run-dir DIR``.

``DIR`` holds ``config.yaml`` (its data section and ``le.label.*`` / ``le.model.state_dim`` are what
matter), ``label/`` (the cache, the same format as an LE run's, so ``lea.cache=DIR`` reads it) and
``label.log``. No LLM is loaded. A complete cache from the same source and settings is reused; one from
another source or settings is replaced (its key changes, so runs that trained on it are refused or, in a
pipeline, redone). An LE run directory is never written: its ``label/`` holds the LE's labels.

``learec pipeline`` labels the oracle and popularity sources its runs name (``lea.source``) here too, in
``<out>/sources/<source>`` with the LE config, and ``--dry-run`` prints :func:`control_status`, which is
what :func:`label_control` decides by.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from learec.config import Config, config_differences, load_config
from learec.data.prepared import PreparedData, prepare
from learec.distributed import is_distributed
from learec.env.label import LabelCache, cache_problem, load_label_cache, write_label_cache
from learec.errors import UserError
from learec.lea.sources import CONTROL_SOURCES, control_labels, source_fingerprint
from learec.rundir import exclusive_run_dir, log_to_file
from learec.stages import State, StageStatus, check_saved_config

log = logging.getLogger("learec")


def control_config(cfg: Config | None, run_dir: Path, replace: bool = False) -> Config:
    """The config of a control run: ``cfg`` for a new directory, the saved one (which ``cfg`` must equal)
    otherwise. With ``replace`` (the pipeline, whose file is the record), a different ``cfg`` replaces the
    saved one; the cache's fingerprint then decides whether the labels are made again."""
    if (run_dir / "item_tokens.pt").exists() or (run_dir / "le").exists():
        raise UserError(f"{run_dir} is an LE run directory: its label/ holds the LE's labels",
                        f"give the control labels their own --run-dir (--config {run_dir / 'config.yaml'} reuses "
                        "its settings)")
    if (run_dir / "checkpoints").exists():
        raise UserError(f"{run_dir} is a training run directory", "give the control labels their own --run-dir")
    saved_path = run_dir / "config.yaml"
    if saved_path.is_file():
        saved = load_config(saved_path)
        if replace and cfg is not None and cfg.to_dict() != saved.to_dict():
            log.info("label config of %s changed: %s", run_dir,
                     ", ".join(config_differences(cfg.to_dict(), saved.to_dict())))
            cfg.save(saved_path)
            return cfg
        return check_saved_config(cfg, saved, run_dir,
                                  "drop --config/--set to relabel with its own, or use another --run-dir")
    if cfg is None:
        raise UserError(f"{run_dir} has no config.yaml: a control label source needs --config",
                        f"e.g. learec env label --source oracle --config configs/le_ml100k.yaml --run-dir {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(saved_path)
    return cfg


def control_status(source: str, cfg: Config, data: PreparedData, run_dir: Path,
                   teacher: Path | None = None) -> StageStatus:
    """What ``run_dir/label/`` is worth for ``source`` labelled with ``cfg`` (nothing is written): current
    (its key is the cache's), to make, or stale. ``found`` is the fingerprint the labels must have."""
    name = f"{source} labels"
    fingerprint = source_fingerprint(source, cfg, data, teacher)
    label_dir = run_dir / "label"
    problem = cache_problem(label_dir, fingerprint)
    if problem is None:
        return StageStatus(name, State.CURRENT, "complete", key=load_label_cache(label_dir, verify=False).key,
                           found=fingerprint)
    if problem == "missing":
        return StageStatus(name, State.TO_MAKE, "to label", found=fingerprint)
    return StageStatus(name, State.STALE, f"{problem}: relabel", found=fingerprint)


def label_control(source: str, cfg: Config | None, run_dir: Path, teacher: Path | None = None,
                  replace_config: bool = False) -> LabelCache:
    """Write (or reuse) ``run_dir/label/`` from ``source`` and return the cache. ``replace_config``: see
    :func:`control_config`."""
    if source not in CONTROL_SOURCES:
        raise UserError(f"unknown label source {source!r}", f"use one of {', '.join(CONTROL_SOURCES)}")
    if (source == "teacher") != (teacher is not None):
        raise UserError("--teacher RUN_DIR goes with --source teacher, and only with it")
    if is_distributed():
        raise UserError("control label sources run as one process (no LLM to share)", "run without torchrun")
    run_dir = Path(run_dir)
    cfg = control_config(cfg, run_dir, replace_config)
    with exclusive_run_dir(run_dir, "labelling"), log_to_file(run_dir, "label.log"):
        data = prepare(cfg.data, log=log.info)
        status = control_status(source, cfg, data, run_dir, teacher)
        fingerprint, out = status.found, run_dir / "label"
        if status.current:
            log.info("%s labels in %s are complete and verified: reused", source, out)
            return load_label_cache(out, fingerprint, verify=False)
        if status.state is State.STALE:
            log.warning("labelling cache %s is %s: replacing it with %s labels", out,
                        status.detail.removesuffix(": relabel"), source)
        arrays = control_labels(source, data, cfg, teacher)
        tmp = run_dir / ".label.tmp"  # written whole, then swapped in: never a half-written label/
        shutil.rmtree(tmp, ignore_errors=True)
        write_label_cache(tmp, arrays, fingerprint)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        log.info("%s labels of %d transitions written to %s", source, len(data.train), out)
        return load_label_cache(out, fingerprint)
