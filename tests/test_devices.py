"""Devices: a name learec does not run on is refused when the config loads; a device the machine lacks is
refused when a run starts (the config still loads and shows); ``cuda`` is each rank's GPU under torchrun."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from learec import devices, distributed
from learec.cli import main
from learec.config import load_config
from learec.errors import UserError

CONFIGS = Path(__file__).parent.parent / "configs"
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The error: exit code 2, no traceback, one line (plus the usual 'What to do' line)."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines[0].startswith("learec: error:") and "Traceback" not in err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("  What to do:")), err
    return lines[0]


@pytest.mark.parametrize("key", ["train.device", "le.device"])
@pytest.mark.parametrize("name", ["cdua", "tpu", "CUDA", "cuda:-1", "cuda:01", "meta", "gpu", "xla"])
def test_a_device_name_learec_does_not_run_on_is_refused_by_config_show(capsys, key: str, name: str) -> None:
    line = _one_line_error(capsys, ["config", "show", "--set", f"{key}={name}"])
    assert f"'{key}': not a device learec runs on" in line and f"(got {name!r})" in line


@pytest.mark.parametrize("name", ["cpu", "cuda", "cuda:0", "cuda:3", "mps"])
def test_device_names_load_whatever_the_machine_has(name: str) -> None:
    cfg = load_config(None, [f"train.device={name}", f"le.device={name}"])
    assert cfg.train.device == cfg.le.device == name


@no_gpu
def test_train_with_cuda_on_a_machine_without_one_is_refused_before_the_run_dir_is_written(capsys, tmp_path):
    run_dir = tmp_path / "run"
    argv = ["train", "--config", str(CONFIGS / "synthetic_gru4rec.yaml"), "--set", "train.device=cuda",
            "--run-dir", str(run_dir)]
    line = _one_line_error(capsys, argv)
    assert "train.device=cuda" in line and "no" in line
    assert not (run_dir / "config.yaml").exists()


@no_gpu
def test_env_train_with_cuda_on_a_machine_without_one_is_refused_before_the_run_dir_is_written(capsys, tmp_path):
    run_dir = tmp_path / "le"
    argv = ["env", "train", "--config", str(CONFIGS / "le_smoke.yaml"), "--set", "le.device=cuda:1",
            "--run-dir", str(run_dir)]
    assert "le.device=cuda:1" in _one_line_error(capsys, argv)
    assert not (run_dir / "config.yaml").exists()


@pytest.fixture()
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_a_gpu_beyond_the_machines_count_is_refused(two_gpus: None) -> None:
    assert devices.run_device("cuda:1", "train.device") == "cuda:1"
    assert devices.run_device("cuda", "train.device") == "cuda"
    with pytest.raises(UserError, match=r"train.device=cuda:2 asks for GPU 2, and this machine has 2"):
        devices.run_device("cuda:2", "train.device")


def test_under_torchrun_cuda_is_this_ranks_gpu(two_gpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert devices.run_device("cuda", "le.device") == "cuda:1"
    assert devices.run_device("cuda:0", "le.device") == "cuda:0"  # a named GPU is kept
    assert devices.run_device("cpu", "le.device") == "cpu"
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(UserError, match="at most 2 processes"):
        devices.run_device("cuda", "le.device")


def test_cpu_is_always_there() -> None:
    assert devices.run_device("cpu", "train.device") == "cpu"
