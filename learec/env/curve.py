"""The LE's learning curve: the validation state NDCG@10 that ``le.train.steps`` with ``eval_every`` checks
every N steps, as points (``le/curve.json``) and a figure (``le_curve.png``) beside the LE report.

The popularity line is popularity's NDCG@10 at the same points (the selection users: validation users, or
with ``le.train.select_on=train`` training users outside the LE's subset), so the two are comparable; the
LE report's popularity is measured on other users.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from learec.utils import atomic_write_json

METRIC = "val_state_ndcg@10"  # the key train_le_model's step records hold it under
CURVE_JSON = Path("le") / "curve.json"
CURVE_PNG = Path("le_curve.png")


def curve_points(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """``{"step", METRIC}`` of every record of a step-budget history that was validated."""
    return [{"step": int(r["step"]), METRIC: float(r[METRIC])} for r in history if METRIC in r and "step" in r]


def write_curve(run_dir: Path, history: list[dict[str, float]], popularity: float | None,
                users: int | None = None, select_on: str = "val") -> dict[str, Any] | None:
    """Write ``le/curve.json`` and ``le_curve.png`` in ``run_dir``; None (nothing written) without points.
    ``select_on``: whose points were checked (``le.train.select_on``: validation users, or training users
    outside the LE's subset)."""
    points = curve_points(history)
    if not points:
        return None
    curve = {"metric": METRIC, "points": points, "popularity_ndcg@10": popularity, "users": users,
             "select_on": select_on}
    atomic_write_json(run_dir / CURVE_JSON, curve)
    plot_curve(curve, run_dir / CURVE_PNG)
    return curve


def plot_curve(curve: dict[str, Any], path: Path) -> None:
    """Validation state NDCG@10 against steps, with popularity as a horizontal line when known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [p["step"] for p in curve["points"]]
    values = [p[METRIC] for p in curve["points"]]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(steps, values, marker="o", color="#1f77b4", label="LE state")
    best = max(range(len(values)), key=lambda i: (values[i], -i))  # the first of equal ones, as training keeps
    ax.scatter([steps[best]], [values[best]], s=120, facecolors="none", edgecolors="#d62728",
               label=f"kept: step {steps[best]}")
    if curve.get("popularity_ndcg@10") is not None:
        ax.axhline(curve["popularity_ndcg@10"], color="#999999", linestyle="--", label="popularity (same points)")
    ax.set_xlabel("LE training step")
    ax.set_ylabel("state NDCG@10 (held-out users, full ranking)")
    users = curve.get("users")
    whose = "training users outside the LE's subset" if curve.get("select_on") == "train" else "validation users"
    ax.set_title(f"LE learning curve{f' ({users} {whose})' if users else ''}")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
