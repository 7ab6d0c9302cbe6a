"""Bounded-memory reading of big raw files, with malformed lines skipped, counted and reported.

``read_delimited`` reads a separated text file (plain or ``.gz``) in blocks of a few MiB: it counts the
separators of every line with numpy, so a line with the wrong number of fields is found (with its line
number) before pandas parses the block; the good lines of a block are parsed by pandas' C parser with
quoting off (none of the official files quote fields, and Last.fm track names hold stray quotes). Values
that do not parse as numbers are malformed too. ``read_json_lines`` does the same for JSON-lines files.

Every frame carries a ``line`` column (1-based, header included), so a loader can report its own checks
by line number as well. ``LineIssues`` keeps the count and the first few examples; it is an error only when
malformed lines exceed ``data.loaders.max_malformed_fraction`` of a file.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from learec.errors import UserError

log = logging.getLogger("learec.data")

BLOCK_BYTES = 16 << 20  # per parse: ~16 MiB of text, a few hundred MB of temporaries at most
EXAMPLES = 5  # malformed lines quoted in reports
_UNIT_SEP = b"\x1f"  # stands in for a multi-character separator (MovieLens' "::"); never in text

ColumnKind = Literal["int", "float", "str"]


@dataclass
class LineIssues:
    """Malformed lines of one file: how many, out of how many, and the first few with line numbers."""

    path: Path
    lines: int = 0  # data lines seen (blank lines and the header excluded)
    malformed: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, line: int, reason: str, text: str | None = None) -> None:
        self.malformed += 1
        if len(self.examples) < EXAMPLES:
            shown = "" if text is None else f": {text[:160]!r}"
            self.examples.append(f"line {line}: {reason}{shown}")

    def check(self, max_fraction: float) -> None:
        """Raise when too many lines were malformed; log a warning when some were."""
        if not self.malformed:
            return
        share = self.malformed / max(self.lines, 1)
        detail = "; ".join(self.examples)
        if share > max_fraction:
            raise UserError(
                f"{self.path}: {self.malformed:,} of {self.lines:,} lines ({share:.3%}) are malformed, more than "
                f"data.loaders.max_malformed_fraction={max_fraction:g}. First ones: {detail}",
                "check that this is the official file, completely downloaded and unpacked; or allow more with "
                "--set data.loaders.max_malformed_fraction=...")
        log.warning("%s: skipped %d malformed line(s) of %d: %s", self.path, self.malformed, self.lines, detail)

    def stop_if_unreadable(self, what: str) -> None:
        """After 1,000 lines of which none parsed: the wrong file or format; stop before reading it all."""
        if self.lines >= 1000 and self.malformed == self.lines:
            raise UserError(f"{self.path}: none of the first {self.lines:,} lines is {what}. First ones: "
                            + "; ".join(self.examples),
                            "check that this is the official file under its official name, completely unpacked")

    def report(self) -> dict[str, Any]:
        return {"file": self.path.name, "lines": self.lines, "malformed": self.malformed, "examples": self.examples}


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UserError(f"Expected {what} at {path}, but there is no such file",
                        "point --raw (data.raw) at the folder holding the files under their official names")
    return path


def find_file(directory: Path, names: Sequence[str], what: str) -> Path:
    """The first of ``names`` (e.g. ``x.csv``, ``x.csv.gz``) present in ``directory``."""
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise UserError(f"{directory} holds none of {', '.join(names)} ({what})",
                    "point --raw (data.raw) at the folder holding the files under their official names")


def open_binary(path: Path) -> BinaryIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _blocks(fh: BinaryIO, block_bytes: int) -> Iterator[bytes]:
    """Chunks of whole lines, each ending with a newline (one is added after an unterminated last line)."""
    rest = b""
    while True:
        data = fh.read(block_bytes)
        if not data:
            if rest:
                yield rest + b"\n"
            return
        data = rest + data
        cut = data.rfind(b"\n")
        if cut < 0:
            rest = data
            continue
        rest = data[cut + 1:]
        yield data[:cut + 1]


def _read_header(fh: BinaryIO, path: Path, expected: Sequence[str], sep: bytes, encoding: str) -> None:
    line = fh.readline()
    found = line.decode(encoding, "replace").lstrip("\ufeff").strip().split(sep.decode())
    if [f.strip().lower() for f in found] != [e.lower() for e in expected]:
        raise UserError(f"{path}, line 1: expected the header {sep.decode().join(expected)!r}, found "
                        f"{line.decode(encoding, 'replace').strip()[:200]!r}",
                        "is this the right file? The official file starts with that header")


def _not_numbers(values: pd.Series, kind: ColumnKind) -> np.ndarray:
    """Mask of the text values that are no (finite; for "int" whole) number."""
    as_float = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(as_float)
    if kind == "int":
        bad |= as_float != np.floor(np.where(bad, 0, as_float))
    return bad


def read_delimited(path: Path, columns: Sequence[str], kinds: Mapping[str, ColumnKind], issues: LineIssues, *,
                   sep: str, header: Sequence[str] | bool = False, usecols: Sequence[str] | None = None,
                   encoding: str = "utf-8", block_bytes: int | None = None) -> Iterator[pd.DataFrame]:
    """Frames of the well-formed lines of ``path``: the columns in ``usecols`` (default all) plus ``line``.

    ``columns`` names every field of a line (a line must have exactly that many); ``kinds`` gives each used
    column's type (default "str"). ``header``: the file's expected first line, checked and skipped (True:
    skipped unchecked).
    """
    used = list(usecols or columns)
    sep_b = sep.encode()
    sep_byte = sep_b if len(sep_b) == 1 else _UNIT_SEP
    first_line = 1
    with open_binary(path) as fh:
        if header is True:
            fh.readline()
            first_line = 2
        elif header:
            _read_header(fh, path, header, sep_b, encoding)
            first_line = 2
        for block in _blocks(fh, block_bytes or BLOCK_BYTES):
            n_lines = block.count(b"\n")
            frame = _parse_block(block, first_line, path, columns, used, kinds, issues, sep_b, sep_byte, encoding)
            first_line += n_lines
            issues.stop_if_unreadable(f"a line of {len(columns)} {sep!r}-separated fields as expected")
            if frame is not None and len(frame):
                yield frame


def _parse_block(block: bytes, first_line: int, path: Path, columns: Sequence[str], used: list[str],
                 kinds: Mapping[str, ColumnKind], issues: LineIssues, sep_b: bytes, sep_byte: bytes,
                 encoding: str) -> pd.DataFrame | None:
    if b"\r" in block:
        block = block.replace(b"\r", b"")  # CRLF files; pandas would also end a line at a lone CR
    if sep_byte != sep_b:
        block = block.replace(sep_b, sep_byte)
    raw = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(raw == 10)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    seps = np.flatnonzero(raw == sep_byte[0])
    n_fields = np.searchsorted(seps, ends) - np.searchsorted(seps, starts) + 1
    blank = ends == starts
    bad = ~blank & (n_fields != len(columns))
    line_no = first_line + np.arange(len(ends))
    issues.lines += int((~blank).sum())

    original = block

    def text(i: int) -> str:  # line i of the block as written
        return original[starts[i]:ends[i]].replace(sep_byte, sep_b).decode(encoding, "replace")

    for i in np.flatnonzero(bad):
        issues.add(int(line_no[i]), f"expected {len(columns)} fields, found {int(n_fields[i])}",
                   text(int(i)) if len(issues.examples) < EXAMPLES else None)
    keep = ~blank & ~bad
    if not keep.any():
        return None
    if not keep.all():
        block = raw[np.repeat(keep, ends - starts + 1)].tobytes()
    kept = np.flatnonzero(keep)

    frame, failed = _parse_rows(block, columns, used, kinds, sep_byte.decode(), encoding)
    bad_rows = np.zeros(len(frame), dtype=bool)
    for mask in failed.values():
        bad_rows |= mask
    for i in np.flatnonzero(bad_rows):
        c = next(c for c, m in failed.items() if m[i])
        issues.add(int(line_no[kept[i]]), f"column '{c}' holds {frame[c].iloc[i]!r}, not a number",
                   text(int(kept[i])) if len(issues.examples) < EXAMPLES else None)
    if bad_rows.any():
        frame = frame[~bad_rows].copy()
    for c in used:  # numbers read as text (the slow path): convert what is left
        if kinds.get(c, "str") != "str" and not pd.api.types.is_numeric_dtype(frame[c]):
            frame[c] = pd.to_numeric(frame[c]).astype("int64" if kinds[c] == "int" else "float64")
    frame["line"] = line_no[kept[~bad_rows]]
    return frame


def _parse_rows(block: bytes, columns: Sequence[str], used: list[str], kinds: Mapping[str, ColumnKind], sep: str,
                encoding: str) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The block's rows, and per numeric column the rows whose value is not a number (when there are any).

    Fast path: pandas parses the numbers itself. If a value somewhere in the block is not a number, pandas
    raises; the block is then read as text, so the failing rows can be found (and their text reported).
    """
    numeric = [c for c in used if kinds.get(c, "str") != "str"]
    read = dict(sep=sep, header=None, names=list(columns), usecols=used, quoting=csv.QUOTE_NONE, engine="c",
                encoding=encoding, encoding_errors="replace", keep_default_na=False, skip_blank_lines=False)
    try:
        dtypes = {c: {"int": "int64", "float": "float64"}.get(kinds.get(c, "str"), str) for c in used}
        frame = pd.read_csv(io.BytesIO(block), dtype=dtypes, **read)
        # "nan" and "inf" parse as floats but are no data.
        failed = {c: ~np.isfinite(frame[c].to_numpy()) for c in numeric if kinds[c] == "float"}
    except (ValueError, OverflowError):
        frame = pd.read_csv(io.BytesIO(block), dtype={c: str for c in used}, **read)
        failed = {c: _not_numbers(frame[c], kinds[c]) for c in numeric}
    return frame, {c: m for c, m in failed.items() if m.any()}


def read_json_lines(path: Path, fields: Sequence[str], issues: LineIssues, *, required: Sequence[str] = (),
                    numeric: Sequence[str] = (), chunk_rows: int = 100_000) -> Iterator[pd.DataFrame]:
    """Frames of ``fields`` (missing optional fields are None) plus ``line`` from a JSON-lines file.

    A line that is not a JSON object (the 2014 Amazon files' Python-literal style is accepted too), lacks a
    ``required`` field, or holds a non-number in a ``numeric`` field is malformed.
    """
    rows: dict[str, list[Any]] = {f: [] for f in fields}
    lines: list[int] = []
    with open_binary(path) as fh:
        for number, raw in enumerate(fh, start=1):
            raw = raw.strip()
            if not raw:
                continue
            issues.stop_if_unreadable("a JSON object with the expected fields")
            issues.lines += 1
            values = _json_row(raw, number, fields, required, numeric, issues)
            if values is None:
                continue
            for f in fields:
                rows[f].append(values[f])
            lines.append(number)
            if len(lines) >= chunk_rows:
                yield _json_frame(rows, lines)
                rows, lines = {f: [] for f in fields}, []
    if lines:
        yield _json_frame(rows, lines)


def _json_row(raw: bytes, number: int, fields: Sequence[str], required: Sequence[str], numeric: Sequence[str],
              issues: LineIssues) -> dict[str, Any] | None:
    """The fields of one JSON line, or None (and the line recorded as malformed)."""
    try:
        obj = json.loads(raw)
    except ValueError:
        try:
            obj = ast.literal_eval(raw.decode("utf-8", "replace"))  # the 2014 files' Python literals
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            obj = None
    if not isinstance(obj, dict):
        issues.add(number, "not a JSON object", raw.decode("utf-8", "replace"))
        return None
    missing = [f for f in required if obj.get(f) in (None, "")]
    if missing:
        issues.add(number, f"lacks {missing[0]!r}", raw.decode("utf-8", "replace"))
        return None
    values = {f: obj.get(f) for f in fields}
    for f in numeric:
        if values[f] is None:
            continue
        if not _is_number(values[f]):
            issues.add(number, f"field {f!r} holds {values[f]!r}, not a number")
            return None
        values[f] = float(values[f])
    return values


def _is_number(value: Any) -> bool:
    try:
        return bool(np.isfinite(float(value)))
    except (TypeError, ValueError):
        return False


def _json_frame(rows: dict[str, list[Any]], lines: list[int]) -> pd.DataFrame:
    frame = pd.DataFrame({f: pd.Series(v, dtype=object) for f, v in rows.items()})
    frame["line"] = np.asarray(lines, dtype=np.int64)
    return frame


class Vocabulary:
    """String keys -> dense int codes, stable across chunks (first seen, first coded)."""

    def __init__(self) -> None:
        self.index: dict[Any, int] = {}

    def __len__(self) -> int:
        return len(self.index)

    def encode(self, values: pd.Series | np.ndarray) -> np.ndarray:
        codes, uniques = pd.factorize(values)
        index = self.index
        mapped = np.fromiter((index.setdefault(k, len(index)) for k in uniques), dtype=np.int64, count=len(uniques))
        return mapped[codes].astype(np.int32)

    @property
    def keys(self) -> list[Any]:
        return list(self.index)


def compact_ints(values: np.ndarray) -> np.ndarray:
    """int32 when the values fit (halves the memory of ids), else int64."""
    if len(values) and (values.min() < np.iinfo(np.int32).min or values.max() > np.iinfo(np.int32).max):
        return values.astype(np.int64)
    return values.astype(np.int32)
