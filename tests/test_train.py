"""Training runs end to end on a tiny synthetic log: outputs, model selection, and exact resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from learec.config import load_config
from learec.data.registry import raw_dir
from learec.data.synthetic import generate_synthetic_log
from learec.rl.base import Objective
from learec.train import trainer as trainer_mod
from learec.train.run import train_run
from learec.utils import atomic_write_text

SMALL = ["data.dataset=synthetic", "data.protocol=sqn", "data.history=5", "model.hidden=16", "train.batch_size=64",
         "train.threads=1", "train.progress=false", "train.patience=0", "eval.batch_size=512"]


@pytest.fixture()
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LEAREC_DATA_DIR", str(tmp_path / "data"))
    generate_synthetic_log(raw_dir("synthetic"), n_users=200, n_items=60)
    return tmp_path / "data"


def _cfg(*extra):
    return load_config(None, [*SMALL, *extra])


def test_run_writes_outputs_and_learns_the_structure(data_dir, tmp_path):
    run = tmp_path / "run"
    metrics = train_run(_cfg("model.backbone=gru4rec", "train.epochs=8", "train.lr=0.01"), run)
    for name in ("config.yaml", "train.log", "history.json", "metrics.json", "test_ranks.npy",
                 "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "metrics.json").read_text())
    assert set(saved) >= {"val", "test"}
    for key in ("hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20", "click/ndcg@10", "purchase/ndcg@10"):
        assert key in saved["test"], key
    # The synthetic log is 90% predictable from the last two items; popularity is near chance.
    pop = train_run(_cfg("model.backbone=pop", "train.epochs=0"), tmp_path / "pop")
    assert metrics["test"]["ndcg@10"] > 0.3 > pop["test"]["ndcg@10"] + 0.15
    history = json.loads((run / "history.json").read_text())
    assert len(history) == 8
    best = max(history, key=lambda h: h["val/ndcg@10"])
    assert saved["best_epoch"] == best["epoch"]
    assert saved["val"]["ndcg@10"] == pytest.approx(best["val/ndcg@10"])  # best checkpoint restored


def test_early_stopping_stops_after_patience(data_dir, tmp_path):
    metrics = train_run(_cfg("model.backbone=gru4rec", "train.epochs=30", "train.lr=0.05", "train.patience=2"),
                        tmp_path / "run")
    assert metrics["stopped_early"] and metrics["epochs_run"] < 30
    assert metrics["epochs_run"] - metrics["best_epoch"] == 2


def test_min_epochs_keeps_early_stopping_from_ending_a_run_that_has_not_started_learning(data_dir, tmp_path):
    # a learning rate too small to move validation: every epoch after the first counts as no improvement
    still = ["model.backbone=gru4rec", "train.epochs=12", "train.lr=1e-12", "train.patience=2"]
    stopped = train_run(_cfg(*still), tmp_path / "plain")
    assert stopped["stopped_early"] and (stopped["best_epoch"], stopped["epochs_run"]) == (1, 3)
    guarded = train_run(_cfg(*still, "train.min_epochs=6"), tmp_path / "guarded")
    assert guarded["stopped_early"] and (guarded["best_epoch"], guarded["epochs_run"]) == (1, 6)


def test_existing_run_dir_is_refused_and_resume_of_finished_run_is_a_no_op(data_dir, tmp_path):
    from learec.errors import UserError

    cfg = _cfg("model.backbone=caser", "train.epochs=1")
    first = train_run(cfg, tmp_path / "run")
    with pytest.raises(UserError, match="already holds a run"):
        train_run(cfg, tmp_path / "run")
    assert train_run(None, tmp_path / "run", resume=True) == json.loads(json.dumps(first))


class _Interrupt(Exception):
    pass


def test_resume_after_interruption_mid_epoch_matches_uninterrupted(data_dir, tmp_path, monkeypatch):
    cfg = _cfg("model.backbone=sasrec", "train.epochs=3", "train.checkpoint_every_steps=7", "model.dropout=0.3")
    reference = train_run(cfg, tmp_path / "reference")

    # Interrupt inside the second epoch (46 batches per epoch), between two checkpoints, then resume.
    real_make_batch = trainer_mod.make_batch
    calls = {"n": 0}

    def failing_make_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 60:
            raise _Interrupt
        return real_make_batch(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "make_batch", failing_make_batch)
    with pytest.raises(_Interrupt):
        train_run(cfg, tmp_path / "resumed")
    monkeypatch.setattr(trainer_mod, "make_batch", real_make_batch)
    state = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=False)
    assert state["progress"]["epoch"] == 1 and state["progress"]["step_in_epoch"] > 0  # really mid-epoch
    resumed = train_run(None, tmp_path / "resumed", resume=True)
    assert resumed["test"] == reference["test"] and resumed["val"] == reference["val"]
    _assert_same_checkpoint(tmp_path / "resumed", tmp_path / "reference")


def _assert_same_checkpoint(a, b):
    """Weights and optimiser moments equal bit for bit, not only the (coarser) metrics."""
    sa = torch.load(a / "checkpoints" / "last.pt", weights_only=False)["objective"]
    sb = torch.load(b / "checkpoints" / "last.pt", weights_only=False)["objective"]
    for key, tensor in sa["model"].items():
        assert torch.equal(tensor, sb["model"][key]), key
    for state_a, state_b in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert torch.equal(state_a["exp_avg"], state_b["exp_avg"])


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_metrics(data_dir, tmp_path):
    """SIGKILL a real `learec train` process after its first checkpoint; `--resume` ends where an uninterrupted run does."""
    cfg_path = tmp_path / "cfg.yaml"
    cfg = _cfg("model.backbone=gru4rec", "train.epochs=4", "train.checkpoint_every_steps=5")
    cfg.save(cfg_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    base = [sys.executable, "-m", "learec", "train", "--config", str(cfg_path), "--run-dir"]
    subprocess.run([*base, str(tmp_path / "reference")], check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([*base, str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "last.pt").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"
    resume = [sys.executable, "-m", "learec", "train", "--resume", "--run-dir", str(killed)]
    subprocess.run(resume, check=True, env=env, capture_output=True)
    ref = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    got = json.loads((killed / "metrics.json").read_text())
    assert got["test"] == ref["test"] and got["val"] == ref["val"]
    _assert_same_checkpoint(killed, tmp_path / "reference")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")

    def broken(self, text):
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", broken)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temp file left behind


def test_objective_interface_is_abstract():
    with pytest.raises(TypeError):
        Objective()  # type: ignore[abstract]


def test_resume_with_a_different_config_is_refused_and_with_the_same_one_is_idempotent(data_dir, tmp_path):
    from learec.errors import UserError

    cfg = _cfg("model.backbone=caser", "train.epochs=1")
    first = train_run(cfg, tmp_path / "run", resume=True)  # empty dir + resume: starts afresh
    assert train_run(cfg, tmp_path / "run", resume=True) == json.loads(json.dumps(first))
    with pytest.raises(UserError, match="train.epochs: 1 -> 2"):
        train_run(_cfg("model.backbone=caser", "train.epochs=2"), tmp_path / "run", resume=True)


def test_step_budget_ends_the_run_mid_epoch_and_resume_keeps_it_finished(data_dir, tmp_path):
    run = tmp_path / "budget"
    metrics = train_run(_cfg("model.backbone=gru4rec", "train.epochs=5", "train.max_steps=3"), run)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert state["progress"]["global_step"] == 3 and state["progress"]["epoch"] == 0  # 3 of the first epoch's steps
    assert metrics["stopped_early"] and metrics["epochs_run"] == 0
    assert len(json.loads((run / "history.json").read_text())) == 1  # validated once, at the budget
    assert train_run(None, run, resume=True) == metrics


def test_resume_at_the_step_budget_takes_no_extra_step(data_dir, tmp_path):
    """Killed after a mid-epoch checkpoint taken exactly at train.max_steps: the resume takes no step."""
    run = tmp_path / "budget"
    train_run(_cfg("model.backbone=gru4rec", "train.epochs=5", "train.max_steps=3", "train.checkpoint_every_steps=3"),
              run)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    state["progress"]["stopped_early"] = False  # as if killed between that checkpoint and the end of the loop
    state["progress"]["history"] = []
    torch.save(state, run / "checkpoints" / "last.pt")
    (run / "metrics.json").unlink()
    train_run(None, run, resume=True)
    after = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["progress"]
    assert after["global_step"] == 3 and after["stopped_early"]


def test_a_checkpoint_of_two_ranks_is_refused_by_one_process(data_dir, tmp_path):
    from learec.errors import UserError

    run = tmp_path / "ranks"
    train_run(_cfg("model.backbone=gru4rec", "train.epochs=2", "train.max_steps=2"), run)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    state["rng"] = {"ranks": [state["rng"], state["rng"]]}
    state["progress"]["stopped_early"] = False
    torch.save(state, run / "checkpoints" / "last.pt")
    (run / "metrics.json").unlink()
    with pytest.raises(UserError, match="saved by 2 process"):
        train_run(None, run, resume=True)
