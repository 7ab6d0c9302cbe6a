"""``learec env compare``: LE runs' reports side by side, from run directories written by hand (the figures
of a real tiny LE run are checked in tests/test_env_le.py::test_cli_env_train_label_report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from learec.cli import main
from learec.env.compare import compare_row, markdown_table
from learec.errors import UserError


def _run(root: Path, name: str, report: dict, history: list[dict], fraction: float, steps: int,
         train_seconds: float | None = None) -> Path:
    run = root / name
    (run / "le").mkdir(parents=True)
    (run / "le_report.json").write_text(json.dumps(report))
    (run / "le" / "done.json").write_text(json.dumps({"key": "k", "weights": "w", "users": 7, "history": history,
                                                      **({"train_seconds": train_seconds} if train_seconds else {})}))
    (run / "config.yaml").write_text(yaml.safe_dump({"le": {"train": {"user_fraction": fraction, "steps": steps}}}))
    return run


BASE = {"val_users": 40, "state_ndcg@10": 0.05, "pop_ndcg@10": 0.02, "state_hr@10": 0.1,
        "reward_pairwise_acc": 0.7, "key_mean_cosine": 0.004, "state_mean_cosine": 0.36, "le_users": 7}


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    # stopped early after its best check (two checks tie: the first is the one kept) and labelled: exact counts
    labelled = {**BASE, "le_train_seconds": 90.0,
                "augmentation_diversity": {"distinct@3": 120, "top10_share@3": 0.25},
                "augmentation": {"aug_future@3": 0.44, "pop_future@3": 0.33}}
    history = [{"step": 2, "val_state_ndcg@10": 0.1}, {"step": 4, "val_state_ndcg@10": 0.3},
               {"step": 6, "val_state_ndcg@10": 0.3}]
    a = _run(tmp_path, "a", labelled, history, 0.5, 10)
    # an epoch-mode LE with the report's sample of users only (a lower bound), its time in done.json only
    sampled = {**BASE, "augmentation_sample": {
        "diversity": {"distinct@3": 80, "top10_share@3": 0.5},
        "quality": {"aug_future@3": 0.3, "pop_future@3": 0.35},
        "by_membership": {"other_users": {"quality": {"aug_future@3": 0.29, "pop_future@3": 0.36}}}}}
    b = _run(tmp_path, "b", sampled, [{"epoch": 1, "loss": 4.0}], 0.1, 0, train_seconds=30.0)
    return a, b


def test_rows_take_each_figure_from_the_runs_files(runs: tuple[Path, Path]) -> None:
    a, b = (compare_row(r) for r in runs)
    assert (a["steps_run"], a["steps_budget"], a["best_step"], a["selection_ndcg@10"]) == (6, 10, 4, 0.3)
    assert (a["distinct@3"], a["aug_exact"], a["aug_future@3"], a["train_seconds"]) == (120, True, 0.44, 90.0)
    assert a["user_fraction"] == 0.5 and a["reward_acc"] == 0.7 and a["aug_future@3_other_users"] is None
    assert (b["steps_run"], b["best_step"], b["selection_ndcg@10"]) == (None, None, None)
    assert (b["distinct@3"], b["aug_exact"], b["aug_future@3_other_users"], b["pop_future@3_other_users"]) == \
        (80, False, 0.29, 0.36)
    assert b["train_seconds"] == 30.0  # an LE report written before the field: done.json's figure
    assert compare_row(runs[0], k=5)["distinct@5"] is None  # a k the run does not have


def test_markdown_table_cells(runs: tuple[Path, Path]) -> None:
    lines = markdown_table([compare_row(r) for r in runs]).splitlines()
    assert len(lines) == 4 and lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    a = [c.strip() for c in lines[2].strip("|").split("|")]
    b = [c.strip() for c in lines[3].strip("|").split("|")]
    assert a[1:] == ["7 (50%)", "6 of 10 (4)", "0.3000", "0.0500 (2.50×)", "0.1000", "0.700", "0.004", "0.36",
                     "120 (25%)", "0.440 (0.330)", "n/a (n/a)", "1.5 min"]
    assert b[2:4] == ["n/a", "n/a"] and b[9:] == ["≥ 80 (50%)", "0.300 (0.350)", "0.290 (0.360)", "0.5 min"]


def test_a_run_without_a_report_is_refused_with_what_to_run(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "bare").mkdir()
    with pytest.raises(UserError, match="no le_report.json"):
        compare_row(tmp_path / "bare")
    assert main(["env", "compare", str(tmp_path / "bare")]) == 2
    assert "learec env report --run-dir" in capsys.readouterr().err


def test_cli_prints_the_table_and_writes_the_figures(runs: tuple[Path, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "figures.json"
    assert main(["env", "compare", *map(str, runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"| {runs[0]} |" in printed and f"| {runs[1]} |" in printed
    assert [r["run"] for r in json.loads(out.read_text())] == [str(r) for r in runs]
    assert main(["env", "compare", str(runs[0]), "--k", "0"]) == 2
