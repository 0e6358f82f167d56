"""`harness report --html`: one self-contained page, loaded in headless Chromium, whose table matches the store."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from rich.console import Console

from harness.cli import main
from harness.config import DataConfig, OptimizerConfig, Origin, RunSpec, TrainingConfig
from harness.ranking.leaderboard import DEFAULT_BY, comparable, rank
from harness.store.runs import RunStore
from harness.training import plots
from harness.workspace import Workspace

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no `chromium` on PATH (.ci/install-chromium installs Debian's package)"
)


def history(epochs: int, level: float) -> pd.DataFrame:
    steps = np.arange(1, epochs + 1)
    return pd.DataFrame({"epoch": steps, "accuracy": level + 0.02 * steps, "val_accuracy": level + 0.015 * steps,
                         "auc": level + 0.1 + 0.02 * steps, "val_auc": level + 0.08 + 0.015 * steps,
                         "loss": 0.7 / steps, "val_loss": 0.75 / steps})  # fmt: skip


def add_run(store, results: Path, run_id, *, architecture, dataset, n_val, epochs=2, origin="search", study=None,
            trial=None, arch_kwargs=None, parameters=None, val_accuracy=None, status="complete",
            error=None, sample=None):  # fmt: skip
    """A run as the runner records it, with its learning curve drawn by the harness's own plotting function."""
    training = TrainingConfig(epochs=epochs, optimizer=OptimizerConfig("adam", 1e-3))
    origin_ = Origin(kind=origin, study=study, trial=trial, tuner="optuna" if study else None)
    data = DataConfig(protocol="seed", seed=101, sample=sample)
    spec = RunSpec(architecture, arch_kwargs or {}, training, data, origin=origin_)
    folder = results / "runs" / run_id
    store.start(run_id, architecture=architecture, origin=origin, study=study, trial=trial, spec=spec.to_dict(),
                tuner="optuna" if study else None, dataset=dataset, synthetic=False, artifacts=str(folder),
                n_val=n_val)  # fmt: skip
    values = {} if val_accuracy is None else {"val_accuracy": val_accuracy, "val_auc": val_accuracy + 0.05}
    if status == "complete":
        plots.learning_curve(history(epochs, val_accuracy - 0.1), f"{architecture} ({run_id})",
                             folder / "learning_curve.png", best_epoch=epochs)  # fmt: skip
    store.update(run_id, status=status, parameters=parameters, epochs_run=epochs, seconds=12.5, error=error, **values)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A real run of a tiny cnn; baselines, a study, an ensemble, a failed run and one on other images; the page."""
    from conftest import make_kaggle_folder

    from harness.data import load_dataset
    from harness.training.runner import Runner

    root = tmp_path_factory.mktemp("html")
    data, results = make_kaggle_folder(root / "data", n_train=40, n_test=8), root / "results"
    store = Workspace(data=data, results=results, console=Console(quiet=True)).store()  # as the commands open it
    runner = Runner(load_dataset(data, root / "cache", progress=False), store, results, progress=False,
                    console=Console(quiet=True))  # fmt: skip
    training = TrainingConfig(epochs=2, batch_size=8, optimizer=OptimizerConfig("adam", 1e-3))
    tiny = RunSpec("cnn", {"widths": [4], "convs": [1], "dense": [8]}, training, DataConfig(protocol="seed", seed=101))
    real = runner.run(tiny)
    assert real.status == "complete", real.error
    same = {"dataset": real.dataset, "n_val": real.n_val}  # validated on the real run's images
    add_run(store, results, "base1", architecture="seed_model1", origin="baseline", parameters=36_350_881,
            val_accuracy=0.80, **same)  # fmt: skip
    add_run(store, results, "base2", architecture="seed_model2", origin="baseline", parameters=1_846_817,
            val_accuracy=0.78, **same)  # fmt: skip
    for i in range(9):
        add_run(store, results, f"trial{i}", architecture="cnn", study="wide", trial=i, parameters=20_000 * 2**i,
                arch_kwargs={"widths": [8 * 2 ** (i % 4), 16 * 2 ** (i % 4)], "convs": [1 + i % 3] * 2},
                val_accuracy=0.70 + 0.012 * i, **same)  # fmt: skip
    add_run(store, results, "pruned", architecture="cnn", study="wide", trial=9, status="pruned", **same)
    add_run(store, results, "broken", architecture="cnn", status="failed", error="ValueError: NaN loss", **same,
            origin="baseline")  # fmt: skip
    # Validated on other images: `harness leaderboard` leaves it out, and so must the page.
    add_run(store, results, "elsewhere", architecture="cnn", sample=20, val_accuracy=0.6, dataset=real.dataset, n_val=3)
    ensemble_spec = {"architecture": "ensemble", "members": ["base1", "trial8"], "by": "val_auc",
                     "data": real.spec["data"]}  # fmt: skip
    store.start("ensemble2", architecture="ensemble", origin="ensemble", spec=ensemble_spec, **same,
                artifacts=str(results / "runs" / "ensemble2"))  # fmt: skip
    store.update("ensemble2", status="complete", val_accuracy=0.99, val_auc=0.99, parameters=36_350_881 + 5_120_000,
                 epochs_run=2)  # fmt: skip
    assert main(["report", "--html", "--data", str(data), "--results", str(results)]) == 0
    return results / "report" / "report.html", store


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Headless Chromium with a throwaway profile (two tests at once must not share one)."""
    assert CHROMIUM is not None
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={cwd / 'profile'}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


class Rows(HTMLParser):
    """The leaderboard's rows as {column: text}, in page order, with each row's data-run."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.images: list[str] = []
        self._inside = False
        self._column: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if tag == "table":
            self._inside = attr.get("id") == "leaderboard"
        elif tag == "img":
            self.images.append(attr.get("src") or "")
        elif self._inside and tag == "tr" and "data-run" in attr:
            self.rows.append({"data-run": attr["data-run"] or ""})
        elif self._inside and tag == "td" and self.rows:
            self._column = attr.get("data-col")
            self.rows[-1][self._column or ""] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._inside = False
        if tag == "td":
            self._column = None

    def handle_data(self, data: str) -> None:
        if self._column is not None:
            self.rows[-1][self._column] += data


def parse(text: str) -> Rows:
    parser = Rows()
    parser.feed(text)
    return parser


def ranking(store: RunStore) -> pd.DataFrame:
    """`harness leaderboard`'s ranking: its default metric, only the runs on the best run's validation set."""
    return comparable(rank(store.runs(), DEFAULT_BY), DEFAULT_BY).frame


def expected_rows(store: RunStore) -> list[dict[str, str]]:
    """The store's runs as `harness leaderboard` ranks them, formatted as the page shows them."""

    def text(value, spec: str) -> str:
        return "-" if value is None or pd.isna(value) else format(value, spec)

    rows = []
    for _, row in ranking(store).iterrows():
        rows.append({"data-run": row["run"], "rank": text(row["rank"], ".0f"), "run": row["run"],
                     "status": row["status"], "val_accuracy": text(row["val_accuracy"], ".4f"),
                     "val_auc": text(row["val_auc"], ".4f"),
                     "parameters": text(row["parameters"], ",.0f")})  # fmt: skip
    return rows


SHOWN = ("data-run", "rank", "run", "status", "val_accuracy", "val_auc", "parameters")


def test_the_page_is_one_self_contained_file(page):
    path, store = page
    text = path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", text)  # no network, no file beside it
    assert "<script" not in text and "<link" not in text and "@import" not in text and "url(" not in text
    images = parse(text).images
    assert len(images) == 2 + 3  # size plots and best so far (no Optuna study to weigh), the top three curves
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    for plot in ("size_vs_metric.png", "best_so_far.png"):
        assert base64.b64encode((path.parent / plot).read_bytes()).decode() in text
    assert [{key: row[key] for key in SHOWN} for row in parse(text).rows] == expected_rows(store)


def test_the_top_runs_learning_curves_skip_the_ensemble(page):
    path, store = page
    text = path.read_text()
    ranked = ranking(store)
    trained = ranked[ranked["rank"].notna() & (ranked["architecture"] != "ensemble")].head(3)
    assert int(ranked.set_index("run").loc["ensemble2", "rank"]) < int(trained.iloc[-1]["rank"])  # it was passed over
    curves = text.split("Learning curves of the top runs", 1)[1]
    headings = re.findall(r"<h3>#(\d+) (\S+)</h3>", curves)
    assert headings == [(str(int(row["rank"])), row["run"]) for _, row in trained.iterrows()]
    for run in trained["run"]:
        curve = Path(store.get(run).artifacts) / "learning_curve.png"
        assert base64.b64encode(curve.read_bytes()).decode() in curves


@pytest.mark.browser
@needs_chromium
def test_chromium_renders_the_store_leaderboard_and_the_verdict(page, tmp_path):
    path, store = page
    result = chromium("--dump-dom", path.as_uri(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = parse(result.stdout)
    shown = [{key: row[key].strip() for key in SHOWN} for row in dom.rows]
    expected = expected_rows(store)
    assert [row["run"] for row in shown] == [row["run"] for row in expected]
    assert shown == expected
    assert len(shown) == len(store.runs()) - 1 == 15 and "elsewhere" not in {row["run"] for row in shown}
    notes = re.findall(r'<p class="note">(.*?)</p>', result.stdout, re.S)
    assert len(notes) == 1 and "left out 1 on other validation sets" in notes[0]
    assert len(dom.images) == 5 and all(src.startswith("data:image/png;base64,") for src in dom.images)
    verdict = re.search(r'<div class="verdict[^"]*" id="verdict">(.*?)</div>', result.stdout, re.S)
    assert verdict and re.search(r"(Supported|Not supported|Inconclusive): ", verdict.group(1))
    assert (path.parent / "report.md").read_text().split("## Verdict", 1)[1].split("**")[1][:40] in verdict.group(1)


@pytest.mark.browser
@needs_chromium
def test_chromium_screenshot_of_the_page_is_not_blank(page, tmp_path):
    path, _store = page
    shot = tmp_path / "page.png"
    result = chromium(f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", path.as_uri(),
                      cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2000, 1280)
    assert pixels.std() > 20  # text, table rules and plots, not one flat colour
    assert (pixels < 128).mean() > 0.01  # dark ink on a fair share of it
    rows = (pixels < 200).any(axis=1)
    assert rows[1000:].mean() > 0.3  # the lower half is drawn too (plots), not an empty page after the title
