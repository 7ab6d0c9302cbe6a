"""Raw log -> per-user chronological sequences with items remapped to ``0..N-1`` (padding id ``N``)."""

from __future__ import annotations

import re
import string
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd

from learec.data.raw import RawData
from learec.errors import UserError


@dataclass
class Sequences:
    """All users' sequences, concatenated (CSR layout): user u owns ``items[offsets[u]:offsets[u+1]]``."""

    items: np.ndarray  # int32, time order within a user
    events: np.ndarray  # int8 event-type code per interaction
    timestamps: np.ndarray  # float64
    offsets: np.ndarray  # int64, n_users + 1
    user_ids: list[str]  # original ids, index = user code
    item_ids: list[str]  # original ids, index = item code
    event_types: list[str]  # index = event code
    item_text: list[str]

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def occurrence_counts(values: pd.Series | np.ndarray) -> np.ndarray:
    """For each row, how many rows share its value (any dtype, categoricals included)."""
    codes, _ = pd.factorize(values, use_na_sentinel=False)
    return np.bincount(codes)[codes]


def kcore_filter(df: pd.DataFrame, min_user: int, min_item: int) -> pd.DataFrame:
    """Drop users/items below their minimum count, repeated until both conditions hold (a k-core)."""
    if min_user <= 1 and min_item <= 1:
        return df
    while True:
        keep = (occurrence_counts(df["user"]) >= min_user) & (occurrence_counts(df["item"]) >= min_item)
        if keep.all():
            return df
        df = df[keep]


def _natural_order(unique: list) -> np.ndarray:
    """Order of unique ids: numerically when every id is a number, else as text."""
    numeric = pd.to_numeric(pd.Series(unique, dtype=object), errors="coerce")
    if not numeric.isna().any():
        return np.argsort(numeric.to_numpy(dtype=np.float64), kind="stable")
    return np.array(sorted(range(len(unique)), key=lambda i: str(unique[i])), dtype=np.int64)


_BRACKETS = "()[]"


def fill_template(template: str, rec: dict) -> str:
    """``template`` filled from ``rec``; an empty field takes its separator with it.

    The separator of an empty field is the text before it back to the previous field (or to the last bracket
    in between); where there is none (the first field, or right after an opening bracket) it is the text
    after it up to the next field (or the first bracket). Parentheses left empty, "()", go too. So
    "{title}, by {brand}, {category}" without a brand reads "Title, Category", and "{title} ({brand})"
    reads "Title"; a template without empty fields is filled as written.
    """
    pieces = list(string.Formatter().parse(template))
    literals = [lit for lit, _, _, _ in pieces]
    fields = [(name, spec, conv) for _, name, spec, conv in pieces]
    if fields and fields[-1][0] is None:
        fields.pop()
    else:
        literals.append("")
    values = []
    for name, spec, conv in fields:
        field = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
        values.append(field.format_map(defaultdict(str, rec)))
    for i, value in enumerate(values):
        if value.strip():
            continue
        values[i] = ""
        before = literals[i]
        cut = max(before.rfind(c) for c in _BRACKETS) + 1  # keep the text up to a bracket
        if cut < len(before):
            literals[i] = before[:cut]
        else:
            after = literals[i + 1]
            ends = [after.find(c) for c in _BRACKETS if c in after]
            literals[i + 1] = after[min(ends):] if ends else ""
    text = "".join(lit + val for lit, val in zip(literals, values + [""]))
    return re.sub(r"\s*\(\s*\)", "", text).strip()  # a missing field leaves no "()" behind


def item_texts(item_ids: list[str], items: pd.DataFrame | None, template: str) -> list[str]:
    """Fill the template from each item's metadata; items without metadata get 'item <id>'."""
    if items is None or items.empty:
        return [f"item {i}" for i in item_ids]
    meta = items.drop_duplicates("item").set_index("item")
    text_columns = [c for c in meta.columns]
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    unknown = fields - set(text_columns)
    if unknown:
        raise UserError(f"The item-text template {template!r} uses {sorted(unknown)}, which the item file lacks; "
                        f"it has {text_columns}", "change data.text_template to use those columns")
    records = meta.to_dict("index")
    out = []
    for item in item_ids:
        rec = records.get(item)
        if rec is None:
            out.append(f"item {item}")
        elif template:
            out.append(fill_template(template, rec))
        else:
            out.append(", ".join(f"{k}: {v}" for k, v in rec.items() if v))
    return out


def build_sequences(raw: RawData, min_user: int, min_item: int, template: str) -> Sequences:
    df = raw.interactions
    if df.empty:
        raise UserError("The interaction log is empty", "check the raw file holds rows after its header")
    df = kcore_filter(df, min_user, min_item)
    if df.empty:
        raise UserError(f"No interactions are left after k-core filtering (users >= {min_user}, items >= {min_item})",
                        "lower data.min_user_interactions / data.min_item_interactions")

    # factorize works on any id dtype (text, integers, categoricals from the big-file loaders) in one hash pass.
    user_code, user_uniques = pd.factorize(df["user"])  # codes in order of first appearance
    user_ids = list(user_uniques)
    item_first, item_uniques = pd.factorize(df["item"])
    item_uniques = list(item_uniques)
    order_of_items = _natural_order(item_uniques)
    item_ids = [item_uniques[i] for i in order_of_items]
    rank = np.empty(len(item_uniques), dtype=np.int32)
    rank[order_of_items] = np.arange(len(item_uniques), dtype=np.int32)
    item_code = rank[item_first]
    user_code = user_code.astype(np.int64)
    timestamps = df["timestamp"].to_numpy(dtype=np.float64)

    if "event" in df.columns and raw.event_order:
        event_types = list(raw.event_order)
        if len(event_types) > np.iinfo(np.int8).max:  # event codes are stored as int8
            raise UserError(f"The log has {len(event_types)} event types; learec handles at most "
                            f"{np.iinfo(np.int8).max} (e.g. {event_types[:5]} ...)",
                            "is the event column the right one? Map the events to a few types (e.g. click, purchase)")
        events = pd.Categorical(df["event"], categories=event_types).codes.astype(np.int8)
    else:
        event_types = ["interaction"]
        events = np.zeros(len(df), dtype=np.int8)

    # Stable sort by (user, time): ties keep file order, as RecBole does.
    order = np.lexsort((timestamps, user_code))
    counts = np.bincount(user_code, minlength=len(user_ids))
    offsets = np.zeros(len(user_ids) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Sequences(
        items=item_code[order], events=events[order], timestamps=timestamps[order], offsets=offsets,
        user_ids=[str(u) for u in user_ids], item_ids=[str(i) for i in item_ids], event_types=event_types,
        item_text=item_texts(item_ids, raw.items, template),
    )
