"""What every stage that writes a run directory does: hold its lock, copy the log into it.

One writer per run directory: an advisory ``fcntl`` lock on ``DIR/.lock``.

Two processes writing one run (a resume started while the first run still trains, two grid workers handed
the same cell) would interleave checkpoints and logs. The lock is held for as long as the process writes;
the kernel drops it when the process ends, however it ends, so a killed run never leaves a stale lock.
The holder's PID is written into the file so that a refused writer can say who holds it.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from learec.errors import UserError

LOCK_FILE = ".lock"


@contextmanager
def exclusive_run_dir(directory: Path, what: str = "run") -> Iterator[None]:
    """Hold ``directory``'s lock for the block; another holder makes this a ``UserError`` naming its PID."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise UserError(f"Another process (PID {holder}) is writing the {what} in {directory}",
                            "wait for it to finish or stop it; two writers would corrupt the directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextmanager
def log_to_file(run_dir: Path, name: str = "train.log") -> Iterator[None]:
    """Copy the ``learec`` log into ``run_dir/name`` while the block runs."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / name)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("learec")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
