"""Training objectives: supervised CE and the offline RL recommenders SQN, SAC, SNQN and SA2C.

Each method lives in its own module and registers itself by name (learec.rl.registry); importing this
package registers the built-in ones. ``build_objective`` is the one place a config becomes an objective.
learec.rl knows nothing of the LLM environment: learec.lea builds on it.
"""

from __future__ import annotations

# imported in this order so that the registry lists the built-in objectives as the papers introduced them
from learec.rl.supervised import CrossEntropyObjective  # noqa: I001
from learec.rl.sqn import SQN
from learec.rl.sac import SAC
from learec.rl.snqn import SNQN
from learec.rl.sa2c import SA2C
from learec.rl.base import Batch, Objective, SideInputs
from learec.rl.double_q import DoubleQObjective, ExtraTerms, Step
from learec.rl.registry import BuildContext, build_objective, objective_names, register_objective
from learec.rl.rewards import EventTypeRewards, RewardSource

__all__ = ["Batch", "Objective", "SideInputs", "CrossEntropyObjective", "DoubleQObjective", "ExtraTerms", "Step",
           "SQN", "SAC", "SNQN", "SA2C", "EventTypeRewards", "RewardSource", "BuildContext", "build_objective",
           "objective_names", "register_objective"]
