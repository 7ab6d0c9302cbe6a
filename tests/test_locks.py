"""The run-directory lock: a second writer is refused with the holder's PID; a dead holder leaves none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from learec.errors import UserError
from learec.locks import exclusive_run_dir

HOLD = """
import sys, time
from learec.locks import exclusive_run_dir
with exclusive_run_dir(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"PID {holder.pid}"):
            with exclusive_run_dir(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with exclusive_run_dir(tmp_path):  # the kernel dropped the killed holder's lock
        pass


def test_the_lock_is_released_after_the_block_and_on_errors(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with exclusive_run_dir(tmp_path):
            raise RuntimeError("boom")
    with exclusive_run_dir(tmp_path):
        with pytest.raises(UserError, match=f"PID {os.getpid()}"):  # flock is per open file: refused in-process too
            with exclusive_run_dir(tmp_path):
                pass
