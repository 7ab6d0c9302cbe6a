"""The two evaluation protocols and the arrays they produce (docs/design.md §4).

- ``sqn``: users (sessions) split at random 8:1:1 (seeded); every event of a train user is a training
  transition, every event of a validation/test user a prediction point with its last-L history.
- ``loo``: leave-one-out in time order; last item test, second-to-last validation, every earlier
  prefix (non-empty history) a training sample.

States follow the published SQN layout: the last L items, left-aligned, padded at the end with the id
``n_items``; an empty history has length 1 and is all padding.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from learec.data.preprocess import Sequences


@dataclass
class EvalSet:
    """Prediction points: the model sees ``history[:length]`` and must rank ``target``."""

    history: np.ndarray  # int32 [n, L]
    length: np.ndarray  # int32 [n]
    target: np.ndarray  # int32 [n]
    event: np.ndarray  # int8 [n]
    user: np.ndarray  # int32 [n]
    position: np.ndarray  # int32 [n]: index of the target in its user's sequence (= full history length)

    def __len__(self) -> int:
        return len(self.target)

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Transitions:
    """Training transitions (s, a, event, s', done) as flat arrays: nothing else enters the training loop."""

    state: np.ndarray  # int32 [n, L]
    length: np.ndarray  # int32 [n]
    action: np.ndarray  # int32 [n]
    event: np.ndarray  # int8 [n]
    next_state: np.ndarray  # int32 [n, L]
    next_length: np.ndarray  # int32 [n]
    done: np.ndarray  # bool [n]
    user: np.ndarray  # int32 [n]
    position: np.ndarray  # int32 [n]: index of the action in its user's sequence (= full history length)

    def __len__(self) -> int:
        return len(self.action)

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def take(self, rows: np.ndarray) -> "Transitions":
        """The transitions at ``rows`` (copied into memory)."""
        return Transitions(**{name: np.asarray(arr)[rows] for name, arr in self.arrays().items()})


def history_windows(items: np.ndarray, seq_start: np.ndarray, end: np.ndarray, L: int, pad: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the items ``[max(seq_start, end-L), end)`` left-aligned in a width-L window.

    ``seq_start``/``end`` are positions in the concatenated ``items``. Lengths of 0 become 1 (an all-pad
    state), as in the published code.
    """
    start = np.maximum(seq_start, end - L)
    length = (end - start).astype(np.int32)
    cols = np.arange(L, dtype=np.int64)
    window = np.empty((len(end), L), dtype=np.int32)
    # In row blocks: the int64 index temporaries of a whole 10M-event log would need several GB at once.
    step = max(1, (1 << 22) // L)
    for lo in range(0, len(end), step):
        hi = min(lo + step, len(end))
        idx = start[lo:hi, None] + cols[None, :]
        valid = cols[None, :] < length[lo:hi, None]
        window[lo:hi] = np.where(valid, items[np.minimum(idx, len(items) - 1)], pad)
    return window, np.maximum(length, 1)


def _targets_to_eval(seqs: Sequences, pos: np.ndarray, user: np.ndarray, L: int) -> EvalSet:
    hist, length = history_windows(seqs.items, seqs.offsets[user], pos, L, seqs.n_items)
    return EvalSet(hist, length, seqs.items[pos].astype(np.int32), seqs.events[pos], user.astype(np.int32),
                   (pos - seqs.offsets[user]).astype(np.int32))


def _targets_to_transitions(seqs: Sequences, pos: np.ndarray, user: np.ndarray, L: int) -> Transitions:
    starts = seqs.offsets[user]
    state, length = history_windows(seqs.items, starts, pos, L, seqs.n_items)
    next_state, next_length = history_windows(seqs.items, starts, pos + 1, L, seqs.n_items)
    done = np.ones(len(pos), dtype=bool)
    done[:-1] = user[1:] != user[:-1]  # the last transition of each user ends its episode
    return Transitions(state, length, seqs.items[pos].astype(np.int32), seqs.events[pos], next_state, next_length,
                       done, user.astype(np.int32), (pos - starts).astype(np.int32))


def _positions(seqs: Sequences, users: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global positions offsets[u]+lo[u] .. offsets[u]+hi[u]-1 for each user, with their user code."""
    counts = np.maximum(hi - lo, 0)
    user_rep = np.repeat(users, counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return seqs.offsets[user_rep] + np.repeat(lo, counts) + within, user_rep


@dataclass
class Split:
    train: Transitions
    val: EvalSet
    test: EvalSet
    item_counts: np.ndarray  # float64 [n_items]: training interactions per item (popularity)


def split_sqn(seqs: Sequences, L: int, fractions: tuple[float, float, float], seed: int) -> Split:
    rng = np.random.default_rng(seed)
    users = rng.permutation(seqs.n_users)
    n_train = int(round(fractions[0] * len(users)))
    n_val = int(round(fractions[1] * len(users)))
    groups = [np.sort(users[:n_train]), np.sort(users[n_train:n_train + n_val]), np.sort(users[n_train + n_val:])]
    lens = seqs.lengths
    parts = [_positions(seqs, g, np.zeros(len(g), np.int64), lens[g]) for g in groups]
    train_pos, _ = parts[0]
    counts = np.bincount(seqs.items[train_pos], minlength=seqs.n_items).astype(np.float64)
    return Split(_targets_to_transitions(seqs, *parts[0], L), _targets_to_eval(seqs, *parts[1], L),
                 _targets_to_eval(seqs, *parts[2], L), counts)


def split_loo(seqs: Sequences, L: int) -> Split:
    users = np.arange(seqs.n_users)
    lens = seqs.lengths
    evaluable = lens >= 3  # shorter users have no room for validation and test: train only
    train_hi = np.where(evaluable, lens - 2, lens)
    train_pos, train_user = _positions(seqs, users, np.ones(len(users), np.int64), train_hi)
    ev_users = users[evaluable]
    val_pos = seqs.offsets[ev_users] + lens[ev_users] - 2
    test_pos = seqs.offsets[ev_users] + lens[ev_users] - 1
    seen_pos, _ = _positions(seqs, users, np.zeros(len(users), np.int64), train_hi)
    counts = np.bincount(seqs.items[seen_pos], minlength=seqs.n_items).astype(np.float64)
    return Split(_targets_to_transitions(seqs, train_pos, train_user, L), _targets_to_eval(seqs, val_pos, ev_users, L),
                 _targets_to_eval(seqs, test_pos, ev_users, L), counts)
