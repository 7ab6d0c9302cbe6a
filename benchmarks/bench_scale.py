"""Scale: a synthetic log of 10 million interactions over 100,000 items, prepared and trained with
SASRec-SNQN by one process and by two (torchrun/DDP), on the same work.

    python benchmarks/bench_scale.py [--interactions 10000000] [--items 100000] [--steps 60]
                                     [--warmup-steps 10] [--full-epoch] [--workdir /tmp]

1. Writes ``interactions.csv`` in the generic format (user, item, timestamp): users with Zipf-like
   lengths (5..500 events), skewed item popularity and some sequential structure.
2. ``learec data prepare`` (SQN protocol, history 10) in a child process: wall time and peak RSS.
3. SASRec-SNQN training (batch 256, the published settings) under
   ``torchrun --nproc_per_node P`` for P = 1 (2 threads) and P = 2 (1 thread each): the same global
   batches, so the same work. Each rank times the steps after ``--warmup-steps`` and reports its peak RSS
   and its PSS (proportional set size: the memory-mapped transitions, shared through the page cache,
   are counted once across processes, where RSS would count them in every rank). ``--full-epoch``
   trains one whole epoch instead of ``--steps`` steps (hours on 2 CPU cores: 100,000-item heads).

Prints the figures and the 2-vs-1 throughput ratio; the work directory is deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from learec.distributed import torchrun_command

DATA_SETTINGS = ["data.dataset=scale", "data.protocol=sqn", "data.history=10", "data.min_user_interactions=0",
                 "data.min_item_interactions=0"]
TRAIN_SETTINGS = ["model.backbone=sasrec", "objective=snqn", "train.batch_size=256", "train.epochs=1",
                  "train.progress=false", "train.patience=0"]


def write_log(path: Path, n: int, n_items: int, seed: int = 0) -> tuple[int, int]:
    """``n`` interactions in the generic format; returns (users, interactions)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.zipf(1.6, 2 * n // 20) + 4, 5, 500)
    lengths = lengths[: int(np.searchsorted(np.cumsum(lengths), n)) + 1]
    lengths[-1] -= int(lengths.sum()) - n
    lengths = lengths[lengths > 0]
    users = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    first = np.cumsum(lengths) - lengths
    # a skewed random walk: half the steps move to a nearby item, the rest jump to a popular one
    jump = (n_items * rng.random(n) ** 3).astype(np.int64)
    step = rng.integers(1, 4, n)
    item = np.where(rng.random(n) < 0.5, -1, jump)
    item[first] = jump[first]
    for _ in range(3):  # resolve "nearby" from the previous item (a few passes reach most chains)
        near = item < 0
        prev = np.roll(item, 1)
        fill = near & (prev >= 0)
        item[fill] = (prev[fill] + step[fill]) % n_items
    item[item < 0] = jump[item < 0]
    timestamp = 1_600_000_000 + np.arange(n, dtype=np.int64) - np.repeat(first, lengths)
    table = pa.table({"user": users, "item": item, "timestamp": timestamp})
    pacsv.write_csv(table, path)
    return len(lengths), n


def memory_mib() -> dict[str, float]:
    """This process's Rss/Pss, in all and split into anonymous (model, optimiser, activations) and
    file-backed (the memory-mapped arrays) pages, from ``/proc/self/smaps_rollup``."""
    fields = {}
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("Rss", "Pss", "Pss_Anon", "Pss_File"):
                fields[name.lower()] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return fields


def touch(arrays: dict[str, np.ndarray], block: int = 1 << 20) -> None:
    """Read every page of the memory-mapped arrays, as an epoch does."""
    for arr in arrays.values():
        for start in range(0, len(arr), block):
            np.asarray(arr[start:start + block]).sum()


def worker(args: argparse.Namespace) -> None:
    """One rank of the training measurement (run by torchrun)."""
    import torch

    from learec import distributed
    from learec.config import load_config
    from learec.data.prepared import prepare
    from learec.train.run import objective_for
    from learec.train.trainer import Trainer

    distributed.init_from_env()
    torch.set_num_threads(args.threads)
    steps = 0 if args.full_epoch else args.warmup_steps + args.steps
    cfg = load_config(None, [*DATA_SETTINGS, f"data.raw={args.raw}", *TRAIN_SETTINGS, f"train.max_steps={steps}"])
    data = prepare(cfg.data)
    objective = objective_for(cfg, data)
    run_dir = Path(args.run_dir)
    trainer = Trainer(cfg, data, objective, run_dir)

    clock: dict[str, float] = {}
    calls = {"n": 0}
    step = objective.train_step

    def timed_step(batch):  # times the steps after the warm-up, as the trainer takes them
        if calls["n"] == args.warmup_steps:
            clock["start"] = time.perf_counter()
        out = step(batch)
        calls["n"] += 1
        clock["end"] = time.perf_counter()
        return out

    objective.train_step = timed_step
    trainer.fit(validate=False)
    # the steps read a sample of the transitions; an epoch reads them all: fault every page in
    touch(data.train.arrays())
    timed = calls["n"] - args.warmup_steps
    mine = {"rank": distributed.rank(), "steps": calls["n"], "timed_steps": timed,
            "seconds": clock["end"] - clock["start"], "memory_mib": memory_mib(),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    ranks = [mine]
    if distributed.is_distributed():
        ranks = [None] * distributed.world_size()
        torch.distributed.all_gather_object(ranks, mine)
    if distributed.is_main():
        Path(args.out).write_text(json.dumps({"world": distributed.world_size(), "threads": args.threads,
                                              "batch": cfg.train.batch_size, "ranks": ranks}))
    distributed.shutdown()


def _child(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``cmd``; its wall seconds and the peak RSS (MiB) of its largest process."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}")
    return time.time() - t0, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, default=10_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=60, help="timed training steps per configuration")
    parser.add_argument("--warmup-steps", type=int, default=10, help="untimed steps first")
    parser.add_argument("--full-epoch", action="store_true", help="train one whole epoch instead of --steps")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    # worker mode (internal: run under torchrun by the benchmark itself)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--raw", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    work = Path(tempfile.mkdtemp(prefix="learec-scale-", dir=args.workdir))
    env = {**os.environ, "LEAREC_DATA_DIR": str(work / "home")}
    try:
        raw = work / "raw"
        raw.mkdir()
        t0 = time.time()
        users, n = write_log(raw / "interactions.csv", args.interactions, args.items)
        size = (raw / "interactions.csv").stat().st_size
        print(f"log: {n:,} interactions, {users:,} users, {args.items:,} items, {size / 2**20:.0f} MiB "
              f"written in {time.time() - t0:.0f} s")
        prep_cmd = [sys.executable, "-m", "learec", "data", "prepare", "scale", "--raw", str(raw)]
        for item in DATA_SETTINGS[1:]:
            prep_cmd += ["--set", item]
        seconds, rss = _child(prep_cmd, env)
        print(f"prepare: {seconds:.0f} s, peak RSS {rss / 1024:.2f} GiB")

        results = {}
        for world, threads in ((1, 2), (2, 1)):
            out = work / f"train-{world}.json"
            cmd = [*torchrun_command(world, __file__), "--worker", "--raw", str(raw),
                   "--run-dir", str(work / f"run-{world}"), "--out", str(out), "--threads", str(threads), "--steps", str(args.steps),
                   "--warmup-steps", str(args.warmup_steps), *(["--full-epoch"] if args.full_epoch else [])]
            wall, _ = _child(cmd, {**env, "OMP_NUM_THREADS": str(threads)})
            res = json.loads(out.read_text())
            seconds = max(r["seconds"] for r in res["ranks"])
            timed = res["ranks"][0]["timed_steps"]
            res["transitions_per_s"] = timed * res["batch"] / seconds
            res["wall_s"] = wall
            results[world] = res
            mem = [r["memory_mib"] for r in res["ranks"]]

            def gib(key: str) -> str:
                return " + ".join(f"{m.get(key, float('nan')) / 1024:.2f}" for m in mem)

            print(f"train, {world} process(es) x {threads} thread(s): {timed} steps of {res['batch']} in "
                  f"{seconds:.1f} s = {res['transitions_per_s']:.0f} transitions/s")
            print(f"  memory after the steps and a read of every transition page, per rank (GiB): RSS {gib('rss')}; "
                  f"PSS {gib('pss')} = anonymous {gib('pss_anon')} + memory-mapped files {gib('pss_file')}; "
                  f"peak RSS " + " + ".join(f"{r['peak_rss_mib'] / 1024:.2f}" for r in res["ranks"]))
        ratio = results[2]["transitions_per_s"] / results[1]["transitions_per_s"]
        print(f"2 processes vs 1: throughput ratio {ratio:.2f}")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
