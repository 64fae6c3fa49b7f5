"""Rewrite a compiled kpi-engine query (a sqlglot tree) so that ClickHouse runs it and gives the
numbers the other engines give.

sqlglot's ClickHouse rendering runs, but these mean something else there:

=====================================  ==============================================================
node                                   ClickHouse
=====================================  ==============================================================
a / b (true division)                  CAST(a AS Float64) / b: ClickHouse divides a Decimal by a
                                       number as Decimal with the dividend's scale (2.50 / 3 = 0.83)
a % b (b not a whole-number literal)  CAST(a AS Float64) % b: ClickHouse 26 takes a Decimal modulo
                                       an integer wrongly (123.45 % 7 = 0.04, not 4.45); the
                                       formulas' a % NULLIF(b, 0) always gets it, the calendar's
                                       day arithmetic (days % 7) keeps integers
SELECT t.x (no alias) in a subquery    SELECT t.x AS x: ClickHouse names the column ``t.x``, so an
                                       outer ``s.x`` (or ``s.*`` then ``s.x``) cannot be resolved
round(x, d)                            coalesce(CAST(round(toDecimal128OrNull(toString(x), 18), d) AS
                                       Float64), x): ClickHouse rounds a Float64 tie to even and
                                       reads its binary value (round(2.5) = 2, round(0.05, 1) = 0);
                                       a Decimal of the number's shortest text rounds half away from
                                       zero, the engine's rule (past 10^20, where the Decimal does
                                       not fit, x has no fraction to round)
=====================================  ==============================================================

(A LEFT JOIN row without a match has NULLs only with ``join_use_nulls = 1``, which the
connection sets for its session; see ``connection``.) Rewriting a rewritten query changes nothing.
"""

from __future__ import annotations

from sqlglot import exp

_FLOAT = exp.DataType.Type.DOUBLE
#: A Decimal(38, 18) of text, NULL when the text is no number that fits.
_EXACT = "toDecimal128OrNull"


def to_clickhouse(query: exp.Expression) -> exp.Expression:
    """A copy of ``query`` that ClickHouse runs with the other engines' meaning."""
    return query.transform(_rewrite)


def _float(value: exp.Expression) -> exp.Expression:
    """CAST(value AS Float64), once."""
    if isinstance(value, exp.Cast) and value.to.this == _FLOAT:
        return value
    return exp.Cast(this=value, to=exp.DataType(this=_FLOAT))


def _rewrite(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Div) and not node.args.get("typed"):
        node.set("this", _float(node.this))
    elif isinstance(node, exp.Mod) and not (isinstance(node.expression, exp.Literal) and node.expression.is_int):
        node.set("this", _float(node.this))
    elif isinstance(node, exp.Select):
        _name_qualified_columns(node)
    elif isinstance(node, exp.Round) and not _exact(node.this):
        return _round_exactly(node)
    return node


def _exact(value: exp.Expression) -> bool:
    return isinstance(value, exp.Anonymous) and value.name == _EXACT


def _round_exactly(node: exp.Round) -> exp.Expression:
    """round() half away from zero on the number as it prints (see the table above). toString
    writes a Float64 as its shortest decimal form (78.55, not 78.5499...)."""
    value = to_clickhouse(node.this)
    text = exp.Anonymous(this="toString", expressions=[value])
    exact = exp.Anonymous(this=_EXACT, expressions=[text, exp.Literal.number(18)])
    rounded = _float(exp.Round(this=exact, decimals=node.args.get("decimals")))
    return exp.Coalesce(this=rounded, expressions=[_float(value.copy())])


def _name_qualified_columns(select: exp.Select) -> None:
    """Alias each projected ``table.column`` to its column name, as the other engines name it."""
    select.set("expressions", [exp.alias_(projection, exp.to_identifier(projection.name, quoted=True))
                               if isinstance(projection, exp.Column) and projection.table
                               and not isinstance(projection.this, exp.Star) else projection
                               for projection in select.expressions])
