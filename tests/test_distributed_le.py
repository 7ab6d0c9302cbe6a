"""The LE under torchrun on CPU with 2 processes (gloo): DDP training keeps the ranks identical and learns;
`torchrun ... -m learec env train|label|report` runs unchanged, and labelling sharded over ranks (resuming
a killed single-process run) gives exactly the single-process cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from learec.config import load_config
from learec.distributed import torchrun_command
from learec.env.label import load_label_cache
from learec.env.model import LEModel, weights_hash
from learec.env.run import LERun
from learec.env.train import subset_users, train_le_model

SMOKE = Path(__file__).parent.parent / "configs" / "le_smoke.yaml"


def _ddp_le_worker(rank: int, root: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{root}/store", rank=rank, world_size=2)
    # as test_env_le.test_le_training_lowers_losses: distinct random item tokens, all users
    cfg = load_config(SMOKE, ["le.progress=false", "le.train.lr=0.01", "le.train.batch_users=3"])
    run = LERun(Path(root) / "run", cfg)
    lm, tokenizer = run.lm()
    tokens = torch.randn(run.data.n_items, lm.config.hidden_size, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(rank)  # different initial adapters and heads: DDP must start every rank from rank 0's
    model = LEModel(lm, tokenizer, tokens, cfg.le.model)
    users = subset_users(run.data.train.user, 1.0, 0)
    users = users[: len(users) - (len(users) - 1) % 3]  # the last batch of each epoch holds 1 user: rank 1 idles
    history = train_le_model(model, run.data.sequences, users, cfg.le.train.model_copy(update={"epochs": 12}),
                             cfg.le.model.window, Path(root) / "le", seed=0)
    trainable = {k: v.clone() for k, v in model.state_dict().items() if "lora" in k or not k.startswith("lm.")}
    torch.save({"history": history, "hash": weights_hash(model), "weights": trainable}, f"{root}/rank{rank}.pt")
    dist.barrier()  # no rank tears its connections down while another still works: gloo would abort it
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_le_training_keeps_ranks_identical_and_lowers_losses(le_data_dir: Path, tmp_path: Path) -> None:
    mp.spawn(_ddp_le_worker, args=(str(tmp_path),), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))
    # every trainable parameter (adapters, projections, reward head) had its gradient averaged every step
    assert r0["hash"] == r1["hash"]
    assert r0["weights"].keys() == r1["weights"].keys() and any("lora" in k for k in r0["weights"])
    for key in r0["weights"]:
        assert torch.equal(r0["weights"][key], r1["weights"][key]), key
    assert r0["history"] == r1["history"]  # the epoch logs are summed over the ranks
    first, last = r0["history"][0], r0["history"][-1]
    assert last["state_loss"] < first["state_loss"] - 0.1, r0["history"]
    assert last["reward_loss"] < first["reward_loss"] - 0.02, r0["history"]
    saved = torch.load(tmp_path / "le" / "train_state.pt", weights_only=False)  # rank 0's checkpoint
    assert saved["epoch"] == 12 and saved["history"] == r0["history"]


def _torchrun(*args: str) -> None:
    cmd = torchrun_command(2, "-m", "learec", *args)
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.mark.slow
def test_torchrun_env_train_and_sharded_label_equal_one_process(le_data_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    _torchrun("env", "train", "--config", str(SMOKE), "--set", "le.progress=false", "--set",
              "le.label.users_per_shard=5", "--set", "le.label.pca_dim=4", "--run-dir", str(run_dir))
    done = json.loads((run_dir / "le" / "done.json").read_text())
    assert len(done["history"]) == 2 and (run_dir / "item_tokens.pt").is_file()
    assert (run_dir / "le.log").read_text().count("LE epoch 2:") == 1  # rank 0 alone logs

    # the same LE labelled by one process, and by 2 ranks resuming a single-process run killed after a shard
    shutil.copytree(run_dir, tmp_path / "single")
    single = LERun(tmp_path / "single").label()
    assert LERun(run_dir).label(stop_after_shards=1) is None
    _torchrun("env", "label", "--run-dir", str(run_dir))
    sharded = load_label_cache(run_dir / "label")
    assert not (run_dir / "label" / "shards").exists()
    assert len(sharded) == len(single) and sharded.arrays.keys() == single.arrays.keys()
    assert len(single.arrays) == 7  # state, state_pca, reward, negatives and augmented actions with rewards
    for name in single.arrays:
        np.testing.assert_array_equal(np.asarray(sharded[name]), np.asarray(single[name]), err_msg=name)
    assert sharded.key == single.key

    # the report: rank 0 computes it while the other rank waits
    _torchrun("env", "report", "--run-dir", str(run_dir))
    assert 0.0 <= json.loads((run_dir / "le_report.json").read_text())["state_ndcg@10"] <= 1.0
