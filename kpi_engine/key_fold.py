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

Only for DuckDB: in PostgreSQL an untyped NULL in two branches of a UNION ALL becomes text and then
clashes with the branch holding numbers; other dialects keep the joins they were tested with.
"""

from __future__ import annotations

from typing import Sequence

from sqlglot import exp

from .sql_build import aliased, col, ident, table_ref

FOLD_DIALECTS = ("duckdb",)


def fold_key_union(select: exp.Select, keys: Sequence[str], names: Sequence[str], key_table: str
                   ) -> exp.Select | None:
    """Rewrite ``select`` (FROM ``key_table`` LEFT JOIN each of ``names`` on the keys, and nothing
    else) in place to read the folded keys, and return the query that ``key_table`` must then
    hold; None (``select`` untouched) when it has any other join or a column name would clash."""
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
