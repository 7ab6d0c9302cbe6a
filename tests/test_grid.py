"""Grids: the product of axes runs once per cell, finished cells are skipped, the table and the paired test."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from learec.cli import main
from learec.config import RESULT_NEUTRAL_SETTINGS, load_config
from learec.data.registry import raw_dir
from learec.data.synthetic import generate_synthetic_log
from learec.errors import UserError
from learec.data.prepared import prepare
from learec.evaluate.run_users import users_from_configs
from learec.evaluate.significance import paired_test
from learec.evaluate.tables import format_mean_std, results_tables
from learec.grid import load_grid, plan_grid
from learec.report import markdown_to_html


def test_paired_test_identical_and_clearly_better():
    ranks = np.arange(200) % 30
    assert paired_test([ranks], [ranks]) == {"diff": 0.0, "p": 1.0}
    better = np.maximum(ranks - 5, 0)
    result = paired_test([better, better], [ranks, ranks], "hr@10")
    assert result["diff"] == pytest.approx(np.mean(better < 10) - np.mean(ranks < 10))
    assert result["p"] < 1e-6
    with pytest.raises(ValueError):
        paired_test([ranks], [ranks[:10]])


def test_paired_test_clustered_by_user_against_a_hand_computation():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(12), rng.integers(1, 40, size=12))  # users with 1 to 39 events each
    rng.shuffle(users)  # a user's events need not be adjacent
    ranks_b = rng.integers(0, 30, size=len(users))
    lift = rng.integers(0, 12, size=12)[users]  # each user's own gain: events of one user move together
    ranks_a = np.maximum(ranks_b - lift, 0)
    result = paired_test([ranks_a], [ranks_b], "hr@10", users=users)
    # the same test by hand: the mean difference over events, its variance from each user's summed residuals
    diff = (ranks_a < 10) * 1.0 - (ranks_b < 10) * 1.0
    sums = [np.sum(diff[users == u] - diff.mean()) for u in sorted(set(users))]
    se = np.sqrt(12 / 11 * np.sum(np.square(sums)) / len(diff) ** 2)
    assert result["p_users"] == pytest.approx(2 * stats.t.sf(abs(diff.mean() / se), df=11))
    assert result["diff"] == pytest.approx(diff.mean())  # the one difference both tests are of
    assert result["p"] == pytest.approx(stats.ttest_rel((ranks_a < 10) * 1.0, (ranks_b < 10) * 1.0).pvalue)
    assert result["p"] < result["p_users"]  # 12 users' gains are fewer samples than their ~240 events
    # with one event per user the clustered test is the test over events
    single = paired_test([ranks_a], [ranks_b], "hr@10", users=np.arange(len(users)))
    assert single["p_users"] == pytest.approx(single["p"])
    assert "p_users" not in paired_test([ranks_a], [ranks_b], "hr@10")
    assert paired_test([ranks_b], [ranks_b], users=users)["p_users"] == 1.0
    assert np.isnan(paired_test([ranks_a], [ranks_b], "hr@10", users=np.zeros_like(users))["p_users"])  # 1 user
    with pytest.raises(ValueError, match="event users"):
        paired_test([ranks_a], [ranks_b], users=users[:-1])


def _synthetic_base(tmp_path, monkeypatch, backbone: str, n_users: int) -> None:
    """A synthetic two-type log in a fresh data dir and base.yaml: one quick epoch of ``backbone``."""
    monkeypatch.setenv("LEAREC_DATA_DIR", str(tmp_path / "data"))
    generate_synthetic_log(raw_dir("synthetic"), n_users=n_users, n_items=30)
    (tmp_path / "base.yaml").write_text(
        "data: {dataset: synthetic, protocol: sqn, history: 4}\n"
        f"model: {{backbone: {backbone}, hidden: 8}}\n"
        "train: {epochs: 1, batch_size: 64, threads: 1, progress: false}\n")


def test_grid_runs_skips_and_tabulates(tmp_path, monkeypatch, capsys):
    _synthetic_base(tmp_path, monkeypatch, "caser", n_users=80)
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(
        f"base: base.yaml\nout: {tmp_path / 'out'}\n"
        "axes: {objective: [ce, sqn], seed: [0, 1]}\nbaseline: {objective: ce}\n")
    grid = load_grid(grid_file)
    assert [c[0] for c in grid.cells] == ["ce-seed0", "ce-seed1", "sqn-seed0", "sqn-seed1"]
    assert grid.cells[3][2].objective == "sqn" and grid.cells[3][2].seed == 1

    assert main(["grid", "--config", str(grid_file), "--only", "seed=0", "--only", "objective=ce"]) == 0
    assert "1 runs, 0 already finished, 1 to run" in capsys.readouterr().out
    # A run that finishes while a grid still runs (copied in here) is in a report made now, though the grid
    # has not yet rewritten results.md.
    out_dir = tmp_path / "out"
    shutil.copytree(out_dir / "ce-seed0", out_dir / "ce-seed1")
    assert main(["report", str(out_dir), "--out", str(tmp_path / "early")]) == 0
    assert "| ce | 1 |" in (out_dir / "results.md").read_text()
    early = (tmp_path / "early" / "report.md").read_text()
    assert "| ce | 2 |" in early and "| sqn |" not in early
    shutil.rmtree(out_dir / "ce-seed1")
    assert main(["grid", "--config", str(grid_file)]) == 0
    out = capsys.readouterr().out
    assert "4 runs, 1 already finished, 3 to run" in out
    csv = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert csv[0].startswith("objective,seed,hr@5") and len(csv) == 5
    assert "purchase/ndcg@10" in csv[0]
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| ce | 2 |" in md and "(baseline)" in md
    sqn_row = next(line for line in md.splitlines() if line.startswith("| sqn | 2 |"))
    header = md.splitlines()[0].strip("| ").split(" | ")
    assert header[2:5] == ["hr@5", "ndcg@5", "hr@10"] and header[8:10] == ["click/hr@5", "click/ndcg@5"]
    assert sqn_row.count("±") == len(header) - 6  # mean ± std for every metric column (not Δ, the two p, seeds)
    # the validation metric of each run's selected epoch, last of the metric columns, equal to metrics.json's
    assert header[header.index("p") - 2] == "val ndcg@10" and csv[0].endswith(",val_ndcg@10,best_epoch,epochs_run")
    csv_header = csv[0].split(",")
    for line in csv[1:]:  # each run's kept and last epoch, as its metrics.json says
        fields = dict(zip(csv_header, line.split(",")))
        run = json.loads((out_dir / f"{fields['objective']}-seed{fields['seed']}" / "metrics.json").read_text())
        assert (int(fields["best_epoch"]), int(fields["epochs_run"])) == (run["best_epoch"], run["epochs_run"])
    val = [json.loads((out_dir / f"sqn-seed{s}" / "metrics.json").read_text())["val"]["ndcg@10"] for s in (0, 1)]
    cells = sqn_row.strip("| ").split(" | ")
    assert cells[header.index("val ndcg@10")] == format_mean_std(val)
    # seeds above: sqn's run against ce's of the same seed, by each run's metrics.json
    test_of = {(o, s): json.loads((out_dir / f"{o}-seed{s}" / "metrics.json").read_text())["test"]["ndcg@10"]
               for o in ("ce", "sqn") for s in (0, 1)}
    assert cells[header.index("seeds above")] == f"{sum(test_of['sqn', s] > test_of['ce', s] for s in (0, 1))} of 2"
    p_value, p_users = (float(cells[header.index(name)]) for name in ("p", "p (users)"))
    assert 0.0 <= p_value <= 1.0 and 0.0 <= p_users <= 1.0
    # each run records its test events' users, in the order of its ranks: the test clustered by user reads them
    prepared_users = prepare(load_config(out_dir / "sqn-seed0" / "config.yaml").data).test.user
    np.testing.assert_array_equal(np.load(out_dir / "sqn-seed0" / "test_users.npy"), prepared_users)
    # runs made before they did get them from their config's prepared data: the same test
    for run in out_dir.glob("*-seed*"):
        (run / "test_users.npy").unlink()
    table_args = (out_dir, {"objective": ["ce", "sqn"], "seed": [0, 1]}, {"objective": "ce"}, {},
                  [(f"{o}-seed{s}", {"objective": o, "seed": s}) for o in ("ce", "sqn") for s in (0, 1)])
    assert results_tables(*table_args, event_users=users_from_configs())[1] == md
    _, without = results_tables(*table_args)  # no users at all: no test over them
    assert next(line for line in without.splitlines()
                if line.startswith("| sqn |")).strip("| ").split(" | ")[header.index("p (users)")] == "–"
    # users that are not the run's events (its data prepared anew since) are dropped, not a failed table
    _, mismatched = results_tables(*table_args, event_users=lambda run_dir: np.zeros(3, dtype=np.int32))
    assert next(line for line in mismatched.splitlines()
                if line.startswith("| sqn |")).strip("| ").split(" | ")[header.index("p (users)")] == "–"
    assert main(["report", str(out_dir), "--out", str(tmp_path / "report")]) == 0
    assert md.strip() in (tmp_path / "report" / "report.md").read_text()  # the grid's table, once it has ended

    mtime = (tmp_path / "out" / "ce-seed0" / "metrics.json").stat().st_mtime
    assert main(["grid", "--config", str(grid_file)]) == 0
    assert "4 already finished, 0 to run" in capsys.readouterr().out
    assert (tmp_path / "out" / "ce-seed0" / "metrics.json").stat().st_mtime == mtime

    # The same folders under a changed base config are refused, not silently reused.
    (tmp_path / "base.yaml").write_text((tmp_path / "base.yaml").read_text().replace("epochs: 1", "epochs: 2"))
    assert main(["grid", "--config", str(grid_file)]) == 2
    assert "train.epochs: 1 -> 2" in capsys.readouterr().err


@pytest.mark.slow
def test_reuse_copies_finished_runs_with_the_same_config_only(tmp_path, monkeypatch, capsys):
    _synthetic_base(tmp_path, monkeypatch, "gru4rec", n_users=60)
    first = tmp_path / "first.yaml"
    first.write_text(f"base: base.yaml\nout: {tmp_path / 'first'}\naxes: {{objective: [ce, sqn], seed: [0]}}\n")
    assert main(["grid", "--config", str(first)]) == 0
    # Another grid names its cells differently; ce and sqn are the same experiments, ce-lr is not.
    second = tmp_path / "second.yaml"
    second.write_text(
        f"base: base.yaml\nout: {tmp_path / 'second'}\naxes: {{variant: [ce, sqn, ce-lr], seed: [0]}}\n"
        "variants: {ce: [objective=ce], sqn: [objective=sqn], ce-lr: [objective=ce, train.lr=0.01]}\n")
    # an interrupted run of the same experiment in the second grid: the finished copy replaces it
    (tmp_path / "second" / "sqn-seed0").mkdir(parents=True)
    (tmp_path / "second" / "sqn-seed0" / "config.yaml").write_text((tmp_path / "first" / "sqn-seed0" / "config.yaml").read_text())
    capsys.readouterr()
    assert main(["grid", "--config", str(second), "--only", "variant=ce,sqn", "--reuse", str(tmp_path / "first")]) == 0
    out = capsys.readouterr().out
    assert "reused 2 finished run(s)" in out and "2 runs, 2 already finished, 0 to run" in out
    for name, source in (("ce-seed0", "ce-seed0"), ("sqn-seed0", "sqn-seed0")):
        copied = tmp_path / "second" / name
        assert (copied / "metrics.json").read_text() == (tmp_path / "first" / source / "metrics.json").read_text()
        assert (copied / "reused_from.txt").read_text().strip() == str((tmp_path / "first" / source).resolve())
    assert not (tmp_path / "second" / "ce-lr-seed0").exists()  # not selected by --only
    assert not list((tmp_path / "second").glob(".reuse-*"))  # copies land whole, through a temporary folder

    assert main(["grid", "--config", str(second), "--reuse", str(tmp_path / "first")]) == 0
    out = capsys.readouterr().out
    assert "reused" not in out and "3 runs, 2 already finished, 1 to run" in out
    trained = tmp_path / "second" / "ce-lr-seed0"
    assert (trained / "metrics.json").is_file() and not (trained / "reused_from.txt").exists()
    assert "| ce-lr | 1 |" in (tmp_path / "second" / "results.md").read_text()

    assert main(["grid", "--config", str(second), "--reuse", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["grid", "--config", str(second), "--only", "variant=sqm"]) == 2  # a typo is not a silent no-op
    assert "selects no cell" in capsys.readouterr().err


def test_dry_run_reports_each_cell_and_changes_nothing(tmp_path, monkeypatch, capsys):
    _synthetic_base(tmp_path, monkeypatch, "gru4rec", n_users=40)
    grid_file = tmp_path / "grid.yaml"
    out = tmp_path / "out"
    grid_file.write_text(f"base: base.yaml\nout: {out}\naxes: {{objective: [ce, sqn, sac, snqn, sa2c]}}\n")
    cells = {name: cfg for name, _, cfg in load_grid(grid_file).cells}
    # Cell folders in every state, made by hand (no training): finished, interrupted after epoch 3, started
    # under another config, and one that another grid's output holds finished.
    for name in ("ce", "sqn", "sac"):
        cells[name].save(out / name / "config.yaml")
    (out / "ce" / "metrics.json").write_text("{}")
    (out / "sqn" / "checkpoints").mkdir()
    (out / "sqn" / "checkpoints" / "last.pt").write_bytes(b"")
    (out / "sqn" / "history.json").write_text('[{"epoch": 2}, {"epoch": 3}]')
    changed = cells["sac"].model_copy(deep=True)
    changed.train.lr = 0.5
    changed.save(out / "sac" / "config.yaml")
    other = tmp_path / "other"
    cells["snqn"].save(other / "snqn-seed0" / "config.yaml")
    (other / "snqn-seed0" / "metrics.json").write_text("{}")
    before = sorted(str(p) for p in tmp_path.rglob("*"))

    capsys.readouterr()
    assert main(["grid", "--config", str(grid_file), "--dry-run", "--reuse", str(other)]) == 0
    lines = capsys.readouterr().out.splitlines()
    status = {line.split()[1]: line.split(None, 2)[0] for line in lines if line.startswith("  ")}
    assert status == {"ce": "finished", "sqn": "resume", "sac": "stale",
                      "snqn": "reuse", "sa2c": "new"}
    assert any("sqn  (validated up to epoch 3)" in line for line in lines)
    assert any("train.lr" in line for line in lines if "sac" in line)
    assert any(str(other / "snqn-seed0") in line for line in lines if "snqn" in line)
    assert lines[-2].endswith("5 runs -> " + str(out) + ": 1 finished, 1 reuse, 1 resume, 1 new, 1 stale")
    assert lines[-1].startswith("a run would stop at the stale cells")
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    # --set overrides every cell: the sac folder (started with lr 0.5, never trained) fits it, the others are stale
    assert main(["grid", "--config", str(grid_file), "--dry-run", "--set", "train.lr=0.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    status = {line.split()[1]: line.split(None, 2)[0] for line in lines if line.startswith("  ")}
    assert status == {"ce": "stale", "sqn": "stale", "sac": "new", "snqn": "new", "sa2c": "new"}

    # A real run with a stale cell stops before it touches anything, the reusable cell included.
    assert main(["grid", "--config", str(grid_file), "--reuse", str(other)]) == 2
    assert "another config" in capsys.readouterr().err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_grid_file_keys_are_checked(tmp_path, capsys):
    (tmp_path / "base.yaml").write_text("train: {epochs: 1}\n")
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text("base: base.yaml\naxes: {seed: [0]}\nbaselin: {seed: 0}\n")
    assert main(["grid", "--config", str(grid_file), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'baselin'" in err and str(grid_file) in err and "base, set, out, axes" in err
    grid_file.write_text("base: base.yaml\naxes: {variant: [a]}\nvariants: {a: {set: [objective=ce], compar: b}}\n")
    with pytest.raises(UserError, match="unknown key 'variants.a.compar'"):
        load_grid(grid_file)
    for text, message in (("axes: {seed: [0]}\n", "'base' is missing"),
                          ("base: base.yaml\naxes: {variant: [a, b]}\nvariants: {a: [objective=ce]}\n",
                           r"variant\(s\) \['b'\] of the axis are not defined"),
                          ("base: base.yaml\naxes: {seed: [0]}\nvariants: {a: [objective=ce]}\n", "no 'variant' axis"),
                          ("base: base.yaml\naxes: {seed: [0]}\nbaseline: {objective: ce}\n", "are not axes"),
                          ("base: base.yaml\naxes: {variant: [a, b]}\nvariants: {a: [objective=ce], "
                           "b: {set: [objective=sqn], compare: [a, c]}}\n", "compared with 'c', which is not a variant"),
                          ("base: base.yaml\naxes: {variant: [a]}\nvariants: {a: {set: [], compare: [a]}}\n",
                           "compared with itself"),
                          ("base: base.yaml\naxes: {variant: [a, b]}\nvariants: {a: [objective=ce], "
                           "b: {set: [objective=sqn], compare: [a, a]}}\n", "names a variant twice")):
        grid_file.write_text(text)
        with pytest.raises(UserError, match=message):
            load_grid(grid_file)
    grid_file.write_text("base: base.yaml\naxes: {variant: [a, b, c]}\nvariants: {a: [objective=ce], "
                         "b: {set: [objective=sqn], compare: a}, c: {set: [objective=sac], compare: [a, b]}}\n")
    assert load_grid(grid_file).compare == {"b": ["a"], "c": ["a", "b"]}


def test_when_gives_its_overrides_to_the_cells_with_that_axis_value_only(tmp_path):
    (tmp_path / "base.yaml").write_text("train: {epochs: 1, lr: 0.001}\nmodel: {dropout: 0.1}\n")
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text("base: base.yaml\naxes: {model.backbone: [gru4rec, sasrec, pop], seed: [0, 1]}\n"
                         "when:\n  model.backbone:\n    gru4rec: [train.lr=0.003]\n"
                         "    sasrec: [model.dropout=0.5, train.lr=0.002]\n  seed: {1: [train.epochs=2]}\n")
    got = {c.name: (c.cfg.train.lr, c.cfg.model.dropout, c.cfg.train.epochs) for c in load_grid(grid_file).cells}
    assert got == {"gru4rec-seed0": (0.003, 0.1, 1), "gru4rec-seed1": (0.003, 0.1, 2),
                   "sasrec-seed0": (0.002, 0.5, 1), "sasrec-seed1": (0.002, 0.5, 2),
                   "pop-seed0": (0.001, 0.1, 1), "pop-seed1": (0.001, 0.1, 2)}
    head = "base: base.yaml\naxes: {model.backbone: [gru4rec], seed: [0]}\n"
    for when, message in (("{objective: {ce: [train.lr=0.1]}}", "'objective', which is not an axis"),
                          ("{model.backbone: {caser: [train.lr=0.1]}}", r"\['caser'\], which are not values"),
                          ("{model.backbone: {gru4rec: [seed=3]}}", r"sets \['seed'\], which are axes")):
        grid_file.write_text(head + f"when: {when}\n")
        with pytest.raises(UserError, match=message):
            load_grid(grid_file)


def test_plan_changes_no_cell_and_result_neutral_settings_do_not_make_a_run_stale(tmp_path):
    # an LE step budget, so that le.train.length_groups (result-neutral) may be set below
    (tmp_path / "base.yaml").write_text("train: {epochs: 1, threads: 2, progress: true}\nle: {train: {steps: 10}}\n")
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(f"base: base.yaml\nout: {tmp_path / 'out'}\naxes: {{objective: [ce, sqn]}}\n")
    grid = load_grid(grid_file)
    before = [cell.cfg.model_dump() for cell in grid.cells]
    plans = plan_grid(grid, threads=1, workers=2)
    assert [cell.cfg.model_dump() for cell in grid.cells] == before  # the grid's cells are left as they were
    assert all(p.cfg.train.threads == 1 and not p.cfg.train.progress for p in plans)
    assert all(p.cfg is not cell.cfg for p, cell in zip(plans, grid.cells))

    # A finished run saved with other values of the result-neutral settings is still finished.
    assert {"train.threads", "le.threads"} <= RESULT_NEUTRAL_SETTINGS
    saved = grid.cells[0].cfg.model_copy(deep=True)
    for dotted in RESULT_NEUTRAL_SETTINGS - {"le.device"}:  # another device may not exist on this machine
        *path, key = dotted.split(".")
        section = saved
        for name in path:
            section = getattr(section, name)
        setattr(section, key, {"threads": 7, "progress": False, "length_groups": 3}[key])
    saved.save(tmp_path / "out" / "ce" / "config.yaml")
    (tmp_path / "out" / "ce" / "metrics.json").write_text("{}")
    assert {p.name: p.status for p in plan_grid(grid)} == {"ce": "finished", "sqn": "new"}
    saved.train.lr = 0.5  # a setting that changes results does make it stale
    saved.save(tmp_path / "out" / "ce" / "config.yaml")
    assert plan_grid(grid)[0].status == "stale"


def test_table_of_a_seed_only_grid_has_as_many_columns_in_every_line(tmp_path):
    for seed in (0, 1):
        (tmp_path / f"seed{seed}").mkdir()
        (tmp_path / f"seed{seed}" / "metrics.json").write_text(json.dumps({"test": {"ndcg@10": 0.1 + seed / 100}}))
    _, md = results_tables(tmp_path, {"seed": [0, 1]}, {}, {}, [(f"seed{s}", {"seed": s}) for s in (0, 1)])
    lines = md.splitlines()
    assert len({line.count("|") for line in lines}) == 1
    assert lines[2].endswith("| 2 | 0.1050 ± 0.0071 |")


def test_a_variant_compared_with_several_gets_a_row_per_further_comparison(tmp_path):
    # 3 variants x 2 seeds ranking the same 6 events of 3 users; `lea` is compared with `base` (in its row)
    # and with `pop` (a row of its own below it), each against a hand computation of the paired difference
    ranks = {("base", 0): [0, 5, 20, 1, 3, 50], ("base", 1): [1, 5, 30, 0, 3, 40],
             ("lea", 0): [0, 1, 2, 0, 9, 3], ("lea", 1): [2, 0, 4, 1, 8, 3],
             ("pop", 0): [9, 9, 9, 9, 9, 9], ("pop", 1): [0, 0, 0, 9, 0, 1]}
    users = np.array([0, 0, 1, 1, 2, 2])
    cells = []
    for (variant, seed), r in ranks.items():
        run = tmp_path / f"{variant}-seed{seed}"
        run.mkdir()
        np.save(run / "test_ranks.npy", np.array(r))
        np.save(run / "test_users.npy", users)
        ndcg = np.where(np.array(r) < 10, 1 / np.log2(np.array(r) + 2), 0.0)
        (run / "metrics.json").write_text(json.dumps({"test": {"ndcg@10": float(ndcg.mean()),
                                                               "hr@10": float((np.array(r) < 10).mean())}}))
        cells.append((run.name, {"variant": variant, "seed": seed}))
    axes = {"variant": ["base", "lea", "pop"], "seed": [0, 1]}
    _, md = results_tables(tmp_path, axes, {"variant": "base"}, {"lea": ["base", "pop"]}, cells)
    lines = md.splitlines()
    assert len({line.count("|") for line in lines}) == 1
    lea_at = next(i for i, line in enumerate(lines) if line.startswith("| lea | 2 |"))
    header = lines[0].strip("| ").split(" | ")
    row, further = (lines[i].strip("| ").split(" | ") for i in (lea_at, lea_at + 1))

    def seed_mean(variant):
        return np.mean([np.where(np.array(ranks[variant, s]) < 10, 1 / np.log2(np.array(ranks[variant, s]) + 2),
                                 0.0) for s in (0, 1)], axis=0)
    for cols, other in ((row, "base"), (further, "pop")):
        diff = seed_mean("lea") - seed_mean(other)
        assert cols[header.index("compared with")] == other
        assert cols[header.index("Δndcg@10 vs it")].rstrip("*") == f"{diff.mean():+.4f}"
        assert float(cols[header.index("p ")]) == pytest.approx(stats.ttest_rel(seed_mean("lea"), seed_mean(other)).pvalue,
                                                               rel=1e-2)
        assert float(cols[header.index("p (users) ")]) == pytest.approx(  # p clustered by user
            paired_test([np.array(ranks["lea", s]) for s in (0, 1)], [np.array(ranks[other, s]) for s in (0, 1)],
                        users=users)["p_users"], rel=1e-2)
    # seeds above, by hand: lea's per-seed NDCG@10 is above base's on both seeds, above pop's on seed 0 only
    # (the last column; the first "seeds above" is the test against the baseline, base here too)
    assert row[-1] == "2 of 2" and further[-1] == "1 of 2" and row[header.index("seeds above")] == "2 of 2"
    # the further row names its group and carries the test only
    assert further[0] == "lea" and further[1] == "" and further[header.index("ndcg@10")] == ""
    assert further[header.index("p")] == "" and row[header.index("ndcg@10")] != ""
    assert sum(line.startswith("| lea |") for line in lines) == 2
    # without a baseline the further row still lines up, its test under the same columns
    _, bare = results_tables(tmp_path, axes, {}, {"lea": ["base", "pop"]}, cells)
    bare_lines = bare.splitlines()
    assert len({line.count("|") for line in bare_lines}) == 1
    bare_header = bare_lines[0].strip("| ").split(" | ")
    bare_further = next(line for line in bare_lines if line.startswith("| lea |  |")).strip("| ").split(" | ")
    assert bare_further[bare_header.index("compared with"):] == further[header.index("compared with"):]
    # one name, as grids wrote it before lists, is a list of one
    _, one = results_tables(tmp_path, axes, {"variant": "base"}, {"lea": "base"}, cells)
    assert one == "\n".join(lines[:lea_at + 1] + lines[lea_at + 2:]) + "\n"
    # a report reads such a grid's cells.json (written before lists) as the same table
    (tmp_path / "cells.json").write_text(json.dumps({"axes": axes, "baseline": {"variant": "base"},
                                                     "compare": {"lea": "base"},
                                                     "cells": [{"name": n, "values": v} for n, v in cells]}))
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    assert one.strip() in (tmp_path / "report" / "report.md").read_text()


def test_report_html_renders_headings_tables_images_and_links(tmp_path):
    html = markdown_to_html("# learec report\n\nMade by `learec report x`.\n\n## grid <b>x</b>\n\n"
                            "| variant | seeds | ndcg@10 |\n|---|---|---|\n| snqn | 2 | 0.0612 ± 0.0013 |\n\n"
                            "![test metrics](test_bars_0.png)\n\nSee [the README](../README.md).\n")
    assert "<h1>learec report</h1>" in html and "<h2>grid &lt;b&gt;x&lt;/b&gt;</h2>" in html  # names are text
    assert "<table>" in html and "<th>ndcg@10</th>" in html and "<td>0.0612 ± 0.0013</td>" in html
    assert '<img src="test_bars_0.png" alt="test metrics"' in html
    assert '<a href="../README.md">the README</a>' in html and "<code>learec report x</code>" in html


def _label_manifest(run_dir, checksum: str) -> str:
    """A complete label cache's manifest (no arrays: planning reads only the manifest); its key."""
    from learec.env.label import MANIFEST, labels_key

    manifest = {"fingerprint": {"data": "d"}, "transitions": 1, "checksums": {"state": checksum}, "complete": True}
    (run_dir / "label").mkdir(parents=True)
    (run_dir / "label" / MANIFEST).write_text(json.dumps(manifest))
    return labels_key(manifest)


def test_runs_on_the_same_labels_elsewhere_are_reused_and_not_stale(tmp_path, monkeypatch, capsys):
    """A pipeline reads its LE's labels from its own folder, a grid from another: a run on the same labels (by
    their key) is the same experiment wherever they lie, and a run on other labels is not."""
    _synthetic_base(tmp_path, monkeypatch, "gru4rec", n_users=40)
    key_a = _label_manifest(tmp_path / "labels-a", "same")
    assert _label_manifest(tmp_path / "labels-b", "same") == key_a  # a copy of the same labels
    key_c = _label_manifest(tmp_path / "labels-c", "other")
    aug = "objective=snqn, lea.augment=true, lea.augment_k=1"
    grid_file, out, other = tmp_path / "grid.yaml", tmp_path / "out", tmp_path / "other"
    grid_file.write_text(
        f"base: base.yaml\nout: {out}\naxes: {{variant: [b, b2, b3, c, p]}}\n"
        f"variants: {{b: [{aug}, lea.cache={tmp_path / 'labels-b'}], b2: [{aug}, lea.cache={tmp_path / 'labels-b'}],"
        f" b3: [{aug}, lea.cache={tmp_path / 'labels-b'}], c: [{aug}, lea.cache={tmp_path / 'labels-c'}],"
        # as the pipeline gives its cells: the labels' key pinned in the config
        f" p: [{aug}, lea.cache={tmp_path / 'labels-b'}, lea.cache_key={key_a}]}}\n")
    cells = {name: cfg for name, _, cfg in load_grid(grid_file).cells}

    def finished(run_dir, labels_dir, key):  # a finished run, made by hand, that read the labels of labels_dir
        cfg = cells["b"].model_copy(deep=True)
        cfg.lea.cache = str(labels_dir)
        cfg.save(run_dir / "config.yaml")
        (run_dir / "metrics.json").write_text('{"test": {"ndcg@10": 0.1}}')
        (run_dir / "le_cache.json").write_text(json.dumps({"key": key, "labels": str(labels_dir / "label")}))

    finished(other / "snqn-a", tmp_path / "labels-a", key_a)  # another grid's run on labels-a
    finished(out / "b2", tmp_path / "labels-a", key_a)  # copied here from it: this cell's finished run
    finished(out / "b3", tmp_path / "labels-b", key_c)  # trained on labels-b before they were remade
    capsys.readouterr()
    assert main(["grid", "--config", str(grid_file), "--dry-run", "--reuse", str(other)]) == 0
    lines = capsys.readouterr().out.splitlines()
    status = {line.split()[1]: line.split(None, 2)[0] for line in lines if line.startswith("  ")}
    assert status == {"b": "reuse", "b2": "finished", "b3": "stale", "c": "new", "p": "reuse"}
    assert any(f"LE labels: trained on {key_c}, lea.cache now holds {key_a}" in line for line in lines if " b3 " in line)
    # the copy names this grid's labels, and is this cell's finished run from then on
    assert main(["grid", "--config", str(grid_file), "--only", "variant=p", "--reuse", str(other)]) == 0
    copied = load_config(out / "p" / "config.yaml")
    assert (copied.lea.cache, copied.lea.cache_key) == (str(tmp_path / "labels-b"), key_a)
    assert (out / "p" / "metrics.json").read_text() == (other / "snqn-a" / "metrics.json").read_text()
    capsys.readouterr()
    assert main(["grid", "--config", str(grid_file), "--dry-run", "--only", "variant=p"]) == 0
    assert "finished p" in " ".join(capsys.readouterr().out.split())


def test_a_pipeline_run_without_le_cache_json_is_matched_by_the_key_in_its_config(tmp_path, monkeypatch, capsys):
    """Runs made before runs wrote le_cache.json: a pipeline run's config pins its labels' key (training refused
    labels with another), so it still counts as a run on those labels, wherever they lay."""
    _synthetic_base(tmp_path, monkeypatch, "gru4rec", n_users=40)
    key_a = _label_manifest(tmp_path / "labels-a", "same")
    assert _label_manifest(tmp_path / "labels-b", "same") == key_a
    key_c = _label_manifest(tmp_path / "labels-c", "other")
    aug = "objective=snqn, lea.augment=true, lea.augment_k=1"
    grid_file, out, other = tmp_path / "grid.yaml", tmp_path / "out", tmp_path / "other"
    grid_file.write_text(f"base: base.yaml\nout: {out}\naxes: {{variant: [b, c]}}\n"
                         f"variants: {{b: [{aug}, lea.cache={tmp_path / 'labels-b'}],"
                         f" c: [{aug}, lea.cache={tmp_path / 'labels-c'}]}}\n")
    cells = {name: cfg for name, _, cfg in load_grid(grid_file).cells}
    old = cells["b"].model_copy(deep=True)  # an old pipeline run on labels-a, with no le_cache.json
    old.lea.cache, old.lea.cache_key = str(tmp_path / "labels-a"), key_a
    old.save(other / "b" / "config.yaml")
    (other / "b" / "metrics.json").write_text('{"test": {"ndcg@10": 0.1}}')
    stale = old.model_copy(deep=True)  # this grid's c folder, trained on labels-c before they were remade
    stale.lea.cache, stale.lea.cache_key = str(tmp_path / "labels-c"), "remade-since"
    stale.save(out / "c" / "config.yaml")
    (out / "c" / "metrics.json").write_text('{"test": {"ndcg@10": 0.1}}')
    capsys.readouterr()
    assert main(["grid", "--config", str(grid_file), "--dry-run", "--reuse", str(other)]) == 0
    lines = capsys.readouterr().out.splitlines()
    status = {line.split()[1]: line.split(None, 2)[0] for line in lines if line.startswith("  ")}
    assert status == {"b": "reuse", "c": "stale"}
    assert any(f"LE labels: trained on remade-since, lea.cache now holds {key_c}" in line for line in lines)


def _processes_naming(text: str) -> list[int]:
    """The pids whose command line contains ``text`` (Linux /proc)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["sigterm_to_the_grid_alone", "ctrl_c_to_the_whole_group"])
def test_a_stopped_grid_ends_its_running_cell_and_starts_no_other(tmp_path, monkeypatch, stop):
    """SIGTERM to the grid process alone (as `kill PID` or a scheduler sends it), or Ctrl-C (SIGINT to the
    terminal's whole process group): the running cell ends, recording what its stage spent, and the queued
    cells never start (with Ctrl-C the thread pool used to start each of them in turn)."""
    monkeypatch.setenv("LEAREC_DATA_DIR", str(tmp_path / "data"))
    generate_synthetic_log(raw_dir("synthetic"), n_users=200, n_items=30)
    (tmp_path / "base.yaml").write_text(
        "data: {dataset: synthetic, protocol: sqn, history: 4}\nmodel: {backbone: gru4rec, hidden: 8}\n"
        "train: {epochs: 100000, patience: 100000, batch_size: 16, threads: 1, progress: false}\n")
    out = tmp_path / "out"
    (tmp_path / "grid.yaml").write_text(f"base: base.yaml\nout: {out}\naxes: {{seed: [0, 1, 2]}}\n")
    grid = subprocess.Popen([sys.executable, "-m", "learec", "grid", "--config", str(tmp_path / "grid.yaml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        log = out / "seed0" / "train.log"
        deadline = time.time() + 180
        while not (log.is_file() and "epoch 2:" in log.read_text()) and time.time() < deadline:
            assert grid.poll() is None, grid.stderr.read()
            time.sleep(0.1)
        assert "epoch 2:" in log.read_text(), "the first cell did not get going within 3 minutes"
        if stop == "sigterm_to_the_grid_alone":
            grid.send_signal(signal.SIGTERM)
        else:
            os.killpg(grid.pid, signal.SIGINT)
        _, err = grid.communicate(timeout=120)
        how, code = ("terminated", 143) if stop == "sigterm_to_the_grid_alone" else ("interrupted", 130)
        assert grid.returncode == code
        assert f"learec: {how}; the same command continues where it stopped" in err
        assert not _processes_naming(str(out / "seed0")), "the running cell outlived its grid"
        lines = [json.loads(line) for line in (out / "seed0" / "usage.jsonl").read_text().splitlines()]
        assert len(lines) == 1 and lines[0]["stage"].startswith("train") and lines[0]["completed"] is False
        assert lines[0]["seconds"] > 0
        assert not (out / "seed0" / "metrics.json").exists()
        assert not (out / "seed1" / "train.log").exists() and not (out / "seed2" / "train.log").exists()
    finally:
        if grid.poll() is None:
            os.killpg(grid.pid, signal.SIGKILL)
        for pid in _processes_naming(str(out)):
            os.kill(pid, signal.SIGKILL)
