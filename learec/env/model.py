"""The LE model: the LM with LoRA adapters, the item tokens, a state projection and a reward score head.

A pass reads one *row*: ``[prompt tokens | item tokens x_c .. x_{b-1} | candidate item tokens]``. With
``P`` prompt tokens, the hidden state at ``P - 1 + h`` is the LE state after the first ``h`` items of the
row (``h = 0``: the prompt alone, an empty history), and the hidden state at the token of ``x_j`` is the
reward input of the logged action ``x_j`` given the items before it. A candidate with ``h`` visible items
sits at position ``P + h`` and sees the prompt and those ``h`` items only (docs/design.md §2).

- state model: ``s = state_proj(hidden)``, compared by cosine with item keys ``item_proj(item token)``
  (options against collapsed keys: no bias, a learned per-item residual, keys centred on their mean; and a
  learned per-item score bias, a popularity prior);
- reward model: ``r = reward_head(hidden)`` at the action's token.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from learec.config import LEConfig, LEModelConfig
from learec.env.packed import PackedOutput, packed_forward
from learec.errors import UserError
from learec.utils import atomic_torch_save, error_summary, load_torch_file


def load_le_lm(cfg: LEConfig) -> tuple[Any, Any]:
    """The LM and tokenizer named by ``cfg.lm`` (``'tiny'``: a tiny random Llama for tests)."""
    from learec.env.lm import load_causal_lm, tiny_llama

    if cfg.lm == "tiny":
        model, tokenizer = tiny_llama(hidden=32, layers=2, heads=4, seed=cfg.seed)
        return model.to(device=cfg.device, dtype=getattr(torch, cfg.dtype)), tokenizer
    return load_causal_lm(cfg.lm, device=cfg.device, dtype=cfg.dtype)


@dataclass(frozen=True)
class Segment:
    """One LM row: items ``[start, end)`` of ``user``; labels are wanted for positions ``[first, end)``."""

    user: int
    start: int
    first: int
    end: int


def plan_segments(user: int, positions: np.ndarray, window: int) -> list[Segment]:
    """Rows covering the sorted target ``positions`` of one user, each at most ``window`` items.

    Targets go in groups of up to ``window // 2`` consecutive positions; each row starts up to
    ``window - group`` items earlier, so every target sees at least ``window // 2`` items of history
    (or all of it, near the start of the sequence).
    """
    if len(positions) == 0:
        return []
    group = max(window // 2, 1)
    segments = []
    lo, hi = int(positions[0]), int(positions[-1]) + 1
    for first in range(lo, hi, group):
        end = min(first + group, hi)
        segments.append(Segment(user, max(0, end - window), first, end))
    return segments


class LEModel(nn.Module):
    """LM (+LoRA) + item tokens + state projection + reward head; see the module docstring for the layout."""

    def __init__(self, lm: Any, tokenizer: Any, item_tokens: Tensor, cfg: LEModelConfig, lora: bool = True,
                 learned_temperature: float | None = None, tune_tokens: bool = False,
                 item_prior: Tensor | None = None):
        super().__init__()
        for p in lm.parameters():
            p.requires_grad_(False)
        if lora:
            from peft import LoraConfig, get_peft_model

            lm = get_peft_model(lm, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                               target_modules=list(cfg.target_modules)))
        self.lm = lm
        embedding = lm.get_input_embeddings()
        self.dtype_ = embedding.weight.dtype
        device = embedding.weight.device
        hidden = embedding.weight.shape[1]
        prompt = tokenizer(cfg.prompt, add_special_tokens=False)["input_ids"]
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        ids = torch.as_tensor(bos + list(prompt) or [0], dtype=torch.long, device=device)
        self.register_buffer("prompt_ids", ids, persistent=False)
        tokens = item_tokens.to(device=device, dtype=torch.float32)
        if tune_tokens:  # le.train.token_lr: a parameter, so saved (heads.pt), resumed and hashed with the LE
            self.item_tokens = nn.Parameter(tokens.clone())
        else:  # as trained by textual inversion, the adapters learn to read them; not part of the LE's files
            self.register_buffer("item_tokens", tokens, persistent=False)
        self.state_proj = nn.Linear(hidden, cfg.state_dim).to(device)
        self.item_proj = nn.Linear(hidden, cfg.state_dim, bias=cfg.key_bias).to(device)
        self.reward_head = nn.Linear(hidden, 1).to(device)
        # optional parameters exist only when set, so a default LE has exactly the weights (and hash) it had
        if cfg.item_residual:  # zero at the start: keys begin as item_proj(item token)
            self.item_residual = nn.Parameter(torch.zeros(len(item_tokens), cfg.state_dim, device=device))
        if cfg.item_bias != "none":  # 'zero': scores begin as the cosines alone; else ``item_prior``
            if cfg.item_bias == "log_popularity" and item_prior is None:
                raise ValueError("le.model.item_bias=log_popularity starts from item_prior: pass it")
            start = torch.zeros(len(item_tokens)) if cfg.item_bias == "zero" else torch.as_tensor(item_prior)
            self.item_bias = nn.Parameter(start.to(device=device, dtype=torch.float32).clone())
        if learned_temperature is not None:
            self.log_temperature = nn.Parameter(torch.tensor(float(learned_temperature), device=device).log())
        self.cfg = cfg

    @property
    def device(self) -> torch.device:
        return self.item_tokens.device

    @property
    def n_prompt(self) -> int:
        return int(self.prompt_ids.numel())

    def head_parameters(self) -> list[nn.Parameter]:
        optional = ("item_residual", "item_bias", "log_temperature")
        extra = [getattr(self, name) for name in optional if hasattr(self, name)]
        return [*self.state_proj.parameters(), *self.item_proj.parameters(), *self.reward_head.parameters(), *extra]

    def temperature(self, fixed: float) -> Tensor | float:
        """The state loss's temperature: the learned one when the model has it, else ``fixed``."""
        return self.log_temperature.exp() if hasattr(self, "log_temperature") else fixed

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Adapters and heads; the item tokens, when tuned, are :meth:`token_parameters` (their own lr)."""
        return [p for p in self.lm.parameters() if p.requires_grad] + self.head_parameters()

    def token_parameters(self) -> list[nn.Parameter]:
        """The item tokens when the model was built with ``tune_tokens``, else none."""
        return [self.item_tokens] if isinstance(self.item_tokens, nn.Parameter) else []

    def forward(self, items: Tensor, lengths: Tensor, cand_items: Tensor, cand_hist: Tensor) -> PackedOutput:
        """One packed pass. ``items [B, T]`` item codes (right-padded), ``lengths [B]``; candidate ``j`` of
        row ``b`` is ``cand_items[b, j]`` seen after the first ``cand_hist[b, j]`` items (``-1`` = padding).

        The returned ``seq_hidden`` covers ``[prompt | items]``: see :meth:`state_hidden`/:meth:`item_hidden`.
        """
        batch = items.shape[0]
        prompt = self.lm.get_input_embeddings()(self.prompt_ids)[None].expand(batch, -1, -1)
        tokens = self.item_tokens[items.clamp(0, len(self.item_tokens) - 1)].to(self.dtype_)
        sequence = torch.cat([prompt, tokens], dim=1)
        cand = self.item_tokens[cand_items.clamp(0, len(self.item_tokens) - 1)].to(self.dtype_)
        prefix = torch.where(cand_hist >= 0, cand_hist + self.n_prompt - 1, torch.full_like(cand_hist, -1))
        return packed_forward(self.lm, sequence, lengths + self.n_prompt, cand, prefix)

    def state_hidden(self, out: PackedOutput) -> Tensor:
        """``[B, T + 1, H]``: the hidden state after ``h = 0..T`` items of each row."""
        return out.seq_hidden[:, self.n_prompt - 1:]

    def item_hidden(self, out: PackedOutput) -> Tensor:
        """``[B, T, H]``: the hidden state at each item's own token (its reward input)."""
        return out.seq_hidden[:, self.n_prompt:]

    def states(self, hidden: Tensor) -> Tensor:
        return self.state_proj(hidden.float())

    def item_keys(self) -> Tensor:
        """``[n_items, d]``: ``item_proj(item token)`` (+ the per-item residual), centred when configured."""
        keys = self.item_proj(self.item_tokens)
        if self.cfg.item_residual:
            keys = keys + self.item_residual
        if self.cfg.center_keys:  # the shared direction carries no information about which item it is
            keys = keys - keys.mean(0, keepdim=True)
        return keys

    def scores(self, states: Tensor, keys: Tensor, items: Tensor | None = None) -> Tensor:
        """The state model's item scores (the state loss divides them by the temperature): the cosine of
        ``states [..., d]`` with every key (``items=None``: ``[..., n_items]``) or with ``keys[items]`` for
        ``items [..., K]``, plus the item's learned bias when ``le.model.item_bias`` is on."""
        sims = self.similarity(states, keys if items is None else keys[items])
        if not hasattr(self, "item_bias"):
            return sims
        return sims + (self.item_bias if items is None else self.item_bias[items])

    def rewards(self, hidden: Tensor) -> Tensor:
        return self.reward_head(hidden.float()).squeeze(-1)

    @staticmethod
    def similarity(states: Tensor, keys: Tensor) -> Tensor:
        """Cosine similarity of states ``[..., d]`` with keys ``[M, d]`` or ``[..., K, d]``."""
        s, k = F.normalize(states, dim=-1), F.normalize(keys, dim=-1)
        if k.dim() == 2:
            return s @ k.T
        return (s.unsqueeze(-2) * k).sum(-1)

    # --- saving and loading: adapters (peft) + heads, beside the item tokens --------------------------
    def save(self, directory: Path) -> str:
        """Write the adapters and heads to ``directory``; returns a hash of what was written."""
        directory.mkdir(parents=True, exist_ok=True)
        self.lm.save_pretrained(directory / "adapter")
        heads = {k: v.detach().cpu() for k, v in self.state_dict().items() if not k.startswith("lm.")}
        atomic_torch_save(directory / "heads.pt", heads)
        return weights_hash(self)

    def load(self, directory: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        adapter = directory / "adapter" / "adapter_model.safetensors"
        if not adapter.is_file() or not (directory / "heads.pt").is_file():
            raise UserError(f"No trained LE in {directory}", "run `learec env train` first")
        set_peft_model_state_dict(self.lm, load_file(str(adapter), device=str(self.device)))
        hint = f"retrain the LE: delete {directory} and run `learec env train --run-dir {directory.parent}`"
        heads = load_torch_file(directory / "heads.pt", hint, map_location=self.device)
        try:  # a file that loads safely may still not hold this LE's heads
            missing = [k for k in self.load_state_dict(heads, strict=False).missing_keys if not k.startswith("lm.")]
        except (TypeError, ValueError, AttributeError, RuntimeError) as err:
            raise UserError(f"{directory / 'heads.pt'} does not fit this LE ({error_summary(err)})", hint) from None
        if missing:  # e.g. tuned item tokens: without them the LE would silently read the untuned ones
            raise UserError(f"{directory / 'heads.pt'} lacks {', '.join(missing)} of this LE", hint)


def log_popularity_prior(item_counts: np.ndarray, temperature: float) -> Tensor:
    """The start of ``le.model.item_bias=log_popularity`` in cosine units: ``temperature * (log(1 + count) -
    mean)``, so that the state loss's logits ``(cos + bias) / temperature`` start with log popularity."""
    log_counts = np.log1p(np.asarray(item_counts, dtype=np.float64))
    return torch.as_tensor(temperature * (log_counts - log_counts.mean()), dtype=torch.float32)


def weights_hash(model: LEModel) -> str:
    """A content hash of the trainable weights (adapters + heads): keys the labelling cache."""
    digest = hashlib.sha256()
    for name, tensor in sorted((n, p) for n, p in model.named_parameters() if "lora" in n or not n.startswith("lm.")):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    digest.update(model.item_tokens.detach().cpu().numpy().tobytes())
    digest.update(json.dumps(model.cfg.key_dump(mode="json"), sort_keys=True).encode())
    return digest.hexdigest()[:16]
