"""Typed AST of the formula language.

The parser produces the *syntactic* nodes (``Name`` and ``Call`` for anything
named); ``resolve`` replaces them with the *semantic* nodes (``Column``,
``KpiRef``, ``Aggregate``, ``Function``) once it knows what each name means.
Every node is frozen and carries its position inside the formula text.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from typing import Iterator, Union


@dataclass(frozen=True)
class Pos:
    line: int = 1
    column: int = 1


@dataclass(frozen=True)
class Node:
    pos: Pos = field(default=Pos(), compare=False, repr=False, kw_only=True)

    def __getstate__(self) -> dict:
        # a remembered hash (hashed_once) is of this process's string hashes: never carried over
        state = dict(self.__dict__)
        state.pop("_hash", None)
        return state

    def children(self) -> Iterator["Node"]:
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if isinstance(value, Node):
                yield value
            elif isinstance(value, tuple):
                yield from (item for item in value if isinstance(item, Node))

    def walk(self) -> Iterator["Node"]:
        """This node and every node below it, parents first (children in order). One generator
        and a stack: nested generators cost a resume per level for every node yielded."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            below = list(node.children())
            below.reverse()
            stack += below

    def map(self, fn, stop: type | tuple[type, ...] = ()) -> "Node":
        """Rebuild the tree bottom-up, replacing each node by ``fn(node)``; nodes of a ``stop``
        type are passed to ``fn`` whole, without rebuilding what is below them. A node whose
        children all come back as they were is passed on itself (nodes are immutable: a copy
        would only cost time)."""
        if isinstance(self, stop):
            return fn(self)
        changes = {}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if isinstance(value, Node):
                mapped = value.map(fn, stop)
                if mapped is not value:
                    changes[name] = mapped
            elif isinstance(value, tuple) and any(isinstance(v, Node) for v in value):
                mapped = tuple(v.map(fn, stop) if isinstance(v, Node) else v for v in value)
                if any(new is not old for new, old in zip(mapped, value)):
                    changes[name] = mapped
        return fn(replace(self, **changes) if changes else self)


def found_below(node: Node, kind: type | tuple[type, ...], key: str) -> tuple[Node, ...]:
    """The nodes of ``kind`` in ``node``'s tree, each once (the first of equal ones), in walk order
    (parents first, children in order), as ``dict.fromkeys`` over ``walk()`` finds them.

    Kept on every node visited, under ``key`` (outside the fields: equality, hashing and
    ``replace()`` ignore it; a node is immutable, so it cannot go stale). Formulas share their
    subtrees (a KPI's expansion holds the expansions of the KPIs it references), so a subtree
    already visited for another query or another question is not walked again."""
    found = node.__dict__.get(key)
    if found is None:
        parts = [node] if isinstance(node, kind) else []
        for child in node.children():
            parts += found_below(child, kind, key)
        found = tuple(dict.fromkeys(parts)) if len(parts) > 1 else tuple(parts)
        object.__setattr__(node, key, found)
    return found


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    """The fields of a node class, looked up once (dataclasses.fields builds them on each call)."""
    return tuple(f.name for f in fields(cls))


# --- literals -----------------------------------------------------------------

Number = Union[int, Decimal]


@dataclass(frozen=True)
class NumberLit(Node):
    value: Number


@dataclass(frozen=True)
class StringLit(Node):
    value: str


@dataclass(frozen=True)
class BoolLit(Node):
    value: bool


@dataclass(frozen=True)
class NullLit(Node):
    pass


# --- operators ------------------------------------------------------------------

@dataclass(frozen=True)
class Unary(Node):
    op: str  # "-" or "not"
    operand: Node


@dataclass(frozen=True)
class Binary(Node):
    op: str  # + - * / %
    left: Node
    right: Node


@dataclass(frozen=True)
class Compare(Node):
    op: str  # = != < <= > >=
    left: Node
    right: Node


@dataclass(frozen=True)
class Logical(Node):
    op: str  # "and" or "or"
    left: Node
    right: Node


@dataclass(frozen=True)
class InList(Node):
    operand: Node
    items: tuple[Node, ...]
    negated: bool = False


@dataclass(frozen=True)
class Between(Node):
    operand: Node
    low: Node
    high: Node
    negated: bool = False


@dataclass(frozen=True)
class IsNull(Node):
    operand: Node
    negated: bool = False


# --- names and calls as parsed ----------------------------------------------------

@dataclass(frozen=True)
class Name(Node):
    """An identifier as written: ``cost_per_lead``, ``leads`` or ``orders.amount``."""

    parts: tuple[str, ...]

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class Call(Node):
    """``name(args [where condition])`` before resolution."""

    name: str
    args: tuple[Node, ...]
    where: Node | None = None
    per: str | None = None  # ``count(orders per customer_id)``: one value per entity
    at: str | None = None  # ``count(deals at won_at)``: rows placed in time by another of their time columns


# --- resolved nodes ---------------------------------------------------------------

@dataclass(frozen=True)
class Column(Node):
    source: str
    name: str


@dataclass(frozen=True)
class KpiRef(Node):
    name: str


@dataclass(frozen=True)
class Aggregate(Node):
    """An aggregate over one source's rows; ``arg`` is None for ``count(source)``."""

    func: str  # sum count count_distinct avg min max last first median percentile approx_percentile
    source: str
    arg: Node | None
    where: Node | None = None
    fraction: Decimal | int | None = None  # percentile(x, 0.9): the fraction of the rows below
    per: str | None = None  # last(x per key): each entity's own latest (earliest) row, summed


@dataclass(frozen=True)
class EntityLookup(Node):
    """A per-entity aggregate used inside another aggregate's filter.

    ``count(orders per customer_id)`` in ``sum(orders.amount where count(orders per
    customer_id) > 1)`` is, for each order row, the number of orders of the same
    customer (over all time): computed as one grouped subquery joined on the key,
    so it can never fan out.
    """

    func: str
    source: str
    arg: Node | None
    where: Node | None
    key: str


@dataclass(frozen=True)
class TimeOp(Node):
    """A KPI-level operation over the time series: previous, cumulative, rolling, share.

    ``periods`` is N for previous(x, N) and rolling(x, N); ``span`` is the length of
    time of previous(x, '1 year') and rolling(x, '30 days') as (amount, unit), turned
    into periods once the grain is known; ``reset`` is the grain at which
    cumulative(x, 'year') starts again.
    """

    func: str
    operand: Node
    periods: int | None = None
    reset: str | None = None
    span: tuple[int, str] | None = None
    start_of: str | None = None  # at_start(x, 'month'): the value at the first period of the month


@dataclass(frozen=True)
class Function(Node):
    """A scalar function from the allowlist (if, coalesce, nullif, abs, round, ...)."""

    name: str
    args: tuple[Node, ...]


def hashed_once(cls: type) -> type:
    """Make a node class keep its hash once computed. A frozen dataclass hashes its fields
    again on every call, and a node's fields hold its whole subtree: aggregates are dict keys
    throughout a compile (a hundred hashes of formula trees per query, each walking the tree).
    The hash lives outside the fields, as ``aggregates_in``'s list does: equality, ``replace()``
    and the fields are unchanged, and a node is immutable, so its hash cannot go stale."""
    compute = cls.__dict__.get("__hash__")
    if compute is None:
        return cls

    def __hash__(self) -> int:
        found = self.__dict__.get("_hash")
        if found is None:
            found = compute(self)
            object.__setattr__(self, "_hash", found)
        return found

    cls.__hash__ = __hash__
    return cls


def _every_subclass(cls: type):
    for sub in cls.__subclasses__():
        yield sub
        yield from _every_subclass(sub)


for _cls in (Node, *_every_subclass(Node)):
    hashed_once(_cls)
