"""Does stain normalisation at inference help on unseen slides? Public-test AUC of finished runs, with and without.

    python benchmarks/stain_normalisation.py --data /work/shared/datasets/pcam-sample /tmp/anytime/*/

For every complete run under the given results folders: the public-test AUC of its own submission (plain), and of
`harness predict --stain-normalise` with the same model (test images matched to the training images' stain
statistics). The sample's test set comes from other slides than its training set, so this is the shift the method
is for. The labels (test_labels.csv) are used for scoring only. Prints a Markdown table and the paired differences.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from anytime import markdown  # the script's folder is on sys.path
from sklearn.metrics import roc_auc_score

import harness
from harness.data.submission import parse_submission
from harness.store.runs import RunStore, default_storage


def score(path: Path, truth: pd.Series) -> float:
    submission = parse_submission(path, max_rows=10**7).set_index("id")["label"]
    return float(roc_auc_score(truth.loc[submission.index], submission))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a Kaggle-layout folder with test_labels.csv")
    parser.add_argument("results", type=Path, nargs="+", help="results folders whose complete runs are scored")
    args = parser.parse_args()
    truth = pd.read_csv(args.data / "test_labels.csv").set_index("id")["label"]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for results in args.results:
            for record in RunStore(default_storage(results)).runs():
                folder = results / "runs" / record.run_id
                if record.status != "complete" or not (folder / "model.keras").is_file():
                    continue
                start = time.perf_counter()
                normed = harness.predict(
                    folder / "model.keras",
                    stain_normalise=True,
                    out=Path(scratch) / "normed.csv",
                    data=args.data,
                    results=results,
                )
                rows.append(
                    {
                        "run": record.run_id,
                        "architecture": record.architecture,
                        "val_auc": record.val_auc,
                        "plain_test_auc": score(folder / "submission.csv", truth),
                        "normalised_test_auc": score(normed, truth),
                        "seconds": time.perf_counter() - start,
                    }
                )
                print(pd.Series(rows[-1]).to_string(), flush=True)
    frame = pd.DataFrame(rows)
    frame["difference"] = frame["normalised_test_auc"] - frame["plain_test_auc"]
    print(markdown(frame))
    d = frame["difference"].to_numpy()
    print(
        f"\n{len(d)} runs: mean difference {d.mean():+.4f} (median {np.median(d):+.4f}), "
        f"{(d > 0).sum()} better, {(d < 0).sum()} worse; largest gain {d.max():+.4f}, largest loss {d.min():+.4f}"
    )


if __name__ == "__main__":
    main()
