"""One forward pass per user: every prefix state and every candidate action at once (docs/design.md §2).

A causal LM's hidden state at position ``t`` depends only on positions ``<= t``, so one pass over a user's
history gives all prefix states. Candidate actions (negatives, augmentation candidates) are appended after
the sequence in the same row; a 4D attention mask lets each see only its own prefix and itself, and it
gets the position id its prefix's next item would have (``t + 1``). Cost then grows with the number of
interactions, not with interactions x prompt length.

Row layout for user ``b`` with ``T_b`` sequence items and ``n_b`` valid candidates::

    [x_0 .. x_{T_b-1} | cand_0 .. cand_{n_b-1} | padding up to L = max_b (T_b + n_b)]

:func:`separate_forward` is the naive reference (one forward per prefix and per prefix + candidate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

_SUPPORTED_ATTENTION = ("sdpa", "eager")


@dataclass(frozen=True)
class PackedLayout:
    """Everything about a packed batch except the embeddings: built once, reusable across models."""

    attention_mask: Tensor  # [B, 1, L, L]: bool (True = attend) for sdpa, additive float for eager
    position_ids: Tensor  # [B, L]
    source_index: Tensor  # [B, L]: which of [sequence (T) | candidates (C) | zero row] fills each slot
    cand_slot: Tensor  # [B, C]: the row slot of each candidate (0 for padding candidates)
    seq_mask: Tensor  # [B, T]: True where a sequence position is real
    cand_mask: Tensor  # [B, C]: True where a candidate is real


@dataclass
class PackedOutput:
    """Last-layer hidden states of one packed pass; padding entries are zero.

    ``seq_hidden[b, t]`` is the state after ``x_0..x_t`` (the LE state ``s_t``; at ``t + 1`` it is also the
    reward input of the logged action given ``x_0..x_t``); ``cand_hidden[b, j]`` is candidate ``j`` scored
    after the prefix ``x_0..x_{cand_prefix[b, j]}``.
    """

    seq_hidden: Tensor  # [B, T, H]
    cand_hidden: Tensor  # [B, C, H]
    cand_prefix: Tensor  # [B, C], -1 for padding candidates
    seq_mask: Tensor  # [B, T]
    cand_mask: Tensor  # [B, C]


def _check_layout_inputs(lengths: Tensor, cand_prefix: Tensor) -> None:
    if lengths.dim() != 1 or cand_prefix.dim() != 2 or cand_prefix.shape[0] != lengths.shape[0]:
        raise ValueError(f"lengths must be [B] and cand_prefix [B, C]; got {tuple(lengths.shape)} "
                         f"and {tuple(cand_prefix.shape)}")
    if bool((lengths < 1).any()):
        raise ValueError("every user needs at least one sequence item (lengths >= 1)")
    valid = cand_prefix >= 0
    if bool((valid & (cand_prefix >= lengths[:, None])).any()):
        raise ValueError("a candidate's prefix index must be < its user's sequence length (or -1 for padding)")


def _mask_for(visible: Tensor, attn_implementation: str, dtype: torch.dtype) -> Tensor:
    """Encode a bool visibility matrix the way the attention implementation reads a 4D mask as given.

    ``sdpa`` takes a bool mask (True = attend); ``eager`` adds the mask to the scores, so it needs an
    additive float mask (a bool mask would silently mask nothing there). ``finfo.min`` rather than
    ``-inf``: every row keeps at least itself, so no row softmaxes over nothing.
    """
    if attn_implementation == "sdpa":
        return visible[:, None]
    if attn_implementation == "eager":
        mask = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
        return mask.masked_fill_(~visible, torch.finfo(dtype).min)[:, None]
    raise ValueError(f"the packed pass supports attention implementations {_SUPPORTED_ATTENTION}, not "
                     f"'{attn_implementation}'; load the model with attn_implementation='sdpa'")


def build_packed_layout(lengths: Tensor, cand_prefix: Tensor, attn_implementation: str = "sdpa",
                        dtype: torch.dtype = torch.float32, seq_width: int | None = None) -> PackedLayout:
    """Mask, position ids and slot maps for users of ``lengths`` with candidates at ``cand_prefix``.

    ``cand_prefix[b, j] = t`` means candidate ``j`` of user ``b`` sees ``x_0..x_t`` (and itself) and sits
    at position ``t + 1``; ``-1`` marks a padding candidate. Sequence positions attend causally; padding
    slots attend only to themselves (a fully masked row would give NaN).
    """
    device = lengths.device
    lengths, cand_prefix = lengths.long(), cand_prefix.long().to(device)
    _check_layout_inputs(lengths, cand_prefix)
    batch, n_cand = cand_prefix.shape
    width = int(lengths.max()) if seq_width is None else seq_width
    cand_mask = cand_prefix >= 0
    n_valid = cand_mask.sum(1)
    row_len = int((lengths + n_valid).max())
    # valid candidates are packed right after the sequence, in their given order
    rank = cand_mask.long().cumsum(1) - 1
    cand_slot = torch.where(cand_mask, lengths[:, None] + rank, torch.zeros_like(rank))

    slots = torch.arange(row_len, device=device)
    is_seq = slots[None, :] < lengths[:, None]  # [B, L]
    # last sequence index each slot may see: i for sequence slots, t for candidates, -1 for padding
    seq_limit = torch.where(is_seq, slots[None, :].expand(batch, -1), torch.full_like(is_seq, -1, dtype=torch.long))
    position_ids = torch.where(is_seq, slots[None, :].expand(batch, -1), torch.zeros_like(seq_limit))
    source_index = torch.full((batch, row_len), width + n_cand, dtype=torch.long, device=device)  # zero row
    source_index = torch.where(is_seq, slots[None, :].expand(batch, -1), source_index)
    b_idx, j_idx = cand_mask.nonzero(as_tuple=True)
    c_slot = cand_slot[b_idx, j_idx]
    seq_limit[b_idx, c_slot] = cand_prefix[b_idx, j_idx]
    position_ids[b_idx, c_slot] = cand_prefix[b_idx, j_idx] + 1
    source_index[b_idx, c_slot] = width + j_idx

    key_is_seq = is_seq[:, None, :]  # [B, 1, L]
    visible = (slots[None, None, :] <= seq_limit[:, :, None]) & key_is_seq
    visible |= torch.eye(row_len, dtype=torch.bool, device=device)[None]
    seq_mask = torch.arange(width, device=device)[None, :] < lengths[:, None]
    return PackedLayout(_mask_for(visible, attn_implementation, dtype), position_ids, source_index, cand_slot,
                        seq_mask, cand_mask)


def decoder_of(model: Any) -> Any:
    """The base transformer (no LM head) of a causal LM, a peft-wrapped one, or the base model itself.

    Running it directly skips the vocabulary projection, the most expensive layer of a small LM, when
    only hidden states are needed. LoRA layers are injected in place, so they run too.
    """
    if hasattr(model, "get_base_model"):  # peft.PeftModel
        model = model.get_base_model()
    return model.base_model if hasattr(model, "base_model") else model


def _embed(tokens_or_embeds: Tensor, embedding: torch.nn.Module) -> Tensor:
    """Token ids are embedded; float tensors are taken as input embeddings (e.g. learned item tokens)."""
    if tokens_or_embeds.is_floating_point():
        return tokens_or_embeds
    return embedding(tokens_or_embeds)


def packed_forward(model: Any, sequence: Tensor, lengths: Tensor, candidates: Tensor, cand_prefix: Tensor,
                   layout: PackedLayout | None = None) -> PackedOutput:
    """Hidden states of every prefix and every candidate of a batch of users, in one forward pass.

    ``sequence`` is ``[B, T]`` token ids or ``[B, T, H]`` input embeddings, right-padded (only the first
    ``lengths[b]`` entries are read); ``candidates`` is ``[B, C]`` ids or ``[B, C, H]`` embeddings with
    ``cand_prefix`` ``[B, C]`` (``-1`` = padding). Gradients flow to the embeddings and to any adapter.
    """
    decoder = decoder_of(model)
    embedding = decoder.get_input_embeddings()
    seq_emb = _embed(sequence, embedding)
    cand_emb = _embed(candidates, embedding).to(seq_emb.dtype)
    device, dtype = seq_emb.device, seq_emb.dtype
    if layout is None:
        attn = decoder.config._attn_implementation
        layout = build_packed_layout(lengths.to(device), cand_prefix.to(device), attn, dtype, seq_emb.shape[1])
    batch, width, hidden = seq_emb.shape
    zero = seq_emb.new_zeros(batch, 1, hidden)
    source = torch.cat([seq_emb, cand_emb, zero], dim=1)
    inputs = source.gather(1, layout.source_index[:, :, None].expand(-1, -1, hidden))
    out = decoder(inputs_embeds=inputs, attention_mask=layout.attention_mask, position_ids=layout.position_ids,
                  use_cache=False)
    states = out.last_hidden_state  # [B, L, H]
    seq_hidden = states[:, :width] * layout.seq_mask[:, :, None]
    cand_hidden = states.gather(1, layout.cand_slot[:, :, None].expand(-1, -1, hidden))
    cand_hidden = cand_hidden * layout.cand_mask[:, :, None]
    prefix = torch.where(layout.cand_mask, cand_prefix.to(device).long(), torch.full_like(layout.cand_slot, -1))
    return PackedOutput(seq_hidden, cand_hidden, prefix, layout.seq_mask, layout.cand_mask)


def _last_state(decoder: Any, embeds: Tensor) -> Tensor:
    """The last position's hidden state of one unpadded prompt, with the model's own causal mask."""
    positions = torch.arange(embeds.shape[0], device=embeds.device)[None]
    out = decoder(inputs_embeds=embeds[None], position_ids=positions, use_cache=False)
    return out.last_hidden_state[0, -1]


def separate_forward(model: Any, sequence: Tensor, lengths: Tensor, candidates: Tensor,
                     cand_prefix: Tensor) -> PackedOutput:
    """The naive reference for :func:`packed_forward`: one forward per prefix and per prefix + candidate.

    Same inputs and outputs; it is the labelling baseline the packed pass must beat, and the ground
    truth the tests compare against.
    """
    decoder = decoder_of(model)
    embedding = decoder.get_input_embeddings()
    seq_emb = _embed(sequence, embedding)
    cand_emb = _embed(candidates, embedding).to(seq_emb.dtype)
    batch, width, hidden = seq_emb.shape
    seq_hidden = seq_emb.new_zeros(batch, width, hidden)
    cand_hidden = seq_emb.new_zeros(batch, cand_emb.shape[1], hidden)
    for b in range(batch):
        for t in range(int(lengths[b])):
            seq_hidden[b, t] = _last_state(decoder, seq_emb[b, : t + 1])
        for j, t in enumerate(cand_prefix[b].tolist()):
            if t >= 0:
                prompt = torch.cat([seq_emb[b, : t + 1], cand_emb[b, j : j + 1]])
                cand_hidden[b, j] = _last_state(decoder, prompt)
    seq_mask = torch.arange(width, device=seq_emb.device)[None, :] < lengths.to(seq_emb.device)[:, None]
    cand_mask = cand_prefix.to(seq_emb.device) >= 0
    prefix = torch.where(cand_mask, cand_prefix.to(seq_emb.device).long(), -1)
    return PackedOutput(seq_hidden, cand_hidden, prefix, seq_mask, cand_mask)
