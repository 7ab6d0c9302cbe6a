"""``learec export``: a training run directory -> a self-contained model directory.

The run's network is loaded exactly as ``learec evaluate`` loads it (``objective_for`` + the checkpoint),
then copied into the serving network of ``learec.serve.model`` with ``strict=True``, so a mismatch
between the two fails here, at export, and never at serving time.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import torch
import yaml

from learec.config import load_config
from learec.errors import UserError
from learec.serve.catalog import ItemCatalog
from learec.serve.model import build_scorer
from learec.serve.recommender import MANIFEST, Recommender

log = logging.getLogger("learec.serve")


def load_run(run_dir: Path, checkpoint: str = "best") -> Recommender:
    """The recommender of a run: its config, checkpoint, and prepared data's id map and popularity."""
    from learec.data.prepared import prepare
    from learec.train.run import load_trained_objective

    if checkpoint not in ("best", "last"):
        raise UserError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml)", "give a directory made by `learec train`")
    cfg = load_config(run_dir / "config.yaml")
    if cfg.lea.state_to_actor:
        raise UserError(f"{run_dir} was trained with lea.state_to_actor=true: its ranking head reads the LLM "
                        "environment's state of each history, so it cannot be served without the LLM",
                        "serve a run trained with lea.state_to_actor=false (the default; +SM then feeds the LE "
                        "state to the critic only)")
    cfg.train.device = "cpu"  # serving is CPU-first; a GPU-trained checkpoint is mapped to the CPU below
    data = prepare(cfg.data, log=log.info)
    objective = load_trained_objective(cfg, data, run_dir, checkpoint)
    counts = torch.as_tensor(data.split.item_counts, dtype=torch.float32)
    network = build_scorer(cfg, data.n_items, counts)
    _copy_ranking_weights(objective.scorer(), network)
    catalog = ItemCatalog(list(data.sequences.item_ids), list(data.sequences.item_text), data.split.item_counts)
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()).get("test", {}) if metrics_path.is_file() else {}
    source = {"run_dir": str(run_dir.resolve()), "checkpoint": checkpoint, "prepared_data": str(data.path),
              "test_metrics": {k: v for k, v in metrics.items() if "@" in k}}
    info = {"source": source, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "train_config": yaml.safe_load((run_dir / "config.yaml").read_text())}
    return Recommender(cfg, network, catalog, info)


def _copy_ranking_weights(trained: torch.nn.Module, network: torch.nn.Module) -> None:
    """Copy the weights ranking uses; training-only parts (e.g. an LE projection of the critic) stay behind.

    Then both networks score the same random histories: an export that would not reproduce the run's
    ranking fails here rather than serving different answers.
    """
    state = trained.state_dict()
    wanted = network.state_dict()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise UserError(f"the run's network lacks {missing[:5]}, which serving needs",
                        "export with the learec version that trained the run")
    network.load_state_dict({k: state[k] for k in wanted}, strict=True)
    left = sorted(set(state) - set(wanted))
    if left:
        log.info("not exported (not used for ranking): %s", ", ".join(left))
    backbone = getattr(network, "backbone", None) or getattr(getattr(network, "network", None), "backbone", None)
    if backbone is None:
        return  # popularity: nothing computed from the history
    n_items, L = backbone.n_items, backbone.max_len
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, L + 1, (8,), generator=gen)
    histories = torch.randint(0, n_items, (8, L), generator=gen)
    histories[torch.arange(L).unsqueeze(0) >= lengths.unsqueeze(1)] = n_items  # left-aligned, padded
    trained.eval()
    with torch.no_grad():
        same = torch.allclose(network(histories, lengths), trained(histories, lengths), atol=1e-5, rtol=1e-5)
    if not same:
        raise UserError("the exported network does not reproduce the run's scores",
                        "this run's objective ranks with more than its backbone and head; it cannot be served "
                        "without the training environment")


def export_run(run_dir: str | Path, out: str | Path, checkpoint: str = "best", force: bool = False) -> Recommender:
    """Write ``run_dir``'s model to ``out`` (refusing a non-empty ``out`` unless ``force``) and return it."""
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise UserError(f"{out} already exists and is not empty", "choose another --out, or pass --force to replace it")
        if not (out / MANIFEST).is_file():
            # --force replaces an earlier export, never an unrelated folder.
            raise UserError(f"{out} is not an exported learec model; --force only replaces those",
                            "choose another --out")
        shutil.rmtree(out)
    rec = load_run(run_dir, checkpoint)
    rec.save_pretrained(out)
    return rec
