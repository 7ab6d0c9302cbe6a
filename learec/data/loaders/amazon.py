"""Amazon Review Data 2018 (Ni, Li & McAuley, EMNLP 2019), one category (default Industrial_and_Scientific).

Files, under their official names, for category ``C``:
- ``C_5.json.gz``: the 5-core reviews, gzipped JSON lines with the fields ``reviewerID``, ``asin``,
  ``overall``, ``unixReviewTime`` (and ``reviewText``, ``summary``, ``vote``, ``style`` …, unused); or
- ``C.csv``: the ratings-only file, ``item,user,rating,timestamp`` without a header (all ratings: set
  ``data.min_user_interactions`` / ``data.min_item_interactions`` for a k-core);
- ``meta_C.json.gz`` (optional): product metadata, JSON lines with ``asin``, ``title``, ``brand``,
  ``category`` (a list, root first), ``main_cat`` ….
``data.loaders.amazon_2018.reviews`` picks the review file (auto: the 5-core one when present). The 2018
files repeat some reviews verbatim; repeated (user, item, time) rows are dropped and counted. Titles in the
metadata can hold HTML; tags and entities are cleaned. Item text: "<title>, by <brand>, in <category path>".
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from learec.data.loaders.textio import LineIssues, Vocabulary, find_file, read_delimited, read_json_lines
from learec.data.raw import RawData
from learec.errors import UserError

if TYPE_CHECKING:
    from learec.config import DataConfig

RATING_COLUMNS = ["item", "user", "rating", "timestamp"]
TEXT_TEMPLATE = "{text}"
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def clean_text(value: Any) -> str:
    """HTML entities decoded, tags removed, whitespace collapsed; '' for missing values."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return _SPACE.sub(" ", _TAG.sub(" ", html.unescape(str(value)))).strip()


def describe_product(title: str, brand: str, category: str) -> str:
    text = title or "a product"
    if brand:
        text += f", by {brand}"
    if category:
        text += f", in {category}"
    return text


def _review_file(directory: Path, category: str, choice: str) -> tuple[Path, str]:
    five = [f"{category}_5.json.gz", f"{category}_5.json"]
    ratings = [f"{category}.csv", f"{category}.csv.gz"]
    if choice == "5core" or (choice == "auto" and any((directory / n).is_file() for n in five)):
        return find_file(directory, five, f"the 5-core reviews of {category}"), "5core"
    if choice == "ratings" or any((directory / n).is_file() for n in ratings):
        return find_file(directory, ratings, f"the ratings of {category}"), "ratings"
    raise UserError(f"{directory} holds neither {five[0]} nor {ratings[0]} (Amazon 2018, category {category})",
                    "download that category's 5-core or ratings file, or choose the category with "
                    "--set data.loaders.amazon_2018.category=NAME (spelled as in the file names)")


def load_amazon_2018(directory: Path, cfg: DataConfig) -> RawData:
    opts, max_bad = cfg.loaders.amazon_2018, cfg.loaders.max_malformed_fraction
    path, kind = _review_file(directory, opts.category, opts.reviews)
    issues = LineIssues(path)
    users, items = Vocabulary(), Vocabulary()
    parts: dict[str, list[np.ndarray]] = {"user": [], "item": [], "time": [], "rating": []}
    if kind == "5core":
        chunks = read_json_lines(path, ["reviewerID", "asin", "overall", "unixReviewTime"], issues,
                                 required=["reviewerID", "asin", "unixReviewTime"],
                                 numeric=["overall", "unixReviewTime"])
        rename = {"reviewerID": "user", "asin": "item", "overall": "rating", "unixReviewTime": "timestamp"}
    else:
        chunks = read_delimited(path, RATING_COLUMNS, {"rating": "float", "timestamp": "int"}, issues, sep=",")
        rename = {}
    for chunk in chunks:
        chunk = chunk.rename(columns=rename)
        rating = chunk["rating"].to_numpy(dtype=np.float64, na_value=np.nan)
        keep = ~(rating < opts.min_rating) if opts.min_rating > 0 else np.ones(len(chunk), dtype=bool)
        chunk = chunk[keep]
        parts["user"].append(users.encode(chunk["user"].astype(str)))
        parts["item"].append(items.encode(chunk["item"].astype(str)))
        parts["time"].append(chunk["timestamp"].to_numpy(dtype=np.float64))
        parts["rating"].append(rating[keep])
    issues.check(max_bad)
    cols = {k: np.concatenate(v) if v else np.empty(0) for k, v in parts.items()}
    n_read = len(cols["item"])
    if opts.drop_duplicates and n_read:
        dup = pd.DataFrame({"u": cols["user"], "i": cols["item"], "t": cols["time"]}).duplicated().to_numpy()
        cols = {k: v[~dup] for k, v in cols.items()}
    user_keys = np.asarray(users.keys, dtype=object)
    item_keys = np.asarray(items.keys, dtype=object)
    interactions = pd.DataFrame({
        "user": pd.Categorical.from_codes(cols["user"].astype(np.int32), categories=pd.Index(user_keys, dtype=object)),
        "item": pd.Categorical.from_codes(cols["item"].astype(np.int32), categories=pd.Index(item_keys, dtype=object)),
        "timestamp": cols["time"],
    })
    reports = [issues.report()]
    meta = _metadata(directory, opts.category, set(item_keys[np.unique(cols["item"]).astype(np.int64)]), max_bad,
                     reports)
    report = {"files": reports, "reviews": kind, "rows_kept": int(n_read),
              "duplicates_dropped": int(n_read - len(interactions))}
    return RawData(interactions, meta, None, report)


def _metadata(directory: Path, category: str, wanted: set[str], max_bad: float, reports: list[dict]
              ) -> pd.DataFrame | None:
    names = [f"meta_{category}.json.gz", f"meta_{category}.json"]
    path = next((directory / n for n in names if (directory / n).is_file()), None)
    if path is None:
        return None
    issues = LineIssues(path)
    found = []
    for chunk in read_json_lines(path, ["asin", "title", "brand", "category", "main_cat"], issues, required=["asin"]):
        chunk = chunk[chunk["asin"].isin(wanted)]
        if len(chunk):
            found.append(chunk)
    issues.check(max_bad)
    reports.append(issues.report())
    if not found:
        return None
    meta = pd.concat(found, ignore_index=True).drop_duplicates("asin")  # the meta files repeat products
    title = [clean_text(t) for t in meta["title"]]
    brand = [clean_text(b) for b in meta["brand"]]
    path_text = [" > ".join(c for c in (clean_text(x) for x in cats) if c) if isinstance(cats, list) else
                 clean_text(cats) for cats in meta["category"]]
    return pd.DataFrame({
        "item": meta["asin"].astype(str).to_numpy(), "title": title, "brand": brand, "category": path_text,
        "main_cat": [clean_text(m) for m in meta["main_cat"]],
        "text": [describe_product(t, b, c) for t, b, c in zip(title, brand, path_text)],
    })
