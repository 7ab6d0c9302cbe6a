"""SNQN (Xin et al., WSDM 2022): SQN plus K uniformly sampled negative actions per transition.

Each negative has reward 0 (from the reward source) and the current state as its next state: the user
did not move. Its TD loss is summed over the K negatives, as in the published code.
"""

from learec.rl.double_q import DoubleQObjective


class SNQN(DoubleQObjective):
    uses_negatives = True
