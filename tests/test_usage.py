"""Wall time and peak memory of stages (learec.usage): what each stage records, and `learec usage`."""

from __future__ import annotations

import json
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


def _hold(mib: int) -> None:
    """Make ``mib`` MiB resident for a moment (written, so the pages are really touched)."""
    block = np.ones(mib * MIB // 8)
    block[::512] += 1.0
    del block


def test_a_stage_records_its_wall_time_and_its_own_peak(tmp_path: Path) -> None:
    with recorded(tmp_path, "big"):
        _hold(300)
        time.sleep(0.2)
    with recorded(tmp_path, "small"):
        _hold(20)
    big, small = read_usage(tmp_path)
    assert (big.stage, small.stage) == ("big", "small") and big.completed and small.completed
    assert big.seconds >= 0.2 and big.invocations == 1
    assert big.peak_mib >= 300  # the process held at least the 300 MiB block
    if LINUX_PEAK:  # the high-water mark was reset: the small stage does not inherit the big one's peak
        assert small.peak_mib < big.peak_mib - 250
        assert json.loads((tmp_path / USAGE_FILE).read_text().splitlines()[0])["peak_scope"] == "stage"


@pytest.mark.skipif(not LINUX_PEAK, reason="per-stage peaks need /proc/self/clear_refs")
def test_an_enclosing_stage_keeps_the_peaks_of_what_it_encloses(tmp_path: Path) -> None:
    with recorded(tmp_path, "outer"):
        _hold(300)  # before the inner stage resets the mark
        with recorded(tmp_path, "inner"):
            _hold(150)
    by_stage = {u.stage: u for u in read_usage(tmp_path)}
    assert by_stage["outer"].peak_mib >= by_stage["inner"].peak_mib + 100  # its own 300 MiB, not the inner's 150
    assert by_stage["inner"].peak_mib < by_stage["outer"].peak_mib


def test_an_interrupted_stage_is_recorded_and_a_resumed_one_adds_its_time(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with recorded(tmp_path, "labelling"):
            time.sleep(0.1)
            raise KeyboardInterrupt
    (only,) = read_usage(tmp_path)
    assert not only.completed and only.seconds >= 0.1
    with recorded(tmp_path, "labelling"):
        time.sleep(0.1)
    with open(tmp_path / USAGE_FILE, "a") as out:
        out.write('{"stage": "labelling", "seco')  # a process killed while writing its line
    (resumed,) = read_usage(tmp_path)
    lines = [json.loads(x) for x in (tmp_path / USAGE_FILE).read_text().splitlines()[:2]]
    assert resumed.completed and resumed.invocations == 2
    assert resumed.seconds == pytest.approx(lines[0]["seconds"] + lines[1]["seconds"])
    assert resumed.peak_mib == max(x["peak_mib"] for x in lines)


def test_the_table_groups_runs_by_stage_and_lists_each_with_each(tmp_path: Path) -> None:
    for name, seconds in (("a", 60.0), ("b", 180.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / USAGE_FILE).write_text(json.dumps(
            {"stage": "train sasrec snqn", "seconds": seconds, "peak_mib": 100.0 if name == "a" else 300.0,
             "peak_scope": "stage", "completed": name == "a", "threads": 1, "ended": "x"}) + "\n")
    found = find_usage([tmp_path])
    assert [u.run_dir.name for u in found] == ["a", "b"]
    grouped = usage_table(found).splitlines()[2]
    # 2 runs, 4 min in all, 2 min on average, 3 min the longest, 300 MiB the largest peak, 1 unfinished
    assert grouped == "| train sasrec snqn | 2 | 4m 00s | 2m 00s | 3m 00s | 300 MiB | 1 |"
    each = usage_table(found, each=True, root=tmp_path).splitlines()
    assert each[2].startswith("| a | train sasrec snqn | 1m 00s | 100 MiB | 1 | 1 | yes |")
    assert each[3].endswith("| no |")


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
    assert main(["usage", str(tmp_path / "runs"), "--each"]) == 0
    assert "| one | train gru4rec sqn |" in capsys.readouterr().out
    assert main(["usage", str(tmp_path / "nothing-here")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["usage", str(tmp_path / "empty")]) == 2
    assert "no usage.jsonl" in capsys.readouterr().err
