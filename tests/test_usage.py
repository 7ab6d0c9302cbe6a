"""Wall time and peak memory of stages (learec.usage): what each stage records, and `learec usage`."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from learec import usage
from learec.cli import main
from learec.usage import USAGE_FILE, find_usage, read_usage, recorded, usage_table

LINUX_PEAK = sys.platform == "linux" and usage.reset_peak()
MIB = 2**20


def _rss_mib() -> float:
    return int(re.search(r"^VmRSS:\s+(\d+)", Path("/proc/self/status").read_text(), re.MULTILINE).group(1)) / 1024


def _hold(mib: int) -> None:
    """Make ``mib`` MiB resident for a moment (written, so the pages are really touched)."""
    block = np.ones(mib * MIB // 8)
    block[::512] += 1.0
    del block


def _line(stage: str, seconds: float, **extra: object) -> str:
    return json.dumps({"stage": stage, "seconds": seconds, "peak_mib": 100.0, "peak_scope": "stage",
                       "completed": True, "fresh": True, "threads": 1, "ended": "2026-12-05T10:00:00", **extra})


@pytest.mark.skipif(not LINUX_PEAK, reason="per-stage peaks need /proc/self/clear_refs")
def test_a_stage_records_its_wall_time_and_its_own_peak(tmp_path: Path) -> None:
    resident = _rss_mib()
    with recorded(tmp_path, "big"):
        _hold(300)
        time.sleep(0.2)
    with recorded(tmp_path, "small"):
        _hold(20)
    big, small = read_usage(tmp_path)
    assert (big.stage, small.stage) == ("big", "small") and big.completed and small.completed
    assert big.seconds >= 0.2 and big.invocations == 1 and not big.whole_process
    assert big.peak_mib >= resident + 280  # the block on top of what was resident before
    # the high-water mark was reset: the small stage does not inherit the big one's peak
    assert small.peak_mib < big.peak_mib - 250


@pytest.mark.skipif(not LINUX_PEAK, reason="per-stage peaks need /proc/self/clear_refs")
def test_an_enclosing_stage_keeps_the_peaks_of_what_it_encloses(tmp_path: Path) -> None:
    with recorded(tmp_path, "outer"):
        _hold(300)  # before the first inner stage resets the mark
        with recorded(tmp_path, "inner"):
            _hold(100)
    with recorded(tmp_path, "outer2"):
        _hold(50)
        with recorded(tmp_path, "inner2"):
            _hold(400)  # larger than anything its enclosing stage held itself
        with recorded(tmp_path, "inner3"):  # resets the mark again after inner2's peak
            _hold(10)
    by = {u.stage: u for u in read_usage(tmp_path)}
    assert by["outer"].peak_mib >= by["inner"].peak_mib + 150  # its own 300 MiB before the inner reset
    assert by["outer2"].peak_mib >= by["inner2"].peak_mib - 1  # the inner stage's 400 MiB, handed outwards
    assert by["outer2"].peak_mib >= by["outer"].peak_mib + 50


def test_a_resumed_stage_adds_its_time_and_a_fresh_start_replaces_it(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with recorded(tmp_path, "labelling"):
            time.sleep(0.1)
            raise KeyboardInterrupt
    (only,) = read_usage(tmp_path)
    assert not only.completed and only.seconds >= 0.1
    with open(tmp_path / USAGE_FILE, "a") as out:
        out.write('{"stage": "labelling", "seco')  # a process killed while writing its line
    with recorded(tmp_path, "labelling", fresh=False):  # resumes: its seconds add to the first part's
        time.sleep(0.1)
    lines = [json.loads(x) for x in (tmp_path / USAGE_FILE).read_text().splitlines() if x.endswith("}")]
    assert len(lines) == 2  # the torn line did not swallow the next one
    (resumed,) = read_usage(tmp_path)
    assert resumed.completed and resumed.invocations == 2
    assert resumed.seconds == pytest.approx(lines[0]["seconds"] + lines[1]["seconds"])
    with recorded(tmp_path, "labelling"):  # made again from scratch (other inputs): a new count
        pass
    (remade,) = read_usage(tmp_path)
    assert remade.invocations == 1 and remade.seconds < 0.1
    with recorded(tmp_path, "copied") as record:
        record.skip()  # the stage made nothing itself
    assert [u.stage for u in read_usage(tmp_path)] == ["labelling"]


def test_the_table_groups_runs_by_stage_and_leaves_out_copies_and_stale_runs(tmp_path: Path) -> None:
    for name, seconds, completed in (("a", 60.0, True), ("b", 180.0, True), ("c", 30.0, False)):
        (tmp_path / name).mkdir()
        (tmp_path / name / USAGE_FILE).write_text(_line("train sasrec-snqn", seconds, completed=completed,
                                                        peak_mib=300.0 if name == "b" else 100.0) + "\n")
    for hidden in (".stale/a", "copy"):  # a grid's stale run, and a run copied in by --reuse
        (tmp_path / hidden).mkdir(parents=True)
        (tmp_path / hidden / USAGE_FILE).write_text(_line("train sasrec-snqn", 999.0) + "\n")
    (tmp_path / "copy" / "reused_from.txt").write_text("elsewhere\n")
    found = find_usage([tmp_path])
    assert sorted(u.run_dir.name for u in found) == ["a", "b", "c", "copy"]
    table = usage_table(found).splitlines()
    # 3 runs, 4 min 30 s in all; mean and longest over the 2 finished ones; the largest peak; 1 unfinished
    assert table[2] == "| train sasrec-snqn | 3 | 4m 30s | 2m 00s | 3m 00s | 300 MiB | 1 |"
    assert "1 stage(s) of runs copied with --reuse left out" in table[3]
    each = usage_table(found, each=True, root=tmp_path).splitlines()
    assert "| a | train sasrec-snqn | 1m 00s | 100 MiB | 1 | 1 | yes |" in each
    assert any(row.startswith("| copy (reused) |") for row in each)


def test_a_training_run_records_its_usage_and_learec_usage_prints_it(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    from learec.config import load_config
    from learec.train.run import train_run

    cfg = load_config(None, ["data.dataset=synthetic", "data.protocol=sqn", "data.history=5", "model.hidden=16",
                             "model.backbone=gru4rec", "objective=sqn", "train.epochs=1", "train.threads=1",
                             "train.progress=false", "eval.batch_size=512"])
    run_dir = tmp_path / "runs" / "one"
    train_run(cfg, run_dir)
    train_run(None, run_dir, resume=True)  # finished: nothing is trained, nothing recorded
    (only,) = read_usage(run_dir)
    assert only.stage == "train gru4rec sqn" and only.completed and only.invocations == 1 and only.threads == 1
    (run_dir / "metrics.json").unlink()  # as if killed after its last checkpoint: the resumed part adds up
    train_run(None, run_dir, resume=True)
    (resumed,) = read_usage(run_dir)
    assert resumed.invocations == 2 and resumed.seconds > only.seconds
    train_run(cfg, tmp_path / "runs" / "gru4rec-sqn-seed3")  # a grid cell: grouped by its name without the seed
    assert [u.stage for u in read_usage(tmp_path / "runs" / "gru4rec-sqn-seed3")] == ["train gru4rec-sqn"]
    assert main(["usage", str(tmp_path / "runs"), "--each"]) == 0
    assert "| one | train gru4rec sqn |" in capsys.readouterr().out
    assert main(["usage", str(run_dir), "--each"]) == 0
    assert "| one | train gru4rec sqn |" in capsys.readouterr().out  # the directory's own name, not '.'
    assert main(["usage", str(tmp_path / "nothing-here")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["usage", str(tmp_path / "empty")]) == 2
    assert "no usage.jsonl" in capsys.readouterr().err
