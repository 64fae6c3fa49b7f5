"""Time intelligence and the metric types of issue 3, each checked against plain Python."""

import datetime as dt
import random
from collections import defaultdict

import pytest
from sqlglot import exp

from kpi_engine.engine import KpiProject
from kpi_engine.errors import KpiEngineError, ProjectInvalid
from kpi_engine.spec import load_project
from sql_parts import named_parts

CHANNELS = ("ppc", "email", "organic")
SPEC = """
sources:
  leads: {table: leads, time: created_at, primary_key: lead_id, dimensions: [channel]}
  opportunities: {table: opportunities, time: created_at, primary_key: opportunity_id, dimensions: [channel]}
  subscriptions: {table: subscriptions, time: snapshot_date, dimensions: [channel, plan]}
  customers: {table: customers, time: acquired_at, primary_key: customer_id, dimensions: [channel]}
  orders:
    table: orders
    time: ordered_at
    primary_key: order_id
    dimensions: [product]
    relationships: [{to: customers, on: customer_id}]
kpis:
  leads_n: {unit: count, formula: count(leads)}
  won: {unit: count, formula: count(leads where customer_at is not null)}
  close_rate: {unit: percent, formula: 100 * won / leads_n}
  lead_growth: {unit: percent, formula: 100 * (leads_n - previous(leads_n)) / previous(leads_n)}
  leads_last_year: {unit: count, formula: "previous(leads_n, 12)"}
  leads_to_date: {unit: count, formula: cumulative(leads_n)}
  leads_ytd: {unit: count, formula: "cumulative(leads_n, 'year')"}
  close_rate_to_date: {unit: percent, formula: cumulative(close_rate)}
  leads_rolling_3: {unit: count, formula: "rolling(leads_n, 3)"}
  lead_share: {unit: percent, formula: 100 * share(leads_n)}
  mrr: {unit: currency, formula: last(subscriptions.mrr)}
  mrr_start: {unit: currency, formula: first(subscriptions.mrr)}
  active_subscriptions: {unit: count, formula: last(subscriptions)}
  mrr_growth: {unit: percent, formula: 100 * (mrr - previous(mrr)) / previous(mrr)}
  converted_90d: {unit: percent, formula: "100 * count(leads where days_between(created_at, customer_at) <= 90) / leads_n"}
  days_to_convert: {unit: days, formula: "avg(days_between(leads.created_at, leads.customer_at))"}
  lead_to_opportunity: {unit: percent, formula: 100 * count(leads where count(opportunities per lead_id) > 0) / leads_n}
  revenue: {unit: currency, formula: sum(orders.amount)}
  repeat_revenue: {unit: currency, formula: sum(orders.amount where count(orders per customer_id) > 1)}
"""


def _make_data(seed=11):
    rng = random.Random(seed)
    leads, opportunities = [], []
    for i in range(900):
        created = dt.datetime(2024, 1, 1) + dt.timedelta(minutes=rng.randint(0, 546 * 24 * 60))
        channel = rng.choice(CHANNELS)
        if channel == "email" and (created.year, created.month) == (2024, 7):
            continue  # a gap: no email leads in July 2024
        customer_at = created + dt.timedelta(days=rng.randint(0, 200), hours=rng.randint(0, 23)) \
            if rng.random() < 0.3 else None
        leads.append({"lead_id": i, "created_at": created.isoformat(sep=" "), "channel": channel,
                      "customer_at": customer_at.isoformat(sep=" ") if customer_at else ""})
        for k in range(rng.choice([0, 0, 1, 2, 3])):  # one-to-many: fan-out bait
            opportunities.append({"opportunity_id": len(opportunities), "lead_id": i, "channel": channel,
                                  "created_at": (created + dt.timedelta(days=k + 1)).isoformat(sep=" ")})
    subscriptions, customers, orders = [], [], []
    for c in range(40):
        channel = CHANNELS[c % 3]
        start = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randint(0, 400))
        end = start + dt.timedelta(days=rng.randint(20, 300))
        plan, mrr = rng.choice([("starter", 29), ("pro", 99)])
        customers.append({"customer_id": c, "channel": channel, "acquired_at": start.isoformat()})
        day = start
        while day < min(end, dt.date(2025, 6, 30)):
            subscriptions.append({"snapshot_date": day.isoformat(), "customer_id": c, "channel": channel,
                                  "plan": plan, "mrr": mrr + (day - start).days // 60})  # upgrades over time
            day += dt.timedelta(days=1)
        for _ in range(rng.choice([1, 1, 2, 3])):
            orders.append({"order_id": len(orders), "customer_id": c, "product": rng.choice(["a", "b"]),
                           "ordered_at": (dt.datetime.combine(start, dt.time(12)) +
                                          dt.timedelta(days=rng.randint(0, 200))).isoformat(sep=" "),
                           "amount": rng.randint(10, 500)})
    return {"leads": leads, "opportunities": opportunities, "subscriptions": subscriptions,
            "customers": customers, "orders": orders}


DATA = _make_data()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from conftest import write_project

    root = write_project(tmp_path_factory.mktemp("time") / "p", {"spec.yaml": SPEC}, DATA)
    with KpiProject(load_project(root)) as kpi_project:
        yield kpi_project


def month(value: str) -> dt.date:
    return dt.date(int(value[:4]), int(value[5:7]), 1)


def add_months(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def monthly_leads(predicate=lambda row: True):
    counts = defaultdict(int)
    for row in DATA["leads"]:
        if predicate(row):
            counts[(month(row["created_at"]), row["channel"])] += 1
    return counts


def rows_by_key(result):
    return {(r["period"], r.get("channel")): r for r in result.to_dicts()}


def approx(value):
    return None if value is None else pytest.approx(value)


# --- 1. period over period ---------------------------------------------------------


def test_previous_and_growth_by_month_and_channel(project):
    counts = monthly_leads()
    rows = rows_by_key(project.evaluate(["leads_n", "lead_growth", "leads_last_year"], by=["channel"], grain="month"))
    assert set(rows) == set(counts)
    for (period, channel), row in rows.items():
        before = counts.get((add_months(period, -1), channel), 0)
        year_ago = counts.get((add_months(period, -12), channel), 0)
        assert row["leads_n"] == counts[(period, channel)]
        assert row["lead_growth"] == approx(100 * (counts[(period, channel)] - before) / before if before else None)
        assert row["leads_last_year"] == year_ago
    # The gap: August 2024 email compares with an empty July, whose count is 0.
    assert rows[(dt.date(2024, 8, 1), "email")]["lead_growth"] is None


def test_the_first_period_of_a_range_sees_the_period_before(project):
    counts = monthly_leads()
    result = project.evaluate(["lead_growth"], by=["channel"], grain="month", start="2025-01-01", end="2025-03-01")
    rows = rows_by_key(result)
    assert {p for p, _ in rows} == {dt.date(2025, 1, 1), dt.date(2025, 2, 1)}
    for channel in CHANNELS:
        now, before = counts[(dt.date(2025, 1, 1), channel)], counts[(dt.date(2024, 12, 1), channel)]
        assert rows[(dt.date(2025, 1, 1), channel)]["lead_growth"] == approx(100 * (now - before) / before)


def test_snapshot_growth_uses_the_previous_period_end(project):
    rows = rows_by_key(project.evaluate(["mrr", "mrr_growth"], grain="month", start="2025-02-01", end="2025-04-01"))
    for period in (dt.date(2025, 2, 1), dt.date(2025, 3, 1)):
        now, before = snapshot_total(period, "last"), snapshot_total(add_months(period, -1), "last")
        assert rows[(period, None)]["mrr"] == approx(now)
        assert rows[(period, None)]["mrr_growth"] == approx(100 * (now - before) / before)


# --- 2. cumulative, rolling, share -----------------------------------------------------


def test_cumulative_from_the_start_of_data_and_of_the_year(project):
    counts = monthly_leads()
    rows = rows_by_key(project.evaluate(["leads_to_date", "leads_ytd"], by=["channel"], grain="month",
                                        start="2025-02-01", end="2025-05-01"))
    assert {p for p, _ in rows} == {dt.date(2025, 2, 1), dt.date(2025, 3, 1), dt.date(2025, 4, 1)}
    for (period, channel), row in rows.items():
        to_date = sum(v for (p, c), v in counts.items() if c == channel and p <= period)
        ytd = sum(v for (p, c), v in counts.items() if c == channel and p.year == period.year and p <= period)
        assert (row["leads_to_date"], row["leads_ytd"]) == (to_date, ytd)


def test_cumulative_ratio_accumulates_numerator_and_denominator(project):
    leads, won = monthly_leads(), monthly_leads(lambda r: r["customer_at"])
    rows = rows_by_key(project.evaluate(["close_rate_to_date", "close_rate"], by=["channel"], grain="quarter"))
    for (period, channel), row in rows.items():
        end = add_months(period, 3)
        num = sum(v for (p, c), v in won.items() if c == channel and p < end)
        den = sum(v for (p, c), v in leads.items() if c == channel and p < end)
        assert row["close_rate_to_date"] == approx(100 * num / den)


def test_rolling_three_months_across_a_gap(project):
    counts = monthly_leads()
    rows = rows_by_key(project.evaluate(["leads_rolling_3"], by=["channel"], grain="month"))
    for (period, channel), row in rows.items():
        expected = sum(counts.get((add_months(period, -k), channel), 0) for k in range(3))
        assert row["leads_rolling_3"] == expected, (period, channel)
    # September 2024 email: July is missing from the series, so only August and September count.
    assert rows[(dt.date(2024, 9, 1), "email")]["leads_rolling_3"] == \
        counts[(dt.date(2024, 8, 1), "email")] + counts[(dt.date(2024, 9, 1), "email")]


def test_share_of_the_period_total(project):
    counts = monthly_leads()
    rows = rows_by_key(project.evaluate(["lead_share"], by=["channel"], grain="month"))
    for (period, channel), row in rows.items():
        total = sum(v for (p, _), v in counts.items() if p == period)
        assert row["lead_share"] == approx(100 * counts[(period, channel)] / total)
    whole = project.evaluate(["lead_share"], by=["channel"]).to_dicts()
    assert sum(r["lead_share"] for r in whole) == approx(100)


# --- 3. snapshots ------------------------------------------------------------------------


def snapshot_total(period: dt.date, which: str, channel=None):
    rows = [r for r in DATA["subscriptions"] if month(r["snapshot_date"]) == period]
    if not rows:
        return None
    pick = max if which == "last" else min
    day = pick(r["snapshot_date"] for r in rows)  # the period's last snapshot, across all entities
    return sum(r["mrr"] for r in rows if r["snapshot_date"] == day and channel in (None, r["channel"]))


def test_last_and_first_snapshot_of_each_period(project):
    rows = rows_by_key(project.evaluate(["mrr", "mrr_start", "active_subscriptions"], by=["channel"], grain="month"))
    for (period, channel), row in rows.items():
        assert row["mrr"] == snapshot_total(period, "last", channel)
        assert row["mrr_start"] == snapshot_total(period, "first", channel)
        day = max(r["snapshot_date"] for r in DATA["subscriptions"] if month(r["snapshot_date"]) == period)
        assert row["active_subscriptions"] == sum(
            1 for r in DATA["subscriptions"] if r["snapshot_date"] == day and r["channel"] == channel)


def test_snapshots_are_not_summed_across_days(project):
    quarter = project.evaluate(["mrr"], grain="quarter", start="2025-01-01", end="2025-04-01").to_dicts()[0]
    assert quarter["mrr"] == snapshot_total(dt.date(2025, 3, 1), "last")


def test_time_functions_refuse_what_cannot_be_added_up(project):
    with pytest.raises(KpiEngineError, match="snapshots cannot be added up"):
        project.compile(formulas=["cumulative(last(subscriptions.mrr))"], grain="month")
    with pytest.raises(KpiEngineError, match="count_distinct cannot be added up"):  # (rolling() counts its rows)
        project.compile(formulas=["share(count_distinct(leads.channel))"], grain="month")
    with pytest.raises(KpiEngineError, match="needs a time grain"):
        project.compile(["lead_growth"])
    with pytest.raises(KpiEngineError, match="restarts more often"):
        project.compile(formulas=["cumulative(count(leads), 'month')"], grain="quarter")


# --- 4. conversion and cohorts ------------------------------------------------------------


def _days(a: str, b: str) -> int:
    return (dt.date.fromisoformat(b[:10]) - dt.date.fromisoformat(a[:10])).days


def test_cohort_conversion_within_a_window_and_time_to_convert(project):
    rows = rows_by_key(project.evaluate(["converted_90d", "days_to_convert"], grain="quarter"))
    cohorts = defaultdict(list)
    for row in DATA["leads"]:
        created = dt.date.fromisoformat(row["created_at"][:10])
        cohorts[dt.date(created.year, (created.month - 1) // 3 * 3 + 1, 1)].append(row)
    for period, leads in cohorts.items():
        converted = [r for r in leads if r["customer_at"] and _days(r["created_at"], r["customer_at"]) <= 90]
        days = [_days(r["created_at"], r["customer_at"]) for r in leads if r["customer_at"]]
        assert rows[(period, None)]["converted_90d"] == approx(100 * len(converted) / len(leads))
        assert rows[(period, None)]["days_to_convert"] == approx(sum(days) / len(days))


def test_days_between_counts_calendar_days_in_every_form(make_project):
    """days_between is whole calendar days between the two dates: DuckDB subtracts the dates,
    the other dialects call DATE_DIFF; both checked against Python on the edges (a minute
    across midnight, a leap day, a later start, a missing end)."""
    pairs = [("2024-02-28 23:59:00", "2024-03-01 00:01:00"), ("2025-03-31 00:00:00", "2025-03-31 23:59:59"),
             ("2025-01-10 08:00:00", "2024-12-31 22:00:00"), ("2023-12-31 12:00:00", "2025-01-01 12:00:00"),
             ("2025-01-05 09:00:00", "")]
    root = make_project({"s.yaml": """
        sources:
          deals: {table: deals, time: opened_at, dimensions: [deal]}
        kpis:
          days_open: {formula: "max(days_between(deals.opened_at, deals.closed_at))"}
          within_a_day: {formula: "count(deals where days_between(opened_at, closed_at) <= 1)"}
        """}, {"deals": [{"deal": f"d{i}", "opened_at": a, "closed_at": b} for i, (a, b) in enumerate(pairs)]})
    project = KpiProject(load_project(root))
    duckdb = project.compile(["days_open"], by=["deal"]).expression
    assert duckdb.find(exp.DateDiff) is None and 'AS DATE) - CAST(' in duckdb.sql("duckdb")
    assert project.compile(["days_open"], by=["deal"], dialect="spark").expression.find(exp.DateDiff)
    rows = {row["deal"]: row for row in project.evaluate(["days_open", "within_a_day"], by=["deal"])}
    for i, (opened, closed) in enumerate(pairs):
        days = _days(opened, closed) if closed else None
        assert rows[f"d{i}"]["days_open"] == days
        assert rows[f"d{i}"]["within_a_day"] == (1 if days is not None and days <= 1 else 0)


def test_conversion_across_a_one_to_many_link_does_not_fan_out(project):
    with_opportunity = {r["lead_id"] for r in DATA["opportunities"]}
    assert len(DATA["opportunities"]) > len(with_opportunity)  # some leads have several
    rows = project.evaluate(["lead_to_opportunity"], by=["channel"]).to_dicts()
    for row in rows:
        leads = [r for r in DATA["leads"] if r["channel"] == row["channel"]]
        expected = 100 * sum(1 for r in leads if r["lead_id"] in with_opportunity) / len(leads)
        assert row["lead_to_opportunity"] == approx(expected)


@pytest.mark.parametrize("condition, has_one", [
    ("count(opportunities per lead_id) >= 1", True), ("count(opportunities per lead_id) != 0", True),
    ("count(opportunities per lead_id) = 0", False), ("count(opportunities per lead_id) < 1", False),
    ("count_distinct(opportunities.created_at per lead_id) > 0", True),
])
def test_existence_tests_join_the_distinct_keys(project, condition, has_one):
    """count(x per key) compared with 0 only asks whether the key has a row: compiled as a join
    to the distinct keys instead of a grouped count; same values as counting."""
    with_opportunity = {r["lead_id"] for r in DATA["opportunities"]}
    formula = f"count(leads where {condition})"
    assert "opportunities_with_lead_id" in project.compile(formulas=[formula]).sql()
    rows = project.evaluate(formulas=[formula], by=["channel"]).to_dicts()
    for row in rows:
        leads = [r for r in DATA["leads"] if r["channel"] == row["channel"]]
        assert row["formula"] == sum(1 for r in leads if (r["lead_id"] in with_opportunity) == has_one)
    counted = project.evaluate(formulas=["count(leads where count(opportunities per lead_id) > 1)"]).to_dicts()
    several = sum(1 for r in DATA["leads"] if sum(o["lead_id"] == r["lead_id"] for o in DATA["opportunities"]) > 1)
    assert counted[0]["formula"] == several  # a threshold other than 0 still counts


# --- 5 and 6. related dimensions and entity-level values --------------------------------


def test_revenue_by_a_dimension_of_a_related_source_and_repeat_revenue(project):
    channel_of = {c["customer_id"]: c["channel"] for c in DATA["customers"]}
    orders_per_customer = defaultdict(int)
    for order in DATA["orders"]:
        orders_per_customer[order["customer_id"]] += 1
    rows = {r["channel"]: r for r in project.evaluate(["revenue", "repeat_revenue"], by=["channel"]).to_dicts()}
    for channel in CHANNELS:
        orders = [o for o in DATA["orders"] if channel_of[o["customer_id"]] == channel]
        assert rows[channel]["revenue"] == sum(o["amount"] for o in orders)
        assert rows[channel]["repeat_revenue"] == sum(
            o["amount"] for o in orders if orders_per_customer[o["customer_id"]] > 1)


def test_a_relationship_that_could_fan_out_is_refused(make_project):
    root = make_project({"s.yaml": """
        sources:
          leads: {table: leads, primary_key: lead_id, relationships: [{to: opportunities, on: lead_id}]}
          opportunities: {table: opportunities, primary_key: opportunity_id, dimensions: [stage]}
        kpis:
          n: {formula: count(leads)}
        """})
    with pytest.raises(ProjectInvalid) as info:
        KpiProject(load_project(root)).model(describe=False)
    (error,) = info.value.errors
    assert "could fan out: 'lead_id' is not the primary key of 'opportunities'" in error.message
    assert error.location.line == 2


def test_per_entity_values_only_inside_filters(project):
    with pytest.raises(KpiEngineError, match="only makes sense inside another aggregate's filter"):
        project.compile(formulas=["count(orders per customer_id)"])


# --- 7. calendar -------------------------------------------------------------------------


EVENTS = [
    {"id": 1, "at": "2025-01-31 23:30:00", "day": "2025-01-31"},  # Feb 1 in Tokyo, Jan 31 in New York
    {"id": 2, "at": "2025-02-01 03:00:00", "day": "2025-02-01"},  # Feb 1 in Tokyo, Jan 31 in New York
    {"id": 3, "at": "2025-03-29 12:00:00", "day": "2025-03-29"},  # a Saturday
    {"id": 4, "at": "2025-03-30 12:00:00", "day": "2025-03-30"},  # a Sunday
    {"id": 5, "at": "2025-04-02 12:00:00", "day": "2025-04-02"},
]


def _calendar_project(make_project, config_extra):
    spec = """
        sources:
          events: {table: events, time: at, columns: {at: timestamp}}
          days: {table: events, time: day, columns: {day: date}}
        """
    config = "name: cal\nwarehouse: {adapter: duckdb, data: data}\n" + config_extra
    return KpiProject(load_project(make_project({"s.yaml": spec}, {"events": EVENTS}, config=config,
                                                name=config_extra.split(":")[0] or "plain")))


@pytest.mark.parametrize("zone, expected", [
    ("Asia/Tokyo", {dt.date(2025, 2, 1): 2, dt.date(2025, 3, 1): 2, dt.date(2025, 4, 1): 1}),
    ("America/New_York", {dt.date(2025, 1, 1): 2, dt.date(2025, 3, 1): 2, dt.date(2025, 4, 1): 1}),
])
def test_time_zone_converts_timestamps_but_not_dates(make_project, zone, expected):
    with _calendar_project(make_project, f"timezone: {zone}\n") as project:
        result = project.evaluate(formulas=["count(events)"], grain="month")
        assert {r["period"]: r["formula"] for r in result.to_dicts()} == expected
        dates = project.evaluate(formulas=["count(days)"], grain="month")
        assert {r["period"]: r["formula"] for r in dates.to_dicts()} == {
            dt.date(2025, 1, 1): 1, dt.date(2025, 2, 1): 1, dt.date(2025, 3, 1): 2, dt.date(2025, 4, 1): 1}


def test_week_start_and_fiscal_quarters(make_project):
    with _calendar_project(make_project, "week_start: sunday\nfiscal_year_start: 2\n") as project:
        weeks = project.evaluate(formulas=["count(days)"], grain="week").to_dicts()
        # Weeks start on Sunday: Jan 26, Jan 26 (Feb 1 is a Saturday), Mar 23 (Sat 29), Mar 30, Mar 30.
        assert {r["period"]: r["formula"] for r in weeks} == {
            dt.date(2025, 1, 26): 2, dt.date(2025, 3, 23): 1, dt.date(2025, 3, 30): 2}
        quarters = project.evaluate(formulas=["count(days)"], grain="fiscal_quarter").to_dicts()
        # Fiscal year from February: quarters start Nov 1, Feb 1, May 1...
        assert {r["period"]: r["formula"] for r in quarters} == {dt.date(2024, 11, 1): 1, dt.date(2025, 2, 1): 4}
        years = project.evaluate(formulas=["count(days)"], grain="fiscal_year").to_dicts()
        assert {r["period"]: r["formula"] for r in years} == {dt.date(2024, 2, 1): 1, dt.date(2025, 2, 1): 4}


def test_dense_series_fills_empty_periods(project):
    result = project.evaluate(["leads_n", "close_rate"], by=["channel"], grain="month", start="2024-06-01",
                              end="2024-09-01", fill=True)
    rows = rows_by_key(result)
    counts, won = monthly_leads(), monthly_leads(lambda r: r["customer_at"])
    assert set(rows) == {(add_months(dt.date(2024, 6, 1), k), c) for k in range(3) for c in CHANNELS}
    email_july = rows[(dt.date(2024, 7, 1), "email")]
    assert email_july["leads_n"] == 0 and email_july["close_rate"] is None
    ppc_july = rows[(dt.date(2024, 7, 1), "ppc")]
    key = (dt.date(2024, 7, 1), "ppc")
    assert ppc_july["close_rate"] == approx(100 * won[key] / counts[key])


def test_compile_shows_windows_in_readable_ctes(project):
    sql = project.compile(["lead_growth", "leads_to_date", "lead_share"], by=["channel"], grain="month",
                          start="2025-01-01").sql()
    assert {"series", "windowed"} <= set(named_parts(sql))
    for fragment in ("RANGE BETWEEN 1 PRECEDING AND 1 PRECEDING",
                     "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW", 'PARTITION BY "series"."period"'):
        assert fragment in sql
    # previous() widened the range by one month, cumulative() to all history.
    assert "CAST('2024-12-01 00:00:00' AS TIMESTAMP)" not in sql  # all-time cumulative wins
    growth_only = project.compile(["lead_growth"], grain="month", start="2025-01-01").sql()
    assert "CAST('2024-12-01 00:00:00' AS TIMESTAMP)" in growth_only


@pytest.mark.parametrize("grain", ["day", "week", "month", "quarter", "year", "fiscal_quarter", "fiscal_year"])
@pytest.mark.parametrize("week_start, fiscal_year_start", [("monday", 1), ("sunday", 4), ("thursday", 11)])
def test_sql_buckets_of_dates_and_timestamps_match_the_python_calendar(grain, week_start, fiscal_year_start):
    """DATE columns are truncated as dates and TIMESTAMP columns as timestamps (two SQL
    shapes): both must put every day of two years where Calendar.period_start does."""
    import duckdb
    from sqlglot import exp

    from kpi_engine.calendar import Calendar

    calendar = Calendar(week_start=week_start, fiscal_year_start=fiscal_year_start)
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(731)]
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT d::DATE AS d, d::TIMESTAMP + INTERVAL 23 HOUR AS ts "
                "FROM range(DATE '2024-01-01', DATE '2026-01-01', INTERVAL 1 DAY) AS r(d)")
    as_date = calendar.bucket(exp.column("d"), grain, "duckdb", is_date=True)
    as_timestamp = calendar.bucket(exp.column("ts"), grain, "duckdb")
    query = exp.select(exp.column("d"), as_date, as_timestamp).from_("t").order_by("d").sql("duckdb")
    rows = con.execute(query).fetchall()
    assert [row[0] for row in rows] == days
    expected = [calendar.period_start(day, grain) for day in days]
    assert [row[1] for row in rows] == expected
    assert [row[2] for row in rows] == expected


def test_a_date_source_grouped_by_day_then_by_period_matches_plain_python(make_project):
    """A source whose time column is a DATE is grouped by day before its days are cut into
    periods (compiler.days_to_periods). Every aggregate that allows it, snapshots included,
    must come out as if the rows were grouped by period directly; count_distinct does not
    allow it and keeps the one-stage query."""
    rng = random.Random(5)
    rows = []
    for i in range(600):
        day = dt.date(2025, 1, 1) + dt.timedelta(days=rng.randint(0, 150))
        channel = rng.choice(CHANNELS)
        if channel == "organic" and day.day >= 25:
            continue  # organic has no rows on month ends: its snapshot count and sum are 0
        rows.append({"day": day.isoformat(), "channel": channel, "account": rng.randint(1, 40),
                     "amount": rng.randint(1, 90), "paid": rng.choice(["true", "false"])})
    spec = """
        sources:
          snaps: {table: snaps, time: day, dimensions: [channel], columns: {day: date, paid: boolean}}
        """
    formulas = ["count(snaps)", "sum(snaps.amount where paid)", "min(snaps.amount)", "max(snaps.amount)",
                "last(snaps)", "last(snaps.amount)", "first(snaps.amount where paid)", "count_distinct(snaps.account)"]
    with KpiProject(load_project(make_project({"s.yaml": spec}, {"snaps": rows}))) as project:
        assert "snaps_agg_days" in named_parts(project.compile(formulas=formulas[:-1], by=["channel"], grain="month").sql())
        assert "snaps_agg_days" not in named_parts(project.compile(formulas=formulas, by=["channel"], grain="month").sql())
        two_stage = rows_by_key(project.evaluate(formulas=formulas[:-1], by=["channel"], grain="month"))
        one_stage = rows_by_key(project.evaluate(formulas=formulas, by=["channel"], grain="month"))

    groups = defaultdict(list)
    for row in rows:
        groups[(month(row["day"]), row["channel"])].append(row)
    last_day, first_day = {}, {}
    for row in rows:
        period = month(row["day"])
        last_day[period] = max(last_day.get(period, row["day"]), row["day"])
        first_day[period] = min(first_day.get(period, row["day"]), row["day"])

    def total(values):  # sums and snapshots are additive: no rows count as 0
        return sum(values)

    assert set(two_stage) == set(one_stage) == set(groups)
    names = ["formula"] + [f"formula_{i}" for i in range(2, len(formulas) + 1)]
    for (period, channel), members in groups.items():
        paid = [r for r in members if r["paid"] == "true"]
        at_last = [r for r in members if r["day"] == last_day[period]]
        at_first_paid = [r for r in paid if r["day"] == first_day[period]]
        expected = [len(members), total([r["amount"] for r in paid]), min(r["amount"] for r in members),
                    max(r["amount"] for r in members), len(at_last), total([r["amount"] for r in at_last]),
                    total([r["amount"] for r in at_first_paid]), len({r["account"] for r in members})]
        assert [one_stage[(period, channel)][name] for name in names] == [approx(v) for v in expected]
        assert [two_stage[(period, channel)][name] for name in names[:-1]] == [approx(v) for v in expected[:-1]]
