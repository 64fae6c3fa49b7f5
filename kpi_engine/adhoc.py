"""Ad-hoc formulas (--formula): their output column's name and the unit they keep.

``--formula 'cpl=ad_spend_total / new_contacts'`` names its column ``cpl``; without a name the
columns are ``formula``, ``formula_2``, ... A name is refused when it is a KPI of the project, a
dimension, ``period``, ``complete`` or the name of another formula of the request.

The unit follows the KPIs the formula reads (``unit_of``):

- a KPI keeps its unit, ``count()`` and ``count_distinct()`` are counts, other aggregates are
  numbers, constants have no unit of their own;
- ``a + b``, ``a - b``, ``least``, ``greatest``, ``coalesce``, ``if`` of one unit keep it, and so
  do ``-a``, ``abs``, ``round``, ``previous``, ``cumulative`` and ``rolling``;
- a constant times or divided into a unit keeps it (``2 * revenue``, ``revenue / 1000``);
- dividing by a count averages, multiplying by one totals: ``ad_spend_total / new_contacts`` is
  currency (a cost per lead), ``average_order_value * customers_won`` is currency;
- two values of one unit divided are a ``ratio`` (``ltv / cac``), counts included; ``share()``
  is a ratio;
- anything else is a ``number``.

A formula that is one KPI reference also keeps the KPI's ``format``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Sequence

from . import nodes as n
from .errors import Location, QueryError

if TYPE_CHECKING:
    from .resolve import Model

_NAMED = re.compile(r"\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)(?P<formula>.*)", re.S)
RESERVED = ("period", "complete")  # the time column and the complete flag
SCALAR = None  # the unit of a constant: takes the unit of what it is combined with
_KEEPING = {"abs", "round", "least", "greatest", "coalesce"}  # a function of values of one unit


def named_formulas(model: "Model", formulas: Sequence[str]) -> list[tuple[str, str, str]]:
    """(column name, formula text, label for messages) of each ad-hoc formula, in order."""
    result: list[tuple[str, str, str]] = []
    if not formulas:  # (the dimension names below are a walk over every source)
        return result
    dimensions = {d for source in model.sources.values() for d in source.dimension_names}
    for index, text in enumerate(formulas):
        match = _NAMED.fullmatch(text)
        if match is None:
            label = "formula" if index == 0 else f"formula_{index + 1}"
            result.append((label, text, label))
            continue
        name = match["name"]
        where = Location(obj=f"--formula {name}")
        clash = ("a KPI of the project" if name in model.kpis else "a dimension" if name in dimensions
                 else "an output column" if name in RESERVED
                 else "the name of another formula" if name in {column for column, _, _ in result} else None)
        if clash:
            raise QueryError(f"the formula name '{name}' is {clash}; an output column needs a name of its own.",
                             where, f"Name the formula otherwise, e.g. '{name}_adhoc={match['formula'].strip()}'"
                             + (f", or ask for the KPI itself: '{name}'." if name in model.kpis else "."))
        result.append((name, match["formula"].strip(), f"formula '{name}'"))
    return result


def unit_of(model: "Model", expr: n.Node) -> tuple[str, str | None]:
    """(unit, format) of an ad-hoc formula's resolved, unexpanded ``expr``, by the rules above."""
    if isinstance(expr, n.KpiRef):
        spec = model.kpis[expr.name].spec
        return spec.unit, spec.format
    unit = _unit(model, expr)
    return ("number" if unit is SCALAR else unit), None


def _unit(model: "Model", node: n.Node) -> str | None:
    if isinstance(node, (n.NumberLit, n.NullLit)):
        return SCALAR
    if isinstance(node, n.KpiRef):
        return model.kpis[node.name].spec.unit
    if isinstance(node, n.Aggregate):
        return "count" if node.func in ("count", "count_distinct") else "number"
    if isinstance(node, n.Unary) and node.op == "-":
        return _unit(model, node.operand)
    if isinstance(node, n.TimeOp):
        return "ratio" if node.func == "share" else _unit(model, node.operand)
    if isinstance(node, n.Function) and (node.name in _KEEPING or node.name == "if"):
        args = node.args[1:] if node.name == "if" else node.args[:1] if node.name == "round" else node.args
        return _same([_unit(model, arg) for arg in args])
    if isinstance(node, n.Binary):
        left, right = _unit(model, node.left), _unit(model, node.right)
        if node.op in ("+", "-"):
            return _same([left, right])
        if node.op == "*":
            if left is SCALAR or right is SCALAR:
                return right if left is SCALAR else left
            if "count" in (left, right) and left != right:
                return right if left == "count" else left
            return "number"
        if node.op == "/":
            if right is SCALAR or (right == "count" and left not in (SCALAR, "count")):
                return left
            if left == right:
                return "ratio"
    return "number"


def _same(units: list[str | None]) -> str | None:
    """The one unit of values combined by +, -, least, ...: constants take it; two units are a number."""
    known = {unit for unit in units if unit is not SCALAR}
    if not known:
        return SCALAR
    return known.pop() if len(known) == 1 else "number"
