"""Control label sources (oracle, popularity, teacher): each against a direct computation on a tiny log,
each read by the RL trainers like the LE's labels, and each a cache key of its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from learec.cli import main
from learec.config import load_config
from learec.data.prepared import prepare
from learec.env.batches import uniform_negatives, user_items
from learec.env.label import load_label_cache
from learec.errors import UserError
from learec.lea.control import label_control
from learec.lea.inputs import LEInputs
from learec.train.checkpoints import load_trained_model
from learec.train.run import train_run
from test_lea import BASE, data  # noqa: F401  (the tiny synthetic data of the LEA tests)

LABEL = ["le.label.aug_k=3", "le.label.negatives=4", "le.label.seed=7", "le.model.state_dim=8"]
K_AUG, K_NEG = 3, 4


def label(source: str, run_dir: Path, teacher: Path | None = None, *overrides: str):
    return label_control(source, load_config(None, [*BASE, *LABEL, *overrides]), run_dir, teacher)


def train_teacher(run_dir: Path, objective: str = "ce", *overrides: str) -> Path:
    train_run(load_config(None, [*BASE, f"objective={objective}", *overrides]), run_dir)
    return run_dir


def check_negatives(cache, data, seed: int = 7) -> None:
    """The LE labeller's negatives: uniform over the other items, drawn per user with le.label.seed."""
    users, actions = np.asarray(data.train.user), np.asarray(data.train.action)
    negs = np.asarray(cache["neg_items"])
    assert negs.shape == (len(users), K_NEG) and not (negs == actions[:, None]).any()
    user = int(users[0])
    rows = np.flatnonzero(users == user)
    expected = uniform_negatives(np.random.default_rng([seed, user]), actions[rows].astype(np.int64), K_NEG,
                                 data.n_items)
    np.testing.assert_array_equal(negs[rows], expected)


def test_oracle_augments_with_the_true_next_items(data, tmp_path: Path) -> None:
    cache = label("oracle", tmp_path / "oracle")
    users, positions = np.asarray(data.train.user), np.asarray(data.train.position)
    aug = np.asarray(cache["aug_items"])
    user = int(users[0])
    rows = np.flatnonzero(users == user)
    seq = user_items(data.sequences, user)
    assert len(rows) == len(seq) >= 4  # sqn: every event of a training user is a transition
    first, last = rows[0], rows[-1]
    np.testing.assert_array_equal(aug[first], seq[positions[first] + 1: positions[first] + 4])
    np.testing.assert_array_equal(aug[last - 1], [seq[-1], -1, -1])  # the sequence ends after one more item
    np.testing.assert_array_equal(aug[last], [-1, -1, -1])
    for i in np.random.default_rng(0).choice(len(users), 10, replace=False):  # and a few rows anywhere
        seq = user_items(data.sequences, int(users[i]))
        nxt = list(seq[positions[i] + 1: positions[i] + 1 + K_AUG])
        assert list(aug[i]) == nxt + [-1] * (K_AUG - len(nxt))
    assert not np.asarray(cache["state"]).any() and cache["state"].shape == (len(users), 8)
    for name in ("reward", "neg_rewards", "aug_rewards"):
        assert not np.asarray(cache[name]).any()  # one constant: z = 0 after standardisation
    check_negatives(cache, data)


def test_popularity_augments_with_the_most_popular_unseen_items(data, tmp_path: Path) -> None:
    cache = label("popularity", tmp_path / "pop")
    actions, state = np.asarray(data.train.action), np.asarray(data.train.state)
    users, positions = np.asarray(data.train.user), np.asarray(data.train.position)
    counts = np.bincount(actions, minlength=data.n_items)  # sqn: every training event is a transition
    ranked = sorted(range(data.n_items), key=lambda item: (-counts[item], item))
    aug = np.asarray(cache["aug_items"])
    beyond_window = 0
    for i in range(len(actions)):
        # the whole history, not only the state's window, and the logged action
        excluded = set(user_items(data.sequences, int(users[i]))[: positions[i] + 1].tolist())
        beyond_window += bool(excluded - set(state[i].tolist()) - {int(actions[i])})
        picks = [item for item in ranked if item not in excluded][:K_AUG]
        assert list(aug[i]) == picks + [-1] * (K_AUG - len(picks)), i
    assert beyond_window > 0  # histories longer than the window: the two exclusions differ here
    assert not np.asarray(cache["aug_rewards"]).any() and not np.asarray(cache["state"]).any()
    check_negatives(cache, data)


@pytest.mark.parametrize("objective", ["ce", "snqn"])  # a CE model, and a Q-network ranked by its CE head
def test_teacher_labels_are_its_own_states_scores_and_top_items(data, tmp_path: Path, objective: str) -> None:
    teacher = train_teacher(tmp_path / "teacher", objective)
    cache = label("teacher", tmp_path / "from-teacher", teacher)
    cfg = load_config(teacher / "config.yaml")
    model = load_trained_model(cfg, teacher, data.n_items, torch.as_tensor(data.split.item_counts)).eval()
    train = data.train
    check_negatives(cache, data)
    for i in [0, 5, 17, len(train) - 1]:
        hist = torch.as_tensor(np.array(train.state[i: i + 1]), dtype=torch.long)
        length = torch.as_tensor(np.array(train.length[i: i + 1]), dtype=torch.long)
        with torch.no_grad():
            state = model.network.backbone(hist, length)[0].numpy()
            scores = model(hist, length)[0].numpy()
        np.testing.assert_allclose(np.asarray(cache["state"][i], dtype=np.float32), state, rtol=2e-3, atol=2e-3)
        assert cache["reward"][i] == pytest.approx(scores[train.action[i]], rel=1e-5, abs=1e-5)
        np.testing.assert_allclose(cache["neg_rewards"][i], scores[cache["neg_items"][i]], rtol=1e-5, atol=1e-5)
        seen = set(user_items(data.sequences, int(train.user[i]))[: train.position[i] + 1].tolist())
        top = [int(j) for j in np.argsort(-scores, kind="stable") if int(j) not in seen][:K_AUG]
        assert list(cache["aug_items"][i]) == top
        np.testing.assert_allclose(cache["aug_rewards"][i], scores[top], rtol=1e-5, atol=1e-5)


def test_a_teacher_trained_on_other_data_is_refused(data, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    other = train_teacher(tmp_path / "other-teacher", "ce", "data.history=4")
    config = tmp_path / "label.yaml"
    load_config(None, [*BASE, *LABEL]).save(config)
    args = ["env", "label", "--source", "teacher", "--teacher", str(other), "--config", str(config),
            "--run-dir", str(tmp_path / "labels")]
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("learec: error: The teacher") and "other data" in err[0]
    other_key = prepare(load_config(other / "config.yaml").data).manifest["key"]
    assert other_key in err[0] and data.manifest["key"] in err[0]  # both named, on one line
    assert not (tmp_path / "labels" / "label").exists()


@pytest.mark.parametrize("source", ["oracle", "popularity", "teacher"])
def test_each_source_trains_an_snqn_lea_run(data, tmp_path: Path, source: str) -> None:
    teacher = train_teacher(tmp_path / "teacher") if source == "teacher" else None
    labels = tmp_path / f"labels-{source}"
    label(source, labels, teacher)
    cfg = load_config(None, [*BASE, "objective=snqn", "rl.negatives=4", f"lea.cache={labels}", "lea.augment=true",
                             "lea.reward=true", "lea.state=true"])
    metrics = train_run(cfg, tmp_path / "run")
    assert 0.0 <= metrics["test"]["ndcg@10"] <= 1.0


def test_the_source_enters_the_cache_key(data, tmp_path: Path) -> None:
    oracle, popularity = label("oracle", tmp_path / "a"), label("popularity", tmp_path / "b")
    assert oracle.manifest["fingerprint"]["source"] == "oracle"
    assert oracle.key != popularity.key
    assert label("oracle", tmp_path / "c").key == oracle.key  # same source and settings: same labels
    assert label("oracle", tmp_path / "d", None, "le.label.seed=8").key != oracle.key  # settings count too
    # a run pinned to the oracle's labels refuses the same directory relabelled by another source
    cfg = load_config(None, [*BASE, "objective=snqn", f"lea.cache={tmp_path / 'a'}", f"lea.cache_key={oracle.key}",
                             "lea.augment=true"])
    LEInputs(cfg.lea, data)
    label_control("popularity", None, tmp_path / "a")
    assert load_label_cache(tmp_path / "a" / "label").manifest["fingerprint"]["source"] == "popularity"
    with pytest.raises(UserError, match="has changed"):
        LEInputs(cfg.lea, data)


def test_cli_control_sources(data, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "label.yaml"
    load_config(None, [*BASE, *LABEL]).save(config)
    run_dir = tmp_path / "oracle"
    assert main(["env", "label", "--source", "oracle", "--config", str(config), "--run-dir", str(run_dir)]) == 0
    assert "oracle labels of" in capsys.readouterr().out
    stamp = (run_dir / "label" / "manifest.json").stat().st_mtime_ns
    assert main(["env", "label", "--source", "oracle", "--run-dir", str(run_dir)]) == 0  # its own config.yaml
    assert (run_dir / "label" / "manifest.json").stat().st_mtime_ns == stamp  # reused
    refused = [
        ["--source", "oracle", "--config", str(config), "--set", "le.label.aug_k=2", "--run-dir", str(run_dir)],
        ["--source", "oracle", "--run-dir", str(tmp_path / "new")],  # no config for a new directory
        ["--source", "popularity", "--teacher", str(run_dir), "--run-dir", str(run_dir)],
        ["--source", "teacher", "--run-dir", str(run_dir)],  # no --teacher
        ["--source", "oracle", "--eval-states", "--run-dir", str(run_dir)],
        ["--config", str(config), "--run-dir", str(run_dir)],  # the LE source takes its run's config
    ]
    for args in refused:
        assert main(["env", "label", *args]) == 2, args
        assert capsys.readouterr().err.startswith("learec: error:")
    le_run = tmp_path / "le-run"
    (le_run / "le").mkdir(parents=True)  # an LE run's label/ is never overwritten by a control source
    assert main(["env", "label", "--source", "oracle", "--config", str(config), "--run-dir", str(le_run)]) == 2
    assert "LE run directory" in capsys.readouterr().err


@pytest.mark.parametrize("negatives", [0, 4])
def test_the_reward_plot_shows_only_what_the_cache_holds(data, tmp_path: Path, negatives: int) -> None:
    import warnings

    from learec.report import _plot_le_rewards

    label("oracle", tmp_path / "run", None, f"le.label.negatives={negatives}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty series would warn (mean of an empty slice)
        assert _plot_le_rewards(tmp_path / "run", tmp_path / "rewards.png")
    assert (tmp_path / "rewards.png").stat().st_size > 1000
