"""sqlglot building blocks shared by the compiler's stages: quoted names, literals, the
operators and functions of the formula language, aggregates with their filters.

Nothing here knows a request. Every name becomes a quoted identifier and every value a literal
node, so nothing from a spec or a command line reaches SQL as text.
"""

from __future__ import annotations

import datetime as dt
from typing import Sequence

from sqlglot import exp

from . import nodes as n
from .calendar import cast


def ident(name: str) -> exp.Identifier:
    # built directly: what to_identifier does for a name, without its checks (tens per query)
    return exp.Identifier(this=name, quoted=True) if type(name) is str else exp.to_identifier(name, quoted=True)


def aliased(expression: exp.Expression, name: str, table: bool = False) -> exp.Expression:
    """``expression AS "name"`` (with ``table``: a FROM item's ``AS "name"``), the tree sqlglot's
    alias_ builds, built directly: alias_ deep-copies an Identifier it is given and checks its
    arguments on each call (thousands of times in a project of many KPIs)."""
    if type(name) is not str:
        return exp.alias_(expression, name, table=table, quoted=True, copy=False)
    if table:
        expression.set("alias", exp.TableAlias(this=exp.Identifier(this=name, quoted=True)))
        return expression
    if "alias" in expression.arg_types and type(expression).__name__ != "Window":
        expression.set("alias", exp.Identifier(this=name, quoted=True))
        return expression
    return exp.Alias(this=expression, alias=exp.Identifier(this=name, quoted=True))


def col(name: str, table: str | None = None) -> exp.Column:
    return exp.Column(this=ident(name), table=ident(table) if table else None)


def copy_of(node: exp.Expression) -> exp.Expression:
    """``node.copy()``, built anew: sqlglot's deep copy sets each argument through ``set`` (which
    walks up the tree clearing hashes) and costs about twice what building the same nodes does; a
    query copies its time column, buckets and dimensions several times (GROUP BY, WHERE). A node
    with comments, a type or meta, or of a class whose constructor rewrites its arguments
    (the time units; DateTrunc unless its unit is written as its constructor writes it), is
    copied by sqlglot, with everything under it."""
    kind = type(node)
    if node.comments is not None or node._type is not None or node._meta is not None:
        return node.copy()
    options = {}
    if kind is exp.DateTrunc:  # (a bucket) its constructor writes the unit as an upper-case string, once
        unit = node.args.get("unit")
        if not (type(unit) is exp.Literal and unit.is_string and unit.this == unit.this.upper()):
            return node.copy()
        options["unabbreviate"] = False
    elif kind.__init__ is not _PLAIN_INIT:
        return node.copy()
    args = {}
    for key, value in node.args.items():
        if isinstance(value, _Expression):
            value = copy_of(value)
        elif type(value) is list:
            value = [copy_of(item) if isinstance(item, _Expression) else item for item in value]
        args[key] = value
    copied = kind(**args, **options)
    copied._hash = node._hash
    return copied


_Expression, _PLAIN_INIT = exp.Expression, exp.Expression.__init__


def table_ref(name: str) -> exp.Table:
    return exp.Table(this=ident(name))


def qualified_table(dotted: str) -> exp.Table:
    """A table named as schema.table (or catalog.schema.table), each part quoted."""
    parts = dotted.split(".")
    return exp.Table(this=ident(parts[-1]), db=ident(parts[-2]) if len(parts) > 1 else None,
                     catalog=ident(parts[-3]) if len(parts) > 2 else None)


def select_from(selects: Sequence[exp.Expression], relation: exp.Expression, *,
                joins: Sequence[tuple[exp.Expression, exp.Expression]] = (), where: exp.Expression | None = None,
                group: Sequence[exp.Expression] = ()) -> exp.Select:
    """``SELECT selects FROM relation [LEFT JOIN r ON c ...] [WHERE where] [GROUP BY group]``: the
    tree ``exp.select(...).from_(...).where(...).group_by(...)`` builds, built in one step.
    (sqlglot's builders wrap and unwrap each part: a throwaway GROUP BY node per grouped column.)"""
    args: dict = {"expressions": list(selects), "from_": exp.From(this=relation)}
    if joins:
        args["joins"] = [exp.Join(this=joined, side="LEFT", on=on) for joined, on in joins]
    if where is not None:
        args["where"] = exp.Where(this=where)
    if group:
        args["group"] = exp.Group(expressions=list(group))
    return exp.Select(**args)


def left_join(query: exp.Select, relation: exp.Expression, on: exp.Expression | None) -> None:
    """Add a LEFT JOIN in place (``on`` None: its condition set later). (Select.join parses its join_type
    text on every call.)"""
    query.append("joins", exp.Join(this=relation, side="LEFT", on=on))


def number(value) -> exp.Expression:
    return exp.Literal.number(str(value))


def wrap(expression: exp.Expression) -> exp.Expression:
    """Parenthesise operands that are themselves operations: sqlglot renders trees as built."""
    composite = (exp.Binary, exp.Not, exp.Neg, exp.Between, exp.In, exp.Case)
    return exp.Paren(this=expression) if isinstance(expression, composite) else expression


def date_literal(value: dt.date) -> exp.Expression:
    return cast(exp.Literal.string(value.isoformat()), "DATE")


def timestamp_literal(value: dt.datetime) -> exp.Expression:
    return cast(exp.Literal.string(value.isoformat(sep=" ", timespec="seconds")), "TIMESTAMP")


def period_literal(value: dt.date) -> exp.Expression:
    """A period start: a DATE, or a TIMESTAMP for a sub-daily period (a datetime)."""
    return timestamp_literal(value) if isinstance(value, dt.datetime) else date_literal(value)


def bound(value: dt.date, is_date_column: bool) -> exp.Expression:
    if isinstance(value, dt.datetime):  # a local time of day (--from '2025-03-30 06:00'); never on a DATE column
        return timestamp_literal(value)
    if is_date_column:
        return date_literal(value)
    return cast(exp.Literal.string(f"{value.isoformat()} 00:00:00"), "TIMESTAMP")


def values_table(rows: list[tuple[exp.Expression, ...]], alias: str, columns: Sequence[str]) -> exp.Values:
    """VALUES (...), (...) AS alias(columns), every name quoted as the references to it are."""
    return exp.Values(expressions=[exp.Tuple(expressions=list(row)) for row in rows],
                      alias=exp.TableAlias(this=ident(alias), columns=[ident(c) for c in columns]))


def literal(node: n.Node) -> exp.Expression:
    if isinstance(node, n.NumberLit):
        return number(node.value)
    if isinstance(node, n.StringLit):
        return exp.Literal.string(node.value)
    if isinstance(node, n.BoolLit):
        return exp.Boolean(this=node.value)
    return exp.Null()


def compile_common(node: n.Node, recurse, function=None, never_zero=None) -> exp.Expression:
    """Operators, literals and functions: the same at row level and at KPI level.
    ``function(name, args)`` compiles function calls (built-in or from a plugin);
    ``never_zero(node)`` says a divisor cannot be 0, so it needs no NULLIF."""
    if isinstance(node, (n.NumberLit, n.StringLit, n.BoolLit, n.NullLit)):
        return literal(node)
    if isinstance(node, n.Unary):
        operand = recurse(node.operand)
        return exp.Not(this=wrap(operand)) if node.op == "not" else exp.Neg(this=wrap(operand))
    if isinstance(node, n.Binary):
        left, right = wrap(recurse(node.left)), wrap(recurse(node.right))
        if node.op in ("/", "%") and not (never_zero and never_zero(node.right)):
            right = exp.Nullif(this=right, expression=number(0))  # a division by zero is null, never an error
        if node.op == "/":  # typed=False keeps it a true division
            return exp.Div(this=left, expression=right, typed=False, safe=False)
        if node.op == "%":
            return exp.Mod(this=left, expression=right)
        cls = {"+": exp.Add, "-": exp.Sub, "*": exp.Mul}[node.op]
        return cls(this=left, expression=right)
    if isinstance(node, n.Compare):
        cls = {"=": exp.EQ, "!=": exp.NEQ, "<": exp.LT, "<=": exp.LTE, ">": exp.GT, ">=": exp.GTE}[node.op]
        return cls(this=wrap(recurse(node.left)), expression=wrap(recurse(node.right)))
    if isinstance(node, n.Logical):
        cls = exp.And if node.op == "and" else exp.Or
        return cls(this=wrap(recurse(node.left)), expression=wrap(recurse(node.right)))
    if isinstance(node, n.InList):
        result = exp.In(this=wrap(recurse(node.operand)), expressions=[recurse(i) for i in node.items])
        return exp.Not(this=result) if node.negated else result
    if isinstance(node, n.Between):
        result = exp.Between(this=wrap(recurse(node.operand)), low=recurse(node.low), high=recurse(node.high))
        return exp.Not(this=result) if node.negated else result
    if isinstance(node, n.IsNull):
        # x IS NOT NULL, not NOT (x IS NULL): engines push the former down into their scans.
        null = exp.Not(this=exp.Null()) if node.negated else exp.Null()
        return exp.Is(this=wrap(recurse(node.operand)), expression=null)
    if isinstance(node, n.Function):
        return (function or scalar_function)(node.name, [recurse(a) for a in node.args])
    raise AssertionError(f"cannot compile {node!r} here")  # pragma: no cover


def scalar_function(name: str, args: list[exp.Expression], dialect: str | None = None) -> exp.Expression:
    if name == "if":
        return exp.If(this=args[0], true=args[1], false=args[2])
    if name == "coalesce":
        return exp.Coalesce(this=args[0], expressions=args[1:])
    if name == "nullif":
        return exp.Nullif(this=args[0], expression=args[1])
    if name == "abs":
        return exp.Abs(this=args[0])
    if name == "round":  # (each warehouse's adapter makes its ROUND half away from zero: docs/plugins.md)
        return exp.Round(this=args[0], decimals=args[1] if len(args) > 1 else None)
    if name in ("least", "greatest"):
        return null_if_any_null(args, exp.Least if name == "least" else exp.Greatest)
    if name == "days_between":
        # Whole calendar days from the first to the second, the same on every engine. DuckDB
        # subtracts two dates into that day count directly, cheaper per row than its DATE_DIFF.
        later, earlier = cast(args[1], "DATE"), cast(args[0], "DATE")
        if dialect == "duckdb":
            return exp.Sub(this=later, expression=earlier)
        return exp.DateDiff(this=later, expression=earlier, unit=exp.var("DAY"))
    if name in ("date", "timestamp"):  # each dialect's own cast (DATE(x) and DATETIME(x) on SQLite)
        return cast(args[0], name.upper())
    if name == "from_unixtime":
        return _from_unixtime(args[0], dialect)
    raise AssertionError(f"function {name} has no compiler")  # pragma: no cover


def _from_unixtime(seconds: exp.Expression, dialect: str | None) -> exp.Expression:
    """The UTC timestamp ``seconds`` after 1970-01-01 00:00, a TIMESTAMP without a zone as the
    engine reads stored times: the epoch plus that many seconds, which no session time zone
    moves (TO_TIMESTAMP and FROM_UNIXTIME answer in the session's zone, and FROM_UNIXTIME is null
    before 1970 on MySQL). SQLite has no interval type, Spark's DATE_ADD counts days and
    ClickHouse's DateTime drops the fraction (and wraps before 1970), so those get their own
    Unix-time functions."""
    if dialect == "clickhouse":  # milliseconds kept, as a DateTime64(3) in UTC
        millis = exp.Round(this=exp.Mul(this=seconds, expression=number(1000)))
        return exp.Anonymous(this="fromUnixTimestamp64Milli", expressions=[
            exp.Cast(this=millis, to=exp.DataType.build("BIGINT")), exp.Literal.string("UTC")])
    if dialect == "sqlite":
        return exp.Anonymous(this="DATETIME", expressions=[seconds, exp.Literal.string("unixepoch")])
    if dialect in ("spark", "databricks"):
        return exp.Anonymous(this="TIMESTAMP_SECONDS", expressions=[seconds])
    epoch = cast(exp.Literal.string("1970-01-01 00:00:00"), "TIMESTAMP")
    if dialect == "oracle":
        return exp.Add(this=epoch, expression=exp.Anonymous(this="NUMTODSINTERVAL", expressions=[
            seconds, exp.Literal.string("SECOND")]))
    return exp.DateAdd(this=epoch, expression=seconds, unit=exp.var("SECOND"))


# Dialects whose SQL has the standard FILTER clause (or that sqlglot rewrites into
# their own conditional aggregates); DuckDB in particular evaluates it faster than
# an aggregate over CASE. The others get the portable CASE form.
FILTER_DIALECTS = frozenset({"duckdb", "postgres", "sqlite", "spark", "databricks", "trino", "presto",
                              "athena", "snowflake", "bigquery", "tsql"})


def null_if_any_null(args: list[exp.Expression], cls: type[exp.Func]) -> exp.Expression:
    """least()/greatest() are null when an argument is null, on every warehouse: PostgreSQL,
    Spark and BigQuery skip nulls, Snowflake, MySQL and Oracle do not, so the guard is written
    out and the function inside told it never sees a null."""
    call = cls(this=args[0], expressions=args[1:], ignore_nulls=True)
    values = [arg for arg in args if not isinstance(arg, exp.Literal)]  # a literal is never null
    if len(args) == 1 or not values:
        return call
    any_null = exp.or_(*[exp.Is(this=wrap(value.copy()), expression=exp.Null()) for value in values], copy=False)
    return exp.Case(ifs=[exp.If(this=any_null, true=exp.Null())], default=call)


def not_null(value: exp.Expression) -> exp.Expression:
    return exp.Is(this=value, expression=exp.Not(this=exp.Null()))


def snapshot_mark(snapshot: str) -> exp.Expression:
    """True on the rows (or days) joined to their period's snapshot time, and on the keys whose
    period has one when the snapshot times are joined by period (see snapshot_times)."""
    return not_null(col("snapshot_time", snapshot))


def keys_match(keys: Sequence[str], left: str, right: str) -> exp.Expression:
    """Null-safe equality of the key columns of two relations."""
    return exp.and_(*[exp.NullSafeEQ(this=col(k, left), expression=col(k, right)) for k in keys], copy=False)


def existence_test(node: n.Node) -> tuple[n.EntityLookup, bool] | None:
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


def aggregate_sql(func: str, arg: exp.Expression | None, where: exp.Expression | None,
                   dialect: str, fraction=None) -> exp.Expression:
    """COUNT/SUM/... of ``arg`` over the rows where ``where`` holds."""
    if fraction is not None:  # median, percentile, approx_percentile (they skip nulls: no FILTER needed)
        value = arg if where is None else exp.Case(ifs=[exp.If(this=where, true=arg)])
        return percentile_sql(value, fraction, dialect, approximate=func == "approx_percentile")
    case_when = where is not None and dialect not in FILTER_DIALECTS
    value: exp.Expression = arg if arg is not None else (number(1) if case_when else exp.Star())
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


# Exact percentiles (linear interpolation between the two nearest rows, as PERCENTILE_CONT)
# by dialect: sqlglot renders PERCENTILE_CONT as an approximation on Spark and Trino, so each
# form is written out here. Engines missing from both tables have no such aggregate.
_WITHIN_GROUP = frozenset({"postgres", "snowflake", "redshift", "oracle"})
_EXACT_FUNCTION = {"duckdb": "QUANTILE_CONT", "spark": "PERCENTILE", "databricks": "PERCENTILE"}
# ClickHouse's parametric quantileExactInclusive(p)(x) interpolates as PERCENTILE_CONT; it refuses
# decimals, so the value goes through toFloat64 (which keeps a NULL a NULL, unlike CAST).
_EXACT_PARAMETRIC = {"clickhouse": "quantileExactInclusive"}
_APPROXIMATE = frozenset({"duckdb", "spark", "databricks", "trino", "presto", "athena", "snowflake", "bigquery",
                          "redshift"})


def percentile_sql(value: exp.Expression, fraction, dialect: str, approximate: bool = False) -> exp.Expression:
    """The ``fraction`` percentile of ``value`` over a group's rows, exact or approximate; a
    QueryError where the dialect has no such aggregate."""
    from .errors import QueryError

    share = exp.Literal.number(str(fraction))
    if approximate and dialect in _APPROXIMATE:
        return exp.ApproxQuantile(this=value, quantile=share)
    if not approximate and dialect in _EXACT_FUNCTION:
        return exp.Anonymous(this=_EXACT_FUNCTION[dialect], expressions=[value, share])
    if not approximate and dialect in _EXACT_PARAMETRIC:
        as_float = exp.Anonymous(this="toFloat64", expressions=[value])
        return exp.ParameterizedAgg(this=_EXACT_PARAMETRIC[dialect], expressions=[share], params=[as_float])
    if not approximate and dialect in _WITHIN_GROUP:
        return exp.WithinGroup(this=exp.PercentileCont(this=share), expression=exp.Order(expressions=[exp.Ordered(this=value)]))
    kind = "approximate percentiles" if approximate else "exact percentiles (median, percentile)"
    other = ("exact ones: median() and percentile()"
             if dialect in _EXACT_FUNCTION or dialect in _WITHIN_GROUP or dialect in _EXACT_PARAMETRIC
             else "approx_percentile()" if dialect in _APPROXIMATE and not approximate else None)
    raise QueryError(f"the {dialect} dialect has no aggregate for {kind}.", None,
                     f"Use {other} on this warehouse." if other else
                     "Compute it on a warehouse that has one (DuckDB, PostgreSQL, Spark, Snowflake, ...).")
