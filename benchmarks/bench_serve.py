"""Load test of `learec serve` on loopback: throughput and latency at concurrency, beside one-at-a-time.

Starts `python -m learec serve MODEL_DIR` as its own process on 127.0.0.1 (a free port), warms it up, then
in one run:

1. one request at a time over one keep-alive connection (``--sequential`` requests);
2. a bounded load: ``--requests`` requests over ``--concurrency`` keep-alive connections.

Every answer is checked (status 200, JSON, k items), and a sample is compared with the model's own top-k
computed in this process. The client is a minimal asyncio HTTP/1.1 client rather than httpx so that, on a
2-core machine, the load generator takes as little CPU as possible from the server it measures.

    python benchmarks/bench_serve.py --run runs/demo-ml100k-sasrec          # export to a temp dir first
    python benchmarks/bench_serve.py --model MODEL_DIR --micro-batch 1 64   # compare micro-batching off/on
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TIMEOUT_S = 10.0  # per request; the whole load is bounded by requests x this


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return (f"{os.cpu_count()} CPU cores ({cpu}), Python {platform.python_version()}, torch {torch.__version__}, "
            f"load average before the run {os.getloadavg()[0]:.2f}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_bodies(item_ids: list, history_length: int, n: int, k: int, seed: int = 0) -> list[dict]:
    """Histories of 1..2L random catalogue items (half longer than L, so truncation is exercised)."""
    rng = random.Random(seed)
    return [{"history": rng.sample(item_ids, rng.randint(1, 2 * history_length)), "k": k,
             "exclude_seen": rng.random() < 0.5} for _ in range(n)]


class Connection:
    """One keep-alive HTTP/1.1 connection: POST a JSON body, read one response."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer:
            self.writer.close()


async def run_load(port: int, bodies: list[bytes], ks: list[int], concurrency: int) -> dict:
    """Send every body once over ``concurrency`` connections; latencies in ms, errors counted."""
    latencies = np.zeros(len(bodies))
    answers: list[dict | None] = [None] * len(bodies)
    errors: list[str] = []
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        conn = Connection("127.0.0.1", port)
        await conn.open()
        try:
            while next_index < len(bodies):
                i = next_index
                next_index += 1
                t0 = time.perf_counter()
                try:
                    status, payload = await asyncio.wait_for(conn.post("/recommend", bodies[i]), TIMEOUT_S)
                except (asyncio.TimeoutError, OSError, ValueError, asyncio.IncompleteReadError) as err:
                    errors.append(f"request {i}: {type(err).__name__}")
                    conn.close()
                    conn = Connection("127.0.0.1", port)
                    await conn.open()
                    continue
                latencies[i] = (time.perf_counter() - t0) * 1e3
                if status != 200:
                    errors.append(f"request {i}: HTTP {status} {payload[:200]!r}")
                    continue
                answer = json.loads(payload)
                if len(answer["items"]) != ks[i]:
                    errors.append(f"request {i}: {len(answer['items'])} items, asked for {ks[i]}")
                answers[i] = answer
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    ok = latencies[latencies > 0]
    return {"requests": len(bodies), "concurrency": concurrency, "seconds": round(wall, 3),
            "throughput_rps": round(len(bodies) / wall, 1), "p50_ms": round(float(np.percentile(ok, 50)), 2),
            "p90_ms": round(float(np.percentile(ok, 90)), 2), "p99_ms": round(float(np.percentile(ok, 99)), 2),
            "max_ms": round(float(ok.max()), 2), "errors": len(errors), "error_samples": errors[:5],
            "answers": answers}


def get_json(port: int, path: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read())


def start_server(model_dir: Path, port: int, micro_batch: int, threads: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "learec", "serve", str(model_dir), "--port", str(port), "--threads", str(threads),
           "--micro-batch", str(micro_batch), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)  # its warnings and errors go to our stderr
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode} (its messages are above)")
        try:
            get_json(port, "/health")
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start within 120 s")


def check_answers(model_dir: Path, bodies: list[dict], answers: list[dict | None], sample: int = 200) -> int:
    """How many of a sample of served answers differ from the model's own top-k (must be 0)."""
    from learec.serve.recommender import Recommender

    rec = Recommender.from_pretrained(model_dir)
    wrong = 0
    for i in range(0, len(bodies), max(1, len(bodies) // sample)):
        if answers[i] is None:
            continue
        b = bodies[i]
        expected = rec.recommend(b["history"], b["k"], b["exclude_seen"])
        if [x["id"] for x in expected.items] != [x["id"] for x in answers[i]["items"]]:
            wrong += 1
    return wrong


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def bench(model_dir: Path, micro_batch: int, args: argparse.Namespace, bodies: list[dict]) -> dict:
    encoded = [json.dumps(b).encode() for b in bodies]
    ks = [b["k"] for b in bodies]
    port = free_port()
    proc = start_server(model_dir, port, micro_batch, args.threads)
    try:
        n_seq = args.sequential
        asyncio.run(run_load(port, encoded[:200], ks[:200], args.concurrency))  # warm-up, not reported
        seq = asyncio.run(run_load(port, encoded[:n_seq], ks[:n_seq], 1))
        before = get_json(port, "/health")["micro_batches"]
        server_cpu, client_cpu = cpu_seconds(proc.pid), time.process_time()
        load = asyncio.run(run_load(port, encoded, ks, args.concurrency))
        server_cpu, client_cpu = cpu_seconds(proc.pid) - server_cpu, time.process_time() - client_cpu
        after = get_json(port, "/health")["micro_batches"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    calls = after["forward_calls"] - before["forward_calls"]
    load["server_cpu_ms_per_request"] = round(server_cpu * 1e3 / len(bodies), 3)
    load["client_cpu_ms_per_request"] = round(client_cpu * 1e3 / len(bodies), 3)
    load["queries_per_forward"] = round((after["queries"] - before["queries"]) / max(calls, 1), 2)
    load["wrong_answers_in_sample"] = check_answers(model_dir, bodies, load.pop("answers"))
    seq.pop("answers")
    return {"micro_batch": micro_batch, "sequential": seq, "load": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="an exported model directory (learec export)")
    src.add_argument("--run", help="a training run directory: exported to a temporary directory first")
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--sequential", type=int, default=1000, help="requests sent one at a time")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="server torch threads")
    ap.add_argument("--micro-batch", type=int, nargs="+", default=[64],
                    help="server --micro-batch settings to measure (1 = off), e.g. 1 64")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.run:
            from learec.serve.export import export_run

            model_dir = Path(tmp) / "model"
            export_run(args.run, model_dir)
        else:
            model_dir = Path(args.model)
        from learec.serve.recommender import Recommender

        rec = Recommender.from_pretrained(model_dir)
        ids = [rec.catalog.public_id(i) for i in range(rec.n_items)]
        bodies = make_bodies(ids, rec.history_length, args.requests, args.k)
        print(f"machine: {machine()}")
        print(f"model: {json.dumps(rec.summary())}")
        print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n")
        results = [bench(model_dir, mb, args, bodies) for mb in args.micro_batch]

    print("| micro-batch | mode | requests | concurrency | throughput (req/s) | p50 (ms) | p99 (ms) | max (ms) | "
          "errors | queries/forward | server CPU ms/req | client CPU ms/req |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for mode in ("sequential", "load"):
            m = r[mode]
            print(f"| {r['micro_batch']} | {'one at a time' if mode == 'sequential' else 'concurrent'} | "
                  f"{m['requests']} | {m['concurrency']} | {m['throughput_rps']} | {m['p50_ms']} | {m['p99_ms']} | "
                  f"{m['max_ms']} | {m['errors']} | {m.get('queries_per_forward', '-')} | "
                  f"{m.get('server_cpu_ms_per_request', '-')} | {m.get('client_cpu_ms_per_request', '-')} |")
    for r in results:
        for mode in ("sequential", "load"):
            if r[mode]["errors"]:
                print(f"errors ({mode}, micro-batch {r['micro_batch']}): {r[mode]['error_samples']}")
        print(f"micro-batch {r['micro_batch']}: {r['load']['wrong_answers_in_sample']} wrong answers in a sample of "
              "served top-k lists checked against the model in-process")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    failed = any(r[m]["errors"] for r in results for m in ("sequential", "load")) or any(
        r["load"]["wrong_answers_in_sample"] for r in results)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    from learec.errors import UserError

    try:
        main()
    except UserError as err:
        sys.exit(f"bench_serve: {err}")
