"""optuna-dashboard serves a harness study: its API lists the trials under the objective's name, and Chromium renders
the study page (the commands the README gives: `optuna-dashboard sqlite:///results/harness.db`)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pytest
import search_fixtures as sf
from conftest import make_kaggle_folder
from PIL import Image

from harness.tuning.optuna_engine import OBJECTIVE
from harness.tuning.search import run_search

# The dashboard reads what Optuna stored: the Keras backend that trained the trials cannot change that.
pytestmark = [pytest.mark.backend_free, pytest.mark.slow, pytest.mark.browser]  # a whole (tiny) study, served

CHROMIUM = shutil.which("chromium")
STUDY = "dash"
TRIALS = 2


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Iterator[tuple[str, dict[str, float]]]:
    """A two-trial study of the tiny space; its storage URL and each trial's run id -> val AUC in the run store."""
    root = tmp_path_factory.mktemp("dashboard")
    with sf.registered():
        folder = make_kaggle_folder(root / "kaggle", n_train=40, n_test=8)
        ws = sf.workspace(folder, root / "results")
        summary = run_search(ws, sf.options(trials=TRIALS, study=STUDY))
        aucs = {r.run_id: r.val_auc for r in summary.results}
        yield ws.storage_url, aucs


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fetch(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.loads(answer.read())


@pytest.fixture(scope="module")
def dashboard(study) -> Iterator[str]:
    """`optuna-dashboard URL` (its own command line, as the README says) on a free loopback port; its base URL."""
    storage_url, _ = study
    command = Path(sys.executable).parent / "optuna-dashboard"
    port = free_port()
    server = subprocess.Popen(
        [str(command), storage_url, "--host", "127.0.0.1", "--port", str(port), "--server", "wsgiref", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                fetch(f"{base}/api/meta")
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, f"optuna-dashboard exited: {server.communicate()[1][-2000:]}"
                assert time.monotonic() < deadline, "optuna-dashboard did not answer in 60 s"
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.communicate(timeout=30)


def study_id(base: str) -> int:
    studies = fetch(f"{base}/api/studies")["study_summaries"]
    (found,) = [s for s in studies if s["study_name"] == STUDY]
    assert found["directions"] == ["maximize"]
    return int(found["study_id"])


def test_dashboard_api_shows_the_trials_under_the_objectives_name(study, dashboard):
    storage_url, aucs = study
    assert optuna.load_study(study_name=STUDY, storage=storage_url).metric_names == [OBJECTIVE]
    detail = fetch(f"{dashboard}/api/studies/{study_id(dashboard)}")
    assert detail["name"] == STUDY and detail["objective_names"] == [OBJECTIVE]
    trials = detail["trials"]
    assert len(trials) == TRIALS and all(t["state"] == "Complete" for t in trials)
    # Each trial is the harness run it names, with that run's validation AUC as its value.
    shown = {{a["key"]: a["value"] for a in t["user_attrs"]}["run_id"]: t["values"][0] for t in trials}
    assert shown == pytest.approx(aucs)
    assert detail["has_intermediate_values"]  # the per-epoch AUC that pruning reports: the dashboard's curves


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Headless Chromium with a throwaway profile; virtual time lets the page's scripts fetch and draw the study."""
    assert CHROMIUM is not None
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={cwd / 'profile'}"]
    command += ["--virtual-time-budget=15000", "--window-size=1280,900", "--hide-scrollbars", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` on PATH (.ci/install-chromium installs Debian's package)")
def test_chromium_renders_the_study_page(dashboard, tmp_path):
    page = f"{dashboard}/dashboard/studies/{study_id(dashboard)}"
    dom = chromium("--dump-dom", page, cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert STUDY in dom.stdout and OBJECTIVE in dom.stdout, dom.stdout[-3000:]  # drawn by its scripts, not the shell
    shot = tmp_path / "dashboard.png"
    result = chromium(f"--screenshot={shot}", page, cwd=tmp_path)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (900, 1280)
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.005  # text and plots, not one flat colour
