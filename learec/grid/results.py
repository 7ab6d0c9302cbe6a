"""A grid's output files besides its runs: which folder is which cell, and the results tables."""

from __future__ import annotations

import json
from pathlib import Path

from learec.evaluate.run_users import users_from_configs
from learec.evaluate.tables import results_tables
from learec.grid.cells import Grid


def write_cells(grid: Grid) -> Path:
    """``cells.json``: the axes, baseline, compared variants and which folder is which cell, so reports
    (learec.report) can read a grid, also while it runs."""
    path = grid.out / "cells.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"axes": grid.axes, "baseline": grid.baseline, "compare": grid.compare,
                                "cells": [{"name": c.name, "values": c.values} for c in grid.cells]}, indent=1))
    return path


def write_table(grid: Grid, metric: str = "ndcg@10") -> tuple[Path, Path]:
    """cells.json, results.csv (one row per run) and results.md (mean ± std over seeds, and the paired test)."""
    write_cells(grid)
    csv_text, md_text = results_tables(grid.out, grid.axes, grid.baseline, grid.compare,
                                       [(c.name, c.values) for c in grid.cells], metric,
                                       event_users=users_from_configs())
    csv_path, md_path = grid.out / "results.csv", grid.out / "results.md"
    csv_path.write_text(csv_text)
    md_path.write_text(md_text)
    return csv_path, md_path
