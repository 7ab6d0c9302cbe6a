"""The LEA options of issue 20 (lea.augment_reward, augment_next_state, augment_confidence, standardise_states),
each checked against a direct computation; their defaults train exactly as before (tests/test_pinned_behaviour.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from learec.config import load_config
from learec.errors import UserError
from learec.lea.append import append_items
from learec.rl.double_q import Step
from learec.train.run import le_inputs_for, objective_for
from learec.train.trainer import make_batch
from test_lea import BASE, data, make_cache  # noqa: F401  (data: the fixture)

LEA = ["objective=snqn", "lea.augment=true", "model.dropout=0"]


def _setup(data, cache: Path, *overrides: str, rows: int = 40):
    cfg = load_config(None, [*BASE, *LEA, f"lea.cache={cache}", *overrides])
    le_inputs = le_inputs_for(cfg, data)
    torch.manual_seed(0)
    objective = objective_for(cfg, data, le_inputs.state_dim)
    idx = np.arange(rows)
    return cfg, le_inputs, objective, make_batch(data.train, idx, "cpu"), le_inputs.batch(idx, "cpu")


def _z(le_inputs, values) -> torch.Tensor:
    """Standardised LE rewards, computed here from the cache's raw rewards."""
    raw = np.asarray(le_inputs.cache["reward"], dtype=np.float64)
    return torch.as_tensor((np.asarray(values, dtype=np.float64) - raw.mean()) / raw.std(), dtype=torch.float32)


def _one_step_loss(data, cache: Path, *overrides: str) -> dict:
    _, _, objective, batch, le = _setup(data, cache, *overrides)
    torch.manual_seed(1)
    return objective.train_step(dict(batch), le)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rm", [False, True])
def test_bounded_augmented_rewards_never_exceed_the_logged_reward(data, tmp_path: Path, seed: int, rm: bool) -> None:
    cache = make_cache(tmp_path / "le", data, seed=seed, empty_last_slot=seed == 2)
    # a large reward_scale with +RM makes some logged rewards negative: the bound must hold there too
    sets = ["lea.augment_reward=bounded", f"lea.reward={str(rm).lower()}", "lea.reward_scale=2.0"]
    _, le_inputs, objective, batch, le = _setup(data, cache, *sets, rows=len(data.train))
    terms = objective.extra_terms
    got = terms.augmented_rewards(batch, le)
    table = {"click": 0.2, "purchase": 1.0}  # rl.rewards' defaults
    base = torch.tensor([table[t] for t in data.event_types])[batch["event"]]
    z_logged = _z(le_inputs, le_inputs.cache["reward"])
    r_logged = base + 2.0 * z_logged if rm else base
    assert (r_logged < 0).any() == rm
    z_aug = _z(le_inputs, le_inputs.cache["aug_rewards"])
    closeness = torch.sigmoid(z_aug - z_logged[:, None])
    expected = torch.where(r_logged[:, None] >= 0, r_logged[:, None] * closeness, r_logged[:, None] * (2 - closeness))
    torch.testing.assert_close(got, expected)
    assert (got <= r_logged[:, None]).all()  # every slot, filled or empty


def test_logged_augmented_rewards_equal_the_logged_reward(data, tmp_path: Path) -> None:
    cache = make_cache(tmp_path / "le", data)
    for rm in ("false", "true"):
        _, le_inputs, objective, batch, le = _setup(data, cache, "lea.augment_reward=logged", f"lea.reward={rm}")
        got = objective.extra_terms.augmented_rewards(batch, le)
        logged = objective.rewards.logged(batch, le)
        assert got.shape == le.aug_items.shape and torch.equal(got, logged[:, None].expand_as(got))


def test_append_builds_the_next_history_as_the_data_do() -> None:
    pad, L = 9, 4
    histories = torch.tensor([[1, 2, 3, 4],  # full window: shifts left
                              [5, 6, pad, pad],  # short: grows
                              [pad, pad, pad, pad],  # empty history (length 1, all padding)
                              [7, 8, 0, pad]])  # one short of full: fills the window
    items = torch.tensor([[0, 8], [1, 2], [3, 4], [5, 6]])
    got, lengths = append_items(histories, items, pad)
    expected = []
    for row, slots in zip(histories.tolist(), items.tolist()):
        real = [i for i in row if i != pad]
        for item in slots:
            window = (real + [item])[-L:]
            expected.append((window + [pad] * L)[:L] + [len(window)])
    assert torch.equal(torch.cat([got, lengths[:, None]], dim=1), torch.tensor(expected))


def test_append_matches_the_logged_next_states(data) -> None:
    """Appending the logged action to s gives the data's own s' (learec.data.splits), full windows included."""
    train = data.train
    state = torch.as_tensor(np.array(train.state), dtype=torch.long)
    action = torch.as_tensor(np.array(train.action), dtype=torch.long)
    got, lengths = append_items(state, action[:, None], data.n_items)
    assert (torch.as_tensor(np.array(train.length)) == state.shape[1]).any()  # some windows are full
    assert torch.equal(got, torch.as_tensor(np.array(train.next_state), dtype=torch.long))
    assert torch.equal(lengths, torch.as_tensor(np.array(train.next_length), dtype=torch.long))


@pytest.mark.parametrize("sm", [False, True])
def test_append_q_term_bootstraps_from_the_appended_history(data, tmp_path: Path, sm: bool) -> None:
    cache = make_cache(tmp_path / "le", data, empty_last_slot=True)
    sm_sets = ["lea.state=true", "lea.standardise_states=true"] if sm else []
    _, _, objective, batch, le = _setup(data, cache, "lea.augment_next_state=append", "lea.reward=true", *sm_sets)
    terms = objective.extra_terms
    main, target = objective.networks
    gamma = objective.gamma
    q = main.q_values(batch["state"], batch["length"], le=le.state)
    step = Step(batch, le, main, q, None, None, None, None, None, None, target=target, gamma=gamma)
    with torch.no_grad():
        got = terms.q_loss(step)
        reward = terms.augmented_rewards(batch, le)
        expected = torch.zeros(len(got))
        pad, L = data.n_items, batch["state"].shape[1]
        for b in range(len(got)):  # one row and slot at a time, the history built by hand
            real = [i for i in batch["state"][b].tolist() if i != pad]
            for j in range(le.aug_items.shape[1]):
                window = (real + [int(le.aug_items[b, j])])[-L:]
                hist = torch.tensor([(window + [pad] * L)[:L]])
                length = torch.tensor([len(window)])
                extra = None
                if sm:
                    extra = (le.state if batch["done"][b] else le.next_state)[b: b + 1]
                best = main.q_values(hist, length, le=extra).argmax()
                y = reward[b, j] + gamma * target.q_values(hist, length, le=extra)[0, best]
                expected[b] += le.aug_mask[b, j] * 0.5 * (y - q[b, le.aug_items[b, j]]) ** 2
        torch.testing.assert_close(got, expected)
        terms.augment_next_state = "stay"
        stay = Step(batch, le, main, q, None, None, None, None,
                    gamma * target.q_values(batch["state"], batch["length"], le=le.state).gather(
                        1, q.argmax(dim=1, keepdim=True)), None, target=target, gamma=gamma)
        assert not torch.allclose(terms.q_loss(stay), got)  # appending changes the Q-loss


@pytest.mark.parametrize("how", ["sigmoid", "softmax"])
def test_confidence_weights_the_augmented_ce_term_by_its_le_reward(data, tmp_path: Path, how: str) -> None:
    cache = make_cache(tmp_path / "le", data, empty_last_slot=True)
    _, le_inputs, objective, batch, le = _setup(data, cache, f"lea.augment_confidence={how}", "lea.augment_weight=0.5")
    logits = torch.randn(len(batch["action"]), data.n_items)
    step = Step(batch, le, None, None, logits, None, None, None, None, lambda *_: None)
    got = objective.extra_terms.actor_loss(step)
    z = _z(le_inputs, le_inputs.cache["aug_rewards"][:40])
    logp = torch.log_softmax(logits, dim=1)
    expected = torch.zeros(len(got))
    for b in range(len(got)):
        filled = [j for j in range(z.shape[1]) if le.aug_mask[b, j] > 0]
        zs = z[b, filled]
        weights = torch.sigmoid(zs) if how == "sigmoid" else len(filled) * torch.softmax(zs, dim=0)
        items = le.aug_items[b, filled]
        expected[b] = -0.5 * (logp[b, items] * weights).sum() / len(filled)
    torch.testing.assert_close(got, expected)


def test_standardised_states_have_mean_0_and_std_1_over_the_training_rows(data, tmp_path: Path) -> None:
    cache = make_cache(tmp_path / "le", data)
    raw = np.asarray(load_states(cache), dtype=np.float64)
    raw = raw * np.linspace(0.1, 3, raw.shape[1]) + 2.4  # an offset larger than the spread, as measured
    raw[:, 0] = 0.7  # and a constant dimension: standardised to 0
    arrays = {k: np.asarray(v) for k, v in _cache_arrays(cache).items()}
    arrays["state"] = raw
    from learec.env.label import write_label_cache

    write_label_cache(tmp_path / "le2" / "label", arrays, {"data": data.manifest["key"], "test": "offset"})
    _, le_inputs, _, _, _ = _setup(data, tmp_path / "le2", "lea.state=true", "lea.standardise_states=true")
    n = len(data.train)
    le = le_inputs.batch(np.arange(n), "cpu")
    states = le.state.double()
    np.testing.assert_allclose(states.mean(0).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(states[:, 1:].std(0, unbiased=False).numpy(), 1.0, atol=1e-5)
    assert torch.equal(le.state[:, 0], torch.zeros(n))
    # the next state is the next row's, standardised alike; zeros where the episode ends
    done = torch.as_tensor(np.array(data.train.done))
    torch.testing.assert_close(le.next_state[:-1][~done[:-1]], le.state[1:][~done[:-1]])
    assert torch.equal(le.next_state[done], torch.zeros_like(le.next_state[done]))
    # off: the raw states, as before
    _, plain, _, _, _ = _setup(data, tmp_path / "le2", "lea.state=true")
    stored = _cache_arrays(tmp_path / "le2")["state"]  # as the cache keeps them (it may store a narrower float)
    assert torch.equal(plain.batch(np.arange(5), "cpu").state, torch.as_tensor(stored[:5], dtype=torch.float32))


def load_states(cache: Path) -> np.ndarray:
    return _cache_arrays(cache)["state"]


def _cache_arrays(cache: Path) -> dict[str, np.ndarray]:
    from learec.env.label import load_label_cache

    loaded = load_label_cache(cache / "label")
    return {k: np.array(loaded[k]) for k in loaded.arrays}


def test_explicit_defaults_train_as_before_and_each_option_changes_the_step(data, tmp_path: Path) -> None:
    cache = make_cache(tmp_path / "le", data, empty_last_slot=True)
    common = ["lea.state=true", "lea.reward=true", "lea.align_weight=0.5"]
    before = _one_step_loss(data, cache, *common)
    defaults = _one_step_loss(data, cache, *common, "lea.augment_reward=le", "lea.augment_next_state=stay",
                              "lea.augment_confidence=none", "lea.standardise_states=false")
    assert defaults == before
    for option in ("lea.augment_reward=bounded", "lea.augment_reward=logged", "lea.augment_next_state=append",
                   "lea.augment_confidence=softmax", "lea.standardise_states=true"):
        assert _one_step_loss(data, cache, *common, option)["loss"] != before["loss"], option


@pytest.mark.parametrize("sets,message", [
    (["lea.augment=false", "lea.reward=true", "lea.augment_reward=bounded"], "needs lea.augment=true"),
    (["lea.augment_q=false", "lea.augment_next_state=append"], "lea.augment_q=true"),
    (["lea.augment=false", "lea.reward=true", "lea.augment_confidence=sigmoid"], "needs lea.augment=true"),
    (["lea.augment_weight=0", "lea.augment_confidence=softmax"], "augment_weight > 0"),
    (["lea.standardise_states=true"], "needs lea.state=true"),
    (["lea.augment_reward=high"], "augment_reward"),
])
def test_new_options_are_validated(sets: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_config(None, [*BASE, *LEA, "lea.cache=somewhere", *sets])
