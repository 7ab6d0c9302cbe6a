"""The double Q-learning machinery shared by SQN, SAC, SNQN and SA2C (Xin et al., SIGIR 2020 / WSDM 2022).

As in the published code: two full network copies, each with its own optimisers; every step one copy
is picked at random as "main" (updated) and the other serves as target. The TD target is
``y = r + gamma * Q_target(s', argmax_a Q_main(s', a))``, 0 beyond ``r`` when the episode is done, and
the Q-loss is ``0.5 * (y - Q_main(s, a))^2`` (TRFL's ``double_qlearning``). The supervised head is
trained beside it with cross-entropy; subclasses decide how the CE term is weighted (``actor_weight``),
whether negatives are used, and when a second optimiser takes over.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from learec.models.ranking import RankingModel
from learec.rl.base import Batch, Objective
from learec.rl.networks import QNetwork
from learec.rl.rewards import RewardSource


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


def _cat(first: torch.Tensor | None, second: torch.Tensor | None) -> torch.Tensor | None:
    return None if first is None or second is None else torch.cat([first, second])


class DoubleQObjective(Objective):
    uses_negatives = False

    def __init__(self, make_network: Callable[[], QNetwork], n_items: int, rewards: RewardSource, lr: float,
                 gamma: float, negatives: int = 10, second_lr: float | None = None, rank_by: str = "ce",
                 weight_decay: float = 0.0, augment_weight: float = 0.0, augment_q: bool = True,
                 augment_rewards: Callable[[Batch], torch.Tensor] | None = None, align_weight: float = 0.0,
                 augment_weighting: str = "fixed") -> None:
        self.networks = nn.ModuleList([make_network(), make_network()])
        self.n_items = n_items
        self.rewards = rewards
        self.gamma = gamma
        self.k = negatives
        # Two optimisers per copy, as in the published code: the first for the warm-up loss, the second
        # (created fresh, so with empty Adam moments) for the loss after the switch.
        self.optimizers = [torch.optim.Adam(n.parameters(), lr=lr, weight_decay=weight_decay) for n in self.networks]
        self.second_optimizers = [torch.optim.Adam(n.parameters(), lr=second_lr or lr, weight_decay=weight_decay)
                                  for n in self.networks]
        self._scorer = RankingModel(self.networks[0], rank_by)
        self.steps = 0
        # LEA (used only when the batch carries LE inputs, see learec.rl.le_inputs)
        self.augment_weight = augment_weight
        self.augment_q = augment_q
        self.augment_rewards = augment_rewards
        self.augment_weighting = augment_weighting
        self.align_weight = align_weight
        # under torchrun (distribute): DDP wrappers of the two copies, and one generator, seeded alike on
        # every rank, that picks the main copy, so all ranks update (and all-reduce) the same copy
        self._train_networks: list[nn.Module] = list(self.networks)
        self.main_generator: torch.Generator | None = None

    # --- hooks for the four methods ---------------------------------------------------------------
    def in_second_phase(self) -> bool:
        return False

    def actor_weight(self, q_logged: torch.Tensor, q_negatives: torch.Tensor | None, logits: torch.Tensor,
                     batch: Batch) -> torch.Tensor | None:
        """Per-transition weight of the CE term (detached); ``None`` means 1."""
        return None

    def augment_actor_weight(self, q_augmented: torch.Tensor, q_logged: torch.Tensor,
                             q_negatives: torch.Tensor | None, logits: torch.Tensor, batch: Batch) -> torch.Tensor | None:
        """``[B, k]`` weights of the augmented actions' CE terms (detached), as ``actor_weight`` weighs the logged
        action's; ``None`` means 1. Used with ``lea.augment_weighting=actor``."""
        return None

    # --- one step ----------------------------------------------------------------------------------
    def train_step(self, batch: Batch) -> dict[str, float]:
        main_index = int(torch.randint(0, 2, (1,), generator=self.main_generator).item())
        main, target = self.networks[main_index], self.networks[1 - main_index]
        state, length, action = batch["state"], batch["length"], batch["action"]
        le, le_next = batch.get("le_state"), batch.get("le_next_state")  # +SM: LE states for the critic
        augmented = batch.get("le_aug_items")  # +LEA: augmented positive actions [B, k]
        aug_mask = batch.get("le_aug_mask")  # 0 where a slot holds no augmented action
        use_augmented_q = augmented is not None and self.augment_q
        reward = self.rewards.logged(batch)

        with torch.no_grad():
            if self.uses_negatives or use_augmented_q:  # one target pass over s' and s (these bootstrap from s)
                both = target.q_values(torch.cat([batch["next_state"], state]), torch.cat([batch["next_length"], length]),
                                       le=_cat(le_next, le))
                q_next_target, q_cur_target = both.split(len(action))
            else:
                q_next_target = target.q_values(batch["next_state"], batch["next_length"], le=le_next)
            q_next_main = main.q_values(batch["next_state"], batch["next_length"], le=le_next)
            y = td_targets(reward, self.gamma, q_next_target, q_next_main, batch["done"])

        q, logits, backbone_state = self._train_networks[main_index](state, length, le=le, return_state=True)
        q_logged = q.gather(1, action.view(-1, 1)).squeeze(1)
        loss_q = 0.5 * (y - q_logged).pow(2)
        if self.uses_negatives or use_augmented_q:
            with torch.no_grad():  # bootstrap of actions that leave the user where they are
                stay = q_cur_target.gather(1, q.detach().argmax(dim=1, keepdim=True))

        q_neg = None
        if self.uses_negatives:
            negatives = batch["le_neg_items"] if "le_neg_items" in batch else sample_negatives(action, self.n_items, self.k)
            with torch.no_grad():
                # The user did not move: next state = current state, reward from the reward source (0).
                y_neg = self.rewards.negatives(batch, negatives) + self.gamma * stay
            q_neg = q.gather(1, negatives)
            loss_q = loss_q + 0.5 * (y_neg - q_neg).pow(2).sum(dim=1)
        if use_augmented_q:
            # augmented actions were not taken: like negatives, the next state is the current one
            with torch.no_grad():
                y_aug = self.augment_rewards(batch) + self.gamma * stay
            sq = 0.5 * (y_aug - q.gather(1, augmented)).pow(2)
            loss_q = loss_q + (sq if aug_mask is None else sq * aug_mask).sum(dim=1)

        ce = F.cross_entropy(logits, action, reduction="none")
        weight = self.actor_weight(q_logged.detach(), None if q_neg is None else q_neg.detach(), logits, batch)
        loss_ce = ce if weight is None else ce * weight
        if augmented is not None and self.augment_weight:
            logp = torch.log_softmax(logits, dim=1).gather(1, augmented)
            mask = torch.ones_like(logp) if aug_mask is None else aug_mask
            aug_weight = None
            if self.augment_weighting == "actor":
                aug_weight = self.augment_actor_weight(q.detach().gather(1, augmented), q_logged.detach(),
                                                       None if q_neg is None else q_neg.detach(), logits, batch)
            weighted = mask if aug_weight is None else mask * aug_weight
            ce_aug = -(logp * weighted).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            loss_ce = loss_ce + self.augment_weight * ce_aug
        loss = loss_q + loss_ce
        if self.align_weight and le is not None and main.align_proj is not None:
            loss = loss + self.align_weight * (1 - F.cosine_similarity(main.align_proj(backbone_state), le, dim=1))
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
