"""``RankingModel``: the network that ranks items, the same in training, evaluation, export and serving.

A ranking model reads one ``network`` through one ``head``:

    SequentialRecommender   head "ce"            objective=ce
    QNetwork                head "ce" or "q"     the RL objectives (rl.rank_by; "ce" as published)
    PopularityRecommender   head "popularity"    model.backbone=pop

``from_config`` is the one place a config decides which (the objectives train the networks it builds);
a run's ``checkpoints/best.pt`` is a ranking model's ``state_dict``; ``save_pretrained`` /
``from_pretrained`` write and read it as safetensors weights plus a JSON config, no pickle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from learec.config import Config, build_config
from learec.errors import UserError
from learec.models.base import build_backbone
from learec.models.qnetwork import QNetwork
from learec.models.recommender import PopularityRecommender, SequentialRecommender
from learec.utils import atomic_write_json

FORMAT, FORMAT_VERSION = "learec-ranking-model", 1
CONFIG_FILE, WEIGHTS_FILE = "ranking_model.json", "model.safetensors"
EXPORT_AGAIN = "export the model again with `learec export RUN_DIR --out DIR`"
HEADS = {SequentialRecommender: ("ce",), QNetwork: ("ce", "q"), PopularityRecommender: ("popularity",)}


def ranking_head(cfg: Config) -> str:
    """The head that ranks for ``cfg``: popularity for ``pop``, the CE model's head, or ``rl.rank_by``."""
    if cfg.model.backbone == "pop":
        return "popularity"
    return "ce" if cfg.objective == "ce" else cfg.rl.rank_by


def ranking_network(cfg: Config, n_items: int, item_counts: torch.Tensor | None = None,
                    le_state_dim: int = 0, critic: bool | None = None) -> nn.Module:
    """The network a ranking model of ``cfg`` reads, freshly initialised (the RL objectives train two).

    ``le_state_dim`` (+SM) sizes the critic's LE projection and the alignment projection, which only
    training uses; serving builds the network with 0. ``critic``: a QNetwork (CE and Q-heads) or a plain
    CE model; by default a CE model for ``objective: ce`` only (an objective registered elsewhere says
    which it trains, and a checkpoint's weights say which it holds).
    """
    if cfg.model.backbone == "pop":
        return PopularityRecommender(item_counts if item_counts is not None else torch.zeros(n_items))
    backbone = build_backbone(cfg.model.backbone, n_items, cfg.data.history, cfg.model)
    if not (cfg.objective != "ce" if critic is None else critic):
        return SequentialRecommender(backbone, n_items, cfg.model.tie_head)
    lea = cfg.lea
    le_dim = le_state_dim if lea.state else 0
    return QNetwork(backbone, n_items, le_dim, le_dim if lea.align_weight else 0, lea.state_to_actor)


def network_config(cfg: Config) -> dict[str, Any]:
    """The config keys that define a serving network; the rest (training, LE, labelling) stays out, so a
    later change to those sections of the schema cannot make a saved model unreadable."""
    tree = cfg.to_dict()
    data = {key: tree["data"][key] for key in ("dataset", "protocol", "history")}
    return {"objective": tree["objective"], "data": data, "model": tree["model"], "rl": {"rank_by": tree["rl"]["rank_by"]}}


def le_state_dim_of(state: Mapping[str, torch.Tensor]) -> int:
    """The LE state width a ranking model's ``state_dict`` was trained with (0 without +SM), read from its
    LE projection, so a trained run loads without its LE cache."""
    for key, value in state.items():
        if key.endswith("le_proj.weight"):
            return int(value.shape[1])
    return 0


def _current_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights saved before ``RankingModel`` wrapped every network: a CE or popularity ``best.pt`` held the
    bare network's keys (``backbone.*``, ``head.*``, ``item_counts``); an RL one already ``network.*``."""
    if any(key.startswith("network.") for key in state):
        return dict(state)
    return {f"network.{key}": value for key, value in state.items()}


class RankingModel(nn.Module):
    """``(histories [B, L], lengths [B], le=None) -> scores [B, n_items]``: what ranks items for a run.

    ``le`` (LE states) is read only by a QNetwork trained with lea.state_to_actor, whose CE head needs
    them; every other ranking model needs nothing beyond the history, so it serves without the LLM.
    ``config`` is the run config the model was built from (``None`` for one made around an objective's
    network, which is trained and evaluated but not saved).
    """

    def __init__(self, network: nn.Module, head: str, config: Config | None = None, le_state_dim: int = 0) -> None:
        super().__init__()
        heads = next((h for kind, h in HEADS.items() if isinstance(network, kind)), None)
        if heads is None or head not in heads:
            valid = " or ".join(repr(h) for h in heads or ())
            raise ValueError(f"a {type(network).__name__} ranks with head {valid or '(none)'}, not {head!r}")
        self.network = network
        self.head = head
        self.config = config
        self.le_state_dim = le_state_dim
        self.n_items = network.n_items if hasattr(network, "n_items") else network.backbone.n_items

    @classmethod
    def from_config(cls, cfg: Config, n_items: int, item_counts: torch.Tensor | None = None,
                    le_state_dim: int = 0, critic: bool | None = None) -> "RankingModel":
        """The ranking model of ``cfg`` over ``n_items``, freshly initialised; ``item_counts`` for ``pop``
        (zeros otherwise, to be loaded), ``le_state_dim`` to load a +SM run's ``best.pt``, ``critic`` as
        in :func:`ranking_network`."""
        network = ranking_network(cfg, n_items, item_counts, le_state_dim, critic)
        trained_le = le_state_dim if isinstance(network, QNetwork) and cfg.lea.state else 0
        return cls(network, ranking_head(cfg), cfg, trained_le)

    def forward(self, histories: torch.Tensor, lengths: torch.Tensor, le: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(self.network, QNetwork):
            return self.network(histories, lengths)
        state = self.network.backbone(histories, lengths)
        return self.network.ce_logits(state, le) if self.head == "ce" else self.network.q_head(state)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        return super().load_state_dict(_current_keys(state_dict), strict=strict, assign=assign)

    # --- serving -----------------------------------------------------------------------------------
    def for_serving(self) -> "RankingModel":
        """A copy, in eval mode on the CPU, holding only what ranking reads: training-only parts (the critic's LE
        projection, the alignment projection) stay behind.

        Both score the same random histories; a model whose ranking the copy would not reproduce is refused
        here rather than served with different answers.
        """
        if self.config is None:
            raise ValueError("only a ranking model made by from_config or from_pretrained knows its config")
        if getattr(self.network, "actor_le_proj", None) is not None:
            raise UserError("this model's ranking head reads the LLM environment's state of each history "
                            "(lea.state_to_actor), so it cannot be served without the LLM",
                            "serve a run trained with lea.state_to_actor=false")
        counts = self.network.item_counts.cpu() if isinstance(self.network, PopularityRecommender) else None
        served = RankingModel.from_config(self.config, self.n_items, counts).eval()
        state, wanted = self.state_dict(), served.state_dict()
        missing = [k for k in wanted if k not in state]
        if missing:
            raise UserError(f"the trained network lacks {missing[:5]}, which serving needs",
                            "export with the learec version that trained the run")
        served.load_state_dict({k: state[k].detach().cpu() for k in wanted}, strict=True)
        if not isinstance(self.network, PopularityRecommender):  # popularity reads no history
            histories, lengths = _random_histories(self.n_items, self.config.data.history)
            was_training = self.training
            self.eval()
            with torch.no_grad():
                device = next(self.parameters()).device
                same = torch.allclose(served(histories, lengths),
                                      self(histories.to(device), lengths.to(device)).cpu(), atol=1e-5, rtol=1e-5)
            self.train(was_training)
            if not same:
                raise UserError("the serving copy of the model does not reproduce the run's scores",
                                "this model ranks with more than its backbone and head; it cannot be served "
                                "without the training environment")
        return served

    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``model.safetensors`` and ``ranking_model.json`` (format, n_items, head, network config)."""
        from safetensors.torch import save_model

        if self.config is None or self.le_state_dim:
            raise ValueError("save the for_serving() copy of a ranking model (one without training-only parts)")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / f".{WEIGHTS_FILE}.tmp"
        save_model(self, str(tmp))  # handles the weights a tied head shares with the item embedding
        tmp.replace(path / WEIGHTS_FILE)
        atomic_write_json(path / CONFIG_FILE, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                               "n_items": self.n_items, "head": self.head,
                                               "config": network_config(self.config)})
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "RankingModel":
        """The model ``save_pretrained`` wrote to ``path``, in eval mode on the CPU."""
        from safetensors import SafetensorError
        from safetensors.torch import load_model

        path = Path(path)
        spec = _read_spec(path / CONFIG_FILE)
        cfg = build_config(spec["config"], source=str(path / CONFIG_FILE))
        model = cls.from_config(cfg, int(spec["n_items"]))
        if model.head != spec.get("head"):
            raise UserError(f"{path / CONFIG_FILE} names head {spec.get('head')!r}, its config ranks with "
                            f"{model.head!r}", "export the model again")
        if not (path / WEIGHTS_FILE).is_file():
            raise UserError(f"{path} lacks {WEIGHTS_FILE}", EXPORT_AGAIN)
        try:
            load_model(model, str(path / WEIGHTS_FILE), strict=True, device="cpu")
        except (SafetensorError, RuntimeError, OSError) as err:
            raise UserError(f"{path / WEIGHTS_FILE} does not fit the network of {path / CONFIG_FILE}: {err}",
                            EXPORT_AGAIN) from None
        return model.eval()


def _read_spec(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path.parent} lacks {path.name}", EXPORT_AGAIN)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON: {err}", "export the model again") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT or not isinstance(spec.get("config"), dict):
        raise UserError(f"{path} is not a learec ranking model config", "export the model again")
    if spec.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} has ranking model format version {spec.get('format_version')}; this learec reads "
                        f"version {FORMAT_VERSION}", "export the run again with this version of learec")
    if isinstance(spec.get("n_items"), bool) or not isinstance(spec.get("n_items"), int) or spec["n_items"] < 1:
        raise UserError(f"{path}: n_items must be a positive integer", "export the model again")
    return spec


def _random_histories(n_items: int, history: int, rows: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-aligned, padded random histories (the training layout), the same on every call."""
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, history + 1, (rows,), generator=gen)
    histories = torch.randint(0, n_items, (rows, history), generator=gen)
    histories[torch.arange(history).unsqueeze(0) >= lengths.unsqueeze(1)] = n_items
    return histories, lengths
