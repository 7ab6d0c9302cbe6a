"""Serving without the LLM: the exported recommender, `learec recommend`, and the HTTP API (docs/design.md §1.5).

``Recommender`` is imported on first use so that ``import learec.serve`` (and the CLI) stay light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Recommender", "export_run", "load_run"]


def __getattr__(name: str) -> Any:
    if name == "Recommender":
        from learec.serve.recommender import Recommender

        return Recommender
    if name in ("export_run", "load_run"):
        from learec.serve import export

        return getattr(export, name)
    raise AttributeError(f"module 'learec.serve' has no attribute {name!r}")
