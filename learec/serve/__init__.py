"""Serving without the LLM: the exported recommender, `learec recommend`, and the HTTP API (docs/design.md §1.5).

``Recommender`` is imported on first use so that ``import learec.serve`` (and the CLI) stay light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Recommender", "export_run"]


def __getattr__(name: str) -> Any:
    if name == "Recommender":
        from learec.serve.recommender import Recommender

        return Recommender
    if name == "export_run":
        from learec.serve.export import export_run

        return export_run
    raise AttributeError(f"module 'learec.serve' has no attribute {name!r}")
