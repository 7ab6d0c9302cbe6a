"""Sequential recommender backbones (GRU4Rec, Caser, NextItNet, SASRec) and scoring models."""

from learec.models.base import BACKBONES, Backbone, build_backbone
from learec.models import caser, gru4rec, nextitnet, sasrec  # noqa: F401  (register the backbones)
from learec.models.recommender import PopularityRecommender, SequentialRecommender

__all__ = ["BACKBONES", "Backbone", "build_backbone", "SequentialRecommender", "PopularityRecommender"]
