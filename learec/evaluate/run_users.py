"""The user of each test event of a finished run, for the paired test over users (learec.evaluate.tables).

Runs write ``test_users.npy`` beside ``test_ranks.npy``. For a run made before they did, its ``config.yaml``
names its data, and the prepared split of that data gives the same events in the same order (the split is a
function of the data settings, which key the prepared cache).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from learec.config import DataConfig, load_config
from learec.data.prepared import prepare
from learec.errors import UserError


def _test_users(data: DataConfig) -> np.ndarray | None:
    try:
        return np.array(prepare(data, log=lambda *args, **kwargs: None).test.user)
    except (UserError, OSError, ValueError):  # the data are gone or unreadable: no test over users
        return None


def users_from_configs() -> Callable[[Path], np.ndarray | None]:
    """A reader of a run's test event users from its config's data (``None`` where the config or the data
    cannot be read), preparing each distinct data setting once: for one table, whose runs share their data."""
    seen: dict[str, np.ndarray | None] = {}

    def users(run_dir: Path) -> np.ndarray | None:
        try:
            data = load_config(run_dir / "config.yaml").data
        except (UserError, OSError, ValueError):
            return None
        key = json.dumps(data.model_dump(mode="json"), sort_keys=True)
        if key not in seen:
            seen[key] = _test_users(data)
        return seen[key]

    return users
