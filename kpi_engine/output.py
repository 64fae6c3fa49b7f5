"""Render a ``Result`` as a terminal table, CSV or JSON."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from typing import Any

from .result import Result

FORMATS = ("table", "csv", "json")
_CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CNY": "¥"}


def format_value(value: Any, unit: str | None, currency: str = "USD") -> str:
    """A human-readable cell: 12.5%, $1,234.00, 1,234."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if not isinstance(value, (int, float)):
        return str(value)
    if unit == "percent":
        return f"{value:,.1f}%"
    if unit == "currency":
        symbol = _CURRENCY_SYMBOLS.get(currency)
        return f"{symbol}{value:,.2f}" if symbol else f"{value:,.2f} {currency}"
    if unit == "count":
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"
    if unit == "days":
        return f"{value:,.1f} d"
    if unit == "seconds":
        return f"{value:,.0f} s"
    return f"{value:,.2f}"


def render(result: Result, fmt: str, currency: str = "USD", color: bool | None = None) -> str:
    if fmt == "csv":
        return to_csv(result)
    if fmt == "json":
        return to_json(result)
    return to_table(result, currency, color)


def _json_value(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def to_json(result: Result) -> str:
    rows = [{k: _json_value(v) for k, v in row.items()} for row in result.to_dicts()]
    return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"


def to_csv(result: Result) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(result.names)
    for row in result.to_dicts():
        writer.writerow(["" if v is None else _csv_value(v) for v in row.values()])
    return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)  # full precision, machine-readable
    return value


def to_table(result: Result, currency: str = "USD", color: bool | None = None) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    for column in result.columns:
        numeric = column.role == "kpi"
        header = column.name if not column.unit or column.unit == "number" else f"{column.name} ({column.unit})"
        table.add_column(header, justify="right" if numeric else "left", no_wrap=True)
    for row in result.to_dicts():
        table.add_row(*[format_value(row[c.name], c.unit if c.role == "kpi" else None, currency)
                        for c in result.columns])
    buffer = io.StringIO()
    console = Console(file=buffer, width=max(80, 16 * len(result.columns)), force_terminal=bool(color),
                      no_color=not color, highlight=False)
    console.print(table)
    footer = f"{len(result)} row{'s' if len(result) != 1 else ''}"
    return buffer.getvalue() + footer + "\n"
