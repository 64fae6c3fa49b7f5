"""Resolved formulas -> one sqlglot SELECT per request.

Shape of every query (readable with ``kpi-engine compile``):

    WITH <source> AS (            -- one CTE per source, shared by every KPI asked for
      SELECT <time bucket> AS period, <dimensions>, <each aggregate once>
      FROM <table> WHERE <time range> AND <--where> GROUP BY <bucket>, <dimensions>
    ), keys AS (                  -- only with several sources: every key any of them has
      SELECT period, <dimensions> FROM a UNION SELECT ... FROM b
    )
    SELECT keys.period, <dimensions>, <KPI formulas over the CTE columns>
    FROM keys LEFT JOIN a ON <keys match, null-safe> LEFT JOIN b ON ...
    WHERE <--having> ORDER BY ... LIMIT ...

Aggregating each source before joining is what keeps a cross-source ratio such as
``sum(ad_spend.spend) / count(leads)`` free of join fan-out. Everything is built
as sqlglot nodes: identifiers are quoted by sqlglot, values become literals.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Sequence

import sqlglot
from sqlglot import exp

from . import nodes as n
from .errors import Location, QueryError, SpecError, did_you_mean
from .resolve import DATE, Model, aggregates_in, expand, resolve_formula
from .spec import SourceSpec

GRAINS = ("day", "week", "month", "quarter", "year")
PERIOD = "period"
KEYS_CTE = "keys"
ADDITIVE = {"count", "count_distinct", "sum"}  # no rows means 0, not null


@dataclass(frozen=True)
class Request:
    """What to compute. Names refer to the project's KPIs and dimensions."""

    kpis: tuple[str, ...] = ()
    formulas: tuple[str, ...] = ()  # ad-hoc formulas, output as formula, formula_2, ...
    dimensions: tuple[str, ...] = ()
    grain: str | None = None
    start: dt.date | None = None  # inclusive
    end: dt.date | None = None  # exclusive
    where: str | None = None
    having: str | None = None
    order_by: tuple[str, ...] = ()  # output column names; prefix '-' for descending
    limit: int | None = None


@dataclass(frozen=True)
class OutputColumn:
    name: str
    role: str  # "time", "dimension" or "kpi"
    unit: str | None = None
    label: str | None = None
    format: str | None = None  # the KPI's display format spec


@dataclass(frozen=True)
class CompiledQuery:
    expression: exp.Select
    columns: tuple[OutputColumn, ...]
    dialect: str
    sources: tuple[str, ...] = field(default=())

    def sql(self, pretty: bool = True) -> str:
        return self.expression.sql(dialect=self.dialect, pretty=pretty, unsupported_level=sqlglot.ErrorLevel.RAISE)


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


def _number(value) -> exp.Expression:
    return exp.Literal.number(str(value))


def _wrap(expression: exp.Expression) -> exp.Expression:
    """Parenthesise operands that are themselves operations: sqlglot renders trees as built."""
    composite = (exp.Binary, exp.Not, exp.Neg, exp.Between, exp.In, exp.Case)
    return exp.Paren(this=expression) if isinstance(expression, composite) else expression


def _literal(node: n.Node) -> exp.Expression:
    if isinstance(node, n.NumberLit):
        return _number(node.value)
    if isinstance(node, n.StringLit):
        return exp.Literal.string(node.value)
    if isinstance(node, n.BoolLit):
        return exp.Boolean(this=node.value)
    return exp.Null()


def source_relation(source: SourceSpec, read_dialect: str) -> exp.Expression:
    """The FROM item of a source: its table, or its ``sql:`` parsed into a subquery.

    A ``sql:`` source is parsed with sqlglot in the warehouse's dialect and must be
    one SELECT; it is re-rendered from the tree like everything else.
    """
    if source.sql:
        try:
            query = sqlglot.parse(source.sql, read=read_dialect)
        except sqlglot.errors.ParseError as error:
            first = error.errors[0] if error.errors else {}
            detail = first.get("description", str(error).splitlines()[0])
            raise SpecError(f"the source's sql does not parse as {read_dialect} SQL: {detail}.", source.where("sql"),
                            "Write a single SELECT statement in the warehouse's dialect.") from None
        if len(query) != 1 or not isinstance(query[0], exp.Query):
            raise SpecError("the source's sql must be exactly one SELECT statement.", source.where("sql"),
                            "Remove any other statement; a source only reads data.")
        return exp.Subquery(this=query[0], alias=exp.TableAlias(this=_ident(source.name)))
    parts = source.table.split(".")
    table = exp.Table(this=_ident(parts[-1]),
                      db=_ident(parts[-2]) if len(parts) > 1 else None,
                      catalog=_ident(parts[-3]) if len(parts) > 2 else None)
    return exp.alias_(table, _ident(source.name), table=True)


def time_bucket(column: exp.Expression, grain: str, dialect: str) -> exp.Expression:
    """The start date of the ``grain`` period containing ``column``, as a DATE.

    Weeks start on Monday. Truncating a TIMESTAMP and casting back to DATE renders
    correctly on DuckDB, PostgreSQL, Snowflake, BigQuery, Spark and Trino.
    """
    unit = exp.var(grain.upper())
    if dialect == "bigquery" and grain == "week":
        unit = exp.var("WEEK(MONDAY)")
    truncated = exp.TimestampTrunc(this=exp.cast(column, "TIMESTAMP"), unit=unit)
    return exp.cast(truncated, "DATE")


def _date_literal(value: dt.date, column_type: str | None) -> exp.Expression:
    if column_type == DATE:
        return exp.cast(exp.Literal.string(value.isoformat()), "DATE")
    return exp.cast(exp.Literal.string(f"{value.isoformat()} 00:00:00"), "TIMESTAMP")


# --- formula nodes -> sqlglot ------------------------------------------------------------


class _Scalar:
    """Compiles row-level expressions (inside an aggregate, or a --where filter)."""

    def __init__(self, column_of):
        self.column_of = column_of  # n.Column | n.Name -> exp.Expression

    def __call__(self, node: n.Node) -> exp.Expression:
        return _compile_common(node, self)


def _compile_common(node: n.Node, recurse) -> exp.Expression:
    """Operators, literals and functions: the same at row level and at KPI level."""
    if isinstance(node, (n.NumberLit, n.StringLit, n.BoolLit, n.NullLit)):
        return _literal(node)
    if isinstance(node, (n.Column, n.Name)):
        return recurse.column_of(node)
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
        result = exp.Is(this=_wrap(recurse(node.operand)), expression=exp.Null())
        return exp.Not(this=result) if node.negated else result
    if isinstance(node, n.Function):
        return _function(node.name, [recurse(a) for a in node.args])
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
    if name == "least":
        return exp.Least(this=args[0], expressions=args[1:])
    if name == "greatest":
        return exp.Greatest(this=args[0], expressions=args[1:])
    raise AssertionError(f"function {name} has no compiler")  # pragma: no cover


# --- the query ------------------------------------------------------------------------


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
            while name in self.aggregates.values() or name == PERIOD or self.source.dimension(name):
                name, i = f"{base}_{i}", i + 1
            self.aggregates[agg] = name
        return self.aggregates[agg]


def compile_request(model: Model, request: Request, dialect: str, read_dialect: str = "duckdb") -> CompiledQuery:
    """Build the query for ``request`` in ``dialect``; ``sql:`` sources are read as ``read_dialect``."""
    check_dialect(dialect)
    if not request.kpis and not request.formulas:
        raise QueryError("nothing to compute.", None, "Name one or more KPIs, or pass --formula.")
    if request.grain is not None and request.grain not in GRAINS:
        raise QueryError(f"unknown time grain '{request.grain}'.", None,
                         f"Use one of: {', '.join(GRAINS)}. " + (did_you_mean(request.grain, GRAINS) or ""))
    if request.start and request.end and request.start >= request.end:
        raise QueryError(f"the time range is empty: --from {request.start} is not before --to {request.end}.", None,
                         "--from is inclusive and --to exclusive; pick a later --to.")
    if request.limit is not None and request.limit < 0:
        raise QueryError("--limit must be zero or more.", None, None)

    # 1. What each output column computes, with KPI references inlined.
    cache: dict[str, n.Node] = {}
    outputs: list[tuple[OutputColumn, n.Node]] = []
    for name in dict.fromkeys(request.kpis):
        kpi = model.kpi(name)
        column = OutputColumn(name, "kpi", kpi.spec.unit, kpi.spec.label, kpi.spec.format)
        outputs.append((column, expand(model, kpi.expr, cache)))
    for i, text in enumerate(request.formulas):
        label = "formula" if i == 0 else f"formula_{i + 1}"
        expr, _ = resolve_formula(model, text, "kpi", label)
        outputs.append((OutputColumn(label, "kpi", "number", text), expand(model, expr, cache)))
    having = None
    if request.having:
        having_expr, _ = resolve_formula(model, request.having, "having", "--having condition")
        having = expand(model, having_expr, cache)

    # 2. One plan per source, each aggregate computed once.
    plans: dict[str, _SourcePlan] = {}
    for _, expr in outputs + ([(None, having)] if having is not None else []):
        for agg in aggregates_in(expr):
            plan = plans.setdefault(agg.source, _SourcePlan(model.sources[agg.source]))
            plan.column_for(agg)
    if not plans:
        raise QueryError("the request reads no source: every formula is a constant.", None,
                         "Use at least one aggregate such as 'count(leads)'.")

    dims = tuple(dict.fromkeys(request.dimensions))
    _check_dimensions(model, plans, dims)
    time_needed = request.grain is not None or request.start is not None or request.end is not None
    if time_needed:
        for plan in plans.values():
            if not plan.source.time:
                raise QueryError(f"source '{plan.source.name}' has no time column, so it cannot be cut by time.",
                                 plan.source.where(key=True),
                                 "Declare 'time: <column>' on the source, or drop --grain/--from/--to.")
    where = None
    if request.where:
        where, _ = resolve_formula(model, request.where, "dimension", "--where filter")
        for name in (node for node in where.walk() if isinstance(node, n.Name)):
            _check_filter_dimension(model, plans, name)

    # 3. The query.
    keys = ([PERIOD] if request.grain else []) + list(dims)
    ctes = [(name, _source_cte(model, plan, request, dims, where, dialect, read_dialect)) for name, plan in plans.items()]
    query = exp.Select()
    for name, cte in ctes:
        query = query.with_(_ident(name), as_=cte)

    if len(plans) == 1:
        (only,) = plans
        key_table = only
        query = query.from_(exp.Table(this=_ident(only)))
    elif keys:
        union = None
        for name in plans:
            part = exp.select(*[_col(k, name) for k in keys]).from_(exp.Table(this=_ident(name)))
            union = part if union is None else exp.union(union, part, distinct=True)
        query = query.with_(_ident(KEYS_CTE), as_=union)
        key_table = KEYS_CTE
        query = query.from_(exp.Table(this=_ident(KEYS_CTE)))
        for name in plans:
            condition = exp.and_(*[exp.NullSafeEQ(this=_col(k, KEYS_CTE), expression=_col(k, name)) for k in keys])
            query = query.join(exp.Table(this=_ident(name)), on=condition, join_type="LEFT")
    else:  # no grain, no dimensions: every CTE is one row
        names = list(plans)
        key_table = names[0]
        query = query.from_(exp.Table(this=_ident(names[0])))
        for name in names[1:]:
            query = query.join(exp.Table(this=_ident(name)), join_type="CROSS")

    columns: list[OutputColumn] = []
    selects: list[exp.Expression] = []
    if request.grain:
        columns.append(OutputColumn(PERIOD, "time", None, request.grain))
        selects.append(exp.alias_(_col(PERIOD, key_table), _ident(PERIOD)))
    for dim in dims:
        columns.append(OutputColumn(dim, "dimension"))
        selects.append(exp.alias_(_col(dim, key_table), _ident(dim)))
    measure = _Measure(plans)
    for column, expr in outputs:
        if column.name in keys:
            raise QueryError(f"KPI '{column.name}' has the same name as an output key column.", None,
                             "Rename the KPI or the dimension.")
        columns.append(column)
        selects.append(exp.alias_(exp.cast(measure(expr), "DOUBLE"), _ident(column.name)))
    query = query.select(*selects)
    if having is not None:
        query = query.where(measure(having))

    order = request.order_by or tuple(keys)
    names = [c.name for c in columns]
    order_terms = []
    for item in order:
        desc = item.startswith("-")
        name = item.lstrip("-+")
        if name not in names:
            raise QueryError(f"cannot order by '{name}': it is not an output column.", None,
                             did_you_mean(name, names) or None)
        order_terms.append(exp.Ordered(this=_col(name), desc=desc, nulls_first=False))
    if order_terms:
        query = query.order_by(*order_terms)
    if request.limit is not None:
        query = query.limit(request.limit)
    return CompiledQuery(query, tuple(columns), dialect, tuple(plans))


class _Measure:
    """Compiles KPI-level expressions: each aggregate becomes its CTE column."""

    def __init__(self, plans: dict[str, _SourcePlan]):
        self.plans = plans

    def __call__(self, node: n.Node) -> exp.Expression:
        if isinstance(node, n.Aggregate):
            column = _col(self.plans[node.source].aggregates[node], node.source)
            # A source with no rows for a key contributes 0 to a count or sum, not null.
            return exp.Coalesce(this=column, expressions=[_number(0)]) if node.func in ADDITIVE else column
        return _compile_common(node, self)

    def column_of(self, node):  # pragma: no cover - resolve never leaves bare columns at KPI level
        raise AssertionError(f"column {node!r} outside an aggregate")


def _check_dimensions(model: Model, plans: dict[str, _SourcePlan], dims: Sequence[str]) -> None:
    for dim in dims:
        if dim == PERIOD:
            raise QueryError("'period' is the time column; use --grain, not --by period.", None, None)
        missing = [name for name, plan in plans.items() if not plan.source.dimension(dim)]
        if missing:
            everywhere = model.dimensions_of(plans)
            anywhere = {d for plan in plans.values() for d in plan.source.dimension_names}
            if len(missing) == len(plans) and dim not in anywhere:
                hint = did_you_mean(dim, anywhere) or None
            else:
                hint = (f"Dimensions available on every source of this request: {', '.join(everywhere) or 'none'}. "
                        f"Or declare '{dim}' on {', '.join(missing)}.")
            raise QueryError(f"cannot slice by '{dim}': sources {', '.join(sorted(missing))} do not have it.",
                             None, hint)


def _check_filter_dimension(model: Model, plans: dict[str, _SourcePlan], name: n.Name) -> None:
    dim = name.dotted
    if len(name.parts) != 1 or any(not plan.source.dimension(dim) for plan in plans.values()):
        everywhere = model.dimensions_of(plans)
        raise QueryError(f"--where uses '{dim}', which is not a dimension of every source read "
                         f"({', '.join(plans)}).", Location(obj="--where filter"),
                         (did_you_mean(dim, everywhere) or "") + f" Filterable dimensions: {', '.join(everywhere) or 'none'}.")


def _source_cte(model: Model, plan: _SourcePlan, request: Request, dims: Sequence[str], where: n.Node | None,
                dialect: str, read_dialect: str) -> exp.Select:
    source = plan.source
    name = source.name

    def column_of(node) -> exp.Expression:
        if isinstance(node, n.Column):
            return _col(node.name, name)
        dimension = source.dimension(node.dotted)  # a dimension in --where
        return _col(dimension.column, name)

    scalar = _Scalar(column_of)
    selects: list[exp.Expression] = []
    group: list[exp.Expression] = []
    if request.grain:
        bucket = time_bucket(_col(source.time, name), request.grain, dialect)
        selects.append(exp.alias_(bucket, _ident(PERIOD)))
        group.append(bucket.copy())
    for dim in dims:
        column = _col(source.dimension(dim).column, name)
        selects.append(exp.alias_(column, _ident(dim)))
        group.append(column.copy())
    for agg, alias in plan.aggregates.items():
        selects.append(exp.alias_(_aggregate(agg, scalar), _ident(alias)))

    query = exp.select(*selects).from_(source_relation(source, read_dialect))
    conditions = []
    time_type = model.catalog.get(name, {}).get(source.time) or source.columns.get(source.time or "")
    if request.start:
        conditions.append(exp.GTE(this=_col(source.time, name), expression=_date_literal(request.start, time_type)))
    if request.end:
        conditions.append(exp.LT(this=_col(source.time, name), expression=_date_literal(request.end, time_type)))
    if where is not None:
        conditions.append(_wrap(scalar(where)))
    if conditions:
        query = query.where(exp.and_(*conditions))
    if group:
        query = query.group_by(*group)
    return query


def _aggregate(agg: n.Aggregate, scalar: _Scalar) -> exp.Expression:
    if agg.arg is None:  # count(source)
        value: exp.Expression = _number(1) if agg.where is not None else exp.Star()
    else:
        value = scalar(agg.arg)
    if agg.where is not None:
        value = exp.Case(ifs=[exp.If(this=scalar(agg.where), true=value)])
    if agg.func == "count":
        return exp.Count(this=value)
    if agg.func == "count_distinct":
        return exp.Count(this=exp.Distinct(expressions=[value]))
    cls = {"sum": exp.Sum, "avg": exp.Avg, "min": exp.Min, "max": exp.Max}[agg.func]
    return cls(this=value)
