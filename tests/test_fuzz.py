"""Property tests: whatever text arrives, only the engine's own errors come out.

- Random text and random bytes given to the formula parser either parse or raise
  ``FormulaError``.
- Random YAML, as text and as generated structures, written into a project: reading and
  validating it raises only ``KpiEngineError`` subclasses.
- Formulas generated from the grammar over a small fixed project: when one validates, it
  compiles for DuckDB, runs there without a database error (by month and channel), and its
  SQL survives a sqlglot round trip.
- The grammar is an allowlist: comments, semicolons, quoted identifiers and functions that
  do not exist are rejected.

Engine bugs these properties ran into are pinned as regression tests at the end of this module;
those still open are strict xfails (see also test_bad_input.py).
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from pathlib import Path

import pytest
import sqlglot
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpi_engine import nodes as n
from kpi_engine.calendar import GRAINS
from kpi_engine.engine import check_project, open_project
from kpi_engine.errors import FormulaError, KpiEngineError, QueryError, WarehouseError
from kpi_engine.parser import parse
from kpi_engine.resolve import resolve_formula
from kpi_engine.spec import load_project, read_project

FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# --- the fixed project -------------------------------------------------------------------------

CONFIG = "name: fuzz\nwarehouse: {adapter: duckdb, data: data}\n"
SOURCES = """\
sources:
  orders:
    table: orders
    time: ordered_at
    primary_key: order_id
    dimensions: [channel]
  leads:
    table: leads
    time: created_at
    primary_key: lead_id
    dimensions: [channel]
"""
KPIS = """\
kpis:
  revenue:
    formula: sum(orders.amount)
  new_leads:
    formula: count(leads)
  aov:
    formula: revenue / count(orders)
"""
# Three months, two channels, some nulls (empty cells) and zeros.
ORDERS_CSV = """\
order_id,ordered_at,channel,customer_id,amount,discount,status,is_paid
1,2025-01-03 10:00:00,ppc,1,120.0,0,paid,true
2,2025-01-20 12:30:00,email,2,80.0,10,paid,true
3,2025-02-02 09:00:00,ppc,1,0.0,,refunded,false
4,2025-02-14 18:00:00,email,3,,5,paid,
5,2025-03-01 00:00:00,ppc,2,200.0,20,pending,false
6,2025-03-30 23:59:59,ppc,4,50.5,0,paid,true
"""
LEADS_CSV = """\
lead_id,created_at,channel,customer_id,score,industry,is_qualified,customer_at
1,2025-01-01 08:00:00,ppc,1,9,saas,true,2025-01-03 10:00:00
2,2025-01-15 11:00:00,email,2,5,retail,false,2025-01-20 12:30:00
3,2025-02-01 00:00:00,ppc,,0,,true,
4,2025-02-20 14:00:00,email,3,7,saas,,2025-02-14 18:00:00
5,2025-03-10 16:45:00,ppc,4,,retail,false,
"""

COLUMNS = {  # source -> type -> columns
    "orders": {"number": ["amount", "discount", "customer_id", "order_id"], "string": ["status", "channel"],
               "boolean": ["is_paid"], "timestamp": ["ordered_at"]},
    "leads": {"number": ["score", "customer_id", "lead_id"], "string": ["industry", "channel"],
              "boolean": ["is_qualified"], "timestamp": ["created_at", "customer_at"]},
}
STRINGS = {"status": ["paid", "refunded", "pending", "it''s"], "channel": ["ppc", "email", "seo"],
           "industry": ["saas", "retail"]}
ALL_COLUMNS = {source: [c for columns in kinds.values() for c in columns] for source, kinds in COLUMNS.items()}
KPI_NAMES = ["revenue", "new_leads", "aov"]


def write_project(root: Path, specs: dict[str, str] | None = None, config: str = CONFIG) -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "kpi_engine.yaml").write_text(config, encoding="utf-8")
    for name, text in (specs if specs is not None else {"sources.yaml": SOURCES, "kpis.yaml": KPIS}).items():
        (root / name).write_text(text, encoding="utf-8")
    (root / "data" / "orders.csv").write_text(ORDERS_CSV)
    (root / "data" / "leads.csv").write_text(LEADS_CSV)
    return root


@pytest.fixture(scope="module")
def fuzz_project(tmp_path_factory):
    root = write_project(tmp_path_factory.mktemp("fuzz") / "project")
    with open_project(root) as project:
        yield project, project.model()


@pytest.fixture(scope="module")
def scratch_project(tmp_path_factory):
    """A valid project that each example adds one file to (bad.yaml) or whose config it replaces."""
    return write_project(tmp_path_factory.mktemp("yaml") / "project")


# --- 1. random text into the parser ---------------------------------------------------------------


def _parses_or_formula_error(text: str) -> None:
    try:
        node = parse(text)
    except FormulaError as error:
        assert error.message and error.location is not None
        return
    assert isinstance(node, n.Node)


@FAST
@given(st.text(max_size=300))
def test_parse_random_text(text):
    _parses_or_formula_error(text)


@FAST
@given(st.binary(max_size=300), st.sampled_from(["utf-8", "latin-1", "utf-16"]))
def test_parse_random_bytes(data, encoding):
    _parses_or_formula_error(data.decode(encoding, errors="replace"))


# Pieces of the language, glued at random: reaches much deeper into the grammar than text().
TOKENS = ["(", ")", ",", ".", "+", "-", "*", "/", "%", "=", "==", "!=", "<>", "<", "<=", ">", ">=", "and", "or",
          "not", "in", "between", "is", "null", "true", "false", "where", "per", "count", "sum", "if", "round",
          "previous", "rolling", "share", "leads", "orders", "amount", "'paid'", "'it''s'", "'", "1", "0.5", ".25",
          "1e3", "x", "_", " ", "\n", "\t", ";", "--", "/*", "*/", "#", "`", '"', "\\", "é", "\x00"]


@FAST
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
def test_parse_token_soup(text):
    _parses_or_formula_error(text)


# --- 2. random YAML into a project ------------------------------------------------------------------


def _only_engine_errors(root: Path) -> None:
    """Reading, loading and validating (offline) may only fail with the engine's own errors."""
    _project, errors = read_project(root)
    assert all(isinstance(error, KpiEngineError) for error in errors), errors
    try:
        load_project(root)
    except KpiEngineError:
        pass
    _model, errors = check_project(root, describe=False)
    assert all(isinstance(error, KpiEngineError) for error in errors), errors


@FAST
@given(st.text(max_size=300))
def test_random_text_as_a_spec_file(scratch_project, text):
    path = scratch_project / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        _only_engine_errors(scratch_project)
    finally:
        path.unlink()


@FAST
@given(st.binary(max_size=200))
def test_random_bytes_as_a_spec_file(scratch_project, data):
    path = scratch_project / "bad.yaml"
    path.write_bytes(data)
    try:
        _only_engine_errors(scratch_project)
    finally:
        path.unlink()


@FAST
@given(st.text(max_size=200))
def test_random_text_as_the_project_file(scratch_project, text):
    path = scratch_project / "kpi_engine.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        _only_engine_errors(scratch_project)
    finally:
        path.write_text(CONFIG, encoding="utf-8")


# Structures that look like specs: real field names and plausible values, mixed with junk.
FIELDS = ["sources", "kpis", "tests", "table", "sql", "time", "primary_key", "dimensions", "columns",
          "relationships", "to", "on", "to_column", "type", "name", "column", "label", "description", "formula",
          "unit", "format", "owner", "tags", "target", "min", "max", "direction", "given", "expect", "kpis",
          "by", "grain", "leads", "orders", "revenue", "amount", "channel", "x", "1", ""]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["leads", "orders", "count(leads)", "sum(orders.amount)", "revenue / new_leads", "number",
                     "percent", "higher_is_better", "channel", "select * from leads", "delete from leads",
                     "ordered_at", "builtin:marketing", ",.2f", "{", "}", "[", "'", '"', "*", "&", "%", "@",
                     "a: b", "- c", "\t", "=", "!x", "!!int x", "&a", "*a", "<<"]),
    st.text(max_size=20),
)
STRUCTURES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(FIELDS), inner, max_size=4)),
    max_leaves=20,
)


@FAST
@given(st.dictionaries(st.sampled_from(["sources", "kpis", "tests", "kpi", "source"]), STRUCTURES, max_size=3))
def test_generated_spec_structures(scratch_project, data):
    path = scratch_project / "bad.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    try:
        _only_engine_errors(scratch_project)
    finally:
        path.unlink()


PROJECT_FIELDS = ["name", "description", "warehouse", "dialect", "currency", "timezone", "week_start",
                  "fiscal_year_start", "include", "adapter", "data", "path"]


@FAST
@given(st.dictionaries(st.sampled_from(PROJECT_FIELDS), st.one_of(SCALARS, st.lists(SCALARS, max_size=3),
                                                                   st.dictionaries(st.sampled_from(PROJECT_FIELDS),
                                                                                   SCALARS, max_size=3)),
                       max_size=5))
def test_generated_project_files(scratch_project, data):
    path = scratch_project / "kpi_engine.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    try:
        _only_engine_errors(scratch_project)
    finally:
        path.write_text(CONFIG, encoding="utf-8")


# --- 3. formulas generated from the grammar -------------------------------------------------------

NUMBERS = st.sampled_from(["0", "1", "2", "3", "7", "10", "100", "0.5", ".25", "1.5e3", "2E-2"])
COMPARE = st.sampled_from(["=", "==", "!=", "<>", "<", "<=", ">", ">="])
ARITHMETIC = st.sampled_from(["+", "-", "*", "/", "%"])


def _maybe_paren(text: str, paren: bool) -> str:
    return f"({text})" if paren else text


def _binary(operands, operators):
    return st.tuples(operands, operators, operands, st.booleans()).map(
        lambda t: _maybe_paren(f"{t[0]} {t[1]} {t[2]}", t[3]))


def _negate(operand):
    # "-x" or "-(-x)", never "--x": that starts a comment, which the language rejects.
    return operand.map(lambda x: f"-{x}" if not x.startswith("-") else f"-({x})")


def _column(source: str, kind: str, qualified: bool | None = None):
    names = st.sampled_from(COLUMNS[source][kind])
    if qualified is True:
        return names.map(lambda c: f"{source}.{c}")
    return st.tuples(names, st.booleans()).map(lambda t: f"{source}.{t[0]}" if t[1] else t[0])


def _row_number(source: str):
    """A numeric expression over one source's rows (inside an aggregate)."""
    leaves = st.one_of(_column(source, "number"), NUMBERS)
    if source == "leads":
        leaves = st.one_of(leaves, st.just("days_between(created_at, customer_at)"))

    def extend(inner):
        return st.one_of(
            _binary(inner, ARITHMETIC), _negate(inner),
            inner.map(lambda x: f"abs({x})"),
            st.tuples(inner, st.integers(0, 3)).map(lambda t: f"round({t[0]}, {t[1]})"),
            st.lists(inner, min_size=1, max_size=3).map(lambda xs: f"coalesce({', '.join(xs)})"),
            st.tuples(inner, inner).map(lambda t: f"nullif({t[0]}, {t[1]})"),
            st.lists(inner, min_size=1, max_size=3).map(lambda xs: f"greatest({', '.join(xs)})"),
            st.lists(inner, min_size=1, max_size=3).map(lambda xs: f"least({', '.join(xs)})"),
        )

    return st.recursive(leaves, extend, max_leaves=4)


def _row_condition(source: str):
    """A condition over one source's rows: an aggregate's filter."""
    other = "leads" if source == "orders" else "orders"
    text_column = st.sampled_from(COLUMNS[source]["string"])
    leaves = st.one_of(
        st.tuples(_row_number(source), COMPARE, _row_number(source)).map(" ".join),
        st.tuples(text_column, st.sampled_from(["=", "!="])).flatmap(
            lambda t: st.sampled_from(STRINGS[t[0]]).map(lambda v: f"{t[0]} {t[1]} '{v}'")),
        st.tuples(text_column, st.booleans()).flatmap(
            lambda t: st.lists(st.sampled_from(STRINGS[t[0]]), min_size=1, max_size=3).map(
                lambda vs: f"{t[0]} {'not ' if t[1] else ''}in ({', '.join(_quoted(v) for v in vs)})")),
        _column(source, "boolean"),
        st.tuples(st.sampled_from(ALL_COLUMNS[source]), st.booleans()).map(
            lambda t: f"{t[0]} is {'not ' if t[1] else ''}null"),
        st.tuples(_column(source, "number"), NUMBERS, NUMBERS, st.booleans()).map(
            lambda t: f"{t[0]} {'not ' if t[3] else ''}between {t[1]} and {t[2]}"),
        st.tuples(_column(source, "timestamp"), COMPARE, st.sampled_from(["'2025-01-15'", "'2025-02-01 12:00:00'"]))
        .map(" ".join),
        # Per-entity conditions: an aggregate of a source per key, compared with a number.
        st.tuples(st.sampled_from([f"count({other} per customer_id)", f"count({source} per customer_id)",
                                   "sum(orders.amount per customer_id)", "max(leads.score per customer_id)",
                                   f"count({other} where channel = 'ppc' per customer_id)"]),
                  COMPARE, NUMBERS).map(" ".join),
        st.sampled_from(["true", "false"]),
    )

    def extend(inner):
        return st.one_of(
            st.tuples(inner, st.sampled_from(["and", "or", "AND", "Or"]), inner, st.booleans()).map(
                lambda t: _maybe_paren(f"{t[0]} {t[1]} {t[2]}", t[3])),
            inner.map(lambda x: f"not {x}" if " " not in x else f"not ({x})"),
        )

    return st.recursive(leaves, extend, max_leaves=3)


def _quoted(value: str) -> str:
    return f"'{value}'"  # the values in STRINGS already double their quotes


def _aggregate(source: str):
    where = st.one_of(st.just(""), _row_condition(source).map(lambda c: f" where {c}"))
    numeric_argument = st.one_of(
        _column(source, "number", qualified=True),
        st.tuples(_column(source, "number", qualified=True), ARITHMETIC, _row_number(source)).map(" ".join),
    )
    any_column = st.sampled_from(ALL_COLUMNS[source]).map(lambda c: f"{source}.{c}")
    return st.one_of(
        where.map(lambda w: f"count({source}{w})"),
        st.tuples(any_column, where).map(lambda t: f"count({t[0]}{t[1]})"),
        st.tuples(any_column, where).map(lambda t: f"count_distinct({t[0]}{t[1]})"),
        st.tuples(st.sampled_from(["sum", "avg", "min", "max", "SUM", "Avg"]), numeric_argument, where).map(
            lambda t: f"{t[0]}({t[1]}{t[2]})"),
        st.tuples(st.sampled_from(["last", "first"]), _column(source, "number", qualified=True)).map(
            lambda t: f"{t[0]}({t[1]})"),
    )


def _kpi_number(with_time_functions: bool):
    leaves = st.one_of(NUMBERS, st.sampled_from(KPI_NAMES), _aggregate("orders"), _aggregate("leads"))

    def extend(inner):
        options = [
            _binary(inner, ARITHMETIC), _negate(inner),
            inner.map(lambda x: f"abs({x})"),
            st.tuples(inner, st.one_of(st.none(), st.integers(0, 3))).map(
                lambda t: f"round({t[0]})" if t[1] is None else f"round({t[0]}, {t[1]})"),
            st.lists(inner, min_size=1, max_size=3).map(lambda xs: f"coalesce({', '.join(xs)})"),
            st.tuples(inner, inner).map(lambda t: f"nullif({t[0]}, {t[1]})"),
            st.lists(inner, min_size=1, max_size=3).map(lambda xs: f"least({', '.join(xs)})"),
            st.lists(inner, min_size=1, max_size=3).map(lambda xs: f"greatest({', '.join(xs)})"),
            st.tuples(_kpi_condition(inner), inner, st.one_of(inner, st.just("null"))).map(
                lambda t: f"if({t[0]}, {t[1]}, {t[2]})"),
        ]
        if with_time_functions:
            plain = PLAIN_NUMBERS
            options += [
                st.tuples(plain, st.one_of(st.none(), st.integers(1, 12))).map(
                    lambda t: f"previous({t[0]})" if t[1] is None else f"previous({t[0]}, {t[1]})"),
                st.tuples(plain, st.sampled_from([None, "month", "quarter", "year", "fiscal_year"])).map(
                    lambda t: f"cumulative({t[0]})" if t[1] is None else f"cumulative({t[0]}, '{t[1]}')"),
                st.tuples(plain, st.integers(1, 6)).map(lambda t: f"rolling({t[0]}, {t[1]})"),
                plain.map(lambda x: f"share({x})"),
            ]
        return st.one_of(*options)

    return st.recursive(leaves, extend, max_leaves=5)


def _kpi_condition(number):
    return st.one_of(
        st.tuples(number, COMPARE, number).map(" ".join),
        st.tuples(number, number, number, st.booleans()).map(
            lambda t: f"{t[0]} {'not ' if t[3] else ''}between {t[1]} and {t[2]}"),
        st.tuples(number, st.lists(number, min_size=1, max_size=3)).map(
            lambda t: f"{t[0]} in ({', '.join(t[1])})"),
        st.tuples(number, st.booleans()).map(lambda t: f"{t[0]} is {'not ' if t[1] else ''}null"),
        st.tuples(number, COMPARE, number).map(lambda t: f"not ({' '.join(t)})"),
        st.tuples(number, number, number).map(lambda t: f"{t[0]} > {t[1]} and {t[1]} <= {t[2]} or {t[0]} = 0"),
    )


PLAIN_NUMBERS = _kpi_number(with_time_functions=False)
FORMULAS = _kpi_number(with_time_functions=True)


def _roundtrip(sql: str) -> None:
    once = sqlglot.parse_one(sql, read="duckdb").sql("duckdb")
    twice = sqlglot.parse_one(once, read="duckdb").sql("duckdb")
    assert once == twice


def check_formula(project, model, formula: str) -> str:
    """Validate; when valid, compile, round-trip the SQL and run it. Returns what happened."""
    try:
        resolve_formula(model, formula)
    except KpiEngineError:
        return "invalid"
    request = {"formulas": [formula], "grain": "month", "by": ["channel"]}
    try:
        compiled = project.compile(**request)
    except WarehouseError:  # pragma: no cover - compiling never runs a query
        raise
    except QueryError:
        # Valid, but not answerable for this request (e.g. count_distinct added up over time).
        return "refused"
    _roundtrip(compiled.sql())
    result = project.evaluate(**request)  # a database error here is a bug: no except
    for row in result.to_dicts():
        value = row["formula"]
        if isinstance(value, Decimal):
            assert value.is_finite(), row
        else:
            assert value is None or (isinstance(value, (int, float)) and math.isfinite(value)), row
    return "ran"


@SLOW
@given(formula=FORMULAS)
def test_generated_formulas_validate_compile_run_and_roundtrip(fuzz_project, formula):
    project, model = fuzz_project
    check_formula(project, model, formula)


REQUESTS = st.fixed_dictionaries({
    "grain": st.sampled_from([None, *GRAINS]),
    "by": st.sampled_from([[], ["channel"]]),
    "start": st.sampled_from([None, dt.date(2025, 1, 1), dt.date(2025, 2, 15)]),
    "end": st.sampled_from([None, dt.date(2025, 3, 1), dt.date(2025, 4, 1)]),
    "where": st.sampled_from([None, "channel = 'ppc'", "channel in ('ppc', 'email') and not channel = 'seo'"]),
    "having": st.sampled_from([None, "revenue > 0", "new_leads >= 1 or aov is null"]),
    "order_by": st.sampled_from([(), ("-formula",), ("formula",)]),
    "limit": st.sampled_from([None, 0, 2]),
})


@SLOW
@given(formula=FORMULAS, request=REQUESTS)
def test_generated_formulas_run_for_any_request(fuzz_project, formula, request):
    """Beyond month by channel: every grain, with or without dimensions, ranges and filters."""
    project, model = fuzz_project
    try:
        resolve_formula(model, formula)
    except KpiEngineError:
        return
    try:
        compiled = project.compile(formulas=[formula], **request)
    except QueryError:
        return
    _roundtrip(compiled.sql())
    project.evaluate(formulas=[formula], **request)


# Each is wrong on its own, whatever surrounds it.
MISTAKES = st.sampled_from([
    "sum(leads.industry)", "orders.amount", "revenu", "counts(leads)", "'paid'", "count(leads where score)",
    "sum(count(leads))", "count(order)", "if(1, 2, 3)", "round(1, 2, 3)", "(revenue > 1)", "leads",
    "previous(at_start(revenue))", "count(leads per lead_id)", "count(orders where channel > 1)",
    "max(days_between(leads.score, leads.created_at))", "nullif(revenue)", "rolling(revenue, 0)",
    "cumulative(revenue, 'decade')", "avg(orders)", "sum(orders.amount + leads.score)", "abs(revenue where true)",
])


@FAST
@given(valid=FORMULAS, mistake=MISTAKES, place=st.sampled_from(["{v} + {m}", "{m} * {v}", "coalesce({v}, {m})",
                                                                 "if({v} > 0, {m}, {v})", "abs({m})"]))
def test_a_formula_with_a_mistake_never_validates(fuzz_project, valid, mistake, place):
    _, model = fuzz_project
    with pytest.raises(KpiEngineError):
        resolve_formula(model, place.format(v=valid, m=mistake))


def test_the_generator_mostly_produces_valid_formulas(fuzz_project):
    """Guard against a generator that only exercises the error paths."""
    project, model = fuzz_project
    outcomes = []

    @settings(max_examples=40, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(FORMULAS)
    def collect(formula):
        outcomes.append(check_formula(project, model, formula))

    collect()
    assert outcomes.count("ran") >= len(outcomes) // 2, outcomes


@pytest.mark.parametrize("formula", [
    "revenue / new_leads",
    "sum(orders.amount where status = 'paid' and channel in ('ppc', 'email')) / count(orders)",
    "count(leads where is_qualified and days_between(created_at, customer_at) <= 7)",
    "sum(orders.amount where count(orders per customer_id) > 1)",
    "if(previous(revenue) > 0, 100 * (revenue - previous(revenue)) / previous(revenue), null)",
    "cumulative(revenue, 'year') + rolling(new_leads, 3) * share(aov)",
    "round(coalesce(nullif(aov, 0), greatest(1, 2)), 2) % 7",
    "count(leads where score not between 2 and 8 or industry is null)",
    "-revenue + - -aov",
])
def test_hand_written_formulas(fuzz_project, formula):
    project, model = fuzz_project
    assert check_formula(project, model, formula) == "ran"


# --- 4. the grammar is an allowlist -------------------------------------------------------------------


@pytest.mark.parametrize("formula", [
    "count(leads) # comment",
    "count(leads) /* comment */",
    "/* comment */ count(leads)",
    "count(leads);",
    "count(leads); drop table leads",
    "count(`leads`)",
    'count("leads")',
    'sum("orders"."amount")',
    "count(leads) where 1 = 1",
    "sum(orders.amount) union select 1",
    "count(leads) --",
    "[revenue]",
    "revenue::int",
    "$1",
    "@revenue",
    "count(leads)\\",
    "'unterminated",
])
def test_the_grammar_rejects(formula):
    with pytest.raises(FormulaError):
        parse(formula)


@pytest.mark.parametrize("formula", ["drop(leads)", "pg_sleep(1)", "exec(revenue)", "sleep(10)",
                                     "read_csv('/etc/passwd')", "current_setting('x')", "sqrt(revenue)",
                                     "count(leads where pg_sleep(1) > 0)"])
def test_unknown_functions_are_rejected(fuzz_project, formula):
    _, model = fuzz_project
    with pytest.raises(FormulaError) as caught:
        resolve_formula(model, formula)
    assert "unknown function" in caught.value.message


@pytest.mark.parametrize("formula", ["revenue -- new_leads", "revenue --new_leads", "1 -- 2", "--revenue"])
def test_sql_line_comments_are_rejected(formula):
    """Found here: '--' used to parse as two minus signs, so 'revenue -- new_leads' meant a sum."""
    with pytest.raises(FormulaError) as caught:
        parse(formula)
    assert "comment" in caught.value.message


# --- 5. bugs found here: regression tests, and strict xfails for those still open ------------------


@pytest.mark.parametrize("formula", ["+".join(["1"] * 600), "+".join(["1"] * 5_000), "- " * 600 + "1",
                                     "not " * 1000 + "true", " * ".join(["revenue"] * 700)])
def test_long_flat_chains_parse_or_fail_cleanly(formula):
    """Used to raise RecursionError from the Lark transformer, far within the 10,000-character limit."""
    assert len(formula) <= 10_000
    _parses_or_formula_error(formula)


@pytest.mark.parametrize("formula, depth", [(" + ".join(["revenue"] * 700), 699), ("- " * 600 + "revenue", 600)])
def test_long_flat_chains_compile_or_fail_cleanly(fuzz_project, formula, depth):
    """Found here: compiler._compile_common recursed once per operator into a RecursionError.
    Now the parser refuses trees deeper than 100 levels before anything recurses over them."""
    project, _ = fuzz_project
    with pytest.raises(FormulaError) as raised:
        project.compile(formulas=[formula], grain="month").sql()
    assert raised.value.message.startswith(f"the formula nests operators and function calls {depth} levels deep")


@pytest.mark.parametrize("formula", ["coalesce(revenue, 'paid')", "greatest(revenue, 'a')", "least(1, 'a', revenue)",
                                     "nullif(revenue, 'a')", "if(revenue > 0, 1, 'x')", "coalesce(revenue, revenue > 1)"])
def test_function_arguments_must_agree_in_type(fuzz_project, formula):
    """Found here: these validated, and greatest/nullif then failed in DuckDB (exit 4)."""
    _, model = fuzz_project
    with pytest.raises(KpiEngineError):
        resolve_formula(model, formula)


def test_a_sum_of_200_aggregates_runs_or_fails_cleanly(fuzz_project):
    """Found here: the DuckDB adapter rendered the tree again without the raised recursion limit.
    200 terms are past the depth limit; 100 are within it, and run."""
    project, _ = fuzz_project
    with pytest.raises(FormulaError, match="200 levels deep"):
        project.evaluate(formulas=[" + ".join(["count(leads)"] * 200)], grain="month")
    rows = project.evaluate(formulas=["count(leads)", " + ".join(["count(leads)"] * 100)], grain="month").to_dicts()
    assert rows and all(row["formula_2"] == 100 * row["formula"] for row in rows)


@pytest.mark.parametrize("text", ["!x", "kpis:\n  a: !x text\n", "kpis:\n  a:\n    formula: !!int x\n",
                                  "kpis:\n  a:\n    formula: !!float x\n", "kpis: !!binary a\n"])
def test_yaml_tags_are_engine_errors(tmp_path, text):
    """Found here: PyYAML's ConstructorError/ValueError escaped spec._Document._build."""
    root = write_project(tmp_path / "project", {"bad.yaml": text})
    _only_engine_errors(root)


@pytest.mark.parametrize("text", ["=", "kpis:\n  a:\n    formula: count(leads)\n    label: =\n"])
def test_a_plain_equals_sign_is_an_engine_error(tmp_path, text):
    """Found here: '=' resolves to YAML's 'value' tag, which SafeLoader cannot construct."""
    root = write_project(tmp_path / "project", {"bad.yaml": text})
    _only_engine_errors(root)
