"""Every KPI of the marketing library gives on MariaDB what it gives on DuckDB over the same
example data, for every grain and calendar; and the conformance kit passes."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import assert_same_results
from kpi_engine import testing
from kpi_engine.testing import FUNCTION_FORMULAS, write_project
from kpi_engine.engine import open_project

GROUPINGS = {
    "month_by_channel": dict(by=["channel"], grain="month"),
    "quarter": dict(grain="quarter"),
    "week": dict(grain="week"),
    "year_by_channel": dict(by=["channel"], grain="year"),
    "range_filled_by_channel": dict(by=["channel"], grain="month", start="2024-11-01", end="2025-05-01", fill=True),
    "days_in_range": dict(grain="day", start="2025-02-20", end="2025-03-10"),
    "total": dict(),
}


@pytest.fixture(scope="module")
def projects(mariadb_server, marketing_db, duckdb_warehouse, tmp_path_factory):
    root = tmp_path_factory.mktemp("projects")
    mysql_project = write_project(root / "on_mysql", mariadb_server.settings(marketing_db))
    duckdb_project = write_project(root / "on_duckdb", duckdb_warehouse)
    with open_project(mysql_project) as on_mysql, open_project(duckdb_project) as on_duckdb:
        yield on_mysql, on_duckdb


@pytest.mark.parametrize("grouping", GROUPINGS)
def test_every_library_kpi_matches_duckdb(projects, grouping):
    on_mysql, on_duckdb = projects
    names = list(on_mysql.project.kpis)
    assert len(names) >= 39
    options = GROUPINGS[grouping]
    if "grain" not in options:  # previous() and the like need periods
        model = on_mysql.model()
        names = [name for name in names if not model.needs_grain(name)]
    mysql_rows = on_mysql.evaluate(names, **options).to_dicts()
    assert mysql_rows
    assert_same_results(mysql_rows, on_duckdb.evaluate(names, **options).to_dicts(), names)
    if "grain" in options:
        assert all(type(row["period"]) is dt.date for row in mysql_rows)  # dates, as DuckDB returns them


@pytest.mark.parametrize("grain", ["week", "fiscal_quarter", "fiscal_year", "month"])
def test_week_start_and_fiscal_year_match_duckdb(mariadb_server, marketing_db, duckdb_warehouse, tmp_path, grain):
    calendar = {"week_start": "sunday", "fiscal_year_start": 4}
    on_mysql = write_project(tmp_path / "m", mariadb_server.settings(marketing_db), **calendar)
    on_duckdb = write_project(tmp_path / "d", duckdb_warehouse, **calendar)
    with open_project(on_mysql) as mysql_project, open_project(on_duckdb) as duckdb_project:
        names = list(mysql_project.project.kpis)
        options = dict(grain=grain, by=["channel"], start="2024-05-01", end="2025-10-01")
        assert_same_results(mysql_project.evaluate(names, **options).to_dicts(),
                            duckdb_project.evaluate(names, **options).to_dicts(), names)


@pytest.mark.parametrize("options", [dict(grain="month", by=["channel"], start="2024-07-01", end="2025-07-01"),
                                     dict(grain="quarter"), dict(grain="day", start="2025-01-01", end="2025-03-01")],
                         ids=["month_by_channel_range", "quarter", "day"])
def test_functions_and_time_intelligence_match_duckdb(projects, options):
    on_mysql, on_duckdb = projects
    names = ["formula"] + [f"formula_{i}" for i in range(2, len(FUNCTION_FORMULAS) + 1)]
    assert_same_results(on_mysql.evaluate(formulas=FUNCTION_FORMULAS, **options).to_dicts(),
                        on_duckdb.evaluate(formulas=FUNCTION_FORMULAS, **options).to_dicts(), names)


#: More of the formula language, where MySQL's own semantics could differ: distinct counts, null
#: handling, division and modulo by zero, integer operands, BETWEEN and NOT IN, unary minus.
MORE_FORMULAS = [
    "count_distinct(orders.customer_id)",
    "min(orders.amount) + max(orders.amount)",
    "count(leads.customer_at) / count(leads)",
    "count(leads where lead_id between 100 and 2000 and customer_id is not null and channel not in ('ppc'))",
    "sum(orders.amount) / 0 + count(orders) % 0",
    "-sum(orders.amount) / 3 + 7 / 2",
    "sum(web_sessions.duration_seconds) / count(web_sessions) % 7",
    "avg(web_sessions.pages_viewed) * avg(nps_responses.score)",
    "count(leads where is_qualified = true) - count(leads where not is_qualified)",
]


@pytest.mark.parametrize("options", [dict(grain="month", by=["channel"], where="channel != 'email'"), dict()],
                         ids=["month_by_channel_where", "total"])
def test_more_of_the_formula_language_matches_duckdb(projects, options):
    on_mysql, on_duckdb = projects
    names = ["formula"] + [f"formula_{i}" for i in range(2, len(MORE_FORMULAS) + 1)]
    mysql_rows = on_mysql.evaluate(formulas=MORE_FORMULAS, **options).to_dicts()
    assert_same_results(mysql_rows, on_duckdb.evaluate(formulas=MORE_FORMULAS, **options).to_dicts(), names)
    assert all(row["formula_5"] is None for row in mysql_rows)  # division and modulo by zero give null
    assert all(row.get("channel") != "email" for row in mysql_rows)


def test_having_order_and_limit(projects):
    on_mysql, on_duckdb = projects
    options = dict(by=["channel"], grain="quarter", having="new_contacts > 10", order_by=["-cost_per_lead"], limit=7)
    mysql_rows = on_mysql.evaluate(["cost_per_lead", "new_contacts"], **options).to_dicts()
    duckdb_rows = on_duckdb.evaluate(["cost_per_lead", "new_contacts"], **options).to_dicts()
    assert [(r["period"], r["channel"]) for r in mysql_rows] == [(r["period"], r["channel"]) for r in duckdb_rows]
    assert_same_results(mysql_rows, duckdb_rows, ["cost_per_lead", "new_contacts"])


def test_the_conformance_kit_passes(mariadb_server, fixture_db, tmp_path):
    """The packaged fixture tables and the reference values every adapter is held to."""
    testing.assert_conformance(mariadb_server.settings(fixture_db), tmp_path / "project")


def test_a_request_is_rendered_once_and_mysql_runs_the_text_it_shows(mariadb_server, fixture_db, tmp_path,
                                                                     monkeypatch):
    """The engine prepares a request's tree for MySQL (to_mysql) and renders it once, for the
    result's sql; the connection sends that text, not a second rewrite of the tree rendered again."""
    import pymysql
    import sqlglot

    from kpi_engine_mysql import render

    sent: list[str] = []
    real_execute = pymysql.cursors.Cursor.execute

    def recording(self, query, args=None):
        sent.append(query)
        return real_execute(self, query, args)

    monkeypatch.setattr(pymysql.cursors.Cursor, "execute", recording)
    testing.assert_runs_rendered_text(mariadb_server.settings(fixture_db), tmp_path / "project", lambda: sent[-1])
    ran = sent[-1]
    # the SQL sent before, the tree rewritten again and rendered without layout, is the same query
    with open_project(tmp_path / "project") as project:
        compiled = project.compile(["cost_per_lead", "new_contacts"], **testing.GROUPINGS["month_channel"])
    assert sqlglot.parse_one(render(compiled.expression), read="mysql") == sqlglot.parse_one(ran, read="mysql")
