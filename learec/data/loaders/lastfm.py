"""Last.fm listening logs: Last.fm-1K (Celma, 2010) and LFM-1b (Schedl, 2016).

**Last.fm-1K** (``lastfm-dataset-1K.tar.gz``): ``userid-timestamp-artid-artname-traid-traname.tsv``,
tab-separated, no header, UTF-8: ``user_000639 \\t 2009-04-08T01:57:47Z \\t <artist MBID> \\t <artist name>
\\t <track MBID> \\t <track name>``; 19,150,868 lines, 992 users. An item is a track: its MusicBrainz id when it
has one, else the (artist name, track name) pair. Track names hold stray quote characters, so quoting is
off; lines with the wrong number of fields are skipped and counted.

**LFM-1b** (``LFM-1b.zip``): ``LFM-1b_LEs.txt`` (listening events: ``user-id \\t artist-id \\t album-id \\t
track-id \\t timestamp``, integers, no header) plus the name files ``LFM-1b_tracks.txt`` (``track-id \\t
track-name \\t artist-id``), ``LFM-1b_albums.txt`` (``album-id \\t album-name \\t artist-id``) and
``LFM-1b_artists.txt`` (``artist-id \\t artist-name``); ``LFM-1b_users.txt`` (header line, user id first)
lists the users to sample from (without it the event file is read twice). An item is a track id; its album
is the one of its first listening event. About a billion events: sample users (default 1,000).

Both: ``sample_users`` users are drawn with a seeded generator; each user's plays in time order form one
sequence, or several when ``session_gap_minutes`` > 0 (a new one after a longer pause; named
``<user>#<n>``); ``max_sequence_length`` keeps each sequence's most recent plays. Item text in the LEA
paper's style: "track is titled ... from album ..., its artist is ...", leaving out what the files lack.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from learec.data.loaders.common import cut_sequences, iso_seconds, sample_ids
from learec.data.loaders.options import LastfmOptions
from learec.data.loaders.textio import LineIssues, Vocabulary, find_file, read_delimited
from learec.data.raw import RawData

if TYPE_CHECKING:
    from learec.config import DataConfig

LASTFM_1K_FILE = "userid-timestamp-artid-artname-traid-traname.tsv"
LASTFM_1K_COLUMNS = ["user", "timestamp", "artist_mbid", "artist", "track_mbid", "track"]
LFM_1B_LE_COLUMNS = ["user", "artist", "album", "track", "timestamp"]
TEXT_TEMPLATE = "{text}"


def describe_track(track: str, album: str, artist: str) -> str:
    text = f"track is titled {track}" if track else "track"
    if album:
        text += f" from album {album}"
    if artist:
        text += f", its artist is {artist}"
    return text + "."


def _sequences(user: np.ndarray, user_names: list[str] | np.ndarray, item: np.ndarray, time: np.ndarray,
               opts: LastfmOptions, sample: bool = True) -> tuple[pd.DataFrame, dict]:
    """Sample users (unless done already), cut the plays into sequences, and build the interaction frame."""
    chosen = sample_ids(np.unique(user), opts.sample_users if sample else 0, opts.seed)
    keep = np.isin(user, chosen)
    user, item, time = user[keep], item[keep], time[keep]
    order, seq, number = cut_sequences(user, time, opts.session_gap_minutes * 60.0, opts.max_sequence_length)
    names = np.asarray(user_names, dtype=object)
    if opts.session_gap_minutes > 0:
        seq_user = np.zeros(seq.max() + 1 if len(seq) else 0, dtype=np.int64)
        seq_user[seq] = user[order]
        seq_number = np.zeros_like(seq_user)
        seq_number[seq] = number
        labels = [f"{names[u]}#{n}" for u, n in zip(seq_user, seq_number)]
        users = pd.Categorical.from_codes(seq, categories=pd.Index(labels, dtype=object))
    else:
        present, codes = np.unique(user[order], return_inverse=True)
        users = pd.Categorical.from_codes(codes, categories=pd.Index(names[present], dtype=object))
    frame = pd.DataFrame({"user": users, "item": item[order], "timestamp": time[order]})
    report = {"users_sampled": int(len(chosen)), "sequences": int(len(np.unique(seq))),
              "plays_kept": int(len(frame))}
    return frame, report


# --- Last.fm-1K --------------------------------------------------------------------------------------

def load_lastfm_1k(directory: Path, cfg: DataConfig) -> RawData:
    opts, max_bad = cfg.loaders.lastfm_1k, cfg.loaders.max_malformed_fraction
    path = find_file(directory, [LASTFM_1K_FILE, LASTFM_1K_FILE + ".gz"], "the Last.fm-1K listening log")
    issues = LineIssues(path)
    users, tracks = Vocabulary(), Vocabulary()
    track_meta: list[pd.DataFrame] = []
    parts: dict[str, list[np.ndarray]] = {"user": [], "item": [], "time": []}
    for chunk in read_delimited(path, LASTFM_1K_COLUMNS, {}, issues, sep="\t",
                                usecols=["user", "timestamp", "artist", "track_mbid", "track"]):
        seconds = iso_seconds(chunk["timestamp"])
        no_user = (chunk["user"] == "").to_numpy()
        bad = np.isnan(seconds) | no_user
        for i in np.flatnonzero(bad):
            reason = ("no user id" if no_user[i] else
                      f"timestamp {chunk['timestamp'].iloc[i]!r} is not an ISO 8601 time")
            issues.add(int(chunk["line"].iloc[i]), reason)
        chunk = chunk[~bad]
        # A track's key: its MusicBrainz id, else "artist \t name" (never an MBID: those hold no tabs).
        key = chunk["track_mbid"].where(chunk["track_mbid"] != "", chunk["artist"] + "\t" + chunk["track"])
        seen = len(tracks)
        codes = tracks.encode(key)
        new_codes, first_row = np.unique(codes, return_index=True)
        new = new_codes >= seen
        if new.any():
            rows = chunk.iloc[first_row[new]]
            track_meta.append(pd.DataFrame({"item": new_codes[new], "track": rows["track"].to_numpy(),
                                            "artist": rows["artist"].to_numpy()}))
        parts["user"].append(users.encode(chunk["user"]))
        parts["item"].append(codes)
        parts["time"].append(seconds[~bad])
    issues.check(max_bad)
    cols = {k: np.concatenate(v) if v else np.empty(0, np.int32) for k, v in parts.items()}
    del parts
    n_read = len(cols["item"])
    frame, report = _sequences(cols["user"], users.keys, cols["item"], cols["time"].astype(np.float64), opts)
    del cols
    # Items are dense codes of the track keys; their ids in the prepared data are the keys themselves
    # (the MBID, or "artist - name").
    keys = np.asarray([k.replace("\t", " - ") for k in tracks.keys], dtype=object)
    frame["item"] = pd.Categorical.from_codes(frame["item"].to_numpy(), categories=pd.Index(keys, dtype=object))
    meta = pd.concat(track_meta, ignore_index=True) if track_meta else pd.DataFrame(columns=["item", "track", "artist"])
    meta["item"] = keys[meta["item"].to_numpy(dtype=np.int64)]
    meta["album"] = ""
    meta["text"] = [describe_track(t, "", a) for t, a in zip(meta["track"], meta["artist"])]
    return RawData(frame, meta, None, {"files": [issues.report()], "plays_read": int(n_read), **report})


# --- LFM-1b ------------------------------------------------------------------------------------------

def load_lfm_1b(directory: Path, cfg: DataConfig) -> RawData:
    opts, max_bad = cfg.loaders.lfm_1b, cfg.loaders.max_malformed_fraction
    path = find_file(directory, ["LFM-1b_LEs.txt", "LFM-1b_LEs.txt.gz"], "the LFM-1b listening events")
    reports: list[dict] = []
    everyone = _lfm_users(directory, path, max_bad, reports)
    chosen = sample_ids(everyone, opts.sample_users, opts.seed)

    issues = LineIssues(path)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("user", "item", "album", "artist", "time")}
    kinds = {c: "int" for c in LFM_1B_LE_COLUMNS}
    n_read = 0
    for chunk in read_delimited(path, LFM_1B_LE_COLUMNS, kinds, issues, sep="\t"):
        n_read += len(chunk)
        sel = np.isin(chunk["user"].to_numpy(), chosen)
        for src, dst in (("user", "user"), ("track", "item"), ("album", "album"), ("artist", "artist")):
            parts[dst].append(chunk[src].to_numpy()[sel].astype(np.int64))
        parts["time"].append(chunk["timestamp"].to_numpy()[sel].astype(np.float64))
    issues.check(max_bad)
    reports.insert(0, issues.report())
    cols = {k: np.concatenate(v) if v else np.empty(0, np.int64) for k, v in parts.items()}
    del parts
    # Each track's album and artist: those of its first listening event in the file.
    tracks, first = np.unique(cols["item"], return_index=True)
    album_of, artist_of = cols["album"][first], cols["artist"][first]
    user_ids, user_codes = np.unique(cols["user"], return_inverse=True)
    names = np.asarray([str(u) for u in user_ids], dtype=object)
    frame, report = _sequences(user_codes, names, cols["item"], cols["time"], opts, sample=False)
    report["users_sampled"] = int(len(chosen))  # drawn from all users before the event file was read
    del cols
    track_names = _names(directory / "LFM-1b_tracks.txt", ["id", "name", "artist"], tracks, max_bad, reports)
    album_names = _names(directory / "LFM-1b_albums.txt", ["id", "name", "artist"], album_of, max_bad, reports)
    artist_names = _names(directory / "LFM-1b_artists.txt", ["id", "name"], artist_of, max_bad, reports)
    meta = pd.DataFrame({
        "item": tracks,
        "track": [track_names.get(t, "") for t in tracks],
        "album": [album_names.get(a, "") for a in album_of],
        "artist": [artist_names.get(a, "") for a in artist_of],
    })
    meta["text"] = [describe_track(t, al, ar) for t, al, ar in zip(meta["track"], meta["album"], meta["artist"])]
    return RawData(frame, meta, None, {"files": reports, "events_read": int(n_read), **report})


def _lfm_users(directory: Path, events: Path, max_bad: float, reports: list[dict]) -> np.ndarray:
    """All user ids: from LFM-1b_users.txt when present, else from a first pass over the events."""
    users_path = directory / "LFM-1b_users.txt"
    if users_path.is_file():
        with open(users_path, "rb") as fh:
            n_fields = fh.readline().count(b"\t") + 1  # the header line
        issues = LineIssues(users_path)
        cols = ["user_id"] + [f"f{i}" for i in range(1, n_fields)]
        # Column names differ between releases: the header is skipped unchecked; only the id is used.
        found = [c["user_id"].to_numpy() for c in read_delimited(users_path, cols, {"user_id": "int"}, issues,
                                                                 sep="\t", header=True, usecols=["user_id"])]
        issues.check(max_bad)
        reports.append(issues.report())
        return np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)
    issues = LineIssues(events)
    found = [np.unique(c["user"].to_numpy()) for c in
             read_delimited(events, LFM_1B_LE_COLUMNS, {"user": "int"}, issues, sep="\t", usecols=["user"])]
    return np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)


def _names(path: Path, columns: list[str], wanted: np.ndarray, max_bad: float, reports: list[dict]) -> dict[int, str]:
    """id -> name for the wanted ids, streaming the (large) name file."""
    if not path.is_file():
        return {}
    issues = LineIssues(path)
    wanted = np.unique(wanted)
    out: dict[int, str] = {}
    for chunk in read_delimited(path, columns, {"id": "int"}, issues, sep="\t", usecols=["id", "name"]):
        sel = np.isin(chunk["id"].to_numpy(), wanted)
        out.update(zip(chunk["id"].to_numpy()[sel].tolist(), chunk["name"][sel].tolist()))
    issues.check(max_bad)
    reports.append(issues.report())
    return out
