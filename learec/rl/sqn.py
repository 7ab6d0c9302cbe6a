"""SQN (Xin et al., SIGIR 2020): cross-entropy plus one-step double Q-learning on the same backbone."""

from learec.rl.double_q import DoubleQObjective


class SQN(DoubleQObjective):
    """``L = CE(a_t) + TD(a_t)``: everything is in the shared machinery."""
