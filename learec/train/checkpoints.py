"""Reading a run's trained ranking model back from its checkpoints, without building its objective.

``best.pt`` is the ranking model's state dict; ``last.pt`` holds the objective's whole state (networks,
optimisers, RNG), whose ranking network is the CE model or the first of the RL network copies. Both are
read without unpickling (:func:`learec.utils.load_torch_file`). ``learec evaluate`` and ``learec export``
both come through here.
"""

from __future__ import annotations

from pathlib import Path

import torch

from learec.config import Config
from learec.errors import UserError
from learec.models.ranking import RankingModel, le_state_dim_of
from learec.utils import error_summary, load_torch_file


def checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    """The ranking model's weights in ``path`` (a run's best.pt or last.pt)."""
    other = "last" if path.stem == "best" else "best"
    hint = (f"use --checkpoint {other} if that one loads, or retrain the run: "
            f"`learec train --config {path.parent.parent / 'config.yaml'} --run-dir NEW_DIR`")
    state = load_torch_file(path, hint)
    try:  # a file that loads safely may still be no learec checkpoint
        if "objective" not in state:
            weights = state
        elif "model" in state["objective"]:
            weights = state["objective"]["model"]
        else:
            weights = {f"network.{key[2:]}": value for key, value in state["objective"]["networks"].items()
                       if key.startswith("0.")}
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
            raise TypeError("not a mapping of names to tensors")
    except (KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{path} is not a learec checkpoint ({error_summary(err)})", hint) from None
    return weights


def load_trained_model(cfg: Config, run_dir: Path, n_items: int, item_counts: torch.Tensor,
                       checkpoint: str = "best") -> RankingModel:
    """The run's ranking model as trained, on the CPU, with the weights of ``checkpoints/{checkpoint}.pt``.

    A +SM critic's LE projection is sized from the checkpoint, so no LE cache is needed.
    """
    if cfg.model.backbone == "pop":  # nothing trained: the popularity comes from the data
        return RankingModel.from_config(cfg, n_items, item_counts)
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    if not path.is_file():
        raise UserError(f"{path} does not exist",
                        "train the run first (`learec train`), or use the other checkpoint (best/last)")
    weights = checkpoint_weights(path)
    # the weights say which network was trained (a Q-head: the RL family's), whatever the objective's name
    critic = any(".q_head." in key for key in weights)
    model = RankingModel.from_config(cfg, n_items, item_counts, le_state_dim=le_state_dim_of(weights), critic=critic)
    try:
        model.load_state_dict(weights, strict=True)
    except (RuntimeError, KeyError, ValueError) as err:
        raise UserError(f"{path} does not fit this run's networks ({error_summary(err)})",
                        "use the other checkpoint (--checkpoint best|last), or retrain the run with this "
                        "learec version") from None
    return model
