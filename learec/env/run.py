"""An LE run directory and its stages: item tokens -> LE training -> labelling -> quality report.

Layout::

    config.yaml          the resolved config (data + le sections are what matter here)
    le.log               the log
    item_tokens.pt       learned item embeddings + their report (NLL before/after), keyed by their inputs;
                         copied from the item-token store shared by all LE runs when it holds them (token_store)
    le/                  adapter/ (peft), heads.pt (with the tuned item tokens under le.train.token_lr),
                         train_state.pt (resume point), done.json, curve.json (steps with eval_every)
    le_curve.png         validation state NDCG@10 against steps (steps with eval_every; learec.env.curve)
    label/               the labelling cache (see learec.env.label)
    eval_states/         LE states of the validation and test events, on demand (learec.env.eval_states)
    le_report.json/.png  LE quality on validation users (with le.report.aug_users, augmented actions of a
                         sample of training users: learec.env.aug_sample)
    usage.jsonl          wall time and peak memory of each stage that did work (learec.usage; `learec usage`)

Each stage is skipped when its output exists and was made from the same inputs (a key in the file);
otherwise it is (re)done. A killed stage resumes: LE training per epoch, labelling per shard of users. The
keys, and the status each stage's files give, are in :mod:`learec.env.stages`: the stages here act on the
same status that ``learec pipeline --dry-run`` prints.

Under ``torchrun`` (see :mod:`learec.distributed`) rank 0 alone writes the config, the item tokens (the
others wait, then load them), the LE weights, the log and the report; LE training and labelling are
shared by all ranks (see :func:`~learec.env.train.train_le_model` and :func:`~learec.env.label.label_transitions`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from learec.config import RESULT_NEUTRAL_SETTINGS, Config, config_differences, load_config, with_overrides
from learec.data.prepared import PreparedData, prepare
from learec.data.splits import EvalSet, Transitions
from learec.devices import run_device
from learec.distributed import barrier, broadcast_object, is_distributed, is_main, main_first
from learec.env import token_store
from learec.env.aug_sample import augmentation_sample
from learec.env.curve import write_curve
from learec.env.item_tokens import train_item_tokens
from learec.env.eval_states import EVAL_STATES, write_eval_states
from learec.env.label import LabelCache, cache_problem, label_transitions, load_label_cache
from learec.env.model import LEModel, load_le_lm, log_popularity_prior, weights_hash
from learec.env.report import (augmentation_diversity, augmentation_quality, le_quality, plot_quality,
                               popularity_ndcg, token_shift)
from learec.env.stages import (EVAL_STATES_STAGE, ITEM_TOKENS, LABELLING, LE_TRAINING, REPORT, negatives,
                               read_item_tokens)
from learec.env.train import subset_users, train_le_model, training_lengths, training_seconds
from learec.errors import UserError
from learec.rundir import exclusive_run_dir, log_to_file
from learec.stages import State, StageStatus, check_saved_config
from learec.usage import StageRecord, recorded
from learec.utils import atomic_torch_save, atomic_write_json

log = logging.getLogger("learec")


def _progress(cfg: Config):
    if not cfg.le.progress or not is_main():  # one progress bar: rank 0's
        return None
    return lambda it, desc: tqdm(it, desc=desc, leave=False, dynamic_ncols=True, disable=None)  # None: a terminal only


def resolve_config(cfg: Config | None, run_dir: Path, replace: bool = False) -> Config:
    """The run's config: ``cfg`` for a new run dir; the saved one (which ``cfg`` must equal) otherwise.

    With ``replace`` (the pipeline, whose file is the record), a different ``cfg`` replaces the saved
    one; every stage then checks its own key and redoes what the change made stale.
    """
    saved_path = run_dir / "config.yaml"
    if saved_path.is_file():
        saved = load_config(saved_path)
        if cfg is not None and cfg.to_dict() != saved.to_dict() and replace:
            log.info("LE config of %s changed: %s", run_dir, ", ".join(config_differences(cfg.to_dict(), saved.to_dict())))
            cfg.save(saved_path)
            return cfg
        return check_saved_config(cfg, saved, run_dir, "drop --config/--set to continue it, or use another --run-dir")
    if cfg is None:
        raise UserError(f"{run_dir} is not an LE run directory (no config.yaml)",
                        "start one with `learec env train --config FILE --run-dir DIR`")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(saved_path)
    return cfg


class LERun:
    """The stages of one LE run directory; each loads what it needs lazily, once."""

    def __init__(self, run_dir: Path, cfg: Config | None = None, replace_config: bool = False):
        self.run_dir = Path(run_dir)
        if cfg is not None:  # a missing device is refused before a new run dir records it
            run_device(cfg.le.device, "le.device")
        self.cfg = main_first(lambda: resolve_config(cfg, self.run_dir, replace_config))
        self.device = run_device(self.cfg.le.device, "le.device")  # under torchrun, 'cuda' is this rank's GPU
        if self.cfg.le.threads:
            torch.set_num_threads(self.cfg.le.threads)
        self._data: PreparedData | None = None
        self._lm: tuple[Any, Any] | None = None
        self._model: LEModel | None = None
        if is_distributed():  # rank 0 prepares the data, the others then read it
            main_first(lambda: self.data)

    @property
    def data(self) -> PreparedData:
        if self._data is None:
            self._data = prepare(self.cfg.data, log=log.info)
        return self._data

    def lm(self) -> tuple[Any, Any]:
        if self._lm is None:
            self._lm = load_le_lm(self.cfg.le.model_copy(update={"device": self.device}))
        return self._lm

    # --- stage 1: item tokens ----------------------------------------------------------------------
    def item_tokens(self) -> tuple[torch.Tensor, dict[str, Any]]:
        """The item tokens (trained first when missing or stale); under torchrun rank 0 trains them alone
        (a short stage) while the others wait, then load its file."""
        tokens = self._train_item_tokens() if is_main() else None
        barrier()
        return tokens if tokens is not None else self._saved_item_tokens()

    def _train_item_tokens(self) -> tuple[torch.Tensor, dict[str, Any]]:
        status = ITEM_TOKENS.status(self.run_dir, self.cfg, self.data)
        store_key = ITEM_TOKENS.store_key(self.cfg, self.data)
        if status.current:
            if not token_store.store_path(store_key).is_file():  # made before the store, or the store was emptied
                token_store.put(store_key, status.found["embeddings"], status.found["report"])
            return status.found["embeddings"], status.found["report"]
        with recorded(self.run_dir, ITEM_TOKENS.name) as record:
            return self._make_item_tokens(status, store_key, record)

    def _make_item_tokens(self, status: StageStatus, store_key: str,
                          record: StageRecord) -> tuple[torch.Tensor, dict[str, Any]]:
        path = ITEM_TOKENS.outputs(self.run_dir)[0]
        lm, tokenizer = self.lm()
        stored = token_store.fetch(store_key, self.data.n_items, lm.get_input_embeddings().weight.shape[1])
        if status.state is State.STALE:
            log.warning("item tokens in %s were made from other inputs: %s", path,
                        "replaced by the stored ones" if stored is not None else "retraining")
        if stored is not None:  # made by another LE run from the same inputs
            emb, report = stored["embeddings"], stored["report"]
            log.info("item tokens: reused from %s", token_store.store_path(store_key))
            record.skip()  # a copy: their cost was recorded where they were trained
        else:
            torch.manual_seed(self.cfg.le.seed)
            log.info("training item tokens for %d items", self.data.n_items)
            emb, report = train_item_tokens(lm, tokenizer, self.data.sequences.item_text, self.cfg.le.item_tokens,
                                            seed=self.cfg.le.seed, progress=_progress(self.cfg))
            log.info("item tokens: description NLL/token %.3f -> %.3f", report["nll_per_token_before"],
                     report["nll_per_token_after"])
            log.info("item tokens: stored in %s for other LE runs", token_store.put(store_key, emb, report))
        atomic_torch_save(path, {"key": ITEM_TOKENS.key(self.cfg, self.data), "embeddings": emb, "report": report})
        return emb, report

    # --- stage 2: the LE state and reward models ---------------------------------------------------
    def model(self, train: bool = True) -> LEModel:
        """The trained LE model (training it first when ``train`` and it is not done)."""
        if self._model is None:
            self._model = self._build_model(train)
        return self._model

    def _build_model(self, train: bool) -> LEModel:
        emb, _ = self.item_tokens() if train else self._saved_item_tokens()
        lm, tokenizer = self.lm()
        torch.manual_seed(self.cfg.le.seed)  # LoRA and head initialisation
        train_cfg = self.cfg.le.train
        prior = (log_popularity_prior(self.data.split.item_counts, train_cfg.temperature)
                 if self.cfg.le.model.item_bias == "log_popularity" else None)  # training counts only
        model = LEModel(lm, tokenizer, emb, self.cfg.le.model,
                        learned_temperature=train_cfg.temperature if train_cfg.learn_temperature else None,
                        tune_tokens=train_cfg.token_lr > 0,  # tuned tokens then load from le/ with the heads
                        item_prior=prior)
        le_dir = self.run_dir / "le"
        done, train_state = LE_TRAINING.outputs(self.run_dir)
        key = LE_TRAINING.key(self.cfg, self.data)
        # rank 0 decides: it alone may remove a stale done.json below
        status = LE_TRAINING.status(self.run_dir, self.cfg, self.data) if is_main() else None
        if broadcast_object(status.current if status is not None else None):
            model.load(le_dir)
            model.eval()
            return model
        if not train:
            raise UserError(f"The LE in {self.run_dir} is not trained (or was trained from other inputs)",
                            f"run `learec env train --run-dir {self.run_dir}` first")
        if status is not None and status.state is State.STALE:  # trained from other inputs: start over
            log.warning("the LE in %s was trained from other inputs: retraining", le_dir)
            done.unlink()
            train_state.unlink(missing_ok=True)
        barrier()  # no rank reads train_state.pt while rank 0 removes a stale one
        # a partial run resumes from train_state.pt when made from the same inputs (train_le_model)
        resumes = status is not None and status.state is State.PARTIAL
        with recorded(self.run_dir, LE_TRAINING.name, fresh=not resumes):
            self._train_model(model, key)
        return model

    def _train_model(self, model: LEModel, key: str) -> None:
        le_dir = self.run_dir / "le"
        done = LE_TRAINING.outputs(self.run_dir)[0]
        users = subset_users(self.data.train.user, self.cfg.le.train.user_fraction, self.cfg.le.seed)
        log.info("training the LE on %d users (%.0f%% of training users)", len(users),
                 100 * self.cfg.le.train.user_fraction)
        lengths = training_lengths(self.data.train.user, self.data.train.position)  # no val/test items (loo)
        history = train_le_model(model, self.data.sequences, users, self.cfg.le.train, self.cfg.le.model.window,
                                 le_dir, self.cfg.le.seed, progress=_progress(self.cfg), key=key, lengths=lengths,
                                 validate=self._validation if self.cfg.le.train.eval_every else None)
        if is_main():  # every rank holds the same weights
            weights = model.save(le_dir)
            chosen = self.selection_users()  # the curve exists with that check only
            if chosen is not None:  # before done.json: a finished LE always has its curve
                write_curve(self.run_dir, history, popularity_ndcg(self.data.sequences, self.selection_points(),
                                                                   self.data.split.item_counts, chosen), len(chosen),
                            self.cfg.le.train.select_on)
            atomic_write_json(done, {"key": key, "weights": weights, "users": len(users), "history": history,
                                     "train_seconds": training_seconds(le_dir)})
        barrier()  # le/ is complete for every rank

    def selection_users(self) -> np.ndarray | None:
        """The users ``le.train.steps`` picks its best weights on (None without that check): with
        ``select_on=val`` up to ``eval_users`` validation users, at most half of them, which the report then
        leaves out, so the weights are never judged on the users that chose them; with ``select_on=train``,
        ``eval_users`` training users outside the LE's subset (the LE never trains on them)."""
        train = self.cfg.le.train
        if not (train.steps and train.eval_every):
            return None
        rng = np.random.default_rng([self.cfg.le.seed, 31])
        if train.select_on == "train":
            le_users = subset_users(self.data.train.user, train.user_fraction, self.cfg.le.seed)
            others = np.setdiff1d(np.unique(np.asarray(self.data.train.user)), le_users)
            if not len(others):  # a fraction that rounds to every user of a small log
                raise UserError(f"le.train.select_on=train: le.train.user_fraction={train.user_fraction} puts all "
                                f"{len(le_users)} training users in the LE's subset, none is left to select on",
                                "lower le.train.user_fraction, or use le.train.select_on=val")
            return np.sort(rng.choice(others, size=min(train.eval_users, len(others)), replace=False))
        users = np.unique(np.asarray(self.data.val.user))
        return np.sort(rng.choice(users, size=min(train.eval_users, len(users) // 2), replace=False))

    def selection_points(self) -> EvalSet | Transitions:
        """Where the selection users' prediction points lie: the validation events, or (``select_on=train``)
        the training transitions, whose ``user``/``position`` name the same kind of point."""
        return self.data.train if self.cfg.le.train.select_on == "train" else self.data.val

    def report_excluded_users(self) -> np.ndarray | None:
        """The validation users the report leaves out: those that chose the weights, if any did."""
        return self.selection_users() if self.cfg.le.train.select_on == "val" else None

    def _validation(self, model: LEModel) -> float:
        """State NDCG@10 of the selection users: what ``le.train.steps`` keeps the best weights by."""
        chosen, points = self.selection_users(), self.selection_points()
        others = np.setdiff1d(np.unique(np.asarray(points.user)), chosen)
        metrics, _ = le_quality(model, self.data.sequences, points, self.data.split.item_counts,
                                len(chosen), self.cfg.le.model.window, self.cfg.le.label.batch_rows,
                                self.cfg.le.seed, exclude_users=others)
        return float(metrics["state_ndcg@10"])

    def _saved_item_tokens(self) -> tuple[torch.Tensor, dict[str, Any]]:
        path = ITEM_TOKENS.outputs(self.run_dir)[0]
        if not path.is_file():
            raise UserError(f"{self.run_dir} has no item tokens", f"run `learec env train --run-dir {self.run_dir}`")
        saved = read_item_tokens(path)
        return saved["embeddings"], saved["report"]

    # --- stage 3: labelling -------------------------------------------------------------------------
    def label_fingerprint(self, model: LEModel) -> dict[str, Any]:
        return LABELLING.fingerprint(self.cfg, self.data, weights_hash(model))

    @property
    def negatives(self) -> int:
        return negatives(self.cfg)

    def label(self, stop_after_shards: int | None = None) -> LabelCache | None:
        model = self.model(train=False)
        out_dir, fingerprint = LABELLING.outputs(self.run_dir)[0], self.label_fingerprint(model)
        with self._recorded_if_made(LABELLING.name, out_dir, fingerprint, resumable=True):
            return label_transitions(model, self.data.sequences, self.data.train, self.cfg.le.label, self.negatives,
                                     self.cfg.le.model.window, out_dir, fingerprint, progress=_progress(self.cfg),
                                     stop_after_shards=stop_after_shards)

    def _recorded_if_made(self, stage: str, cache: Path, fingerprint: dict[str, Any],
                          resumable: bool = False) -> contextlib.AbstractContextManager:
        """Record the stage's usage (:mod:`learec.usage`) when its cache is to be made, or with ``resumable``
        resumed (an incomplete one), not when a complete one is only read. The manifest decides, without
        hashing the arrays a second time (the stage verifies them): a complete cache rebuilt because an array
        was damaged is not recorded, and its first making's figures stand."""
        problem = cache_problem(cache, fingerprint, verify=False) if is_main() else None
        if problem is None:
            return contextlib.nullcontext()
        return recorded(self.run_dir, stage, fresh=not (resumable and problem == "incomplete"))

    def eval_states_fingerprint(self, model: LEModel) -> dict[str, Any]:
        return EVAL_STATES_STAGE.fingerprint(self.cfg, self.data, weights_hash(model))

    def eval_states(self) -> LabelCache:
        """The LE states of the validation and test events (for lea.state_to_actor); rank 0 computes them
        under torchrun while the others wait."""
        model = self.model(train=False)  # on every rank: loading the LE is collective
        fingerprint = self.eval_states_fingerprint(model)

        def build() -> LabelCache:
            with self._recorded_if_made(EVAL_STATES_STAGE.name, self.run_dir / EVAL_STATES, fingerprint):
                return write_eval_states(model, self.data.sequences, {"val": self.data.val, "test": self.data.test},
                                         self.cfg.le.model.window, self.cfg.le.label.batch_rows,
                                         self.run_dir / EVAL_STATES, fingerprint, progress=_progress(self.cfg))

        return main_first(build)

    # --- the quality report --------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        with recorded(self.run_dir, REPORT.name):
            return self._report()

    def _report(self) -> dict[str, Any]:
        model = self.model(train=False)
        le_users = subset_users(self.data.train.user, self.cfg.le.train.user_fraction, self.cfg.le.seed)
        metrics, rewards = le_quality(model, self.data.sequences, self.data.val, self.data.split.item_counts,
                                      self.cfg.le.report.val_users, self.cfg.le.model.window,
                                      self.cfg.le.label.batch_rows, self.cfg.le.seed, progress=_progress(self.cfg),
                                      le_users=le_users, exclude_users=self.report_excluded_users())
        _, tokens = self._saved_item_tokens()
        done = json.loads((self.run_dir / "le" / "done.json").read_text())
        report = {**metrics, "item_tokens": tokens, "le_training": done["history"][-1] if done["history"] else None,
                  "le_users": done["users"], "le_train_seconds": done.get("train_seconds"),  # None: an older LE
                  "lm": self.cfg.le.lm or "default (SmolLM2-135M-Instruct)",
                  # may differ from config.yaml's (--set); settings added later appear when set (key_dump)
                  "report_settings": self.cfg.le.report.key_dump()}
        if model.token_parameters():  # le.train.token_lr: how far LE training moved the item tokens
            report["item_token_tuning"] = token_shift(self._saved_item_tokens()[0], model.item_tokens)
        if self.cfg.le.report.aug_users:  # an estimate that needs no labelling cache
            report["augmentation_sample"] = augmentation_sample(
                model, self.data.sequences, self.data.train, self.data.split.item_counts,
                self.cfg.le.report.aug_users, le_users, self.cfg.le.label, self.cfg.le.model.window,
                self.cfg.le.seed, progress=_progress(self.cfg))
        labelled = LABELLING.status(self.run_dir, self.cfg, self.data, weights_hash(model))
        if labelled.current:  # how good are its proposals
            cache = load_label_cache(LABELLING.outputs(self.run_dir)[0], verify=False)
            report["augmentation"] = augmentation_quality(self.data.sequences, self.data.train, cache["aug_items"],
                                                          self.data.split.item_counts)
            report["augmentation_diversity"] = augmentation_diversity(cache["aug_items"])
            report["report_key"] = REPORT.key(self.cfg, cache.key)  # what `learec pipeline` checks it against
        atomic_write_json(self.run_dir / "le_report.json", report)
        plot_quality(metrics, rewards, self.run_dir / "le_report.png", report.get("augmentation_sample"))
        return report


@contextlib.contextmanager
def le_run_log(run: LERun) -> Iterator[None]:
    """The run's le.log, written by rank 0 (the other ranks log warnings to stderr only), which also holds
    the run directory's lock: one LE stage writes a run directory at a time."""
    if not is_main():
        yield
        return
    with exclusive_run_dir(run.run_dir, "LE run"), log_to_file(run.run_dir, "le.log"):
        yield


def env_train(cfg: Config | None, run_dir: Path) -> dict[str, Any]:
    """Item tokens + LE training (each skipped when already done from the same inputs)."""
    run = LERun(run_dir, cfg)
    with le_run_log(run):
        run.model(train=True)
        return json.loads((run.run_dir / "le" / "done.json").read_text())


def env_label(run_dir: Path, eval_states: bool = False) -> LabelCache:
    """Label the training transitions; with ``eval_states`` also the LE states of the evaluation events."""
    run = LERun(run_dir)
    with le_run_log(run):
        cache = run.label()
        assert cache is not None
        if eval_states:
            run.eval_states()
        return cache


def report_config(cfg: Config, run_dir: Path, overrides: list[str]) -> Config:
    """``cfg`` with ``le.report.*`` ``overrides`` (and result-neutral ones such as ``le.threads``): settings of
    the report alone, which key no earlier stage,
    so they are applied for this report and not written to the run's config.yaml (a later `env train
    --config` of the same file still matches it)."""
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not key.startswith("le.report.") and key not in RESULT_NEUTRAL_SETTINGS:  # e.g. le.threads may change
            raise UserError(f"--set {item}: only le.report.* keys are the report's own; the others made the LE "
                            f"and its labels in {run_dir}", "train an LE with other settings in a new directory: "
                            "`learec env train --config FILE --set KEY=VALUE --run-dir NEW_DIR`")
    return with_overrides(cfg, overrides, source=f"{run_dir / 'config.yaml'} with --set")


def env_report(run_dir: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """The LE quality report, with the ``le.report.*`` ``overrides`` (:func:`report_config`); under
    torchrun rank 0 computes it and the others receive it."""
    run = LERun(run_dir)
    if overrides:
        run.cfg = report_config(run.cfg, run.run_dir, overrides)
    with le_run_log(run):
        run.model(train=False)  # on every rank: loading the LE is collective
        return broadcast_object(run.report() if is_main() else None)
