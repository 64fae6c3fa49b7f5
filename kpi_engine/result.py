"""Query results: rows plus what each column is (time, dimension or KPI, and its unit)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterator

from .calendar import SUBDAILY
from .compiler import OutputColumn
from .completeness import as_period
from .values import whole


@dataclass(frozen=True)
class Result:
    columns: tuple[OutputColumn, ...]
    rows: list[tuple]
    sql: str

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.to_dicts())

    def to_dicts(self) -> list[dict[str, Any]]:
        """Rows as dicts of plain Python values: whole values of a KPI that counts whole things
        are ints (values.py), dates are dates."""
        names, columns = self.names, self.columns
        return [dict(zip(names, (output_value(v, c) for v, c in zip(row, columns)))) for row in self.rows]

    def to_pandas(self):
        """A pandas DataFrame (needs the ``pandas`` extra): periods as datetime64, a KPI that
        counts whole things as int64 (nullable Int64 when it has empty cells) when every value
        is whole, other KPIs as float64."""
        try:
            import numpy as np
            import pandas as pd
        except ImportError:  # pragma: no cover - depends on the environment
            from .errors import UsageError

            raise UsageError("pandas is not installed.", None, "pip install 'kpi-engine[pandas]'") from None
        rows = self.to_dicts()
        data = {}
        for column in self.columns:
            values = [row[column.name] for row in rows]
            if column.role == "time" and clock_time(column):
                data[column.name] = pd.Series(np.array(values, dtype="datetime64[s]"))
            elif column.role == "time":
                # numpy holds every date of years 1 to 9999; pandas' default nanoseconds do not
                data[column.name] = pd.Series(np.array(values, dtype="datetime64[D]").astype("datetime64[s]"))
            elif column.role == "kpi" and whole_numbers(values) and column.whole:
                data[column.name] = pd.array(values, dtype="Int64" if None in values else "int64")
            elif column.role == "kpi":
                data[column.name] = pd.array([float("nan") if v is None else v for v in values], dtype="float64")
            else:
                data[column.name] = values
        return pd.DataFrame(data, columns=self.names)

    def to_arrow(self):
        """A pyarrow Table (needs the ``pandas`` extra, which brings pyarrow)."""
        try:
            import pyarrow as pa
        except ImportError:  # pragma: no cover - depends on the environment
            from .errors import UsageError

            raise UsageError("pyarrow is not installed.", None, "pip install 'kpi-engine[pandas]'") from None
        rows = self.to_dicts()
        return pa.Table.from_pylist(rows, schema=arrow_schema(self.columns, rows))


def output_value(value: Any, column: OutputColumn) -> Any:
    """A warehouse value as outputs carry it: plain Python, whole for a KPI that counts; a
    sub-daily period is a datetime (its midnight too)."""
    if column.role == "time" and clock_time(column):
        return as_period(value, column.label)
    value = _plain(value)
    return whole(value) if column.whole else value


def clock_time(column: OutputColumn) -> bool:
    """The period column of a sub-daily grain (its label is the grain)."""
    return column.label in SUBDAILY


def whole_numbers(values: list) -> bool:
    """Every value is an int (or empty): the column can be an integer column."""
    return all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in values)


def arrow_schema(columns: tuple[OutputColumn, ...], rows: list[dict[str, Any]]):
    """The Arrow types of a result's columns: periods are dates, KPIs int64 when they count whole
    things and every value of ``rows`` is whole (else float64), flags booleans; dimensions have
    the type of their values."""
    import pyarrow as pa

    fields = []
    for column in columns:
        values = [row[column.name] for row in rows]
        if column.role == "time":
            kind = pa.timestamp("s") if clock_time(column) else pa.date32()
        elif column.role == "kpi":
            kind = pa.int64() if column.whole and whole_numbers(values) else pa.float64()
        elif column.role == "flag":
            kind = pa.bool_()
        else:
            kind = pa.array(values).type
        fields.append(pa.field(column.name, kind))
    return pa.schema(fields)


def _plain(value: Any) -> Any:
    """Warehouse values as plain Python: Decimal -> float, datetime at midnight -> date."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.datetime) and value.time() == dt.time(0) and value.tzinfo is None:
        return value.date()
    return value
