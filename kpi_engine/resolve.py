"""Give every name in every formula its meaning, and check the project is consistent.

Input: a loaded ``spec.Project`` (and, when the warehouse is reachable, a catalog
of each source's columns and their types). Output: a ``Model`` whose KPIs hold
semantic ASTs (``Aggregate``, ``Column``, ``KpiRef``, ``Function``), their
dependency order, the sources each KPI reads and the dimensions it can be sliced by.
Every problem is collected and raised at once as ``ProjectInvalid``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from . import nodes as n
from .errors import (FormulaError, KpiEngineError, Location, ProjectInvalid, QueryError, ResolveError, SpecError,
                     TextColumnError, did_you_mean, in_file_order)
from .parser import MAX_EXPANDED_DEPTH, FormulaSource, caret, parse, too_deep
from .spec import Dimension, KpiSpec, Project, Relationship, SourceSpec, axis_source

if TYPE_CHECKING:
    from .mapping import SourceMap

# Nodes a KPI may hold once the KPIs it references are written out in full: the SQL repeats a
# KPI used twice, so without a bound sixty KPIs that each use the one before twice make 2**60.
MAX_EXPANDED_SIZE = 10_000
PERCENTILES = {"median", "percentile", "approx_percentile"}  # not additive: never across periods or groups
AGGREGATES = {"sum", "count", "count_distinct", "avg", "min", "max", "last", "first"} | PERCENTILES
NUMERIC_AGGREGATES = {"sum", "avg", "last", "first"} | PERCENTILES
SNAPSHOT_AGGREGATES = {"last", "first"}  # semi-additive: taken at the last/first snapshot of a period
# name -> (min args, max args). KPI-level operations over the time series.
TIME_FUNCTIONS = {"previous": (1, 2), "cumulative": (1, 2), "rolling": (2, 2), "share": (1, 1), "at_start": (2, 2)}
# 'hour' and 'day' divide the sub-daily grains: cumulative(x, 'day') is day-to-date by hour.
CUMULATIVE_RESETS = ("week", "month", "quarter", "year", "fiscal_quarter", "fiscal_year", "day", "hour")
_SPAN = re.compile(r"\s*([1-9][0-9]{0,3})\s+(minute|hour|day|week|month|quarter|year)s?\s*", re.IGNORECASE)


def _resets(project) -> tuple[str, ...]:
    """cumulative()'s restarts: the built-in periods, then the project's named granularities."""
    calendar = project.config.calendar
    return CUMULATIVE_RESETS + tuple(g for g in calendar.grains if calendar.is_custom(g))


def parse_span(text: str) -> tuple[int, str] | None:
    """'1 year', '3 months', '30 days' -> (amount, unit); None when it is not a length of time."""
    match = _SPAN.fullmatch(text)
    return (int(match.group(1)), match.group(2).lower()) if match else None

# name -> (min args, max args or None for any). Each compiles to one sqlglot node.
FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "if": (3, 3),
    "coalesce": (1, None),
    "nullif": (2, 2),
    "abs": (1, 1),
    "round": (1, 2),
    "least": (1, None),
    "greatest": (1, None),
    "days_between": (2, 2),
    "date": (1, 1),
    "timestamp": (1, 1),
    "from_unixtime": (1, 1),
}

# Type categories of values. UNKNOWN when the warehouse could not be described.
NUMBER, STRING, BOOLEAN, DATE, TIMESTAMP, NULL, UNKNOWN = (
    "number", "string", "boolean", "date", "timestamp", "null", "unknown")

Catalog = Mapping[str, Mapping[str, str]]  # source -> column -> type category


@dataclass(frozen=True)
class ResolvedKpi:
    spec: KpiSpec
    expr: n.Node
    references: tuple[str, ...]  # KPIs used directly
    sources: frozenset[str]  # sources read, through references too
    dimensions: tuple[str, ...]  # dimensions shared by every source read
    depth: int = 0  # levels of operators and calls once the KPIs it references are written out
    unavailable: tuple[str, ...] = ()  # sources it reads that the project declares unmapped
    size: int = 1  # nodes once the KPIs it references are written out, each as often as it is used


@dataclass(frozen=True)
class Model:
    project: Project
    kpis: Mapping[str, ResolvedKpi]
    catalog: Catalog = field(default_factory=dict)  # each source's columns as formulas see them (map: applied)
    functions: Mapping[str, Any] = field(default_factory=dict)  # plugin FormulaFunctions by name
    maps: Mapping[str, "SourceMap"] = field(default_factory=dict)  # map: and where: of each source, resolved
    warehouse: Catalog = field(default_factory=dict)  # the warehouse's own columns of each source
    # KPI -> its formula with every reference inlined (expand), filled as queries are compiled:
    # the trees are immutable, and a KPI that many others reference is written out once
    expansions: dict[str, n.Node] = field(default_factory=dict, compare=False, repr=False)
    # what queries work out from the model alone, by key, kept as they are compiled (each asked
    # for again by every query): a source's dimension paths, its CTE name (compiler.cte_names)
    derived: dict[tuple, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def sources(self) -> Mapping[str, SourceSpec]:
        return self.project.sources

    def dimension_paths(self, source: str) -> Mapping[str, "DimensionPath"]:
        """``dimension_paths(self.sources, source)``, worked out once per model (read it, never change it)."""
        found = self.derived.get(("paths", source))
        if found is None:
            found = self.derived[("paths", source)] = dimension_paths(self.sources, source)
        return found

    def kpi(self, name: str) -> ResolvedKpi:
        if name not in self.kpis:
            raise QueryError(f"unknown KPI '{name}'.", Location(obj=f"project '{self.project.config.name}'"),
                             did_you_mean(name, self.kpis) or "The project defines no KPIs yet.")
        kpi = self.kpis[name]
        if kpi.unavailable:
            from .mapping import unavailable_error

            raise unavailable_error(self.project, name, kpi.unavailable)
        return kpi

    def mapped(self, source: str, column: str) -> n.Node | None:
        """The row formula a source's ``map:`` binds ``column`` to (over warehouse columns), if any."""
        found = self.maps.get(source)
        return found.columns.get(column) if found else None

    def condition(self, source: str) -> n.Node | None:
        """The source's ``where:`` conditions as one condition over its columns, if any."""
        found = self.maps.get(source)
        return found.condition if found else None

    def column_type(self, source: str, column: str) -> str | None:
        """The type of a source's column as formulas see it, when known."""
        found = self.maps.get(source)
        return ((found.types.get(column) if found else None) or self.catalog.get(source, {}).get(column)
                or self.sources[source].columns.get(column))

    def needs_grain(self, name: str) -> bool:
        """True when the KPI (or one it references) compares periods: previous() or rolling()."""
        return any(isinstance(node, n.TimeOp) and node.func in ("previous", "rolling", "at_start")
                   for node in expand(self, self.kpi(name).expr).walk())

    def dimensions_of(self, sources: Iterable[str]) -> tuple[str, ...]:
        """Dimensions reachable from every one of ``sources``, in the first source's order."""
        names = sorted(sources)
        if not names:
            return ()
        common = set(dimension_paths(self.sources, names[0], listed=True))
        for name in names[1:]:
            common &= set(dimension_paths(self.sources, name, listed=True))
        return tuple(d for d in dimension_paths(self.sources, names[0], listed=True) if d in common)


@dataclass(frozen=True)
class DimensionPath:
    """How a source reaches a dimension: through zero or more many-to-one relationships."""

    joins: tuple[tuple[str, Relationship], ...]  # (from source, relationship) hops
    dimension: Dimension

    @property
    def owner(self) -> str:
        """The source whose table holds the dimension's column."""
        return self.joins[-1][1].to if self.joins else ""


MAX_PATH_HOPS = 6  # relationships followed from a source (a bound on the paths a project's links can form)
PATH_SEPARATOR = "__"  # customers__accounts__region: the dimension region through that path


def _hops(sources: Mapping[str, SourceSpec], name: str) -> list[tuple[tuple[str, Relationship], ...]]:
    """Every path of many-to-one (one-to-one) relationships from ``name``, breadth-first: each a
    tuple of (from source, relationship) hops; no source twice on one path."""
    found = []
    frontier: list[tuple[tuple[str, Relationship], ...]] = [()]
    for _ in range(MAX_PATH_HOPS):
        next_frontier = []
        for joins in frontier:
            here = joins[-1][1].to if joins else name
            on_path = {name, *(rel.to for _, rel in joins)}
            for rel in sources[here].relationships:
                if rel.type != "one_to_many" and rel.to in sources and rel.to not in on_path \
                        and not sources[rel.to].unmapped:
                    next_frontier.append(joins + ((here, rel),))
        found += next_frontier
        frontier = next_frontier
    return found


def path_name(joins: tuple[tuple[str, Relationship], ...], dimension: str) -> str:
    """The name that asks for a dimension through one path: customers__accounts__region."""
    return PATH_SEPARATOR.join([*(rel.path_name for _, rel in joins), dimension])


def dimension_paths(sources: Mapping[str, SourceSpec], name: str, listed: bool = False) -> dict[str, DimensionPath]:
    """Every dimension ``name`` can be sliced by: its own first, then those of the sources it
    reaches through many-to-one relationships (nearest first) when one path reaches them, then
    every dimension named by its path (``customers__accounts__region``). A dimension two paths
    reach is only available by its path names: which one was meant is the user's to say.
    ``listed``: only the names to show a user (a path name only where the short one is ambiguous)."""
    found = {dim.name: DimensionPath((), dim) for dim in sources[name].dimensions}
    reached: dict[str, list[DimensionPath]] = {}
    for joins in _hops(sources, name):
        for dim in sources[joins[-1][1].to].dimensions:
            reached.setdefault(dim.name, []).append(DimensionPath(joins, dim))
    for dim, paths in reached.items():
        if len(paths) == 1:
            found.setdefault(dim, paths[0])
    for dim, paths in reached.items():
        if not listed or dim not in found:
            for path in paths:
                found.setdefault(path_name(path.joins, dim), path)
    return found


def unreachable_reason(sources: Mapping[str, SourceSpec], name: str, dim: str) -> tuple[str, str] | None:
    """Why source ``name`` cannot be sliced by ``dim`` when another source has it: two paths
    reach it (ambiguous), or only a one-to-many relationship does (it would count rows more
    than once). (message, hint), or None when neither is the case."""
    if dim in sources[name].dimension_names:
        return None
    paths = [path_name(joins, dim) for joins in _hops(sources, name)
             if sources[joins[-1][1].to].dimension(dim) is not None]
    if len(paths) > 1:
        return (f"'{dim}' is reached from '{name}' through {len(paths)} paths: {', '.join(paths)}.",
                f"Name the one you mean, e.g. --by {paths[0]}, or give the relationships a 'name:' to tell them apart.")
    for joins in [()] + _hops(sources, name):
        here = joins[-1][1].to if joins else name
        for rel in sources[here].relationships:
            target = sources.get(rel.to)
            if rel.type == "one_to_many" and target is not None and target.dimension(dim) is not None:
                return (f"'{dim}' is reached from '{name}' only through the one-to-many relationship "
                        f"{here} -> {rel.to}: each {here} row matches several {rel.to} rows and would be counted "
                        "once for each.",
                        f"Slice a KPI over '{rel.to}' by '{dim}' instead, or, if each {here} row matches one "
                        f"{rel.to} row, declare the relationship many_to_one on {rel.to}'s primary key.")
    return None


def column_type(raw: str) -> str:
    """Map a warehouse type name (INTEGER, VARCHAR(20), TIMESTAMP WITH TIME ZONE...) to a category."""
    t = raw.upper()
    if t.startswith(("BOOL",)):
        return BOOLEAN
    if t.startswith(("TIMESTAMP", "DATETIME")):
        return TIMESTAMP
    if t == "DATE":
        return DATE
    if t.startswith(("VARCHAR", "CHAR", "TEXT", "STRING", "UUID", "ENUM", "NVARCHAR", "CHARACTER")):
        return STRING
    if t.startswith(("INT", "BIGINT", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER", "USMALLINT",
                     "UTINYINT", "DECIMAL", "NUMERIC", "DOUBLE", "FLOAT", "REAL", "NUMBER")):
        return NUMBER
    return UNKNOWN


class _Scope:
    """What names mean while resolving one formula, and where to report problems."""

    def __init__(self, model_sources: Mapping[str, SourceSpec], catalog: Catalog, kpi_names: Iterable[str],
                 where: FormulaSource, text: str, errors: list[KpiEngineError],
                 functions: Mapping[str, Any] | None = None, missing: dict | None = None, label: str = "",
                 resets: tuple[str, ...] = CUMULATIVE_RESETS):
        self.functions = functions or {}
        self.resets = resets  # what cumulative() may restart at: built-in periods and named granularities
        # Library formulas collect the columns the warehouse lacks, reported once per column (mapping.py).
        self.missing = missing
        self.label = label
        self.sources = model_sources
        self.catalog = catalog
        self.kpi_names = kpi_names if isinstance(kpi_names, (Mapping, set, frozenset)) else set(kpi_names)
        self.where = where
        self.text = text
        self.errors = errors

    def error(self, node: n.Node, message: str, hint: str | None = None, kind: type = FormulaError, **fields) -> None:
        self.errors.append(kind(message, self.where.locate(node.pos), hint, caret(self.text, node.pos), **fields))

    def dimension_type(self, name: str) -> str:
        """The type of a dimension's column in the first source that declares it, when known."""
        for source in self.sources.values():
            dimension = source.dimension(name)
            if dimension is not None:
                return (self.catalog.get(source.name) or {}).get(dimension.column) or \
                    source.columns.get(dimension.column, UNKNOWN)
        return UNKNOWN

    def columns(self, source: str) -> Mapping[str, str] | None:
        """Known columns of a source with their types, or None when nothing is known."""
        spec = self.sources[source]
        known: dict[str, str] = {}
        for col in (spec.time, *spec.primary_key, *(d.column for d in spec.dimensions)):
            if col:
                known.setdefault(col, UNKNOWN)
        known.update(spec.columns)
        described = self.catalog.get(source)
        if described is None:
            return known if spec.columns else None
        return described  # the warehouse has the last word; declared columns it lacks are reported


class _Resolver:
    """Resolves one formula. ``mode`` says what bare names outside aggregates mean."""

    def __init__(self, scope: _Scope, mode: str):
        self.scope = scope
        self.mode = mode  # "kpi": KPI refs; "dimension": dimension refs; "having": KPI refs
        self.kpi_refs: list[str] = []
        self.sources_used: set[str] = set()
        self.in_entity_lookup = False

    # -- entry point
    def resolve(self, node: n.Node) -> tuple[n.Node, str]:
        return self._expr(node, agg_source=None)

    # -- expressions
    def _expr(self, node: n.Node, agg_source: str | None) -> tuple[n.Node, str]:
        if isinstance(node, n.NumberLit):
            return node, NUMBER
        if isinstance(node, n.StringLit):
            return node, STRING
        if isinstance(node, n.BoolLit):
            return node, BOOLEAN
        if isinstance(node, n.NullLit):
            return node, NULL
        if isinstance(node, n.Name):
            return self._name(node, agg_source)
        if isinstance(node, n.Call):
            return self._call(node, agg_source)
        if isinstance(node, n.Unary):
            operand, t = self._expr(node.operand, agg_source)
            self._expect(node.operand, t, BOOLEAN if node.op == "not" else NUMBER)
            return n.Unary(node.op, operand, pos=node.pos), (BOOLEAN if node.op == "not" else NUMBER)
        if isinstance(node, n.Binary):
            left, lt = self._expr(node.left, agg_source)
            right, rt = self._expr(node.right, agg_source)
            self._expect(node.left, lt, NUMBER)
            self._expect(node.right, rt, NUMBER)
            return n.Binary(node.op, left, right, pos=node.pos), NUMBER
        if isinstance(node, n.Logical):
            left, lt = self._expr(node.left, agg_source)
            right, rt = self._expr(node.right, agg_source)
            self._expect(node.left, lt, BOOLEAN)
            self._expect(node.right, rt, BOOLEAN)
            return n.Logical(node.op, left, right, pos=node.pos), BOOLEAN
        if isinstance(node, n.Compare):
            left, lt = self._expr(node.left, agg_source)
            right, rt = self._expr(node.right, agg_source)
            self._comparable(node, lt, rt)
            return n.Compare(node.op, left, right, pos=node.pos), BOOLEAN
        if isinstance(node, n.InList):
            operand, t = self._expr(node.operand, agg_source)
            items = []
            for item in node.items:
                resolved, it = self._expr(item, agg_source)
                self._comparable(item, t, it)
                items.append(resolved)
            return n.InList(operand, tuple(items), node.negated, pos=node.pos), BOOLEAN
        if isinstance(node, n.Between):
            operand, t = self._expr(node.operand, agg_source)
            low, lt = self._expr(node.low, agg_source)
            high, ht = self._expr(node.high, agg_source)
            self._comparable(node.low, t, lt)
            self._comparable(node.high, t, ht)
            return n.Between(operand, low, high, node.negated, pos=node.pos), BOOLEAN
        if isinstance(node, n.IsNull):
            operand, _ = self._expr(node.operand, agg_source)
            return n.IsNull(operand, node.negated, pos=node.pos), BOOLEAN
        raise AssertionError(f"unexpected node {node!r}")  # pragma: no cover

    def _expect(self, node: n.Node, actual: str, wanted: str) -> None:
        if actual in (UNKNOWN, NULL) or actual == wanted:
            return
        if wanted == NUMBER:
            self.scope.error(node, f"expected a number here, but this is a {actual}.",
                             "Arithmetic works on numbers only; compare text with '=' or 'in (...)' instead.")
        else:
            self.scope.error(node, f"expected a condition (true/false) here, but this is a {actual}.",
                             "Write a comparison such as 'status = 'paid'' or 'amount > 0'.")

    def _comparable(self, node: n.Node, a: str, b: str) -> None:
        groups = {NUMBER: "number", STRING: "string", BOOLEAN: "boolean", DATE: "time", TIMESTAMP: "time"}
        if a in groups and b in groups and groups[a] != groups[b]:
            # Dates and timestamps compare with date strings ('2025-01-01'), a common idiom.
            if {groups[a], groups[b]} == {"time", "string"}:
                return
            self.scope.error(node, f"cannot compare a {a} with a {b}.",
                             "Compare values of the same kind; quote text as 'text'.")

    def _name(self, node: n.Name, agg_source: str | None) -> tuple[n.Node, str]:
        scope = self.scope
        if agg_source is not None:
            return self._column(node, agg_source)
        if len(node.parts) == 1:
            name = node.parts[0]
            if self.mode == "dimension":  # which sources have it is checked by the compiler
                return n.Name(node.parts, pos=node.pos), scope.dimension_type(name)
            if name in scope.kpi_names:
                self.kpi_refs.append(name)
                return n.KpiRef(name, pos=node.pos), NUMBER
            if name in scope.sources:
                scope.error(node, f"'{name}' is a source, not a value.",
                            f"Aggregate it, e.g. 'count({name})'.")
            else:
                scope.error(node, f"unknown KPI '{name}'.", did_you_mean(name, scope.kpi_names) or None)
            return n.NullLit(pos=node.pos), UNKNOWN
        if len(node.parts) == 2 and node.parts[0] in scope.sources:
            scope.error(node, f"column '{node.dotted}' is used outside an aggregate.",
                        f"Wrap it in an aggregate such as 'sum({node.dotted})' or 'max({node.dotted})'.")
            return n.NullLit(pos=node.pos), UNKNOWN
        scope.error(node, f"'{node.dotted}' is not a KPI or a source column.",
                    did_you_mean(node.parts[0], list(scope.sources) + list(scope.kpi_names)) or None)
        return n.NullLit(pos=node.pos), UNKNOWN

    def _column(self, node: n.Name, source: str) -> tuple[n.Node, str]:
        scope = self.scope
        if len(node.parts) == 1:
            col = node.parts[0]
        elif len(node.parts) == 2 and node.parts[0] == source:
            col = node.parts[1]
        elif len(node.parts) == 2 and node.parts[0] in scope.sources:
            scope.error(node, f"'{node.dotted}' belongs to source '{node.parts[0]}', but this aggregate reads '{source}'.",
                        "An aggregate reads one source; compute the other part in its own aggregate.")
            return n.NullLit(pos=node.pos), UNKNOWN
        else:
            scope.error(node, f"'{node.dotted}' is not a column of source '{source}'.",
                        f"Write a column as 'column' or '{source}.column'.")
            return n.NullLit(pos=node.pos), UNKNOWN
        columns = scope.columns(source)
        if columns is not None and col not in columns:
            if scope.missing is not None and source in scope.catalog:
                scope.missing.setdefault((source, col), []).append(scope.label)
            else:
                scope.error(node, f"source '{source}' has no column '{col}'.", did_you_mean(col, columns) or None)
            return n.NullLit(pos=node.pos), UNKNOWN
        return n.Column(source, col, pos=node.pos), (columns or {}).get(col, UNKNOWN)

    def _call(self, node: n.Call, agg_source: str | None) -> tuple[n.Node, str]:
        scope = self.scope
        name = node.name.lower()
        if name in AGGREGATES and self.mode == "row":
            scope.error(node, f"'{name}' is an aggregate; a source's map and where describe one row.",
                        "Use the row's own columns, e.g. 'pages = 1' or 'amount / 100'; aggregate in the KPIs.")
            return n.NullLit(pos=node.pos), UNKNOWN
        if node.at is not None and (name not in AGGREGATES or node.per is not None):
            scope.error(node, f"'at' places an aggregate's rows in time; '{name}"
                              f"{' ... per ' + node.per if node.per else ''}' has none to place.",
                        "Write it in an aggregate over a source: 'count(deals at won_at)'.")
            return n.NullLit(pos=node.pos), UNKNOWN
        if name in AGGREGATES and node.per is not None:
            return self._entity_lookup(node, name, agg_source)
        if name in TIME_FUNCTIONS:
            return self._time_op(node, name, agg_source)
        if name in AGGREGATES:
            if agg_source is not None:
                scope.error(node, f"'{name}' is an aggregate inside another aggregate.",
                            "Aggregate once; to combine aggregates, write them side by side: 'sum(a.x) / count(a)'. "
                            "For a per-entity value in a filter, add 'per <key>': 'count(orders per customer_id) > 1'.")
                return n.NullLit(pos=node.pos), UNKNOWN
            if self.mode == "dimension":
                scope.error(node, "aggregates are not allowed in a dimension filter.",
                            "Filter on dimension values here, e.g. \"channel = 'email'\"; filter on KPI values with --having.")
                return n.NullLit(pos=node.pos), UNKNOWN
            return self._aggregate(node, name)
        if node.where is not None:
            scope.error(node, f"'where' only applies to aggregates, not to '{name}'.",
                        "Move the condition into an aggregate, e.g. 'count(leads where ...)'.")
        plugin = scope.functions.get(name)
        if name not in FUNCTIONS and plugin is None:
            known = list(FUNCTIONS) + sorted(AGGREGATES) + list(TIME_FUNCTIONS) + list(scope.functions)
            scope.error(node, f"unknown function '{node.name}'.", did_you_mean(name, known) or None)
            return n.NullLit(pos=node.pos), UNKNOWN
        low, high = (plugin.min_args, plugin.max_args) if plugin else FUNCTIONS[name]
        count = len(node.args)
        if count < low or (high is not None and count > high):
            wanted = str(low) if low == high else (f"{low} or more" if high is None else f"{low} to {high}")
            scope.error(node, f"'{name}' takes {wanted} argument{'s' if wanted != '1' else ''}, not {count}.",
                        _USAGE.get(name))
            return n.NullLit(pos=node.pos), UNKNOWN
        resolved = [self._expr(arg, agg_source) for arg in node.args]
        args = tuple(r[0] for r in resolved)
        types = [r[1] for r in resolved]
        if plugin is not None:
            result = plugin.returns
        elif name == "if":
            self._expect(node.args[0], types[0], BOOLEAN)
            self._same_kind(node.args[1:], types[1:])
            result = next((t for t in types[1:] if t not in (NULL, UNKNOWN)), UNKNOWN)
        elif name == "days_between":
            for arg, t in zip(node.args, types):
                if t not in (DATE, TIMESTAMP, UNKNOWN, NULL):
                    hint = "Pass two date or timestamp columns: 'days_between(created_at, customer_at)'."
                    if t == STRING:
                        hint += (" A text column holding ISO dates is read with date() or timestamp(): "
                                 "'days_between(opened, date(closed))', or mapped once in the source: "
                                 "'map: {closed: date(closed)}'.")
                    scope.error(arg, f"days_between needs dates or timestamps, but this is a {t}.", hint)
            result = NUMBER
        elif name in ("date", "timestamp"):
            # Text in ISO form (or a date or timestamp) read as a date or a timestamp: a time column
            # stored as text becomes usable through the source's map.
            if types[0] not in (STRING, DATE, TIMESTAMP, UNKNOWN, NULL):
                epoch = "from_unixtime(ts)" if name == "timestamp" else "date(from_unixtime(ts))"
                scope.error(node.args[0], f"{name}() reads text written as an ISO date or time, but this is a "
                                          f"{types[0]}.",
                            "Pass a text column such as '2025-01-31' or '2025-01-31 14:05:00'. A number of seconds "
                            f"since 1970-01-01 00:00 UTC (Unix time) is read with '{epoch}' (milliseconds: "
                            "'from_unixtime(ts / 1000)').")
            result = DATE if name == "date" else TIMESTAMP
        elif name == "from_unixtime":
            # Unix time (seconds since 1970-01-01 00:00 UTC, fractions kept where the warehouse can)
            # as a timestamp in UTC, which is how the engine reads every stored timestamp.
            if types[0] not in (NUMBER, UNKNOWN, NULL):
                scope.error(node.args[0], f"from_unixtime() reads a number of seconds since 1970-01-01 00:00 UTC, "
                                          f"but this is a {types[0]}.",
                            "Pass a number column such as 'created' (a Unix time); text holding an ISO date or time "
                            "is read with 'timestamp(text_column)'.")
            result = TIMESTAMP
        elif name in ("abs", "round"):
            for arg, t in zip(node.args, types):
                self._expect(arg, t, NUMBER)
            result = NUMBER
        else:  # coalesce, nullif, least, greatest: values of one kind
            self._same_kind(node.args, types)
            result = next((t for t in types if t not in (NULL, UNKNOWN)), UNKNOWN)
        return n.Function(name, args, pos=node.pos), result

    def _same_kind(self, args, types) -> None:
        known = [(arg, t) for arg, t in zip(args, types) if t not in (NULL, UNKNOWN)]
        for arg, t in known[1:]:
            self._comparable(arg, known[0][1], t)

    def _time_op(self, node: n.Call, func: str, agg_source: str | None) -> tuple[n.Node, str]:
        scope = self.scope
        if agg_source is not None or self.mode == "dimension":
            scope.error(node, f"'{func}' works on KPI values, not on rows.",
                        f"Use it outside aggregates, e.g. '{func}(revenue)' or '{func}(sum(orders.amount))'.")
            return n.NullLit(pos=node.pos), UNKNOWN
        low, high = TIME_FUNCTIONS[func]
        usage = {"previous": "previous(x), previous(x, 12) or previous(x, '1 year')",
                 "cumulative": "cumulative(x) or cumulative(x, 'year')",
                 "rolling": "rolling(x, 3) or rolling(x, '30 days')", "share": "share(x)",
                 "at_start": "at_start(x, 'month')"}[func]
        if not low <= len(node.args) <= high:
            scope.error(node, f"'{func}' takes {low if low == high else f'{low} or {high}'} argument"
                              f"{'s' if high > 1 else ''}, not {len(node.args)}.", f"Write '{usage}'.")
            return n.NullLit(pos=node.pos), UNKNOWN
        if node.where is not None:
            scope.error(node, f"'where' only applies to aggregates, not to '{func}'.",
                        "Put the condition in the aggregates of the KPI.")
        operand, operand_type = self._expr(node.args[0], None)
        self._expect(node.args[0], operand_type, NUMBER)
        periods = reset = span = start_of = None
        if len(node.args) == 2:
            arg = node.args[1]
            if func == "at_start":
                if not (isinstance(arg, n.StringLit) and arg.value in CUMULATIVE_RESETS):
                    scope.error(arg, "at_start's second argument is the period whose start it reads.",
                                f"Write one of: {', '.join(repr(r) for r in CUMULATIVE_RESETS)}.")
                else:
                    start_of = arg.value
            elif func == "cumulative":
                if not (isinstance(arg, n.StringLit) and arg.value in scope.resets):
                    scope.error(arg, "cumulative's second argument is the period it restarts at.",
                                f"Write one of: {', '.join(repr(r) for r in scope.resets)}.")
                else:
                    reset = arg.value
            elif isinstance(arg, n.StringLit):
                span = parse_span(arg.value)
                if span is None:
                    scope.error(arg, f"'{arg.value}' is not a length of time.",
                                "Write a whole number of periods (12) or a length such as '1 year', '3 months', "
                                "'1 quarter', '2 weeks', '30 days' or '6 hours'.")
            elif not (isinstance(arg, n.NumberLit) and isinstance(arg.value, int) and 1 <= arg.value <= 10_000):
                scope.error(arg, f"{func}'s second argument must be a whole number of periods (1 or more).",
                            f"Write '{usage}'.")
            else:
                periods = arg.value
        elif func == "previous":
            periods = 1
        return n.TimeOp(func, operand, periods, reset, span, start_of, pos=node.pos), NUMBER

    def _entity_lookup(self, node: n.Call, func: str, agg_source: str | None) -> tuple[n.Node, str]:
        scope = self.scope
        if agg_source is None and func in SNAPSHOT_AGGREGATES and self.mode == "kpi":
            return self._entity_snapshot(node, func)
        if agg_source is None:
            scope.error(node, f"'{func}(... per {node.per})' gives one value per entity, so it only makes sense "
                              "inside another aggregate's filter.",
                        "Use it in a 'where', e.g. 'sum(orders.amount where count(orders per customer_id) > 1)'.")
            return n.NullLit(pos=node.pos), UNKNOWN
        if func in SNAPSHOT_AGGREGATES | PERCENTILES:
            scope.error(node, f"'{func}' cannot be used per entity.", "Use min, max, sum, count or avg per entity.")
            return n.NullLit(pos=node.pos), UNKNOWN
        if self.in_entity_lookup:
            scope.error(node, f"'{func}(... per {node.per})' inside another per-entity aggregate is not supported.",
                        "Per-entity values are computed one level deep: make the inner condition a plain row "
                        "condition, or define the inner per-entity test on its own source.")
            return n.NullLit(pos=node.pos), UNKNOWN
        inner = n.Call(node.name, node.args, node.where, None, pos=node.pos)
        self.in_entity_lookup = True
        try:
            resolved, value_type = self._aggregate(inner, func)
        finally:
            self.in_entity_lookup = False
        if not isinstance(resolved, n.Aggregate):
            return resolved, value_type
        for source in (resolved.source, agg_source):
            columns = scope.columns(source)
            if columns is not None and node.per not in columns:
                scope.error(node, f"'per {node.per}' needs a column '{node.per}' in source '{source}', which has none.",
                            did_you_mean(node.per, columns) or "The key must have the same name in both sources.")
        lookup = n.EntityLookup(func, resolved.source, resolved.arg, resolved.where, node.per, pos=node.pos)
        return lookup, value_type

    def _entity_snapshot(self, node: n.Call, func: str) -> tuple[n.Node, str]:
        """last(accounts.balance per account_id): each entity's latest (first) row in the period,
        summed across entities, for tables where entities report on different days."""
        resolved, value_type = self._aggregate(n.Call(node.name, node.args, node.where, None, pos=node.pos), func)
        if not isinstance(resolved, n.Aggregate):
            return resolved, value_type
        columns = self.scope.columns(resolved.source)
        if columns is not None and node.per not in columns:
            self.scope.error(node, f"'per {node.per}' needs a column '{node.per}' in source '{resolved.source}', "
                                   "which has none.", did_you_mean(node.per, columns) or None)
        if self.scope.sources[resolved.source].time_end:
            self.scope.error(node, f"'{func}(... per {node.per})' reads each entity's own latest row; an interval "
                                   "source has one row per entity and period already.",
                             f"Write '{func}({resolved.source}...)' without 'per'.")
        return replace(resolved, per=node.per), value_type

    def _aggregate(self, node: n.Call, func: str) -> tuple[n.Node, str]:
        scope = self.scope
        fraction = None
        if func in ("percentile", "approx_percentile"):
            fraction = self._fraction(node, func)
            if fraction is None:
                return n.NullLit(pos=node.pos), UNKNOWN
            node = n.Call(node.name, node.args[:1], node.where, node.per, node.at, pos=node.pos)
        elif func == "median":
            fraction = Decimal("0.5")
        if len(node.args) != 1:
            scope.error(node, f"'{func}' takes one argument, not {len(node.args)}.",
                        f"Write '{func}(source.column)'" + (" or 'count(source)'." if func == "count" else "."))
            return n.NullLit(pos=node.pos), UNKNOWN
        arg = node.args[0]
        source = self._aggregate_source(arg)
        if source is None:
            first = next((node.parts[0] for node in arg.walk() if isinstance(node, n.Name)), None)
            close = did_you_mean(first, scope.sources) if first else ""
            if first and close.startswith("Did you mean"):
                scope.error(arg, f"unknown source '{first}'.", close)
            else:
                scope.error(arg, f"cannot tell which source '{func}' reads.",
                            f"Name the source: '{func}(source.column)'" + (" or 'count(source)'." if func == "count" else ".")
                            + (f" Sources: {', '.join(sorted(scope.sources))}." if scope.sources else ""))
            return n.NullLit(pos=node.pos), UNKNOWN
        self.sources_used.add(source)
        if isinstance(arg, n.Name) and arg.parts == (source,):
            if func not in ("count", "last", "first"):
                scope.error(arg, f"'{func}({source})' needs a column.",
                            f"Write '{func}({source}.column)'; only count, last and first can take a whole source.")
                return n.NullLit(pos=node.pos), UNKNOWN
            value, value_type = None, NUMBER
        else:
            value, value_type = self._expr(arg, source)
            if func in NUMERIC_AGGREGATES and value_type not in (NUMBER, UNKNOWN, NULL):
                hint = "Use count or count_distinct for text, or aggregate a numeric column."
                if isinstance(value, n.Column) and source in scope.catalog:
                    # The formula is likely right and the warehouse's column typed as text (a CSV export
                    # with 'n/a' in it): say how to fix the data side (the engine may name the value).
                    hint += (f" If '{value.name}' of source '{source}' holds numbers stored as text, map it to a "
                             f"number ('map: {{{value.name}: <formula>}}') or, for a CSV file, declare its type and "
                             "its markers of no value such as 'n/a' in the warehouse's data settings (docs/specs.md).")
                    scope.error(arg, f"'{func}' needs numbers, but this is a {value_type}.", hint, TextColumnError,
                                source=source, column=value.name, func=func)
                else:
                    scope.error(arg, f"'{func}' needs numbers, but this is a {value_type}.", hint)
        where = None
        if node.where is not None:
            where, where_type = self._expr(node.where, source)
            self._expect(node.where, where_type, BOOLEAN)
        result = value_type if func in ("min", "max") else NUMBER
        if func in SNAPSHOT_AGGREGATES and scope.sources[source].conversion is not None:
            scope.error(node, f"'{func}' reads snapshots; '{source}' is a conversion source, whose rows are events.",
                        f"Count or add up its conversions: 'count({source})', 'sum({source}.<column>)'.")
            return n.NullLit(pos=node.pos), UNKNOWN
        if node.at is not None:
            source = self._axis_view(node, source, node.at)
            if source is None:
                return n.NullLit(pos=node.pos), UNKNOWN
        return n.Aggregate(func, source, value, where, fraction, pos=node.pos), result

    def _fraction(self, node: n.Call, func: str) -> Decimal | int | None:
        """The second argument of percentile(x, 0.9): a number from 0 to 1, or None after an error."""
        usage = f"Write '{func}(source.column, 0.9)' (0.5 is the median)."
        if len(node.args) != 2:
            self.scope.error(node, f"'{func}' takes two arguments, not {len(node.args)}.", usage)
            return None
        arg = node.args[1]
        if not (isinstance(arg, n.NumberLit) and 0 <= arg.value <= 1):
            self.scope.error(arg, f"{func}'s second argument is the fraction of rows below the value, from 0 to 1.",
                             usage)
            return None
        return arg.value

    def _axis_view(self, node: n.Node, source: str, axis: str) -> str | None:
        """The source whose rows are those of ``source`` placed in time by ``axis`` (a view
        generated for one of its time_axes), or None after reporting why there is none."""
        spec = self.scope.sources[source]
        base = spec.axis_of[0] if spec.axis_of else source
        base_spec = self.scope.sources[base]
        if axis == base_spec.time:
            return base
        view = axis_source(base, axis)
        if view in self.scope.sources:
            self.sources_used.add(view)
            return view
        axes = [base_spec.time, *base_spec.time_axes] if base_spec.time else []
        self.scope.error(node, f"source '{base}' has no time axis '{axis}'.",
                         (did_you_mean(axis, axes) + " " if axes and did_you_mean(axis, axes) else "")
                         + f"Declare it: 'sources: {{{base}: {{time_axes: [{axis}]}}}}'"
                         + (f"; its axes are {', '.join(axes)}." if axes else "."))
        return None

    def _aggregate_source(self, arg: n.Node) -> str | None:
        """The one source an aggregate's argument reads: the first 'source' or 'source.column' in it."""
        for node in arg.walk():
            if isinstance(node, n.Name) and node.parts[0] in self.scope.sources:
                return node.parts[0]
        return None


_USAGE = {
    "coalesce": "Write 'coalesce(value, fallback, ...)'.",
    "least": "Write 'least(a, b, ...)'.",
    "greatest": "Write 'greatest(a, b, ...)'.",
    "days_between": "Write 'days_between(start_time, end_time)'.",
    "date": "Write 'date(text_column)'.",
    "timestamp": "Write 'timestamp(text_column)'.",
    "from_unixtime": "Write 'from_unixtime(seconds_column)', or 'from_unixtime(ms_column / 1000)' for milliseconds.",
    "if": "Write 'if(condition, value_if_true, value_if_false)'.",
    "nullif": "Write 'nullif(value, value_that_means_null)'.",
    "round": "Write 'round(value)' or 'round(value, digits)'.",
    "abs": "Write 'abs(value)'.",
}


def resolve(project: Project, catalog: Catalog | None = None, functions: Mapping[str, Any] | None = None,
            warehouse_dialect: str | None = None) -> Model:
    """Resolve every KPI of ``project``; raise ``ProjectInvalid`` with every problem found.
    ``functions`` are formula functions added by plugins; ``sql:`` sources are read in the
    project's ``dialect:``, else in ``warehouse_dialect`` (the adapter's), else as DuckDB SQL."""
    from .mapping import missing_column_errors, resolve_sources

    warehouse = catalog or {}
    functions = functions or {}
    errors: list[KpiEngineError] = []
    missing: dict[tuple[str, str], list[str]] = {}  # (source, column) -> library KPIs that read it
    maps, catalog = resolve_sources(project, warehouse, functions, errors, missing)
    reported: set[tuple[str, str]] = set()  # (source whose table is read, column) already reported missing
    errors.extend(_source_errors(project, catalog, warehouse_dialect, warehouse, reported))
    if any(source.conversion for source in project.sources.values()):
        from .conversions import conversion_errors

        errors.extend(conversion_errors(project, catalog, warehouse))

    parsed: dict[str, tuple[n.Node, str, list[str], set[str]]] = {}
    for name, spec in project.kpis.items():
        problem = number_format_problem(spec.format) if spec.format is not None else None
        if problem:
            errors.append(ResolveError(f"format {spec.format!r} {problem}.", spec.where("format"),
                                       "Use a Python format spec such as ',.2f' or ',.0f'."))
        try:
            tree = parse(spec.formula, spec.formula_source)
        except FormulaError as error:
            errors.append(error)
            continue
        if _mentions(tree, project.broken):
            continue  # it uses something whose own spec is invalid and already reported
        scope = _Scope(project.sources, catalog, project.kpis, spec.formula_source, spec.formula, errors, functions,
                       missing if spec.library else None, name, _resets(project))
        resolver = _Resolver(scope, "kpi")
        expr, result_type = resolver.resolve(tree)
        if result_type not in (NUMBER, UNKNOWN, NULL):
            scope.error(tree, f"a KPI formula must give a number, but this gives a {result_type}.",
                        "Aggregate or count it, e.g. 'count(source where condition)'.")
        if spec.time is not None:
            expr = _on_axis(expr, spec, project.sources, resolver.sources_used, errors)
        parsed[name] = (expr, result_type, list(dict.fromkeys(resolver.kpi_refs)), resolver.sources_used)
    errors.extend(missing_column_errors(project, warehouse, missing, reported))

    references = {name: [ref for ref in refs if ref in parsed] for name, (_, _, refs, _) in parsed.items()}
    order, cycles = references_first(parsed, references.__getitem__)
    for cycle in cycles:
        spec = project.kpis[cycle[0]]
        shown = cycle if len(cycle) <= 12 else cycle[:6] + [f"... ({len(cycle) - 11:,} more)"] + cycle[-5:]
        errors.append(ResolveError(f"KPIs reference each other in a cycle: {' -> '.join(shown)}.",
                                   spec.where("formula"), "Break the cycle: one of them must be computed from sources."))
    in_cycle = {name for cycle in cycles for name in cycle}

    resolved: dict[str, ResolvedKpi] = {}
    for name in order:  # every KPI after the ones it references: a chain of any length needs no recursion
        expr, _, refs, direct_sources = parsed[name]
        if name in in_cycle or any(ref not in resolved for ref in refs):
            continue  # in a cycle, or built on a KPI that is (reported once, above) or does not resolve
        sources = set(direct_sources).union(*(resolved[ref].sources for ref in refs))
        model_dims = Model(project, {}).dimensions_of(sources)
        depth = formula_depth(expr, {ref: resolved[ref].depth for ref in refs})
        unmapped = tuple(sorted(s for s in sources if project.sources[s].unmapped))
        size = formula_size(expr, {ref: resolved[ref].size for ref in refs})
        resolved[name] = ResolvedKpi(project.kpis[name], expr, tuple(refs), frozenset(sources), model_dims, depth,
                                     unavailable=unmapped, size=size)

    for name in parsed:
        kpi = resolved.get(name)
        if kpi is None:
            continue
        # Reported where a chain of references first goes too deep, not again at every KPI above it.
        if kpi.depth > MAX_EXPANDED_DEPTH and all(resolved[ref].depth <= MAX_EXPANDED_DEPTH for ref in kpi.references):
            errors.append(_expanded_too_deep(kpi.depth, {ref: resolved[ref].depth for ref in kpi.references},
                                             kpi.spec.formula_source.locate(n.Pos())))
        elif kpi.size > MAX_EXPANDED_SIZE and all(resolved[ref].size <= MAX_EXPANDED_SIZE for ref in kpi.references):
            errors.append(_expanded_too_big(kpi.size, {ref: resolved[ref].size for ref in kpi.references},
                                            kpi.spec.formula_source.locate(n.Pos())))
        if kpi.spec.dimensions is None:
            continue
        for i, dim in enumerate(kpi.spec.dimensions):
            if dim not in kpi.dimensions and not (kpi.sources and all(dim in dimension_paths(project.sources, s)
                                                                      for s in kpi.sources)):
                missing = sorted(s for s in kpi.sources if dim not in project.sources[s].dimension_names)
                errors.append(ResolveError(
                    f"dimension '{dim}' is not available on every source this KPI reads (missing on: {', '.join(missing)}).",
                    kpi.spec.where("dimensions", i),
                    f"Declare '{dim}' on {', '.join(missing)} or remove it from the KPI's dimensions."))
    if errors:
        raise ProjectInvalid(in_file_order(errors))
    return Model(project, resolved, catalog, functions, maps, warehouse)


def place_on_axis(expr: n.Node, axis: str, sources: Mapping[str, SourceSpec]) -> tuple[n.Node, set[str]]:
    """``expr`` with each aggregate over a source that has the time axis ``axis`` reading that
    axis (aggregates that chose theirs with ``at`` keep it); and the views now read."""
    used: set[str] = set()

    def move(node: n.Node) -> n.Node:
        if not isinstance(node, n.Aggregate) or sources[node.source].axis_of:
            return node
        view = axis_source(node.source, axis)
        if view not in sources:
            return node
        used.add(view)
        return replace(node, source=view)

    return expr.map(move), used


def _on_axis(expr: n.Node, spec: KpiSpec, sources: Mapping[str, SourceSpec], used: set[str],
             errors: list) -> n.Node:
    """A KPI's ``time:`` applied to its own aggregates; an error when none of them has the axis."""
    moved, views = place_on_axis(expr, spec.time, sources)
    own = {node.source for node in expr.walk() if isinstance(node, n.Aggregate)}
    if not views and not any(sources[s].time == spec.time for s in own):
        axes = sorted({a for s in own for a in sources[s].time_axes} | {sources[s].time for s in own if sources[s].time})
        errors.append(ResolveError(f"no source this KPI aggregates has the time axis '{spec.time}'.",
                                   spec.where("time"), (did_you_mean(spec.time, axes) + " " if did_you_mean(spec.time, axes)
                                                        else "") + "Declare it in the source's 'time_axes', or use "
                                   f"one of: {', '.join(axes) or 'no axis (the sources have no time column)'}."))
        return expr
    used.update(views)
    return moved


def resolve_row(project: Project, source: str, text: str, where: FormulaSource, columns: Mapping[str, str] | None,
                functions: Mapping[str, Any], errors: list[KpiEngineError], missing: dict | None = None,
                label: str = "") -> tuple[n.Node, str]:
    """A formula over one row of ``source`` (a ``map:`` value or a ``where:`` condition): its
    names are the ``columns`` given (None when they are not known), aggregates are refused.
    With ``missing``, unknown columns are collected there (as for library KPIs) instead of reported."""
    try:
        tree = parse(text, where)
    except FormulaError as error:
        errors.append(error)
        return n.NullLit(), UNKNOWN
    scope = _RowScope(project.sources, {source: columns} if missing is not None and columns is not None else {},
                      (), where, text, errors, functions, missing, label)
    scope.row_columns = columns
    return _Resolver(scope, "row")._expr(tree, source)


class _RowScope(_Scope):
    row_columns: Mapping[str, str] | None = None

    def columns(self, source: str) -> Mapping[str, str] | None:
        return self.row_columns


MAX_FORMAT_WIDTH = 50  # characters a KPI's format may pad a number to
MAX_FORMAT_PRECISION = 20  # digits after the point (a double holds about 17 significant ones)
# Python's format spec: [[fill]align][sign][z][#][0][width][grouping][.precision][type]
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>[0-9]*)[,_]?(?:\.(?P<precision>[0-9]+))?[a-zA-Z%]?",
                          re.ASCII | re.DOTALL)


def number_format_problem(spec: str) -> str | None:
    """Why ``spec`` is not a usable number format (a KPI's ``format``), or None. Width and
    precision are bounded before Python formats anything: ',.100000000f' would write 100 MB."""
    match = _FORMAT_SPEC.fullmatch(spec)
    if match is None:
        return "is not a number format"
    width, precision = int(match["width"] or 0), int(match["precision"] or 0)
    if width > MAX_FORMAT_WIDTH:
        return f"pads numbers to {width:,} characters; the limit is {MAX_FORMAT_WIDTH}"
    if precision > MAX_FORMAT_PRECISION:
        return f"asks for {precision:,} digits of precision; the limit is {MAX_FORMAT_PRECISION}"
    try:
        format(1234.5, spec)
    except ValueError:
        return "is not a number format"
    return None


def formula_depth(expr: n.Node, kpi_depths: Mapping[str, int]) -> int:
    """Levels of operators and calls, as ``parser.tree_depth`` counts them; a KPI reference is
    as deep as that KPI written out in full (``kpi_depths``). Formulas are at most
    MAX_FORMULA_DEPTH deep, so the recursion is short."""
    if isinstance(expr, n.KpiRef):
        return kpi_depths[expr.name]
    if isinstance(expr, (n.NumberLit, n.StringLit, n.BoolLit, n.NullLit, n.Name, n.Column)):
        return 0
    # count(leads) has no child node but is a call: one level, as in the parser's count.
    return 1 + max((formula_depth(child, kpi_depths) for child in expr.children()), default=0)


def formula_size(expr: n.Node, kpi_sizes: Mapping[str, int]) -> int:
    """Nodes of the formula once the KPIs it references are written out in full (``kpi_sizes``),
    each as often as it is used: what the SQL will hold. KPIs that use a KPI twice, built on
    KPIs that do the same, double at each level, so this is bounded too (MAX_EXPANDED_SIZE)."""
    return sum(kpi_sizes[node.name] if isinstance(node, n.KpiRef) else 1 for node in expr.walk())


def _expanded_too_big(size: int, ref_sizes: Mapping[str, int], location: Location) -> FormulaError:
    largest = max(ref_sizes, key=ref_sizes.get)
    return FormulaError(f"the formula holds {size:,} operators, calls, names and numbers once the KPIs it references "
                        f"are written out in full, each as often as it is used ('{largest}' holds "
                        f"{ref_sizes[largest]:,}); the limit is {MAX_EXPANDED_SIZE:,}.", location,
                        "KPIs that use a KPI more than once, built on KPIs that do the same, double in size at "
                        "each level: use each KPI once per formula, or compute the repeated part in fewer steps.")


def _expanded_too_deep(depth: int, ref_depths: Mapping[str, int], location: Location) -> FormulaError:
    deepest = max(ref_depths, key=ref_depths.get)
    return too_deep(f"the formula is {depth:,} levels deep once the KPIs it references are written out in full "
                    f"('{deepest}' is {ref_depths[deepest]:,} by itself); the limit is {MAX_EXPANDED_DEPTH}.",
                    location, "Make the KPIs it builds on less deep")


def _mentions(tree: n.Node, names: frozenset[str]) -> bool:
    return bool(names) and any(isinstance(node, n.Name) and node.parts[0] in names for node in tree.walk())


def _relationship_errors(project: Project, source: SourceSpec) -> Iterable[KpiEngineError]:
    """Each relationship points at a known source, on the far side's whole key (else a row could
    match several and be counted once for each), and names a path no other one of the source's
    relationships names."""
    names: dict[str, int] = {}
    for rel_index, rel in enumerate(source.relationships):
        where = source.where("relationships", rel_index)
        if rel.to not in project.sources:
            yield ResolveError(f"relationship to unknown source '{rel.to}'.",
                               source.where("relationships", rel_index, "to"),
                               did_you_mean(rel.to, project.sources) or None)
            continue
        if rel.path_name in names:
            yield ResolveError(f"relationships {names[rel.path_name] + 1} and {rel_index + 1} of '{source.name}' are "
                               f"both named '{rel.path_name}', so a dimension through them cannot be told apart.", where,
                               "Give one of them another 'name:' (e.g. 'name: billing_region').")
        names.setdefault(rel.path_name, rel_index)
        target = project.sources[rel.to]
        if rel.pairs and rel.to_column:
            yield ResolveError(f"relationship {source.name} -> {rel.to} has both a composite 'on:' and 'to_column'.",
                               where, "Write the composite key as a mapping, 'on: {column here: column there, ...}', "
                               "and remove 'to_column'.")
            continue
        if rel.as_of and not target.valid_from:
            yield ResolveError(f"relationship {source.name} -> {rel.to} sets 'as_of' but '{rel.to}' is not a history "
                               "source.", source.where("relationships", rel_index, "as_of"),
                               f"Declare 'valid_from:' (and 'valid_to:') on {rel.to}, or remove 'as_of'.")
        if rel.type == "one_to_many":
            continue  # never joined: nothing can fan out
        here = [a for a, _ in rel.columns]
        there = [b for _, b in rel.columns]
        # A history source's key is unique at any one time: its primary key without valid_from.
        key = tuple(k for k in target.primary_key if k != target.valid_from)
        if sorted(there) == sorted(key):
            continue
        shown_key = ", ".join(key) or "none declared"
        if len(there) == 1:
            yield ResolveError(
                f"relationship {source.name}.{here[0]} -> {rel.to}.{there[0]} could fan out: "
                f"'{there[0]}' is not the {'entity key' if target.valid_from else 'primary key'} of '{rel.to}' "
                f"(primary key: {shown_key}).", where,
                f"Point it at {rel.to}'s primary key, or declare 'primary_key: {there[0]}' on {rel.to} "
                "if each value appears once; a one-to-many link cannot carry dimensions.")
        else:
            yield ResolveError(
                f"relationship {source.name}.({', '.join(here)}) -> {rel.to}.({', '.join(there)}) could fan out: "
                f"({', '.join(there)}) is not the primary key of '{rel.to}' (primary key: {shown_key}).", where,
                f"Match every column of {rel.to}'s primary key, or declare 'primary_key: [{', '.join(there)}]' on "
                f"{rel.to} if each combination appears once; a one-to-many link cannot carry dimensions.")


def _source_errors(project: Project, catalog: Catalog, warehouse_dialect: str | None = None,
                   warehouse: Catalog | None = None, reported: set[tuple[str, str]] | None = None
                   ) -> Iterable[KpiEngineError]:
    """Columns a source declares (time, key, dimensions) must exist when the warehouse was described."""
    dialect = project.config.dialect
    if dialect:
        from sqlglot.dialects import DIALECTS
        from sqlglot.dialects.dialect import Dialect

        try:
            Dialect.get_or_raise(dialect)
        except ValueError:
            yield ResolveError(f"unknown SQL dialect '{dialect}'.", project.config.positions.at(("dialect",)),
                               did_you_mean(dialect, [d.lower() for d in DIALECTS]) or None)
            dialect = None
    reported = set() if reported is None else reported  # sources that extend another share its table's columns
    for source in project.sources.values():
        if source.unmapped or source.axis_of:
            continue  # no data, or a time axis's view: its source's checks cover it
        yield from _relationship_errors(project, source)
        if source.sql:
            try:
                parse_source_sql(source, dialect or warehouse_dialect or "duckdb")
            except SpecError as error:
                yield error
        described = catalog.get(source.name)
        if described is None:
            continue
        table = source.table or "the query"
        owner = source.rows_of or source.name  # where a map: entry for the table goes
        for column in source.columns:
            if column not in described and _first(reported, source, column):
                yield ResolveError(f"declared column '{column}' does not exist in {table}.",
                                   source.where("columns", column, key=True), did_you_mean(column, described) or None)
        checks = [("time", source.time, ("time",)), ("time_end", source.time_end, ("time_end",))]
        checks += [("time axis", axis, ("time_axes", i)) for i, axis in enumerate(source.time_axes)]
        checks += [("primary key", col, ("primary_key",)) for col in source.primary_key]
        checks += [("valid from", source.valid_from, ("valid_from",)), ("valid to", source.valid_to, ("valid_to",))]
        checks += [("dimension", d.column, ("dimensions", i)) for i, d in enumerate(source.dimensions)]
        for what, col, path in checks:
            if col and col not in described and _first(reported, source, col):
                own = (warehouse or {}).get(source.name, described)  # suggest the table's own columns
                yield ResolveError(f"{what} column '{col}' does not exist in {table}.",
                                   source.where(*path), f"{did_you_mean(col, own)} Point '{path[0]}' at a column "
                                   f"of {table}, or map it: 'sources: {{{owner}: {{map: {{{col}: <column or "
                                   "formula>}}}'.".lstrip())
        times = [("time", source.time, ("time",)), ("time_end", source.time_end, ("time_end",))]
        times += [("time_axes", axis, ("time_axes", i)) for i, axis in enumerate(source.time_axes)]
        for field_, col, path in times:
            if col and described.get(col) not in (DATE, TIMESTAMP, UNKNOWN, NULL, None) \
                    and _first(reported, source, f"time:{col}"):
                yield ResolveError(f"{field_.replace('_', ' ')} column '{col}' is a {described[col]}, not a date or "
                                   "timestamp.", source.where(*path),
                                   f"Point '{field_}' at a DATE or TIMESTAMP column, or map it to one (e.g. "
                                   f"'map: {{{col}: <a date column>}}'"
                                   + (f", or 'map: {{{col}: date({_text_of(source, col)})}}' for ISO dates "
                                      "stored as text" if described[col] == STRING else "")
                                   + "); for a CSV file, declare the column's "
                                   "type and date format in the warehouse's 'data' settings (docs/specs.md).")


def _text_of(source: SourceSpec, column: str) -> str:
    """What a column of a source reads: its map: formula's text, or the warehouse column itself."""
    mapped = source.column_map.get(column)
    return mapped.text.strip() if mapped is not None else column


def _first(reported: set[tuple[str, str]], source: SourceSpec, column: str) -> bool:
    """True the first time a column of a table is reported (contacts, leads and the views of contacts' time axes share theirs)."""
    key = (source.rows_of or source.name, column)
    if key in reported:
        return False
    reported.add(key)
    return True


def parse_source_sql(source: SourceSpec, dialect: str):
    """A ``sql:`` source parsed by sqlglot: exactly one SELECT, or a SpecError at its place."""
    import sqlglot
    from sqlglot import exp

    try:
        statements = sqlglot.parse(source.sql, read=dialect)
    except sqlglot.errors.ParseError as error:
        first = error.errors[0] if error.errors else {}
        detail = first.get("description", str(error).splitlines()[0])
        raise SpecError(f"the source's sql does not parse as {dialect} SQL: {detail}.", source.where("sql"),
                        "Write a single SELECT statement in the warehouse's dialect.") from None
    except sqlglot.errors.SqlglotError as error:
        raise SpecError(f"the source's sql cannot be read: {str(error).splitlines()[0]}.", source.where("sql"),
                        "Write a single SELECT statement in the warehouse's dialect.") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise SpecError("the source's sql must be exactly one SELECT statement.", source.where("sql"),
                        "Remove any other statement; a source only reads data.")
    return statements[0]


def references_first(roots: Iterable[str], references) -> tuple[list[str], list[list[str]]]:
    """Every name reachable from ``roots`` through ``references(name)``, each listed after the names
    it references, and every distinct reference cycle met (a path that starts and ends at the same
    name). Depth-first with an explicit stack: a chain of thousands of KPIs needs no recursion."""
    order: list[str] = []
    cycles: list[list[str]] = []
    seen_cycles: set[frozenset[str]] = set()
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    for root in roots:
        if root in state:
            continue
        path, pending = [root], [iter(references(root))]
        state[root] = 1
        while path:
            for ref in pending[-1]:
                if state.get(ref) == 1:
                    cycle = path[path.index(ref):] + [ref]
                    if frozenset(cycle) not in seen_cycles:
                        seen_cycles.add(frozenset(cycle))
                        cycles.append(cycle)
                elif ref not in state:
                    state[ref] = 1
                    path.append(ref)
                    pending.append(iter(references(ref)))
                    break
            else:  # every reference of path[-1] is done
                pending.pop()
                name = path.pop()
                state[name] = 2
                order.append(name)
    return order, cycles


def resolve_formula(model: Model, text: str, mode: str = "kpi", label: str = "formula") -> tuple[n.Node, str]:
    """Resolve an ad-hoc formula (``--formula``), a ``--where`` or a ``--having`` condition.

    ``mode`` is "kpi" (names are KPIs), "dimension" (names are dimensions, no
    aggregates) or "having" (names are KPIs; the result must be a condition).
    """
    where = FormulaSource(obj=label)
    tree = parse(text, where)
    errors: list[KpiEngineError] = []
    scope = _Scope(model.sources, model.catalog, model.kpis, where, text, errors, model.functions,
                   resets=_resets(model.project))
    resolver = _Resolver(scope, mode)
    expr, result_type = resolver.resolve(tree)
    unmapped = sorted(source for source in resolver.sources_used if model.sources[source].unmapped)
    if unmapped:
        from .mapping import unmapped_error

        raise unmapped_error(model.project, unmapped, label)
    if not errors:
        ref_depths = {ref: model.kpi(ref).depth for ref in resolver.kpi_refs}
        depth = formula_depth(expr, ref_depths)
        if depth > MAX_EXPANDED_DEPTH:
            raise _expanded_too_deep(depth, ref_depths, where.locate(n.Pos()))
        ref_sizes = {ref: model.kpi(ref).size for ref in resolver.kpi_refs}
        size = formula_size(expr, ref_sizes)
        if size > MAX_EXPANDED_SIZE:
            raise _expanded_too_big(size, ref_sizes, where.locate(n.Pos()))
    if mode in ("dimension", "having") and result_type not in (BOOLEAN, UNKNOWN):
        scope.error(tree, f"the {label} must be a condition (true/false).",
                    "Write a comparison such as \"channel = 'email'\" or 'cost_per_lead > 100'.")
    if mode == "kpi" and result_type not in (NUMBER, UNKNOWN, NULL):
        scope.error(tree, f"the {label} must give a number, but this gives a {result_type}.",
                    "Aggregate or count it, e.g. 'count(source where condition)'.")
    if errors:
        raise errors[0] if len(errors) == 1 else ProjectInvalid(errors)
    return expr, result_type


def expand(model: Model, expr: n.Node, cache: dict[str, n.Node] | None = None) -> n.Node:
    """Inline every KPI reference, leaving a tree of aggregates, literals and functions. The KPIs
    are expanded references first, so each expansion finds the ones below it already done."""
    cache = {} if cache is None else cache

    def inline(node: n.Node) -> n.Node:
        return cache[node.name] if isinstance(node, n.KpiRef) else node

    direct = list(dict.fromkeys(node.name for node in expr.walk() if isinstance(node, n.KpiRef)))
    order, _ = references_first((name for name in direct if name not in cache),
                                lambda name: [] if name in cache else model.kpi(name).references)
    for name in order:
        if name not in cache:
            cache[name] = model.kpi(name).expr.map(inline)
    return expr.map(inline)


def aggregates_in(expr: n.Node) -> list[n.Aggregate]:
    # Kept on the nodes (see nodes.found_below): a compile asks several times for each formula,
    # and the model's expanded KPIs, which share their subtrees, serve every compile.
    return list(n.found_below(expr, n.Aggregate, "_aggregates"))
