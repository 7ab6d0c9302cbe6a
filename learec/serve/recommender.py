"""``Recommender``: a trained ranking model with its item catalogue, saved as a self-contained directory.

A model directory (``save_pretrained`` / ``from_pretrained``)::

    learec_model.json   manifest: format version, backbone, objective, sizes, id type, source run
    ranking_model.json  the ranking model's config: format, n_items, head, the config keys that define it
    model.safetensors   the ranking model's weights (``learec.models.ranking.RankingModel``)
    train_config.yaml   the run's whole resolved config, for the record (never parsed)
    items.json          original item ids (index = model item), item text, training popularity

Requests use the dataset's original item ids. A history longer than the model's history length L
(``data.history``) is cut to its last L items, as in training; ``exclude_seen`` removes every item of the
given history (not only the last L) from the answer. An empty history (or one left empty after dropping
unknown ids) is answered by popularity and flagged as a fallback.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import yaml

import learec
from learec.errors import UserError
from learec.models.ranking import RankingModel
from learec.serve.catalog import ItemCatalog, ItemId, UnknownItemsError, short_repr
from learec.utils import atomic_write_json, atomic_write_text

FORMAT = "learec-recommender"
# 2: the ranking model's own files (ranking_model.json, weights under network.*) replaced config.yaml
FORMAT_VERSION = 2
MANIFEST, ITEMS, TRAIN_CONFIG = "learec_model.json", "items.json", "train_config.yaml"

UnknownPolicy = Literal["error", "drop"]


@dataclass
class Query:
    """One request: a history of original ids, how many items, and what to do about seen/unknown ids."""

    history: Sequence[Any]
    k: int = 10
    exclude_seen: bool = False
    unknown_items: UnknownPolicy = "error"


@dataclass
class Encoded:
    """A query resolved to model indices (unknown ids already checked), ready to be ranked in a batch."""

    indices: list[int]
    k: int
    exclude_seen: bool
    dropped: list[Any] = field(default_factory=list)


@dataclass
class Recommendation:
    items: list[dict[str, Any]]  # {"id", "score", "text"}, best first
    fallback: str | None  # "popularity" when the history was empty
    history_used: int  # items of the history the model saw (at most L)
    dropped_items: list[Any]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its deep copy of the item dicts was a third of the API's CPU per request.
        return {"items": self.items, "fallback": self.fallback, "history_used": self.history_used,
                "dropped_items": self.dropped_items, "warnings": self.warnings}


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` best finite-or-not-masked scores of one row, ties broken by lower index.

    ``torch.topk`` leaves the order of ties unspecified; a stable sort over the candidates at or above the
    k-th value makes the answer deterministic and equal to the evaluator's tie rule.
    """
    k = min(k, int((scores > float("-inf")).sum()))
    if k <= 0:
        return torch.empty(0, dtype=torch.long)
    kth = torch.topk(scores, k, sorted=False).values.min()
    candidates = (scores >= kth).nonzero().squeeze(1)
    order = torch.sort(scores[candidates], descending=True, stable=True).indices[:k]
    return candidates[order]


class Recommender:
    """Ranks the catalogue for histories of original item ids; no training data, LE or LLM needed."""

    def __init__(self, model: RankingModel, catalog: ItemCatalog, info: dict[str, Any] | None = None) -> None:
        if model.config is None:
            raise ValueError("a Recommender serves a ranking model made by from_config or from_pretrained")
        if model.n_items != len(catalog):
            raise ValueError(f"the model ranks {model.n_items} items, the catalogue lists {len(catalog)}")
        self.model = model.eval()
        self.config = model.config
        self.catalog = catalog
        self.info = info or {}
        self.n_items = len(catalog)
        self.history_length = self.config.data.history
        self.pad_id = self.n_items
        self._popularity = torch.as_tensor(catalog.popularity, dtype=torch.float32)

    # --- construction ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Recommender":
        path = Path(path)
        manifest = _read_manifest(path)
        if not (path / ITEMS).is_file():
            raise UserError(f"{path} lacks {ITEMS}", "export the model again with `learec export RUN_DIR --out DIR`")
        model = RankingModel.from_pretrained(path)
        try:
            catalog = ItemCatalog.from_json(json.loads((path / ITEMS).read_text(encoding="utf-8")))
        except json.JSONDecodeError as err:
            raise UserError(f"{path / ITEMS} is not valid JSON: {err}", "export the model again") from None
        if not len(catalog) == manifest["n_items"] == model.n_items:
            raise UserError(f"{path / ITEMS} lists {len(catalog)} items, the manifest {manifest['n_items']}, the "
                            f"model ranks {model.n_items}", "export the model again")
        train_config = path / TRAIN_CONFIG
        record = yaml.safe_load(train_config.read_text()) if train_config.is_file() else None
        return cls(model, catalog, {**manifest, "train_config": record})

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the model directory; the manifest goes last, so a directory with one is complete."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / MANIFEST).unlink(missing_ok=True)  # incomplete until rewritten below
        self.model.save_pretrained(path)
        if self.info.get("train_config"):
            atomic_write_text(path / TRAIN_CONFIG, yaml.safe_dump(self.info["train_config"], sort_keys=False))
        atomic_write_text(path / ITEMS, json.dumps(self.catalog.to_json(), ensure_ascii=False))
        atomic_write_json(path / MANIFEST, self.manifest())
        return path

    def manifest(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "learec_version": learec.__version__,
            "backbone": cfg.model.backbone, "objective": cfg.objective,
            "rank_by": self.model.head,
            "n_items": self.n_items, "history_length": self.history_length, "id_type": self.catalog.id_type,
            "dataset": cfg.data.dataset, "protocol": cfg.data.protocol,
            "source": self.info.get("source", {}), "created": self.info.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    # --- scoring -----------------------------------------------------------------------------------
    def _windows(self, histories: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Last-L windows, left-aligned and padded with ``n_items`` (the training layout)."""
        L = self.history_length
        windows = torch.full((len(histories), L), self.pad_id, dtype=torch.long)
        lengths = torch.ones(len(histories), dtype=torch.long)
        for row, history in enumerate(histories):
            last = list(history)[-L:]
            if last:
                windows[row, : len(last)] = torch.as_tensor(last, dtype=torch.long)
                lengths[row] = len(last)
        return windows, lengths

    @torch.inference_mode()
    def score_indices(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """Model scores ``[B, n_items]`` for histories of model indices (each non-empty)."""
        if not histories:
            return torch.empty(0, self.n_items)
        windows, lengths = self._windows(histories)
        return self.model(windows, lengths).float()

    def scores(self, histories: Sequence[Sequence[ItemId]]) -> torch.Tensor:
        """Model scores ``[B, n_items]`` for histories of original ids (unknown ids raise; none may be empty)."""
        encoded = [self.catalog.encode(list(h))[0] for h in histories]
        if any(not h for h in encoded):
            raise UserError("scores() needs non-empty histories", "use recommend(), which falls back to popularity")
        return self.score_indices(encoded)

    # --- recommending ------------------------------------------------------------------------------
    def encode(self, query: Query) -> Encoded:
        """Resolve ids and check ``k``; raises ``UserError`` (``UnknownItemsError`` for unknown ids)."""
        if isinstance(query.k, bool) or not isinstance(query.k, int) or not 1 <= query.k <= self.n_items:
            raise UserError(f"k must be an integer from 1 to {self.n_items} (the catalogue size), got {short_repr(query.k)}")
        if query.unknown_items not in ("error", "drop"):
            raise UserError(f"unknown_items must be 'error' or 'drop', got {short_repr(query.unknown_items)}")
        indices, dropped = self.catalog.encode(list(query.history), drop_unknown=query.unknown_items == "drop")
        return Encoded(indices, query.k, bool(query.exclude_seen), dropped)

    def rank(self, batch: Sequence[Encoded]) -> list[Recommendation]:
        """Answer encoded queries with one forward pass for all non-empty histories."""
        with_history = [i for i, e in enumerate(batch) if e.indices]
        scores = self.score_indices([batch[i].indices for i in with_history])
        row_of = {i: r for r, i in enumerate(with_history)}
        out = []
        for i, enc in enumerate(batch):
            warnings = []
            if enc.dropped:
                warnings.append(f"dropped {len(enc.dropped)} unknown item id(s): "
                                + ", ".join(short_repr(d) for d in enc.dropped[:20]))
            if i in row_of:
                row, fallback = scores[row_of[i]].clone(), None
            else:
                row, fallback = self._popularity.clone(), "popularity"
                warnings.append("empty history: items ranked by popularity")
            if enc.exclude_seen and enc.indices:
                row[torch.as_tensor(sorted(set(enc.indices)), dtype=torch.long)] = float("-inf")
            best = top_k(row, enc.k)
            if len(best) < enc.k:
                warnings.append(f"only {len(best)} items are left after excluding the history")
            values = row[best].tolist()
            items = [{"id": self.catalog.public_id(j), "score": v, "text": self.catalog.text[j]}
                     for j, v in zip(best.tolist(), values)]
            out.append(Recommendation(items, fallback, min(len(enc.indices), self.history_length),
                                      enc.dropped, warnings))
        return out

    def recommend(self, history: Sequence[ItemId], k: int = 10, exclude_seen: bool = False,
                  unknown_items: UnknownPolicy = "error") -> Recommendation:
        """The top ``k`` items after ``history`` (original ids, oldest first)."""
        return self.rank([self.encode(Query(history, k, exclude_seen, unknown_items))])[0]

    def recommend_batch(self, queries: Sequence[Query]) -> list[Recommendation]:
        return self.rank([self.encode(q) for q in queries])

    def item(self, item_id: ItemId) -> dict[str, Any]:
        index = self.catalog.index_of(item_id)
        if index is None:
            raise UnknownItemsError([item_id])
        return self.catalog.describe(index)

    def summary(self) -> dict[str, Any]:
        m = self.manifest()
        return {key: m[key] for key in ("backbone", "objective", "rank_by", "n_items", "history_length", "id_type",
                                        "dataset", "protocol")}


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise UserError(f"Model directory {path} does not exist", "export a run first: learec export RUN_DIR --out DIR")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        if (path / "config.yaml").is_file() and (path / "checkpoints").is_dir():
            raise UserError(f"{path} is a training run, not an exported model",
                            f"export it first: learec export {path} --out MODEL_DIR")
        raise UserError(f"{path} is not an exported learec model (no {MANIFEST})",
                        "export a run with `learec export RUN_DIR --out DIR`")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{manifest_path} is not valid JSON: {err}", "export the model again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{manifest_path} is not a learec model manifest", "export the model again")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        why = " (written by an older learec, before the ranking model had its own files)" if version == 1 else ""
        raise UserError(f"{path} has model format version {version}{why}; this learec reads version "
                        f"{FORMAT_VERSION}", "export the run again with this version of learec: "
                        "learec export RUN_DIR --out DIR --force")
    if isinstance(manifest.get("n_items"), bool) or not isinstance(manifest.get("n_items"), int):
        raise UserError(f"{manifest_path}: n_items must be an integer", "export the model again")
    return manifest
