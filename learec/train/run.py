"""A training run from a config: prepares data, builds the objective, trains, evaluates, writes the run dir.

Run directory layout::

    config.yaml        the resolved config (the single record of the experiment)
    train.log          the log
    checkpoints/       last.pt (resume point), best.pt (best validation weights)
    history.json       validation metrics per evaluation
    metrics.json       {"val": {...}, "test": {...}, ...}, written last
    usage.jsonl        wall time and peak memory of the training (learec.usage; one line per invocation)
    le_cache.json      with lea.*: the key of the LE labels the run trains on (a relabelled cache is refused)
    test_ranks.npy     per-event test ranks (for paired significance tests)
    test_users.npy     the user of each test event (for the paired test clustered by user)
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch

from learec import distributed
from learec.config import Config, load_config
from learec.data.prepared import PreparedData, prepare
from learec.devices import run_device
from learec.errors import UserError
from learec.evaluate.evaluator import evaluate
from learec.lea import build_objective, negatives_per_step
from learec.rundir import exclusive_run_dir, log_to_file
from learec.rl.base import Objective
from learec.stages import State, check_saved_config
from learec.train.checkpoints import load_trained_model
from learec.train.outputs import metrics_file, train_status
from learec.train.trainer import Trainer, epoch_batches
from learec.usage import recorded
from learec.utils import atomic_write_json, seed_everything

if TYPE_CHECKING:
    from learec.lea.inputs import LEInputs

log = logging.getLogger("learec")


def default_run_dir(cfg: Config) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.data.dataset}-{cfg.data.protocol}-{cfg.model.backbone}-{cfg.objective}-seed{cfg.seed}-{stamp}"


def objective_for(cfg: Config, data: PreparedData, le_state_dim: int = 0) -> Objective:
    """The objective of ``cfg`` sized for ``data`` (catalogue, popularity, event types) and, with
    ``lea.state``, for LE states of width ``le_state_dim``."""
    counts = torch.as_tensor(data.split.item_counts, dtype=torch.float32)
    batches = epoch_batches(len(data.train), cfg.train.batch_size, distributed.world_size())
    objective = build_objective(cfg, data.n_items, counts, data.event_types, le_state_dim=le_state_dim,
                                batches_per_epoch=batches)
    if cfg.rl.warmup_epochs is not None:
        log.info("rl.warmup_epochs=%g at %d batches per epoch: a warm-up of %d steps", cfg.rl.warmup_epochs, batches,
                 cfg.rl.sa2c_warmup_steps(batches))
    return objective


def check_le_cache(run_dir: Path, le_inputs: LEInputs, pin: bool = False) -> None:
    """Refuse LE labels other than those the run was trained on (recorded in ``le_cache.json``; with
    ``pin``, a run without a record gets one). The pipeline also names the key in the config."""
    path = run_dir / "le_cache.json"
    key = le_inputs.cache.key
    if path.is_file():
        used = json.loads(path.read_text())["key"]
        if used != key:
            raise UserError(f"{run_dir} was trained on the LE labels {used}, and {le_inputs.cache.path} now holds "
                            f"other labels ({key}): its training cannot go on, nor its LE inputs be read, with them",
                            "start a new run on the new labels (the pipeline redoes such runs by itself)")
    elif pin and distributed.is_main():
        atomic_write_json(path, {"key": key, "labels": str(le_inputs.cache.path)})


def le_inputs_for(cfg: Config, data: PreparedData) -> LEInputs | None:
    """The LE cache reader for ``cfg.lea`` (None when no LE input is used)."""
    if not cfg.lea.enabled:
        return None
    from learec.lea.inputs import LEInputs  # reads learec.env's cache format: imported only when used

    return LEInputs(cfg.lea, data, negatives=negatives_per_step(cfg))


def _on_rank_device(cfg: Config) -> Config:
    """``cfg`` on this process's device (learec.devices.run_device: refused if missing; under torchrun,
    ``cuda`` is this rank's GPU)."""
    device = run_device(cfg.train.device, "train.device")
    if device == cfg.train.device:
        return cfg
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"device": device})})


def usage_stage(cfg: Config, run_dir: Path) -> str:
    """The stage name a training run's wall time and peak memory are recorded under (:mod:`learec.usage`),
    which ``learec usage`` groups runs by: a grid cell's name without its seed (``sasrec-snqn+lea-seed3``:
    ``train sasrec-snqn+lea``), else the run's backbone and objective."""
    cell = re.fullmatch(r"(.+)-seed\d+", run_dir.name)
    if cell:
        return f"train {cell.group(1)}"
    return f"train {cfg.model.backbone} {cfg.objective}{' +LE inputs' if cfg.lea.enabled else ''}"


def _apply_threads(cfg: Config) -> None:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)


def train_run(cfg: Config | None, run_dir: Path | None = None, resume: bool = False) -> dict[str, Any]:
    """Train the run in ``run_dir`` and return its metrics; the run dir holds everything.

    With ``resume``, an interrupted run continues from its last checkpoint, a finished one returns its
    metrics, and an empty directory starts afresh from ``cfg`` (so the same command can be repeated).
    """
    if cfg is None and not resume:
        raise UserError("a config is needed to start a run")
    # under torchrun every rank must use rank 0's directory (a time-stamped default could differ)
    run_dir = Path(run_dir) if run_dir else distributed.broadcast_object(default_run_dir(cfg))
    created = not run_dir.exists()
    # one writer per run directory (rank 0 writes for all ranks)
    with exclusive_run_dir(run_dir) if distributed.is_main() else nullcontext():
        try:
            return _train_in(cfg, run_dir, resume)
        except UserError:
            # bad input found before anything was trained: leave no empty run directory behind
            if created and distributed.is_main() and not (run_dir / "checkpoints").exists():
                shutil.rmtree(run_dir, ignore_errors=True)
            raise


def _train_in(cfg: Config | None, run_dir: Path, resume: bool) -> dict[str, Any]:
    saved_path = run_dir / "config.yaml"
    if resume and saved_path.is_file():
        cfg = check_saved_config(cfg, load_config(saved_path), run_dir,
                                 "resume without --config/--set, or start a new run in another --run-dir")
        if train_status(run_dir).current:
            log.info("run %s is already finished", run_dir)
            return json.loads(metrics_file(run_dir).read_text())
    elif resume and cfg is None:
        raise UserError(f"Nothing to resume in {run_dir}: it has no config.yaml",
                        "give the --run-dir of an earlier `learec train`, or start one with --config")
    elif not resume and train_status(run_dir).state in (State.CURRENT, State.PARTIAL):
        raise UserError(f"{run_dir} already holds a run",
                        "pass --resume to continue it, or choose another --run-dir")

    run_cfg = _on_rank_device(cfg)  # a missing device is refused before the run dir is written
    distributed.barrier()  # every rank has checked the run dir before rank 0 writes to it
    with log_to_file(run_dir) if distributed.is_main() else nullcontext():
        _apply_threads(cfg)
        if distributed.is_main():
            cfg.save(run_dir / "config.yaml")
        fresh = train_status(run_dir).state is not State.PARTIAL  # else its checkpoint is resumed below
        with recorded(run_dir, usage_stage(run_cfg, run_dir), fresh=fresh):
            return _fit(run_cfg, run_dir, resume)


def _fit(cfg: Config, run_dir: Path, resume: bool) -> dict[str, Any]:
    """Data, objective and trainer for ``cfg``, trained (from its checkpoint with ``resume``) and evaluated."""
    seed_everything(cfg.seed)
    data = distributed.main_first(lambda: prepare(cfg.data, log=log.info))  # rank 0 prepares
    le_inputs = le_inputs_for(cfg, data)
    if le_inputs is not None:
        check_le_cache(run_dir, le_inputs, pin=True)
    if cfg.lea.state_to_actor:  # fail now rather than at the first validation
        for split in ("val", "test"):
            le_inputs.eval_features(split)
    objective = objective_for(cfg, data, le_inputs.state_dim if le_inputs is not None else 0)
    trainer = Trainer(cfg, data, objective, run_dir, le_inputs)
    if resume and trainer.load_checkpoint():
        log.info("resumed from epoch %d, step %d", trainer.progress.epoch, trainer.progress.step_in_epoch)
    log.info("training %s/%s on %s (%s): %d transitions, %d items", cfg.model.backbone, cfg.objective,
             cfg.data.dataset, cfg.data.protocol, len(data.train), data.n_items)
    trainer.fit()
    metrics = trainer.final_metrics()
    if distributed.is_main():
        atomic_write_json(metrics_file(run_dir), metrics)
    distributed.barrier()  # the run is finished for every rank once metrics.json exists
    log.info("test: %s", {k: round(v, 4) for k, v in metrics["test"].items() if "@" in k})
    return metrics


def evaluate_run(run_dir: Path, split: str = "test", overrides: list[str] | None = None,
                 checkpoint: str = "best") -> dict[str, float]:
    """Re-evaluate a finished (or interrupted) run's checkpoint; ``overrides`` may change ``eval.*`` keys."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml)", "give a directory made by `learec train`")
    for item in overrides or []:
        if not item.startswith(("eval.", "train.device=")):  # e.g. a GPU-trained run evaluated on a CPU
            raise UserError(f"--set {item}: only eval.* keys and train.device can change when re-evaluating a run")
    cfg = _on_rank_device(load_config(run_dir / "config.yaml", overrides))
    _apply_threads(cfg)
    data = distributed.main_first(lambda: prepare(cfg.data, log=log.info))  # rank 0 prepares
    counts = torch.as_tensor(data.split.item_counts, dtype=torch.float32)
    model = load_trained_model(cfg, run_dir, data.n_items, counts, checkpoint).to(cfg.train.device).eval()
    # a CE head that reads LE states (lea.state_to_actor) is evaluated with those of the evaluation events
    features = None
    if cfg.lea.state_to_actor:
        le_inputs = le_inputs_for(cfg, data)
        check_le_cache(run_dir, le_inputs)
        features = le_inputs.eval_features(split)
    metrics, _ = evaluate(model, getattr(data, split), data.event_types, cfg.eval.ks,
                          cfg.eval.batch_size, cfg.eval.exclude_seen, cfg.train.device, progress=cfg.train.progress,
                          desc=f"eval {split}", features=features)
    return metrics
