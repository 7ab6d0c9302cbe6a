"""Training and evaluation under torchrun/DDP on CPU with 2 processes (gloo).

In-process tests spawn two ranks joined by a file-based process group; end-to-end tests run the real
`torchrun ... -m learec train|evaluate` command.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from learec import distributed
from learec.config import load_config
from learec.data.registry import raw_dir
from learec.data.splits import EvalSet
from learec.data.synthetic import generate_synthetic_log
from learec.evaluate.evaluator import evaluate
from learec.lea import LEBatch, build_objective
from learec.train.trainer import rank_rows

SMALL = ["data.dataset=synthetic", "data.protocol=sqn", "data.history=5", "model.hidden=16", "train.batch_size=64",
         "train.threads=1", "train.progress=false", "train.patience=0", "eval.batch_size=128"]


def _join(rank: int, world: int, store: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)


def _leave() -> None:
    """As `learec`'s main does: no rank tears its connections down while another still works (gloo then
    aborts that rank: "terminate called without an active exception", SIGABRT)."""
    dist.barrier()
    dist.destroy_process_group()


def _eval_set(n: int = 203, n_items: int = 50, length: int = 6) -> EvalSet:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, length + 1, n).astype(np.int32)
    history = rng.integers(0, n_items, (n, length)).astype(np.int32)
    history[np.arange(length)[None, :] >= lengths[:, None]] = n_items  # padding
    return EvalSet(history, lengths, rng.integers(0, n_items, n).astype(np.int32),
                   rng.integers(0, 2, n).astype(np.int8), np.zeros(n, np.int32), lengths.copy())


class _Scorer(torch.nn.Module):
    """Deterministic scores from a seeded embedding (identical on every rank)."""

    def __init__(self, n_items: int = 50):
        super().__init__()
        torch.manual_seed(3)
        self.emb = torch.nn.Embedding(n_items + 1, 8)
        self.out = torch.nn.Linear(8, n_items)

    def forward(self, hist, length):
        return self.out(self.emb(hist).sum(1))


def _sharded_eval_worker(rank: int, world: int, store: str, out: str) -> None:
    _join(rank, world, store)
    metrics, ranks = evaluate(_Scorer(), _eval_set(), ["click", "purchase"], [5, 10], batch_size=16)
    torch.save({"metrics": metrics, "ranks": ranks}, f"{out}.{rank}")
    _leave()


def test_sharded_evaluation_equals_one_process(tmp_path):
    single, single_ranks = evaluate(_Scorer(), _eval_set(), ["click", "purchase"], [5, 10], batch_size=16)
    assert not distributed.is_distributed()
    mp.spawn(_sharded_eval_worker, args=(2, str(tmp_path / "store"), str(tmp_path / "out")), nprocs=2)
    for rank in range(2):
        got = torch.load(tmp_path / f"out.{rank}", weights_only=False)
        np.testing.assert_array_equal(got["ranks"], single_ranks)  # 203 events: shards of 102 and 101
        assert got["metrics"] == single


def _ddp_train_worker(rank: int, world: int, store: str, out: str) -> None:
    _join(rank, world, store)
    for name in ("ce", "snqn", "sa2c", "snqn+sm+align"):
        _ddp_train(rank, world, name, f"{out}.{name}")
    _leave()


def _ddp_train(rank: int, world: int, objective_name: str, out: str) -> None:
    torch.manual_seed(rank)  # different initial weights: DDP must start every rank from rank 0's
    # +SM with the alignment loss: its projection runs outside the DDP-wrapped forward
    lea = ["lea.cache=unused", "lea.state=true", "lea.align_weight=0.5"] if "align" in objective_name else []
    cfg = load_config(None, [*SMALL, "model.backbone=gru4rec", f"objective={objective_name.split('+')[0]}",
                             "rl.warmup_steps=10", *lea])
    n_items, le_dim = 30, 6
    objective = build_objective(cfg, n_items, torch.ones(n_items), le_state_dim=le_dim if lea else 0)
    objective.distribute(lambda m: DistributedDataParallel(m, forward_sync_buffers=False), seed=0)
    gen = np.random.default_rng(0)  # the same global data on every rank; each takes its rows
    n, length = 512, 5
    state = gen.integers(0, n_items, (n, length))
    action = (state[:, -1] + 1) % n_items  # learnable: the next item follows the last one
    nxt = np.concatenate([state[:, 1:], action[:, None]], axis=1)
    gen_le = gen.normal(size=(n, le_dim))
    losses, digests = [], []
    for step in range(25):
        idx = rank_rows(np.arange(step * 64, step * 64 + 64) % n, rank, world)
        batch = {"state": torch.as_tensor(state[idx]), "length": torch.full((len(idx),), length),
                 "action": torch.as_tensor(action[idx]), "event": torch.zeros(len(idx), dtype=torch.long),
                 "next_state": torch.as_tensor(nxt[idx]), "next_length": torch.full((len(idx),), length),
                 "done": torch.zeros(len(idx), dtype=torch.bool)}
        le = None
        if lea:  # LE states of the transitions (any fixed vectors will do)
            le = LEBatch(state=torch.as_tensor(gen_le[idx], dtype=torch.float32),
                         next_state=torch.as_tensor(gen_le[(idx + 1) % n], dtype=torch.float32))
        losses.append(objective.train_step(batch, le)["loss"])
        module = objective.networks_module()
        digests.append(torch.cat([p.detach().flatten() for p in module.parameters()]).double().sum().item())
        digests.append(float(sum(p.detach().double().pow(2).sum() for p in module.parameters())))
    torch.save({"losses": losses, "digests": digests}, f"{out}.{rank}")


@pytest.mark.slow
def test_ddp_training_keeps_ranks_identical_and_learns(tmp_path):
    """CE, SNQN, SA2C (past its warm-up) and SNQN+SM with the alignment loss: after every step both ranks
    hold the same weights."""
    mp.spawn(_ddp_train_worker, args=(2, str(tmp_path / "store"), str(tmp_path / "out")), nprocs=2)
    for name in ("ce", "snqn", "sa2c", "snqn+sm+align"):
        r0, r1 = (torch.load(tmp_path / f"out.{name}.{r}") for r in range(2))
        assert r0["digests"] == r1["digests"], name  # every parameter equal after every step
        assert np.mean(r0["losses"][-5:]) < np.mean(r0["losses"][:5]), name  # the loss falls
        assert r0["losses"] != r1["losses"], name  # each rank saw its own rows


def test_rank_rows_splits_a_batch_into_equal_contiguous_parts():
    idx = np.arange(10, 21)  # 11 rows, 3 ranks: 3 each, the 2 left over skipped
    parts = [rank_rows(idx, r, 3) for r in range(3)]
    assert [list(p) for p in parts] == [[10, 11, 12], [13, 14, 15], [16, 17, 18]]
    np.testing.assert_array_equal(rank_rows(idx, 0, 1), idx)


@pytest.fixture()
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LEAREC_DATA_DIR", str(tmp_path / "data"))
    generate_synthetic_log(raw_dir("synthetic"), n_users=200, n_items=60)
    return tmp_path / "data"


def _torchrun(*args: str) -> list[str]:
    return distributed.torchrun_command(2, "-m", "learec", *args)


@pytest.mark.slow
def test_torchrun_train_then_sharded_evaluate_matches_one_process(data_dir, tmp_path):
    cfg_path = tmp_path / "cfg.yaml"
    load_config(None, [*SMALL, "model.backbone=gru4rec", "objective=snqn", "train.epochs=4", "train.lr=0.01"]).save(cfg_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "ddp"
    done = subprocess.run(_torchrun("train", "--config", str(cfg_path), "--run-dir", str(run)), env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    log = (run / "train.log").read_text()
    assert log.count("epoch 4:") >= 1 and "test:" in log  # one rank wrote one log
    losses = [float(line.split("loss ")[1].split(",")[0]) for line in log.splitlines() if ": loss " in line]
    assert len(losses) == 4 and losses[-1] < losses[0]
    print(metrics["test"]["ndcg@10"]); assert metrics["test"]["ndcg@10"] > 0.3  # the synthetic log is ~90% predictable (popularity ~0.1)

    # the saved checkpoint evaluated by 2 ranks and by 1 process: the same metrics
    sharded = subprocess.run(_torchrun("evaluate", str(run), "--split", "test"), env=env, capture_output=True,
                             text=True, timeout=300)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    single = subprocess.run([sys.executable, "-m", "learec", "evaluate", str(run), "--split", "test"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    assert json.loads(sharded.stdout) == json.loads(single.stdout)  # rank 0 alone prints
    assert json.loads(single.stdout)["test"] == metrics["test"]


def test_commands_that_start_their_own_processes_refuse_torchrun(tmp_path, monkeypatch, capsys):
    from learec.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; refused before joining any group
    assert main(["grid", "--config", str(tmp_path / "g.yaml")]) == 2
    assert "does not run under torchrun" in capsys.readouterr().err
    assert not dist.is_initialized()


def test_grid_runs_do_not_inherit_torchrun_environment(tmp_path, monkeypatch):
    from learec.grid import runner as grid

    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_PORT", "29500")

    class Finished:  # a cell process that has ended well
        def __init__(self, cmd, stdout, stderr, env):
            seen.update(env)

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(grid.subprocess, "Popen", Finished)
    assert grid._CellProcesses().run(tmp_path, quiet=True) == 0
    assert "WORLD_SIZE" not in seen and "MASTER_PORT" not in seen and "PATH" in seen


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _state(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]).lower()
    except (OSError, IndexError):
        return "zombie"


@pytest.mark.slow
def test_torchrun_run_killed_after_a_checkpoint_resumes_to_the_same_metrics(data_dir, tmp_path):
    """Every rank's RNG state is in the checkpoint: a killed 2-rank run resumes exactly."""
    import signal
    import time

    cfg_path = tmp_path / "cfg.yaml"
    load_config(None, [*SMALL, "model.backbone=gru4rec", "objective=sa2c", "rl.warmup_steps=8", "train.epochs=3",
                       "model.dropout=0.2", "train.checkpoint_every_steps=4"]).save(cfg_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = subprocess.run(_torchrun("train", "--config", str(cfg_path), "--run-dir", str(tmp_path / "ref")), env=env,
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_torchrun("train", "--config", str(cfg_path), "--run-dir", str(killed)), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "last.pt").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    ranks = _children(proc.pid)  # torchrun starts its workers in their own sessions: kill them by pid
    for pid in [*ranks, proc.pid]:
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    while any(Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) for pid in ranks):
        time.sleep(0.02)
    assert len(ranks) == 2
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"
    assert "resumed" not in (killed / "train.log").read_text()
    resumed = subprocess.run(_torchrun("train", "--resume", "--run-dir", str(killed)), env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # the first checkpoint is at step 4 of epoch 0, but a loaded machine may let the ranks run on before the
    # kill lands: any checkpoint short of the end is a resume from the middle of the run
    assert re.search(r"resumed from epoch [0-2], step \d+", (killed / "train.log").read_text())
    got, want = (json.loads((d / "metrics.json").read_text()) for d in (killed, tmp_path / "ref"))
    assert got["val"] == want["val"] and got["test"] == want["test"]
