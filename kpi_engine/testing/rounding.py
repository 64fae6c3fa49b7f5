"""The conformance kit's rounding check: round() is half away from zero on the number as it
prints, on every warehouse (docs/formulas.md).

Warehouses disagree here on their own: DuckDB rounds a DOUBLE's binary value (78.55 is stored
as 78.5499... and rounds to 78.5), PostgreSQL, MariaDB and ClickHouse break a DOUBLE's ties to
even (round(2.5) is 2), SQLite reads negative digits as 0. An adapter plugin creates the table
below in its warehouse with its own types, inserts ``ROWS``, and checks::

    from kpi_engine.testing.rounding import COLUMNS, ROWS, rounding_mismatches, write_rounding_project

    create_table("readings", COLUMNS)          # your DDL: date, text, double, decimal(14, 2), integer
    insert_rows("readings", ROWS)
    with open_project(write_rounding_project(tmp_path / "p", warehouse)) as project:
        assert rounding_mismatches(project) == []

The expected values were worked by hand from the decimals as written.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping

from . import _same, write_specs_project

TABLE = "readings"
#: Column kinds: value is a floating-point column (DOUBLE, Float64), price a DECIMAL(14, 2).
COLUMNS = {"taken_on": "date", "id": "text", "value": "double", "price": "decimal", "units": "integer"}
# id, value (written in decimal: a double holds most of them inexactly), price, units
_VALUES = [("a", "78.55"), ("b", "2.675"), ("c", "-2.5"), ("d", "1234567.15"), ("e", "0.05"), ("f", "2.5"),
           ("g", "-0.45"), ("h", "1e30"), ("i", "25"), ("j", "-34.5"), ("k", "1.005"), ("l", "1e40"),
           ("m", "1e-20"), ("n", None)]
ROWS: list[tuple[Any, ...]] = [(dt.date(2025, 1, 1), name, None if value is None else float(value), Decimal("2.45"), 45)
                               for name, value in _VALUES]
KPIS = {"one_digit": "round(max(readings.value), 1)", "whole": "round(max(readings.value))",
        "two_digits": "round(max(readings.value), 2)", "tens": "round(max(readings.value), -1)",
        "price": "round(max(readings.price), 1)", "units_tens": "round(max(readings.units), -1)"}
#: id -> (one_digit, whole, two_digits, tens); every row's price rounds to 2.5 and its units to 50.
EXPECTED: dict[str, tuple[float | None, ...]] = {
    "a": (78.6, 79.0, 78.55, 80.0), "b": (2.7, 3.0, 2.68, 0.0), "c": (-2.5, -3.0, -2.5, 0.0),
    "d": (1234567.2, 1234567.0, 1234567.15, 1234570.0), "e": (0.1, 0.0, 0.05, 0.0), "f": (2.5, 3.0, 2.5, 0.0),
    "g": (-0.5, 0.0, -0.45, 0.0), "h": (1e30, 1e30, 1e30, 1e30), "i": (25.0, 25.0, 25.0, 30.0),
    "j": (-34.5, -35.0, -34.5, -30.0), "k": (1.0, 1.0, 1.01, 0.0), "l": (1e40, 1e40, 1e40, 1e40),
    "m": (0.0, 0.0, 0.0, 0.0), "n": (None, None, None, None)}
PRICE, UNITS_TENS = 2.5, 50.0


def write_rounding_project(folder: Path, warehouse: str | Mapping[str, Any]) -> Path:
    """A project in ``folder`` over ``warehouse``'s ``readings`` table, with the check's KPIs."""
    return write_specs_project(folder, warehouse, {
        "sources": {TABLE: {"table": TABLE, "time": "taken_on", "dimensions": ["id"]}},
        "kpis": {name: {"formula": formula} for name, formula in KPIS.items()}}, name="rounding")


def rounding_mismatches(project, rel: float = 1e-12) -> list[str]:
    """Every value of the check that differs from the hand-worked one, as 'id kpi: got, expected'
    (an empty list when the warehouse rounds as the engine documents)."""
    names = list(KPIS)
    rows = {row["id"]: row for row in project.evaluate(names, by=["id"]).to_dicts()}
    problems = [f"missing row {name}" for name in EXPECTED if name not in rows]
    for name, values in EXPECTED.items():
        if name not in rows:
            continue
        wanted = dict(zip(names, values + (PRICE, UNITS_TENS)))
        for kpi, want in wanted.items():
            got = rows[name][kpi]
            if not _same(want, got, rel):
                problems.append(f"{name} {kpi}: {got!r}, expected {want!r} ({KPIS[kpi]} of {dict(_VALUES)[name]})")
    return problems

