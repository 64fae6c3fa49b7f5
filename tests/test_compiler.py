"""The compiler's SQL, executed on DuckDB and compared with plain-Python computations."""

import datetime as dt
import random
from collections import defaultdict

import pytest
import sqlglot
from sqlglot import exp

from kpi_engine.engine import KpiProject
from kpi_engine.errors import KpiEngineError
from kpi_engine.spec import load_project
from sql_parts import named_parts

CHANNELS = ["ppc", "email", "organic", "paid_social", None]
SPEC = """
sources:
  ad_spend: {table: ad_spend, time: spend_date, dimensions: [channel, campaign]}
  leads:
    table: leads
    time: created_at
    primary_key: lead_id
    dimensions: [channel, industry]
  won:
    sql: select lead_id, channel, customer_at from leads where customer_at is not null
    time: customer_at
    dimensions: [channel]
kpis:
  spend: {unit: currency, formula: sum(ad_spend.spend)}
  lead_count: {unit: count, formula: count(leads)}
  cpl: {unit: currency, formula: spend / lead_count}
  close_rate: {unit: percent, formula: 100 * count(leads where customer_at is not null) / lead_count}
  qualified_share:
    unit: percent
    formula: 100 * count(leads where score between 50 and 100 and industry in ('saas', 'retail')) / lead_count
  avg_score: {formula: avg(leads.score)}
  customers: {unit: count, formula: count(won)}
"""


def _data(seed=7):
    rng = random.Random(seed)
    spend, leads = [], []
    start = dt.date(2024, 11, 1)
    for day in range(200):
        date = start + dt.timedelta(days=day)
        for channel in ("ppc", "email", "paid_social"):
            if channel == "email" and date.month == 1:
                continue  # a month with leads but no spend for email
            if rng.random() < 0.7:
                spend.append({"spend_date": date.isoformat(), "channel": channel,
                              "campaign": f"{channel}-{rng.randint(1, 2)}", "spend": f"{rng.randint(100, 99999) / 100:.2f}"})
    for i in range(1500):
        created = dt.datetime(2024, 11, 1) + dt.timedelta(minutes=rng.randint(0, 200 * 24 * 60 - 1))
        channel = rng.choice(CHANNELS)
        if channel == "paid_social" and created.month == 3:
            channel = "ppc"  # a month with spend but no leads for paid_social
        won = rng.random() < 0.2
        leads.append({
            "lead_id": i, "created_at": created.isoformat(sep=" "), "channel": channel or "",
            "industry": rng.choice(["saas", "retail", "finance", ""]), "score": rng.choice([rng.randint(0, 100), ""]),
            "customer_at": (created + dt.timedelta(days=rng.randint(0, 60))).isoformat(sep=" ") if won else "",
        })
    return spend, leads


SPEND, LEADS = _data()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from conftest import write_project

    root = write_project(tmp_path_factory.mktemp("compiler") / "p", {"spec.yaml": SPEC},
                         {"ad_spend": SPEND, "leads": LEADS})
    with KpiProject(load_project(root)) as kpi_project:
        yield kpi_project


def bucket(value: str, grain: str) -> dt.date:
    day = dt.date.fromisoformat(value[:10])
    if grain == "day":
        return day
    if grain == "week":
        return day - dt.timedelta(days=day.weekday())
    if grain == "month":
        return day.replace(day=1)
    if grain == "quarter":
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    return day.replace(month=1, day=1)


def reference_cpl(grain=None, by_channel=True, start=None, end=None):
    """CPL = spend / leads per key, from the raw rows; missing spend is 0, no leads is None."""
    spend, leads = defaultdict(float), defaultdict(int)

    def key(value, channel):
        return (bucket(value, grain) if grain else None, (channel or None) if by_channel else None)

    def in_range(value):
        day = dt.date.fromisoformat(value[:10])
        return (start is None or day >= start) and (end is None or day < end)

    for row in SPEND:
        if in_range(row["spend_date"]):
            spend[key(row["spend_date"], row["channel"])] += float(row["spend"])
    for row in LEADS:
        if in_range(row["created_at"]):
            leads[key(row["created_at"], row["channel"])] += 1
    return {k: (spend.get(k, 0.0) / leads[k] if leads.get(k) else None) for k in set(spend) | set(leads)}


def as_map(result, grain=True, by_channel=True):
    return {(r["period"] if grain else None, r["channel"] if by_channel else None): r["cpl"] for r in result.to_dicts()}


def assert_same(actual: dict, expected: dict):
    assert set(actual) == set(expected)
    for key, value in expected.items():
        if value is None:
            assert actual[key] is None, key
        else:
            assert actual[key] == pytest.approx(value, rel=1e-9), key


@pytest.mark.parametrize("grain", ["day", "week", "month", "quarter", "year"])
def test_cross_source_ratio_by_every_grain_and_channel(project, grain):
    result = project.evaluate(["cpl"], by=["channel"], grain=grain)
    assert_same(as_map(result), reference_cpl(grain))


def test_time_range_is_half_open_and_total_without_grain(project):
    start, end = dt.date(2025, 1, 1), dt.date(2025, 3, 1)
    result = project.evaluate(["cpl"], by=["channel"], grain="month", start=start, end=end)
    assert_same(as_map(result), reference_cpl("month", start=start, end=end))
    assert {r["period"] for r in result.to_dicts()} == {dt.date(2025, 1, 1), dt.date(2025, 2, 1)}
    total = project.evaluate(["cpl"], start=start, end=end)
    assert_same(as_map(total, grain=False, by_channel=False), reference_cpl(None, False, start, end))


def test_no_fan_out_the_ratio_equals_the_ratio_of_separate_totals(project):
    spend = project.evaluate(["spend"]).to_dicts()[0]["spend"]
    leads = project.evaluate(["lead_count"]).to_dicts()[0]["lead_count"]
    cpl = project.evaluate(["cpl"]).to_dicts()[0]["cpl"]
    assert leads == len(LEADS)
    assert spend == pytest.approx(sum(float(r["spend"]) for r in SPEND))
    assert cpl == pytest.approx(spend / leads)
    # A naive join of spend rows to lead rows on channel would multiply both sides.
    by_channel = {r["channel"]: r for r in project.evaluate(["spend", "lead_count"], by=["channel"]).to_dicts()}
    assert by_channel["ppc"]["lead_count"] == sum(1 for r in LEADS if r["channel"] == "ppc")


def test_empty_cells_zero_counts_and_null_ratios(project):
    rows = {(r["period"], r["channel"]): r
            for r in project.evaluate(["spend", "lead_count", "cpl"], by=["channel"], grain="month").to_dicts()}
    social_march = rows[(dt.date(2025, 3, 1), "paid_social")]
    # No lead that month: the row is spend's, not lead_count's (asked alone it has no such row), so its
    # cell is empty; cpl reads both sources, so it has the row, and 0 leads make it null.
    assert social_march["lead_count"] is None and social_march["cpl"] is None and social_march["spend"] > 0
    alone = {(r["period"], r["channel"]) for r in project.evaluate(["lead_count"], by=["channel"], grain="month").to_dicts()}
    assert (dt.date(2025, 3, 1), "paid_social") not in alone
    email_january = rows[(dt.date(2025, 1, 1), "email")]
    assert email_january["spend"] is None and email_january["cpl"] == 0  # no spend rows: not spend's row
    organic = rows[(dt.date(2025, 1, 1), "organic")]
    assert organic["spend"] is None and organic["cpl"] == 0  # a free channel: spend rows absent
    null_channel = rows[(dt.date(2025, 1, 1), None)]
    assert null_channel["lead_count"] == sum(1 for r in LEADS if not r["channel"] and r["created_at"].startswith("2025-01"))


def test_filters_in_aggregates_and_functions(project):
    row = project.evaluate(["close_rate", "qualified_share", "avg_score"]).to_dicts()[0]
    won = sum(1 for r in LEADS if r["customer_at"])
    qualified = sum(1 for r in LEADS if r["score"] != "" and 50 <= r["score"] <= 100
                    and r["industry"] in ("saas", "retail"))
    scores = [r["score"] for r in LEADS if r["score"] != ""]
    assert row["close_rate"] == pytest.approx(100 * won / len(LEADS))
    assert row["qualified_share"] == pytest.approx(100 * qualified / len(LEADS))
    assert row["avg_score"] == pytest.approx(sum(scores) / len(scores))


@pytest.mark.parametrize("formula, expected", [
    ("count(leads) / 0", None),
    ("count(leads) % 0", None),
    ("if(count(leads) > 1000, 1, 2)", 1),
    ("coalesce(null, count(leads) - 1497)", 3),
    ("nullif(count(leads), 1500)", None),
    ("abs(-2.5) + round(2.345, 2) + 0 * count(leads)", 4.85),
    ("least(count(leads), 10) + greatest(1, 2, 3)", 13),
    ("least(count(leads) / 0, 10)", None),  # null if any argument is null, on every warehouse
    ("greatest(1, nullif(count(leads), 1500), 2)", None),
    ("-count(leads) + 7 % 4", -1497),
    ("count(leads where channel is null) + count(leads where channel not in ('ppc'))",
     sum(1 for r in LEADS if not r["channel"]) + sum(1 for r in LEADS if r["channel"] and r["channel"] != "ppc")),
    ("max(leads.score) - min(leads.score)",
     max(r["score"] for r in LEADS if r["score"] != "") - min(r["score"] for r in LEADS if r["score"] != "")),
    ("count_distinct(leads.industry)", 3),
    ("count(leads.score)", sum(1 for r in LEADS if r["score"] != "")),
])
def test_ad_hoc_formulas(project, formula, expected):
    value = project.evaluate(formulas=[formula]).to_dicts()[0]["formula"]
    assert value == (None if expected is None else pytest.approx(expected))


def test_where_having_order_limit(project):
    result = project.evaluate(["cpl", "lead_count"], by=["channel"], where="channel in ('ppc', 'email')",
                              having="lead_count > 0 and cpl > 1", order_by=["-cpl"], limit=1)
    reference = reference_cpl(None)
    best = max((v, c) for (_, c), v in reference.items() if c in ("ppc", "email") and v and v > 1)
    assert [(r["channel"], r["cpl"]) for r in result.to_dicts()] == [(best[1], pytest.approx(best[0]))]


def test_where_values_are_literals_not_sql(project):
    hostile = "channel = 'x''; drop table leads; --' or channel = 'ppc'"
    result = project.evaluate(["lead_count"], where=hostile)
    assert result.to_dicts()[0]["lead_count"] == sum(1 for r in LEADS if r["channel"] == "ppc")
    assert project.evaluate(["lead_count"]).to_dicts()[0]["lead_count"] == len(LEADS)


def test_sql_sources_are_parsed_and_rerendered(project):
    result = project.evaluate(["customers"], grain="month")
    expected = defaultdict(int)
    for r in LEADS:
        if r["customer_at"]:
            expected[bucket(r["customer_at"], "month")] += 1
    assert {r["period"]: r["customers"] for r in result.to_dicts()} == dict(expected)


def test_one_cte_per_source_however_many_kpis(project):
    query = project.compile(["spend", "lead_count", "cpl", "close_rate", "qualified_share", "avg_score"],
                            by=["channel"], grain="month")
    parts = named_parts(query.sql())
    # ad_spend has a DATE time column: its rows are grouped by day first (ad_spend_agg_days). The
    # keys' grouping is the output's own SELECT on DuckDB (output_fold.py), a part of its own elsewhere.
    assert {name for name in parts if "_agg" in name or name == "keys"} == {"ad_spend_agg_days", "ad_spend_agg",
                                                                            "leads_agg"}
    assert query.expression.args.get("group") is not None
    postgres = named_parts(project.compile(["spend", "lead_count"], by=["channel"], grain="month",
                                           dialect="postgres").sql(), "postgres")
    assert "keys" in postgres
    # count(leads) is shared by four KPIs but computed once.
    leads_cte = sqlglot.parse_one(parts["leads_agg"], read="duckdb")
    assert sum(1 for _ in leads_cte.find_all(exp.Count)) == 3  # count(*), close filter, qualified filter


@pytest.mark.parametrize("dialect, marker", [
    ("postgres", "DATE_TRUNC('MONTH'"), ("snowflake", "DATE_TRUNC('MONTH'"),
    ("bigquery", "DATE_TRUNC("), ("spark", "TRUNC("), ("duckdb", "DATE_TRUNC('MONTH'"),
])
def test_dialects_render_and_parse_back(project, dialect, marker):
    sql = project.compile(["cpl", "close_rate"], by=["channel"], grain="month", start="2025-01-01",
                          dialect=dialect).sql()
    assert marker in sql
    parsed = sqlglot.parse_one(sql, read=dialect)
    assert {t.name for t in parsed.find_all(exp.Table)} >= {"ad_spend", "leads"}
    assert "NULLIF" in sql.upper()


def test_a_cte_never_hides_a_table_a_later_cte_reads(make_project):
    from conftest import write_project

    root = make_project({"s.yaml": """
        sources:
          leads: {table: leads, time: created_at}
          won: {table: leads, time: customer_at}
          leads_agg: {table: leads_agg, time: at}
        """}, {"leads": LEADS[:50], "leads_agg": [{"at": "2025-01-01", "x": 1}]})
    with KpiProject(load_project(root)) as project:
        row = project.evaluate(formulas=["count(leads)", "count(won)", "count(leads_agg)"]).to_dicts()[0]
        sql = project.compile(formulas=["count(leads)", "count(won)", "count(leads_agg)"]).sql()
    assert (row["formula"], row["formula_2"], row["formula_3"]) == (50, sum(1 for r in LEADS[:50] if r["customer_at"]), 1)
    assert "leads_agg_" in named_parts(sql)  # renamed: a table is called leads_agg


def test_bigquery_weeks_start_on_monday(project):
    sql = project.compile(["cpl"], grain="week", dialect="bigquery").sql()
    assert "WEEK(MONDAY)" in sql


@pytest.mark.parametrize("options, message", [
    (dict(by=["industry"]), "cannot slice by 'industry': sources ad_spend do not have it."),
    (dict(by=["chanel"]), "cannot slice by 'chanel'"),
    (dict(grain="fortnight"), "unknown time grain 'fortnight'."),
    (dict(start="2025-02-01", end="2025-01-01"), "the time range is empty"),
    (dict(where="industry = 'saas'"), "--where uses 'industry', which is not a dimension of every source read"),
    (dict(where="count(leads) > 1"), "aggregates are not allowed in a dimension filter."),
    (dict(order_by=["nope"]), "cannot order by 'nope'"),
    (dict(dialect="postgress"), "unknown SQL dialect 'postgress'."),
    (dict(kpis=[], formulas=["1 + 2"]), "the request reads no source"),
])
def test_bad_requests_are_clear(project, options, message):
    kpis = options.pop("kpis", ["cpl"])
    with pytest.raises(KpiEngineError) as info:
        project.compile(kpis, **options)
    assert message in str(info.value)


def test_day_totals_never_hide_a_table_either(make_project):
    # snaps has a DATE time column, so by month its rows are first summed by day in a CTE named
    # snaps_agg_days, unless a table the query reads is called that.
    root = make_project({"s.yaml": """
        sources:
          snaps: {table: snaps, time: day, columns: {day: date}}
          other: {table: snaps_agg_days, time: day, columns: {day: date}}
        """}, {"snaps": [{"day": "2025-01-0%d" % d, "v": d} for d in (1, 2, 3)],
               "snaps_agg_days": [{"day": "2025-01-05", "v": 7}]})
    with KpiProject(load_project(root)) as project:
        formulas = ["sum(snaps.v)", "sum(other.v)"]
        rows = project.evaluate(formulas=formulas, grain="month").to_dicts()
        sql = project.compile(formulas=formulas, grain="month").sql()
    assert [(r["formula"], r["formula_2"]) for r in rows] == [(6, 7)]
    assert "snaps_agg__days" in named_parts(sql)
