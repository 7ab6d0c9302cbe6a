"""The cells of a grid: every combination of its axes' values, named and resolved to a run config."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import create_model

from learec.config import Config, load_config
from learec.errors import UserError
from learec.evaluate.tables import axis_value_label
from learec.grid.spec import GridSpec, read_spec


class Cell(NamedTuple):
    name: str  # its folder: ``sasrec-snqn-seed0``
    values: dict[str, Any]  # axis -> value
    cfg: Config


@dataclass(frozen=True)
class Grid:
    cells: list[Cell]
    out: Path
    axes: dict[str, list]
    baseline: dict[str, Any]
    compare: dict[str, list[str]] = field(default_factory=dict)  # variant -> the variants it is also tested against


def cell_name(values: dict[str, Any]) -> str:
    """``sasrec-snqn-seed0``, ``augment_k3-seed0``."""
    return "-".join(axis_value_label(k, v) for k, v in values.items())


def expand_grid(spec: GridSpec, path: Path, extra_set: list[str] | None = None,
                out: str | Path | None = None) -> Grid:
    """The grid of ``spec`` (read from ``path``, against which ``base`` is resolved): ``extra_set`` overrides
    are added to every cell and ``out`` replaces the file's output directory."""
    base = (Path(path).parent / spec.base).resolve()
    variants = {name: v.set for name, v in spec.variants.items()}
    cells = []
    for combo in itertools.product(*spec.axes.values()):
        values = dict(zip(spec.axes, combo))
        overrides = [*spec.set, *(extra_set or [])]
        for k, v in values.items():
            overrides += variants[str(v)] if k == "variant" else [f"{k}={json.dumps(v)}"]
            overrides += spec.when.get(k, {}).get(str(v), [])
        cells.append(Cell(cell_name(values), values, load_config(base, overrides)))
    out_dir = Path(out or spec.out or Path("runs") / Path(path).stem)
    return Grid(cells, out_dir, dict(spec.axes), dict(spec.baseline), spec.compare)


def load_grid(path: str | Path, extra_set: list[str] | None = None, extra_keys: tuple[str, ...] = (),
              out: str | Path | None = None) -> Grid:
    """The grid of the file at ``path`` (see :func:`expand_grid`); ``extra_keys`` are keys of a file that
    holds more than a grid (a pipeline file) and are not the grid's to check."""
    model = GridSpec
    if extra_keys:  # accepted unchecked: another reader (the pipeline's spec) checks them
        model = create_model("GridFileSpec", __base__=GridSpec, **{k: (Any, None) for k in extra_keys})
    spec = read_spec(path, model)
    return expand_grid(spec, Path(path), extra_set, out)


def select_cells(grid: Grid, only: list[str]) -> list[Cell]:
    """The cells matching every ``--only``; an ``--only`` that matches none is an error, not a silent no-op."""
    cells = [c for c in grid.cells if cell_matches(c.values, only)]
    if only and not cells:
        choices = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in grid.axes.items())
        raise UserError(f"--only {' '.join(only)} selects no cell of the grid", f"the axes' values are {choices}")
    return cells


def cell_matches(values: dict[str, Any], only: list[str]) -> bool:
    """Whether a cell has, for every ``key=v1,v2`` of ``only``, one of the listed values."""
    for item in only:
        key, _, wanted = item.partition("=")
        if key not in values:
            raise UserError(f"--only {item}: '{key}' is not an axis of the grid", f"axes: {', '.join(values)}")
        if str(values[key]) not in wanted.split(","):
            return False
    return True
