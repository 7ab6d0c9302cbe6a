"""The LE on a tiny random Llama: item tokens, LE training, the labelling cache (vs. a naive per-prompt
computation), staleness/corruption/resume of the cache, the quality report and the CLI."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from learec.cli import main
from learec.config import RESULT_NEUTRAL_SETTINGS, load_config
from learec.env.batches import uniform_negatives, unseen_items, user_items
from learec.env.item_tokens import initial_item_embeddings, tokenize_descriptions
from learec.env.label import SHARDS, cache_problem, load_label_cache
from learec.env.model import LEModel, log_popularity_prior, plan_segments, weights_hash
from learec.env.packed import decoder_of
from learec.env.report import le_quality, mean_pairwise_cosine
from learec.env.run import LERun
from learec.env.stages import ITEM_TOKENS, LE_TRAINING
from learec.env import train as le_train
from learec.env.train import lr_factor, subset_users, train_le_model
from learec.errors import UserError
from learec.usage import read_usage

SMOKE = Path(__file__).parent.parent / "configs" / "le_smoke.yaml"


def smoke_config(*overrides: str):
    return load_config(SMOKE, ["le.progress=false", "le.train.user_fraction=0.25", *overrides])


def test_plan_segments_cover_targets_once_within_window() -> None:
    positions = np.array([0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 30])
    segments = plan_segments(3, positions, window=8)
    covered = np.concatenate([positions[(positions >= s.first) & (positions < s.end)] for s in segments])
    assert sorted(covered.tolist()) == positions.tolist()  # every target exactly once
    for s in segments:
        assert s.end - s.start <= 8 and s.start <= s.first < s.end and s.user == 3
        assert s.first - s.start >= min(4, s.first)  # at least window // 2 items of history, or all of it


def test_negative_samplers() -> None:
    rng = np.random.default_rng(0)
    pos = rng.integers(0, 7, 5000)
    negs = uniform_negatives(rng, pos, 6, 7)
    assert (negs != pos[:, None]).all() and negs.min() == 0 and negs.max() == 6
    seen = np.array([0, 2, 3])
    assert not np.isin(unseen_items(rng, seen, 1000, 5), seen).any()


def test_cut_descriptions_are_warned_about(le_data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, tokenizer = LERun(le_data_dir.parent / "run", smoke_config()).lm()
    texts = [" is a short one.", " is " + "a very long description of an item " * 10 + "."]
    full = tokenize_descriptions(tokenizer, texts, 10_000)
    with caplog.at_level("WARNING", logger="learec.env"):
        cut = tokenize_descriptions(tokenizer, texts, len(full[0]))
    assert cut[0] == full[0] and cut[1] == full[1][: len(full[0])]
    assert "1 of 2 item descriptions (50%)" in caplog.text and "max_text_tokens" in caplog.text


def test_item_tokens_start_at_mean_of_text_and_training_lowers_nll(le_data_dir: Path) -> None:
    cfg = smoke_config("le.item_tokens.epochs=8", "le.item_tokens.lr=0.05")
    run = LERun(le_data_dir.parent / "run", cfg)
    lm, tokenizer = run.lm()
    texts = run.data.sequences.item_text
    ids = tokenize_descriptions(tokenizer, [f" is {texts[0]}."], 48)[0]
    init = initial_item_embeddings(lm, [ids])[0]
    expected = torch.stack([lm.get_input_embeddings().weight[i] for i in ids]).mean(0)
    torch.testing.assert_close(init, expected.float())
    emb, report = run.item_tokens()
    assert emb.shape == (run.data.n_items, lm.config.hidden_size)
    # a random tiny LM barely listens to one input token; the drop is small but must be there
    assert report["nll_per_token_after"] < report["nll_per_token_before"] - 0.005, report
    # the LM itself is untouched: only the item embeddings trained
    fresh, _ = LERun(le_data_dir.parent / "run2", cfg).lm()
    for (name, a), (_, b) in zip(lm.named_parameters(), fresh.named_parameters()):
        assert torch.equal(a, b), name


def test_item_tokens_init_text_starts_at_mean_of_the_item_text_alone(le_data_dir: Path) -> None:
    cfg = smoke_config("le.item_tokens.epochs=0", "le.item_tokens.init=text")
    run = LERun(le_data_dir.parent / "run", cfg)
    lm, tokenizer = run.lm()
    texts = run.data.sequences.item_text
    emb, _ = run.item_tokens()  # no epochs: the starts themselves
    table = lm.get_input_embeddings().weight.detach().float()
    for i in (0, len(texts) - 1):
        ids = tokenizer(texts[i], add_special_tokens=False)["input_ids"][:48]
        torch.testing.assert_close(emb[i], table[torch.as_tensor(ids)].mean(0))
    described, _ = LERun(le_data_dir.parent / "run-describe", smoke_config("le.item_tokens.epochs=0")).item_tokens()
    assert not torch.allclose(emb[0], described[0])  # describe: the template words are in the mean


def test_le_training_lowers_losses(le_data_dir: Path, tmp_path: Path) -> None:
    # distinct random item tokens: the tiny char-level LM gives near-identical textual-inversion starts,
    # and this test is about the LE losses, not about textual inversion
    cfg = smoke_config("le.train.lr=0.01", "le.train.batch_users=4")
    run = LERun(tmp_path / "run", cfg)
    lm, tokenizer = run.lm()
    torch.manual_seed(0)
    model = LEModel(lm, tokenizer, torch.randn(run.data.n_items, lm.config.hidden_size), cfg.le.model)
    users = subset_users(run.data.train.user, 1.0, 0)
    train_cfg = cfg.le.train.model_copy(update={"epochs": 12})
    history = train_le_model(model, run.data.sequences, users, train_cfg, cfg.le.model.window, tmp_path / "le", 0)
    first, last = history[0], history[-1]
    assert last["state_loss"] < first["state_loss"] - 0.1, history
    assert last["reward_loss"] < first["reward_loss"] - 0.02, history


KEY_OPTIONS = ("le.model.key_bias=false", "le.model.center_keys=true", "le.model.item_residual=true",
               "le.train.learn_temperature=true")


@pytest.mark.parametrize("options", [(), KEY_OPTIONS], ids=["default", "key-options"])
def test_le_training_resumes_from_its_last_epoch(le_data_dir: Path, tmp_path: Path, options: tuple[str, ...]) -> None:
    cfg = smoke_config(*options)
    temperature = cfg.le.train.temperature if cfg.le.train.learn_temperature else None
    run = LERun(tmp_path / "run", cfg)
    emb, _ = run.item_tokens()
    lm, tokenizer = run.lm()
    users = subset_users(run.data.train.user, 0.25, 0)

    def trained(out: Path, epochs_sequence: list[int]) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = LEModel(copy.deepcopy(lm), tokenizer, emb, cfg.le.model, learned_temperature=temperature)
        for epochs in epochs_sequence:  # a later call continues from train_state.pt, as after a kill
            train_le_model(model, run.data.sequences, users, cfg.le.train.model_copy(update={"epochs": epochs}),
                           cfg.le.model.window, out, seed=0)
        return {k: v.clone() for k, v in model.state_dict().items() if "lora" in k or not k.startswith("lm.")}

    straight = trained(tmp_path / "a", [3])
    resumed = trained(tmp_path / "b", [1, 3])
    assert straight.keys() == resumed.keys() and any("lora" in k for k in straight)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


@torch.no_grad()
def _naive_labels(run: LERun, model, user: int, position: int, negatives: np.ndarray,
                  start: int = 0) -> dict[str, np.ndarray]:
    """One forward per prompt: [prompt | x_start..x_<p] -> state; [.. | x_p] -> reward; [.. | neg] -> reward."""
    seq = np.asarray(run.data.sequences.items[run.data.sequences.offsets[user]:run.data.sequences.offsets[user + 1]])
    decoder = decoder_of(model.lm)
    prompt = decoder.get_input_embeddings()(model.prompt_ids)
    tokens = model.item_tokens

    def last_hidden(item_ids: list[int]) -> torch.Tensor:
        x = torch.cat([prompt, tokens[torch.as_tensor(item_ids, dtype=torch.long)]])[None]
        return decoder(inputs_embeds=x, position_ids=torch.arange(x.shape[1])[None]).last_hidden_state[0, -1]

    hist = seq[start:position].tolist()
    state = model.states(last_hidden(hist))
    reward = model.rewards(last_hidden(hist + [int(seq[position])]))
    neg_rewards = torch.stack([model.rewards(last_hidden(hist + [int(n)])) for n in negatives])
    return {"state": state.numpy(), "reward": reward.numpy(), "neg_rewards": neg_rewards.numpy()}


@pytest.mark.parametrize("window", [64, 6])
def test_labels_equal_naive_per_prompt_forwards(le_data_dir: Path, window: int) -> None:
    # window 64 > every sequence: each user is one row, the naive prompt holds the whole history; with
    # window 6 a user spans several rows, each starting part-way through the history (plan_segments)
    cfg = smoke_config(f"le.model.window={window}", "le.train.epochs=1", "le.label.negatives=3",
                       "le.label.aug_candidates=5", "le.label.aug_k=3", "le.label.batch_rows=3")
    run = LERun(le_data_dir.parent / "run", cfg)
    run.model()
    cache = run.label()
    model = run.model(train=False)
    train = run.data.train
    seqs = run.data.sequences
    rng = np.random.default_rng(0)
    def row_start(i: int) -> int:
        user = int(train.user[i])
        positions = np.asarray(train.position)[np.asarray(train.user) == user]
        seg = next(s for s in plan_segments(user, positions, window) if s.first <= int(train.position[i]) < s.end)
        return seg.start

    starts = [row_start(i) for i in range(len(train))]
    assert (window == 64) == (max(starts) == 0)
    for i in rng.choice(len(train), size=12, replace=False):
        user, pos = int(train.user[i]), int(train.position[i])
        naive = _naive_labels(run, model, user, pos, np.asarray(cache["neg_items"][i]), starts[i])
        np.testing.assert_allclose(cache["state"][i].astype(np.float32), naive["state"], atol=2e-3, rtol=2e-3)
        np.testing.assert_allclose(cache["reward"][i], naive["reward"], atol=1e-4)
        np.testing.assert_allclose(cache["neg_rewards"][i], naive["neg_rewards"], atol=1e-4)
    # negatives never equal the logged action; augmented actions avoid the history and the logged action,
    # come sorted by reward, and their rewards are the reward model's
    assert (np.asarray(cache["neg_items"]) != np.asarray(train.action)[:, None]).all()
    aug, aug_r = np.asarray(cache["aug_items"]), np.asarray(cache["aug_rewards"])
    assert aug.shape == (len(train), 3) and (aug >= 0).all() and (np.diff(aug_r, axis=1) <= 0).all()
    for i in range(len(train)):
        user, pos = int(train.user[i]), int(train.position[i])
        history = seqs.items[seqs.offsets[user]:seqs.offsets[user] + pos + 1]  # the full history, not the row's
        assert not np.isin(aug[i], history).any(), (i, aug[i], history)
        assert len(set(aug[i].tolist())) == 3
    for i in rng.choice(len(train), size=3, replace=False):
        user, pos = int(train.user[i]), int(train.position[i])
        naive = _naive_labels(run, model, user, pos, aug[i], starts[i])
        np.testing.assert_allclose(aug_r[i], naive["neg_rewards"], atol=1e-4)


def test_eval_states_equal_naive_forwards_and_are_reused(le_data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    # window 6: a user's evaluation events span several rows, each starting part-way through the history
    cfg = smoke_config("le.model.window=6", "le.train.epochs=1", "le.label.batch_rows=3")
    run = LERun(le_data_dir.parent / "run", cfg)
    run.model()
    states = run.eval_states()
    model = run.model(train=False)
    rng = np.random.default_rng(1)
    for split in ("val", "test"):
        data = getattr(run.data, split)
        assert states[split].shape == (len(data), model.cfg.state_dim)
        users, positions = np.asarray(data.user), np.asarray(data.position)
        for i in rng.choice(len(data), size=6, replace=False):
            user, pos = int(users[i]), int(positions[i])
            mine = np.sort(positions[users == user])
            start = next(s for s in plan_segments(user, mine, 6) if s.first <= pos < s.end).start
            naive = _naive_labels(run, model, user, pos, np.array([0]), start)
            np.testing.assert_allclose(states[split][i].astype(np.float32), naive["state"], atol=2e-3, rtol=2e-3)
    # complete and current: reused; a corrupt array: rebuilt, with the same content
    val = np.array(states["val"])
    path = run.run_dir / "eval_states" / "val.npy"
    with caplog.at_level("INFO", logger="learec"):
        run.eval_states()
    assert "reused" in caplog.text
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert cache_problem(path.parent).startswith("corrupt")
    assert np.array_equal(np.asarray(run.eval_states()["val"]), val)


def _arrays(cache) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in cache.arrays.items()}


def test_label_cache_resumes_detects_stale_and_corrupt(le_data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = smoke_config("le.train.epochs=1", "le.label.users_per_shard=7", "le.label.pca_dim=8")
    first = LERun(le_data_dir.parent / "whole", cfg)
    first.model()
    whole = _arrays(first.label())
    assert whole["state_pca"].shape == (len(whole["reward"]), 8)

    # interrupted after one shard of users, then resumed by a fresh process-like object
    run = LERun(le_data_dir.parent / "killed", cfg)
    run.model()
    assert run.label(stop_after_shards=1) is None
    assert cache_problem(run.run_dir / "label") == "incomplete"
    with pytest.raises(UserError, match="incomplete"):
        load_label_cache(run.run_dir / "label")
    # a shard truncated by a crash (or the disk) is labelled again, not fatal
    shard = next((run.run_dir / "label" / SHARDS).glob("*.npz"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    resumed = LERun(le_data_dir.parent / "killed").label()
    for name, arr in whole.items():
        assert np.array_equal(np.asarray(resumed[name]), arr), name
    assert "cannot be read" in caplog.text

    # a corrupt array is detected and rebuilt, never used
    reward = run.run_dir / "label" / "reward.npy"
    raw = bytearray(reward.read_bytes())
    raw[-1] ^= 0xFF
    reward.write_bytes(bytes(raw))
    assert cache_problem(run.run_dir / "label").startswith("corrupt")
    assert cache_problem(run.run_dir / "label", verify=False) is None  # the manifest alone looks whole
    rebuilt = LERun(le_data_dir.parent / "killed").label()
    assert np.array_equal(np.asarray(rebuilt["reward"]), whole["reward"])

    # other labelling settings make the cache stale: refused when loaded with the new fingerprint, rebuilt
    stale_run = LERun(le_data_dir.parent / "killed")
    fingerprint = stale_run.label_fingerprint(stale_run.model(train=False))
    fingerprint["label"] = {**fingerprint["label"], "seed": 1}
    with pytest.raises(UserError, match="stale"):
        load_label_cache(run.run_dir / "label", fingerprint)


def test_cli_env_train_label_report(le_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "le-run"
    base = ["--config", str(SMOKE), "--set", "le.progress=false", "--run-dir", str(run_dir)]
    assert main(["env", "train", *base]) == 0
    assert main(["env", "label", "--run-dir", str(run_dir)]) == 0
    assert not (run_dir / "eval_states").exists()  # only on request
    assert main(["env", "label", "--run-dir", str(run_dir), "--eval-states"]) == 0
    assert cache_problem(run_dir / "eval_states") is None
    assert main(["env", "report", "--run-dir", str(run_dir)]) == 0
    report = json.loads((run_dir / "le_report.json").read_text())
    for key in ("state_ndcg@10", "pop_ndcg@10", "reward_pairwise_acc"):
        assert 0.0 <= report[key] <= 1.0
    assert 0.0 <= report["augmentation"]["aug_future@1"] <= 1.0  # the labels exist: their proposals are rated
    assert set(report["augmentation_diversity"]) == {"distinct@1", "top10_share@1", "distinct@2", "top10_share@2"}
    assert -1.0 <= report["key_mean_cosine"] <= 1.0 and -1.0 <= report["state_mean_cosine"] <= 1.0
    # states at the users' last points: distinct histories (a first sqn point has none, so 1.0 exactly)
    assert report["state_mean_cosine"] < 0.9999
    assert report["key_mean_norm"] >= 0 and report["key_specific_norm"] >= 0
    # sqn: validation users are not training users, so none is in the LE's training subset
    assert report["state_ndcg@10_le_users"] is None and report["state_ndcg@10_other_users"] is not None
    assert (run_dir / "le_report.png").stat().st_size > 1000
    assert "state_ndcg@10" in (printed := capsys.readouterr().out) and "key_mean_cosine" in printed
    # the training time reaches done.json and the report; the compare table reads this run's own figures
    assert report["le_train_seconds"] == json.loads((run_dir / "le" / "done.json").read_text())["train_seconds"] > 0
    assert main(["env", "compare", str(run_dir), "--k", "2", "--out", str(tmp_path / "compare.json")]) == 0
    row = json.loads((tmp_path / "compare.json").read_text())[0]
    assert row["state_ndcg@10"] == report["state_ndcg@10"] and row["reward_acc"] == report["reward_pairwise_acc"]
    assert row["distinct@2"] == report["augmentation_diversity"]["distinct@2"] and row["aug_exact"] is True
    assert f"| {run_dir} | " in capsys.readouterr().out
    # a second train is a no-op (the stage is valid); a different config for the same dir is refused
    mtime = (run_dir / "le" / "heads.pt").stat().st_mtime_ns
    assert main(["env", "train", *base]) == 0
    assert (run_dir / "le" / "heads.pt").stat().st_mtime_ns == mtime
    # each stage that did work recorded its wall time and peak memory once; the no-op train and the labelling
    # that found its cache complete (the --eval-states call) recorded nothing (learec.usage)
    recorded = {u.stage: u for u in read_usage(run_dir)}
    assert set(recorded) == {"item tokens", "LE training", "labelling", "eval states", "LE report"}
    assert all(u.invocations == 1 and u.completed and u.seconds > 0 and u.peak_mib > 0 for u in recorded.values())
    assert recorded["LE training"].seconds >= report["le_train_seconds"]  # the loop is part of the stage
    assert main(["usage", str(run_dir)]) == 0
    assert "| LE training | 1 |" in capsys.readouterr().out
    assert main(["env", "train", *base, "--set", "le.train.epochs=9"]) == 2
    assert "differs" in capsys.readouterr().err
    assert main(["env", "label", "--run-dir", str(tmp_path / "nowhere")]) == 2


def test_env_report_takes_its_own_settings_without_making_earlier_stages_stale(
        le_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from learec.env.stages import le_status

    run_dir = tmp_path / "le-run"
    base = ["--config", str(SMOKE), "--set", "le.progress=false", "--run-dir", str(run_dir)]
    assert main(["env", "train", *base]) == 0
    assert main(["env", "label", "--run-dir", str(run_dir)]) == 0
    saved = (run_dir / "config.yaml").read_text()
    made = {p: p.stat().st_mtime_ns for p in (run_dir / "item_tokens.pt", run_dir / "le" / "heads.pt",
                                              run_dir / "label" / "manifest.json")}
    assert main(["env", "report", "--run-dir", str(run_dir), "--set", "le.report.val_users=3",
                 "--set", "le.threads=1"]) == 0  # a result-neutral setting is the report's to change too
    report = json.loads((run_dir / "le_report.json").read_text())
    assert report["val_users"] == 3 and report["report_settings"] == {"val_users": 3}
    # nothing before the report was redone, and the run's config keeps its own settings
    assert {p: p.stat().st_mtime_ns for p in made} == made
    assert (run_dir / "config.yaml").read_text() == saved
    assert main(["env", "train", *base]) == 0 and main(["env", "label", "--run-dir", str(run_dir)]) == 0
    assert {p: p.stat().st_mtime_ns for p in made} == made
    # by the run's own settings the item tokens, LE and labels are current and the report (other settings) is not
    cfg = load_config(run_dir / "config.yaml")
    status = {s.stage: s.state.value for s in le_status(cfg, run_dir, LERun(run_dir).data)}
    assert status == {"item tokens": "current", "LE training": "current", "labelling": "current",
                      "LE report": "stale"}
    capsys.readouterr()
    # a setting that made the LE or its labels is no report setting
    assert main(["env", "report", "--run-dir", str(run_dir), "--set", "le.train.epochs=9"]) == 2
    assert "only le.report.* keys" in capsys.readouterr().err
    assert main(["env", "report", "--run-dir", str(run_dir), "--set", "le.report.val_users=0"]) == 2


@pytest.mark.slow
def test_real_default_lm_end_to_end_on_a_handful_of_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fetched SmolLM2-135M through item tokens, LE training, labelling and the report (a few users)."""
    from learec.env.lm import DEFAULT_LLM_DIR, _is_complete

    lm_dir = DEFAULT_LLM_DIR()
    if not _is_complete(lm_dir):
        pytest.skip("the default LLM is not fetched (`learec env fetch`, part of `make setup`)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    titles = ["Toy Story", "Heat", "Casino", "Babe", "Fargo", "Alien", "Jaws", "Rocky", "Psycho", "Vertigo"]
    raw = tmp_path / "movies"
    raw.mkdir()
    lines = ["user,item,timestamp"]
    for user in range(8):
        for t, item in enumerate(rng.choice(10, size=7, replace=False)):
            lines.append(f"u{user},{item},{1000 * user + t}")
    (raw / "interactions.csv").write_text("\n".join(lines) + "\n")
    (raw / "items.csv").write_text("item,title\n" + "".join(f"{i},{t}\n" for i, t in enumerate(titles)))
    cfg = load_config(None, [f"data.raw={raw}", "data.dataset=tinymovies", "data.protocol=sqn",
                             "data.split=[0.5, 0.25, 0.25]", "data.text_template='{title}'", "le.progress=false",
                             "le.item_tokens.epochs=4", "le.item_tokens.batch_size=4", "le.item_tokens.lr=0.003",
                             "le.item_tokens.eval_items=10", "le.train.user_fraction=0.5",
                             "le.train.epochs=1", "le.label.negatives=2", "le.label.aug_candidates=3",
                             "le.label.aug_k=2", "le.report.val_users=4", f"le.lm={lm_dir}"])
    monkeypatch.setenv("LEAREC_DATA_DIR", str(tmp_path / "data"))
    run = LERun(tmp_path / "run", cfg)
    run.model()
    cache = run.label()
    report = run.report()
    assert len(cache) == len(run.data.train) > 0
    for name in ("state", "reward", "neg_rewards", "aug_rewards"):
        assert np.isfinite(np.asarray(cache[name], dtype=np.float32)).all(), name
    assert report["item_tokens"]["nll_per_token_after"] < report["item_tokens"]["nll_per_token_before"]
    assert 0 <= report["reward_pairwise_acc"] <= 1 and report["points"] > 0


def test_augmentation_quality_equals_a_naive_loop() -> None:
    from learec.data.preprocess import Sequences
    from learec.data.splits import Transitions
    from learec.env.report import augmentation_quality

    rng = np.random.default_rng(3)
    n_items, lengths = 12, [6, 2, 9, 4]
    items = np.concatenate([rng.integers(0, n_items, n) for n in lengths]).astype(np.int32)  # with repeats
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    seqs = Sequences(items, np.zeros(len(items), np.int8), np.zeros(len(items)), offsets,
                     [str(u) for u in range(len(lengths))], [str(i) for i in range(n_items)], ["click"],
                     [""] * n_items)
    user = np.concatenate([np.full(n - 1, u) for u, n in enumerate(lengths)]).astype(np.int32)
    position = np.concatenate([np.arange(1, n) for n in lengths]).astype(np.int32)
    n = len(user)
    zeros = np.zeros(n, np.int32)
    train = Transitions(np.zeros((n, 3), np.int32), zeros, zeros, zeros.astype(np.int8), np.zeros((n, 3), np.int32),
                        zeros, np.zeros(n, bool), user, position)
    aug = rng.integers(-1, n_items, (n, 4))  # -1: an empty slot
    counts = rng.integers(0, 5, n_items).astype(float)  # ties: the stable order decides

    got = augmentation_quality(seqs, train, aug, counts, ks=(1, 3, 5))
    assert "aug_future@5" not in got  # wider than the cache
    order = sorted(range(n_items), key=lambda i: (-counts[i], i))
    for k in (1, 3):
        aug_hits, pop_hits = [], []
        for u, p, row in zip(user, position, aug):
            seq = list(items[offsets[u]:offsets[u + 1]])
            seen, future = set(seq[: p + 1]), set(seq[p + 1:])
            aug_hits += [a in future for a in row[:k]]
            popular = [i for i in order if i not in seen][:k]
            pop_hits += [i in future for i in popular] + [False] * (k - len(popular))
        assert got[f"aug_future@{k}"] == pytest.approx(np.mean(aug_hits))
        assert got[f"pop_future@{k}"] == pytest.approx(np.mean(pop_hits))
    assert got["pop_future@3"] > 0  # the example exercises hits


def test_le_keys_of_configs_without_the_new_options_are_unchanged() -> None:
    # the keys main computed before key_bias/center_keys/item_residual/learn_temperature/init existed:
    # runs made then stay current while those options hold their defaults
    data = SimpleNamespace(manifest={"key": "data-key"})
    for cfg, tokens_key, training_key in ((load_config(None), "9dacc582c086204d", "ed1c61cb9f34666f"),
                                          (load_config(SMOKE), "66e768a76cedbfdf", "3b70e0e048b19ddc")):
        assert ITEM_TOKENS.key(cfg, data) == tokens_key and LE_TRAINING.key(cfg, data) == training_key
    old_model_fields = {"prompt", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "state_dim", "window"}
    assert set(load_config(None).le.model.key_dump(mode="json")) == old_model_fields  # what weights_hash reads
    for option in ("le.model.key_bias=false", "le.model.center_keys=true", "le.model.item_residual=true",
                   "le.train.learn_temperature=true", "le.train.steps=5", "le.train.windows_per_user=2",
                   "le.train.eval_every=2", "le.train.eval_users=7"):
        assert LE_TRAINING.key(load_config(SMOKE, [option]), data) != "3b70e0e048b19ddc", option
    assert ITEM_TOKENS.key(load_config(SMOKE, ["le.item_tokens.init=text"]), data) != "66e768a76cedbfdf"


def test_key_options_keep_item_keys_apart(le_data_dir: Path, tmp_path: Path) -> None:
    # Collapse guard. The tiny char-level LM gives near-identical textual-inversion starts (mean pairwise
    # cosine ~0.88), so item_proj's bias, shared by every key, makes the keys collinear: measured 1.000
    # before and after 3 epochs. Centred keys of n items have a mean pairwise cosine near -1/(n-1) (-0.034
    # for the 30 items here, measured -0.03); 0.5 leaves a wide margin on both sides.
    run = LERun(tmp_path / "run", smoke_config())
    emb, _ = run.item_tokens()
    lm, tokenizer = run.lm()
    users = subset_users(run.data.train.user, 1.0, 0)

    def key_cosine(*overrides: str) -> tuple[float, LEModel]:
        cfg = smoke_config("le.train.epochs=3", *overrides)
        torch.manual_seed(0)
        temperature = cfg.le.train.temperature if cfg.le.train.learn_temperature else None
        model = LEModel(copy.deepcopy(lm), tokenizer, emb, cfg.le.model, learned_temperature=temperature)
        train_le_model(model, run.data.sequences, users, cfg.le.train, cfg.le.model.window,
                       tmp_path / f"le{len(overrides)}", 0)
        with torch.no_grad():
            return mean_pairwise_cosine(model.item_keys()), model

    off, plain = key_cosine()
    on, model = key_cosine(*KEY_OPTIONS)
    assert off > 0.99 and on < 0.5 and on < off, (off, on)
    assert plain.item_proj.bias is not None and model.item_proj.bias is None
    assert model.item_residual.abs().sum() > 0  # the residual trained
    assert model.log_temperature.requires_grad and "log_temperature" in dict(model.named_parameters())


def test_an_le_with_key_options_saves_and_loads_its_extra_weights(le_data_dir: Path, tmp_path: Path) -> None:
    run = LERun(tmp_path / "run", smoke_config(*KEY_OPTIONS))
    trained = run.model(train=True)
    loaded = LERun(tmp_path / "run").model(train=False)  # from le/ (adapters + heads.pt)
    with torch.no_grad():
        torch.testing.assert_close(loaded.item_keys(), trained.item_keys())
        assert float(loaded.log_temperature) == float(trained.log_temperature)
    assert weights_hash(loaded) == weights_hash(trained)


STEP_OPTIONS = ("le.train.steps=6", "le.train.eval_every=2", "le.train.windows_per_user=2", "le.train.batch_users=3")


def test_le_step_budget_resumes_and_keeps_the_best_weights(le_data_dir: Path, tmp_path: Path) -> None:
    cfg = smoke_config(*STEP_OPTIONS)
    run = LERun(tmp_path / "run", cfg)
    emb, _ = run.item_tokens()
    lm, tokenizer = run.lm()
    users = subset_users(run.data.train.user, 0.25, 0)
    scripted = iter([0.2, 0.9, 0.4] * 2)  # the check at step 4 is the best

    def trained(out: Path, budgets: list[int]) -> tuple[dict[str, torch.Tensor], list, list]:
        snapshots: list[dict[str, torch.Tensor]] = []

        def validate(model: LEModel) -> float:
            assert not model.training  # checked in eval mode
            weights = model.state_dict().items()
            snapshots.append({k: v.clone() for k, v in weights if "lora" in k or not k.startswith("lm.")})
            return next(scripted)

        torch.manual_seed(0)
        model = LEModel(copy.deepcopy(lm), tokenizer, emb, cfg.le.model)
        for steps in budgets:  # a later call continues from train_state.pt, as after a kill
            history = train_le_model(model, run.data.sequences, users, cfg.le.train.model_copy(update={"steps": steps}),
                                     cfg.le.model.window, out, seed=0, validate=validate)
        final = {k: v.clone() for k, v in model.state_dict().items() if "lora" in k or not k.startswith("lm.")}
        return final, history, snapshots

    straight, history, snapshots = trained(tmp_path / "a", [6])
    assert [r["step"] for r in history] == [2, 4, 6] and [r["val_state_ndcg@10"] for r in history] == [0.2, 0.9, 0.4]
    assert not all(torch.equal(snapshots[1][k], snapshots[2][k]) for k in straight)  # training moved on after 4
    for k in straight:
        assert torch.equal(straight[k], snapshots[1][k].to(straight[k].device)), k  # the best check's weights
    resumed, resumed_history, _ = trained(tmp_path / "b", [2, 6])
    assert resumed_history == history
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


def test_cosine_lr_schedule_warms_up_decays_to_zero_and_a_killed_run_resumes_on_it(le_data_dir: Path,
                                                                                    tmp_path: Path) -> None:
    cfg = smoke_config(*STEP_OPTIONS, "le.train.lr_schedule=cosine", "le.train.warmup_steps=2", "le.train.lr=0.01")
    train_cfg = cfg.le.train
    # by hand: warm-up 1/2, 2/2, then 0.5·(1 + cos(π·i/4)) for i = 0..3
    expected = [0.5, 1.0, 1.0, 0.5 * (1 + np.cos(np.pi / 4)), 0.5, 0.5 * (1 + np.cos(3 * np.pi / 4))]
    np.testing.assert_allclose([lr_factor(s, train_cfg) for s in range(6)], expected)
    assert lr_factor(5, smoke_config(*STEP_OPTIONS).le.train) == 1.0  # constant by default
    run = LERun(tmp_path / "run", cfg)
    emb, _ = run.item_tokens()
    lm, tokenizer = run.lm()
    users = subset_users(run.data.train.user, 0.25, 0)
    seen_lrs: list[float] = []

    class Killed(Exception):
        pass

    def trained(out: Path, kill_at: int | None) -> dict[str, torch.Tensor]:
        kills = [kill_at]

        def steps(it, desc: str):  # the progress hook: records the rate each step ran at, "kills" once at kill_at
            for step in it:
                if step == kills[0]:
                    kills[0] = None
                    raise Killed
                yield step
                seen_lrs.append(optimizer_of[-1].param_groups[0]["lr"])

        # no validation: the last weights are kept, so they carry the steps after the kill and their rates
        torch.manual_seed(0)
        model = LEModel(copy.deepcopy(lm), tokenizer, emb, cfg.le.model)
        try:
            train_le_model(model, run.data.sequences, users, train_cfg, cfg.le.model.window, out, seed=0,
                           progress=steps)
        except Killed:
            torch.manual_seed(0)
            model = LEModel(copy.deepcopy(lm), tokenizer, emb, cfg.le.model)
            train_le_model(model, run.data.sequences, users, train_cfg, cfg.le.model.window, out, seed=0,
                           progress=steps)
        return {k: v.clone() for k, v in model.state_dict().items() if "lora" in k or not k.startswith("lm.")}

    optimizer_of: list[torch.optim.Optimizer] = []  # the optimiser each train_le_model call built
    build = le_train._optimizer

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(le_train, "_optimizer", lambda *args: optimizer_of.append(build(*args)) or optimizer_of[-1])
        straight = trained(tmp_path / "a", None)
        np.testing.assert_allclose(seen_lrs, [0.01 * f for f in expected])
        seen_lrs.clear()
        resumed = trained(tmp_path / "b", kill_at=4)  # killed after the checkpoint of step 4
    np.testing.assert_allclose(seen_lrs, [0.01 * f for f in expected])  # steps 1-4, then 5-6 after the resume
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k
    with pytest.raises(UserError, match="lr_schedule decays over the step budget"):
        smoke_config("le.train.lr_schedule=cosine")
    with pytest.raises(UserError, match="warmup_steps needs"):
        smoke_config(*STEP_OPTIONS, "le.train.warmup_steps=2")


def test_le_patience_stops_after_checks_without_improvement_and_a_rerun_stays_stopped(le_data_dir: Path,
                                                                                     tmp_path: Path) -> None:
    cfg = smoke_config(*STEP_OPTIONS, "le.train.steps=20", "le.train.patience=2")
    run = LERun(tmp_path / "run", cfg)
    emb, _ = run.item_tokens()
    lm, tokenizer = run.lm()
    users = subset_users(run.data.train.user, 0.25, 0)
    metrics = iter([0.2, 0.5, 0.5, 0.3, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9])  # best at the 2nd check (step 4)
    checked: list[int] = []

    def validate(model: LEModel) -> float:
        checked.append(1)
        return next(metrics)

    torch.manual_seed(0)
    model = LEModel(copy.deepcopy(lm), tokenizer, emb, cfg.le.model)
    history = train_le_model(model, run.data.sequences, users, cfg.le.train, cfg.le.model.window, tmp_path / "le",
                             seed=0, validate=validate)
    # checks at 2, 4 (best), 6 (equal: not better), 8 (worse): two without improvement, so it stops at step 8
    assert [r["step"] for r in history] == [2, 4, 6, 8] and len(checked) == 4
    again = train_le_model(model, run.data.sequences, users, cfg.le.train, cfg.le.model.window, tmp_path / "le",
                           seed=0, validate=validate)  # as after a kill before done.json: no further steps
    assert again == history and len(checked) == 4
    with pytest.raises(UserError, match="patience counts validation checks"):
        smoke_config("le.train.patience=2")  # no step budget, no checks to count


def test_labelling_without_negatives_keeps_states_rewards_and_augmented_actions(le_data_dir: Path,
                                                                                tmp_path: Path) -> None:
    run = LERun(tmp_path / "run", smoke_config())
    run.model(train=True)
    run.label()
    with_negs = load_label_cache(tmp_path / "run" / "label")
    none = LERun(tmp_path / "run0", smoke_config("le.label.negatives=0"))
    shutil.copytree(tmp_path / "run" / "le", tmp_path / "run0" / "le")
    shutil.copy(tmp_path / "run" / "item_tokens.pt", tmp_path / "run0" / "item_tokens.pt")
    none.label()
    without = load_label_cache(tmp_path / "run0" / "label")
    assert without["neg_items"].shape == (len(with_negs), 0) and with_negs["neg_items"].shape[1] > 0
    for name in ("state", "reward", "aug_items", "aug_rewards"):  # negatives change none of them
        np.testing.assert_allclose(np.asarray(without[name], dtype=np.float64),
                                   np.asarray(with_negs[name], dtype=np.float64), rtol=1e-3, atol=1e-3)


def test_le_training_time_is_summed_over_a_resumed_run(le_data_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = smoke_config(*STEP_OPTIONS)
    run = LERun(tmp_path / "run", cfg)
    emb, _ = run.item_tokens()
    lm, tokenizer = run.lm()
    users = subset_users(run.data.train.user, 0.25, 0)
    ticks = iter(range(0, 100_000, 100))  # a clock that moves 100 s each time it is read
    monkeypatch.setattr(le_train, "time", SimpleNamespace(monotonic=lambda: float(next(ticks))))

    def seconds(out: Path, budgets: list[int]) -> float | None:
        model = LEModel(copy.deepcopy(lm), tokenizer, emb, cfg.le.model)
        for steps in budgets:  # a later call continues from train_state.pt, as after a kill
            train_le_model(model, run.data.sequences, users, cfg.le.train.model_copy(update={"steps": steps}),
                           cfg.le.model.window, out, seed=0)
        return le_train.training_seconds(out)

    assert le_train.training_seconds(tmp_path / "nothing") is None
    # straight: starts at 0, its checkpoints read 100, 200, 300. Killed after step 2: starts at 400, reads 500
    # (100 s); resumed: starts at 600, reads 700 and 800 at steps 4 and 6, so 100 + 200 s (a resume that
    # dropped the first run's seconds would give 200)
    assert seconds(tmp_path / "a", [6]) == 300.0
    assert seconds(tmp_path / "b", [2, 6]) == 300.0


def test_le_run_with_a_step_budget_validates_on_validation_users(le_data_dir: Path, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    run = LERun(tmp_path / "run", smoke_config("le.train.steps=4", "le.train.eval_every=2", "le.train.eval_users=5"))
    run.model(train=True)
    done = json.loads((tmp_path / "run" / "le" / "done.json").read_text())
    assert [r["step"] for r in done["history"]] == [2, 4]
    assert all(0.0 <= r["val_state_ndcg@10"] <= 1.0 for r in done["history"])
    # the report never judges the weights on the validation users that chose them
    chosen, all_val = run.selection_users(), np.unique(np.asarray(run.data.val.user))
    assert len(chosen) == min(5, len(all_val) // 2) > 0 and set(chosen) <= set(all_val.tolist())
    model = run.model(train=False)
    metrics, _ = le_quality(model, run.data.sequences, run.data.val, run.data.split.item_counts, 10_000,
                            run.cfg.le.model.window, exclude_users=chosen)
    assert metrics["val_users"] == len(all_val) - len(chosen)
    # more users asked for than there are: said, not silently capped
    assert f"le.report.val_users=10000: only {len(all_val) - len(chosen)} validation users" in caplog.text
    assert LERun(tmp_path / "plain", smoke_config()).selection_users() is None


def _le_with_random_item_tokens(tmp_path: Path, cfg, **options) -> tuple[LERun, LEModel]:
    """An LE run directory and an untrained LE on its LM, with seeded random item tokens (no item-token stage)."""
    run = LERun(tmp_path / "run", cfg)
    lm, tokenizer = run.lm()
    torch.manual_seed(0)
    return run, LEModel(lm, tokenizer, torch.randn(run.data.n_items, lm.config.hidden_size), cfg.le.model, **options)


def test_full_softmax_state_loss_equals_a_naive_per_position_cross_entropy(le_data_dir: Path, tmp_path: Path) -> None:
    # le.train.state_negatives=0: every item competes with the next one, as in full-ranking evaluation
    from learec.env.train import LELoss, le_batch

    cfg = smoke_config("le.train.state_negatives=0")
    run, model = _le_with_random_item_tokens(tmp_path, cfg)
    seqs = run.data.sequences
    rows = [user_items(seqs, u)[:6] for u in range(3)]
    rng = np.random.default_rng(0)
    batch = le_batch(rows, rows, cfg.le.train, rng, run.data.n_items, model.device)
    assert batch[-1].shape[-1] == 0  # no sampled negatives
    with torch.no_grad():
        loss = LELoss(model, cfg.le.train, run.data.n_items)(*batch)["state_loss"]
        out = model(*batch[:4])
        states = model.states(model.state_hidden(out)[:, :-1])
        keys = model.item_keys()
        naive = []
        for b, row in enumerate(rows):
            for t, item in enumerate(row):  # state after t items against all items, target row[t]
                s = torch.nn.functional.normalize(states[b, t], dim=-1)
                logits = (torch.nn.functional.normalize(keys, dim=-1) @ s) / cfg.le.train.temperature
                naive.append(torch.logsumexp(logits, 0) - logits[int(item)])
    assert torch.allclose(loss, torch.stack(naive).mean(), atol=1e-5)


def test_le_selection_on_training_users_outside_the_subset_leaves_every_validation_user_to_the_report(
        le_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import learec.env.run as run_module

    cfg = smoke_config("le.train.steps=4", "le.train.eval_every=2", "le.train.eval_users=3", "le.train.select_on=train")
    run = LERun(tmp_path / "run", cfg)
    le_users = subset_users(run.data.train.user, 0.25, 0)
    chosen = run.selection_users()
    assert len(chosen) == 3 and not set(chosen) & set(le_users.tolist())  # never the LE's own users
    assert set(chosen) <= set(np.unique(run.data.train.user).tolist())
    assert not set(chosen) & set(np.unique(run.data.val.user).tolist())
    # every check rates the chosen users' training points and nothing else
    seen: list[tuple[set, int]] = []
    real = run_module.le_quality

    def spy(model, seqs, points, counts, n_users, *args, exclude_users=None, **kwargs):
        metrics, rewards = real(model, seqs, points, counts, n_users, *args, exclude_users=exclude_users, **kwargs)
        rated = set(np.setdiff1d(np.unique(np.asarray(points.user)), [] if exclude_users is None else exclude_users))
        seen.append((rated, metrics["points"]))
        return metrics, rewards

    monkeypatch.setattr(run_module, "le_quality", spy)
    run.model(train=True)
    in_chosen = np.isin(run.data.train.user, chosen)
    assert seen == [(set(chosen.tolist()), int(in_chosen.sum()))] * 2  # checks at steps 2 and 4
    curve = json.loads((tmp_path / "run" / "le" / "curve.json").read_text())
    assert curve["select_on"] == "train" and curve["users"] == 3
    # the report rates every validation user: none chose the weights
    assert run.report_excluded_users() is None
    report = run.report()
    assert report["val_users"] == min(run.cfg.le.report.val_users, len(np.unique(run.data.val.user)))
    with pytest.raises(UserError, match="leaves none"):
        smoke_config("le.train.steps=4", "le.train.eval_every=2", "le.train.select_on=train", "le.train.user_fraction=1")
    # a fraction below 1 that still rounds to every training user of this small log
    n_train = len(np.unique(run.data.train.user))
    almost = LERun(tmp_path / "almost", smoke_config("le.train.steps=4", "le.train.eval_every=2", "le.train.select_on=train",
                                                     f"le.train.user_fraction={1 - 0.4 / n_train}"))
    with pytest.raises(UserError, match="none is left to select on"):
        almost.selection_users()


def test_item_bias_enters_the_state_loss_and_the_augmented_candidates(le_data_dir: Path, tmp_path: Path) -> None:
    # le.model.item_bias: score = cos(state, key) + bias[item]; the loss divides it by the temperature
    from learec.env.label import label_rows
    from learec.env.train import LELoss, le_batch

    cfg = smoke_config("le.model.item_bias=zero", "le.train.state_negatives=0", "le.label.aug_candidates=1",
                       "le.label.aug_k=1")
    run = LERun(tmp_path / "run", cfg)
    lm, tokenizer = run.lm()
    torch.manual_seed(0)
    model = LEModel(lm, tokenizer, torch.randn(run.data.n_items, lm.config.hidden_size), cfg.le.model)
    assert "item_bias" in dict(model.named_parameters()) and not model.item_bias.any()  # zero at the start
    plain = LEModel(copy.deepcopy(lm), tokenizer, model.item_tokens, smoke_config().le.model)
    assert not hasattr(plain, "item_bias")  # a default LE keeps exactly the weights (and hash) it had
    with torch.no_grad():
        model.item_bias.copy_(torch.randn(run.data.n_items))
    seqs = run.data.sequences
    rows = [user_items(seqs, u)[:6] for u in range(3)]
    batch = le_batch(rows, rows, cfg.le.train, np.random.default_rng(0), run.data.n_items, model.device)
    with torch.no_grad():
        loss = LELoss(model, cfg.le.train, run.data.n_items)(*batch)["state_loss"]
        states = model.states(model.state_hidden(model(*batch[:4]))[:, :-1])
        keys = torch.nn.functional.normalize(model.item_keys(), dim=-1)
        naive = []
        for b, row in enumerate(rows):
            for t, item in enumerate(row):
                cos = keys @ torch.nn.functional.normalize(states[b, t], dim=-1)
                logits = (cos + model.item_bias) / cfg.le.train.temperature
                naive.append(torch.logsumexp(logits, 0) - logits[int(item)])
    assert torch.allclose(loss, torch.stack(naive).mean(), atol=1e-5)

    # a bias far above every cosine makes its item the one augmented action wherever the user has not seen it
    favourite = 7
    with torch.no_grad():
        model.item_bias.zero_()
        model.item_bias[favourite] = 100.0
    segments = [plan_segments(u, np.arange(1, len(user_items(seqs, u))), 64)[0] for u in range(6)]
    targets = [np.arange(s.first, s.end) for s in segments]
    with torch.no_grad():
        labels = label_rows(model, seqs, segments, targets, [np.zeros((len(t), 0), np.int64) for t in targets],
                            cfg.le.label)
    unseen_points = 0
    for seg, t, res in zip(segments, targets, labels):
        seen = [favourite in user_items(seqs, seg.user)[: pos + 1] for pos in t]
        assert [item == favourite for item in res["aug_items"][:, 0]] == [not s for s in seen]
        unseen_points += seen.count(False)
    assert unseen_points > 0  # the bias had somewhere to show


def test_item_bias_learns_the_popularity_of_the_le_users_items(le_data_dir: Path, tmp_path: Path) -> None:
    from scipy.stats import spearmanr

    cfg = smoke_config("le.model.item_bias=zero", "le.train.epochs=3", "le.train.user_fraction=1.0")
    run = LERun(tmp_path / "run", cfg)
    model = run.model(train=True)
    seqs = run.data.sequences
    counts = np.bincount(np.concatenate([user_items(seqs, u) for u in range(seqs.n_users)]), minlength=seqs.n_items)
    bias = model.item_bias.detach().cpu().numpy()
    rho = spearmanr(bias, counts).statistic
    assert rho > 0.5, rho  # measured 0.73
    # the report says the same of the training counts it ranks popularity by
    metrics, _ = le_quality(model, seqs, run.data.val, run.data.split.item_counts, 10_000, cfg.le.model.window)
    assert metrics["item_bias_pop_spearman"] == pytest.approx(spearmanr(bias, run.data.split.item_counts).statistic)
    assert metrics["item_bias_std"] == pytest.approx(float(bias.std()))


def test_log_popularity_item_bias_starts_the_state_logits_at_log_popularity(le_data_dir: Path,
                                                                           tmp_path: Path) -> None:
    cfg = smoke_config("le.model.item_bias=log_popularity", "le.train.learn_temperature=true",
                       "le.train.temperature=0.2")
    run = LERun(tmp_path / "run", cfg)
    lm, tokenizer = run.lm()
    emb, _ = run.item_tokens()
    counts = run.data.split.item_counts  # training interactions only
    prior = log_popularity_prior(counts, cfg.le.train.temperature)
    model = LEModel(copy.deepcopy(lm), tokenizer, emb, cfg.le.model, learned_temperature=0.2, item_prior=prior)
    logits = model.item_bias.detach() / float(model.temperature(0.2).detach())
    naive = np.log1p(counts) - np.log1p(counts).mean()
    np.testing.assert_allclose(logits.cpu().numpy(), naive, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="item_prior"):
        LEModel(copy.deepcopy(lm), tokenizer, emb, cfg.le.model)
    # the LE run passes that start: its trained bias is the prior moved by training, not a zero start
    trained = run.model(train=True)
    assert np.corrcoef(trained.item_bias.detach().cpu().numpy(), prior.numpy())[0, 1] > 0.9


@pytest.mark.parametrize("options", [(), ("le.train.learn_temperature=true", "le.train.state_negatives=0")])
def test_length_groups_give_the_one_batch_gradient_with_less_padding(le_data_dir: Path, tmp_path: Path,
                                                                     options: tuple[str, ...]) -> None:
    from learec.env.train import LELoss, grouped_losses, le_batch, split_by_length

    cfg = smoke_config(*options)
    run, model = _le_with_random_item_tokens(
        tmp_path, cfg, learned_temperature=0.1 if cfg.le.train.learn_temperature else None)
    seqs = run.data.sequences
    rows = [user_items(seqs, u)[:n] for u, n in zip(range(5), (2, 9, 3, 7, 1))]  # uneven, unsorted
    assert [len(r) for r in rows] == [2, 9, 3, 7, 1]
    batch = le_batch(rows, rows, cfg.le.train, np.random.default_rng(0), run.data.n_items, model.device)
    groups = split_by_length(batch[1], batch[3], 3)
    # sorted lengths 1, 2 | 3, 7 | 9; candidates min(reward_positions = 4, length) per row
    assert [sorted(int(r) for r in rows_) for rows_, _, _ in groups] == [[0, 4], [2, 3], [1]]
    assert [(width, n_cand) for _, width, n_cand in groups] == [(2, 2), (7, 4), (9, 4)]

    loss_fn = LELoss(model, cfg.le.train, run.data.n_items)
    params = [p for p in model.parameters() if p.requires_grad]

    def gradients(groups: int) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        model.zero_grad()
        if groups == 1:
            losses = loss_fn(*batch)
            losses["loss"].backward()
        else:
            losses = grouped_losses(loss_fn, batch, groups)
        return losses, [p.grad.clone() for p in params]

    whole, whole_grads = gradients(1)
    for n in (2, 3, 5):
        grouped, grouped_grads = gradients(n)
        assert set(grouped) == set(whole)
        for name in whole:
            assert torch.allclose(grouped[name], whole[name].detach(), atol=1e-5), (n, name)
        assert any(g.abs().sum() > 0 for g in whole_grads)
        for g, w in zip(grouped_grads, whole_grads):
            assert torch.allclose(g, w, atol=1e-6, rtol=1e-4), n


def test_le_step_budget_with_length_groups_replays_the_one_batch_run(le_data_dir: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    grouped_losses = le_train.grouped_losses
    monkeypatch.setattr(le_train, "grouped_losses", lambda *a: calls.append(a[2]) or grouped_losses(*a))
    options = ("le.train.steps=3", "le.train.batch_users=4")
    cfg = smoke_config(*options)
    run = LERun(tmp_path / "run", cfg)
    emb, _ = run.item_tokens()
    lm, tokenizer = run.lm()
    users = subset_users(run.data.train.user, 0.25, 0)

    def trained(groups: int) -> list[dict[str, float]]:
        torch.manual_seed(0)
        model = LEModel(copy.deepcopy(lm), tokenizer, emb, cfg.le.model)
        train_cfg = cfg.le.train.model_copy(update={"length_groups": groups})
        return train_le_model(model, run.data.sequences, users, train_cfg, cfg.le.model.window,
                              tmp_path / f"groups{groups}", seed=0)

    whole, grouped = trained(1), trained(2)
    assert calls == [2, 2, 2]  # each step of the second run went through the groups
    assert [r["step"] for r in grouped] == [r["step"] for r in whole] == [1, 2, 3]
    for a, b in zip(whole, grouped):
        assert a.keys() == b.keys()
        assert all(abs(a[k] - b[k]) < 1e-4 for k in a), (a, b)
    # an execution setting, as threads: the LE's key ignores it, so a run resumes under another value, and
    # reports and pipelines do not count it as a setting that changes results
    assert "le.train.length_groups" in RESULT_NEUTRAL_SETTINGS
    grouped_cfg = smoke_config(*options, "le.train.length_groups=4")
    assert LE_TRAINING.key(grouped_cfg, run.data) == LE_TRAINING.key(cfg, run.data)
    assert LE_TRAINING.key(smoke_config("le.train.steps=4"), run.data) != LE_TRAINING.key(cfg, run.data)
    with pytest.raises(UserError, match="length_groups splits the batches of a step budget"):
        smoke_config("le.train.length_groups=2")  # epochs: not split


def test_labelling_batches_rows_of_similar_length_and_labels_each_row_as_alone(le_data_dir: Path,
                                                                              tmp_path: Path) -> None:
    from learec.env.label import batches_by_length, label_rows
    from learec.env.model import Segment

    jobs = [(Segment(0, 0, 0, n), np.arange(m), tag) for tag, (n, m) in enumerate([(5, 5), (1, 1), (4, 2), (2, 2),
                                                                                   (4, 4)])]
    batches = batches_by_length(jobs, 2)
    assert [[job[2] for job in batch] for batch in batches] == [[1, 3], [2, 4], [0]]  # by items, then targets

    # a row's labels do not depend on the rows batched beside it: one batch of every row against each alone
    cfg = smoke_config("le.dtype=float32")
    run, model = _le_with_random_item_tokens(tmp_path, cfg)
    seqs = run.data.sequences
    lengths = [len(user_items(seqs, u)) for u in range(4)]
    segments = [Segment(u, 0, 0, min(n, 3 + 2 * u)) for u, n in enumerate(lengths)]
    assert len({s.end for s in segments}) == 4  # uneven rows: each padded in the batch of all four
    targets = [np.arange(s.end) for s in segments]
    negatives = [np.full((len(t), 2), u + 1, dtype=np.int64) for u, t in enumerate(targets)]
    together = label_rows(model, seqs, segments, targets, negatives, cfg.le.label)
    for j in range(4):
        alone = label_rows(model, seqs, segments[j:j + 1], targets[j:j + 1], negatives[j:j + 1], cfg.le.label)[0]
        for name in ("state", "reward", "neg_rewards", "aug_rewards"):
            assert np.allclose(together[j][name], alone[name], atol=1e-4), (j, name)
        assert np.array_equal(together[j]["aug_items"], alone["aug_items"]), j
