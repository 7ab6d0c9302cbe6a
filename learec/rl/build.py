"""The one place a config becomes an objective: ``build_objective`` looks the name up in the registry
(learec.rl.registry) and calls its build function with a ``BuildContext``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from learec.config import Config
from learec.models.base import Backbone, build_backbone
from learec.models.ranking import RankingModel
from learec.rl.base import Objective
from learec.rl.double_q import ExtraTerms
from learec.rl.registry import CRITIC, objective_spec
from learec.rl.rewards import RewardSource
from learec.rl.supervised import CrossEntropyObjective


@dataclass
class BuildContext:
    """What a build function gets: the config, its typed settings and the data's sizes, plus optional
    replacements from outside learec.rl (learec.lea passes them; a plain run passes none)."""

    cfg: Config
    settings: Any  # the objective's typed config (e.g. RLConfig), None if it declares none
    n_items: int
    item_counts: torch.Tensor
    event_types: list[str]
    rewards: RewardSource | None = None  # replaces the config's rewards per event type
    make_network: Callable[[], nn.Module] | None = None  # replaces the default network of each copy
    extra_terms: ExtraTerms | None = None  # loss terms added to the objective's own
    batches_per_epoch: int | None = None  # training steps per epoch, for settings given in epochs (rl.warmup_epochs)

    @property
    def device(self) -> str:
        return self.cfg.train.device

    def make_backbone(self) -> Backbone:
        return build_backbone(self.cfg.model.backbone, self.n_items, self.cfg.data.history, self.cfg.model)


def build_objective(cfg: Config, n_items: int, item_counts: torch.Tensor, event_types: list[str] | None = None, *,
                    rewards: RewardSource | None = None, make_network: Callable[[], nn.Module] | None = None,
                    extra_terms: ExtraTerms | None = None, batches_per_epoch: int | None = None) -> Objective:
    """The objective named by ``cfg.objective`` around the backbone named by ``cfg.model.backbone``.

    Networks are placed on ``cfg.train.device`` before their optimisers are made. ``rewards``,
    ``make_network`` and ``extra_terms`` replace or extend the defaults of an objective that accepts them
    (the ``CRITIC`` trait); learec.lea builds its objectives this way. ``batches_per_epoch`` turns settings
    given in epochs (``rl.warmup_epochs``) into steps.
    """
    if cfg.model.backbone == "pop":
        # Popularity has nothing to learn; wrapping it keeps the trainer's path uniform.
        return CrossEntropyObjective(RankingModel.from_config(cfg, n_items, item_counts).to(cfg.train.device),
                                     lr=cfg.train.lr)
    spec = objective_spec(cfg.objective)
    ctx = BuildContext(cfg, spec.settings_of(cfg), n_items, item_counts, event_types or ["interaction"], rewards,
                       make_network, extra_terms, batches_per_epoch)
    if CRITIC not in spec.traits and (rewards is not None or make_network is not None or extra_terms is not None):
        raise ValueError(f"objective {spec.name!r} takes no reward source, network or extra loss terms from outside")
    return spec.builder()(ctx)
