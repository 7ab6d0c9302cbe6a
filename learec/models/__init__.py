"""Sequential recommender backbones (GRU4Rec, Caser, NextItNet, SASRec), the networks over them, and the
``RankingModel`` that ranks items for every run."""

from learec.models.base import BACKBONES, Backbone, build_backbone
from learec.models import caser, gru4rec, nextitnet, sasrec  # noqa: F401  (register the backbones)
from learec.models.recommender import PopularityRecommender, SequentialRecommender
from learec.models.qnetwork import QNetwork
from learec.models.ranking import RankingModel

__all__ = ["BACKBONES", "Backbone", "build_backbone", "SequentialRecommender", "PopularityRecommender",
           "QNetwork", "RankingModel"]
