"""A store of finished item tokens shared by every LE run: ``$LEAREC_DATA_DIR/item-tokens/<key>/item_tokens.pt``.

Item tokens depend on the item texts, the LM, the item-token settings and the seed, not on the LE
training settings; yet a new run directory (one per LE setting) would train them again. So ``learec env
train`` looks their key up here first, copies a finished file into its run directory, and puts what it
trains here. The store key hashes the item texts themselves rather than the prepared data's key, so
runs whose data differ in a way the items do not see (history length, split) share their tokens too.
Deleting the folder only costs retraining.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from learec.config import Config
from learec.errors import UserError
from learec.utils import atomic_torch_save, data_home, load_torch_file, stable_hash

STORE_FORMAT = 1  # bump when what a stored file holds changes: older entries are then never found


def store_root() -> Path:
    """The store's folder, beside the fetched and prepared data (``$LEAREC_DATA_DIR``, ``~/.cache/learec``)."""
    return data_home() / "item-tokens"


def store_key(cfg: Config, item_text: list[str]) -> str:
    """What item tokens are made from: the item texts in item order, the LM, its dtype, the item-token
    settings and the seed (``le.device`` and ``le.threads`` change rounding only, as everywhere in learec)."""
    return stable_hash({"format": STORE_FORMAT, "lm": cfg.le.lm, "dtype": cfg.le.dtype,
                        "item_tokens": cfg.le.item_tokens.key_dump(), "seed": cfg.le.seed,
                        "items": stable_hash(list(item_text)), "n_items": len(item_text)})


def store_path(key: str) -> Path:
    return store_root() / key / "item_tokens.pt"


def fetch(key: str, n_items: int, hidden: int) -> dict[str, Any] | None:
    """The stored ``{"embeddings", "report"}`` of ``key``, or None when there is none. A file that is not
    plain data (no pickle is loaded), not stamped ``key`` or not ``[n_items, hidden]`` is refused."""
    path = store_path(key)
    if not path.is_file():
        return None
    hint = f"delete {path.parent}: the item tokens are then trained again and stored afresh"
    saved = load_torch_file(path, hint)
    emb = saved.get("embeddings") if isinstance(saved, dict) else None
    if not isinstance(emb, torch.Tensor) or saved.get("key") != key or not isinstance(saved.get("report"), dict):
        raise UserError(f"{path} does not hold the item tokens of its key {key}", hint)
    if tuple(emb.shape) != (n_items, hidden) or not emb.is_floating_point():
        raise UserError(f"{path} holds item tokens of shape {tuple(emb.shape)}, not ({n_items}, {hidden})", hint)
    return {"embeddings": emb.float(), "report": saved["report"]}


def put(key: str, embeddings: torch.Tensor, report: dict[str, Any]) -> Path:
    """Store finished item tokens under ``key`` (atomically: a reader never sees half a file)."""
    path = store_path(key)
    atomic_torch_save(path, {"key": key, "embeddings": embeddings.detach().cpu(), "report": report})
    return path
