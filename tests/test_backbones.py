"""Backbones: shapes, padding convention, causality, gradients and a tiny learning check."""

from __future__ import annotations

import pytest
import torch

from learec.config import ModelConfig, load_config
from learec.errors import UserError
from learec.models import BACKBONES, Backbone, SequentialRecommender, build_backbone, register
from learec.models.recommender import PopularityRecommender

N, L, H, B = 50, 8, 16, 4
PAD = N
NAMES = ["gru4rec", "caser", "nextitnet", "sasrec"]
CAUSAL = ["gru4rec", "nextitnet", "sasrec"]


def cfg(**kw: object) -> ModelConfig:
    base = {"hidden": H, "dropout": 0.1, "nextitnet": {"dilations": [1, 2]}}
    base.update(kw)
    return ModelConfig.model_validate(base)


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-aligned histories; the last row is an empty history (all padding, length 1)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([L, 3, 1, 1])
    hist = torch.randint(0, N, (B, L), generator=g)
    hist[torch.arange(L).expand(B, L) >= lengths[:, None]] = PAD
    hist[3] = PAD
    return hist, lengths


def make(name: str, **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone(name, N, L, cfg(**kw)).eval()


def test_registry_names() -> None:
    assert sorted(BACKBONES) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_shape_finite_and_embedding(name: str) -> None:
    net = make(name)
    hist, lengths = batch()
    out = net(hist, lengths)
    assert out.shape == (B, net.out_dim)
    assert torch.isfinite(out).all()
    assert isinstance(net.item_embedding, torch.nn.Embedding)
    assert net.item_embedding.num_embeddings == N + 1 and net.item_embedding.padding_idx == PAD


def test_caser_out_dim() -> None:
    net = make("caser", caser={"filter_heights": [2, 3], "horizontal_filters": 5, "vertical_filters": 2})
    assert net.out_dim == 5 * 2 + 2 * H
    assert net(*batch()).shape == (B, net.out_dim)


def test_caser_filter_taller_than_window() -> None:
    torch.manual_seed(0)
    net = build_backbone("caser", N, 2, cfg(caser={"filter_heights": [3]})).eval()
    out = net(torch.tensor([[1, PAD], [4, 5]]), torch.tensor([1, 2]))
    assert out.shape == (2, net.out_dim) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_ignores_positions_after_length(name: str) -> None:
    net = make(name)
    hist, lengths = batch()
    other = hist.clone()
    beyond = torch.arange(L).expand(B, L) >= lengths[:, None]
    other[beyond] = torch.randint(0, N, (int(beyond.sum()),))  # real ids where padding was
    with torch.no_grad():
        torch.testing.assert_close(net(hist, lengths), net(other, lengths))


def test_caser_mask_zeroes_padding_embedding() -> None:
    net = make("caser")
    hist, lengths = batch()
    with torch.no_grad():
        ref = net(hist, lengths)
        net.item_embedding.weight[PAD] = torch.randn(H)
        torch.testing.assert_close(net(hist, lengths), ref)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_reaches_item_embedding(name: str) -> None:
    net = make(name).train()
    net(*batch()).sum().backward()
    grad = net.item_embedding.weight.grad
    assert grad is not None and grad[:N].abs().sum() > 0


def test_gru4rec_matches_unpadded_loop() -> None:
    net = make("gru4rec", gru4rec={"layers": 2})
    hist, lengths = batch()
    with torch.no_grad():
        out = net(hist, lengths)
        for i in range(B):
            prefix = hist[i, : lengths[i]].unsqueeze(0)
            seq, _ = net.gru(net.item_embedding(prefix))
            torch.testing.assert_close(out[i], seq[0, -1])


def test_gru4rec_wider_gru_is_projected_back_and_tieable() -> None:
    net = make("gru4rec", gru4rec={"hidden": 40})
    hist, lengths = batch()
    assert net.gru.hidden_size == 40 and net.out_dim == net.item_embedding.embedding_dim
    with torch.no_grad():
        out = net(hist, lengths)
        for i in range(B):
            seq, _ = net.gru(net.item_embedding(hist[i, : lengths[i]].unsqueeze(0)))
            torch.testing.assert_close(out[i], net.dense(seq[0, -1]))
    model = SequentialRecommender(net, N, tie_head=True)
    assert model(hist, lengths).shape == (B, N)


def test_nextitnet_causality_within_real_items() -> None:
    net = make("nextitnet")
    hist = torch.randint(0, N, (1, L))
    changed = hist.clone()
    changed[0, 5:] = (hist[0, 5:] + 1) % N  # perturb real items after position 4
    with torch.no_grad():
        for t in range(1, 6):
            length = torch.tensor([t])
            torch.testing.assert_close(net(hist, length), net(changed, length))
        assert not torch.allclose(net(hist, torch.tensor([6])), net(changed, torch.tensor([6])))


def test_sasrec_heads_must_divide_hidden() -> None:
    with pytest.raises(UserError, match="heads"):
        build_backbone("sasrec", N, L, cfg(sasrec={"heads": 3}))
    assert build_backbone("sasrec", N, L, cfg(sasrec={"heads": 4, "blocks": 2}))(*batch()).shape == (B, H)


def test_unknown_backbone() -> None:
    with pytest.raises(UserError, match="gru4rec"):
        build_backbone("nope", N, L, cfg())


@pytest.mark.parametrize("name", NAMES)
def test_recommender_learns_toy_task(name: str) -> None:
    """Next item = last item + 1 (mod N): 30 Adam steps on a fixed batch must lower the CE loss."""
    torch.manual_seed(0)
    model = SequentialRecommender(build_backbone(name, N, L, cfg()), N)
    lengths = torch.randint(1, L + 1, (64,))
    hist = torch.randint(0, N, (64, L))
    hist[torch.arange(L).expand(64, L) >= lengths[:, None]] = PAD
    target = (hist[torch.arange(64), lengths - 1] + 1) % N
    loss_fn = torch.nn.CrossEntropyLoss()

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            logits = model(hist, lengths)
        assert logits.shape == (64, N)
        return loss_fn(logits, target).item()

    before = eval_loss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(30):
        opt.zero_grad()
        loss_fn(model(hist, lengths), target).backward()
        opt.step()
    assert eval_loss() < before - 0.5
    assert model.state(hist, lengths).shape == (64, model.backbone.out_dim)


def test_popularity_recommender() -> None:
    pop = PopularityRecommender(torch.tensor([3.0, 1.0, 7.0]))
    hist, lengths = torch.tensor([[0, 3], [1, 2]]), torch.tensor([1, 2])
    scores = pop(hist, lengths)
    assert scores.shape == (2, 3) and scores[1].tolist() == [3.0, 1.0, 7.0]
    assert list(pop.parameters()) == []
    scores[0, 0] = -1  # callers may mask in place without corrupting the counts
    assert pop.item_counts[0] == 3.0


def test_sasrec_attention_equals_torch_sdpa() -> None:
    from learec.models.sasrec import MaskDropout, causal_attention

    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(3, 2, 7, 8, generator=g) for _ in range(3))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(causal_attention(q, k, v, MaskDropout(0.5).eval()), expected)


def test_mask_dropout_keeps_with_probability_1_minus_p_and_rescales() -> None:
    from learec.models.sasrec import MaskDropout

    torch.manual_seed(0)
    drop = MaskDropout(0.3).train()
    x = torch.ones(200_000, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.005
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))
    y.sum().backward()  # the gradient flows through kept entries only, with the same scale
    torch.testing.assert_close(x.grad, y.detach())
    assert torch.equal(drop.eval()(x), x) and torch.equal(MaskDropout(0.0).train()(x), x)


# --- the registry is the one list of backbones --------------------------------------------------------


class _MeanOfItems(Backbone):
    """A backbone a plugin could register: the mean embedding of the real items of the history."""

    def __init__(self, n_items: int, max_len: int, cfg: ModelConfig) -> None:
        super().__init__(n_items, max_len, cfg)
        self.out_dim = cfg.hidden

    def forward(self, histories: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = self.padding_mask(histories)
        return (self.item_embedding(histories) * mask).sum(1) / mask.sum(1).clamp(min=1)


@pytest.fixture()
def mean_backbone():
    register("test-mean")(_MeanOfItems)
    yield "test-mean"
    BACKBONES.unregister("test-mean")


def test_unknown_backbone_is_refused_by_the_config_naming_the_registered_ones() -> None:
    listed = "'model.backbone': not a registered backbone: use one of caser, gru4rec, nextitnet, sasrec, pop"
    with pytest.raises(UserError, match=listed + " \\(got 'bert'\\)"):
        load_config(None, ["model.backbone=bert"])


def test_a_registered_backbone_is_accepted_by_the_config_and_built(mean_backbone: str) -> None:
    from learec.rl import SNQN, build_objective

    config = load_config(None, [f"model.backbone={mean_backbone}", f"model.hidden={H}", f"data.history={L}",
                                "objective=snqn"])
    assert mean_backbone in BACKBONES.choices()
    assert isinstance(build_backbone(config.model.backbone, N, L, config.model), _MeanOfItems)
    objective = build_objective(config, N, torch.ones(N), ["interaction"])
    assert isinstance(objective, SNQN) and objective.scorer()(*batch()).shape == (B, N)


def test_registering_pop_or_a_taken_name_is_refused() -> None:
    with pytest.raises(ValueError, match="popularity"):
        register("pop")
    assert BACKBONES["sasrec"].__name__ == "SASRec"  # loads the built-in, which registers itself
    with pytest.raises(ValueError, match="already registered"):
        register("sasrec")(_MeanOfItems)


def test_the_config_validates_backbones_without_loading_torch() -> None:
    import subprocess
    import sys

    code = "import sys, learec.config; assert 'torch' not in sys.modules, 'learec.config imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
