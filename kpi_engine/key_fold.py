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

When every source reaches its dimensions through the same lookup table joined to its day totals
(source_sql.joined_on_days: channel -> channel_group through ``channels``), the sources' day
totals are stacked instead, by day and the lookup's key, the lookup is joined once to the stack,
and the stack is grouped by the period and the lookup's columns, adding up as each source's
second step did (sums and counts by SUM, min by MIN, max and the presence marker by MAX). The
same rows, because the lookup is joined on its whole key (at most one row per key), so each
source's value for a group is the same aggregate of the same day totals; one join instead of one
per source, and one grouping step instead of two. That is the shape of the hand-written quarter
query of the side-by-side suite.

Only for DuckDB: in PostgreSQL an untyped NULL in two branches of a UNION ALL becomes text and then
clashes with the branch holding numbers; other dialects keep the joins they were tested with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, MutableMapping, Sequence

from sqlglot import exp

from .sql_build import aliased, col, ident, left_join, number, table_ref

FOLD_DIALECTS = ("duckdb",)


LOOKUP_KEY = "__kpi_lookup_key"  # the lookup's key in each stacked branch
LOOKUP_ALIAS = "__kpi_lookup"
_SLOT = "__kpi_slot"  # stands for the day totals' column in a key's expression, to compare them


@dataclass
class SharedLookup:
    """The lookup table every source joins to its day totals: the table (without alias), its key
    column, the dimensions read from it (dimension -> column), each other key as an expression of
    one column of the day totals (the same in every source: the period's bucket, a dimension), and
    per source its day totals' CTE and the column each of its columns is read from (None: the
    presence marker) with how it adds up (SUM, MIN or MAX)."""
    table: exp.Table
    key: str
    attributes: dict[str, str]
    key_shapes: dict[str, exp.Expression]
    days: dict[str, str]
    day_columns: dict[tuple[str, str], tuple[str | None, type]]
    day_keys: dict[tuple[str, str], str]


def _one_column(value: exp.Expression, table: str) -> tuple[str, exp.Expression] | None:
    """(column, shape) when ``value`` reads exactly one column, of ``table``: the shape is value
    with that column replaced by a placeholder, to compare the same expression across sources."""
    columns = list(value.find_all(exp.Column))
    if len(columns) != 1 or columns[0].table != table:
        return None
    if value is columns[0]:
        return columns[0].name, col(_SLOT)
    shape = value.copy()
    next(shape.find_all(exp.Column)).replace(col(_SLOT))
    return columns[0].name, shape


def shared_lookup(ctes: Mapping[str, exp.Expression], names: Sequence[str], keys: Sequence[str]
                  ) -> SharedLookup | None:
    """The lookup every CTE of ``names`` joins, when each is the second step of a source grouped
    by day (source_sql.days_to_periods): FROM its day totals, one LEFT JOIN of a plain table on one
    key column, the keys it does not read from that table each one column of the day totals under
    the same expression, and every other column a SUM, MIN or MAX of one column of the day totals
    or the presence marker 1. The same table, key and columns in each; None if one is not so."""
    found: SharedLookup | None = None
    for name in names:
        select = ctes.get(name)
        if not isinstance(select, exp.Select) or any(select.args.get(a) for a in ("where", "having", "qualify")):
            return None
        source = select.args.get("from_")
        joins = select.args.get("joins") or []
        if (source is None or not isinstance(source.this, exp.Table) or source.this.alias
                or len(joins) != 1 or joins[0].side != "LEFT" or not isinstance(joins[0].this, exp.Table)):
            return None
        days, alias, on = source.this.name, joins[0].this.alias_or_name, joins[0].args.get("on")
        if not isinstance(on, exp.EQ) or not all(isinstance(side, exp.Column) for side in (on.this, on.expression)):
            return None
        there = [side for side in (on.this, on.expression) if side.table == alias]
        here = [side for side in (on.this, on.expression) if side.table == days]
        if len(there) != 1 or len(here) != 1:
            return None
        attributes: dict[str, str] = {}
        shapes: dict[str, exp.Expression] = {}
        day_columns: dict[tuple[str, str], tuple[str | None, type]] = {}
        day_keys: dict[tuple[str, str], str] = {}
        for projection in select.expressions:
            value, out = (projection.this if isinstance(projection, exp.Alias) else projection), projection.alias_or_name
            if out in keys and isinstance(value, exp.Column) and value.table == alias:
                attributes[out] = value.name
            elif out in keys:
                read = _one_column(value, days)
                if read is None:
                    return None
                day_keys[(name, out)], shapes[out] = read
            elif isinstance(value, exp.Literal) and not value.is_string and value.this == "1":  # presence marker
                day_columns[(name, out)] = (None, exp.Max)
            elif type(value) in (exp.Sum, exp.Min, exp.Max) and isinstance(value.this, exp.Column) \
                    and value.this.table == days:
                day_columns[(name, out)] = (value.this.name, type(value))
            else:
                return None
        table = joins[0].this.copy()
        table.set("alias", None)
        if not attributes or set(attributes) | set(shapes) != set(keys):
            return None
        if found is None:
            found = SharedLookup(table, there[0].name, attributes, shapes, {}, {}, {})
        elif (found.table != table or found.key != there[0].name or found.attributes != attributes
              or found.key_shapes != shapes):
            return None
        found.days[name] = days
        found.day_keys.update(day_keys)
        found.day_keys[(name, LOOKUP_KEY)] = here[0].name
        found.day_columns.update(day_columns)
    return found


def _stacked_days(lookup: SharedLookup, names: Sequence[str], keys: Sequence[str],
                  folded: Mapping[tuple[str, str], str]) -> exp.Select:
    """The keys' query when the lookup is shared: every source's day totals stacked (its key
    columns, the lookup's key, its own columns, NULL in the others'), the lookup joined once, and
    the stack grouped by the keys, each column added up as its source's second step did."""
    inner = "stacked"
    branch_keys = [k for k in keys if k not in lookup.attributes] + [LOOKUP_KEY]
    stacked = None
    for name in names:
        days = lookup.days[name]
        values = []
        for (source, column), alias in folded.items():
            day_column = lookup.day_columns[(source, column)][0] if source == name else None
            values.append(aliased(exp.Null() if source != name else number(1) if day_column is None
                                  else col(day_column, days), alias))
        branch = exp.Select(expressions=[aliased(col(lookup.day_keys[(name, k)], days), k) for k in branch_keys]
                            + values, from_=exp.From(this=table_ref(days)))
        stacked = branch if stacked is None else exp.Union(this=stacked, expression=branch, distinct=False)

    def key_value(k: str) -> exp.Expression:  # the key's expression over the stacked day column
        if k in lookup.attributes:
            return col(lookup.attributes[k], LOOKUP_ALIAS)
        shape = lookup.key_shapes[k].copy()
        if isinstance(shape, exp.Column):
            return col(k, inner)
        next(shape.find_all(exp.Column)).replace(col(k, inner))
        return shape

    values = [key_value(k) for k in keys]
    query = exp.Select(
        expressions=[aliased(value.copy(), k) for value, k in zip(values, keys)]
        + [aliased(lookup.day_columns[key][1](this=col(alias, inner)), alias) for key, alias in folded.items()],
        group=exp.Group(expressions=values),
        from_=exp.From(this=exp.Subquery(this=stacked, alias=exp.TableAlias(this=ident(inner)))))
    left_join(query, aliased(lookup.table.copy(), LOOKUP_ALIAS, table=True),
              exp.EQ(this=col(LOOKUP_KEY, inner), expression=col(lookup.key, LOOKUP_ALIAS)))
    return query


def fold_key_union(select: exp.Select, keys: Sequence[str], names: Sequence[str], key_table: str,
                   ctes: MutableMapping[str, exp.Expression] | None = None) -> exp.Select | None:
    """Rewrite ``select`` (FROM ``key_table`` LEFT JOIN each of ``names`` on the keys, and nothing
    else) in place to read the folded keys, and return the query that ``key_table`` must then
    hold; None (``select`` untouched) when it has any other join or a column name would clash.
    With ``ctes`` (name -> query), when every CTE of ``names`` joins the same lookup table to its
    day totals, the day totals are stacked instead and the lookup joined once (see the module's
    docstring); the CTEs of ``names`` are then removed from ``ctes``."""
    joins = select.args.get("joins") or []
    if [join.this.name for join in joins] != list(names) or any(
            join.side != "LEFT" or not isinstance(join.this, exp.Table) for join in joins):
        return None
    select.set("joins", None)  # the columns the rest of the query reads, not the join conditions
    folded: dict[tuple[str, str], str] = {}  # (CTE, column) -> its column in the folded keys
    references = [column for column in select.find_all(exp.Column) if column.table in names]
    for column in references:
        folded.setdefault((column.table, column.name), f"{column.table}__{column.name}")
    if set(folded.values()) & set(keys) or len(set(folded.values())) != len(folded):
        select.set("joins", joins)
        return None
    for column in references:
        column.replace(col(folded[(column.table, column.name)], key_table))
    lookup = shared_lookup(ctes, names, keys) if ctes is not None else None
    if lookup is not None and LOOKUP_KEY not in keys and set(folded) <= set(lookup.day_columns):
        for name in names:  # read from their day totals now
            del ctes[name]
        return _stacked_days(lookup, names, keys, folded)

    # Nodes built whole (one Select per branch), not column by column: this runs on every compile.
    stacked = None
    for name in names:
        branch = exp.Select(expressions=[col(k, name) for k in keys] + [
            aliased(col(column, name) if source == name else exp.Null(), alias)
            for (source, column), alias in folded.items()], from_=exp.From(this=table_ref(name)))
        stacked = branch if stacked is None else exp.Union(this=stacked, expression=branch, distinct=False)
    inner = "stacked"
    return exp.Select(
        expressions=[col(k, inner) for k in keys]
        + [aliased(exp.Max(this=col(alias, inner)), alias) for alias in folded.values()],
        group=exp.Group(expressions=[col(k, inner) for k in keys]),
        from_=exp.From(this=exp.Subquery(this=stacked, alias=exp.TableAlias(this=ident(inner)))))
