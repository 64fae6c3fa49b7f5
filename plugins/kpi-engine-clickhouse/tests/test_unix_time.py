"""from_unixtime(x) on ClickHouse: the conformance kit's Unix-time check (kpi_engine/testing/
unix_time.py, months worked by hand), read as a DateTime64(3) in UTC so milliseconds keep their
fraction. ClickHouse's Date starts in 1970: the rows before it are left out."""

from __future__ import annotations

from conftest import require_chdb, settings
from kpi_engine.engine import open_project
from kpi_engine.testing.unix_time import ROWS_SINCE_1970, TABLE, unix_time_mismatches, write_unix_time_project


def test_unix_seconds_and_milliseconds_by_month(chdb_folder, tmp_path):
    writer = require_chdb().connect(str(chdb_folder))
    cursor = writer.cursor()
    cursor.execute("CREATE DATABASE IF NOT EXISTS scratch")
    cursor.execute(f"DROP TABLE IF EXISTS scratch.{TABLE}")
    cursor.execute(f"CREATE TABLE scratch.{TABLE} (created Int64, sent_ms Float64) ENGINE = MergeTree ORDER BY created")
    cursor.execute(f"INSERT INTO scratch.{TABLE} VALUES " + ", ".join(f"({a}, {b!r})" for a, b in ROWS_SINCE_1970))
    cursor.close()
    writer.close()
    with open_project(write_unix_time_project(tmp_path / "p", settings(chdb_folder, "scratch"))) as project:
        assert unix_time_mismatches(project, since_1970=True) == []
