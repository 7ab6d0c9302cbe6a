"""The LE report's augmentation figures from a sample of training users, without the labelling cache.

Labelling every training transition takes long (MovieLens-100K: 81,001 transitions, most of an hour on a
CPU), so the report's ``augmentation`` and ``augmentation_diversity`` exist only for runs that were
labelled. With ``le.report.aug_users`` set, the report draws that many training users (seeded by
``le.seed``) and computes the LE's augmented actions for all their training transitions exactly as
labelling does (the same rows, candidates and reward re-scoring: :func:`~learec.env.label.label_rows`), in
memory: ``augmentation_sample`` holds the same figures over those transitions, overall and split by
whether the users are in the LE's training subset (whose rates are optimistic: the LE was fit on them).

``distinct@k`` over a sample is a lower bound of the count over every transition: fewer transitions can
only show fewer distinct items. Rates (``aug_future@k``, ``top10_share@k``) are estimates, not bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from learec.config import LELabelConfig
from learec.data.preprocess import Sequences
from learec.data.splits import Transitions
from learec.env.label import augment_width, batches_by_length, label_rows, user_blocks, user_segments
from learec.env.model import LEModel
from learec.env.report import augmentation_diversity, augmentation_quality

SAMPLE_STREAM = 37  # the RNG stream of the user draw, apart from the LE's other draws from le.seed


def draw_users(train_users: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` training users (all of them when fewer), drawn with a fixed RNG from ``seed``, sorted."""
    users = np.unique(np.asarray(train_users))
    rng = np.random.default_rng([seed, SAMPLE_STREAM])
    return np.sort(rng.choice(users, size=min(n, len(users)), replace=False))


def sample_augmented(model: LEModel, seqs: Sequences, train: Transitions, users: np.ndarray, cfg: LELabelConfig,
                     window: int, progress: Callable[..., Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, aug_items)``: the indices into ``train`` of every transition of ``users`` (ascending) and
    their augmented actions, ``[len(rows), augment_width]``, equal to those rows of a labelling cache."""
    width = augment_width(cfg, seqs.n_items)
    wanted = set(np.asarray(users).tolist())
    blocks = [b for b in user_blocks(train) if b[0] in wanted]
    rows = np.concatenate([np.arange(lo, hi) for _, lo, hi in blocks] or [np.zeros(0, dtype=np.int64)])
    aug = np.full((len(rows), width), -1, dtype=np.int32)
    if not width:
        return rows, aug
    positions = np.asarray(train.position)
    jobs = []  # (segment, target positions, indices into rows), as label_transitions plans them
    offset = 0
    for user, lo, hi in blocks:
        pos = positions[lo:hi]
        jobs += [(seg, pos[sel], offset + sel) for seg, sel in user_segments(user, pos, window)]
        offset += hi - lo
    batches = batches_by_length(jobs, cfg.batch_rows)
    for chunk in progress(batches, desc="LE augmentation sample") if progress else batches:
        # no negatives: they change no state and no augmented action, and would only cost LM time
        empty = [np.zeros((len(targets), 0), dtype=np.int64) for _, targets, _ in chunk]
        results = label_rows(model, seqs, [j[0] for j in chunk], [j[1] for j in chunk], empty, cfg)
        for (_, _, idx), res in zip(chunk, results):
            aug[idx] = res["aug_items"]
    return rows, aug


def _figures(seqs: Sequences, train: Transitions, rows: np.ndarray, aug: np.ndarray,
             item_counts: np.ndarray) -> dict[str, Any]:
    return {"transitions": int(len(rows)), "diversity": augmentation_diversity(aug),
            "quality": augmentation_quality(seqs, train.take(rows), aug, item_counts)}


def augmentation_sample(model: LEModel, seqs: Sequences, train: Transitions, item_counts: np.ndarray, n_users: int,
                        le_users: np.ndarray, cfg: LELabelConfig, window: int, seed: int,
                        progress: Callable[..., Any] | None = None) -> dict[str, Any]:
    """The report's ``augmentation_sample`` section: ``users`` drawn (:func:`draw_users`), how many of them
    are ``le_users``, their ``transitions``, ``diversity`` (:func:`augmentation_diversity`) and ``quality``
    (:func:`augmentation_quality`) over them, and ``by_membership``: the same for the users inside and
    outside the LE's training subset (None where the sample has none)."""
    users = draw_users(train.user, n_users, seed)
    rows, aug = sample_augmented(model, seqs, train, users, cfg, window, progress)
    inside = np.isin(users, np.asarray(le_users))
    section: dict[str, Any] = {"users": int(len(users)), "le_users": int(inside.sum()),
                               "aug_k": int(aug.shape[1]), **_figures(seqs, train, rows, aug, item_counts)}
    row_users = np.asarray(train.user)[rows]
    split: dict[str, Any] = {}
    for name, members in (("le_users", users[inside]), ("other_users", users[~inside])):
        keep = np.isin(row_users, members)
        split[name] = ({"users": int(len(members)), **_figures(seqs, train, rows[keep], aug[keep], item_counts)}
                       if keep.any() else None)
    section["by_membership"] = split
    return section
