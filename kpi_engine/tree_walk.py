"""The walks of a finished query's tree that the compiler's rewrites make on every compile.

sqlglot's ``find_all`` visits every node through a generator per call and a type test per node;
most of a query's nodes are identifiers, literals and types, which never hold a column or a
table. These walks skip those and give the nodes in the order of ``find_all`` (breadth first),
which the rewrites rely on: the order of the columns found decides the order of the columns
they write.
"""

from __future__ import annotations

from collections import deque

from sqlglot import exp

_Expression = exp.Expression
# Nodes that hold neither a column nor a table: not walked into (most of a query's nodes are these;
# a column holds identifiers or a star only).
_SKIPPED = frozenset({exp.Column, exp.Pseudocolumn, exp.Identifier, exp.Literal, exp.DataType, exp.Star,
                      exp.Var, exp.Null, exp.Boolean})
_COLUMNS = frozenset({exp.Column, exp.Pseudocolumn})  # what isinstance(node, exp.Column) accepts
_TABLES = frozenset({exp.Table})


def columns_in(node: exp.Expression) -> list[exp.Column]:
    """Every Column under ``node`` (``node`` included), in the order of ``node.find_all(exp.Column)``."""
    return _collect(node, _COLUMNS)


def projections(select: exp.Select) -> dict[str, exp.Expression] | None:
    """{output name: expression} of a SELECT of columns and aliased expressions, each name
    written once; None for any other SELECT (a star, an unnamed expression, a name twice)."""
    values: dict[str, exp.Expression] = {}
    for expression in select.expressions:
        if isinstance(expression, exp.Alias):
            name, value = expression.alias, expression.this
        elif isinstance(expression, exp.Column) and not isinstance(expression.this, exp.Star):
            name, value = expression.name, expression
        else:
            return None
        if name in values:
            return None
        values[name] = value
    return values


def tables_in(node: exp.Expression) -> list[exp.Table] | None:
    """Every Table under ``node``; None if a WITH inside scopes names anew (the engine builds
    none: then the caller leaves the query as it is)."""
    return _collect(node, _TABLES, stop=exp.With)


def _collect(node: exp.Expression, wanted: frozenset, stop: type | None = None) -> list | None:
    # Breadth first: a node is found when it is queued, which is the order it would be visited in.
    found = [node] if type(node) in wanted else []
    if type(node) in _SKIPPED:
        return found
    queue = deque((node,))
    pop, push, add = queue.popleft, queue.append, found.append
    while queue:
        current = pop()
        if type(current) is stop:
            return None
        for value in current.args.values():
            kind = type(value)
            if kind is list:
                for item in value:
                    kind = type(item)
                    if kind in wanted:
                        add(item)
                    if kind not in _SKIPPED and isinstance(item, _Expression):
                        push(item)
            elif kind in wanted:
                add(value)
            elif kind not in _SKIPPED and isinstance(value, _Expression):
                push(value)
    return found
