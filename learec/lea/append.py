"""The next state of an augmented action under ``lea.augment_next_state=append``: its item appended to the history.

Histories follow the backbone convention (learec.models.base): left-aligned, padded at the end with
``pad`` (= n_items), an empty history being one all-padding row of length 1. Appending mirrors how a
logged transition's next state is built (learec.data.splits.history_windows): a short history grows by one,
a full window drops its oldest item and shifts left.
"""

from __future__ import annotations

import torch


def append_items(histories: torch.Tensor, items: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``histories`` ``[B, L]`` with each of ``items`` ``[B, k]`` appended: ``[B * k, L]`` histories (row
    ``b * k + j`` holds item ``j`` of row ``b``) and their ``[B * k]`` lengths."""
    n, width = histories.shape
    k = items.shape[1]
    real = (histories != pad).sum(dim=1)  # true lengths: an empty history (length 1, all padding) has 0
    full = real >= width
    shifted = torch.cat([histories[:, 1:], histories.new_full((n, 1), pad)], dim=1)
    base = torch.where(full[:, None], shifted, histories)
    slot = torch.where(full, torch.full_like(real, width - 1), real)  # where the new item goes
    out = base.unsqueeze(1).expand(n, k, width).clone()
    out.scatter_(2, slot.view(n, 1, 1).expand(n, k, 1), items.to(out.dtype).unsqueeze(2))
    return out.reshape(n * k, width), (slot + 1).repeat_interleave(k)
