"""The interface between a training method and the trainer.

An ``Objective`` owns its networks and optimisers (SQN, for instance, keeps two full network copies with
one optimiser each); the trainer only feeds it batches, asks it for the network that ranks items, and
saves/restores its state. New methods plug in by subclassing and registering in ``learec.rl``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable

import torch
from torch import nn

Batch = dict[str, torch.Tensor]


class Objective(ABC):
    @abstractmethod
    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimisation step on a batch of transitions; returns scalars to log (e.g. ``loss``)."""

    @abstractmethod
    def scorer(self) -> nn.Module:
        """The network that ranks items at evaluation: ``(histories, lengths) -> [B, n_items]``."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: networks and optimiser states."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def distribute(self, wrap: Callable[[nn.Module], nn.Module], seed: int) -> None:
        """Route the forward passes that are differentiated through ``wrap(network)`` (DistributedDataParallel,
        which averages their gradients across ranks); ``seed`` seeds any choice every rank must make alike."""
        raise NotImplementedError(f"{type(self).__name__} does not support distributed training")

    def networks_module(self) -> nn.Module:
        """Every network the objective trains (for device placement and train/eval mode)."""
        return self.scorer()

    def train(self) -> None:
        self.networks_module().train()

    def eval(self) -> None:
        self.networks_module().eval()

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.scorer().parameters())
