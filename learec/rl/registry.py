"""Objectives by name: what each one is called, which typed config it reads, and what it can do.

An objective is a module with a build function (``build(ctx: BuildContext) -> Objective``, see
learec.rl.build) plus one registration here: ``register_objective(name, build, section=|settings=,
traits=)``. It reads either a shared section of the Config (the SQN family reads ``rl:``) or its own
pydantic model, filled from ``objectives.<name>:`` in the YAML (``--set objectives.<name>.<key>=...``).
This module imports no torch: learec.config validates ``objective`` and those sections against it, and
the built-in objectives are named by ``"module:function"`` and imported only when first built.

Traits say what an objective is, for checks elsewhere that must not hard-code names (e.g. LEA needs a
critic): ``CRITIC`` (the double-Q family: a Q-head that accepts an extra critic input, extra loss terms and
another reward source), ``NEGATIVES`` (samples negative actions) and ``WEIGHTED_ACTOR`` (weights its CE
term per action).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from learec.config import Config
    from learec.rl.base import Objective
    from learec.rl.build import BuildContext

CRITIC = "critic"
NEGATIVES = "negatives"
WEIGHTED_ACTOR = "weighted_actor"


@dataclass(frozen=True)
class ObjectiveSpec:
    name: str
    build: Callable[[BuildContext], Objective] | str  # or "module:function", imported when first built
    section: str | None = None  # a shared section of the Config it reads, e.g. "rl"
    settings: type[BaseModel] | None = None  # or its own section, objectives.<name>, validated by this model
    traits: frozenset[str] = frozenset()

    def builder(self) -> Callable[[BuildContext], Objective]:
        if callable(self.build):
            return self.build
        module, _, function = self.build.partition(":")
        return getattr(importlib.import_module(module), function)

    def settings_of(self, cfg: Config) -> Any:
        if self.section is not None:
            return getattr(cfg, self.section)
        if self.settings is not None:
            return self.settings.model_validate(cfg.objectives.get(self.name, {}))
        return None


_OBJECTIVES: dict[str, ObjectiveSpec] = {}


def register_objective(name: str, build: Callable[[BuildContext], Objective] | str, *, section: str | None = None,
                       settings: type[BaseModel] | None = None, traits: tuple[str, ...] | frozenset[str] = ()
                       ) -> ObjectiveSpec:
    """Make ``objective: name`` build ``build(ctx)``; ``section`` or ``settings`` says which typed config it reads.
    ``build`` may be ``"module:function"``, imported when the objective is first built."""
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


# The built-in objectives, in the order the papers introduced them. Their modules load torch, so they are
# named here and imported only when built: the config validates names and traits without torch.
register_objective("ce", "learec.rl.supervised:build")
register_objective("sqn", "learec.rl.sqn:build", section="rl", traits=(CRITIC,))
register_objective("sac", "learec.rl.sac:build", section="rl", traits=(CRITIC, WEIGHTED_ACTOR))
register_objective("snqn", "learec.rl.snqn:build", section="rl", traits=(CRITIC, NEGATIVES))
register_objective("sa2c", "learec.rl.sa2c:build", section="rl", traits=(CRITIC, NEGATIVES, WEIGHTED_ACTOR))
