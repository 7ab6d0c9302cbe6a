"""Running under ``torchrun``: the process group, rank helpers and sharding.

``learec train``, ``learec env train`` and ``learec env label`` run unchanged under
``torchrun --nproc_per_node N -m learec ...``: torchrun sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` and the
CLI calls :func:`init_from_env`, which joins the process group (gloo for CPU tensors, NCCL for CUDA
ones). Without torchrun every helper here answers as a single process (rank 0 of 1), so the rest of the
code calls them unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger("learec")
T = TypeVar("T")


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env() -> bool:
    """Join the process group torchrun describes (no-op outside torchrun); returns whether distributed."""
    if not launched_by_torchrun():
        return False
    if not dist.is_initialized():
        # one group serves both: gloo for CPU tensors (evaluation gathers, CPU training), NCCL for CUDA ones
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())
        # rank 0 alone runs some stages (item tokens, joining label shards) while the others wait at a
        # barrier: allow long waits (LEAREC_DIST_TIMEOUT_MINUTES, default 4 hours)
        minutes = float(os.environ.get("LEAREC_DIST_TIMEOUT_MINUTES", "240"))
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=minutes))
    if not is_main():
        logging.getLogger("learec").setLevel(logging.WARNING)  # one rank speaks
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def main_first(make: Callable[[], T]) -> T:
    """``make()`` on rank 0, then on the other ranks, which find what rank 0 wrote (prepared data, a
    config); once without torchrun."""
    if is_main():
        result = make()
        barrier()
        return result
    barrier()
    return make()


def shard(n: int, part: int | None = None, parts: int | None = None) -> slice:
    """The contiguous ``part`` of ``range(n)`` (default: this rank's), sizes as ``np.array_split``'s."""
    part = rank() if part is None else part
    parts = world_size() if parts is None else parts
    base, extra = divmod(n, parts)
    start = part * base + min(part, extra)
    return slice(start, start + base + (1 if part < extra else 0))


def gather_shards(local: np.ndarray, n: int) -> np.ndarray:
    """Concatenate every rank's ``local`` (rank order; each rank's the :func:`shard` of ``n`` rows) on
    every rank. Tensors are padded to the largest shard, as ``all_gather`` needs equal sizes."""
    if not is_distributed():
        return local
    world = world_size()
    sizes = [shard(n, r, world).stop - shard(n, r, world).start for r in range(world)]
    if len(local) != sizes[rank()]:
        raise ValueError(f"rank {rank()} holds {len(local)} rows, its shard of {n} has {sizes[rank()]}")
    padded = torch.zeros((max(sizes),) + local.shape[1:], dtype=torch.from_numpy(local[:0]).dtype)
    padded[: len(local)] = torch.from_numpy(np.ascontiguousarray(local))
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return np.concatenate([g[:s].numpy() for g, s in zip(gathered, sizes)])


def broadcast_object(obj: object) -> object:
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def torchrun_command(nproc: int, *args: str) -> list[str]:
    """``python -m torch.distributed.run`` with ``nproc`` local processes on a free port, then ``args``
    (e.g. ``-m learec train ...``): how tests and benchmarks launch several ranks on one machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
            str(port), *args]


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
