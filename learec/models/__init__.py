"""Sequential recommender backbones (GRU4Rec, Caser, NextItNet, SASRec), the networks over them, and the
``RankingModel`` that ranks items for every run.

The registry (:mod:`learec.models.registry`) is imported eagerly and the torch modules lazily, so that
:mod:`learec.config` can validate ``model.backbone`` without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from learec.models.registry import BACKBONES, register

_LAZY = {"Backbone": "learec.models.base", "build_backbone": "learec.models.base",
         "SequentialRecommender": "learec.models.recommender", "PopularityRecommender": "learec.models.recommender",
         "QNetwork": "learec.models.qnetwork", "RankingModel": "learec.models.ranking"}

__all__ = ["BACKBONES", "register", *_LAZY]


def __getattr__(name: str) -> Any:  # PEP 562: ``from learec.models import build_backbone`` loads torch here
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'learec.models' has no attribute {name!r}")
