"""Experiment configuration: one YAML file is the whole record of an experiment.

The schema is a tree of pydantic models that forbid unknown keys, so a typo is an error rather than a
silently ignored setting. ``load_config`` layers: built-in defaults < YAML file < ``--set a.b=value``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from learec.data.loaders.options import LoaderOptions
from learec.errors import UserError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    dataset: str = "movielens-100k"
    raw: str | None = Field(None, description="directory or file with the raw data; default: the fetched copy")
    protocol: Literal["sqn", "loo"] = "loo"
    history: int = Field(50, ge=1, description="items kept in a state (the last L)")
    min_user_interactions: int = Field(0, ge=0, description="k-core: users with fewer are dropped")
    min_item_interactions: int = Field(0, ge=0, description="k-core: items with fewer are dropped")
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = Field(0, ge=0)
    text_template: str | None = Field(None, description="item text, e.g. '{title} ({year}), genres: {genres}'")
    loaders: LoaderOptions = Field(default_factory=LoaderOptions, description="per-dataset loader settings "
                                   "(README, Datasets): data.loaders.<dataset>.<key>")

    @field_validator("split")
    @classmethod
    def _split_sums_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if abs(sum(v) - 1.0) > 1e-6 or min(v) < 0:
            raise ValueError("split fractions must be non-negative and sum to 1")
        return v


class GRU4RecConfig(_Strict):
    layers: int = Field(1, ge=1)


class CaserConfig(_Strict):
    filter_heights: list[int] = [2, 3, 4]
    horizontal_filters: int = Field(16, ge=1)
    vertical_filters: int = Field(1, ge=1)


class NextItNetConfig(_Strict):
    kernel_size: int = Field(3, ge=2)
    dilations: list[int] = [1, 2, 1, 2, 1, 2]


class SASRecConfig(_Strict):
    blocks: int = Field(1, ge=1)
    heads: int = Field(1, ge=1)


class ModelConfig(_Strict):
    backbone: Literal["gru4rec", "caser", "nextitnet", "sasrec", "pop"] = "sasrec"
    hidden: int = Field(64, ge=1, description="embedding and hidden size")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    tie_head: bool = Field(False, description="CE head = dot product with the item embeddings (+ bias), as in "
                           "RecBole/SASRec, instead of SQN's separate linear layer")
    gru4rec: GRU4RecConfig = GRU4RecConfig()
    caser: CaserConfig = CaserConfig()
    nextitnet: NextItNetConfig = NextItNetConfig()
    sasrec: SASRecConfig = SASRecConfig()


class TrainConfig(_Strict):
    epochs: int = Field(50, ge=0)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(0.001, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    eval_every: int = Field(1, ge=1, description="validate every this many epochs")
    patience: int = Field(5, ge=0, description="stop after this many validations without improvement; 0 = never")
    checkpoint_every_steps: int = Field(0, ge=0, description="also checkpoint mid-epoch; 0 = at epoch ends only")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: torch's choice")
    device: str = "cpu"
    progress: bool = True


class EvalConfig(_Strict):
    ks: list[int] = [5, 10, 20]
    batch_size: int = Field(1024, ge=1)
    exclude_seen: bool = Field(False, description="mask items of the state window (off in the published protocol)")
    metric: str = Field("ndcg@10", description="validation metric for model selection, e.g. ndcg@10 or "
                        "purchase/ndcg@10")

    @model_validator(mode="after")
    def _metric_is_computed(self) -> "EvalConfig":
        name = self.metric.split("/")[-1]
        kind, _, k = name.partition("@")
        if kind not in ("hr", "ndcg") or not k.isdigit() or int(k) not in self.ks:
            raise ValueError(f"eval.metric {self.metric!r} is not computed: use hr@k or ndcg@k with k in "
                             f"eval.ks={self.ks} (optionally prefixed by an event type, e.g. purchase/ndcg@10)")
        return self


class RLConfig(_Strict):
    """Settings of the offline RL objectives (SQN, SAC, SNQN, SA2C); defaults from the published code."""

    gamma: float = Field(0.5, ge=0.0, le=1.0, description="discount")
    rewards: dict[str, float] = Field(default_factory=lambda: {"click": 0.2, "purchase": 1.0},
                                      description="reward of the logged action by event type")
    default_reward: float = Field(1.0, description="reward for event types missing from `rewards` (single-type data)")
    negatives: int = Field(10, ge=1, description="SNQN/SA2C: uniform negative actions per transition")
    warmup_steps: int = Field(3000, ge=0, description="SA2C: SNQN steps before the advantage-weighted phase")
    sac_warmup_steps: int = Field(0, ge=0, description="SAC: SQN steps before the Q-weighted phase")
    actor_lr: float = Field(0.001, gt=0, description="SA2C: learning rate of the fresh optimiser after warm-up")
    advantage_clip: tuple[float, float] = (0.0, 10.0)
    off_policy_correction: bool = Field(False, description="SA2C: weight the actor term by pi(a|s)/popularity(a)")
    correction_clip: float = Field(10.0, gt=0, description="upper clip of the off-policy weight")
    rank_by: Literal["ce", "q"] = Field("ce", description="which head ranks items at evaluation")


class Config(_Strict):
    seed: int = Field(0, ge=0)
    objective: Literal["ce", "sqn", "sac", "snqn", "sa2c"] = "ce"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    rl: RLConfig = RLConfig()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def save(self, path: str | Path) -> None:
        from learec.utils import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a","b","c"], value); the value is read as YAML (``3``, ``0.1``, ``true``, ``[1,2]``)."""
    if "=" not in item:
        raise UserError(f"--set {item!r} is not of the form key.path=value", "write e.g. --set train.epochs=5")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _apply_override(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"--set {'.'.join(path)}: '{'.'.join(path[: i + 1])}' is a value, not a section")
        node = child
    node[path[-1]] = value


def _format_validation_error(err: ValidationError, source: str) -> UserError:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown config key '{where}'")
        else:
            got = e.get("input")
            lines.append(f"'{where}': {e['msg']}" + ("" if isinstance(got, dict) else f" (got {got!r})"))
    return UserError(
        f"Invalid configuration ({source}): " + "; ".join(lines),
        "check the key names and values against `learec config show` (prints every key with its default)",
    )


def build_config(tree: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise _format_validation_error(err, source) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Config file {path} does not exist", "give the path of a YAML file, e.g. configs/ml100k_sasrec.yaml")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"Config file {path} is not valid YAML: {err}") from None
    if not isinstance(tree, dict):
        raise UserError(f"Config file {path} must hold a mapping of keys to values at the top level")
    return tree


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file (if any), then ``--set`` overrides, validated as a whole."""
    tree: dict[str, Any] = read_yaml(path) if path else {}
    tree = copy.deepcopy(tree)
    for item in overrides or []:
        keys, value = parse_override(item)
        _apply_override(tree, keys, value)
    return build_config(tree, source=str(path) if path else "defaults")


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs between two config trees (b old, a new)."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {vb!r} -> {va!r}")
    return out
