"""The analysis of a scaling study: AUC per doubling of compute with a bootstrap interval, the verdict by a stated
rule, the seeds that would settle an open question, and where the ranking crosses between budgets."""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"

RULE = (
    "Size is forward GMACs per image (it grows with width and with depth; parameters do not always: deeper `cnn`"
    " points flatten a smaller map). The slope is val AUC per doubling of GMACs, fitted by least squares to the"
    " mean over seeds at each size; its 95% interval is a bootstrap (BCa where it applies, else percentile) that"
    " resamples the seeds within each size. **Not supported** when the interval lies below 0, or lies within"
    " ±epsilon of 0 (no gain worth its compute); **supported** when it lies above 0 and the largest size beats"
    " the base; **not supported** also when it lies above 0 but the largest size does not beat the base (growing"
    " past the base does not help); **inconclusive** only when the interval straddles 0 and reaches beyond"
    " ±epsilon."
)


@dataclass(frozen=True)
class SlopeFit:
    """AUC per doubling of size and its 95% bootstrap interval."""

    slope: float
    low: float
    high: float
    method: str

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class BudgetVerdict:
    """One budget's points, fit and verdict."""

    budget: str
    points: pd.DataFrame  # one row per size: multiplier, parameters, gmacs, epochs, n, mean, std
    fit: SlopeFit
    verdict: str
    reason: str
    seeds_needed: int | None  # inconclusive only: seeds per size that would settle it at the observed spread


def slope(x: np.ndarray, means: np.ndarray) -> float:
    """Least-squares slope of `means` against `x`."""
    x = np.asarray(x, dtype=float)
    dx = x - x.mean()
    return float(np.dot(dx, np.asarray(means, dtype=float) - np.mean(means)) / np.dot(dx, dx))


def slope_interval(x: np.ndarray, groups: list[np.ndarray], resamples: int = 4000, seed: int = 0) -> SlopeFit:
    """The slope of the group means against `x`, with a 95% bootstrap interval resampling within each group."""
    x = np.asarray(x, dtype=float)
    observed = slope(x, np.array([np.mean(g) for g in groups]))
    if all(np.ptp(g) == 0 for g in groups):  # no spread at all: nothing to resample
        return SlopeFit(observed, observed, observed, "exact (no spread over seeds)")

    def statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        means = np.stack([np.mean(s, axis=axis) for s in samples], axis=-1)
        dx = x - x.mean()
        return (means - means.mean(axis=-1, keepdims=True)) @ dx / np.dot(dx, dx)

    data = tuple(np.asarray(g, dtype=float) for g in groups)
    for method in ("BCa", "percentile"):
        try:
            result = stats.bootstrap(
                data, statistic, n_resamples=resamples, method=method, rng=np.random.default_rng(seed), vectorized=True
            )
        except (ValueError, RuntimeError, np.linalg.LinAlgError):
            continue
        low, high = result.confidence_interval
        if np.isfinite(low) and np.isfinite(high):
            return SlopeFit(observed, float(low), float(high), method)
    raise ValueError("the bootstrap gave no finite interval")


def decide(fit: SlopeFit, largest_mean: float, base_mean: float, epsilon: float) -> tuple[str, str]:
    """The verdict and its reason, by RULE."""
    interval = f"{fit.slope:+.4f} AUC per doubling, 95% interval [{fit.low:+.4f}, {fit.high:+.4f}]"
    if fit.high < 0:
        return NOT_SUPPORTED, f"bigger is worse: {interval} lies below 0"
    if -epsilon <= fit.low and fit.high <= epsilon:
        return NOT_SUPPORTED, f"no gain worth its compute: {interval} lies within ±{epsilon:g}"
    if fit.low > 0:
        if largest_mean > base_mean:
            return SUPPORTED, f"bigger is better: {interval} lies above 0 and the largest size beats the base"
        return NOT_SUPPORTED, (
            f"smaller sizes lose ({interval} lies above 0) but the largest ({largest_mean:.4f}) does not beat the"
            f" base ({base_mean:.4f}): growing past the base does not help"
        )
    return INCONCLUSIVE, f"{interval} straddles 0 and reaches beyond ±{epsilon:g}"


def seeds_to_settle(fit: SlopeFit, seeds: int, epsilon: float) -> int:
    """Seeds per size that would shrink the interval enough to decide, if the spread stays as observed: the
    half-width falls as 1/sqrt(seeds), and must fall below |slope| (to exclude 0) or epsilon - |slope| (to fit
    inside ±epsilon), whichever is easier."""
    target = max(abs(fit.slope), epsilon - abs(fit.slope))
    if target <= 0 or fit.half_width <= 0:
        return seeds
    return max(seeds + 1, math.ceil(seeds * (fit.half_width / target) ** 2))


def budget_order(budget: str) -> tuple[int, float]:
    """Equal-epoch budgets by epochs, then the equal-compute ones."""
    match = re.match(r"([\d.]+) epochs?$", budget)
    return (0, float(match.group(1))) if match else (1, 0.0)


def analyse(frame: pd.DataFrame, metric: str = "val_auc", epsilon: float = 0.005) -> list[BudgetVerdict]:
    """`frame`: one row per complete run with budget, multiplier, seed, parameters, gmacs, epochs and `metric`."""
    verdicts = []
    for budget in sorted(frame["budget"].unique(), key=budget_order):
        part = frame[frame["budget"] == budget].dropna(subset=[metric])
        if "steps_per_epoch" not in part:
            part = part.assign(steps_per_epoch=None)
        sizes = part.groupby("multiplier")
        points = sizes.agg(
            parameters=("parameters", "first"),
            gmacs=("gmacs", "first"),
            epochs=("epochs", "first"),
            steps=("steps_per_epoch", "first"),
            n=(metric, "size"),
            mean=(metric, "mean"),
            std=(metric, "std"),
        ).reset_index()
        groups = [np.asarray(g[metric], dtype=float) for _, g in sizes]
        if len(points) < 2 or min(len(g) for g in groups) < 2 or 1.0 not in set(points["multiplier"]):
            continue  # not yet analysable: the study is still running
        fit = slope_interval(np.log2(points["gmacs"].to_numpy()), groups)
        base_mean = float(points.loc[points["multiplier"] == 1.0, "mean"].iloc[0])
        largest_mean = float(points.sort_values("gmacs")["mean"].iloc[-1])
        verdict, reason = decide(fit, largest_mean, base_mean, epsilon)
        needed = seeds_to_settle(fit, int(points["n"].min()), epsilon) if verdict == INCONCLUSIVE else None
        verdicts.append(BudgetVerdict(budget, points, fit, verdict, reason, needed))
    return verdicts


def crossing(verdicts: list[BudgetVerdict]) -> str | None:
    """Between which equal-epoch budgets the largest size overtakes the base (or falls behind), if it does."""
    ordered = [v for v in verdicts if budget_order(v.budget)[0] == 0]

    def lead(v: BudgetVerdict) -> float:
        points = v.points.sort_values("gmacs")
        return float(points["mean"].iloc[-1] - points.loc[points["multiplier"] == 1.0, "mean"].iloc[0])

    for before, after in itertools.pairwise(ordered):
        if np.sign(lead(before)) != np.sign(lead(after)):
            word = "overtakes" if lead(after) > 0 else "falls behind"
            return f"the largest size {word} the base between {before.budget} and {after.budget}"
    return None
