"""Shared fixtures: tiny raw datasets written to a temporary directory."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch

from learec.data.registry import raw_dir
from learec.data.synthetic import generate_synthetic_log


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


@pytest.fixture
def le_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small synthetic log in a fresh ``LEAREC_DATA_DIR`` (inherited by spawned ranks), sized for the tiny
    LM's LE runs; no hub access."""
    monkeypatch.setenv("LEAREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    generate_synthetic_log(raw_dir("synthetic"), n_users=40, n_items=30, min_len=3, max_len=25)
    return tmp_path / "data"
