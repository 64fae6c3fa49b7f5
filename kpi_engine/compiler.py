"""Resolved formulas -> one sqlglot SELECT per request.

Shape of every query (readable with ``kpi-engine compile``):

    WITH <source> AS (            -- one CTE per source, shared by every KPI asked for
      SELECT <time bucket> AS period, <dimensions>, <each aggregate once>
      FROM <table> [LEFT JOIN <related source for a dimension>] [LEFT JOIN <per-entity subquery>]
      WHERE <time range> AND <--where> GROUP BY <bucket>, <dimensions>
    ), keys AS (                  -- with several sources or --fill: every key any of them has
      SELECT period, <dimensions> FROM a UNION SELECT ... FROM b
    )
    SELECT keys.period, <dimensions>, <KPI formulas over the CTE columns>
    FROM keys LEFT JOIN a ON <keys match, null-safe> LEFT JOIN b ON ...
    WHERE <--having> ORDER BY ... LIMIT ...

Aggregating each source before joining is what keeps a cross-source ratio such as
``sum(ad_spend.spend) / count(leads)`` free of join fan-out. Time functions
(previous, cumulative, rolling, share) add two CTEs: ``series`` (the joined grouped
rows) and ``windowed`` (window functions over that series), and the requested range
is applied after the windows, so the first period can see the ones before it.
Everything is built as sqlglot nodes: identifiers are quoted, values are literals.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import sqlglot
from sqlglot import exp

from . import nodes as n
from .calendar import GRAINS, cast
from .errors import Location, QueryError, did_you_mean
from .resolve import (TIMESTAMP, DimensionPath, Model, aggregates_in, dimension_paths, expand, parse_source_sql,
                      resolve_formula)
from .spec import SourceSpec
from .adhoc import named_formulas, unit_of
from .values import counts_whole

PERIOD = "period"
KEYS_CTE, SPINE_CTE, SERIES_CTE, WINDOWED_CTE = "keys", "spine", "series", "windowed"
PERIOD_INDEX = "period_index"
ZERO_WHEN_EMPTY = {"count", "count_distinct", "sum"}  # no rows means 0, not null
SNAPSHOTS = {"last", "first"}  # no snapshot in the period means null; no rows at the snapshot 0
_REGROUPABLE = {"count", "sum", "min", "max", "last", "first"}  # day totals add up to period totals
MAX_FILL_PERIODS = 100_000
# Columns an interval source's rows gain when spread over the periods they overlap (interval_rows).
INTERVAL_DAY, ACTIVE_AT_END, ACTIVE_AT_START = "__kpi_period_day", "__kpi_active_at_end", "__kpi_active_at_start"


@dataclass(frozen=True)
class Request:
    """What to compute. Names refer to the project's KPIs and dimensions."""

    kpis: tuple[str, ...] = ()
    formulas: tuple[str, ...] = ()  # ad-hoc formulas, 'name=formula' or output as formula, formula_2, ...
    dimensions: tuple[str, ...] = ()
    grain: str | None = None
    start: dt.date | None = None  # inclusive
    end: dt.date | None = None  # exclusive
    where: str | None = None
    having: str | None = None
    order_by: tuple[str, ...] = ()  # output column names; prefix '-' for descending
    limit: int | None = None
    fill: bool = False  # a dense series: every period of the range for every dimension value
    as_of: dt.date | None = None  # "today" (the end of open intervals); None: today in the project's zone


@dataclass(frozen=True)
class OutputColumn:
    name: str
    role: str  # "time", "dimension", "kpi" or "flag"
    unit: str | None = None
    label: str | None = None
    format: str | None = None  # the KPI's display format spec
    whole: bool = False  # a KPI that counts whole things: its whole values are written as integers (values.py)


# Added to every evaluated row by the engine: is the row's period complete (completeness.py)?
COMPLETE_COLUMN = OutputColumn("complete", "flag", None, "whether the period is complete")


# Dialects whose rendering by sqlglot does not change what the tree says (others, such as
# Snowflake, BigQuery and T-SQL, rewrite FILTER clauses in the tree while rendering it).
_RENDERED_IN_PLACE = frozenset({"duckdb", "postgres", "spark", "databricks", "trino", "redshift", "mysql",
                                "oracle", "clickhouse"})


@dataclass(frozen=True)
class CompiledQuery:
    expression: exp.Select
    columns: tuple[OutputColumn, ...]
    dialect: str
    sources: tuple[str, ...] = field(default=())
    _texts: dict[bool, str] = field(default_factory=dict, compare=False, repr=False)

    def sql(self, pretty: bool = True) -> str:
        """The query as text. sqlglot refuses (instead of silently degrading) what the dialect
        cannot express; that becomes a QueryError naming the dialect.

        In the dialects of ``_RENDERED_IN_PLACE`` the tree is rendered without sqlglot's
        defensive deep copy (a fifth of the time of compiling a KPI): the compiler built it for
        this query alone, and sqlglot's preparation for those dialects leaves a tree that
        renders the same again when an adapter runs it (tests/test_dialects.py checks it). The
        text is kept for later calls."""
        from .parser import _deep_recursion

        if pretty in self._texts:
            return self._texts[pretty]
        try:
            with _deep_recursion():
                self._texts[pretty] = self.expression.sql(
                    dialect=self.dialect, pretty=pretty, copy=self.dialect not in _RENDERED_IN_PLACE,
                    unsupported_level=sqlglot.ErrorLevel.RAISE)
                return self._texts[pretty]
        except RecursionError:
            raise QueryError("the query is too deeply nested to write out.", None,
                             "Split long formulas into KPIs that reference each other.") from None
        except sqlglot.errors.UnsupportedError as error:
            reason = (str(error).strip().splitlines() or ["an unsupported construct"])[0].rstrip(".")
            raise QueryError(f"the query cannot be written in the {self.dialect} dialect: {reason}.", None,
                             "Drop the option that needs it (e.g. --fill), or install an adapter plugin for "
                             "this warehouse that rewrites it.") from None


def check_dialect(dialect: str) -> str:
    from sqlglot.dialects.dialect import Dialect

    try:
        Dialect.get_or_raise(dialect)
    except ValueError:
        from sqlglot.dialects import DIALECTS

        known = [d.lower() for d in DIALECTS]
        raise QueryError(f"unknown SQL dialect '{dialect}'.", None, did_you_mean(dialect.lower(), known)) from None
    return dialect


# --- small builders ------------------------------------------------------------------


def _ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def _col(name: str, table: str | None = None) -> exp.Column:
    return exp.Column(this=_ident(name), table=_ident(table) if table else None)


def _table_ref(name: str) -> exp.Table:
    return exp.Table(this=_ident(name))


def _left_join(query: exp.Select, relation: exp.Expression, on: exp.Expression) -> None:
    """Add a LEFT JOIN in place. (Select.join parses its join_type text on every call.)"""
    query.append("joins", exp.Join(this=relation, side="LEFT", on=on))


def _number(value) -> exp.Expression:
    return exp.Literal.number(str(value))


def _wrap(expression: exp.Expression) -> exp.Expression:
    """Parenthesise operands that are themselves operations: sqlglot renders trees as built."""
    composite = (exp.Binary, exp.Not, exp.Neg, exp.Between, exp.In, exp.Case)
    return exp.Paren(this=expression) if isinstance(expression, composite) else expression


def _date(value: dt.date) -> exp.Expression:
    return cast(exp.Literal.string(value.isoformat()), "DATE")


def _bound(value: dt.date, is_date_column: bool) -> exp.Expression:
    if is_date_column:
        return _date(value)
    return cast(exp.Literal.string(f"{value.isoformat()} 00:00:00"), "TIMESTAMP")


def _values(rows: list[tuple[exp.Expression, ...]], alias: str, columns: Sequence[str]) -> exp.Values:
    """VALUES (...), (...) AS alias(columns), every name quoted as the references to it are."""
    return exp.Values(expressions=[exp.Tuple(expressions=list(row)) for row in rows],
                      alias=exp.TableAlias(this=_ident(alias), columns=[_ident(c) for c in columns]))


def _literal(node: n.Node) -> exp.Expression:
    if isinstance(node, n.NumberLit):
        return _number(node.value)
    if isinstance(node, n.StringLit):
        return exp.Literal.string(node.value)
    if isinstance(node, n.BoolLit):
        return exp.Boolean(this=node.value)
    return exp.Null()


def source_relation(source: SourceSpec, read_dialect: str, alias: str | None = None) -> exp.Expression:
    """The FROM item of a source: its table, or its ``sql:`` parsed into a subquery.

    A ``sql:`` source is parsed with sqlglot in the warehouse's dialect and must be
    one SELECT; it is re-rendered from the tree like everything else.
    """
    if source.sql:
        query = [parse_source_sql(source, read_dialect)]
        return exp.Subquery(this=query[0], alias=exp.TableAlias(this=_ident(alias or source.name)))
    parts = source.table.split(".")
    table = exp.Table(this=_ident(parts[-1]),
                      db=_ident(parts[-2]) if len(parts) > 1 else None,
                      catalog=_ident(parts[-3]) if len(parts) > 2 else None)
    return exp.alias_(table, _ident(alias or source.name), table=True, copy=False)


# --- formula nodes -> sqlglot ------------------------------------------------------------


@dataclass(frozen=True)
class WindowLeaf(n.Node):
    """An aggregate's value taken over the time series: what a TimeOp becomes per aggregate.

    kind: previous (N periods back), cumulative (running total), rolling (last N
    periods) or total (across the dimension values of the period, for share()).
    """

    kind: str
    agg: n.Aggregate
    periods: int | None = None
    reset: str | None = None


def _compile_common(node: n.Node, recurse, function=None) -> exp.Expression:
    """Operators, literals and functions: the same at row level and at KPI level.
    ``function(name, args)`` compiles function calls (built-in or from a plugin)."""
    if isinstance(node, (n.NumberLit, n.StringLit, n.BoolLit, n.NullLit)):
        return _literal(node)
    if isinstance(node, n.Unary):
        operand = recurse(node.operand)
        return exp.Not(this=_wrap(operand)) if node.op == "not" else exp.Neg(this=_wrap(operand))
    if isinstance(node, n.Binary):
        left, right = _wrap(recurse(node.left)), _wrap(recurse(node.right))
        if node.op == "/":
            # Division by zero is null, never an error; typed=False keeps it a true division.
            return exp.Div(this=left, expression=exp.Nullif(this=right, expression=_number(0)), typed=False, safe=False)
        if node.op == "%":
            return exp.Mod(this=left, expression=exp.Nullif(this=right, expression=_number(0)))
        cls = {"+": exp.Add, "-": exp.Sub, "*": exp.Mul}[node.op]
        return cls(this=left, expression=right)
    if isinstance(node, n.Compare):
        cls = {"=": exp.EQ, "!=": exp.NEQ, "<": exp.LT, "<=": exp.LTE, ">": exp.GT, ">=": exp.GTE}[node.op]
        return cls(this=_wrap(recurse(node.left)), expression=_wrap(recurse(node.right)))
    if isinstance(node, n.Logical):
        cls = exp.And if node.op == "and" else exp.Or
        return cls(this=_wrap(recurse(node.left)), expression=_wrap(recurse(node.right)))
    if isinstance(node, n.InList):
        result = exp.In(this=_wrap(recurse(node.operand)), expressions=[recurse(i) for i in node.items])
        return exp.Not(this=result) if node.negated else result
    if isinstance(node, n.Between):
        result = exp.Between(this=_wrap(recurse(node.operand)), low=recurse(node.low), high=recurse(node.high))
        return exp.Not(this=result) if node.negated else result
    if isinstance(node, n.IsNull):
        # x IS NOT NULL, not NOT (x IS NULL): engines push the former down into their scans.
        null = exp.Not(this=exp.Null()) if node.negated else exp.Null()
        return exp.Is(this=_wrap(recurse(node.operand)), expression=null)
    if isinstance(node, n.Function):
        return (function or _function)(node.name, [recurse(a) for a in node.args])
    raise AssertionError(f"cannot compile {node!r} here")  # pragma: no cover


def _function(name: str, args: list[exp.Expression]) -> exp.Expression:
    if name == "if":
        return exp.If(this=args[0], true=args[1], false=args[2])
    if name == "coalesce":
        return exp.Coalesce(this=args[0], expressions=args[1:])
    if name == "nullif":
        return exp.Nullif(this=args[0], expression=args[1])
    if name == "abs":
        return exp.Abs(this=args[0])
    if name == "round":
        return exp.Round(this=args[0], decimals=args[1] if len(args) > 1 else None)
    if name in ("least", "greatest"):
        return _null_if_any_null(args, exp.Least if name == "least" else exp.Greatest)
    if name == "days_between":
        # Whole calendar days from the first to the second, the same on every engine.
        return exp.DateDiff(this=cast(args[1], "DATE"), expression=cast(args[0], "DATE"), unit=exp.var("DAY"))
    raise AssertionError(f"function {name} has no compiler")  # pragma: no cover


# Dialects whose SQL has the standard FILTER clause (or that sqlglot rewrites into
# their own conditional aggregates); DuckDB in particular evaluates it faster than
# an aggregate over CASE. The others get the portable CASE form.
_FILTER_DIALECTS = frozenset({"duckdb", "postgres", "sqlite", "spark", "databricks", "trino", "presto",
                              "athena", "snowflake", "bigquery", "tsql"})


def _null_if_any_null(args: list[exp.Expression], cls: type[exp.Func]) -> exp.Expression:
    """least()/greatest() are null when an argument is null, on every warehouse: PostgreSQL,
    Spark and BigQuery skip nulls, Snowflake, MySQL and Oracle do not, so the guard is written
    out and the function inside told it never sees a null."""
    call = cls(this=args[0], expressions=args[1:], ignore_nulls=True)
    values = [arg for arg in args if not isinstance(arg, exp.Literal)]  # a literal is never null
    if len(args) == 1 or not values:
        return call
    any_null = exp.or_(*[exp.Is(this=_wrap(value.copy()), expression=exp.Null()) for value in values], copy=False)
    return exp.Case(ifs=[exp.If(this=any_null, true=exp.Null())], default=call)


def _not_null(value: exp.Expression) -> exp.Expression:
    return exp.Is(this=value, expression=exp.Not(this=exp.Null()))


def _at_snapshot(snapshot: str) -> exp.Expression:
    """True on the rows (or days) joined to their period's snapshot time, and on the keys whose
    period has one when the snapshot times are joined by period (see snapshot_times)."""
    return _not_null(_col("snapshot_time", snapshot))


def _keys_match(keys: Sequence[str], left: str, right: str) -> exp.Expression:
    """Null-safe equality of the key columns of two relations."""
    return exp.and_(*[exp.NullSafeEQ(this=_col(k, left), expression=_col(k, right)) for k in keys], copy=False)


def _existence_test(node: n.Node) -> tuple[n.EntityLookup, bool] | None:
    """``count(x per key) > 0`` (or ``>= 1``, ``!= 0``) asks whether the key has a row at all,
    ``= 0`` (or ``< 1``, ``<= 0``) whether it has none: (the lookup, True/False) for those,
    None for other conditions. A join to the distinct keys answers them without counting."""
    if not (isinstance(node, n.Compare) and isinstance(node.left, n.EntityLookup)
            and node.left.func in ("count", "count_distinct") and isinstance(node.right, n.NumberLit)):
        return None
    test = (node.op, node.right.value)
    if test in ((">", 0), (">=", 1), ("!=", 0)):
        return node.left, True
    if test in (("=", 0), ("<", 1), ("<=", 0)):
        return node.left, False
    return None


def _aggregate_sql(func: str, arg: exp.Expression | None, where: exp.Expression | None,
                   dialect: str) -> exp.Expression:
    """COUNT/SUM/... of ``arg`` over the rows where ``where`` holds."""
    case_when = where is not None and dialect not in _FILTER_DIALECTS
    value: exp.Expression = arg if arg is not None else (_number(1) if case_when else exp.Star())
    if case_when:
        value = exp.Case(ifs=[exp.If(this=where, true=value)])
    if func == "count":
        result: exp.Expression = exp.Count(this=value)
    elif func == "count_distinct":
        result = exp.Count(this=exp.Distinct(expressions=[value]))
    else:
        result = {"sum": exp.Sum, "avg": exp.Avg, "min": exp.Min, "max": exp.Max}[func](this=value)
    if where is not None and not case_when:
        result = exp.Filter(this=result, expression=exp.Where(this=where))
    return result


# --- time functions -> window leaves ------------------------------------------------------


def _lower_time_ops(expr: n.Node, grain: str | None) -> n.Node:
    """Push previous/cumulative/rolling/share down to the aggregates they are built from.

    cumulative(a / b) is cumulative(a) / cumulative(b): a ratio is accumulated as its
    numerator and denominator, never as the ratio. avg is split into sum / count for
    the same reason.
    """

    def lower(node: n.Node) -> n.Node:
        if not isinstance(node, n.TimeOp):
            return node
        if node.func in ("previous", "rolling") and grain is None:
            raise QueryError(f"{node.func}() needs a time grain.", None,
                             "Add --grain (day, week, month, quarter, year, ...).")
        if node.func == "share":
            return n.Binary("/", node.operand, _leaves(node.operand, "total", None, None), pos=node.pos)
        return _leaves(node.operand, node.func, node.periods, node.reset)

    return expr.map(lower)


def _lower_for(name: str, expr: n.Node, grain: str | None) -> n.Node:
    """``_lower_time_ops`` for one output column; its errors name the KPI."""
    try:
        return _lower_time_ops(expr, grain)
    except QueryError as error:
        raise QueryError(error.message, error.location or Location(obj=f"kpi '{name}'"), error.hint) from None


def _leaves(operand: n.Node, kind: str, periods: int | None, reset: str | None) -> n.Node:
    def leaf(node: n.Node) -> n.Node:
        if not isinstance(node, n.Aggregate):
            return node
        if node.func == "avg" and kind != "previous":
            total = n.Aggregate("sum", node.source, node.arg, node.where, pos=node.pos)
            count = n.Aggregate("count", node.source, node.arg, node.where, pos=node.pos)
            return n.Binary("/", WindowLeaf(kind, total, periods, reset), WindowLeaf(kind, count, periods, reset))
        if kind != "previous" and node.func == "count_distinct":
            raise QueryError(f"count_distinct cannot be added up across {_across(kind)}.", None,
                             "Distinct counts of separate periods or groups overlap; count distinct over the whole "
                             "range instead (drop --grain or the time function).")
        if kind in ("cumulative", "rolling") and node.func in ("last", "first"):
            raise QueryError(f"{node.func}() takes a snapshot; snapshots cannot be added up across periods.", None,
                             f"Use previous() on a snapshot, or {kind}() on a flow such as a count or a sum.")
        return WindowLeaf(kind, node, periods, reset)

    return operand.map(leaf)


def _across(kind: str) -> str:
    return "dimension values" if kind == "total" else "periods"


# --- the query ------------------------------------------------------------------------


# Names derived from a source's CTE name; none may be a table's name (see cte_names).
_CTE_SUFFIXES = ("", "_days", "_last", "_first", "_history", "_values")


@dataclass
class _SourcePlan:
    source: SourceSpec
    aggregates: dict[n.Aggregate, str] = field(default_factory=dict)  # aggregate -> CTE column

    def column_for(self, agg: n.Aggregate) -> str:
        """A readable, unique CTE column name such as count, sum_amount or count_where_customer_at."""
        if agg not in self.aggregates:
            parts = [agg.func]
            if isinstance(agg.arg, n.Column):
                parts.append(agg.arg.name)
            if agg.where is not None:
                first = next((c.name for c in agg.where.walk() if isinstance(c, n.Column)), "filter")
                parts += ["where", first]
            base = "_".join(parts)
            name, i = base, 2
            while name in self.aggregates.values() or name in (PERIOD, PERIOD_INDEX) or self.source.dimension(name):
                name, i = f"{base}_{i}", i + 1
            self.aggregates[agg] = name
        return self.aggregates[agg]

    @property
    def snapshots(self) -> bool:
        return any(agg.func in ("last", "first") for agg in self.aggregates)


@dataclass(frozen=True)
class _Read:
    """One grouping of a source's rows: its CTE name, what it aggregates, and the first day read
    (the requested range, or the longer one of the windows)."""

    name: str
    plan: _SourcePlan
    start: dt.date | None

    def snapshot_cte(self, agg: n.Aggregate) -> str | None:
        """The CTE of the snapshot times a last()/first() aggregate is taken at (one per kind)."""
        return f"{self.name}_{agg.func}" if agg.func in SNAPSHOTS else None

    def snapshots(self) -> dict[str, n.Aggregate]:
        return {self.snapshot_cte(agg): agg for agg in self.plan.aggregates if agg.func in SNAPSHOTS}

    def snapshot_ctes(self) -> list[str]:
        return list(self.snapshots())


class IntervalStartNeeded(QueryError):
    """An interval source is read from the start of its data, which the compiler does not know:
    the caller finds it (``extent_query``) and compiles again with ``spans``."""

    def __init__(self, sources: Sequence[str]):
        self.sources = tuple(sources)
        super().__init__(f"interval source {', '.join(repr(s) for s in self.sources)} is read from the start of "
                         "its data, which is not known without asking the warehouse.", None,
                         "Give --from (and no time function that reads all history), or run the request through "
                         "a project connected to its warehouse.")


class _Compiler:
    def __init__(self, model: Model, request: Request, dialect: str, read_dialect: str,
                 spans: Mapping[str, dt.date] | None = None, today: dt.date | None = None):
        self.model = model
        self.request = request
        self.dialect = dialect
        self.read_dialect = read_dialect
        self.spans = spans or {}  # interval source -> the first day of its data
        self.calendar = model.project.config.calendar
        self.today = today or request.as_of or self.calendar.today()
        self.grain = request.grain
        self.dims = tuple(dict.fromkeys(request.dimensions))
        self.keys = ([PERIOD] if self.grain else []) + list(self.dims)

    def function(self, name: str, args: list[exp.Expression]) -> exp.Expression:
        plugin = self.model.functions.get(name)
        if plugin is None:
            return _function(name, args)
        result = plugin.compile(args, self.dialect)
        if not isinstance(result, exp.Expression):
            raise QueryError(f"the plugin function '{name}' returned {type(result).__name__}, not a sqlglot expression.",
                             None, "Fix the plugin: compile() must build its result from sqlglot nodes.")
        return result

    # -- checks
    def check_request(self) -> None:
        request = self.request
        if not request.kpis and not request.formulas:
            raise QueryError("nothing to compute.", None, "Name one or more KPIs, or pass --formula.")
        if request.grain is not None and request.grain not in GRAINS:
            raise QueryError(f"unknown time grain '{request.grain}'.", None,
                             f"Use one of: {', '.join(GRAINS)}. " + (did_you_mean(request.grain, GRAINS) or ""))
        if request.start and request.end and request.start >= request.end:
            raise QueryError(f"the time range is empty: --from {request.start} is not before --to {request.end}.",
                             None, "--from is inclusive and --to exclusive; pick a later --to.")
        if request.limit is not None and request.limit < 0:
            raise QueryError("--limit must be zero or more.", None, None)
        if request.fill and not (request.grain and request.start and request.end):
            raise QueryError("--fill needs --grain, --from and --to.", None,
                             "A dense series lists every period of a range: give the range and the grain.")

    def paths(self, source: str) -> dict[str, DimensionPath]:
        return dimension_paths(self.model.sources, source)

    def check_dimensions(self, plans: dict[str, _SourcePlan]) -> None:
        for dim in self.dims:
            if dim == PERIOD:
                raise QueryError("'period' is the time column; use --grain, not --by period.", None, None)
            missing = [name for name in plans if dim not in self.paths(name)]
            if missing:
                everywhere = self.model.dimensions_of(plans)
                anywhere = {d for name in plans for d in self.paths(name)}
                if len(missing) == len(plans) and dim not in anywhere:
                    hint = did_you_mean(dim, anywhere) or None
                else:
                    hint = (f"Dimensions available on every source of this request: {', '.join(everywhere) or 'none'}. "
                            f"Or declare '{dim}' on {', '.join(missing)} (or a relationship to a source that has it).")
                raise QueryError(f"cannot slice by '{dim}': sources {', '.join(sorted(missing))} do not have it.",
                                 None, hint)

    def check_filter_dimension(self, plans: dict[str, _SourcePlan], name: n.Name) -> None:
        dim = name.dotted
        if len(name.parts) != 1 or any(dim not in self.paths(source) for source in plans):
            everywhere = self.model.dimensions_of(plans)
            raise QueryError(f"--where uses '{dim}', which is not a dimension of every source read "
                             f"({', '.join(plans)}).", Location(obj="--where filter"),
                             (did_you_mean(dim, everywhere) or "") + f" Filterable dimensions: {', '.join(everywhere) or 'none'}.")

    # -- main
    def compile(self) -> CompiledQuery:
        self.check_request()
        model, request = self.model, self.request
        cache: dict[str, n.Node] = {}
        outputs: list[tuple[OutputColumn, n.Node]] = []
        fill_values: dict[str, float] = {}  # KPI -> fill_nulls_with
        for name in dict.fromkeys(request.kpis):
            kpi = model.kpi(name)
            column = OutputColumn(name, "kpi", kpi.spec.unit, kpi.spec.label, kpi.spec.format,
                                  counts_whole(model, kpi.expr, kpi.spec.unit))
            outputs.append((column, expand(model, kpi.expr, cache)))
            if kpi.spec.fill_nulls_with is not None:
                fill_values[name] = kpi.spec.fill_nulls_with
        for name, text, label in named_formulas(model, request.formulas):
            expr, _ = resolve_formula(model, text, "kpi", label)
            unit, number_format = unit_of(model, expr)
            column = OutputColumn(name, "kpi", unit, text, number_format, counts_whole(model, expr, unit))
            outputs.append((column, expand(model, expr, cache)))
        having = None
        if request.having:
            having_expr, _ = resolve_formula(model, request.having, "having", "--having condition")
            having = expand(model, having_expr, cache)

        # --order by a KPI not asked for: computed for the ORDER BY alone, never output.
        shown = set(self.keys) | {column.name for column, _ in outputs}
        hidden = {name: expand(model, model.kpi(name).expr, cache) for name in
                  dict.fromkeys(item.lstrip("-+") for item in request.order_by) if name not in shown and name in model.kpis}
        fill_values.update({name: model.kpis[name].spec.fill_nulls_with for name in hidden
                            if model.kpis[name].spec.fill_nulls_with is not None})

        outputs = [(column, _lower_for(column.name, expr, self.grain)) for column, expr in outputs]
        hidden = {name: _lower_for(name, expr, self.grain) for name, expr in hidden.items()}
        having = _lower_time_ops(having, self.grain) if having is not None else None
        expressions = [expr for _, expr in outputs] + ([having] if having is not None else []) + list(hidden.values())
        leaves = list(dict.fromkeys(node for expr in expressions for node in expr.walk() if isinstance(node, WindowLeaf)))

        plans: dict[str, _SourcePlan] = {}
        for expr in expressions:
            for agg in aggregates_in(expr):
                plans.setdefault(agg.source, _SourcePlan(model.sources[agg.source])).column_for(agg)
        if not plans:
            raise QueryError("the request reads no source: every formula is a constant.", None,
                             "Use at least one aggregate such as 'count(leads)'.")
        self.check_dimensions(plans)
        time_needed = self.grain is not None or request.start is not None or request.end is not None
        for plan in plans.values():
            if (time_needed or plan.snapshots) and not plan.source.time:
                raise QueryError(f"source '{plan.source.name}' has no time column, so it cannot be cut by time.",
                                 plan.source.where(key=True),
                                 "Declare 'time: <column>' on the source, or drop --grain/--from/--to "
                                 "(and last()/first(), which need a time).")
        where = None
        if request.where:
            where, _ = resolve_formula(model, request.where, "dimension", "--where filter")
            for name in (node for node in where.walk() if isinstance(node, n.Name)):
                self.check_filter_dimension(plans, name)

        # Time functions read earlier periods than --from. When --from falls inside a period, the
        # plain aggregates still count from --from and only the windows read the whole periods
        # before it, so the sources they read are grouped a second time over the longer range.
        history_start = self.widened_start(leaves)
        history_leaves = [leaf for leaf in leaves if leaf.kind != "total"]
        split = (bool(history_leaves) and history_start != request.start
                 and self.calendar.period_start(request.start, self.grain) != request.start)
        history: dict[str, _SourcePlan] = {}
        if split:
            for leaf in history_leaves:
                history.setdefault(leaf.agg.source, _SourcePlan(model.sources[leaf.agg.source])).column_for(leaf.agg)
        self.cte = self.cte_names(plans)
        ranges = {name: _Read(self.cte[name], plan, request.start if split else history_start)
                  for name, plan in plans.items()}
        histories = {name: _Read(f"{self.cte[name]}_history", plan, history_start) for name, plan in history.items()}

        kpi_sources = {name: {agg.source for agg in aggregates_in(expr)}
                       for name, expr in [(column.name, expr) for column, expr in outputs] + list(hidden.items())}
        widened = bool(history_leaves) and history_start != request.start
        masked, row_filter = self.row_sets(kpi_sources, set(plans), split, widened)
        self.marked = bool(masked) or row_filter
        reads = list(ranges.values()) + list(histories.values())
        rows_may_be_missing = len(reads) > 1 or request.fill or not self.keys or bool(leaves)

        ctes: list[tuple[str, exp.Expression]] = []
        for read in reads:
            ctes += self.source_ctes(read, where, marked=self.marked and read in ranges.values())
        key_table, body, key_ctes = self.join_sources([read.name for read in reads],
                                                      history_start if isinstance(history_start, dt.date) else request.start)
        ctes += key_ctes
        values_of = {}  # source -> relation holding its observed dimension values (under --fill)
        if request.fill and self.dims and self.marked:
            for name, read in ranges.items():
                values_of[name] = self.join_observed_values(body, read, self.first_period() if widened else None)
        snapshot_joined = set()
        if rows_may_be_missing:
            for read in reads:
                for snapshot in read.snapshot_ctes():
                    self.join_snapshot_periods(body, snapshot, key_table)
                    snapshot_joined.add(snapshot)

        columns = self.key_columns()
        for column, _ in outputs:
            if column.name in self.keys or column.name == COMPLETE_COLUMN.name:
                raise QueryError(f"KPI '{column.name}' has the same name as an output column "
                                 f"({', '.join(self.keys + [COMPLETE_COLUMN.name])}).", None,
                                 "Rename the KPI or the dimension.")
            columns.append(column)

        def value(read: _Read, agg: n.Aggregate) -> exp.Expression:
            """An aggregate at the current key, by the empty rule: no rows count 0 and sum 0, a period
            with no snapshot at all has no last()/first() value, other aggregates are null."""
            column = _col(read.plan.aggregates[agg], read.name)
            if agg.func in ZERO_WHEN_EMPTY or agg.func in SNAPSHOTS:
                column = exp.Coalesce(this=column, expressions=[_number(0)])
            snapshot = read.snapshot_cte(agg)
            if snapshot in snapshot_joined:
                column = exp.Case(ifs=[exp.If(this=_at_snapshot(snapshot), true=column)])
            return column

        def presence(source: str) -> exp.Expression:
            return _col(self.marker, values_of.get(source, ranges[source].name))

        if leaves:
            # series: the joined grouped rows; windowed: window functions over that series.
            series_columns = {agg: f"{agg.source}__{plans[agg.source].aggregates[agg]}"
                              for expr in expressions for agg in aggregates_in(expr)}
            history_columns = {leaf.agg: f"{series_columns[leaf.agg]}__history" for leaf in history_leaves
                               if leaf.agg.source in histories}
            presence_columns = {source: f"{source}__present" for source in plans} if self.marked else {}
            series_selects = [_col(k, key_table) for k in self.keys]
            if self.grain:
                index = self.calendar.period_index(_col(PERIOD, key_table), self.grain)
                series_selects.append(exp.alias_(index, _ident(PERIOD_INDEX), copy=False))
            series_selects += [exp.alias_(value(ranges[agg.source], agg), _ident(alias), copy=False)
                               for agg, alias in series_columns.items()]
            series_selects += [exp.alias_(value(histories[agg.source], agg), _ident(alias), copy=False)
                               for agg, alias in history_columns.items()]
            series_selects += [exp.alias_(presence(source), _ident(alias), copy=False)
                               for source, alias in presence_columns.items()]
            ctes.append((SERIES_CTE, body.select(*series_selects, copy=False)))
            leaf_columns = {leaf: f"{leaf.kind}_{series_columns[leaf.agg]}_{i + 1}" for i, leaf in enumerate(leaves)}
            windows = [exp.alias_(self.window(leaf, history_columns.get(leaf.agg, series_columns[leaf.agg])
                                              if leaf.kind != "total" else series_columns[leaf.agg]),
                                  _ident(alias), copy=False)
                       for leaf, alias in leaf_columns.items()]
            ctes.append((WINDOWED_CTE, exp.select(exp.Star(), *windows, copy=False).from_(_table_ref(SERIES_CTE), copy=False)))
            key_table, body = WINDOWED_CTE, exp.select(copy=False).from_(_table_ref(WINDOWED_CTE), copy=False)
            conditions = []
            if request.start and self.grain:
                # Earlier periods were read only for the windows; show the requested ones.
                conditions.append(exp.GTE(this=_col(PERIOD, WINDOWED_CTE), expression=_date(self.first_period())))
            if row_filter:  # keys of the longer range that no source has in the requested one
                conditions.append(exp.or_(*[_not_null(_col(alias, WINDOWED_CTE)) for alias in presence_columns.values()],
                                          copy=False))
            if conditions:
                body = body.where(exp.and_(*conditions, copy=False), copy=False)
            backs = {}
            for leaf in leaves:
                if leaf.kind == "previous" and leaf.agg.func in SNAPSHOTS:
                    read = histories.get(leaf.agg.source, ranges[leaf.agg.source])
                    backs[leaf] = self.join_snapshot_back(body, read.snapshot_cte(leaf.agg), leaf.periods)

            def window_value(leaf: WindowLeaf) -> exp.Expression:
                column = _col(leaf_columns[leaf], WINDOWED_CTE)
                if leaf in backs:  # no row N periods back: 0 if that period has a snapshot, else null
                    fallback = exp.Case(ifs=[exp.If(this=_at_snapshot(backs[leaf]), true=_number(0))])
                    return exp.Coalesce(this=column, expressions=[fallback])
                return column

            measure = _Measure(lambda agg: _col(series_columns[agg], WINDOWED_CTE), window_value, self.function)
            present_column = lambda source: _col(presence_columns[source], WINDOWED_CTE)  # noqa: E731
        else:
            measure = _Measure(lambda agg: value(ranges[agg.source], agg), None, self.function)
            present_column = presence

        def kpi_value(name: str, expr: n.Node) -> exp.Expression:
            result = measure(expr)
            if name in fill_values:
                result = exp.Coalesce(this=result, expressions=[_number(fill_values[name])])
            if name in masked:  # outside the KPI's own rows its cell is empty
                present = exp.or_(*[_not_null(present_column(s)) for s in sorted(kpi_sources[name])], copy=False)
                result = exp.Case(ifs=[exp.If(this=present, true=result)])
            return cast(result, "DOUBLE")

        selects = [exp.alias_(_col(k, key_table), _ident(k), copy=False) for k in self.keys]
        for column, expr in outputs:
            selects.append(exp.alias_(kpi_value(column.name, expr), _ident(column.name), copy=False))
        query = body.select(*selects, copy=False)
        if having is not None:
            query = query.where(measure(having), copy=False)
        # A source that only the --order KPIs read adds no rows: keep the rows of the others (a dense
        # series keeps its rows whatever the sources).
        others = {source for column, _ in outputs for source in kpi_sources[column.name]}
        others |= {agg.source for agg in aggregates_in(having)} if having is not None else set()
        if self.keys and not request.fill and others and set(plans) - others:
            query = query.where(exp.or_(*[_not_null(present_column(s)) for s in sorted(others)], copy=False), copy=False)
        query = self.order_and_limit(query, columns, {name: kpi_value(name, expr) for name, expr in hidden.items()})
        for name, cte in ctes:
            query = query.with_(_ident(name), as_=cte, copy=False)
        return CompiledQuery(query, tuple(columns), self.dialect, tuple(plans))

    def row_sets(self, kpi_sources: dict[str, set[str]], sources: set[str], split: bool,
                 widened: bool) -> tuple[set[str], bool]:
        """Which output columns must be blanked outside their own row set (docs/semantics.md), and
        whether rows that no source has in the requested range must be dropped.

        The keys are every source's rows: a KPI that reads only some sources is blanked where
        none of its own has a row. ``split``: the keys also hold the rows the windows read before
        --from, so every KPI is blanked there and those rows are dropped. Under --fill the dense
        rows are a KPI's own when its sources have those dimension values; ``widened`` (rows read
        for the windows only) must not bring dimension values in either."""
        fill, dims = self.request.fill, bool(self.dims)
        masked = set()
        for name, read in kpi_sources.items():
            if not self.keys or not read:
                continue  # one total row, or a constant: on every row
            if (dims and (widened or read != sources)) if fill else (split or read != sources):
                masked.add(name)
        return masked, (split and not fill) or (fill and dims and widened)

    def cte_names(self, plans: dict[str, _SourcePlan]) -> dict[str, str]:
        """<source>_agg for each source's CTE (and the CTEs named after it: day totals, snapshot
        times, the longer range of the windows), never the name of a table the query reads (a CTE
        would hide that table from the CTEs after it)."""
        tables = {source.table.rsplit(".", 1)[-1].lower() for source in self.model.sources.values() if source.table}
        names = {}
        for source in plans:
            name = f"{source}_agg"
            while ({f"{name}{suffix}{more}".lower() for suffix in _CTE_SUFFIXES for more in _CTE_SUFFIXES} & tables
                   or name in (KEYS_CTE, SERIES_CTE, WINDOWED_CTE)):
                name += "_"
            names[source] = name
        self.marker = "present"
        while self.marker in self.dims:
            self.marker += "_"
        return names

    def key_columns(self) -> list[OutputColumn]:
        columns = [OutputColumn(PERIOD, "time", None, self.grain)] if self.grain else []
        return columns + [OutputColumn(dim, "dimension") for dim in self.dims]

    def order_and_limit(self, query: exp.Select, columns: list[OutputColumn],
                        hidden: Mapping[str, exp.Expression] | None = None) -> exp.Select:
        """ORDER BY output columns, or (``hidden``) the values of KPIs that are not output."""
        names = [c.name for c in columns]
        hidden = hidden or {}
        terms = []
        for item in self.request.order_by or tuple(self.keys):
            desc = item.startswith("-")
            name = item.lstrip("-+")
            if name not in names and name not in hidden:
                raise QueryError(f"cannot order by '{name}': it is neither an output column nor a KPI of the project.",
                                 None, did_you_mean(name, names + list(self.model.kpis)) or None)
            terms.append(exp.Ordered(this=_col(name) if name in names else hidden[name], desc=desc, nulls_first=False))
        if terms:
            query = query.order_by(*terms, copy=False)
        if self.request.limit is not None:
            query = query.limit(self.request.limit, copy=False)
        return query

    # -- time range
    def first_period(self) -> dt.date:
        """The first period shown: the one --from falls in."""
        return self.calendar.period_start(self.request.start, self.grain)

    def widened_start(self, leaves: Sequence[WindowLeaf]) -> dt.date | None | bool:
        """The first day source rows are read from: earlier than --from when a time
        function needs earlier periods; None when it needs all history. (share() reads the
        requested range only.)"""
        start = self.request.start
        leaves = [leaf for leaf in leaves if leaf.kind != "total"]
        if start is None or not leaves:
            return start
        if not self.grain:  # only cumulative and share are allowed without a grain
            if any(leaf.kind == "cumulative" for leaf in leaves):
                raise QueryError("cumulative() without --grain cannot be combined with --from: the one total row "
                                 "cannot both start at --from and include earlier history.", None,
                                 "Add --grain (the last period then holds the running total), or drop --from.")
            return start
        first = self.calendar.period_start(start, self.grain)
        earliest = first
        for leaf in leaves:
            # An earlier period before year 1 holds no rows: then every row up to --to is read (None).
            if leaf.kind == "previous":
                before = self.calendar.try_shift(first, self.grain, -leaf.periods)
            elif leaf.kind == "rolling":
                before = self.calendar.try_shift(first, self.grain, -(leaf.periods - 1))
            elif leaf.kind == "cumulative":
                before = self.calendar.try_period_start(first, leaf.reset) if leaf.reset else None
            else:
                continue
            if before is None:
                return None
            earliest = min(earliest, before)
        return earliest

    # -- per-source CTEs
    def column(self, source: SourceSpec, name: str, table: str | None = None, local: bool = True) -> exp.Expression:
        """A column of a source: the warehouse column, or what the source's ``map:`` binds it to
        (a formula over the table's columns). Timestamps are seen in the project's time zone
        (unless ``local`` is False: keys and dimensions are compared as stored)."""
        table = table or source.name
        mapped = self.model.mapped(source.name, name)
        if mapped is None:
            return self.warehouse_column(source, name, table, local)

        def leaf(node: n.Node) -> exp.Expression:
            if isinstance(node, n.Column):
                return self.warehouse_column(source, node.name, table, local)
            return _compile_common(node, leaf, self.function)

        return _wrap(leaf(mapped))

    def warehouse_column(self, source: SourceSpec, name: str, table: str, local: bool = True) -> exp.Expression:
        column_type = self.model.warehouse.get(source.name, {}).get(name) or source.columns.get(name)
        return self.calendar.local_time(_col(name, table), local and column_type == TIMESTAMP)

    def row_formula(self, source: SourceSpec, node: n.Node, table: str | None = None) -> exp.Expression:
        """A formula over one row of a source (an entity lookup's value, a where: condition)."""
        if isinstance(node, n.Column):
            return self.column(source, node.name, table)
        return _compile_common(node, lambda child: self.row_formula(source, child, table), self.function)

    def relation(self, source: SourceSpec, alias: str | None = None) -> exp.Expression:
        """The FROM item of a source (``source_relation``), keeping only the rows its ``where:``
        conditions let through."""
        relation = source_relation(source, self.read_dialect, alias)
        condition = self.model.condition(source.name)
        if condition is None:
            return relation
        name = alias or source.name
        rows = exp.select(exp.Star(), copy=False).from_(relation, copy=False) \
            .where(self.row_formula(source, condition, name), copy=False)
        return exp.Subquery(this=rows, alias=exp.TableAlias(this=_ident(name)))

    def time_column(self, source: SourceSpec, name: str | None = None) -> tuple[exp.Expression, bool]:
        """The source's time column (or its column ``name``) in the project's time zone, and
        whether it is a DATE."""
        name = name or source.time
        return self.column(source, name), self.model.column_type(source.name, name) == "date"

    def day_of(self, source: SourceSpec, name: str) -> exp.Expression:
        """The local day of a date or timestamp column."""
        time, is_date = self.time_column(source, name)
        return time if is_date else cast(time, "DATE")

    def rows(self, source: SourceSpec, start: dt.date | None) -> tuple[exp.Expression, exp.Expression, bool]:
        """The FROM item a source is grouped from, from the day ``start`` on; its time column; and
        whether that is a DATE. An interval source's rows are spread over the periods first."""
        if source.time_end:
            return self.interval_rows(source, start), _col(INTERVAL_DAY, source.name), True
        time, is_date = self.time_column(source)
        return self.relation(source), time, is_date

    def interval_rows(self, source: SourceSpec, start: dt.date | None) -> exp.Expression:
        """An interval source's rows, one copy per period of the request that each overlaps (from
        ``start``, up to --to and never beyond today: an open row is active until now), as of the
        period's last day, with two flags: active at the end of that day (what last() reads) and
        at the end of the period's first day (first()). A row is active on the days from its
        ``time`` up to the day before its ``time_end``."""
        first = start or self.spans.get(source.name)
        if first is None:
            raise IntervalStartNeeded([source.name])
        end = self.today + dt.timedelta(days=1)
        end = min(end, self.request.end) if self.request.end else end
        spans = [(first, end - dt.timedelta(days=1))]
        if self.grain and first < end:
            periods = self.calendar.periods(first, end, self.grain)
            if len(periods) > MAX_FILL_PERIODS:
                raise QueryError(f"interval source '{source.name}' would be spread over {len(periods):,} periods; "
                                 f"the limit is {MAX_FILL_PERIODS:,}.", None, "Use a coarser --grain or a shorter range.")
            spans = [(max(p, first), min(self.calendar.shift(p, self.grain, 1), end) - dt.timedelta(days=1))
                     for p in periods]
        spine = _values([(_date(a), _date(b)) for a, b in spans], SPINE_CTE, ["first_day", "last_day"])
        starts, ends = self.day_of(source, source.time), self.day_of(source, source.time_end)
        first_day, last_day = _col("first_day", SPINE_CTE), _col("last_day", SPINE_CTE)

        def active_at(day: exp.Expression) -> exp.Expression:
            return exp.or_(exp.Is(this=ends.copy(), expression=exp.Null()), exp.GT(this=ends.copy(), expression=day),
                           copy=False)

        def flag(condition: exp.Expression) -> exp.Expression:
            return exp.Case(ifs=[exp.If(this=condition, true=_number(1))], default=_number(0))

        # Active on some day of the period: from a day on or before its last, to a day after its
        # first and after the row's own first (a row that starts and ends on one day never is).
        overlaps = exp.and_(exp.LTE(this=starts.copy(), expression=last_day.copy()), _wrap(active_at(first_day.copy())),
                            _wrap(active_at(starts.copy())), copy=False) if first < end else exp.false()
        spread = exp.select(exp.Column(this=exp.Star(), table=_ident(source.name)),
                            exp.alias_(last_day.copy(), _ident(INTERVAL_DAY), copy=False),
                            exp.alias_(flag(active_at(last_day.copy())), _ident(ACTIVE_AT_END), copy=False),
                            exp.alias_(flag(exp.and_(exp.LTE(this=starts.copy(), expression=first_day.copy()),
                                                     _wrap(active_at(first_day.copy())), copy=False)),
                                       _ident(ACTIVE_AT_START), copy=False), copy=False) \
            .from_(self.relation(source), copy=False)
        spread.append("joins", exp.Join(this=spine, on=overlaps))
        return exp.Subquery(this=spread, alias=exp.TableAlias(this=_ident(source.name)))

    def source_ctes(self, read: "_Read", where: n.Node | None, marked: bool) -> list[tuple[str, exp.Expression]]:
        """The CTEs that group one source's rows from ``read.start``: [its day totals], [the snapshot
        time of each period], then its rows grouped by key (with a presence marker when ``marked``)."""
        plan, start = read.plan, read.start
        source = plan.source
        name = source.name
        joins: dict[str, exp.Expression] = {}  # alias -> ON condition, in join order
        relations: dict[str, exp.Expression] = {}

        def dimension_column(dim: str) -> exp.Expression:
            path = self.paths(name)[dim]
            table, owner = name, source
            for _, rel in path.joins:
                alias = f"{table}__{rel.to}"
                target = self.model.sources[rel.to]
                if alias not in joins:
                    relations[alias] = self.relation(target, alias)
                    joins[alias] = exp.EQ(this=self.column(owner, rel.on, table, local=False),
                                          expression=self.column(target, rel.to_column or rel.on, alias, local=False))
                table, owner = alias, target
            return self.column(owner, path.dimension.column, table, local=False)

        lookups: dict[tuple[n.EntityLookup, bool], str] = {}  # (lookup, keys only) -> alias

        def lookup_join(lookup: n.EntityLookup, keys_only: bool) -> str:
            word = "with" if keys_only else "per"
            alias = lookups.setdefault((lookup, keys_only), f"{lookup.source}_{word}_{lookup.key}_{len(lookups) + 1}")
            if alias not in joins:
                relations[alias] = self.entity_subquery(lookup, alias, keys_only)
                joins[alias] = exp.EQ(this=self.column(source, lookup.key, local=False),
                                      expression=_col(lookup.key, alias))
            return alias

        def row_value(node: n.Node) -> exp.Expression:
            if isinstance(node, n.Column):
                return self.column(source, node.name)
            if isinstance(node, n.Name):  # a dimension in --where
                return dimension_column(node.dotted)
            existence = _existence_test(node)
            if existence is not None:
                lookup, present = existence
                key = _col(lookup.key, lookup_join(lookup, keys_only=True))
                return exp.Is(this=key, expression=exp.Not(this=exp.Null()) if present else exp.Null())
            if isinstance(node, n.EntityLookup):
                value = _col("value", lookup_join(node, keys_only=False))
                return exp.Coalesce(this=value, expressions=[_number(0)]) if node.func in ZERO_WHEN_EMPTY else value
            return _compile_common(node, row_value, self.function)

        rows, time, is_date = self.rows(source, start) if source.time else (self.relation(source), None, False)
        # Rows have few distinct days: grouping them by day first and cutting the days into
        # periods afterwards truncates (and marks snapshots on) a few thousand day rows instead
        # of every row. Only aggregates that add up across days allow it, and a TIMESTAMP source
        # only without snapshots (taken at an exact time, not on a day). Its day is the local one.
        by_day = (self.grain not in (None, "day") and all(agg.func in _REGROUPABLE for agg in plan.aggregates)
                  and (is_date or not plan.snapshots))
        days = f"{read.name}_days"
        ctes: list[tuple[str, exp.Expression]] = []
        if not by_day:  # (grouped by day, the snapshot days are marked in days_to_periods)
            for snapshot, agg in read.snapshots().items():
                ctes.append((snapshot, self.snapshot_times(agg, start)))
                joins[snapshot] = exp.EQ(this=time.copy(), expression=_col("snapshot_time", snapshot))
                relations[snapshot] = _table_ref(snapshot)
        selects: list[exp.Expression] = []
        group: list[exp.Expression] = []
        if self.grain:
            if by_day:
                bucket = time.copy() if is_date else cast(time.copy(), "DATE")
            else:
                bucket = self.calendar.bucket(time, self.grain, self.dialect, is_date)
            selects.append(exp.alias_(bucket, _ident(PERIOD), copy=False))
            group.append(bucket.copy())
        for dim in self.dims:
            column = dimension_column(dim)
            selects.append(exp.alias_(column, _ident(dim), copy=False))
            group.append(column.copy())
        for agg, alias in plan.aggregates.items():
            selects.append(exp.alias_(self.aggregate(agg, read, row_value, at_snapshot=not by_day), _ident(alias),
                                      copy=False))
        if marked and not by_day:
            selects.append(exp.alias_(_number(1), _ident(self.marker), copy=False))

        conditions = self.range_conditions(time, is_date, start) if source.time else []
        if where is not None:  # before the joins are added: a --where dimension may need one of its own
            conditions.append(_wrap(row_value(where)))
        query = exp.select(*selects, copy=False).from_(rows, copy=False)
        for alias, condition in joins.items():
            _left_join(query, relations[alias], condition)
        if conditions:
            query = query.where(exp.and_(*conditions, copy=False), copy=False)
        if group:
            query = query.group_by(*group, copy=False)
        if not by_day:
            return ctes + [(read.name, query)]
        # Without --where the day totals see every row in range, so the snapshot days can be
        # read off them and the source is scanned once; with it they need a scan of their own.
        ctes.append((days, query))
        for snapshot, agg in read.snapshots().items():
            ctes.append((snapshot, self.snapshot_times(agg, start, days if where is None else None)))
        return ctes + [(read.name, self.days_to_periods(read, days, marked))]

    def range_conditions(self, time: exp.Expression, is_date: bool, start: dt.date | None) -> list[exp.Expression]:
        """A row belongs to the period of its time; a row without one belongs to none."""
        conditions: list[exp.Expression] = [exp.Is(this=time.copy(), expression=exp.Not(this=exp.Null()))]
        if start:
            conditions.append(exp.GTE(this=time.copy(), expression=_bound(start, is_date)))
        if self.request.end:
            conditions.append(exp.LT(this=time.copy(), expression=_bound(self.request.end, is_date)))
        return conditions

    def days_to_periods(self, read: "_Read", days: str, marked: bool) -> exp.Select:
        """Second stage of a source grouped by day: cut the days into periods and add up the
        day totals; snapshot aggregates keep the days that are their period's snapshot."""
        bucket = self.calendar.bucket(_col(PERIOD, days), self.grain, self.dialect, is_date=True)
        selects = [exp.alias_(bucket, _ident(PERIOD), copy=False)]
        group = [bucket.copy()]
        for dim in self.dims:
            selects.append(exp.alias_(_col(dim, days), _ident(dim), copy=False))
            group.append(_col(dim, days))
        for agg, alias in read.plan.aggregates.items():
            day_total = _col(alias, days)
            if agg.func in SNAPSHOTS:
                value = _aggregate_sql("sum", day_total, _at_snapshot(read.snapshot_cte(agg)), self.dialect)
                if agg.arg is None:  # a count of no rows is 0, a sum of none is NULL
                    value = exp.Coalesce(this=value, expressions=[_number(0)])
            else:
                value = {"min": exp.Min, "max": exp.Max}.get(agg.func, exp.Sum)(this=day_total)
            selects.append(exp.alias_(value, _ident(alias), copy=False))
        if marked:
            selects.append(exp.alias_(_number(1), _ident(self.marker), copy=False))
        query = exp.select(*selects, copy=False).from_(_table_ref(days), copy=False)
        for snapshot in read.snapshots():
            _left_join(query, _table_ref(snapshot), exp.EQ(this=_col(PERIOD, days), expression=_col("snapshot_time", snapshot)))
        return query.group_by(*group, copy=False)

    def aggregate(self, agg: n.Aggregate, read: "_Read", row_value: Callable[[n.Node], exp.Expression],
                  at_snapshot: bool = True) -> exp.Expression:
        """The aggregate over a source's rows. With ``at_snapshot=False`` a snapshot aggregate
        covers every row (days_to_periods keeps the snapshot days later)."""
        arg = row_value(agg.arg) if agg.arg is not None else None
        where = row_value(agg.where) if agg.where is not None else None
        if agg.func in SNAPSHOTS and read.plan.source.time_end:  # the rows active at the period's end (start)
            active = exp.EQ(this=_col(ACTIVE_AT_END if agg.func == "last" else ACTIVE_AT_START, read.plan.source.name),
                            expression=_number(1))
            where = active if where is None else exp.and_(active, _wrap(where), copy=False)
        if agg.func in SNAPSHOTS and not at_snapshot:
            return _aggregate_sql("sum" if arg is not None else "count", arg, where, self.dialect)
        if agg.func in SNAPSHOTS:
            # Semi-additive: only rows of the period's last (first) snapshot count, summed across entities.
            marked = _at_snapshot(read.snapshot_cte(agg))
            where = marked if where is None else exp.and_(marked, _wrap(where), copy=False)
            return _aggregate_sql("sum" if arg is not None else "count", arg, where, self.dialect)
        return _aggregate_sql(agg.func, arg, where, self.dialect)

    def snapshot_times(self, agg: n.Aggregate, start: dt.date | None, days: str | None = None) -> exp.Select:
        """The period and the last (first) snapshot time of each period with rows, over all the
        source's rows in range: SELECT period, MAX(time) ... GROUP BY period. Joined to the rows on
        the time column itself (a cheap hash join, never a fan-out), it marks the rows at the
        snapshot; joined to the keys on the period, it tells a period without any snapshot.
        ``days`` names a CTE of the source's day totals (days_to_periods) to read them off."""
        pick = exp.Max if agg.func == "last" else exp.Min

        def per_period(time: exp.Expression, relation: exp.Expression, is_date: bool) -> exp.Select:
            selects = [exp.alias_(pick(this=time.copy()), _ident("snapshot_time"), copy=False)]
            if self.grain:
                bucket = self.calendar.bucket(time.copy(), self.grain, self.dialect, is_date)
                selects.insert(0, exp.alias_(bucket, _ident(PERIOD), copy=False))
            query = exp.select(*selects, copy=False).from_(relation, copy=False)
            return query.group_by(bucket.copy(), copy=False) if self.grain else query

        if days is not None:
            return per_period(_col(PERIOD, days), _table_ref(days), is_date=True)
        source = self.model.sources[agg.source]
        relation, time, is_date = self.rows(source, start)
        in_range = exp.and_(*self.range_conditions(time, is_date, start), copy=False)
        if not (is_date and self.grain):
            return per_period(time, relation, is_date=False).where(in_range, copy=False)
        # The distinct days first, then the periods: as in days_to_periods, few values to truncate.
        distinct_days = exp.select(exp.alias_(time.copy(), _ident(PERIOD), copy=False), copy=False) \
            .from_(relation, copy=False).where(in_range, copy=False).group_by(time.copy(), copy=False)
        return per_period(_col(PERIOD, "snapshot_days"),
                          exp.Subquery(this=distinct_days, alias=exp.TableAlias(this=_ident("snapshot_days"))), is_date=True)

    def entity_subquery(self, lookup: n.EntityLookup, alias: str, keys_only: bool = False) -> exp.Expression:
        """One row per key value of the inner source: cannot fan out when joined on the key.
        With ``keys_only``, just the distinct keys that have a row (see _existence_test)."""
        inner = self.model.sources[lookup.source]

        def inner_value(node: n.Node) -> exp.Expression:
            return self.row_formula(inner, node)

        # The condition filters the rows before grouping: a key left without rows is
        # missing from the subquery, which reads as 0 for counts and sums and NULL
        # otherwise, exactly what the aggregate over no rows gives.
        conditions = [_wrap(inner_value(lookup.where))] if lookup.where is not None else []
        key = self.column(inner, lookup.key, local=False)
        selects = [exp.alias_(key, _ident(lookup.key), copy=False)]
        if keys_only:
            if lookup.arg is not None:  # count(x.col per key) counts the rows where col is not null
                conditions.append(exp.Is(this=_wrap(inner_value(lookup.arg)), expression=exp.Not(this=exp.Null())))
        else:
            value = _aggregate_sql(lookup.func, inner_value(lookup.arg) if lookup.arg is not None else None, None,
                                   self.dialect)
            selects.append(exp.alias_(value, _ident("value"), copy=False))
        subquery = exp.select(*selects, copy=False).from_(self.relation(inner), copy=False) \
            .group_by(key.copy(), copy=False)
        if conditions:
            subquery = subquery.where(exp.and_(*conditions, copy=False), copy=False)
        return exp.Subquery(this=subquery, alias=exp.TableAlias(this=_ident(alias)))

    # -- joining the sources
    def join_sources(self, names: list[str], start) -> tuple[str, exp.Select, list]:
        """FROM clause over the grouped CTEs ``names``: the table that holds the keys, the SELECT
        with its FROM and joins, and the CTEs it needs (the keys)."""
        keys = self.keys
        if len(names) == 1 and not self.request.fill:
            return names[0], exp.select(copy=False).from_(_table_ref(names[0]), copy=False), []
        if not keys:  # no grain, no dimensions: every CTE is one row
            body = exp.select(copy=False).from_(_table_ref(names[0]), copy=False)
            for name in names[1:]:
                body.append("joins", exp.Join(this=_table_ref(name), kind="CROSS"))
            return names[0], body, []
        union = None
        for name in names:
            part = exp.select(*[_col(k, name) for k in keys], copy=False).from_(_table_ref(name), copy=False)
            union = part if union is None else exp.union(union, part, distinct=True, copy=False)
        if self.request.fill:
            union = self.dense_keys(union, start)
        body = exp.select(copy=False).from_(_table_ref(KEYS_CTE), copy=False)
        for name in names:
            _left_join(body, _table_ref(name), _keys_match(keys, KEYS_CTE, name))
        return KEYS_CTE, body, [(KEYS_CTE, union)]

    def join_observed_values(self, body: exp.Select, read: "_Read", first: dt.date | None) -> str:
        """Join the dimension values a source has anywhere in range (--fill lists every period for
        them), from the period ``first`` on when earlier ones were read for the windows; returns the
        alias, whose marker is null for values the source never has."""
        alias = f"{read.name}_values"
        values = exp.select(*[_col(d, read.name) for d in self.dims], exp.alias_(_number(1), _ident(self.marker), copy=False),
                            copy=False).distinct(copy=False).from_(_table_ref(read.name), copy=False)
        if first is not None:
            values = values.where(exp.GTE(this=_col(PERIOD, read.name), expression=_date(first)), copy=False)
        _left_join(body, exp.Subquery(this=values, alias=exp.TableAlias(this=_ident(alias))),
                   _keys_match(self.dims, KEYS_CTE, alias))
        return alias

    def join_snapshot_periods(self, body: exp.Select, snapshot: str, key_table: str) -> None:
        """Join a source's snapshot times to the keys by period (one row per period, or the one
        row without a grain), to tell a period without any snapshot from one with no rows here."""
        if self.grain:
            _left_join(body, _table_ref(snapshot), exp.EQ(this=_col(PERIOD, key_table), expression=_col(PERIOD, snapshot)))
        else:
            body.append("joins", exp.Join(this=_table_ref(snapshot), kind="CROSS"))

    def join_snapshot_back(self, body: exp.Select, snapshot: str, periods: int) -> str:
        """Join the snapshot times of the period ``periods`` back from each windowed row; returns the alias."""
        alias = f"{snapshot}_back_{periods}"
        if not any(join.alias_or_name == alias for join in body.args.get("joins") or []):
            index = self.calendar.period_index(_col(PERIOD, alias), self.grain)
            back = exp.Sub(this=_col(PERIOD_INDEX, WINDOWED_CTE), expression=_number(periods * self.calendar.index_step(self.grain)))
            _left_join(body, exp.alias_(_table_ref(snapshot), _ident(alias), table=True, copy=False),
                       exp.EQ(this=index, expression=back))
        return alias

    def dense_keys(self, observed: exp.Expression, start) -> exp.Expression:
        """Observed keys plus every period of the range for every observed dimension value."""
        periods = self.calendar.periods(start, self.request.end, self.grain)
        if len(periods) > MAX_FILL_PERIODS:
            raise QueryError(f"--fill would list {len(periods):,} periods; the limit is {MAX_FILL_PERIODS:,}.", None,
                             "Use a coarser --grain or a shorter range.")
        spine = _values([(_date(p),) for p in periods], SPINE_CTE, [PERIOD])
        dense = exp.select(_col(PERIOD, SPINE_CTE), *[_col(d, "observed") for d in self.dims], copy=False).from_(spine, copy=False)
        if self.dims:
            combos = exp.select(*[_col(d) for d in self.dims], copy=False).distinct(copy=False).from_(
                exp.Subquery(this=observed.copy(), alias=exp.TableAlias(this=_ident("observed_keys"))), copy=False)
            dense = dense.join(exp.Subquery(this=combos, alias=exp.TableAlias(this=_ident("observed"))),
                               join_type="CROSS", copy=False)
        return exp.union(observed, dense, distinct=True, copy=False)

    # -- windows
    def window(self, leaf: WindowLeaf, column: str) -> exp.Expression:
        value = _col(column, SERIES_CTE)
        func = {"min": exp.Min, "max": exp.Max}.get(leaf.agg.func, exp.Sum)
        dims = [_col(d, SERIES_CTE) for d in self.dims]
        if leaf.kind == "total":
            partition = [_col(PERIOD, SERIES_CTE)] if self.grain else []
            return exp.Window(this=func(this=value), partition_by=partition)
        if not self.grain:  # cumulative over the whole range: the total from the start of data
            return value
        # The index is never null; say so in the dialect's own default so none has to emulate NULLS LAST.
        from sqlglot.dialects.dialect import Dialect

        nulls_first = Dialect.get_or_raise(self.dialect).NULL_ORDERING == "nulls_are_small"
        order = exp.Order(expressions=[exp.Ordered(this=_col(PERIOD_INDEX, SERIES_CTE), nulls_first=nulls_first)])
        step = self.calendar.index_step(self.grain)
        if leaf.kind == "cumulative":
            partition = dims
            if leaf.reset:
                if GRAINS.index(leaf.reset.replace("fiscal_", "")) < GRAINS.index(self.grain.replace("fiscal_", "")):
                    raise QueryError(f"cumulative(x, '{leaf.reset}') restarts more often than the --grain "
                                     f"'{self.grain}' periods it adds up.", None,
                                     f"Use a coarser restart than '{self.grain}', or a finer --grain.")
                partition = dims + [self.calendar.bucket(_col(PERIOD, SERIES_CTE), leaf.reset, self.dialect, is_date=True)]
            spec = exp.WindowSpec(kind="ROWS", start="UNBOUNDED", start_side="PRECEDING", end="CURRENT ROW")
            return exp.Window(this=func(this=value), partition_by=partition, order=order, spec=spec)
        if leaf.kind == "rolling":
            spec = exp.WindowSpec(kind="RANGE", start=_number((leaf.periods - 1) * step), start_side="PRECEDING",
                                  end="CURRENT ROW")
            return exp.Window(this=func(this=value), partition_by=dims, order=order, spec=spec)
        # previous: a frame of exactly the period N back holds that period's row, or none.
        offset = _number(leaf.periods * step)
        spec = exp.WindowSpec(kind="RANGE", start=offset, start_side="PRECEDING", end=offset.copy(),
                              end_side="PRECEDING")
        window = exp.Window(this=exp.Max(this=value), partition_by=dims, order=order, spec=spec)
        return exp.Coalesce(this=window, expressions=[_number(0)]) if leaf.agg.func in ZERO_WHEN_EMPTY else window


class _Measure:
    """Compiles KPI-level expressions: aggregates and window leaves become columns."""

    def __init__(self, aggregate: Callable[[n.Aggregate], exp.Expression],
                 window: Callable[[WindowLeaf], exp.Expression] | None, function):
        self.aggregate = aggregate
        self.window = window
        self.function = function

    def __call__(self, node: n.Node) -> exp.Expression:
        if isinstance(node, n.Aggregate):
            return self.aggregate(node)
        if isinstance(node, WindowLeaf):
            return self.window(node)
        return _compile_common(node, self, self.function)


def extent_query(model: Model, sources: Sequence[str], dialect: str, read_dialect: str = "duckdb",
                 today: dt.date | None = None) -> exp.Expression:
    """SELECT 'source', first day, last day FROM source UNION ALL ...: the extent of each source's
    data (time column read through its map, rows through its where:), as local days. An interval
    source's data runs to the last day a row is active, today for a row still open."""
    compiler = _Compiler(model, Request(), dialect, read_dialect, today=today)
    parts = []
    for name in sources:
        source = model.sources[name]
        time, _ = compiler.time_column(source)
        last = time
        if source.time_end:
            ends, now = compiler.day_of(source, source.time_end), _date(compiler.today)
            still_open = exp.or_(exp.Is(this=ends.copy(), expression=exp.Null()), exp.GT(this=ends.copy(), expression=now),
                                 copy=False)
            last = exp.Case(ifs=[exp.If(this=still_open, true=now.copy())],
                            default=exp.DateAdd(this=ends.copy(), expression=_number(-1), unit=exp.var("DAY")))
        days = [exp.alias_(cast(func(this=value.copy()), "DATE"), _ident(alias), copy=False)
                for func, value, alias in ((exp.Min, time, "first_day"), (exp.Max, last, "last_day"))]
        parts.append(exp.select(exp.alias_(exp.Literal.string(name), _ident("source_name"), copy=False), *days,
                                copy=False).from_(compiler.relation(source), copy=False))
    query = parts[0]
    for part in parts[1:]:
        query = exp.union(query, part, distinct=False, copy=False)
    return query


def compile_request(model: Model, request: Request, dialect: str, read_dialect: str = "duckdb",
                    spans: Mapping[str, dt.date] | None = None, today: dt.date | None = None) -> CompiledQuery:
    """Build the query for ``request`` in ``dialect``; ``sql:`` sources are read as ``read_dialect``.
    ``spans``: the first day of each interval source's data (IntervalStartNeeded asks for it);
    ``today``: the day open intervals run to (today in the project's time zone by default)."""
    from .parser import _deep_recursion

    check_dialect(dialect)
    try:
        with _deep_recursion():
            return _Compiler(model, request, dialect, read_dialect, spans, today).compile()
    except RecursionError:
        raise QueryError("the formulas chain too many operators to compile.", None,
                         "Split long formulas into KPIs that reference each other.") from None
