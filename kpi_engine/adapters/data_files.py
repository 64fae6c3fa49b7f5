"""Reading a folder of CSV and Parquet files as tables (the DuckDB adapter's ``data:``).

Real exports need more than DuckDB's guesses: declared column types, date formats such as US
dates, and markers of "no value" such as 'n/a'. Settings, in ``warehouse:`` of kpi_engine.yaml:

    warehouse:
      adapter: duckdb
      data: exports
      csv:                                   # every CSV file of the folder
        date_format: "%m/%d/%Y"
        timestamp_format: "%m/%d/%Y %H:%M"
        null: ["", "n/a"]
      tables:
        contacts:                            # exports/contacts.csv (or .parquet)
          types: {createdate: timestamp, is_lead: boolean, revenue: number}
          timestamp_format: "%m/%d/%Y %I:%M %p"

A value that does not read as its column's type makes a query fail inside DuckDB; the
connection then finds the first such value and reports it at its file, row and column
(``locate_bad_value``), with how to declare the type or the marker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from sqlglot import exp

from ..errors import QueryFailed, WarehouseError, did_you_mean

# Declared types -> DuckDB types (the words of a source's 'columns:', plus integer).
TYPES = {"number": "DOUBLE", "integer": "BIGINT", "string": "VARCHAR", "boolean": "BOOLEAN", "date": "DATE",
         "timestamp": "TIMESTAMP"}
_WORDS = {"DOUBLE": "a number", "BIGINT": "a whole number", "BOOLEAN": "true or false", "DATE": "a date",
          "TIMESTAMP": "a timestamp"}
DATA_SUFFIXES = {".csv": "read_csv", ".parquet": "read_parquet"}
VIEW_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # files with other names are not tables
READ_OPTIONS = ("date_format", "timestamp_format", "null", "delimiter")
SETTINGS = ("csv", "tables")
#: DuckDB expands '*', '?' and '[...]' in a file path; '[c]' matches the character c itself.
_GLOB_CHARACTER = re.compile(r"[*?\[]")


def glob_escape(path: str) -> str:
    """A file path as a DuckDB glob pattern that matches that one file: 'proj[1]/a.csv' would
    otherwise read 'proj1/a.csv', and 'proj*/a.csv' every sibling folder's file."""
    return _GLOB_CHARACTER.sub(lambda match: f"[{match.group()}]", path)


@dataclass(frozen=True)
class DataFile:
    """One file of the folder, the view named after it, and how to read it."""

    path: Path
    view: str
    types: Mapping[str, str] = field(default_factory=dict)  # column -> DuckDB type, as declared
    date_format: str | None = None
    timestamp_format: str | None = None
    nulls: tuple[str, ...] = ()
    delimiter: str | None = None

    @property
    def is_csv(self) -> bool:
        return self.path.suffix.lower() == ".csv"

    def relation(self, all_text: bool = False) -> exp.Expression:
        """The table function that reads the file: typed as declared, or every column as text."""
        path = exp.Literal.string(glob_escape(str(self.path)))
        if not self.is_csv:
            return exp.Table(this=exp.Anonymous(this="read_parquet", expressions=[path]))
        options: list[tuple[str, exp.Expression]] = []
        if all_text:
            options.append(("all_varchar", exp.Boolean(this=True)))
        else:
            if self.types:
                options.append(("types", exp.Struct(expressions=[
                    exp.PropertyEQ(this=exp.Literal.string(column), expression=exp.Literal.string(kind))
                    for column, kind in self.types.items()])))
            for name, value in (("dateformat", self.date_format), ("timestampformat", self.timestamp_format)):
                if value is not None:
                    options.append((name, exp.Literal.string(value)))
        if self.delimiter is not None:
            options.append(("delim", exp.Literal.string(self.delimiter)))
        if self.nulls:
            options.append(("nullstr", exp.Array(expressions=[exp.Literal.string(v) for v in self.nulls])))
        arguments = [path] + [exp.EQ(this=exp.column(name), expression=value) for name, value in options]
        return exp.Table(this=exp.Anonymous(this="read_csv", expressions=arguments))

    def view_query(self) -> exp.Select:
        """SELECT * from the file; a Parquet file's declared types are casts."""
        query = exp.select(exp.Star()).from_(self.relation())
        if self.is_csv or not self.types:
            return query
        replaced = [exp.alias_(self._parquet_value(column, kind), exp.to_identifier(column, quoted=True))
                    for column, kind in self.types.items()]
        return exp.select(exp.Star(replace=replaced)).from_(self.relation())

    def _parquet_value(self, column: str, kind: str) -> exp.Expression:
        value = _text(column)
        text_format = _format(self, kind)
        if text_format:  # a text column of dates written one way
            return exp.cast(exp.Anonymous(this="strptime", expressions=[
                exp.cast(value, "VARCHAR"), exp.Literal.string(text_format)]), kind)
        return exp.cast(value, kind)


def _problem(message: str, hint: str) -> WarehouseError:
    return WarehouseError(f"kpi_engine.yaml, warehouse: {message}", None, hint)


def _read_options(where: str, given: Any) -> dict[str, Any]:
    if not isinstance(given, Mapping):
        raise _problem(f"'{where}' must be a mapping.", f"Write e.g. '{where}: {{date_format: \"%m/%d/%Y\"}}'.")
    unknown = set(given) - set(READ_OPTIONS) - ({"types"} if where.startswith("tables.") else set())
    if unknown:
        raise _problem(f"unknown setting(s) {', '.join(sorted(unknown))} in '{where}'.",
                       f"Settings of a data file: {', '.join(READ_OPTIONS)}"
                       + (", types." if where.startswith("tables.") else "."))
    options: dict[str, Any] = {}
    for name in ("date_format", "timestamp_format", "delimiter"):
        if name in given:
            if not isinstance(given[name], str) or not given[name]:
                raise _problem(f"'{where}.{name}' must be text.", "Write it in quotes, e.g. \"%m/%d/%Y\".")
            options[name] = given[name]
    if "null" in given:
        nulls = given["null"]
        nulls = [nulls] if isinstance(nulls, str) else nulls
        if not isinstance(nulls, list) or not all(isinstance(v, str) for v in nulls):
            raise _problem(f"'{where}.null' must be text or a list of texts.", "Write e.g. null: ['', 'n/a'].")
        options["nulls"] = tuple(nulls)
    return options


def data_files(folder: Path, settings: Mapping[str, Any]) -> list[DataFile]:
    """The readable files of ``folder`` with their settings; an error for a setting that is
    malformed or names a file the folder does not have."""
    defaults = _read_options("csv", settings.get("csv") or {})
    tables = settings.get("tables") or {}
    if not isinstance(tables, Mapping):
        raise _problem("'tables' must be a mapping of file names (without extension) to settings.",
                       "Write e.g. 'tables: {contacts: {types: {createdate: date}}}'.")
    files = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in DATA_SUFFIXES and VIEW_NAME.match(path.stem):
            files[path.stem] = path
    found = []
    for view, path in files.items():
        options = dict(defaults)
        own = tables.get(view) or {}
        options.update(_read_options(f"tables.{view}", own))
        types = own.get("types") or {}
        if not isinstance(types, Mapping):
            raise _problem(f"'tables.{view}.types' must map column names to types.",
                           f"Types: {', '.join(TYPES)}.")
        declared = {}
        for column, kind in types.items():
            if kind not in TYPES:
                raise _problem(f"'tables.{view}.types.{column}': {kind!r} is not a type.", f"Types: {', '.join(TYPES)}.")
            declared[str(column)] = TYPES[kind]
        found.append(DataFile(path, view, declared, **options))
    for view in tables:
        if view not in files:
            raise _problem(f"'tables.{view}' names no CSV or Parquet file of the data folder '{folder}'.",
                           did_you_mean(str(view), files) or "Name the file without its extension.")
    return found


def empty_file_problem(file: DataFile, columns: Mapping[str, str]) -> WarehouseError | None:
    """A CSV file without a header, or with a header and no rows while some of its columns have
    no declared type (DuckDB reads those as text, which every number or date in a formula then
    trips over): one error naming the file, instead of one per column a KPI reads."""
    if not file.is_csv:
        return None
    try:
        with open(file.path, "rb") as handle:
            lines = (line for line in handle if line.strip())
            header, first_row = next(lines, None), next(lines, None)
    except OSError:
        return None  # reading it fails the query with its own message
    if header is None:
        return WarehouseError(f"data file '{file.path.name}' is empty: it has no header row, so the table "
                              f"'{file.view}' has no columns.", None,
                              "Write the column names on its first line and its rows below, or remove the file.")
    undeclared = [column for column in columns if column not in file.types]
    if first_row is not None or not undeclared:
        return None
    shown = ", ".join(undeclared[:8]) + (", ..." if len(undeclared) > 8 else "")
    return WarehouseError(f"data file '{file.path.name}' has a header but no rows, so DuckDB cannot tell the types of "
                          f"its columns ({shown}) and reads them as text.", None,
                          f"Add rows, or declare the types of the columns the sources read in kpi_engine.yaml, e.g. "
                          f"'warehouse: {{tables: {{{file.view}: {{types: {{{undeclared[0]}: date}}}}}}}}' "
                          f"(types: {', '.join(TYPES)}; docs/specs.md).")


def first_non_number(connection, file: DataFile, column: str) -> tuple[int | None, str | None] | None:
    """Why a CSV column of numbers reads as text: (row, value) of its first value that is not a
    number, or (None, None) when it holds no value at all (values declared as markers of no value
    are none). None when no value of it is a number: the column is text, not numbers with a stray
    value, and a formula that adds it up is what is wrong."""
    read = _read_as(file, column, "DOUBLE")
    counts = exp.select(exp.Count(this=read), exp.Count(this=_text(column))).from_(file.relation(all_text=True))
    numbers, values = connection.execute(counts.sql("duckdb")).fetchone()
    if not values:
        return None, None
    found = _first_row(connection, file, {column: read}) if numbers else None
    return (found[0], found[2]) if found else None


def _first_row(connection, file: DataFile, reads: Mapping[str, exp.Expression]) -> tuple[int, str, str] | None:
    """(row, column, value) of the first value of the file, read as text, that one of ``reads``
    (column -> its value read as its type, NULL when it cannot be) fails to read."""
    rows = exp.select(exp.alias_(exp.Window(this=exp.RowNumber()), "row_number__"), exp.Star()) \
        .from_(file.relation(all_text=True)).subquery("rows")
    bad = {column: exp.and_(_text(column).is_(exp.null()).not_(), read.is_(exp.null())) for column, read in reads.items()}
    flagged = [exp.alias_(exp.Case(ifs=[exp.If(this=condition, true=_text(column))]),
                          exp.to_identifier(column, quoted=True)) for column, condition in bad.items()]
    query = exp.select(exp.column("row_number__"), *flagged).from_(rows).where(exp.or_(*bad.values())) \
        .order_by(exp.column("row_number__")).limit(1)
    found = connection.execute(query.sql("duckdb")).fetchone()
    if found is None:
        return None
    column, value = next((c, v) for c, v in zip(reads, found[1:]) if v is not None)
    return found[0], column, value


def locate_bad_value(connection, files: list[DataFile]) -> WarehouseError | None:
    """The first value of a data file that does not read as its column's type (declared, or
    detected by DuckDB), as an error naming the file, the row and the column; None when every
    value reads. Only run after a query failed: it reads the CSV files again, as text."""
    for file in files:
        if not file.is_csv:
            continue
        described = exp.Describe(this=exp.Table(this=exp.to_identifier(file.view, quoted=True)))
        detected = {row[0]: row[1] for row in connection.execute(described.sql("duckdb")).fetchall()}
        # Dates DuckDB detected in a format of its own choosing cannot be re-read reliably: skipped.
        checks = {column: kind for column, kind in detected.items()
                  if kind in _WORDS and (column in file.types or _format(file, kind) or kind not in ("DATE", "TIMESTAMP"))}
        if not checks:
            continue
        found = _first_row(connection, file, {column: _read_as(file, column, kind) for column, kind in checks.items()})
        if found is None:
            continue
        row, column, value = found
        kind = checks[column]
        how = "declared in kpi_engine.yaml" if column in file.types else "detected by DuckDB from the first rows"
        form = _format(file, kind)
        wanted = _WORDS[kind] + (f" in the format {form}" if form else "")
        return QueryFailed(
            f"data file '{file.path.name}', row {row} (line {row + 1} of the file), column '{column}': "
            f"{value!r} is not {wanted} (the column's type, {how}).", None,
            f"Fix the value, or declare {value!r} a marker of no value ('warehouse: {{csv: {{null: [{value!r}]}}}}' "
            f"in kpi_engine.yaml); declare a column's type and date format per file, e.g. 'warehouse: {{tables: "
            f"{{{file.view}: {{types: {{{column}: {_NAMES[kind]}}}}}}}}}' with 'date_format' (docs/specs.md).")
    return None


_NAMES = {duckdb_type: word for word, duckdb_type in TYPES.items()}


def _format(file: DataFile, kind: str) -> str | None:
    return file.date_format if kind == "DATE" else file.timestamp_format if kind == "TIMESTAMP" else None


def _text(column: str) -> exp.Column:
    return exp.column(exp.to_identifier(column, quoted=True))


def _read_as(file: DataFile, column: str, kind: str) -> exp.Expression:
    """A text column read as ``kind`` the way the file's reader reads it; NULL when it cannot."""
    text_format = _format(file, kind)
    value: exp.Expression = _text(column)
    if text_format:
        value = exp.Anonymous(this="try_strptime", expressions=[value, exp.Literal.string(text_format)])
    return exp.TryCast(this=value, to=exp.DataType.build(kind))
