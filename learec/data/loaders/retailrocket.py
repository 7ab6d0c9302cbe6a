"""RetailRocket ("Retailrocket recommender system dataset", Kaggle) with the SQN paper's preprocessing.

Files, under their official names: ``events.csv`` (``timestamp,visitorid,event,itemid,transactionid``,
times in milliseconds) and, for item text, ``item_properties_part1.csv`` / ``item_properties_part2.csv``
(``timestamp,itemid,property,value``) and ``category_tree.csv`` (``categoryid,parentid``).

What the published SQN code (Xin et al., SIGIR 2020, ``preprocess_kaggle.py``) does, and so this loader:
- drops transactions (it keeps the rows without a transactionid; here: events outside ``event_map``);
  views are clicks, add-to-carts purchases;
- treats each ``visitorid`` as one session (no splitting at pauses);
- drops sessions with fewer than 3 events, then, among the remaining rows, items with fewer than 3 events:
  one pass each, in that order, so a session may be left with fewer than 3 events (not a k-core);
- orders each session by timestamp (here a stable sort: equal times keep file order).
Published result: 195,523 sessions, 70,852 items.

Item text: product names and almost all property values are hashed in this data set, so the only
readable facts are the category (an id, whose parents ``category_tree.csv`` gives) and availability. The
text is "product <id> in category <root> > ... > <leaf>" (each item's latest category).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from learec.data.loaders.textio import LineIssues, compact_ints, find_file, read_delimited
from learec.data.preprocess import occurrence_counts
from learec.data.raw import RawData

if TYPE_CHECKING:
    from learec.config import DataConfig

EVENT_COLUMNS = ["timestamp", "visitorid", "event", "itemid", "transactionid"]
PROPERTY_COLUMNS = ["timestamp", "itemid", "property", "value"]
TREE_COLUMNS = ["categoryid", "parentid"]
TEXT_TEMPLATE = "product {id} in category {category_path}"


def load_retailrocket(directory: Path, cfg: DataConfig) -> RawData:
    opts, max_bad = cfg.loaders.retailrocket, cfg.loaders.max_malformed_fraction
    path = find_file(directory, ["events.csv", "events.csv.gz"], "RetailRocket's event log")
    issues = LineIssues(path)
    raw_events = list(opts.event_map)
    event_types = list(dict.fromkeys(opts.event_map.values()))  # e.g. ["click", "purchase"]
    type_of = np.array([event_types.index(opts.event_map[e]) for e in raw_events], dtype=np.int8)
    parts: dict[str, list[np.ndarray]] = {"time": [], "user": [], "item": [], "event": []}
    dropped: Counter[str] = Counter()
    for chunk in read_delimited(path, EVENT_COLUMNS, {"timestamp": "int", "visitorid": "int", "itemid": "int"},
                                issues, sep=",", header=EVENT_COLUMNS, usecols=EVENT_COLUMNS[:4]):
        codes = pd.Index(raw_events).get_indexer(chunk["event"])  # -1: an event type not mapped
        keep = codes >= 0
        if not keep.all():
            dropped.update(chunk["event"][~keep].value_counts().to_dict())
        parts["time"].append(chunk["timestamp"].to_numpy()[keep])
        parts["user"].append(compact_ints(chunk["visitorid"].to_numpy()[keep]))
        parts["item"].append(compact_ints(chunk["itemid"].to_numpy()[keep]))
        parts["event"].append(type_of[codes[keep]])
        del chunk
    issues.check(max_bad)
    cols = {k: np.concatenate(v) if v else np.empty(0, np.int64) for k, v in parts.items()}
    del parts
    mapped_rows = len(cols["item"])

    # The SQN filters: sessions first, then items counted on what is left; once each.
    keep = occurrence_counts(cols["user"]) >= opts.min_session_length
    cols = {k: v[keep] for k, v in cols.items()}
    after_sessions = len(cols["item"])
    keep = occurrence_counts(cols["item"]) >= opts.min_item_interactions
    cols = {k: v[keep] for k, v in cols.items()}

    report: dict = {
        "files": [issues.report()],
        "events_read": int(mapped_rows + sum(dropped.values())), "events_dropped_by_type": dict(dropped),
        "after_session_filter": int(after_sessions), "after_item_filter": int(len(cols["item"])),
    }
    interactions = pd.DataFrame({
        "user": cols["user"], "item": cols["item"],
        "timestamp": cols["time"].astype(np.float64),  # milliseconds, as in the file
        "event": pd.Categorical.from_codes(cols["event"], categories=event_types),
    })
    del cols
    items = None
    if opts.item_properties:
        items = item_metadata(directory, np.unique(interactions["item"].to_numpy()), max_bad, report["files"])
    return RawData(interactions, items, event_types, report)


def item_metadata(directory: Path, wanted: np.ndarray, max_bad: float, reports: list[dict]) -> pd.DataFrame | None:
    """Latest category and availability of the wanted items, with the category's path from the root."""
    files = sorted(directory.glob("item_properties_part*.csv")) + sorted(directory.glob("item_properties_part*.csv.gz"))
    if not files:
        return None
    found = []
    for path in files:
        issues = LineIssues(path)
        for chunk in read_delimited(path, PROPERTY_COLUMNS, {"timestamp": "int", "itemid": "int"}, issues, sep=",",
                                    header=PROPERTY_COLUMNS, usecols=PROPERTY_COLUMNS):
            # Only two properties are readable; the rest are hashed tokens.
            sel = chunk["property"].isin(["categoryid", "available"]).to_numpy()
            sel = sel & np.isin(chunk["itemid"].to_numpy(), wanted)
            found.append(chunk.loc[sel, PROPERTY_COLUMNS])
        issues.check(max_bad)
        reports.append(issues.report())
    if not found:
        return None
    props = pd.concat(found, ignore_index=True)
    # Properties are weekly snapshots; an item's latest value is its current one.
    props = props.sort_values("timestamp", kind="stable").drop_duplicates(["itemid", "property"], keep="last")
    wide = props.pivot(index="itemid", columns="property", values="value")
    category = wide["categoryid"] if "categoryid" in wide else pd.Series("", index=wide.index)
    available = wide["available"] if "available" in wide else pd.Series("", index=wide.index)
    parents = category_parents(directory, max_bad, reports)
    category = category.fillna("").astype(str)
    return pd.DataFrame({
        "item": wide.index.to_numpy(),
        "id": wide.index.astype(str),
        "category": category.to_numpy(),
        "category_path": [category_path(c, parents) if c else "unknown" for c in category],
        "available": available.fillna("").map({"1": "yes", "0": "no"}).fillna("").to_numpy(),
    })


def category_parents(directory: Path, max_bad: float, reports: list[dict]) -> dict[str, str]:
    path = directory / "category_tree.csv"
    if not path.is_file():
        return {}
    issues = LineIssues(path)
    parents: dict[str, str] = {}
    for chunk in read_delimited(path, TREE_COLUMNS, {}, issues, sep=",", header=TREE_COLUMNS):
        parents.update(zip(chunk["categoryid"], chunk["parentid"]))
    issues.check(max_bad)
    reports.append(issues.report())
    return parents


def category_path(category: str, parents: dict[str, str]) -> str:
    """'root > ... > category'; a cycle or a missing parent ends the walk."""
    path = [category]
    while (parent := parents.get(path[-1], "")) and parent not in path and len(path) < 50:
        path.append(parent)
    return " > ".join(reversed(path))
