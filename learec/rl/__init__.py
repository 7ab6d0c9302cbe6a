"""Training objectives: supervised CE and the offline RL recommenders SQN, SAC, SNQN and SA2C.

Each method lives in its own module and is registered by name (learec.rl.registry, which imports no
torch, so that the config validates objective names and traits cheaply). ``build_objective``
(learec.rl.build) is the one place a config becomes an objective. learec.rl knows nothing of the LLM
environment: learec.lea builds on it. The names below load their modules on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Batch": "learec.rl.base", "Objective": "learec.rl.base", "SideInputs": "learec.rl.base",
    "CrossEntropyObjective": "learec.rl.supervised", "DoubleQObjective": "learec.rl.double_q",
    "ExtraTerms": "learec.rl.double_q", "Step": "learec.rl.double_q",
    "SQN": "learec.rl.sqn", "SAC": "learec.rl.sac", "SNQN": "learec.rl.snqn", "SA2C": "learec.rl.sa2c",
    "EventTypeRewards": "learec.rl.rewards", "RewardSource": "learec.rl.rewards",
    "BuildContext": "learec.rl.build", "build_objective": "learec.rl.build",
    "objective_names": "learec.rl.registry", "register_objective": "learec.rl.registry",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'learec.rl' has no attribute {name!r}")
