"""Does a bigger network do better? Pure statistics on a frame of runs: Spearman, its bootstrap CI, a verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"

MIN_RUNS = 8  # fewer complete runs than this at one budget cannot show a trend
RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95

VERDICT_RULE = f"""\
The population is every complete run at the compared budget (same dataset, protocol, sample, split seed, folds,
epochs and training recipe): the search trials in scope and the baselines. Size is the parameter count. rho is
Spearman's rank correlation between size and the metric; its {CONFIDENCE:.0%} interval is the percentile bootstrap
over {RESAMPLES} resamples of runs (numpy seed {BOOTSTRAP_SEED}). A "larger model" has more parameters than the best
baseline. The first rule that applies decides:
1. fewer than {MIN_RUNS} complete runs, no baseline, no larger model, or rho undefined: **inconclusive**;
2. the interval lies below 0 (bigger scored lower): **not supported**;
3. no larger model scores above the best baseline: **not supported**;
4. the interval lies above 0 and the best larger model scores above the best baseline: **supported**;
5. otherwise (a larger model beat the baseline, but the interval includes 0): **inconclusive**."""


def ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions) along the last axis, as Spearman's rho needs."""
    return rankdata(values, method="average", axis=-1)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson's r of each row of `a` with the same row of `b`; nan where a row is constant."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    scale = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(scale > 0, (a * b).sum(axis=-1) / scale, np.nan)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation; nan when either side is constant or there are fewer than 3 points."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3:
        return math.nan
    return float(_pearson_rows(ranks(x), ranks(y)))


@dataclass(frozen=True)
class Correlation:
    """rho with its percentile bootstrap interval; `used` resamples had a defined rho (not constant)."""

    rho: float
    low: float
    high: float
    n: int
    resamples: int
    used: int
    seed: int
    confidence: float

    def text(self) -> str:
        if math.isnan(self.rho):
            return f"rho undefined (n = {self.n})"
        return (
            f"rho = {self.rho:+.3f}, {self.confidence:.0%} CI {self.low:+.3f} to {self.high:+.3f}, "
            f"n = {self.n}, bootstrap B = {self.resamples}, seed {self.seed}"
        )


def bootstrap_spearman(
    x: np.ndarray,
    y: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> Correlation:
    """Spearman's rho and a percentile bootstrap interval from resampling the (x, y) pairs with replacement."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rho = spearman(x, y)
    rng = np.random.default_rng(seed)
    values: np.ndarray = np.empty(0)
    if len(x) >= 3:
        # One draw per resample, as ever (the intervals stay those of earlier reports); ranked all at once, which
        # is what keeps a report with several correlations to a second instead of half a minute.
        index = np.stack([rng.integers(0, len(x), len(x)) for _ in range(resamples)])
        rhos = _pearson_rows(ranks(x[index]), ranks(y[index]))
        values = rhos[~np.isnan(rhos)]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail]) if len(values) else (math.nan, math.nan)
    return Correlation(rho, float(low), float(high), len(x), resamples, len(values), seed, confidence)


@dataclass(frozen=True)
class Evidence:
    """The verdict on "a bigger network does better", and the numbers it rests on."""

    metric: str
    verdict: str
    reason: str
    correlation: Correlation
    n: int
    best_baseline: dict[str, Any] | None
    best_larger: dict[str, Any] | None

    def sentence(self) -> str:
        return f"{self.verdict.capitalize()}: {self.reason}"


def _describe(row: dict[str, Any] | None, metric: str) -> str:
    if row is None:
        return "none"
    return f"{row.get('label') or row['run_id']} ({int(row['parameters']):,} parameters, {metric} {row[metric]:.4f})"


def judge(runs: pd.DataFrame, metric: str = "val_auc") -> Evidence:
    """Apply VERDICT_RULE to `runs`: columns run_id, is_baseline, parameters, `metric`, optional status and label.

    Only rows with status 'complete' (when a status column exists) and finite size and metric are used; the caller
    has already restricted the rows to one budget.
    """
    frame = runs.copy()
    if "status" in frame:
        frame = frame[frame["status"] == "complete"]
    frame = frame[np.isfinite(pd.to_numeric(frame[metric], errors="coerce").astype(float))]
    frame = frame[pd.to_numeric(frame["parameters"], errors="coerce").astype(float) > 0]
    n = len(frame)
    correlation = bootstrap_spearman(np.log10(frame["parameters"].astype(float)), frame[metric].astype(float))
    baselines = frame[frame["is_baseline"].astype(bool)]
    best_baseline = baselines.loc[baselines[metric].idxmax()].to_dict() if len(baselines) else None
    larger = frame[~frame["is_baseline"].astype(bool)]
    if best_baseline is not None:
        larger = larger[larger["parameters"] > best_baseline["parameters"]]
    best_larger = larger.loc[larger[metric].idxmax()].to_dict() if len(larger) and best_baseline else None

    def evidence(verdict: str, reason: str) -> Evidence:
        return Evidence(metric, verdict, reason, correlation, n, best_baseline, best_larger)

    if n < MIN_RUNS:
        return evidence(INCONCLUSIVE, f"only {n} complete runs at this budget; the rule needs at least {MIN_RUNS}.")
    if best_baseline is None:
        return evidence(INCONCLUSIVE, "no baseline ran at this budget, so there is nothing to be bigger than.")
    if best_larger is None:
        return evidence(
            INCONCLUSIVE, f"no model larger than the best baseline, {_describe(best_baseline, metric)}, was trained."
        )
    if math.isnan(correlation.rho) or math.isnan(correlation.low):
        return evidence(INCONCLUSIVE, f"size and {metric} give no defined rank correlation ({correlation.text()}).")
    larger_text, baseline_text = _describe(best_larger, metric), _describe(best_baseline, metric)
    if correlation.high < 0:
        return evidence(
            NOT_SUPPORTED,
            f"larger networks scored lower ({correlation.text()}); best larger model {larger_text}, "
            f"best baseline {baseline_text}.",
        )
    if best_larger[metric] <= best_baseline[metric]:
        return evidence(
            NOT_SUPPORTED,
            f"no network larger than the best baseline, {baseline_text}, beat it; the best of them was "
            f"{larger_text} ({correlation.text()}).",
        )
    if correlation.low > 0:
        return evidence(
            SUPPORTED,
            f"larger networks scored higher ({correlation.text()}), and the best larger model, {larger_text}, "
            f"beat the best baseline, {baseline_text}.",
        )
    return evidence(
        INCONCLUSIVE,
        f"a larger network, {larger_text}, beat the best baseline, {baseline_text}, but size and {metric} are "
        f"not reliably correlated (the interval includes 0: {correlation.text()}).",
    )
