"""LE training steps on short, uneven sequences: one padded batch against `le.train.length_groups` groups of
similar length, in one run, with the same LM, batches and weights.

    python benchmarks/bench_le_train.py [--config configs/le_scientific.yaml] [--raw DIR] [--groups 1 2 4]
                                        [--steps 6] [--threads 2] [--lm tiny]

Each step draws `batch_users` users (their number of items from `--raw`'s interactions.csv, the generic
format, or else 5 + a geometric count with mean 2, a 5-core set's shape), random item windows of at most
`le.model.window` items, and one batch as LE training builds it (`le_batch`); then every `--groups` value
runs forward and backward on that same batch, in turn, so that the machine's load falls on all of them
alike. Printed: seconds per step, the share of padded token slots through the LM, and the ratio against
one padded batch. The accumulated gradient is the same (tests/test_env_le.py); this measures only time.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from learec.config import load_config
from learec.env.model import LEModel, load_le_lm
from learec.env.train import LELoss, grouped_losses, le_batch, split_by_length


def user_lengths(raw: str | None, rng: np.random.Generator) -> np.ndarray:
    if raw is None:
        return 5 + rng.geometric(1 / 3, size=10_000) - 1
    users = pd.read_csv(Path(raw) / "interactions.csv", usecols=["user"])["user"]
    return users.value_counts().to_numpy()


def slots(lengths: torch.Tensor, cand_hist: torch.Tensor, groups: int, n_prompt: int) -> tuple[int, int]:
    """(token slots through the LM, real tokens among them) for one batch split into ``groups``."""
    real = int(lengths.sum()) + int((cand_hist >= 0).sum()) + n_prompt * len(lengths)
    padded = sum(len(rows) * (n_prompt + width + n_cand)
                 for rows, width, n_cand in split_by_length(lengths, cand_hist, groups))
    return padded, real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/le_scientific.yaml")
    ap.add_argument("--raw", default=None, help="a generic-format data folder to take users' lengths from")
    ap.add_argument("--groups", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--steps", type=int, default=6, help="timed steps (after one warm-up step)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--items", type=int, default=4385, help="catalogue size")
    ap.add_argument("--lm", default=None, help="'tiny' for a quick check; default: the config's LM")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, [f"le.lm={args.lm}"] if args.lm else [])
    train_cfg, window = cfg.le.train, cfg.le.model.window
    lm, tokenizer = load_le_lm(cfg.le)
    torch.manual_seed(0)
    model = LEModel(lm, tokenizer, 0.02 * torch.randn(args.items, lm.config.hidden_size), cfg.le.model,
                    learned_temperature=train_cfg.temperature if train_cfg.learn_temperature else None)
    model.train()
    loss_fn = LELoss(model, train_cfg, args.items)
    rng = np.random.default_rng(0)
    pool = user_lengths(args.raw, rng)
    seconds = {g: 0.0 for g in args.groups}
    tokens = {g: [0, 0] for g in args.groups}
    for step in range(args.steps + 1):
        n = np.minimum(rng.choice(pool, size=train_cfg.batch_users), window)
        rows = [rng.integers(0, args.items, size=int(k)) for k in n]
        batch = le_batch(rows, rows, train_cfg, rng, args.items, model.device)
        for g in args.groups:
            model.zero_grad()
            t0 = time.perf_counter()
            if g == 1:
                loss_fn(*batch)["loss"].backward()
            else:
                grouped_losses(loss_fn, batch, g)
            if step:  # the first step warms up
                seconds[g] += time.perf_counter() - t0
                padded, real = slots(batch[1], batch[3], g, model.n_prompt)
                tokens[g][0] += padded
                tokens[g][1] += real
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, LM {cfg.le.lm or 'SmolLM2-135M-Instruct'} ({cfg.le.dtype})")
    print(f"work: {args.steps} steps of {train_cfg.batch_users} windows (lengths from {args.raw or 'geometric'}; "
          f"window {window}), {train_cfg.reward_positions} reward candidates and {train_cfg.state_negatives} "
          "state negatives per window; forward + backward")
    base = seconds[args.groups[0]] / args.steps
    for g in args.groups:
        per_step = seconds[g] / args.steps
        padded, real = tokens[g]
        print(f"length_groups={g}: {per_step:6.2f} s/step, {padded / args.steps:7.0f} token slots/step "
              f"({1 - real / padded:5.1%} padding), {base / per_step:5.2f}x the speed of groups={args.groups[0]}")


if __name__ == "__main__":
    main()
