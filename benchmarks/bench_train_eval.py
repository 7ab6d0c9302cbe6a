"""Training and evaluation throughput on MovieLens-100K, with baselines measured in the same run.

    python benchmarks/bench_train_eval.py [--threads 2] [--full-epochs]

Prints:
1. training throughput (transitions/s) per backbone, both protocols (sqn: history 10; loo: history 50),
   from timed steps after a warm-up; and, with --full-epochs, one whole SASRec epoch on each protocol;
2. full-ranking evaluation throughput (events/s) of learec's evaluator beside a bare ``states @ W.T`` +
   ``topk`` over the same shapes (the floor any full-ranking evaluator pays), as a ratio; on the
   MovieLens-100K shapes and on a 100,000-item catalogue.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from learec.config import load_config
from learec.data.prepared import prepare
from learec.data.splits import EvalSet
from learec.evaluate.evaluator import evaluate
from learec.train.run import objective_for
from learec.train.trainer import Trainer, epoch_order, make_batch


def _setup(backbone: str, protocol: str):
    history = 10 if protocol == "sqn" else 50
    cfg = load_config(None, [f"model.backbone={backbone}", f"data.protocol={protocol}", f"data.history={history}",
                             "train.progress=false"])
    data = prepare(cfg.data, log=lambda *_: None)
    torch.manual_seed(0)
    objective = objective_for(cfg, data)
    return cfg, data, objective


def train_throughput(backbone: str, protocol: str, steps: int = 40, warmup: int = 5) -> float:
    cfg, data, objective = _setup(backbone, protocol)
    order = epoch_order(0, 0, len(data.train))
    bs = cfg.train.batch_size
    objective.train()
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        idx = np.sort(order[i * bs:(i + 1) * bs])
        objective.train_step(make_batch(data.train, idx, "cpu"))
    return steps * bs / (time.perf_counter() - t0)


def full_epoch_seconds(protocol: str) -> tuple[float, int]:
    """Wall time of one whole SASRec training epoch through the real Trainer (validation excluded)."""
    import tempfile
    from pathlib import Path

    cfg, data, objective = _setup("sasrec", protocol)
    cfg.train.epochs, cfg.train.eval_every = 1, 10**6
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, data, objective, Path(tmp))
        trainer._validate = lambda: None  # time the training pass only
        t0 = time.perf_counter()
        trainer.fit()
        return time.perf_counter() - t0, len(data.train)


def eval_ratio(n_events: int, n_items: int, hidden: int = 64, batch: int = 1024, reps: int = 3) -> tuple[float, float]:
    """(learec evaluator events/s, bare matmul+topk events/s) on the same precomputed states and head."""
    gen = torch.Generator().manual_seed(0)
    states = torch.randn(n_events, hidden, generator=gen)
    weight, bias = torch.randn(n_items, hidden, generator=gen), torch.randn(n_items, generator=gen)
    rng = np.random.default_rng(0)
    # The evaluator is handed row indices as its "histories" so the scorer is the same matmul as the baseline.
    data = EvalSet(history=np.arange(n_events, dtype=np.int32)[:, None], length=np.ones(n_events, np.int32),
                   target=rng.integers(0, n_items, n_events).astype(np.int32), event=np.zeros(n_events, np.int8),
                   user=np.arange(n_events, dtype=np.int32),
                   position=np.ones(n_events, np.int32))

    def scorer(hist: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.addmm(bias, states[hist[:, 0]], weight.T)

    def ours() -> None:
        evaluate(scorer, data, ["interaction"], [5, 10, 20], batch_size=batch)

    def bare() -> None:
        for start in range(0, n_events, batch):
            torch.topk(torch.addmm(bias, states[start:start + batch], weight.T), 20, dim=1)

    best = {}
    for name, fn in (("ours", ours), ("bare", bare)):
        fn()  # warm-up
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        best[name] = n_events / min(times)
    return best["ours"], best["bare"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full-epochs", action="store_true", help="also time one whole SASRec epoch per protocol")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")

    print("\n## training throughput (batch 256, hidden 64), transitions/s")
    print("| backbone | sqn (L=10) | loo (L=50) |\n|---|---|---|")
    for backbone in ("gru4rec", "caser", "nextitnet", "sasrec"):
        sqn, loo = train_throughput(backbone, "sqn"), train_throughput(backbone, "loo")
        print(f"| {backbone} | {sqn:,.0f} | {loo:,.0f} |")

    if args.full_epochs:
        print("\n## one full SASRec epoch (targets: sqn < 30 s, loo < 60 s)")
        for protocol in ("sqn", "loo"):
            seconds, n = full_epoch_seconds(protocol)
            print(f"{protocol}: {seconds:.1f} s for {n:,} transitions ({n / seconds:,.0f}/s)")

    print("\n## full-ranking evaluation, events/s (target: ratio >= 0.70)")
    print("| shape (batch) | learec evaluator | bare matmul+topk | ratio |\n|---|---|---|---|")
    for n_events, n_items, batch in ((8507, 1682, 1024), (20000, 100000, 256)):
        ours, bare = eval_ratio(n_events, n_items, batch=batch)
        print(f"| {n_events:,} events x {n_items:,} items ({batch}) | {ours:,.0f} | {bare:,.0f} | {ours / bare:.2f} |")


if __name__ == "__main__":
    main()
