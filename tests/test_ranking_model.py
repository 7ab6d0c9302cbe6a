"""``RankingModel``: the training-time scorer is what export writes and serving loads, with no objective built."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import learec
from learec.config import load_config
from learec.data.prepared import prepare
from learec.data.registry import raw_dir
from learec.data.synthetic import generate_synthetic_log
from learec.errors import UserError
from learec.models.ranking import RankingModel
from learec.serve.export import export_run
from learec.serve.recommender import Recommender
from learec.train.run import objective_for, train_run

SMALL = ["data.dataset=synthetic", "data.protocol=sqn", "data.history=5", "model.hidden=16", "train.batch_size=64",
         "train.threads=1", "train.progress=false", "train.patience=0", "train.epochs=1", "rl.warmup_steps=5"]
RUNS = {
    "ce": (["objective=ce", "model.backbone=sasrec"], "ce"),
    "snqn": (["objective=snqn", "model.backbone=gru4rec"], "ce"),
    "snqn-qhead": (["objective=snqn", "model.backbone=gru4rec", "rl.rank_by=q"], "q"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ranking")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEAREC_DATA_DIR", str(root / "data"))
        generate_synthetic_log(raw_dir("synthetic"), n_users=80, n_items=30)
        for name, (sets, _) in RUNS.items():
            train_run(load_config(None, [*SMALL, *sets]), root / name)
        yield root


def _training_scorer(run: Path):
    """The scorer training evaluated: the objective's ``scorer()`` with ``best.pt``, as the trainer restores it."""
    cfg = load_config(run / "config.yaml")
    data = prepare(cfg.data, log=lambda *_: None)
    scorer = objective_for(cfg, data).scorer()
    scorer.load_state_dict(torch.load(run / "checkpoints" / "best.pt", weights_only=True, map_location="cpu"))
    return data, scorer.eval()


@pytest.mark.parametrize("name", list(RUNS))
def test_export_ranks_exactly_like_the_training_scorer_without_an_objective(runs, name, monkeypatch):
    data, scorer = _training_scorer(runs / name)
    assert isinstance(scorer, RankingModel) and scorer.head == RUNS[name][1]

    def refuse(*args, **kwargs):
        raise AssertionError("export built an objective or an optimiser")

    monkeypatch.setattr("learec.rl.build_objective", refuse)
    monkeypatch.setattr("learec.train.run.build_objective", refuse)
    monkeypatch.setattr(torch.optim.Adam, "__init__", refuse)
    export_run(runs / name, runs / "exports" / name)
    served = Recommender.from_pretrained(runs / "exports" / name)
    assert isinstance(served.model, RankingModel) and served.model.head == RUNS[name][1]

    rows = np.flatnonzero(np.asarray(data.test.history[:, 0]) != data.n_items)  # non-empty histories
    hist = torch.as_tensor(np.asarray(data.test.history[rows]), dtype=torch.long)
    length = torch.as_tensor(np.asarray(data.test.length[rows]), dtype=torch.long)
    with torch.no_grad():
        expected, got = scorer(hist, length), served.model(hist, length)
    assert torch.equal(got, expected)  # bit for bit, so every ranking is the same
    first = [data.sequences.item_ids[i] for i in hist[0, : int(length[0])].tolist()]
    order = torch.sort(expected[0], descending=True, stable=True).indices[:10].tolist()
    assert [str(item["id"]) for item in served.recommend(first, k=10).items] == [str(data.sequences.item_ids[i])
                                                                                 for i in order]


def test_export_of_the_last_checkpoint(runs):
    """One epoch validated once: ``last.pt``'s ranking network is ``best.pt``'s, read from the objective's state."""
    for name in RUNS:
        best = export_run(runs / name, runs / "best" / name)
        last = export_run(runs / name, runs / "last" / name, checkpoint="last")
        assert last.manifest()["source"]["checkpoint"] == "last"
        for key, value in best.model.state_dict().items():
            assert torch.equal(last.model.state_dict()[key], value), (name, key)


def test_best_pt_of_bare_networks_still_loads():
    """A CE or popularity ``best.pt`` written before the ranking model wrapped them has the bare network's keys."""
    cfg = load_config(None, ["model.backbone=gru4rec", "model.hidden=8", "data.history=4", "model.tie_head=true"])
    old, new = RankingModel.from_config(cfg, 12).eval(), RankingModel.from_config(cfg, 12).eval()
    new.load_state_dict(old.network.state_dict())
    hist, length = torch.tensor([[1, 2, 12, 12], [3, 4, 5, 6]]), torch.tensor([2, 4])
    assert torch.equal(new(hist, length), old(hist, length))
    pop = RankingModel.from_config(load_config(None, ["model.backbone=pop"]), 3)
    pop.load_state_dict({"item_counts": torch.tensor([3.0, 1.0, 7.0])})
    assert pop(hist, length)[0].tolist() == [3.0, 1.0, 7.0] and pop.head == "popularity"


def test_ranking_model_round_trips_and_refuses_what_it_cannot_save(tmp_path):
    cfg = load_config(None, ["objective=sa2c", "model.backbone=caser", "model.hidden=8", "data.history=4",
                             "rl.rank_by=q"])
    model = RankingModel.from_config(cfg, 9).eval()
    model.save_pretrained(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"ranking_model.json", "model.safetensors"}
    again = RankingModel.from_pretrained(tmp_path / "m")
    hist, length = torch.tensor([[1, 2, 9, 9]]), torch.tensor([2])
    assert again.head == "q" and torch.equal(again(hist, length), model(hist, length))
    with pytest.raises(ValueError, match="ranks with head"):
        RankingModel(model.network, "popularity")
    with pytest.raises(ValueError, match="for_serving"):
        RankingModel(model.network, "q").save_pretrained(tmp_path / "x")  # no config: made around a network


def test_model_directories_of_format_1_get_a_clear_error(tmp_path):
    (tmp_path / "learec_model.json").write_text(json.dumps({"format": "learec-recommender", "format_version": 1,
                                                             "n_items": 3}))
    with pytest.raises(UserError, match="format version 1 .*older learec") as err:
        Recommender.from_pretrained(tmp_path)
    assert "learec export" in err.value.hint


def _learec_imports(path: Path) -> set[str]:
    """Every ``learec.*`` module ``path`` imports, at any level (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("learec"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("learec"))
    return found


def test_serving_modules_import_each_other_one_way():
    root = Path(learec.__file__).parent
    modules = {f"learec.serve.{p.stem}": p for p in (root / "serve").glob("*.py") if p.stem != "__init__"}
    modules |= {"learec.models.ranking": root / "models" / "ranking.py",
                "learec.models.qnetwork": root / "models" / "qnetwork.py"}
    graph = {name: _learec_imports(path) & set(modules) for name, path in modules.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    assert not [name for name in graph if reaches(name, name, set())]
    # the ranking model is built without the training code, so serving never needs it
    for name in ("learec.models.ranking", "learec.models.qnetwork"):
        training = ("learec.rl", "learec.train", "learec.serve")
        assert not {m for m in _learec_imports(modules[name]) if m.startswith(training)}
