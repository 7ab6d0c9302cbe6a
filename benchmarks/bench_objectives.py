"""Training step time of each RL objective against CE on the same backbone, measured in one run.

    python benchmarks/bench_objectives.py [--threads 2] [--steps 50] [--rounds 3]

MovieLens-100K, `sqn` protocol (history 10), batch 256, hidden 64. Target: SA2C <= 2.5x the CE step.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from learec.config import load_config
from learec.data.prepared import prepare
from learec.train.run import objective_for
from learec.train.trainer import epoch_order, make_batch

OBJECTIVES = ("ce", "sqn", "sac", "snqn", "sa2c")


def prepared_objective(backbone: str, objective: str, steps: int, overrides: tuple[str, ...] = ()
                       ) -> tuple[object, list[dict]]:
    # warmup_steps=0 so SA2C/SAC are timed in their (costlier) second phase.
    cfg = load_config(None, [f"model.backbone={backbone}", f"objective={objective}", "data.protocol=sqn",
                             "data.history=10", "rl.warmup_steps=0", *overrides])
    data = prepare(cfg.data, log=lambda *_: None)
    torch.manual_seed(0)
    obj = objective_for(cfg, data)
    obj.train()
    order = epoch_order(0, 0, len(data.train))
    bs = cfg.train.batch_size
    batches = [make_batch(data.train, np.sort(order[i * bs:(i + 1) * bs]), "cpu") for i in range(steps)]
    return obj, batches


def step_times_ms(backbone: str, steps: int, rounds: int, warmup: int = 5, overrides: tuple[str, ...] = ()
                  ) -> dict[str, float]:
    """Median step time per objective. The objectives take turns, ``rounds`` times, so a burst of load
    from elsewhere on a shared machine hits them alike, and the median ignores the steps it hits."""
    runs = {o: prepared_objective(backbone, o, steps, overrides) for o in OBJECTIVES}
    times: dict[str, list[float]] = {o: [] for o in OBJECTIVES}
    for o, (obj, batches) in runs.items():
        for b in batches[:warmup]:
            obj.train_step(b)
    for _ in range(rounds):
        for o, (obj, batches) in runs.items():
            for b in batches:
                t0 = time.perf_counter()
                obj.train_step(b)
                times[o].append(time.perf_counter() - t0)
    return {o: float(np.median(t)) * 1000 for o, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per objective and round")
    parser.add_argument("--rounds", type=int, default=3, help="turns each objective takes (median over all)")
    parser.add_argument("--backbones", nargs="+", default=["gru4rec", "caser", "nextitnet", "sasrec"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run, e.g. --set model.dropout=0.0")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"\n## median step time, ms, {args.rounds} rounds x {args.steps} steps (ratio to CE on the same backbone)")
    print("| backbone | " + " | ".join(OBJECTIVES) + " |")
    print("|---" * (len(OBJECTIVES) + 1) + "|")
    for backbone in args.backbones:
        times = step_times_ms(backbone, args.steps, args.rounds, overrides=tuple(args.overrides))
        cells = [f"{times[o]:.1f} ({times[o] / times['ce']:.2f}x)" for o in OBJECTIVES]
        print(f"| {backbone} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
