"""round() on MariaDB follows the engine's rule: half away from zero on the number as it prints.
MariaDB's own ROUND of a DOUBLE breaks ties to even (2.5 -> 2, -34.5 -> -34) and reads the binary
value (0.05 -> 0.0 at one digit, 25 -> 20 at the tens); the rewrite rounds a DECIMAL of the
number instead (rewrite.py). Expected values are worked by hand from the decimals stored."""

from __future__ import annotations

import json

import pytest
from kpi_engine.engine import open_project

# id, value stored as a DOUBLE: ties at the rounded digit, and magnitudes past DECIMAL(65, 30).
VALUES = [("half", 2.5), ("minus_half", -2.5), ("tie_tens", 25.0), ("minus_tie", -34.5), ("tenth", 0.05),
          ("minus_tenth", -0.45), ("printed", 78.55), ("cents", 1.005), ("big", 1e40), ("minus_big", -1e40),
          ("plain", 12.34)]
EXPECTED = {  # round(x), round(x, 1), round(x, 2), round(x, -1)
    "half": (3.0, 2.5, 2.5, 0.0), "minus_half": (-3.0, -2.5, -2.5, 0.0), "tie_tens": (25.0, 25.0, 25.0, 30.0),
    "minus_tie": (-35.0, -34.5, -34.5, -30.0), "tenth": (0.0, 0.1, 0.05, 0.0), "minus_tenth": (0.0, -0.5, -0.45, 0.0),
    "printed": (79.0, 78.6, 78.55, 80.0), "cents": (1.0, 1.0, 1.01, 0.0), "big": (1e40, 1e40, 1e40, 1e40),
    "minus_big": (-1e40, -1e40, -1e40, -1e40), "plain": (12.0, 12.3, 12.34, 10.0)}
KPIS = {"whole": "round(max(readings.value))", "one_digit": "round(max(readings.value), 1)",
        "two_digits": "round(max(readings.value), 2)", "tens": "round(max(readings.value), -1)"}


@pytest.fixture
def project(mariadb_server, tmp_path):
    writer = mariadb_server.connect("kpi_scratch")
    with writer.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS readings")
        cursor.execute("CREATE TABLE readings (taken_on DATE, id VARCHAR(20), value DOUBLE)")
        cursor.executemany("INSERT INTO readings VALUES ('2025-01-01', %s, %s)", VALUES)
    writer.close()
    folder = tmp_path / "rounding"
    folder.mkdir()
    (folder / "kpi_engine.yaml").write_text(json.dumps({"name": "rounding",
                                                        "warehouse": mariadb_server.settings("kpi_scratch")}))
    (folder / "specs.yaml").write_text(json.dumps({
        "sources": {"readings": {"table": "readings", "time": "taken_on", "dimensions": ["id"]}},
        "kpis": {name: {"formula": formula} for name, formula in KPIS.items()}}))
    with open_project(folder) as opened:
        yield opened


def test_round_is_half_away_from_zero_on_the_printed_number(project):
    rows = {row["id"]: row for row in project.evaluate(list(KPIS), by=["id"]).to_dicts()}
    assert set(rows) == set(EXPECTED)
    for name, expected in EXPECTED.items():
        assert tuple(rows[name][kpi] for kpi in KPIS) == pytest.approx(expected, rel=1e-12, abs=1e-12), name


def test_a_null_stays_null(project, mariadb_server):
    writer = mariadb_server.connect("kpi_scratch")
    with writer.cursor() as cursor:
        cursor.execute("INSERT INTO readings VALUES ('2025-01-02', 'missing', NULL)")
    writer.close()
    rows = {row["id"]: row for row in project.evaluate(list(KPIS), by=["id"]).to_dicts()}
    assert all(rows["missing"][kpi] is None for kpi in KPIS)
