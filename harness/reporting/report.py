"""`harness report`: plots and a verdict, in report.md, on whether bigger networks did better at one budget."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.atomic import write_text
from harness.errors import HarnessError
from harness.ranking.holdout import Holdout, holdout_note
from harness.ranking.leaderboard import DEFAULT_BY, comparable, markdown_cell, rank, val_key
from harness.ranking.scope import on_dataset
from harness.reporting.figures import importance_plot, importances, progress_plot, size_plot
from harness.reporting.html import Figure, Page, write_page
from harness.reporting.hypothesis import INCONCLUSIVE, VERDICT_RULE, Evidence, bootstrap_spearman, judge
from harness.store.runs import RunRecord, redact
from harness.training.budget import BUDGET_NAMES, budget_key, budget_text
from harness.workspace import Workspace

# Counts: pandas turns them into floats as soon as one row lacks them (a pruned run has no parameters).
INTEGER_COLUMNS = frozenset({"parameters", "depth", "width", "n", "runs", "complete", "baselines", "trial", "epochs"})
TOP_CURVES = 3  # learning curves of this many top-ranked runs on the HTML page

# A search varies size together with everything else: its verdict can only observe, not isolate, size.
OBSERVATIONAL = (
    "This verdict is observational: the search varied size together with activation, optimiser, learning rate and"
    " the rest, one seed a point. For a controlled answer, where only size varies and several seeds measure the"
    ' noise, run `harness scale` (see docs/results.md, "Does a bigger network do better?").'
)


def structure(architecture: str, arch_kwargs: dict[str, Any]) -> tuple[int, int]:
    """(depth, width): the number of conv layers and the most filters in one, from the architecture's cost (measured
    on the built model where its cost function leaves them out)."""
    from harness.cost import architecture_cost, measured_cost

    try:
        cost = architecture_cost(architecture, **arch_kwargs)
        if cost.depth is None or cost.width is None:
            cost = measured_cost(architecture, **arch_kwargs)
    except Exception:  # an architecture no longer registered: leave its point off the depth and width plots
        return (0, 0)
    return (cost.depth or 0, cost.width or 0)


def _label(record: RunRecord) -> str:
    if record.origin == "search" and record.study:
        return f"{record.study}#{record.trial}"
    return record.architecture


def runs_frame(records: list[RunRecord]) -> pd.DataFrame:
    """One row per run, with its budget, size (parameters, depth, width) and validation scores."""
    from harness.registry import ARCHITECTURES

    baselines = set(ARCHITECTURES.names(baseline=True))
    rows = []
    for r in records:
        spec = r.spec or {}
        data, training = spec.get("data", {}), spec.get("training", {})
        depth, width = structure(r.architecture, spec.get("arch_kwargs", {})) if r.status == "complete" else (0, 0)
        rows.append(
            {
                "run_id": r.run_id,
                "label": _label(r),
                "origin": r.origin,
                "study": r.study,
                "tuner": r.tuner,
                "trial": r.trial,
                "status": r.status,
                "architecture": r.architecture,
                # A registered baseline, never a run of another architecture (old stores marked `harness run cnn` so).
                "is_baseline": r.origin == "baseline" and r.architecture in baselines,
                "is_ensemble": r.origin == "ensemble",
                "parameters": r.parameters,
                "depth": depth or None,
                "width": width or None,
                "val_auc": r.val_auc,
                "val_accuracy": r.val_accuracy,
                "epochs": training.get("epochs"),
                "epochs_run": r.epochs_run,
                "sample": data.get("sample"),
                "protocol": data.get("protocol"),
                "data_seed": data.get("seed"),
                "dataset": r.dataset,
                "synthetic": bool(r.synthetic),
                "created_at": r.created_at,
                "budget": json.dumps(budget_key(r), default=str),  # text: pandas compares and groups it plainly
            }
        )
    columns = ["run_id", "label", "origin", "study", "status", "is_baseline", "parameters", "val_auc", "budget"]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=[*columns, "is_ensemble"])


def _budget_text(budget: str) -> str:
    key = tuple(json.loads(budget))
    parts = dict(zip(BUDGET_NAMES, key, strict=False))  # by name: the key grows with the budget knobs
    protocol, sample, seed, folds, epochs = (parts.get(k) for k in ("protocol", "sample", "seed", "folds", "epochs"))
    if epochs is None:  # an ensemble: it trains nothing, so only its members' validation split describes it
        split = f"protocol {protocol}, sample {sample or 'all'}, split seed {seed}"
        return f"ensemble (a blend of other runs, no epochs of its own; {split}" + (
            f", {folds} folds)" if folds and folds > 1 else ")"
        )
    return budget_text(key)


def choose_budget(frame: pd.DataFrame) -> str | None:
    """The budget with the most complete search runs (else the most complete runs); ties go to the latest.

    Ensembles never set it: a blend has no size or training budget of its own to compare.
    """
    done = frame[(frame["status"] == "complete") & ~frame["is_ensemble"].astype(bool)]
    pool = done[~done["is_baseline"]] if (~done["is_baseline"]).any() else done
    if pool.empty:
        return None
    counts = pool.groupby("budget", sort=False).agg(n=("run_id", "size"), last=("created_at", "max"))
    return counts.sort_values(["n", "last"], ascending=False).index[0]


def _fmt(value: Any, digits: int = 4, integer: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if integer and isinstance(value, (float, np.floating)) and float(value).is_integer():
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return str(value)


def _table(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        cells = (markdown_cell(_fmt(row[c], integer=c in INTEGER_COLUMNS)) for c in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _scope(records: list[RunRecord], study: str | None) -> tuple[list[RunRecord], str | None]:
    if not records:
        raise HarnessError("no runs in the store yet: start with 'harness run baselines' and 'harness search'")
    if study is not None:
        mine = [r for r in records if r.study == study]
        if not mine:
            known = sorted({r.study for r in records if r.study})
            raise HarnessError(f"no runs of study {study!r}; studies: {', '.join(known) or 'none yet'}")
        scope = on_dataset(records, mine[-1].dataset)
        return [r for r in scope.runs if r.study == study or r.origin == "baseline"], scope.dataset
    scope = on_dataset(records)
    return scope.runs, scope.dataset


def write_report(
    workspace: Workspace, study: str | None = None, html: bool = False, holdout: str | Path | None = None
) -> Path:
    """Write report.md and its PNGs to <results>/report/ (or <results>/report-<study>/); return report.md's path.

    With `html`, also report.html beside it: one self-contained page (see harness.reporting.html). With `holdout`
    (labels of an external set), a section and leaderboard columns with each run's holdout AUC and gap.
    """
    held = Holdout.read(holdout) if holdout else None  # bad labels fail before anything is written
    records = workspace.store().runs()
    scoped, dataset = _scope(records, study)
    folder = workspace.results / (f"report-{study}" if study else "report")
    frame = runs_frame(scoped)
    budget = choose_budget(frame)
    compared = frame[(frame["budget"] == budget) & (frame["status"] == "complete")] if budget else frame.iloc[0:0]
    evidence = judge(compared) if budget else None
    synthetic = bool(frame["synthetic"].any())

    written = dt.datetime.now().isoformat(timespec="seconds")
    scope = f"Scope: {'study ' + study if study else 'every study'} with the baselines, on `{dataset}`"
    store_text = f"Store: `{redact(workspace.storage_url)}`."
    md: list[str] = ["# Does a bigger network do better?", ""]
    md.append(
        scope
        + (" (**synthetic demo data**: the scores say nothing about cancer detection)" if synthetic else "")
        + f". {store_text} Written {written}."
    )
    md += ["", "## Verdict", ""]
    figures: list[Figure] = []  # the page's plots, in the report's order
    if evidence is None:
        verdict, sentence, detail = INCONCLUSIVE, "Inconclusive: no complete runs yet.", ""
    else:
        assert budget is not None  # judged only when a budget was chosen
        verdict, sentence = evidence.verdict, evidence.sentence()
        detail = f"Compared budget: {_budget_text(budget)}; {evidence.n} complete runs."
    md.append(f"**{sentence}**")
    md += ["", detail] if detail else []
    md += ["", OBSERVATIONAL]
    md += ["", "How the verdict is decided:", "", VERDICT_RULE, ""]

    md += ["## Budgets", "", "Only runs that share a budget are compared; the others are listed here."]
    if frame["is_ensemble"].any():
        md.append("Ensembles blend other runs' predictions; with no epochs or size of their own, none is compared.")
    md.append("")
    budgets = frame.groupby("budget", sort=False).agg(
        runs=("run_id", "size"),
        complete=("status", lambda s: int((s == "complete").sum())),
        baselines=("is_baseline", lambda s: int(s.sum())),
    )
    budgets["budget"] = [_budget_text(b) + (" (compared)" if b == budget else "") for b in budgets.index]
    md += _table(budgets.reset_index(drop=True), ["budget", "runs", "complete", "baselines"])

    if evidence is not None and budget is not None and len(compared):
        size_plot(compared, folder / "size_vs_metric.png", f"validation metrics against size ({_budget_text(budget)})")
        md += ["", "## Size against score", "", "![size against score](size_vs_metric.png)", ""]
        size_caption = (
            "Baselines are red stars; runs outside a study (`harness run ARCH`, reruns) are grey diamonds. Depth "
            "counts conv layers; width is the most filters in one layer."
        )
        md.append(size_caption)
        figures.append(Figure("Size against score", folder / "size_vs_metric.png", size_caption))
        md += ["", "## Rank correlations (Spearman, bootstrap interval)", ""]
        rows = []
        for size in ("parameters", "depth", "width"):
            for metric in ("val_auc", "val_accuracy"):
                part = compared.dropna(subset=[size, metric])
                c = bootstrap_spearman(part[size].astype(float), part[metric].astype(float))
                rows.append({"size": size, "metric": metric, "n": c.n, "rho": c.rho, "low": c.low, "high": c.high})
        md += _table(pd.DataFrame(rows), ["size", "metric", "n", "rho", "low", "high"])
        md += ["", "The verdict uses the first row (parameters against val AUC); the others are context.", ""]
        md += _best_section(evidence, compared)

    md += ["## Parameter importances (Optuna)", ""]
    optuna_studies = sorted({r.study for r in scoped if r.tuner == "optuna" and r.study})
    if not optuna_studies:
        md.append("No Optuna study in scope (KerasTuner studies and baselines have no importances here).")
    for name, values, note in importances(workspace.storage_url, optuna_studies):
        if values:
            image = f"importances-{name}.png"
            importance_plot(name, values, folder / image)
            md += [f"### {name}", "", note + ".", "", f"![importances of {name}]({image})", ""]
            figures.append(Figure(f"Parameter importances: {name}", folder / image, note + "."))
            md += _table(pd.DataFrame({"parameter": list(values), "importance": list(values.values())}),
                         ["parameter", "importance"])  # fmt: skip
            md.append("")
        else:
            md += [f"- {name}: {note}."]
    md.append("")

    md += ["## Search progress", ""]
    if budget is not None and (frame["origin"] == "search").any():
        best_baseline = evidence.best_baseline["val_auc"] if evidence and evidence.best_baseline else None
        progress_plot(frame, budget, best_baseline, folder / "best_so_far.png")
        md += ["![best so far](best_so_far.png)", ""]
        progress_caption = (
            "Best validation AUC of complete trials at the compared budget, against the epochs trained so far."
        )
        md.append(progress_caption)
        figures.append(Figure("Search progress", folder / "best_so_far.png", progress_caption))
    else:
        md.append("No search trials in scope yet: run `harness search`.")
    md.append("")
    if held is not None:
        md += _holdout_section(leaderboard_frame(scoped, frame, held)[0], held)
    write_text(folder / "report.md", "\n".join(md) + "\n")
    if html:
        ranked, notes = leaderboard_frame(scoped, frame, held, study)
        page = Page(
            scope=f"{scope}. {store_text} Markdown version: `report.md` beside this page.",
            synthetic=synthetic,
            verdict=verdict,
            verdict_sentence=sentence,
            verdict_detail=detail,
            rule=VERDICT_RULE,
            leaderboard=ranked,
            ranking=RANKING,
            notes=notes,
            compared_budget=_budget_text(budget) if budget else None,
            figures=figures,
            curves=top_curves(ranked, scoped),
            written=written,
        )
        write_page(page, folder / "report.html")
    return folder / "report.md"


RANKING = (
    "The runs in scope ranked as `harness leaderboard` ranks them: those validated on the best run's validation "
    "set, by validation accuracy, ties by validation AUC; unfinished runs after them, unranked. The budget "
    "column's letters are spelled out under the table (the verdict compares one budget only)."
)


def leaderboard_frame(
    records: list[RunRecord], frame: pd.DataFrame, holdout: Holdout | None = None, study: str | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """`harness leaderboard`'s ranking of `records` (its default metric, its validation-set rule), with each run's
    budget in words, and its notes on the runs it left out; with `holdout`, its holdout AUC and gap. With `study`,
    the validation set ranked is that of the study's best trial (the baselines on it beside them), not whichever
    set the best run of all was scored on: a report on a study shows its trials."""
    if study is not None:
        trials = [r for r in records if r.study == study and r.status == "complete"]
        if trials:
            best = rank(trials, DEFAULT_BY).iloc[0]["val_key"]
            records = [r for r in records if val_key(r) == best]
    board = comparable(rank(records, DEFAULT_BY, holdout), DEFAULT_BY)
    budgets = dict(zip(frame["run_id"], frame["budget"], strict=True))
    ranked = board.frame.assign(budget=[_budget_text(budgets[run]) for run in board.frame["run"]])
    return ranked, board.notes()


def _holdout_section(ranked: pd.DataFrame, holdout: Holdout) -> list[str]:
    """Validation beside the holdout for the ranked runs: does validation predict unseen images?"""
    md = ["## Holdout: validation against unseen images", ""]
    md += [f"Each run's test predictions scored on `{holdout.path}`; gap = val AUC - holdout AUC.", ""]
    rows = ranked[ranked["rank"].notna()]
    md += _table(rows, ["rank", "run", "architecture", "val_auc", "holdout_auc", "gap"])
    return [*md, "", holdout_note(ranked), ""]


def top_curves(ranked: pd.DataFrame, records: list[RunRecord], top: int = TOP_CURVES) -> list[Figure]:
    """The learning curves of the `top` best-ranked runs that have one (an ensemble trains nothing)."""
    folders = {r.run_id: r.artifacts for r in records}
    curves: list[Figure] = []
    for _, row in ranked[ranked["rank"].notna()].iterrows():
        folder = folders.get(row["run"])
        path = Path(folder) / "learning_curve.png" if folder else None
        if path is None or not path.is_file():
            continue
        caption = (
            f"Rank {int(row['rank'])}: {row['architecture']} ({row['origin']}), val acc {row['val_accuracy']:.4f}, "
            f"val AUC {row['val_auc']:.4f}. The dotted line marks the kept epoch (best val AUC)."
        )
        curves.append(Figure(f"#{int(row['rank'])} {row['run']}", path, caption))
        if len(curves) == top:
            break
    return curves


def _best_section(evidence: Evidence, compared: pd.DataFrame) -> list[str]:
    md = ["## Best runs at this budget", ""]
    top = compared.sort_values("val_auc", ascending=False)
    picks = pd.concat([top[top["is_baseline"]].head(3), top[~top["is_baseline"]].head(5)])
    md += _table(picks, ["label", "architecture", "parameters", "depth", "width", "val_auc", "val_accuracy", "run_id"])
    md.append("")
    return md
