"""Anytime benchmark (issues 13 and 22): the public-test AUC each contender's submission has after t minutes.

    python benchmarks/anytime.py --data /work/shared/datasets/pcam-sample --minutes 15 --contenders single,clocked \
        --out /tmp/anytime15

Each contender is the real `harness` command in a fresh process with its own results folder:
  baselines   `harness run baselines --deadline T`: the notebook's three models, optimisers and data protocol, each
              an equal share of the clock;
  single      (d) `harness run FIRST.json --deadline T`: the `modern` space's first point as one run on the whole
              sample, its epochs sized to the clock (the strongest single-run contender);
  clocked     (e) `harness search --space modern --deadline T`: the clocked search, its endgame included;
  clocked-kt  the same with KerasTuner's Hyperband (3 epochs at most, a 6,000-image sample);
  widen, modern  the earlier searches, stopped from outside at T (`--timeout`, 3 epochs on 6,000 images a trial).
On the clock (`--deadline`) everything counts (data preparation, training, predictions, TTA, ensembling, writing)
and the harness stops itself; the benchmark only checks that it did (ended_by_itself), killing it a minute after
its promise (the deadline plus 2% or 30 s). The curve of such a contender is its results/submission.csv over time
(every file written there is kept, with its time, in results/submissions/); for the others it is the run that
validation picks as runs finish. The dotted curve is the best finished run (an oracle no user has). For the
earlier contenders TTA 8 on the picked run and an ensemble of the top 3 are scored on top. The labels (the
sample's test_labels.csv) are used for scoring only. Writes anytime.csv, summary.csv, summary.md and anytime.png
under --out; run contenders one after another on an otherwise idle machine (the load average is printed).
--extend continues each contender in the same folder (a search resumes its study) and appends the new minutes to
its clock; --merge DIR=NOTE ... builds one table and plot from several --out folders.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

# A search trial trains 3 epochs on a 6,000-image sample: about a minute on 2 cores, so an hour holds many trials.
SEARCH = "--sample 6000 --epochs 3"
CONTENDERS = {
    "baselines": ["run", "baselines"],
    "widen": ["search", "--space", "widen", "--study", "anytime-widen", "--trials", "500"],
    "modern": ["search", "--space", "modern", "--study", "anytime-modern", "--trials", "500"],
    # On the whole command's clock (--deadline): (d) the space's first point as one run, its epochs sized to the
    # clock; (e) the clocked search; and KerasTuner's Hyperband on the same clock.
    "single": ["run", "SPEC"],
    "clocked": ["search", "--space", "modern", "--study", "anytime-clocked", "--trials", "500"],
    "clocked-kt": ["search", "--space", "modern", "--tuner", "keras-tuner", "--algorithm", "hyperband", "--study",
                   "anytime-kt", "--trials", "500", "--epochs", "3"],
}  # fmt: skip
ON_THE_CLOCK = ("single", "clocked", "clocked-kt", "baselines")


def first_point_spec(folder: Path) -> Path:
    """The `modern` space's first point as a run's spec.json, on the whole sample (the seed protocol)."""
    import json

    from harness.registry import SEARCH_SPACES
    from harness.tuning.space import FixedSuggest
    from harness.tuning.study_settings import StudySettings
    from harness.tuning.trials import TrialRunner

    entry = SEARCH_SPACES.get("modern")
    sample = entry.builder(FixedSuggest(dict(entry.meta["first"])))
    settings = StudySettings(space="modern")
    spec = TrialRunner(None, entry.builder, "resnet", settings, "anytime-single", None).spec(sample, 0)  # type: ignore[arg-type]
    path = folder / "single-spec.json"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec.to_dict(), indent=2, default=str))
    return path


def run_contender(name: str, data: Path, results: Path, minutes: float, search: str) -> dict:
    """Run one contender until it ends or its deadline; its clock segment and the load average."""
    results.mkdir(parents=True, exist_ok=True)
    argv = [str(first_point_spec(results)) if a == "SPEC" else a for a in CONTENDERS[name]]
    command = [sys.executable, "-m", "harness", *argv, "--data", str(data), "--results", str(results)]
    if name in ON_THE_CLOCK:  # the harness keeps the clock itself: everything counts, and it stops on time
        command += ["--deadline", f"{minutes:g}"]
        if name == "clocked-kt":
            command += ["--sample", "6000"]
    elif CONTENDERS[name][0] == "search":
        command += [*search.split(), "--timeout", f"{minutes:g}"]  # stop starting trials at the deadline
    log = results / f"{name}.log"
    started = dt.datetime.now(dt.timezone.utc)
    load = os.getloadavg()[0]
    print(f"{name}: {' '.join(command[2:])}  (load {load:.1f})", flush=True)
    by_itself = True
    limit = minutes * 60 + max(0.02 * minutes * 60, 30) + 60  # the promise, and a minute of grace before a kill
    with log.open("a") as out:
        process = subprocess.Popen([*command, "--no-progress"], stdout=out, stderr=subprocess.STDOUT)
        try:
            process.wait(timeout=limit if name in ON_THE_CLOCK else minutes * 60)
        except subprocess.TimeoutExpired:
            by_itself = False
            process.send_signal(signal.SIGINT)  # the harness records the interrupted run and exits
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    ended = dt.datetime.now(dt.timezone.utc)
    return {"contender": name, "started": started, "ended": ended, "load_start": load,
            "load_end": os.getloadavg()[0], "ended_by_itself": by_itself}  # fmt: skip


def submissions_curve(results: Path, started: dt.datetime, holdout: Path) -> pd.DataFrame:
    """The public-test AUC of results/submission.csv against the contender's minute: every file the harness wrote
    there is kept in results/submissions/ with the time it was written (index.csv)."""
    from sklearn.metrics import roc_auc_score

    from harness.data.submission import parse_submission

    index = results / "submissions" / "index.csv"
    if not index.is_file():
        return pd.DataFrame(columns=["minute", "run", "val_auc", "holdout_auc"])
    truth = pd.read_csv(holdout).set_index("id")["label"]
    frame = pd.read_csv(index)
    frame = frame[frame["target"] == "submission.csv"]
    rows = []
    for row in frame.itertuples():
        submission = parse_submission(results / "submissions" / row.file, max_rows=10**7).set_index("id")["label"]
        auc = float(roc_auc_score(truth.loc[submission.index], submission))
        minute = (row.time - started.timestamp()) / 60
        rows.append({"minute": minute, "run": row.run, "val_auc": row.val_auc, "holdout_auc": auc})
    return pd.DataFrame(rows)


def contender_minutes(when: dt.datetime, segments: pd.DataFrame) -> float:
    """Minutes of the contender's own clock at `when`: earlier segments' lengths plus the time into this one."""
    clock = 0.0
    for segment in segments.itertuples():
        if when <= segment.ended:
            return clock + max(0.0, (when - segment.started).total_seconds() / 60)
        clock += (segment.ended - segment.started).total_seconds() / 60
    return clock


def finished_runs(name: str, data: Path, results: Path, holdout: Path, segments: pd.DataFrame) -> pd.DataFrame:
    """The contender's complete runs: minutes of its clock at completion, val AUC and public-test AUC."""
    import harness
    from harness.store.runs import RunStore, default_storage

    frame = harness.leaderboard(data=data, results=results, holdout=holdout, all=True, by="val_auc")
    if frame.empty:  # nothing finished (see the contender's log under its results folder)
        return pd.DataFrame(columns=["contender", "run", "architecture", "minutes", "val_auc", "holdout_auc"])
    frame = frame[(frame["status"] == "complete") & (frame["origin"] != "ensemble")]  # not the blends made below
    done = {r.run_id: r.updated_at for r in RunStore(default_storage(results)).runs()}
    utc = dt.timezone.utc
    ends = [contender_minutes(done[run].replace(tzinfo=utc), segments) for run in frame["run"]]
    out = frame.assign(contender=name, minutes=ends)[
        ["contender", "run", "architecture", "minutes", "val_auc", "holdout_auc", "parameters"]
    ]
    return out.sort_values("minutes").reset_index(drop=True)


def curve(runs: pd.DataFrame, minutes: float) -> pd.DataFrame:
    """A step at each completion: the public-test AUC of the run validation picks so far, and the oracle's best."""
    rows = [{"minute": 0.0, "picked_holdout_auc": None, "oracle_holdout_auc": None, "runs": 0}]
    for i, end in enumerate(runs["minutes"]):
        seen = runs.iloc[: i + 1]
        picked = seen.loc[seen["val_auc"].astype(float).idxmax()]
        best = float(seen["holdout_auc"].max())
        rows.append({"minute": end, "picked_holdout_auc": float(picked["holdout_auc"]), "oracle_holdout_auc": best})
        rows[-1]["runs"] = i + 1
    rows.append({**rows[-1], "minute": max(minutes, rows[-1]["minute"])})  # the curve runs on to the deadline
    return pd.DataFrame(rows)


def clock_curve(submissions: pd.DataFrame, runs: pd.DataFrame, minutes: float) -> pd.DataFrame:
    """For a contender on the clock: a step each time results/submission.csv changed (its public-test AUC), beside
    the best finished run so far (the oracle)."""
    rows = [{"minute": 0.0, "picked_holdout_auc": None, "oracle_holdout_auc": None, "runs": 0}]
    for sub in submissions.itertuples():
        seen = runs[runs["minutes"] <= sub.minute + 1e-6]
        oracle = float(seen["holdout_auc"].max()) if len(seen) else None
        rows.append({"minute": sub.minute, "picked_holdout_auc": sub.holdout_auc, "oracle_holdout_auc": oracle,
                     "runs": len(seen)})  # fmt: skip
    rows.append({**rows[-1], "minute": max(minutes, rows[-1]["minute"])})
    return pd.DataFrame(rows)


def at_minute(steps: pd.DataFrame, t: float) -> float | None:
    """The curve's value at minute t (the last step at or before it)."""
    before = steps[steps["minute"] <= t]
    return None if before.empty else before["picked_holdout_auc"].iloc[-1]


def on_top(runs: pd.DataFrame, data: Path, results: Path, holdout: Path) -> dict:
    """TTA 8 on the picked run, and an ensemble of the top 3 by val AUC: their public-test AUCs and seconds."""
    from sklearn.metrics import roc_auc_score

    import harness
    from harness.data.submission import parse_submission

    truth = pd.read_csv(holdout).set_index("id")["label"]

    def score(path: Path) -> float:
        submission = parse_submission(path, max_rows=10**7).set_index("id")["label"]
        return float(roc_auc_score(truth.loc[submission.index], submission))

    picked = runs.loc[runs["val_auc"].astype(float).idxmax()]
    start = time.perf_counter()
    tta = harness.predict(
        results / "runs" / picked["run"] / "model.keras", tta=8, out=results / "tta8.csv", data=data, results=results
    )
    tta_seconds = time.perf_counter() - start
    summary = {"picked": picked["run"], "picked_holdout_auc": float(picked["holdout_auc"])}
    summary |= {"tta8_holdout_auc": score(tta), "tta8_seconds": tta_seconds}
    if len(runs) >= 2:
        start = time.perf_counter()
        blend = harness.ensemble(top=3, by="val_auc", data=data, results=results)
        summary |= {
            "ensemble_holdout_auc": score(Path(blend.record.submission)),
            "ensemble_members": str(len(blend.members)),
            "ensemble_seconds": time.perf_counter() - start,
        }
    return summary


def plot(curves: pd.DataFrame, path: Path, minutes: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    colors = {"baselines": "#7f7f7f", "widen": "#1f77b4", "modern": "#d62728", "single": "#2ca02c",
              "clocked": "#9467bd", "clocked-kt": "#ff7f0e"}  # fmt: skip
    others = iter(["#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"] * 4)  # merged contenders that share a name
    for name, frame in curves.groupby("contender", sort=False):
        color = colors.pop(str(name).split(" (")[0], None) or next(others)  # a second "modern (...)" gets its own
        ax.step(frame["minute"], frame["picked_holdout_auc"], where="post", color=color, label=f"{name} (val picks)")
        ax.step(frame["minute"], frame["oracle_holdout_auc"], where="post", color=color, ls=":", alpha=0.6)
    ax.set(xlabel="wall-clock minutes (2 CPU cores)", ylabel="public-test ROC AUC", xlim=(0, minutes))
    ax.set_title(
        "Public-test AUC of the submission validation picks\n(dotted: the best finished run, an oracle)", fontsize=10
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path)


def markdown(frame: pd.DataFrame) -> str:
    """A Markdown table (no tabulate dependency): floats to 4 places."""
    cells = frame.map(lambda v: "" if v is None or pd.isna(v) else f"{v:.4f}" if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells.astype(str).values.tolist()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="a Kaggle-layout folder with test_labels.csv (not for --merge)")
    parser.add_argument("--minutes", type=float, default=15, help="wall clock per contender")
    parser.add_argument("--contenders", default="baselines,widen,modern")
    parser.add_argument("--out", type=Path, default=Path("results/anytime"))
    parser.add_argument("--search-args", default=SEARCH, help=f"a search trial's budget (default {SEARCH!r})")
    parser.add_argument("--extend", action="store_true", help="continue each contender's clock and study in --out")
    parser.add_argument("--score-only", action="store_true", help="do not train: score what --out already holds")
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="DIR[=NOTE]",
        help="do not train: one table and plot in --out from these earlier --out folders; NOTE is added to their "
        "contenders' names (a name met twice without one gets its folder's)",
    )
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge, args.out)
    if args.data is None:
        parser.error("--data is required (unless --merge)")
    holdout = args.data / "test_labels.csv"
    names = args.contenders.split(",")
    segments_file = args.out / "segments.csv"
    before = pd.read_csv(segments_file) if (args.extend or args.score_only) and segments_file.exists() else None
    if not args.score_only:
        new = pd.DataFrame([run_contender(n, args.data, args.out / n, args.minutes, args.search_args) for n in names])
        both = new if before is None else pd.concat([before, new])
        both.to_csv(segments_file, index=False)
    segments = pd.read_csv(segments_file, parse_dates=["started", "ended"])
    curves, rows = [], []
    for name in names:
        mine = segments[segments["contender"] == name].sort_values("started")
        total = sum((mine["ended"] - mine["started"]).dt.total_seconds()) / 60
        runs = finished_runs(name, args.data, args.out / name, holdout, mine)
        runs.to_csv(args.out / f"{name}-runs.csv", index=False)
        row = {"contender": name, "minutes": total, "runs": len(runs), "load": mine["load_end"].max()}
        if name in ON_THE_CLOCK:
            sub = submissions_curve(args.out / name, mine["started"].iloc[0].to_pydatetime(), holdout)
            sub.to_csv(args.out / f"{name}-submissions.csv", index=False)
            curves.append(clock_curve(sub, runs, total).assign(contender=name))
            row["ended_by_itself"] = bool(mine["ended_by_itself"].all()) if "ended_by_itself" in mine else None
            if len(sub):
                row |= {
                    "final_val_auc": float(sub["val_auc"].iloc[-1]),
                    "final_holdout_auc": float(sub["holdout_auc"].iloc[-1]),
                }
        else:
            curves.append(curve(runs, total).assign(contender=name))
        for mark in (15, 30, 60):
            if mark <= total + 0.5:
                row[f"picked@{mark}"] = at_minute(curves[-1], mark)
        if len(runs) and name not in ON_THE_CLOCK:
            row |= on_top(runs, args.data, args.out / name, holdout)
        rows.append(row)
        print(pd.Series(row).to_string(), flush=True)
    write(pd.concat(curves), pd.DataFrame(rows), args.out)


def write(curves: pd.DataFrame, summary: pd.DataFrame, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    curves.to_csv(out / "anytime.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(markdown(summary))
    plot(curves, out / "anytime.png", curves["minute"].max())
    print((out / "summary.md").read_text())


def read_summary(folder: Path) -> pd.DataFrame:
    """A folder's summary.csv, or its summary.md table (written before summary.csv was)."""
    if (folder / "summary.csv").is_file():
        return pd.read_csv(folder / "summary.csv")
    if not (folder / "summary.md").is_file():
        sys.exit(f"--merge: {folder} holds neither summary.csv nor summary.md")
    lines = [line.strip().strip("|").split("|") for line in (folder / "summary.md").read_text().splitlines()]
    header, rows = [c.strip() for c in lines[0]], [[c.strip() for c in row] for row in lines[2:] if row != [""]]
    frame = pd.DataFrame(rows, columns=header).replace({"": None, "nan": None})
    for column in frame.columns.drop(["contender", "picked"], errors="ignore"):
        frame[column] = pd.to_numeric(frame[column])
    return frame


def merge(sources: list[str], out: Path) -> None:
    """One table and plot from several runs of this script (e.g. contenders measured in different sessions)."""
    curves, rows = [], []
    for source in sources:
        folder, _, note = (Path(source.partition("=")[0]), *source.partition("=")[1:])
        if not (folder / "anytime.csv").is_file():
            sys.exit(f"--merge: {folder / 'anytime.csv'} is missing")
        summary = read_summary(folder)
        names = {name: f"{name} ({note})" if note else name for name in summary["contender"]}
        for name in names:
            if not note and any(r["contender"] == name for r in rows):
                names[name] = f"{name} ({folder.name})"
        frame = pd.read_csv(folder / "anytime.csv")
        curves.append(frame.assign(contender=frame["contender"].map(names)))
        rows += summary.assign(contender=summary["contender"].map(names)).to_dict("records")
    write(pd.concat(curves), pd.DataFrame(rows), out)


if __name__ == "__main__":
    main()
