"""Small shared helpers: atomic writes (a kill never leaves a half-written file), safe reads, hashing, seeding."""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from learec.errors import UserError


def _atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic(path, lambda p: p.write_text(text))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    import torch

    _atomic(path, lambda p: torch.save(obj, p))


def load_torch_file(path: str | Path, hint: str, map_location: Any = "cpu") -> Any:
    """Read back a file learec wrote with :func:`atomic_torch_save`, accepting only tensors and plain
    containers and values (``weights_only``): run directories are shared, and unpickling anything else
    could run code. A file that cannot be read so is a UserError naming it, with ``hint`` on what to do."""
    import pickle

    import torch

    path = Path(path)
    try:
        with warnings.catch_warnings():  # a raw pickle (not torch.save's zip) warns of its protocol first
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        problem = ("holds objects other than tensors and plain values (written by an older learec, or crafted); "
                   "it was not loaded, as unpickling them could run code")
    except (PermissionError, FileNotFoundError, IsADirectoryError) as err:
        problem = f"cannot be read ({err.strerror or err})"
    except Exception:  # torch raises EOFError, OSError, RuntimeError, KeyError... for a truncated or foreign file
        problem = "is empty" if path.is_file() and path.stat().st_size == 0 else "is truncated or corrupt"
    raise UserError(f"{path} {problem}", hint)


def error_summary(err: BaseException) -> str:
    """``err`` as one short line (a state-dict mismatch spans many), for a UserError's message."""
    return f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"


def atomic_savez(path: str | Path, **arrays: np.ndarray) -> None:
    def write(p: Path) -> None:
        with open(p, "wb") as fh:  # a file handle keeps numpy from appending ".npz" to the temp name
            np.savez(fh, **arrays)

    _atomic(path, write)


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    def write(p: Path) -> None:
        with open(p, "wb") as fh:  # a file handle keeps numpy from appending ".npy" to the temp name
            np.save(fh, array)

    _atomic(path, write)


def stable_hash(obj: Any) -> str:
    """A short hash of a JSON-able object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_fingerprint(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of every byte of a file: an edit anywhere, even one that keeps the size, changes it
    (streamed; hashing costs a fraction of parsing the same file)."""
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    return {"name": path.name, "size": path.stat().st_size, "sha256": digest[:16]}


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def data_home() -> Path:
    """Where fetched and prepared data live: ``$LEAREC_DATA_DIR`` or ``~/.cache/learec``."""
    return Path(os.environ.get("LEAREC_DATA_DIR", Path.home() / ".cache" / "learec")).expanduser()
