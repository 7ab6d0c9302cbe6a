"""RC15: the YooChoose data of the RecSys Challenge 2015, with the SQN paper's sampling.

Files, under their official names (no header lines): ``yoochoose-clicks.dat``
(``session,timestamp,item,category``) and ``yoochoose-buys.dat`` (``session,timestamp,item,price,quantity``),
times as ISO 8601 ('2014-04-07T10:51:09.277Z').

What the published SQN code (``sample_data_rc15.py`` + ``merge_and_sort_rc15.py``) does, and so this loader:
- keeps sessions with more than 2 clicks, then samples 200,000 of them at random (the published code draws
  without a seed; here the draw is seeded, ``data.loaders.rc15.seed``, so the sample differs from theirs
  but is reproducible);
- adds the buys of the sampled sessions as purchases, clicks first, then orders each session by time
  (a stable sort: a buy at the same time as a click comes after it);
- item ids are those of the sampled clicks (the published code's item encoder is fitted on them): a buy of
  an item never clicked in the sample is dropped and counted.
Published result: 200,000 sessions, 26,702 items.

Item text: the data hold no names; the click log's category column is the one readable fact ("S" a special
offer, 1-12 a category, a long number a brand, 0 unknown), so the text is "item <id> (<category>)".
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import pandas as pd

from learec.data.loaders.common import iso_seconds, sample_ids
from learec.data.loaders.textio import LineIssues, Vocabulary, compact_ints, find_file, read_delimited
from learec.data.preprocess import occurrence_counts
from learec.data.raw import RawData

if TYPE_CHECKING:
    from learec.config import DataConfig

CLICK_COLUMNS = ["session", "timestamp", "item", "category"]
BUY_COLUMNS = ["session", "timestamp", "item", "price", "quantity"]
TEXT_TEMPLATE = "item {id} ({category})"
EVENT_TYPES = ["click", "purchase"]


def _timed_rows(path: Path, columns: list[str], usecols: list[str], issues: LineIssues) -> Iterator[pd.DataFrame]:
    """Chunks with ``seconds`` parsed from the ISO times; unparsable times are malformed lines."""
    for chunk in read_delimited(path, columns, {"session": "int", "item": "int"}, issues, sep=",", usecols=usecols):
        seconds = iso_seconds(chunk["timestamp"])
        bad = np.isnan(seconds)
        for i in np.flatnonzero(bad):
            issues.add(int(chunk["line"].iloc[i]), f"timestamp {chunk['timestamp'].iloc[i]!r} is not an ISO 8601 time")
        chunk = chunk[~bad].copy()
        chunk["seconds"] = seconds[~bad]
        yield chunk


def load_rc15(directory: Path, cfg: DataConfig) -> RawData:
    opts, max_bad = cfg.loaders.rc15, cfg.loaders.max_malformed_fraction
    clicks_path = find_file(directory, ["yoochoose-clicks.dat", "yoochoose-clicks.dat.gz"], "YooChoose clicks")
    buys_path = find_file(directory, ["yoochoose-buys.dat", "yoochoose-buys.dat.gz"], "YooChoose buys")

    issues = LineIssues(clicks_path)
    categories = Vocabulary()
    parts: dict[str, list[np.ndarray]] = {"session": [], "item": [], "time": [], "category": []}
    for chunk in _timed_rows(clicks_path, CLICK_COLUMNS, CLICK_COLUMNS, issues):
        parts["session"].append(compact_ints(chunk["session"].to_numpy()))
        parts["item"].append(compact_ints(chunk["item"].to_numpy()))
        parts["time"].append(chunk["seconds"].to_numpy())
        parts["category"].append(categories.encode(chunk["category"].astype(str)))
    issues.check(max_bad)
    clicks = {k: np.concatenate(v) for k, v in parts.items()}
    del parts
    n_clicks = len(clicks["item"])

    valid = occurrence_counts(clicks["session"]) >= opts.min_session_clicks
    valid_sessions = np.unique(clicks["session"][valid])
    chosen = sample_ids(valid_sessions, opts.sample_sessions, opts.seed)
    keep = valid & np.isin(clicks["session"], chosen)
    clicks = {k: v[keep] for k, v in clicks.items()}
    clicked_items = np.unique(clicks["item"])

    buy_issues = LineIssues(buys_path)
    buys: dict[str, list[np.ndarray]] = {"session": [], "item": [], "time": []}
    unclicked = 0
    for chunk in _timed_rows(buys_path, BUY_COLUMNS, ["session", "timestamp", "item"], buy_issues):
        session, item = chunk["session"].to_numpy(), chunk["item"].to_numpy()
        mine = np.isin(session, chosen)
        known = np.isin(item, clicked_items)
        unclicked += int((mine & ~known).sum())
        sel = mine & known
        buys["session"].append(session[sel])
        buys["item"].append(item[sel])
        buys["time"].append(chunk["seconds"].to_numpy()[sel])
    buy_issues.check(max_bad)
    buy = {k: np.concatenate(v) if v else np.empty(0) for k, v in buys.items()}

    n_sampled_clicks = len(clicks["item"])
    interactions = pd.DataFrame({
        "user": np.concatenate([clicks["session"], buy["session"]]).astype(np.int64),
        "item": np.concatenate([clicks["item"], buy["item"]]).astype(np.int64),
        "timestamp": np.concatenate([clicks["time"], buy["time"]]),
        "event": pd.Categorical.from_codes(
            np.r_[np.zeros(n_sampled_clicks, np.int8), np.ones(len(buy["item"]), np.int8)], categories=EVENT_TYPES),
    })
    report = {
        "files": [issues.report(), buy_issues.report()],
        "clicks_read": int(n_clicks), "sessions_with_enough_clicks": int(len(valid_sessions)),
        "sessions_sampled": int(len(chosen)), "clicks_kept": int(n_sampled_clicks),
        "buys_kept": int(len(buy["item"])), "buys_of_unclicked_items_dropped": unclicked,
    }
    return RawData(interactions, _item_categories(clicks, categories.keys), EVENT_TYPES, report)


def _item_categories(clicks: dict[str, np.ndarray], names: list[str]) -> pd.DataFrame:
    """Each item's latest known category among the kept clicks, in words."""
    names_arr = np.asarray(names, dtype=object)
    known = names_arr[clicks["category"]] != "0"
    order = np.argsort(clicks["time"][known], kind="stable")
    latest = pd.DataFrame({"item": clicks["item"][known][order],
                           "category": names_arr[clicks["category"][known][order]]})
    latest = latest.drop_duplicates("item", keep="last")
    items = pd.DataFrame({"item": np.unique(clicks["item"]).astype(np.int64)})
    items = items.merge(latest.astype({"item": np.int64}), on="item", how="left")
    items["category"] = items["category"].fillna("").map(_category_words)
    items.insert(1, "id", items["item"].astype(str))
    return items


def _category_words(raw: str) -> str:
    if raw == "S":
        return "special offer"
    if raw.isdigit() and 1 <= int(raw) <= 12:
        return f"category {raw}"
    if raw.isdigit():
        return f"brand {raw}"
    return raw
