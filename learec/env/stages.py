"""The stages of an LE run directory as keyed outputs (see :mod:`learec.stages`): their keys, and the status
each one's files give for a config. :class:`learec.env.run.LERun` asks these before it skips, resumes or
redoes a stage, and ``learec pipeline --dry-run`` prints them (:func:`le_status`), so both decide alike.

The keys' values are part of the run directory's format: changing one makes every existing run stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from learec.config import Config
from learec.data.prepared import PreparedData
from learec.env import token_store
from learec.env.eval_states import EVAL_STATES
from learec.env.label import SHARDS, cache_problem, load_label_cache
from learec.errors import UserError
from learec.stages import State, StageStatus, keyed_status
from learec.utils import load_torch_file, stable_hash

LE_REPORT_CONTENTS = 4  # bump when the LE report gains or fixes measures, so reports made before are redone


def negatives(cfg: Config) -> int:
    """Negatives labelled per transition (``le.label.negatives``, else the RL objective's)."""
    return cfg.le.label.negatives if cfg.le.label.negatives is not None else cfg.rl.negatives


def read_item_tokens(path: Path) -> dict[str, Any]:
    """``item_tokens.pt`` as written by :meth:`learec.env.run.LERun.item_tokens`, read safely (no pickle)."""
    hint = f"delete it: `learec env train --run-dir {path.parent}` makes the item tokens again"
    saved = load_torch_file(path, hint)
    if not isinstance(saved, dict) or not isinstance(saved.get("embeddings"), torch.Tensor) or "report" not in saved:
        raise UserError(f"{path} does not hold item tokens", hint)
    return saved


class ItemTokens:
    """``item_tokens.pt``: the learned item embeddings and their report, stamped with their key."""

    name = "item tokens"

    def outputs(self, run_dir: Path) -> list[Path]:
        return [run_dir / "item_tokens.pt"]

    def key(self, cfg: Config, data: PreparedData) -> str:
        return stable_hash({"lm": cfg.le.lm, "dtype": cfg.le.dtype, "item_tokens": cfg.le.item_tokens.key_dump(),
                            "data": data.manifest["key"], "seed": cfg.le.seed})

    def status(self, run_dir: Path, cfg: Config, data: PreparedData) -> StageStatus:
        """``found`` is the file's content (embeddings, report) when it exists. Tokens to make are copied
        from the item-token store (:mod:`learec.env.token_store`) when it holds them, else trained."""
        path = self.outputs(run_dir)[0]
        saved = read_item_tokens(path) if path.is_file() else None
        stored = None if saved is None else str(saved.get("key"))
        key = self.key(cfg, data)
        reuse = stored != key and token_store.store_path(self.store_key(cfg, data)).is_file()
        make = "reuse from the item-token store" if reuse else "train"
        return keyed_status(self.name, stored, key, found=saved, missing=f"to {make}",
                            stale=f"made from other inputs: {make if reuse else 'retrain'}")

    def store_key(self, cfg: Config, data: PreparedData) -> str:
        """Their key in the item-token store, which every LE run shares (:func:`learec.env.token_store.store_key`)."""
        return token_store.store_key(cfg, data.sequences.item_text)


class LETraining:
    """``le/``: the adapters and heads, ``done.json`` (key, weights hash, users, history) once finished and
    ``train_state.pt`` (per-epoch resume point) while training."""

    name = "LE training"

    def outputs(self, run_dir: Path) -> list[Path]:
        return [run_dir / "le" / "done.json", run_dir / "le" / "train_state.pt"]

    def key(self, cfg: Config, data: PreparedData) -> str:
        return stable_hash({"item_tokens": ITEM_TOKENS.key(cfg, data), "model": cfg.le.model.key_dump(),
                            "train": cfg.le.train.key_dump(), "seed": cfg.le.seed})

    def status(self, run_dir: Path, cfg: Config, data: PreparedData) -> StageStatus:
        """``found`` is ``done.json`` when it exists; a current status's key is the LE's weights hash."""
        done_path, state_path = self.outputs(run_dir)
        done = json.loads(done_path.read_text()) if done_path.is_file() else None
        if done is not None and done.get("key") == self.key(cfg, data):
            return StageStatus(self.name, State.CURRENT, f"done ({done.get('users', '?')} users)",
                               key=done.get("weights", ""), found=done)
        if done is not None:
            return StageStatus(self.name, State.STALE, "made from other inputs: retrain", found=done)
        if state_path.is_file():  # train_le_model resumes it when its key matches, else starts over
            return StageStatus(self.name, State.PARTIAL, "interrupted: resumes if made from the same inputs")
        return StageStatus(self.name, State.TO_MAKE, "to train")


class Labelling:
    """``label/``: the labelling cache (:mod:`learec.env.label`), made from the LE's weights (hash)."""

    name = "labelling"

    def outputs(self, run_dir: Path) -> list[Path]:
        return [run_dir / "label"]

    def fingerprint(self, cfg: Config, data: PreparedData, le_weights: str) -> dict[str, Any]:
        """What the labels depend on; ``le_weights`` is the LE's weights hash (also kept in ``le/done.json``)."""
        label = cfg.le.label.model_dump()
        label["negatives"] = negatives(cfg)
        return {"lm": cfg.le.lm or "default", "le_weights": le_weights, "data": data.manifest["key"],
                "label": label, "window": cfg.le.model.window, "transitions": len(data.train)}

    def status(self, run_dir: Path, cfg: Config, data: PreparedData, le_weights: str | None) -> StageStatus:
        """With ``le_weights`` None (the LE is not trained), it waits. A current status's key is the cache's.
        :func:`~learec.env.label.label_transitions` decides by the same :func:`~learec.env.label.cache_problem`."""
        if le_weights is None:
            return StageStatus(self.name, State.WAITS, "after LE training")
        label_dir = self.outputs(run_dir)[0]
        problem = cache_problem(label_dir, self.fingerprint(cfg, data, le_weights))
        if problem is None:
            return StageStatus(self.name, State.CURRENT, "complete", key=load_label_cache(label_dir, verify=False).key)
        if problem == "incomplete":
            shards = len(list((label_dir / SHARDS).glob("*.npz"))) if (label_dir / SHARDS).is_dir() else 0
            return StageStatus(self.name, State.PARTIAL, f"incomplete: resumes after {shards} shard(s) of users")
        return StageStatus(self.name, State.TO_MAKE if problem == "missing" else State.STALE, f"{problem}: label")


class EvalStates:
    """``eval_states/``: the LE states of the validation and test events (:mod:`learec.env.eval_states`)."""

    name = "eval states"

    def outputs(self, run_dir: Path) -> list[Path]:
        return [run_dir / EVAL_STATES]

    def fingerprint(self, cfg: Config, data: PreparedData, le_weights: str) -> dict[str, Any]:
        return {"lm": cfg.le.lm or "default", "le_weights": le_weights, "data": data.manifest["key"],
                "window": cfg.le.model.window}

    def status(self, run_dir: Path, cfg: Config, data: PreparedData, le_weights: str | None) -> StageStatus:
        """As :meth:`Labelling.status`; :func:`~learec.env.eval_states.write_eval_states` decides alike."""
        if le_weights is None:
            return StageStatus(self.name, State.WAITS, "after LE training")
        problem = cache_problem(self.outputs(run_dir)[0], self.fingerprint(cfg, data, le_weights))
        if problem is None:
            return StageStatus(self.name, State.CURRENT, "complete")
        return StageStatus(self.name, State.TO_MAKE if problem == "missing" else State.STALE, f"{problem}: compute")


class Report:
    """``le_report.json`` (and ``.png``), stamped with the key of the labels and settings it rates."""

    name = "LE report"

    def outputs(self, run_dir: Path) -> list[Path]:
        return [run_dir / "le_report.json", run_dir / "le_report.png"]

    def key(self, cfg: Config, labels_key: str) -> str:
        """The labels and report settings an LE report is made from: a report stamped with another key is
        out of date (`learec pipeline` remakes it)."""
        return stable_hash({"labels": labels_key, "report": cfg.le.report.key_dump(),
                            "contents": LE_REPORT_CONTENTS})

    def status(self, run_dir: Path, cfg: Config, labels_key: str | None) -> StageStatus:
        """With ``labels_key`` None (the labels are not complete), it waits."""
        if labels_key is None:
            return StageStatus(self.name, State.WAITS, "after labelling")
        path = self.outputs(run_dir)[0]
        stored = None
        if path.is_file():
            try:
                stored = str(json.loads(path.read_text()).get("report_key") or "")  # unstamped: other labels
            except (OSError, ValueError):
                stored = ""
        return keyed_status(self.name, stored, self.key(cfg, labels_key),
                            stale="made from other labels or report settings: remake")


ITEM_TOKENS = ItemTokens()
LE_TRAINING = LETraining()
LABELLING = Labelling()
EVAL_STATES_STAGE = EvalStates()
REPORT = Report()


def le_status(cfg: Config, run_dir: Path, data: PreparedData, eval_states: bool = False,
              report: bool = True) -> list[StageStatus]:
    """Each LE stage's status for ``cfg``, in order, from the keys in ``run_dir``'s files: no LM is loaded
    and nothing is written. A later stage waits on an earlier one's key (the LE's weights, the labels')."""
    trained = LE_TRAINING.status(run_dir, cfg, data)
    weights = trained.key if trained.current else None
    statuses = [ITEM_TOKENS.status(run_dir, cfg, data), trained, LABELLING.status(run_dir, cfg, data, weights)]
    if eval_states:
        statuses.append(EVAL_STATES_STAGE.status(run_dir, cfg, data, weights))
    if report:
        statuses.append(REPORT.status(run_dir, cfg, statuses[2].key))
    return statuses
