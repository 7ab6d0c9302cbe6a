"""SQN (Xin et al., SIGIR 2020): cross-entropy plus one-step double Q-learning on the same backbone."""

from __future__ import annotations

from typing import TYPE_CHECKING

from learec.rl.double_q import DoubleQObjective, double_q_arguments

if TYPE_CHECKING:
    from learec.rl.build import BuildContext


class SQN(DoubleQObjective):
    """``L = CE(a_t) + TD(a_t)``: everything is in the shared machinery."""


def build(ctx: BuildContext) -> SQN:
    return SQN(**double_q_arguments(ctx))

