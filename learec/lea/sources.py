"""Control label sources: labelling caches made without an LLM, to bound what any labels can give.

Each source fills the arrays of :func:`learec.env.label.label_arrays_spec` for the training transitions
of the prepared data, so the RL trainers read them exactly as they read the LE's labels (``lea.cache``).
All three use the LE labeller's negatives (``le.label.negatives``, default ``rl.negatives``, drawn per
user with ``le.label.seed``: the same items an LE cache of that seed holds) and keep ``le.label.aug_k``
augmented actions per transition, ``-1`` (reward 0) where there are fewer.

==============  ==============================  ===========================  =================================
source          state                           reward, neg_rewards          aug_items (aug_rewards)
==============  ==============================  ===========================  =================================
``oracle``      zeros [n, le.model.state_dim]   0 (constant)                 the user's next training items
                                                                             after the logged one (0: z = 0)
``popularity``  zeros [n, le.model.state_dim]   0 (constant)                 the most popular training items
                                                                             outside the user's history and
                                                                             the logged action (0: z = 0)
``teacher``     the teacher's backbone state    the teacher's ranking score  its top items outside the user's
                [n, backbone width]             of the action / negatives    history and the action (scores)
==============  ==============================  ===========================  =================================

Constant rewards standardise to ``z = 0`` (:class:`learec.lea.inputs.LEInputs`): +RM then equals the base
trainer with the labelled negatives, and an augmented action counts "as rewarding as an average logged
action". Zero states keep the +SM network the same size as with the LE (so the same initialisation) while
telling the critic nothing. The teacher's score is what its run ranks with: the CE logit for a CE run and
for an RL run ranked by its CE head (the default), the Q-value with ``rl.rank_by=q``.

The cache's fingerprint names the source and its settings (and for the teacher, its run and weights), so
a cache from another source has another key and runs that pinned the old key refuse it; a run that names
its source (``lea.source``) refuses a cache from any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from learec.config import Config, load_config
from learec.data.popular import popular_unseen
from learec.data.prepared import PreparedData, prepare
from learec.env.batches import uniform_negatives, user_items
from learec.env.stages import negatives
from learec.errors import UserError
from learec.models.qnetwork import QNetwork
from learec.models.ranking import RankingModel
from learec.train.checkpoints import load_trained_model
from learec.utils import file_fingerprint

CONTROL_SOURCES = ("oracle", "popularity", "teacher")


def label_settings(cfg: Config, data: PreparedData) -> dict[str, int]:
    """The ``le.label`` settings a control source uses (negatives resolved as the LE labeller does)."""
    return {"negatives": negatives(cfg), "aug_k": min(cfg.le.label.aug_k, data.n_items),
            "seed": cfg.le.label.seed}


def source_fingerprint(source: str, cfg: Config, data: PreparedData, teacher: Path | None = None) -> dict[str, Any]:
    """What a control source's labels depend on; ``data`` is the key :class:`LEInputs` checks."""
    fingerprint: dict[str, Any] = {"source": source, "data": data.manifest["key"], "transitions": len(data.train),
                                   "label": label_settings(cfg, data)}
    if source == "teacher":
        assert teacher is not None
        check_teacher_dir(teacher)
        fingerprint["teacher"] = {"run": str(teacher.resolve()),
                                  "weights": file_fingerprint(teacher / "checkpoints" / "best.pt")["sha256"]}
    else:
        fingerprint["state_dim"] = cfg.le.model.state_dim
    if source == "popularity":  # 2: outside the whole history (1, unnamed: outside the state's window only)
        fingerprint["exclusion"] = 2
    return fingerprint


def user_negatives(data: PreparedData, k: int, seed: int) -> np.ndarray:
    """``[n, k]`` uniform negatives (never the logged action), drawn per user as the LE labeller draws them."""
    users, actions = np.asarray(data.train.user), np.asarray(data.train.action).astype(np.int64)
    out = np.empty((len(users), k), dtype=np.int64)
    cuts = np.flatnonzero(np.diff(users) != 0) + 1  # a user's transitions are consecutive
    for lo, hi in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(users)]])):
        rng = np.random.default_rng([seed, int(users[lo])])
        out[lo:hi] = uniform_negatives(rng, actions[lo:hi], k, data.n_items)
    return out


def _constant_labels(data: PreparedData, cfg: Config, aug_items: np.ndarray) -> dict[str, np.ndarray]:
    """Zero states, zero rewards everywhere, the LE labeller's negatives, and ``aug_items``."""
    n, s = len(data.train), label_settings(cfg, data)
    return {"state": np.zeros((n, cfg.le.model.state_dim), dtype=np.float16),
            "reward": np.zeros(n, dtype=np.float32),
            "neg_items": user_negatives(data, s["negatives"], s["seed"]),
            "neg_rewards": np.zeros((n, s["negatives"]), dtype=np.float32),
            "aug_items": aug_items.astype(np.int32),
            "aug_rewards": np.zeros(aug_items.shape, dtype=np.float32)}


def oracle_labels(data: PreparedData, cfg: Config) -> dict[str, np.ndarray]:
    """Augmented actions = the actions of the user's next ``aug_k`` training transitions (``-1`` past the
    user's last one: the next items in the user's training sequence, never a validation or test item)."""
    k = label_settings(cfg, data)["aug_k"]
    users, actions = np.asarray(data.train.user), np.asarray(data.train.action)
    n = len(users)
    aug = np.full((n, k), -1, dtype=np.int64)
    for j in range(1, k + 1):
        same = np.zeros(n, dtype=bool)
        same[: n - j] = users[j:] == users[: n - j]
        aug[same, j - 1] = actions[j:][same[: n - j]]
    return _constant_labels(data, cfg, aug)


def popularity_labels(data: PreparedData, cfg: Config) -> dict[str, np.ndarray]:
    """Augmented actions = the ``aug_k`` most popular training items (``data.split.item_counts``; ties by
    item id) that the user has not interacted with up to the logged action (history and action): what
    ``pop_future@k`` rates (:func:`learec.data.popular.popular_unseen`)."""
    k = label_settings(cfg, data)["aug_k"]
    aug = popular_unseen(data.sequences, np.asarray(data.train.user), np.asarray(data.train.position),
                         data.split.item_counts, k)
    return _constant_labels(data, cfg, aug)


def check_teacher_dir(teacher: Path) -> None:
    """A teacher must be a trained run: its config and its best weights."""
    for name in ("config.yaml", "checkpoints/best.pt"):
        if not (teacher / name).is_file():
            raise UserError(f"--teacher {teacher} is not a trained run (it has no {name})",
                            "give the --run-dir of a finished `learec train`")


def load_teacher(teacher: Path, data: PreparedData, cfg: Config) -> RankingModel:
    """The teacher run's best ranking model (eval mode, CPU), refused when it was trained on other data."""
    check_teacher_dir(teacher)
    tcfg = load_config(teacher / "config.yaml")
    tdata = prepare(tcfg.data, log=lambda *_: None)
    if tdata.manifest["key"] != data.manifest["key"]:
        raise UserError(f"The teacher {teacher} was trained on other data ({tcfg.data.dataset}/{tcfg.data.protocol}, "
                        f"key {tdata.manifest['key']}, {tdata.n_items} items) than this labelling config's "
                        f"({cfg.data.dataset}/{cfg.data.protocol}, key {data.manifest['key']}, {data.n_items} items)",
                        "give a teacher trained with the same data section")
    if tcfg.model.backbone == "pop" or tcfg.lea.state_to_actor:
        raise UserError(f"The teacher {teacher} has no backbone state of its own to label with "
                        f"({'model.backbone=pop' if tcfg.model.backbone == 'pop' else 'lea.state_to_actor'})",
                        "use a run of a trained backbone whose ranking head reads the history only")
    counts = torch.as_tensor(data.split.item_counts, dtype=torch.float32)
    return load_trained_model(tcfg, teacher, data.n_items, counts).eval()


def _seen(data: PreparedData, users: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``[rows, n_items]``: the items of each row's user at or before its position (history + action)."""
    out = np.zeros((len(users), data.n_items), dtype=bool)
    for user in np.unique(users):
        rows = np.flatnonzero(users == user)
        seq = user_items(data.sequences, int(user))
        first = np.full(data.n_items, len(seq), dtype=np.int64)
        np.minimum.at(first, seq, np.arange(len(seq)))  # each item's first position in the sequence
        out[rows] = first[None, :] <= positions[rows, None]
    return out


def _ranking_scores(model: RankingModel, state: torch.Tensor) -> torch.Tensor:
    """``model(histories, lengths)`` from the backbone state already computed (the backbone runs once)."""
    network = model.network
    if isinstance(network, QNetwork):
        return network.ce_logits(state, None) if model.head == "ce" else network.q_head(state)
    return network.head(state)


@torch.no_grad()
def teacher_labels(data: PreparedData, cfg: Config, teacher: Path, batch: int = 512) -> dict[str, np.ndarray]:
    """States, rewards and augmented actions from a trained run (see the module docstring); the same
    negatives as the other sources, scored by the teacher."""
    model = load_teacher(teacher, data, cfg)
    s = label_settings(cfg, data)
    train, n, k = data.train, len(data.train), s["aug_k"]
    negs = user_negatives(data, s["negatives"], s["seed"])
    out = {"state": np.zeros((n, model.network.backbone.out_dim), dtype=np.float16),
           "reward": np.zeros(n, dtype=np.float32), "neg_items": negs,
           "neg_rewards": np.zeros(negs.shape, dtype=np.float32),
           "aug_items": np.full((n, k), -1, dtype=np.int64), "aug_rewards": np.zeros((n, k), dtype=np.float32)}
    for lo in range(0, n, batch):
        rows = slice(lo, min(lo + batch, n))
        hist = torch.as_tensor(np.array(train.state[rows]), dtype=torch.long)
        length = torch.as_tensor(np.array(train.length[rows]), dtype=torch.long)
        state = model.network.backbone(hist, length)
        out["state"][rows] = state.numpy()
        scores = _ranking_scores(model, state).numpy()
        actions = np.asarray(train.action[rows], dtype=np.int64)
        out["reward"][rows] = np.take_along_axis(scores, actions[:, None], 1)[:, 0]
        out["neg_rewards"][rows] = np.take_along_axis(scores, negs[rows], 1)
        masked = np.where(_seen(data, np.asarray(train.user[rows]), np.asarray(train.position[rows])), -np.inf, scores)
        top = np.argsort(-masked, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(masked, top, 1)
        unseen = np.isfinite(best)  # a user who saw (almost) everything leaves slots empty
        out["aug_items"][rows] = np.where(unseen, top, -1)
        out["aug_rewards"][rows] = np.where(unseen, best, 0.0)
    return out


def control_labels(source: str, data: PreparedData, cfg: Config, teacher: Path | None = None) -> dict[str, np.ndarray]:
    """The label arrays of ``source`` (one of :data:`CONTROL_SOURCES`) for ``data``'s training transitions."""
    if source == "oracle":
        return oracle_labels(data, cfg)
    if source == "popularity":
        return popularity_labels(data, cfg)
    if source == "teacher":
        assert teacher is not None
        return teacher_labels(data, cfg, teacher)
    raise ValueError(f"unknown label source {source!r}")
