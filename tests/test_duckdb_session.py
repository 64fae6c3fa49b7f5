"""The DuckDB session: nothing downloaded or loaded at run time, settings pinned and locked."""

import os
import subprocess
import sys

import duckdb
from click.testing import CliRunner
from sqlglot import exp

from kpi_engine.cli import cli
from kpi_engine.engine import open_project

SPEC = """
sources:
  leads: {table: leads, time: created_at}
  sheet: {sql: "SELECT * FROM read_xlsx('book.xlsx')"}
  remote: {sql: "SELECT * FROM read_csv('https://example.com/leads.csv')"}
kpis:
  n: {formula: count(leads)}
  rows: {formula: count(sheet)}
  remote_rows: {formula: count(remote)}
"""


def test_a_sql_source_that_needs_an_extension_is_refused_not_downloaded(make_project, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # where DuckDB would install extensions
    root = make_project({"s.yaml": SPEC}, {"leads": [{"created_at": "2025-01-01"}]})
    validate = CliRunner().invoke(cli, ["validate", str(root)])
    assert validate.exit_code == 1 and "2 problems found" in validate.stderr
    for name, needs in (("rows", "read_xlsx"), ("remote_rows", "https://example.com/leads.csv")):
        result = CliRunner().invoke(cli, ["evaluate", str(root), name])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        for text in (validate.stderr, result.stderr):
            assert needs in text and "never installs or loads DuckDB extensions" in text
            assert "download" not in text.lower().replace("nothing is downloaded", "")
    assert not (tmp_path / "home" / ".duckdb").exists()  # no install was even attempted
    ok = CliRunner().invoke(cli, ["evaluate", str(root), "n", "--format", "csv"])  # the rest still runs
    assert ok.exit_code == 0 and ok.stdout == "n,complete\n1,true\n"


def _settings(connection, *names):
    calls = [exp.Anonymous(this="current_setting", expressions=[exp.Literal.string(name)]) for name in names]
    return connection.execute(exp.select(*calls)).rows[0]


def test_extensions_are_neither_installed_nor_loaded_and_the_configuration_is_locked(make_project, tmp_path):
    folder = make_project({"s.yaml": SPEC}, {"leads": [{"created_at": "2025-01-01"}]})
    database = tmp_path / "w.duckdb"
    duckdb.connect(str(database)).close()
    file = make_project({}, config=f"name: t\nwarehouse: {{adapter: duckdb, path: '{database}'}}\n", name="file")
    for root in (folder, file):
        with open_project(root) as project:
            connection = project.connection()
            assert _settings(connection, "autoinstall_known_extensions", "autoload_known_extensions",
                             "allow_community_extensions", "lock_configuration", "TimeZone") == \
                (False, False, False, True, "UTC")


def test_timestamps_with_a_time_zone_are_read_as_utc_on_any_machine(tmp_path):
    """20:00 UTC on 31 January is 1 February in Tokyo: by day, the event is on the UTC day
    whatever the machine's zone (the project's own 'timezone:' is the way to another zone)."""
    database = tmp_path / "w.duckdb"
    with duckdb.connect(str(database)) as writer:
        writer.execute("CREATE TABLE events (happened_at TIMESTAMPTZ)")
        writer.execute("INSERT INTO events VALUES ('2025-01-31 20:00:00+00')")
    root = tmp_path / "project"
    root.mkdir()
    (root / "kpi_engine.yaml").write_text(f"name: t\nwarehouse: {{adapter: duckdb, path: '{database}'}}\n")
    (root / "s.yaml").write_text("sources:\n  events: {table: events, time: happened_at}\nkpis:\n  n: {formula: count(events)}\n")
    done = subprocess.run([sys.executable, "-m", "kpi_engine.cli", "evaluate", str(root), "n", "--grain", "day",
                           "--format", "csv"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TZ": "Asia/Tokyo"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == ["2025-01-31,1,true"]


def test_two_projects_on_one_database_file_in_one_process(tmp_path):
    """DuckDB shares one database between the connections a process opens on a file: the second
    project finds the settings already pinned and locked (it used to fail setting them again)."""
    database = tmp_path / "w.duckdb"
    with duckdb.connect(str(database)) as writer:
        writer.execute("CREATE TABLE leads AS SELECT TIMESTAMP '2025-01-01 10:00:00' + i * INTERVAL 7 HOUR AS created_at"
                       " FROM range(100) t(i)")
    roots = []
    for name in ("a", "b"):
        root = tmp_path / name
        root.mkdir()
        (root / "kpi_engine.yaml").write_text(f"name: {name}\nwarehouse: {{adapter: duckdb, path: '{database}'}}\n")
        (root / "s.yaml").write_text("sources:\n  leads: {table: leads, time: created_at}\n"
                                     "kpis:\n  n: {formula: count(leads)}\n")
        roots.append(root)
    with open_project(roots[0]) as first, open_project(roots[1]) as second:
        assert first.evaluate(["n"]).to_dicts()[0]["n"] == 100
        assert second.evaluate(["n"]).to_dicts()[0]["n"] == 100
        assert _settings(second.connection(), "lock_configuration", "TimeZone") == (True, "UTC")
