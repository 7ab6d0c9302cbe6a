"""Item tokens and the LE, on the tiny random Llama: early stopping of textual inversion
(``le.item_tokens.patience``), item tokens tuned during LE training (``le.train.token_lr``), the LE's
learning curve (``le_curve.png``) and the item-token store that LE runs share."""

from __future__ import annotations

import copy
import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from learec.config import load_config
from learec.data.prepared import prepare
from learec.env import item_tokens as item_tokens_mod
from learec.env import run as env_run
from learec.env import token_store
from learec.env.curve import METRIC
from learec.env.item_tokens import train_item_tokens
from learec.env.model import LEModel, weights_hash
from learec.env.report import le_quality
from learec.env.run import LERun
from learec.env.stages import ITEM_TOKENS, LE_TRAINING
from learec.env.train import subset_users, train_le_model
from learec.errors import UserError
from learec.stages import State
from learec.utils import load_torch_file

SMOKE = Path(__file__).parent.parent / "configs" / "le_smoke.yaml"


def smoke_config(*overrides: str):
    return load_config(SMOKE, ["le.progress=false", "le.train.user_fraction=0.25", *overrides])


def test_new_options_at_their_defaults_keep_the_stage_keys() -> None:
    # the keys of tests/test_env_le.py's key test: LE runs made before these options stay current
    data = SimpleNamespace(manifest={"key": "data-key"})
    cfg = load_config(SMOKE)
    assert ITEM_TOKENS.key(cfg, data) == "66e768a76cedbfdf" and LE_TRAINING.key(cfg, data) == "3b70e0e048b19ddc"
    assert "patience" not in cfg.le.item_tokens.key_dump() and "token_lr" not in cfg.le.train.key_dump()
    assert ITEM_TOKENS.key(load_config(SMOKE, ["le.item_tokens.patience=2"]), data) != "66e768a76cedbfdf"
    assert LE_TRAINING.key(load_config(SMOKE, ["le.train.token_lr=0.001"]), data) != "3b70e0e048b19ddc"


# --- 1. item tokens until their description NLL stops improving ------------------------------------------

def test_item_token_patience_stops_early_and_keeps_the_best_tokens(le_data_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    run = LERun(le_data_dir.parent / "run", smoke_config())
    lm, tokenizer = run.lm()
    texts = run.data.sequences.item_text
    base = run.cfg.le.item_tokens
    # the reference: exactly two epochs, no early stopping
    two_epochs, _ = train_item_tokens(lm, tokenizer, texts, base.model_copy(update={"epochs": 2}), seed=0)

    scripted = iter([5.0, 4.0, 3.0, 3.5, 3.2, 1.0])  # before, then epochs 1..: epoch 2 is the best
    monkeypatch.setattr(item_tokens_mod, "description_nll", lambda *args, **kwargs: next(scripted))
    emb, report = train_item_tokens(lm, tokenizer, texts, base.model_copy(update={"epochs": 10, "patience": 2}),
                                    seed=0)
    assert report["epochs_run"] == 4 and report["best_epoch"] == 2  # 2 epochs without a lower NLL: stopped
    assert report["nll_per_token_by_epoch"] == [5.0, 4.0, 3.0, 3.5, 3.2]
    assert report["nll_per_token_before"] == 5.0 and report["nll_per_token_after"] == 3.0
    assert torch.equal(emb, two_epochs)  # the best epoch's tokens, not the last epoch's


def test_item_token_patience_keeps_the_starts_when_no_epoch_improves(le_data_dir: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    run = LERun(le_data_dir.parent / "run", smoke_config())
    lm, tokenizer = run.lm()
    texts = run.data.sequences.item_text
    starts, _ = train_item_tokens(lm, tokenizer, texts, run.cfg.le.item_tokens.model_copy(update={"epochs": 0}))
    monkeypatch.setattr(item_tokens_mod, "description_nll", lambda *args, **kwargs: 2.0)  # never lower
    emb, report = train_item_tokens(lm, tokenizer, texts,
                                    run.cfg.le.item_tokens.model_copy(update={"epochs": 5, "patience": 1}))
    assert (report["epochs_run"], report["best_epoch"]) == (1, 0)
    assert torch.equal(emb, starts)


def test_item_token_patience_with_the_real_nll(le_data_dir: Path) -> None:
    cfg = smoke_config("le.item_tokens.epochs=6", "le.item_tokens.lr=0.05", "le.item_tokens.patience=2")
    emb, report = LERun(le_data_dir.parent / "run", cfg).item_tokens()
    by_epoch = report["nll_per_token_by_epoch"]
    assert len(by_epoch) == report["epochs_run"] + 1 <= 7
    assert report["nll_per_token_after"] == min(by_epoch) == by_epoch[report["best_epoch"]]
    assert report["nll_per_token_after"] < report["nll_per_token_before"]
    plain = LERun(le_data_dir.parent / "plain", smoke_config("le.item_tokens.epochs=6", "le.item_tokens.lr=0.05"))
    _, plain_report = plain.item_tokens()
    assert "nll_per_token_by_epoch" not in plain_report and "best_epoch" not in plain_report  # as before


# --- 2. item tokens tuned during LE training ------------------------------------------------------------

def test_token_lr_tunes_the_tokens_saved_with_the_le_and_labelling_reads_them(le_data_dir: Path) -> None:
    run_dir = le_data_dir.parent / "tuned"
    run = LERun(run_dir, smoke_config("le.train.token_lr=0.01"))
    trained = run.model(train=True)
    textual = run.item_tokens()[0]  # item_tokens.pt keeps the textual-inversion tokens
    assert not torch.equal(trained.item_tokens.detach().cpu(), textual)
    assert torch.equal(load_torch_file(run_dir / "le" / "heads.pt", "")["item_tokens"], trained.item_tokens.detach())

    reloaded = LERun(run_dir)  # what `learec env label` and `env report` build
    loaded = reloaded.model(train=False)
    assert torch.equal(loaded.item_tokens, trained.item_tokens) and weights_hash(loaded) == weights_hash(trained)
    cache = reloaded.label()
    assert cache.manifest["fingerprint"]["le_weights"] == weights_hash(trained)  # labelled by the tuned LE
    report = reloaded.report()
    assert report["item_token_tuning"]["mean_relative_change"] > 0 and report["item_token_tuning"]["moved_share"] > 0

    frozen_dir = le_data_dir.parent / "frozen"
    frozen = LERun(frozen_dir, smoke_config()).model(train=True)
    assert not isinstance(frozen.item_tokens, torch.nn.Parameter) and not frozen.token_parameters()
    assert torch.equal(frozen.item_tokens.cpu(), textual)  # bit-identical to item_tokens.pt (reused from the store)
    assert "item_tokens" not in load_torch_file(frozen_dir / "le" / "heads.pt", "")
    assert "item_token_tuning" not in LERun(frozen_dir).report()


def test_tuned_tokens_missing_from_the_le_files_are_refused(le_data_dir: Path) -> None:
    run_dir = le_data_dir.parent / "tuned"
    LERun(run_dir, smoke_config("le.train.token_lr=0.01")).model(train=True)
    heads = load_torch_file(run_dir / "le" / "heads.pt", "")
    del heads["item_tokens"]
    torch.save(heads, run_dir / "le" / "heads.pt")
    with pytest.raises(UserError, match="lacks item_tokens"):
        LERun(run_dir).model(train=False)


@pytest.mark.parametrize("mode", ["epochs", "steps"])
def test_le_training_with_token_lr_resumes_to_the_same_weights(le_data_dir: Path, tmp_path: Path, mode: str) -> None:
    budget = "steps" if mode == "steps" else "epochs"
    cfg = smoke_config("le.train.token_lr=0.01", *(["le.train.eval_every=2"] if mode == "steps" else []))
    run = LERun(tmp_path / "run", cfg)
    emb, _ = run.item_tokens()
    lm, tokenizer = run.lm()
    users = subset_users(run.data.train.user, 0.25, 0)
    scores = iter([0.1, 0.5, 0.3, 0.7] * 4)

    def trained(out: Path, budgets: list[int]) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = LEModel(copy.deepcopy(lm), tokenizer, emb, cfg.le.model, tune_tokens=True)
        for n in budgets:  # a later call continues from train_state.pt, as after a kill
            train_le_model(model, run.data.sequences, users, cfg.le.train.model_copy(update={budget: n}),
                           cfg.le.model.window, out, seed=0, validate=(lambda _: next(scores)) if mode == "steps" else None)
        return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora" in k or not k.startswith("lm.")}

    straight = trained(tmp_path / "a", [4 if mode == "steps" else 3])
    scores = iter([0.1, 0.5, 0.3, 0.7] * 4)
    resumed = trained(tmp_path / "b", [2, 4] if mode == "steps" else [1, 3])
    assert "item_tokens" in straight and not torch.equal(straight["item_tokens"].cpu(), emb)  # the tokens moved
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


# --- 3. the learning curve ------------------------------------------------------------------------------

def test_le_learning_curve_is_saved_and_matches_the_logged_checks(le_data_dir: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="learec")
    run_dir = le_data_dir.parent / "run"
    run = LERun(run_dir, smoke_config("le.train.steps=6", "le.train.eval_every=2", "le.train.batch_users=3"))
    model = run.model(train=True)
    curve = json.loads((run_dir / "le" / "curve.json").read_text())
    done = json.loads((run_dir / "le" / "done.json").read_text())
    assert curve["metric"] == METRIC and [p["step"] for p in curve["points"]] == [2, 4, 6]
    assert curve["points"] == [{"step": r["step"], METRIC: r[METRIC]} for r in done["history"]]
    logged = [(int(step), float(value)) for step, value in
              re.findall(rf"LE step (\d+): .*{re.escape(METRIC)} ([0-9.]+)", caplog.text)]
    assert [(p["step"], round(p[METRIC], 4)) for p in curve["points"]] == logged
    assert (run_dir / "le_curve.png").stat().st_size > 1000
    # popularity at the same validation points as the curve's checks
    chosen = run.selection_users()
    others = sorted(set(run.data.val.user.tolist()) - set(chosen.tolist()))
    metrics, _ = le_quality(model, run.data.sequences, run.data.val, run.data.split.item_counts, len(chosen),
                            run.cfg.le.model.window, exclude_users=others)
    assert curve["users"] == len(chosen) and curve["popularity_ndcg@10"] == pytest.approx(metrics["pop_ndcg@10"])


def test_no_curve_without_validation_checks(le_data_dir: Path) -> None:
    run_dir = le_data_dir.parent / "run"
    LERun(run_dir, smoke_config("le.train.steps=2")).model(train=True)
    assert not (run_dir / "le" / "curve.json").exists() and not (run_dir / "le_curve.png").exists()


# --- 4. the item-token store shared by LE runs ----------------------------------------------------------

class TrainerSpy:
    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.calls = 0
        real = env_run.train_item_tokens

        def spy(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(env_run, "train_item_tokens", spy)


def test_le_runs_share_item_tokens_through_the_store(le_data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="learec")
    spy = TrainerSpy(monkeypatch)
    first = LERun(le_data_dir.parent / "a", smoke_config())
    emb, report = first.item_tokens()
    assert spy.calls == 1
    key = ITEM_TOKENS.store_key(first.cfg, first.data)
    stored = token_store.store_path(key)
    assert stored.is_relative_to(le_data_dir) and stored.is_file()  # under $LEAREC_DATA_DIR, never the real home

    # another LE training setting: a new run directory, the same item tokens
    cfg = smoke_config("le.train.epochs=1")
    second_dir = le_data_dir.parent / "b"
    status = ITEM_TOKENS.status(second_dir, cfg, first.data)
    assert (status.state, status.detail) == (State.TO_MAKE, "to reuse from the item-token store")
    caplog.clear()
    second = LERun(second_dir, cfg)
    second.model(train=True)
    assert spy.calls == 1 and f"item tokens: reused from {stored}" in caplog.text
    reused, reused_report = second.item_tokens()
    assert torch.equal(reused, emb) and reused_report == report
    assert ITEM_TOKENS.status(second_dir, cfg, second.data).current  # stamped with this run's key

    # data that differ where the items do not (history length) share them too; other items would not
    history = smoke_config("data.history=8")
    assert ITEM_TOKENS.store_key(history, prepare(history.data, log=lambda *_: None)) == key

    # a changed item-token setting is other tokens: trained, and stored beside the first
    LERun(le_data_dir.parent / "c", smoke_config("le.item_tokens.lr=0.02")).item_tokens()
    assert spy.calls == 2 and len(list(token_store.store_root().iterdir())) == 2


def test_item_tokens_made_before_the_store_enter_it(le_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = LERun(le_data_dir.parent / "a", smoke_config())
    emb, _ = first.item_tokens()
    stored = token_store.store_path(ITEM_TOKENS.store_key(first.cfg, first.data))
    stored.unlink()  # as for a run directory made before the store existed
    LERun(le_data_dir.parent / "a").item_tokens()  # current: nothing trained, the store is filled
    spy = TrainerSpy(monkeypatch)
    reused, _ = LERun(le_data_dir.parent / "b", smoke_config("le.train.epochs=1")).item_tokens()
    assert stored.is_file() and spy.calls == 0 and torch.equal(reused, emb)


def test_a_stale_run_dir_takes_the_stored_tokens(le_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = le_data_dir.parent / "a"
    LERun(le_data_dir.parent / "other", smoke_config("le.item_tokens.lr=0.02")).item_tokens()
    LERun(run_dir, smoke_config()).item_tokens()
    spy = TrainerSpy(monkeypatch)
    cfg = smoke_config("le.item_tokens.lr=0.02")
    data = prepare(cfg.data, log=lambda *_: None)
    status = ITEM_TOKENS.status(run_dir, cfg, data)
    assert (status.state, status.detail) == (State.STALE, "made from other inputs: reuse from the item-token store")
    LERun(run_dir, cfg, replace_config=True).item_tokens()
    assert spy.calls == 0 and ITEM_TOKENS.status(run_dir, cfg, data).current


def test_a_bad_store_entry_is_refused_naming_it(le_data_dir: Path) -> None:
    first = LERun(le_data_dir.parent / "a", smoke_config())
    emb, report = first.item_tokens()
    key = ITEM_TOKENS.store_key(first.cfg, first.data)
    token_store.put(key, emb[:, :-1], report)  # another LM's width
    with pytest.raises(UserError, match=r"shape \(\d+, \d+\)") as err:
        LERun(le_data_dir.parent / "b", smoke_config()).item_tokens()
    assert str(token_store.store_path(key).parent) in err.value.hint
    token_store.store_path(key).write_bytes(b"not a torch file")
    with pytest.raises(UserError, match=re.escape(str(token_store.store_path(key)))):
        LERun(le_data_dir.parent / "c", smoke_config()).item_tokens()
