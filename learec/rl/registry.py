"""Objectives by name, and the one place a config becomes an objective (``build_objective``).

Each method registers itself in its own module (learec/rl/sqn.py, ...) with a build function and the
typed config it reads: either a shared section of the Config (the SQN family reads ``rl:``) or its own
pydantic model, filled from ``objectives.<name>:`` in the YAML (``--set objectives.<name>.<key>=...``).
learec.config validates ``objective`` and those sections against this registry, so adding an objective
is one module that defines and registers it, imported before the config is loaded (learec.rl imports
the built-in ones).

Traits say what an objective is, for checks elsewhere that must not hard-code names (e.g. LEA needs a
critic): ``CRITIC`` (the double-Q family: a Q-head that accepts an extra critic input, extra loss terms and
another reward source), ``NEGATIVES`` (samples negative actions) and ``WEIGHTED_ACTOR`` (weights its CE
term per action).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
from pydantic import BaseModel, ValidationError
from torch import nn

from learec.models.ranking import RankingModel
from learec.rl.base import Objective

if TYPE_CHECKING:
    from learec.config import Config
    from learec.models.base import Backbone
    from learec.rl.double_q import ExtraTerms
    from learec.rl.rewards import RewardSource

CRITIC = "critic"
NEGATIVES = "negatives"
WEIGHTED_ACTOR = "weighted_actor"


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

    @property
    def device(self) -> str:
        return self.cfg.train.device

    def make_backbone(self) -> Backbone:
        from learec.models import build_backbone

        return build_backbone(self.cfg.model.backbone, self.n_items, self.cfg.data.history, self.cfg.model)


@dataclass(frozen=True)
class ObjectiveSpec:
    name: str
    build: Callable[[BuildContext], Objective]
    section: str | None = None  # a shared section of the Config it reads, e.g. "rl"
    settings: type[BaseModel] | None = None  # or its own section, objectives.<name>, validated by this model
    traits: frozenset[str] = frozenset()

    def settings_of(self, cfg: Config) -> Any:
        if self.section is not None:
            return getattr(cfg, self.section)
        if self.settings is not None:
            return self.settings.model_validate(cfg.objectives.get(self.name, {}))
        return None


_OBJECTIVES: dict[str, ObjectiveSpec] = {}


def register_objective(name: str, build: Callable[[BuildContext], Objective], *, section: str | None = None,
                       settings: type[BaseModel] | None = None, traits: tuple[str, ...] | frozenset[str] = ()
                       ) -> ObjectiveSpec:
    """Make ``objective: name`` build ``build(ctx)``; ``section`` or ``settings`` says which typed config it reads."""
    if name in _OBJECTIVES:
        raise ValueError(f"an objective named {name!r} is already registered")
    if section is not None and settings is not None:
        raise ValueError("an objective reads a shared section or its own settings, not both")
    spec = ObjectiveSpec(name, build, section, settings, frozenset(traits))
    _OBJECTIVES[name] = spec
    return spec


def objective_names(trait: str | None = None) -> list[str]:
    return [name for name, spec in _OBJECTIVES.items() if trait is None or trait in spec.traits]


def objective_spec(name: str) -> ObjectiveSpec:
    """The registered objective ``name``; a ``ValueError`` naming the known ones otherwise."""
    if name not in _OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; the registered objectives are {', '.join(objective_names())}")
    return _OBJECTIVES[name]


def has_trait(name: str, trait: str) -> bool:
    return trait in objective_spec(name).traits


def filled_sections(objective: str, sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``objectives.<name>`` sections validated by their objectives' models, with defaults filled in; the
    configured objective's own section is always there, so ``learec config show`` lists its settings."""
    wanted = dict(sections)
    spec = objective_spec(objective)
    if spec.settings is not None:
        wanted.setdefault(objective, {})
    out = {}
    for name, values in wanted.items():
        model = objective_spec(name).settings
        if model is None:
            raise ValueError(f"objectives.{name}: objective {name!r} has no settings of its own"
                             + (f" (it reads the {objective_spec(name).section}: section)"
                                if objective_spec(name).section else ""))
        try:
            out[name] = model.model_validate(values or {}).model_dump(mode="json")
        except ValidationError as err:
            problems = "; ".join(f"objectives.{name}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                 for e in err.errors())
            raise ValueError(problems) from None
    return out


def build_objective(cfg: Config, n_items: int, item_counts: torch.Tensor, event_types: list[str] | None = None, *,
                    rewards: RewardSource | None = None, make_network: Callable[[], nn.Module] | None = None,
                    extra_terms: ExtraTerms | None = None) -> Objective:
    """The objective named by ``cfg.objective`` around the backbone named by ``cfg.model.backbone``.

    Networks are placed on ``cfg.train.device`` before their optimisers are made. ``rewards``,
    ``make_network`` and ``extra_terms`` replace or extend the defaults of an objective that accepts them
    (the ``CRITIC`` trait); learec.lea builds its objectives this way.
    """
    if cfg.model.backbone == "pop":
        # Popularity has nothing to learn; wrapping it keeps the trainer's path uniform.
        from learec.rl.supervised import CrossEntropyObjective

        return CrossEntropyObjective(RankingModel.from_config(cfg, n_items, item_counts).to(cfg.train.device),
                                     lr=cfg.train.lr)
    spec = objective_spec(cfg.objective)
    ctx = BuildContext(cfg, spec.settings_of(cfg), n_items, item_counts, event_types or ["interaction"], rewards,
                       make_network, extra_terms)
    if CRITIC not in spec.traits and (rewards is not None or make_network is not None or extra_terms is not None):
        raise ValueError(f"objective {spec.name!r} takes no reward source, network or extra loss terms from outside")
    return spec.build(ctx)
