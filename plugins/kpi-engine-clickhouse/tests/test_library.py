"""Every KPI of the marketing library gives on ClickHouse (chdb) what it gives on DuckDB over the
same example data, for every grain and calendar; and the conformance kit passes."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import assert_same_results, settings
from kpi_engine import testing
from kpi_engine.engine import open_project
from kpi_engine.testing import FUNCTION_FORMULAS, write_project

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
def projects(chdb_folder, duckdb_warehouse, tmp_path_factory):
    root = tmp_path_factory.mktemp("projects")
    clickhouse_project = write_project(root / "on_clickhouse", settings(chdb_folder))
    duckdb_project = write_project(root / "on_duckdb", duckdb_warehouse)
    with open_project(clickhouse_project) as on_clickhouse, open_project(duckdb_project) as on_duckdb:
        yield on_clickhouse, on_duckdb


@pytest.mark.parametrize("grouping", GROUPINGS)
def test_every_library_kpi_matches_duckdb(projects, grouping):
    on_clickhouse, on_duckdb = projects
    names = list(on_clickhouse.project.kpis)
    assert len(names) >= 39
    options = GROUPINGS[grouping]
    if "grain" not in options:  # previous() and the like need periods
        model = on_clickhouse.model()
        names = [name for name in names if not model.needs_grain(name)]
    rows = on_clickhouse.evaluate(names, **options).to_dicts()
    assert rows
    assert_same_results(rows, on_duckdb.evaluate(names, **options).to_dicts(), names)
    if "grain" in options:
        assert all(type(row["period"]) is dt.date for row in rows)  # dates, as DuckDB returns them


@pytest.mark.parametrize("grain", ["week", "fiscal_quarter", "fiscal_year"])
def test_week_start_and_fiscal_year_match_duckdb(chdb_folder, duckdb_warehouse, tmp_path, grain):
    calendar = {"week_start": "sunday", "fiscal_year_start": 4}
    on_clickhouse = write_project(tmp_path / "c", settings(chdb_folder), **calendar)
    on_duckdb = write_project(tmp_path / "d", duckdb_warehouse, **calendar)
    with open_project(on_clickhouse) as clickhouse_project, open_project(on_duckdb) as duckdb_project:
        names = list(clickhouse_project.project.kpis)
        options = dict(grain=grain, by=["channel"], start="2024-05-01", end="2025-10-01")
        assert_same_results(clickhouse_project.evaluate(names, **options).to_dicts(),
                            duckdb_project.evaluate(names, **options).to_dicts(), names)


@pytest.mark.parametrize("options", [dict(grain="month", by=["channel"], start="2024-07-01", end="2025-07-01"),
                                     dict(grain="quarter"), dict(grain="day", start="2025-01-01", end="2025-03-01")],
                         ids=["month_by_channel_range", "quarter", "day"])
def test_functions_and_time_intelligence_match_duckdb(projects, options):
    on_clickhouse, on_duckdb = projects
    names = ["formula"] + [f"formula_{i}" for i in range(2, len(FUNCTION_FORMULAS) + 1)]
    assert_same_results(on_clickhouse.evaluate(formulas=FUNCTION_FORMULAS, **options).to_dicts(),
                        on_duckdb.evaluate(formulas=FUNCTION_FORMULAS, **options).to_dicts(), names)


#: More of the formula language, where ClickHouse's own semantics could differ: distinct counts,
#: nulls, division and modulo by zero (ClickHouse's own give inf and an error), integer operands,
#: BETWEEN and NOT IN, unary minus, averages of integers.
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
    "sum(ad_spend.spend) / 3",
]


@pytest.mark.parametrize("options", [dict(grain="month", by=["channel"], where="channel != 'email'"), dict()],
                         ids=["month_by_channel_where", "total"])
def test_more_of_the_formula_language_matches_duckdb(projects, options):
    on_clickhouse, on_duckdb = projects
    names = ["formula"] + [f"formula_{i}" for i in range(2, len(MORE_FORMULAS) + 1)]
    rows = on_clickhouse.evaluate(formulas=MORE_FORMULAS, **options).to_dicts()
    assert_same_results(rows, on_duckdb.evaluate(formulas=MORE_FORMULAS, **options).to_dicts(), names)
    assert all(row["formula_5"] is None for row in rows)  # division and modulo by zero give null
    assert all(row.get("channel") != "email" for row in rows)


def test_having_order_and_limit(projects):
    on_clickhouse, on_duckdb = projects
    options = dict(by=["channel"], grain="quarter", having="new_contacts > 10", order_by=["-cost_per_lead"], limit=7)
    rows = on_clickhouse.evaluate(["cost_per_lead", "new_contacts"], **options).to_dicts()
    duckdb_rows = on_duckdb.evaluate(["cost_per_lead", "new_contacts"], **options).to_dicts()
    assert [(r["period"], r["channel"]) for r in rows] == [(r["period"], r["channel"]) for r in duckdb_rows]
    assert_same_results(rows, duckdb_rows, ["cost_per_lead", "new_contacts"])


def test_local_time_periods_match_duckdb(chdb_folder, duckdb_warehouse, tmp_path):
    """ClickHouse knows time zone names itself: periods in local time, around a DST change."""
    on_clickhouse = write_project(tmp_path / "c", settings(chdb_folder), timezone="Europe/Paris")
    on_duckdb = write_project(tmp_path / "d", duckdb_warehouse, timezone="Europe/Paris")
    names = ["new_contacts", "website_sessions", "revenue", "cost_per_lead", "email_open_rate"]
    options = dict(grain="day", start="2025-03-25", end="2025-04-05")
    with open_project(on_clickhouse) as clickhouse_project, open_project(on_duckdb) as duckdb_project:
        local = clickhouse_project.evaluate(names, **options).to_dicts()
        assert_same_results(local, duckdb_project.evaluate(names, **options).to_dicts(), names)
    with open_project(write_project(tmp_path / "u", settings(chdb_folder))) as utc_project:
        assert utc_project.evaluate(names, **options).to_dicts() != local  # the zone moved rows between days


def test_the_conformance_kit_passes(chdb_folder, tmp_path):
    """The packaged fixture tables and the reference values every adapter is held to."""
    testing.assert_conformance(settings(chdb_folder, "fixture"), tmp_path / "project")


@pytest.mark.parametrize("options", [dict(grain="month", by=["channel"]), dict(grain="week")], ids=["month", "week"])
def test_per_entity_snapshots_match_duckdb(projects, options):
    on_clickhouse, on_duckdb = projects
    formulas = ["last(subscriptions.mrr per customer_id)", "first(subscriptions.mrr per customer_id)"]
    assert_same_results(on_clickhouse.evaluate(formulas=formulas, **options).to_dicts(),
                        on_duckdb.evaluate(formulas=formulas, **options).to_dicts(), ["formula", "formula_2"])


#: Exact percentiles through quantileExactInclusive: decimals, integers, a filter that leaves some
#: groups without a row (null there), the ends 0 and 1 and an interpolated fraction.
PERCENTILE_FORMULAS = [
    "median(orders.amount)",
    "percentile(orders.amount, 0.9 where status = 'paid')",
    "percentile(web_sessions.duration_seconds, 0)",
    "percentile(web_sessions.duration_seconds, 1)",
    "percentile(web_sessions.pages_viewed, 0.37)",
    "median(days_between(contacts.created_at, contacts.customer_at) at customer_at)",
    "median(orders.amount where amount > 20000)",
]


@pytest.mark.parametrize("options", [dict(grain="month", by=["channel"]), dict(grain="week"), dict()],
                         ids=["month_by_channel", "week", "total"])
def test_exact_percentiles_match_duckdb(projects, options):
    on_clickhouse, on_duckdb = projects
    names = ["formula"] + [f"formula_{i}" for i in range(2, len(PERCENTILE_FORMULAS) + 1)]
    rows = on_clickhouse.evaluate(formulas=PERCENTILE_FORMULAS, **options).to_dicts()
    assert_same_results(rows, on_duckdb.evaluate(formulas=PERCENTILE_FORMULAS, **options).to_dicts(), names)
    if options:  # some groups have no order above 20,000: null, not 0
        assert any(row["formula_7"] is None for row in rows) and any(row["formula_7"] is not None for row in rows)


def test_approximate_percentiles_are_a_clear_error(projects):
    """What this engine does not compute on ClickHouse is refused before a query runs."""
    from kpi_engine.errors import QueryError

    on_clickhouse, _ = projects
    with pytest.raises(QueryError) as raised:
        on_clickhouse.evaluate(formulas=["approx_percentile(orders.amount, 0.9)"], grain="month")
    assert "no aggregate for approximate percentiles" in str(raised.value)
    assert "Use exact ones: median() and percentile()" in str(raised.value)


def test_a_request_is_rendered_once_and_clickhouse_runs_the_text_it_shows(chdb_folder, tmp_path, monkeypatch):
    """The engine prepares a request's tree for ClickHouse (to_clickhouse) and renders it once, for
    the result's sql; the connection runs that text, not a second rewrite of the tree rendered again."""
    import sqlglot
    from chdb.state.sqlitelike import Cursor

    from kpi_engine_clickhouse import render

    sent: list[str] = []
    real_execute = Cursor.execute  # the cursor class of chdb.connect()

    def recording(self, query, *args, **kwargs):
        sent.append(query)
        return real_execute(self, query, *args, **kwargs)

    monkeypatch.setattr(Cursor, "execute", recording)
    testing.assert_runs_rendered_text(settings(chdb_folder, "fixture"), tmp_path / "project", lambda: sent[-1])
    ran = sent[-1]
    # the SQL run before, the tree rewritten again and rendered without layout, is the same query
    with open_project(tmp_path / "project") as project:
        compiled = project.compile(["cost_per_lead", "new_contacts"], **testing.GROUPINGS["month_channel"])
    assert sqlglot.parse_one(render(compiled.expression), read="clickhouse") == \
        sqlglot.parse_one(ran, read="clickhouse")
