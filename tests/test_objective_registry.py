"""Objectives by name: a new one is one definition plus its registration, with its own typed config section.

The toy objective below stands for the new file: CE with label smoothing, its setting in
``objectives.toy.label_smoothing``. It is trained through the CLI like a built-in one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch.nn.functional as F
import yaml
from pydantic import BaseModel, ConfigDict, Field

from learec.cli import main
from learec.config import load_config
from learec.data.registry import raw_dir
from learec.data.synthetic import generate_synthetic_log
from learec.errors import UserError
from learec.rl import Batch, BuildContext, CrossEntropyObjective, SideInputs, register_objective
from learec.rl.registry import objective_names


# --- the "new file": a typed config, the objective, its build function and its registration ------------
class ToySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="share of the target spread over all items")


class ToyCE(CrossEntropyObjective):
    def __init__(self, *args, label_smoothing: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.label_smoothing = label_smoothing

    def train_step(self, batch: Batch, side: SideInputs | None = None) -> dict[str, float]:
        logits = self._train_model(batch["state"], batch["length"])
        loss = F.cross_entropy(logits, batch["action"], label_smoothing=self.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": float(loss.detach())}


BUILT: list[ToyCE] = []  # what the build function made, so the test sees the setting that reached it


def build_toy(ctx: BuildContext) -> ToyCE:
    from learec.models import SequentialRecommender

    settings: ToySettings = ctx.settings
    model = SequentialRecommender(ctx.make_backbone(), ctx.n_items, ctx.cfg.model.tie_head).to(ctx.device)
    objective = ToyCE(model, lr=ctx.cfg.train.lr, weight_decay=ctx.cfg.train.weight_decay,
                      label_smoothing=settings.label_smoothing)
    BUILT.append(objective)
    return objective


register_objective("toy", build_toy, settings=ToySettings)
# ---------------------------------------------------------------------------------------------------------

SETS = ["data.dataset=synthetic", "data.protocol=sqn", "data.history=5", "model.backbone=gru4rec",
        "model.hidden=16", "train.epochs=2", "train.batch_size=64", "train.progress=false", "train.patience=0",
        "train.threads=1", "seed=3"]


@pytest.fixture()
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LEAREC_DATA_DIR", str(tmp_path / "data"))
    generate_synthetic_log(raw_dir("synthetic"), n_users=60, n_items=25, min_len=4, max_len=20)
    path = tmp_path / "toy.yaml"
    path.write_text("objective: toy\nobjectives:\n  toy:\n    label_smoothing: 0.3\n")
    return path


def _train(config: Path, run_dir: Path, *sets: str) -> dict:
    argv = ["train", "--config", str(config), "--run-dir", str(run_dir)]
    for item in (*SETS, *sets):
        argv += ["--set", item]
    assert main(argv) == 0
    return json.loads((run_dir / "metrics.json").read_text())


def test_a_registered_objective_trains_through_the_cli_with_its_own_settings(config_file: Path,
                                                                              tmp_path: Path) -> None:
    BUILT.clear()
    smoothed = _train(config_file, tmp_path / "toy")
    assert [o.label_smoothing for o in BUILT] == [0.3]  # the YAML's setting reached the objective
    assert 0 <= smoothed["test"]["ndcg@10"] <= 1 and smoothed["best_epoch"] >= 1
    saved = yaml.safe_load((tmp_path / "toy" / "config.yaml").read_text())
    assert saved["objective"] == "toy" and saved["objectives"] == {"toy": {"label_smoothing": 0.3}}

    # without smoothing the toy is plain CE: the same run as the built-in objective, bit for bit
    BUILT.clear()
    plain = _train(config_file, tmp_path / "toy0", "objectives.toy.label_smoothing=0")
    assert [o.label_smoothing for o in BUILT] == [0.0]
    ce = _train(config_file, tmp_path / "ce", "objective=ce", "objectives={}")
    assert plain["test"] == ce["test"] and plain["val"] == ce["val"]
    assert smoothed["val"] != plain["val"]  # and the setting changes training
    assert "objectives" not in yaml.safe_load((tmp_path / "ce" / "config.yaml").read_text())


def test_config_show_lists_the_objectives_settings(capsys: pytest.CaptureFixture) -> None:
    assert main(["config", "show", "--set", "objective=toy"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["objectives"] == {"toy": {"label_smoothing": 0.0}}  # the defaults, though none was set
    assert main(["config", "show", "--set", "objective=sqn"]) == 0
    assert "objectives" not in yaml.safe_load(capsys.readouterr().out)  # the built-ins read rl:, as before


def test_objective_names_and_sections_are_validated_against_the_registry() -> None:
    assert objective_names() == ["ce", "sqn", "sac", "snqn", "sa2c", "toy"]
    with pytest.raises(UserError, match="unknown objective 'nope'; the registered objectives are ce, sqn, sac, "
                                        "snqn, sa2c, toy"):
        load_config(None, ["objective=nope"])
    with pytest.raises(UserError, match="objectives.toy.label_smoothing"):
        load_config(None, ["objective=toy", "objectives.toy.label_smoothing=1.5"])
    with pytest.raises(UserError, match="objectives.toy.smoothing"):  # a typo is an error, as everywhere
        load_config(None, ["objective=toy", "objectives.toy.smoothing=0.1"])
    with pytest.raises(UserError, match="objectives.sqn: objective 'sqn' has no settings of its own"):
        load_config(None, ["objective=sqn", "objectives.sqn.gamma=0.1"])
    with pytest.raises(UserError, match="unknown objective 'nope'"):
        load_config(None, ["objectives.nope.x=1"])
    # another objective's section may stay in a config (e.g. a grid switching objectives), validated too
    cfg = load_config(None, ["objective=sqn", "objectives.toy.label_smoothing=0.2"])
    assert cfg.objectives == {"toy": {"label_smoothing": 0.2}}
    with pytest.raises(ValueError, match="already registered"):
        register_objective("toy", build_toy, settings=ToySettings)


def test_lea_needs_an_objective_with_a_critic() -> None:
    with pytest.raises(UserError, match=r"lea.\* options need an RL objective \(sqn, sac, snqn, sa2c\)"):
        load_config(None, ["objective=toy", "lea.reward=true", "lea.cache=x"])


def test_rl_imports_neither_env_nor_lea() -> None:
    import subprocess
    import sys

    code = ("import sys, learec.rl, learec.train.trainer; "
            "print(sorted(m for m in sys.modules if m.startswith(('learec.env', 'learec.lea'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    rl = Path(__file__).parent.parent / "learec" / "rl"
    imports = re.compile(r"^\s*(from|import)\s+learec\.(env|lea)\b", re.MULTILINE)  # lazy imports too
    for module in rl.glob("*.py"):
        assert not imports.search(module.read_text()), module
