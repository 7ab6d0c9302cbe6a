"""Control label sources in `learec pipeline` (lea.source=oracle|popularity): the pipeline labels them in
<out>/sources/<source>, pins their keys into the cells that read them (so relabelled sources make exactly
those cells stale), lists them in --dry-run; and `learec train` refuses a lea.source its cache was not
labelled by."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from learec.cli import main
from learec.config import load_config
from learec.errors import UserError
from learec.grid import load_grid, plan_grid
from learec.lea.control import label_control
from learec.lea.inputs import LEInputs
from learec.pipeline import PIPELINE_KEYS, grid_sources, label_sources, sources_dir, with_le_cache
from test_label_sources import label
from test_lea import BASE, data, make_cache  # noqa: F401  (the tiny synthetic data of the LEA tests)
from test_pipeline import _dry_run_status, workdir  # noqa: F401  (the pipeline tests' data and smoke configs)

PIPELINE = """base: le_smoke.yaml
le: le_smoke.yaml
out: runs/grid
set: [model.backbone=gru4rec, model.hidden=16, train.epochs=2, train.batch_size=128, train.patience=0]
axes:
  variant: [snqn, snqn+lea, snqn+oracle, snqn+popularity]
  seed: [0]
variants:
  snqn: [objective=snqn]
  snqn+lea: {set: [objective=snqn, lea.augment=true], compare: snqn}
  snqn+oracle: {set: [objective=snqn, lea.source=oracle, lea.augment=true, lea.augment_k=1], compare: snqn}
  snqn+popularity: {set: [objective=snqn, lea.source=popularity, lea.augment=true, lea.augment_k=1], compare: snqn}
baseline: {variant: snqn}
"""
SOURCE_CELLS = {"snqn+oracle-seed0", "snqn+popularity-seed0"}


@pytest.fixture()
def pipeline(workdir: Path) -> Path:  # noqa: F811
    path = workdir / "sources.yaml"
    path.write_text(PIPELINE)
    return path


def _grid(pipeline: Path):
    """The pipeline file's grid, read as the pipeline reads it."""
    return load_grid(pipeline, extra_set=["lea.cache=."], extra_keys=PIPELINE_KEYS)


def _dry_run(pipeline: Path, capsys: pytest.CaptureFixture, *args: str) -> dict[str, str]:
    assert main(["pipeline", "--config", str(pipeline), "--dry-run", *args]) == 0
    return _dry_run_status(capsys.readouterr().out)


def test_dry_run_lists_the_sources_and_their_cells_wait_for_their_labels(pipeline: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    out = pipeline.parent / "runs" / "grid"
    plan = _dry_run(pipeline, capsys)
    assert plan["oracle"] == plan["popularity"] == "to label"
    assert plan["snqn-seed0"] == "new"
    assert plan["snqn+lea-seed0"] == plan["snqn+oracle-seed0"] == plan["snqn+popularity-seed0"] == "waits"
    assert not out.exists()  # a dry run writes nothing

    # labelled as the pipeline labels them (no LE yet): their cells no longer wait, the LE's still does
    label_sources(["oracle", "popularity"], load_config(pipeline.parent / "le_smoke.yaml"), sources_dir(out))
    capsys.readouterr()
    assert main(["pipeline", "--config", str(pipeline), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert f"Control label sources {sources_dir(out)}:" in printed and "(for the LE labels)" in printed
    plan = _dry_run_status(printed)
    assert plan["oracle"] == plan["popularity"] == "complete"
    assert plan["snqn+oracle-seed0"] == plan["snqn+popularity-seed0"] == "new"
    assert plan["snqn+lea-seed0"] == "waits"

    # other label settings: the sources would be relabelled, and their cells wait for the new labels
    plan = _dry_run(pipeline, capsys, "--le-set", "le.label.seed=1", "--out", str(out))
    assert plan["oracle"].startswith("stale") and plan["oracle"].endswith("relabel")
    assert plan["snqn+oracle-seed0"] == plan["snqn+popularity-seed0"] == "waits"


def test_a_grid_without_sources_dry_runs_as_before(workdir: Path, capsys: pytest.CaptureFixture) -> None:  # noqa: F811
    assert main(["pipeline", "--config", str(workdir / "lea_smoke.yaml"), "--dry-run"]) == 0
    assert "Control label sources" not in capsys.readouterr().out


def test_source_cells_read_their_labels_and_a_relabelled_source_makes_only_them_stale(pipeline: Path) -> None:
    grid = _grid(pipeline)
    assert grid_sources(grid) == ["oracle", "popularity"]
    le_cfg = load_config(pipeline.parent / "le_smoke.yaml")
    root = sources_dir(grid.out)
    labelled = label_sources(grid_sources(grid), le_cfg, root)
    le_run = (grid.out / "le").resolve()
    pinned = with_le_cache(grid, le_run, "le-key", labelled)
    cells = {c.name: c.cfg for c in pinned.cells}
    assert cells["snqn-seed0"].lea.cache is None  # no LE input: depends on no labels
    assert (cells["snqn+lea-seed0"].lea.cache, cells["snqn+lea-seed0"].lea.cache_key) == (str(le_run), "le-key")
    from learec.data.prepared import prepare

    prepared = prepare(le_cfg.data, log=lambda *_: None)
    for source in ("oracle", "popularity"):
        cfg = cells[f"snqn+{source}-seed0"]
        assert cfg.lea.cache == str(root / source) and cfg.lea.cache_key == labelled[source][1]
        inputs = LEInputs(cfg.lea, prepared, negatives=cfg.rl.negatives)  # what the run reads: checked and read
        assert inputs.cache.manifest["fingerprint"]["source"] == source and inputs.k_aug == 1
        assert load_config(root / source / "config.yaml").le.label == le_cfg.le.label  # the LE config's settings

    for plan in plan_grid(pinned):  # the grid saves each cell's config before it runs
        plan.cfg.save(plan.run_dir / "config.yaml")
    assert {p.status for p in plan_grid(pinned)} == {"new"}

    # another labelling seed: the sources are relabelled under new keys, and only their cells turn stale
    reseeded = load_config(pipeline.parent / "le_smoke.yaml", ["le.label.seed=1"])
    relabelled = label_sources(grid_sources(grid), reseeded, root)
    assert all(relabelled[s][1] != labelled[s][1] for s in labelled)
    assert load_config(root / "oracle" / "config.yaml").le.label.seed == 1  # the pipeline file is the record
    plans = {p.name: p for p in plan_grid(with_le_cache(grid, le_run, "le-key", relabelled))}
    assert {name for name, p in plans.items() if p.status == "stale"} == SOURCE_CELLS
    for name in SOURCE_CELLS:  # the pinned key names the labels a run was made on: said as such
        source = plans[name].cfg.lea.cache.rsplit("/", 1)[-1]
        assert (f"LE labels: trained on {labelled[source][1]}, lea.cache now holds {relabelled[source][1]}"
                in plans[name].detail), plans[name].detail
    assert plans["snqn-seed0"].status == plans["snqn+lea-seed0"].status == "new"
    # the same settings again give the same labels: nothing stale
    again = label_sources(grid_sources(grid), le_cfg, root)
    assert again == labelled
    assert {p.status for p in plan_grid(with_le_cache(grid, le_run, "le-key", again))} == {"new"}


def test_a_teacher_source_is_refused_by_the_pipeline(pipeline: Path, capsys: pytest.CaptureFixture) -> None:
    pipeline.write_text(PIPELINE.replace("lea.source=popularity", "lea.source=teacher"))
    assert main(["pipeline", "--config", str(pipeline), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "lea.source=teacher in 1 cell(s) (e.g. snqn+popularity-seed0)" in err and "--source teacher" in err


def test_the_report_takes_no_source_directory_for_the_le(tmp_path: Path) -> None:
    from learec.report import _le_run

    le_run, oracle = tmp_path / "le", tmp_path / "oracle"
    (le_run / "le").mkdir(parents=True)
    oracle.mkdir()
    for run_dir in (le_run, oracle):
        load_config(None, BASE).save(run_dir / "config.yaml")
    grid_dir = tmp_path / "grid"
    # the source's cell sorts first; each reads its own directory
    for name, sets in (("a+oracle-seed0", ["lea.source=oracle", f"lea.cache={oracle}"]),
                       ("b+oracle-seed0", [f"lea.cache={oracle}"]),  # a control cache named by lea.cache alone
                       ("c+lea-seed0", [f"lea.cache={le_run}"])):
        (grid_dir / name).mkdir(parents=True)
        load_config(None, [*BASE, "objective=snqn", "lea.augment=true", *sets]).save(grid_dir / name / "config.yaml")
    assert _le_run(grid_dir) == le_run


def test_train_refuses_a_source_its_labels_do_not_come_from(data, tmp_path: Path,  # noqa: F811
                                                           capsys: pytest.CaptureFixture) -> None:
    oracle = tmp_path / "oracle"
    label("oracle", oracle)
    le_cache = make_cache(tmp_path / "le", data)  # an LE's labels: its fingerprint names no source
    config = tmp_path / "run.yaml"
    load_config(None, [*BASE, "objective=snqn", "rl.negatives=4", "lea.augment=true",
                             f"lea.cache={oracle}"]).save(config)
    for source, cache, found in (("popularity", oracle, "the oracle source's"),
                                 ("oracle", le_cache, "the LE's (its fingerprint names no control source)")):
        run_dir = tmp_path / f"run-{source}"
        args = ["train", "--config", str(config), "--set", f"lea.source={source}", "--set", f"lea.cache={cache}",
                "--run-dir", str(run_dir)]
        assert main(args) == 2
        err = capsys.readouterr().err.splitlines()
        assert err[0] == f"learec: error: lea.source={source}, but the labels in {cache / 'label'} are {found}"
        assert f"--source {source}" in err[1]
        assert not run_dir.exists()  # refused before anything was written
    # the source it names, or the default le (which takes any labels, as before lea.source): read
    for source in ("oracle", "le"):
        cfg = load_config(config, [f"lea.source={source}", f"lea.cache={oracle}"])
        assert LEInputs(cfg.lea, data, negatives=4).cache.manifest["fingerprint"]["source"] == "oracle"
    # a relabelled directory is refused by source as well as by key
    label_control("popularity", None, oracle)
    with pytest.raises(UserError, match="lea.source=oracle, but the labels .* are the popularity source's"):
        LEInputs(load_config(config, ["lea.source=oracle", f"lea.cache={oracle}"]).lea, data)


@pytest.mark.parametrize("sets, message", [
    (["objective=snqn", "lea.source=oracle", "lea.cache=x"], "lea.source=oracle names where the labels"),
    (["objective=snqn", "lea.source=oracle", "lea.augment=true"], "needs lea.cache: a directory labelled by "
                                                                   "`learec env label --source oracle`"),
    (["objective=snqn", "lea.source=popularity", "lea.state=true", "lea.state_to_actor=true", "lea.cache=x"],
     "only an LE run has"),
])
def test_config_refuses_a_source_that_would_mean_nothing(sets: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(None, [*BASE, *sets])


def test_the_default_source_keeps_configs_and_keys() -> None:
    cfg = load_config(None, [*BASE, "objective=snqn", "lea.augment=true", "lea.cache=x"])
    assert cfg.lea.source == "le" and "source" not in cfg.lea.key_dump()
    assert "source" in load_config(None, [*BASE, "objective=snqn", "lea.augment=true", "lea.cache=x",
                                          "lea.source=oracle"]).lea.key_dump()


def test_the_quick_pipeline_shows_a_floor_and_a_ceiling_beside_the_le() -> None:
    grid = load_grid(Path(__file__).parent.parent / "configs" / "lea_ml100k_quick.yaml", extra_set=["lea.cache=x"],
                     extra_keys=PIPELINE_KEYS)
    assert grid_sources(grid) == ["oracle", "popularity"]
    cells = {c.values["variant"]: c.cfg for c in grid.cells}
    for source in ("oracle", "popularity"):
        lea = cells[f"snqn+{source}"].lea
        assert (lea.source, lea.augment, lea.augment_k, lea.state, lea.reward) == (source, True, 1, False, False)
        assert grid.compare[f"snqn+{source}"] == ["snqn"]
    # the demo's LE labels no negatives (most of the labelling time), so no cell may read them
    spec = yaml.safe_load((Path(__file__).parent.parent / "configs" / "lea_ml100k_quick.yaml").read_text())
    assert "le.label.negatives=0" in spec["le_set"]
    assert not any(cfg.lea.use_cached_negatives for cfg in cells.values())
    assert cells["snqn+lea"].lea.augment and cells["sa2c+lea"].lea.augment


@pytest.mark.slow
def test_pipeline_runs_source_cells_beside_the_le_and_redoes_only_what_changed(pipeline: Path,
                                                                              capsys: pytest.CaptureFixture) -> None:
    out = pipeline.parent / "runs" / "grid"
    assert main(["pipeline", "--config", str(pipeline), "--threads", "1"]) == 0
    capsys.readouterr()
    for source in ("oracle", "popularity"):  # each source cell trained on its source's labels, key pinned
        used = json.loads((out / f"snqn+{source}-seed0" / "le_cache.json").read_text())
        assert used["labels"] == str(sources_dir(out) / source / "label")
        assert used["key"] == load_config(out / f"snqn+{source}-seed0" / "config.yaml").lea.cache_key
    text = (out / "report" / "report.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in text.splitlines()
            if line.startswith("| snqn")}
    assert set(rows) == {"snqn", "snqn+lea", "snqn+oracle", "snqn+popularity"}
    assert rows["snqn+oracle"][-5] == rows["snqn+popularity"][-5] == rows["snqn+lea"][-5] == "snqn"
    assert "LLM environment" in text  # the LE's own section, from the LE run

    def metrics_mtimes() -> dict[str, int]:
        return {f.parent.name: f.stat().st_mtime_ns for f in out.glob("*-seed0/metrics.json")}

    def redone_after(*le_set: str) -> set[str]:
        before = metrics_mtimes()
        assert main(["pipeline", "--config", str(pipeline), "--threads", "1", "--out", str(out),
                     *[a for s in le_set for a in ("--le-set", s)]]) == 0
        capsys.readouterr()
        return {name for name, t in metrics_mtimes().items() if before.get(name) != t}

    # another LE (one more epoch): the LE's cell is redone, the sources' labels and cells are not
    assert redone_after("le.train.epochs=3") == {"snqn+lea-seed0"}
    # another labelling seed: the LE and the sources are relabelled, and every cell that reads labels is redone
    assert redone_after("le.train.epochs=3", "le.label.seed=1") == {"snqn+lea-seed0", *SOURCE_CELLS}
    assert len(list((out / ".stale").iterdir())) == 4
