"""SQN (Xin et al., SIGIR 2020): cross-entropy plus one-step double Q-learning on the same backbone."""

from learec.rl.double_q import DoubleQObjective, double_q_arguments
from learec.rl.registry import CRITIC, BuildContext, register_objective


class SQN(DoubleQObjective):
    """``L = CE(a_t) + TD(a_t)``: everything is in the shared machinery."""


def build(ctx: BuildContext) -> SQN:
    return SQN(**double_q_arguments(ctx))


register_objective("sqn", build, section="rl", traits=(CRITIC,))
