"""Why a label cache does not fit a run's data, said with the data settings that differ and what to do.

A cache's manifest names the prepared data it labelled by their key only; the directory that made it (an
LE run or a control source) keeps its config.yaml, whose data section is compared here with the run's,
setting by setting, so the error names the keys and both values instead of two hashes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from learec.config import DataConfig, config_differences, load_config
from learec.data.prepared import PreparedData, keyed_settings
from learec.errors import UserError

# Settings that change the item texts and not the transitions: RL training reads no item text, so labels
# that differ from the run's data only in these fit the run's transitions row for row.
ITEM_TEXT_SETTINGS = frozenset({"text_template"})


def labelled_data(label_dir: Path) -> DataConfig | None:
    """The data section of the directory that made ``label_dir`` (None when it has no readable config)."""
    path = label_dir.parent / "config.yaml"
    if not path.is_file():
        return None
    try:
        return load_config(path).data
    except UserError:
        return None


def _set_arg(key: str, value: Any) -> str:
    """``--set "data.KEY=VALUE"`` as the shell and the config's YAML read it (text single-quoted for YAML,
    so a template like {title} stays text)."""
    shown = "'" + value.replace("'", "''") + "'" if isinstance(value, str) else json.dumps(value)
    return f'--set "{key}={shown}"'


def _label_commands(label_dir: Path) -> str:
    """The commands that label the current data in the directory that made ``label_dir``."""
    source = json.loads((label_dir / "manifest.json").read_text())["fingerprint"].get("source")
    run_dir = label_dir.parent
    if source:  # a control source: no LE to retrain
        return f"`learec env label --source {source} --run-dir {run_dir}`"
    return (f"`learec env train --run-dir {run_dir}` (it retrains on the data as they are now), then "
            f"`learec env label --run-dir {run_dir}`")


def data_mismatch(label_dir: Path, data: PreparedData, labelled_key: str, labelled_rows: int) -> UserError:
    """The error for labels made for other data than ``data``: the settings that differ, with both values,
    and the way out that fits the difference."""
    head = (f"The LE cache {label_dir} was labelled for other data than this run's ({labelled_rows} transitions, "
            f"data key {labelled_key}; this run: {len(data.train)} transitions, key {data.manifest['key']})")
    theirs = labelled_data(label_dir)
    if theirs is None:
        return UserError(head, "use the same data section in the LE config and the RL config, then label again")
    ours = DataConfig.model_validate(data.manifest["config"])
    diffs = config_differences(keyed_settings(ours), keyed_settings(theirs))  # "key: labels' -> this run's"
    if not diffs:
        return UserError(f"{head}: the data settings are the same, so the raw files differ (the labels' "
                         f"data.raw: {theirs.raw or 'the default'}; this run's files: {data.manifest['raw_path']})",
                         f"label the current files: {_label_commands(label_dir)}")
    named = "; ".join(_describe(d) for d in diffs)
    keys = [d.split(":", 1)[0] for d in diffs]
    theirs_tree = keyed_settings(theirs)
    sets = " ".join(_set_arg(f"data.{k}", _lookup(theirs_tree, k)) for k in keys)
    where = label_dir.parent / "config.yaml"
    if {k.split(".")[0] for k in keys} <= ITEM_TEXT_SETTINGS:
        return UserError(f"{head}: {named}",
                         f"RL training reads no item text, so these labels fit this run's transitions: give the run "
                         f"the labels' setting ({sets}, or the data section of {where}); to train on labels made "
                         "from this run's item texts instead, train and label an LE with them")
    return UserError(f"{head}: {named}",
                     f"give this run the data the labels were made for ({sets}, or the data section of {where}); or "
                     "train and label an LE on this run's data (`learec env train --config FILE --run-dir NEW_DIR` "
                     "with this run's data section, then `learec env label --run-dir NEW_DIR`)")


def _describe(difference: str) -> str:
    """``key: old -> new`` (labels', this run's) as ``data.key: old (labels) vs new (this run)``."""
    key, values = difference.split(": ", 1)
    labels, run = values.split(" -> ", 1)
    return f"data.{key}: {labels} (labels) vs {run} (this run)"


def _lookup(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree
