"""Time functions (previous, cumulative, rolling, share) turned into window leaves.

A TimeOp over a formula is pushed down to each aggregate it reads: ``cumulative(a / b)`` becomes
``cumulative(a) / cumulative(b)``, so a ratio is accumulated as its numerator and denominator.
Each resulting ``WindowLeaf`` is one window over the grouped series (compiler.window). A time
function over another (``previous(cumulative(x))``) gives a leaf over the inner leaf: the compiler
computes it one window stage later, over a series with every period.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import nodes as n
from .calendar import Calendar, grain_rank
from .errors import Location, QueryError


@n.hashed_once  # (defined after nodes.py wrapped its own classes)
@dataclass(frozen=True)
class WindowLeaf(n.Node):
    """An aggregate's value taken over the time series: what a TimeOp becomes per aggregate.

    kind: previous (N periods back), cumulative (running total), rolling (last N
    periods) or total (across the dimension values of the period, for share()).
    """

    kind: str
    agg: "n.Aggregate | WindowLeaf"  # the aggregate windowed, or the inner time function's leaf
    periods: int | None = None
    reset: str | None = None
    months: int | None = None  # previous(): the period holding the same day this many months before
    start_of: str | None = None  # at_start(): the period holding the first day of this coarser period
    days: int | None = None  # rolling() over days at a coarser grain: the days up to the period's last

    @property
    def base(self) -> n.Aggregate:
        """The aggregate at the bottom of a chain of time functions."""
        return self.agg.base if isinstance(self.agg, WindowLeaf) else self.agg

    @property
    def depth(self) -> int:
        """1 over an aggregate, one more per time function below."""
        return self.agg.depth + 1 if isinstance(self.agg, WindowLeaf) else 1


def lower_time_ops(expr: n.Node, grain: str | None, calendar: Calendar | None = None) -> n.Node:
    """Push previous/cumulative/rolling/share down to the aggregates they are built from.

    cumulative(a / b) is cumulative(a) / cumulative(b): a ratio is accumulated as its
    numerator and denominator, never as the ratio. avg is split into sum / count for
    the same reason.

    A formula without time functions is returned as it is (what the rewrite would give), and
    a lowered formula is kept on the formula for its grain (see ``_remembered``): the model's
    expanded KPIs serve every query, and this rewrite was a walk and a rebuild of each per query.
    """
    if not has_time_ops(expr):
        return expr
    remembered = _remembered(expr, grain, calendar)
    if remembered is not None and remembered[0] in remembered[1]:
        return remembered[1][remembered[0]]

    def lower(node: n.Node) -> n.Node:
        if not isinstance(node, n.TimeOp):
            return node
        if node.func in ("previous", "rolling", "at_start") and grain is None:
            raise QueryError(f"{node.func}() needs a time grain.", None,
                             "Add --grain (day, week, month, quarter, year, ...).")
        if node.func == "share":
            return n.Binary("/", node.operand, _leaves(node.operand, "total", None, None), pos=node.pos)
        if node.func == "at_start":
            if calendar is not None and calendar.is_custom(grain):
                raise QueryError(f"at_start(x, '{node.start_of}') at --grain {grain}: {grain} periods do not "
                                 f"divide calendar {node.start_of}s.", None, "Use a built-in --grain such as day or week.")
            if grain_rank(node.start_of) <= grain_rank(grain):
                raise QueryError(f"at_start(x, '{node.start_of}') reads the first period of a {node.start_of}, "
                                 f"which --grain {grain} does not divide.", None,
                                 f"Use a finer --grain than '{node.start_of}' (e.g. day or week).")
            return _leaves(node.operand, "previous", None, None, start_of=node.start_of)
        periods, months, days = (calendar or Calendar).span_in_periods(node.span, grain, node.func) if node.span \
            else (node.periods, None, None)
        return _leaves(node.operand, node.func, periods, node.reset, months, days=days)

    lowered = expr.map(lower)
    if remembered is not None:
        remembered[1][remembered[0]] = lowered
    return lowered


def has_time_ops(expr: n.Node) -> bool:
    """Whether a formula holds a time function (kept on its nodes: nodes.found_below)."""
    return bool(n.found_below(expr, n.TimeOp, "_time_ops"))


def _remembered(expr: n.Node, grain: str | None, calendar: Calendar | None) -> tuple[str | None, dict] | None:
    """(key, store) of the lowerings kept on ``expr``: one per grain a project's requests use. At a
    built-in grain a lowering depends on the grain alone (the calendar's spans in periods are
    ``Calendar.span_in_periods`` for them); a named granularity's (custom_calendars.py) depends on
    its calendar, so it is not kept. Errors are not kept: they are raised again."""
    if calendar is not None and calendar.is_custom(grain):
        return None
    store = expr.__dict__.get("_lowered")
    if store is None:
        store = {}
        object.__setattr__(expr, "_lowered", store)
    return grain, store


def window_leaves(expr: n.Node) -> tuple[WindowLeaf, ...]:
    """The window leaves of a lowered formula, each once, in walk order (kept on its nodes:
    nodes.found_below)."""
    return n.found_below(expr, WindowLeaf, "_window_leaves")


def lower_for(name: str, expr: n.Node, grain: str | None, calendar: Calendar | None = None) -> n.Node:
    """``lower_time_ops`` for one output column; its errors name the KPI."""
    try:
        return lower_time_ops(expr, grain, calendar)
    except QueryError as error:
        raise QueryError(error.message, error.location or Location(obj=f"kpi '{name}'"), error.hint) from None


def _leaves(operand: n.Node, kind: str, periods: int | None, reset: str | None, months: int | None = None,
            start_of: str | None = None, days: int | None = None) -> n.Node:
    def leaf(node: n.Node) -> n.Node:
        if not isinstance(node, (n.Aggregate, WindowLeaf)):
            return node
        base = node.base if isinstance(node, WindowLeaf) else node
        if base.func == "avg" and kind != "previous":
            # (a chain that still ends in avg holds only previous(): it is split at this level)
            total = _rebased(node, n.Aggregate("sum", base.source, base.arg, base.where, pos=base.pos))
            count = _rebased(node, n.Aggregate("count", base.source, base.arg, base.where, pos=base.pos))
            return n.Binary("/", WindowLeaf(kind, total, periods, reset, months, start_of, days),
                            WindowLeaf(kind, count, periods, reset, months, start_of, days))
        if kind != "previous" and base.fraction is not None:
            raise QueryError(f"{base.func} cannot be added up across {_across(kind)}.", None,
                             "A percentile of separate periods or groups is not a percentile of all their rows; "
                             "compute it over the whole range instead (drop --grain or the time function).")
        # A running or rolling distinct count over the rows is fine (compiler.over_days); adding up
        # the distinct counts of separate groups, or of another time function's periods, is not.
        if base.func == "count_distinct" and (kind == "total" or (kind != "previous" and isinstance(node, WindowLeaf))):
            raise QueryError(f"count_distinct cannot be added up across {_across(kind)}.", None,
                             "Distinct counts of separate periods or groups overlap; count distinct over the whole "
                             "range instead (drop --grain or the time function).")
        if kind in ("cumulative", "rolling") and base.func in ("last", "first"):
            raise QueryError(f"{base.func}() takes a snapshot; snapshots cannot be added up across periods.", None,
                             f"Use previous() on a snapshot, or {kind}() on a flow such as a count or a sum.")
        if days and isinstance(node, WindowLeaf):
            raise QueryError(f"rolling(x, '{days} days') at a coarser grain adds up day totals, so it cannot be "
                             f"taken over another time function ({node.kind}).", None,
                             "Apply the window in days to the aggregates or KPIs themselves, or use --grain day.")
        if (kind == "previous" and isinstance(node, WindowLeaf) and node.kind == "previous"
                and not (months or start_of or node.months or node.start_of)):
            # N periods back of M periods back is N + M periods back: one window, no extra stage.
            return WindowLeaf(kind, node.agg, periods + node.periods)
        return WindowLeaf(kind, node, periods, reset, months, start_of, days)

    return operand.map(leaf, stop=WindowLeaf)


def _rebased(node: "n.Aggregate | WindowLeaf", base: n.Aggregate) -> "n.Aggregate | WindowLeaf":
    """The chain of time functions ``node`` over ``base`` instead of its own aggregate."""
    return replace(node, agg=_rebased(node.agg, base)) if isinstance(node, WindowLeaf) else base


def _across(kind: str) -> str:
    return "dimension values" if kind == "total" else "periods"
