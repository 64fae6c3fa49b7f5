"""A project or data folder whose name holds glob characters ('proj[1]', 'proj*', 'pro?j') is
read as the path it is: never the files of a sibling folder whose name the glob matches."""

import sqlite3

import pytest

from kpi_engine.engine import open_project

SPEC = "sources:\n  leads: {table: leads}\nkpis:\n  n: {formula: count(leads)}\n"
#: Sibling folders; under glob rules 'proj[1]' matches 'proj1', 'proj*' matches all, 'pro?j' 'proaj'.
FOLDERS = ["proj[1]", "proj1", "proj*", "projX", "pro?j", "proaj", "proj{a,b}", "proja"]


def _write(root, leads: int, config: str) -> None:
    root.mkdir(parents=True)
    (root / "kpi_engine.yaml").write_text(config)
    (root / "s.yaml").write_text(SPEC)


def _count(root) -> float:
    with open_project(root) as project:
        return project.evaluate(["n"]).rows[0][0]


@pytest.mark.parametrize("data", ["data", "data[1]"])
def test_duckdb_data_folders_are_read_by_their_exact_path(tmp_path, data):
    expected = {}
    for i, name in enumerate(FOLDERS):
        root = tmp_path / name
        _write(root, i, f"name: t\nwarehouse: {{adapter: duckdb, data: '{data}'}}\n")
        (root / data).mkdir()
        expected[name] = i + 1  # a different number of leads in each folder
        (root / data / "leads.csv").write_text("lead_id\n" + "".join(f"{n}\n" for n in range(i + 1)))
        if data != "data":  # a sibling data folder the glob would match
            (root / "data1").mkdir()
            (root / "data1" / "leads.csv").write_text("lead_id\n1\n")
    assert {name: _count(tmp_path / name) for name in FOLDERS} == expected


def test_sqlite_database_files_are_opened_by_their_exact_path(tmp_path):
    pytest.importorskip("kpi_engine_sqlite", reason="the SQLite plugin (plugins/kpi-engine-sqlite) is not installed")
    expected = {}
    for i, name in enumerate(FOLDERS + ["proj#1", "proj%41"]):
        root = tmp_path / name
        _write(root, i, "name: t\nwarehouse: {adapter: sqlite, path: w.sqlite}\n")
        with sqlite3.connect(root / "w.sqlite") as connection:
            connection.execute("CREATE TABLE leads (lead_id INTEGER)")
            connection.executemany("INSERT INTO leads VALUES (?)", [(n,) for n in range(i + 1)])
        connection.close()
        expected[name] = i + 1
    assert {name: _count(tmp_path / name) for name in expected} == expected
