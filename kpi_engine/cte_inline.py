"""A query's CTEs attached to it, those read once written in place (DuckDB).

DuckDB inlines a CTE read once anyway, so the rows and the plan it executes are the same; but
binding and planning the CTE costs more than binding the same SELECT written as a derived
table: about 0.3 ms of a 6 ms query of day totals cut into months (benchmarks/sidebyside.py,
docs/performance.md). So for DuckDB each CTE read exactly once becomes a derived table under
the CTE's name at the place it is read; CTEs read twice or more stay in the WITH clause (written
twice, DuckDB may compute them twice). The subquery keeps the CTE's name as its alias, so the
plan's step names (explain) still name a part of the query.
"""

from __future__ import annotations

from typing import Iterable

from sqlglot import exp

from .sql_build import ident
from .tree_walk import tables_in

INLINE_DIALECTS = frozenset({"duckdb"})



def attach_ctes(query: exp.Select, ctes: Iterable[tuple[str, exp.Expression]], dialect: str) -> exp.Select:
    """``query`` with ``ctes`` (in order: a CTE reads only those before it) as its WITH clause;
    in INLINE_DIALECTS each CTE read exactly once is written where it is read instead."""
    ctes = list(ctes)
    if dialect in INLINE_DIALECTS and ctes:
        ctes = _inline_read_once(query, ctes)
    for name, cte in ctes:
        query = query.with_(ident(name), as_=cte, copy=False)
    return query


def _inline_read_once(query: exp.Select, ctes: list[tuple[str, exp.Expression]]) -> list[tuple[str, exp.Expression]]:
    """Move each CTE read once into its reader; returns the CTEs left. A name means the CTE only
    in the CTEs after it and in the query; a table of the warehouse read by a CTE before one of
    the same name (which nothing moved could tell apart from it) leaves every CTE where it is."""
    # Names compared case-blind: DuckDB's are (a table "Series" is hidden by a CTE "series").
    position = {name.lower(): i for i, (name, _) in enumerate(ctes)}
    if len(position) < len(ctes):
        return ctes
    reads: dict[str, list[exp.Table]] = {name: [] for name in position}
    for i, tree in enumerate([cte for _, cte in ctes] + [query]):
        tables = tables_in(tree)
        if tables is None:
            return ctes
        for table in tables:
            name = table.name.lower()
            if name not in position or table.args.get("db") or table.args.get("catalog"):
                continue
            if position[name] >= i:  # a warehouse table by a later CTE's name: moved, it would read the CTE
                return ctes
            reads[name].append(table)
    once = {name for name, tables in reads.items() if len(tables) == 1 and _plain(tables[0])}
    for name, cte in ctes:  # in order: a CTE moved in place already holds the ones it read
        if name.lower() in once:
            table = reads[name.lower()][0]
            alias = table.alias or name
            table.replace(exp.Subquery(this=cte, alias=exp.TableAlias(this=ident(alias))))
    return [(name, cte) for name, cte in ctes if name.lower() not in once]


def _plain(table: exp.Table) -> bool:
    """A reference that is a name and an alias only (no column aliases, hints, samples...)."""
    alias = table.args.get("alias")
    return ({key for key, value in table.args.items() if value} <= {"this", "alias"}
            and (alias is None or not alias.args.get("columns")))
