"""The most popular items a user has not interacted with yet: the popularity control source's augmented
actions and the ``pop_future@k`` they are compared with share this one definition."""

from __future__ import annotations

import numpy as np

from learec.data.preprocess import Sequences

ROWS_PER_BLOCK = 256  # bounds the [rows, head] temporaries of a user with a long sequence


def popular_unseen(seqs: Sequences, users: np.ndarray, positions: np.ndarray, item_counts: np.ndarray,
                   k: int) -> np.ndarray:
    """``[rows, k]``: for each (user, position), the ``k`` most popular items (most counted first, ties
    by item id) that are not among the user's items at or before ``position`` (the history and the action there);
    ``-1`` where fewer such items exist."""
    users, positions = np.asarray(users), np.asarray(positions)
    order = np.argsort(-np.asarray(item_counts), kind="stable")
    out = np.full((len(users), k), -1, dtype=np.int64)
    by_user = np.argsort(users, kind="stable")
    cuts = np.flatnonzero(np.diff(users[by_user])) + 1
    for rows in np.split(by_user, cuts):
        if not len(rows):
            continue
        u = int(users[rows[0]])
        seq = np.asarray(seqs.items[seqs.offsets[u]:seqs.offsets[u + 1]], dtype=np.int64)
        first = np.full(seqs.n_items, len(seq))  # each item's first position in u's sequence
        items, at = np.unique(seq, return_index=True)
        first[items] = at
        for lo in range(0, len(rows), ROWS_PER_BLOCK):
            block = rows[lo:lo + ROWS_PER_BLOCK]
            pos = positions[block]
            # at most p + 1 items are seen at position p, so the k wanted lie among the first p + 1 + k
            head = order[: min(seqs.n_items, int(pos.max()) + 1 + k)]
            unseen = first[head][None, :] > pos[:, None]  # [rows, head]
            rank = np.sort(np.where(unseen, np.arange(len(head))[None, :], len(head)), axis=1)[:, :k]
            out[block, : rank.shape[1]] = np.where(rank < len(head), head[np.minimum(rank, len(head) - 1)], -1)
    return out
