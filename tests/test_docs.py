"""The design page: every citation of docs/design.md names a section it has."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
CITED = ("learec", "docs", "configs", "benchmarks", "tests")


def _sources() -> list[Path]:
    files = [ROOT / "README.md"]
    for folder in CITED:
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".md", ".yaml")]
    return files


def test_design_citations_name_existing_sections() -> None:
    headings = re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", (ROOT / "docs" / "design.md").read_text(), re.M)
    assert {"1.3", "2", "4"} <= set(headings)
    for path in _sources():
        text = path.read_text(encoding="utf-8", errors="replace")
        old = "DESIGN" + ".md"  # spelled apart so that this file does not cite it
        assert old not in text, f"{path} cites {old}, which is not in the repository"
        for cited in re.findall(r"design\.md\]?\(?[^§\n]{0,60}?((?:§\d+(?:\.\d+)?(?:, )?)+)", text):
            for section in re.findall(r"§(\d+(?:\.\d+)?)", cited):
                assert section in headings, f"{path} cites docs/design.md §{section}, which it does not have"
