"""The documented limits on hostile spec files, settings and dates (docs/errors.md, Limits).

Each limit is tested at the limit (accepted, with a value computed by hand) and just past it
(one clear error at the right place, exit code 1 or 2, never a traceback). Spec files are read
with a recursive YAML composer and KPIs reference KPIs, so nesting, chains and cycles of
thousands must fail or pass without ever reaching Python's recursion limit.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from click.testing import CliRunner

from kpi_engine import open_project
from kpi_engine.cli import cli
from kpi_engine.errors import ProjectInvalid, QueryError, UsageError, WarehouseError
from kpi_engine.hookspecs import MAX_QUERY_TIMEOUT
from kpi_engine.resolve import MAX_EXPANDED_SIZE
from kpi_engine.spec import MAX_DEPTH, MAX_SPEC_BYTES, MAX_SPEC_FILES, MAX_TEST_ROWS, MAX_VALUES

SOURCES = "sources:\n  leads: {table: leads, time: created_at, primary_key: id, dimensions: [channel]}\n"
# Three leads: two in January 2025, one in February.
LEADS = [{"id": 1, "created_at": "2025-01-03 10:00:00", "channel": "ppc"},
         {"id": 2, "created_at": "2025-01-20 11:00:00", "channel": "email"},
         {"id": 3, "created_at": "2025-02-03 09:30:00", "channel": "email"}]


def run(*args: str):
    result = CliRunner().invoke(cli, [str(arg) for arg in args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def project(make_project, files: dict[str, str] | None = None, leads=LEADS, config: str | None = None,
            name: str = "project"):
    return make_project({"sources.yaml": SOURCES, **(files or {})}, {"leads": leads}, config=config, name=name)


def one_error(result, file: str, line: int, column: int, *fragments: str) -> str:
    """Exactly one problem, at file:line:column, saying each fragment."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.stderr
    assert re.search(rf"{re.escape(file)}:{line}:{column}(?!\d)", errors[0]), errors[0]
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    return errors[0]


# --- spec files: bytes, nesting, values, files ----------------------------------------------------------


def test_a_spec_file_at_the_byte_limit_loads_and_one_byte_more_is_refused(make_project):
    kpis = "kpis:\n  n: {formula: count(leads)}\n"
    padding = "# " + "x" * (MAX_SPEC_BYTES - len(kpis) - 3) + "\n"
    root = project(make_project, {"k.yaml": padding + kpis})
    assert (root / "k.yaml").stat().st_size == MAX_SPEC_BYTES
    assert run("validate", root, "--offline").exit_code == 0
    (root / "k.yaml").write_text("#" + padding + kpis)
    result = run("validate", root, "--offline")
    assert result.exit_code == 1
    assert "k.yaml: the file is larger than 2,000,000 bytes, the limit for a spec file. Split it" in result.stderr


# Levels count from the root mapping (1); a key is on the level of its value. Each case names the
# first value (or key) on level 21.
@pytest.mark.parametrize("text, line, column", [
    # The description is level 4, at column 18; the j-th '[' after it is level 4 + j: j = 17.
    ("kpis:\n  a:\n    formula: count(leads)\n    description: " + "[" * 1000 + "]" * 1000 + "\n", 4, 35),
    # The j-th '{' is level 4 + j at column 18 + 4j; the key 'a' inside the 16th is level 21.
    ("kpis:\n  a:\n    formula: count(leads)\n    description: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n", 4, 83),
    # Key k(i) is level 5 + i, on line 5 + i at column 7 + 2i: i = 16.
    ("kpis:\n  a:\n    formula: count(leads)\n    x:\n" + "".join("  " * (i + 3) + f"k{i}:\n" for i in range(1000))
     + "  " * 1003 + "v: 1\n", 21, 39),
    # The k-th list is level k + 1, on line k + 1 at column 2k + 1: k = 20.
    ("x:\n" + "".join("  " * i + "- \n" for i in range(1, 1000)), 21, 41),
])
def test_yaml_nested_a_thousand_deep_is_one_clear_error(make_project, text, line, column):
    root = project(make_project, {"deep.yaml": text})
    one_error(run("validate", root, "--offline"), "deep.yaml", line, column,
              f"the file nests values more than {MAX_DEPTH} levels deep")


def test_nesting_at_the_limit_loads():
    from kpi_engine.spec import _Document

    # The root mapping is level 1: 19 mappings inside it and a value make 21 levels, one too many.
    deep = "a: " + "{a: " * (MAX_DEPTH - 2) + "1" + "}" * (MAX_DEPTH - 2) + "\n"
    assert _Document("ok.yaml", deep).load().errors == []
    too_deep = "a: " + "{a: " * (MAX_DEPTH - 1) + "1" + "}" * (MAX_DEPTH - 1) + "\n"
    assert [e.message for e in _Document("deep.yaml", too_deep).load().errors] == [
        f"the file nests values more than {MAX_DEPTH} levels deep."]


def test_aliases_that_nest_deeper_than_the_limit_are_refused():
    from kpi_engine.spec import _Document

    # Each anchor is written two levels deep, but each holds the one before: 100 levels once expanded.
    text = "a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 100))
    errors = _Document("alias.yaml", text).load().errors
    assert [e.message for e in errors] == [f"the file nests values more than {MAX_DEPTH} levels deep."]


def test_a_file_of_too_many_values_is_refused_and_one_within_the_limit_loads():
    from kpi_engine.spec import _Document

    # The root mapping, its key 'tags' and the list are 3 values; the items are the rest.
    ok = "tags: [" + ", ".join(["a"] * (MAX_VALUES - 3)) + "]\n"
    document = _Document("ok.yaml", ok).load()
    assert document.errors == [] and len(document.data["tags"]) == MAX_VALUES - 3
    errors = _Document("many.yaml", "tags: [" + ", ".join(["a"] * (MAX_VALUES - 2)) + "]\n").load().errors
    assert [(e.message, e.location.line) for e in errors] == [(f"the file holds more than {MAX_VALUES:,} values.", 1)]


def test_a_folder_of_too_many_spec_files_is_refused(make_project):
    root = project(make_project, {"k.yaml": "kpis:\n  n: {formula: count(leads)}\n"})
    (root / "many").mkdir()
    for i in range(MAX_SPEC_FILES - 2):  # with sources.yaml and k.yaml: exactly the limit
        (root / "many" / f"f{i}.yaml").write_text(f"kpis:\n  k{i}: {{formula: count(leads)}}\n")
    assert run("validate", root, "--offline").stdout.startswith(f"OK: project 'test': 1 sources, {MAX_SPEC_FILES - 1}")
    (root / "many" / "one_more.yaml").write_text("kpis:\n  extra: {formula: count(leads)}\n")
    result = run("validate", root, "--offline")
    assert result.exit_code == 1 and f"holds more than {MAX_SPEC_FILES:,} spec files" in result.stderr
    # Folders whose name starts with '.' are not read at all (nor walked).
    (root / "many" / "one_more.yaml").unlink()
    (root / ".cache").mkdir()
    (root / ".cache" / "ignored.yaml").write_text("not: [valid")
    assert run("validate", root, "--offline").exit_code == 0


# --- KPI references: cycles, chains, repeated use ---------------------------------------------------------


def test_a_cycle_of_a_thousand_kpis_is_one_short_error(make_project):
    cycle = "kpis:\n" + "".join(f"  k{i}: {{formula: k{(i + 1) % 1000} + 1}}\n" for i in range(1000))
    result = run("validate", project(make_project, {"cycle.yaml": cycle}), "--offline")
    error = one_error(result, "cycle.yaml", 2, 17, "KPIs reference each other in a cycle: "
                      "k0 -> k1 -> k2 -> k3 -> k4 -> k5 -> ... (990 more) -> k996 -> k997 -> k998 -> k999 -> k0.")
    assert len(error) < 400


def test_a_chain_of_three_thousand_kpis_resolves_evaluates_and_explains(make_project):
    chain = "kpis:\n  k0: {formula: count(leads)}\n" + "".join(f"  k{i}: {{formula: k{i - 1}}}\n" for i in range(1, 3000))
    root = project(make_project, {"chain.yaml": chain})
    result = run("evaluate", root, "k2999", "--grain", "month", "--format", "json")
    assert result.exit_code == 0, result.stderr
    # LEADS: two leads in January, one in February; the data (01-03 .. 02-03) covers neither month whole.
    assert json.loads(result.stdout) == [{"period": "2025-01-01", "k2999": 2.0, "complete": False},
                                         {"period": "2025-02-01", "k2999": 1.0, "complete": False}]
    explained = run("explain", root, "k2999")
    assert explained.exit_code == 0
    assert explained.stdout.count("- KPI k") == 2999 and "- source leads (leads, time created_at)" in explained.stdout


def _doubling(levels: int) -> str:
    """d0 = count(leads); d(i) = a(i) + b(i), where a(i) and b(i) are both d(i-1): d(i) = 2**i * d0,
    and written out in full it holds 2 * size(d(i-1)) + 1 nodes, 2**(i+1) - 1 in all."""
    return "kpis:\n  d0: {formula: count(leads)}\n" + "".join(
        f"  a{i}: {{formula: d{i - 1}}}\n  b{i}: {{formula: d{i - 1}}}\n  d{i}: {{formula: a{i} + b{i}}}\n"
        for i in range(1, levels + 1))


def test_kpis_that_double_at_each_level_are_bounded_in_size(make_project):
    assert MAX_EXPANDED_SIZE == 10_000
    # 2**13 - 1 = 8,191 nodes for d12, within the limit: its value is 2**12 times count(leads).
    root = project(make_project, {"d.yaml": _doubling(12)})
    result = run("evaluate", root, "d12", "--format", "json")
    assert result.exit_code == 0 and json.loads(result.stdout) == [{"d12": 2 ** 12 * 3.0, "complete": True}]
    # d13 holds 16,383: refused where the doubling first passes the limit, and only there.
    root = project(make_project, {"d.yaml": _doubling(60)}, name="sixty")
    one_error(run("validate", root, "--offline"), "d.yaml", 41, 18, "(kpi 'd13')", "holds 16,383 operators",
              "('a13' holds 8,191); the limit is 10,000.", "use each KPI once per formula")


def test_an_ad_hoc_formula_is_bounded_in_size_too(make_project):
    root = project(make_project, {"d.yaml": _doubling(12)})
    with open_project(root) as kpi_project:
        assert kpi_project.evaluate(formulas=["d12 + 1"]).to_dicts() == [{"formula": 2 ** 12 * 3 + 1, "complete": True}]
        with pytest.raises(Exception) as raised:
            kpi_project.evaluate(formulas=["d12 + d12"])
    assert "holds 16,383 operators" in str(raised.value) and "the limit is 10,000" in str(raised.value)


# --- KPI fields: format, target -----------------------------------------------------------------------


@pytest.mark.parametrize("spec, problem", [
    (",.100000000f", "asks for 100,000,000 digits of precision; the limit is 20"),
    (",.21f", "asks for 21 digits of precision; the limit is 20"),
    (">100000000", "pads numbers to 100,000,000 characters; the limit is 50"),
    ("0>51.2f", "pads numbers to 51 characters; the limit is 50"),
    ("x", "is not a number format"),
    (",.2q", "is not a number format"),
])
def test_a_format_beyond_the_limits_is_refused_before_anything_is_formatted(make_project, spec, problem):
    root = project(make_project, {"f.yaml": f"kpis:\n  n:\n    formula: count(leads)\n    format: '{spec}'\n"})
    one_error(run("validate", root, "--offline"), "f.yaml", 4, 13, f"format '{spec}' {problem}.")


def test_formats_at_the_limits_are_used(make_project):
    root = project(make_project, {"f.yaml": "kpis:\n  n: {formula: count(leads), format: ',.20f'}\n"
                                            "  w: {formula: count(leads), format: '>50'}\n"})
    table = run("evaluate", root, "n", "w").stdout
    assert "3." + "0" * 20 in table and " " * 49 + "3 │" in table  # a count is a whole number


@pytest.mark.parametrize("target, column, message", [
    ("{min: " + "9" * 400 + "}", 44, "target min 999999999999...999999 (400 digits) is not a finite number"),
    ("{max: .inf}", 44, "target max inf is not a finite number"),
    ("{min: -.inf}", 44, "target min -inf is not a finite number"),
    ("{max: .nan}", 44, "target max nan is not a finite number"),
    ("{min: 10, max: 5}", 38, "target min 10 is above target max 5: no value could be on target."),
])
def test_a_target_must_be_finite_and_possible(make_project, target, column, message):
    root = project(make_project, {"t.yaml": f"kpis:\n  n: {{formula: count(leads), target: {target}}}\n"})
    one_error(run("validate", root, "--offline"), "t.yaml", 2, column, message)
    assert run("check", root, "--as-of", "2025-03-01").exit_code == 1


def test_a_target_at_the_float_limit_is_checked(make_project):
    root = project(make_project, {"t.yaml": "kpis:\n  n: {formula: count(leads), target: {min: 1.0e+308}}\n"})
    result = run("check", root, "--as-of", "2025-03-01", "--format", "json")
    (item,) = json.loads(result.stdout)["results"]  # February: one lead
    assert result.exit_code == 1 and (item["value"], item["status"]) == (1.0, "breached")


@pytest.mark.parametrize("text, line, column, message", [
    ("kpis:\n  n: {formula: !!timestamp 2025-01-01 10:00:00}\n", 2, 16, "kpis.n.formula must be a string, not datetime"),
    ("kpis:\n  n: {formula: count(leads), description: !!timestamp 2025-01-01}\n", 2, 43,
     "kpis.n.description must be a string, not date"),
    ("kpis:\n  n: {formula: count(leads), target: {min: !!timestamp 2025-01-01}}\n", 2, 44,
     "kpis.n.target.min must be a number, not date"),
    ("kpis:\n  n: {formula: count(leads), label: !!binary aGVsbG8=}\n", 2, 37, "kpis.n.label must be a string"),
    ("kpis:\n  n: {formula: count(leads), label: !!timestamp 2025-13-45}\n", 2, 37, "cannot read the value"),
])
def test_yaml_tags_in_spec_files_are_clear_errors(make_project, text, line, column, message):
    one_error(run("validate", project(make_project, {"t.yaml": text}), "--offline"), "t.yaml", line, column, message)


@pytest.mark.parametrize("setting", ["data: !!timestamp 2025-01-01", "path: !!timestamp 2025-01-01", "data: [a]",
                                     "data: data, query_timeout: !!timestamp 2025-01-01",
                                     "data: data, query_timeout: .inf", "data: data, query_timeout: 1.0e+300"])
def test_duckdb_settings_of_the_wrong_type_are_clear_errors(make_project, setting):
    config = "name: test\nwarehouse: {adapter: duckdb, " + setting + "}\n"
    root = project(make_project, {"k.yaml": "kpis:\n  n: {formula: count(leads)}\n"}, config=config)
    result = run("evaluate", root, "n")
    assert result.exit_code == 1 and result.stderr.startswith("Error: ")
    assert "must be a path (text)" in result.stderr or "must be a number of seconds above 0" in result.stderr


# --- KPI tests: rows and values ---------------------------------------------------------------------------

TEST_KPI = "kpis:\n  n: {formula: count(leads)}\n  total: {formula: sum(leads.x)}\n"


def _test(rows: str, expect: str = "[{n: 1}]") -> str:
    return f"tests:\n  t:\n    given:\n      leads:\n{rows}    expect: {expect}\n"


def test_a_kpi_test_of_exactly_the_row_limit_runs(make_project):
    half = MAX_TEST_ROWS // 2
    rows = (f"        - {{_repeat: {half}, id: 1, created_at: 2025-01-02 10:00:00}}\n"
            f"        - {{_repeat: {half}, id: 2, created_at: 2025-01-03 10:00:00}}\n")
    root = project(make_project, {"k.yaml": TEST_KPI, "t.yaml": _test(rows, f"[{{n: {MAX_TEST_ROWS}}}]")})
    result = run("test", root)
    assert result.exit_code == 0 and "PASS t" in result.stdout


@pytest.mark.parametrize("rows, expect, line, column, message", [
    ("        - {_repeat: 300000, created_at: 2025-01-02 10:00:00}\n", "[{n: 1}]", 5, 21,
     "tests.t.given.leads.0._repeat is 300,000; it must be at most 10,000."),
    ("        - {_repeat: -1, created_at: 2025-01-02 10:00:00}\n", "[{n: 1}]", 5, 21, "it must be at least 0"),
    ("        - {_repeat: many, created_at: 2025-01-02 10:00:00}\n", "[{n: 1}]", 5, 21, "must be an integer, not str"),
    ("        - {_repeat: 1.5, created_at: 2025-01-02 10:00:00}\n", "[{n: 1}]", 5, 21, "must be an integer, not float"),
    ("        - {_repeat: 6000, created_at: 2025-01-02 10:00:00}\n"
     "        - {_repeat: 4001, created_at: 2025-01-02 10:00:00}\n", "[{n: 1}]", 4, 7,
     "the test has 10,001 rows; the limit is 10,000."),
    ("        - {x: 99999999999999999999, created_at: 2025-01-02 10:00:00}\n", "[{n: 1}]", 5, 15,
     "given.leads.0.x: 99999999999999999999 does not fit in a 64-bit whole number"),
    ("        - {x: .inf, created_at: 2025-01-02 10:00:00}\n", "[{n: 1}]", 5, 15, "given.leads.0.x: inf is not a finite"),
    ("        - {x: [1, 2], created_at: 2025-01-02 10:00:00}\n", "[{n: 1}]", 5, 15,
     "given.leads.0.x: a test value cannot be a list"),
    ("        - {created_at: 2025-01-02 10:00:00}\n", "[{n: .nan}]", 6, 18, "expect.0.n: nan is not a finite number"),
    ("        - {created_at: 2025-01-02 10:00:00}\n", "[{n: " + "1" * 30 + "}]", 6, 18,
     "does not fit in a 64-bit whole number"),
    ("        - {created_at: 2025-01-02 10:00:00}\n", "[{n: {a: 1}}]", 6, 18, "a test value cannot be a mapping"),
])
def test_kpi_test_rows_and_values_beyond_the_limits(make_project, rows, expect, line, column, message):
    root = project(make_project, {"k.yaml": TEST_KPI, "t.yaml": _test(rows, expect)})
    one_error(run("test", root), "t.yaml", line, column, message)


def test_kpi_test_values_of_mixed_kinds_fail_that_test_only(make_project):
    rows = ("        - {x: 5, created_at: 2025-01-02 10:00:00}\n"
            "        - {x: five, created_at: 2025-01-02 10:00:00}\n")
    root = project(make_project, {"k.yaml": TEST_KPI, "t.yaml": _test(rows, "[{total: 5}]")})
    result = run("test", root)
    assert result.exit_code == 1 and "FAIL t" in result.stdout
    assert "cannot load the test's rows into DuckDB" in result.stdout and "values of one kind" in result.stdout


# --- timeouts ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "nan", "1e300", "1e10", str(MAX_QUERY_TIMEOUT + 1), "-inf", "0"])
def test_a_timeout_that_is_not_a_usable_number_of_seconds_is_refused(make_project, value):
    root = project(make_project, {"k.yaml": "kpis:\n  n: {formula: count(leads)}\n"})
    result = run("evaluate", root, "n", "--timeout", value)
    assert result.exit_code == 2 and "Invalid value for '--timeout'" in result.stderr
    assert "at most 604,800 (one week)" in result.stderr or "is not in the range x>0" in result.stderr


def test_a_timeout_of_a_week_is_accepted(make_project):
    root = project(make_project, {"k.yaml": "kpis:\n  n: {formula: count(leads)}\n"})
    result = run("evaluate", root, "n", "--timeout", str(MAX_QUERY_TIMEOUT), "--format", "json")
    assert result.exit_code == 0 and json.loads(result.stdout) == [{"n": 3.0, "complete": True}]


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e300, 0, -1, "soon", True, [5]])
def test_the_api_refuses_a_timeout_that_is_not_a_usable_number_of_seconds(make_project, value):
    root = project(make_project, {"k.yaml": "kpis:\n  n: {formula: count(leads)}\n"})
    with pytest.raises(UsageError, match=r"'timeout' must be a number of seconds above 0 and at most 604,800"):
        open_project(root, timeout=value)


def test_the_postgres_and_spark_timeout_settings_share_the_limit():
    from kpi_engine.adapters.postgres import connection_parameters
    from kpi_engine.adapters.spark import spark_settings

    for value in (".inf", "nan", "1e300", str(MAX_QUERY_TIMEOUT + 1)):
        with pytest.raises(WarehouseError, match="'statement_timeout' must be a number of seconds above 0"):
            connection_parameters({"host": "h", "statement_timeout": value}, None)
        with pytest.raises(WarehouseError, match="'query_timeout' must be a number of seconds above 0"):
            spark_settings({"query_timeout": value})
    _, seconds, _ = connection_parameters({"host": "h", "statement_timeout": MAX_QUERY_TIMEOUT}, None)
    assert seconds == MAX_QUERY_TIMEOUT


# --- dates at the ends of the calendar ------------------------------------------------------------------

# Leads at both ends of the calendar: two in January of year 1, one on the last day of year 9999.
EDGE_LEADS = [{"id": 1, "created_at": "0001-01-01 00:00:00", "channel": "ppc"},
              {"id": 2, "created_at": "0001-01-20 11:00:00", "channel": "email"},
              {"id": 3, "created_at": "9999-12-31 23:00:00", "channel": "email"}]
EDGE_KPIS = {"k.yaml": "kpis:\n  n: {formula: count(leads)}\n  prev: {formula: previous(n)}\n"
                       "  roll:\n    formula: rolling(n, 3)\n  running:\n    formula: cumulative(n, 'year')\n"}


@pytest.fixture
def edge(make_project):
    return project(make_project, EDGE_KPIS, leads=EDGE_LEADS)


def evaluate_json(*args):
    result = run("evaluate", *args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_year_one_with_time_functions_reads_from_the_start(edge):
    rows = evaluate_json(edge, "n", "prev", "roll", "running", "--grain", "month", "--from", "0001-01-01",
                         "--to", "0001-03-01", "--fill")
    # January of year 1 has two leads; the month before it has no rows, so counts 0 (docs/time.md).
    assert rows == [{"period": "0001-01-01", "n": 2.0, "prev": 0.0, "roll": 2.0, "running": 2.0, "complete": True},
                    {"period": "0001-02-01", "n": 0.0, "prev": 2.0, "roll": 2.0, "running": 2.0, "complete": True}]
    weeks = evaluate_json(edge, "n", "prev", "--grain", "week", "--from", "0001-01-01", "--to", "0001-01-15")
    # 0001-01-01 is a Monday: the weeks of the 1st and the 8th (the 20th is later).
    assert weeks == [{"period": "0001-01-01", "n": 1.0, "prev": 0.0, "complete": True}]


def test_year_9999_up_to_its_last_day(edge):
    rows = evaluate_json(edge, "n", "--grain", "year", "--from", "9998-01-01", "--to", "9999-12-31", "--fill")
    # the 31st is excluded: year 9999 is cut by --to
    assert rows == [{"period": "9998-01-01", "n": 0.0, "complete": True},
                    {"period": "9999-01-01", "n": 0.0, "complete": False}]
    rows = evaluate_json(edge, "n", "prev", "--grain", "fiscal_year", "--from", "9999-06-01", "--fill",
                         "--to", "9999-12-31")
    assert rows == [{"period": "9999-01-01", "n": 0.0, "prev": 0.0, "complete": False}]
    assert evaluate_json(edge, "n", "--from", "9999-12-31") == [{"n": 1.0, "complete": True}]
    assert evaluate_json(edge, "n", "--to", "0001-01-02") == [{"n": 1.0, "complete": True}]


@pytest.mark.parametrize("args, message", [
    # previous() shows the periods from the one that contains --from: here it would begin in year 0.
    (("evaluate", "{p}", "--formula", "previous(n)", "--grain", "week", "--from", "0001-01-01"),
     "the week that contains 0001-01-01 starts before year 1"),
    (("evaluate", "{p}", "--formula", "previous(n)", "--grain", "fiscal_year", "--from", "0001-03-01"),
     "the fiscal year that contains 0001-03-01 starts before year 1"),
    (("check", "{p}", "--as-of", "0001-01-15"), "the period 1 month before the one starting 0001-01-01 is before year 1"),
    (("report", "{p}", "n", "--as-of", "0001-01-15", "-o", "{p}/r.html"), "before year 1"),
])
def test_period_arithmetic_past_the_calendar_is_a_clear_error(make_project, args, message):
    config = "name: test\nwarehouse: {adapter: duckdb, data: data}\nweek_start: sunday\nfiscal_year_start: 7\n"
    root = project(make_project, {"k.yaml": "kpis:\n  n: {formula: count(leads), target: {min: 1}}\n"},
                   leads=EDGE_LEADS, config=config)
    result = run(*[str(arg).replace("{p}", str(root)) for arg in args])
    assert result.exit_code == 1 and message in result.stderr, result.stderr
    assert "outside the calendar, which runs from year 1 to year 9999" in result.stderr
    assert not (root / "r.html").exists()


def test_the_calendar_says_which_period_is_outside():
    from kpi_engine.calendar import Calendar

    calendar = Calendar(week_start="sunday")
    assert calendar.periods(dt.date(9999, 12, 1), dt.date(9999, 12, 31), "month") == [dt.date(9999, 12, 1)]
    assert calendar.try_shift(dt.date(9999, 12, 1), "month", 1) is None
    assert calendar.try_period_start(dt.date(1, 1, 1), "week") is None  # a Monday: its week began on Sunday, year 0
    with pytest.raises(QueryError, match="the period 2 quarters after the one starting 9999-07-01 is after year 9999"):
        calendar.shift(dt.date(9999, 7, 1), "quarter", 2)
    assert calendar.shift(dt.date(1, 1, 8), "week", -1) == dt.date(1, 1, 1)


def test_fill_lists_at_most_100_000_periods(make_project):
    root = project(make_project, {"k.yaml": "kpis:\n  n: {formula: count(leads)}\n"})
    days = (dt.date(2025, 1, 1) - dt.date(1700, 1, 1)).days  # one period per day
    result = run("evaluate", root, "n", "--grain", "day", "--from", "1700-01-01", "--to", "2025-01-01", "--fill")
    assert result.exit_code == 1
    assert f"--fill would list {days:,} periods; the limit is 100,000." in result.stderr
    rows = json.loads(run("evaluate", root, "n", "--grain", "month", "--from", "1900-01-01", "--to", "2025-03-01",
                          "--fill", "--format", "json").stdout)
    assert len(rows) == 125 * 12 + 2 and sum(row["n"] for row in rows) == 3
