"""Refactors change no result: fixed-seed runs give the metrics recorded before the refactor, bit for bit.

The expected values (tests/pinned/behaviour_metrics.json) were written by this very test's runs at commit
7c1956f, before LEA moved out of the objectives. A change that alters training (an extra random draw, a
reordered loss term, another float reduction order) changes some metric here. Change the file only
for a change that is meant to alter results, and say so in the commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from learec.config import load_config
from learec.data.prepared import prepare
from learec.data.registry import raw_dir
from learec.data.synthetic import generate_synthetic_log
from learec.train.run import train_run
from test_lea import make_cache

PINNED = json.loads((Path(__file__).parent / "pinned" / "behaviour_metrics.json").read_text())["runs"]
BASE = ["data.dataset=synthetic", "data.protocol=sqn", "data.history=5", "model.backbone=gru4rec",
        "model.hidden=16", "train.epochs=2", "train.batch_size=32", "train.progress=false", "train.patience=0",
        "rl.warmup_steps=8", "seed=3"]
LEA = ["lea.reward=true", "lea.augment=true"]
RUNS = {
    "ce": ["objective=ce"],
    "snqn": ["objective=snqn"],
    "sa2c": ["objective=sa2c"],
    "sac": ["objective=sac"],
    "snqn+lea": ["objective=snqn", "lea.state=true", *LEA, "lea.align_weight=0.5"],
    "sa2c+lea": ["objective=sa2c", *LEA, "lea.augment_weighting=actor"],
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("pinned")
    mp = pytest.MonkeyPatch()
    mp.setenv("LEAREC_DATA_DIR", str(tmp / "data"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    generate_synthetic_log(raw_dir("synthetic"), n_users=60, n_items=25, min_len=4, max_len=20)
    data = prepare(load_config(None, BASE).data, log=lambda *_: None)
    yield tmp, make_cache(tmp / "le", data)
    torch.set_num_threads(threads)
    mp.undo()


@pytest.mark.parametrize("name", list(RUNS))
def test_fixed_seed_run_gives_the_pinned_metrics(workspace, name: str) -> None:
    tmp, cache = workspace
    sets = RUNS[name] + ([f"lea.cache={cache}"] if "lea" in name else [])
    metrics = train_run(load_config(None, BASE + sets), tmp / name)
    assert set(PINNED) == set(RUNS)
    for split in ("val", "test"):
        assert metrics[split] == PINNED[name][split], f"{name} {split}"
