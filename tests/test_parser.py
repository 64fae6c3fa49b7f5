from decimal import Decimal

import pytest

from kpi_engine import nodes as n
from kpi_engine.errors import FormulaError
from kpi_engine.parser import (MAX_FORMULA_DEPTH, MAX_FORMULA_LENGTH, MAX_NESTING_DEPTH, FormulaSource,
                               _deep_recursion, parse)


def name(*parts):
    return n.Name(tuple(parts))


def test_arithmetic_precedence_and_associativity():
    assert parse("1 + 2 * 3") == n.Binary("+", n.NumberLit(1), n.Binary("*", n.NumberLit(2), n.NumberLit(3)))
    assert parse("8 - 4 - 2") == n.Binary("-", n.Binary("-", n.NumberLit(8), n.NumberLit(4)), n.NumberLit(2))
    assert parse("(1 + 2) % 3") == n.Binary("%", n.Binary("+", n.NumberLit(1), n.NumberLit(2)), n.NumberLit(3))
    assert parse("-x * 2") == n.Binary("*", n.Unary("-", name("x")), n.NumberLit(2))


def test_literals():
    assert parse("12") == n.NumberLit(12)
    assert parse("1.5e3") == n.NumberLit(Decimal("1.5e3"))
    assert parse(".25") == n.NumberLit(Decimal("0.25"))
    assert parse("'it''s'") == n.StringLit("it's")
    assert parse("TRUE") == n.BoolLit(True)
    assert parse("false") == n.BoolLit(False)
    assert parse("null") == n.NullLit()


def test_conditions_bind_looser_than_arithmetic():
    tree = parse("a + 1 > 2 and not b or c")
    assert tree == n.Logical(
        "or",
        n.Logical("and", n.Compare(">", n.Binary("+", name("a"), n.NumberLit(1)), n.NumberLit(2)),
                  n.Unary("not", name("b"))),
        name("c"))


def test_in_between_is_null():
    assert parse("channel not in ('ppc', 'email')") == n.InList(
        name("channel"), (n.StringLit("ppc"), n.StringLit("email")), negated=True)
    assert parse("score between 7 and 8 and x") == n.Logical(
        "and", n.Between(name("score"), n.NumberLit(7), n.NumberLit(8)), name("x"))
    assert parse("x is not null") == n.IsNull(name("x"), negated=True)
    assert parse("x IS NULL") == n.IsNull(name("x"))
    assert parse("a <> b") == n.Compare("!=", name("a"), name("b"))
    assert parse("a == b") == n.Compare("=", name("a"), name("b"))


def test_aggregate_calls_with_filters():
    assert parse("count(leads where is_qualified)") == n.Call("count", (name("leads"),), name("is_qualified"))
    assert parse("sum(orders.amount where status = 'paid')") == n.Call(
        "sum", (name("orders", "amount"),), n.Compare("=", name("status"), n.StringLit("paid")))
    assert parse("coalesce(a, b, 0)") == n.Call("coalesce", (name("a"), name("b"), n.NumberLit(0)))


def test_keywords_do_not_swallow_names_that_start_with_them():
    assert parse("android + notes + order_id + isx") == n.Binary(
        "+", n.Binary("+", n.Binary("+", name("android"), name("notes")), name("order_id")), name("isx"))


def test_positions_are_recorded():
    tree = parse("1 +\n  sum(x.y)")
    assert tree.right.pos == n.Pos(2, 3)


@pytest.mark.parametrize("text, column, expected", [
    ("sum(a.b", 8, "Expected ')'"),
    ("sum(a.b) / )", 12, "unexpected ')'"),
    ("a ! b", 3, "unexpected character '!'"),
    ("a between 1", 12, "ends too early"),
    ("count(leads) /* c */", 14, "a comment ('/*') is not part of the formula language"),
    ("revenue -- note", 9, "a comment ('--') is not part of the formula language"),
    ("count(leads where x = 'a)", 23, "a 'string' is not closed"),
    ("x; drop table t", 2, "a ';' is not part of the formula language"),
    ("1 2", 3, "unexpected '2'"),
])
def test_syntax_errors_show_a_caret_and_what_was_expected(text, column, expected):
    with pytest.raises(FormulaError) as info:
        parse(text)
    error = info.value
    assert error.location.obj == f"formula, line 1, column {column}"
    assert expected in str(error)
    caret_line = error.detail.splitlines()[1]
    assert caret_line.index("^") - 4 == column - 1


def test_error_positions_map_onto_the_spec_file():
    source = FormulaSource("kpis.yaml", line=7, column=14, obj="kpi 'x'")
    with pytest.raises(FormulaError) as info:
        parse("sum(a.b) +", source)
    loc = info.value.location
    assert (loc.file, loc.line, loc.column) == ("kpis.yaml", 7, 14 + 10)


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_formula(text):
    with pytest.raises(FormulaError, match="empty"):
        parse(text)


def test_limits_give_clear_errors():
    with pytest.raises(FormulaError, match="limit is"):
        parse("1+" * MAX_FORMULA_LENGTH + "1")
    deep = "(" * (MAX_NESTING_DEPTH + 1) + "1" + ")" * (MAX_NESTING_DEPTH + 1)
    with pytest.raises(FormulaError, match="nests parentheses"):
        parse(deep)
    ok = "(" * MAX_NESTING_DEPTH + "1" + ")" * MAX_NESTING_DEPTH
    assert parse(ok) == n.NumberLit(1)


@pytest.mark.parametrize("make, depth", [
    (lambda k: "+".join(["x"] * (k + 1)), lambda k: k),  # k operators in a chain
    (lambda k: "- " * (k - 1) + "count(x)", lambda k: k),  # k - 1 minuses over a call
    (lambda k: "not " * (k - 1) + "x > 1", lambda k: k),
    (lambda k: "abs(" * 50 + " * ".join(["x"] * (k - 49)) + ")" * 50, lambda k: k),  # calls count too
])
def test_operators_nest_at_most_100_deep(make, depth):
    assert MAX_FORMULA_DEPTH == 100
    parse(make(100))
    with pytest.raises(FormulaError) as raised:
        parse(make(101), FormulaSource("k.yaml", line=4, column=14))
    assert raised.value.message == (f"the formula nests operators and function calls {depth(101)} levels deep; "
                                    "the limit is 100.")
    assert (raised.value.location.file, raised.value.location.line, raised.value.location.column) == ("k.yaml", 4, 14)
    assert raised.value.hint.startswith("Split it into smaller KPIs that reference each other by name, or group")


def test_a_long_chain_grouped_in_parentheses_is_shallow():
    with pytest.raises(FormulaError, match="799 levels deep"):
        parse("+".join(["x"] * 800))
    # The same 800 terms as 16 groups of 49 '+', joined by 15 more: 64 levels.
    grouped = parse("+".join("(" + "+".join(["x"] * 50) + ")" for _ in range(16)))
    assert sum(node == name("x") for node in grouped.walk()) == 800
    with pytest.raises(FormulaError, match="106 levels deep"):  # 8 groups of 99 '+', joined by 7 more
        parse("+".join("(" + "+".join(["x"] * 100) + ")" for _ in range(8)))


def test_the_raised_recursion_limit_lasts_until_the_last_thread_leaves():
    """One thread leaving must not lower the limit under another that is still rendering."""
    import sys
    import threading

    default = sys.getrecursionlimit()
    entered, release = threading.Event(), threading.Event()
    seen = []

    def other():
        with _deep_recursion():
            entered.set()
            release.wait(10)
            seen.append(sys.getrecursionlimit())

    thread = threading.Thread(target=other)
    with _deep_recursion():
        thread.start()
        assert entered.wait(10)
    # This thread has left; the other is still inside.
    assert sys.getrecursionlimit() >= 6000
    release.set()
    thread.join(10)
    assert seen[0] >= 6000
    assert sys.getrecursionlimit() == default
