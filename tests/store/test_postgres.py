"""PostgreSQL through the same code as SQLite: a search and its records; refusals that never show the password."""

from __future__ import annotations

import json
import socket

import optuna
import pytest
import search_fixtures as sf
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from harness.cli import main
from harness.errors import HarnessError
from harness.store.runs import RunStore, engine_url
from harness.tuning.optuna_engine import OptunaEngine

# Storage and rendering: the Keras backend cannot change the outcome (run once, on TensorFlow).
pytestmark = pytest.mark.backend_free


def one_line_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def dump(url: str) -> str:
    """Every row of every table in the database, as text."""
    engine = sa.create_engine(engine_url(url))
    tables = sa.MetaData()
    tables.reflect(engine)
    with engine.connect() as connection:
        rows = [[str(v) for v in row] for table in tables.sorted_tables for row in connection.execute(table.select())]
    return json.dumps(rows)


def test_search_on_postgres_records_runs_and_trials_without_the_password(
    postgres_url, postgres_server, make_kaggle, tmp_path, capsys
):
    data, results = make_kaggle(n_train=40, n_test=8), tmp_path / "results"
    argv = ["search", "--space", "tiny", "--study", "pg", "--trials", "2", "--epochs", "1", "--protocol", "stratified"]
    where = ["--data", str(data), "--results", str(results), "--storage", postgres_url, "--no-progress"]
    with sf.registered():
        assert main([*argv, *where]) == 0
    output = "".join(capsys.readouterr())
    assert "2 of 2 trials done" in output and "storage postgresql://harness:***@127.0.0.1" in output, output

    runs = RunStore(postgres_url).runs(study="pg")
    assert [r.status for r in runs] == ["complete", "complete"] and sorted(r.trial for r in runs) == [0, 1]
    trials = optuna.load_study(study_name="pg", storage=engine_url(postgres_url)).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert {t.user_attrs["run_id"] for t in trials} == {r.run_id for r in runs}  # both stores agree

    secret = postgres_server.password
    assert secret and secret in postgres_url
    assert secret not in output
    assert secret not in dump(postgres_url)  # run records, Optuna's tables
    for path in results.rglob("*"):  # artifacts: specs, histories, error files
        if path.is_file() and path.suffix in (".json", ".csv", ".txt", ".md"):
            assert secret not in path.read_text(errors="replace"), path


def wrong_password(url: str) -> str:
    return make_url(url).set(password="Not-The-Password-42").render_as_string(hide_password=False)


def closed_port_url(url: str) -> str:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return make_url(url).set(port=port).render_as_string(hide_password=False)


@pytest.mark.parametrize("command", [["leaderboard"], ["search", "--trials", "1"], ["run", "cnn", "--epochs", "1"]])
def test_wrong_password_is_one_line_without_the_password(command, postgres_url, tmp_path, capsys):
    url = wrong_password(postgres_url)
    line = one_line_error(capsys, [*command, "--storage", url, "--results", str(tmp_path / "r")])
    assert "cannot open the run store at postgresql://harness:***@127.0.0.1" in line, line
    assert "password authentication failed" in line, line
    assert "Not-The-Password-42" not in line


def test_unreachable_database_is_one_line(postgres_url, tmp_path, capsys):
    url = closed_port_url(postgres_url)
    line = one_line_error(capsys, ["leaderboard", "--storage", url, "--results", str(tmp_path / "r")])
    assert "cannot open the run store" in line and "refused" in line, line
    assert make_url(postgres_url).password not in line


def test_optuna_storage_refusals_hide_the_password_too(postgres_url):
    for url in (wrong_password(postgres_url), closed_port_url(postgres_url)):
        with pytest.raises(HarnessError) as info:
            OptunaEngine(url, "s")
        message = str(info.value)
        assert "\n" not in message and "postgresql://harness:***@" in message, message
        assert "Not-The-Password-42" not in message and make_url(postgres_url).password not in message


@pytest.mark.parametrize("url", ["not a url", "postgresql://", "nosuchdb://x/y"])
def test_malformed_storage_url_is_one_line(url, tmp_path, capsys):
    line = one_line_error(capsys, ["leaderboard", "--storage", url, "--results", str(tmp_path / "r")])
    assert "run store" in line or "storage" in line, line
