"""The interface between a training method and the trainer.

An ``Objective`` owns its networks and optimisers (SQN, for instance, keeps two full network copies with
one optimiser each); the trainer only feeds it batches, asks it for the network that ranks items, and
saves/restores its state. A new method is a subclass in its own module, registered by name with
``learec.rl.registry.register_objective``.

A batch is the logged transitions (``Batch``); ``SideInputs`` are optional per-batch inputs from outside
the log (learec.lea reads them from the LLM environment's cache). The RL objectives see them only as an
extra critic input for ``s`` and ``s'`` and as given negative actions; everything else they mean enters
through the reward source and extra loss terms the objective is built with.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Protocol

import torch
from torch import nn

Batch = dict[str, torch.Tensor]


class SideInputs(Protocol):
    """Per-batch inputs beside the logged transitions; every field may be absent (``None``)."""

    @property
    def state(self) -> torch.Tensor | None:
        """``[B, d]`` extra critic input for the state ``s`` (QNetwork ``le=``)."""

    @property
    def next_state(self) -> torch.Tensor | None:
        """``[B, d]`` the same for the next state ``s'``."""

    @property
    def neg_items(self) -> torch.Tensor | None:
        """``[B, K]`` negative actions to use instead of uniformly sampled ones."""


class Objective(ABC):
    @abstractmethod
    def train_step(self, batch: Batch, side: SideInputs | None = None) -> dict[str, float]:
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
