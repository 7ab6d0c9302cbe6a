"""Grids of runs from one file: the cartesian product of config values, run (resumably) and tabulated.

Grid file::

    base: ml100k_sasrec.yaml        # a config, relative to the grid file
    set: [data.protocol=sqn]         # optional overrides for every run
    out: runs/grid-ml100k            # where the runs go (one folder per cell)
    axes:                            # dotted key -> values; the product is the grid
      model.backbone: [gru4rec, sasrec]
      objective: [ce, sqn, sa2c]
      seed: [0, 1, 2]
    baseline: {objective: ce}        # optional: what each row is tested against

A ``variants`` section names bundles of overrides and makes ``variant`` an axis (list it under
``axes``, e.g. ``variant: [ce, snqn, snqn+rm]``); a variant may name the variant(s) it is also compared
with (``compare``), e.g. an LE variant with the same RL method without the LE, and with the same method on
control labels::

    variants:
      ce: [objective=ce]
      snqn: [objective=snqn]
      snqn+rm: {set: [objective=snqn, lea.reward=true], compare: snqn}
      snqn+lea: {set: [objective=snqn, lea.augment=true], compare: [snqn, snqn+popularity]}

Each cell is a normal run directory; a finished cell (metrics.json present) is skipped and an
interrupted one resumes. ``reuse`` directories (other grids' outputs) are searched for a finished run with
the same config (``config.RESULT_NEUTRAL_SETTINGS`` aside: threads, progress bars), which is copied in
rather than trained again: e.g. the LEA pipeline's CE/SNQN/SA2C cells from the RL grid. That trusts the
other run was made by the same code.
``learec grid --dry-run`` lists what a run would do with each cell (:func:`plan_grid`) and touches nothing.

The table averages over ``seed`` and reports mean ± std for every other cell, plus, with ``baseline``,
the difference in test NDCG@10 to the row with those axis values (same other values, same seeds) and
paired t-tests over test events, plain and clustered by user (``learec.evaluate.significance``); likewise
against each ``compare`` variant, the first in the variant's row and each further one in a row below it.

Modules: :mod:`~learec.grid.spec` (the file's keys, as pydantic models), :mod:`~learec.grid.cells` (the
cells and their configs), :mod:`~learec.grid.plan` (what a run would do with each cell),
:mod:`~learec.grid.runner` (the runs, one process each), :mod:`~learec.grid.results` (cells.json and the
tables, computed by :mod:`learec.evaluate.tables`).
"""

from learec.grid.cells import Cell, Grid, cell_matches, cell_name, expand_grid, load_grid, select_cells
from learec.grid.plan import CELL_STATUSES, CellPlan, check_reuse_dirs, comparable, finished_runs, plan_grid, print_plan
from learec.grid.results import write_cells, write_table
from learec.grid.runner import run_grid
from learec.grid.spec import GridSpec, VariantSpec, read_spec

__all__ = ["CELL_STATUSES", "Cell", "CellPlan", "Grid", "GridSpec", "VariantSpec", "cell_matches", "cell_name",
           "check_reuse_dirs", "comparable", "expand_grid", "finished_runs", "load_grid", "plan_grid", "print_plan",
           "read_spec", "run_grid", "select_cells", "write_cells", "write_table"]
