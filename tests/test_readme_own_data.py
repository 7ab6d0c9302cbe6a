"""The README's "Your own data, end to end", command by command through the CLI on generated data.

The commands are read out of that section's code block, so the section and this test cannot drift apart.
Substituted, and only these: `learec data fetch synthetic` writes a small synthetic log (not the full
1,000 users), and `--set` gives the tiny random LM and a few steps, as the README's sizes (default LM,
full epochs) take far longer than a test may.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import torch

from learec.cli import main
from learec.config import load_config
from learec.data.prepared import prepare
from learec.data.registry import raw_dir
from learec.data.synthetic import generate_synthetic_log

ROOT = Path(__file__).parent.parent
SECTION = "### Your own data, end to end"

SMALL_RL = ["train.epochs=1", "train.batch_size=64", "train.progress=false", "model.hidden=16",
            "train.threads=1"]
SMALL_LE = ["le.lm=tiny", "le.progress=false", "le.item_tokens.batch_size=64", "le.item_tokens.eval_items=32",
            "le.model.window=16", "le.train.user_fraction=0.1", "le.train.steps=2", "le.train.eval_every=1",
            "le.train.batch_users=8",
            "le.train.state_negatives=16", "le.train.reward_positions=4", "le.label.batch_rows=16"]
# per command (its first words): what is added to it
ADDED = {("train",): SMALL_RL, ("env", "train"): SMALL_LE, ("grid",): SMALL_RL}


def readme_commands() -> list[str]:
    """The shell lines of the section's first ``bash`` block, continuation lines joined."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split(SECTION, 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, f"README: no bash block under {SECTION!r}"
    return [line for line in block.group(1).replace("\\\n", " ").splitlines() if line.strip()]


def _with_additions(argv: list[str]) -> list[str]:
    for head, sets in ADDED.items():
        if tuple(argv[:len(head)]) == head:
            extra = [arg for item in sets for arg in ("--set", item)]
            return argv + extra + (["--only", "seed=0"] if head == ("grid",) else [])  # one seed of three
    return argv


@pytest.mark.slow
def test_readme_own_data_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("LEAREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # the grid's runs are processes of their own: they import learec from this checkout, one thread each
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")  # the README's paths are relative to the checkout
    torch.set_num_threads(1)

    commands = readme_commands()
    ran = []
    for line in commands:
        argv = shlex.split(line, comments=True)
        if argv[0] != "learec":  # plain shell (copying the folder)
            subprocess.run(["bash", "-c", line], check=True, cwd=tmp_path)
        elif argv[1:] == ["data", "fetch", "synthetic"]:
            generate_synthetic_log(raw_dir("synthetic"), n_users=80, n_items=30, min_len=3, max_len=20)
        else:
            capsys.readouterr()
            code = main(_with_additions(argv[1:]))
            out, err = capsys.readouterr()
            assert code == 0, f"{line}\n{err}"
            if argv[1:3] == ["data", "stats"]:
                stats = json.loads(out)
                assert stats["raw"]["items_without_text"] == 0 and stats["users"] == 80
        ran.append(argv[1:3])
    assert ran[0] == ["data", "fetch"] and len(ran) == len(commands) >= 10

    runs = tmp_path / "runs"
    assert json.loads((runs / "mydata-ce" / "metrics.json").read_text())["test"]["ndcg@10"] >= 0
    report = json.loads((runs / "le-mydata" / "le_report.json").read_text())
    assert report["report_settings"]["val_users"] == 50 and report["lm"] == "tiny"
    # the items' texts come from the config's template, and the LEA cell trained on the LE's labels
    data = prepare(load_config(tmp_path / "configs" / "le_generic.yaml").data, log=lambda *_: None)
    assert data.sequences.item_text[3] == "Product 3, category 3"
    assert (runs / "grid-mydata" / "snqn+lea-seed0" / "le_cache.json").is_file()
    assert "snqn+lea" in (runs / "grid-mydata" / "report" / "report.md").read_text()


def test_le_defaults_and_the_generic_config_name_no_domain() -> None:
    """The LE's default prompt and description, and configs/le_generic.yaml's, say nothing about films,
    music or shops; configs/le_ml100k.yaml keeps its films."""
    domain_words = ("movie", "film", "watch", "song", "music", "listen", "product", "bought", "shop")
    for cfg in (load_config(None), load_config(ROOT / "configs" / "le_generic.yaml")):
        for text in (cfg.le.model.prompt, cfg.le.item_tokens.describe):
            assert not any(word in text.lower() for word in domain_words), text
    films = load_config(ROOT / "configs" / "le_ml100k.yaml").le
    assert (films.model.prompt, films.item_tokens.describe) == ("A user watched these movies, oldest first:",
                                                                " is the movie {text}.")
