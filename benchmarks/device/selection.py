"""Does validation rank a study's trials as the public test does? One `widen` study per protocol (seed, grouped).

    python benchmarks/device/selection.py DATA RESULTS MINUTES   (DATA holds test_labels.csv; writes under $OUT)

No pruning, so that every trial completes and is scored on the test labels; Spearman's rho between val AUC and
public-test AUC over each study's complete trials (issue 13's selection target: rho >= 0.7).
"""

import os
import sys
from pathlib import Path

import optuna
from scipy.stats import spearmanr

import harness


def main(data: str, results: str, minutes: float) -> None:
    out = Path(os.environ.get("OUT", results))
    for protocol in ("seed", "grouped"):
        study = f"sel-{protocol}"
        harness.search(space="widen", study=study, trials=500, timeout=minutes, epochs=2, protocol=protocol,
                       data=data, results=results, pruner=optuna.pruners.NopPruner())  # fmt: skip
        frame = harness.leaderboard(data=data, results=results, study=study, all=True, by="val_auc",
                                    holdout=Path(data) / "test_labels.csv")  # fmt: skip
        frame.to_csv(out / f"{study}.csv", index=False)
        scored = frame.dropna(subset=["val_auc", "holdout_auc"])
        rho = spearmanr(scored["val_auc"], scored["holdout_auc"]).statistic if len(scored) > 2 else float("nan")
        best = scored.iloc[0] if len(scored) else None
        print(f"{protocol}: {len(scored)} complete trials, Spearman rho(val AUC, test AUC) = {rho:.3f};"
              f" val picks {best['val_auc']:.4f} -> test {best['holdout_auc']:.4f};"
              f" best test {scored['holdout_auc'].max():.4f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
