"""From prepared user sequences to LE rows: item windows, sampled negatives and candidate layouts.

Everything here is numpy on the host; :func:`to_tensors` moves a finished batch to the LE's device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from learec.data.preprocess import Sequences
from learec.env.model import Segment


@dataclass
class RowBatch:
    """Padded rows of item codes with candidates; ``cand_hist = -1`` marks padding candidates."""

    items: np.ndarray  # int64 [B, T]
    lengths: np.ndarray  # int64 [B]
    cand_items: np.ndarray  # int64 [B, C]
    cand_hist: np.ndarray  # int64 [B, C]

    def to_tensors(self, device: torch.device | str) -> tuple[torch.Tensor, ...]:
        return tuple(torch.as_tensor(a, dtype=torch.long, device=device)
                     for a in (self.items, self.lengths, self.cand_items, self.cand_hist))


def user_items(seqs: Sequences, user: int) -> np.ndarray:
    return np.asarray(seqs.items[seqs.offsets[user]:seqs.offsets[user + 1]], dtype=np.int64)


def pack_rows(rows: list[np.ndarray], candidates: list[tuple[np.ndarray, np.ndarray]], pad: int) -> RowBatch:
    """Rows of items plus, per row, ``(cand_items, cand_hist)`` flat arrays, right-padded into one batch."""
    width = max(len(r) for r in rows)
    n_cand = max([len(c[0]) for c in candidates] + [1])
    items = np.full((len(rows), width), pad, dtype=np.int64)
    cand_items = np.zeros((len(rows), n_cand), dtype=np.int64)
    cand_hist = np.full((len(rows), n_cand), -1, dtype=np.int64)
    for b, (row, (ci, ch)) in enumerate(zip(rows, candidates)):
        items[b, :len(row)] = row
        cand_items[b, :len(ci)] = ci
        cand_hist[b, :len(ch)] = ch
    return RowBatch(items, np.array([len(r) for r in rows], dtype=np.int64), cand_items, cand_hist)


def uniform_negatives(rng: np.random.Generator, positives: np.ndarray, k: int, n_items: int) -> np.ndarray:
    """``[len(positives), k]`` items drawn uniformly from the catalogue minus each row's positive."""
    draw = rng.integers(0, n_items - 1, size=(len(positives), k))
    return draw + (draw >= positives[:, None])  # skip the positive: uniform over the other n - 1


def unseen_items(rng: np.random.Generator, seen: np.ndarray, size: int, n_items: int, tries: int = 20) -> np.ndarray:
    """``size`` items the user never interacted with (``seen``), uniformly; falls back to any non-seen item."""
    seen_set = np.zeros(n_items, dtype=bool)
    seen_set[seen] = True
    out = rng.integers(0, n_items, size=size)
    for _ in range(tries):
        bad = seen_set[out]
        if not bad.any():
            return out
        out[bad] = rng.integers(0, n_items, size=int(bad.sum()))
    unseen = np.flatnonzero(~seen_set)
    if len(unseen) == 0:
        return out  # the user saw everything: nothing better exists
    bad = seen_set[out]
    out[bad] = rng.choice(unseen, size=int(bad.sum()))
    return out


def segment_rows(seqs: Sequences, segments: list[Segment]) -> list[np.ndarray]:
    return [user_items(seqs, s.user)[s.start:s.end] for s in segments]
