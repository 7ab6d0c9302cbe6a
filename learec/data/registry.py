"""The dataset registry: a name -> how to fetch and read it, and its default item-text template."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from learec.data.fetch import fetch_movielens_100k
from learec.data.synthetic import generate_synthetic_log
from learec.data.raw import RawData, read_generic, read_grouplens_100k, read_recbole_atomic
from learec.errors import UserError
from learec.utils import data_home


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    read: Callable[[Path], RawData]
    text_template: str
    fetch: Callable[..., Path] | None = None  # (dest, **options) -> dest


def _read_movielens_100k(directory: Path) -> RawData:
    # Both layouts are accepted: the GroupLens originals and RecBole's atomic files.
    if (directory / "u.data").is_file():
        return read_grouplens_100k(directory)
    if any(directory.glob("*.inter")):
        return read_recbole_atomic(directory)
    raise UserError(f"{directory} holds neither u.data (GroupLens layout) nor ml-100k.inter (RecBole layout)",
                    "run `learec data fetch movielens-100k`, or point --raw at an unpacked ml-100k folder")


DATASETS: dict[str, DatasetSpec] = {
    "movielens-100k": DatasetSpec(
        name="movielens-100k",
        description="MovieLens-100K: 943 users, 1,682 movies, 100,000 ratings (fetched from the recbole wheel)",
        read=_read_movielens_100k,
        text_template="{title} ({year}), genres: {genres}",
        fetch=fetch_movielens_100k,
    ),
    "synthetic": DatasetSpec(
        name="synthetic",
        description="a generated click/purchase log with known sequential structure (learec.data.synthetic)",
        read=read_generic,
        text_template="{title}, {category}",
        fetch=lambda dest, wheel=None: generate_synthetic_log(dest, n_users=1000, n_items=200),
    ),
    "generic": DatasetSpec(
        name="generic",
        description="your own data: interactions.csv (user,item,timestamp[,event]) + optional items.csv",
        read=read_generic,
        text_template="",
    ),
}


def raw_dir(name: str) -> Path:
    return data_home() / "raw" / name


def get_spec(name: str, raw: str | Path | None = None) -> DatasetSpec:
    """The spec for ``name``; an unregistered name is taken as generic-format data when ``raw`` holds it."""
    if name in DATASETS:
        return DATASETS[name]
    if raw is not None and (Path(raw) / "interactions.csv").is_file():
        spec = DATASETS["generic"]
        return DatasetSpec(name, spec.description, spec.read, spec.text_template)
    raise UserError(f"Unknown dataset '{name}'. Known: {', '.join(sorted(DATASETS))}",
                    "use a registered name, or give --raw DIR holding interactions.csv (+ items.csv) in the "
                    "generic format described in the README")


def resolve_raw(spec: DatasetSpec, raw: str | Path | None) -> Path:
    path = Path(raw).expanduser() if raw else raw_dir(spec.name)
    if not path.exists():
        hint = (f"run `learec data fetch {spec.name}`" if spec.fetch else "pass --raw DIR with the files")
        raise UserError(f"Raw data for '{spec.name}' not found at {path}", hint)
    return path
