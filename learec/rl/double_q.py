"""The double Q-learning machinery shared by SQN, SAC, SNQN and SA2C (Xin et al., SIGIR 2020 / WSDM 2022).

As in the published code: two full network copies, each with its own optimisers; every step one copy
is picked at random as "main" (updated) and the other serves as target. The TD target is
``y = r + gamma * Q_target(s', argmax_a Q_main(s', a))``, 0 beyond ``r`` when the episode is done, and
the Q-loss is ``0.5 * (y - Q_main(s, a))^2`` (TRFL's ``double_qlearning``). The supervised head is
trained beside it with cross-entropy; subclasses decide how the CE term is weighted (``actor_weights``),
whether negatives are used, and when a second optimiser takes over.

Extensions from outside the published methods (learec.lea) plug in without branches here: side inputs
give the critic an extra input and may give the negatives; the reward source may read them; and
``ExtraTerms`` adds per-transition terms to the Q-loss, the CE loss and the total (``Step`` is what
they see of the step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from learec.rl.base import Batch, Objective, SideInputs
from learec.models.qnetwork import QNetwork
from learec.models.ranking import RankingModel, ranking_network
from learec.rl.rewards import EventTypeRewards, RewardSource

if TYPE_CHECKING:
    from learec.rl.build import BuildContext


def td_targets(reward: torch.Tensor, gamma: float, q_next_target: torch.Tensor, q_next_selector: torch.Tensor,
               done: torch.Tensor | None = None) -> torch.Tensor:
    """Double-Q one-step targets ``r + gamma * Q_target(s', argmax Q_selector(s', .))``; no bootstrap when done."""
    best = q_next_selector.argmax(dim=1, keepdim=True)
    bootstrap = q_next_target.gather(1, best).squeeze(1)
    if done is not None:
        bootstrap = bootstrap.masked_fill(done, 0.0)
    return reward + gamma * bootstrap


def sample_negatives(actions: torch.Tensor, n_items: int, k: int, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
    """``[B, k]`` items drawn uniformly from all items except each row's positive (repeats allowed).

    Drawing from ``n_items - 1`` values and shifting those ``>= positive`` up by one is exactly uniform
    over the other items, with no rejection loop.
    """
    draw = torch.randint(0, n_items - 1, (actions.shape[0], k), device=actions.device, generator=generator)
    return draw + (draw >= actions.view(-1, 1)).long()


@dataclass
class Step:
    """What one step computed, as extra loss terms see it."""

    batch: Batch
    side: SideInputs | None
    network: QNetwork  # the main copy (unwrapped)
    q: torch.Tensor  # [B, n_items] Q_main(s, .), with gradient
    logits: torch.Tensor  # [B, n_items] CE logits, with gradient
    state: torch.Tensor  # [B, h] the backbone state s_t, with gradient
    q_logged: torch.Tensor  # [B] Q_main(s, a_t), detached
    q_negatives: torch.Tensor | None  # [B, K] Q_main of the negatives, detached
    # gamma * Q_target(s, argmax Q_main(s, .)): the bootstrap of an action that leaves the user where they
    # are (negatives); only when the objective samples negatives or the extra terms ask for it
    stay_bootstrap: torch.Tensor | None
    actor_weights: Callable[[torch.Tensor, torch.Tensor], torch.Tensor | None]  # the objective's, for [B, n] actions
    # the target copy (unwrapped) and the discount, for terms that bootstrap other next states themselves
    target: QNetwork | None = None
    gamma: float = 0.0


class ExtraTerms(Protocol):
    """Per-transition ``[B]`` terms added to the double-Q loss; ``None`` adds nothing."""

    def bootstraps_in_place(self, side: SideInputs | None) -> bool:
        """Whether ``q_loss`` needs ``Step.stay_bootstrap``."""

    def q_loss(self, step: Step) -> torch.Tensor | None: ...

    def actor_loss(self, step: Step) -> torch.Tensor | None: ...

    def loss(self, step: Step) -> torch.Tensor | None: ...


class NoExtraTerms:
    """The published methods: nothing added."""

    def bootstraps_in_place(self, side: SideInputs | None) -> bool:
        return False

    def q_loss(self, step: Step) -> None:
        return None

    def actor_loss(self, step: Step) -> None:
        return None

    def loss(self, step: Step) -> None:
        return None


def _cat(first: torch.Tensor | None, second: torch.Tensor | None) -> torch.Tensor | None:
    return None if first is None or second is None else torch.cat([first, second])


def _plus(total: torch.Tensor, term: torch.Tensor | None) -> torch.Tensor:
    return total if term is None else total + term


class DoubleQObjective(Objective):
    uses_negatives = False

    def __init__(self, make_network: Callable[[], QNetwork], n_items: int, rewards: RewardSource, lr: float,
                 gamma: float, negatives: int = 10, second_lr: float | None = None, rank_by: str = "ce",
                 weight_decay: float = 0.0, extra_terms: ExtraTerms | None = None) -> None:
        self.networks = nn.ModuleList([make_network(), make_network()])
        self.n_items = n_items
        self.rewards = rewards
        self.gamma = gamma
        self.k = negatives
        self.extra_terms: ExtraTerms = extra_terms or NoExtraTerms()
        # Two optimisers per copy, as in the published code: the first for the warm-up loss, the second
        # (created fresh, so with empty Adam moments) for the loss after the switch.
        self.optimizers = [torch.optim.Adam(n.parameters(), lr=lr, weight_decay=weight_decay) for n in self.networks]
        self.second_optimizers = [torch.optim.Adam(n.parameters(), lr=second_lr or lr, weight_decay=weight_decay)
                                  for n in self.networks]
        self._scorer = RankingModel(self.networks[0], rank_by)
        self.steps = 0
        # under torchrun (distribute): DDP wrappers of the two copies, and one generator, seeded alike on
        # every rank, that picks the main copy, so all ranks update (and all-reduce) the same copy
        self._train_networks: list[nn.Module] = list(self.networks)
        self.main_generator: torch.Generator | None = None

    # --- hooks for the four methods ---------------------------------------------------------------
    def in_second_phase(self) -> bool:
        return False

    def actor_weights(self, q_actions: torch.Tensor, actions: torch.Tensor, q_logged: torch.Tensor,
                      q_negatives: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor | None:
        """``[B, n]`` weights (detached) of the CE terms of ``actions`` ``[B, n]`` whose Q-values are
        ``q_actions``; ``None`` means 1. The logged action is ``n = 1``; ``q_logged`` and ``q_negatives`` are
        the step's, for a baseline."""
        return None

    # --- one step ----------------------------------------------------------------------------------
    def train_step(self, batch: Batch, side: SideInputs | None = None) -> dict[str, float]:
        main_index = int(torch.randint(0, 2, (1,), generator=self.main_generator).item())
        main, target = self.networks[main_index], self.networks[1 - main_index]
        state, length, action = batch["state"], batch["length"], batch["action"]
        extra, extra_next = (side.state, side.next_state) if side is not None else (None, None)  # critic input
        terms = self.extra_terms
        in_place = self.uses_negatives or terms.bootstraps_in_place(side)
        reward = self.rewards.logged(batch, side)

        with torch.no_grad():
            if in_place:  # one target pass over s' and s (actions that leave the user in s bootstrap from s)
                both = target.q_values(torch.cat([batch["next_state"], state]), torch.cat([batch["next_length"], length]),
                                       le=_cat(extra_next, extra))
                q_next_target, q_cur_target = both.split(len(action))
            else:
                q_next_target = target.q_values(batch["next_state"], batch["next_length"], le=extra_next)
            q_next_main = main.q_values(batch["next_state"], batch["next_length"], le=extra_next)
            y = td_targets(reward, self.gamma, q_next_target, q_next_main, batch["done"])

        q, logits, backbone_state = self._train_networks[main_index](state, length, le=extra, return_state=True)
        q_logged = q.gather(1, action.view(-1, 1)).squeeze(1)
        loss_q = 0.5 * (y - q_logged).pow(2)
        stay_bootstrap = None
        if in_place:
            with torch.no_grad():
                stay_bootstrap = self.gamma * q_cur_target.gather(1, q.detach().argmax(dim=1, keepdim=True))

        q_neg = None
        if self.uses_negatives:
            given = side.neg_items if side is not None else None
            negatives = given if given is not None else sample_negatives(action, self.n_items, self.k)
            with torch.no_grad():
                # The user did not move: next state = current state, reward from the reward source (0).
                y_neg = self.rewards.negatives(batch, negatives, side) + stay_bootstrap
            q_neg = q.gather(1, negatives)
            loss_q = loss_q + 0.5 * (y_neg - q_neg).pow(2).sum(dim=1)

        q_logged_d, q_neg_d = q_logged.detach(), None if q_neg is None else q_neg.detach()
        step = Step(batch, side, main, q, logits, backbone_state, q_logged_d, q_neg_d, stay_bootstrap,
                    lambda q_actions, actions: self.actor_weights(q_actions, actions, q_logged_d, q_neg_d, logits),
                    target=target, gamma=self.gamma)
        loss_q = _plus(loss_q, terms.q_loss(step))  # extra terms (learec.lea's), where the objective has them

        ce = F.cross_entropy(logits, action, reduction="none")
        weight = step.actor_weights(q_logged_d.view(-1, 1), action.view(-1, 1))
        loss_ce = ce if weight is None else ce * weight.squeeze(1)
        loss_ce = _plus(loss_ce, terms.actor_loss(step))
        loss = _plus(loss_q + loss_ce, terms.loss(step))
        loss = loss.mean()

        second = self.in_second_phase()
        optimizer = (self.second_optimizers if second else self.optimizers)[main_index]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        self.steps += 1
        return {"loss": float(loss.detach()), "q_loss": float(loss_q.detach().mean()),
                "ce_loss": float(ce.detach().mean()), "main": main_index, "phase": 2 if second else 1}

    # --- bookkeeping -------------------------------------------------------------------------------
    def distribute(self, wrap: Callable[[nn.Module], nn.Module], seed: int) -> None:
        self._train_networks = [wrap(network) for network in self.networks]
        self.main_generator = torch.Generator().manual_seed(seed)

    def scorer(self) -> nn.Module:
        return self._scorer

    def networks_module(self) -> nn.Module:
        return self.networks

    def state_dict(self) -> dict[str, Any]:
        state = {"networks": self.networks.state_dict(), "steps": self.steps,
                 "optimizers": [o.state_dict() for o in self.optimizers],
                 "second_optimizers": [o.state_dict() for o in self.second_optimizers]}
        if self.main_generator is not None:
            state["main_generator"] = self.main_generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.networks.load_state_dict(state["networks"])
        self.steps = state["steps"]
        for opt, s in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(s)
        for opt, s in zip(self.second_optimizers, state["second_optimizers"]):
            opt.load_state_dict(s)
        if self.main_generator is not None and "main_generator" in state:
            self.main_generator.set_state(state["main_generator"])


def double_q_arguments(ctx: BuildContext) -> dict[str, Any]:
    """The constructor arguments every double-Q objective takes, from ``ctx`` and its ``rl:`` settings."""
    rl = ctx.settings
    rewards = ctx.rewards or EventTypeRewards(ctx.event_types, rl.rewards, rl.default_reward)
    device = ctx.device

    def make_network() -> nn.Module:
        network = ctx.make_network() if ctx.make_network is not None else ranking_network(ctx.cfg, ctx.n_items, critic=True)
        return network.to(device)

    return dict(make_network=make_network, n_items=ctx.n_items, rewards=rewards, lr=ctx.cfg.train.lr,
                gamma=rl.gamma, negatives=rl.negatives, rank_by=rl.rank_by, weight_decay=ctx.cfg.train.weight_decay,
                extra_terms=ctx.extra_terms)
