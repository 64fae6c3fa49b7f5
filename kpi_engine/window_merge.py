"""The series and its window stage folded into the output SELECT, where nothing stands between
them (DuckDB).

With one source and one level of time functions, the query the compiler builds is three SELECTs
over the source's grouped rows: ``series`` (the rows, their period index and the values with
the empty rule applied), ``windowed`` (``series.*`` and one window function per time function)
and the output (the KPI formulas over both). When the output neither filters nor groups, the
three are one SELECT: the window functions over the grouped rows directly, each written where
the output reads it. DuckDB then binds and plans two fewer SELECTs (about 0.3 ms of a 6 ms query
of daily spend with a 30-day window: docs/performance.md). The rows are the same: the window
functions see the same rows in the same partitions and order, since nothing filters between.

Only that shape is folded: any WHERE, GROUP BY, join or DISTINCT in the three, a second window
stage, or a window value read twice by the output (a formula such as ``(x - previous(x)) /
previous(x)`` would compute its window twice) leaves the query as it is.
"""

from __future__ import annotations

from sqlglot import exp

from .sql_build import copy_of
from .tree_walk import columns_in, projections
from .windows import SERIES_CTE, WINDOWED_CTE

# Clauses that put something between the rows read and the values written (the output's ORDER
# BY and LIMIT come after its window functions, so they may stay).
_BETWEEN = ("joins", "where", "group", "having", "qualify", "distinct", "windows", "laterals", "pivots", "with_")
_AFTER = ("order", "limit", "offset")


def merge_window_steps(query: exp.Select, ctes: list[tuple[str, exp.Expression]]
                       ) -> tuple[exp.Select, list[tuple[str, exp.Expression]]]:
    """(query, CTEs) with ``series`` and ``windowed`` folded into the output when the shape
    allows (see the module's notes); else both unchanged."""
    by_name = dict(ctes)
    series, windowed = by_name.get(SERIES_CTE), by_name.get(WINDOWED_CTE)
    if not (isinstance(series, exp.Select) and isinstance(windowed, exp.Select) and f"{WINDOWED_CTE}_2" not in by_name):
        return query, ctes
    if not (_reads(query, WINDOWED_CTE, _AFTER) and _reads(windowed, SERIES_CTE) and _reads(series, None)):
        return query, ctes
    row_values = projections(series)
    first, *window_columns = windowed.expressions
    if row_values is None or not (isinstance(first, exp.Column) and isinstance(first.this, exp.Star)
                                  and first.table == SERIES_CTE):
        return query, ctes
    windows = {}
    for column in window_columns:
        if not isinstance(column, exp.Alias):
            return query, ctes
        windows[column.alias] = column.this
    reads = [column for column in columns_in(query) if column.table == WINDOWED_CTE]
    names = [column.name for column in reads]
    inner = [column.name for window in windows.values() for column in columns_in(window)
             if column.table == SERIES_CTE]
    if (any(names.count(name) > 1 for name in windows)
            or not all(name in windows or name in row_values for name in names)
            or not all(name in row_values for name in inner)):
        return query, ctes

    def row_value(node: exp.Expression) -> exp.Expression:
        return copy_of(row_values[node.name]) if isinstance(node, exp.Column) and node.table == SERIES_CTE else node

    for column in reads:
        if column.name in windows:  # (without a grain a running total is the series' column itself)
            column.replace(windows[column.name].transform(row_value, copy=False))
        else:
            column.replace(copy_of(row_values[column.name]))
    query.set("from_", series.args["from_"])
    return query, [(name, cte) for name, cte in ctes if name not in (SERIES_CTE, WINDOWED_CTE)]


def _reads(select: exp.Select, table: str | None, allowed: tuple[str, ...] = ()) -> bool:
    """``select`` reads one relation (named ``table``, or any table if None) with no clause but
    its columns and the ``allowed`` ones."""
    source = select.args.get("from_")
    if source is None or not isinstance(source.this, exp.Table) or (table is not None and source.this.name != table):
        return False
    return not any(select.args.get(key) for key in _BETWEEN + tuple(k for k in _AFTER if k not in allowed))

