"""Time functions (previous, cumulative, rolling, share) turned into window leaves.

A TimeOp over a formula is pushed down to each aggregate it reads: ``cumulative(a / b)`` becomes
``cumulative(a) / cumulative(b)``, so a ratio is accumulated as its numerator and denominator.
Each resulting ``WindowLeaf`` is one window over the grouped series (compiler.window).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import nodes as n
from .calendar import Calendar, grain_rank
from .errors import Location, QueryError


@dataclass(frozen=True)
class WindowLeaf(n.Node):
    """An aggregate's value taken over the time series: what a TimeOp becomes per aggregate.

    kind: previous (N periods back), cumulative (running total), rolling (last N
    periods) or total (across the dimension values of the period, for share()).
    """

    kind: str
    agg: n.Aggregate
    periods: int | None = None
    reset: str | None = None
    months: int | None = None  # previous(): the period holding the same day this many months before
    start_of: str | None = None  # at_start(): the period holding the first day of this coarser period


def lower_time_ops(expr: n.Node, grain: str | None) -> n.Node:
    """Push previous/cumulative/rolling/share down to the aggregates they are built from.

    cumulative(a / b) is cumulative(a) / cumulative(b): a ratio is accumulated as its
    numerator and denominator, never as the ratio. avg is split into sum / count for
    the same reason.
    """

    def lower(node: n.Node) -> n.Node:
        if not isinstance(node, n.TimeOp):
            return node
        if node.func in ("previous", "rolling", "at_start") and grain is None:
            raise QueryError(f"{node.func}() needs a time grain.", None,
                             "Add --grain (day, week, month, quarter, year, ...).")
        if node.func == "share":
            return n.Binary("/", node.operand, _leaves(node.operand, "total", None, None), pos=node.pos)
        if node.func == "at_start":
            if grain_rank(node.start_of) <= grain_rank(grain):
                raise QueryError(f"at_start(x, '{node.start_of}') reads the first period of a {node.start_of}, "
                                 f"which --grain {grain} does not divide.", None,
                                 f"Use a finer --grain than '{node.start_of}' (e.g. day or week).")
            return _leaves(node.operand, "previous", None, None, start_of=node.start_of)
        periods, months = Calendar.span_in_periods(node.span, grain, node.func) if node.span else (node.periods, None)
        return _leaves(node.operand, node.func, periods, node.reset, months)

    return expr.map(lower)


def lower_for(name: str, expr: n.Node, grain: str | None) -> n.Node:
    """``lower_time_ops`` for one output column; its errors name the KPI."""
    try:
        return lower_time_ops(expr, grain)
    except QueryError as error:
        raise QueryError(error.message, error.location or Location(obj=f"kpi '{name}'"), error.hint) from None


def _leaves(operand: n.Node, kind: str, periods: int | None, reset: str | None, months: int | None = None,
            start_of: str | None = None) -> n.Node:
    def leaf(node: n.Node) -> n.Node:
        if not isinstance(node, n.Aggregate):
            return node
        if node.func == "avg" and kind != "previous":
            total = n.Aggregate("sum", node.source, node.arg, node.where, pos=node.pos)
            count = n.Aggregate("count", node.source, node.arg, node.where, pos=node.pos)
            return n.Binary("/", WindowLeaf(kind, total, periods, reset, months, start_of),
                            WindowLeaf(kind, count, periods, reset, months, start_of))
        if kind != "previous" and node.fraction is not None:
            raise QueryError(f"{node.func} cannot be added up across {_across(kind)}.", None,
                             "A percentile of separate periods or groups is not a percentile of all their rows; "
                             "compute it over the whole range instead (drop --grain or the time function).")
        if kind != "previous" and node.func == "count_distinct":
            raise QueryError(f"count_distinct cannot be added up across {_across(kind)}.", None,
                             "Distinct counts of separate periods or groups overlap; count distinct over the whole "
                             "range instead (drop --grain or the time function).")
        if kind in ("cumulative", "rolling") and node.func in ("last", "first"):
            raise QueryError(f"{node.func}() takes a snapshot; snapshots cannot be added up across periods.", None,
                             f"Use previous() on a snapshot, or {kind}() on a flow such as a count or a sum.")
        return WindowLeaf(kind, node, periods, reset, months, start_of)

    return operand.map(leaf)


def _across(kind: str) -> str:
    return "dimension values" if kind == "total" else "periods"
