"""The plugin contract of kpi-engine: hook specifications and the adapter interface.

A plugin is a module (or object) registered under the ``kpi_engine`` entry-point
group. It implements one or more hooks below, marked with ``hookimpl``::

    # pyproject.toml of the plugin
    [project.entry-points.kpi_engine]
    mywarehouse = "kpi_engine_mywarehouse"

    # kpi_engine_mywarehouse/__init__.py
    from kpi_engine.hookspecs import Adapter, Connection, hookimpl

    class MyAdapter(Adapter):
        name = "mywarehouse"
        dialect = "postgres"
        ...

    @hookimpl
    def kpi_engine_adapters():
        return [MyAdapter]

The built-in DuckDB adapter is registered exactly this way, from kpi-engine's own
pyproject.toml. ``kpi-engine plugins`` lists what is registered and from where.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import math
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, ClassVar, Iterator, Mapping, Sequence

import pluggy

PROJECT_NAME = "kpi_engine"
#: The longest query timeout (seconds): one week. PostgreSQL's statement_timeout holds at most
#: 24.8 days and Python's timers about 292 years; an infinite or NaN timeout would silently be none.
MAX_QUERY_TIMEOUT = 7 * 24 * 3600
#: The key of a compiled query's ``meta`` holding the names of the KPIs it computes (see asked_kpis).
KPIS_META = "kpi_engine.kpis"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


def timeout_seconds(value: Any, what: str, error: type | None = None) -> float:
    """A timeout (``--timeout``, ``query_timeout``, ``statement_timeout``) as seconds: a finite number
    above 0 and at most MAX_QUERY_TIMEOUT. Adapters read their timeout settings through it; anything
    else raises ``error`` (default ``WarehouseError``), naming ``what``."""
    from .errors import WarehouseError

    try:
        seconds = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_QUERY_TIMEOUT):
        raise (error or WarehouseError)(
            f"'{what}' must be a number of seconds above 0 and at most {MAX_QUERY_TIMEOUT:,} (one week), "
            f"not {str(value)[:40]!r}.", None, "For example 300 for five minutes.")
    return seconds


def asked_kpis(query) -> tuple[str, ...]:
    """The KPIs (and ad hoc formulas) a query passed to ``Connection.execute`` computes, in order:
    empty for the engine's own queries (data extents, calendar tables). Adapters put them in the
    warehouse's query tag or label, so a warehouse's query history says what each query was for."""
    meta = getattr(query, "meta", None) or {}
    return tuple(meta.get(KPIS_META, ()))


# (tree, dialect, text) of the query the engine is running, rendered already for its result
_RENDERED: contextvars.ContextVar[tuple[Any, str, str] | None] = contextvars.ContextVar("kpi_engine_rendered",
                                                                                       default=None)


def query_text(query, dialect: str) -> str:
    """The SQL text of ``query`` in ``dialect``, for an adapter's ``execute`` or ``stream``.

    When the engine evaluates a request it renders the query once for the result's ``sql`` and
    hands the very same tree to ``execute``: this returns that text instead of rendering the tree
    again (rendering costs about as much as compiling). Any other tree or dialect (a copy the
    adapter rewrote, the engine's own small queries) is rendered here with
    ``query.sql(dialect=dialect)``."""
    text = rendered_text(query, dialect)
    return query.sql(dialect=dialect) if text is None else text


def rendered_text(query, dialect: str) -> str | None:
    """The text the engine rendered this very tree to in ``dialect`` for the result it returns,
    or None (any other tree or dialect).

    The engine renders a request's tree after every adapter of the dialect has prepared it
    (``Adapter.prepare``), so an adapter whose ``execute`` prepares a tree before rendering it
    (to run trees from elsewhere too) runs this text as it is, and the result's ``sql`` is the
    text that ran; it prepares and renders the tree itself only when this is None."""
    kept = _RENDERED.get()
    if kept is not None and kept[0] is query and kept[1] == dialect:
        return kept[2]
    return None


@contextlib.contextmanager
def rendered(query, dialect: str, text: str) -> Iterator[None]:
    """While inside, ``query_text(query, dialect)`` is ``text`` (the engine rendered ``query``
    to it). Only for this very tree object, and only until the block ends, so a tree changed
    afterwards is never run as stale text."""
    token = _RENDERED.set((query, dialect, text))
    try:
        yield
    finally:
        _RENDERED.reset(token)


@dataclass(frozen=True)
class Rows:
    """What a query returns: column names and the rows, as tuples in column order."""

    columns: tuple[str, ...]
    rows: list[tuple]


class Connection(abc.ABC):
    """An open connection to one warehouse. A project shares it between threads, so
    ``execute``, ``stream`` and ``columns`` must be safe to call concurrently (a lock, a
    cursor per call, or a small pool)."""

    #: The sqlglot dialect queries are rendered in.
    dialect: str

    @abc.abstractmethod
    def execute(self, query) -> Rows:
        """Run a sqlglot expression (a SELECT) and return all its rows.

        Render it with ``query_text(query, self.dialect)`` (the text the engine rendered the
        same tree to, else ``query.sql(dialect=self.dialect)``); an adapter that prepares a
        tree itself before rendering it asks ``rendered_text`` first (the engine's tree is
        prepared already). Never accept SQL text from elsewhere. Raise ``kpi_engine.errors.WarehouseError`` on failure, with
        a message that names the problem and never contains a password.
        """

    def stream(self, query, batch_size: int = 10_000) -> tuple[tuple[str, ...], Iterator[list[tuple]]]:
        """Like ``execute``, but the rows come in batches, so a large result never has to
        fit in memory. The default runs ``execute`` and hands its rows out in slices;
        adapters whose driver can fetch incrementally should override it."""
        rows = self.execute(query)
        return rows.columns, (rows.rows[i:i + batch_size] for i in range(0, len(rows.rows), batch_size))

    @abc.abstractmethod
    def columns(self, relation) -> Mapping[str, str] | None:
        """Column names and warehouse type names of a relation (a sqlglot Table or
        Subquery), or None when the relation does not exist. Used by validation to
        check that sources, columns and types exist."""

    def text_value(self, relation, column: str) -> "TextValue | None":
        """Why a column the warehouse types as text is not numbers: the first value of it that
        does not read as a number, and where it is. Adapters that read files whose column types
        are guessed (the DuckDB adapter's folder of CSV files) return one, so a KPI that adds
        the column up is told which file, row and value to fix; the default returns None."""
        return None

    def close(self) -> None:
        """Release the connection. The default does nothing."""


@dataclass(frozen=True)
class TextValue:
    """A value that is not a number in a column read as text (``Connection.text_value``)."""

    file: str  # the file's name
    table: str  # the name its settings go under (warehouse: tables:)
    row: int | None  # 1-based data row (the header is not one), when known
    value: str | None  # None when the column holds no value at all


class Adapter(abc.ABC):
    """A kind of warehouse. The class itself is registered; ``connect`` makes connections."""

    #: Short name: the ``adapter:`` value in kpi_engine.yaml (and a URL scheme).
    name: ClassVar[str]
    #: Further URL schemes that select this adapter (e.g. "postgresql" beside "postgres").
    schemes: ClassVar[tuple[str, ...]] = ()
    #: The sqlglot dialect of this warehouse (e.g. "duckdb", "postgres", "spark").
    dialect: ClassVar[str]
    #: One line shown by ``kpi-engine plugins``.
    description: ClassVar[str] = ""

    @classmethod
    def prepare(cls, query):
        """Rewrite a compiled sqlglot query for this warehouse before it is rendered.

        Called for ``compile --dialect <this dialect>`` and on every query the engine runs,
        before it renders the query or hands it to ``execute`` (so ``rendered_text`` is the
        prepared tree's text). Use it where sqlglot's rendering of a node does not run on this
        engine (for example date truncation on SQLite). The default returns the query unchanged.
        """
        return query

    @classmethod
    @abc.abstractmethod
    def connect(cls, settings: Mapping[str, Any], project_root: Path) -> Connection:
        """Open a connection.

        ``settings`` is the ``warehouse:`` mapping of kpi_engine.yaml (without
        ``adapter``), or ``{"url": "..."}`` when a URL was given; ``query_timeout``
        (seconds) is set when the user asks for one, and the query must then be
        cancelled in the warehouse and ``QueryTimeout`` raised. Relative paths are
        relative to ``project_root``. Raise ``ConnectionFailed`` when the warehouse
        cannot be opened, ``QueryFailed`` when it refuses a query, each saying how to
        fix it and never showing a password.
        """


@hookspec
def kpi_engine_adapters() -> Sequence[type[Adapter]]:
    """Return the adapter classes this plugin provides.

    Called once per process when the registry first needs adapters. Every class
    must subclass ``Adapter`` and have a ``name`` no other plugin uses.
    """


@dataclass(frozen=True)
class FormulaFunction:
    """A function added to the formula language by a plugin.

    ``compile`` receives the compiled arguments (sqlglot expressions) and the target
    dialect, and returns a sqlglot expression: build it with sqlglot's nodes, never
    by formatting SQL text. ``returns`` is the type of the result: number, string,
    boolean, date or timestamp.
    """

    name: str
    min_args: int
    max_args: int | None
    compile: Callable[[list, str], Any]
    returns: str = "number"
    description: str = ""


@dataclass(frozen=True)
class ResultWriter:
    """An output format added by a plugin: ``kpi-engine evaluate --format <name>``.

    ``write`` receives a ``kpi_engine.result.Result`` and an open file (text, or
    bytes when ``binary``) and writes the whole result to it.
    """

    name: str
    write: Callable[[Any, IO], None]
    binary: bool = False
    description: str = ""


@hookspec
def kpi_engine_functions() -> Sequence[FormulaFunction]:
    """Return formula functions this plugin adds. Names must not clash with built-in
    functions or aggregates, or with another plugin's."""


@hookspec
def kpi_engine_writers() -> Sequence[ResultWriter]:
    """Return output formats this plugin adds. Names must not clash with the built-in formats
    (table, csv, json, parquet, markdown)."""
