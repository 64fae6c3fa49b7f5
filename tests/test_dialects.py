"""Every sqlglot dialect compiles: golden SQL per dialect for representative library KPIs,
and each rendered query parses back with sqlglot in that dialect.

Golden files are reviewed by eye for engines we cannot run here; regenerate them after an
intended change with  KPI_ENGINE_UPDATE_GOLDEN=1 python -m pytest tests/test_dialects.py
"""

import os
from importlib import metadata
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from kpi_engine.engine import open_project
from kpi_engine.plugins import DISABLE_ENV, ENTRY_POINT_GROUP, Registry
from sql_parts import named_parts

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
DIALECTS = ["snowflake", "bigquery", "redshift", "databricks", "trino", "clickhouse", "mysql", "tsql", "oracle",
            "postgres", "spark", "duckdb"]
# One case per kind of KPI: cross-source ratio, filtered counts, snapshot, previous(), cumulative(),
# per-entity lookup, a dimension through a relationship, share().
CASES = {
    "cost_per_lead_by_channel_month": (["cost_per_lead"], dict(by=["channel"], grain="month",
                                                              start="2025-01-01", end="2025-07-01")),
    "nps_by_quarter": (["nps"], dict(grain="quarter")),
    "mrr_by_month": (["mrr"], dict(grain="month")),
    "revenue_growth_by_channel_month": (["revenue_growth_rate"], dict(by=["channel"], grain="month",
                                                                      start="2025-01-01")),
    "ltv_to_cac_by_channel_quarter": (["ltv_to_cac"], dict(by=["channel"], grain="quarter")),
    "lead_to_opportunity_by_week": (["lead_to_opportunity_rate"], dict(grain="week", where="channel != 'email'")),
    "repeat_revenue_by_channel": (["repeat_customer_revenue"], dict(by=["channel"], having="repeat_customer_revenue > 0")),
    "lead_share_filled": (["lead_share"], dict(by=["channel"], grain="month", start="2025-01-01",
                                               end="2025-04-01", fill=True)),
}


def core_registry() -> Registry:
    """The plugins kpi-engine ships, without those of other installed packages: the golden files
    hold the core's SQL, which a plugin's prepare hook for a dialect (kpi-engine-mysql's) rewrites;
    that plugin tests its own SQL."""
    others = [entry.name for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)
              if getattr(entry, "dist", None) is not None and entry.dist.name != "kpi-engine"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DISABLE_ENV, ",".join([os.environ.get(DISABLE_ENV, ""), *others]))
        return Registry()


@pytest.fixture(scope="module")
def project():
    with open_project(ROOT / "examples" / "marketing", registry=core_registry()) as kpi_project:
        yield kpi_project


def render(project, dialect: str) -> str:
    parts = []
    for name, (kpis, options) in CASES.items():
        sql = project.compile(kpis, dialect=dialect, describe=False, **options).sql()
        parts.append(f"-- {name}\n{sql};\n")
    return "\n".join(parts)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_golden_sql(project, dialect):
    text = render(project, dialect)
    path = GOLDEN / f"{dialect}.sql"
    if os.environ.get("KPI_ENGINE_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.read_text() == text, f"SQL for {dialect} changed; review and regenerate the golden file"


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("case", list(CASES))
def test_parses_back_in_its_dialect(project, dialect, case):
    kpis, options = CASES[case]
    sql = project.compile(kpis, dialect=dialect, describe=False, **options).sql()
    parsed = sqlglot.parse_one(sql, read=dialect)
    assert isinstance(parsed, exp.Query)
    # Nothing was lost on the way: the same tables are read.
    tables = {t.name for t in parsed.find_all(exp.Table) if t.name}
    assert tables & {"leads", "ad_spend", "orders", "subscriptions", "nps_responses", "customers"}


def test_no_dialect_is_left_with_date_functions_it_does_not_have(project):
    oracle = render(project, "oracle")
    assert "TIMESTAMP_TRUNC" not in oracle and "TRUNC(" in oracle
    assert "WEEK(MONDAY)" in render(project, "bigquery")


def test_what_a_dialect_cannot_express_is_a_clear_error(project):
    from kpi_engine.errors import QueryError

    from kpi_engine.compiler import compile_request
    from kpi_engine.engine import make_request

    # sqlglot cannot name the columns of a VALUES alias in SQLite; --fill needs that. (The SQLite
    # plugin's prepare() rewrites it; without the plugin this is what a user gets.)
    request = make_request(["new_contacts"], grain="month", start="2025-01-01", end="2025-03-01", fill=True)
    query = compile_request(project.model(describe=False), request, "sqlite")
    with pytest.raises(QueryError, match="cannot be written in the sqlite dialect: Named columns are not supported"):
        query.sql()


@pytest.mark.parametrize("dialect", DIALECTS)
def test_rendering_leaves_a_tree_that_renders_the_same_again(project, dialect):
    """CompiledQuery.sql renders its tree in place (no copy) in the dialects of
    _RENDERED_IN_PLACE; adapters render the same tree again to run it, so the first rendering
    must not change what the tree says."""
    cases = list(CASES.values()) + [
        ([], dict(formulas=["round(avg(days_between(leads.created_at, leads.customer_at)), 1)",
                            "least(count(leads), 5) + abs(greatest(sum(ad_spend.spend), 1))"],
                  by=["channel"], grain="day", start="2025-01-01", end="2025-02-01", order_by=["-formula"],
                  limit=3)),
        (["cost_per_lead", "lead_share", "revenue_growth_rate"], dict(grain="year", fill=True, start="2024-01-01",
                                                                  end="2026-01-01")),
    ]
    for kpis, options in cases:
        query = project.compile(kpis, dialect=dialect, describe=False, **options)
        pristine = query.expression.sql(dialect=dialect)  # sqlglot copies the tree for this one
        assert query.sql(pretty=False) == pristine
        assert query.sql() == query.sql()
        assert query.expression.sql(dialect=dialect) == pristine
        assert query.expression.sql(dialect=dialect, pretty=True) == query.sql()


@pytest.mark.parametrize("dialect", DIALECTS)
def test_day_totals_of_date_sources_parse_back(project, dialect):
    """With the warehouse described, DATE sources are grouped by day in a CTE of their own
    (nested in the source's CTE, or hoisted by sqlglot where WITH cannot nest)."""
    sql = project.compile(["mrr", "active_subscriptions", "cost_per_lead"], dialect=dialect, grain="quarter",
                          by=["channel"]).sql()
    parsed = sqlglot.parse_one(sql, read=dialect)
    names = set(named_parts(sql, dialect))
    assert {"subscriptions_agg_days", "ad_spend_agg_days", "subscriptions_agg", "leads_agg"} <= names
    # subscriptions is read once: its snapshot days come from its day totals.
    assert sum(1 for t in parsed.find_all(exp.Table) if t.name == "subscriptions") == 1


@pytest.mark.parametrize("dialect", DIALECTS)
def test_windows_over_windows_and_over_days_parse_back(project, dialect):
    """Issue 15/16 shapes: a window stage over another (windowed_2) and windows counted from the
    source's days (a VALUES list of each period's first and last day joined to day rows)."""
    formulas = ["previous(cumulative(count(leads)), '1 year')",
                "rolling(count(leads), '30 days')",
                "cumulative(count_distinct(orders.customer_id))"]
    sql = project.compile(formulas=formulas, dialect=dialect, describe=False, grain="month", by=["channel"],
                          start="2025-01-15", end="2025-06-01").sql()
    parsed = sqlglot.parse_one(sql, read=dialect)
    names = set(named_parts(sql, dialect))
    assert {"windowed", "windowed_2", "leads_agg_window_1", "orders_agg_window_2"} <= names, names
    assert any(isinstance(node.this, exp.Distinct) for node in parsed.find_all(exp.Count))


# Sub-daily shapes (tests/test_subdaily.py checks their numbers): hour buckets with a dense spine,
# windows over an hour index and a range cut within an hour; minute buckets by hour_of_day.
SUBDAILY_CASES = [
    (["new_contacts"], dict(formulas=["previous(count(leads))", "rolling(count(leads), '1 day')",
                                      "cumulative(count(leads), 'day')"], by=["channel"], grain="hour",
                            start="2025-03-30T01:30", end="2025-03-31", fill=True)),
    (["new_contacts"], dict(by=["hour_of_day", "minute_of_hour"], grain="minute", start="2025-03-30",
                            end="2025-03-30T06:00")),
    (["new_contacts"], dict(grain="second", start="2025-03-30T01:00", end="2025-03-30T01:05", fill=True)),
]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_sub_daily_shapes_parse_back_and_render_in_place(project, dialect):
    for kpis, options in SUBDAILY_CASES:
        query = project.compile(kpis, dialect=dialect, describe=False, **options)
        pristine = query.expression.sql(dialect=dialect)
        assert query.sql(pretty=False) == pristine
        assert query.expression.sql(dialect=dialect) == pristine
        parsed = sqlglot.parse_one(query.sql(), read=dialect)
        assert isinstance(parsed, exp.Query) and "leads" in {t.name for t in parsed.find_all(exp.Table)}
