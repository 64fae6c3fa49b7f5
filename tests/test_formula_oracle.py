"""Formula oracle: random formulas evaluated by the engine and by plain Python over the raw rows.

Each generated expression carries two things built side by side: its formula text and a Python
function computing the same value from the rows of each source at one key. Nothing of the engine
is used on the Python side, so a disagreement is a wrong number in one of the two; the rules the
Python side follows are those of docs/formulas.md and docs/semantics.md.

1. Plain formulas (aggregates with row filters, arithmetic, functions) by month, and by month and
   channel, with and without a --from that cuts into a month.
2. Time functions (previous, cumulative, rolling, share) of an aggregate or a ratio of two, and a
   growth rate over previous(): windows read whole earlier months, plain aggregates the range only.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpi_engine.engine import open_project

BOUNDED = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# --- the data: two sources, a DATE and a TIMESTAMP time column, nulls, gaps ------------------------

SOURCES = """\
sources:
  orders:
    table: orders
    time: ordered_at
    primary_key: order_id
    dimensions: [channel]
  visits:
    table: visits
    time: visited_on
    primary_key: visit_id
    dimensions: [channel]
"""
# order_id, ordered_at, channel, amount, qty, status. No order at all in April 2025.
ORDERS = [
    (1, "2025-01-02 09:00:00", "ppc", 120.0, 2, "paid"),
    (2, "2025-01-09 13:30:00", "email", 80.5, 1, "paid"),
    (3, "2025-01-17 18:00:00", "ppc", None, 3, "refunded"),
    (4, "2025-01-31 23:59:59", "seo", 45.25, None, "paid"),
    (5, "2025-02-01 00:00:00", "ppc", 0.0, 1, "pending"),
    (6, "2025-02-10 10:00:00", "email", 60.0, 2, "paid"),
    (7, "2025-02-14 23:59:59", "ppc", 200.0, 4, "paid"),
    (8, "2025-02-15 00:00:00", "email", None, None, None),
    (9, "2025-02-20 08:15:00", "ppc", 33.75, 1, "refunded"),
    (10, "2025-02-28 12:00:00", "seo", 99.0, 2, "paid"),
    (11, "2025-03-03 09:45:00", "email", 150.0, 5, "paid"),
    (12, "2025-03-11 16:00:00", "email", 12.5, 1, "pending"),
    (13, "2025-03-19 11:11:00", "ppc", 75.0, None, "paid"),
    (14, "2025-03-27 20:00:00", "ppc", None, 2, "pending"),
    (15, "2025-05-02 07:00:00", "seo", 300.0, 6, "paid"),
    (16, "2025-05-12 14:00:00", "ppc", 20.0, 1, "refunded"),
    (17, "2025-05-20 19:30:00", "email", 55.5, 3, "paid"),
    (18, "2025-05-31 23:00:00", "ppc", 10.0, 0, "paid"),
    (19, "2025-06-05 10:00:00", "email", 42.0, 2, "paid"),
    (20, "2025-06-18 15:00:00", "seo", None, 1, "refunded"),
    (21, "2025-06-25 09:00:00", "ppc", 88.25, 3, "paid"),
]
# visit_id, visited_on, channel, pages, cost. No seo visit before May; none at all in March.
VISITS = [
    (1, "2025-01-01", "ppc", 3, 1.5),
    (2, "2025-01-05", "email", None, 0.0),
    (3, "2025-01-20", "ppc", 7, 2.25),
    (4, "2025-01-31", "email", 1, None),
    (5, "2025-02-02", "ppc", 2, 1.0),
    (6, "2025-02-14", "ppc", None, 3.5),
    (7, "2025-02-15", "email", 4, 0.75),
    (8, "2025-02-27", "email", 0, 0.0),
    (9, "2025-04-01", "ppc", 5, 2.0),
    (10, "2025-04-09", "email", 6, None),
    (11, "2025-04-30", "ppc", 1, 4.0),
    (12, "2025-05-03", "seo", 8, 5.5),
    (13, "2025-05-15", "ppc", None, 1.25),
    (14, "2025-05-22", "email", 2, 0.5),
    (15, "2025-06-01", "seo", 3, 2.75),
    (16, "2025-06-10", "ppc", 9, 6.0),
    (17, "2025-06-30", "email", None, None),
]


def _rows(columns: list[str], tuples: list[tuple], time: str) -> list[dict]:
    rows = []
    for values in tuples:
        row = dict(zip(columns, values))
        row["_time"] = dt.datetime.fromisoformat(row[time])
        row["_month"] = row["_time"].date().replace(day=1)
        rows.append(row)
    return rows


ORDER_COLUMNS = ["order_id", "ordered_at", "channel", "amount", "qty", "status"]
VISIT_COLUMNS = ["visit_id", "visited_on", "channel", "pages", "cost"]
DATA = {"orders": _rows(ORDER_COLUMNS, ORDERS, "ordered_at"), "visits": _rows(VISIT_COLUMNS, VISITS, "visited_on")}
NUMERIC = {"orders": ["amount", "qty"], "visits": ["pages", "cost"]}
CHANNELS = ["ppc", "email", "seo"]


def _csv(columns: list[str], tuples: list[tuple]) -> str:
    lines = [",".join(columns)]
    lines += [",".join("" if v is None else str(v) for v in values) for values in tuples]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("oracle") / "project"
    (root / "data").mkdir(parents=True)
    (root / "kpi_engine.yaml").write_text("name: oracle\nwarehouse: {adapter: duckdb, data: data}\n")
    (root / "sources.yaml").write_text(SOURCES)
    (root / "kpis.yaml").write_text("kpis:\n  order_count:\n    formula: count(orders)\n")
    (root / "data" / "orders.csv").write_text(_csv(ORDER_COLUMNS, ORDERS))
    (root / "data" / "visits.csv").write_text(_csv(VISIT_COLUMNS, VISITS))
    with open_project(root) as opened:
        yield opened


# --- SQL's three-valued logic and null-propagating arithmetic -----------------------------------


def _and(a, b):
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _or(a, b):
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def _not(a):
    return None if a is None else not a


def _compare(op: str, a, b):
    if a is None or b is None:
        return None
    return {"=": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def _arithmetic(op: str, a, b):
    if a is None or b is None:
        return None
    if op in ("/", "%") and b == 0:
        return None  # division or modulo by zero gives null
    return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b,
            "%": lambda: math.fmod(a, b)}[op]()


def _round(x, digits: int):
    """Half away from zero, as the warehouses round."""
    if x is None:
        return None
    scale = 10 ** digits
    return math.copysign(math.floor(abs(x) * scale + 0.5), x) / scale


# --- generators: (formula text, Python function) pairs ---------------------------------------------
# A row expression's function takes one row; a formula's takes {source: rows at the key}.


def _row_number(source: str):
    columns = st.sampled_from(NUMERIC[source])
    column = columns.map(lambda c: (c, lambda row, c=c: row[c]))
    combined = st.tuples(columns, st.sampled_from(["+", "-", "*"]), columns).map(
        lambda t: (f"{t[0]} {t[1]} {t[2]}", lambda row, t=t: _arithmetic(t[1], row[t[0]], row[t[2]])))
    scaled = st.tuples(columns, st.sampled_from([2, 3])).map(
        lambda t: (f"{t[0]} * {t[1]}", lambda row, t=t: _arithmetic("*", row[t[0]], t[1])))
    return st.one_of(column, combined, scaled)


def _row_condition(source: str):
    numbers = st.sampled_from([0, 1, 2, 5, 50, 100])
    compare_ops = st.sampled_from(["=", "!=", "<", "<=", ">", ">="])
    leaves = [
        st.tuples(st.sampled_from(NUMERIC[source]), compare_ops, numbers).map(
            lambda t: (f"{t[0]} {t[1]} {t[2]}", lambda row, t=t: _compare(t[1], row[t[0]], t[2]))),
        st.tuples(st.sampled_from(NUMERIC[source]), numbers, numbers, st.booleans()).map(
            lambda t: (f"{t[0]} {'not ' if t[3] else ''}between {t[1]} and {t[2]}",
                       lambda row, t=t: _between(row[t[0]], t[1], t[2], t[3]))),
        st.tuples(st.sampled_from(NUMERIC[source] + ["channel"]), st.booleans()).map(
            lambda t: (f"{t[0]} is {'not ' if t[1] else ''}null",
                       lambda row, t=t: (row[t[0]] is None) != t[1])),
        st.tuples(st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=2, unique=True), st.booleans()).map(
            lambda t: (f"channel {'not ' if t[1] else ''}in ({', '.join(repr(c) for c in t[0])})",
                       lambda row, t=t: _in(row["channel"], t[0], t[1]))),
    ]
    if source == "orders":
        leaves.append(st.sampled_from(["paid", "refunded", "pending"]).map(
            lambda s: (f"status = '{s}'", lambda row, s=s: _compare("=", row["status"], s))))

    def extend(inner):
        return st.one_of(
            st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
                lambda t: (f"({t[0][0]}) {t[1]} ({t[2][0]})",
                           lambda row, t=t: (_and if t[1] == "and" else _or)(t[0][1](row), t[2][1](row)))),
            inner.map(lambda c: (f"not ({c[0]})", lambda row, c=c: _not(c[1](row)))),
        )

    return st.recursive(st.one_of(*leaves), extend, max_leaves=3)


def _between(x, low, high, negated: bool):
    inside = _and(_compare(">=", x, low), _compare("<=", x, high))
    return _not(inside) if negated else inside


def _in(x, values, negated: bool):
    if x is None:
        return None
    return (x not in values) if negated else (x in values)


def _aggregate_value(func: str, values: list):
    """values: the argument at every row the filter keeps (None where null)."""
    present = [v for v in values if v is not None]
    if func == "count":
        return len(present)
    if func == "count_distinct":
        return len(set(present))
    if func == "sum":
        return sum(present) if present else 0  # a sum of nothing is 0, as a count is
    if not present:
        return None
    return {"avg": lambda: sum(present) / len(present), "min": lambda: min(present),
            "max": lambda: max(present)}[func]()


def _aggregate(source: str, funcs=("count", "count_column", "count_distinct", "sum", "avg", "min", "max")):
    where = st.one_of(st.none(), _row_condition(source))

    def build(func, argument, condition):
        keep = (lambda row: True) if condition is None else (lambda row: condition[1](row) is True)
        suffix = "" if condition is None else f" where {condition[0]}"
        if func == "count":
            return (f"count({source}{suffix})",
                    lambda env: sum(1 for row in env[source] if keep(row)), {source})
        name = "count" if func == "count_column" else func
        text, value = argument
        if func in ("count_column", "count_distinct"):
            qualified = f"{source}.{text}"
        else:
            qualified = " ".join(f"{source}.{w}" if w in NUMERIC[source] else w for w in text.split())
        return (f"{name}({qualified}{suffix})",
                lambda env: _aggregate_value(name, [value(row) for row in env[source] if keep(row)]), {source})

    columns = st.sampled_from(NUMERIC[source]).map(lambda c: (c, lambda row, c=c: row[c]))
    return st.sampled_from(funcs).flatmap(
        lambda f: st.tuples(st.just(f), columns if f in ("count_column", "count_distinct") else _row_number(source),
                            where).map(lambda t: build(*t)))


NUMBER_LITERALS = st.sampled_from([0, 1, 2, 3, 10, 0.5, 2.5]).map(lambda x: (str(x), lambda env, x=x: x, set()))


def _combine(texts_and_functions, render, compute):
    sources = set().union(*(t[2] for t in texts_and_functions))
    return (render(*(t[0] for t in texts_and_functions)),
            lambda env: compute(*(t[1](env) for t in texts_and_functions)), sources)


def _least(*xs):
    return None if any(x is None for x in xs) else min(xs)


def _greatest(*xs):
    return None if any(x is None for x in xs) else max(xs)


def _coalesce(*xs):
    return next((x for x in xs if x is not None), None)


def _nullif(a, b):
    return None if a is not None and b is not None and a == b else a


def _formula():
    leaves = st.one_of(NUMBER_LITERALS, _aggregate("orders"), _aggregate("visits"))

    def extend(inner):
        return st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "%"]), inner).map(
                lambda t: _combine([t[0], t[2]], lambda a, b, op=t[1]: f"({a} {op} {b})",
                                   lambda a, b, op=t[1]: _arithmetic(op, a, b))),
            inner.map(lambda x: _combine([x], lambda a: f"-({a})", lambda a: None if a is None else -a)),
            inner.map(lambda x: _combine([x], lambda a: f"abs({a})", lambda a: None if a is None else abs(a))),
            st.tuples(inner, st.integers(0, 2)).map(
                lambda t: _combine([t[0]], lambda a, d=t[1]: f"round({a}, {d})", lambda a, d=t[1]: _round(a, d))),
            st.lists(inner, min_size=1, max_size=3).map(
                lambda xs: _combine(xs, lambda *a: f"coalesce({', '.join(a)})", _coalesce)),
            st.tuples(inner, inner).map(lambda t: _combine(list(t), lambda a, b: f"nullif({a}, {b})", _nullif)),
            st.lists(inner, min_size=1, max_size=3).map(
                lambda xs: _combine(xs, lambda *a: f"least({', '.join(a)})", _least)),
            st.lists(inner, min_size=1, max_size=3).map(
                lambda xs: _combine(xs, lambda *a: f"greatest({', '.join(a)})", _greatest)),
            st.tuples(inner, st.sampled_from(["=", "!=", "<", "<=", ">", ">="]), inner, inner, inner).map(
                lambda t: _combine([t[0], t[2], t[3], t[4]],
                                   lambda a, b, x, y, op=t[1]: f"if({a} {op} {b}, {x}, {y})",
                                   lambda a, b, x, y, op=t[1]: x if _compare(op, a, b) is True else y)),
        )

    return st.recursive(leaves, extend, max_leaves=5).filter(lambda f: f[2])  # reads at least one source


# --- evaluating over the raw rows -------------------------------------------------------------------


def _in_range(row, start: dt.date | None) -> bool:
    return start is None or row["_time"] >= dt.datetime.combine(start, dt.time())


def _key(row, by_channel: bool) -> tuple:
    return (row["_month"], row["channel"]) if by_channel else (row["_month"],)


def _row_set(sources: set[str], start, by_channel: bool) -> set[tuple]:
    """The keys at which at least one source the formula reads has a row in the range."""
    return {_key(row, by_channel) for s in sources for row in DATA[s] if _in_range(row, start)}


def _env(select) -> dict[str, list[dict]]:
    return {s: [row for row in rows if select(row)] for s, rows in DATA.items()}


def _plain_oracle(formula, start, by_channel: bool) -> dict[tuple, object]:
    _text, compute, sources = formula
    return {key: compute(_env(lambda row, key=key: _in_range(row, start) and _key(row, by_channel) == key))
            for key in _row_set(sources, start, by_channel)}


def _engine(project, text: str, start, by_channel: bool) -> dict[tuple, object]:
    by = ["channel"] if by_channel else []
    rows = project.evaluate(formulas=[text], grain="month", by=by, start=start, describe=False).to_dicts()
    result = {}
    for row in rows:
        key = (row["period"], row["channel"]) if by_channel else (row["period"],)
        assert key not in result, f"two rows for {key}"
        result[key] = row["formula"]
    return result


def _as_date(value) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


def _assert_same(engine: dict, oracle: dict, text: str, request: str) -> None:
    engine = {(_as_date(k[0]), *k[1:]): v for k, v in engine.items()}
    assert set(engine) == set(oracle), f"{text} [{request}]: keys differ: engine only " \
        f"{sorted(set(engine) - set(oracle))}, oracle only {sorted(set(oracle) - set(engine))}"
    for key in sorted(oracle):
        got, want = engine[key], oracle[key]
        if want is None:
            assert got is None, f"{text} [{request}] at {key}: engine {got!r}, expected null"
            continue
        assert got is not None, f"{text} [{request}] at {key}: engine null, expected {want!r}"
        got = float(got) if isinstance(got, Decimal) else got
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9), \
            f"{text} [{request}] at {key}: engine {got!r}, expected {want!r}"


STARTS = st.sampled_from([None, dt.date(2025, 2, 1), dt.date(2025, 2, 15)])


@BOUNDED
@given(formula=_formula(), start=STARTS, by_channel=st.booleans())
def test_formulas_match_plain_python(project, formula, start, by_channel):
    engine = _engine(project, formula[0], start, by_channel)
    _assert_same(engine, _plain_oracle(formula, start, by_channel), formula[0],
                 f"grain=month by={'channel' if by_channel else '-'} from={start}")


# --- time functions -----------------------------------------------------------------------------------


def _months_back(month: dt.date, n: int) -> dt.date:
    index = month.year * 12 + month.month - 1 - n
    return dt.date(index // 12, index % 12 + 1, 1)


def _base():
    """x: an aggregate that can be added up over time, or a ratio of two."""
    aggregate = st.one_of(_aggregate("orders", ("count", "count_column", "sum", "avg")),
                          _aggregate("visits", ("count", "count_column", "sum", "avg")))
    ratio = st.tuples(aggregate, aggregate).map(
        lambda t: _combine(list(t), lambda a, b: f"{a} / {b}", lambda a, b: _arithmetic("/", a, b)))
    return st.one_of(aggregate, ratio)


def _time_oracle(function: str, periods: int, base, start, by_channel: bool) -> tuple[str, dict]:
    """The formula text and its value at every key of its row set."""
    text, compute, sources = base

    def same_channel(row, key):
        return not by_channel or row["channel"] == key[1]

    def windowed(key, months):  # whole months: windows look beyond --from
        return compute(_env(lambda row: row["_month"] in months and same_channel(row, key)))

    def in_range(key):
        return compute(_env(lambda row: _in_range(row, start) and _key(row, by_channel) == key))

    def previous(key):
        return windowed(key, {_months_back(key[0], periods)})

    if function == "previous":
        formula, value = f"previous({text}, {periods})", previous
    elif function == "growth":
        formula = f"100 * (({text}) - previous({text}, {periods})) / previous({text}, {periods})"

        def value(key):
            change = _arithmetic("-", in_range(key), previous(key))
            return _arithmetic("/", _arithmetic("*", 100, change), previous(key))
    elif function == "rolling":
        formula = f"rolling({text}, {periods})"

        def value(key):
            return windowed(key, {_months_back(key[0], i) for i in range(periods)})
    elif function == "cumulative":
        formula = f"cumulative({text})"

        def value(key):  # from the first row of the data; a ratio accumulates both of its sides
            return compute(_env(lambda row: row["_month"] <= key[0] and same_channel(row, key)))
    else:
        formula = f"share({text})"

        def value(key):  # the total of each aggregate over the channels of the month, in the range
            total = compute(_env(lambda row: _in_range(row, start) and row["_month"] == key[0]))
            return _arithmetic("/", in_range(key), total)

    return formula, {key: value(key) for key in _row_set(sources, start, by_channel)}


@BOUNDED
@given(function=st.sampled_from(["previous", "growth", "rolling", "cumulative", "share"]),
       periods=st.integers(1, 3), base=_base(), start=STARTS, by_channel=st.booleans())
def test_time_functions_match_plain_python(project, function, periods, base, start, by_channel):
    text, oracle = _time_oracle(function, periods, base, start, by_channel)
    _assert_same(_engine(project, text, start, by_channel), oracle, text,
                 f"grain=month by={'channel' if by_channel else '-'} from={start}")
