"""The reader of the LE labelling cache for the RL trainers (+SM, +RM, +LEA): one ``LEBatch`` per batch.

The cache rows line up with the training transitions (same prepared data, checked by its key). Arrays
stay memory-mapped; each batch gathers its rows. LE rewards are standardised with the mean and standard
deviation of the logged-action rewards, so ``z = 0`` means "as rewarding as an average logged action",
and the RL reward becomes ``base + reward_scale * z``. Constant LE rewards therefore give ``z = 0`` and
reproduce the base trainer exactly (with the same negatives).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from learec.config import LEAConfig
from learec.data.prepared import PreparedData
from learec.env.label import LabelCache, cache_problem, load_label_cache
from learec.errors import UserError
from learec.lea.batch import LEBatch
from learec.lea.data_match import data_mismatch


class LEInputs:
    """The LE inputs of the transitions of ``data`` (only those the config uses), batch by batch; the label
    cache of ``cfg.cache``, checked against the data and ``cfg.cache_key``."""

    def __init__(self, cfg: LEAConfig, data: PreparedData, negatives: int | None = None) -> None:
        path = Path(cfg.cache or "") / "label"
        cache = load_label_cache(path)
        made_from = cache.manifest["fingerprint"].get("data")
        if made_from != data.manifest["key"] or len(cache) != len(data.train):
            raise data_mismatch(path, data, str(made_from), len(cache))  # names the settings that differ
        check_source(cfg, cache)
        if cfg.cache_key and cache.key != cfg.cache_key:
            raise UserError(f"The LE cache {path} has changed since this run was configured (key {cache.key}, "
                            f"expected {cfg.cache_key})", "rerun the pipeline: it redoes runs made with an old cache")
        self.cfg = cfg
        self.cache = cache
        pool = cache["neg_items"].shape[1]
        if cfg.use_cached_negatives and negatives is not None and pool < negatives:
            raise UserError(f"The LE cache {path} has {pool} negatives per transition, the run asks for "
                            f"rl.negatives={negatives} (lea.reward or lea.cached_negatives reads them)",
                            "label with le.label.negatives >= rl.negatives, or train without +RM")
        # a larger labelled pool: each step draws rl.negatives of a transition's pool afresh, so the
        # negatives keep changing across epochs as SNQN's uniform ones do
        self.k_neg = negatives if negatives is not None else pool
        if cfg.state and cfg.state_source not in cache.arrays:
            raise UserError(f"lea.state_source={cfg.state_source} but the LE cache {path} has no such array",
                            "label with le.label.pca_dim > 0, or use lea.state_source=state")
        self.state_dim = int(cache[cfg.state_source].shape[1]) if cfg.state else 0
        # lea.standardise_states: per-dimension mean/std over the training rows (raw LE states ride on a large
        # constant offset); identity otherwise
        self.state_mean, self.state_std = (state_moments(cache[cfg.state_source])
                                           if cfg.state and cfg.standardise_states else (None, None))
        rewards = np.asarray(cache["reward"], dtype=np.float64)
        self.mean = float(rewards.mean())
        std = float(rewards.std())
        self.std = std if std > 1e-12 else float("inf")  # constant LE rewards: z = 0 everywhere
        self.n = len(cache)
        self.done = np.asarray(data.train.done)
        k_aug = cache["aug_items"].shape[1]
        self.k_aug = k_aug if cfg.augment_k is None else min(cfg.augment_k, k_aug)
        if cfg.augment and k_aug == 0 and cfg.augment_k != 0:
            raise UserError(f"lea.augment is on but the LE cache {path} has no augmented actions",
                            "label with le.label.aug_k > 0, or turn lea.augment off")
        # lea.augment_k = 0 uses none: the k = 0 point of an ablation over k (+SM+RM when those are on)
        self._eval_states: LabelCache | None = None

    def eval_features(self, split: str) -> dict[str, np.ndarray]:
        """``{"le": states}`` of the ``split`` events, for a CE head that reads LE states (lea.state_to_actor),
        from the LE run's ``eval_states/``, which must come from the same LE and data as the labels."""
        from learec.env.eval_states import EVAL_STATES

        if self._eval_states is not None:  # checked once, then read at every validation
            return {"le": self._standardised(self._eval_states[split])}
        path = Path(self.cfg.cache or "") / EVAL_STATES
        how = f"run `learec env label --run-dir {self.cfg.cache} --eval-states`"
        problem = cache_problem(path)
        if problem is not None:
            raise UserError(f"lea.state_to_actor ranks with the LE state of each evaluation event, and the LE states "
                            f"of the evaluation events in {path} are {problem}", how)
        states = load_label_cache(path, verify=False)
        made_by, labels_by = states.manifest["fingerprint"], self.cache.manifest["fingerprint"]
        if any(made_by.get(k) != labels_by.get(k) for k in ("le_weights", "data", "window", "lm")):
            raise UserError(f"The LE states of the evaluation events in {path} were made by another LE or for other "
                            "data than the labels this run trains on", how)
        self._eval_states = states
        return {"le": self._standardised(states[split])}

    def _standardised(self, states: np.ndarray) -> np.ndarray:
        if self.state_mean is None:
            return states
        return ((np.asarray(states, dtype=np.float64) - self.state_mean) / self.state_std).astype(np.float32)

    def _z(self, values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((np.asarray(values, dtype=np.float64) - self.mean) / self.std).astype(np.float32))

    def batch(self, idx: np.ndarray, device: str | torch.device) -> LEBatch:
        """The LE inputs of the training transitions ``idx`` (sorted), on ``device``.

        With a labelled negative pool larger than ``rl.negatives``, the draw from it uses the torch RNG
        (checkpointed with the run)."""
        cfg, cache = self.cfg, self.cache
        out: dict[str, torch.Tensor] = {}
        if cfg.state:
            states = cache[cfg.state_source]
            out["state"] = torch.from_numpy(np.asarray(self._standardised(states[idx]), dtype=np.float32))
            nxt = np.minimum(idx + 1, self.n - 1)  # s' of a transition is the state of the user's next one
            next_state = np.asarray(self._standardised(states[nxt]), dtype=np.float32)
            next_state[self.done[idx]] = 0.0  # episode over: never bootstrapped, but keep it clean
            out["next_state"] = torch.from_numpy(next_state)
        if cfg.reward or (cfg.augment and self.k_aug and cfg.augment_reward == "bounded"):  # bounded: vs z_logged
            out["reward_z"] = self._z(cache["reward"][idx])
        if cfg.use_cached_negatives:
            neg_items = np.asarray(cache["neg_items"][idx], dtype=np.int64)
            neg_rewards = np.asarray(cache["neg_rewards"][idx]) if cfg.reward else None
            if neg_items.shape[1] > self.k_neg:  # draw rl.negatives of the pool afresh
                cols = torch.rand(len(idx), neg_items.shape[1]).argsort(dim=1)[:, : self.k_neg].numpy()
                neg_items = np.take_along_axis(neg_items, cols, 1)
                neg_rewards = np.take_along_axis(neg_rewards, cols, 1) if neg_rewards is not None else None
            out["neg_items"] = torch.from_numpy(neg_items)
            if neg_rewards is not None:
                out["neg_reward_z"] = self._z(neg_rewards)
        if cfg.augment and self.k_aug:
            aug = np.asarray(cache["aug_items"][idx, : self.k_aug], dtype=np.int64)
            out["aug_mask"] = torch.from_numpy((aug >= 0).astype(np.float32))  # -1: no action in the slot
            out["aug_items"] = torch.from_numpy(np.maximum(aug, 0))
            out["aug_reward_z"] = self._z(cache["aug_rewards"][idx, : self.k_aug])
        return LEBatch(**out).to(device)


def check_source(cfg: LEAConfig, cache: LabelCache) -> None:
    """With ``lea.source`` other than ``le``, the cache's labels must come from that source (a control cache's
    fingerprint names its source; an LE cache's names none). ``le`` takes any cache, as before the setting."""
    made_by = cache.manifest["fingerprint"].get("source")
    if cfg.source == "le" or made_by == cfg.source:
        return
    found = f"the {made_by} source's" if made_by else "the LE's (its fingerprint names no control source)"
    raise UserError(f"lea.source={cfg.source}, but the labels in {cache.path} are {found}",
                    f"point lea.cache at a directory labelled by `learec env label --source {cfg.source}`, or set "
                    f"lea.source={made_by or 'le'}")


def state_moments(states: np.ndarray, chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std (float64) of ``states`` ``[n, d]``, read in row chunks (a memory-mapped cache
    need not fit in memory); a constant dimension gets std 1, so it standardises to 0."""
    blocks = [slice(lo, lo + chunk) for lo in range(0, len(states), chunk)]
    # two passes (mean, then squared deviations): no cancellation for dimensions with a large offset
    mean = sum(np.asarray(states[b], dtype=np.float64).sum(axis=0) for b in blocks) / len(states)
    var = sum(((np.asarray(states[b], dtype=np.float64) - mean) ** 2).sum(axis=0) for b in blocks) / len(states)
    std = np.sqrt(var)
    return mean, np.where(std > 1e-12, std, 1.0)
