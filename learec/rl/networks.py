"""The network the RL objectives train (``learec.models.qnetwork``, where serving builds it too).

The objectives rank items with ``learec.models.ranking.RankingModel`` over their first network copy.
"""

from learec.models.qnetwork import QNetwork

__all__ = ["QNetwork"]
