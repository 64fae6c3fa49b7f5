"""The complete flag, --complete-only and matures_after on a tiny project whose data extent is known
by hand: orders from 2025-01-06 (a Monday) to 2025-03-20, visits from 2025-01-01 to 2025-03-31."""

import datetime as dt

import pytest

from kpi_engine.calendar import Calendar
from kpi_engine.completeness import Extent, complete_range, is_complete
from kpi_engine.engine import open_project

SPEC = """
sources:
  orders: {table: orders, time: at}
  visits: {table: visits, time: day}
kpis:
  order_count: {formula: count(orders)}
  visit_count: {formula: count(visits)}
  orders_per_visit: {formula: order_count / visit_count}
  cohort: {formula: count(orders), matures_after: 30 days}
"""
ORDERS = [{"at": day} for day in ("2025-01-06", "2025-01-20", "2025-02-03", "2025-02-28", "2025-03-20")]
VISITS = [{"day": day} for day in ("2025-01-01", "2025-01-15", "2025-02-10", "2025-03-31")]
D = dt.date


@pytest.fixture
def project(make_project):
    with open_project(make_project({"s.yaml": SPEC}, {"orders": ORDERS, "visits": VISITS})) as opened:
        yield opened


def flags(result):
    return {row["period"]: row["complete"] for row in result.to_dicts()}


def test_a_period_is_complete_inside_the_range_and_every_source_read(project):
    # visits alone cover January 1 to March 31: every month is complete
    assert flags(project.evaluate(["visit_count"], grain="month")) == {D(2025, 1, 1): True, D(2025, 2, 1): True,
                                                                        D(2025, 3, 1): True}
    # orders start on January 6 and end on March 20: only February lies inside their data
    assert flags(project.evaluate(["order_count"], grain="month")) == {D(2025, 1, 1): False, D(2025, 2, 1): True,
                                                                        D(2025, 3, 1): False}
    # a row reads both sources: its period must lie inside both
    assert flags(project.evaluate(["orders_per_visit"], grain="month")) == {
        D(2025, 1, 1): False, D(2025, 2, 1): True, D(2025, 3, 1): False}
    # a month cut by --to, and the first week (starting Monday 2024-12-30) before the visits begin
    assert flags(project.evaluate(["visit_count"], grain="month", end="2025-02-15")) == {
        D(2025, 1, 1): True, D(2025, 2, 1): False}
    weeks = flags(project.evaluate(["visit_count"], grain="week"))
    assert weeks[D(2024, 12, 30)] is False and weeks[D(2025, 3, 31)] is False and weeks[D(2025, 2, 10)] is True


def test_without_a_grain_the_range_is_checked(project):
    assert project.evaluate(["visit_count"]).to_dicts()[0]["complete"] is True  # no range: the whole data
    assert project.evaluate(["visit_count"], start="2025-02-01", end="2025-03-01").to_dicts()[0]["complete"] is True
    assert project.evaluate(["order_count"], start="2025-01-01").to_dicts()[0]["complete"] is False  # orders start 01-06


def test_complete_only_keeps_the_complete_rows_with_the_same_values(project):
    every = project.evaluate(["orders_per_visit", "order_count"], grain="month").to_dicts()
    kept = project.evaluate(["orders_per_visit", "order_count"], grain="month", complete_only=True).to_dicts()
    assert kept == [row for row in every if row["complete"]] == [
        {"period": D(2025, 2, 1), "orders_per_visit": 2.0, "order_count": 2.0, "complete": True}]
    assert project.evaluate(["order_count"], grain="month", start="2025-03-01", complete_only=True).to_dicts() == []


def test_a_cohort_kpi_is_complete_only_its_maturity_after_the_period(project):
    # orders end on 2025-03-20 (data end 03-21): January + 30 days = 03-03 <= 03-21 is mature;
    # February ends 03-01, + 30 days = 03-31 > 03-21: not yet. January also starts before the data.
    got = flags(project.evaluate(["cohort"], grain="month", start="2025-01-06"))
    assert got == {D(2025, 1, 1): False, D(2025, 2, 1): False, D(2025, 3, 1): False}
    assert flags(project.evaluate(["order_count"], grain="month", start="2025-01-06"))[D(2025, 2, 1)] is True
    weeks = flags(project.evaluate(["cohort"], grain="week"))
    # the week of 2025-02-03 ends 02-10; + 30 days = 03-12 <= 03-21; the week of 02-24: 04-02 > 03-21
    assert weeks[D(2025, 2, 3)] is True and weeks[D(2025, 2, 24)] is False


def test_complete_range_is_the_contiguous_run_of_complete_periods():
    calendar = Calendar()
    extents = {"a": Extent(D(2025, 1, 6), D(2025, 3, 20)), "b": Extent(D(2025, 1, 1), D(2025, 3, 31))}
    assert complete_range("month", None, None, extents, calendar) == (D(2025, 2, 1), D(2025, 3, 1))
    assert complete_range("week", D(2025, 1, 8), None, extents, calendar) == (D(2025, 1, 13), D(2025, 3, 17))
    assert complete_range("month", None, None, {"a": Extent(None, None)}, calendar) is None
    for period in (D(2025, 1, 1), D(2025, 2, 1), D(2025, 3, 1)):
        inside = complete_range("month", None, None, extents, calendar)
        assert is_complete(period, "month", None, None, extents, calendar) == (inside[0] <= period < inside[1])


FILLED = SPEC + """\
  orders_per_visit_or_zero: {formula: order_count / visit_count, fill_nulls_with: 0}
  visit_ratio: {formula: count(visits) / count(visits), fill_nulls_with: 0}
"""


def test_fill_nulls_with_replaces_nulls_inside_the_kpis_own_rows_only(make_project):
    root = make_project({"s.yaml": FILLED}, {"orders": ORDERS, "visits": VISITS})
    with open_project(root) as project:
        weeks = {row["period"]: row for row in project.evaluate(
            ["orders_per_visit", "orders_per_visit_or_zero", "order_count", "visit_ratio"], grain="week").to_dicts()}
        # the week of 2025-01-06: one order, no visit: 1 / 0 is null, or 0 when the KPI says so
        assert weeks[D(2025, 1, 6)]["orders_per_visit"] is None
        assert weeks[D(2025, 1, 6)]["orders_per_visit_or_zero"] == 0
        # visit_ratio reads visits only: that week is not one of its rows, so its cell stays empty
        assert weeks[D(2025, 1, 6)]["visit_ratio"] is None and weeks[D(2024, 12, 30)]["visit_ratio"] == 1
        dense = {row["period"]: row for row in project.evaluate(
            ["orders_per_visit", "orders_per_visit_or_zero"], grain="week", start="2025-01-27", end="2025-02-10",
            fill=True).to_dicts()}
        # the week of 2025-01-27 has neither orders nor visits: a dense series gives null, or the fill value
        assert dense[D(2025, 1, 27)]["orders_per_visit"] is None and dense[D(2025, 1, 27)]["orders_per_visit_or_zero"] == 0
        assert dense[D(2025, 2, 3)]["orders_per_visit"] is None  # an order, no visit


def test_the_report_marks_partial_periods_per_kpi_and_takes_the_latest_complete_month(project):
    from kpi_engine.report import build_report

    page = build_report(project, ["order_count", "visit_count"], grain="month")
    # orders run 01-06 .. 03-20, visits 01-01 .. 03-31: February is the latest month inside both
    assert "2025-02: the latest complete month of the data (data through 2025-03-20)" in page
    orders = page[page.index('id="kpi-order_count"'):page.index('id="kpi-visit_count"')]
    visits = page[page.index('id="kpi-visit_count"'):]
    # January starts before the orders do: its segment is dashed, its marker hollow and labelled
    assert 'class="partial"' in orders and "(partial period)" in orders and ">partial</text>" in orders
    assert 'class="partial"' not in visits and "(partial period)" not in visits


def test_the_report_draws_an_immature_cohort_period_as_partial(project):
    from kpi_engine.report import build_report

    page = build_report(project, ["cohort"], grain="month", as_of=D(2025, 4, 1))
    # cohort matures 30 days after a month ends; the orders end on 03-20: January is mature but
    # starts before the data (partial), February is not mature (partial), March is cut by the data.
    markers = [title for title in page.split("<title>")[1:] if "(partial period)" in title]
    assert len(markers) == 3
