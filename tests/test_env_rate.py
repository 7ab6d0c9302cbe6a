"""``learec env rate``: the figures of control-source label caches against a naive count on a tiny log,
split by an LE run's training users, and the refusals (caches of other data, a missing cache)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from learec.cli import main
from learec.config import load_config
from learec.env.batches import user_items
from learec.env.rate import rate_labels
from learec.env.train import subset_users
from test_label_sources import LABEL, label
from test_lea import BASE, data  # noqa: F401  (the tiny synthetic data of the LEA tests)

LE = ["le.train.user_fraction=0.5", "le.seed=11"]


def fake_le_run(run_dir: Path, *overrides: str) -> Path:
    """An LE run directory as far as --split-by reads it: config.yaml (data, le.train.user_fraction, le.seed)
    and le/; no LLM is trained."""
    (run_dir / "le").mkdir(parents=True)
    load_config(None, [*BASE, *LABEL, *LE, *overrides]).save(run_dir / "config.yaml")
    return run_dir


# --- naive counts, one transition and one item at a time ------------------------------------------

def naive_aug_future(data, aug: np.ndarray, rows: list[int], k: int) -> float:
    hits = 0
    for i in rows:
        seq = user_items(data.sequences, int(data.train.user[i])).tolist()
        later = set(seq[int(data.train.position[i]) + 1:])
        hits += sum(1 for a in aug[i, :k] if a >= 0 and int(a) in later)
    return hits / (len(rows) * k)


def naive_pop_future(data, rows: list[int], k: int) -> float:
    counts = np.bincount(np.asarray(data.train.action), minlength=data.n_items)  # sqn: every event a transition
    ranked = sorted(range(data.n_items), key=lambda item: (-counts[item], item))
    hits = 0
    for i in rows:
        seq = user_items(data.sequences, int(data.train.user[i])).tolist()
        p = int(data.train.position[i])
        picks = [item for item in ranked if item not in set(seq[: p + 1])][:k]
        hits += sum(1 for item in picks if item in set(seq[p + 1:]))
    return hits / (len(rows) * k)


def naive_diversity(aug: np.ndarray, rows: list[int], k: int) -> tuple[int, float]:
    proposals = Counter(int(a) for i in rows for a in aug[i, :k] if a >= 0)
    return len(proposals), sum(sorted(proposals.values(), reverse=True)[:10]) / sum(proposals.values())


def check_figures(figures: dict, data, aug: np.ndarray, rows: list[int], ks: tuple[int, ...]) -> None:
    assert figures["transitions"] == len(rows)
    for k in ks:
        assert figures[f"aug_future@{k}"] == pytest.approx(naive_aug_future(data, aug, rows, k)), k
        assert figures[f"pop_future@{k}"] == pytest.approx(naive_pop_future(data, rows, k)), k
        distinct, top10 = naive_diversity(aug, rows, k)
        assert figures[f"distinct@{k}"] == distinct and figures[f"top10_share@{k}"] == pytest.approx(top10), k


# --- the command -----------------------------------------------------------------------------------

def test_rate_two_sources_split_by_an_le_run(data, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    oracle, popularity = label("oracle", tmp_path / "oracle"), label("popularity", tmp_path / "pop")
    le_run = fake_le_run(tmp_path / "le")
    out = tmp_path / "rated.json"
    args = ["env", "rate", str(tmp_path / "oracle"), str(tmp_path / "pop"), "--split-by", str(le_run),
            "--k", "1", "3", "5", "--out", str(out)]
    assert main(args) == 0
    *table, written = capsys.readouterr().out.splitlines()
    assert written == f"figures: {out}"
    result = json.loads(out.read_text())
    assert result["data"] == data.manifest["key"] and result["ks"] == [1, 3, 5]
    assert [r["source"] for r in result["runs"]] == ["oracle", "popularity"]

    n, users = len(data.train), np.asarray(data.train.user)
    everyone = list(range(n))
    le_users = set(subset_users(users, 0.5, 11).tolist())  # the LE's users: le.train.user_fraction, le.seed
    inside = [i for i in everyone if int(users[i]) in le_users]
    outside = [i for i in everyone if int(users[i]) not in le_users]
    assert inside and outside
    assert result["split_by"] == {"run": str(le_run), "user_fraction": 0.5, "seed": 11, "le_users": len(le_users)}
    for run, cache in zip(result["runs"], (oracle, popularity)):
        aug = np.asarray(cache["aug_items"])
        assert run["aug_k"] == 3 and not any(key.endswith("@5") for key in run)  # k=5 is wider than the cache
        check_figures(run, data, aug, everyone, (1, 3))
        split = run["by_membership"]
        check_figures(split["le_users"], data, aug, inside, (1, 3))
        check_figures(split["other_users"], data, aug, outside, (1, 3))
        assert split["le_users"]["users"] == len(le_users)
        assert split["other_users"]["users"] == len(set(users.tolist()) - le_users)

    # the oracle's first augmented action is the next logged item: always a later item, where one exists
    has_next = [i for i in range(n - 1) if users[i + 1] == users[i]]
    assert naive_aug_future(data, np.asarray(oracle["aug_items"]), has_next, 1) == 1.0
    assert result["runs"][0]["aug_future@1"] == pytest.approx(len(has_next) / n)
    # the oracle proposes each filled slot right: aug_future@3 is the share of filled slots
    assert result["runs"][0]["aug_future@3"] == pytest.approx((np.asarray(oracle["aug_items"]) >= 0).mean())

    # the Markdown table: a header, a rule, one row per run with its source and figures
    assert len(table) == 4 and table[0].startswith("| run | source | transitions | aug_future@1 | pop_future@1 |")
    assert "aug_future@1 LE users" in table[0] and "aug_future@5" in table[0]
    for line, run in zip(table[2:], result["runs"]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:3] == [run["run"], run["source"], f"{n:,}"]
        assert cells[3] == f"{100 * run['aug_future@1']:.1f}%" and cells[5] == str(run["distinct@1"])
        assert cells[-6:] == ["-"] * 6  # k=5: left out


def test_popularity_labels_are_what_pop_future_rates(data, tmp_path: Path) -> None:
    """The popularity source and pop_future@k leave out the same items (the whole history and the logged
    action), whatever the state's window: their rates are equal at every k, and equal to a naive count (the
    users and positions of the transitions do not depend on the window)."""
    every = list(range(len(data.train)))
    for name, history in (("short", "data.history=2"), ("whole", "data.history=20")):
        label("popularity", tmp_path / name, None, history)
        out = str(tmp_path / f"{name}.json")
        assert main(["env", "rate", str(tmp_path / name), "--k", "1", "2", "3", "--out", out]) == 0
        rated = json.loads((tmp_path / f"{name}.json").read_text())["runs"][0]
        for k in (1, 2, 3):
            assert rated[f"aug_future@{k}"] == rated[f"pop_future@{k}"], (name, k)
            assert rated[f"aug_future@{k}"] == pytest.approx(naive_pop_future(data, every, k)), (name, k)


def test_rate_labels_split_with_every_user_inside(data, tmp_path: Path) -> None:
    aug = np.asarray(label("oracle", tmp_path / "oracle")["aug_items"])
    rated = rate_labels(data.sequences, data.train, aug, data.split.item_counts, (2,),
                        le_users=np.unique(np.asarray(data.train.user)))
    assert rated["by_membership"]["other_users"] is None
    everyone = rated["by_membership"]["le_users"]
    assert {k: v for k, v in everyone.items() if k != "users"} == {k: v for k, v in rated.items()
                                                                    if k != "by_membership"}
    with pytest.raises(ValueError, match="rows"):
        rate_labels(data.sequences, data.train, aug[1:], data.split.item_counts)


def test_rate_refuses_caches_of_other_data_and_missing_ones(data, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    label("oracle", tmp_path / "oracle")
    label("popularity", tmp_path / "other", None, "data.history=4")  # another prepared-data key
    out = tmp_path / "rated.json"
    assert main(["env", "rate", str(tmp_path / "oracle"), str(tmp_path / "other"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "different prepared data" in err and str(tmp_path / "oracle") in err and str(tmp_path / "other") in err
    assert not out.exists()

    # an LE run of other data splits nothing
    fake_le_run(tmp_path / "le-other", "data.history=4")
    assert main(["env", "rate", str(tmp_path / "oracle"), "--split-by", str(tmp_path / "le-other")]) == 2
    assert "not the data of the labels" in capsys.readouterr().err
    # a directory without le/ is no LE run
    assert main(["env", "rate", str(tmp_path / "oracle"), "--split-by", str(tmp_path / "other")]) == 2
    assert "not an LE run directory" in capsys.readouterr().err

    # a directory never labelled: load_label_cache's error and its hint (the labelling command)
    fake_le_run(tmp_path / "unlabelled")
    assert main(["env", "rate", str(tmp_path / "oracle"), str(tmp_path / "unlabelled")]) == 2
    err = capsys.readouterr().err
    assert "is missing" in err and "What to do:" in err and "learec env label" in err

    assert main(["env", "rate", str(tmp_path / "oracle"), "--k", "0"]) == 2
    assert "--k" in capsys.readouterr().err
