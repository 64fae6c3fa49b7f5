"""The ``kpi-engine`` command line, driven through click's CliRunner.

Every project is built from scratch in ``tmp_path``. Every expected number is
worked out by hand from the CSV rows written in this file, never read back from
the engine.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
import sqlglot
from click.testing import CliRunner
from sqlglot import exp

from kpi_engine.cli import cli

CONFIG = "name: demo\nwarehouse: {adapter: duckdb, data: data}\n"

# Line numbers matter: test_list_* asserts where each KPI and source is defined.
MARKETING = """\
sources:
  ad_spend:
    table: ad_spend
    time: day
    dimensions: [channel]
  leads:
    table: leads
    time: created_at
    dimensions: [channel]
kpis:
  cpl:
    label: Cost per lead
    unit: currency
    formula: sum(ad_spend.spend) / count(leads)
  spend:
    unit: currency
    formula: sum(ad_spend.spend)
  lead_count:
    unit: count
    formula: count(leads)
"""
# 1-based lines of the keys above.
LINE_AD_SPEND, LINE_LEADS, LINE_CPL, LINE_SPEND, LINE_LEAD_COUNT = 2, 6, 11, 15, 18

# Jan: ppc 600 (on 2025-01-01) + 400 = 1000, email 100.  Feb: ppc 300 (on 2025-02-01), email 50.
AD_SPEND_CSV = """\
day,channel,spend
2025-01-01,ppc,600
2025-01-20,ppc,400
2025-01-10,email,100
2025-02-01,ppc,300
2025-02-15,email,50
"""
# Jan: ppc 2 (ids 1, 2), email 2 (ids 3, 4).  Feb: ppc 1 (id 5, on 2025-02-01), email 2 (ids 6, 7).
LEADS_CSV = """\
id,created_at,channel
1,2025-01-01,ppc
2,2025-01-31,ppc
3,2025-01-11,email
4,2025-01-12,email
5,2025-02-01,ppc
6,2025-02-16,email
7,2025-02-17,email
"""


def write_project(root: Path, specs: dict[str, str] | None = None, tables: dict[str, str] | None = None,
                  config: str = CONFIG) -> Path:
    """kpi_engine.yaml, spec files (written verbatim) and one CSV per table under data/."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "kpi_engine.yaml").write_text(config)
    for name, text in (specs if specs is not None else {"marketing.yaml": MARKETING}).items():
        (root / name).write_text(text)
    data = root / "data"
    data.mkdir(exist_ok=True)
    for table, text in (tables if tables is not None else {"ad_spend": AD_SPEND_CSV, "leads": LEADS_CSV}).items():
        (data / f"{table}.csv").write_text(text)
    return root


@pytest.fixture
def project(tmp_path) -> Path:
    return write_project(tmp_path / "project")


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(*args: str):
    result = run(*args)
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def assert_no_traceback(result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


# --- evaluate ------------------------------------------------------------------------------


def test_evaluate_json_by_channel_and_month(project):
    result = ok("evaluate", project, "cpl", "spend", "lead_count", "--by", "channel", "--grain", "month",
                "--format", "json")
    rows = json.loads(result.stdout)
    # Default order: by the keys (period, then channel). February is not complete: the spend
    # data ends on 2025-02-15 (and the leads on 02-17).
    assert rows == [
        {"period": "2025-01-01", "channel": "email", "cpl": 100 / 2, "spend": 100.0, "lead_count": 2.0, "complete": True},
        {"period": "2025-01-01", "channel": "ppc", "cpl": (600 + 400) / 2, "spend": 1000.0, "lead_count": 2.0,
         "complete": True},
        {"period": "2025-02-01", "channel": "email", "cpl": 50 / 2, "spend": 50.0, "lead_count": 2.0, "complete": False},
        {"period": "2025-02-01", "channel": "ppc", "cpl": 300 / 1, "spend": 300.0, "lead_count": 1.0, "complete": False},
    ]


def test_evaluate_csv_by_channel_and_month(project):
    result = ok("evaluate", project, "cpl", "--by", "channel", "--grain", "month", "--format", "csv")
    rows = csv_rows(result.stdout)
    assert list(rows[0]) == ["period", "channel", "cpl", "complete"]
    assert [r["complete"] for r in rows] == ["true", "true", "false", "false"]
    got = {(r["period"], r["channel"]): float(r["cpl"]) for r in rows}
    assert got == {
        ("2025-01-01", "email"): 50.0,
        ("2025-01-01", "ppc"): 500.0,
        ("2025-02-01", "email"): 25.0,
        ("2025-02-01", "ppc"): 300.0,
    }


def test_evaluate_from_is_inclusive_and_to_is_exclusive(project):
    # Rows dated 2025-01-01 are in; rows dated 2025-02-01 (ppc spend 300, lead 5) are out.
    result = ok("evaluate", project, "cpl", "spend", "lead_count", "--by", "channel",
                "--from", "2025-01-01", "--to", "2025-02-01", "--format", "csv")
    got = {r["channel"]: (float(r["cpl"]), float(r["spend"]), float(r["lead_count"])) for r in csv_rows(result.stdout)}
    assert got == {"email": (100 / 2, 100.0, 2.0), "ppc": (1000 / 2, 1000.0, 2.0)}


def test_evaluate_time_range_with_grain(project):
    # [2025-01-15, 2025-02-16): spend ppc 400 (01-20) + 300 (02-01), email 50 (02-15);
    # leads ppc 2 (01-31) and 5 (02-01), email none (6 is 02-16, excluded).
    result = ok("evaluate", project, "spend", "lead_count", "--by", "channel", "--grain", "month",
                "--from", "2025-01-15", "--to", "2025-02-16", "--format", "json")
    got = {(r["period"], r["channel"]): (r["spend"], r["lead_count"]) for r in json.loads(result.stdout)}
    assert got == {
        ("2025-01-01", "ppc"): (400.0, 1.0),
        ("2025-02-01", "email"): (50.0, None),  # no lead there: not lead_count's row
        ("2025-02-01", "ppc"): (300.0, 1.0),
    }


def test_evaluate_where_filters_dimension(project):
    result = ok("evaluate", project, "cpl", "spend", "--where", "channel = 'ppc'", "--format", "json")
    rows = json.loads(result.stdout)
    assert len(rows) == 1
    # ppc: spend 600 + 400 + 300 = 1300 over leads 1, 2, 5.
    assert rows[0]["spend"] == 1300.0
    assert rows[0]["cpl"] == pytest.approx(1300 / 3)


def test_evaluate_having_filters_on_kpi_values(project):
    # All time by channel: ppc 1300 / 3 = 433.33, email 150 / 4 = 37.5: only ppc is over 100.
    result = ok("evaluate", project, "cpl", "--by", "channel", "--having", "cpl > 100", "--format", "csv")
    rows = csv_rows(result.stdout)
    assert [r["channel"] for r in rows] == ["ppc"]
    assert float(rows[0]["cpl"]) == pytest.approx(1300 / 3)

    # By month: Jan ppc 500 and Feb ppc 300 are over 100; email (50, 25) is not.
    result = ok("evaluate", project, "cpl", "--by", "channel", "--grain", "month", "--having", "cpl > 100",
                "--format", "csv")
    assert [(r["period"], r["channel"], float(r["cpl"])) for r in csv_rows(result.stdout)] == [
        ("2025-01-01", "ppc", 500.0), ("2025-02-01", "ppc", 300.0)]

    # --having may use a KPI that is not in the output: lead_count is email 4, ppc 3.
    result = ok("evaluate", project, "cpl", "--by", "channel", "--having", "lead_count > 3", "--format", "csv")
    assert [(r["channel"], float(r["cpl"])) for r in csv_rows(result.stdout)] == [("email", 150 / 4)]


def test_evaluate_order_descending_and_limit(project):
    result = ok("evaluate", project, "cpl", "--by", "channel", "--grain", "month", "--order", "-cpl",
                "--limit", "1", "--format", "csv")
    assert [(r["period"], r["channel"], float(r["cpl"])) for r in csv_rows(result.stdout)] == [
        ("2025-01-01", "ppc", 500.0)]
    # Ascending: the cheapest is Feb email, 50 / 2.
    result = ok("evaluate", project, "cpl", "--by", "channel", "--grain", "month", "--order", "cpl",
                "--limit", "1", "--format", "csv")
    assert [(r["period"], r["channel"], float(r["cpl"])) for r in csv_rows(result.stdout)] == [
        ("2025-02-01", "email", 25.0)]


def test_evaluate_ad_hoc_formula_without_a_kpi(project):
    result = ok("evaluate", project, "--formula", "sum(ad_spend.spend) / count(leads)", "--format", "json")
    rows = json.loads(result.stdout)
    # Total spend 600 + 400 + 100 + 300 + 50 = 1450 over 7 leads.
    assert rows == [{"formula": pytest.approx(1450 / 7), "complete": True}]  # no range: all the data

    result = ok("evaluate", project, "--formula", "count(leads)", "--by", "channel", "--format", "csv")
    assert {r["channel"]: float(r["formula"]) for r in csv_rows(result.stdout)} == {"email": 4.0, "ppc": 3.0}


def test_evaluate_all_kpis(project):
    result = ok("evaluate", project, "--all", "--by", "channel", "--format", "json")
    rows = json.loads(result.stdout)
    assert [list(r) for r in rows] == [["channel", "cpl", "spend", "lead_count", "complete"]] * 2
    got = {r["channel"]: (r["cpl"], r["spend"], r["lead_count"]) for r in rows}
    assert got == {"email": (150 / 4, 150.0, 4.0), "ppc": (pytest.approx(1300 / 3), 1300.0, 3.0)}


def test_evaluate_table_format_shows_values_and_row_count(project):
    result = ok("evaluate", project, "spend", "--by", "channel")
    # Currency KPIs are shown as $1,300.00; the footer counts the rows.
    assert "$1,300.00" in result.stdout
    assert "$150.00" in result.stdout
    assert result.stdout.rstrip().endswith("2 rows")


# --- --output -----------------------------------------------------------------------------------


def test_output_writes_the_file(project, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "cpl.csv"
    result = ok("evaluate", project, "cpl", "--by", "channel", "--format", "csv", "--output", target)
    assert result.stdout == ""
    assert "2 rows" in result.stderr
    assert {r["channel"]: float(r["cpl"]) for r in csv_rows(target.read_text())} == {
        "email": 150 / 4, "ppc": pytest.approx(1300 / 3)}
    assert sorted(p.name for p in out_dir.iterdir()) == ["cpl.csv"]


def test_output_replaces_an_existing_file(project, tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old content\n")
    ok("evaluate", project, "lead_count", "--format", "json", "-o", target)
    assert json.loads(target.read_text()) == [{"lead_count": 7.0, "complete": True}]


def test_failed_command_creates_no_output_file(project, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = run("evaluate", project, "no_such_kpi", "--format", "csv", "--output", out_dir / "result.csv")
    assert result.exit_code == 1
    assert list(out_dir.iterdir()) == []  # no file, no temporary left behind
    assert_no_traceback(result)


def test_failed_command_leaves_an_existing_output_file_alone(project, tmp_path):
    target = tmp_path / "result.csv"
    target.write_text("previous\n")
    result = run("evaluate", project, "cpl", "--where", "region = 'eu'", "--output", target)
    assert result.exit_code == 1
    assert target.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project", "result.csv"]


def test_output_into_a_missing_folder_is_an_error(project, tmp_path):
    result = run("evaluate", project, "cpl", "--output", tmp_path / "missing" / "out.csv")
    assert result.exit_code != 0
    assert "does not exist" in result.stderr
    assert not (tmp_path / "missing").exists()
    assert_no_traceback(result)


# --- compile --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect, quote", [
    ("postgres", '"'), ("snowflake", '"'), ("bigquery", "`"), ("spark", "`"),
])
def test_compile_has_one_cte_per_source_and_parses_back(project, dialect, quote):
    result = ok("compile", project, "cpl", "--by", "channel", "--grain", "month", "--dialect", dialect)
    sql = result.stdout.strip()
    assert sql.endswith(";")
    q = quote
    assert f"{q}ad_spend_agg{q} AS" in sql
    assert f"{q}leads_agg{q} AS" in sql
    parsed = sqlglot.parse_one(sql.rstrip(";"), read=dialect)
    assert isinstance(parsed, exp.Select)
    ctes = [cte.alias for cte in parsed.find_all(exp.CTE)]
    # One CTE per source, plus the key union that joins them; both time columns here are
    # DATEs, so a source's day totals come first (nested in its CTE, or hoisted where the
    # dialect has no nested WITH).
    assert [name for name in ctes if name.endswith("_agg")] == ["ad_spend_agg", "leads_agg"]
    assert set(ctes) - {"ad_spend_agg", "leads_agg"} <= {"keys", "ad_spend_agg_days", "leads_agg_days"}
    # Each table is read once.
    tables = [t.name for t in parsed.find_all(exp.Table) if t.name in ("ad_spend", "leads")]
    assert sorted(tables) == ["ad_spend", "leads"]


def test_compile_without_dimensions_still_one_cte_per_source(project):
    result = ok("compile", project, "cpl", "--dialect", "postgres", "--offline")
    sql = result.stdout.strip()
    assert sql.count('"ad_spend_agg" AS (') == 1
    assert sql.count('"leads_agg" AS (') == 1
    sqlglot.parse_one(sql.rstrip(";"), read="postgres")


def test_compiled_duckdb_sql_gives_the_hand_computed_values(project):
    """The printed SQL is the real query: running it on the CSVs gives the same numbers."""
    import duckdb

    result = ok("compile", project, "cpl", "--by", "channel", "--dialect", "duckdb")
    con = duckdb.connect(":memory:")
    for table in ("ad_spend", "leads"):
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_csv('{project / 'data' / (table + '.csv')}')")
    rows = dict(con.execute(result.stdout.strip().rstrip(";")).fetchall())
    assert rows == {"email": 150 / 4, "ppc": pytest.approx(1300 / 3)}


def test_compile_unknown_dialect_exits_1(project):
    result = run("compile", project, "cpl", "--dialect", "postgress")
    assert result.exit_code == 1
    assert "postgress" in result.stderr
    assert "Did you mean 'postgres'" in result.stderr
    assert_no_traceback(result)


# --- validate ---------------------------------------------------------------------------------------


def test_validate_ok(project):
    result = ok("validate", project)
    assert "OK" in result.stdout
    assert "2 sources, 3 KPIs" in result.stdout
    assert result.stderr == ""


# Each problem is on a known line; columns are 1-based.
BROKEN_FORMULAS = """\
kpis:
  broken:
    formula: sum(ad_spend.spend) /
  nocol:
    formula: sum(ad_spend.spendd)
  a:
    formula: b + 1
  b:
    formula: a * 2
"""
# line 3: the formula starts at column 14 and is 21 characters long: it ends too early at column 35.
# line 5: 'ad_spend.spendd' starts at column 14 + len('sum(') = 18.
# line 7: the cycle a -> b -> a is reported at a's formula, column 14.
EXTRA_FIELD = """\
kpis:
  ok_kpi:
    formula: count(leads)
    colour: red
"""
# line 4, column 5: the unknown key 'colour'.


def _problem_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def test_validate_reports_every_formula_problem_with_positions(tmp_path):
    root = write_project(tmp_path / "project", {"marketing.yaml": MARKETING, "bad.yaml": BROKEN_FORMULAS})
    result = run("validate", root)
    assert result.exit_code == 1
    assert_no_traceback(result)
    problems = _problem_lines(result.stderr)
    assert len(problems) == 3, result.stderr
    assert "bad.yaml:3:35" in problems[0] and "syntax error" in problems[0]
    assert "bad.yaml:5:18" in problems[1] and "spendd" in problems[1] and "Did you mean 'spend'" in problems[1]
    assert "bad.yaml:7:14" in problems[2] and "cycle" in problems[2] and "a -> b -> a" in problems[2]
    assert "3 problems found" in result.stderr
    assert "OK" not in result.stdout


def test_validate_reports_an_unknown_field_with_its_position(tmp_path):
    root = write_project(tmp_path / "project", {"marketing.yaml": MARKETING, "extra.yaml": EXTRA_FIELD})
    result = run("validate", root)
    assert result.exit_code == 1
    assert_no_traceback(result)
    problems = _problem_lines(result.stderr)
    assert len(problems) == 1, result.stderr
    assert "extra.yaml:4:5" in problems[0] and "'colour'" in problems[0]


def test_validate_reports_all_problems_of_all_files_at_once(tmp_path):
    """An unknown field in one file must not hide the formula problems of another."""
    root = write_project(tmp_path / "project", {"marketing.yaml": MARKETING, "bad.yaml": BROKEN_FORMULAS,
                                                "extra.yaml": EXTRA_FIELD})
    result = run("validate", root)
    assert result.exit_code == 1
    assert_no_traceback(result)
    for where in ("extra.yaml:4:5", "bad.yaml:3:35", "bad.yaml:5:18", "bad.yaml:7:14"):
        assert where in result.stderr, f"{where} missing from:\n{result.stderr}"
    assert "4 problems found" in result.stderr


def test_validate_reports_a_missing_column_of_the_warehouse(tmp_path):
    # The leads CSV has no 'channel' column, which the source declares as a dimension (line 9).
    leads = "id,created_at\n1,2025-01-01\n"
    root = write_project(tmp_path / "project", tables={"ad_spend": AD_SPEND_CSV, "leads": leads})
    result = run("validate", root)
    assert result.exit_code == 1
    assert_no_traceback(result)
    assert "marketing.yaml:9:" in result.stderr and "channel" in result.stderr
    # --offline does not open the warehouse, so the same project is valid.
    assert "OK" in ok("validate", root, "--offline").stdout


# --- usage and other errors ---------------------------------------------------------------------------


def test_unknown_grain_is_a_usage_error(project):
    result = run("evaluate", project, "cpl", "--grain", "decade")
    assert result.exit_code == 2
    assert "decade" in result.stderr
    assert_no_traceback(result)


def test_no_kpi_given_is_a_usage_error(project):
    result = run("evaluate", project)
    assert result.exit_code == 2
    assert "no KPI given" in result.stderr
    assert result.stdout == ""
    assert_no_traceback(result)


def test_bad_date_is_a_usage_error(project):
    result = run("evaluate", project, "cpl", "--from", "2025-13-01")
    assert result.exit_code == 2
    assert_no_traceback(result)


def test_unknown_kpi_suggests_the_close_name(project):
    result = run("evaluate", project, "cpll")
    assert result.exit_code == 1
    assert "cpll" in result.stderr
    assert "Did you mean 'cpl'" in result.stderr
    assert result.stdout == ""
    assert_no_traceback(result)


def test_missing_project_folder(tmp_path):
    result = run("evaluate", tmp_path / "nowhere", "cpl")
    assert result.exit_code == 1
    assert "nowhere" in result.stderr and "does not exist" in result.stderr
    assert_no_traceback(result)


def test_folder_without_project_file(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("validate", tmp_path / "empty")
    assert result.exit_code == 1
    assert "kpi_engine.yaml" in result.stderr
    assert_no_traceback(result)


def test_unknown_output_column_in_order(project):
    result = run("evaluate", project, "cpl", "--by", "channel", "--order", "-cpll")
    assert result.exit_code == 1
    assert "Did you mean 'cpl'" in result.stderr
    assert_no_traceback(result)


# --- list ------------------------------------------------------------------------------------------------


def test_list_shows_each_kpi_and_where_it_is_defined(project, monkeypatch):
    monkeypatch.chdir(project.parent)  # paths are shown relative to the working folder
    result = ok("list", project)
    lines = result.stdout.splitlines()
    for name, line in (("cpl", LINE_CPL), ("spend", LINE_SPEND), ("lead_count", LINE_LEAD_COUNT),
                       ("ad_spend", LINE_AD_SPEND), ("leads", LINE_LEADS)):
        row = next((text for text in lines if text.split() and text.split()[0] == name), None)
        assert row is not None, f"{name} not listed:\n{result.stdout}"
        assert f"project/marketing.yaml:{line}" in row, row
    assert "Cost per lead" in result.stdout


def test_list_json(project):
    result = ok("list", project, "--format", "json")
    data = json.loads(result.stdout)
    kpis = {k["name"]: k for k in data["kpis"]}
    assert list(kpis) == ["cpl", "spend", "lead_count"]
    assert kpis["cpl"]["label"] == "Cost per lead"
    assert kpis["cpl"]["unit"] == "currency"
    assert kpis["cpl"]["formula"] == "sum(ad_spend.spend) / count(leads)"
    for name, line in (("cpl", LINE_CPL), ("spend", LINE_SPEND), ("lead_count", LINE_LEAD_COUNT)):
        file, line_no = kpis[name]["defined_in"].rsplit(":", 2)[:2]
        assert Path(file).name == "marketing.yaml"
        assert Path(file).resolve() == (project / "marketing.yaml").resolve()
        assert int(line_no) == line
    sources = {s["name"]: s for s in data["sources"]}
    assert sources["leads"]["time"] == "created_at"
    assert sources["leads"]["dimensions"] == ["channel"]
    assert sources["ad_spend"]["defined_in"].rsplit(":", 2)[1] == str(LINE_AD_SPEND)


# --- plugins and --version ---------------------------------------------------------------------------------


def test_plugins_lists_duckdb():
    result = ok("plugins")
    row = next((line for line in result.stdout.splitlines() if line.split() and line.split()[0] == "duckdb"), None)
    assert row is not None, result.stdout
    assert "kpi_engine.adapters.duckdb" in row
    assert "ok" in row.split()


def test_plugins_json_includes_duckdb_ok():
    rows = json.loads(ok("plugins", "--format", "json").stdout)
    duck = [r for r in rows if r["plugin"] == "duckdb"]
    assert len(duck) == 1
    assert duck[0]["adapters"] == ["duckdb"]
    assert duck[0]["dialects"] == ["duckdb"]
    assert duck[0]["module"] == "kpi_engine.adapters.duckdb"
    assert duck[0]["status"] == "ok"
    assert duck[0]["distribution"] == f"kpi-engine {metadata.version('kpi-engine')}"


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag):
    result = ok(flag)
    assert result.stdout.strip() == f"kpi-engine, version {metadata.version('kpi-engine')}"


def test_help_lists_the_commands():
    result = ok("--help")
    for command in ("evaluate", "compile", "validate", "list", "plugins"):
        assert command in result.stdout


def test_output_format_follows_the_file_extension(project, tmp_path):
    ok("evaluate", project, "lead_count", "-o", tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text() == "lead_count,complete\n7,true\n"  # 7 leads, all the data
    ok("evaluate", project, "lead_count", "-o", tmp_path / "OUT.JSON")
    assert (tmp_path / "OUT.JSON").read_text() == '[\n  {"lead_count": 7, "complete": true}\n]\n'
    ok("evaluate", project, "lead_count", "-o", tmp_path / "out.txt")
    assert (tmp_path / "out.txt").read_text().rstrip().endswith("1 row")
    ok("evaluate", project, "lead_count", "--format", "csv", "-o", tmp_path / "out.data")  # --format wins
    assert (tmp_path / "out.data").read_text().startswith("lead_count,complete\n")
    for name in ("out.xlsx", "out"):
        result = run("evaluate", project, "lead_count", "-o", tmp_path / name)
        assert result.exit_code == 2 and f"cannot tell the output format of '{name}'" in result.stderr
        assert not (tmp_path / name).exists()
