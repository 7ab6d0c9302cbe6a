"""Results tables of a grid's finished runs: one CSV row per run, and a Markdown row per group of seeds with
mean ± std (test metrics, then the validation metric of the selected epochs) and paired tests over test
events, plain and clustered by user (``learec.evaluate.significance``). ``learec grid`` writes them,
``learec report`` recomputes them from the runs finished so far; both read them from here, as do the
report's plots for their labels and error bars."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from learec.evaluate.significance import paired_test, per_event_metric

log = logging.getLogger("learec")

TABLE_METRICS = ["hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20"]
EPOCH_KEYS = ["best_epoch", "epochs_run"]  # metrics.json's: the epoch kept, and the epochs trained
TEST_CELLS = 4  # the cells of one paired test (_significance): Δ, p, p clustered by user, seeds above


def axis_value_label(key: str, value: Any, sep: str = "") -> str:
    """A number carries its key's last part (``augment_k3``, or ``augment_k=3`` with ``sep="="``); a name
    stands alone (``snqn``)."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f"{key.split('.')[-1]}{sep}{value}" if numeric else str(value)


def group_label(values: dict[str, Any], keys: Iterable[str]) -> str:
    """``sasrec, snqn`` or ``augment_k=3``: a group of seeds named by its other axis values."""
    return ", ".join(axis_value_label(k, values[k], sep="=") for k in keys)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std over seeds; a single seed has no spread (0, not NaN)."""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def format_mean_std(values: list[float], bare_single: bool = False) -> str:
    """``0.0612 ± 0.0013``; ``–`` for none; with ``bare_single``, one value without a spread."""
    if not values:
        return "–"
    if bare_single and len(values) == 1:
        return f"{values[0]:.4f}"
    mean, std = mean_std(values)
    return f"{mean:.4f} ± {std:.4f}"


EventUsers = Callable[[Path], np.ndarray | None]


def results_tables(out: Path, axes: dict[str, list], baseline: dict[str, Any],
                   compare: dict[str, list[str] | str], cells: list[tuple[str, dict[str, Any]]],
                   metric: str = "ndcg@10", event_users: EventUsers | None = None) -> tuple[str, str]:
    """The CSV (one row per finished run) and the Markdown table (mean ± std over seeds, and the paired
    tests) of the finished runs among ``cells`` (folder name, axis values) under ``out``.

    ``compare`` maps a variant to the variants it is also tested against (one name, as older grids wrote
    it, or a list). The first is tested in the variant's own row; each further one gets a row of its own
    below it, with the group's name and the test only (metric columns blank).

    The test clustered by user reads each run's ``test_users.npy``; for a run without one (made before runs
    wrote it), ``event_users(run_dir)`` may give them, read only when a test needs them. Where neither does,
    or they do not match the run's ranks, its column says ``–``."""
    axis_keys = list(axes)
    compare = {k: [v] if isinstance(v, str) else list(v) for k, v in compare.items()}
    rows, ranks = [], {}
    users = _RunUsers(event_users)
    for name, values in cells:
        mpath = out / name / "metrics.json"
        if mpath.is_file():
            result = json.loads(mpath.read_text())
            test, val = result["test"], result.get("val") or {}
            rows.append({**values, **{m: test[m] for m in test if not m.endswith("events")},
                         **({f"val_{metric}": val[metric]} if metric in val else {}),
                         **{k: result[k] for k in EPOCH_KEYS if k in result}})
            if (out / name / "test_ranks.npy").is_file():
                key = tuple(values[k] for k in axis_keys)
                ranks[key] = np.load(out / name / "test_ranks.npy")
                users.runs[key] = out / name
    group_keys = [k for k in axis_keys if k != "seed"]
    metric_keys = [m for m in TABLE_METRICS if rows and m in rows[0]]
    prefixes = sorted({m.split("/")[0] for r in rows for m in r  # event types, e.g. click
                       if "/" in m and not m.startswith("val_")})
    metric_keys += [f"{p}/{m}" for p in prefixes for m in TABLE_METRICS if any(f"{p}/{m}" in r for r in rows)]
    # the validation metric of the selected epoch: what settings are chosen by, beside the test figures
    metric_keys += [f"val_{metric}"] if any(f"val_{metric}" in r for r in rows) else []
    # when each run stopped, and the epoch it kept: in the CSV only (early stopping is part of a result)
    header = [*axis_keys, *metric_keys, *[k for k in EPOCH_KEYS if any(k in r for r in rows)]]
    csv_lines = [",".join(header)] + [",".join(str(r.get(k, "")) for k in header) for r in rows]

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in group_keys), []).append(r)
    extra = ([f"Δ{metric} vs {', '.join(f'{k}={v}' for k, v in baseline.items())}", "p", "p (users)", "seeds above"]
             if baseline else [])
    if compare:
        # the row's first `compare` variant, named in its own column (usually the same method without the LE);
        # further ones get rows of their own below it
        extra += ["compared with", f"Δ{metric} vs it", "p ", "p (users) ", "seeds above "]
    # a grid of seeds only still gets a (blank) group column, so header and rule have as many columns
    group_columns = len(group_keys) or 1
    shown = [f"val {m[len('val_'):]}" if m.startswith("val_") else m for m in metric_keys]
    md = [f"| {' | '.join(group_keys)} | seeds | {' | '.join(shown + extra)} |",
          "|" + "---|" * (group_columns + 1 + len(metric_keys) + len(extra))]
    for key, rs in groups.items():
        values = dict(zip(group_keys, key))
        cols = [format_mean_std([r[m] for r in rs if m in r]) for m in metric_keys]
        if baseline:
            cols += _significance(values, baseline, rs, ranks, users, axis_keys, metric)
        others = compare.get(str(values.get("variant")), [])
        tests = [[other, *_significance(values, {"variant": other}, rs, ranks, users, axis_keys, metric)]
                 for other in others]
        if compare:
            cols += tests[0] if tests else [""] * (1 + TEST_CELLS)  # the name of the compared variant, its test
        md.append(f"| {' | '.join(map(str, key))} | {len(rs)} | " + " | ".join(cols) + " |")
        blank = [""] * (len(metric_keys) + (TEST_CELLS if baseline else 0))
        md += [f"| {' | '.join(map(str, key))} |  | " + " | ".join(blank + test) + " |" for test in tests[1:]]
    return "\n".join(csv_lines) + "\n", "\n".join(md) + "\n"


class _RunUsers:
    """The users of each run's test events, read on first use: ``test_users.npy``, else the fallback."""

    def __init__(self, fallback: EventUsers | None) -> None:
        self.fallback = fallback
        self.runs: dict[tuple, Path] = {}
        self.read: dict[tuple, np.ndarray | None] = {}

    def get(self, key: tuple, n_events: int) -> np.ndarray | None:
        if key not in self.read:
            run_dir = self.runs[key]
            path = run_dir / "test_users.npy"
            found = np.load(path) if path.is_file() else self.fallback(run_dir) if self.fallback else None
            if found is not None and len(found) != n_events:  # not this run's events (data prepared anew)
                log.warning("%s: %d event users for %d test ranks; no test clustered by user for it", run_dir,
                            len(found), n_events)
                found = None
            self.read[key] = found
        return self.read[key]


def _significance(values: dict, baseline: dict, rows: list[dict], ranks: dict, users: _RunUsers,
                  axis_keys: list[str], metric: str) -> list[str]:
    """Δ, p over events and p clustered by user of a group against its baseline group, paired over the
    seeds both have finished, and on how many of those seeds the group's run is above its baseline's (a
    gain that holds seed by seed, not only on average). The Δ's star marks p < 0.05 clustered by user where
    the users are known, else over events."""
    if all(values.get(k) == v for k, v in baseline.items()):
        return ["(baseline)"] + [""] * (TEST_CELLS - 1)
    base_values = {**values, **baseline}
    mine, theirs, event_users = [], [], []
    for seed in [r.get("seed") for r in rows]:
        key_a = tuple({**values, "seed": seed}[k] for k in axis_keys)
        key_b = tuple({**base_values, "seed": seed}[k] for k in axis_keys)
        if ranks.get(key_a) is not None and ranks.get(key_b) is not None:
            mine.append(ranks[key_a])
            theirs.append(ranks[key_b])
            event_users += [u for u in (users.get(key_a, len(ranks[key_a])), users.get(key_b, len(ranks[key_b])))
                            if u is not None]
    if not mine:
        return ["–"] * TEST_CELLS
    # every run of a comparison ranks the same events, so they all name the same users; one that does not
    # (another split) is an error, as are ranks of other lengths in paired_test
    if any(not np.array_equal(u, event_users[0]) for u in event_users[1:]):
        raise ValueError("the runs of a comparison were evaluated on different test users")
    result = paired_test(mine, theirs, metric, users=event_users[0] if event_users else None)
    p_users = result.get("p_users", float("nan"))
    mark = "*" if (p_users if not np.isnan(p_users) else result["p"]) < 0.05 else ""
    above = sum(per_event_metric(a, metric).mean() > per_event_metric(b, metric).mean() for a, b in zip(mine, theirs))
    return [f"{result['diff']:+.4f}{mark}", f"{result['p']:.3g}", "–" if np.isnan(p_users) else f"{p_users:.3g}",
            f"{above} of {len(mine)}"]
