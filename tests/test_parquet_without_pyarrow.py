"""Parquet without pyarrow (issue 19): DuckDB writes the file; counts stay integers, periods
dates; the values read back equal the CSV output of the same request."""

from __future__ import annotations

import csv
import io
import sys

import duckdb
import pytest
from click.testing import CliRunner

import reference
from kpi_engine.cli import cli

EXAMPLE = reference.DEFAULT_DATA_DIR.parent
ARGS = [str(EXAMPLE), "new_contacts", "cost_per_lead", "--by", "channel", "--grain", "month", "--from", "2025-01-01",
        "--to", "2025-04-01"]


@pytest.fixture
def without_pyarrow(monkeypatch):
    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # 'import pyarrow' raises ImportError


def test_duckdb_writes_the_parquet_file_when_pyarrow_is_missing(without_pyarrow, tmp_path):
    target = tmp_path / "out.parquet"
    result = CliRunner().invoke(cli, ["evaluate", *ARGS, "-o", str(target)])
    assert result.exit_code == 0, result.output
    as_csv = CliRunner().invoke(cli, ["evaluate", *ARGS, "--format", "csv"]).stdout
    expected = list(csv.DictReader(io.StringIO(as_csv)))
    connection = duckdb.connect()
    types = dict(connection.execute("select column_name, column_type from (describe select * from read_parquet(?))",
                                    [str(target)]).fetchall())
    assert types["period"] == "DATE" and types["new_contacts"] == "BIGINT" and types["cost_per_lead"] == "DOUBLE"
    rows = connection.execute("select * from read_parquet(?)", [str(target)]).fetchall()
    assert len(rows) == len(expected) >= 12
    for row, want in zip(rows, expected):
        assert row[0].isoformat() == want["period"] and (row[1] or "") == want["channel"]
        assert row[2] == int(want["new_contacts"])
        assert (row[3] is None and want["cost_per_lead"] == "") or row[3] == pytest.approx(float(want["cost_per_lead"]))
