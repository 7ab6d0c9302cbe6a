"""Data pipeline: raw readers, preprocessing, the two split protocols and the prepared cache.

Every expected array below is worked out by hand from the tiny logs defined here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from learec.config import DataConfig
from learec.data.prepared import find_prepared, prepare
from learec.data.preprocess import build_sequences, item_texts, kcore_filter
from learec.data.raw import RawData, read_generic
from learec.data.registry import DATASETS, get_spec, resolve_raw
from learec.data.splits import history_windows, split_loo, split_sqn
from learec.errors import UserError


@pytest.fixture(autouse=True)
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never touch the user's cache: every test gets its own LEAREC_DATA_DIR."""
    home = tmp_path / "learec-home"
    monkeypatch.setenv("LEAREC_DATA_DIR", str(home))
    return home


# --- The toy log -------------------------------------------------------------------------------------
# Rows are deliberately out of time order and interleaved. Ties: carol's rows 5 and 8 (t=50) and dave's
# rows 12 and 13 (t=3); in both, the file order is the opposite of the item-id order.
# "purchase" appears first in the file but "click" is more frequent (11 vs 3).
TOY = """user,item,timestamp,event
alice,100,30,purchase
bob,9,5,click
alice,10,10,click
dave,2,1,click
carol,7,50,purchase
alice,2,20,click
dave,9,2,click
carol,2,50,click
carol,7,40,click
bob,10,6,click
alice,7,40,click
dave,100,3,purchase
dave,10,3,click
dave,7,9,click
"""
# Users by first appearance: alice 0, bob 1, dave 2, carol 3.
# Items numerically: "2"->0, "7"->1, "9"->2, "10"->3, "100"->4; padding id 5.
TOY_USER_IDS = ["alice", "bob", "dave", "carol"]
TOY_ITEM_IDS = ["2", "7", "9", "10", "100"]
TOY_ITEMS = [3, 0, 4, 1,  2, 3,  0, 2, 4, 3, 1,  1, 1, 0]
TOY_EVENTS = [0, 0, 1, 0,  0, 0,  0, 0, 1, 0, 0,  0, 1, 0]
TOY_TIMES = [10, 20, 30, 40,  5, 6,  1, 2, 3, 3, 9,  40, 50, 50]
TOY_OFFSETS = [0, 4, 6, 11, 14]
P = 5  # padding id of the toy log

TOY_ITEMS_CSV = """item,name,category
10,Ten,toys
2,Two,books
9,Nine,
999,Unused,none
"""


def eq(actual, expected) -> None:
    np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))


# --- Generic reader ----------------------------------------------------------------------------------

def test_generic_loader_sequences_events_and_ids(write_generic) -> None:
    raw = read_generic(write_generic(TOY))
    assert raw.event_order == ["click", "purchase"]  # by frequency, not by first appearance
    seqs = build_sequences(raw, 0, 0, "")
    assert seqs.user_ids == TOY_USER_IDS
    assert seqs.item_ids == TOY_ITEM_IDS  # numeric ids in numeric order: "10" after "9"
    assert seqs.event_types == ["click", "purchase"]
    eq(seqs.items, TOY_ITEMS)
    eq(seqs.events, TOY_EVENTS)
    eq(seqs.timestamps, TOY_TIMES)
    eq(seqs.offsets, TOY_OFFSETS)
    eq(seqs.lengths, [4, 2, 5, 3])
    assert seqs.n_users == 4 and seqs.n_items == 5
    assert seqs.items.dtype == np.int32 and seqs.events.dtype == np.int8
    assert seqs.item_text == ["item 2", "item 7", "item 9", "item 10", "item 100"]  # no items.csv


def test_event_order_follows_frequency_when_purchases_dominate(write_generic) -> None:
    raw = read_generic(write_generic("user,item,timestamp,event\nu,1,1,click\nu,2,2,buy\nu,3,3,buy\n"))
    assert raw.event_order == ["buy", "click"]
    eq(build_sequences(raw, 0, 0, "").events, [1, 0, 0])


def test_no_event_column_gives_single_event_type(write_generic) -> None:
    raw = read_generic(write_generic("user,item,timestamp\nu,1,1\nu,2,2\n"))
    assert raw.event_order is None
    seqs = build_sequences(raw, 0, 0, "")
    assert seqs.event_types == ["interaction"]
    eq(seqs.events, [0, 0])


def test_item_text_from_template_and_missing_metadata(write_generic) -> None:
    raw = read_generic(write_generic(TOY, TOY_ITEMS_CSV))
    seqs = build_sequences(raw, 0, 0, "{name} [{category}]")
    assert seqs.item_text == ["Two [books]", "item 7", "Nine []", "Ten [toys]", "item 100"]


def test_item_text_without_template_lists_nonempty_fields(write_generic) -> None:
    raw = read_generic(write_generic(TOY, TOY_ITEMS_CSV))
    seqs = build_sequences(raw, 0, 0, "")
    assert seqs.item_text == ["name: Two, category: books", "item 7", "name: Nine", "name: Ten, category: toys",
                              "item 100"]


def test_template_with_unknown_field_is_a_user_error(write_generic) -> None:
    raw = read_generic(write_generic(TOY, TOY_ITEMS_CSV))
    with pytest.raises(UserError, match="colour"):
        build_sequences(raw, 0, 0, "{name} {colour}")


def test_template_set_through_config_reaches_prepared_text(write_generic) -> None:
    raw_dir = write_generic(TOY, TOY_ITEMS_CSV)
    cfg = DataConfig(dataset="toy", raw=str(raw_dir), history=2, text_template="<{name}>")
    prep = prepare(cfg, log=lambda *_: None)
    assert prep.sequences.item_text == ["<Two>", "item 7", "<Nine>", "<Ten>", "item 100"]


# --- Malformed input ---------------------------------------------------------------------------------

def test_malformed_row_names_file_and_line(write_generic) -> None:
    d = write_generic("user,item,timestamp\na,1,1\na,2,2\nb,3,3,extra\nb,4,4\n")
    with pytest.raises(UserError) as err:
        read_generic(d)
    msg = str(err.value)
    assert str(d / "interactions.csv") in msg
    assert "line 4" in msg


def test_malformed_items_file_names_that_file(write_generic) -> None:
    d = write_generic("user,item,timestamp\na,1,1\n", "item,name\n1,One\n2,Two,extra\n")
    with pytest.raises(UserError) as err:
        read_generic(d)
    assert str(d / "items.csv") in str(err.value) and "line 3" in str(err.value)


@pytest.mark.parametrize("interactions, items, file, line", [
    # one extra field on every row: pandas would read the first field as an index and shift the columns
    ("user,item,timestamp\na,1,1,7\na,2,2,8\n", None, "interactions.csv", 2),
    ("user,item,timestamp\na,1,1,\na,2,2,\n", None, "interactions.csv", 2),  # trailing commas
    ("user,item,timestamp\na,1,1\n", "item,name\n1,One,x\n2,Two,y\n", "items.csv", 2),
])
def test_rows_longer_than_the_header_are_refused(write_generic, interactions: str, items: str | None, file: str,
                                                 line: int) -> None:
    with pytest.raises(UserError) as err:
        read_generic(write_generic(interactions, items))
    assert file in str(err.value) and f"line {line}" in str(err.value)


@pytest.mark.parametrize("column, text, line", [
    ("user", "user,item,timestamp\na,1,1\n,2,2\n", 3),
    ("item", "user,item,timestamp\na, ,1\n", 2),
    ("event", "user,item,timestamp,event\na,1,1,click\na,2,2,\n", 3),
])
def test_empty_ids_and_events_are_refused(write_generic, column: str, text: str, line: int) -> None:
    with pytest.raises(UserError) as err:
        read_generic(write_generic(text))
    assert f"line {line}: column '{column}' is empty" in str(err.value)


def test_an_edit_in_the_middle_of_a_large_raw_file_invalidates_the_preparation(write_generic) -> None:
    # over 16 MiB, where the fingerprint once hashed only the first and last 8 MiB; the edit keeps the size
    rows = [f"u{i % 50},{i % 97},{i}" for i in range(1_300_000)]
    raw = write_generic("user,item,timestamp\n" + "\n".join(rows) + "\n")
    path = raw / "interactions.csv"
    assert path.stat().st_size > 16 << 20
    cfg = DataConfig(dataset="generic", raw=str(raw), protocol="loo", history=5)
    first = prepare(cfg, log=lambda *_: None)
    text = path.read_bytes()
    middle = text.index(b"\nu7,", len(text) // 2) + 1
    path.write_bytes(text[:middle] + b"u8" + text[middle + 2:])  # one user id changed, same size
    assert path.stat().st_size == len(text)
    second = prepare(cfg, log=lambda *_: None)
    assert second.manifest["key"] != first.manifest["key"]


def test_non_numeric_timestamp_names_line_and_value(write_generic) -> None:
    d = write_generic("user,item,timestamp\na,1,1\na,2,2\nb,3,yesterday\nb,4,4\n")
    with pytest.raises(UserError) as err:
        read_generic(d)
    msg = str(err.value)
    assert str(d / "interactions.csv") in msg
    assert "line 4" in msg and "'yesterday'" in msg and "timestamp" in msg


def test_missing_column_names_the_column(write_generic) -> None:
    d = write_generic("user,item,time\na,1,1\n")
    with pytest.raises(UserError) as err:
        read_generic(d)
    assert "['timestamp']" in str(err.value)


def test_missing_interactions_file(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="interactions.csv"):
        read_generic(tmp_path / "empty")


# --- Preprocessing -----------------------------------------------------------------------------------

def test_stable_sort_keeps_file_order_for_equal_timestamps(write_generic) -> None:
    # Same timestamp, file order 30, 5, 20: an id-ordered or unstable sort would give something else.
    d = write_generic("user,item,timestamp\nu,30,7\nv,1,0\nu,5,7\nu,20,7\nu,1,3\n")
    seqs = build_sequences(read_generic(d), 0, 0, "")
    assert seqs.item_ids == ["1", "5", "20", "30"]
    eq(seqs.items, [0, 3, 1, 2, 0])  # u: 1 (t=3), then 30, 5, 20 in file order; v: 1
    eq(seqs.offsets, [0, 4, 5])


def test_numeric_ids_sort_numerically_text_ids_as_text(write_generic) -> None:
    numeric = build_sequences(read_generic(write_generic("user,item,timestamp\nu,10,1\nu,9,2\nu,100,3\n",
                                                         name="n")), 0, 0, "")
    assert numeric.item_ids == ["9", "10", "100"]
    eq(numeric.items, [1, 0, 2])
    text = build_sequences(read_generic(write_generic("user,item,timestamp\nu,10,1\nu,9,2\nu,b,3\n",
                                                      name="t")), 0, 0, "")
    assert text.item_ids == ["10", "9", "b"]
    eq(text.items, [0, 1, 2])


KCORE = pd.DataFrame({
    "user": ["u1", "u1", "u2", "u2", "u3", "u3", "u4", "u4"],
    "item": ["A", "B", "A", "B", "B", "C", "C", "D"],
    "timestamp": [1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0],
})


def test_kcore_iterates_until_stable() -> None:
    # Pass 1 drops (u4,D) [D once]; pass 2 (u4,C) [u4 left with one]; pass 3 (u3,C) [C once];
    # pass 4 (u3,B) [u3 left with one]. A single pass would keep u3 and u4.
    out = kcore_filter(KCORE, 2, 2)
    assert list(zip(out["user"], out["item"])) == [("u1", "A"), ("u1", "B"), ("u2", "A"), ("u2", "B")]
    seqs = build_sequences(RawData(KCORE), 2, 2, "")
    assert seqs.user_ids == ["u1", "u2"] and seqs.item_ids == ["A", "B"]
    eq(seqs.items, [0, 1, 0, 1])


def test_kcore_user_threshold_only() -> None:
    out = kcore_filter(pd.DataFrame({"user": ["a", "a", "b"], "item": ["1", "2", "1"], "timestamp": [1.0] * 3}), 2, 0)
    assert list(out["user"]) == ["a", "a"]


def test_kcore_empty_result_is_a_user_error() -> None:
    with pytest.raises(UserError, match="k-core"):
        build_sequences(RawData(KCORE), 3, 1, "")


def test_empty_log_is_a_user_error(write_generic) -> None:
    with pytest.raises(UserError, match="empty"):
        build_sequences(read_generic(write_generic("user,item,timestamp\n")), 0, 0, "")


# --- History windows and splits ----------------------------------------------------------------------

def test_history_windows_truncate_pad_and_respect_user_start() -> None:
    items = np.array([10, 11, 12, 13, 14, 20, 21], dtype=np.int32)
    start = np.array([0, 0, 0, 0, 5, 5])
    end = np.array([0, 1, 3, 5, 5, 7])
    window, length = history_windows(items, start, end, 3, 9)
    eq(window, [[9, 9, 9],       # empty history: all padding ...
                [10, 9, 9],
                [10, 11, 12],
                [12, 13, 14],    # last 3 of 5
                [9, 9, 9],       # empty history of the second user (items[5] must not leak in)
                [20, 21, 9]])
    eq(length, [1, 1, 3, 3, 1, 2])  # ... with length 1
    assert window.dtype == np.int32 and length.dtype == np.int32


# LOO with L=2. Training targets: positions 1..n-3 (alice 1, bob 1 [train-only, n=2], dave 1..2, carol none).
LOO_TRAIN = dict(
    state=[[3, P], [2, P], [0, P], [0, 2]],
    length=[1, 1, 1, 2],
    action=[0, 3, 2, 4],
    event=[0, 0, 0, 1],
    next_state=[[3, 0], [2, 3], [0, 2], [2, 4]],
    next_length=[2, 2, 2, 2],
    done=[True, True, False, True],
    user=[0, 1, 2, 2],
)
LOO_VAL = dict(history=[[3, 0], [2, 4], [1, P]], length=[2, 2, 1], target=[4, 3, 1], event=[1, 0, 1], user=[0, 2, 3])
LOO_TEST = dict(history=[[0, 4], [4, 3], [1, 1]], length=[2, 2, 2], target=[1, 1, 0], event=[0, 0, 0],
                user=[0, 2, 3])
LOO_COUNTS = [2, 1, 2, 2, 1]  # items at positions 0..n-3 (all positions for the train-only bob)


def check_parts(split, train, val, test) -> None:
    for name, expected in (("train", train), ("val", val), ("test", test)):
        part = getattr(split, name)
        arrays = part.arrays()
        assert set(arrays) - {"position"} == set(expected), name  # position: assert_positions_locate_targets
        for key, value in expected.items():
            np.testing.assert_array_equal(arrays[key], np.asarray(value), err_msg=f"{name}.{key}")


def assert_positions_locate_targets(seqs, split) -> None:
    """``position`` is the index of the action/target in its user's full sequence."""
    for part, key in ((split.train, "action"), (split.val, "target"), (split.test, "target")):
        found = seqs.items[seqs.offsets[part.user] + part.position]
        eq(found, getattr(part, key))


def test_split_loo_hand_worked(write_generic) -> None:
    seqs = build_sequences(read_generic(write_generic(TOY)), 0, 0, "")
    split = split_loo(seqs, 2)
    check_parts(split, LOO_TRAIN, LOO_VAL, LOO_TEST)
    eq(split.item_counts, LOO_COUNTS)
    assert_positions_locate_targets(seqs, split)
    assert split.train.state.dtype == np.int32 and split.train.done.dtype == bool


# SQN with L=3: per user, every event as (state, length, action, event, next_state, next_length, done).
SQN_ROWS = {
    0: [  # alice [3, 0, 4, 1]
        ([P, P, P], 1, 3, 0, [3, P, P], 1, False),
        ([3, P, P], 1, 0, 0, [3, 0, P], 2, False),
        ([3, 0, P], 2, 4, 1, [3, 0, 4], 3, False),
        ([3, 0, 4], 3, 1, 0, [0, 4, 1], 3, True),
    ],
    1: [  # bob [2, 3]
        ([P, P, P], 1, 2, 0, [2, P, P], 1, False),
        ([2, P, P], 1, 3, 0, [2, 3, P], 2, True),
    ],
    2: [  # dave [0, 2, 4, 3, 1]
        ([P, P, P], 1, 0, 0, [0, P, P], 1, False),
        ([0, P, P], 1, 2, 0, [0, 2, P], 2, False),
        ([0, 2, P], 2, 4, 1, [0, 2, 4], 3, False),
        ([0, 2, 4], 3, 3, 0, [2, 4, 3], 3, False),
        ([2, 4, 3], 3, 1, 0, [4, 3, 1], 3, True),
    ],
    3: [  # carol [1, 1, 0]
        ([P, P, P], 1, 1, 0, [1, P, P], 1, False),
        ([1, P, P], 1, 1, 1, [1, 1, P], 2, False),
        ([1, 1, P], 2, 0, 0, [1, 1, 0], 3, True),
    ],
}
SQN_USER_COUNTS = {0: [1, 1, 0, 1, 1], 1: [0, 0, 1, 1, 0], 2: [1, 1, 1, 1, 1], 3: [1, 2, 0, 0, 0]}


def sqn_expected(train_users, val_users, test_users):
    def rows(users):
        return [(u, r) for u in sorted(users) for r in SQN_ROWS[u]]

    train = rows(train_users)
    keys = ["state", "length", "action", "event", "next_state", "next_length", "done"]
    t = {k: [r[i] for _, r in train] for i, k in enumerate(keys)}
    t["user"] = [u for u, _ in train]

    def ev(users):
        rs = rows(users)
        return dict(history=np.array([r[0] for _, r in rs], dtype=np.int32).reshape(-1, 3), length=[r[1] for _, r in rs], target=[r[2] for _, r in rs],
                    event=[r[3] for _, r in rs], user=[u for u, _ in rs])

    counts = np.sum([SQN_USER_COUNTS[u] for u in train_users], axis=0) if train_users else np.zeros(5)
    return t, ev(val_users), ev(test_users), counts


def test_split_sqn_all_train_hand_worked(write_generic) -> None:
    seqs = build_sequences(read_generic(write_generic(TOY)), 0, 0, "")
    split = split_sqn(seqs, 3, (1.0, 0.0, 0.0), seed=0)
    train, val, test, counts = sqn_expected([0, 1, 2, 3], [], [])
    # Written out for the whole log: the first event of each user has an empty (all-pad, length 1) state.
    assert train["action"] == [3, 0, 4, 1, 2, 3, 0, 2, 4, 3, 1, 1, 1, 0]
    assert train["done"] == [False, False, False, True, False, True, False, False, False, False, True,
                             False, False, True]
    check_parts(split, train, val, test)
    eq(split.item_counts, [3, 4, 2, 3, 2])
    eq(split.train.position, [0, 1, 2, 3, 0, 1, 0, 1, 2, 3, 4, 0, 1, 2])
    assert_positions_locate_targets(seqs, split)
    eq(counts, [3, 4, 2, 3, 2])


def sqn_groups(split) -> tuple[set, set, set]:
    return set(split.train.user.tolist()), set(split.val.user.tolist()), set(split.test.user.tolist())


def test_split_sqn_seeded_partition(write_generic) -> None:
    seqs = build_sequences(read_generic(write_generic(TOY)), 0, 0, "")
    split = split_sqn(seqs, 3, (0.5, 0.25, 0.25), seed=0)
    tr, va, te = sqn_groups(split)
    assert (len(tr), len(va), len(te)) == (2, 1, 1)
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert tr | va | te == {0, 1, 2, 3}
    # Whatever the permutation, the arrays are the hand-worked rows of the users in each group.
    train, val, test, counts = sqn_expected(tr, va, te)
    check_parts(split, train, val, test)
    eq(split.item_counts, counts)
    # Every event of every user appears exactly once across train actions + val/test targets.
    for u in range(seqs.n_users):
        seen = np.concatenate([split.train.action[split.train.user == u], split.val.target[split.val.user == u],
                               split.test.target[split.test.user == u]])
        eq(seen, seqs.items[seqs.offsets[u]:seqs.offsets[u + 1]])
    assert len(split.train) + len(split.val) + len(split.test) == 14
    # Same seed, same split.
    again = split_sqn(seqs, 3, (0.5, 0.25, 0.25), seed=0)
    assert sqn_groups(again) == (tr, va, te)
    for a, b in zip(split.train.arrays().values(), again.train.arrays().values()):
        eq(a, b)


def test_split_sqn_other_seed_other_split() -> None:
    n = 40
    df = pd.DataFrame({"user": [f"u{i // 2}" for i in range(2 * n)], "item": [str(i % 7) for i in range(2 * n)],
                       "timestamp": np.arange(2 * n, dtype=float)})
    seqs = build_sequences(RawData(df), 0, 0, "")
    a = sqn_groups(split_sqn(seqs, 3, (0.8, 0.1, 0.1), seed=0))
    b = sqn_groups(split_sqn(seqs, 3, (0.8, 0.1, 0.1), seed=1))
    assert tuple(map(len, a)) == (32, 4, 4)
    assert a != b
    assert sqn_groups(split_sqn(seqs, 3, (0.8, 0.1, 0.1), seed=1)) == b


# --- MovieLens-100K layouts --------------------------------------------------------------------------

U_DATA = [  # user, item, rating, timestamp
    ("196", "10", "3", "881250949"),
    ("186", "2", "3", "891717742"),
    ("196", "1", "4", "881250949"),  # tie with the first row: file order (10, then 1) is kept
    ("22", "1", "1", "878887116"),
    ("186", "10", "5", "891717700"),
    ("22", "2", "2", "878887120"),
    ("22", "10", "4", "878887200"),
]
#        genre index: unknown 0, Action 1, Adventure 2, Animation 3, Children's 4, Comedy 5, Drama 8, Thriller 16
U_ITEM = [
    "1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|"
    "0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0",
    "2|GoldenEye (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?GoldenEye%20(1995)|"
    "0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0",
    "3|Four Rooms (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Four%20Rooms%20(1995)|"
    "0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0",
    "10|Café Society (1995)|22-Jan-1996||http://us.imdb.com/M/title-exact?Cafe|"
    "0|0|0|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0",
]
RECBOLE_ITEM = [
    "1\tToy Story\t1995\tAnimation Children's Comedy",
    "2\tGoldenEye\t1995\tAction Adventure Thriller",
    "3\tFour Rooms\t1995\tThriller",
    "10\tCafé Society\t1995\tDrama",
]
ML_TEXT = ["Toy Story (1995), genres: Animation, Children's, Comedy",
           "GoldenEye (1995), genres: Action, Adventure, Thriller",
           "Café Society (1995), genres: Drama"]
# Users by first appearance 196, 186, 22; items 1 -> 0, 2 -> 1, 10 -> 2.
ML_ITEMS = [2, 0, 2, 1, 0, 1, 2]
ML_OFFSETS = [0, 2, 4, 7]


def write_grouplens(directory: Path) -> Path:
    assert all(len(line.split("|")) == 24 for line in U_ITEM)  # 5 fields + 19 genre flags
    directory.mkdir(parents=True)
    (directory / "u.data").write_text("".join("\t".join(r) + "\n" for r in U_DATA))
    (directory / "u.item").write_bytes("".join(line + "\n" for line in U_ITEM).encode("latin-1"))
    return directory


def write_recbole(directory: Path) -> Path:
    directory.mkdir(parents=True)
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    (directory / "x.inter").write_text(header + "".join("\t".join(r) + "\n" for r in U_DATA), encoding="utf-8")
    header = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    (directory / "x.item").write_text(header + "".join(line + "\n" for line in RECBOLE_ITEM), encoding="utf-8")
    return directory


def test_movielens_template_is_registered() -> None:
    assert DATASETS["movielens-100k"].text_template == "{title} ({year}), genres: {genres}"


def test_grouplens_layout(tmp_path: Path) -> None:
    spec = DATASETS["movielens-100k"]
    raw = spec.read(write_grouplens(tmp_path / "gl"))
    assert list(raw.items["title"]) == ["Toy Story", "GoldenEye", "Four Rooms", "Café Society"]
    assert list(raw.items["year"]) == ["1995", "1995", "1995", "1995"]
    assert list(raw.items["genres"]) == ["Animation, Children's, Comedy", "Action, Adventure, Thriller",
                                         "Thriller", "Drama"]
    seqs = build_sequences(raw, 0, 0, spec.text_template)
    assert seqs.user_ids == ["196", "186", "22"] and seqs.item_ids == ["1", "2", "10"]
    eq(seqs.items, ML_ITEMS)
    eq(seqs.offsets, ML_OFFSETS)
    eq(seqs.timestamps, [881250949, 881250949, 891717700, 891717742, 878887116, 878887120, 878887200])
    assert seqs.item_text == ML_TEXT


def test_recbole_layout_matches_grouplens(tmp_path: Path) -> None:
    spec = DATASETS["movielens-100k"]
    gl = build_sequences(spec.read(write_grouplens(tmp_path / "gl")), 0, 0, spec.text_template)
    rb = build_sequences(spec.read(write_recbole(tmp_path / "rb")), 0, 0, spec.text_template)
    eq(rb.items, ML_ITEMS)
    eq(rb.offsets, ML_OFFSETS)
    for name in ("items", "events", "timestamps", "offsets"):
        eq(getattr(rb, name), getattr(gl, name))
    assert (rb.user_ids, rb.item_ids, rb.event_types) == (gl.user_ids, gl.item_ids, gl.event_types)
    assert rb.item_text == gl.item_text == ML_TEXT


def test_movielens_folder_without_either_layout(tmp_path: Path) -> None:
    (tmp_path / "ml").mkdir()
    with pytest.raises(UserError, match="u.data"):
        DATASETS["movielens-100k"].read(tmp_path / "ml")


def test_prepare_movielens_from_raw_dir_uses_default_template(tmp_path: Path) -> None:
    cfg = DataConfig(dataset="movielens-100k", raw=str(write_grouplens(tmp_path / "gl")), protocol="loo", history=2)
    prep = prepare(cfg, log=lambda *_: None)
    assert prep.sequences.item_text == ML_TEXT
    # loo: 196 and 186 (2 items) are train-only with one transition each; 22 gives val and test.
    check_parts(prep.split,
                dict(state=[[2, 3], [2, 3]], length=[1, 1], action=[0, 1], event=[0, 0],
                     next_state=[[2, 0], [2, 1]], next_length=[2, 2], done=[True, True], user=[0, 1]),
                dict(history=[[0, 3]], length=[1], target=[1], event=[0], user=[2]),
                dict(history=[[0, 1]], length=[2], target=[2], event=[0], user=[2]))


# --- The prepared cache ------------------------------------------------------------------------------

def test_prepare_caches_and_loads_memory_mapped(write_generic, data_home: Path) -> None:
    raw_dir = write_generic(TOY)
    cfg = DataConfig(dataset="toy", raw=str(raw_dir), protocol="loo", history=2)
    logs: list[str] = []
    first = prepare(cfg, log=logs.append)
    assert len(logs) == 1
    assert first.path.parent == data_home / "prepared" and first.path.name.startswith("toy-loo-")
    manifest_file = first.path / "manifest.json"
    created, mtime = json.loads(manifest_file.read_text())["created"], manifest_file.stat().st_mtime_ns

    second = prepare(cfg, log=logs.append)
    assert second.path == first.path
    assert len(logs) == 1  # not prepared again
    assert json.loads(manifest_file.read_text())["created"] == created
    assert manifest_file.stat().st_mtime_ns == mtime

    # Arrays come back memory-mapped and equal to the hand-worked split.
    for arr in (second.train.state, second.train.action, second.val.history, second.test.target,
                second.sequences.items):
        assert isinstance(arr, np.memmap)
    check_parts(second.split, LOO_TRAIN, LOO_VAL, LOO_TEST)
    eq(second.split.item_counts, LOO_COUNTS)
    eq(second.sequences.items, TOY_ITEMS)
    eq(second.sequences.offsets, TOY_OFFSETS)
    assert second.sequences.user_ids == TOY_USER_IDS and second.sequences.item_ids == TOY_ITEM_IDS
    assert second.event_types == ["click", "purchase"] and second.n_items == 5

    stats = second.stats
    assert (stats["users"], stats["items"], stats["interactions"]) == (4, 5, 14)
    assert stats["event_types"] == {"click": 11, "purchase": 3}
    assert stats["split"] == {"train_transitions": 4, "val_events": 3, "test_events": 3}
    assert stats["sequence_length"]["min"] == 2 and stats["sequence_length"]["max"] == 5
    assert stats["sequence_length"]["mean"] == 3.5

    # force=True prepares again, into the same directory.
    assert prepare(cfg, force=True, log=logs.append).path == first.path and len(logs) == 2


def test_prepare_key_changes_with_config_and_raw_content(write_generic) -> None:
    raw_dir = write_generic(TOY)
    quiet = lambda *_: None  # noqa: E731
    base = prepare(DataConfig(dataset="toy", raw=str(raw_dir), history=2), log=quiet)
    longer = prepare(DataConfig(dataset="toy", raw=str(raw_dir), history=3), log=quiet)
    assert longer.path != base.path
    assert longer.train.state.shape == (4, 3)
    sqn = prepare(DataConfig(dataset="toy", raw=str(raw_dir), history=2, protocol="sqn", split=(0.5, 0.25, 0.25)),
                  log=quiet)
    assert sqn.path.name.startswith("toy-sqn-") and len(sqn.train) + len(sqn.val) + len(sqn.test) == 14

    # Same size, different content (bob's first timestamp 5 -> 4): the key must change, the new data be read.
    changed = TOY.replace("bob,9,5,", "bob,9,4,")
    assert len(changed) == len(TOY) and changed != TOY
    (raw_dir / "interactions.csv").write_text(changed)
    after = prepare(DataConfig(dataset="toy", raw=str(raw_dir), history=2), log=quiet)
    assert after.path != base.path
    eq(after.sequences.timestamps[4:6], [4, 6])
    # An unchanged config on the original content finds the original directory again.
    (raw_dir / "interactions.csv").write_text(TOY)
    assert prepare(DataConfig(dataset="toy", raw=str(raw_dir), history=2), log=quiet).path == base.path


def test_find_prepared_reads_an_existing_cache_and_never_prepares(write_generic, data_home: Path) -> None:
    raw_dir = write_generic(TOY)
    cfg = DataConfig(dataset="toy", raw=str(raw_dir), protocol="loo", history=2)
    assert find_prepared(cfg) is None and not (data_home / "prepared").exists()  # nothing made
    made = prepare(cfg, log=lambda *_: None)
    found = find_prepared(cfg)
    assert found is not None and found.path == made.path
    eq(found.test.user, made.test.user)
    (raw_dir / "interactions.csv").write_text(TOY.replace("bob,9,5,", "bob,9,4,"))  # other raw data
    assert find_prepared(cfg) is None
    assert find_prepared(DataConfig(dataset="toy", protocol="loo", history=2)) is None  # own data, no raw
    assert find_prepared(DataConfig(dataset="toy", raw=str(raw_dir.parent / "gone"), history=2)) is None
    assert len(list((data_home / "prepared").iterdir())) == 1


def test_prepare_empty_split_part_is_a_user_error(write_generic) -> None:
    # 4 users at 8:1:1 -> round(3.2)=3 train, round(0.4)=0 val: an empty validation set.
    with pytest.raises(UserError, match="empty part"):
        prepare(DataConfig(dataset="toy", raw=str(write_generic(TOY)), protocol="sqn"), log=lambda *_: None)


# --- Registry ----------------------------------------------------------------------------------------

def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(UserError) as err:
        get_spec("no-such-data")
    assert "no-such-data" in str(err.value)
    assert "generic, movielens-100k" in str(err.value)
    with pytest.raises(UserError, match="Known: generic, movielens-100k"):
        prepare(DataConfig(dataset="no-such-data"), log=lambda *_: None)


def test_unknown_dataset_with_raw_lacking_interactions(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no interactions.csv"):
        get_spec("mine", tmp_path / "empty")


def test_missing_raw_folder_is_named_not_the_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative data.raw read from another directory: the error names the folder and how it was resolved."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as err:
        get_spec("mine", "../mydata")
    text = str(err.value)
    assert "Unknown dataset" not in text and "data.raw folder ../mydata" in text
    assert str((tmp_path / "../mydata").absolute()) in text and "current directory" in text


def test_unregistered_name_with_generic_raw_is_generic(write_generic) -> None:
    spec = get_spec("mine", write_generic(TOY))
    assert spec.name == "mine" and spec.read is read_generic and spec.fetch is None


def test_registered_dataset_without_raw_hints_fetch(data_home: Path) -> None:
    with pytest.raises(UserError) as err:
        prepare(DataConfig(dataset="movielens-100k"), log=lambda *_: None)
    assert str(data_home / "raw" / "movielens-100k") in err.value.message
    assert err.value.hint is not None and "learec data fetch movielens-100k" in err.value.hint
    assert not (data_home / "prepared").exists()


def test_missing_raw_dir_for_generic_hints_raw(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        resolve_raw(DATASETS["generic"], tmp_path / "nowhere")
    assert "--raw" in err.value.hint


@pytest.mark.parametrize("name", ["../outside", "a/b", "..", "", "a\\b"])
def test_dataset_names_that_leave_the_data_folder_are_refused(name: str, data_home: Path) -> None:
    from learec.data.registry import raw_dir

    with pytest.raises(UserError, match="Invalid dataset name"):
        get_spec(name, raw=data_home)
    with pytest.raises(UserError, match="Invalid dataset name"):
        raw_dir(name)


def test_more_event_types_than_the_codes_hold_is_a_user_error(write_generic) -> None:
    rows = "".join(f"u,{i},{i},e{i}\n" for i in range(130))
    with pytest.raises(UserError, match="130 event types"):
        build_sequences(read_generic(write_generic("user,item,timestamp,event\n" + rows)), 0, 0, "")


def test_empty_template_fields_take_their_separator_with_them() -> None:
    from learec.data.preprocess import fill_template

    by = "{title}, by {brand}, {category}"
    assert fill_template(by, {"title": "T", "brand": "", "category": "C"}) == "T, C"
    assert fill_template(by, {"title": "", "brand": "B", "category": "C"}) == "B, C"
    assert fill_template(by, {"title": "T", "brand": "B", "category": ""}) == "T, by B"
    assert fill_template("{title} ({year}, {genre})", {"title": "T", "year": "", "genre": "D"}) == "T (D)"
    # the templates of the shipped configs and loaders read as before: "()" of an empty field goes
    sci = "{title} ({brand}) ({category})"
    assert fill_template(sci, {"title": "T", "brand": "", "category": "C"}) == "T (C)"
    assert fill_template(sci, {"title": "T", "brand": "B", "category": "C"}) == "T (B) (C)"


def test_movielens_item_texts_are_unchanged() -> None:
    """ML-100K's texts key the LE's item tokens: the template cleanup leaves them byte for byte as they were
    (checked on all 1,682 films when it was written), the "unknown" film without a year included."""
    template = DATASETS["movielens-100k"].text_template
    items = pd.DataFrame({"item": ["1", "267", "1373"],
                          "title": ["Toy Story", "unknown", "Good Morning"],
                          "year": ["1995", "", "1971"],
                          "genres": ["Animation, Children's, Comedy", "unknown", "unknown"]})
    assert item_texts(["1", "267", "1373"], items, template) == [
        "Toy Story (1995), genres: Animation, Children's, Comedy", "unknown, genres: unknown",
        "Good Morning (1971), genres: unknown"]
