"""Bad input, one case per kind, through the command line as a user types it: every one ends with exit
status 2, a single `learec: error:` line naming the problem (then its `What to do:` line), no traceback,
and nothing written outside the data directory and the run directory named on the command line.

The detailed behaviour of each check is tested beside its code (test_data, test_cli, test_devices,
test_no_pickle, test_rundir, ...); this suite is the user's-eye view of all of them together.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from learec.cli import main


def _raw(tmp: Path, interactions: str, items: str | None = None) -> str:
    raw = tmp / "raw"
    raw.mkdir(exist_ok=True)
    (raw / "interactions.csv").write_text(interactions)
    if items is not None:
        (raw / "items.csv").write_text(items)
    return str(raw)


def _file(tmp: Path, name: str, content: str | bytes) -> str:
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


GOOD = "user,item,timestamp\n" + "".join(f"u{i % 5},{i % 7},{i}\n" for i in range(40))
CASES = {
    # data files
    "row longer than header": lambda t: ["data", "prepare", "mine", "--raw", _raw(t, "user,item,timestamp\na,1,1,7\n")],
    "items row longer than header": lambda t: ["data", "prepare", "mine", "--raw", _raw(t, GOOD, "item,name\n1,a,b\n")],
    "timestamp not a number": lambda t: ["data", "prepare", "mine", "--raw", _raw(t, "user,item,timestamp\na,1,x\n")],
    "empty user id": lambda t: ["data", "prepare", "mine", "--raw", _raw(t, "user,item,timestamp\n,1,1\n")],
    "empty event": lambda t: ["data", "prepare", "mine", "--raw", _raw(t, "user,item,timestamp,event\na,1,1,\n")],
    "missing column": lambda t: ["data", "prepare", "mine", "--raw", _raw(t, "user,item,time\na,1,1\n")],
    "empty file": lambda t: ["data", "prepare", "mine", "--raw", _raw(t, "")],
    "too many event types": lambda t: ["data", "prepare", "mine", "--raw", _raw(
        t, "user,item,timestamp,event\n" + "".join(f"u,{i},{i},e{i}\n" for i in range(130)))],
    "unknown dataset": lambda t: ["data", "stats", "no-such-data"],
    "dataset name with a path": lambda t: ["data", "fetch", "../outside"],
    # configs
    "unknown key": lambda t: ["config", "show", "--set", "train.epoch=3"],
    "unknown backbone": lambda t: ["config", "show", "--set", "model.backbone=bert"],
    "unknown objective": lambda t: ["config", "show", "--set", "objective=dqn"],
    "bad device name": lambda t: ["config", "show", "--set", "train.device=cdua"],
    "huge seed": lambda t: ["config", "show", "--set", "seed=123456789012345678901234"],
    "k of zero": lambda t: ["config", "show", "--set", "eval.ks=[0,10]"],
    "infinite learning rate": lambda t: ["config", "show", "--set", "train.lr=.inf"],
    "augment_k without augment": lambda t: ["config", "show", "--set", "lea.augment_k=2"],
    "warm-up in steps and in epochs": lambda t: ["config", "show", "--set", "rl.warmup_steps=10", "--set",
                                                 "rl.warmup_epochs=1"],
    "key given twice": lambda t: ["config", "show", "--config", _file(t, "c.yaml", "seed: 1\nseed: 2\n")],
    "config not UTF-8": lambda t: ["config", "show", "--config", _file(t, "c.yaml", b"data: {text_template: '\xe9'}\n")],
    "config not YAML": lambda t: ["config", "show", "--config", _file(t, "c.yaml", "a: [1\n")],
    "missing config file": lambda t: ["train", "--config", str(t / "nope.yaml")],
    # runs
    "cuda on a machine without it": lambda t: ["train", "--config", _file(t, "c.yaml", "seed: 0\n"), "--set",
                                               "train.device=cuda:7", "--run-dir", str(t / "run")],
    "resume with nothing to resume": lambda t: ["train", "--resume", "--run-dir", str(t / "run")],
    "evaluate a directory that is no run": lambda t: ["evaluate", str(t)],
    "export a directory that is no run": lambda t: ["export", str(t), "--out", str(t / "model")],
    "recommend from a missing model": lambda t: ["recommend", str(t / "no-model"), "--history", "1,2"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing_outside(case: str, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if case == "cuda on a machine without it":
        import torch

        if torch.cuda.device_count() > 7:
            pytest.skip("this machine has that GPU")
    work, data = tmp_path / "work", tmp_path / "data"
    work.mkdir()
    monkeypatch.setenv("LEAREC_DATA_DIR", str(data))
    monkeypatch.chdir(work)
    argv = CASES[case](tmp_path)
    before = set(tmp_path.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert lines[0].startswith("learec: error: ") and len(lines) <= 2, err
    assert all(line.startswith("  What to do: ") for line in lines[1:]), err
    written = {p for p in set(tmp_path.rglob("*")) - before if data not in p.parents and p != data}
    assert written == set(), (case, sorted(map(str, written)))
    assert not (tmp_path.parent / "outside").exists()
    assert os.listdir(work) == []
