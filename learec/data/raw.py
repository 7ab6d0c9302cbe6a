"""Readers for raw interaction logs: every reader returns the same ``RawData``.

Column names after reading: ``user``, ``item`` (both strings, the ids as the publisher wrote them),
``timestamp`` (float) and optionally ``event`` (string). Item metadata: ``item`` plus text fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from learec.errors import UserError


@dataclass
class RawData:
    interactions: pd.DataFrame
    items: pd.DataFrame | None = None
    event_order: list[str] | None = None  # e.g. ["click", "purchase"]: index = event code
    report: dict | None = None  # what a loader read, skipped and filtered (lands in the prepared stats)


def read_table(path: Path, *, sep: str, names: list[str] | None = None, header: int | None = 0,
               encoding: str = "utf-8", usecols: list[int] | None = None) -> pd.DataFrame:
    """``pd.read_csv`` with errors that name the file and the line.

    A header is read as a row like any other, so a row with more fields than the header is an error:
    given the header as column names, pandas would take a row's extra first field for an index and
    shift every column silently.
    """
    if not path.is_file():
        raise UserError(f"Expected data file {path} does not exist", "check --raw / data.raw points at the right directory")
    try:
        df = pd.read_csv(path, sep=sep, names=names, header=None, encoding=encoding, usecols=usecols,
                         dtype=str, keep_default_na=False, on_bad_lines="error", engine="c")
        if header is None:
            return df
        if len(df) <= header:
            raise pd.errors.EmptyDataError
        columns = [str(c).lstrip("\ufeff") if i == 0 else str(c) for i, c in enumerate(df.iloc[header])]
        body = df.iloc[header + 1:].reset_index(drop=True)
        body.columns = columns
        return body
    except pd.errors.ParserError as err:
        msg = str(err).strip().splitlines()[-1]
        m = re.search(r"line (\d+)", msg)
        where = f", line {m.group(1)}" if m else ""
        raise UserError(f"Malformed row in {path}{where}: {msg}",
                        "fix or remove that line; every row needs the same number of fields") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not {encoding} text: {err}") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{path} is empty", "give a file with a header and at least one row") from None


def numeric_column(df: pd.DataFrame, column: str, path: Path, header_lines: int = 1) -> pd.Series:
    """Parse a column as numbers; the first bad value is reported with its line number in the file."""
    values = pd.to_numeric(df[column], errors="coerce")
    bad = (~np.isfinite(values.to_numpy(dtype=np.float64))).nonzero()[0]  # NaN, text and inf alike
    if len(bad):
        i = int(bad[0])
        raise UserError(f"Malformed row in {path}, line {i + 1 + header_lines}: column '{column}' holds "
                        f"{df[column].iloc[i]!r}, not a number ({len(bad)} such rows in all)",
                        "fix or remove those rows")
    return values.astype("float64")


def require_values(df: pd.DataFrame, column: str, path: Path, header_lines: int = 1) -> None:
    """Refuse empty values in an id column: an empty user, item or event would become an id of its own."""
    empty = (df[column].str.strip() == "").to_numpy().nonzero()[0]
    if len(empty):
        raise UserError(f"Malformed row in {path}, line {int(empty[0]) + 1 + header_lines}: column '{column}' is empty "
                        f"({len(empty)} such rows in all)", "fill in or remove those rows")


def require_columns(df: pd.DataFrame, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(f"{path} lacks the column(s) {missing}; it has {list(df.columns)}",
                        f"the file needs a header row with at least {columns}")


# --- RecBole atomic files (the copy of MovieLens-100K shipped inside the recbole wheel) -----------------

def read_recbole_atomic(directory: Path) -> RawData:
    inter_files = sorted(directory.glob("*.inter"))
    if not inter_files:
        raise UserError(f"No *.inter file in {directory}")
    inter_path = inter_files[0]
    df = read_table(inter_path, sep="\t")
    df.columns = [c.split(":")[0] for c in df.columns]  # "user_id:token" -> "user_id"
    require_columns(df, ["user_id", "item_id", "timestamp"], inter_path)
    inter = pd.DataFrame({"user": df["user_id"], "item": df["item_id"],
                          "timestamp": numeric_column(df, "timestamp", inter_path)})
    items = None
    item_files = sorted(directory.glob("*.item"))
    if item_files:
        meta = read_table(item_files[0], sep="\t")
        meta.columns = [c.split(":")[0] for c in meta.columns]
        renames = {"item_id": "item", "movie_title": "title", "release_year": "year", "class": "genres"}
        items = meta.rename(columns=renames)
        if "genres" in items:
            items["genres"] = items["genres"].str.replace(" ", ", ", regex=False)
    return RawData(inter, items)


# --- The official GroupLens MovieLens-100K layout (u.data, u.item) --------------------------------------

_ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                  "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
                  "Thriller", "War", "Western"]


def read_grouplens_100k(directory: Path) -> RawData:
    data_path = directory / "u.data"
    df = read_table(data_path, sep="\t", names=["user", "item", "rating", "timestamp"], header=None)
    inter = pd.DataFrame({"user": df["user"], "item": df["item"],
                          "timestamp": numeric_column(df, "timestamp", data_path, header_lines=0)})
    items = None
    item_path = directory / "u.item"
    if item_path.is_file():
        names = ["item", "raw_title", "release", "video_release", "url", *_ML100K_GENRES]
        meta = read_table(item_path, sep="|", names=names, header=None, encoding="latin-1")
        title_year = meta["raw_title"].str.extract(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")
        genre_flags = meta[_ML100K_GENRES] == "1"
        items = pd.DataFrame({
            "item": meta["item"],
            "title": title_year["title"].fillna(meta["raw_title"]),
            "year": title_year["year"].fillna(""),
            "genres": genre_flags.apply(lambda row: ", ".join(g for g, on in row.items() if on), axis=1),
        })
    return RawData(inter, items)


# --- The generic format: interactions.csv + items.csv ---------------------------------------------------

def read_generic(directory: Path) -> RawData:
    """``interactions.csv``: user,item,timestamp[,event]; ``items.csv`` (optional): item + any text columns."""
    inter_path = directory / "interactions.csv"
    df = read_table(inter_path, sep=",")
    require_columns(df, ["user", "item", "timestamp"], inter_path)
    for column in ("user", "item", "event"):
        if column in df.columns:
            require_values(df, column, inter_path)
    inter = pd.DataFrame({"user": df["user"], "item": df["item"],
                          "timestamp": numeric_column(df, "timestamp", inter_path)})
    event_order = None
    if "event" in df.columns:
        inter["event"] = df["event"]
        # Order event types by frequency, most common first (so "click" is 0 and "purchase" 1 in a
        # click/purchase log); the order is stored with the prepared data.
        event_order = list(inter["event"].value_counts(sort=True).index)
    items = None
    items_path = directory / "items.csv"
    files = [_file_report(inter_path, len(df))]
    if items_path.is_file():
        items = read_table(items_path, sep=",")
        require_columns(items, ["item"], items_path)
        files.append(_file_report(items_path, len(items)))
    logged = pd.unique(inter["item"])
    # items with no row in items.csv get the text "item <id>" (learec.data.preprocess.item_texts)
    described = np.isin(logged, items["item"].to_numpy()) if items is not None else np.zeros(len(logged), bool)
    report = {"files": files, "users": int(inter["user"].nunique()), "items": int(len(logged)),
              "items_without_text": int((~described).sum())}
    return RawData(inter, items, event_order, report)


def _file_report(path: Path, rows: int) -> dict:
    """A file's entry under ``raw`` in the prepared stats, in the loaders' format; the generic reader skips no
    line (a malformed one is an error), so none is malformed."""
    return {"file": path.name, "lines": rows, "malformed": 0, "examples": []}
