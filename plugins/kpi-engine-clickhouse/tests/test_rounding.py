"""round() on ClickHouse follows the engine's rule: half away from zero on the number as it
prints. ClickHouse's own round of a Float64 breaks ties to even (2.5 -> 2) and reads the binary
value (0.05 -> 0 at one digit, 25 -> 20 at the tens); the rewrite rounds a Decimal of the
number's text instead (rewrite.py). Expected values are worked by hand from the decimals stored;
the table also has a Decimal and an integer column, whose types the rewrite must accept."""

from __future__ import annotations

import json

import pytest
from conftest import require_chdb, settings
from kpi_engine.engine import open_project

# id, Float64 value: ties at the rounded digit, a number past Decimal128's 20 whole digits, a null.
VALUES = [("half", "2.5"), ("minus_half", "-2.5"), ("tie_tens", "25"), ("minus_tie", "-34.5"), ("tenth", "0.05"),
          ("minus_tenth", "-0.45"), ("printed", "78.55"), ("cents", "1.005"), ("big", "1e25"), ("tiny", "1e-20"),
          ("missing", "NULL")]
EXPECTED = {  # round(x), round(x, 1), round(x, 2), round(x, -1)
    "half": (3.0, 2.5, 2.5, 0.0), "minus_half": (-3.0, -2.5, -2.5, 0.0), "tie_tens": (25.0, 25.0, 25.0, 30.0),
    "minus_tie": (-35.0, -34.5, -34.5, -30.0), "tenth": (0.0, 0.1, 0.05, 0.0), "minus_tenth": (0.0, -0.5, -0.45, 0.0),
    "printed": (79.0, 78.6, 78.55, 80.0), "cents": (1.0, 1.0, 1.01, 0.0), "big": (1e25, 1e25, 1e25, 1e25),
    "tiny": (0.0, 0.0, 0.0, 0.0), "missing": (None, None, None, None)}
KPIS = {"whole": "round(max(readings.value))", "one_digit": "round(max(readings.value), 1)",
        "two_digits": "round(max(readings.value), 2)", "tens": "round(max(readings.value), -1)",
        "price": "round(max(readings.price), 1)", "count_tens": "round(max(readings.units), -1)"}


@pytest.fixture
def project(chdb_folder, tmp_path):
    chdb = require_chdb()
    writer = chdb.connect(str(chdb_folder))
    cursor = writer.cursor()
    cursor.execute("CREATE DATABASE IF NOT EXISTS scratch")
    cursor.execute("DROP TABLE IF EXISTS scratch.readings")
    cursor.execute("CREATE TABLE scratch.readings (taken_on Date, id String, value Nullable(Float64), "
                   "price Decimal(14, 2), units Int64) ENGINE = MergeTree ORDER BY id")
    rows = ", ".join(f"('2025-01-01', '{name}', {value}, 2.45, 45)" for name, value in VALUES)
    cursor.execute(f"INSERT INTO scratch.readings VALUES {rows}")
    cursor.close()
    writer.close()
    folder = tmp_path / "rounding"
    folder.mkdir()
    (folder / "kpi_engine.yaml").write_text(json.dumps({"name": "rounding", "warehouse": settings(chdb_folder,
                                                                                                  "scratch")}))
    (folder / "specs.yaml").write_text(json.dumps({
        "sources": {"readings": {"table": "readings", "time": "taken_on", "dimensions": ["id"]}},
        "kpis": {name: {"formula": formula} for name, formula in KPIS.items()}}))
    with open_project(folder) as opened:
        yield opened


def test_round_is_half_away_from_zero_on_the_printed_number(project):
    rows = {row["id"]: row for row in project.evaluate(list(KPIS), by=["id"]).to_dicts()}
    assert set(rows) == set(EXPECTED)
    for name, expected in EXPECTED.items():
        got = tuple(rows[name][kpi] for kpi in ("whole", "one_digit", "two_digits", "tens"))
        if expected[0] is None:
            assert got == expected, name
        else:
            assert got == pytest.approx(expected, rel=1e-12, abs=1e-12), name
        # a Decimal(14, 2) tie and an integer tie at the tens, on every row
        assert (rows[name]["price"], rows[name]["count_tens"]) == (2.5, 50.0), name
