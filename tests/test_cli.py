"""The command line: user errors are one paragraph with exit code 2 and no traceback; JSON outputs parse."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from learec.cli import main
from learec.config import load_config, parse_override
from learec.data.registry import raw_dir
from learec.data.synthetic import generate_synthetic_log
from learec.errors import UserError


@pytest.fixture()
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LEAREC_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def _user_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("learec: error:")
    return err


def test_unknown_dataset(data_dir, capsys):
    err = _user_error(capsys, ["data", "stats", "no-such-data"])
    assert "Unknown dataset 'no-such-data'" in err and "movielens-100k" in err


def test_missing_raw_data_suggests_fetch(data_dir, capsys):
    err = _user_error(capsys, ["data", "prepare", "movielens-100k"])
    assert "learec data fetch movielens-100k" in err


def test_unknown_config_key_and_bad_value(data_dir, capsys):
    assert "unknown config key 'train.epoch'" in _user_error(capsys, ["config", "show", "--set", "train.epoch=3"])
    assert "'model.backbone'" in _user_error(capsys, ["config", "show", "--set", "model.backbone=bert"])
    assert "'train.epochs'" in _user_error(capsys, ["config", "show", "--set", "train.epochs=-1"])


def test_metric_seed_and_resume_set_validation(data_dir, capsys, tmp_path):
    assert "eval.metric 'ndcg@50' is not computed" in _user_error(capsys, ["config", "show", "--set", "eval.metric=ndcg@50"])
    assert "'seed'" in _user_error(capsys, ["config", "show", "--set", "seed=-1"])
    err = _user_error(capsys, ["train", "--resume", "--run-dir", str(tmp_path), "--set", "train.epochs=2"])
    assert "--set needs --config" in err


def test_missing_config_file(data_dir, capsys, tmp_path):
    assert "does not exist" in _user_error(capsys, ["train", "--config", str(tmp_path / "nope.yaml")])


def test_malformed_csv_row_names_file_and_line(data_dir, capsys, tmp_path):
    raw = tmp_path / "mine"
    raw.mkdir()
    (raw / "interactions.csv").write_text("user,item,timestamp\n1,2,3\n1,3,4,5\n")
    err = _user_error(capsys, ["data", "prepare", "mine", "--raw", str(raw)])
    assert "interactions.csv" in err and "line 3" in err


def test_empty_after_filtering(data_dir, capsys, tmp_path):
    raw = tmp_path / "mine"
    raw.mkdir()
    (raw / "interactions.csv").write_text("user,item,timestamp\n1,2,3\n1,3,4\n2,2,5\n")
    err = _user_error(capsys, ["data", "prepare", "mine", "--raw", str(raw), "--set", "data.min_user_interactions=5"])
    assert "No interactions are left" in err


def test_stats_json_and_python_dash_m(data_dir):
    generate_synthetic_log(raw_dir("synthetic"), n_users=30, n_items=20)
    env = {**os.environ, "LEAREC_DATA_DIR": str(data_dir)}
    out = subprocess.run([sys.executable, "-m", "learec", "data", "stats", "synthetic", "--json"],
                         capture_output=True, text=True, env=env, check=True).stdout
    stats = json.loads(out)
    assert stats["users"] == 30 and stats["items"] <= 20
    assert stats["interactions"] == stats["event_types"]["click"] + stats["event_types"]["purchase"]


def test_stats_json_of_own_data_has_a_raw_section(data_dir, tmp_path, capsys):
    """Generic-format data: what was read (files, rows, users, items, items with no row in items.csv) and,
    with a k-core, what it removed; the default item text is every items.csv column as "name: value"."""
    raw = tmp_path / "mine"
    raw.mkdir()
    rows = [f"{user},{item},{t}" for t, (user, item) in enumerate(
        [("a", 1), ("a", 2), ("a", 3), ("a", 1), ("a", 2), ("b", 1), ("b", 2), ("b", 4), ("b", 2), ("b", 1),
         ("c", 1), ("c", 2), ("c", 5), ("c", 1), ("c", 2)])]
    (raw / "interactions.csv").write_text("user,item,timestamp\n" + "\n".join(rows) + "\n")
    (raw / "items.csv").write_text("item,title,category\n1,Kettle,kitchen\n2,Mug,\n3,Lamp,living room\n")
    assert main(["data", "stats", "mine", "--raw", str(raw), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["raw"] == {"files": [{"file": "interactions.csv", "lines": 15, "malformed": 0, "examples": []},
                                      {"file": "items.csv", "lines": 3, "malformed": 0, "examples": []}],
                            "users": 3, "items": 5, "items_without_text": 2}
    assert main(["data", "stats", "mine", "--json", "--set", "data.min_item_interactions=2"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["raw"]["kcore_removed"] == {"interactions": 3, "users": 0, "items": 3}
    from learec.data.prepared import prepare

    texts = prepare(load_config(None, ["data.dataset=mine"]).data, log=lambda *_: None).sequences.item_text
    assert texts == ["title: Kettle, category: kitchen", "title: Mug", "title: Lamp, category: living room",
                     "item 4", "item 5"]


def test_help_for_every_subcommand(capsys):
    for argv in (["--help"], ["data", "--help"], ["data", "prepare", "--help"], ["train", "--help"],
                 ["evaluate", "--help"], ["grid", "--help"], ["pipeline", "--help"], ["report", "--help"],
                 ["env", "train", "--help"], ["env", "label", "--help"], ["env", "report", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
    assert "--resume" in capsys.readouterr().out


def test_overrides_are_typed_and_nested():
    assert parse_override("train.lr=0.01") == (["train", "lr"], 0.01)
    assert parse_override("eval.ks=[1, 5]") == (["eval", "ks"], [1, 5])
    cfg = load_config(None, ["train.epochs=3", "model.sasrec.heads=2", "eval.exclude_seen=true"])
    assert cfg.train.epochs == 3 and cfg.model.sasrec.heads == 2 and cfg.eval.exclude_seen is True
    with pytest.raises(UserError, match="not of the form"):
        parse_override("train.epochs")


def test_text_overrides_keep_their_spaces():
    # a template's leading space matters (" is the product {text}."); YAML would strip it
    assert parse_override("le.item_tokens.describe= is the product {text}.")[1] == " is the product {text}."
    assert parse_override("data.dataset=synthetic")[1] == "synthetic"
    assert parse_override("le.model.prompt='quoted '")[1] == "quoted "  # quoting still works
    cfg = load_config(None, ["le.item_tokens.describe= is {text}!"])
    assert cfg.le.item_tokens.describe == " is {text}!"


def test_committed_configs_are_valid():
    from pathlib import Path

    configs = sorted((Path(__file__).parent.parent / "configs").glob("ml100k_*.yaml"))
    assert {c.stem for c in configs} >= {f"ml100k_{b}" for b in ("sasrec", "gru4rec", "caser", "nextitnet", "pop")}
    for path in configs:
        cfg = load_config(path)
        assert cfg.data.dataset == "movielens-100k" and path.stem.endswith(cfg.model.backbone)


@pytest.mark.parametrize("port", ["99999", "-1", "0", "http"])
def test_serve_port_out_of_range_is_a_usage_error(port, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "some-model", "--port", port])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--port" in err and "Traceback" not in err


def test_dataset_name_with_a_path_is_refused(data_dir, capsys):
    err = _user_error(capsys, ["data", "fetch", "../outside"])
    assert "Invalid dataset name" in err
    assert not (data_dir.parent / "outside").exists()


def test_stats_of_own_data_find_its_last_preparation(data_dir, capsys, tmp_path):
    raw = tmp_path / "mine"
    raw.mkdir()
    (raw / "interactions.csv").write_text("".join(["user,item,timestamp\n"] + [f"u{i % 7},{i % 5},{i}\n" for i in range(70)]))
    assert main(["data", "prepare", "mine", "--raw", str(raw)]) == 0
    capsys.readouterr()
    assert main(["data", "stats", "mine", "--json"]) == 0  # no --raw again
    assert json.loads(capsys.readouterr().out)["interactions"] == 70
    assert "Unknown dataset 'other'" in _user_error(capsys, ["data", "stats", "other"])


def test_generated_data_are_made_on_first_use(data_dir, capsys):
    assert main(["data", "stats", "synthetic", "--json"]) == 0  # no `learec data fetch synthetic` first
    assert json.loads(capsys.readouterr().out)["users"] > 0


@pytest.mark.parametrize("setting, key", [
    ("seed=123456789012345678901234", "'seed'"),
    ("eval.ks=[0, 10]", "'eval.ks.0'"),
    ("eval.ks=[]", "'eval.ks'"),
    ("train.lr=.inf", "'train.lr'"),
    ("rl.gamma=.nan", "'rl.gamma'"),
    ("le.label.seed=-3", "'le.label.seed'"),
])
def test_out_of_range_settings_are_one_line_errors(data_dir, capsys, setting, key):
    err = _user_error(capsys, ["config", "show", "--set", setting])
    assert key in err.splitlines()[0]


def test_config_files_with_a_key_twice_or_not_utf8_are_refused(data_dir, capsys, tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("train:\n  epochs: 3\n  lr: 0.01\n  epochs: 5\n")
    err = _user_error(capsys, ["config", "show", "--config", str(twice)])
    assert "'epochs' is given twice" in err and "line 4" in err
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("data:\n  text_template: 'caf\xe9 {title}'\n".encode("latin-1"))
    assert "is not UTF-8" in _user_error(capsys, ["config", "show", "--config", str(latin)])


def test_progress_bars_stay_off_when_output_is_not_a_terminal(data_dir, capsys, tmp_path):
    # a log file (or a pipe) would fill with carriage-return lines
    generate_synthetic_log(raw_dir("synthetic"), n_users=30, n_items=20)
    sets = ["data.dataset=synthetic", "data.protocol=sqn", "data.history=5", "model.backbone=gru4rec",
            "model.hidden=8", "train.epochs=1", "train.progress=true", "eval.batch_size=4", "train.batch_size=8"]
    config = tmp_path / "c.yaml"
    config.write_text("seed: 0\n")
    argv = ["train", "--config", str(config), "--run-dir", str(tmp_path / "run")]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "\r" not in out.err and "it/s" not in out.err


def test_data_name_must_match_the_configs_dataset(data_dir, capsys, tmp_path):
    """With --config, NAME is the config's data.dataset: another name would prepare a second cache."""
    config = tmp_path / "c.yaml"
    config.write_text("data: {dataset: products}\n")
    for action in ("prepare", "stats"):
        err = _user_error(capsys, ["data", action, "mydata", "--config", str(config)])
        assert "differs from data.dataset 'products'" in err and f"learec data {action} products" in err
    assert not (data_dir / "prepared").exists() or not any((data_dir / "prepared").iterdir())


def test_sigterm_raises_terminated_once_and_the_handler_before_is_restored():
    from learec.interrupt import Terminated, sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    cleaned_up = []
    with pytest.raises(Terminated):
        with sigterm_as_interrupt():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # interrupted: the handler raises at once
            except Terminated:
                # the clean-up after the first SIGTERM: a second one does not cut it short
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                cleaned_up.append(True)
                raise
    assert cleaned_up == [True]
    assert signal.getsignal(signal.SIGTERM) is before
