"""Conversion sources: the rows of one source (signups) that follow a row of another (visits) of
the same entity within a window, each attributed to one of those base rows.

A project declares one as a source (spec.py, ``_add_conversions``):

    sources:
      visit_signups:
        conversion: {from: visits, to: signups, per: visitor_id, within: 7 days}

Its rows are built here as one subquery, read like any source's table (``SourceReader.relation``):
the attributed conversions,

    SELECT * FROM (
      SELECT base.*, c.converted_at, <seconds>, <days>,
             ROW_NUMBER() OVER (PARTITION BY c.conversion ORDER BY base.time DESC, ...) AS touch
      FROM <from rows> AS base
      JOIN (SELECT per, time AS converted_at, <same columns>, ROW_NUMBER() OVER (...) AS conversion
            FROM <to rows>) AS c
        ON base.per = c.per AND base.time <= c.converted_at AND c.converted_at <= base.time + <window>
           [AND base.same = c.same ...]
    ) WHERE touch = 1
    UNION ALL
    SELECT base.*, NULL, NULL, NULL, 0 FROM <from rows> AS base   -- rows where there are base events

and every aggregate over it reads only the rows with touch = 1 (``converted_only``). So each conversion row appears once (never fanned out by an entity's several base events), with
the columns of the base event it is attributed to: aggregates over it are placed in time, sliced
and filtered as the base events are, and ``count(conversions) / count(base)`` is the rate.

Two parts drop out where they cannot change a number (docs/performance.md measured both):
the numbering and the touch, when ``per`` is the base source's whole primary key (``attributes``:
a conversion then pairs with one base event at most, its touch is 1); and the stacked base
events, when the request groups the base source itself (``events_read_elsewhere``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

from sqlglot import exp

from .calendar import cast
from .errors import KpiEngineError, ResolveError, did_you_mean
from .resolve import NUMBER, UNKNOWN, Catalog
from .spec import CONVERSION_COLUMNS, Project, SourceSpec
from .sql_build import col, ident, number

if TYPE_CHECKING:
    from .resolve import Model
    from .source_sql import SourceReader

# Helper columns of the subquery (the '__kpi_' prefix is the engine's own).
_ENTITY, _CONVERTED, _CONVERSION, _TOUCH = "__kpi_entity", "__kpi_converted_at", "__kpi_conversion", "__kpi_touch"
_SECONDS_PER_DAY = 86_400
# A window in months or days, the units every warehouse adds to a timestamp the same way.
_INTERVAL_UNITS = {"minute": ("MINUTE", 1), "hour": ("HOUR", 1), "day": ("DAY", 1), "week": ("DAY", 7),
                   "month": ("MONTH", 1), "quarter": ("MONTH", 3), "year": ("YEAR", 1)}


def window_end(time: exp.Expression, within: tuple[int, str], dialect: str) -> exp.Expression:
    """``time`` plus the window: the last moment a conversion still counts (included)."""
    amount, unit = within
    name, factor = _INTERVAL_UNITS[unit]
    if dialect == "sqlite":  # no INTERVAL type: DATETIME() takes the shift as a modifier
        return exp.Anonymous(this="DATETIME", expressions=[time, exp.Literal.string(f"+{amount * factor} {name.lower()}s")])
    interval = exp.Interval(this=exp.Literal.string(str(amount * factor)), unit=exp.var(name))
    return exp.Add(this=time, expression=interval)


def _epoch(time: exp.Expression, dialect: str) -> exp.Expression:
    """Seconds since 1970-01-01 00:00 of a stored timestamp. sqlglot writes its epoch node for
    DuckDB, PostgreSQL, Spark, Snowflake, Trino and Redshift; elsewhere it would leave a function
    the engine does not have (TIME_TO_UNIX), so those get their own."""
    stamp = cast(time, "TIMESTAMP")
    if dialect == "sqlite":  # Julian days as a double: whole seconds survive rounding to 1 ms
        days = exp.Sub(this=exp.Anonymous(this="JULIANDAY", expressions=[time]), expression=number(2440587.5))
        return exp.Round(this=exp.Mul(this=exp.Paren(this=days), expression=number(86400.0)), decimals=number(3))
    if dialect == "mysql":  # (the plugin pins the session to UTC, so this is the stored time)
        return exp.Anonymous(this="UNIX_TIMESTAMP", expressions=[stamp])
    if dialect == "clickhouse":
        return exp.Anonymous(this="toUnixTimestamp", expressions=[stamp])
    if dialect == "bigquery":
        return exp.Anonymous(this="UNIX_SECONDS", expressions=[stamp])
    if dialect == "tsql":
        return exp.Anonymous(this="DATEDIFF_BIG", expressions=[exp.var("SECOND"), exp.Literal.string("1970-01-01"),
                                                               stamp])
    if dialect == "oracle":  # (dates subtract to days)
        days = exp.Sub(this=cast(time, "DATE"), expression=exp.Anonymous(this="DATE", expressions=[
            exp.Literal.string("1970-01-01")]))
        return exp.Mul(this=exp.Paren(this=days), expression=number(86400))
    return exp.TimeToUnix(this=stamp)


def attributes(base: SourceSpec, per: str) -> bool:
    """Whether conversions need attributing: unless ``per`` is the base source's whole primary key,
    a conversion may follow several base events of its entity and is counted for one. (The key is
    trusted to be unique, as a relationship's join to it is; a history source's key names an
    entity with many versions, so it never qualifies.)"""
    return base.primary_key != (per,) or bool(base.valid_from)


def conversion_relation(reader: "SourceReader", source: SourceSpec, alias: str, events: bool = True) -> exp.Expression:
    """The rows of conversion source ``source``: one per conversion attributed to a base event,
    with that base event's columns and converted_at, seconds_to_convert and days_to_convert,
    then (``events``) every base event once more, marked as no conversion.

    Times are compared as stored (instants, not the project's local clock): '7 days' is 7 x 24
    hours, and the seconds between two events are exact across a change of daylight saving time."""
    spec = source.conversion
    model = reader.model
    base, to = model.sources[spec.from_], model.sources[spec.to]
    base_alias, to_alias, joined = f"{alias}__from", f"{alias}__to", f"{alias}__conversions"
    attributed = attributes(base, spec.per)

    def to_column(name: str) -> exp.Expression:
        return reader.column(to, name, to_alias, local=False)

    def base_column(name: str) -> exp.Expression:
        return reader.column(base, name, base_alias, local=False)

    same = {name: f"__kpi_same_{i}" for i, name in enumerate(spec.same)}
    selects = [exp.alias_(to_column(spec.per), ident(_ENTITY), copy=False),
               exp.alias_(to_column(to.time), ident(_CONVERTED), copy=False),
               *[exp.alias_(to_column(name), ident(alias_), copy=False) for name, alias_ in same.items()]]
    if attributed:
        # Every conversion row numbered once: the number tells the rows apart after the join (two
        # signups of one visitor at the same time are two conversions).
        numbered = exp.Window(this=exp.RowNumber(), order=exp.Order(expressions=[
            exp.Ordered(this=to_column(spec.per), nulls_first=False),
            exp.Ordered(this=to_column(to.time), nulls_first=False)]))
        selects.append(exp.alias_(numbered, ident(_CONVERSION), copy=False))
    conversions = exp.select(*selects, copy=False).from_(reader.relation(to, to_alias), copy=False) \
        .where(exp.and_(exp.Is(this=to_column(to.time), expression=exp.Not(this=exp.Null())),
                        exp.Is(this=to_column(spec.per), expression=exp.Not(this=exp.Null())), copy=False), copy=False)

    base_time, converted = base_column(base.time), col(_CONVERTED, joined)
    on = [exp.EQ(this=base_column(spec.per), expression=col(_ENTITY, joined)),
          exp.LTE(this=base_time.copy(), expression=converted.copy())]
    if spec.within is not None:
        on.append(exp.LTE(this=converted.copy(), expression=window_end(base_time.copy(), spec.within, reader.dialect)))
    on += [exp.EQ(this=base_column(name), expression=col(alias_, joined)) for name, alias_ in same.items()]

    if attributed:
        # last_touch keeps the latest base event before the conversion, first_touch the earliest in
        # the window; events at the same time are told apart by the key, else by the dimensions.
        latest = spec.attribution == "last_touch"
        order = [exp.Ordered(this=base_time.copy(), desc=latest, nulls_first=False)]
        tie_breaks = base.primary_key or tuple(dim.column for dim in base.dimensions)  # a key is unique: enough
        order += [exp.Ordered(this=base_column(name), nulls_first=False) for name in tie_breaks]
        touch: exp.Expression = exp.Window(this=exp.RowNumber(), partition_by=[col(_CONVERSION, joined)],
                                           order=exp.Order(expressions=order))
    else:  # one base event per entity: a conversion pairs with at most one, which is its touch
        touch = number(1)
    seconds = exp.Sub(this=_epoch(converted.copy(), reader.dialect), expression=_epoch(base_time.copy(), reader.dialect))
    days = exp.Div(this=exp.Paren(this=seconds.copy()), expression=number(_SECONDS_PER_DAY), typed=False, safe=False)
    converted_at, seconds_to, days_to = CONVERSION_COLUMNS
    pairs = exp.select(exp.Column(this=exp.Star(), table=ident(base_alias)),
                       exp.alias_(converted.copy(), ident(converted_at), copy=False),
                       exp.alias_(seconds, ident(seconds_to), copy=False),
                       exp.alias_(days, ident(days_to), copy=False),
                       exp.alias_(touch, ident(_TOUCH), copy=False), copy=False) \
        .from_(reader.relation(base, base_alias), copy=False)
    # (Select.join would parse its join type on every call.)
    pairs.append("joins", exp.Join(this=exp.Subquery(this=conversions, alias=exp.TableAlias(this=ident(joined))),
                                   kind="INNER", on=exp.and_(*on, copy=False)))
    rows: exp.Expression = pairs
    if attributed:
        rows = exp.select(exp.Star(), copy=False) \
            .from_(exp.Subquery(this=pairs, alias=exp.TableAlias(this=ident(f"{alias}__pairs"))), copy=False) \
            .where(converted_only(f"{alias}__pairs"), copy=False)
    if events:
        # Every base event once more, marked as no conversion: the source then has rows wherever the
        # base events do, so its count is 0 (not missing) in a period with visits and no signup.
        nulls = [exp.alias_(exp.Null(), ident(name), copy=False) for name in CONVERSION_COLUMNS]
        stacked = exp.select(exp.Column(this=exp.Star(), table=ident(base_alias)), *nulls,
                             exp.alias_(number(0), ident(_TOUCH), copy=False), copy=False) \
            .from_(reader.relation(base, base_alias), copy=False)
        rows = exp.Union(this=rows, expression=stacked, distinct=False)
    return exp.Subquery(this=rows, alias=exp.TableAlias(this=ident(alias)))


def events_read_elsewhere(model: "Model", reads: Iterable[str], readers: Iterable[set[str]], windowed: set[str],
                          routed: Callable[[str], bool]) -> set[str]:
    """The conversion sources a request can read without their base events. Those rows only give
    the source a row (with no conversion) wherever its base source has one; when the request
    groups the base source itself over the same range, --where and dimensions, that read puts the
    same keys in the key union, and a key without a row of the conversion source reads as one
    with no conversion does (0 for counts and sums, null otherwise). Not when a formula reads the
    conversions without the base source (it would be blanked where only the base has a row), a
    time function reads them (its windows reach other periods), the source is placed at another
    time (converted_at) or a rollup answers the base source (its keys are the rollup's)."""
    reads = set(reads)
    readers = list(readers)
    chosen = set()
    for name in reads:
        source = model.sources[name]
        spec = source.conversion
        if spec is None or spec.from_ not in reads or name in windowed:
            continue
        if source.time != model.sources[spec.from_].time or routed(spec.from_):
            continue
        if all(spec.from_ in sources for sources in readers if name in sources):
            chosen.add(name)
    return chosen


def converted_only(table: str) -> exp.Expression:
    """The condition every aggregate over a conversion source adds: a conversion's row, not one
    of the base events it carries to give the source the base events' rows."""
    return exp.EQ(this=col(_TOUCH, table), expression=number(1))


def described(source: SourceSpec, to: SourceSpec, warehouse: Catalog) -> dict[str, str] | None:
    """The columns of a conversion source as the warehouse has them: its base source's, and the
    three it adds, converted_at typed as the time of ``to`` (None while a source is not described)."""
    spec = source.conversion
    if spec.from_ not in warehouse or spec.to not in warehouse:
        return None
    converted_at, seconds_to, days_to = CONVERSION_COLUMNS
    return {**warehouse[spec.from_], converted_at: warehouse[spec.to].get(to.time, UNKNOWN),
            seconds_to: NUMBER, days_to: NUMBER}


def conversion_errors(project: Project, catalog: Catalog, warehouse: Catalog) -> list[KpiEngineError]:
    """The entity and the 'same' columns exist in both sources; the base source has no column of
    the names a conversion source adds (they would hide each other)."""
    errors: list[KpiEngineError] = []
    for source in project.sources.values():
        spec = source.conversion
        if spec is None or source.unmapped:
            continue
        for role, name in (("from", spec.from_), ("to", spec.to)):
            columns = catalog.get(name)
            if columns is None:
                continue
            for key, column in [("per", spec.per)] + [("same", c) for c in spec.same]:
                if column not in columns:
                    errors.append(ResolveError(
                        f"conversion source '{source.name}': '{key}: {column}' is not a column of source '{name}' "
                        f"(its '{role}').", source.where("conversion", key),
                        (did_you_mean(column, columns) or "") + f" Both '{spec.from_}' and '{spec.to}' need it; "
                        f"map it on the one that names it otherwise ('map: {{{column}: <its column>}}')."))
        clashes = [c for c in CONVERSION_COLUMNS if c in (warehouse.get(spec.from_) or {})]
        if clashes:
            errors.append(ResolveError(
                f"conversion source '{source.name}': source '{spec.from_}' has a column '{clashes[0]}', a name the "
                "conversion source gives its own column.", source.where("conversion", "from"),
                f"Read '{spec.from_}' through a 'sql:' that renames it; {', '.join(CONVERSION_COLUMNS)} are reserved."))
    return errors
