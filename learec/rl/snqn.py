"""SNQN (Xin et al., WSDM 2022): SQN plus K uniformly sampled negative actions per transition.

Each negative has reward 0 (from the reward source) and the current state as its next state: the user
did not move. Its TD loss is summed over the K negatives, as in the published code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from learec.rl.double_q import DoubleQObjective, double_q_arguments

if TYPE_CHECKING:
    from learec.rl.build import BuildContext


class SNQN(DoubleQObjective):
    uses_negatives = True


def build(ctx: BuildContext) -> SNQN:
    return SNQN(**double_q_arguments(ctx))

