"""LE states of the evaluation events, for +SM with the LE state fed to the actor (``lea.state_to_actor``).

A recommender whose CE head reads the LE state needs that state at every prediction point it is evaluated
on, as training needs it at every transition. ``eval_states/`` in the LE run directory holds
``val.npy`` and ``test.npy`` (fp16, one row per event, in the evaluation set's order) and a manifest with
a fingerprint (LM, LE weights, prepared data, window) and checksums, like the labelling cache: a stale or
corrupt one is rebuilt, never used. The states are computed exactly as the labelling computes a
transition's state (same segments of history, same model), without negatives or augmentation.
Made on demand: `learec env label --eval-states`, or by the pipeline when a run sets lea.state_to_actor.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learec.data.preprocess import Sequences
from learec.data.splits import EvalSet
from learec.env.batches import pack_rows, segment_rows
from learec.env.label import LabelCache, cache_problem, load_label_cache, seal_cache
from learec.env.model import LEModel, Segment, plan_segments
from learec.utils import atomic_save_npy, atomic_write_json

log = logging.getLogger("learec")

EVAL_STATES = "eval_states"  # directory in the LE run
SPLITS = ("val", "test")


def _jobs(data: EvalSet, window: int) -> list[tuple[Segment, np.ndarray, np.ndarray]]:
    """(segment, target positions, rows of ``data``) covering every event, user by user."""
    users, positions = np.asarray(data.user), np.asarray(data.position)
    order = np.lexsort((positions, users))  # by user, then position
    jobs = []
    for block in np.split(order, np.flatnonzero(np.diff(users[order])) + 1):
        if len(block) == 0:
            continue
        pos = positions[block]
        for seg in plan_segments(int(users[block[0]]), pos, window):
            sel = (pos >= seg.first) & (pos < seg.end)
            jobs.append((seg, pos[sel], block[sel]))
    return jobs


@torch.no_grad()
def eval_set_states(model: LEModel, seqs: Sequences, data: EvalSet, window: int, batch_rows: int,
                    progress: Callable[..., Any] | None = None, desc: str = "LE states") -> np.ndarray:
    """``[len(data), state_dim]`` fp16: the LE state after each event's history."""
    at = np.asarray(seqs.items)[np.asarray(seqs.offsets)[np.asarray(data.user)] + np.asarray(data.position)]
    if not np.array_equal(at, np.asarray(data.target)):
        raise ValueError("the evaluation events do not match the sequences (stale prepared data?)")
    out = np.zeros((len(data), model.cfg.state_dim), dtype=np.float16)
    jobs = _jobs(data, window)
    no_candidates = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    starts = range(0, len(jobs), batch_rows)
    for start in progress(starts, desc=desc) if progress else starts:
        chunk = jobs[start:start + batch_rows]
        segments = [seg for seg, _, _ in chunk]
        batch = pack_rows(segment_rows(seqs, segments), [no_candidates] * len(chunk), pad=seqs.n_items)
        hidden = model.state_hidden(model(*batch.to_tensors(model.device)))
        for b, (seg, pos, rows) in enumerate(chunk):
            states = model.states(hidden[b, torch.as_tensor(pos - seg.start, device=model.device)])
            out[rows] = states.float().cpu().numpy().astype(np.float16)
    return out


def write_eval_states(model: LEModel, seqs: Sequences, splits: dict[str, EvalSet], window: int, batch_rows: int,
                      out_dir: Path, fingerprint: dict[str, Any], progress: Callable[..., Any] | None = None
                      ) -> LabelCache:
    """Build (or reuse, when complete and current) ``out_dir``; returns it."""
    out_dir = Path(out_dir)
    command = f"learec env label --run-dir {out_dir.parent} --eval-states"  # what remakes them
    problem = cache_problem(out_dir, fingerprint)
    if problem is None:
        log.info("LE states of the evaluation events in %s are complete and verified: reused", out_dir)
        return load_label_cache(out_dir, fingerprint, command=command)
    if out_dir.exists():
        if problem != "missing":
            log.warning("LE states of the evaluation events in %s are %s: rebuilding them", out_dir, problem)
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    manifest = {"fingerprint": fingerprint, "events": {name: len(data) for name, data in splits.items()},
                "state_dim": model.cfg.state_dim, "complete": False}
    atomic_write_json(out_dir / "manifest.json", manifest)
    for name, data in splits.items():
        states = eval_set_states(model, seqs, data, window, batch_rows, progress, desc=f"LE states ({name})")
        atomic_save_npy(out_dir / f"{name}.npy", states)
    seal_cache(out_dir, manifest, list(splits))
    return load_label_cache(out_dir, fingerprint, command=command)
