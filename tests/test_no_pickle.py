"""No code runs from the files of a run directory (they are shared between people and machines): every
file learec reads back is loaded with ``weights_only``, and a crafted, truncated, empty or foreign file is a
one-line error naming it, never a traceback. A planted pickle whose unpickling would write a marker file is
put in each file learec reads back (checkpoints, item tokens, LE training state, LE heads)."""

from __future__ import annotations

import os
import pickle
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from learec.cli import main
from learec.config import load_config
from learec.data.registry import raw_dir
from learec.data.synthetic import generate_synthetic_log
from learec.errors import UserError
from learec.train import trainer as trainer_mod
from learec.train.run import train_run
from learec.utils import atomic_torch_save, load_torch_file

ROOT = Path(__file__).parent.parent
SMOKE = ROOT / "configs" / "le_smoke.yaml"
SMALL = ["data.dataset=synthetic", "data.protocol=sqn", "data.history=5", "model.hidden=16", "train.batch_size=64",
         "train.threads=1", "train.progress=false", "train.patience=0", "eval.batch_size=512",
         "model.backbone=gru4rec", "train.epochs=2"]


class _Payload:
    """Unpickling this calls ``exec``, which writes ``marker``: what a crafted file could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


def _plant(path: Path, marker: Path, raw: bool = False) -> None:
    """Replace ``path`` with a file that runs code when unpickled (torch.save's zip, or a raw pickle)."""
    obj = {"objective": _Payload(marker), "embeddings": _Payload(marker)}
    if raw:
        with open(path, "wb") as fh:
            pickle.dump(obj, fh)
    else:
        torch.save(obj, path)


def _fails_cleanly(capsys: pytest.CaptureFixture, argv: list[str], path: Path, words: str) -> tuple[str, str]:
    """``learec argv`` exits 2 with one ``learec: error:`` line naming ``path`` and saying ``words``,
    then its hint, without a traceback; returns the two lines."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("learec: error:")]
    assert len(errors) == 1, err
    line = lines[errors[0]]
    assert str(path) in line and words in line, line
    hint = lines[errors[0] + 1]
    assert hint.startswith("  What to do: ")
    return line, hint


# --- a trained run ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run and its data directory (made once; tests copy the run)."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEAREC_DATA_DIR", str(root / "data"))
        generate_synthetic_log(raw_dir("synthetic"), n_users=100, n_items=40)
        train_run(load_config(None, SMALL), root / "run")
    return root


@pytest.fixture()
def run(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LEAREC_DATA_DIR", str(trained / "data"))
    return Path(shutil.copytree(trained / "run", tmp_path / "run"))


def _interrupted(run: Path) -> Path:
    """``run`` as if killed before it finished, so ``train --resume`` reads its last.pt."""
    (run / "metrics.json").unlink()
    return run


def test_the_planted_file_does_run_code_when_unpickled(tmp_path: Path) -> None:
    """The control: the payload of these tests is real, so its marker's absence below means something."""
    marker = tmp_path / "MARKER"
    _plant(tmp_path / "x.pt", marker)
    torch.load(tmp_path / "x.pt", weights_only=False)
    assert marker.read_text() == "code ran"


@pytest.mark.parametrize("name, argv, raw", [
    ("last.pt", lambda r: ["train", "--resume", "--run-dir", str(_interrupted(r))], False),
    ("last.pt", lambda r: ["train", "--resume", "--run-dir", str(_interrupted(r))], True),
    ("last.pt", lambda r: ["evaluate", str(r), "--checkpoint", "last"], False),
    ("best.pt", lambda r: ["evaluate", str(r)], False),
    ("best.pt", lambda r: ["export", str(r), "--out", str(r.parent / "model")], False),
], ids=["train-resume", "train-resume-raw-pickle", "evaluate-last", "evaluate", "export"])
def test_a_planted_checkpoint_is_refused_without_running_it(run: Path, tmp_path: Path, capsys, name, argv,
                                                            raw) -> None:
    marker = tmp_path / "MARKER"
    path = run / "checkpoints" / name
    _plant(path, marker, raw)
    line, _ = _fails_cleanly(capsys, argv(run), path, "holds objects other than tensors")
    assert "not loaded" in line
    assert not marker.exists()
    assert not (run.parent / "model").exists()


def test_recommender_from_run_refuses_a_planted_best_pt(run: Path, tmp_path: Path) -> None:
    from learec.serve import load_run

    marker = tmp_path / "MARKER"
    _plant(run / "checkpoints" / "best.pt", marker)
    with pytest.raises(UserError, match="best.pt holds objects other than tensors"):
        load_run(run)
    assert not marker.exists()


def test_a_planted_last_pt_is_refused_by_a_separate_process(run: Path, tmp_path: Path) -> None:
    """As a grid cell or a user runs it: ``python -m learec train --resume``."""
    marker = tmp_path / "MARKER"
    _plant(run / "checkpoints" / "last.pt", marker)
    done = subprocess.run([sys.executable, "-m", "learec", "train", "--resume", "--run-dir", str(_interrupted(run))],
                          env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert re.search(r"^learec: error: .*last\.pt holds objects other than tensors", done.stderr, re.M), done.stderr
    assert not marker.exists()


def test_a_truncated_last_pt_is_an_error_and_its_hint_works(run: Path, capsys) -> None:
    last = run / "checkpoints" / "last.pt"
    blob = last.read_bytes()
    last.write_bytes(blob[: len(blob) // 2])
    argv = ["train", "--resume", "--run-dir", str(_interrupted(run))]
    _, hint = _fails_cleanly(capsys, argv, last, "is truncated or corrupt")
    assert "delete it" in hint
    last.unlink()  # the hint: delete it and resume, which starts the run over
    assert main(argv) == 0
    assert (run / "metrics.json").is_file()


def test_an_empty_last_pt_is_an_error(run: Path, capsys) -> None:
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(b"")
    _fails_cleanly(capsys, ["train", "--resume", "--run-dir", str(_interrupted(run))], last, "is empty")


def test_an_empty_best_pt_is_an_error_and_the_last_checkpoint_still_serves(run: Path, capsys) -> None:
    best = run / "checkpoints" / "best.pt"
    best.write_bytes(b"")
    _, hint = _fails_cleanly(capsys, ["evaluate", str(run)], best, "is empty")
    assert "--checkpoint last" in hint and "learec train --config" in hint
    _fails_cleanly(capsys, ["export", str(run), "--out", str(run.parent / "model")], best, "is empty")
    assert main(["evaluate", str(run), "--checkpoint", "last"]) == 0
    assert main(["export", str(run), "--out", str(run.parent / "model"), "--checkpoint", "last"]) == 0


def test_a_checkpoint_of_an_older_learec_with_numpy_objects_is_an_error(run: Path, capsys) -> None:
    last = run / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["rng"]["numpy"] = np.random.get_state()  # how learec saved it before: a tuple with a numpy array
    torch.save(state, last)
    line, _ = _fails_cleanly(capsys, ["train", "--resume", "--run-dir", str(_interrupted(run))], last,
                             "holds objects other than tensors")
    assert "older learec" in line


def test_a_safe_file_that_is_not_this_runs_checkpoint_is_an_error(run: Path, capsys) -> None:
    best, last = run / "checkpoints" / "best.pt", run / "checkpoints" / "last.pt"
    torch.save({"some.weight": torch.zeros(3)}, best)
    _fails_cleanly(capsys, ["evaluate", str(run)], best, "does not fit this run's networks")
    torch.save({"objective": {}, "progress": {}, "rng": {}}, last)
    _fails_cleanly(capsys, ["train", "--resume", "--run-dir", str(_interrupted(run))], last,
                   "is not a checkpoint of this run")


def test_the_rng_state_round_trips_through_a_weights_only_file(tmp_path: Path) -> None:
    """The numpy RNG state (a numpy array in ``np.random.get_state()``) is stored as a tensor and restored."""
    np.random.seed(7)
    np.random.standard_normal()  # leaves a cached gaussian in the state
    torch.manual_seed(7)
    random.seed(7)
    atomic_torch_save(tmp_path / "rng.pt", trainer_mod._rng_state())
    expected = (np.random.random(5), np.random.standard_normal(3), torch.rand(3), random.random())
    np.random.seed(0)
    torch.manual_seed(0)
    random.seed(0)
    trainer_mod._set_rng_state(load_torch_file(tmp_path / "rng.pt", "unused"))
    got = (np.random.random(5), np.random.standard_normal(3), torch.rand(3), random.random())
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert torch.equal(got[2], expected[2]) and got[3] == expected[3]


def test_learec_source_unpickles_nothing() -> None:
    """A guard for new load sites: no unpickling loads anywhere in the package."""
    unsafe = re.compile(r"weights_only\s*=\s*False|allow_pickle\s*=\s*True|pickle\.loads?\(|dill|joblib")
    found = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "learec").rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if unsafe.search(line) or ("torch.load(" in line and "weights_only=True" not in line)]
    assert found == []


# --- the LE's files ------------------------------------------------------------------------------

def _env_train(run_dir: Path) -> list[str]:
    return ["env", "train", "--config", str(SMOKE), "--set", "le.progress=false", "--run-dir", str(run_dir)]


def test_a_planted_item_tokens_file_is_refused_by_env_train(le_data_dir: Path, tmp_path: Path, capsys) -> None:
    marker, run_dir = tmp_path / "MARKER", tmp_path / "le-run"
    run_dir.mkdir()
    _plant(run_dir / "item_tokens.pt", marker)
    _fails_cleanly(capsys, _env_train(run_dir), run_dir / "item_tokens.pt", "holds objects other than tensors")
    assert not marker.exists()


def test_a_planted_item_tokens_file_is_refused_by_a_pipeline_dry_run(le_data_dir: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("lea_smoke.yaml", "le_smoke.yaml"):
        shutil.copy(ROOT / "configs" / name, tmp_path / name)
    le_dir = tmp_path / "runs" / "lea-smoke" / "le"
    le_dir.mkdir(parents=True)
    marker = tmp_path / "MARKER"
    _plant(le_dir / "item_tokens.pt", marker)
    _fails_cleanly(capsys, ["pipeline", "--config", str(tmp_path / "lea_smoke.yaml"), "--dry-run"],
                   Path("runs/lea-smoke/le/item_tokens.pt"), "holds objects other than tensors")
    assert not marker.exists()


def test_a_planted_le_training_state_is_refused(le_data_dir: Path, tmp_path: Path, capsys) -> None:
    marker, run_dir = tmp_path / "MARKER", tmp_path / "le-run"
    (run_dir / "le").mkdir(parents=True)
    _plant(run_dir / "le" / "train_state.pt", marker)
    _fails_cleanly(capsys, _env_train(run_dir), run_dir / "le" / "train_state.pt", "holds objects other than tensors")
    assert not marker.exists()


def test_the_le_files_load_safely_and_planted_heads_are_refused(le_data_dir: Path, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "le-run"
    assert main(_env_train(run_dir)) == 0
    for name in ("item_tokens.pt", "le/train_state.pt", "le/heads.pt"):  # what learec writes is plain data
        load_torch_file(run_dir / name, "unused")
    marker = tmp_path / "MARKER"
    _plant(run_dir / "le" / "heads.pt", marker)
    _fails_cleanly(capsys, ["env", "label", "--run-dir", str(run_dir)], run_dir / "le" / "heads.pt",
                   "holds objects other than tensors")
    assert not marker.exists()
