"""`learec pipeline` (LE -> labels -> RL grid -> report) and `learec report`: valid stages are skipped,
invalid ones redone, and only the runs that depend on a changed LE cache are rerun."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from learec.cli import main
from learec.data.registry import raw_dir
from learec.data.synthetic import generate_synthetic_log
from learec.usage import find_usage, read_usage

CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LEAREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    generate_synthetic_log(raw_dir("synthetic"), n_users=40, n_items=30, min_len=3, max_len=20)
    for name in ("lea_smoke.yaml", "le_smoke.yaml"):
        shutil.copy(CONFIGS / name, tmp_path / name)
    # no progress bars in test logs
    le = tmp_path / "le_smoke.yaml"
    le.write_text(le.read_text().replace("  lm: tiny\n", "  lm: tiny\n  progress: false\n"))
    return tmp_path


def _mtimes(out: Path) -> dict[str, int]:
    files = [out / "le" / "le" / "heads.pt", out / "le" / "label" / "manifest.json", out / "le" / "le_report.json",
             *sorted(out.glob("*-seed*/metrics.json")), *sorted(out.rglob("usage.jsonl"))]  # a no-op records nothing
    return {str(f.relative_to(out)): f.stat().st_mtime_ns for f in files}


def _dry_run_status(printed: str) -> dict[str, str]:
    """``--dry-run`` output as {LE stage or grid cell: status}."""
    status = {}
    for line in printed.splitlines():
        words = line.split()
        if not line.startswith("  "):
            continue
        if words[0] in ("finished", "reuse", "resume", "new", "stale", "waits"):  # "  new      ce-seed0"
            status[words[1]] = words[0]
        else:  # "  item tokens  current"
            stage, what = line.strip().split("  ", 1)
            status[stage] = what.strip()
    return status


@pytest.mark.slow
def test_pipeline_skips_valid_stages_and_redoes_invalid_ones(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    pipeline = workdir / "lea_smoke.yaml"
    out = workdir / "runs" / "lea-smoke"
    # a dry run before anything exists: every stage to do, the LE cells waiting for the labels, nothing written
    assert main(["pipeline", "--config", str(pipeline), "--dry-run"]) == 0
    plan = _dry_run_status(capsys.readouterr().out)
    assert plan["item tokens"] == "to train" and plan["labelling"] == "after LE training"
    assert plan["ce-seed0"] == plan["snqn-seed0"] == plan["sa2c-seed0"] == "new"
    assert plan["snqn+sm-seed0"] == plan["snqn+lea-seed0"] == "waits"
    assert not out.exists()

    assert main(["pipeline", "--config", str(pipeline), "--threads", "1"]) == 0
    report = out / "report"
    printed = capsys.readouterr().out
    assert "report.md" in printed
    # what each stage cost, as every stage recorded it (learec.usage): the LE's stages once, 8 training runs
    usage_rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1] for line in printed.splitlines()
                  if line.startswith("| ") and " MiB |" in line}
    assert usage_rows["item tokens"] == usage_rows["LE training"] == usage_rows["labelling"] == "1"
    assert sum(int(n) for stage, n in usage_rows.items() if stage.startswith("train ")) == 8
    text = (report / "report.md").read_text()
    for variant in ("ce", "snqn", "snqn+sm", "snqn+sm+actor", "snqn+rm", "snqn+lea", "sa2c", "sa2c+sm+rm+lea"):
        assert f"| {variant} |" in text
    assert "(baseline)" in text and "| compared with |" in text
    compared = {line.split(" | ")[0].strip("| "): line.split(" | ")[-5] for line in text.splitlines()
                if line.startswith("| snqn+")}  # each row names the variant of its second test (lea_smoke.yaml)
    assert compared["snqn+rm"] == "snqn" and compared["snqn+sm+actor"] == "snqn+sm"
    assert "| k | LE augmented actions | popular items |" in text  # the LE report rates the labelled proposals
    for png in ("le_quality.png", "le_rewards.png", "val_curves_0.png", "test_bars_0.png"):
        assert (report / png).stat().st_size > 1000, png
    assert "<table>" in (report / "report.html").read_text()
    first = _mtimes(out)
    assert len([k for k in first if k.endswith("metrics.json")]) == 8
    # a run with the LE state in its ranking head made the pipeline write the evaluation events' LE states
    assert (out / "le" / "eval_states" / "test.npy").is_file()
    # the LE stages log to the LE run's le.log, as `learec env train|label|report` do
    le_log = (out / "le" / "le.log").read_text()
    assert "training the LE on" in le_log and "transitions labelled in" in le_log

    # a second run redoes nothing, and a dry run says so first
    assert main(["pipeline", "--config", str(pipeline), "--dry-run"]) == 0
    plan = _dry_run_status(capsys.readouterr().out)
    assert (plan["item tokens"], plan["labelling"], plan["LE report"]) == ("current", "complete", "current")
    assert {name: status for name, status in plan.items() if "seed" in name} == {
        name.split("/")[0]: "finished" for name in first if name.endswith("metrics.json")}
    assert main(["pipeline", "--config", str(pipeline), "--threads", "1"]) == 0
    assert _mtimes(out) == first

    # an LE report remade by hand (`learec env report`) counts as current: the pipeline does not redo it
    assert main(["env", "report", "--run-dir", str(out / "le")]) == 0
    capsys.readouterr()
    assert main(["pipeline", "--config", str(pipeline), "--dry-run"]) == 0
    assert _dry_run_status(capsys.readouterr().out)["LE report"] == "current"
    first = _mtimes(out)

    # a corrupt labelling cache is rebuilt; the labels come out the same, so no RL run is redone
    reward = out / "le" / "label" / "reward.npy"
    raw = bytearray(reward.read_bytes())
    raw[-1] ^= 0xFF
    reward.write_bytes(bytes(raw))
    assert main(["pipeline", "--config", str(pipeline), "--threads", "1"]) == 0
    after_corrupt = _mtimes(out)
    assert after_corrupt["le/label/manifest.json"] != first["le/label/manifest.json"]
    assert {k: v for k, v in after_corrupt.items() if "seed" in k} == {k: v for k, v in first.items() if "seed" in k}

    # another LE (one more epoch): retrained, relabelled, and exactly the runs that read the LE are redone
    pipeline.write_text(pipeline.read_text().replace("le: le_smoke.yaml", "le: le_smoke.yaml\nle_set: [le.train.epochs=3]"))
    assert main(["pipeline", "--config", str(pipeline), "--dry-run"]) == 0
    plan = _dry_run_status(capsys.readouterr().out)
    assert plan["item tokens"] == "current" and plan["LE training"].startswith("made from other inputs")
    assert plan["snqn+sm-seed0"] == "waits" and plan["snqn-seed0"] == "finished"
    assert main(["pipeline", "--config", str(pipeline), "--threads", "1"]) == 0
    changed = {k for k, v in _mtimes(out).items() if first.get(k) != v}
    assert "le/le/heads.pt" in changed
    redone = {k.split("/")[0] for k in changed if k.endswith("metrics.json")}
    assert redone == {"snqn+sm-seed0", "snqn+sm+actor-seed0", "snqn+rm-seed0", "snqn+lea-seed0",
                      "sa2c+sm+rm+lea-seed0"}
    assert len(list((out / ".stale").iterdir())) == 5  # the old ones are kept aside, not deleted
    # the usage figures are those of the current outputs: the retrained LE counts once, the stale runs not at all
    assert {u.stage: u.invocations for u in read_usage(out / "le")}["LE training"] == 1
    assert len([u for u in find_usage([out]) if u.stage.startswith("train ")]) == 8


@pytest.mark.slow
def test_le_ablation_points_from_one_file_and_their_sensitivity_plot(workdir: Path) -> None:
    """`--le-set` and `--out` run one pipeline file per LE setting; the report plots metrics against it."""
    pipeline = workdir / "lea_smoke.yaml"
    text = pipeline.read_text()
    text = text[:text.index("axes:")] + (
        "axes:\n  variant: [snqn, snqn+lea]\n  seed: [0]\nvariants:\n  snqn: [objective=snqn]\n"
        "  snqn+lea: {set: [objective=snqn, lea.state=true, lea.reward=true, lea.augment=true], compare: snqn}\n")
    pipeline.write_text(text)
    for epochs in (1, 2):
        assert main(["pipeline", "--config", str(pipeline), "--threads", "1", "--le-set",
                     f"le.train.epochs={epochs}", "--out", f"runs/abl-{epochs}"]) == 0
        out = workdir / "runs" / f"abl-{epochs}"
        assert f"epochs: {epochs}" in (out / "le" / "config.yaml").read_text()
        assert (out / "snqn+lea-seed0" / "metrics.json").is_file() and (out / "report" / "report.md").is_file()
    assert not (workdir / "runs" / "lea-smoke").exists()  # the file's own out is untouched
    assert main(["report", "runs/abl-1", "runs/abl-2", "--out", "both"]) == 0
    assert (workdir / "both" / "le_sensitivity_le_train_epochs.png").stat().st_size > 1000
    text = (workdir / "both" / "report.md").read_text()
    assert "Sensitivity to the LE settings" in text
    assert "Made by `learec report runs/abl-1 runs/abl-2 --out both`." in text  # how to remake it
    # the LE points table: each grid's LE setting and quality beside its runs' test metrics
    rows = {line.split(" | ")[0].strip("| "): line.strip("| ").split(" | ") for line in text.splitlines()
            if line.startswith("| abl-")}
    assert set(rows) == {"abl-1", "abl-2"}
    for epochs in (1, 2):
        row = rows[f"abl-{epochs}"]
        quality = json.loads((workdir / "runs" / f"abl-{epochs}" / "le" / "le_report.json").read_text())
        metrics = json.loads((workdir / "runs" / f"abl-{epochs}" / "snqn-seed0" / "metrics.json").read_text())
        assert row[1] == str(epochs) and row[2] == f"{quality['state_ndcg@10']:.4f}"
        # the snqn column, one seed: test, and validation in brackets
        assert row[5] == f"{metrics['test']['ndcg@10']:.4f} ({metrics['val']['ndcg@10']:.4f})"
    assert not list((workdir / "both").glob("le_sensitivity_le_train_lr*"))  # only what differs is plotted


def test_pipeline_refuses_an_le_run_directory_another_process_writes(workdir: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    from learec.rundir import exclusive_run_dir

    out = workdir / "runs" / "lea-smoke"
    with exclusive_run_dir(out / "le", "LE run"):  # e.g. `learec env label` on the pipeline's LE
        assert main(["pipeline", "--config", str(workdir / "lea_smoke.yaml"), "--threads", "1"]) == 2
    assert "is writing the LE run in" in capsys.readouterr().err
    assert not (out / "le" / "le").exists()  # no LE stage ran


def test_pipeline_refuses_le_and_grid_on_different_data(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    pipeline = workdir / "lea_smoke.yaml"
    pipeline.write_text(pipeline.read_text().replace("set: [", "set: [data.history=5, "))
    assert main(["pipeline", "--config", str(pipeline)]) == 2
    assert "data section differs" in capsys.readouterr().err


def test_pipeline_set_changes_every_cell_and_the_le_config_alike(workdir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`learec pipeline --set` as `learec grid --set`, and in the LE config too, so a data setting (e.g. data.raw)
    keeps labels and runs on the same data; --le-set still has the last word on the LE config."""
    import learec.pipeline

    seen = {}
    monkeypatch.setattr(learec.pipeline, "print_dry_run",
                        lambda grid, le_cfg, *a, **kw: seen.update(grid=grid, le=le_cfg))
    raw = raw_dir("synthetic")
    argv = ["pipeline", "--config", str(workdir / "lea_smoke.yaml"), "--dry-run", "--set", f"data.raw={raw}",
            "--set", "data.history=5", "--set", "le.train.epochs=3"]
    assert main(argv) == 0
    assert seen["le"].data.history == 5 and seen["le"].data.raw == str(raw) and seen["le"].le.train.epochs == 3
    assert all(c.cfg.data == seen["le"].data for c in seen["grid"].cells)
    assert main([*argv, "--le-set", "le.train.epochs=1", "--run-dir", str(workdir / "point")]) == 0
    assert seen["le"].le.train.epochs == 1 and seen["le"].data.history == 5


def test_report_needs_grid_dirs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "not a grid output directory" in capsys.readouterr().err


def test_committed_lea_and_le_configs_line_up() -> None:
    from learec.config import load_config
    from learec.grid import load_grid
    from learec.pipeline import PIPELINE_KEYS

    # (pipeline file, its LE config, whether it holds the supervised baseline)
    for pipeline, le_file, with_ce in (("lea_ml100k.yaml", "le_ml100k.yaml", True),
                                       ("lea_ml100k_look.yaml", "le_ml100k.yaml", False),
                                       ("lea_smoke.yaml", "le_smoke.yaml", True)):
        grid = load_grid(CONFIGS / pipeline, extra_set=["lea.cache=x"], extra_keys=PIPELINE_KEYS)
        le_cfg = load_config(CONFIGS / le_file)
        assert all(cfg.data == le_cfg.data for _, _, cfg in grid.cells), pipeline
        assert any(cfg.lea.augment for _, _, cfg in grid.cells), pipeline
        assert any(cfg.objective == "ce" for _, _, cfg in grid.cells) == with_ce, pipeline


def test_le_set_without_out_is_refused(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["pipeline", "--config", str(workdir / "lea_smoke.yaml"), "--le-set", "le.train.epochs=1"]) == 2
    assert "--le-set le.train.epochs=1 needs --run-dir" in capsys.readouterr().err
    # a setting that enters no stage key (how many threads) changes no result: it needs no --out
    assert main(["pipeline", "--config", str(workdir / "lea_smoke.yaml"), "--le-set", "le.threads=1", "--dry-run"]) == 0
    assert "item tokens" in capsys.readouterr().out


def test_pipeline_output_flag_is_run_dir_as_elsewhere_with_out_kept(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    for flag in ("--run-dir", "--out"):
        out = workdir / f"point{flag}"
        argv = ["pipeline", "--config", str(workdir / "lea_smoke.yaml"), "--le-set", "le.train.epochs=1", flag, str(out),
                "--dry-run"]
        assert main(argv) == 0
        assert str(out) in capsys.readouterr().out


def test_sensitivity_is_plotted_only_against_several_finished_values(tmp_path: Path) -> None:
    from learec.report import _plot_sensitivity

    def grid(ks: list[int]) -> dict:
        runs = [{"values": {"lea.augment_k": k, "seed": s}, "test": {"ndcg@10": 0.06 + 0.001 * k + 0.0001 * s}}
                for k in ks for s in (0, 1)]
        runs.append({"values": {"lea.augment_k": 5, "seed": 0}, "test": None})  # not finished: not a point
        return {"axes": {"lea.augment_k": [*ks, 5], "seed": [0, 1]}, "runs": runs}

    assert _plot_sensitivity(grid([0]), tmp_path, 0) == []  # one finished value: no plot
    paths = _plot_sensitivity(grid([0, 3]), tmp_path, 1)
    assert [p.name for p in paths] == ["sensitivity_1_lea_augment_k.png"] and paths[0].stat().st_size > 1000


def test_validation_curves_get_a_panel_per_backbone_and_a_line_per_variant(tmp_path: Path) -> None:
    from learec.report import _curve_panels, _plot_curves

    runs = []
    for backbone in ("sasrec", "gru4rec"):
        for variant in ("snqn", "snqn+lea"):
            for seed in (0, 1):
                history = [{"epoch": e, "val/ndcg@10": 0.01 * e + 0.001 * seed + (0.002 if variant == "snqn" else 0)}
                           for e in (1, 2, 3)]
                runs.append({"values": {"model.backbone": backbone, "variant": variant, "seed": seed},
                             "history": history, "test": None})
    axes = {"model.backbone": ["gru4rec", "sasrec"], "variant": ["snqn", "snqn+lea"], "seed": [0, 1]}
    panels = _curve_panels({"axes": axes, "runs": runs})
    assert list(panels) == ["gru4rec", "sasrec"]  # the axis's order, not the runs'
    for backbone, lines in panels.items():
        assert set(lines) == {"snqn", "snqn+lea"}
        for variant, by_epoch in lines.items():
            for epoch, values in by_epoch.items():  # every seed's value at that epoch, and only those
                expected = sorted(p["val/ndcg@10"] for r in runs for p in r["history"]
                                  if r["values"]["model.backbone"] == backbone and r["values"]["variant"] == variant
                                  and p["epoch"] == epoch)
                assert sorted(values) == expected and len(values) == 2
    # one axis besides the seed: one panel, a line per value
    single = _curve_panels({"axes": {"variant": axes["variant"], "seed": [0, 1]},
                            "runs": [{**r, "values": {"variant": r["values"]["variant"], "seed": r["values"]["seed"]}}
                                     for r in runs if r["values"]["model.backbone"] == "sasrec"]})
    assert list(single) == [""] and set(single[""]) == {"snqn", "snqn+lea"}
    assert _plot_curves({"axes": axes, "runs": runs}, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_validation_curve_panels_of_numeric_single_valued_and_seed_only_axes() -> None:
    from learec.report import _curve_panels

    def runs_for(axes: dict) -> list[dict]:
        import itertools

        keys = list(axes)
        return [{"values": dict(zip(keys, combo)), "history": [{"epoch": 1, "val/ndcg@10": 0.05}], "test": None}
                for combo in itertools.product(*axes.values())]

    numeric = {"lea.augment_k": [0, 3], "variant": ["snqn", "sa2c"], "seed": [0]}
    assert list(_curve_panels({"axes": numeric, "runs": runs_for(numeric)})) == ["augment_k=0", "augment_k=3"]
    # an axis of one value makes no panels: the varied axis names the lines
    single = {"lea.augment_k": [0, 1, 3], "variant": ["snqn"], "seed": [0, 1]}
    panels = _curve_panels({"axes": single, "runs": runs_for(single)})
    assert list(panels) == [""] and set(panels[""]) == {"augment_k=0, snqn", "augment_k=1, snqn", "augment_k=3, snqn"}
    seeds_only = {"seed": [0, 1]}
    panels = _curve_panels({"axes": seeds_only, "runs": runs_for(seeds_only)})
    assert list(panels) == [""] and list(panels[""]) == ["all"] and panels[""]["all"][1] == [0.05, 0.05]


def test_pipeline_file_keys_are_checked_and_its_grid_read_once(workdir: Path, capsys: pytest.CaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import learec.grid
    import learec.pipeline

    pipeline = workdir / "lea_smoke.yaml"
    text = pipeline.read_text()
    pipeline.write_text(text + "le_sett: [le.train.epochs=1]\n")
    assert main(["pipeline", "--config", str(pipeline), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'le_sett'" in err and "le_set, le_run, report" in err
    pipeline.write_text(text)
    expanded = []
    monkeypatch.setattr(learec.pipeline, "expand_grid",
                        lambda *a, **kw: expanded.append(a) or learec.grid.expand_grid(*a, **kw))
    assert main(["pipeline", "--config", str(pipeline), "--dry-run"]) == 0
    assert len(expanded) == 1
