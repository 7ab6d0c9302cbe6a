"""The run-directory lock: a second writer is refused with the holder's PID; a dead holder leaves none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from learec.errors import UserError
from learec.rundir import exclusive_run_dir

HOLD = """
import sys, time
from learec.rundir import exclusive_run_dir
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


def test_a_run_still_training_refuses_a_second_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`learec train --resume` started while the same run still trains is refused, naming the holder."""
    from learec.cli import main

    monkeypatch.setenv("LEAREC_DATA_DIR", str(tmp_path / "data"))
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", "--resume", "--run-dir", str(run)]) == 2
    finally:
        holder.kill()
        holder.wait()


def test_a_failed_start_leaves_no_empty_run_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    from learec.cli import main

    monkeypatch.setenv("LEAREC_DATA_DIR", str(tmp_path / "data"))
    run, config = tmp_path / "run", tmp_path / "config.yaml"
    config.write_text("data: {dataset: no-such-data}\n")
    assert main(["train", "--config", str(config), "--run-dir", str(run)]) == 2
    assert "Unknown dataset" in capsys.readouterr().err
    assert not run.exists()
