"""The objective of a config with the LE parts its ``lea:`` section asks for.

learec.rl builds the published method; this adds, through the hooks it offers (learec.rl.registry's
``rewards``, ``make_network`` and ``extra_terms``): +SM's LE state at the Q-head (and the alignment
projection), +RM's reward source, and +LEA's terms for augmented actions.
"""

from __future__ import annotations

import torch

from learec.config import Config
from learec.lea.rewards import AugmentedRewards, LERewards
from learec.lea.terms import LEATerms
from learec.models.qnetwork import QNetwork
from learec.models.ranking import ranking_network
from learec.rl.base import Objective
from learec.rl.build import build_objective as build_rl_objective
from learec.rl.rewards import EventTypeRewards
from learec.rl.registry import NEGATIVES, has_trait


def build_objective(cfg: Config, n_items: int, item_counts: torch.Tensor, event_types: list[str] | None = None,
                    le_state_dim: int = 0, batches_per_epoch: int | None = None) -> Objective:
    """``cfg``'s objective; with ``cfg.lea`` on, with its LE parts (``le_state_dim``: width of the LE
    states for +SM, 0 without them). ``batches_per_epoch``: as for :func:`learec.rl.build.build_objective`."""
    lea = cfg.lea
    if not lea.enabled:
        return build_rl_objective(cfg, n_items, item_counts, event_types, batches_per_epoch=batches_per_epoch)
    rl = cfg.rl
    base = EventTypeRewards(event_types or ["interaction"], rl.rewards, rl.default_reward)
    le_rewards = LERewards(base, lea.reward_scale)

    def make_network() -> QNetwork:  # with +SM, the LE state at the Q-head (and the alignment projection)
        return ranking_network(cfg, n_items, le_state_dim=le_state_dim, critic=True)

    logged_rewards = le_rewards if lea.reward else base
    # lea.augment_reward ties the augmented actions' rewards to the logged action's as trained on
    augmented = AugmentedRewards(le_rewards, logged_rewards, lea.augment_reward)
    terms = LEATerms(le_rewards, augment_weight=lea.augment_weight if lea.augment else 0.0, augment_q=lea.augment_q,
                     augment_weighting=lea.augment_weighting, align_weight=lea.align_weight,
                     augmented_rewards=augmented, augment_next_state=lea.augment_next_state,
                     augment_confidence=lea.augment_confidence, pad=n_items)
    return build_rl_objective(cfg, n_items, item_counts, event_types, rewards=logged_rewards,
                              make_network=make_network, extra_terms=terms, batches_per_epoch=batches_per_epoch)


def negatives_per_step(cfg: Config) -> int | None:
    """How many of a transition's labelled negatives a step uses: ``rl.negatives`` for an objective that
    samples negatives, ``None`` (all of them; unused) for one that does not."""
    return cfg.rl.negatives if has_trait(cfg.objective, NEGATIVES) else None
