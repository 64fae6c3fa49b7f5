"""Render a ``Result`` as a terminal table, Markdown, CSV, JSON or Parquet."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from typing import Any, Sequence

from .compiler import OutputColumn
from .resolve import number_format_problem
from .result import Result, arrow_schema, clock_time, output_value, whole_numbers
from .values import text_number

FORMATS = ("table", "csv", "json", "parquet", "markdown")
TRANSPOSABLE = ("table", "markdown")  # the formats for people, which --transpose can turn
# The format an output file's extension asks for, when --format is not given.
_EXTENSIONS = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".txt": "table", ".md": "markdown"}
STREAMED = ("csv", "json", "parquet")  # written batch by batch: a result never has to fit in memory
_CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CNY": "¥"}


def format_of_file(path) -> str:
    """The output format named by a file's extension; an extension that names none is refused
    (writing a terminal table into 'out.xlsx' would only look like success)."""
    from .errors import UsageError
    from .files import writes_through

    if writes_through(path):  # -o /dev/stdout: what a terminal shows
        return "table"
    suffix = "".join(path.suffixes[-1:]).lower()
    if suffix not in _EXTENSIONS:
        raise UsageError(f"cannot tell the output format of '{path.name}' from its extension.", None,
                         f"Name the file {', '.join(f'*{e}' for e in _EXTENSIONS)}, or pass --format "
                         f"({', '.join(FORMATS)} or a plugin's format).")
    return _EXTENSIONS[suffix]


def format_value(value: Any, unit: str | None, currency: str = "USD", spec: str | None = None) -> str:
    """A human-readable cell: 12.5%, $1,234.00, 1,234. ``spec`` is the KPI's ``format``
    (a Python format spec such as ',.1f'), replacing the unit's default number format."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if not isinstance(value, (int, float)):
        return str(value)
    default = {"percent": ",.1f", "currency": ",.2f", "days": ",.1f", "seconds": ",.0f"}.get(unit, ",.2f")
    if (unit == "count" and float(value).is_integer()) or (isinstance(value, int) and not isinstance(value, bool) and unit != "currency"):
        default = ",.0f"  # a whole number of things (values.py): no decimals to show
    if spec and number_format_problem(spec):  # resolve reports it; never format with it
        spec = None
    try:
        number = format(value, spec or default)
    except ValueError:  # a spec for decimals ('.1') given a whole number: format it as a decimal
        try:
            number = format(float(value), spec or default)
        except ValueError:
            number = format(value, default)
    return with_unit(number, unit, currency)


def with_unit(number: str, unit: str | None, currency: str = "USD") -> str:
    """A formatted number with its unit: 12.5%, $1,234.00 (1,234.00 CHF without a symbol), 3 d, 30 s."""
    if unit == "percent":
        return f"{number}%"
    if unit == "currency":
        symbol = _CURRENCY_SYMBOLS.get(currency)
        return f"{symbol}{number}" if symbol else f"{number} {currency}"
    if unit == "days":
        return f"{number} d"
    if unit == "seconds":
        return f"{number} s"
    return number


def render(result: Result, fmt: str, currency: str = "USD", color: bool | None = None,
           transpose: bool = False) -> str:
    from .errors import UsageError

    if fmt == "parquet":
        raise UsageError("the parquet format is binary.", None, "Write it to a file with --output FILE.")
    check_transpose(fmt, transpose)
    if fmt == "csv":
        return to_csv(result)
    if fmt == "json":
        return to_json(result)
    if fmt == "markdown":
        return to_markdown(result, currency, transpose)
    return to_table(result, currency, color, transpose)


def check_transpose(fmt: str, transpose: bool) -> None:
    """--transpose turns the tables for people; the formats for programs keep their shape."""
    if transpose and fmt not in TRANSPOSABLE:
        from .errors import UsageError

        raise UsageError(f"--transpose shapes the table and markdown formats, not {fmt}.", None,
                         "Drop --transpose, or use --format table or markdown; other formats keep one row per "
                         "period and key for the tools that read them.")


def _json_value(value: Any, column: OutputColumn | None = None) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, float):
        return text_number(value, column) if math.isfinite(value) else None
    return value


def to_json(result: Result) -> str:
    rows = [{c.name: _json_value(row[c.name], c) for c in result.columns} for row in result.to_dicts()]
    return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"


def write_stream(fmt: str, columns: Sequence[OutputColumn | str], batches, path) -> int:
    """Write rows batch by batch to a temporary file beside ``path``, then rename it into
    place: memory stays flat whatever the row count, and a failure leaves no partial file.
    ``columns`` are the result's (a bare name is a column of values written as they are).
    Returns the number of rows written."""
    from .files import replacing

    columns = tuple(OutputColumn(c, "dimension") if isinstance(c, str) else c for c in columns)
    names = [c.name for c in columns]
    count = 0
    with replacing(path) as temp:
        if fmt == "parquet":
            return _write_parquet(columns, batches, str(temp))
        with open(temp, "w", encoding="utf-8", newline="") as handle:
            if fmt == "csv":
                writer = _CsvWriter(handle)
                writer.writerow(names)
                for batch in batches:
                    for row in batch:
                        writer.writerow([_csv_value(output_value(v, c), c) for v, c in zip(row, columns)])
                    count += len(batch)
            else:
                handle.write("[")
                for batch in batches:
                    for row in batch:
                        record = {c.name: _json_value(output_value(v, c), c) for v, c in zip(row, columns)}
                        handle.write(("\n  " if count == 0 else ",\n  ") + json.dumps(record, ensure_ascii=False))
                        count += 1
                handle.write("\n]\n" if count else "]\n")
    return count


def _write_parquet(columns: tuple[OutputColumn, ...], batches, path: str) -> int:
    """The first batch sets each column's type (result.arrow_schema); a later batch whose values
    do not fit it is refused with the reason, never written as something else."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return _write_parquet_with_duckdb(columns, batches, path)
    writer, count = None, 0
    try:
        for batch in batches:
            rows = [{c.name: output_value(v, c) for v, c in zip(row, columns)} for row in batch]
            if writer is None:
                writer = pq.ParquetWriter(path, arrow_schema(columns, rows))
            writer.write_table(_parquet_batch(rows, writer.schema, columns, count))
            count += len(batch)
        if writer is None:  # no rows: still a valid file with the column names and types
            pq.write_table(pa.Table.from_pylist([], schema=arrow_schema(columns, [])), path)
    finally:
        if writer is not None:
            writer.close()
    return count


def _write_parquet_with_duckdb(columns: tuple[OutputColumn, ...], batches, path: str) -> int:
    """Parquet without pyarrow: the rows go into an in-memory DuckDB table (which spills to disk
    when large) typed from the first batch, and DuckDB writes the file. A later value that does
    not fit its column's type is refused, as with pyarrow."""
    import duckdb
    from sqlglot import exp

    from .errors import OutputError

    def kind(column: OutputColumn, values: list) -> str:
        present = [v for v in values if v is not None]
        if column.role == "time" and clock_time(column):
            return "TIMESTAMP"
        if column.role == "time" or (present and all(isinstance(v, dt.date) and not isinstance(v, dt.datetime)
                                                     for v in present)):
            return "DATE"
        if present and all(isinstance(v, bool) for v in present):
            return "BOOLEAN"
        if column.role == "kpi" or (present and all(isinstance(v, (int, float)) for v in present)):
            return "BIGINT" if present and whole_numbers(present) and all(isinstance(v, int) for v in present) \
                else "DOUBLE"
        return "TIMESTAMP" if present and all(isinstance(v, dt.datetime) for v in present) else "VARCHAR"

    connection = duckdb.connect()
    table = exp.to_identifier("kpi_engine_rows", quoted=True)
    count, insert = 0, None
    try:
        for batch in batches:
            rows = [[output_value(v, c) for v, c in zip(row, columns)] for row in batch]
            if insert is None:
                schema = exp.Schema(this=exp.Table(this=table), expressions=[
                    exp.ColumnDef(this=exp.to_identifier(c.name, quoted=True),
                                  kind=exp.DataType.build(kind(c, [row[i] for row in rows])))
                    for i, c in enumerate(columns)])
                connection.execute(exp.Create(this=schema, kind="TABLE").sql("duckdb"))
                insert = exp.insert(exp.values([tuple(exp.Placeholder() for _ in columns)]),
                                    exp.Table(this=table)).sql("duckdb")
            if rows:
                try:
                    connection.executemany(insert, rows)
                except duckdb.Error as error:
                    raise OutputError(f"row {count + 1:,} or after does not fit the types of the first rows "
                                      f"of the parquet file: {str(error).splitlines()[0]}", None,
                                      "Write CSV or JSON, or install pyarrow.") from None
            count += len(rows)
        if insert is None:  # no rows: a valid file with the column names
            schema = exp.Schema(this=exp.Table(this=table), expressions=[
                exp.ColumnDef(this=exp.to_identifier(c.name, quoted=True), kind=exp.DataType.build(kind(c, [])))
                for c in columns])
            connection.execute(exp.Create(this=schema, kind="TABLE").sql("duckdb"))
        connection.table("kpi_engine_rows").write_parquet(path)
    finally:
        connection.close()
    return count


def _parquet_batch(rows: list[dict], schema, columns: tuple[OutputColumn, ...], written: int):
    import pyarrow as pa

    def fits(value, kind) -> bool:
        if pa.types.is_integer(kind):  # pyarrow would truncate 2.5 to 2 without a word
            return whole_numbers([value])
        try:
            pa.array([value], type=kind)
            return True
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return False

    integers = [c.name for c in columns if pa.types.is_integer(schema.field(c.name).type)]
    if all(whole_numbers([row[name] for row in rows]) for name in integers):
        try:
            return pa.Table.from_pylist(rows, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    from .errors import OutputError

    for column in columns:  # name the first value that does not fit its column's type
        kind = schema.field(column.name).type
        for number, row in enumerate(rows, start=written + 1):
            if not fits(row[column.name], kind):
                what = ("whole numbers" if pa.types.is_integer(kind) else
                        "empty" if pa.types.is_null(kind) else str(kind))
                raise OutputError(f"row {number:,} has {row[column.name]!r} in column '{column.name}', whose earlier "
                                  f"rows were {what}: a Parquet column has one type.", None,
                                  ("Give the KPI a unit other than 'count' if its values can be fractions, "
                                   if column.role == "kpi" else "Filter out the empty values with --where, ")
                                  + "or write CSV or JSON.") from None
    raise OutputError("the rows do not fit the Parquet columns started by the first rows.", None,
                      "Write CSV or JSON.")


class _CsvWriter:
    """CSV rows ending in '\n'. The csv module quotes a field that holds a '\n' (the line end)
    but not one that holds a lone '\r', which readers take for a line break: a row with one has
    every field quoted, so each value reads back as it is."""

    def __init__(self, handle):
        self._minimal = csv.writer(handle, lineterminator="\n")
        self._quoted = csv.writer(handle, lineterminator="\n", quoting=csv.QUOTE_ALL)

    def writerow(self, row: list) -> None:
        carriage_return = any(isinstance(value, str) and "\r" in value for value in row)
        (self._quoted if carriage_return else self._minimal).writerow(row)


def to_csv(result: Result) -> str:
    buffer = io.StringIO()
    writer = _CsvWriter(buffer)
    writer.writerow(result.names)
    for row in result.to_dicts():
        writer.writerow([_csv_value(row[c.name], c) for c in result.columns])
    return buffer.getvalue()


def _csv_value(value: Any, column: OutputColumn | None = None) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, float):
        return repr(text_number(value, column))  # the shortest text that reads back as this number
    return value


def _cell(value: Any, column, currency: str) -> str:
    if column.role == "kpi":
        return format_value(value, column.unit, currency, column.format)
    if column.role == "flag":
        return "yes" if value else "no"
    if value is None:
        return "(null)"
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else format_value(value, None)


def _grid(result: Result, currency: str, transpose: bool) -> tuple[list[str], list[bool], list[list[str]]]:
    """What a table for people shows: the headers, which columns hold numbers (right-aligned)
    and every cell as text. Transposed: one line per KPI (and the complete flag), one column
    per row of the result, headed by its period and dimension values."""
    rows = result.to_dicts()
    if not transpose:
        return (result.names, [c.role == "kpi" for c in result.columns],
                [[_cell(row[c.name], c, currency) for c in result.columns] for row in rows])
    keys = [c for c in result.columns if c.role in ("time", "dimension")]
    lines = [c for c in result.columns if c not in keys]
    headers = [" / ".join(_cell(row[c.name], c, currency) for c in keys) or "value" for row in rows]
    return (["kpi"] + headers, [False] + [True] * len(rows),
            [[c.name] + [_cell(row[c.name], c, currency) for row in rows] for c in lines])


def _footer(result: Result, transpose: bool) -> str:
    return f"{len(result)} row{'s' if len(result) != 1 else ''}" + (", transposed" if transpose else "")


def to_table(result: Result, currency: str = "USD", color: bool | None = None, transpose: bool = False) -> str:
    from rich.console import Console
    from rich.table import Table

    from .terminal import cell

    headers, numeric, cells = _grid(result, currency, transpose)
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    for header, number in zip(headers, numeric):
        table.add_column(cell(header), justify="right" if number else "left", no_wrap=True)
    for line in cells:  # values are data: no rich markup, control characters shown as escapes
        table.add_row(*[cell(text) for text in line])
    buffer = io.StringIO()
    # Tables never wrap or truncate: wide results scroll rather than lose digits.
    console = Console(file=buffer, width=10_000, force_terminal=bool(color), no_color=not color, highlight=False)
    console.print(table)
    return buffer.getvalue() + _footer(result, transpose) + "\n"


def to_markdown(result: Result, currency: str = "USD", transpose: bool = False) -> str:
    """A GitHub-flavoured Markdown table with the values as the terminal shows them ($1,234.00,
    12.5%), for pull requests and chat. Cells are text: characters Markdown reads as markup
    (| ` * [ ] < > \\) are escaped and control characters written as escapes."""
    from .catalog import _md
    from .terminal import visible

    headers, numeric, cells = _grid(result, currency, transpose)

    def line(texts: list[str]) -> str:
        return "| " + " | ".join(_md(visible(text)) for text in texts) + " |"

    rule = "|" + "|".join("---:" if number else ":---" for number in numeric) + "|"
    return "\n".join([line(headers), rule] + [line(texts) for texts in cells]) + "\n"
