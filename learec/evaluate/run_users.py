"""The user of each test event of a finished run, for the test clustered by user (learec.evaluate.tables).

Runs write ``test_users.npy`` beside ``test_ranks.npy``. For a run made before they did, its ``config.yaml``
names its data, and the prepared data of those settings and raw files, where their cache exists, give the
same events in the same order. Nothing is prepared here: without the cache there is no such test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from learec.config import load_config
from learec.data.prepared import find_prepared
from learec.errors import UserError


def users_from_configs() -> Callable[[Path], np.ndarray | None]:
    """A reader of a run's test event users from its config's prepared data (``None`` where the config or
    the cache cannot be read), reading each distinct data setting once: for one table, whose runs share
    their data."""
    seen: dict[str, np.ndarray | None] = {}

    def users(run_dir: Path) -> np.ndarray | None:
        try:
            data = load_config(run_dir / "config.yaml").data
        except (UserError, OSError):  # no readable config: no users
            return None
        key = json.dumps(data.model_dump(mode="json"), sort_keys=True)
        if key not in seen:
            prepared = find_prepared(data)
            seen[key] = None if prepared is None else np.array(prepared.test.user)
        return seen[key]

    return users
