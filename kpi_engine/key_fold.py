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

When every source reaches its dimensions through the same lookup table, joined to its day totals
(source_sql.joined_on_days: channel -> channel_group through ``channels``), the lookup is instead
joined once, to the stacked rows: each source is grouped by the lookup's key, and the stack is
grouped by the lookup's columns, adding up across keys as each source did across its days (sum
and count by SUM, min by MIN, max and the presence marker by MAX). The same rows, because the
lookup is joined on its whole key (at most one row per key) and each source's value for a
group is then the same aggregate over the same day totals; one join instead of one per source.

Only for DuckDB: in PostgreSQL an untyped NULL in two branches of a UNION ALL becomes text and then
clashes with the branch holding numbers; other dialects keep the joins they were tested with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from sqlglot import exp

from .sql_build import aliased, col, ident, left_join, table_ref

FOLD_DIALECTS = ("duckdb",)


LOOKUP_KEY = "__kpi_lookup_key"  # the lookup's key in each stacked branch
LOOKUP_ALIAS = "__kpi_lookup"


@dataclass
class SharedLookup:
    """The lookup table every source joins to its day totals: the table (without alias), its key
    column, the dimensions read from it (dimension -> column), and per source the day totals'
    key column and how each of its columns adds up across keys."""
    table: exp.Table
    key: str
    attributes: dict[str, str]
    day_keys: dict[str, exp.Column]
    adding: dict[tuple[str, str], type]


def _adding_up(value: exp.Expression) -> type | None:
    """How a grouped column adds up across groups (SUM, MIN or MAX), None if it does not."""
    if isinstance(value, exp.Literal) and value.this == "1":  # a presence marker
        return exp.Max
    inner = value.this if isinstance(value, exp.Coalesce) else value  # COALESCE(SUM(...), 0): a count
    inner = inner.this if isinstance(inner, exp.Filter) else inner  # SUM(...) FILTER (WHERE ...)
    if isinstance(value, exp.Coalesce) and not isinstance(inner, exp.Sum):
        return None
    return type(inner) if type(inner) in (exp.Sum, exp.Min, exp.Max) else None


def shared_lookup(ctes: Mapping[str, exp.Expression], names: Sequence[str], keys: Sequence[str]
                  ) -> SharedLookup | None:
    """The lookup every CTE of ``names`` joins (one LEFT JOIN of a plain table on one key column,
    nothing else) and reads some of ``keys`` from, the same table, key and columns in each; None
    if one does not."""
    found: SharedLookup | None = None
    for name in names:
        select = ctes.get(name)
        if not isinstance(select, exp.Select) or any(select.args.get(a) for a in ("where", "having", "qualify")):
            return None
        joins = select.args.get("joins") or []
        if len(joins) != 1 or joins[0].side != "LEFT" or not isinstance(joins[0].this, exp.Table):
            return None
        alias, on = joins[0].this.alias_or_name, joins[0].args.get("on")
        if not isinstance(on, exp.EQ) or not all(isinstance(side, exp.Column) for side in (on.this, on.expression)):
            return None
        there = [side for side in (on.this, on.expression) if side.table == alias]
        here = [side for side in (on.this, on.expression) if side.table != alias]
        if len(there) != 1 or len(here) != 1:
            return None
        attributes: dict[str, str] = {}
        adding: dict[tuple[str, str], type] = {}
        for projection in select.expressions:
            value = projection.this if isinstance(projection, exp.Alias) else projection
            reads_lookup = any(column.table == alias for column in value.find_all(exp.Column))
            if projection.alias_or_name in keys:
                if isinstance(value, exp.Column) and value.table == alias:
                    attributes[projection.alias_or_name] = value.name
                elif reads_lookup:
                    return None
            elif reads_lookup or _adding_up(value) is None:
                return None
            else:
                adding[(name, projection.alias_or_name)] = _adding_up(value)
        table = joins[0].this.copy()
        table.set("alias", None)
        if not attributes:
            return None
        if found is None:
            found = SharedLookup(table, there[0].name, attributes, {}, {})
        elif found.table != table or found.key != there[0].name or found.attributes != attributes:
            return None
        found.day_keys[name] = here[0]
        found.adding.update(adding)
    return found


def _group_by_lookup_key(select: exp.Select, day_key: exp.Column) -> None:
    """Rewrite a source's grouped CTE in place: grouped by the lookup's key instead of the
    columns it read from the lookup, whose join it drops."""
    alias = select.args["joins"][0].this.alias_or_name
    select.set("joins", None)
    select.set("expressions", [p for p in select.expressions if not (
        isinstance(p, exp.Alias) and isinstance(p.this, exp.Column) and p.this.table == alias)]
        + [aliased(day_key.copy(), LOOKUP_KEY)])
    group = [e for e in select.args["group"].expressions if not (isinstance(e, exp.Column) and e.table == alias)]
    select.set("group", exp.Group(expressions=group + [day_key.copy()]))


def fold_key_union(select: exp.Select, keys: Sequence[str], names: Sequence[str], key_table: str,
                   ctes: Mapping[str, exp.Expression] | None = None) -> exp.Select | None:
    """Rewrite ``select`` (FROM ``key_table`` LEFT JOIN each of ``names`` on the keys, and nothing
    else) in place to read the folded keys, and return the query that ``key_table`` must then
    hold; None (``select`` untouched) when it has any other join or a column name would clash.
    With ``ctes`` (name -> query), a lookup table every source of ``names`` joins is joined once
    to the stacked rows instead (see the module's docstring); those CTEs are rewritten in place."""
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
    if lookup is not None and (LOOKUP_KEY in keys or not set(folded) <= set(lookup.adding)):
        lookup = None
    if lookup is not None:
        for name in names:
            _group_by_lookup_key(ctes[name], lookup.day_keys[name])
    stacked_keys = [k for k in keys if lookup is None or k not in lookup.attributes] \
        + ([LOOKUP_KEY] if lookup is not None else [])

    # Nodes built whole (one Select per branch), not column by column: this runs on every compile.
    stacked = None
    for name in names:
        branch = exp.Select(expressions=[col(k, name) for k in stacked_keys] + [
            aliased(col(column, name) if source == name else exp.Null(), alias)
            for (source, column), alias in folded.items()], from_=exp.From(this=table_ref(name)))
        stacked = branch if stacked is None else exp.Union(this=stacked, expression=branch, distinct=False)
    inner = "stacked"
    source = exp.From(this=exp.Subquery(this=stacked, alias=exp.TableAlias(this=ident(inner))))
    if lookup is None:
        return exp.Select(
            expressions=[col(k, inner) for k in keys]
            + [aliased(exp.Max(this=col(alias, inner)), alias) for alias in folded.values()],
            group=exp.Group(expressions=[col(k, inner) for k in keys]), from_=source)
    key_values = [col(lookup.attributes[k], LOOKUP_ALIAS) if k in lookup.attributes else col(k, inner) for k in keys]
    joined = exp.Select(
        expressions=[aliased(value.copy(), k) for value, k in zip(key_values, keys)]
        + [aliased(lookup.adding[key](this=col(alias, inner)), alias) for key, alias in folded.items()],
        group=exp.Group(expressions=key_values), from_=source)
    left_join(joined, aliased(lookup.table.copy(), LOOKUP_ALIAS, table=True),
              exp.EQ(this=col(LOOKUP_KEY, inner), expression=col(lookup.key, LOOKUP_ALIAS)))
    return joined
