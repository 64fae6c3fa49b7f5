"""round() on MariaDB follows the engine's rule, half away from zero on the number as it prints:
the conformance kit's check (kpi_engine/testing/rounding.py, hand-worked values). MariaDB's own
ROUND of a DOUBLE breaks ties to even (2.5 -> 2, -34.5 -> -34) and reads the binary value
(0.05 -> 0.0 at one digit, 25 -> 20 at the tens); the rewrite rounds a DECIMAL of the number
instead (rewrite.py)."""

from __future__ import annotations

from kpi_engine.engine import open_project
from kpi_engine.testing.rounding import COLUMNS, ROWS, TABLE, rounding_mismatches, write_rounding_project

DDL = {"date": "DATE", "text": "VARCHAR(20)", "double": "DOUBLE", "decimal": "DECIMAL(14, 2)", "integer": "BIGINT"}


def test_round_is_half_away_from_zero_on_the_printed_number(mariadb_server, tmp_path):
    writer = mariadb_server.connect("kpi_scratch")
    with writer.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS `{TABLE}`")
        cursor.execute(f"CREATE TABLE `{TABLE}` ({', '.join(f'`{c}` {DDL[k]}' for c, k in COLUMNS.items())})")
        cursor.executemany(f"INSERT INTO `{TABLE}` VALUES ({', '.join(['%s'] * len(COLUMNS))})", ROWS)
    writer.close()
    with open_project(write_rounding_project(tmp_path / "p", mariadb_server.settings("kpi_scratch"))) as project:
        assert rounding_mismatches(project) == []
