"""``learec env rate``: the augmented actions of any label caches (LE or control sources), side by side.

For each cache, over every training transition: ``distinct@k`` / ``top10_share@k``
(:func:`~learec.env.report.augmentation_diversity`) and ``aug_future@k`` beside ``pop_future@k``
(:func:`~learec.env.report.augmentation_quality`), the figures the LE report gives its own cache. With an
LE run to split by, the same figures again for the transitions of the users inside and outside that LE's
training subset, so every source is compared on the same users (outside is the honest measure for an LE:
it was fit on the others). Caches are rated only together with the prepared data they were all made from.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from learec.config import Config, load_config
from learec.data.prepared import PreparedData, prepare
from learec.data.preprocess import Sequences
from learec.data.splits import Transitions
from learec.env.label import LabelCache, load_label_cache
from learec.env.report import augmentation_diversity, augmentation_quality
from learec.env.train import subset_users
from learec.errors import UserError

log = logging.getLogger("learec")

FIGURES = ("aug_future", "pop_future", "distinct", "top10_share")


def _figures(seqs: Sequences, train: Transitions, rows: np.ndarray, aug: np.ndarray, item_counts: np.ndarray,
             ks: tuple[int, ...]) -> dict[str, Any]:
    # all rows: the arrays as they are (memory-mapped), not a copy of every state window
    subset = train if len(rows) == len(train) else train.take(rows)
    quality = augmentation_quality(seqs, subset, aug[rows], item_counts, ks)
    return {"transitions": int(len(rows)), **{k: v for k, v in quality.items() if k != "transitions"},
            **augmentation_diversity(aug[rows], ks)}


def rate_labels(seqs: Sequences, train: Transitions, aug_items: np.ndarray, item_counts: np.ndarray,
                ks: tuple[int, ...] = (1, 3, 5), le_users: np.ndarray | None = None) -> dict[str, Any]:
    """The figures of one cache's ``aug_items`` (``[len(train), width]``, -1 = empty slot): ``transitions``,
    ``aug_future@k``, ``pop_future@k``, ``distinct@k``, ``top10_share@k`` for each k up to the width; with
    ``le_users``, ``by_membership``: the same (and ``users``) for the transitions of the users inside
    (``le_users``) and outside (``other_users``) that set, None where there are none."""
    aug_items = np.asarray(aug_items)
    if len(aug_items) != len(train):
        raise ValueError(f"aug_items has {len(aug_items)} rows for {len(train)} transitions")
    rated = _figures(seqs, train, np.arange(len(train)), aug_items, item_counts, ks)
    if le_users is not None:
        user = np.asarray(train.user)
        inside = np.isin(user, np.asarray(le_users))
        split: dict[str, Any] = {}
        for name, mask in (("le_users", inside), ("other_users", ~inside)):
            rows = np.flatnonzero(mask)
            split[name] = ({"users": int(len(np.unique(user[rows]))),
                            **_figures(seqs, train, rows, aug_items, item_counts, ks)} if len(rows) else None)
        rated["by_membership"] = split
    return rated


def source_of(cache: LabelCache) -> str:
    """The labels' source: a control source names itself in the fingerprint; an LE cache does not."""
    return str(cache.manifest["fingerprint"].get("source", "le"))


def _label_command(run_dir: Path, source: str) -> str:
    if source != "le":  # a control source: no LE to retrain
        return f"`learec env label --source {source} --run-dir {run_dir}`"
    return f"`learec env train --run-dir {run_dir}`, then `learec env label --run-dir {run_dir}`"


def _run_config(run_dir: Path, what: str) -> Config:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} has no config.yaml, so its data (and {what}) are unknown",
                        "give the directory of an LE run (`learec env train`) or of a control source "
                        "(`learec env label --source ...`)")
    return load_config(path)


def rate_runs(run_dirs: list[Path], split_by: Path | None = None, ks: tuple[int, ...] = (1, 3, 5)) -> dict[str, Any]:
    """Rate the label cache (``RUN_DIR/label``) of each run directory on the prepared data they were made from
    (:func:`rate_labels`), split by the training users of the LE run ``split_by`` when given. Refuses caches
    from different prepared data, and data that no longer has the caches' key."""
    run_dirs = [Path(d) for d in run_dirs]
    caches = [load_label_cache(d / "label") for d in run_dirs]  # missing/incomplete/corrupt: its own hint
    keys = [c.manifest["fingerprint"].get("data") for c in caches]
    if len(set(keys)) > 1:
        named = "; ".join(f"{d} ({source_of(c)}): data key {k}" for d, c, k in zip(run_dirs, caches, keys))
        raise UserError(f"The label caches were made from different prepared data: {named}",
                        "rate caches of the same data together (their config.yaml's data sections must agree), "
                        "or label the sources again with one data section")
    key = keys[0]
    data = prepare(_run_config(run_dirs[0], "labels").data, log=log.info)
    if data.manifest["key"] != key:  # e.g. the raw files changed since labelling
        raise UserError(f"The labels in {run_dirs[0] / 'label'} were made from data key {key}, but the data of its "
                        f"config.yaml now have key {data.manifest['key']}",
                        f"label the current data again: {_label_command(run_dirs[0], source_of(caches[0]))}")
    le_users, split = None, None
    if split_by is not None:
        le_users, split = _split_users(Path(split_by), data)
    result: dict[str, Any] = {"data": key, "ks": list(ks), "split_by": split, "runs": []}
    for run_dir, cache in zip(run_dirs, caches):
        rated = rate_labels(data.sequences, data.train, np.asarray(cache["aug_items"]), data.split.item_counts,
                            ks, le_users)
        result["runs"].append({"run": str(run_dir), "source": source_of(cache), "labels_key": cache.key,
                               "aug_k": int(cache["aug_items"].shape[1]), **rated})
    return result


def _split_users(le_run: Path, data: PreparedData) -> tuple[np.ndarray, dict[str, Any]]:
    """The training users of the LE run ``le_run`` (``le.train.user_fraction``, ``le.seed``) on ``data``."""
    if not (le_run / "le").is_dir():
        raise UserError(f"--split-by {le_run} is not an LE run directory (it has no le/)",
                        "give the --run-dir of a `learec env train` run: its training users split the figures")
    cfg = _run_config(le_run, "its LE's training users")
    le_data = prepare(cfg.data, log=log.info)
    if le_data.manifest["key"] != data.manifest["key"]:  # its users would be other data's users
        raise UserError(f"--split-by {le_run}: that LE's data (key {le_data.manifest['key']}) are not the data of "
                        f"the labels (key {data.manifest['key']})",
                        "split by an LE run with the same data section as the labelling runs")
    fraction, seed = cfg.le.train.user_fraction, cfg.le.seed
    users = subset_users(data.train.user, fraction, seed)
    return users, {"run": str(le_run), "user_fraction": fraction, "seed": seed, "le_users": int(len(users))}


def _cell(value: Any) -> str:
    if value is None:  # k wider than the cache, or no transitions on that side of the split
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{100 * value:.1f}%"


def markdown_table(result: dict[str, Any]) -> str:
    """One row per rated run: its source and transitions, then per k the four figures and, split by an LE's
    training users, aug_future@k of the users inside and outside them."""
    head = ["run", "source", "transitions"]
    for k in result["ks"]:
        head += [f"{name}@{k}" for name in FIGURES]
        if result["split_by"]:
            head += [f"aug_future@{k} LE users", f"aug_future@{k} other users"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in result["runs"]:
        row = [run["run"], run["source"], _cell(run["transitions"])]
        for k in result["ks"]:
            row += [_cell(run.get(f"{name}@{k}")) for name in FIGURES]
            if result["split_by"]:
                row += [_cell((run["by_membership"][side] or {}).get(f"aug_future@{k}"))
                        for side in ("le_users", "other_users")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
