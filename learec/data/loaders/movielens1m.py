"""MovieLens-1M (GroupLens, ``ml-1m.zip`` unpacked): ``ratings.dat`` + ``movies.dat``.

Both files are ``::``-separated, latin-1, without a header: ``UserID::MovieID::Rating::Timestamp`` and
``MovieID::Title::Genres`` (title with the year in brackets, genres joined by ``|``). ``users.dat`` is not
needed. Every rating is an interaction unless ``data.loaders.movielens_1m.min_rating`` says otherwise; the
whole set is 6,040 users, 3,706 rated movies, 1,000,209 ratings.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from learec.data.loaders.textio import LineIssues, read_delimited, require_file
from learec.data.raw import RawData

if TYPE_CHECKING:
    from learec.config import DataConfig

RATING_COLUMNS = ["user", "item", "rating", "timestamp"]
MOVIE_COLUMNS = ["item", "raw_title", "genres"]
TEXT_TEMPLATE = "{title} ({year}), genres: {genres}"


def load_movielens_1m(directory: Path, cfg: DataConfig) -> RawData:
    opts, max_bad = cfg.loaders.movielens_1m, cfg.loaders.max_malformed_fraction
    path = require_file(directory / "ratings.dat", "MovieLens-1M's ratings.dat")
    issues = LineIssues(path)
    kinds = {"user": "int", "item": "int", "rating": "float", "timestamp": "int"}
    chunks = [c[c["rating"] >= opts.min_rating] for c in
              read_delimited(path, RATING_COLUMNS, kinds, issues, sep="::", encoding="latin-1")]
    issues.check(max_bad)
    ratings = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=RATING_COLUMNS)
    interactions = pd.DataFrame({"user": ratings["user"], "item": ratings["item"],
                                 "timestamp": ratings["timestamp"].astype("float64")})
    reports = [issues.report()]
    items = None
    movies_path = directory / "movies.dat"
    if movies_path.is_file():
        movie_issues = LineIssues(movies_path)
        movies = pd.concat(list(read_delimited(movies_path, MOVIE_COLUMNS, {"item": "int"}, movie_issues, sep="::",
                                               encoding="latin-1")), ignore_index=True)
        movie_issues.check(max_bad)
        reports.append(movie_issues.report())
        title_year = movies["raw_title"].str.extract(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")
        items = pd.DataFrame({
            "item": movies["item"],
            "title": title_year["title"].fillna(movies["raw_title"]),
            "year": title_year["year"].fillna(""),
            "genres": movies["genres"].str.replace("|", ", ", regex=False),
        })
    return RawData(interactions, items, None, {"files": reports, "ratings_kept": int(len(interactions))})
