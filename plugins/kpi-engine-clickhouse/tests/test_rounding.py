"""round() on ClickHouse follows the engine's rule, half away from zero on the number as it
prints: the conformance kit's check (kpi_engine/testing/rounding.py, hand-worked values, in
Float64, Decimal and integer columns). ClickHouse's own round of a Float64 breaks ties to even
(2.5 -> 2) and reads the binary value (0.05 -> 0 at one digit, 25 -> 20 at the tens); the rewrite
rounds a Decimal of the number's text instead (rewrite.py)."""

from __future__ import annotations

import sqlglot
from conftest import require_chdb, settings
from kpi_engine.engine import open_project
from kpi_engine.testing.rounding import COLUMNS, ROWS, TABLE, rounding_mismatches, write_rounding_project

DDL = {"date": "Date", "text": "String", "double": "Nullable(Float64)", "decimal": "Decimal(14, 2)",
       "integer": "Int64"}


def test_round_is_half_away_from_zero_on_the_printed_number(chdb_folder, tmp_path):
    writer = require_chdb().connect(str(chdb_folder))
    cursor = writer.cursor()
    cursor.execute("CREATE DATABASE IF NOT EXISTS scratch")
    cursor.execute(f"DROP TABLE IF EXISTS scratch.{TABLE}")
    cursor.execute(f"CREATE TABLE scratch.{TABLE} ({', '.join(f'{c} {DDL[k]}' for c, k in COLUMNS.items())}) "
                   "ENGINE = MergeTree ORDER BY id")
    rows = [sqlglot.exp.Tuple(expressions=[sqlglot.exp.convert(value) for value in row]).sql("clickhouse")
            for row in ROWS]
    cursor.execute(f"INSERT INTO scratch.{TABLE} VALUES {', '.join(rows)}")
    cursor.close()
    writer.close()
    with open_project(write_rounding_project(tmp_path / "p", settings(chdb_folder, "scratch"))) as project:
        assert rounding_mismatches(project) == []
