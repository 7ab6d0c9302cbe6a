"""The supervised baseline: cross-entropy over all items for the logged next item."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from learec.rl.base import Batch, Objective, SideInputs
from learec.models.ranking import RankingModel

if TYPE_CHECKING:
    from learec.rl.build import BuildContext


class CrossEntropyObjective(Objective):
    def __init__(self, model: nn.Module, lr: float, weight_decay: float = 0.0) -> None:
        self.model = model
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay) if params else None
        self._train_model = model  # the DDP wrapper under torchrun (distribute)

    def train_step(self, batch: Batch, side: SideInputs | None = None) -> dict[str, float]:
        logits = self._train_model(batch["state"], batch["length"])
        loss = F.cross_entropy(logits, batch["action"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": float(loss.detach())}

    def distribute(self, wrap: Callable[[nn.Module], nn.Module], seed: int) -> None:
        self._train_model = wrap(self.model)

    def scorer(self) -> nn.Module:
        return self.model

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict() if self.optimizer else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.optimizer and state.get("optimizer"):
            self.optimizer.load_state_dict(state["optimizer"])


def build(ctx: BuildContext) -> CrossEntropyObjective:
    model = RankingModel.from_config(ctx.cfg, ctx.n_items, critic=False).to(ctx.device)
    return CrossEntropyObjective(model, lr=ctx.cfg.train.lr, weight_decay=ctx.cfg.train.weight_decay)

