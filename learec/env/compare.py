"""``learec env compare``: the quality reports of several LE runs side by side, one row per run.

Each row comes from files the run already holds, so nothing loads an LM: ``le_report.json`` (``learec env
report``), ``le/curve.json`` (the validation checks of ``le.train.steps``), ``le/done.json`` and
``config.yaml``. It is the table of a user-fraction × step-budget study: the LE's users, its step budget and
the check its weights come from, the state model as a recommender against popularity on the same points,
reward accuracy, collapse (mean cosine of item keys and of users' states), the augmented actions' diversity
and quality, and the wall time of LE training (steps and checks, without labelling).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from learec.env.curve import CURVE_JSON, METRIC, curve_points
from learec.errors import UserError

COLUMNS = ("run", "LE users", "steps (best at)", "selection NDCG@10", "state NDCG@10 (× pop.)", "HR@10",
           "reward acc.", "key cos.", "state cos.", "distinct@{k} (top-10 share)", "aug_future@{k} (pop.)",
           "aug_future@{k}, other users (pop.)", "training time")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _augmentation(report: dict[str, Any], k: int) -> dict[str, Any]:
    """Diversity and quality of the augmented actions at ``k``: over every training transition when the run
    is labelled (``exact``), else over the report's sample of users (``aug_users``; a distinct count over a
    sample is a lower bound of the count over every transition)."""
    if "augmentation_diversity" in report:
        quality = report.get("augmentation", {})
        return {"exact": True, **report["augmentation_diversity"], **quality,
                "other_users": quality.get("by_membership", {}).get("other_users")}
    sample = report.get("augmentation_sample")
    if sample is None:
        return {}
    other = sample.get("by_membership", {}).get("other_users")
    return {"exact": False, **sample["diversity"], **sample["quality"],
            "other_users": other["quality"] if other else None}


def compare_row(run_dir: Path, k: int = 3) -> dict[str, Any]:
    """The figures of one LE run (None where the run does not have them)."""
    report = _read_json(run_dir / "le_report.json")
    if report is None:
        raise UserError(f"{run_dir} has no le_report.json", f"run `learec env report --run-dir {run_dir}` first")
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    train = ((config or {}).get("le") or {}).get("train") or {}
    done = _read_json(run_dir / "le" / "done.json") or {}
    points = curve_points(done.get("history") or [])  # the checks, as the curve has them
    best = max(points, key=lambda p: p[METRIC]) if points else None  # max keeps the first of equals, as training
    curve = _read_json(run_dir / CURVE_JSON) or {}
    aug = _augmentation(report, k)
    other = aug.get("other_users") or {}
    return {
        "run": str(run_dir), "le_users": report.get("le_users"), "user_fraction": train.get("user_fraction"),
        "steps_budget": train.get("steps") or None, "steps_run": points[-1]["step"] if points else None,
        "best_step": best["step"] if best else None,
        "selection_ndcg@10": best[METRIC] if best else None, "selection_on": curve.get("select_on"),
        "rated_users": report.get("val_users"), "state_ndcg@10": report.get("state_ndcg@10"),
        "pop_ndcg@10": report.get("pop_ndcg@10"), "state_hr@10": report.get("state_hr@10"),
        "reward_acc": report.get("reward_pairwise_acc"), "key_cos": report.get("key_mean_cosine"),
        "state_cos": report.get("state_mean_cosine"), "aug_exact": aug.get("exact"),
        f"distinct@{k}": aug.get(f"distinct@{k}"), f"top10_share@{k}": aug.get(f"top10_share@{k}"),
        f"aug_future@{k}": aug.get(f"aug_future@{k}"), f"pop_future@{k}": aug.get(f"pop_future@{k}"),
        f"aug_future@{k}_other_users": other.get(f"aug_future@{k}"),
        f"pop_future@{k}_other_users": other.get(f"pop_future@{k}"),
        "train_seconds": report.get("le_train_seconds", done.get("train_seconds")),
    }


def _num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _minutes(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds / 60:.1f} min"


def markdown_table(rows: list[dict[str, Any]], k: int = 3) -> str:
    """The rows of :func:`compare_row` as a Markdown table; ≥ marks a distinct count over a sample of users."""
    lines = ["| " + " | ".join(c.format(k=k) for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        fraction = f" ({100 * r['user_fraction']:g}%)" if r["user_fraction"] is not None else ""
        steps = (f"{r['steps_run']}" + (f" of {r['steps_budget']}" if r["steps_budget"] != r["steps_run"] else "")
                 + f" ({r['best_step']})") if r["steps_run"] is not None else "n/a"
        times_pop = (f" ({r['state_ndcg@10'] / r['pop_ndcg@10']:.2f}×)"
                     if r["state_ndcg@10"] is not None and r["pop_ndcg@10"] else "")
        distinct = ("n/a" if r[f"distinct@{k}"] is None else
                    f"{'' if r['aug_exact'] else '≥ '}{r[f'distinct@{k}']} ({100 * r[f'top10_share@{k}']:.0f}%)")
        cells = [r["run"], f"{r['le_users']}{fraction}", steps, _num(r["selection_ndcg@10"]),
                 _num(r["state_ndcg@10"]) + times_pop, _num(r["state_hr@10"]), _num(r["reward_acc"], 3),
                 _num(r["key_cos"], 3), _num(r["state_cos"], 2), distinct,
                 f"{_num(r[f'aug_future@{k}'], 3)} ({_num(r[f'pop_future@{k}'], 3)})",
                 f"{_num(r[f'aug_future@{k}_other_users'], 3)} ({_num(r[f'pop_future@{k}_other_users'], 3)})",
                 _minutes(r["train_seconds"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
