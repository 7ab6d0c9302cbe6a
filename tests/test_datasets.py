"""Loaders of the public datasets, on small files written here in each publisher's exact format.

Every fixture holds malformed lines; every expected sequence and count below is worked out by hand.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from learec.cli import main
from learec.config import DataConfig, load_config
from learec.data.loaders import textio
from learec.data.loaders.common import sample_ids
from learec.data.prepared import prepare
from learec.data.preprocess import build_sequences
from learec.data.registry import DATASETS, get_spec, resolve_raw
from learec.errors import UserError


@pytest.fixture(autouse=True)
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "learec-home"
    monkeypatch.setenv("LEAREC_DATA_DIR", str(home))
    return home


def eq(actual, expected) -> None:
    np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))


def loaders(**sections) -> dict:
    return {"max_malformed_fraction": 0.3, **sections}


def sequences(name: str, raw: Path, **sections):
    """(RawData, Sequences) for a registered dataset with the given loader settings."""
    cfg = DataConfig(dataset=name, raw=str(raw), loaders=loaders(**sections))
    spec = DATASETS[name]
    data = spec.read_raw(raw, cfg)
    return data, build_sequences(data, 0, 0, spec.text_template)


def per_user(seqs) -> list[list[str]]:
    """Each sequence as original item ids: easy to compare with the hand-worked lists."""
    ids = np.asarray(seqs.item_ids, dtype=object)
    return [list(ids[seqs.items[a:b]]) for a, b in zip(seqs.offsets[:-1], seqs.offsets[1:])]


# --- RetailRocket: events.csv with header, ms timestamps; properties + category tree ----------------------
RR_EVENTS = """timestamp,visitorid,event,itemid,transactionid
1000,1,view,10,
500,2,view,10,
10,4,view,13,
100,3,view,11,
2000,1,view,11,
20,4,view,11,
600,2,view,12,
3000,1,addtocart,11,
50,3,view,10,
20,4,view,10,
3000,1,transaction,11,5
700,2,view,10,
40,4,view,14,
1433221332117,257597,view
800,2,view,abc,

900,9,view,10,
"""
# Lines 15 (3 fields) and 16 (item 'abc') are malformed; line 17 is blank. 16 data lines.
# Transactions dropped (line 12). Sessions >= 3 events: visitors 1 (3), 2 (3), 4 (4); 3 (2) and 9 (1) go.
# Then items >= 3 events among those: 10 (4), 11 (3) stay; 12, 13, 14 (1 each) go. Visitors 2 and 4 end
# with 2 events each and stay: the SQN filter is one pass, not a k-core.
# Visitor 4 views 11 and 10 at the same time (t=20): file order (11 first) is kept.
RR_SEQUENCES = [["10", "11", "11"], ["10", "10"], ["11", "10"]]
RR_EVENT_CODES = [0, 0, 1, 0, 0, 0, 0]  # the add-to-cart of visitor 1 is the one purchase
RR_PROPS_1 = """timestamp,itemid,property,value
2000,10,categoryid,1338
1000,10,categoryid,213
1000,10,888,1116713 960601 n277.200
1500,11,available,1
"""
RR_PROPS_2 = """timestamp,itemid,property,value
1200,11,categoryid,1016
900,12,categoryid,213
"""
RR_TREE = "categoryid,parentid\n1338,213\n213,1016\n1016,\n"


def write_retailrocket(directory: Path, properties: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "events.csv").write_text(RR_EVENTS)
    if properties:
        (directory / "item_properties_part1.csv").write_text(RR_PROPS_1)
        (directory / "item_properties_part2.csv").write_text(RR_PROPS_2)
        (directory / "category_tree.csv").write_text(RR_TREE)
    return directory


def test_retailrocket_sqn_filtering_events_and_order(tmp_path: Path) -> None:
    raw, seqs = sequences("retailrocket", write_retailrocket(tmp_path / "rr"))
    assert raw.event_order == ["click", "purchase"]
    assert seqs.user_ids == ["1", "2", "4"] and seqs.item_ids == ["10", "11"]
    assert per_user(seqs) == RR_SEQUENCES
    eq(seqs.events, RR_EVENT_CODES)
    eq(seqs.timestamps, [1000, 2000, 3000, 500, 700, 20, 20])
    report = raw.report
    assert report["files"][0] == {
        "file": "events.csv", "lines": 16, "malformed": 2,
        "examples": ["line 15: expected 5 fields, found 3: '1433221332117,257597,view'",
                     "line 16: column 'itemid' holds 'abc', not a number: '800,2,view,abc,'"]}
    assert report["events_dropped_by_type"] == {"transaction": 1}
    assert (report["events_read"], report["after_session_filter"], report["after_item_filter"]) == (14, 10, 7)


def test_retailrocket_item_text_from_latest_category_path(tmp_path: Path) -> None:
    raw, seqs = sequences("retailrocket", write_retailrocket(tmp_path / "rr"))
    # Item 10's latest category (t=2000) is 1338, listed first in the file but later in time than 213.
    assert seqs.item_text == ["product 10 in category 1016 > 213 > 1338", "product 11 in category 1016"]
    assert dict(zip(raw.items["item"], raw.items["available"])) == {10: "", 11: "yes"}
    _, bare = sequences("retailrocket", write_retailrocket(tmp_path / "bare", properties=False))
    assert bare.item_text == ["item 10", "item 11"]


def test_retailrocket_settings_are_overridable(tmp_path: Path) -> None:
    raw_dir = write_retailrocket(tmp_path / "rr")
    # Sessions of 2 allowed: visitor 3 (items 11, 10) stays; items 10 (5) and 11 (4) still pass.
    _, seqs = sequences("retailrocket", raw_dir, retailrocket={"min_session_length": 2})
    assert seqs.user_ids == ["1", "2", "3", "4"]  # visitor 4's first kept row (line 7) follows line 5
    assert per_user(seqs)[2] == ["10", "11"]  # t=50 before t=100
    # Transactions as purchases: visitor 1 gains an event; item 11 is bought twice.
    _, seqs = sequences("retailrocket", raw_dir, retailrocket={
        "event_map": {"view": "click", "addtocart": "purchase", "transaction": "purchase"}})
    assert per_user(seqs)[0] == ["10", "11", "11", "11"]
    eq(seqs.events[:4], [0, 0, 1, 1])


def test_retailrocket_chunked_reading_gives_the_same_result(tmp_path: Path, monkeypatch) -> None:
    raw_dir = write_retailrocket(tmp_path / "rr")
    whole_raw, whole = sequences("retailrocket", raw_dir)
    monkeypatch.setattr(textio, "BLOCK_BYTES", 24)  # a block holds about one line: dozens of chunks
    chunked_raw, chunked = sequences("retailrocket", raw_dir)
    for name in ("items", "events", "timestamps", "offsets"):
        eq(getattr(chunked, name), getattr(whole, name))
    assert chunked.item_text == whole.item_text
    assert chunked_raw.report == whole_raw.report  # same line numbers in the examples


def test_retailrocket_too_many_malformed_lines_is_an_error(tmp_path: Path) -> None:
    raw_dir = write_retailrocket(tmp_path / "rr")
    with pytest.raises(UserError) as err:  # default threshold: 0.1% of the lines
        prepare(DataConfig(dataset="retailrocket", raw=str(raw_dir)), log=lambda *_: None)
    msg = str(err.value)
    assert str(raw_dir / "events.csv") in msg and "2 of 16 lines" in msg
    assert "line 15: expected 5 fields, found 3" in msg and "line 16" in msg
    assert "max_malformed_fraction" in msg


def test_retailrocket_wrong_header_names_file_and_line(tmp_path: Path) -> None:
    raw_dir = tmp_path / "rr"
    raw_dir.mkdir()
    (raw_dir / "events.csv").write_text("user,item,timestamp\n1,2,3\n")
    with pytest.raises(UserError, match=r"events.csv, line 1: expected the header 'timestamp,visitorid"):
        sequences("retailrocket", raw_dir)


def test_retailrocket_prepared_stats(tmp_path: Path) -> None:
    cfg = DataConfig(dataset="retailrocket", raw=str(write_retailrocket(tmp_path / "rr")), protocol="sqn",
                     history=3, split=(0.34, 0.33, 0.33), loaders=loaders())
    prep = prepare(cfg, log=lambda *_: None)
    stats = prep.stats
    assert (stats["users"], stats["items"], stats["interactions"]) == (3, 2, 7)
    assert stats["event_types"] == {"click": 6, "purchase": 1}
    assert stats["sequence_length"]["min"] == 2 and stats["sequence_length"]["max"] == 3
    split = stats["split"]
    assert split["train_transitions"] + split["val_events"] + split["test_events"] == 7
    assert stats["raw"]["files"][0]["malformed"] == 2
    assert [f["file"] for f in stats["raw"]["files"]] == [
        "events.csv", "item_properties_part1.csv", "item_properties_part2.csv", "category_tree.csv"]


# --- RC15 / YooChoose: .dat files without header, ISO times --------------------------------------------
RC15_CLICKS = """1,2014-04-07T10:51:09.277Z,214,0
2,2014-04-07T11:00:00.000Z,214,0
1,2014-04-07T10:52:00.000Z,215,S
3,2014-04-08T09:00:00.000Z,300,3
1,2014-04-07T10:53:00.000Z,214,0
2,2014-04-07T11:01:00.000Z,300,3
3,2014-04-08T09:01:00.000Z,301,2053226000
3,2014-04-08T09:02:00.000Z,300,3
3,2014-04-08T09:03:00.000Z,215,0
1,2014-04-07T10:54:00.000Z,214
3,yesterday,215,0
"""
# Lines 10 (3 fields) and 11 (time) are malformed. Session 2 has 2 clicks: dropped.
RC15_BUYS = """1,2014-04-07T10:52:00.000Z,215,1000,1
2,2014-04-07T11:02:00.000Z,300,500,2
3,2014-04-08T09:05:00.000Z,999,100,1
3,2014-04-08T09:04:00.000Z,300,0,1
"""
# Session 1 buys 215 at the time it clicked it: the buy comes after the click. Session 2 is not kept;
# item 999 was never clicked in the kept sessions: dropped.
RC15_SEQUENCES = [["214", "215", "215", "214"], ["300", "301", "300", "215", "300"]]
RC15_EVENT_CODES = [0, 0, 1, 0, 0, 0, 0, 0, 1]


def write_rc15(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "yoochoose-clicks.dat").write_text(RC15_CLICKS)
    (directory / "yoochoose-buys.dat").write_text(RC15_BUYS)
    return directory


def test_rc15_sessions_buys_merged_in_time_order(tmp_path: Path) -> None:
    raw, seqs = sequences("rc15", write_rc15(tmp_path / "rc"), rc15={"sample_sessions": 0})
    assert seqs.user_ids == ["1", "3"] and seqs.item_ids == ["214", "215", "300", "301"]
    assert per_user(seqs) == RC15_SEQUENCES
    eq(seqs.events, RC15_EVENT_CODES)
    assert seqs.event_types == ["click", "purchase"]
    assert seqs.timestamps[0] == pytest.approx(1396867869.277)  # 2014-04-07T10:51:09.277Z
    r = raw.report
    assert [f["malformed"] for f in r["files"]] == [2, 0]
    assert r["files"][0]["examples"] == ["line 10: expected 4 fields, found 3: '1,2014-04-07T10:54:00.000Z,214'",
                                         "line 11: timestamp 'yesterday' is not an ISO 8601 time"]
    assert (r["clicks_read"], r["sessions_with_enough_clicks"], r["sessions_sampled"], r["clicks_kept"],
            r["buys_kept"], r["buys_of_unclicked_items_dropped"]) == (9, 2, 2, 7, 2, 1)
    assert seqs.item_text == ["item 214", "item 215 (special offer)", "item 300 (category 3)",
                              "item 301 (brand 2053226000)"]


def test_rc15_seeded_session_sample(tmp_path: Path) -> None:
    raw_dir = write_rc15(tmp_path / "rc")
    raw, seqs = sequences("rc15", raw_dir, rc15={"sample_sessions": 1, "seed": 3})
    assert raw.report["sessions_sampled"] == 1
    expected = str(sample_ids(np.array([1, 3]), 1, 3)[0])
    assert seqs.user_ids == [expected]
    assert per_user(seqs) == [RC15_SEQUENCES[["1", "3"].index(expected)]]
    _, again = sequences("rc15", raw_dir, rc15={"sample_sessions": 1, "seed": 3})
    assert again.user_ids == seqs.user_ids
    assert load_config().data.loaders.rc15.sample_sessions == 200_000  # the published default


# --- MovieLens-1M: '::'-separated, latin-1 ------------------------------------------------------------
ML1M_RATINGS = """1::1193::5::978300760
1::661::3::978302109
2::1193::4::978298413
1::914::3::978301968
2::661::2::978299000
2::914
3::1193::5::978200000
3::661::1::978200001
"""
ML1M_MOVIES = """1193::One Flew Over the Cuckoo's Nest (1975)::Drama
661::Cité des enfants perdus, La (1995)::Adventure|Sci-Fi
914::My Fair Lady (1964)::Musical|Romance
2000::Unrated Film (1990)::Drama
"""


def write_ml1m(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ratings.dat").write_bytes(ML1M_RATINGS.encode("latin-1"))
    (directory / "movies.dat").write_bytes(ML1M_MOVIES.encode("latin-1"))  # 'é' is one byte, not UTF-8
    return directory


def test_movielens_1m(tmp_path: Path) -> None:
    raw, seqs = sequences("movielens-1m", write_ml1m(tmp_path / "ml"))
    assert seqs.user_ids == ["1", "2", "3"] and seqs.item_ids == ["661", "914", "1193"]
    assert per_user(seqs) == [["1193", "914", "661"], ["1193", "661"], ["1193", "661"]]
    assert seqs.item_text == ["Cité des enfants perdus, La (1995), genres: Adventure, Sci-Fi",
                              "My Fair Lady (1964), genres: Musical, Romance",
                              "One Flew Over the Cuckoo's Nest (1975), genres: Drama"]
    assert raw.report["files"][0]["examples"] == ["line 6: expected 4 fields, found 2: '2::914'"]
    _, liked = sequences("movielens-1m", tmp_path / "ml", movielens_1m={"min_rating": 3})
    assert per_user(liked) == [["1193", "914", "661"], ["1193"], ["1193"]]


def test_movielens_1m_prepared_stats(tmp_path: Path) -> None:
    cfg = DataConfig(dataset="movielens-1m", raw=str(write_ml1m(tmp_path / "ml")), history=2, loaders=loaders())
    stats = prepare(cfg, log=lambda *_: None).stats
    assert (stats["users"], stats["items"], stats["interactions"]) == (3, 3, 7)
    # loo: user 1 (3 items) gives val + test; users 2 and 3 (2 items) train only, one transition each.
    assert stats["split"] == {"train_transitions": 2, "val_events": 1, "test_events": 1}


# --- Last.fm-1K: tab-separated, no header, quotes inside names ---------------------------------------
U = "79bd5fa5-0000-4000-8000-000000000001"  # MBIDs
T = "e1e1e1e1-0000-4000-8000-000000000002"
LASTFM_1K = (
    "user_000001\t2009-05-04T23:08:57Z\tf1b1cf71-bd35-4e99-8624-24a6e15f133a\tDeep Dish\t\t"
    "Fuck Me Im Famous (Pacha Ibiza)-09-28-2007\n"
    f"user_000001\t2009-05-04T13:54:10Z\ta7f7df4a-77d8-4f12-8acd-5c60c93f4de8\tUnderworld\t{U}\t"
    "Boy, Boy, Boy (Switch Remix)\n"
    'user_000002\t2009-05-01T09:00:00Z\t\tBand "X\t\tSay "Hello"\n'
    f"user_000001\t2009-05-04T23:08:57Z\t\tAphex Twin\t{T}\tAvril 14th\n"
    f"user_000002\t2009-05-01T09:30:00Z\ta7f7df4a-77d8-4f12-8acd-5c60c93f4de8\tUnderworld\t{U}\t"
    "Boy, Boy, Boy (Switch Remix)\n"
    'user_000002\t2009-05-01T12:00:00Z\t\tBand "X\t\tSay "Hello"\n'
    "user_000003\t2009-05-02T10:00:00Z\tx\tY\tz\ttrack\textra\n"
    "user_000003\tnot-a-time\t\tA\t\tB\n"
)
# Lines 7 (7 fields) and 8 (time) are malformed. Items: U and T by MBID, the others by artist + name.
H = 'Band "X - Say "Hello"'
D = "Deep Dish - Fuck Me Im Famous (Pacha Ibiza)-09-28-2007"


def write_lastfm_1k(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "userid-timestamp-artid-artname-traid-traname.tsv").write_text(LASTFM_1K, encoding="utf-8")
    return directory


def test_lastfm_1k(tmp_path: Path) -> None:
    raw, seqs = sequences("lastfm-1k", write_lastfm_1k(tmp_path / "fm"))
    assert seqs.user_ids == ["user_000001", "user_000002"]
    assert seqs.item_ids == [U, H, D, T]  # text order
    assert per_user(seqs) == [[U, D, T], [H, U, H]]  # D and T share a time: file order
    assert seqs.item_text == ["track is titled Boy, Boy, Boy (Switch Remix), its artist is Underworld.",
                              'track is titled Say "Hello", its artist is Band "X.',
                              "track is titled Fuck Me Im Famous (Pacha Ibiza)-09-28-2007, its artist is Deep Dish.",
                              "track is titled Avril 14th, its artist is Aphex Twin."]
    assert [e.split(":")[0] for e in raw.report["files"][0]["examples"]] == ["line 7", "line 8"]
    assert raw.report["plays_read"] == 6


def test_lastfm_1k_sessions_truncation_and_sampling(tmp_path: Path) -> None:
    raw_dir = write_lastfm_1k(tmp_path / "fm")
    _, seqs = sequences("lastfm-1k", raw_dir, lastfm_1k={"session_gap_minutes": 60})
    # user 1: 13:54 | 23:08, 23:08 ; user 2: 09:00, 09:30 | 12:00
    assert seqs.user_ids == ["user_000001#0", "user_000001#1", "user_000002#0", "user_000002#1"]
    assert per_user(seqs) == [[U], [D, T], [H, U], [H]]
    _, seqs = sequences("lastfm-1k", raw_dir, lastfm_1k={"max_sequence_length": 2})
    assert per_user(seqs) == [[D, T], [U, H]]
    raw, seqs = sequences("lastfm-1k", raw_dir, lastfm_1k={"sample_users": 1, "seed": 1})
    assert raw.report["users_sampled"] == 1 and seqs.n_users == 1


# --- LFM-1b: integer ids, separate name files ----------------------------------------------------------
LFM_LES = """31435741\t2\t4\t4\t1385212958
31435741\t2\t4\t5\t1385212000
31435741\t3\t7\t9\t1385213000
42\t3\t7\t9\t1385000000
42\t2\t8\t4\t1385000100
42\t2\t4
7\t3\t7\t9\t1385000000
"""
LFM_USERS = ("user_id\tcountry\tage\tgender\tplaycount\tregistered_unixtime\n"
             "31435741\tAT\t25\tm\t100\t1200000000\n42\tUS\t-1\tn\t5\t1100000000\n7\t\t-1\tn\t1\t1000000000\n")


def write_lfm_1b(directory: Path, users_file: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "LFM-1b_LEs.txt").write_text(LFM_LES)
    (directory / "LFM-1b_tracks.txt").write_text("4\tHey Jude\t2\n5\tLet It Be\t2\n9\tKarma Police\t3\n10\tX\t3\n")
    (directory / "LFM-1b_albums.txt").write_text("4\tPast Masters\t2\n7\tOK Computer\t3\n8\tLove\t2\n")
    (directory / "LFM-1b_artists.txt").write_text("2\tThe Beatles\n3\tRadiohead\n")
    if users_file:
        (directory / "LFM-1b_users.txt").write_text(LFM_USERS)
    return directory


def test_lfm_1b_all_users(tmp_path: Path) -> None:
    raw, seqs = sequences("lfm-1b", write_lfm_1b(tmp_path / "lfm"), lfm_1b={"sample_users": 0})
    assert seqs.user_ids == ["7", "42", "31435741"] and seqs.item_ids == ["4", "5", "9"]
    assert per_user(seqs) == [["9"], ["9", "4"], ["5", "4", "9"]]
    # Track 4's album is that of its first event in the file (line 1: album 4), not line 5's album 8.
    assert seqs.item_text == ["track is titled Hey Jude from album Past Masters, its artist is The Beatles.",
                              "track is titled Let It Be from album Past Masters, its artist is The Beatles.",
                              "track is titled Karma Police from album OK Computer, its artist is Radiohead."]
    assert raw.report["files"][0]["examples"] == ["line 6: expected 5 fields, found 3: '42\\t2\\t4'"]
    _, without = sequences("lfm-1b", write_lfm_1b(tmp_path / "nousers", users_file=False), lfm_1b={"sample_users": 0})
    assert per_user(without) == per_user(seqs)


def test_lfm_1b_sampled_users(tmp_path: Path) -> None:
    raw, seqs = sequences("lfm-1b", write_lfm_1b(tmp_path / "lfm"), lfm_1b={"sample_users": 2, "seed": 5})
    expected = [str(u) for u in sample_ids(np.array([7, 42, 31435741]), 2, 5)]
    assert raw.report["users_sampled"] == 2 and seqs.user_ids == expected


# --- Amazon 2018: gzipped JSON lines ---------------------------------------------------------------
def review(user: str, item: str, overall: float, time: int, **extra) -> str:
    return json.dumps({"overall": overall, "verified": True, "reviewTime": "09 3, 2015", "reviewerID": user,
                       "asin": item, "style": {"Size:": " 1 Pack"}, "reviewerName": "Ann", "reviewText": "Works.",
                       "summary": "Five Stars", "unixReviewTime": time, **extra})


AMAZON_REVIEWS = "\n".join([
    review("A1", "B001", 5.0, 1441238400),
    review("A2", "B001", 4.0, 1441238500),
    review("A1", "B002", 3.0, 1441238300),
    review("A1", "B002", 3.0, 1441238300),  # the 2018 files repeat reviews: dropped
    '{"overall": 5.0, "reviewerID": "A3", "asin": ',  # cut short
    json.dumps({"overall": 2.0, "asin": "B003", "unixReviewTime": 1441000000}),  # no reviewerID
    review("A2", "B003", 1.0, 1441238600, vote="2"),
]) + "\n"
AMAZON_META = "\n".join(json.dumps(m) for m in [
    {"category": ["Industrial & Scientific", "Lab &amp; Scientific Products"], "tech1": "", "description": ["x"],
     "fit": "", "title": 'Pipette Tips &amp; Rack <span class="a-size">200</span>', "also_buy": [],
     "brand": "Eppendorf", "feature": [], "rank": "123 in Industrial", "also_view": [],
     "main_cat": "Industrial & Scientific", "similar_item": "", "date": "", "price": "$9.99", "asin": "B001",
     "imageURL": [], "imageURLHigh": []},
    {"title": "Safety Goggles", "brand": "", "category": [], "asin": "B002", "main_cat": "Industrial & Scientific"},
    {"title": "Safety Goggles (repeated entry)", "asin": "B002"},
    {"title": "Unused", "asin": "B999"},
]) + "\n"


def write_amazon(directory: Path, ratings_csv: bool = False) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if ratings_csv:
        (directory / "Industrial_and_Scientific.csv").write_text(
            "B001,A1,5.0,1441238400\nB001,A2,4.0,1441238500\nB002,A1,3.0,1441238300\nB002,A1,3.0,1441238300\n"
            "B003,A2\nB003,A2,1.0,1441238600\n")
    else:
        with gzip.open(directory / "Industrial_and_Scientific_5.json.gz", "wt", encoding="utf-8") as fh:
            fh.write(AMAZON_REVIEWS)
    with gzip.open(directory / "meta_Industrial_and_Scientific.json.gz", "wt", encoding="utf-8") as fh:
        fh.write(AMAZON_META)
    return directory


AMAZON_TEXT = ["Pipette Tips & Rack 200, by Eppendorf, in Industrial & Scientific > Lab & Scientific Products",
               "Safety Goggles", "item B003"]


def test_amazon_2018_five_core(tmp_path: Path) -> None:
    raw, seqs = sequences("amazon-2018", write_amazon(tmp_path / "az"))
    assert seqs.user_ids == ["A1", "A2"] and seqs.item_ids == ["B001", "B002", "B003"]
    assert per_user(seqs) == [["B002", "B001"], ["B001", "B003"]]
    assert seqs.item_text == AMAZON_TEXT
    r = raw.report
    assert (r["reviews"], r["rows_kept"], r["duplicates_dropped"]) == ("5core", 5, 1)
    assert [e.split(":")[0] for e in r["files"][0]["examples"]] == ["line 5", "line 6"]
    assert "lacks 'reviewerID'" in r["files"][0]["examples"][1]
    _, liked = sequences("amazon-2018", tmp_path / "az", amazon_2018={"min_rating": 3})
    assert per_user(liked) == [["B002", "B001"], ["B001"]]


def test_amazon_2018_ratings_csv_matches_five_core(tmp_path: Path) -> None:
    raw, seqs = sequences("amazon-2018", write_amazon(tmp_path / "az", ratings_csv=True))
    assert raw.report["reviews"] == "ratings"
    assert per_user(seqs) == [["B002", "B001"], ["B001", "B003"]]
    assert seqs.item_text == AMAZON_TEXT
    assert raw.report["files"][0]["examples"] == ["line 5: expected 4 fields, found 2: 'B003,A2'"]


def test_amazon_2018_other_category_and_missing_files(tmp_path: Path) -> None:
    raw_dir = write_amazon(tmp_path / "az")
    with pytest.raises(UserError, match="Video_Games_5.json.gz"):
        sequences("amazon-2018", raw_dir, amazon_2018={"category": "Video_Games"})
    (raw_dir / "Industrial_and_Scientific_5.json.gz").rename(raw_dir / "Video_Games_5.json.gz")
    _, seqs = sequences("amazon-2018", raw_dir, amazon_2018={"category": "Video_Games"})
    assert seqs.item_text == ["item B001", "item B002", "item B003"]  # no meta_Video_Games.json.gz


# --- Registry, config and CLI -------------------------------------------------------------------------
def test_registry_lists_public_datasets_and_hints_download(data_home: Path) -> None:
    with pytest.raises(UserError) as err:
        get_spec("nope")
    assert "from downloaded files (--raw DIR): amazon-2018, lastfm-1k, lfm-1b, movielens-1m, rc15, retailrocket" \
        in str(err.value)
    with pytest.raises(UserError) as err:
        resolve_raw(DATASETS["retailrocket"], None)
    assert "kaggle.com/datasets/retailrocket" in err.value.hint


def test_loader_settings_key_only_their_dataset(tmp_path: Path) -> None:
    quiet = lambda *_: None  # noqa: E731
    base = dict(dataset="retailrocket", raw=str(write_retailrocket(tmp_path / "rr")), protocol="sqn", history=3,
                split=(0.34, 0.33, 0.33))
    first = prepare(DataConfig(**base, loaders=loaders()), log=quiet).path
    # Another dataset's settings leave the cache valid; this dataset's settings re-key it.
    assert prepare(DataConfig(**base, loaders=loaders(rc15={"seed": 9})), log=quiet).path == first
    changed = prepare(DataConfig(**base, loaders=loaders(retailrocket={"min_session_length": 2})), log=quiet)
    assert changed.path != first and changed.stats["users"] == 4


def test_unknown_loader_setting_is_a_config_error() -> None:
    with pytest.raises(UserError, match="unknown config key 'data.loaders.rc15.sessions'"):
        load_config(None, ["data.loaders.rc15.sessions=5"])


def test_cli_prepare_and_stats_json(tmp_path: Path, capsys, caplog) -> None:
    raw_dir = write_rc15(tmp_path / "rc")
    args = ["--raw", str(raw_dir), "--set", "data.loaders.max_malformed_fraction=0.25", "--set",
            "data.loaders.rc15.sample_sessions=0", "--set", "data.protocol=loo", "--set", "data.history=3"]
    assert main(["data", "prepare", "rc15", *args]) == 0
    out = capsys.readouterr()
    assert "users 2  items 4  interactions 9" in out.out
    warned = caplog.text  # the CLI logs to stderr; under pytest the log lands here
    assert "skipped 2 malformed line(s) of 11" in warned and "line 10" in warned
    assert main(["data", "stats", "rc15", "--json", *args]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["event_types"] == {"click": 7, "purchase": 2}
    assert stats["raw"]["buys_of_unclicked_items_dropped"] == 1


# --- The block reader itself ----------------------------------------------------------------------------
def test_read_delimited_numbers_crlf_gzip_and_line_numbers(tmp_path: Path) -> None:
    text = ("a\tb\tc\r\n1\t2.5\tx\r\n2\tnan\ty\r\n3.0\t1\tsay \"hi\r\n\r\nq\t1\tw\r\n4\t\tv\r\n"
            "5\t6\t7\t8\r\n9\t1e3\tlast")
    (tmp_path / "f.tsv").write_text(text)
    with gzip.open(tmp_path / "f.tsv.gz", "wt") as fh:
        fh.write(text)
    for name in ("f.tsv", "f.tsv.gz"):
        issues = textio.LineIssues(tmp_path / name)
        frames = list(textio.read_delimited(tmp_path / name, ["a", "b", "c"], {"a": "int", "b": "float"}, issues,
                                            sep="\t", header=["a", "b", "c"], block_bytes=16))
        rows = [r for f in frames for r in f.itertuples(index=False)]
        assert [tuple(r) for r in rows] == [(1, 2.5, "x", 2), (3, 1.0, 'say "hi', 4), (9, 1000.0, "last", 9)]
        assert frames[0]["a"].dtype == np.int64 and frames[0]["b"].dtype == np.float64
        assert (issues.lines, issues.malformed) == (7, 4)  # the blank line 5 is no data line
        assert [e.split(":")[0] for e in issues.examples] == ["line 3", "line 6", "line 7", "line 8"]
        assert "column 'a' holds 'q'" in issues.examples[1] and "expected 3 fields, found 4" in issues.examples[3]
