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


# --- numbers, names and keywords are ASCII --------------------------------------------------------------------

import sys  # noqa: E402
import unicodedata  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# Every character outside ASCII that Python counts as a number: the decimal digits of every script
# (Arabic-Indic, Devanagari, full-width, mathematical bold...), superscripts, subscripts, circled
# numbers, fractions, Roman numerals, CJK numerals. Python's \d matches the decimal ones.
NON_ASCII_NUMERALS = [chr(code) for code in range(0x80, sys.maxunicode + 1)
                      if chr(code).isnumeric() or unicodedata.category(chr(code)) in ("Nd", "Nl", "No")]
# Where a mutated character can sit in a number: alone, after an operator, in the integer part, the
# fraction and the exponent. In the last two places the text is already wrong before it ('1e' is a
# number and a name; '.' alone is not a number), and that is what the error points at.
NUMBER_PLACES = ["{d}", "count(x) * {d}", "1{d}", "{d}5", "1.{d}", "0.5{d}", "2.5E-1{d}", "{d}{d}"]
EARLIER_ERROR_PLACES = ["1e{d}", ".{d}"]


def _column(error: FormulaError) -> int:
    return int(error.location.obj.rsplit("column ", 1)[1])


def test_non_ascii_numerals_are_a_clear_error_at_their_place():
    assert len(NON_ASCII_NUMERALS) > 1500  # the table covers every script, not a sample
    assert {"٥", "５", "²", "₃", "½", "Ⅻ", "①", "߀", "𝟘"} <= set(NON_ASCII_NUMERALS)
    for digit in NON_ASCII_NUMERALS:
        for place in NUMBER_PLACES + EARLIER_ERROR_PLACES:
            text = place.format(d=digit)
            with pytest.raises(FormulaError) as raised:
                parse(text)
            error = raised.value
            if place in EARLIER_ERROR_PLACES:
                assert error.message.startswith("formula syntax error") and _column(error) < text.index(digit) + 1
                continue
            assert error.message == (f"formula syntax error: unexpected character {digit!r} (U+{ord(digit):04X}), "
                                     "which is not ASCII."), text
            assert _column(error) == text.index(digit) + 1, text
            assert "digits 0-9" in error.hint


@pytest.mark.parametrize("text, bad", [
    ("x ıs null", "ı"),  # dotless i: case-folds to 'I' without re.ASCII
    ("x İs null", "İ"),
    ("x in ('a') and y = ſalse", "ſ"),  # long s folds to 's'
    ("count(leads where x betweeN 1 aND 2) oR tRUE = faLſe", "ſ"),
    ("x \u212a 1", "\u212a"),  # Kelvin sign folds to 'k'
    ("ｃount(leads)", "ｃ"),
    ("count(léads)", "é"),
    ("1\u00a0+ 2", "\u00a0"),  # a no-break space
])
def test_keywords_and_names_are_ascii(text, bad):
    with pytest.raises(FormulaError, match="which is not ASCII") as raised:
        parse(text)
    assert _column(raised.value) == text.index(bad) + 1


def test_keywords_are_case_insensitive_in_ascii():
    assert parse("x IS NOT NULL AnD y In (1) Or NOT z BETWEEN 1 aNd 2") == parse(
        "x is not null and y in (1) or not z between 1 and 2")


DIGITS = st.text("0123456789", min_size=1, max_size=25)


@st.composite
def ascii_numbers(draw) -> str:
    """12, 12.5, 12., .5 with an optional exponent: every form the grammar's NUMBER admits."""
    whole, fraction = draw(DIGITS), draw(DIGITS)
    text = draw(st.sampled_from([whole, f"{whole}.{fraction}", f"{whole}.", f".{fraction}"]))
    if draw(st.booleans()):
        text += draw(st.sampled_from("eE")) + draw(st.sampled_from(["", "+", "-"])) + draw(
            st.text("0123456789", min_size=1, max_size=3))
    return text


@settings(max_examples=300, deadline=None, database=None)
@given(ascii_numbers())
def test_ascii_numbers_parse_to_their_exact_value(text):
    # The value a person reads in the text, computed without the grammar: digits only make an int.
    expected = int(text) if text.isdigit() else Decimal(text)
    tree = parse(text)
    assert tree == n.NumberLit(expected) and type(tree.value) is type(expected)
    assert parse(f"- {text}") == n.Unary("-", n.NumberLit(expected))
