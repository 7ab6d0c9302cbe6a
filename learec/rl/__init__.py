"""Training objectives: supervised CE and the offline RL recommenders SQN, SAC, SNQN and SA2C.

``build_objective`` is the one place a config becomes an objective; each method lives in its own module.
"""

from __future__ import annotations

import torch

from learec.config import Config
from learec.models.ranking import RankingModel, ranking_head, ranking_network
from learec.rl.base import Batch, Objective
from learec.rl.double_q import DoubleQObjective
from learec.rl.le_inputs import LERewards, augmented_rewards
from learec.rl.networks import QNetwork
from learec.rl.rewards import EventTypeRewards, RewardSource
from learec.rl.sa2c import SA2C
from learec.rl.sac import SAC
from learec.rl.snqn import SNQN
from learec.rl.sqn import SQN
from learec.rl.supervised import CrossEntropyObjective

__all__ = ["Batch", "Objective", "CrossEntropyObjective", "DoubleQObjective", "SQN", "SAC", "SNQN", "SA2C",
           "EventTypeRewards", "RewardSource", "build_objective"]


def build_objective(cfg: Config, n_items: int, item_counts: torch.Tensor, event_types: list[str] | None = None,
                    rewards: RewardSource | None = None, le_state_dim: int = 0) -> Objective:
    """The objective named by ``cfg.objective`` around the backbone named by ``cfg.model.backbone``.

    Networks are placed on ``cfg.train.device`` before their optimisers are made. ``rewards`` defaults
    to the per-event-type constants of ``cfg.rl``; with ``cfg.lea.reward`` the LE's rewards are added
    (learec.rl.le_inputs). ``le_state_dim`` is the width of the LE states (+SM), 0 without them.
    """
    device = cfg.train.device
    if cfg.model.backbone == "pop":
        # Popularity has nothing to learn; wrapping it keeps the trainer's path uniform.
        return CrossEntropyObjective(RankingModel.from_config(cfg, n_items, item_counts).to(device), lr=cfg.train.lr)

    if cfg.objective == "ce":
        model = RankingModel.from_config(cfg, n_items).to(device)
        return CrossEntropyObjective(model, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)

    rl, lea = cfg.rl, cfg.lea
    base = rewards or EventTypeRewards(event_types or ["interaction"], rl.rewards, rl.default_reward)
    rewards = LERewards(base, lea.reward_scale) if lea.reward else base

    def make_network() -> QNetwork:
        return ranking_network(cfg, n_items, le_state_dim=le_state_dim).to(device)

    common = dict(make_network=make_network,
                  n_items=n_items, rewards=rewards, lr=cfg.train.lr, gamma=rl.gamma, negatives=rl.negatives,
                  rank_by=ranking_head(cfg), weight_decay=cfg.train.weight_decay,
                  augment_weight=lea.augment_weight if lea.augment else 0.0, augment_q=lea.augment_q,
                  augment_rewards=lambda batch: augmented_rewards(base, batch, lea.reward_scale),
                  align_weight=lea.align_weight, augment_weighting=lea.augment_weighting)
    if cfg.objective == "sqn":
        return SQN(**common)
    if cfg.objective == "sac":
        return SAC(**common, warmup_steps=rl.sac_warmup_steps)
    if cfg.objective == "snqn":
        return SNQN(**common)
    return SA2C(**common, second_lr=rl.actor_lr, warmup_steps=rl.warmup_steps, advantage_clip=rl.advantage_clip,
                item_popularity=item_counts if rl.off_policy_correction else None,
                correction_clip=rl.correction_clip)
