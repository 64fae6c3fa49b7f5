"""The output's formulas written in the SELECT that groups, where the output only computes over
one grouped read (DuckDB).

A request of KPIs over one source without time functions compiles to the output SELECT (the
formulas, ORDER BY, LIMIT) over the source's grouped rows, a derived table once its CTE is
written in place (cte_inline). When the output does nothing but compute from that table's
columns, the two are one SELECT: each column read replaced by the expression that computed it
(a key by its grouping expression, a value by its aggregate), as a hand-written query would put
``100 * (sum(a) - sum(b)) / sum(c)`` beside its GROUP BY. DuckDB then parses, binds and plans one
SELECT fewer (about 1% of a 7 ms query of NPS by month, 0.986x in 401 paired rounds:
docs/performance.md). The rows are the same: a grouped SELECT's projections are computed per
group, as the outer SELECT computed them per row of the grouped table.

Only that shape is folded: an output that filters, groups, joins or reads a window, an
aggregate or a subquery, an ORDER BY naming a column that is not an output column, or a
grouped read with HAVING, DISTINCT, a window, ORDER BY or LIMIT leaves the query as it is.
"""

from __future__ import annotations

from sqlglot import exp

from .sql_build import aliased, copy_of
from .tree_walk import columns_in, projections

# Clauses of the output SELECT that put something between the grouped rows and the formulas.
_OUTPUT_BETWEEN = ("joins", "where", "group", "having", "qualify", "distinct", "windows", "laterals", "pivots")
# Clauses of the grouped SELECT that would change once the output's formulas are written in it.
_GROUPED_AFTER = ("having", "qualify", "distinct", "windows", "order", "limit", "offset", "with_")
# Nodes whose meaning changes when moved into a grouped SELECT (or that hold a scope of their own).
_NOT_MOVABLE = (exp.Window, exp.AggFunc, exp.Subquery, exp.Select)


def fold_output(query: exp.Select) -> exp.Select:
    """``query`` with its formulas written in the grouped SELECT it reads, when the shape allows
    (see the module's notes); else ``query`` unchanged."""
    source = query.args.get("from_")
    derived = source.this if source is not None else None
    if not (isinstance(derived, exp.Subquery) and isinstance(derived.this, exp.Select) and derived.alias):
        return query
    grouped = derived.this
    if (any(query.args.get(key) for key in _OUTPUT_BETWEEN) or not grouped.args.get("group")
            or any(grouped.args.get(key) for key in _GROUPED_AFTER)):
        return query
    values = projections(grouped)
    order = query.args.get("order")
    terms = list(order.expressions) if order is not None else []
    if values is None or any(part.find(*_NOT_MOVABLE) is not None for part in query.expressions + terms):
        return query
    outputs = {expression.alias_or_name for expression in query.expressions}
    # An ORDER BY term that is an output's bare name stays: it names the output column there too.
    by_name = {id(term.this) for term in terms if isinstance(term.this, exp.Column) and not term.this.table
               and term.this.name in outputs}
    reads = []
    for part in query.expressions + terms:
        for column in columns_in(part):
            if column.table == derived.alias and column.name in values:
                reads.append(column)
            elif id(column) not in by_name:
                return query  # (a column of another scope, or one the grouped SELECT does not write)
    expressions = [aliased(expression, expression.name) if isinstance(expression, exp.Column) else expression
                   for expression in query.expressions]  # (a bare column keeps its name once it is an expression)
    for column in reads:
        column.replace(copy_of(values[column.name]))
    grouped.pop()  # (out of the derived table: it is the query now)
    grouped.set("expressions", expressions)
    for key in ("order", "limit", "offset", "with_"):
        if query.args.get(key) is not None:
            grouped.set(key, query.args[key])
    return grouped
