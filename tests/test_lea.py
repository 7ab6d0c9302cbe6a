"""LE inputs in the RL trainers (+SM, +RM, +LEA), on a small synthetic log with hand-made LE caches."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from learec.config import load_config
from learec.data.prepared import prepare
from learec.data.registry import raw_dir
from learec.data.synthetic import generate_synthetic_log
from learec.env.label import seal_cache, write_label_cache
from learec.errors import UserError
from learec.lea import LEBatch
from learec.models.ranking import RankingModel
from learec.serve.export import export_run
from learec.train.run import evaluate_run, le_inputs_for, objective_for, train_run

BASE = ["data.dataset=synthetic", "data.protocol=sqn", "data.history=5", "model.backbone=gru4rec",
        "model.hidden=16", "train.epochs=1", "train.batch_size=64", "train.progress=false", "train.patience=0",
        "rl.warmup_steps=5", "seed=3"]


@pytest.fixture()
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LEAREC_DATA_DIR", str(tmp_path / "data"))
    torch.set_num_threads(1)
    generate_synthetic_log(raw_dir("synthetic"), n_users=60, n_items=25, min_len=4, max_len=20)
    return prepare(load_config(None, BASE).data, log=lambda *_: None)


def make_cache(path: Path, data, rewards: str = "random", seed: int = 0, k_neg: int = 10, k_aug: int = 3,
               dim: int = 8, empty_last_slot: bool = False) -> Path:
    """A complete LE cache for ``data``'s transitions: constant or random rewards, valid negatives/augments."""
    rng = np.random.default_rng(seed)
    n, n_items = len(data.train), data.n_items
    action = np.asarray(data.train.action)
    neg = rng.integers(0, n_items - 1, (n, k_neg))
    neg = neg + (neg >= action[:, None])
    aug = np.stack([rng.permutation(n_items)[:k_aug] for _ in range(n)])

    def reward(shape):
        return np.full(shape, 0.7) if rewards == "constant" else rng.normal(size=shape)

    arrays = {"state": rng.normal(size=(n, dim)), "reward": reward(n), "neg_items": neg,
              "neg_rewards": reward((n, k_neg)), "aug_items": aug, "aug_rewards": -np.sort(-reward((n, k_aug)), 1)}
    if empty_last_slot:  # as the labeller writes when fewer unseen items than augmented slots exist
        arrays["aug_items"][:, -1], arrays["aug_rewards"][:, -1] = -1, 0.0
    write_label_cache(path / "label", arrays, {"data": data.manifest["key"], "test": rewards})
    return path


def trained_weights(data, run_dir: Path, *overrides: str) -> dict[str, torch.Tensor]:
    cfg = load_config(None, [*BASE, *overrides])
    train_run(cfg, run_dir)
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    return state["objective"]["networks"]


@pytest.mark.parametrize("objective", ["snqn", "sa2c"])
def test_constant_le_rewards_reproduce_the_base_trainer(data, tmp_path: Path, objective: str) -> None:
    cache = make_cache(tmp_path / "le-const", data, rewards="constant")
    base = trained_weights(data, tmp_path / "base", f"objective={objective}", f"lea.cache={cache}",
                           "lea.cached_negatives=true")
    with_rm = trained_weights(data, tmp_path / "rm", f"objective={objective}", f"lea.cache={cache}", "lea.reward=true")
    assert base.keys() == with_rm.keys()
    for key in base:
        assert torch.equal(base[key], with_rm[key]), key
    # and the LE rewards do change training once they vary
    varied = make_cache(tmp_path / "le-rand", data, rewards="random")
    other = trained_weights(data, tmp_path / "rm2", f"objective={objective}", f"lea.cache={varied}", "lea.reward=true")
    assert any(not torch.equal(base[k], other[k]) for k in base)


def test_sm_model_serves_without_the_le(data, tmp_path: Path) -> None:
    cache = make_cache(tmp_path / "le", data)
    cfg = load_config(None, [*BASE, "objective=snqn", f"lea.cache={cache}", "lea.state=true", "lea.align_weight=0.5"])
    metrics = train_run(cfg, tmp_path / "run")
    assert 0 <= metrics["test"]["ndcg@10"] <= 1
    # the served model: the CE head over the backbone state, no LE input anywhere
    le_inputs = le_inputs_for(cfg, data)
    objective = objective_for(cfg, data, le_inputs.state_dim)
    scorer = objective.scorer().eval()
    scorer.load_state_dict(torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True))
    net = scorer.network
    assert isinstance(scorer, RankingModel) and scorer.head == "ce" and net.le_proj is not None
    rows = np.flatnonzero(np.array(data.test.history[:, 0]) < data.n_items)[:7]  # non-empty histories
    hist = torch.as_tensor(np.array(data.test.history[rows]), dtype=torch.long)
    length = torch.as_tensor(np.array(data.test.length[rows]), dtype=torch.long)
    with torch.no_grad():
        scores = scorer(hist, length)
        torch.testing.assert_close(scores, net.ce_head(net.backbone(hist, length)))
        # the critic does read the LE state
        le = torch.randn(7, le_inputs.state_dim)
        assert not torch.allclose(net.q_values(hist, length, le=le), net.q_values(hist, length, le=2 * le))
    # without the LE cache, the run still evaluates and exports, and the export ranks like the CE head
    shutil.rmtree(cache)
    assert evaluate_run(tmp_path / "run")["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"])
    exported = export_run(tmp_path / "run", tmp_path / "model")
    ids = [data.sequences.item_ids[i] for i in hist[0, : int(length[0])].tolist()]
    served = [str(item["id"]) for item in exported.recommend(ids, k=5).items]
    expected = torch.topk(scores[0], 5).indices.tolist()  # the CE head's top-5 for the same history
    assert served == [str(data.sequences.item_ids[i]) for i in expected]


def test_augmented_actions_enter_both_losses(data, tmp_path: Path) -> None:
    cache = make_cache(tmp_path / "le", data)
    cfg = load_config(None, [*BASE, "objective=sqn", f"lea.cache={cache}", "lea.augment=true", "lea.augment_k=2",
                             "lea.augment_weight=0.5"])
    le_inputs = le_inputs_for(cfg, data)
    objective = objective_for(cfg, data, le_inputs.state_dim)
    idx = np.arange(32)
    from learec.train.trainer import make_batch

    batch = make_batch(data.train, idx, "cpu")
    le = le_inputs.batch(idx, "cpu")
    assert le.aug_items.shape == (32, 2) and le.state is None
    expected = torch.as_tensor(np.array(le_inputs.cache["aug_items"][:32, :2]), dtype=torch.long)
    assert torch.equal(le.aug_items, expected)
    terms = objective.extra_terms  # LEA's terms, added to the objective's own

    def loss_with(weight: float, use_q: bool) -> float:
        terms.augment_weight, terms.augment_q = weight, use_q
        torch.manual_seed(0)
        snapshot = {k: v.clone() for k, v in objective.networks.state_dict().items()}
        loss = objective.train_step(dict(batch), le)["loss"]
        objective.networks.load_state_dict(snapshot)
        return loss

    plain = loss_with(0.0, False)
    assert loss_with(0.5, False) > plain  # the augmented CE term adds to the loss
    assert loss_with(0.0, True) != plain  # the augmented TD term changes it


def test_cache_for_other_data_is_refused(data, tmp_path: Path) -> None:
    cache = make_cache(tmp_path / "le", data)
    manifest = cache / "label" / "manifest.json"
    manifest.write_text(manifest.read_text().replace(data.manifest["key"], "someotherdata"))
    cfg = load_config(None, [*BASE, "objective=snqn", f"lea.cache={cache}", "lea.reward=true"])
    with pytest.raises(UserError, match="other data"):
        le_inputs_for(cfg, data)


def test_cache_for_other_data_names_the_settings_that_differ(data, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    from learec.cli import main

    le = make_cache(tmp_path / "le", data)
    load_config(None, BASE).save(le / "config.yaml")  # the labels' run: BASE's data section
    run = [*BASE, "objective=snqn", f"lea.cache={le}", "lea.reward=true"]

    # only the item text differs: RL training reads none, so the labels fit and no relabelling is advised
    cfg = load_config(None, [*run, "data.text_template='{title}'"])
    with pytest.raises(UserError) as raised:
        le_inputs_for(cfg, prepare(cfg.data, log=lambda *_: None))
    said = str(raised.value)
    assert "data.text_template: None (labels) vs '{title}' (this run)" in said
    assert "reads no item text" in said and '--set "data.text_template=null"' in said
    assert "relabel" not in said and "label again" not in said

    # a setting that shapes the transitions, through the CLI: both values, and both ways out
    path = tmp_path / "run.yaml"
    load_config(None, [*run, "data.history=6"]).save(path)
    assert main(["train", "--config", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    said = capsys.readouterr().err
    assert "data.history: 5 (labels) vs 6 (this run)" in said
    assert '--set "data.history=5"' in said and "learec env label --run-dir NEW_DIR" in said

    # the same settings on other raw files: the files are named, and the labelling that redoes them
    moved = tmp_path / "moved"
    shutil.copytree(raw_dir("synthetic"), moved)
    with open(moved / "interactions.csv", "a") as f:
        f.write("u999,1,99999999,click\nu999,2,99999999,click\n")
    cfg = load_config(None, [*run, f"data.raw={moved}"])
    with pytest.raises(UserError, match="the data settings are the same, so the raw files differ") as raised:
        le_inputs_for(cfg, prepare(cfg.data, log=lambda *_: None))
    assert f"learec env train --run-dir {le}" in str(raised.value)


def test_a_missing_label_cache_names_the_command_that_makes_it(data, tmp_path: Path) -> None:
    from learec.env.label import load_label_cache

    with pytest.raises(UserError) as raised:  # a directory with no LE run at all
        load_label_cache(tmp_path / "nothing" / "label")
    assert f"learec env train --config FILE --run-dir {tmp_path / 'nothing'}" in str(raised.value)
    le = tmp_path / "le"
    load_config(None, BASE).save(le / "config.yaml")  # an LE run whose LE never trained
    with pytest.raises(UserError) as raised:
        load_label_cache(le / "label")
    said = str(raised.value)
    assert f"`learec env train --run-dir {le}`" in said and f"`learec env label --run-dir {le}`" in said
    assert "DIR`" not in said and "again" not in said
    (le / "le").mkdir()
    (le / "le" / "done.json").write_text("{}")  # trained, never labelled
    with pytest.raises(UserError, match=f"make it: `learec env label --run-dir {le}`"):
        load_label_cache(le / "label")
    make_cache(le, data)  # labelled, then corrupted
    (le / "label" / "reward.npy").write_bytes(b"broken")
    with pytest.raises(UserError, match=f"run `learec env label --run-dir {le}` again"):
        load_label_cache(le / "label")


def test_lea_config_validation() -> None:
    with pytest.raises(UserError, match="RL objective"):
        load_config(None, ["objective=ce", "lea.reward=true", "lea.cache=x"])
    with pytest.raises(UserError, match="lea.cache"):
        load_config(None, ["objective=snqn", "lea.reward=true"])
    with pytest.raises(UserError, match="rank by the CE head"):
        load_config(None, ["objective=snqn", "lea.state=true", "lea.cache=x", "rl.rank_by=q"])
    for extra in ([], ["lea.reward=true", "lea.cache=x"]):
        with pytest.raises(UserError, match="needs lea.state=true"):
            load_config(None, ["objective=snqn", "lea.state_to_actor=true", *extra])
    for refused in (["objective=snqn", "lea.augment=true"], ["objective=sa2c", "lea.augment=false"]):
        with pytest.raises(UserError, match="augment_weighting=actor"):
            load_config(None, [*refused, "lea.cache=x", "lea.augment_weighting=actor"])
    assert load_config(None, ["objective=sa2c", "lea.augment=true", "lea.cache=x",
                              "lea.augment_weighting=actor"]).lea.augment_weighting == "actor"
    # lea.augment_k without lea.augment would silently use no augmented action
    for k in (0, 3):
        with pytest.raises(UserError, match="lea.augment_k .* needs lea.augment=true"):
            load_config(None, ["objective=snqn", "lea.reward=true", "lea.cache=x", f"lea.augment_k={k}"])
    assert load_config(None, ["objective=snqn", "lea.augment=true", "lea.cache=x", "lea.augment_k=0"]).lea.augment_k == 0


def test_empty_augmentation_slots_are_masked(data, tmp_path: Path) -> None:
    """A -1 slot contributes nothing: the losses equal those of the same cache read with one slot fewer."""
    losses = []
    for k, empty in ((3, True), (2, False)):
        cache = make_cache(tmp_path / f"le{k}", data, empty_last_slot=empty)
        cfg = load_config(None, [*BASE, "objective=snqn", f"lea.cache={cache}", "lea.augment=true",
                                 f"lea.augment_k={k}", "lea.augment_weight=0.5"])
        losses.append(_first_step(cfg, data)[1])
    assert losses[0]["loss"] == pytest.approx(losses[1]["loss"], rel=1e-6)
    assert losses[0]["q_loss"] == pytest.approx(losses[1]["q_loss"], rel=1e-6)


def test_a_larger_negative_pool_is_sampled_afresh_each_batch(data, tmp_path: Path) -> None:
    cache = make_cache(tmp_path / "le", data, k_neg=25)
    cfg = load_config(None, [*BASE, "objective=snqn", f"lea.cache={cache}", "lea.reward=true", "rl.negatives=10"])
    le_inputs = le_inputs_for(cfg, data)
    pool = np.array(le_inputs.cache["neg_items"][:16])
    pool_rewards = np.array(le_inputs.cache["neg_rewards"][:16])
    draws = []
    for _ in range(2):
        le = le_inputs.batch(np.arange(16), "cpu")
        items, z = le.neg_items.numpy(), le.neg_reward_z.numpy()
        assert items.shape == (16, 10)
        for row in range(16):
            # the pool's rewards are distinct random numbers: they identify the columns drawn
            raw = z[row] * le_inputs.std + le_inputs.mean
            cols = [int(np.argmin(np.abs(pool_rewards[row] - r))) for r in raw]
            np.testing.assert_allclose(pool_rewards[row, cols], raw, rtol=1e-4, atol=1e-4)
            assert len(set(cols)) == 10  # 10 distinct entries of the pool
            assert (items[row] == pool[row, cols]).all()  # each item with its own reward
        draws.append(items)
    assert not np.array_equal(draws[0], draws[1])  # afresh each time
    small = load_config(None, [*BASE, "objective=snqn", f"lea.cache={cache}", "lea.reward=true", "rl.negatives=30"])
    with pytest.raises(UserError, match="negatives per transition"):
        le_inputs_for(small, data)


def test_labels_without_negatives_serve_augment_runs_and_are_refused_by_rm_runs(data, tmp_path: Path) -> None:
    # le.label.negatives=0 (labelling a negative costs an LM token per transition): fine without +RM
    cache = make_cache(tmp_path / "le", data, k_neg=0)
    augment = load_config(None, [*BASE, "objective=snqn", f"lea.cache={cache}", "lea.augment=true", "lea.state=true"])
    train_run(augment, tmp_path / "augment")
    assert (tmp_path / "augment" / "metrics.json").is_file()
    rm = load_config(None, [*BASE, "objective=snqn", f"lea.cache={cache}", "lea.reward=true"])
    with pytest.raises(UserError, match="0 negatives per transition.*lea.reward"):
        le_inputs_for(rm, data)


def test_augment_k_zero_uses_no_augmented_actions(data, tmp_path: Path) -> None:
    """k = 0 of an ablation over k: no augmented tensors, the same losses as augmentation off."""
    cache = make_cache(tmp_path / "le", data)
    losses = []
    for extra in (["lea.augment=true", "lea.augment_k=0"], ["lea.augment=false"]):
        cfg = load_config(None, [*BASE, "objective=snqn", f"lea.cache={cache}", "lea.reward=true", *extra])
        le, logs = _first_step(cfg, data)
        assert le.aug_items is None and le.aug_mask is None
        losses.append(logs["loss"])
    assert losses[0] == losses[1]


def _first_step(cfg, data) -> tuple[LEBatch, dict]:
    """The LE inputs of the first 40 transitions, and the logs of one step on them (seeded)."""
    from learec.train.trainer import make_batch

    le_inputs = le_inputs_for(cfg, data)
    torch.manual_seed(0)
    objective = objective_for(cfg, data, 0)
    idx = np.arange(40)
    batch = make_batch(data.train, idx, "cpu")
    le = le_inputs.batch(idx, "cpu")
    torch.manual_seed(1)
    return le, objective.train_step(batch, le)


def write_eval_states(cache: Path, data, states: dict[str, np.ndarray]) -> None:
    """eval_states/ as `learec env label --eval-states` writes it, from given arrays."""
    out = cache / "eval_states"
    out.mkdir(exist_ok=True)
    for split, values in states.items():
        np.save(out / f"{split}.npy", values.astype(np.float16))
    seal_cache(out, {"fingerprint": {"data": data.manifest["key"]}, "complete": False}, list(states))


def test_state_to_actor_ranks_with_the_le_states_of_the_evaluation_events(data, tmp_path: Path) -> None:
    cache = make_cache(tmp_path / "le", data)
    cfg = load_config(None, [*BASE, "objective=snqn", f"lea.cache={cache}", "lea.state=true", "lea.state_to_actor=true"])
    with pytest.raises(UserError, match="eval-states"):  # validation needs them: refused before any training
        train_run(cfg, tmp_path / "refused")
    assert not (tmp_path / "refused" / "checkpoints").exists()
    rng = np.random.default_rng(5)
    states = {split: rng.normal(size=(len(getattr(data, split)), 8)) for split in ("val", "test")}
    write_eval_states(cache, data, states)
    metrics = train_run(cfg, tmp_path / "run")

    # the test metrics are those of the CE head fed each test event's LE state (an independent loop)
    objective = objective_for(cfg, data, 8)
    scorer = objective.scorer().eval()
    scorer.load_state_dict(torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True))
    net = scorer.network
    assert net.actor_le_proj is not None
    test = data.test
    ndcg = []
    with torch.no_grad():
        for i in range(len(test)):
            hist = torch.as_tensor(np.array(test.history[i:i + 1]), dtype=torch.long)
            length = torch.as_tensor(np.array(test.length[i:i + 1]), dtype=torch.long)
            le = torch.as_tensor(states["test"][i:i + 1].astype(np.float16).astype(np.float32))
            scores = net.ce_head(net.backbone(hist, length) + net.actor_le_proj(le))[0]
            rank = int((scores > scores[int(test.target[i])]).sum())
            ndcg.append(1 / np.log2(rank + 2) if rank < 10 else 0.0)
        with pytest.raises(ValueError, match="reads LE states"):
            scorer(hist, length)
    assert metrics["test"]["ndcg@10"] == pytest.approx(float(np.mean(ndcg)), abs=1e-6)
    assert evaluate_run(tmp_path / "run")["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"])
    # other LE states for the test events: other rankings
    write_eval_states(cache, data, {"val": states["val"], "test": rng.normal(size=states["test"].shape)})
    assert evaluate_run(tmp_path / "run")["ndcg@10"] != pytest.approx(metrics["test"]["ndcg@10"])
    # such a model cannot be served without the LLM
    with pytest.raises(UserError, match="cannot be served without the LLM"):
        export_run(tmp_path / "run", tmp_path / "model")
    # relabelled (another LE): the run refuses the new labels and their states, to evaluate or to resume
    make_cache(cache, data, seed=1)
    write_eval_states(cache, data, states)
    with pytest.raises(UserError, match="was trained on the LE labels"):
        evaluate_run(tmp_path / "run")
    (tmp_path / "run" / "metrics.json").unlink()  # as if killed before the end
    with pytest.raises(UserError, match="was trained on the LE labels"):
        train_run(None, tmp_path / "run", resume=True)


@pytest.mark.parametrize("objective,correction", [("sa2c", False), ("sa2c", True), ("sac", False)])
def test_actor_weighting_gives_each_augmented_action_its_own_actor_weight(data, tmp_path: Path, objective: str,
                                                                          correction: bool) -> None:
    """lea.augment_weighting=actor: after the warm-up, each augmented action's CE term carries the weight the
    method gives a logged action (SA2C: its clipped advantage against the same baseline, times the off-policy
    correction when on; SAC: its Q); in the warm-up, 'actor' and 'fixed' are the same step. Checked against a
    loop over rows and slots."""
    cache = make_cache(tmp_path / "le", data, empty_last_slot=True)
    common = [*BASE, f"objective={objective}", f"lea.cache={cache}", "lea.state=true", "lea.reward=true",
              "lea.augment=true", "lea.augment_weight=0.5", "model.dropout=0", "rl.sac_warmup_steps=5",
              f"rl.off_policy_correction={str(correction).lower()}", "rl.correction_clip=3"]

    def one_step(weighting: str, second_phase: bool):
        cfg = load_config(None, [*common, f"lea.augment_weighting={weighting}"])
        le_inputs = le_inputs_for(cfg, data)
        torch.manual_seed(0)
        objective_ = objective_for(cfg, data, le_inputs.state_dim)
        objective_.steps = 5 if second_phase else 0
        from learec.train.trainer import make_batch

        idx = np.arange(40)
        batch = make_batch(data.train, idx, "cpu")
        le = le_inputs.batch(idx, "cpu")
        before = [{k: v.clone() for k, v in n.state_dict().items()} for n in objective_.networks]
        torch.manual_seed(1)
        logs = objective_.train_step(dict(batch), le)
        net = objective_.networks[logs["main"]]
        net.load_state_dict(before[logs["main"]])
        with torch.no_grad():
            q, logits = net(batch["state"], batch["length"], le=le.state)
        return logs, batch, le, q, logits, getattr(objective_, "behaviour", None)

    for phase_two in (False, True):
        fixed, batch, le, q, logits, behaviour = one_step("fixed", phase_two)
        actor, *_ = one_step("actor", phase_two)
        assert fixed["main"] == actor["main"]
        if not phase_two:
            assert actor["loss"] == fixed["loss"]
            continue
        assert (behaviour is not None) == correction
        logp, pi = torch.log_softmax(logits, dim=1), torch.softmax(logits, dim=1)
        expected, advantages = 0.0, []
        for b in range(len(batch["action"])):
            logged = q[b, batch["action"][b]]
            baseline = torch.cat([logged.view(1), q[b, le.neg_items[b]]]).mean()
            slots = [j for j in range(le.aug_items.shape[1]) if le.aug_mask[b, j] > 0]
            diff = 0.0
            for j in slots:
                item = le.aug_items[b, j]
                if objective == "sa2c":
                    advantages.append(float(q[b, item] - baseline))
                    weight = (q[b, item] - baseline).clamp(0, 10)
                    if correction:
                        weight = weight * min(float(pi[b, item] / behaviour[item]), 3.0)
                else:
                    weight = q[b, item]
                diff += float((weight - 1.0) * -logp[b, item])
            expected += diff / max(len(slots), 1)
        expected *= 0.5 / len(batch["action"])
        assert actor["loss"] - fixed["loss"] == pytest.approx(expected, rel=1e-3, abs=1e-6)
        assert abs(expected) > 1e-3  # the weighting does change the step
        if objective == "sa2c":  # some advantages inside the clip range, some clipped: both paths are exercised
            assert any(0 < a < 10 for a in advantages) and any(a <= 0 for a in advantages)
