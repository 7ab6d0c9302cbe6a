"""LEA: the LLM environment's labels in the RL recommenders (+SM, +RM, +LEA; arXiv 2403.16948).

The bridge between learec.env (which labels) and learec.rl (which trains); rl knows nothing of it:

- ``inputs``: ``LEInputs``, the reader of an LE run's label cache, checked against the data; per batch
  it gives an ``LEBatch`` (``batch``), and the LE states of evaluation events (``eval_features``).
- ``batch``: ``LEBatch``, the typed LE inputs of one batch, passed to ``Objective.train_step`` as its
  side input.
- ``rewards``: ``LERewards``, the +RM reward source (and the rewards of augmented actions).
- ``terms``: ``LEATerms``, the +LEA and alignment loss terms added to the double-Q loss.
- ``objective``: ``build_objective``, the config's objective with the LE parts ``lea:`` asks for.
- ``sources`` and ``control``: control labels in the same cache format, made without an LLM (oracle,
  popularity, a trained teacher run), and the run directory that holds them (``learec env label --source``).
"""

from learec.lea.batch import LEBatch
from learec.lea.objective import build_objective, negatives_per_step
from learec.lea.rewards import LERewards
from learec.lea.terms import LEATerms

__all__ = ["LEBatch", "LERewards", "LEATerms", "build_objective", "negatives_per_step"]
