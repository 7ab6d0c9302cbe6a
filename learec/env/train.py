"""Training the LE state and reward models (LoRA + heads) on a small subset of training users.

Each epoch takes one random window of ``le.model.window`` items from every user of the subset. In one
packed pass per batch of windows:

- state loss: sampled softmax over ``(cos(state after h items, item key) [+ the item's learned bias,
  le.model.item_bias]) / temperature`` with the next item ``x_h`` as positive and ``K`` uniform negatives
  (never the positive);
- reward loss: Bradley–Terry ``-log σ(r(x_h) - r(a⁻))`` at ``reward_positions`` random positions, where
  ``a⁻`` is an item the user never interacted with, appended as a candidate that sees the same ``h`` items.

With ``le.train.steps`` a step budget replaces the epochs: each step draws ``batch_users`` users and
``windows_per_user`` windows of each from a per-step RNG; every ``eval_every`` steps a validation callback
(state NDCG@10) is asked and the best weights are kept, in memory and in the checkpoint, and restored at
the end. ``lr_schedule=cosine`` warms every learning rate up over ``warmup_steps`` and decays it to 0 at
the end of the budget (at a constant rate the late validation checks swing from one to the next).
That mode runs in one process only (not under ``torchrun``).

With ``le.train.token_lr`` the item tokens train too, as a second Adam parameter group at that rate; they
are then part of the LE's weights (checkpoint, ``heads.pt``, weights hash).

The checkpoint also keeps ``seconds``: the wall time of the training loop (steps and validation checks; not
loading the LM, the item tokens or labelling), summed over resumed runs (:func:`training_seconds`).

An epoch-end checkpoint (adapters, heads, optimiser) lets a killed run resume; batches come from a
per-epoch numpy RNG, so a resumed run replays the same epochs (the LE has no dropout by default; with
``lora_dropout > 0`` a resumed run is not bit-identical).

Under ``torchrun`` every rank draws the same per-epoch user order and takes its :func:`~learec.distributed.shard`
of each batch; :class:`LELoss` runs inside ``DistributedDataParallel``, which averages the gradients, so all
ranks keep identical weights. Windows and negatives then come from a per-rank RNG (a resumed run replays
the same epochs with the same number of ranks). Rank 0 alone writes the checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from learec.config import LETrainConfig
from learec.data.preprocess import Sequences
from learec.distributed import is_distributed, is_main, rank, shard, world_size
from learec.env.batches import pack_rows, uniform_negatives, unseen_items, user_items
from learec.env.model import LEModel
from learec.errors import UserError
from learec.utils import atomic_torch_save, error_summary, load_torch_file

log = logging.getLogger("learec")


def subset_users(train_users: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded random ``fraction`` of the training users (at least one), sorted."""
    users = np.unique(train_users)
    n = max(1, int(round(fraction * len(users))))
    return np.sort(np.random.default_rng([seed, 17]).choice(users, size=n, replace=False))


def _window(rng: np.random.Generator, items: np.ndarray, width: int) -> np.ndarray:
    if len(items) <= width:
        return items
    start = int(rng.integers(0, len(items) - width + 1))
    return items[start:start + width]


def le_batch(rows: list[np.ndarray], seen: list[np.ndarray], cfg: LETrainConfig, rng: np.random.Generator,
             n_items: int, device: torch.device) -> tuple[Tensor, ...]:
    """The host side of one batch of item windows (``seen``: each user's items, for negatives): packed rows
    with the reward candidates, and the state negatives; the inputs of :class:`LELoss`."""
    candidates = []
    for row, user_seen in zip(rows, seen):
        pos = np.sort(rng.choice(len(row), size=min(cfg.reward_positions, len(row)), replace=False))
        candidates.append((unseen_items(rng, user_seen, len(pos), n_items), pos))
    items, lengths, cand_items, cand_hist = pack_rows(rows, candidates, pad=n_items).to_tensors(device)
    positives = items.clamp(max=n_items - 1)
    if cfg.state_negatives == 0:  # full softmax: no sampled negatives (an empty tensor keeps one signature)
        return items, lengths, cand_items, cand_hist, positives.new_empty((*positives.shape, 0))
    negs = uniform_negatives(rng, positives.cpu().numpy().reshape(-1), cfg.state_negatives, n_items)
    return items, lengths, cand_items, cand_hist, torch.as_tensor(negs, device=device).view(*positives.shape, -1)


class LELoss(nn.Module):
    """State and reward losses of one batch as a module: every trainable parameter (adapters in the LM
    pass, projections and reward head after it) is used inside this forward, which is what
    ``DistributedDataParallel`` needs to average all their gradients."""

    def __init__(self, model: LEModel, cfg: LETrainConfig, n_items: int):
        super().__init__()
        self.model, self.cfg, self.n_items = model, cfg, n_items

    def forward(self, items: Tensor, lengths: Tensor, cand_items: Tensor, cand_hist: Tensor,
                negs: Tensor) -> dict[str, Tensor]:
        sums = self.sums(items, lengths, cand_items, cand_hist, negs)
        return self.means(sums, sums["state_count"], sums["reward_count"])

    def sums(self, items: Tensor, lengths: Tensor, cand_items: Tensor, cand_hist: Tensor,
             negs: Tensor) -> dict[str, Tensor]:
        """The losses of a batch as sums over its item positions and reward candidates, with their counts:
        a batch split into groups (:func:`grouped_losses`) adds them up before dividing."""
        model, cfg = self.model, self.cfg
        out = model(items, lengths, cand_items, cand_hist)

        # state after h items predicts x_h, for h = 0 .. len-1
        valid = out.seq_mask[:, model.n_prompt:]  # [B, T]: real item positions
        states = model.states(model.state_hidden(out)[:, :-1])  # [B, T, d]
        positives = items.clamp(max=self.n_items - 1)
        keys = model.item_keys()
        temperature = model.temperature(cfg.temperature)
        if cfg.state_negatives == 0:  # every item competes, as in full-ranking evaluation
            logits = model.scores(states[valid], keys) / temperature
            state_sum = F.cross_entropy(logits, positives[valid], reduction="sum")
        else:  # the positive (column 0) against K sampled negatives
            cand = torch.cat([positives[..., None], negs], dim=-1)  # [B, T, 1 + K]
            logits = model.scores(states, keys, cand) / temperature
            state_sum = F.cross_entropy(logits[valid], torch.zeros(int(valid.sum()), dtype=torch.long,
                                                                   device=model.device), reduction="sum")

        rewards_items = model.rewards(model.item_hidden(out))  # [B, T]
        rewards_cand = model.rewards(out.cand_hidden)  # [B, C]
        r_pos = torch.gather(rewards_items, 1, cand_hist.clamp(min=0))[out.cand_mask]
        r_neg = rewards_cand[out.cand_mask]
        sums = {"state_sum": state_sum, "reward_sum": -F.logsigmoid(r_pos - r_neg).sum(),
                "reward_hits": (r_pos > r_neg).float().sum().detach(),
                "state_count": valid.sum(), "reward_count": out.cand_mask.sum()}
        if cfg.learn_temperature:  # logged per epoch beside the losses
            sums["temperature"] = torch.as_tensor(temperature).detach()
        return sums

    def means(self, sums: dict[str, Tensor], state_count: Tensor | int,
              reward_count: Tensor | int) -> dict[str, Tensor]:
        """The loss (``loss``, with gradients) and the logged means, each sum divided by the batch's count."""
        state_loss, reward_loss = sums["state_sum"] / state_count, sums["reward_sum"] / reward_count
        losses = {"loss": self.cfg.state_weight * state_loss + self.cfg.reward_weight * reward_loss,
                  "state_loss": state_loss.detach(), "reward_loss": reward_loss.detach(),
                  "reward_acc": sums["reward_hits"] / reward_count}
        if "temperature" in sums:
            losses["temperature"] = sums["temperature"]
        return losses


def split_by_length(lengths: Tensor, cand_hist: Tensor, groups: int) -> list[tuple[Tensor, int, int]]:
    """Rows sorted by length and cut into ``groups`` runs of similar length: ``(rows, items, candidates)``,
    where ``items``/``candidates`` are the widths the group needs (its longest row, its most candidates;
    a row's valid candidates come first, as :func:`~learec.env.batches.pack_rows` lays them out)."""
    order = torch.argsort(lengths, stable=True)
    n_cand = (cand_hist >= 0).sum(dim=1)
    return [(rows, int(lengths[rows].max()), max(1, int(n_cand[rows].max())))
            for rows in order.tensor_split(min(groups, len(order))) if len(rows)]


def grouped_losses(loss_fn: LELoss, batch: tuple[Tensor, ...], groups: int) -> dict[str, Tensor]:
    """Backpropagate one batch in ``groups`` groups of rows of similar length, each cut to its own width,
    and return the batch's logged losses. Each group's loss is its sums over the whole batch's counts, so
    the accumulated gradient is the one batch's gradient up to float rounding, with fewer padded tokens
    through the LM where lengths differ (short, uneven sequences). (With ``lora_dropout > 0`` each group
    draws its own dropout masks, as rows of one batch do.)"""
    items, lengths, cand_items, cand_hist, negs = batch
    state_count, reward_count = int(lengths.sum()), int((cand_hist >= 0).sum())
    totals: dict[str, Tensor] = {}
    for rows, width, n_cand in split_by_length(lengths, cand_hist, groups):
        part = loss_fn.sums(items[rows, :width], lengths[rows], cand_items[rows, :n_cand],
                            cand_hist[rows, :n_cand], negs[rows, :width])
        loss_fn.means(part, state_count, reward_count)["loss"].backward()
        for name, value in part.items():
            totals[name] = value.detach() if name == "temperature" else totals.get(name, 0) + value.detach()
    return loss_fn.means(totals, state_count, reward_count)


def _sum_over_ranks(sums: dict[str, float]) -> dict[str, float]:
    """Per-key sums over all ranks (as they are without torchrun)."""
    if not is_distributed():
        return sums
    total = torch.tensor(list(sums.values()), dtype=torch.float64)
    dist.all_reduce(total)  # a CPU tensor: the gloo side of the process group
    return dict(zip(sums, total.tolist()))


def training_lengths(train_user: np.ndarray, train_position: np.ndarray) -> dict[int, int]:
    """Per training user, how many leading items of the sequence are training data (the rest is val/test
    under ``loo``): the LE must never see them."""
    user = np.asarray(train_user, dtype=np.int64)
    if len(user) == 0:
        return {}
    ends = np.zeros(int(user.max()) + 1, dtype=np.int64)
    np.maximum.at(ends, user, np.asarray(train_position, dtype=np.int64) + 1)
    return {int(u): int(ends[u]) for u in np.unique(user)}


def _optimizer(model: LEModel, cfg: LETrainConfig) -> torch.optim.Optimizer:
    """Adam over the adapters and heads at ``lr``; with ``token_lr`` the item tokens are a second group."""
    if not cfg.token_lr:  # exactly the optimiser (and checkpoint layout) of LEs trained before token_lr
        return torch.optim.Adam(model.trainable_parameters(), lr=cfg.lr)
    if not model.token_parameters():
        raise ValueError("le.train.token_lr > 0 needs an LEModel built with tune_tokens=True")
    return torch.optim.Adam([{"params": model.trainable_parameters()},
                             {"params": model.token_parameters(), "lr": cfg.token_lr}], lr=cfg.lr)


STEP_STREAM = 7919  # seeds the per-step RNG of le.train.steps apart from the per-epoch ones


def lr_factor(step: int, cfg: LETrainConfig) -> float:
    """The multiplier of every learning rate at 0-based ``step`` of a step budget. A pure function of the
    step (no scheduler state), so a resumed run follows the uninterrupted run's schedule."""
    if cfg.lr_schedule == "constant":
        return 1.0
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _trainable(model: LEModel) -> dict[str, Tensor]:
    """The weights a checkpoint holds: adapters and heads, and the item tokens when tuned (the LM never
    changes; untuned item tokens are a buffer outside the state dict)."""
    return {k: v for k, v in model.state_dict().items() if "lora" in k or not k.startswith("lm.")}


def train_le_model(model: LEModel, seqs: Sequences, users: np.ndarray, cfg: LETrainConfig, window: int,
                   out_dir: Path, seed: int, progress: Callable[..., Any] | None = None,
                   key: str | None = None, lengths: dict[int, int] | None = None,
                   validate: Callable[[LEModel], float] | None = None) -> list[dict[str, float]]:
    """Train ``model`` on ``users``' sequences, cut to ``lengths[user]`` items when given (the training
    part, see :func:`training_lengths`); resumes from ``out_dir/train_state.pt`` when that was saved under
    the same ``key`` (the inputs' hash; another key starts over). Returns per-epoch logs (over all ranks),
    or with ``cfg.steps`` per-check logs (``validate``: the metric the best weights are chosen by)."""
    if cfg.steps and is_distributed():
        raise UserError("le.train.steps does not run under torchrun yet", "use le.train.epochs there")
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / "train_state.pt"
    optimizer = _optimizer(model, cfg)
    history: list[dict[str, float]] = []
    start_epoch = 0
    clock = _Clock()
    restart = "delete it and run `learec env train` again: LE training then starts over"
    saved = load_torch_file(state_path, restart, map_location=model.device) if state_path.is_file() else None
    if saved is not None and (not isinstance(saved, dict) or saved.get("key") != key):
        log.info("LE training state in %s is from other inputs: starting over", out_dir)
        saved = None
    if saved is not None:
        try:  # a file that loads safely may still not be this model's training state
            model.load_state_dict(saved["model"], strict=False)
            optimizer.load_state_dict(saved["optimizer"])
            history, start_epoch = list(saved["history"]), int(saved["step" if cfg.steps else "epoch"])
            clock = _Clock(float(saved.get("seconds", 0.0)))  # checkpoints before this field: from 0
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
            raise UserError(f"{state_path} does not fit this LE ({error_summary(err)})", restart) from None
        log.info("LE training resumes after %s %d", "step" if cfg.steps else "epoch", start_epoch)
    sequences = {int(u): user_items(seqs, int(u))[: (lengths or {}).get(int(u))] for u in users}
    n_items = seqs.n_items
    if cfg.steps:
        best = (saved.get("best"), saved.get("best_metric")) if saved is not None else (None, None)
        return _train_steps(model, optimizer, sequences, users, cfg, window, seed, state_path, key,
                            (history, start_epoch, best), validate, progress, n_items, clock)
    distributed = is_distributed()
    loss_fn: nn.Module = LELoss(model, cfg, n_items)
    if distributed:  # rank 0's weights reach every rank here; the buffers (untuned item tokens, prompt) never change
        loss_fn = DistributedDataParallel(loss_fn, device_ids=[model.device] if model.device.type == "cuda" else None,
                                          forward_sync_buffers=False)
    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        rng = np.random.default_rng([seed, epoch])  # per-epoch RNG: resuming replays the same epochs
        order = rng.permutation(users)
        step_rng = np.random.default_rng([seed, epoch, rank()]) if distributed else rng  # windows, negatives
        batches = range(0, len(order), cfg.batch_users)
        bar = progress(batches, desc=f"LE epoch {epoch + 1}/{cfg.epochs}") if progress else batches
        sums: dict[str, float] = {}
        for start in bar:
            chosen = order[start:start + cfg.batch_users]
            mine = chosen[shard(len(chosen))]  # all of them without torchrun
            # DDP averages over ranks; weighting each rank's loss (a mean over its own positions) by its
            # share of the batch's users keeps a rank with fewer users from counting as much (close to,
            # not exactly, one process's mean over all positions). A rank without users (a batch smaller
            # than the world) still steps, on a zero-weighted dummy.
            weight = len(mine) * world_size() / len(chosen)
            rows_of = mine if len(mine) else chosen[:1]
            rows = [_window(step_rng, sequences[int(u)], window) for u in rows_of]
            losses = loss_fn(*le_batch(rows, [sequences[int(u)] for u in rows_of], cfg, step_rng, n_items,
                                       model.device))
            optimizer.zero_grad()
            (losses["loss"] * weight if distributed else losses["loss"]).backward()
            optimizer.step()
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value.item() * len(mine)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{losses['loss'].item():.3f}")
        sums = _sum_over_ranks(sums)
        record = {"epoch": epoch + 1, **{k: v / len(order) for k, v in sums.items()}}
        history.append(record)
        log.info("LE epoch %d: %s", epoch + 1, ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch"))
        if is_main():  # all ranks hold the same weights and optimiser state
            atomic_torch_save(state_path, {"model": _trainable(model), "optimizer": optimizer.state_dict(),
                                           "history": history, "epoch": epoch + 1, "key": key,
                                           "seconds": clock.seconds()})
    model.eval()
    return history


class _Clock:
    """Wall seconds since it was made, plus ``before`` (the seconds of the runs this one resumes)."""

    def __init__(self, before: float = 0.0) -> None:
        self.before, self.start = before, time.monotonic()

    def seconds(self) -> float:
        return self.before + time.monotonic() - self.start


def training_seconds(out_dir: Path) -> float | None:
    """The wall seconds of LE training saved in ``out_dir/train_state.pt`` (summed over resumed runs; to the
    last checkpoint), or None where there is no state or it predates the field."""
    path = out_dir / "train_state.pt"
    if not path.is_file():
        return None
    saved = load_torch_file(path, "delete it and run `learec env train` again")
    seconds = saved.get("seconds") if isinstance(saved, dict) else None
    return float(seconds) if seconds is not None else None


def _stalled(history: list[dict[str, float]], patience: int) -> bool:
    """Whether the last ``patience`` validation checks of ``history`` all came after the best one (the first
    of equal ones, as the best weights are kept); never with ``patience`` 0. Read from the saved history, so
    a resumed run decides as the uninterrupted one did."""
    metrics = [r["val_state_ndcg@10"] for r in history if "val_state_ndcg@10" in r]
    if not patience or not metrics:
        return False
    return len(metrics) - 1 - int(np.argmax(metrics)) >= patience


def _train_steps(model: LEModel, optimizer: torch.optim.Optimizer, sequences: dict[int, np.ndarray],
                 users: np.ndarray, cfg: LETrainConfig, window: int, seed: int, state_path: Path, key: str | None,
                 resumed: tuple[list[dict[str, float]], int, tuple[Any, Any]],
                 validate: Callable[[LEModel], float] | None, progress: Callable[..., Any] | None,
                 n_items: int, clock: _Clock) -> list[dict[str, float]]:
    """The ``cfg.steps`` mode of :func:`train_le_model`, from ``resumed`` = (history, steps done, (best
    weights, best metric)). A record (mean losses since the last one, the validation metric) and a
    checkpoint every ``eval_every`` steps (else every ``steps // 10``) and at the end."""
    history, start, (best, best_metric) = resumed
    base_lrs = [cfg.lr] + ([cfg.token_lr] if len(optimizer.param_groups) > 1 else [])
    every = cfg.eval_every or max(1, cfg.steps // 10)
    loss_fn = LELoss(model, cfg, n_items)
    sums: dict[str, float] = {}
    count = 0
    model.train()
    steps = range(start, cfg.steps)
    if _stalled(history, cfg.patience):  # stopped early before an interruption: the same weights, no more steps
        steps = range(0)
    for step in progress(steps, desc="LE steps") if progress else steps:
        rng = np.random.default_rng([seed, STEP_STREAM, step])  # per-step RNG: resuming replays the same steps
        chosen = rng.choice(users, size=min(cfg.batch_users, len(users)), replace=False)
        rows_of = np.repeat(chosen, cfg.windows_per_user)
        rows = [_window(rng, sequences[int(u)], window) for u in rows_of]
        batch = le_batch(rows, [sequences[int(u)] for u in rows_of], cfg, rng, n_items, model.device)
        optimizer.zero_grad()
        if cfg.length_groups > 1:
            losses = grouped_losses(loss_fn, batch, cfg.length_groups)
        else:
            losses = loss_fn(*batch)
            losses["loss"].backward()
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * lr_factor(step, cfg)
        optimizer.step()
        sums = {name: sums.get(name, 0.0) + value.item() for name, value in losses.items()}
        count += 1
        if (step + 1) % every and step + 1 < cfg.steps:
            continue
        record = {"step": step + 1, **{k: v / count for k, v in sums.items()}}
        if validate is not None and cfg.eval_every:
            model.eval()
            record["val_state_ndcg@10"] = metric = float(validate(model))
            model.train()
            if best_metric is None or metric > best_metric:  # the first of equal ones is kept
                best, best_metric = {k: v.detach().cpu().clone() for k, v in _trainable(model).items()}, metric
        history.append(record)
        log.info("LE step %d: %s", step + 1, ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "step"))
        sums, count = {}, 0
        atomic_torch_save(state_path, {"model": _trainable(model), "optimizer": optimizer.state_dict(),
                                       "history": history, "step": step + 1, "key": key, "best": best,
                                       "best_metric": best_metric, "seconds": clock.seconds()})
        if _stalled(history, cfg.patience):
            log.info("LE training stops at step %d: %d checks without a better validation state NDCG@10",
                     step + 1, cfg.patience)
            break
    if best is not None:
        model.load_state_dict(best, strict=False)
        log.info("LE weights of the best validation state NDCG@10 kept (%.4f)", best_metric)
    model.eval()
    return history
