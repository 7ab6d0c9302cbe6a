"""Preparing a RetailRocket-format event log of at least 1 GB: wall time and peak memory (target <= 4 GB).

    python benchmarks/bench_prepare.py [--gib 1.0] [--workdir /tmp] [--seed 0]

Writes a synthetic ``events.csv`` in RetailRocket's exact format (header, millisecond times, view /
addtocart / transaction, transaction ids) into a temporary directory, then runs
``learec data prepare retailrocket --raw DIR --set data.protocol=sqn --set data.history=10`` (the
published setting) in a child process and reports its wall time and peak RSS (``ru_maxrss`` from
``wait4``). The directory, raw file and prepared arrays included, is deleted afterwards.

The log imitates the real one scaled up: events per visitor follow a Zipf law (exponent 2.5, mean ~1.95
as in the real 2.76M events / 1.41M visitors), item popularity is skewed, 96.7% views, 2.5% add-to-carts,
0.8% transactions, rows in random order within each block of 500,000 visitors.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

HEADER = b"timestamp,visitorid,event,itemid,transactionid\n"
T0, T1 = 1430622004384, 1442545187788  # the real log's first and last milliseconds (May-Sep 2015)


def write_events(path: Path, target_bytes: int, seed: int = 0, visitors_per_chunk: int = 500_000) -> int:
    """Append chunks of visitors until the file holds ``target_bytes``; returns the number of rows."""
    rng = np.random.default_rng(seed)
    n_items = max(1000, int(235_061 * target_bytes / 94e6))  # the real catalogue, scaled with the file
    rows, next_visitor, next_transaction = 0, 0, 0
    event_names = pa.array(["view", "addtocart", "transaction"])
    with open(path, "wb") as fh:
        fh.write(HEADER)
        while fh.tell() < target_bytes:
            lengths = np.minimum(rng.zipf(2.5, visitors_per_chunk), 1000)
            n = int(lengths.sum())
            visitor = np.repeat(np.arange(next_visitor, next_visitor + visitors_per_chunk), lengths)
            next_visitor += visitors_per_chunk
            first = np.cumsum(lengths) - lengths
            gaps = rng.exponential(300_000, n).astype(np.int64)  # ~5 minutes between a visitor's events
            elapsed = np.cumsum(gaps)
            elapsed -= np.repeat(elapsed[first] - gaps[first], lengths)  # restart the sum for each visitor
            timestamp = np.repeat(rng.integers(T0, T1, visitors_per_chunk), lengths) + elapsed
            item = (n_items * rng.random(n) ** 3).astype(np.int64)  # a few items are far more popular
            kind = rng.choice(3, size=n, p=[0.967, 0.025, 0.008])
            is_tx = kind == 2
            transaction = np.full(n, -1, dtype=np.int64)
            transaction[is_tx] = np.arange(next_transaction, next_transaction + int(is_tx.sum()))
            next_transaction += int(is_tx.sum())
            shuffle = rng.permutation(n)  # the real file is not ordered by visitor or time
            visitor, timestamp, item, kind, is_tx, transaction = (
                a[shuffle] for a in (visitor, timestamp, item, kind, is_tx, transaction))
            table = pa.table({
                "timestamp": timestamp, "visitorid": visitor,
                "event": pa.DictionaryArray.from_arrays(pa.array(kind.astype(np.int8)), event_names).cast(pa.string()),
                "itemid": item,
                "transactionid": pa.array(transaction, mask=~is_tx),  # empty unless a transaction, as in the file
            })
            pacsv.write_csv(table, fh, pacsv.WriteOptions(include_header=False, quoting_style="none"))
            rows += n
    return rows


def prepare_in_child(raw: Path, home: Path) -> tuple[float, float, int, str]:
    """(seconds, peak RSS in GiB, exit status, output) of `learec data prepare` in a child process."""
    cmd = [sys.executable, "-m", "learec", "data", "prepare", "retailrocket", "--raw", str(raw),
           "--set", "data.protocol=sqn", "--set", "data.history=10"]
    env = {**os.environ, "LEAREC_DATA_DIR": str(home)}
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - t0
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    return seconds, usage.ru_maxrss / 2**20, child.returncode, text  # ru_maxrss: KiB on Linux


def machine() -> str:
    """CPU model, core count and memory, read from /proc where there is one."""
    cpu, mem = platform.processor() or platform.machine(), ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        kib = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
        mem = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs{mem}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of the generated events.csv in GiB")
    parser.add_argument("--workdir", default=None, help="where the temporary directory goes (default: $TMPDIR)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="learec-bench-prepare-", dir=args.workdir))
    try:
        raw = tmp / "raw"
        raw.mkdir()
        t0 = time.perf_counter()
        rows = write_events(raw / "events.csv", int(args.gib * 2**30), args.seed)
        size = (raw / "events.csv").stat().st_size
        print(f"generated events.csv: {size / 2**30:.2f} GiB ({size:,} bytes), {rows:,} rows, "
              f"{time.perf_counter() - t0:.0f} s")
        seconds, peak_gib, status, output = prepare_in_child(raw, tmp / "home")
        print(output.strip())
        if status != 0:
            sys.exit(f"learec data prepare failed with status {status}")
        print(f"\nprepare: {seconds:.0f} s wall, peak RSS {peak_gib:.2f} GiB (target <= 4 GiB), "
              f"{rows / seconds:,.0f} raw rows/s")
        print(f"machine: {machine()}, Python {platform.python_version()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
