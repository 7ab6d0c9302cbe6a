"""RecBole 1.2.1's own GRU4Rec on MovieLens-100K (leave-one-out, full ranking) with RecBole's defaults.

The reference point of docs/results.md §1: run it in its own environment (see README.md here), not in
learec's. Only the overrides below differ from RecBole's defaults; the resolved settings, the best
validation and the test metrics are written to OUT/result_seed{SEED}.json.

    python run_gru4rec.py SEED [--out DIR] [--epochs N]
"""

import argparse
import json
import time
from pathlib import Path

import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_logger, init_seed

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("seed", type=int)
parser.add_argument("--out", default="recbole-runs", help="checkpoints and results (default: ./recbole-runs)")
parser.add_argument("--epochs", type=int, default=None, help="cap on epochs (default: RecBole's 300); for a smoke run")
args = parser.parse_args()
out = Path(args.out)
torch.set_num_threads(1)

overrides = {
    # RecBole refuses CE loss on a sequential model with overall.yaml's default negative sampling
    "train_neg_sample_args": None,
    "metrics": ["Recall", "MRR", "NDCG", "Hit"],  # MRR: the default valid_metric is MRR@10
    "topk": [5, 10, 20],
    "seed": args.seed,
    "reproducibility": True,
    "use_gpu": False,
    "show_progress": False,
    "checkpoint_dir": str(out / f"saved_seed{args.seed}"),
}
if args.epochs is not None:
    overrides["epochs"] = args.epochs
config = Config(model="GRU4Rec", dataset="ml-100k", config_dict=overrides)
init_seed(config["seed"], config["reproducibility"])
init_logger(config)
keys = ["epochs", "train_batch_size", "learning_rate", "embedding_size", "hidden_size", "num_layers",
        "dropout_prob", "loss_type", "MAX_ITEM_LIST_LENGTH", "eval_args", "valid_metric", "stopping_step",
        "normalize_all", "val_interval", "user_inter_num_interval", "item_inter_num_interval"]
resolved = {k: config[k] for k in keys}

dataset = create_dataset(config)
train_data, valid_data, test_data = data_preparation(config, dataset)
model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
start = time.time()
best_valid_score, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
result = {"seed": args.seed, "resolved": resolved, "users": dataset.user_num - 1, "items": dataset.item_num - 1,
          "train_samples": len(train_data.dataset), "best_valid": dict(best_valid), "test": dict(test),
          "seconds": round(time.time() - start, 1)}
out.mkdir(parents=True, exist_ok=True)
(out / f"result_seed{args.seed}.json").write_text(json.dumps(result, indent=1, default=str))
print(json.dumps({"seed": args.seed, "valid_ndcg@10": best_valid["ndcg@10"], "test_ndcg@10": test["ndcg@10"],
                  "test_hit@10": test["hit@10"]}))
