"""The named parts of a compiled query, whatever shape holds them: a CTE, or the subquery that
stands where a CTE read once was (DuckDB writes those in place: kpi_engine/cte_inline.py)."""

from __future__ import annotations

import sqlglot
from sqlglot import exp


def named_parts(sql: str, dialect: str = "duckdb") -> dict[str, str]:
    """{name: the SQL of its SELECT} for every CTE and aliased subquery of ``sql`` (a name used by
    several subqueries, such as a filtered table's, keeps the last)."""
    tree = sqlglot.parse_one(sql, read=dialect)
    return {part.alias: part.this.sql(dialect=dialect) for part in tree.find_all(exp.CTE, exp.Subquery) if part.alias}
