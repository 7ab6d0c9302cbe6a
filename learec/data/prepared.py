"""Prepared data on disk: arrays as ``.npy`` (memory-mapped on load) plus a manifest.

The directory name carries a hash of the data config and of the raw files' fingerprints, so a changed
config or raw file leads to a fresh preparation, never to stale arrays. A directory is written under a
temporary name and renamed into place when complete.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from learec.config import DataConfig
from learec.data.preprocess import Sequences, build_sequences
from learec.data.registry import DATASETS, check_dataset_name, get_spec, raw_dir, resolve_raw
from learec.data.splits import EvalSet, Split, Transitions, split_loo, split_sqn
from learec.errors import UserError
from learec.utils import data_home, file_fingerprint, stable_hash

FORMAT_VERSION = 2  # 2: transitions and eval sets carry the within-user position


@dataclass
class PreparedData:
    path: Path
    manifest: dict[str, Any]
    sequences: Sequences
    split: Split

    @property
    def n_items(self) -> int:
        return self.sequences.n_items

    @property
    def event_types(self) -> list[str]:
        return self.sequences.event_types

    @property
    def train(self) -> Transitions:
        return self.split.train

    @property
    def val(self) -> EvalSet:
        return self.split.val

    @property
    def test(self) -> EvalSet:
        return self.split.test

    @property
    def stats(self) -> dict[str, Any]:
        return self.manifest["stats"]


def keyed_settings(cfg: DataConfig) -> dict[str, Any]:
    """The data settings that key a preparation (with the raw files' fingerprints): ``raw`` is a place, not
    a setting, and loader settings key only their own dataset (a changed RC15 sample leaves MovieLens caches
    valid); a dataset without settings gets exactly the key it had before loader settings existed."""
    settings = cfg.model_dump(mode="json", exclude={"raw", "loaders"})
    spec = DATASETS.get(cfg.dataset)
    options = spec.options if spec is not None else None  # own data (generic format) have no loader settings
    if options is not None:
        settings["loaders"] = {"max_malformed_fraction": cfg.loaders.max_malformed_fraction,
                               options: getattr(cfg.loaders, options).model_dump(mode="json")}
    return settings


def _cache_key(cfg: DataConfig, raw_files: list[Path]) -> str:
    fingerprints = [file_fingerprint(p) for p in raw_files]
    return stable_hash({"v": FORMAT_VERSION, "data": keyed_settings(cfg), "raw": fingerprints})


def _raw_files(raw_path: Path) -> list[Path]:
    """The files whose fingerprints key the cache: the raw file, or every visible file of the raw folder."""
    if raw_path.is_file():
        return [raw_path]
    return sorted(p for p in raw_path.iterdir() if p.is_file() and not p.name.startswith("."))


def compute_stats(seqs: Sequences, split: Split) -> dict[str, Any]:
    lens = seqs.lengths
    event_counts = np.bincount(seqs.events, minlength=len(seqs.event_types))
    return {
        "users": int(seqs.n_users),
        "items": int(seqs.n_items),
        "interactions": int(len(seqs.items)),
        "sequence_length": {
            "min": int(lens.min()), "p25": float(np.percentile(lens, 25)), "median": float(np.median(lens)),
            "mean": round(float(lens.mean()), 3), "p75": float(np.percentile(lens, 75)), "max": int(lens.max()),
        },
        "event_types": {t: int(c) for t, c in zip(seqs.event_types, event_counts)},
        "split": {"train_transitions": len(split.train), "val_events": len(split.val), "test_events": len(split.test)},
    }


def _write(dest: Path, seqs: Sequences, split: Split, manifest: dict[str, Any], force: bool = False) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for name in ("items", "events", "timestamps", "offsets"):
            np.save(tmp / f"seq_{name}.npy", getattr(seqs, name))
        for part in ("train", "val", "test"):
            for key, arr in getattr(split, part).arrays().items():
                np.save(tmp / f"{part}_{key}.npy", arr)
        np.save(tmp / "item_counts.npy", split.item_counts)
        meta = {"user_ids": seqs.user_ids, "item_ids": seqs.item_ids, "event_types": seqs.event_types,
                "item_text": seqs.item_text}
        (tmp / "ids.json").write_text(json.dumps(meta))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))  # written last: marks completion
        if (dest / "manifest.json").is_file() and not force:
            shutil.rmtree(tmp)  # another process prepared the same data meanwhile: keep theirs
            return
        if dest.exists():
            shutil.rmtree(dest)
        try:
            tmp.rename(dest)
        except OSError:
            if not (dest / "manifest.json").is_file():
                raise
            shutil.rmtree(tmp)  # lost a race against an identical preparation
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read(path: Path) -> PreparedData:
    manifest = json.loads((path / "manifest.json").read_text())
    meta = json.loads((path / "ids.json").read_text())

    def load(name: str) -> np.ndarray:
        return np.load(path / f"{name}.npy", mmap_mode="r")

    seqs = Sequences(load("seq_items"), load("seq_events"), load("seq_timestamps"), np.asarray(load("seq_offsets")),
                     meta["user_ids"], meta["item_ids"], meta["event_types"], meta["item_text"])
    parts = {}
    for part, cls in (("train", Transitions), ("val", EvalSet), ("test", EvalSet)):
        parts[part] = cls(**{f: load(f"{part}_{f}") for f in cls.__dataclass_fields__})
    split = Split(parts["train"], parts["val"], parts["test"], np.array(load("item_counts")))
    return PreparedData(path, manifest, seqs, split)


def last_raw_path(name: str) -> str | None:
    """The raw folder of the latest preparation of dataset ``name`` (None if it was never prepared)."""
    check_dataset_name(name)
    found = []
    for manifest in (data_home() / "prepared").glob(f"{name}-*/manifest.json"):
        made = json.loads(manifest.read_text())
        if made.get("dataset") == name and Path(made.get("raw_path", "")).exists():
            found.append((manifest.stat().st_mtime, made["raw_path"]))
    return max(found)[1] if found else None


def _cache_dir(name: str, cfg: DataConfig, key: str) -> Path:
    return data_home() / "prepared" / f"{name}-{cfg.protocol}-{key}"


def find_prepared(cfg: DataConfig) -> PreparedData | None:
    """The prepared data of ``cfg`` where its cache exists now, else ``None``: reads only, never prepares,
    fetches or generates (for readers of finished runs). Data of your own without ``cfg.raw`` give
    ``None``: the latest preparation of that name need not be the one a run used."""
    if cfg.raw is None and cfg.dataset not in DATASETS:
        return None
    try:
        spec = get_spec(cfg.dataset, cfg.raw)
    except UserError:  # an own-data folder that is gone
        return None
    raw_path = Path(cfg.raw).expanduser() if cfg.raw is not None else raw_dir(spec.name)
    if not raw_path.exists():
        return None
    dest = _cache_dir(spec.name, cfg, _cache_key(cfg, _raw_files(raw_path)))
    return _read(dest) if (dest / "manifest.json").is_file() else None


def prepare(cfg: DataConfig, force: bool = False, log=print) -> PreparedData:
    """Load the prepared data for ``cfg``, preparing (and caching) it first when needed.

    Data of your own (a name no loader knows) are read from ``cfg.raw``; without it, from the raw folder
    of the latest preparation of that name (so `learec data stats NAME` works after `prepare NAME --raw`).
    """
    raw = cfg.raw if cfg.raw is not None or cfg.dataset in DATASETS else last_raw_path(cfg.dataset)
    spec = get_spec(cfg.dataset, raw)
    raw_path = resolve_raw(spec, raw)
    raw_files = _raw_files(raw_path)
    key = _cache_key(cfg, raw_files)
    dest = _cache_dir(spec.name, cfg, key)
    if not force and (dest / "manifest.json").is_file():
        return _read(dest)

    t0 = time.time()
    raw = spec.read_raw(raw_path, cfg)
    template = cfg.text_template if cfg.text_template is not None else spec.text_template
    seqs = build_sequences(raw, cfg.min_user_interactions, cfg.min_item_interactions, template)
    raw_report = raw.report
    if cfg.min_user_interactions > 1 or cfg.min_item_interactions > 1:  # what the k-core filter removed
        df = raw.interactions
        raw_report = {**(raw_report or {}), "kcore_removed": {
            "interactions": int(len(df) - len(seqs.items)), "users": int(df["user"].nunique() - seqs.n_users),
            "items": int(df["item"].nunique() - seqs.n_items)}}
    del raw  # the raw frame of a big log is no longer needed: free it before the split arrays are built
    if cfg.protocol == "sqn":
        split = split_sqn(seqs, cfg.history, cfg.split, cfg.split_seed)
    else:
        split = split_loo(seqs, cfg.history)
    if len(split.train) == 0 or len(split.val) == 0 or len(split.test) == 0:
        raise UserError(f"The '{cfg.protocol}' split of {spec.name} leaves an empty part "
                        f"(train {len(split.train)}, val {len(split.val)}, test {len(split.test)})",
                        "use more data, lower the k-core thresholds or change data.split")
    manifest = {
        "format_version": FORMAT_VERSION, "dataset": spec.name, "key": key,
        "config": cfg.model_dump(mode="json"), "raw_path": str(raw_path),
        "raw_files": [file_fingerprint(p) for p in raw_files],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(time.time() - t0, 2),
        "stats": compute_stats(seqs, split),
    }
    if raw_report:
        manifest["stats"]["raw"] = raw_report
    _write(dest, seqs, split, manifest, force)
    log(f"prepared {spec.name} ({cfg.protocol}) in {manifest['seconds']} s -> {dest}")
    return _read(dest)
