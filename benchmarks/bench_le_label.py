"""LE labelling of real users' transitions: batches of rows in the users' order against batches of rows of
similar length (what `learec env label` does), in one run, with the same LM, weights and transitions.

    python benchmarks/bench_le_label.py --raw DIR [--config configs/le_scientific.yaml] [--users 128]
                                        [--threads 2] [--lm tiny] [--set KEY=VALUE]

DIR is a generic-format data folder (interactions.csv, items.csv), e.g. Amazon Industrial & Scientific. The
first `--users` training users' transitions (one shard at the config's `users_per_shard`) are labelled
twice into temporary caches with an untrained LE (random adapters and item tokens: the cost of a pass does
not depend on the weights): once in the users' order, once by length. Printed: seconds, token slots through
the LM and their padded share, and the largest difference between the two caches' states and rewards.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import learec.env.label as label
from learec.config import load_config
from learec.env.model import LEModel
from learec.env.run import LERun


def in_users_order(jobs: list, batch_rows: int) -> list[list]:
    """The batching before rows were ordered by length."""
    return [jobs[i:i + batch_rows] for i in range(0, len(jobs), batch_rows)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", required=True, help="generic-format data folder")
    ap.add_argument("--config", default="configs/le_scientific.yaml")
    ap.add_argument("--users", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lm", default=None, help="'tiny' for a quick check; default: the config's LM")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. --set le.label.negatives=0 (as configs/lea_scientific.yaml)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, [f"data.raw={args.raw}", *([f"le.lm={args.lm}"] if args.lm else []), *args.set])
    with tempfile.TemporaryDirectory() as tmp:
        run = LERun(Path(tmp) / "run", cfg)
        data, lcfg = run.data, cfg.le.label
        lm, tokenizer = run.lm()
        torch.manual_seed(0)
        model = LEModel(lm, tokenizer, 0.02 * torch.randn(data.n_items, lm.config.hidden_size), cfg.le.model)
        model.eval()
        users = np.unique(np.asarray(data.train.user))[: args.users]
        rows = np.flatnonzero(np.isin(np.asarray(data.train.user), users))
        train = data.train.take(rows)
        k_neg = run.negatives
        lcfg = lcfg.model_copy(update={"users_per_shard": args.users})
        window = cfg.le.model.window

        slots = {}
        original = label.pack_rows

        def counting(batch_rows, candidates, pad):  # token slots of every pass
            batch = original(batch_rows, candidates, pad)
            slots["padded"] += batch.items.size + batch.cand_items.size
            slots["real"] += int(batch.lengths.sum()) + int((batch.cand_hist >= 0).sum())
            return batch

        label.pack_rows = counting
        results = {}
        for name, batching in (("users' order", in_users_order), ("by length", label.batches_by_length)):
            slots.update(padded=0, real=0)
            label.batches_by_length = batching
            t0 = time.perf_counter()
            cache = label.label_transitions(model, data.sequences, train, lcfg, k_neg, window,
                                            Path(tmp) / name.replace(" ", "_").replace("'", ""), {"bench": name})
            results[name] = (time.perf_counter() - t0, dict(slots),
                             {k: np.asarray(cache[k], dtype=np.float64) for k in ("state", "reward")})
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, LM {cfg.le.lm or 'SmolLM2-135M-Instruct'} ({cfg.le.dtype})")
    print(f"work: {len(users)} users, {len(train)} transitions of {args.raw}, {k_neg} negatives, "
          f"{lcfg.aug_candidates} augmentation candidates, {lcfg.batch_rows} rows a batch, window {window}")
    base = results["users' order"][0]
    for name, (seconds, s, _) in results.items():
        print(f"{name:13s}: {seconds:7.1f} s, {s['padded']:9d} token slots ({1 - s['real'] / s['padded']:5.1%} "
              f"padding), {base / seconds:5.2f}x the speed of the users' order")
    a, b = (results[n][2] for n in results)
    print("largest difference between the caches: "
          + ", ".join(f"{k} {np.abs(a[k] - b[k]).max():.2e}" for k in a))


if __name__ == "__main__":
    main()
