"""The labelling cache: LE states, rewards, negatives and augmented actions for every training transition.

For transition ``i`` (user ``u``, action ``x_p`` after the history ``x_<p``):

- ``state[i]``: the LE state after ``x_<p`` (projected, fp16), optionally ``state_pca[i]`` (PCA-reduced);
- ``reward[i]``: the reward model's score of the logged action ``x_p``;
- ``neg_items[i]``/``neg_rewards[i]``: ``K`` uniform negatives (never ``x_p``) and their rewards;
- ``aug_items[i]``/``aug_rewards[i]``: augmented positive actions: the ``aug_candidates`` items most similar
  to the state, excluding the history and ``x_p``, re-scored by the reward model, best ``aug_k`` kept
  (``-1`` with reward 0 where fewer unseen items than that exist).

Arrays are ``.npy`` files (memory-mappable) plus ``manifest.json``, whose fingerprint names the LM, the
LE weights, the prepared data and the labelling settings. A cache whose fingerprint differs is stale and
is rebuilt; one whose checksums fail is corrupt and is rebuilt; neither is ever used silently.

Users are labelled in shards of ``users_per_shard``; each finished shard is saved at once as
``shards/NNNNNN.npz`` (its rows of every array), so a killed run redoes only the shards it had not saved.
When all are there they are joined into the arrays, and the manifest gets their checksums. Under
``torchrun`` rank ``r`` of ``W`` labels shards ``r, r + W, ...`` of those left, and rank 0 joins them: the
cache equals a single process's (the negatives depend on the user only, a shard's batches on the shard
only), and a killed run resumes with any number of ranks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learec.config import LELabelConfig
from learec.data.preprocess import Sequences
from learec.data.splits import Transitions
from learec.distributed import barrier, broadcast_object, is_main, rank, world_size
from learec.env.batches import pack_rows, segment_rows, uniform_negatives, user_items
from learec.env.model import LEModel, Segment, plan_segments
from learec.errors import UserError
from learec.utils import atomic_savez, atomic_write_json, error_summary, stable_hash

log = logging.getLogger("learec")

MANIFEST = "manifest.json"
SHARDS = "shards"  # finished shards of a cache being built


def label_arrays_spec(n: int, state_dim: int, k_neg: int, k_aug: int) -> dict[str, tuple[tuple[int, ...], str]]:
    return {
        "state": ((n, state_dim), "float16"),
        "reward": ((n,), "float32"),
        "neg_items": ((n, k_neg), "int32"),
        "neg_rewards": ((n, k_neg), "float32"),
        "aug_items": ((n, k_aug), "int32"),
        "aug_rewards": ((n, k_aug), "float32"),
    }


@dataclass
class LabelCache:
    """A complete, verified labelling cache (arrays memory-mapped read-only)."""

    path: Path
    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __len__(self) -> int:
        return int(self.manifest["transitions"])

    @property
    def key(self) -> str:
        """Identifies these labels (what made them and their content)."""
        return labels_key(self.manifest)


def labels_key(manifest: dict[str, Any]) -> str:
    """The key of the labels a complete cache's manifest describes (what made them and their content)."""
    return stable_hash({"fingerprint": manifest["fingerprint"], "checksums": manifest["checksums"]})


def manifest_labels_key(path: Path) -> str | None:
    """The key of the complete cache at ``path`` read from its manifest alone (no checksum pass: a cheap
    identity for matching runs; training verifies the arrays), or None if there is none."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
        return labels_key(manifest) if manifest.get("complete") else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_problem(path: Path, fingerprint: dict[str, Any] | None = None, verify: bool = True) -> str | None:
    """Why the cache at ``path`` cannot be used (missing, incomplete, stale, corrupt), or None if it can;
    without ``verify`` the arrays' checksums are not read (a cheap look at the manifest alone)."""
    mpath = path / MANIFEST
    if not mpath.is_file():
        return "missing"
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError):
        return "corrupt (unreadable manifest)"
    if fingerprint is not None and manifest.get("fingerprint") != fingerprint:
        return "stale (made by another LM, LE, data or labelling config)"
    if not manifest.get("complete"):
        return "incomplete"
    for name, digest in manifest.get("checksums", {}).items() if verify else ():
        file = path / f"{name}.npy"
        if not file.is_file() or _sha256(file) != digest:
            return f"corrupt ({name}.npy does not match its checksum)"
    return None


def remake_hint(path: Path, problem: str, command: str | None = None) -> str:
    """What makes the cache at ``path`` (``run_dir/label``) whole: ``command`` (default: the labelling of
    that run directory, with its control source if the manifest names one), after the LE where it is
    missing."""
    run_dir = path.parent
    if command is None:
        try:
            source = json.loads((path / MANIFEST).read_text())["fingerprint"].get("source")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            source = None
        command = f"learec env label {f'--source {source} ' if source else ''}--run-dir {run_dir}"
    if problem != "missing":
        return f"run `{command}` again: it rebuilds a stale or corrupt cache and resumes an incomplete one"
    if not (run_dir / "config.yaml").is_file():
        return (f"{run_dir} holds no LE run: train and label one there (`learec env train --config FILE --run-dir "
                f"{run_dir}`, then `learec env label --run-dir {run_dir}`), or name an LE run directory")
    if (run_dir / "le" / "done.json").is_file():
        return f"make it: `{command}`"
    return (f"the labels were never made: `learec env train --run-dir {run_dir}` (if its LE is not trained yet), "
            f"then `{command}`; the directory of a control source: `learec env label --source "
            f"oracle|popularity|teacher --run-dir {run_dir}`")


def load_label_cache(path: Path, fingerprint: dict[str, Any] | None = None, verify: bool = True,
                     command: str | None = None) -> LabelCache:
    """The verified cache at ``path``; a missing, incomplete, stale or corrupt one is an error, whose hint
    is ``command`` (see :func:`remake_hint`). ``verify`` False skips the checks (another process just made them)."""
    path = Path(path)
    problem = cache_problem(path, fingerprint) if verify else None
    if problem:
        raise UserError(f"The LE labelling cache {path} is {problem}", remake_hint(path, problem, command))
    manifest = json.loads((path / MANIFEST).read_text())
    arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in manifest["checksums"]}
    return LabelCache(path, manifest, arrays)


def user_blocks(train: Transitions) -> list[tuple[int, int, int]]:
    """``(user, first, last + 1)`` index ranges: a user's transitions are consecutive in the arrays."""
    users = np.asarray(train.user)
    if len(users) == 0:
        return []
    cuts = np.flatnonzero(np.diff(users) != 0) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(users)]])
    if len(np.unique(users[starts])) != len(starts):
        raise ValueError("transitions of a user must be consecutive")
    return [(int(users[s]), int(s), int(e)) for s, e in zip(starts, ends)]


def user_segments(user: int, positions: np.ndarray, window: int) -> list[tuple[Segment, np.ndarray]]:
    """The LM rows labelling reads for one user's sorted target ``positions``: each segment with the indices
    (into ``positions``) of the targets it labels."""
    return [(seg, np.flatnonzero((positions >= seg.first) & (positions < seg.end)))
            for seg in plan_segments(user, positions, window)]


def batches_by_length(jobs: list[tuple[Any, ...]], batch_rows: int) -> list[list[tuple[Any, ...]]]:
    """Labelling jobs (a :class:`Segment`, its target positions, ...) in batches of ``batch_rows``, shortest
    rows first: rows of similar length share a pass, so few slots are padding where sequences are short and
    uneven. A row's labels do not depend on the rows beside it (beyond float rounding). Items first, then
    targets: on Industrial & Scientific that left fewer padded slots than targets first (benchmarks/RESULTS.md)."""
    ordered = sorted(jobs, key=lambda job: (job[0].end - job[0].start, len(job[1])))
    return [ordered[i:i + batch_rows] for i in range(0, len(ordered), batch_rows)]


def _shard_file(out_dir: Path, shard: int) -> Path:
    return out_dir / SHARDS / f"{shard:06d}.npz"


def _shard_is_sound(out_dir: Path, shard: int, spec: dict[str, tuple[tuple[int, ...], str]],
                    rows: tuple[int, int]) -> bool:
    """Whether shard ``shard`` is saved whole; a truncated or foreign file is deleted (and so relabelled)."""
    path = _shard_file(out_dir, shard)
    if not path.is_file():
        return False
    try:
        with np.load(path) as part:
            sound = all(part[name].shape == (rows[1] - rows[0], *shape[1:]) for name, (shape, _) in spec.items())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        log.warning("LE labelling shard %s cannot be read (%s): labelling it again", path, error_summary(err))
        sound = False
    else:
        if not sound:
            log.warning("LE labelling shard %s does not fit this cache: labelling it again", path)
    if not sound:
        path.unlink()
    return sound


def _join_shards(out_dir: Path, spec: dict[str, tuple[tuple[int, ...], str]], rows: list[tuple[int, int]]) -> None:
    """Write the ``.npy`` arrays of the cache from the saved shards (``rows[s]``: shard ``s``'s rows)."""
    arrays = {name: np.lib.format.open_memmap(out_dir / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
              for name, (shape, dtype) in spec.items()}
    for shard, (lo, hi) in enumerate(rows):
        with np.load(_shard_file(out_dir, shard)) as part:
            for name, arr in arrays.items():
                arr[lo:hi] = part[name]
    for arr in arrays.values():
        arr.flush()


def augment_width(cfg: LELabelConfig, n_items: int) -> int:
    """Augmented actions stored per transition (slots without one hold item -1)."""
    return min(cfg.aug_k, cfg.aug_candidates, n_items) if cfg.aug_candidates else 0


@torch.no_grad()
def label_rows(model: LEModel, seqs: Sequences, segments: list[Segment], targets: list[np.ndarray],
                negatives: list[np.ndarray], cfg: LELabelConfig) -> list[dict[str, np.ndarray]]:
    """Labels for the targets (positions) of each segment: two packed passes over the same rows.

    Pass 1 appends the negatives and yields states and rewards; pass 2 appends the augmentation
    candidates, chosen from pass 1's states, and yields their rewards. A candidate sees its prefix and no
    position sees a candidate, so the negatives change no state and no augmented action: ``negatives`` may
    be ``[targets, 0]`` (the report's augmentation sample, :mod:`learec.env.aug_sample`).
    """
    n_items = seqs.n_items
    rows = segment_rows(seqs, segments)
    hists = [pos - seg.start for pos, seg in zip(targets, segments)]
    k_neg = negatives[0].shape[1]
    cand = [(neg.reshape(-1), np.repeat(h, k_neg)) for neg, h in zip(negatives, hists)]
    batch = pack_rows(rows, cand, pad=n_items)
    items, lengths, cand_items, cand_hist = batch.to_tensors(model.device)
    out = model(items, lengths, cand_items, cand_hist)
    state_hidden, item_hidden = model.state_hidden(out), model.item_hidden(out)
    keys = model.item_keys()
    results, aug_cands = [], []
    for b, (seg, h) in enumerate(zip(segments, hists)):
        ht = torch.as_tensor(h, device=model.device)
        states = model.states(state_hidden[b, ht])  # [n_t, d]
        rewards = model.rewards(item_hidden[b, ht])
        neg_rewards = model.rewards(out.cand_hidden[b, : len(h) * k_neg]).view(len(h), k_neg)
        res = {"state": states.cpu().numpy(), "reward": rewards.cpu().numpy(),
               "neg_rewards": neg_rewards.cpu().numpy()}
        if cfg.aug_k and cfg.aug_candidates:
            sims = model.scores(states, keys)  # [n_t, N]
            history = user_items(seqs, seg.user)
            for j, pos in enumerate(seg.start + h):
                sims[j, torch.as_tensor(history[: pos + 1], device=model.device)] = float("-inf")
            m = min(cfg.aug_candidates, n_items)
            top = sims.topk(m, dim=1)
            res["aug_pool"] = top.indices.cpu().numpy()
            # fewer unseen items than candidates (tiny catalogues): the -inf picks are not candidates
            res["aug_valid"] = torch.isfinite(top.values).cpu().numpy()
            aug_cands.append((res["aug_pool"].reshape(-1), np.repeat(h, m)))
        results.append(res)
    if aug_cands:
        batch = pack_rows(rows, aug_cands, pad=n_items)
        out = model(*batch.to_tensors(model.device))
        for b, res in enumerate(results):
            pool, valid = res.pop("aug_pool"), res.pop("aug_valid")
            scores = model.rewards(out.cand_hidden[b, : pool.size]).view(pool.shape).cpu().numpy()
            scores = np.where(valid, scores, -np.inf)
            best = np.argsort(-scores, axis=1, kind="stable")[:, : augment_width(cfg, n_items)]
            items, rewards = np.take_along_axis(pool, best, 1), np.take_along_axis(scores, best, 1)
            missing = ~np.isfinite(rewards)
            items[missing], rewards[missing] = -1, 0.0  # -1: no augmented action in this slot
            res["aug_items"], res["aug_rewards"] = items, rewards
    return results


def label_transitions(model: LEModel, seqs: Sequences, train: Transitions, cfg: LELabelConfig, k_neg: int,
                      window: int, out_dir: Path, fingerprint: dict[str, Any],
                      progress: Callable[..., Any] | None = None,
                      stop_after_shards: int | None = None) -> LabelCache | None:
    """Build (or resume, or reuse) the cache in ``out_dir``; returns it when complete (on every rank).

    ``stop_after_shards`` stops each rank after labelling that many shards (for tests of resumption) and
    returns None when shards are left.
    """
    out_dir = Path(out_dir)
    # rank 0 inspects and prepares the directory; every rank follows its decisions
    problem = broadcast_object(cache_problem(out_dir, fingerprint) if is_main() else None)
    if problem is None:
        log.info("LE labelling cache %s is complete and verified: reused", out_dir)
        return load_label_cache(out_dir, fingerprint, verify=is_main())

    n = len(train)
    k_aug = augment_width(cfg, seqs.n_items)
    spec = label_arrays_spec(n, model.cfg.state_dim, k_neg, k_aug)
    manifest = {"fingerprint": fingerprint, "transitions": n, "negatives": k_neg, "aug_k": k_aug,
                "state_dim": model.cfg.state_dim, "complete": False}
    blocks = user_blocks(train)
    shard_blocks = [blocks[s:s + cfg.users_per_shard] for s in range(0, len(blocks), cfg.users_per_shard)]
    shard_rows = [(b[0][1], b[-1][2]) for b in shard_blocks]  # a shard's transitions are consecutive rows
    todo = None
    if is_main():
        resumable = problem == "incomplete" and (out_dir / SHARDS).is_dir()
        if not resumable and out_dir.exists():
            if problem != "missing":
                log.warning("LE labelling cache %s is %s: rebuilding it", out_dir, problem)
            shutil.rmtree(out_dir)
        (out_dir / SHARDS).mkdir(parents=True, exist_ok=True)
        if not resumable:
            atomic_write_json(out_dir / MANIFEST, manifest)
        todo = [s for s in range(len(shard_blocks)) if not _shard_is_sound(out_dir, s, spec, shard_rows[s])]
        if len(todo) < len(shard_blocks):
            log.info("LE labelling resumes: %d of %d shards of users left", len(todo), len(shard_blocks))
    mine = broadcast_object(todo)[rank()::world_size()]

    positions = np.asarray(train.position)
    actions = np.asarray(train.action)
    bar = progress(mine, desc="LE labelling (shards of users)") if progress else mine
    for count, shard in enumerate(bar, 1):
        first, end = shard_rows[shard]
        arrays = {name: np.zeros((end - first, *shape[1:]), dtype=dtype) for name, (shape, dtype) in spec.items()}
        jobs = []  # (segment, target positions, rows in the shard, negatives)
        for user, lo, hi in shard_blocks[shard]:
            pos = positions[lo:hi]
            seq = user_items(seqs, user)
            if not np.array_equal(seq[pos], actions[lo:hi]):
                raise ValueError(f"transitions of user {user} do not match the sequences (stale prepared data?)")
            rng = np.random.default_rng([cfg.seed, user])  # per user: any shard order draws the same negatives
            negs = uniform_negatives(rng, actions[lo:hi].astype(np.int64), k_neg, seqs.n_items)
            for seg, sel in user_segments(user, pos, window):
                jobs.append((seg, pos[sel], lo - first + sel, negs[sel]))
        for chunk in batches_by_length(jobs, cfg.batch_rows):
            results = label_rows(model, seqs, [j[0] for j in chunk], [j[1] for j in chunk],
                                  [j[3] for j in chunk], cfg)
            for (seg, _, idx, negs), res in zip(chunk, results):
                arrays["state"][idx] = res["state"].astype(np.float16)
                arrays["reward"][idx] = res["reward"]
                arrays["neg_items"][idx] = negs
                arrays["neg_rewards"][idx] = res["neg_rewards"]
                if k_aug:
                    arrays["aug_items"][idx] = res["aug_items"]
                    arrays["aug_rewards"][idx] = res["aug_rewards"]
        atomic_savez(_shard_file(out_dir, shard), **arrays)
        if stop_after_shards is not None and count >= stop_after_shards:
            break

    barrier()  # every rank's shards are saved
    missing = broadcast_object([s for s in range(len(shard_blocks)) if not _shard_file(out_dir, s).is_file()]
                               if is_main() else None)
    if missing:
        if stop_after_shards is None:
            raise RuntimeError(f"LE labelling shards {missing[:5]} of {out_dir} are missing")
        return None
    if is_main():
        _join_shards(out_dir, spec, shard_rows)
        if cfg.pca_dim:
            _write_pca(out_dir, cfg.pca_dim)
        seal_cache(out_dir, manifest, [*spec, *(["state_pca"] if cfg.pca_dim else [])])
        shutil.rmtree(out_dir / SHARDS)
        log.info("LE labelling: %d transitions labelled in %s", n, out_dir)  # le.log's timestamp ends the stage
    barrier()  # the cache is sealed
    return load_label_cache(out_dir, fingerprint, verify=is_main())


def seal_cache(out_dir: Path, manifest: dict[str, Any], names: list[str]) -> None:
    """Record the arrays' checksums and mark the cache complete (the manifest is written last)."""
    manifest["checksums"] = {name: _sha256(out_dir / f"{name}.npy") for name in names}
    manifest["complete"] = True
    atomic_write_json(out_dir / MANIFEST, manifest)


def write_label_cache(out_dir: Path, arrays: dict[str, np.ndarray], fingerprint: dict[str, Any]) -> LabelCache:
    """A complete cache from ready arrays (same names and layout as :func:`label_transitions` writes):
    for importing labels computed elsewhere, and for tests of the RL side."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n, k_neg = arrays["neg_items"].shape
    spec = label_arrays_spec(n, arrays["state"].shape[1], k_neg, arrays["aug_items"].shape[1])
    for name, (shape, dtype) in spec.items():
        if arrays[name].shape != shape:
            raise ValueError(f"{name}: shape {arrays[name].shape}, expected {shape}")
        np.save(out_dir / f"{name}.npy", arrays[name].astype(dtype))
    manifest = {"fingerprint": fingerprint, "transitions": n, "negatives": k_neg, "aug_k": spec["aug_items"][0][1],
                "state_dim": spec["state"][0][1], "complete": False}
    seal_cache(out_dir, manifest, list(spec))
    return load_label_cache(out_dir, fingerprint)


def _write_pca(out_dir: Path, dim: int, sample: int = 50_000) -> None:
    """States reduced to ``dim`` principal components (fit on up to ``sample`` rows), as fp16."""
    states = np.load(out_dir / "state.npy", mmap_mode="r")
    dim = min(dim, states.shape[1])
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(states), size=min(sample, len(states)), replace=False))
    fit = np.asarray(states[rows], dtype=np.float64)
    mean = fit.mean(0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    components = vt[:dim]
    reduced = np.lib.format.open_memmap(out_dir / "state_pca.npy", mode="w+", dtype="float16",
                                        shape=(len(states), dim))
    for start in range(0, len(states), 65536):
        block = np.asarray(states[start:start + 65536], dtype=np.float64)
        reduced[start:start + 65536] = ((block - mean) @ components.T).astype(np.float16)
    reduced.flush()
    np.savez(out_dir / "pca.npz", mean=mean, components=components)
