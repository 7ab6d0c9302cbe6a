"""A control labelling run: ``learec env label --source oracle|popularity|teacher --run-dir DIR``.

``DIR`` holds ``config.yaml`` (its data section and ``le.label.*`` / ``le.model.state_dim`` are what
matter), ``label/`` (the cache, the same format as an LE run's, so ``lea.cache=DIR`` reads it) and
``label.log``. No LLM is loaded. A complete cache from the same source and settings is reused; one from
another source or settings is replaced (its key changes, so runs that trained on it are refused or, in a
pipeline, redone). An LE run directory is never written: its ``label/`` holds the LE's labels.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from learec.config import Config, load_config
from learec.data.prepared import prepare
from learec.distributed import is_distributed
from learec.env.label import LabelCache, cache_problem, load_label_cache, write_label_cache
from learec.errors import UserError
from learec.lea.sources import CONTROL_SOURCES, control_labels, source_fingerprint
from learec.rundir import exclusive_run_dir, log_to_file
from learec.stages import check_saved_config

log = logging.getLogger("learec")


def control_config(cfg: Config | None, run_dir: Path) -> Config:
    """The config of a control run: ``cfg`` for a new directory, the saved one (which ``cfg`` must equal)
    otherwise."""
    if (run_dir / "item_tokens.pt").exists() or (run_dir / "le").exists():
        raise UserError(f"{run_dir} is an LE run directory: its label/ holds the LE's labels",
                        f"give the control labels their own --run-dir (--config {run_dir / 'config.yaml'} reuses "
                        "its settings)")
    if (run_dir / "checkpoints").exists():
        raise UserError(f"{run_dir} is a training run directory", "give the control labels their own --run-dir")
    saved_path = run_dir / "config.yaml"
    if saved_path.is_file():
        return check_saved_config(cfg, load_config(saved_path), run_dir,
                                  "drop --config/--set to relabel with its own, or use another --run-dir")
    if cfg is None:
        raise UserError(f"{run_dir} has no config.yaml: a control label source needs --config",
                        f"e.g. learec env label --source oracle --config configs/le_ml100k.yaml --run-dir {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(saved_path)
    return cfg


def label_control(source: str, cfg: Config | None, run_dir: Path, teacher: Path | None = None) -> LabelCache:
    """Write (or reuse) ``run_dir/label/`` from ``source`` and return the cache."""
    if source not in CONTROL_SOURCES:
        raise UserError(f"unknown label source {source!r}", f"use one of {', '.join(CONTROL_SOURCES)}")
    if (source == "teacher") != (teacher is not None):
        raise UserError("--teacher RUN_DIR goes with --source teacher, and only with it")
    if is_distributed():
        raise UserError("control label sources run as one process (no LLM to share)", "run without torchrun")
    run_dir = Path(run_dir)
    cfg = control_config(cfg, run_dir)
    with exclusive_run_dir(run_dir, "labelling"), log_to_file(run_dir, "label.log"):
        data = prepare(cfg.data, log=log.info)
        fingerprint = source_fingerprint(source, cfg, data, teacher)
        out = run_dir / "label"
        problem = cache_problem(out, fingerprint)
        if problem is None:
            log.info("%s labels in %s are complete and verified: reused", source, out)
            return load_label_cache(out, fingerprint, verify=False)
        if problem != "missing":
            log.warning("labelling cache %s is %s: replacing it with %s labels", out, problem, source)
        arrays = control_labels(source, data, cfg, teacher)
        tmp = run_dir / ".label.tmp"  # written whole, then swapped in: never a half-written label/
        shutil.rmtree(tmp, ignore_errors=True)
        write_label_cache(tmp, arrays, fingerprint)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        log.info("%s labels of %d transitions written to %s", source, len(data.train), out)
        return load_label_cache(out, fingerprint)
