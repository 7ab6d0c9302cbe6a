"""The LE report's augmentation sample (le.report.aug_users): the augmented actions it computes without a
labelling cache equal the cache's, it leaves reports without it (and their keys) as they were, and
`env report --set le.report.aug_users=N` adds it without making an earlier stage stale."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from learec.cli import main
from learec.config import load_config
from learec.env.aug_sample import draw_users, sample_augmented
from learec.env.label import load_label_cache
from learec.env.run import LERun
from learec.env.stages import LE_REPORT_CONTENTS, REPORT, le_status
from learec.utils import stable_hash

SMOKE = Path(__file__).parent.parent / "configs" / "le_smoke.yaml"


@pytest.fixture
def labelled_run(le_data_dir: Path, tmp_path: Path) -> Path:
    """An LE run of the smoke config, trained and wholly labelled by the CLI."""
    run_dir = tmp_path / "le-run"
    assert main(["env", "train", "--config", str(SMOKE), "--set", "le.progress=false", "--run-dir", str(run_dir)]) == 0
    assert main(["env", "label", "--run-dir", str(run_dir)]) == 0
    return run_dir


def test_sampled_augmented_actions_equal_the_labelled_ones(labelled_run: Path) -> None:
    run = LERun(labelled_run)
    cfg, train = run.cfg, run.data.train
    cache = load_label_cache(labelled_run / "label")
    users = draw_users(train.user, 10, cfg.le.seed)
    assert len(users) == 10 and np.array_equal(users, np.sort(users))
    assert np.array_equal(users, draw_users(train.user, 10, cfg.le.seed))  # a fixed draw
    rows, aug = sample_augmented(run.model(train=False), run.data.sequences, train, users, cfg.le.label,
                                 cfg.le.model.window)
    assert np.array_equal(rows, np.flatnonzero(np.isin(np.asarray(train.user), users)))  # all their transitions
    # some users span several rows (window 16, up to 25 items), so segments are exercised
    assert max(np.bincount(np.asarray(train.user)[rows])) > cfg.le.model.window // 2
    # no negatives in the sample's first pass, 10 per transition in the cache's: the same augmented actions
    assert cache.manifest["negatives"] == 10 and aug.shape == (len(rows), 2)
    np.testing.assert_array_equal(aug, np.asarray(cache["aug_items"])[rows])


def test_env_report_adds_the_sample_without_making_earlier_stages_stale(
        labelled_run: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = labelled_run
    labels_key = load_label_cache(run_dir / "label").key
    # off (the default): no section, and the report's key is the one reports had before the setting existed
    assert main(["env", "report", "--run-dir", str(run_dir)]) == 0
    plain = json.loads((run_dir / "le_report.json").read_text())
    assert "augmentation_sample" not in plain and plain["report_settings"] == {"val_users": 20}
    assert plain["report_key"] == stable_hash({"labels": labels_key, "report": {"val_users": 20},
                                               "contents": LE_REPORT_CONTENTS})
    # as computed before aug_users existed, with report contents 4 (the fixed state_mean_cosine)
    assert REPORT.key(load_config(SMOKE), "labels-key") == "4bc116055286cd4e"
    assert REPORT.key(load_config(SMOKE, ["le.report.aug_users=5"]), "labels-key") != "4bc116055286cd4e"

    made = {p: p.stat().st_mtime_ns for p in (run_dir / "item_tokens.pt", run_dir / "le" / "heads.pt",
                                              run_dir / "label" / "manifest.json")}
    saved = (run_dir / "config.yaml").read_text()
    capsys.readouterr()
    # every training user: the sample's figures are the whole cache's
    assert main(["env", "report", "--run-dir", str(run_dir), "--set", "le.report.aug_users=1000"]) == 0
    assert "augmentation_sample" in capsys.readouterr().out
    report = json.loads((run_dir / "le_report.json").read_text())
    sample = report["augmentation_sample"]
    n_users = len(np.unique(np.asarray(LERun(run_dir).data.train.user)))
    assert sample["users"] == n_users and sample["transitions"] == report["augmentation"]["transitions"]
    assert sample["quality"] == report["augmentation"]
    assert sample["diversity"] == report["augmentation_diversity"]
    assert sample["le_users"] == report["le_users"]  # every LE user is in the sample
    inside, outside = sample["by_membership"]["le_users"], sample["by_membership"]["other_users"]
    assert inside["users"] + outside["users"] == n_users
    assert inside["transitions"] + outside["transitions"] == sample["transitions"]
    assert report["report_settings"] == {"val_users": 20, "aug_users": 1000}
    assert (run_dir / "le_report.png").stat().st_size > 1000

    # a few users: fewer transitions, and distinct counts no more than over every transition (a lower bound)
    assert main(["env", "report", "--run-dir", str(run_dir), "--set", "le.report.aug_users=5"]) == 0
    small = json.loads((run_dir / "le_report.json").read_text())["augmentation_sample"]
    assert small["users"] == 5 and 0 < small["transitions"] < sample["transitions"]
    for k in (1, 2):
        assert small["diversity"][f"distinct@{k}"] <= sample["diversity"][f"distinct@{k}"]
    assert 0.0 <= small["quality"]["aug_future@1"] <= 1.0  # ks 1, 3, 5 within the width (2)

    # nothing before the report was redone, and the run's config keeps its own settings
    assert {p: p.stat().st_mtime_ns for p in made} == made
    assert (run_dir / "config.yaml").read_text() == saved
    status = {s.stage: s.state.value for s in le_status(load_config(run_dir / "config.yaml"), run_dir,
                                                         LERun(run_dir).data)}
    assert status == {"item tokens": "current", "LE training": "current", "labelling": "current",
                      "LE report": "stale"}  # made with aug_users=5, which the run's config does not set
    with_sample = load_config(run_dir / "config.yaml", ["le.report.aug_users=5"])
    assert le_status(with_sample, run_dir, LERun(run_dir).data)[-1].state.value == "current"
