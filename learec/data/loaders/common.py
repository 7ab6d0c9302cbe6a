"""Steps several loaders share: seeded sampling, cutting listening logs into sequences, ISO times."""

from __future__ import annotations

import numpy as np
import pandas as pd


def sample_ids(unique_ids: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` of the (sorted) ids, drawn without replacement with a seeded generator; all when n is 0."""
    unique_ids = np.sort(unique_ids)
    if n <= 0 or n >= len(unique_ids):
        return unique_ids
    return np.sort(np.random.default_rng(seed).choice(unique_ids, size=n, replace=False))


def iso_seconds(values: pd.Series) -> np.ndarray:
    """ISO 8601 times ('2014-04-07T10:51:09.277Z') -> float seconds since the epoch; NaN where unparsable."""
    times = pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce")
    return ((times - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64, na_value=np.nan)


def cut_sequences(user: np.ndarray, time: np.ndarray, gap_seconds: float, max_length: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows in (user, time) order, split into sequences at pauses longer than ``gap_seconds`` (0: never)
    and cut to each sequence's last ``max_length`` rows (0: all).

    Returns (row order into the inputs, sequence index per kept row, number of that sequence within its
    user). The sort is stable, so plays with equal times keep their file order.
    """
    order = np.lexsort((time, user))
    u, t = user[order], time[order]
    n = len(u)
    user_start = np.ones(n, dtype=bool)
    user_start[1:] = u[1:] != u[:-1]
    new = user_start.copy()
    if gap_seconds > 0:
        new[1:] |= (t[1:] - t[:-1]) > gap_seconds
    seq = np.cumsum(new) - 1
    number = seq - seq[user_start][np.cumsum(user_start) - 1]
    if max_length > 0:
        seq_start = np.flatnonzero(new)
        seq_len = np.diff(np.append(seq_start, n))
        keep = np.arange(n) - seq_start[seq] >= seq_len[seq] - max_length
        order, seq, number = order[keep], seq[keep], number[keep]
    return order, seq, number
