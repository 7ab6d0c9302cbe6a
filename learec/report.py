"""Reports of grids (and of the LE behind them): Markdown + HTML with tables and PNG plots.

``learec report GRID_DIRS... --out DIR [--le-run LE_DIR]`` reads each grid's ``cells.json`` (which folder is
which cell) and its finished runs, tabulates them as ``learec grid`` does in ``results.md`` (mean ± std over
seeds, paired tests against the baseline and against each variant's ``compare`` variants), and draws:

- ``val_curves_<grid>.png``: validation NDCG@10 over training, per variant (mean over seeds); a panel per
  value of the first axis (e.g. the backbone) when the grid has two axes or more besides the seed;
- ``test_bars_<grid>.png``: test NDCG@10 and HR@10 per cell group, mean ± std over seeds;
- ``sensitivity_<grid>_<axis>.png``: test NDCG@10 against each numeric axis (e.g. ``lea.augment_k``) with
  at least two finished values;
- ``le_rewards.png``: the LE reward distributions of logged actions, negatives and augmented actions;
- ``le_sensitivity_<key>.png``: with several grids whose LEs differ in a numeric ``le.*`` setting (e.g. the
  user subset, ``learec pipeline --le-set le.train.user_fraction=... --out ...`` per point), test NDCG@10
  of each variant against that setting, and a table of each grid's LE quality beside its recommenders' metrics.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from markdown_it import MarkdownIt

from learec.config import RESULT_NEUTRAL_SETTINGS, Config, load_config
from learec.errors import UserError
from learec.evaluate.run_users import users_from_configs
from learec.evaluate.tables import axis_value_label, format_mean_std, group_label, mean_std, results_tables


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _load_grid_dir(grid_dir: Path) -> dict[str, Any]:
    cells_path = grid_dir / "cells.json"
    if not cells_path.is_file():
        raise UserError(f"{grid_dir} is not a grid output directory (no cells.json)",
                        "give directories written by `learec grid` or `learec pipeline`")
    spec = json.loads(cells_path.read_text())
    # the table is computed from the runs finished now, not read from results.md, which the grid rewrites
    # only when it ends: a report made while the grid runs has the same tables as its curves
    _, table = results_tables(grid_dir, spec["axes"], spec.get("baseline") or {}, spec.get("compare") or {},
                              [(cell["name"], cell["values"]) for cell in spec["cells"]],
                              event_users=users_from_configs())
    runs = []
    for cell in spec["cells"]:
        run_dir = grid_dir / cell["name"]
        metrics = run_dir / "metrics.json"
        history = run_dir / "history.json"
        result = json.loads(metrics.read_text()) if metrics.is_file() else {}
        runs.append({"values": cell["values"], "test": result.get("test"), "val": result.get("val"),
                     "history": json.loads(history.read_text()) if history.is_file() else []})
    return {"dir": grid_dir, "axes": spec["axes"], "runs": runs, "table": table}


def _flatten(tree: dict[str, Any], prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _load_run_config(path: Path) -> Config | None:
    """A run's config through the config loader; None (with a note) for one that no longer loads, e.g. of an
    older schema: the report then leaves that run's LE out rather than failing."""
    try:
        return load_config(path)
    except UserError as err:
        print(f"report: skipping {path} (it does not load: {str(err).splitlines()[0]})")
        return None


def _le_run(grid_dir: Path) -> Path | None:
    """The LE run directory whose cache the grid's LE runs read (None without one); the directories of control
    label sources (``lea.source``, or caches without an LE run's ``le/``) are not LEs."""
    for run_config in sorted(grid_dir.glob("*/config.yaml")):
        cfg = _load_run_config(run_config)
        cache = cfg.lea.cache if cfg is not None and cfg.lea.source == "le" else None
        if cache and (Path(cache) / "config.yaml").is_file() and (Path(cache) / "le").is_dir():
            return Path(cache)
    return None


def _le_settings(le_run: Path) -> dict[str, Any] | None:
    """The ``le.*`` settings of an LE run, flattened (None if its config does not load)."""
    cfg = _load_run_config(le_run / "config.yaml")
    return None if cfg is None else _flatten(cfg.le.model_dump(mode="json"), "le.")


@dataclass
class LEPoints:
    """The grids that read an LE, with their LE runs and settings, and the settings that differ between them."""

    grids: list[dict[str, Any]]
    le_runs: list[Path]
    settings: list[dict[str, Any]]
    differing: list[str]


def _le_points(grids: list[dict[str, Any]]) -> LEPoints:
    found = [(g, run, _le_settings(run)) for g in grids if (run := _le_run(g["dir"])) is not None]
    with_le = [(g, run) for g, run, setting in found if setting is not None]
    settings = [setting for _, _, setting in found if setting is not None]
    keys = sorted({k for s in settings for k in s} - RESULT_NEUTRAL_SETTINGS)
    differing = [k for k in keys if len({repr(s.get(k)) for s in settings}) > 1]
    return LEPoints([g for g, _ in with_le], [run for _, run in with_le], settings, differing)


def _plot_le_sensitivity(points: LEPoints, out: Path, metric: str = "ndcg@10") -> list[Path]:
    """Test ``metric`` per variant against each numeric LE setting that differs between the grids."""
    paths = []
    for key in points.differing:
        values = [s.get(key) for s in points.settings]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            continue
        lines: dict[str, dict[float, list[float]]] = {}
        for grid, value in zip(points.grids, values):
            for name, runs in _finished_groups(grid).items():
                lines.setdefault(name, {}).setdefault(value, []).extend(r["test"][metric] for r in runs)
        path = out / f"le_sensitivity_{key.replace('.', '_')}.png"
        _plot_lines(lines, key, f"test {metric} (mean ± std over seeds)", path)
        paths.append(path)
    return paths


def _le_points_table(points: LEPoints, metric: str = "ndcg@10") -> list[str]:
    """Markdown: one row per grid with an LE, giving the LE settings that differ between them, the LE's
    quality (its ``le_report.json``) and each variant's test ``metric`` with its validation mean, so that a
    better LE and a better recommender can be read side by side, and a choice made on validation."""
    if len(points.grids) < 2 or not points.differing:
        return []
    groups_per_grid = [_finished_groups(g) for g in points.grids]
    # in the order of the grid with the most groups, which lists its axes' values as its file does
    names = list(dict.fromkeys(n for groups in sorted(groups_per_grid, key=len, reverse=True) for n in groups))
    header = ["grid", *points.differing, "LE state NDCG@10", "popularity NDCG@10", "reward pairwise acc.",
              *[f"{name}: test {metric} (val)" for name in names]]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for grid, le_run, setting, groups in zip(points.grids, points.le_runs, points.settings, groups_per_grid):
        report_path = le_run / "le_report.json"
        quality = json.loads(report_path.read_text()) if report_path.is_file() else {}
        cells = [Path(grid["dir"]).name, *[str(setting.get(k, "")) for k in points.differing],
                 *[f"{quality[k]:.4f}" if k in quality else "" for k in ("state_ndcg@10", "pop_ndcg@10")],
                 f"{quality['reward_pairwise_acc']:.3f}" if "reward_pairwise_acc" in quality else ""]
        for name in names:
            runs = groups.get(name, [])
            test = [r["test"][metric] for r in runs]
            val = [r["val"][metric] for r in runs if r["val"] and metric in r["val"]]
            cell = format_mean_std(test, bare_single=True) if test else ""
            cells.append(cell + (f" ({np.mean(val):.4f})" if val else ""))
        rows.append("| " + " | ".join(cells) + " |")
    return ["Each grid's LE (quality on its validation users, `le_report.json`) and the recommenders trained "
            f"on it: test {metric}, mean ± std over seeds, and in brackets the validation mean (the epoch each "
            "run kept):", "", *rows, ""]


def _finished_groups(grid: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The finished runs, grouped by every axis but the seed."""
    keys = [k for k in grid["axes"] if k != "seed"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in grid["runs"]:
        if run["test"]:
            groups.setdefault(group_label(run["values"], keys) or "all", []).append(run)
    return groups


def _plot_lines(lines: dict[str, dict[float, list[float]]], xlabel: str, ylabel: str, path: Path) -> None:
    """One line per group: the mean (± std) of its values at each x."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in sorted(lines.items()):
        xs = sorted(points)
        means, stds = zip(*(mean_std(points[x]) for x in xs))
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(lines) > 1:  # one line needs no legend
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curve_panels(grid: dict[str, Any], metric: str = "ndcg@10") -> dict[str, dict[str, dict[int, list[float]]]]:
    """Validation curves ``{panel: {line: {epoch: [value per seed]}}}``. With two axes or more of several
    values besides the seed, each value of the first (e.g. the backbone) is a panel and the other axes name
    the lines (the variant); otherwise one panel ``""``. Panels follow the axis's order."""
    keys = [k for k in grid["axes"] if k != "seed"]
    varied = [k for k in keys if len(grid["axes"][k]) > 1]
    panel_key = varied[0] if len(varied) > 1 else None
    line_keys = [k for k in keys if k != panel_key]

    def panel_of(value: Any) -> str:
        return axis_value_label(panel_key, value, sep="=") if panel_key else ""

    order = [panel_of(v) for v in grid["axes"][panel_key]] if panel_key else [""]
    found: dict[str, dict[str, dict[int, list[float]]]] = {}
    for run in grid["runs"]:
        panel = panel_of(run["values"][panel_key]) if panel_key else ""
        line = group_label(run["values"], line_keys) or "all"
        for point in run["history"]:
            if f"val/{metric}" in point:
                found.setdefault(panel, {}).setdefault(line, {}).setdefault(point["epoch"], []).append(
                    point[f"val/{metric}"])
    return {panel: found[panel] for panel in order if panel in found}


def _plot_curves(grid: dict[str, Any], path: Path, metric: str = "ndcg@10") -> bool:
    panels = _curve_panels(grid, metric)
    if not panels:
        return False
    plt = _plt()
    names = sorted({line for lines in panels.values() for line in lines})
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    colours = {name: cmap(i % cmap.N) for i, name in enumerate(names)}  # a line keeps its colour in every panel
    cols = min(len(panels), 2)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(8 if cols == 1 else 6 * cols, 4.5 if rows == 1 else 3.6 * rows),
                             squeeze=False, sharey=True)
    for i, (ax, (panel, lines)) in enumerate(zip(axes.flat, panels.items())):
        for name, by_epoch in sorted(lines.items()):
            epochs = sorted(by_epoch)
            ax.plot(epochs, [np.mean(by_epoch[e]) for e in epochs], marker=".", label=name, color=colours[name])
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("epoch")
        if i % cols == 0:  # the y axis is shared along a row
            ax.set_ylabel(f"validation {metric}\n(mean over the seeds still running)")
        ax.legend(fontsize=7, ncol=1 if len(panels) > 1 else 2)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_bars(grid: dict[str, Any], path: Path, metrics: tuple[str, ...] = ("ndcg@10", "hr@10")) -> bool:
    groups = {name: [r["test"] for r in runs] for name, runs in _finished_groups(grid).items()}
    if not groups:
        return False
    plt = _plt()
    names = list(groups)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 0.35 * len(names) + 1.5))
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        means, stds = zip(*(mean_std([t[metric] for t in groups[n]]) for n in names))
        ax.barh(range(len(names)), means, xerr=stds, color="#1f77b4", alpha=0.8)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(f"test {metric} (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_sensitivity(grid: dict[str, Any], out: Path, index: int, metric: str = "ndcg@10") -> list[Path]:
    paths = []
    for axis, values in grid["axes"].items():
        if axis == "seed" or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            continue
        others = [k for k in grid["axes"] if k not in (axis, "seed")]
        lines: dict[str, dict[float, list[float]]] = {}
        for run in grid["runs"]:
            if run["test"]:
                lines.setdefault(group_label(run["values"], others) or "all", {}).setdefault(
                    run["values"][axis], []).append(run["test"][metric])
        if not any(len(points) > 1 for points in lines.values()):  # one value finished: nothing to plot against
            continue
        path = out / f"sensitivity_{index}_{axis.replace('.', '_')}.png"
        _plot_lines(lines, axis, f"test {metric} (mean ± std over seeds)", path)
        paths.append(path)
    return paths


def _plot_le_rewards(le_run: Path, path: Path, sample: int = 200_000) -> bool:
    from learec.env.label import load_label_cache

    cache = load_label_cache(le_run / "label")
    rng = np.random.default_rng(0)
    n = len(cache)
    rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    series = {"logged action": np.asarray(cache["reward"][rows]).ravel()}
    if cache["neg_rewards"].shape[1]:  # labelled without negatives (le.label.negatives=0): none to show
        series["uniform negatives"] = np.asarray(cache["neg_rewards"][rows]).ravel()
    if cache["aug_rewards"].shape[1]:
        filled = np.asarray(cache["aug_items"][rows]) >= 0  # -1: an empty slot, its reward is a placeholder
        series["augmented actions"] = np.asarray(cache["aug_rewards"][rows])[filled]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.histogram_bin_edges(np.concatenate(list(series.values())), 60)
    for name, values in series.items():
        ax.hist(values, bins=bins, alpha=0.5, density=True, label=f"{name} (mean {values.mean():.2f})")
    ax.set_xlabel("LE reward (training transitions)")
    ax.set_ylabel("density")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# CommonMark plus GFM tables; raw HTML off, so a grid or variant name is shown, never interpreted
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
          "font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}")


def markdown_to_html(markdown: str) -> str:
    """A standalone HTML page of a report's Markdown (headings, tables, images, links, code)."""
    body = _MARKDOWN.render(markdown)
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{_STYLE}</style></head><body>{body}</body></html>"


def build_report(grid_dirs: list[Path], out: Path, le_run: Path | None = None, command: str | None = None) -> Path:
    """Write ``out/report.md``, ``out/report.html`` and the plots; returns ``out``. ``command``, if given, is
    the command line that makes the report, written under its title so a committed report says how to remake it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = ["# learec report", "", *([f"Made by `{command}`.", ""] if command else [])]
    if le_run is not None:
        le_report = Path(le_run) / "le_report.json"
        if le_report.is_file():
            r = json.loads(le_report.read_text())
            users = f"{r['val_users']} " if "val_users" in r else ""
            md += [f"## LLM environment ({users}validation users)", "",
                   "| state NDCG@10 | popularity NDCG@10 | state HR@10 | popularity HR@10 | reward pairwise acc. | "
                   "item-token NLL/token before → after |", "|---|---|---|---|---|---|",
                   f"| {r['state_ndcg@10']:.4f} | {r['pop_ndcg@10']:.4f} | {r['state_hr@10']:.4f} | "
                   f"{r['pop_hr@10']:.4f} | {r['reward_pairwise_acc']:.3f} | "
                   f"{r['item_tokens']['nll_per_token_before']:.3f} → {r['item_tokens']['nll_per_token_after']:.3f} |", ""]
            aug = r.get("augmentation") or {}
            ks = [key.split("@")[1] for key in aug if key.startswith("aug_future@")]
            if ks:
                md += ["Augmented actions of the training transitions that the user interacts with later, "
                       "against the most popular items outside the history:", "",
                       "| k | LE augmented actions | popular items |", "|---|---|---|",
                       *[f"| {k} | {aug[f'aug_future@{k}']:.4f} | {aug[f'pop_future@{k}']:.4f} |" for k in ks], ""]
            if (Path(le_run) / "le_report.png").is_file():
                shutil.copy(Path(le_run) / "le_report.png", out / "le_quality.png")
                md += ["![LE quality](le_quality.png)", ""]
            if (Path(le_run) / "le_curve.png").is_file():  # le.train.steps with eval_every
                shutil.copy(Path(le_run) / "le_curve.png", out / "le_curve.png")
                md += ["![LE learning curve](le_curve.png)", ""]
        if (Path(le_run) / "label" / "manifest.json").is_file() and _plot_le_rewards(Path(le_run), out / "le_rewards.png"):
            md += ["![LE rewards](le_rewards.png)", ""]
    grids = []
    for i, grid_dir in enumerate(grid_dirs):
        grid = _load_grid_dir(Path(grid_dir))
        grids.append(grid)
        md += [f"## {Path(grid_dir).name}", "",
               "Test metrics and the validation metric of the selected epochs (`val`), mean ± std over seeds; "
               "Δ, p and p (users): the mean difference over test events (seeds averaged) with paired t-tests "
               "over events and clustered by user; `*` marks p < 0.05 clustered by user (over events where the "
               "users are unknown); seeds above: on how many of the seeds both have run the variant's own run is "
               "above the other's. A variant compared with several others has a row for each further one, "
               "with the test only.", "", grid["table"].strip(), ""]
        if _plot_curves(grid, out / f"val_curves_{i}.png"):
            md += [f"![validation curves](val_curves_{i}.png)", ""]
        if _plot_bars(grid, out / f"test_bars_{i}.png"):
            md += [f"![test metrics](test_bars_{i}.png)", ""]
        for path in _plot_sensitivity(grid, out, i):
            md += [f"![sensitivity]({path.name})", ""]
    points = _le_points(grids) if len(grids) > 1 else LEPoints([], [], [], [])
    le_plots = _plot_le_sensitivity(points, out)
    le_table = _le_points_table(points)
    if le_plots or le_table:
        md += ["## Sensitivity to the LE settings", "", *le_table]
        md += [f"![LE sensitivity]({p.name})\n" for p in le_plots]
    text = "\n".join(md)
    (out / "report.md").write_text(text)
    (out / "report.html").write_text(markdown_to_html(text))
    return out
