"""Item tokens by textual inversion (docs/design.md §1.3): one learned input embedding per item.

The LM stays frozen; only the item embeddings train, so that the LM, fed ``⟨item⟩`` followed by nothing
else, generates the item's description (``⟨item⟩ is the movie Toy Story (1995) ...``). Each embedding
starts from the mean of its description's token embeddings, which already places it near the words
that describe it; training then sharpens it. A user's history later reads as a sequence of these tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from learec.config import ItemTokenConfig

log = logging.getLogger("learec.env")


def describe_items(item_text: list[str], describe: str) -> list[str]:
    """The text the LM must produce after each item's token, from the configured template."""
    if "{text}" not in describe:
        raise ValueError(f"le.item_tokens.describe must contain '{{text}}', got {describe!r}")
    return [describe.replace("{text}", text) for text in item_text]


def tokenize_descriptions(tokenizer: Any, texts: list[str], max_tokens: int) -> list[list[int]]:
    """Token ids of each description (no special tokens), cut to ``max_tokens``; never empty."""
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    cut = sum(len(t) > max_tokens for t in ids)
    if cut:  # the LM then learns to describe items by a prefix of their text only
        longest = max(len(t) for t in ids)
        log.warning("%d of %d item descriptions (%.0f%%) are longer than le.item_tokens.max_text_tokens=%d tokens "
                    "(the longest has %d) and are cut; raise it to keep them whole", cut, len(ids),
                    100 * cut / len(ids), max_tokens, longest)
    fallback = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return [list(t[:max_tokens]) or [fallback] for t in ids]


def text_token_ids(tokenizer: Any, item_text: list[str], max_tokens: int) -> list[list[int]]:
    """Token ids of each item text alone (no template, no special tokens), cut to ``max_tokens``; never empty.
    No warning when cut: the description holding the text is at least as long, and is warned about."""
    ids = tokenizer(list(item_text), add_special_tokens=False)["input_ids"]
    fallback = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return [list(t[:max_tokens]) or [fallback] for t in ids]


def initial_item_embeddings(lm: Any, token_lists: list[list[int]]) -> Tensor:
    """Mean of each description's token embeddings, as fp32 ``[n_items, hidden]``."""
    table = lm.get_input_embeddings().weight.detach().float()
    return torch.stack([table[torch.as_tensor(ids)].mean(0) for ids in token_lists])


def _batch_inputs(lm: Any, item_emb: Tensor, token_lists: list[list[int]], items: np.ndarray
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """``[⟨item⟩, t_1 .. t_n]`` as input embeddings, the padding mask (None without padding) and the labels."""
    device = item_emb.device
    lengths = [len(token_lists[i]) for i in items]
    width = max(lengths)
    pad = torch.zeros(len(items), width, dtype=torch.long, device=device)
    labels = torch.full((len(items), width), -100, dtype=torch.long, device=device)
    for row, (i, n) in enumerate(zip(items, lengths)):
        ids = torch.as_tensor(token_lists[i], device=device)
        pad[row, :n] = ids
        labels[row, :n] = ids
    embedding = lm.get_input_embeddings()
    dtype = embedding.weight.dtype
    words = embedding(pad)
    inputs = torch.cat([item_emb[torch.as_tensor(items, device=device)][:, None].to(dtype), words], dim=1)
    if min(lengths) == width:
        return inputs, None, labels  # no padding: the plain causal path, about twice as fast as a padding mask
    mask = torch.ones(len(items), width + 1, dtype=torch.long, device=device)
    mask[:, 1:] = labels != -100
    return inputs, mask, labels


def length_buckets(rng: np.random.Generator, lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Shuffled batches of items with equal (or nearly equal) description lengths, in random order.

    Equal lengths mean no padding, so no attention mask: the LM then takes its fast causal path.
    """
    order = rng.permutation(len(lengths))
    order = order[np.argsort(lengths[order], kind="stable")]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _nll_sum(lm: Any, item_emb: Tensor, token_lists: list[list[int]], items: np.ndarray) -> tuple[Tensor, int]:
    """Summed NLL of the descriptions of ``items`` given their item tokens, and the token count."""
    inputs, mask, labels = _batch_inputs(lm, item_emb, token_lists, items)
    logits = lm(inputs_embeds=inputs, attention_mask=mask, use_cache=False).logits[:, :-1]  # position j predicts t_{j+1}
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                           reduction="sum")
    return loss, int((labels != -100).sum())


@torch.no_grad()
def description_nll(lm: Any, item_emb: Tensor, token_lists: list[list[int]], items: np.ndarray,
                    batch_size: int = 32) -> float:
    """Mean NLL per description token of ``items`` (lower = the item token says more about the item)."""
    total, count = 0.0, 0
    items = items[np.argsort([len(token_lists[i]) for i in items], kind="stable")]  # little padding
    for start in range(0, len(items), batch_size):
        loss, n = _nll_sum(lm, item_emb, token_lists, items[start:start + batch_size])
        total, count = total + float(loss), count + n
    return total / max(count, 1)


def train_item_tokens(lm: Any, tokenizer: Any, item_text: list[str], cfg: ItemTokenConfig, seed: int = 0,
                      progress: Callable[[Any], Any] | None = None) -> tuple[Tensor, dict[str, Any]]:
    """Learn one embedding per item with the LM frozen; returns ``(embeddings [N, H] fp32, report)``.

    The report holds the description NLL per token on a fixed sample of items before and after training.
    With ``cfg.patience`` that NLL is also measured after every epoch (``nll_per_token_by_epoch``), training
    stops after ``patience`` epochs without a lower one, and the tokens of the best epoch are returned (the
    starts, epoch 0, count as a candidate). The sample is trained on like every item: each item needs its
    own token, so none can be held out, and the signal says when training stopped paying, not how it
    generalises.
    """
    for p in lm.parameters():
        p.requires_grad_(False)
    device = lm.get_input_embeddings().weight.device
    token_lists = tokenize_descriptions(tokenizer, describe_items(item_text, cfg.describe), cfg.max_text_tokens)
    init_lists = token_lists if cfg.init == "describe" else text_token_ids(tokenizer, item_text, cfg.max_text_tokens)
    emb = torch.nn.Parameter(initial_item_embeddings(lm, init_lists).to(device))
    rng = np.random.default_rng(seed)
    n_items = len(item_text)
    sample = np.sort(rng.permutation(n_items)[: cfg.eval_items])
    before = description_nll(lm, emb.detach(), token_lists, sample, cfg.batch_size)
    optimizer = torch.optim.Adam([emb], lr=cfg.lr)
    losses = []
    lengths = np.array([len(t) for t in token_lists])
    stopper = _BestEpoch(emb, before, cfg.patience) if cfg.patience else None
    epochs_run = 0
    for epoch in range(cfg.epochs):
        batches = length_buckets(rng, lengths, cfg.batch_size)
        bar = progress(batches, desc=f"item tokens {epoch + 1}/{cfg.epochs}") if progress else batches
        for items in bar:
            loss, n = _nll_sum(lm, emb, token_lists, items)
            optimizer.zero_grad()
            (loss / n).backward()
            optimizer.step()
            losses.append(loss.item() / n)
        epochs_run = epoch + 1
        # no evaluation without patience: the default run does exactly what it did before the option
        if stopper is not None and stopper.stop(epochs_run, emb, description_nll(lm, emb.detach(), token_lists,
                                                                                 sample, cfg.batch_size)):
            log.info("item tokens: no lower description NLL for %d epochs, stopped after epoch %d (best: epoch %d)",
                     cfg.patience, epochs_run, stopper.epoch)
            break
    if stopper is None:
        after = description_nll(lm, emb.detach(), token_lists, sample, cfg.batch_size)
    else:
        with torch.no_grad():
            emb.copy_(stopper.tokens)
        after = stopper.nll
    report = {"nll_per_token_before": before, "nll_per_token_after": after, "eval_items": int(len(sample)),
              "epochs": cfg.epochs, "mean_tokens": float(np.mean([len(t) for t in token_lists])),
              "train_loss_last_epoch": float(np.mean(losses[-len(batches):])) if losses else None}
    if stopper is not None:
        report.update({"epochs_run": epochs_run, "best_epoch": stopper.epoch,
                       "nll_per_token_by_epoch": stopper.history})
    return emb.detach().cpu(), report


class _BestEpoch:
    """Early stopping on the sample's description NLL: the best tokens so far (a copy) and their epoch."""

    def __init__(self, emb: Tensor, nll: float, patience: int):
        self.tokens, self.nll, self.epoch, self.patience = emb.detach().clone(), nll, 0, patience
        self.history = [nll]  # epoch 0: the starts

    def stop(self, epoch: int, emb: Tensor, nll: float) -> bool:
        """Record ``epoch``'s NLL of the tokens ``emb`` (copied when it is the lowest); True: stop now."""
        self.history.append(nll)
        if nll < self.nll:  # the first of equal ones is kept
            self.tokens, self.nll, self.epoch = emb.detach().clone(), nll, epoch
        return epoch - self.epoch >= self.patience
