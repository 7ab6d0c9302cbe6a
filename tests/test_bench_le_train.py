"""The LE training-step benchmark runs and reports less padding with length groups (tiny LM, seconds)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_bench_le_train_runs_and_groups_cut_the_padding() -> None:
    out = subprocess.run([sys.executable, "benchmarks/bench_le_train.py", "--lm", "tiny", "--steps", "1",
                          "--threads", "1", "--groups", "1", "4"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    padding = {int(g): float(p) for g, p in re.findall(r"length_groups=(\d+):.*\(\s*([\d.]+)% padding\)", out)}
    assert set(padding) == {1, 4}
    assert padding[4] < padding[1]
