"""LE quality on held-out validation users: the state model as a recommender, the reward model's accuracy.

- ``state_ndcg@10`` / ``state_hr@10``: full ranking of all items by ``cos(LE state, item key)`` (plus the
  item's learned bias with ``le.model.item_bias``; then ``item_bias_pop_spearman`` says how far that bias
  follows the training counts) at every validation prediction point, beside popularity (``pop_*``) on the same points;
- ``reward_pairwise_acc``: how often the logged next item gets a higher reward than a random item the
  user never interacted with (0.5 = chance), with both reward distributions (plotted);
- ``augmentation``: from the labelling cache, how often an augmented action of a training transition is
  an item the user interacts with later (after the logged action), beside the same rate for the most
  popular items outside the history: the LE's proposals against the cheapest guess;
- collapse diagnostics: ``key_mean_cosine`` (mean pairwise cosine of the item keys, over a fixed sample
  of items), ``key_mean_norm`` / ``key_specific_norm`` (norm of the mean key against the mean norm of each
  key minus it), ``state_mean_cosine`` (one LE state per validation user, at its last point),
  ``state_ndcg@10_le_users`` / ``_other_users`` (validation users inside / outside the LE's training subset; None when there are none),
  and per k the distinct augmented items and the share of the 10 most proposed (``augmentation_diversity``);
- ``augmentation_sample`` (``le.report.aug_users``): both augmentation figures over the transitions of a
  sample of training users, without the labelling cache (:mod:`learec.env.aug_sample`). Its ``distinct@k``
  is a lower bound of the count over every transition: fewer transitions can only show fewer distinct items.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learec.data.popular import popular_unseen
from learec.data.preprocess import Sequences
from learec.data.splits import EvalSet, Transitions
from learec.env.batches import pack_rows, segment_rows, unseen_items, user_items
from learec.env.model import LEModel, plan_segments
from learec.evaluate.metrics import hit_and_ndcg, target_ranks


def mean_pairwise_cosine(vectors: torch.Tensor | np.ndarray) -> float:
    """Mean cosine over all pairs of distinct rows (1: all collinear, 0: orthogonal on average)."""
    x = torch.nn.functional.normalize(torch.as_tensor(vectors, dtype=torch.float64), dim=-1)
    n = len(x)
    if n < 2:
        return float("nan")
    gram = x @ x.T
    return float((gram.sum() - gram.diagonal().sum()) / (n * (n - 1)))


def key_spread(keys: torch.Tensor | np.ndarray, sample: int = 1000, seed: int = 0) -> dict[str, float]:
    """How far the item keys are from one shared direction: their mean pairwise cosine over a fixed sample
    of ``sample`` items, the norm of the mean key and the mean norm of the item-specific part (key - mean)."""
    k = torch.as_tensor(keys, dtype=torch.float64)
    rng = np.random.default_rng([seed, 31])
    rows = np.sort(rng.choice(len(k), size=min(sample, len(k)), replace=False))
    mean = k.mean(0)
    return {"key_mean_cosine": mean_pairwise_cosine(k[torch.as_tensor(rows)]),
            "key_mean_norm": float(mean.norm()), "key_specific_norm": float((k - mean).norm(dim=-1).mean())}


def augmentation_diversity(aug_items: np.ndarray, ks: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Over the first k augmented actions of every transition (-1 = empty slot, not counted): how many
    distinct items are proposed (``distinct@k``) and the share of proposals that go to the 10 most
    proposed items (``top10_share@k``; None without proposals). Default ks: 1 .. the cache's width."""
    aug_items = np.asarray(aug_items)
    ks = tuple(range(1, aug_items.shape[1] + 1)) if ks is None else tuple(k for k in ks if k <= aug_items.shape[1])
    out: dict[str, Any] = {}
    for k in ks:
        slots = aug_items[:, :k].reshape(-1)
        counts = np.unique(slots[slots >= 0], return_counts=True)[1]
        out[f"distinct@{k}"] = int(len(counts))
        out[f"top10_share@{k}"] = float(np.sort(counts)[::-1][:10].sum() / counts.sum()) if len(counts) else None
    return out


def ndcg_split(ranks: np.ndarray, inside: np.ndarray, k: int = 10) -> dict[str, float | None]:
    """NDCG@k of the points of users inside / outside the LE's training subset (None: no such points)."""
    out: dict[str, float | None] = {}
    for name, mask in (("le_users", inside), ("other_users", ~inside)):
        out[f"state_ndcg@{k}_{name}"] = float(hit_and_ndcg(ranks[mask], k)[1].mean()) if mask.any() else None
    return out


@torch.no_grad()
def le_quality(model: LEModel, seqs: Sequences, val: EvalSet | Transitions, item_counts: np.ndarray, n_users: int,
               window: int, batch_rows: int = 4, seed: int = 0, ks: tuple[int, ...] = (10,),
               progress: Callable[..., Any] | None = None, le_users: np.ndarray | None = None,
               exclude_users: np.ndarray | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metrics (a JSON-able dict) and the raw reward arrays of up to ``n_users`` validation users (or users of
    any points with ``user``/``position``: the training transitions of users the LE never saw), drawn
    from those not in ``exclude_users``; ``le_users`` (the LE's training subset) splits the state NDCG@10
    by membership."""
    rng = np.random.default_rng([seed, 29])
    users_all = np.unique(np.asarray(val.user))
    if exclude_users is not None:
        users_all = np.setdiff1d(users_all, exclude_users)
    if n_users > len(users_all):
        logging.getLogger("learec").warning(
            "le.report.val_users=%d: only %d validation users%s, the report rates those", n_users,
            len(users_all), " outside the LE's selection users" if exclude_users is not None else "")
    users = np.sort(rng.choice(users_all, size=min(n_users, len(users_all)), replace=False))
    vuser, vpos = np.asarray(val.user), np.asarray(val.position)
    jobs = []
    for u in users:
        pos = np.sort(vpos[vuser == u])
        jobs += [(seg, pos[(pos >= seg.first) & (pos < seg.end)]) for seg in plan_segments(int(u), pos, window)]
    keys = model.item_keys()
    pop = torch.as_tensor(np.asarray(item_counts), dtype=torch.float32, device=model.device)
    state_ranks, pop_ranks, r_pos, r_neg, point_user = [], [], [], [], []
    # one state per user, at its last point (the most history): the first point of a user whose every event
    # is a validation point (sqn) has an empty history, so every user's state there is the same
    last_states: dict[int, torch.Tensor] = {}
    starts = range(0, len(jobs), batch_rows)
    for start in progress(starts, desc="LE report") if progress else starts:
        chunk = jobs[start:start + batch_rows]
        segments = [seg for seg, _ in chunk]
        rows = segment_rows(seqs, segments)
        hists = [pos - seg.start for seg, pos in chunk]
        negs = [unseen_items(rng, user_items(seqs, seg.user), len(h), seqs.n_items) for seg, h in zip(segments, hists)]
        batch = pack_rows(rows, list(zip(negs, hists)), pad=seqs.n_items)
        out = model(*batch.to_tensors(model.device))
        state_hidden, item_hidden = model.state_hidden(out), model.item_hidden(out)
        for b, (seg, pos) in enumerate(chunk):
            h = torch.as_tensor(hists[b], device=model.device)
            targets = torch.as_tensor(user_items(seqs, seg.user)[pos], device=model.device)
            states = model.states(state_hidden[b, h])
            scores = model.scores(states, keys)
            if len(pos):  # segments come in order: the last one written is the user's last point
                last_states[seg.user] = states[-1].cpu()
            point_user.append(np.full(len(pos), seg.user))
            state_ranks.append(target_ranks(scores, targets).cpu().numpy())
            pop_ranks.append(target_ranks(pop[None].expand(len(targets), -1), targets).cpu().numpy())
            r_pos.append(model.rewards(item_hidden[b, h]).cpu().numpy())
            r_neg.append(model.rewards(out.cand_hidden[b, : len(pos)]).cpu().numpy())
    s_ranks, p_ranks = np.concatenate(state_ranks), np.concatenate(pop_ranks)
    pos_r, neg_r = np.concatenate(r_pos), np.concatenate(r_neg)
    metrics: dict[str, Any] = {"val_users": int(len(users)), "points": int(len(s_ranks))}
    for k in ks:
        for name, ranks in (("state", s_ranks), ("pop", p_ranks)):
            hit, ndcg = hit_and_ndcg(ranks, k)
            metrics[f"{name}_hr@{k}"] = float(hit.mean())
            metrics[f"{name}_ndcg@{k}"] = float(ndcg.mean())
    inside = np.isin(np.concatenate(point_user), np.asarray([] if le_users is None else le_users, dtype=np.int64))
    metrics.update(ndcg_split(s_ranks, inside))
    metrics.update(key_spread(keys, seed=seed))
    if hasattr(model, "item_bias"):  # how much of the learned item bias is popularity
        from scipy.stats import spearmanr

        bias = model.item_bias.detach().float().cpu().numpy()
        metrics["item_bias_pop_spearman"] = float(spearmanr(bias, np.asarray(item_counts)).statistic)
        metrics["item_bias_std"] = float(bias.std())
    metrics["state_mean_cosine"] = mean_pairwise_cosine(torch.stack(list(last_states.values())))
    metrics["reward_pairwise_acc"] = float((pos_r > neg_r).mean())
    metrics["reward_positive"] = {"mean": float(pos_r.mean()), "std": float(pos_r.std())}
    metrics["reward_negative"] = {"mean": float(neg_r.mean()), "std": float(neg_r.std())}
    return metrics, {"reward_positive": pos_r, "reward_negative": neg_r}


def token_shift(before: torch.Tensor, after: torch.Tensor) -> dict[str, float]:
    """How far tuning moved the item tokens: the mean over items of ``|after - before| / |before|``, and the
    share of items that moved at all (an item no trained user has does not)."""
    before, after = before.detach().float().cpu(), after.detach().float().cpu()
    change = (after - before).norm(dim=-1)
    return {"mean_relative_change": float((change / before.norm(dim=-1).clamp(min=1e-12)).mean()),
            "moved_share": float((change > 0).float().mean())}


def popularity_ndcg(seqs: Sequences, val: EvalSet | Transitions, item_counts: np.ndarray, users: np.ndarray,
                    k: int = 10) -> float | None:
    """NDCG@k of ranking every item by popularity at all validation points of ``users`` (None: no points):
    what :func:`le_quality` reports as ``pop_ndcg@k`` for them, without the LE."""
    vuser, vpos = np.asarray(val.user), np.asarray(val.position)
    keep = np.isin(vuser, users)
    targets = torch.as_tensor([int(user_items(seqs, int(u))[p]) for u, p in zip(vuser[keep], vpos[keep])],
                              dtype=torch.long)
    if not len(targets):
        return None
    pop = torch.as_tensor(np.asarray(item_counts), dtype=torch.float32)
    return float(hit_and_ndcg(target_ranks(pop[None].expand(len(targets), -1), targets).numpy(), k)[1].mean())


def augmentation_quality(seqs: Sequences, train: Transitions, aug_items: np.ndarray, item_counts: np.ndarray,
                         ks: tuple[int, ...] = (1, 3, 5)) -> dict[str, Any]:
    """For the first k augmented actions of each training transition: the share that the user interacts
    with later in the log (``aug_future@k``), and that share for the k most popular items outside the
    history and the logged action (``pop_future@k``), over the same transitions. Empty slots (-1) count
    as misses; a k wider than the cache is left out."""
    ks = tuple(k for k in ks if k <= aug_items.shape[1])
    if not ks:
        return {}
    width = max(ks)
    aug_hits = np.zeros((len(train), width))
    pop_hits = np.zeros((len(train), width))
    user, position = np.asarray(train.user), np.asarray(train.position)
    popular = popular_unseen(seqs, user, position, item_counts, width)
    for u in np.unique(user):
        rows = np.flatnonzero(user == u)
        seq = user_items(seqs, int(u))
        last = np.full(seqs.n_items + 1, -1)  # last position of each item in u's sequence; -1: never
        last[seq] = np.arange(len(seq))  # later positions overwrite earlier ones
        pos = position[rows]
        for hits, picks in ((aug_hits, aug_items[rows, :width]), (pop_hits, popular[rows])):
            hits[rows] = last[np.where(picks < 0, seqs.n_items, picks)] > pos[:, None]  # -1: a miss
    result: dict[str, Any] = {"transitions": int(len(train))}
    for k in ks:
        result[f"aug_future@{k}"] = float(aug_hits[:, :k].mean())
        result[f"pop_future@{k}"] = float(pop_hits[:, :k].mean())
    return result


def plot_quality(metrics: dict[str, Any], rewards: dict[str, np.ndarray], path: Path,
                 sample: dict[str, Any] | None = None) -> None:
    """Two panels: NDCG@10 of the LE state vs popularity; reward distributions of positives and negatives.
    With ``sample`` (the report's ``augmentation_sample``) a third: its aug_future@k beside pop_future@k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quality = (sample or {}).get("quality") or {}
    ks = [key.split("@")[1] for key in quality if key.startswith("aug_future@")]
    fig, axes = plt.subplots(1, 3 if ks else 2, figsize=(15 if ks else 10, 3.8))
    left, right = axes[0], axes[1]
    names = ["popularity", "LE state"]
    values = [metrics["pop_ndcg@10"], metrics["state_ndcg@10"]]
    left.bar(names, values, color=["#999999", "#1f77b4"])
    for x, v in enumerate(values):
        left.text(x, v, f"{v:.4f}", ha="center", va="bottom")
    left.set_ylabel("NDCG@10 (validation users, full ranking)")
    left.set_title(f"{metrics['points']} prediction points, {metrics['val_users']} users")
    bins = np.histogram_bin_edges(np.concatenate([rewards["reward_positive"], rewards["reward_negative"]]), 40)
    right.hist(rewards["reward_negative"], bins=bins, alpha=0.6, label="random unseen item")
    right.hist(rewards["reward_positive"], bins=bins, alpha=0.6, label="logged next item")
    right.set_xlabel("LE reward")
    right.set_title(f"pairwise accuracy {metrics['reward_pairwise_acc']:.3f}")
    right.legend()
    if ks:
        x = np.arange(len(ks))
        axes[2].bar(x - 0.2, [quality[f"pop_future@{k}"] for k in ks], 0.4, color="#999999", label="popular unseen")
        axes[2].bar(x + 0.2, [quality[f"aug_future@{k}"] for k in ks], 0.4, color="#1f77b4", label="LE augmented")
        axes[2].set_xticks(x, [f"k={k}" for k in ks])
        axes[2].set_ylabel("share the user interacts with later")
        axes[2].set_title(f"augmentation sample: {sample['transitions']} transitions, {sample['users']} users")
        axes[2].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
