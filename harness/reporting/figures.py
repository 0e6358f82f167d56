"""The report's figures: validation against model size, the best score over a search, fANOVA importances."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import matplotlib.ticker
import pandas as pd

from harness.store.runs import engine_url
from harness.training.plots import integer_epochs, save_figure

MIN_IMPORTANCE_TRIALS = 5  # fANOVA on fewer complete trials says nothing
IMPORTANCE_SEED = 0
SIZES = (("parameters", "parameters"), ("depth", "conv layers"), ("width", "max filters"))


def importances(storage_url: str, studies: list[str]) -> list[tuple[str, dict[str, float] | None, str]]:
    """Optuna's fANOVA parameter importances per study, or why there are none."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    out: list[tuple[str, dict[str, float] | None, str]] = []
    for name in studies:
        try:
            study = optuna.load_study(study_name=name, storage=engine_url(storage_url))  # PostgreSQL driver
        except Exception as exc:  # a missing study or an unreachable storage: say so in the report
            out.append((name, None, f"could not load the Optuna study: {exc}"))
            continue
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if len(complete) < MIN_IMPORTANCE_TRIALS:
            out.append((name, None, f"only {len(complete)} complete trials; importances need {MIN_IMPORTANCE_TRIALS}"))
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                evaluator = optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)
                values = optuna.importance.get_param_importances(study, evaluator=evaluator)
        except Exception as exc:  # e.g. every trial scored the same
            reason = str(exc).splitlines()[0].rstrip(".") if str(exc) else type(exc).__name__
            out.append((name, None, f"fANOVA failed: {reason}"))
            continue
        out.append((name, dict(values), f"fANOVA over {len(complete)} complete trials, seed {IMPORTANCE_SEED}"))
    return out


def size_plot(compared: pd.DataFrame, path: Path, title: str) -> plt.Figure:
    """Validation AUC and accuracy against parameters, depth and width: trials by study, other runs, baselines."""
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5), squeeze=False)
    search = compared[~compared["is_baseline"]]
    base = compared[compared["is_baseline"]]
    studies = sorted(search["study"].dropna().unique())
    colours = plt.get_cmap("tab10")
    for row, metric in enumerate(("val_auc", "val_accuracy")):
        for col, (size, name) in enumerate(SIZES):
            ax = axes[row][col]
            for i, study in enumerate(studies):
                part = search[search["study"] == study].dropna(subset=[size, metric])
                ax.scatter(part[size], part[metric], s=22, alpha=0.75, color=colours(i % 10), label=f"trials: {study}")
            loose = search[search["study"].isna()].dropna(subset=[size, metric])  # `harness run ARCH`, reruns
            if len(loose):
                ax.scatter(loose[size], loose[metric], s=30, marker="D", color="dimgrey", label="other runs")
            marked = base.dropna(subset=[size, metric])
            if len(marked):
                ax.scatter(marked[size], marked[metric], marker="*", s=220, color="crimson", edgecolor="black",
                           zorder=5, label="baselines")  # fmt: skip
            for _, b in marked.iterrows():
                ax.annotate(b["label"], (b[size], b[metric]), textcoords="offset points", xytext=(6, 6), fontsize=8)
            if size == "parameters":
                ax.set_xscale("log")
            elif size == "width":  # filters come in powers of two: label them plainly
                ax.set_xscale("log", base=2)
                ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.set_xlabel(name + (" (log)" if size in ("parameters", "width") else ""))
            ax.set_ylabel(metric.replace("_", " "))
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(handles)), fontsize=9)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    save_figure(fig, path)
    return fig


def progress_plot(scope: pd.DataFrame, budget: str, best_baseline: float | None, path: Path) -> plt.Figure:
    """Each study's best val AUC so far (compared budget only) against the search's cumulative epochs."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    search = scope[~scope["is_baseline"]].sort_values("created_at")
    for study, part in search.groupby("study", sort=True):
        epochs = part["epochs_run"].fillna(0).astype(float).cumsum()
        scores = part["val_auc"].where((part["status"] == "complete") & (part["budget"] == budget))
        # Carry the best forward over trials that do not count (pruned, or another budget, as Hyperband's
        # short rounds are): the best so far stands until beaten, so the series is one unbroken line.
        best = scores.astype(float).cummax().ffill()
        if best.isna().all():
            continue  # no complete trial of this study at the compared budget
        counted = scores.notna().tolist()  # a marker for each trial that counts; the line carries the best on
        ax.step(epochs, best, where="post", marker="o", markersize=4, markevery=counted, label=f"{study}: best so far")
    if best_baseline is not None:
        ax.axhline(best_baseline, color="crimson", linestyle="--", label=f"best baseline ({best_baseline:.4f})")
    ax.set_xlabel("cumulative training epochs of the search (pruned and failed trials included)")
    ax.set_ylabel("best validation AUC so far")
    ax.grid(alpha=0.3)
    integer_epochs(ax, [0, *search["epochs_run"].fillna(0).astype(float).cumsum()])
    ax.margins(y=0.12)  # keep the best baseline's line off the frame
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path)
    return fig


def importance_plot(name: str, values: dict[str, float], path: Path) -> None:
    items = sorted(values.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(items) + 1.2))
    ax.barh([k for k, _ in items], [v for _, v in items], color="steelblue")
    ax.set_xlabel("importance (fANOVA share of the variance in val AUC)")
    ax.set_title(f"parameter importances: {name}")
    save_figure(fig, path)
