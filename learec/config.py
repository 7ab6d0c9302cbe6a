"""Experiment configuration: one YAML file is the whole record of an experiment.

The schema is a tree of pydantic models that forbid unknown keys, so a typo is an error rather than a
silently ignored setting. ``load_config`` layers: built-in defaults < YAML file < ``--set a.b=value``.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from learec.data.loaders.options import LoaderOptions
from learec.errors import UserError
from learec.models.registry import BACKBONES
from learec.rl.registry import (CRITIC, NEGATIVES, WEIGHTED_ACTOR, filled_sections, has_trait, objective_names,
                                objective_spec)


class _Strict(BaseModel):
    # inf/nan are never a setting: a learning rate of .inf would train to NaN and write zeros
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    # fields added after runs were keyed by this section's dump: they enter key_dump() only when set off
    # their default, so the runs made before they existed keep their keys
    keyed_when_set: ClassVar[frozenset[str]] = frozenset()
    # how the work is executed, not what it computes (beyond float rounding, as a thread count): never keyed,
    # so a run may resume under another value; each is also in RESULT_NEUTRAL_SETTINGS (reports, pipelines)
    unkeyed: ClassVar[frozenset[str]] = frozenset()

    def key_dump(self, **kwargs: Any) -> dict[str, Any]:
        """``model_dump(**kwargs)`` less the ``unkeyed`` fields and the ``keyed_when_set`` fields that hold
        their default: what stage keys and weight hashes are made from."""
        tree = self.model_dump(**kwargs)
        for name in self.unkeyed:
            tree.pop(name, None)
        for name in self.keyed_when_set:
            if getattr(self, name) == type(self).model_fields[name].default:
                tree.pop(name, None)
        return tree


# every seed reaches torch.manual_seed, which takes at most 64 bits
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]


# The torch device names learec runs on (torch's own syntax, limited to these kinds). Only the name is
# checked here: whether the device is present is checked when a run starts (learec.devices), so a config
# written on a GPU machine still loads, shows and edits on one without.
_DEVICE_NAME = re.compile(r"cpu|mps|cuda(:(0|[1-9][0-9]*))?")


def _check_device_name(name: str) -> str:
    if not _DEVICE_NAME.fullmatch(name):
        raise ValueError("not a device learec runs on: use cpu, cuda, cuda:N (N = 0, 1, ...) or mps")
    return name


class DataConfig(_Strict):
    dataset: str = "movielens-100k"
    raw: str | None = Field(None, description="directory or file with the raw data; default: the fetched copy")
    protocol: Literal["sqn", "loo"] = "loo"
    history: int = Field(50, ge=1, description="items kept in a state (the last L)")
    min_user_interactions: int = Field(0, ge=0, description="k-core: users with fewer are dropped")
    min_item_interactions: int = Field(0, ge=0, description="k-core: items with fewer are dropped")
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: Seed = 0
    text_template: str | None = Field(None, description="item text, e.g. '{title} ({year}), genres: {genres}'. "
                                      "An empty field takes its separator with it (the text back to the previous field, or "
                                      "to the next one for a first field) and empty '()' go: '{title}, by {brand}' "
                                      "without a brand reads 'Title'")
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
    hidden: int | None = Field(None, ge=1, description="GRU hidden size; default model.hidden. When it differs, "
                               "a linear layer maps the GRU output back to model.hidden (RecBole's GRU4Rec)")


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
    backbone: str = Field("sasrec", description="a registered backbone (learec.models.registry: gru4rec, caser, "
                          "nextitnet, sasrec, or one a plugin registers) or pop (popularity, no network)")
    hidden: int = Field(64, ge=1, description="embedding and hidden size")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    tie_head: bool = Field(False, description="CE head = dot product with the item embeddings (+ bias), as in "
                           "RecBole/SASRec, instead of SQN's separate linear layer")
    gru4rec: GRU4RecConfig = GRU4RecConfig()
    caser: CaserConfig = CaserConfig()
    nextitnet: NextItNetConfig = NextItNetConfig()
    sasrec: SASRecConfig = SASRecConfig()

    @field_validator("backbone")
    @classmethod
    def _backbone_is_registered(cls, v: str) -> str:
        if v not in BACKBONES.choices():
            raise ValueError(f"not a registered backbone: use one of {', '.join(BACKBONES.choices())}")
        return v


class TrainConfig(_Strict):
    epochs: int = Field(50, ge=0)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(0.001, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    eval_every: int = Field(1, ge=1, description="validate every this many epochs")
    patience: int = Field(5, ge=0, description="stop after this many validations without improvement; 0 = never")
    min_epochs: int = Field(0, ge=0, description="early stopping ends no run before this many epochs: a warm-up in "
                            "which no improvement is expected (the best epoch is still tracked); 0 = none")
    checkpoint_every_steps: int = Field(0, ge=0, description="also checkpoint mid-epoch; 0 = at epoch ends only")
    max_steps: int = Field(0, ge=0, description="end training after this many steps (smoke runs, benchmarks): "
                           "validated once there, then finished; 0 = no limit")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: torch's choice")
    device: str = Field("cpu", description="cpu, cuda (under torchrun: each rank's GPU), cuda:N or mps")
    progress: bool = True

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        return _check_device_name(v)


class EvalConfig(_Strict):
    ks: list[Annotated[int, Field(ge=1)]] = Field([5, 10, 20], min_length=1)
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
    warmup_steps: int | None = Field(3000, ge=0, description="SA2C: SNQN steps before the advantage-weighted phase "
                                     "(null when warmup_epochs gives the warm-up)")
    warmup_epochs: float | None = Field(None, ge=0, description="SA2C: the warm-up in epochs instead of steps, turned "
                                        "into round(epochs x batches per epoch) steps when training starts; give it "
                                        "or warmup_steps, not both")
    sac_warmup_steps: int = Field(0, ge=0, description="SAC: SQN steps before the Q-weighted phase")
    actor_lr: float = Field(0.001, gt=0, description="SA2C: learning rate of the fresh optimiser after warm-up")
    advantage_clip: tuple[float, float] = (0.0, 10.0)
    off_policy_correction: bool = Field(False, description="SA2C: weight the actor term by pi(a|s)/popularity(a)")
    correction_clip: float = Field(10.0, gt=0, description="upper clip of the off-policy weight")
    rank_by: Literal["ce", "q"] = Field("ce", description="which head ranks items at evaluation")

    @model_validator(mode="before")
    @classmethod
    def _one_warmup(cls, tree: Any) -> Any:
        # warmup_steps has a default, so a file that gives warmup_epochs alone leaves it null (and a saved
        # config.yaml holds it null); giving both is ambiguous and refused
        if isinstance(tree, dict) and tree.get("warmup_epochs") is not None:
            if tree.get("warmup_steps") is not None:
                raise ValueError(f"rl.warmup_steps ({tree['warmup_steps']}) and rl.warmup_epochs "
                                 f"({tree['warmup_epochs']}) both set the SA2C warm-up: give one of them (drop "
                                 "warmup_steps, or --set rl.warmup_steps=null)")
            tree = {**tree, "warmup_steps": None}
        return tree

    @model_validator(mode="after")
    def _some_warmup(self) -> "RLConfig":
        if self.warmup_steps is None and self.warmup_epochs is None:
            raise ValueError("rl.warmup_steps is null and rl.warmup_epochs unset: give the SA2C warm-up in one of them")
        return self

    def sa2c_warmup_steps(self, batches_per_epoch: int | None) -> int:
        """The warm-up in steps: ``warmup_steps``, or ``warmup_epochs`` x ``batches_per_epoch`` rounded half up."""
        if self.warmup_epochs is None:
            assert self.warmup_steps is not None  # _some_warmup
            return self.warmup_steps
        if batches_per_epoch is None:
            raise ValueError("rl.warmup_epochs needs the number of batches per epoch to become steps")
        return int(self.warmup_epochs * batches_per_epoch + 0.5)


class ItemTokenConfig(_Strict):
    """Item tokens (textual inversion): one input embedding per item, learned with the LM frozen."""

    describe: str = Field(" is {text}.", description="what the LM must generate after the item token; "
                          "{text} is the item text, e.g. ' is the movie {text}.'")
    epochs: int = Field(3, ge=0)
    lr: float = Field(0.01, gt=0)
    batch_size: int = Field(32, ge=1)
    max_text_tokens: int = Field(48, ge=1, description="longer descriptions are cut")
    eval_items: int = Field(256, ge=1, description="items (a fixed random sample) on which NLL is reported")
    init: Literal["describe", "text"] = Field("describe", description="start of each item token: the mean "
                                              "embedding of its whole description (describe: template words "
                                              "included, which all items share) or of its item text alone")
    patience: int = Field(0, ge=0, description="stop when the description NLL of the eval_items sample has not "
                          "improved for this many epochs, and keep the tokens of its best epoch (epochs is then the "
                          "budget); 0 = off, all epochs. Every item needs its token, so the sample is trained on "
                          "too: this stops training once it converges (or once a too high lr makes it worse), it "
                          "measures no generalisation")

    keyed_when_set: ClassVar[frozenset[str]] = frozenset({"init", "patience"})


class LEModelConfig(_Strict):
    """The LE model: LoRA adapters on the LM plus a state projection and a reward score head."""

    prompt: str = Field("A user's items, oldest first:", description="text before the user's item tokens")
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "v_proj"]
    state_dim: int = Field(64, ge=1, description="width of the projected LE state (and item keys)")
    window: int = Field(64, ge=2, description="items in one LM pass; labelling sees the last window/2..window")
    key_bias: bool = Field(True, description="item_proj has a bias, a part shared by every item key (false: "
                           "none, so keys differ by the item tokens alone)")
    center_keys: bool = Field(False, description="subtract the mean item key over the catalogue before the cosine")
    item_residual: bool = Field(False, description="add a learned per-item key vector (zero at the start) to "
                                "item_proj(item token)")
    item_bias: Literal["none", "zero", "log_popularity"] = Field(
        "none", description="a learned per-item scalar added to the state model's cosine scores, a popularity "
        "prior that cosines of centred keys cannot hold, and its start: 'zero', or 'log_popularity' (the log "
        "training count, centred and scaled so that the state loss starts from popularity's logits)")

    keyed_when_set: ClassVar[frozenset[str]] = frozenset({"key_bias", "center_keys", "item_residual", "item_bias"})


class LETrainConfig(_Strict):
    """Training of the LE state and reward models on a subset of training users."""

    user_fraction: float = Field(0.1, gt=0, le=1, description="share of training users the LE is trained on")
    epochs: int = Field(5, ge=0, description="passes over the subset, one random window per user each")
    lr: float = Field(0.001, gt=0)
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="with steps: 'cosine' = a linear warm-up over warmup_steps, then a cosine decay "
        "of every learning rate (lr, token_lr) to 0 at the end of the budget")
    warmup_steps: int = Field(0, ge=0, description="with lr_schedule=cosine: steps of linear warm-up from 0")
    batch_users: int = Field(8, ge=1)
    state_negatives: int = Field(64, ge=0, description="K sampled negatives of the sampled-softmax state loss; 0 = a "
                                 "full softmax over every item (what full-ranking evaluation measures)")
    temperature: float = Field(0.1, gt=0, description="of the cosine similarities in the state loss")
    learn_temperature: bool = Field(False, description="learn the temperature (as its log), starting at temperature")
    steps: int = Field(0, ge=0, description="a step budget instead of epochs: each step takes batch_users random "
                       "users of the subset and windows_per_user random windows of each; 0 = epochs")
    windows_per_user: int = Field(1, ge=1, description="with steps: windows of each chosen user per step")
    length_groups: int = Field(1, ge=1, description="with steps: pass each step's windows through the LM in this "
                               "many groups of similar length, each padded only to its own longest, and add up "
                               "their gradients (the same step up to float rounding); saves the padded tokens of "
                               "uneven, short sequences; 1 = one padded batch")
    eval_every: int = Field(0, ge=0, description="with steps: validation state NDCG@10 every this many steps, the "
                            "best weights kept; 0 = no validation (the last weights; checkpoints every steps/10)")
    eval_users: int = Field(100, ge=1, description="with eval_every: the users of that check")
    select_on: Literal["val", "train"] = Field(
        "val", description="with eval_every: whose state NDCG@10 picks the best weights: 'val' = up to eval_users "
        "validation users, at most half of them (the report rates the other half); 'train' = eval_users training "
        "users outside the LE's subset, at every point of their sequences (the report then rates every "
        "validation user; needs user_fraction < 1)")
    patience: int = Field(0, ge=0, description="with eval_every: stop after this many checks without a better "
                          "validation state NDCG@10 (the best weights are kept either way); 0 = the whole budget")
    reward_positions: int = Field(16, ge=1, description="positions per window given a reward-loss negative")
    state_weight: float = Field(1.0, ge=0)
    reward_weight: float = Field(1.0, ge=0)
    token_lr: float = Field(0.0, ge=0, description="learning rate of the item tokens during LE training (their own "
                            "Adam parameter group); the tuned tokens are saved with the LE weights and used by "
                            "labelling, evaluation states and the report, item_tokens.pt keeps the textual-inversion "
                            "ones; 0 = frozen")

    keyed_when_set: ClassVar[frozenset[str]] = frozenset({"learn_temperature", "steps", "windows_per_user",
                                                          "eval_every", "eval_users", "token_lr", "patience",
                                                          "select_on", "lr_schedule", "warmup_steps"})
    unkeyed: ClassVar[frozenset[str]] = frozenset({"length_groups"})

    @model_validator(mode="after")
    def _patience_needs_checks(self) -> "LETrainConfig":
        if self.lr_schedule != "constant" and not self.steps:
            raise ValueError("le.train.lr_schedule decays over the step budget: it needs le.train.steps")
        if self.warmup_steps and (self.lr_schedule == "constant" or self.warmup_steps >= self.steps):
            raise ValueError("le.train.warmup_steps needs le.train.lr_schedule=cosine and fewer warm-up steps "
                             "than le.train.steps")
        if self.length_groups > 1 and not self.steps:
            raise ValueError("le.train.length_groups splits the batches of a step budget: it needs le.train.steps")
        if self.patience and not (self.steps and self.eval_every):
            raise ValueError("le.train.patience counts validation checks: it needs le.train.steps and "
                             "le.train.eval_every")
        if self.select_on == "train" and self.steps and self.eval_every and self.user_fraction >= 1:
            raise ValueError("le.train.select_on=train picks the LE's weights on training users outside its "
                             "subset, and le.train.user_fraction=1 leaves none: use select_on=val")
        return self


class LELabelConfig(_Strict):
    """The labelling cache: per training transition, LE state, rewards, negatives and augmented actions."""

    negatives: int | None = Field(None, ge=0, description="negatives labelled per transition; default rl.negatives. "
                                  "More makes a pool: RL training then draws rl.negatives of them per step. Each "
                                  "costs one LM token per transition (10 are most of the labelling time); 0 = "
                                  "none, for runs without +RM (lea.reward needs the negatives' LE rewards)")
    aug_candidates: int = Field(10, ge=0, description="top items by state similarity re-scored by the reward model")
    aug_k: int = Field(5, ge=0, description="augmented positive actions kept per transition (best reward)")
    pca_dim: int = Field(0, ge=0, description="also store states reduced by PCA to this width; 0 = off")
    batch_rows: int = Field(4, ge=1, description="LM passes (user windows) per batch")
    users_per_shard: int = Field(32, ge=1, description="users labelled between progress saves (resume points)")
    seed: Seed = Field(0, description="seeds the labelled negatives")

    @model_validator(mode="after")
    def _aug_k_within_candidates(self) -> "LELabelConfig":
        if self.aug_candidates and self.aug_k > self.aug_candidates:
            raise ValueError(f"le.label.aug_k ({self.aug_k}) cannot exceed le.label.aug_candidates "
                             f"({self.aug_candidates}): augmented actions are chosen among the candidates")
        return self


class LEReportConfig(_Strict):
    val_users: int = Field(200, ge=1, description="validation users in the quality report")
    aug_users: int = Field(0, ge=0, description="training users (a seeded sample) whose augmented actions the "
                           "report computes itself, with no labelling cache: augmentation_sample, an estimate of "
                           "augmentation and augmentation_diversity. Its distinct@k is a lower bound of the count "
                           "over every transition (fewer transitions show no more distinct items); 0 = off")

    keyed_when_set: ClassVar[frozenset[str]] = frozenset({"aug_users"})  # reports made before it stay current


# The one list of settings that change how a run goes, not what it makes: they enter no LE stage key, a
# finished grid cell does not go stale when they change, and a report never compares runs by them.
RESULT_NEUTRAL_SETTINGS = frozenset({"train.threads", "train.progress", "le.threads", "le.progress", "le.device",
                                     "le.train.length_groups"})


class LEConfig(_Strict):
    """The LLM environment (docs/design.md §1.3). ``lm``: a directory, a .gguf file, a hub name, 'tiny' (tests)."""

    lm: str | None = Field(None, description="default: the fetched SmolLM2-135M-Instruct")
    device: str = Field("cpu", description="of the LM: cpu, cuda (under torchrun: each rank's GPU), cuda:N or mps")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    threads: int | None = Field(None, ge=1)
    seed: Seed = 0
    progress: bool = True
    item_tokens: ItemTokenConfig = ItemTokenConfig()
    model: LEModelConfig = LEModelConfig()
    train: LETrainConfig = LETrainConfig()
    label: LELabelConfig = LELabelConfig()
    report: LEReportConfig = LEReportConfig()

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        return _check_device_name(v)


class LEAConfig(_Strict):
    """LE states, rewards and augmented actions in the RL trainers (docs/design.md §1.4)."""

    cache: str | None = Field(None, description="LE run directory whose label/ cache the trainer reads")
    cache_key: str | None = Field(None, description="if set, the cache must have this key (the pipeline sets it, "
                                  "so a relabelled cache makes runs trained on the old one stale)")
    source: Literal["le", "oracle", "popularity", "teacher"] = Field(
        "le", description="where the labels come from: 'le' = the LE's (`learec env label`), or a control label "
        "source (`learec env label --source ...`), which lea.cache's labels must then come from. `learec pipeline` "
        "labels oracle and popularity itself, in <out>/sources/<source>, and points such runs at them; a teacher "
        "needs a finished run and is labelled with `learec env label` only")
    state: bool = Field(False, description="+SM: the LE state (projected) enters the Q-head (critic only)")
    state_to_actor: bool = Field(False, description="+SM: the LE state (projected) also enters the CE head, which "
                                 "ranks items; evaluation then reads the LE states of the evaluation events "
                                 "(`learec env label --eval-states`), and the model cannot be served without the LLM")
    state_source: Literal["state", "state_pca"] = Field("state", description="the cache's states, or their PCA "
                                                         "reduction (labelled with le.label.pca_dim > 0)")
    align_weight: float = Field(0.0, ge=0, description="+SM: weight of a cosine alignment loss between the "
                                "backbone state and the LE state; 0 = off")
    reward: bool = Field(False, description="+RM: LE rewards for the logged action and the labelled negatives")
    reward_scale: float = Field(0.2, ge=0, description="r = base reward + scale * standardised LE reward")
    cached_negatives: bool | None = Field(None, description="use the labelled negatives instead of fresh "
                                          "uniform ones; default: on with +RM (their LE rewards are known)")
    augment: bool = Field(False, description="+LEA: augmented positive actions in the CE and Q losses")
    augment_k: int | None = Field(None, ge=0, description="augmented actions used per transition; default all labelled; "
                                    "0 = none (the k = 0 point of an ablation)")
    augment_weight: float = Field(0.1, ge=0, description="lambda: weight of the CE term of augmented actions")
    augment_q: bool = Field(True, description="augmented actions also enter the Q-loss, with reward base + "
                            "reward_scale * z (their LE reward: LEA brings its rewards even without +RM)")
    augment_weighting: Literal["fixed", "actor"] = Field(
        "fixed", description="the CE term of augmented actions: 'fixed' = lambda at every step; 'actor' = where the "
        "method weights its CE term (SA2C after the warm-up: the clipped advantage; SAC: Q), each augmented action "
        "gets the same weight computed for itself, so lambda keeps its ratio to the logged action's term")
    # The options below answer measured problems (issue 20); their defaults keep today's training bit for bit.
    augment_reward: Literal["le", "bounded", "logged"] = Field(
        "le", description="reward of an augmented action in the Q-loss: 'le' = base + reward_scale * z_aug (it beat "
        "the logged action's in 92% of transitions); 'bounded' = r_logged - |r_logged| * (1 - sigmoid(z_aug - "
        "z_logged)), never above the logged action's (r_logged * sigmoid(.) when r_logged >= 0); 'logged' = "
        "exactly the logged action's reward")
    augment_next_state: Literal["stay", "append"] = Field(
        "stay", description="next state of an augmented action in the Q-loss: 'stay' = the current state (a "
        "rewarded self-loop, bootstrapped from s); 'append' = the history with the augmented item appended, "
        "bootstrapped by double Q like the logged action (with lea.state: the transition's LE next state, or its "
        "LE state where the episode ends)")
    augment_confidence: Literal["none", "softmax", "sigmoid"] = Field(
        "none", description="weight of each augmented action's CE term by its standardised LE reward z_aug: "
        "'softmax' = k_filled * softmax over the filled slots (mean weight 1); 'sigmoid' = sigmoid(z_aug)")
    standardise_states: bool = Field(False, description="LE states standardised per dimension with the mean and "
                                     "std over the training rows (raw ones have norm ~23, |mean| 2.4 against std "
                                     "0.38 per dimension), for the critic input, the alignment target and the CE head")

    keyed_when_set: ClassVar[frozenset[str]] = frozenset({"source"})

    @property
    def enabled(self) -> bool:
        return self.state or self.reward or self.augment or bool(self.cached_negatives)

    @property
    def use_cached_negatives(self) -> bool:
        return self.reward if self.cached_negatives is None else self.cached_negatives


class Config(_Strict):
    seed: Seed = 0
    objective: str = Field("ce", description="training objective, by its registered name (learec.rl.registry): "
                           "ce, sqn, sac, snqn, sa2c, or one registered by a plugin")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    rl: RLConfig = RLConfig()
    le: LEConfig = LEConfig()
    lea: LEAConfig = LEAConfig()
    objectives: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="settings of objectives that have a section of their own: "
        "objectives.<name>.<key> (validated by the objective's registered model)")

    @field_validator("objective")
    @classmethod
    def _objective_is_registered(cls, name: str) -> str:
        objective_spec(name)
        return name

    @model_validator(mode="after")
    def _objective_sections(self) -> "Config":
        filled = filled_sections(self.objective, self.objectives)
        self.objectives.clear()  # in place: assigning would validate the whole model again
        self.objectives.update(filled)
        return self

    @model_validator(mode="after")
    def _lea_needs_rl_and_cache(self) -> "Config":
        if self.lea.state_to_actor and not self.lea.state:
            raise ValueError("lea.state_to_actor needs lea.state=true")
        if self.lea.augment_k is not None and not self.lea.augment:
            raise ValueError("lea.augment_k sets how many augmented actions lea.augment uses: it needs lea.augment=true")
        if self.lea.augment_weighting == "actor" and not (self.lea.augment and has_trait(self.objective, WEIGHTED_ACTOR)):
            # SQN and SNQN never weight their CE term: the option would silently change nothing
            raise ValueError("lea.augment_weighting=actor weights the augmented actions' CE term as SA2C/SAC weight "
                             "the logged action's: it needs lea.augment=true and an objective that weights its CE "
                             f"term ({', '.join(objective_names(WEIGHTED_ACTOR))})")
        self._lea_augment_options_apply()
        if self.lea.state_to_actor and self.lea.state_source != "state":
            raise ValueError("lea.state_to_actor reads the full LE states of the evaluation events: "
                             "use lea.state_source=state")
        if self.lea.enabled:
            if not has_trait(self.objective, CRITIC) or self.model.backbone == "pop":
                raise ValueError(f"lea.* options need an RL objective ({', '.join(objective_names(CRITIC))}) "
                                 "on a neural backbone")
            if not self.lea.cache and self.lea.source != "le":
                raise ValueError(f"lea.source={self.lea.source} needs lea.cache: a directory labelled by `learec env "
                                 f"label --source {self.lea.source}` (`learec pipeline` labels oracle and popularity "
                                 "itself)")
            if not self.lea.cache:
                raise ValueError("lea.* options need lea.cache: the LE run directory made by `learec env train/label`")
            if self.lea.reward and not self.lea.use_cached_negatives and has_trait(self.objective, NEGATIVES):
                raise ValueError("lea.reward gives rewards to the labelled negatives only: keep "
                                 "lea.cached_negatives on (the default with lea.reward)")
            if self.lea.align_weight and not self.lea.state:
                raise ValueError("lea.align_weight needs lea.state=true (the LE states it aligns with)")
            if self.lea.state and self.rl.rank_by == "q":
                raise ValueError("lea.state feeds the LE state to the Q-head only, and there is no LE at inference: "
                                 "rank by the CE head (rl.rank_by=ce)")
        return self

    def _lea_augment_options_apply(self) -> None:
        """Refuse the new LEA options where they would silently change nothing."""
        lea = self.lea
        q_options = [f"lea.{name}={getattr(lea, name)}" for name, default in
                     (("augment_reward", "le"), ("augment_next_state", "stay")) if getattr(lea, name) != default]
        if q_options and not (lea.augment and lea.augment_q):
            raise ValueError(f"{', '.join(q_options)} shapes the augmented actions' Q-loss term: it needs "
                             "lea.augment=true and lea.augment_q=true")
        if lea.augment_confidence != "none" and not (lea.augment and lea.augment_weight):
            raise ValueError(f"lea.augment_confidence={lea.augment_confidence} weights the augmented actions' CE term: "
                             "it needs lea.augment=true and lea.augment_weight > 0")
        if lea.standardise_states and not lea.state:
            raise ValueError("lea.standardise_states standardises the LE states: it needs lea.state=true")
        if lea.source != "le" and not lea.enabled:
            raise ValueError(f"lea.source={lea.source} names where the labels of lea.state, lea.reward, lea.augment or "
                             "lea.cached_negatives come from: it needs one of them")
        if lea.source != "le" and lea.state_to_actor:
            raise ValueError("lea.state_to_actor ranks with the LE states of the evaluation events, which only an LE "
                             "run has: use lea.source=le")

    def to_dict(self) -> dict[str, Any]:
        tree = self.model_dump(mode="json")
        if not tree["objectives"]:  # configs of the built-in objectives read and save as before the section existed
            del tree["objectives"]
        return tree

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
    if isinstance(value, str) and raw.strip()[:1] not in ("'", '"'):
        value = raw  # text as typed: YAML would strip the leading space a template may need
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
            msg = e["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
            lines.append(f"'{where}': {msg}" + ("" if isinstance(got, dict) else f" (got {got!r})"))
    return UserError(
        f"Invalid configuration ({source}): " + "; ".join(lines),
        "check the key names and values against `learec config show` (prints every key with its default)",
    )


def build_config(tree: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise _format_validation_error(err, source) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (plain YAML keeps the last, silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Config file {path} does not exist", "give the path of a YAML file, e.g. configs/ml100k_sasrec.yaml")
    try:
        tree = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except UnicodeDecodeError as err:
        raise UserError(f"Config file {path} is not UTF-8 text ({err.reason} at byte {err.start})",
                        "save it as UTF-8") from None
    except yaml.YAMLError as err:
        raise UserError(f"Config file {path} is not valid YAML: {' '.join(str(err).split())}") from None
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


def with_overrides(cfg: Config, overrides: list[str], source: str = "config") -> Config:
    """``cfg`` with ``--set`` ``overrides`` applied, validated as a whole (``cfg`` is left as it is)."""
    tree = cfg.to_dict()
    for item in overrides:
        keys, value = parse_override(item)
        _apply_override(tree, keys, value)
    return build_config(tree, source)


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
