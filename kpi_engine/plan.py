"""The logical plan of a request, as a reviewer of a number reads it (``compile --plan``).

The compiler records one ``Step`` per stage it builds: each source's grouping (rows read, range,
joins, aggregates), the keys the sources are joined on, each window stage, the filters applied
after the windows and the output columns. The steps are built from the same objects the SQL is
rendered from, next to it, so the plan says what the query does, in words and formulas, the same
for every dialect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from . import nodes as n


@dataclass
class Step:
    """One stage of the plan: what it computes, the facts that decide its numbers, and the
    stages it reads."""

    title: str
    notes: list[str] = field(default_factory=list)
    inputs: list["Step"] = field(default_factory=list)

    def text(self, depth: int = 0) -> str:
        pad = "  " * depth
        lines = [pad + self.title] + [f"{pad}  | {note}" for note in self.notes]
        return "\n".join(lines + [step.text(depth + 1) for step in self.inputs])

    def to_dict(self) -> dict:
        return {"step": self.title, "notes": list(self.notes), "inputs": [step.to_dict() for step in self.inputs]}


_PRECEDENCE = {"or": 1, "and": 2, "not": 3, "compare": 4, "+": 5, "-": 5, "*": 6, "/": 6, "%": 6, "neg": 7}


def formula(node: n.Node) -> str:
    """A formula AST as formula text (parenthesized where precedence needs it)."""
    return _text(node)[0]


def _text(node: n.Node) -> tuple[str, int]:
    """The text of ``node`` and the precedence of its outermost operator (9: an atom)."""
    if isinstance(node, n.NumberLit):
        value = node.value
        return (format(value, "f") if isinstance(value, Decimal) else str(value)), 9
    if isinstance(node, n.StringLit):
        return "'" + node.value.replace("'", "''") + "'", 9
    if isinstance(node, n.BoolLit):
        return ("true" if node.value else "false"), 9
    if isinstance(node, n.NullLit):
        return "null", 9
    if isinstance(node, n.Column):
        return node.name, 9
    if isinstance(node, n.Name):
        return node.dotted, 9
    if isinstance(node, n.KpiRef):
        return node.name, 9
    if isinstance(node, n.Unary):
        if node.op == "not":
            return "not " + _operand(node.operand, 3), 3
        return "-" + _operand(node.operand, 7), 7
    if isinstance(node, (n.Binary, n.Compare, n.Logical)):
        level = _PRECEDENCE["compare"] if isinstance(node, n.Compare) else _PRECEDENCE[node.op]
        right = _operand(node.right, level + (0 if node.op in ("+", "*", "and", "or") else 1))
        return f"{_operand(node.left, level)} {node.op} {right}", level
    if isinstance(node, n.InList):
        items = ", ".join(formula(item) for item in node.items)
        return f"{_operand(node.operand, 5)} {'not ' if node.negated else ''}in ({items})", 4
    if isinstance(node, n.Between):
        return (f"{_operand(node.operand, 5)} {'not ' if node.negated else ''}between {_operand(node.low, 5)} "
                f"and {_operand(node.high, 5)}"), 4
    if isinstance(node, n.IsNull):
        return f"{_operand(node.operand, 5)} is {'not ' if node.negated else ''}null", 4
    if isinstance(node, n.Function):
        return f"{node.name}({', '.join(formula(arg) for arg in node.args)})", 9
    if isinstance(node, (n.Aggregate, n.EntityLookup)):
        return _aggregate(node), 9
    from .time_ops import WindowLeaf  # (time_ops imports nodes only: no cycle)

    if isinstance(node, WindowLeaf):
        return window_text(node), 9
    if isinstance(node, n.TimeOp):
        return f"{node.func}({formula(node.operand)})", 9
    return type(node).__name__, 9


def _operand(node: n.Node, level: int) -> str:
    text, own = _text(node)
    return f"({text})" if own < level else text


def _aggregate(node: "n.Aggregate | n.EntityLookup") -> str:
    func = node.func
    if node.arg is None:
        inner = node.source
    elif isinstance(node.arg, n.Column):
        inner = f"{node.source}.{node.arg.name}"
    else:  # an expression of the rows: its columns named with their source, as in days_between(leads.a, leads.b)
        inner = formula(node.arg.map(lambda x: n.Name(parts=(x.source, x.name)) if isinstance(x, n.Column) else x))
    fraction = getattr(node, "fraction", None)
    if fraction is not None and func != "median":
        inner += f", {fraction}"
    if node.where is not None:
        inner += f" where {formula(node.where)}"
    key = node.key if isinstance(node, n.EntityLookup) else node.per
    if key:
        inner += f" per {key}"
    return f"{func}({inner})"


def window_text(leaf) -> str:
    """A window leaf in words: previous(sum(orders.amount), 1 period back)."""
    return f"{leaf.kind}({formula(leaf.agg)}, {window_how(leaf)})"


def window_how(leaf) -> str:
    """Which periods (or days) a window leaf reads, relative to each period."""
    if leaf.kind == "total":
        return "the total of the period over the dimension values"
    if leaf.kind == "previous":
        if leaf.start_of:
            return f"the period holding the first day of its {leaf.start_of}"
        if leaf.months:
            return f"the period holding the same day {leaf.months} months back"
        return f"{leaf.periods} period{'s' * (leaf.periods != 1)} back"
    if leaf.kind == "rolling":
        if leaf.days or leaf.months:
            return (f"the {leaf.days} days" if leaf.days else f"the {leaf.months} months") + " to the period's last day"
        return f"this period and the {leaf.periods - 1} before"
    return f"running total restarting each {leaf.reset}" if leaf.reset else "running total from the start of data"
