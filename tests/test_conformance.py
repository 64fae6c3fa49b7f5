"""The conformance kit on the built-in DuckDB adapter, and the kit's own consistency."""

import duckdb
import pytest

import conformance_expected
from kpi_engine.testing import (TABLES, assert_conformance, assert_same_results, check_conformance, expected_values,
                                fixture_dir, fixture_rows, result_differences)

DUCKDB_TYPES = {"integer": "BIGINT", "decimal": "DECIMAL(14, 2)", "text": "VARCHAR", "boolean": "BOOLEAN",
                "date": "DATE", "timestamp": "TIMESTAMP"}


def load_into_duckdb(path):
    """What a plugin author writes for their warehouse: typed tables, then the fixture rows.
    (DuckDB's executemany is slow, so the rows go through a bulk INSERT from the CSV files.)"""
    connection = duckdb.connect(str(path))
    for table, columns in TABLES.items():
        ddl = ", ".join(f'"{name}" {DUCKDB_TYPES[kind]}' for name, kind in columns.items())
        connection.execute(f'CREATE TABLE "{table}" ({ddl})')  # test set-up DDL, not engine SQL
        connection.execute(f"INSERT INTO \"{table}\" SELECT * FROM read_csv(?, header = true, all_varchar = true)",
                           [str(fixture_dir() / f"{table}.csv")])
        assert connection.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0] == len(fixture_rows(table))
    connection.close()


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    path = tmp_path_factory.mktemp("conformance") / "fixture.duckdb"
    load_into_duckdb(path)
    return {"adapter": "duckdb", "path": str(path)}


def test_duckdb_passes_the_conformance_kit(warehouse, tmp_path):
    assert_conformance(warehouse, tmp_path / "project")


def test_the_kit_catches_a_wrong_value(warehouse, tmp_path):
    path = tmp_path / "broken.duckdb"
    load_into_duckdb(path)
    connection = duckdb.connect(str(path))
    connection.execute("UPDATE orders SET amount = amount + 1 WHERE order_id = (SELECT MIN(order_id) FROM orders)")
    connection.close()
    mismatches = check_conformance({"adapter": "duckdb", "path": str(path)}, tmp_path / "project")
    assert mismatches and {m.kpi for m in mismatches} >= {"revenue"}


def test_expected_values_come_from_the_reference_and_are_current():
    from pathlib import Path

    assert Path(conformance_expected.TARGET).read_text() == conformance_expected.build(), \
        "kpi_engine/testing/expected.json is stale: run python tests/conformance_expected.py"
    expected = expected_values()
    assert len(expected["month_channel"]) == 39


def test_result_differences_between_two_engines():
    import datetime as dt

    jan, feb = dt.date(2025, 1, 1), dt.date(2025, 2, 1)
    reference = [{"period": jan, "channel": "email", "a": 1.0, "b": None},
                 {"period": feb, "channel": "email", "a": 2.0, "b": 3.0}]
    same = [{"period": feb, "channel": "email", "a": 2.0 + 1e-12, "b": 3.0},
            {"period": jan, "channel": "email", "a": 1.0, "b": None}]
    assert result_differences(same, reference, ["a", "b"]) == []
    assert_same_results(same, reference, ["a", "b"])
    changed = [{"period": jan, "channel": "email", "a": 1.5, "b": 0.0},
               {"period": feb, "channel": "ppc", "a": 2.0, "b": 3.0}]
    assert sorted(result_differences(changed, reference, ["a", "b"], engine="X")) == sorted([
        f"a {(jan, 'email')}: DuckDB 1.0, X 1.5", f"b {(jan, 'email')}: DuckDB None, X 0.0",
        f"row {(feb, 'ppc')} only on X", f"row {(feb, 'email')} only on DuckDB"])
    with pytest.raises(AssertionError, match="4 differences"):
        assert_same_results(changed, reference, ["a", "b"], engine="X")
