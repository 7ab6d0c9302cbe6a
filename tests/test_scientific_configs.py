"""The Amazon Industrial & Scientific configs (README, "Data sets with measured results") on generated data
in the same generic format: every file validates and prepares with ``data.raw`` given on the command line,
and no committed config names a folder outside the repository. The real data are never read here."""

from __future__ import annotations

import re

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from learec.cli import main
from learec.config import load_config
from learec.data.prepared import prepare
from learec.data.preprocess import build_sequences
from learec.data.registry import DATASETS
from learec.grid import load_grid
from learec.pipeline import PIPELINE_KEYS, with_le_cache

CONFIGS = Path(__file__).parent.parent / "configs"
BACKBONES = ("gru4rec", "caser", "nextitnet", "sasrec", "pop")
TEMPLATE = "{title} ({brand}) ({category})"


def scientific_files() -> list[Path]:
    files = [*CONFIGS.glob("scientific_*.yaml"), *CONFIGS.glob("grid_scientific_*.yaml"),
             CONFIGS / "le_scientific.yaml", CONFIGS / "lea_scientific.yaml"]
    return sorted(files)


def write_products(directory: Path, n_users: int = 60, n_items: int = 40) -> Path:
    """A small log in the layout of the Industrial & Scientific copy: user,item,timestamp (the position in
    the user's sequence, no event column), every user with at least 5 items; items.csv with title,
    category, brand and text, a few brands and categories empty."""
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{int(i)}", t + 1) for u in range(n_users)
            for t, i in enumerate(rng.integers(n_items, size=int(rng.integers(5, 13))))]
    directory.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["user", "item", "timestamp"]).to_csv(directory / "interactions.csv", index=False)
    title = [f"Lab Flask {i}, 250 ml" for i in range(n_items)]
    category = ["" if i % 10 == 3 else f"Industrial & Scientific Lab Supplies {i % 4}" for i in range(n_items)]
    brand = ["" if i % 10 == 7 else f"Brand {i % 5}" for i in range(n_items)]
    text = [". ".join((t, c, b)) + "." for t, c, b in zip(title, category, brand)]
    pd.DataFrame({"item": [f"i{i}" for i in range(n_items)], "title": title, "category": category, "brand": brand,
                  "text": text}).to_csv(directory / "items.csv", index=False)
    return directory


@pytest.fixture
def products(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LEAREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # the grids' and the pipeline's runs/ (dry runs write nothing)
    return write_products(tmp_path / "amazon-scientific")


def test_every_scientific_file_is_there() -> None:
    names = {p.name for p in scientific_files()}
    assert {f"scientific_{b}.yaml" for b in BACKBONES} <= names
    assert {"grid_scientific_loo.yaml", "grid_scientific_sqn.yaml", "grid_scientific_tune.yaml",
            "le_scientific.yaml", "lea_scientific.yaml"} <= names


def test_no_config_points_outside_the_repository() -> None:
    # no relative path climbs above configs/'s parent and no absolute path is written in: data folders
    # come from the command line (--set data.raw=DIR)
    above = re.compile(r"(^|[\s:=\[,'\"])(\.\./){2,}|(^|[\s:=\[,'\"])\.\./[^\s]*\.\./")
    absolute = re.compile(r"(raw|cache|le_run|out|lm):\s*['\"]?/")
    for path in CONFIGS.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert not above.search(text) and not absolute.search(text), path


def test_scientific_configs_take_their_data_folder_from_the_command_line() -> None:
    for path in scientific_files():
        text = path.read_text(encoding="utf-8")
        assert "--set data.raw=DIR" in text, f"{path.name}: its header gives no command with --set data.raw=DIR"
        assert "raw:" not in text, f"{path.name} names a data folder"


def test_scientific_configs_validate_and_prepare_with_data_raw(products: Path) -> None:
    raw = f"data.raw={products}"
    configs = []
    for path in scientific_files():
        if path.name.startswith("scientific_") or path.name.startswith("le_"):
            configs.append(load_config(path, [raw]))
        else:  # a grid, or the LEA pipeline's grid (its LE variants need some lea.cache to validate)
            extra = (["lea.cache=x"], PIPELINE_KEYS) if path.name.startswith("lea_") else ([], ())
            grid = load_grid(path, extra_set=[*extra[0], raw], extra_keys=extra[1])
            assert grid.cells, path
            configs += [cell.cfg for cell in grid.cells]
    sections = {cfg.data.model_dump_json(): cfg.data for cfg in configs}
    assert {(d.dataset, d.raw, d.text_template) for d in sections.values()} == {("amazon-scientific", str(products),
                                                                                    TEMPLATE)}
    assert {(d.protocol, d.history) for d in sections.values()} == {("loo", 50), ("sqn", 10)}
    for data_cfg in sections.values():
        data = prepare(data_cfg, log=lambda *_: None)
        assert (data.n_items, data.stats["users"]) == (40, 60)
        texts = data.sequences.item_text
        assert "Lab Flask 0, 250 ml (Brand 0) (Industrial & Scientific Lab Supplies 0)" in texts
        assert "Lab Flask 3, 250 ml (Brand 3)" in texts and "Lab Flask 7, 250 ml (Industrial & Scientific Lab " \
            "Supplies 3)" in texts  # an empty brand or category leaves no "()"
        assert not any("()" in t for t in texts)


def test_scientific_le_and_lea_line_up_with_the_rl_grid(products: Path) -> None:
    raw = f"data.raw={products}"
    le_cfg = load_config(CONFIGS / "le_scientific.yaml", [raw])
    lea = load_grid(CONFIGS / "lea_scientific.yaml", extra_set=["lea.cache=x", raw], extra_keys=PIPELINE_KEYS)
    assert all(cell.cfg.data == le_cfg.data for cell in lea.cells)
    assert le_cfg.le.item_tokens.describe == " is the product {text}." and "products" in le_cfg.le.model.prompt
    variants = {cell.values["variant"] for cell in lea.cells}
    assert {"ce", "snqn", "snqn+lea", "sa2c", "sa2c+lea", "snqn+oracle", "snqn+popularity"} <= variants
    assert {cell.cfg.lea.source for cell in lea.cells} == {"le", "oracle", "popularity"}
    assert {cell.values["model.backbone"] for cell in lea.cells} == set(BACKBONES[:4])
    assert {cell.values["seed"] for cell in lea.cells} == set(range(5))
    sa2c = [cell.cfg.rl for cell in lea.cells if cell.cfg.objective == "sa2c"]
    assert sa2c and all(rl.warmup_epochs is not None and rl.warmup_steps is None for rl in sa2c)
    # the pipeline's ce/snqn/sa2c cells are the RL grid's, so --reuse copies them
    lea = with_le_cache(lea, Path("le"), "key", {"oracle": (Path("o"), "key"), "popularity": (Path("p"), "key")})
    rl = load_grid(CONFIGS / "grid_scientific_sqn.yaml", extra_set=[raw])
    rl_cells = {(c.values["model.backbone"], c.values["objective"], c.values["seed"]): c.cfg for c in rl.cells}
    assert len(rl_cells) == 4 * 5 * 3
    reused = [c for c in lea.cells if c.values["variant"] in ("ce", "snqn", "sa2c") and c.values["seed"] < 3]
    assert len(reused) == 4 * 3 * 3
    for cell in reused:
        key = (cell.values["model.backbone"], cell.values["variant"], cell.values["seed"])
        assert cell.cfg == rl_cells[key], key
    # the learning rate and dropout chosen per backbone reach the loo grid and the RL grid alike
    loo = load_grid(CONFIGS / "grid_scientific_loo.yaml", extra_set=[raw])
    chosen = {c.values["model.backbone"]: (c.cfg.train.lr, c.cfg.model.dropout) for c in loo.cells}
    assert len({chosen[b] for b in BACKBONES[:4]}) > 1  # not one setting for all
    for (backbone, _, _), cfg in rl_cells.items():
        assert (cfg.train.lr, cfg.model.dropout) == chosen[backbone], backbone
    tune = load_grid(CONFIGS / "grid_scientific_tune.yaml", extra_set=[raw])
    per_backbone = [sum(c.values["model.backbone"] == b for c in tune.cells) for b in BACKBONES[:4]]
    assert all(1 < n <= 12 for n in per_backbone) and {c.cfg.seed for c in tune.cells} == {0}
    assert {c.cfg.data.protocol for c in tune.cells} == {"loo"}


def test_grid_and_pipeline_dry_runs_take_data_raw(products: Path, capsys: pytest.CaptureFixture) -> None:
    raw = f"data.raw={products}"
    for name in ("grid_scientific_loo", "grid_scientific_sqn", "grid_scientific_tune"):
        assert main(["grid", "--config", str(CONFIGS / f"{name}.yaml"), "--set", raw, "--dry-run"]) == 0, name
        assert " new " in capsys.readouterr().out
    assert main(["pipeline", "--config", str(CONFIGS / "lea_scientific.yaml"), "--set", raw, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "item tokens" in out and "oracle" in out and "popularity" in out and "140 runs" in out
    assert main(["config", "show", "--config", str(CONFIGS / "scientific_sasrec.yaml"), "--set", raw]) == 0
    assert f"raw: {products}" in capsys.readouterr().out
    assert not (products.parent / "runs").exists()


def test_scientific_template_reads_the_amazon_2018_loader_fields(tmp_path: Path) -> None:
    """README: the official 2018 files through the amazon-2018 loader, with these configs'
    ``--set data.dataset=amazon-2018``: their template uses the loader's title, brand and category."""
    from test_datasets import write_amazon

    cfg = load_config(CONFIGS / "scientific_sasrec.yaml", [
        "data.dataset=amazon-2018", f"data.raw={write_amazon(tmp_path / 'az')}",
        "data.loaders.max_malformed_fraction=0.3"])  # the fixture holds two broken lines on purpose
    raw = DATASETS["amazon-2018"].read_raw(Path(cfg.data.raw), cfg.data)
    texts = build_sequences(raw, 0, 0, cfg.data.text_template).item_text
    assert texts == ["Pipette Tips & Rack 200 (Eppendorf) (Industrial & Scientific > Lab & Scientific Products)",
                     "Safety Goggles", "item B003"]
