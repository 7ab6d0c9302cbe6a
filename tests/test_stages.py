"""The dry run and the real run agree on every LE stage: for each state a stage's files can be in (missing,
current, stale by a changed input, interrupted, corrupt), the status ``learec pipeline --dry-run`` prints
(:func:`learec.env.stages.le_status`) matches what the run then does: ``current`` is not remade, ``to make``,
``stale`` and ``partial`` are (``partial`` resumes), and afterwards every stage is current. Likewise a
training run's status (:func:`learec.train.outputs.train_status`) and ``learec train``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from learec.config import Config, load_config
from learec.data.prepared import prepare
from learec.env import run as env_run
from learec.env.run import LERun
from learec.env.stages import EVAL_STATES_STAGE, ITEM_TOKENS, LABELLING, LE_TRAINING, REPORT, le_status
from learec.errors import UserError
from learec.stages import State, StageStatus

SMOKE = Path(__file__).parent.parent / "configs" / "le_smoke.yaml"
MADE_WHEN = {State.TO_MAKE, State.STALE, State.PARTIAL}  # a stage in one of these states is (re)made


def _config(*overrides: str) -> Config:
    return load_config(SMOKE, ["le.progress=false", "le.train.user_fraction=0.25", "le.train.epochs=1",
                               "le.label.users_per_shard=7", *overrides])


def _mtime(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.is_file() else None


class Observed:
    """Which LE stages a real run made: the trainers are spied on, the caches' manifests timed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.calls: list[str] = []
        for name in ("train_item_tokens", "train_le_model"):
            monkeypatch.setattr(env_run, name, self._spy(name, getattr(env_run, name)))

    def _spy(self, name: str, real: Any) -> Any:
        def spy(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return real(*args, **kwargs)
        return spy

    def run(self, run_dir: Path, cfg: Config) -> set[str]:
        """What the pipeline does with the LE (train, label, evaluation states); returns the stages made."""
        manifests = {LABELLING.name: run_dir / "label" / "manifest.json",
                     EVAL_STATES_STAGE.name: run_dir / "eval_states" / "manifest.json"}
        before = {stage: _mtime(path) for stage, path in manifests.items()}
        self.calls.clear()
        run = LERun(run_dir, cfg, replace_config=True)
        run.model(train=True)
        assert run.label() is not None
        run.eval_states()
        made = {stage for stage, path in manifests.items() if _mtime(path) != before[stage]}
        if "train_item_tokens" in self.calls:
            made.add(ITEM_TOKENS.name)
        if "train_le_model" in self.calls:
            made.add(LE_TRAINING.name)
        return made


def _dry_run(run_dir: Path, cfg: Config) -> dict[str, StageStatus]:
    statuses = le_status(cfg, run_dir, prepare(cfg.data), eval_states=True, report=False)
    return {status.stage: status for status in statuses}


def _agree(statuses: dict[str, StageStatus], made: set[str]) -> None:
    """``current`` is not remade, what must be made is; a stage that waits on another may go either way
    (the earlier stage may come out the same, as a resumed LE does)."""
    for stage, status in statuses.items():
        if status.state is State.CURRENT:
            assert stage not in made, f"{stage}: the dry run says {status.detail!r}, the run remade it"
        elif status.state in MADE_WHEN:
            assert stage in made, f"{stage}: the dry run says {status.detail!r}, the run did not make it"


def _check(run_dir: Path, cfg: Config, observed: Observed, expected: dict[str, State]) -> dict[str, StageStatus]:
    """The dry run's states are ``expected`` (for the stages named), the real run agrees with them, and then
    a dry run finds every stage current."""
    statuses = _dry_run(run_dir, cfg)
    assert {stage: statuses[stage].state for stage in expected} == expected
    _agree(statuses, observed.run(run_dir, cfg))
    after = _dry_run(run_dir, cfg)
    assert all(s.current for s in after.values()), {s.stage: s.detail for s in after.values()}
    return statuses


def test_dry_run_status_and_the_real_run_agree_on_every_stage(le_data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="learec")
    run_dir = le_data_dir.parent / "le"
    observed = Observed(monkeypatch)
    cfg = _config()

    # missing: the LE stages are to make, what reads the LE waits
    statuses = _check(run_dir, cfg, observed, {
        ITEM_TOKENS.name: State.TO_MAKE, LE_TRAINING.name: State.TO_MAKE, LABELLING.name: State.WAITS,
        EVAL_STATES_STAGE.name: State.WAITS})
    assert statuses[ITEM_TOKENS.name].detail == "to train" and statuses[LABELLING.name].detail == "after LE training"

    # current: nothing is made again
    _check(run_dir, cfg, observed, {stage: State.CURRENT for stage in _dry_run(run_dir, cfg)})

    # stale by a changed input of the LE (not of the item tokens): the LE and what reads it are redone
    cfg = _config("le.train.epochs=2")
    statuses = _check(run_dir, cfg, observed, {ITEM_TOKENS.name: State.CURRENT, LE_TRAINING.name: State.STALE})
    assert statuses[LE_TRAINING.name].detail == "made from other inputs: retrain"

    # stale item tokens make the LE stale too (its key includes theirs)
    cfg = _config("le.train.epochs=2", "le.item_tokens.epochs=2")
    _check(run_dir, cfg, observed, {ITEM_TOKENS.name: State.STALE, LE_TRAINING.name: State.STALE})

    # LE training interrupted after its last epoch (no done.json): it resumes, comes out the same, and the
    # labels made from its weights stay current although the dry run could not know that beforehand
    (run_dir / "le" / "done.json").unlink()
    statuses = _check(run_dir, cfg, observed, {ITEM_TOKENS.name: State.CURRENT, LE_TRAINING.name: State.PARTIAL,
                                               LABELLING.name: State.WAITS})
    assert observed.calls == ["train_le_model"]

    # labelling interrupted after one shard of users: partial, and the run resumes after that shard
    cfg = _config("le.train.epochs=2", "le.item_tokens.epochs=2", "le.label.users_per_shard=5")
    assert _dry_run(run_dir, cfg)[LABELLING.name].state is State.STALE  # other shards: labelled afresh
    assert LERun(run_dir, cfg, replace_config=True).label(stop_after_shards=1) is None
    caplog.clear()
    statuses = _check(run_dir, cfg, observed, {LABELLING.name: State.PARTIAL, LE_TRAINING.name: State.CURRENT})
    assert statuses[LABELLING.name].detail == "incomplete: resumes after 1 shard(s) of users"
    assert "LE labelling resumes" in caplog.text  # not started over

    # a corrupt cache is stale: rebuilt
    reward = run_dir / "label" / "reward.npy"
    raw = bytearray(reward.read_bytes())
    raw[-1] ^= 0xFF
    reward.write_bytes(bytes(raw))
    statuses = _check(run_dir, cfg, observed, {LABELLING.name: State.STALE, EVAL_STATES_STAGE.name: State.CURRENT})
    assert statuses[LABELLING.name].detail.startswith("corrupt")


def test_report_status_follows_its_key(le_data_dir: Path) -> None:
    """The LE report waits for the labels, is to make, current once made, and stale for other settings."""
    run_dir = le_data_dir.parent / "le"
    cfg = _config()
    run = LERun(run_dir, cfg)
    run.model()
    assert REPORT.status(run_dir, cfg, None).state is State.WAITS
    labels = _dry_run(run_dir, cfg)[LABELLING.name]
    assert labels.state is State.TO_MAKE and labels.key is None
    cache = run.label()
    labels = _dry_run(run_dir, cfg)[LABELLING.name]
    assert labels.current and labels.key == cache.key
    assert REPORT.status(run_dir, cfg, cache.key).state is State.TO_MAKE
    run.report()
    assert REPORT.status(run_dir, cfg, cache.key).current
    other = _config("le.report.val_users=10")
    assert REPORT.status(run_dir, other, cache.key).state is State.STALE


def test_a_run_refuses_another_config_naming_the_keys_that_differ(le_data_dir: Path) -> None:
    """The LE run and `learec train --resume` share one check (learec.stages.check_saved_config)."""
    run_dir = le_data_dir.parent / "le"
    LERun(run_dir, _config())
    with pytest.raises(UserError, match=r"differs from the one .* le\.train\.epochs: 1 -> 3") as err:
        LERun(run_dir, _config("le.train.epochs=3"))
    assert "another --run-dir" in err.value.hint


def test_train_status_and_learec_train_agree(le_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A training run's status (what `learec grid --dry-run` plans from) and what `learec train` does:
    ``to make`` trains, ``current`` (finished) trains nothing, ``partial`` resumes from its checkpoint."""
    from learec.train import run as train_mod
    from learec.train.outputs import train_status
    from learec.train.run import train_run

    cfg = load_config(None, ["data.dataset=synthetic", "data.protocol=sqn", "data.history=5", "model.hidden=16",
                             "model.backbone=gru4rec", "train.epochs=1", "train.threads=1", "train.progress=false",
                             "eval.batch_size=512"])
    run_dir = le_data_dir.parent / "run"
    assert train_status(run_dir).state is State.TO_MAKE
    metrics = train_run(cfg, run_dir)
    assert train_status(run_dir).current

    real_trainer = train_mod.Trainer
    monkeypatch.setattr(train_mod, "Trainer", None)  # a finished run builds no trainer
    assert train_run(None, run_dir, resume=True)["test"] == metrics["test"]

    (run_dir / "metrics.json").unlink()  # as if killed after its last checkpoint
    status = train_status(run_dir)
    assert (status.state, status.detail) == (State.PARTIAL, "validated up to epoch 1")
    with pytest.raises(UserError, match="already holds a run"):
        train_run(cfg, run_dir)
    resumed: list[bool] = []

    class Spy(real_trainer):  # type: ignore[misc, valid-type]
        def load_checkpoint(self) -> bool:
            resumed.append(super().load_checkpoint())
            return resumed[-1]

    monkeypatch.setattr(train_mod, "Trainer", Spy)
    train_run(None, run_dir, resume=True)
    assert resumed == [True] and train_status(run_dir).current
