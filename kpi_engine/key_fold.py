"""Several sources lined up by key: stacked and grouped once instead of a key union joined to each.

The compiler lines up the grouped CTEs of several sources by building ``keys`` (the UNION of
every CTE's keys) and LEFT JOINing each CTE to it, null-safe. On DuckDB the same rows come out of
one UNION ALL of the CTEs (each branch carrying its own columns, NULL in the others') grouped by
the keys: one hash aggregate instead of a distinct union and a hash join per source. That is the
shape an expert writes (benchmarks/sidebyside/*.sql) and a millisecond or two less per query on
the side-by-side suite at 1M leads (docs/performance.md).

It is the same result because each grouped CTE has at most one row per key: in a key's group every
column has that one row's value or NULL, so MAX gives it back unchanged (whatever its type, a NULL
value included); a key group holds NULL keys together as IS NOT DISTINCT FROM matched them.

When every source is grouped by day first (source_sql.days_to_periods: its second step cuts the
day totals into periods), the day totals are stacked instead and cut into periods once, the stack
grouped by the period (and the dimensions), adding up as each source's second step did (sums and
counts by SUM, min by MIN, max and the presence marker by MAX): the same aggregate of the same
day totals, with one grouping step instead of one per source. If every source also reaches its
dimensions through the same lookup table joined to its day totals (source_sql.joined_on_days:
channel -> channel_group through ``channels``), the day totals are stacked by the lookup's key
and the lookup joined once, to the stack: the lookup is joined on its whole key (at most one row
per key), so each day total meets the same lookup row either way. One join instead of one per
source: the shape of the hand-written quarter query of the side-by-side suite. Whether the day
totals can be stacked is read off what each source read knows (a DaySource, from
source_sql.SourceReader.day_source) before any second step is built: stacked, none is. (The key
union and its joins, which the fold replaces, are built by the compiler only when it declines.)

Only for DuckDB: in PostgreSQL an untyped NULL in two branches of a UNION ALL becomes text and then
clashes with the branch holding numbers; other dialects keep the joins they were tested with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, MutableMapping, Sequence

from sqlglot import exp

from .sql_build import aliased, col, copy_of, ident, left_join, number, table_ref
from .tree_walk import columns_in

FOLD_DIALECTS = ("duckdb",)


LOOKUP_KEY = "__kpi_lookup_key"  # the lookup's key in each stacked branch
LOOKUP_ALIAS = "__kpi_lookup"
SLOT = "__kpi_slot"  # stands for the day totals' column in a key's expression, to compare them
STACKED = "stacked"  # the alias of the stacked rows


@dataclass
class DayStack:
    """Every source's day totals, to stack: the lookup table each joins (None when none does),
    without alias, its key column and the dimensions read from it (dimension -> column); each
    other key as an expression of one column of the day totals (the same in every source: the
    period's bucket, a dimension); per source its day totals' CTE, the day column of each key,
    and the day column each of its columns is read from (None: the presence marker) with how it
    adds up (SUM, MIN or MAX)."""
    table: exp.Table | None
    key: str | None
    attributes: dict[str, str]
    key_shapes: dict[str, exp.Expression]
    days: dict[str, str]
    day_columns: dict[tuple[str, str], tuple[str | None, type]]
    day_keys: dict[tuple[str, str], str]


@dataclass
class DaySource:
    """What stacking needs of one source grouped by day, worked out before its second step is
    built (source_sql.SourceReader.day_source): its day totals' CTE; the lookup table joined to
    them (None: none), without alias, its key column and the day totals' column matched to it;
    each key read from the lookup (dimension -> its column); each other key as the day column it
    reads and its expression over that column (the column replaced by a placeholder, to compare
    across sources: one_column); each output column as the day column it adds up (None: the
    presence marker 1) and how (SUM, MIN or MAX)."""
    days: str
    table: exp.Table | None
    key: str | None
    day_key: str | None
    attributes: dict[str, str]
    key_columns: dict[str, tuple[str, exp.Expression]]
    columns: dict[str, tuple[str | None, type]]


def one_column(value: exp.Expression, table: str) -> tuple[str, exp.Expression] | None:
    """(column, shape) when ``value`` reads exactly one column, of ``table``: the shape is value
    with that column replaced by a placeholder, to compare the same expression across sources."""
    columns = columns_in(value)
    if len(columns) != 1 or columns[0].table != table:
        return None
    if value is columns[0]:
        return columns[0].name, col(SLOT)
    shape = copy_of(value)
    columns_in(shape)[0].replace(col(SLOT))
    return columns[0].name, shape


def day_stack(day_source: Callable[[str], DaySource | None], names: Sequence[str],
              keys: Sequence[str]) -> DayStack | None:
    """How to stack the day totals of every source of ``names``: each grouped by day (a
    DaySource), with the same lookup (or none), lookup key, dimensions read from it and
    expressions of the other keys, which together are ``keys``; None if one is not so."""
    found: DayStack | None = None
    for name in names:
        part = day_source(name)
        if part is None or (part.table is not None and not part.attributes):
            return None
        shapes = {k: shape for k, (_, shape) in part.key_columns.items()}
        if set(part.attributes) | set(shapes) != set(keys):
            return None
        if found is None:
            found = DayStack(part.table, part.key, dict(part.attributes), shapes, {}, {}, {})
        elif (found.table != part.table or found.key != part.key or found.attributes != part.attributes
              or found.key_shapes != shapes):
            return None
        found.days[name] = part.days
        found.day_keys.update({(name, k): column for k, (column, _) in part.key_columns.items()})
        if part.table is not None:
            found.day_keys[(name, LOOKUP_KEY)] = part.day_key
        found.day_columns.update({(name, out): how for out, how in part.columns.items()})
    return found


def _stacked_days(stack: DayStack, names: Sequence[str], keys: Sequence[str],
                  folded: Mapping[tuple[str, str], str]) -> exp.Select:
    """The keys' query from the day totals: every source's stacked (its keys' day columns, the
    lookup's key if any, its own columns, NULL in the others'), the lookup joined once, and the
    stack grouped by the keys, each column added up as its source's second step did."""
    branch_keys = [k for k in keys if k not in stack.attributes] + ([LOOKUP_KEY] if stack.table is not None else [])
    branches = []
    for name in names:
        days = stack.days[name]
        values = []
        for (source, column), alias in folded.items():
            day_column = stack.day_columns[(source, column)][0] if source == name else None
            values.append(aliased(exp.Null() if source != name else number(1) if day_column is None
                                  else col(day_column, days), alias))
        branches.append(exp.Select(expressions=[aliased(col(stack.day_keys[(name, k)], days), k) for k in branch_keys]
                                   + values, from_=exp.From(this=table_ref(days))))

    def key_value(k: str) -> exp.Expression:  # the key's expression over the stacked day column
        if k in stack.attributes:
            return col(stack.attributes[k], LOOKUP_ALIAS)
        shape = copy_of(stack.key_shapes[k])
        if isinstance(shape, exp.Column):
            return col(k, STACKED)
        columns_in(shape)[0].replace(col(k, STACKED))
        return shape

    values = [key_value(k) for k in keys]
    query = exp.Select(
        expressions=[aliased(copy_of(value), k) for value, k in zip(values, keys)]
        + [aliased(stack.day_columns[key][1](this=col(alias, STACKED)), alias) for key, alias in folded.items()],
        group=exp.Group(expressions=values), from_=_stacked(branches))
    if stack.table is not None:
        left_join(query, aliased(stack.table.copy(), LOOKUP_ALIAS, table=True),
                  exp.EQ(this=col(LOOKUP_KEY, STACKED), expression=col(stack.key, LOOKUP_ALIAS)))
    return query


def fold_key_union(select: exp.Select, keys: Sequence[str], names: Sequence[str], key_table: str,
                   ctes: MutableMapping[str, object] | None = None,
                   day_source: Callable[[str], DaySource | None] | None = None) -> exp.Select | None:
    """Rewrite ``select`` (FROM ``key_table`` LEFT JOIN each of ``names`` on the keys, and nothing
    else) in place to read the folded keys, and return the query that ``key_table`` must then
    hold; None (``select`` untouched) when it has any other join or a column name would clash.
    With ``day_source`` (name -> DaySource, or None for a CTE not grouped by day), when every CTE of
    ``names`` is the second step of a source grouped by day, their day totals are stacked
    instead (a shared lookup table joined once; see the module's docstring) and the CTEs of
    ``names`` removed from ``ctes`` (name -> query)."""
    joins = select.args.get("joins") or []
    if [join.this.name for join in joins] != list(names) or any(
            join.side != "LEFT" or not isinstance(join.this, exp.Table) for join in joins):
        return None
    select.set("joins", None)  # the columns the rest of the query reads, not the join conditions
    folded: dict[tuple[str, str], str] = {}  # (CTE, column) -> its column in the folded keys
    references = [column for column in columns_in(select) if column.table in names]
    for column in references:
        folded.setdefault((column.table, column.name), f"{column.table}__{column.name}")
    if set(folded.values()) & set(keys) or len(set(folded.values())) != len(folded):
        select.set("joins", joins)
        return None
    for column in references:
        column.replace(col(folded[(column.table, column.name)], key_table))
    stack = day_stack(day_source, names, keys) if day_source is not None and ctes is not None else None
    if stack is not None and LOOKUP_KEY not in keys and set(folded) <= set(stack.day_columns):
        for name in names:  # read from their day totals now
            del ctes[name]
        return _stacked_days(stack, names, keys, folded)
    return _stacked_rows(names, keys, folded)


def _stacked_rows(names: Sequence[str], keys: Sequence[str], folded: Mapping[tuple[str, str], str]) -> exp.Select:
    """The keys' query from the grouped CTEs ``names``: their rows stacked (their keys, their own
    columns, NULL in the others') and grouped by the keys, each column's one value per key by MAX."""
    # Nodes built whole (one Select per branch), not column by column: this runs on every compile.
    branches = [exp.Select(expressions=[col(k, name) for k in keys] + [
        aliased(col(column, name) if source == name else exp.Null(), alias)
        for (source, column), alias in folded.items()], from_=exp.From(this=table_ref(name))) for name in names]
    return exp.Select(
        expressions=[col(k, STACKED) for k in keys]
        + [aliased(exp.Max(this=col(alias, STACKED)), alias) for alias in folded.values()],
        group=exp.Group(expressions=[col(k, STACKED) for k in keys]), from_=_stacked(branches))


def _stacked(branches: Sequence[exp.Select]) -> exp.From:
    """FROM the branches stacked with UNION ALL, as ``stacked``."""
    stacked = branches[0]
    for branch in branches[1:]:
        stacked = exp.Union(this=stacked, expression=branch, distinct=False)
    return exp.From(this=exp.Subquery(this=stacked, alias=exp.TableAlias(this=ident(STACKED))))
