"""Shared fixtures: tiny raw datasets written to a temporary directory."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture
def write_generic(tmp_path: Path) -> Callable[..., Path]:
    """``write_generic(interactions_text, items_text=None, name="raw")`` -> a generic-format raw folder."""

    def write(interactions: str, items: str | None = None, name: str = "raw") -> Path:
        directory = tmp_path / name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "interactions.csv").write_text(interactions, encoding="utf-8")
        if items is not None:
            (directory / "items.csv").write_text(items, encoding="utf-8")
        return directory

    return write
