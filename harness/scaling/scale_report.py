"""`harness scale`'s report: the table, the plot and the verdict per budget, in <results>/scale-<study>/."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.atomic import atomic_path, write_text
from harness.scaling.stats import INCONCLUSIVE, RULE, BudgetVerdict, analyse, budget_order, crossing
from harness.store.runs import RunRecord


def study_frame(records: list[RunRecord], test_labels: pd.Series | None = None) -> pd.DataFrame:
    """One row per complete point: its facts (hyperparameters), val AUC and, with labels, test AUC."""
    from sklearn.metrics import roc_auc_score

    rows = []
    for record in records:
        if record.status != "complete" or not record.hyperparameters:
            continue
        row: dict[str, Any] = {**record.hyperparameters, "run": record.run_id, "val_auc": record.val_auc}
        row["seconds"] = record.seconds
        if test_labels is not None and record.submission and Path(record.submission).is_file():
            submission = pd.read_csv(record.submission, dtype={"id": str}).set_index("id")["label"]
            shared = submission.index.intersection(test_labels.index)
            row["test_auc"] = float(roc_auc_score(test_labels[shared], submission[shared])) if len(shared) else None
        rows.append(row)
    return pd.DataFrame(rows)


def reference_baselines(records: list[RunRecord], frame: pd.DataFrame) -> pd.DataFrame:
    """Registered baselines trained on the same data for one of the study's equal-epoch budgets (mean over
    their runs): reference points on the plot, never part of the fit."""
    from harness.cost import architecture_cost

    if frame.empty:
        return pd.DataFrame()
    rows = []
    epochs = {int(float(b.split()[0])) for b in frame["budget"].unique() if budget_order(b)[0] == 0}
    for record in records:
        spec = record.spec or {}
        if record.origin != "baseline" or record.status != "complete" or record.val_auc is None:
            continue
        if spec.get("training", {}).get("epochs") in epochs:
            rows.append({"architecture": record.architecture, "epochs": spec["training"]["epochs"],
                         "val_auc": record.val_auc})  # fmt: skip
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).groupby(["architecture", "epochs"], as_index=False)["val_auc"].mean()
    table["gmacs"] = [architecture_cost(name).gmacs for name in table["architecture"]]
    return table


def plot(verdicts: list[BudgetVerdict], baselines: pd.DataFrame, metric: str, path: Path) -> Path:
    """Metric against forward GMACs and against parameters (log 2 axes), mean ± std over seeds, one colour a budget,
    the fitted slope dashed, baselines as stars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, verdict in enumerate(verdicts):
        points, colour = verdict.points.sort_values("gmacs"), colours[i % len(colours)]
        label = f"{verdict.budget}: {verdict.verdict} ({verdict.fit.slope:+.3f}/doubling)"
        for axis, column in zip(axes, ("gmacs", "parameters"), strict=True):
            axis.errorbar(points[column], points["mean"], yerr=points["std"].fillna(0), marker="o", capsize=3,
                          color=colour, label=label if column == "gmacs" else None)  # fmt: skip
        x = np.log2(points["gmacs"].to_numpy())
        fitted = points["mean"].mean() + verdict.fit.slope * (x - x.mean())
        axes[0].plot(points["gmacs"], fitted, linestyle="--", color=colour, alpha=0.6)
    for _, row in baselines.iterrows():
        axes[0].scatter(row["gmacs"], row["val_auc"], marker="*", s=160, color="black", zorder=5)
        axes[0].annotate(f"{row['architecture']} ({row['epochs']} ep)", (row["gmacs"], row["val_auc"]),
                         textcoords="offset points", xytext=(6, 4), fontsize=8)  # fmt: skip
    for axis, title in zip(axes, ("forward GMACs per image", "parameters"), strict=True):
        axis.set_xscale("log", base=2)
        axis.set_xlabel(title + " (log scale)")
        axis.grid(True, alpha=0.3)
    axes[0].set_ylabel(f"{metric.replace('_', ' ')} (mean ± std over seeds)")
    axes[0].legend(fontsize=8, loc="lower right")
    figure.suptitle("Does a bigger network do better? Only size varies; each point is several seeds")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
    return path


def _steps(value: object) -> str:
    return "all" if value is None or pd.isna(value) else str(int(value))  # type: ignore[call-overload]


def marginal(verdict: BudgetVerdict) -> str:
    """The last step, from the base to the largest size: a straight fit over all sizes can hide that returns fall."""
    points = verdict.points.sort_values("gmacs")
    base, largest = points[points["multiplier"] == 1.0].iloc[0], points.iloc[-1]
    if largest["multiplier"] == 1.0:
        return "The base is the largest size: nothing was trained beyond it."
    doublings = float(np.log2(largest["gmacs"] / base["gmacs"]))
    change = float(largest["mean"] - base["mean"])
    return (
        f"From the base to the largest size (x{largest['multiplier']:g}, {doublings:.1f} doublings of GMACs) the"
        f" mean moves {change:+.4f}, {change / doublings:+.4f} per doubling."
    )


def markdown(study: str, verdicts: list[BudgetVerdict], frame: pd.DataFrame, metric: str, epsilon: float) -> str:
    facts = frame.iloc[0] if not frame.empty else {}
    started = pd.to_datetime(frame["created_at"]).min() if "created_at" in frame else None
    lines = [f"# Scaling study `{study}`", ""]
    lines += [f"Base `{facts.get('base')}`, axis **{facts.get('axis')}**, metric **{metric}**, epsilon {epsilon:g}"
              f" AUC per doubling. Generated {datetime.now():%Y-%m-%d %H:%M}.", ""]  # fmt: skip
    if started is not None:
        lines += [f"Training time of all points: {frame['seconds'].sum() / 60:.1f} min.", ""]
    lines += ["![scaling](scaling.png)", "", "## Verdicts", ""]
    for v in verdicts:
        lines.append(f"- **{v.budget}: {v.verdict}**: {v.reason} (bootstrap: {v.fit.method}).")
        lines.append(f"  {marginal(v)}")
        if v.verdict == INCONCLUSIVE:
            lines.append(f"  About {v.seeds_needed} seeds per size (or as many more runs spread over more sizes)"
                         " would settle it at the spread observed.")  # fmt: skip
    cross = crossing(verdicts)
    lines += ["", f"Across budgets: {cross}." if cross else "Across the equal-epoch budgets the ranking of the largest"
              " size against the base does not cross.", "", "## The rule", "", RULE, "", "## Points", ""]  # fmt: skip
    lines += [
        "| budget | multiplier | parameters | GMACs | epochs | steps an epoch | seeds | mean | std |",
        "|---" * 9 + "|",
    ]
    for v in verdicts:
        for _, p in v.points.sort_values("gmacs").iterrows():
            lines.append(f"| {v.budget} | x{p['multiplier']:g} | {int(p['parameters']):,} | {p['gmacs']:.3f} |"
                         f" {int(p['epochs'])} | {_steps(p['steps'])} | {int(p['n'])} | {p['mean']:.4f} |"
                         f" {p['std']:.4f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_scale_report(
    results: Path, study: str, records: list[RunRecord], all_records: list[RunRecord], epsilon: float,
    test_labels: pd.Series | None = None,
) -> tuple[Path, list[BudgetVerdict], list[BudgetVerdict]]:  # fmt: skip
    """report.md and scaling.png in <results>/scale-<study>/; the verdicts on val AUC and (with labels) test AUC."""
    frame = study_frame(records, test_labels)
    created = {r.run_id: r.created_at for r in records}
    if not frame.empty:
        frame["created_at"] = frame["run"].map(created)
    folder = Path(results) / f"scale-{study}"
    folder.mkdir(parents=True, exist_ok=True)
    verdicts = analyse(frame, "val_auc", epsilon) if not frame.empty else []
    tested = analyse(frame, "test_auc", epsilon) if "test_auc" in frame else []
    plot(verdicts, reference_baselines(all_records, frame), "val_auc", folder / "scaling.png")
    text = markdown(study, verdicts, frame, "val_auc", epsilon)
    if tested:
        text += (
            "\n## On the held-out test labels\n\n"
            + "\n".join(f"- **{v.budget}: {v.verdict}**: {v.reason}." for v in tested)
            + "\n"
        )
    write_text(folder / "report.md", text)
    with atomic_path(folder / "points.csv") as tmp:
        frame.to_csv(tmp, index=False)
    return folder / "report.md", verdicts, tested


@dataclass(frozen=True)
class ScaleReport:
    """A scaling study's report as written: its path, its title (studies joined by '+'), points complete of
    recorded, and the verdicts on validation and (with labels) on the test labels."""

    path: Path
    title: str
    complete: int
    recorded: int
    verdicts: list[BudgetVerdict]
    tested: list[BudgetVerdict]


def report_studies(workspace: Any, studies: list[str], epsilon: float, test_labels: Any = None) -> ScaleReport:
    """The report of `studies` joined (each a scaling study in the store), or a one-line error when none has a
    point."""
    from harness.errors import HarnessError
    from harness.ranking.holdout import read_test_labels

    store = workspace.store()
    records = [r for name in studies for r in store.runs(study=name) if r.origin == "scale"]
    if not records:
        raise HarnessError(f"study {','.join(studies)!r} has no points: run harness scale first")
    labels = read_test_labels(test_labels) if test_labels else None
    title = "+".join(studies)
    path, verdicts, tested = write_scale_report(workspace.results, title, records, store.runs(), epsilon, labels)
    done = sum(r.status == "complete" for r in records)
    return ScaleReport(path, title, done, len(records), verdicts, tested)
