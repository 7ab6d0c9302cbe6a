"""``learec export``: a training run directory -> a self-contained model directory.

The run's ranking model is rebuilt from its config (``RankingModel.from_config``, the factory training
used) and given the checkpoint's weights with ``strict=True``; no objective, optimiser or LE is made.
Its serving copy (``RankingModel.for_serving``) leaves training-only parts behind and is checked to score
like it, so a mismatch fails here, at export, and never at serving time.
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
from learec.data.prepared import prepare
from learec.errors import UserError
from learec.serve.catalog import ItemCatalog
from learec.serve.recommender import MANIFEST, Recommender
from learec.train.checkpoints import load_trained_model

log = logging.getLogger("learec.serve")


def load_run(run_dir: str | Path, checkpoint: str = "best") -> Recommender:
    """The recommender of a run: its config, checkpoint, and prepared data's id map and popularity."""
    run_dir = Path(run_dir)
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
    cfg.train.device = "cpu"  # serving is CPU-first; a GPU-trained checkpoint is mapped to the CPU
    data = prepare(cfg.data, log=log.info)
    counts = torch.as_tensor(data.split.item_counts, dtype=torch.float32)
    trained = load_trained_model(cfg, run_dir, data.n_items, counts, checkpoint)
    model = trained.for_serving()
    left = sorted(set(trained.state_dict()) - set(model.state_dict()))
    if left:
        log.info("not exported (not used for ranking): %s", ", ".join(left))
    catalog = ItemCatalog(list(data.sequences.item_ids), list(data.sequences.item_text), data.split.item_counts)
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()).get("test", {}) if metrics_path.is_file() else {}
    source = {"run_dir": str(run_dir.resolve()), "checkpoint": checkpoint, "prepared_data": str(data.path),
              "test_metrics": {k: v for k, v in metrics.items() if "@" in k}}
    info = {"source": source, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "train_config": yaml.safe_load((run_dir / "config.yaml").read_text())}
    return Recommender(model, catalog, info)


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
