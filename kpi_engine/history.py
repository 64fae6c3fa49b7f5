"""History sources (slowly changing dimensions, type 2): which version of a key a row joins.

A history source declares ``valid_from`` (and usually ``valid_to``): each of its rows is one
version of an entity (its key: the primary key without valid_from), holding from valid_from up
to, not including, valid_to (empty: still current). A relationship to it joins each fact row to
the version that held at the fact's time, or (``as_of: latest``) to each key's latest version.

Histories are not always clean, and a fact must never be counted twice, so each key keeps one
version per valid_from (the one that runs longest; then the smallest values of the columns read
from it, so the choice does not depend on the order rows come in), and a version ends where the
next one starts, whatever its valid_to says: at any time at most one version holds.
"""

from __future__ import annotations

from typing import Callable, Sequence

from sqlglot import exp

from .errors import QueryError
from .spec import Relationship, SourceSpec
from .sql_build import col, ident, number, wrap

VERSION, NEXT_FROM = "__kpi_version", "__kpi_next_from"

Column = Callable[[str, str], exp.Expression]  # (column of the history source, table alias) -> expression


def versions(target: SourceSpec, relation: exp.Expression, alias: str, keys: Sequence[str], column: Column,
             latest: bool) -> exp.Expression:
    """The history source's versions a relationship joins, as a subquery named ``alias``: one per
    key and valid_from with the start of the next version (``NEXT_FROM``), or with ``latest``
    one per key, the latest."""
    start = column(target.valid_from, alias)
    order = []
    if target.valid_to:  # the longest-running first; an open one (NULL) runs longest
        order.append(exp.Ordered(this=column(target.valid_to, alias), desc=True, nulls_first=True))
    read = [d.column for d in target.dimensions] + [a for rel in target.relationships for a, _ in rel.columns]
    order += [exp.Ordered(this=column(name, alias), nulls_first=False) for name in dict.fromkeys(read)]
    partition = [column(k, alias) for k in keys]
    if latest:
        order.insert(0, exp.Ordered(this=start.copy(), desc=True))
    else:
        partition.append(start.copy())
    rank = exp.Window(this=exp.RowNumber(), partition_by=partition, order=exp.Order(expressions=order))
    ranked = exp.select(exp.Column(this=exp.Star(), table=ident(alias)), exp.alias_(rank, ident(VERSION), copy=False),
                        copy=False).from_(relation, copy=False) \
        .where(exp.Is(this=start.copy(), expression=exp.Not(this=exp.Null())), copy=False)
    kept = exp.EQ(this=col(VERSION, alias), expression=number(1))
    selects: list[exp.Expression] = [exp.Column(this=exp.Star(), table=ident(alias))]
    if not latest:  # windows run after WHERE: the next of the versions kept
        following = exp.Window(this=exp.Lead(this=start.copy()), partition_by=[column(k, alias) for k in keys],
                               order=exp.Order(expressions=[exp.Ordered(this=start.copy())]))
        selects.append(exp.alias_(following, ident(NEXT_FROM), copy=False))
    query = exp.select(*selects, copy=False) \
        .from_(exp.Subquery(this=ranked, alias=exp.TableAlias(this=ident(alias))), copy=False).where(kept, copy=False)
    return exp.Subquery(this=query, alias=exp.TableAlias(this=ident(alias)))


def held_at(target: SourceSpec, alias: str, column: Column, time: exp.Expression) -> exp.Expression:
    """The version (of ``versions``) held at ``time``: valid_from <= time < valid_to and before
    the next version's start. Both sides are compared as stored (no time zone conversion)."""
    start = column(target.valid_from, alias)
    ends = [col(NEXT_FROM, alias)] + ([column(target.valid_to, alias)] if target.valid_to else [])
    conditions = [exp.LTE(this=start, expression=time.copy())]
    for end in ends:
        conditions.append(wrap(exp.or_(exp.Is(this=end, expression=exp.Null()),
                                       exp.LT(this=time.copy(), expression=end.copy()), copy=False)))
    return exp.and_(*conditions, copy=False)


def check_fact_time(fact: SourceSpec, rel: Relationship) -> None:
    """A version held at the row's time needs one time per row: a time column, not an interval."""
    if fact.time and not fact.time_end:
        return
    problem = "is an interval source (time_end): its rows span many times" if fact.time else "has no time column"
    raise QueryError(f"'{fact.name}' cannot be joined to the history source '{rel.to}' at each row's time: it "
                     f"{problem}.", fact.where(key=True),
                     f"Add 'as_of: latest' to the relationship to {rel.to} for each key's latest version, or slice a "
                     "KPI over a source with a time column.")


# Dialects where the join is not known to give the right numbers: ClickHouse's lead() is recent
# (leadInFrame reads the frame, not the partition) and its LEFT JOIN fills defaults, not NULLs.
UNVERIFIED = {"clickhouse": "ClickHouse"}


def check_dialect(dialect: str, rel: Relationship) -> None:
    if dialect in UNVERIFIED:
        raise QueryError(f"joining the history source '{rel.to}' is not supported on {UNVERIFIED[dialect]} yet: "
                         "its window and join semantics differ where a wrong version would be picked silently.", None,
                         "Slice by a dimension of a source without history, or run the request on DuckDB, "
                         "PostgreSQL, SQLite, MySQL, Spark or another warehouse with standard window functions.")
