"""SQN / SAC / SNQN / SA2C: TD targets, double-Q selection, negatives, advantage, warm-up, rewards, seeds."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from learec.config import load_config
from learec.data.preprocess import build_sequences
from learec.data.raw import RawData
from learec.data.splits import split_sqn
from learec.rl import SA2C, SAC, SNQN, SQN, EventTypeRewards, build_objective
from learec.rl.double_q import sample_negatives, td_targets

N_ITEMS, L = 12, 4


def _objective(cls, **kwargs):
    cfg = load_config(None, ["model.backbone=gru4rec", "model.hidden=8", "model.dropout=0", f"data.history={L}"])
    torch.manual_seed(0)
    from learec.models import build_backbone
    from learec.rl.networks import QNetwork

    rewards = EventTypeRewards(["click", "purchase"], {"click": 0.2, "purchase": 1.0})
    return cls(lambda: QNetwork(build_backbone("gru4rec", N_ITEMS, L, cfg.model), N_ITEMS), N_ITEMS, rewards,
               lr=0.01, gamma=0.5, negatives=3, **kwargs)


def _batch(seed=0, B=6):
    g = torch.Generator().manual_seed(seed)
    state = torch.randint(0, N_ITEMS, (B, L), generator=g)
    length = torch.randint(1, L + 1, (B,), generator=g)
    action = torch.randint(0, N_ITEMS, (B,), generator=g)
    next_state = torch.randint(0, N_ITEMS, (B, L), generator=g)
    return {"state": state, "length": length, "action": action, "event": torch.tensor([0, 1] * (B // 2)),
            "next_state": next_state, "next_length": torch.clamp(length + 1, max=L),
            "done": torch.tensor([False, True] + [False] * (B - 2))}


def test_td_targets_hand_computed():
    q_next_target = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    selector = torch.tensor([[0.0, 9.0, 0.0], [9.0, 0.0, 0.0]])  # main picks item 1 and item 0
    y = td_targets(torch.tensor([0.2, 1.0]), 0.5, q_next_target, selector)
    assert y.tolist() == pytest.approx([0.2 + 0.5 * 2.0, 1.0 + 0.5 * 4.0])  # not the target's own max (3, 6)
    y_done = td_targets(torch.tensor([0.2, 1.0]), 0.5, q_next_target, selector, torch.tensor([False, True]))
    assert y_done.tolist() == pytest.approx([1.2, 1.0])


def test_negatives_never_equal_the_positive_and_cover_the_rest_uniformly():
    actions = torch.tensor([0, 5, 11] * 2000)
    neg = sample_negatives(actions, N_ITEMS, 10, torch.Generator().manual_seed(0))
    assert neg.shape == (6000, 10)
    assert not (neg == actions.view(-1, 1)).any()
    assert neg.min() >= 0 and neg.max() < N_ITEMS
    counts = np.bincount(neg[actions == 5].flatten().numpy(), minlength=N_ITEMS)
    assert counts[5] == 0
    others = np.delete(counts, 5)
    assert others.min() > 0.85 * others.mean() and others.max() < 1.15 * others.mean()


def _naive_loss(obj, batch, main_index, negatives=None, weight_fn=None):
    """Row-by-row reference for one step's loss, from the networks' outputs before the step."""
    main, target = obj.networks[main_index], obj.networks[1 - main_index]
    total = 0.0
    rewards = {0: 0.2, 1: 1.0}
    with torch.no_grad():
        for i in range(len(batch["action"])):
            s, ln = batch["state"][i:i + 1], batch["length"][i:i + 1]
            ns, nl = batch["next_state"][i:i + 1], batch["next_length"][i:i + 1]
            q, logits = main(s, ln)
            a = batch["action"][i].item()
            best_next = main.q_values(ns, nl)[0].argmax().item()
            boot = 0.0 if batch["done"][i] else target.q_values(ns, nl)[0, best_next].item()
            y = rewards[batch["event"][i].item()] + 0.5 * boot
            loss_q = 0.5 * (y - q[0, a].item()) ** 2
            if negatives is not None:
                y_neg = 0.0 + 0.5 * target.q_values(s, ln)[0, q[0].argmax().item()].item()
                loss_q += sum(0.5 * (y_neg - q[0, n].item()) ** 2 for n in negatives[i].tolist())
            ce = F.cross_entropy(logits, batch["action"][i:i + 1]).item()
            w = 1.0 if weight_fn is None else weight_fn(q[0], a, negatives[i] if negatives is not None else None)
            total += loss_q + w * ce
    return total / len(batch["action"])


@pytest.mark.parametrize("cls", [SQN, SNQN, SAC])
def test_one_step_loss_matches_a_row_by_row_reference(cls):
    obj = _objective(cls)
    batch = _batch()
    torch.manual_seed(123)
    with torch.random.fork_rng():  # replay the step's random draws: main copy, then negatives
        main_index = int(torch.randint(0, 2, (1,)).item())
        negatives = sample_negatives(batch["action"], N_ITEMS, 3) if cls is SNQN else None
    weight = (lambda q, a, _: q[a].item()) if cls is SAC else None  # SAC: CE weighted by the main copy's Q
    expected = _naive_loss(obj, batch, main_index, negatives, weight)
    logs = obj.train_step(batch)
    assert logs["main"] == main_index
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)


def test_sa2c_step_loss_uses_the_clipped_advantage():
    obj = _objective(SA2C, warmup_steps=0)
    batch = _batch(seed=3)

    def advantage(q, a, negs):
        qs = [q[a].item()] + [q[n].item() for n in negs.tolist()]
        return min(max(qs[0] - sum(qs) / len(qs), 0.0), 10.0)

    torch.manual_seed(7)
    with torch.random.fork_rng():
        main_index = int(torch.randint(0, 2, (1,)).item())
        negatives = sample_negatives(batch["action"], N_ITEMS, 3)
    expected = _naive_loss(obj, batch, main_index, negatives, advantage)
    assert obj.train_step(batch)["loss"] == pytest.approx(expected, rel=1e-5)


def test_only_the_main_copy_is_updated_and_both_copies_get_picked():
    obj = _objective(SQN)
    picked = set()
    for step in range(12):
        before = [[p.detach().clone() for p in net.parameters()] for net in obj.networks]
        main = obj.train_step(_batch(seed=step))["main"]
        picked.add(main)
        after = [list(net.parameters()) for net in obj.networks]
        assert any(not torch.equal(b, a) for b, a in zip(before[main], after[main]))
        assert all(torch.equal(b, a) for b, a in zip(before[1 - main], after[1 - main]))
    assert picked == {0, 1}


def test_sa2c_advantage_and_clipping_hand_computed():
    obj = _objective(SA2C, warmup_steps=0)
    q_logged = torch.tensor([5.0, 0.0, 30.0])
    q_neg = torch.tensor([[1.0, 1.0], [2.0, 4.0], [0.0, 0.0]])
    w = obj.actor_weights(q_logged.view(-1, 1), torch.tensor([[0], [1], [2]]), q_logged, q_neg, torch.zeros(3, N_ITEMS))
    # means 7/3, 2, 10 -> advantages 8/3, -2 (clipped to 0), 20 (clipped to 10)
    assert w.squeeze(1).tolist() == pytest.approx([5 - 7 / 3, 0.0, 10.0])


def test_sa2c_warmup_switches_loss_and_to_a_fresh_optimizer_with_its_own_lr():
    obj = _objective(SA2C, warmup_steps=3, second_lr=0.001)
    assert obj.second_optimizers[0].param_groups[0]["lr"] == 0.001
    assert obj.optimizers[0].param_groups[0]["lr"] == 0.01
    phases = [obj.train_step(_batch(seed=s))["phase"] for s in range(6)]
    assert phases == [1, 1, 1, 2, 2, 2]
    assert any(o.state for o in obj.second_optimizers)  # used after the switch
    # Before the switch the weight is 1 (plain SNQN); after it, the advantage.
    obj2 = _objective(SA2C, warmup_steps=10)
    assert obj2.actor_weights(torch.ones(2, 1), torch.zeros(2, 1, dtype=torch.long), torch.ones(2), torch.zeros(2, 3),
                              torch.zeros(2, N_ITEMS)) is None


def test_second_optimizer_untouched_during_warmup():
    obj = _objective(SA2C, warmup_steps=5)
    for s in range(3):
        obj.train_step(_batch(seed=s))
    assert all(not o.state for o in obj.second_optimizers)
    assert any(o.state for o in obj.optimizers)


def test_sac_weights_ce_by_the_logged_q():
    obj = _objective(SAC)
    q_logged = torch.tensor([0.5, 2.0])
    w = obj.actor_weights(q_logged.view(-1, 1), torch.zeros(2, 1, dtype=torch.long), q_logged, None,
                          torch.zeros(2, N_ITEMS))
    assert torch.equal(w.squeeze(1), q_logged)


@pytest.mark.parametrize("name", ["ce", "sa2c"])
def test_objective_is_built_on_the_configured_device_with_optimizers_on_its_parameters(name):
    cfg = load_config(None, [f"objective={name}", "model.backbone=sasrec", f"data.history={L}"])
    # 'meta' (no memory, no compute) is no device a config accepts: set past validation, as a resolved device is
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"device": "meta"})})
    obj = build_objective(cfg, N_ITEMS, torch.ones(N_ITEMS), ["interaction"])
    nets = obj.networks_module()
    assert all(p.device.type == "meta" for p in nets.parameters())
    opt = obj.optimizer if name == "ce" else obj.optimizers[0]
    assert {id(p) for g in opt.param_groups for p in g["params"]} <= {id(p) for p in nets.parameters()}


def test_missing_reward_for_an_event_type_is_an_error():
    from learec.errors import UserError

    with pytest.raises(UserError, match="no reward for \\['addtocart'\\]"):
        EventTypeRewards(["view", "addtocart"], {"view": 0.2, "purchase": 1.0})


def test_rewards_by_event_type_and_default_for_single_type_data():
    batch = {"event": torch.tensor([0, 1, 1, 0])}
    typed = EventTypeRewards(["click", "purchase"], {"click": 0.2, "purchase": 1.0})
    assert typed.logged(batch).tolist() == pytest.approx([0.2, 1.0, 1.0, 0.2])
    # Codes follow the prepared data's order, not the reward map's: "purchase" may be code 0.
    flipped = EventTypeRewards(["purchase", "click"], {"click": 0.2, "purchase": 1.0})
    assert flipped.logged(batch).tolist() == pytest.approx([1.0, 0.2, 0.2, 1.0])
    single = EventTypeRewards(["interaction"], {"click": 0.2, "purchase": 1.0}, default=0.7)
    assert single.logged({"event": torch.tensor([0, 0])}).tolist() == pytest.approx([0.7, 0.7])
    assert typed.negatives(batch, torch.zeros(4, 3, dtype=torch.long)).abs().sum() == 0


def test_build_objective_names_and_q_ranking():
    for name, cls in (("sqn", SQN), ("sac", SAC), ("snqn", SNQN), ("sa2c", SA2C)):
        cfg = load_config(None, [f"objective={name}", "model.backbone=caser", f"data.history={L}", "rl.rank_by=q"])
        obj = build_objective(cfg, N_ITEMS, torch.ones(N_ITEMS), ["click", "purchase"])
        assert type(obj) is cls
        scorer = obj.scorer().eval()
        b = _batch()
        with torch.no_grad():
            expected = obj.networks[0].q_values(b["state"], b["length"])
            assert torch.allclose(scorer(b["state"], b["length"]), expected)


def test_replay_buffer_matches_the_published_generator():
    """The SQN code's gen_replay_buffer loop, written out, against our transitions on a hand-made click/buy log."""
    import pandas as pd

    log = [  # session, item, is_buy, in time order per session
        (1, "a", 0), (1, "b", 0), (1, "c", 1), (1, "a", 0),
        (2, "d", 0), (2, "b", 1),
        (3, "c", 0), (3, "c", 0), (3, "d", 1), (3, "a", 0), (3, "b", 1), (3, "e", 0),
    ]
    df = pd.DataFrame({"user": [str(s) for s, _, _ in log], "item": [i for _, i, _ in log],
                       "timestamp": [float(t) for t in range(len(log))],
                       "event": ["purchase" if b else "click" for *_, b in log]})
    seqs = build_sequences(RawData(df, None, ["click", "purchase"]), 0, 0, "")
    state_size, pad = 3, seqs.n_items
    item_code = {i: c for c, i in enumerate(seqs.item_ids)}

    def pad_history(itemlist, length, pad_item):  # as published: keep the last `length`, pad at the end
        if len(itemlist) >= length:
            return itemlist[-length:]
        return itemlist + [pad_item] * (length - len(itemlist))

    ref = {k: [] for k in ("state", "len_state", "action", "is_buy", "next_state", "len_next_state", "is_done")}
    for session in (1, 2, 3):
        history = []
        for s, item, is_buy in log:
            if s != session:
                continue
            st = list(history)
            ref["len_state"].append(state_size if len(st) >= state_size else 1 if len(st) == 0 else len(st))
            ref["state"].append(pad_history(st, state_size, pad))
            ref["action"].append(item_code[item])
            ref["is_buy"].append(is_buy)
            history.append(item_code[item])
            nxt = list(history)
            ref["len_next_state"].append(state_size if len(nxt) >= state_size else 1 if len(nxt) == 0 else len(nxt))
            ref["next_state"].append(pad_history(nxt, state_size, pad))
            ref["is_done"].append(False)
        ref["is_done"][-1] = True

    train = split_sqn(seqs, state_size, (1.0, 0.0, 0.0), seed=0).train
    assert train.state.tolist() == ref["state"]
    assert train.length.tolist() == ref["len_state"]
    assert train.action.tolist() == ref["action"]
    assert (train.event == 1).astype(int).tolist() == ref["is_buy"]
    assert train.next_state.tolist() == ref["next_state"]
    assert train.next_length.tolist() == ref["len_next_state"]
    assert train.done.tolist() == ref["is_done"]


@pytest.mark.slow
def test_same_seed_same_results_and_exact_resume_for_an_rl_run(tmp_path, monkeypatch):
    from learec.data.registry import raw_dir
    from learec.data.synthetic import generate_synthetic_log
    from learec.train import trainer as trainer_mod
    from learec.train.run import train_run

    monkeypatch.setenv("LEAREC_DATA_DIR", str(tmp_path / "data"))
    generate_synthetic_log(raw_dir("synthetic"), n_users=120, n_items=40)
    overrides = ["data.dataset=synthetic", "data.protocol=sqn", "data.history=5", "model.hidden=16",
                 "model.backbone=sasrec", "objective=sa2c", "rl.warmup_steps=40", "train.epochs=3",
                 "train.batch_size=64", "train.threads=1", "train.progress=false", "train.checkpoint_every_steps=10"]
    a = train_run(load_config(None, overrides), tmp_path / "a")
    b = train_run(load_config(None, overrides), tmp_path / "b")
    c = train_run(load_config(None, [*overrides, "seed=1"]), tmp_path / "c")
    assert a["test"] == b["test"] and a["test"] != c["test"]
    assert "purchase/ndcg@10" in a["test"]

    real = trainer_mod.make_batch
    calls = {"n": 0}

    def interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 45:  # after the SA2C switch at step 40, between checkpoints
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "make_batch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_run(load_config(None, overrides), tmp_path / "d")
    monkeypatch.setattr(trainer_mod, "make_batch", real)
    assert train_run(None, tmp_path / "d", resume=True)["test"] == a["test"]


def test_sa2c_off_policy_correction_divides_by_popularity_and_clips():
    popularity = torch.tensor([9.0, 1.0] + [0.0] * (N_ITEMS - 2))
    obj = _objective(SA2C, warmup_steps=0, item_popularity=popularity, correction_clip=3.0)
    beta = (popularity + 1) / (popularity.sum() + N_ITEMS)
    logits = torch.zeros(2, N_ITEMS)  # pi(a|s) = 1/N for every item
    q_logged, q_neg = torch.tensor([4.0, 4.0]), torch.zeros(2, 2)
    w = obj.actor_weights(q_logged.view(-1, 1), torch.tensor([[0], [1]]), q_logged, q_neg, logits).squeeze(1)
    advantage = 4.0 - 4.0 / 3
    expected = [advantage * min((1 / N_ITEMS) / beta[0].item(), 3.0), advantage * min((1 / N_ITEMS) / beta[1].item(), 3.0)]
    assert w.tolist() == pytest.approx(expected)
    assert expected[0] < expected[1]  # the popular item's term is down-weighted


def test_sa2c_warmup_in_epochs_becomes_steps_per_epoch(tmp_path, monkeypatch):
    """rl.warmup_epochs = epochs x batches per epoch, rounded half up; through a real run, the objective gets
    that many steps from the training data's size (no warmup_epochs: warmup_steps, as before)."""
    from learec.data.prepared import prepare
    from learec.data.registry import raw_dir
    from learec.data.synthetic import generate_synthetic_log
    from learec.train.run import objective_for
    from learec.train.trainer import epoch_batches

    cfg = load_config(None, ["objective=sa2c", "rl.warmup_epochs=1.5"])
    assert cfg.rl.warmup_steps is None and cfg.rl.sa2c_warmup_steps(10) == 15
    assert cfg.rl.sa2c_warmup_steps(3) == 5  # 4.5 rounds up
    assert load_config(None, ["rl.warmup_steps=7"]).rl.sa2c_warmup_steps(10) == 7  # epochs unset: steps as given
    assert load_config(None, ["rl.warmup_epochs=0"]).rl.sa2c_warmup_steps(10) == 0
    # under torchrun a last batch too small to give each rank a row is skipped
    assert epoch_batches(97, 32) == 4 and epoch_batches(98, 32, world=2) == 4 and epoch_batches(97, 32, world=2) == 3

    monkeypatch.setenv("LEAREC_DATA_DIR", str(tmp_path / "data"))
    generate_synthetic_log(raw_dir("synthetic"), n_users=30, n_items=20)
    sets = ["data.dataset=synthetic", "data.protocol=sqn", "data.history=5", "model.hidden=8", "model.backbone=gru4rec",
            "objective=sa2c", "train.batch_size=16"]
    data = prepare(load_config(None, sets).data, log=lambda *_: None)
    batches = -(-len(data.train) // 16)
    assert objective_for(load_config(None, [*sets, "rl.warmup_epochs=2"]), data).warmup_steps == 2 * batches
    assert objective_for(load_config(None, sets), data).warmup_steps == 3000  # the default, unchanged
    # a saved config (warmup_steps written as null) loads back the same
    saved = load_config(None, [*sets, "rl.warmup_epochs=2"])
    saved.save(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml").to_dict() == saved.to_dict()


def test_sa2c_warmup_in_steps_and_in_epochs_together_is_refused(capsys):
    from learec.cli import main

    assert main(["config", "show", "--set", "rl.warmup_steps=100", "--set", "rl.warmup_epochs=1"]) == 2
    err = capsys.readouterr().err
    assert "rl.warmup_steps (100) and rl.warmup_epochs (1) both set the SA2C warm-up" in err
    assert "rl.warmup_steps=null" in err  # how to give epochs over a file that sets steps
    assert main(["config", "show", "--set", "rl.warmup_steps=100", "--set", "rl.warmup_epochs=1",
                 "--set", "rl.warmup_steps=null"]) == 0
