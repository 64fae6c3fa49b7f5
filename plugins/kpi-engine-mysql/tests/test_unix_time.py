"""from_unixtime(x) on MariaDB: the conformance kit's Unix-time check (kpi_engine/testing/
unix_time.py, months worked by hand), before 1970 too: MySQL's FROM_UNIXTIME is null there, so
the engine adds the seconds to the epoch instead, which no session time zone moves."""

from __future__ import annotations

from kpi_engine.engine import open_project
from kpi_engine.testing.unix_time import ROWS, TABLE, unix_time_mismatches, write_unix_time_project


def test_unix_seconds_and_milliseconds_by_month(mariadb_server, tmp_path):
    writer = mariadb_server.connect("kpi_scratch")
    with writer.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS `{TABLE}`")
        cursor.execute(f"CREATE TABLE `{TABLE}` (created BIGINT, sent_ms DOUBLE)")
        cursor.executemany(f"INSERT INTO `{TABLE}` VALUES (%s, %s)", ROWS)
    writer.close()
    with open_project(write_unix_time_project(tmp_path / "p", mariadb_server.settings("kpi_scratch"))) as project:
        assert unix_time_mismatches(project) == []
