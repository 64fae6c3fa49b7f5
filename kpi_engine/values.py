"""KPI values as outputs carry them: whole numbers stay whole, decimals lose the noise of doubles.

Every KPI comes back from the warehouse as a DOUBLE (compiler.py casts each one, so that all
warehouses return one type). A KPI that counts things is then written as an integer:

- its unit is ``count``, or
- its formula, with the KPIs it references, is built of ``count`` and ``count_distinct``,
  whole-number constants, ``+``, ``-``, ``*``, ``%``, ``abs``, ``round(x)`` / ``round(x, 0)``,
  ``least``, ``greatest``, ``coalesce``, ``if``, and ``previous``, ``cumulative`` or ``rolling``
  of such a formula (a referenced KPI counts as whole when it follows this rule itself).

Each value of such a KPI that is a whole number is written as an integer; a value that is not (a
``count`` KPI defined as an average) keeps its decimals, so nothing is rounded away. Decimals
written as text (CSV, JSON) are rounded to 15 significant digits, which every double holds
exactly, so 0.1 + 0.2 is written 0.3; a KPI whose ``format`` fixes the digits after the point
(``,.2f``, ``.1%``) is written with those digits.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from . import nodes as n

if TYPE_CHECKING:
    from .compiler import OutputColumn
    from .resolve import Model

_WHOLE_FUNCTIONS = {"abs", "least", "greatest", "coalesce"}
_WHOLE_TIME_FUNCTIONS = {"previous", "cumulative", "rolling"}  # share() is a fraction
# The digits after the point that a format spec fixes: ',.2f', '>10.1F', '.1%' (a percentage of
# the value: two more digits of the value itself).
_FIXED_POINT = re.compile(r".*\.(?P<digits>[0-9]+)(?P<kind>[fF%])")
SIGNIFICANT_DIGITS = 15  # a double holds any decimal of 15 significant digits exactly


def counts_whole(model: "Model", expr: n.Node, unit: str | None = None) -> bool:
    """Whether a KPI (or ad-hoc formula) with this resolved, unexpanded ``expr`` and ``unit``
    counts whole things, by the rule of this module's docstring."""
    if unit == "count":
        return True
    return _whole(model, expr, {})


def _whole(model: "Model", node: n.Node, known: dict[str, bool]) -> bool:
    if isinstance(node, n.NumberLit):
        return isinstance(node.value, int)
    if isinstance(node, n.NullLit):
        return True
    if isinstance(node, n.Aggregate):
        return node.func in ("count", "count_distinct")
    if isinstance(node, n.KpiRef):
        if node.name not in known:
            known[node.name] = False  # a cycle cannot be resolved; never loop on one
            kpi = model.kpis[node.name]
            known[node.name] = kpi.spec.unit == "count" or _whole(model, kpi.expr, known)
        return known[node.name]
    if isinstance(node, n.Unary):
        return node.op == "-" and _whole(model, node.operand, known)
    if isinstance(node, n.Binary):
        return node.op in ("+", "-", "*", "%") and _whole(model, node.left, known) and _whole(model, node.right, known)
    if isinstance(node, n.TimeOp):
        return node.func in _WHOLE_TIME_FUNCTIONS and _whole(model, node.operand, known)
    if isinstance(node, n.Function):
        if node.name == "round":
            return len(node.args) == 1 or (isinstance(node.args[1], n.NumberLit) and node.args[1].value == 0)
        if node.name == "if":
            return all(_whole(model, arg, known) for arg in node.args[1:])
        return node.name in _WHOLE_FUNCTIONS and all(_whole(model, arg, known) for arg in node.args)
    return False


def whole(value: Any) -> Any:
    """A whole-number KPI's value: an int when it is a finite whole number, else as it is."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def decimal_places(spec: str | None) -> int | None:
    """The digits after the point of the value that a KPI's ``format`` fixes, or None."""
    match = _FIXED_POINT.fullmatch(spec or "")
    if match is None:
        return None
    return int(match["digits"]) + (2 if match["kind"] == "%" else 0)


def text_number(value: float, column: "OutputColumn | None" = None) -> float:
    """A decimal as CSV and JSON write it: at the KPI's fixed digits when its format has them,
    else at 15 significant digits (which removes the noise of binary arithmetic)."""
    if not math.isfinite(value):
        return value
    places = decimal_places(column.format) if column is not None and column.role == "kpi" else None
    if places is not None:
        return round(value, places)
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
