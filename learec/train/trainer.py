"""The training loop: batches, validation schedule, early stopping, checkpoints and exact resume.

Determinism: each epoch's data order is a permutation drawn from ``(seed, epoch)`` alone, and the last
checkpoint holds the objective (networks + optimisers), every RNG state, the position inside the epoch and
the early-stopping state. A run killed at any point and resumed from its last checkpoint therefore takes
exactly the steps an uninterrupted run takes.

Under torchrun (DistributedDataParallel): every rank draws the same epoch order, each global batch of
``train.batch_size`` transitions is split into equal contiguous parts, one per rank (so the step count
and the effective batch equal one process's; the at most ``world - 1`` rows of a batch that do not
divide evenly are left out of that step, and an epoch's last batch smaller than the world is skipped), and DDP averages the gradients. Each rank's RNG is seeded by
``(seed, rank)`` for dropout and negatives; the checkpoint holds every rank's RNG state, so a run resumes
exactly with the same number of ranks. Rank 0 alone writes files and logs.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from learec import distributed
from learec.config import Config
from learec.data.prepared import PreparedData
from learec.data.splits import Transitions
from learec.errors import UserError
from learec.evaluate.evaluator import evaluate
from learec.rl.base import Objective, SideInputs
from learec.utils import atomic_save_npy, atomic_torch_save, atomic_write_json, seed_everything
from learec.utils import error_summary, load_torch_file

log = logging.getLogger("learec.train")

BATCH_KEYS = ("state", "length", "action", "event", "next_state", "next_length", "done")


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # batches of the current epoch already taken
    global_step: int = 0
    best_value: float = float("-inf")
    best_epoch: int = -1
    bad_evals: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def epoch_batches(n: int, batch_size: int, world: int = 1) -> int:
    """Training steps in an epoch of ``n`` transitions: every batch, less a last one too small to give each
    of ``world`` ranks a row."""
    batches = (n + batch_size - 1) // batch_size
    if world > 1 and n - (batches - 1) * batch_size < world:
        batches -= 1
    return batches


def make_batch(data: Transitions, idx: np.ndarray, device: str) -> dict[str, torch.Tensor]:
    batch = {}
    for key in BATCH_KEYS:
        arr = np.asarray(getattr(data, key)[idx])
        dtype = torch.bool if arr.dtype == np.bool_ else torch.int64
        batch[key] = torch.from_numpy(arr).to(device=device, dtype=dtype)
    return batch


def rank_rows(idx: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank ``rank``'s equal contiguous part of a global batch (all of it in one process)."""
    per_rank = len(idx) // world
    return idx[rank * per_rank:(rank + 1) * per_rank]


def _numpy_rng_state() -> dict[str, Any]:
    """numpy's global RNG state as a tensor and plain values: a checkpoint is read back with
    ``weights_only``, which refuses numpy arrays."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}


def _set_numpy_rng_state(state: dict[str, Any]) -> None:
    np.random.set_state((state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"],
                         state["cached_gaussian"]))


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": _numpy_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():  # dropout and negative sampling on a GPU draw from its generators
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    _set_numpy_rng_state(state["numpy"])
    random.setstate(state["python"])


class LEReader(Protocol):
    """The LE inputs of the training transitions and evaluation events (learec.lea.inputs.LEInputs)."""

    def batch(self, idx: np.ndarray, device: str | torch.device) -> SideInputs: ...

    def eval_features(self, split: str) -> dict[str, np.ndarray]: ...


class Trainer:
    def __init__(self, cfg: Config, data: PreparedData, objective: Objective, run_dir: Path,
                 le_inputs: LEReader | None = None) -> None:
        self.cfg = cfg
        self.le_inputs = le_inputs  # LEA: each batch's side input for the objective
        self.data = data
        self.objective = objective
        self.run_dir = run_dir
        self.ckpt_dir = run_dir / "checkpoints"
        self.progress = Progress()
        if distributed.is_distributed() and objective.trainable:
            self._distribute()
        prefix = cfg.eval.metric.split("/")[0] if "/" in cfg.eval.metric else None
        if prefix is not None and (len(data.event_types) < 2 or prefix not in data.event_types):
            raise UserError(f"eval.metric {cfg.eval.metric!r} names event type {prefix!r}, but the data's per-type "
                            f"metrics are for {data.event_types if len(data.event_types) > 1 else 'no types'}",
                            "use an event type of the data, or a plain metric like ndcg@10")

    def _distribute(self) -> None:
        from torch.nn.parallel import DistributedDataParallel

        device = torch.device(self.cfg.train.device)
        ids = [device] if device.type == "cuda" else None
        # DDP copies rank 0's weights to every rank here, then averages gradients in each backward
        self.objective.distribute(lambda m: DistributedDataParallel(m, device_ids=ids, forward_sync_buffers=False),
                                  self.cfg.seed)
        # dropout and negatives differ across ranks; choices all ranks share use the objective's generator
        seed_everything(int(np.random.SeedSequence([self.cfg.seed, distributed.rank()]).generate_state(1)[0]))

    # --- checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        rng = _rng_state()
        if distributed.is_distributed():  # every rank's generators, so each resumes its own stream
            ranks: list[Any] = [None] * distributed.world_size()
            torch.distributed.all_gather_object(ranks, rng)
            rng = {"ranks": ranks}
        if distributed.is_main():
            atomic_torch_save(self.ckpt_dir / "last.pt", {
                "objective": self.objective.state_dict(), "progress": asdict(self.progress), "rng": rng,
            })

    def load_checkpoint(self) -> bool:
        path = self.ckpt_dir / "last.pt"
        if not distributed.broadcast_object(path.is_file() if distributed.is_main() else None):  # one answer
            return False
        restart = f"delete it and run `learec train --resume --run-dir {self.run_dir}` again: the run restarts at epoch 0"
        state = load_torch_file(path, restart)
        try:  # a file that loads safely may still not be this run's checkpoint
            self._restore(path, state)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
            raise UserError(f"{path} is not a checkpoint of this run ({error_summary(err)})", restart) from None
        return True

    def _restore(self, path: Path, state: dict[str, Any]) -> None:
        self.objective.load_state_dict(state["objective"])
        self.progress = Progress(**state["progress"])
        rng = state["rng"]
        if "ranks" in rng or distributed.is_distributed():
            world = distributed.world_size()
            saved_world = len(rng.get("ranks", [rng]))
            if saved_world != world:
                raise UserError(f"{path} was saved by {saved_world} process(es); this run has {world}",
                                f"resume with torchrun --nproc_per_node {saved_world}")
            rng = rng["ranks"][distributed.rank()] if "ranks" in rng else rng
        _set_rng_state(rng)

    def _save_best(self) -> None:
        if distributed.is_main():
            atomic_torch_save(self.ckpt_dir / "best.pt", self.objective.scorer().state_dict())

    # --- evaluation --------------------------------------------------------------------------------
    def _evaluate(self, split: str) -> tuple[dict[str, float], np.ndarray]:
        ev = self.cfg.eval
        self.objective.eval()
        features = self.le_inputs.eval_features(split) if self.cfg.lea.state_to_actor else None
        metrics, ranks = evaluate(self.objective.scorer(), getattr(self.data, split), self.data.event_types, ev.ks,
                                  ev.batch_size, ev.exclude_seen, self.cfg.train.device,
                                  progress=self.cfg.train.progress, desc=f"eval {split}", features=features)
        self.objective.train()
        return metrics, ranks

    def _validate(self) -> None:
        p = self.progress
        metrics, _ = self._evaluate("val")
        value = metrics[self.cfg.eval.metric]
        p.history.append({"epoch": p.epoch, "step": p.global_step, **{f"val/{k}": v for k, v in metrics.items()}})
        if value > p.best_value:
            p.best_value, p.best_epoch, p.bad_evals = value, p.epoch, 0
            self._save_best()
        else:
            p.bad_evals += 1
        log.info("epoch %d: val %s %.4f (best %.4f at epoch %d)", p.epoch, self.cfg.eval.metric, value,
                 p.best_value, p.best_epoch)
        train = self.cfg.train
        if train.patience and p.bad_evals >= train.patience and p.epoch >= train.min_epochs:
            p.stopped_early = True
            log.info("early stop: no improvement in %d validations", p.bad_evals)

    # --- the loop ----------------------------------------------------------------------------------
    def fit(self, validate: bool = True) -> None:
        """Train to the end (epochs, early stop or ``train.max_steps``); ``validate`` False skips the
        validations (benchmarks of the training steps alone)."""
        cfg, p = self.cfg, self.progress
        train = self.data.train
        n = len(train)
        bs = cfg.train.batch_size
        if not self.objective.trainable:
            return
        rank, world = distributed.rank(), distributed.world_size()
        n_batches = epoch_batches(n, bs, world)
        self.objective.train()
        while p.epoch < cfg.train.epochs and not p.stopped_early:
            order = epoch_order(cfg.seed, p.epoch, n)
            sums: dict[str, float] = {}
            n_steps = 0
            t0 = time.time()
            bar = tqdm(range(p.step_in_epoch, n_batches), desc=f"epoch {p.epoch + 1}/{cfg.train.epochs}",
                       disable=None if cfg.train.progress and distributed.is_main() else True, leave=False, mininterval=1.0)
            for b in bar:
                if cfg.train.max_steps and p.global_step >= cfg.train.max_steps:
                    break  # also after a resume from a checkpoint taken at the budget
                idx = rank_rows(order[b * bs:(b + 1) * bs], rank, world)
                idx = np.sort(idx)  # sorted: contiguous reads from memory-mapped arrays
                batch = make_batch(train, idx, cfg.train.device)
                side = self.le_inputs.batch(idx, cfg.train.device) if self.le_inputs is not None else None
                logs = self.objective.train_step(batch, side)
                for key, value in logs.items():
                    sums[key] = sums.get(key, 0.0) + value
                n_steps += 1
                p.step_in_epoch, p.global_step = b + 1, p.global_step + 1
                if cfg.train.checkpoint_every_steps and p.global_step % cfg.train.checkpoint_every_steps == 0:
                    self.save_checkpoint()
                if n_steps % 50 == 0:
                    bar.set_postfix(loss=f"{sums['loss'] / n_steps:.4f}")
            out_of_steps = bool(cfg.train.max_steps) and p.global_step >= cfg.train.max_steps
            if p.step_in_epoch == n_batches:
                p.epoch, p.step_in_epoch = p.epoch + 1, 0
            seconds = time.time() - t0
            means = ", ".join(f"{k} {v / n_steps:.4f}" for k, v in sums.items() if k not in ("main",)) if n_steps else ""
            log.info("epoch %d: %s; %.1f s, %.0f transitions/s", p.epoch + (p.step_in_epoch > 0), means, seconds,
                     n_steps * bs / max(seconds, 1e-9))  # all ranks together
            if out_of_steps:
                p.stopped_early = True  # the run is finished: --resume does not go on
                log.info("stopped at the step budget (train.max_steps=%d)", cfg.train.max_steps)
            if validate and (p.epoch % cfg.train.eval_every == 0 or p.epoch == cfg.train.epochs or out_of_steps):
                self._validate()
            if distributed.is_main():
                atomic_write_json(self.run_dir / "history.json", p.history)  # before last.pt: never behind it
            self.save_checkpoint()

    def final_metrics(self) -> dict[str, Any]:
        """Restore the best checkpoint (by validation) and evaluate it on val and, once, on test."""
        best = self.ckpt_dir / "best.pt"
        has_best = distributed.broadcast_object(best.is_file() if distributed.is_main() else None)  # one answer
        if self.objective.trainable and has_best:
            retrain = f"delete {self.ckpt_dir} and run `learec train --resume --run-dir {self.run_dir}`: it retrains"
            self.objective.scorer().load_state_dict(load_torch_file(best, retrain))
        val, _ = self._evaluate("val")
        test, test_ranks = self._evaluate("test")
        if distributed.is_main():
            atomic_save_npy(self.run_dir / "test_ranks.npy", test_ranks)  # per-event ranks, for paired significance tests
            # the user of each of those events, for the paired test clustered by user
            atomic_save_npy(self.run_dir / "test_users.npy", np.asarray(self.data.test.user))
        return {"val": val, "test": test, "best_epoch": self.progress.best_epoch,
                "epochs_run": self.progress.epoch, "stopped_early": self.progress.stopped_early}
