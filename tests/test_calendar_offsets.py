"""Offsets and windows in calendar units, whatever the grain (issue 15, item 4):
previous(x, '1 year') at day, week, month and quarter grain; previous(x, '2 weeks'),
rolling(x, '7 days'), '1 quarter'; clear errors where a unit does not fit the grain. Checked
against the example's CSV files in plain Python, and SQLite against DuckDB.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections import defaultdict
from decimal import Decimal

import pytest
from click.testing import CliRunner

import reference
from kpi_engine.cli import cli
from kpi_engine.engine import open_project
from kpi_engine.testing import TABLES as EXAMPLE_TABLES
from warehouse_loading import sqlite_warehouse

EXAMPLE = reference.DEFAULT_DATA_DIR.parent


@pytest.fixture(scope="module")
def data():
    return reference.load()


@pytest.fixture(scope="module")
def project():
    with open_project(EXAMPLE) as opened:
        yield opened


def months_back(day: dt.date, months: int) -> dt.date:
    """The same day ``months`` months earlier, or that month's last day when it is shorter."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    return dt.date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def monday(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def contacts_per(data, period) -> dict:
    counts: dict = defaultdict(int)
    for row in data["leads"]:
        counts[period(dt.date.fromisoformat(row["created_at"][:10]))] += 1
    return counts


def evaluate(project, formula: str, grain: str, start: dt.date, end: dt.date) -> dict:
    result = project.evaluate([], formulas=[formula], grain=grain, start=start, end=end)
    return {row["period"]: row["formula"] for row in result.to_dicts()}


def test_a_year_back_at_day_grain_is_the_same_day_last_year(project, data):
    daily = contacts_per(data, lambda day: day)
    start, end = dt.date(2025, 1, 1), dt.date(2025, 4, 1)
    got = evaluate(project, "previous(new_contacts, '1 year')", "day", start, end)
    assert len(got) == (end - start).days
    for day, value in got.items():
        assert value == daily.get(months_back(day, 12), 0), day


def test_a_month_back_at_day_grain_stops_at_the_shorter_months_last_day(project, data):
    daily = contacts_per(data, lambda day: day)
    got = evaluate(project, "previous(new_contacts, '1 month')", "day", dt.date(2024, 3, 25), dt.date(2024, 4, 2))
    assert months_back(dt.date(2024, 3, 31), 1) == dt.date(2024, 2, 29)
    for day, value in got.items():
        assert value == daily.get(months_back(day, 1), 0), day


def test_a_year_back_at_week_grain_is_the_week_of_the_same_day_last_year(project, data):
    weekly = contacts_per(data, monday)
    got = evaluate(project, "previous(new_contacts, '1 year')", "week", dt.date(2025, 1, 6), dt.date(2025, 5, 5))
    assert len(got) == 17
    for week, value in got.items():
        assert value == weekly.get(monday(months_back(week, 12)), 0), week


@pytest.mark.parametrize("grain, calendar_form, period_form", [
    ("month", "previous(new_contacts, '1 year')", "previous(new_contacts, 12)"),
    ("quarter", "previous(new_contacts, '1 year')", "previous(new_contacts, 4)"),
    ("month", "previous(new_contacts, '1 quarter')", "previous(new_contacts, 3)"),
    ("day", "previous(new_contacts, '2 weeks')", "previous(new_contacts, 14)"),
    ("week", "previous(new_contacts, '14 days')", "previous(new_contacts, 2)"),
    ("day", "rolling(new_contacts, '7 days')", "rolling(new_contacts, 7)"),
    ("month", "rolling(ad_spend_total, '1 quarter')", "rolling(ad_spend_total, 3)"),
])
def test_units_that_are_whole_periods_equal_the_period_form(project, grain, calendar_form, period_form):
    start, end = dt.date(2025, 1, 1), dt.date(2025, 7, 1)
    # (DuckDB adds floats in parallel: the last bits may differ between two runs of one sum)
    assert evaluate(project, calendar_form, grain, start, end) == \
        pytest.approx(evaluate(project, period_form, grain, start, end), rel=1e-12)


def test_monthly_values_against_the_same_month_last_year(project, data):
    monthly = contacts_per(data, lambda day: day.replace(day=1))
    got = evaluate(project, "new_contacts - previous(new_contacts, '1 year')", "month", dt.date(2025, 1, 1),
                   dt.date(2026, 1, 1))
    for month, value in got.items():
        assert value == monthly[month] - monthly[months_back(month, 12)], month


def test_a_snapshot_a_year_back_is_null_where_that_day_has_no_snapshot(project, data):
    days = {dt.date.fromisoformat(r["snapshot_date"]): int(r["subscribers"]) for r in data["email_list"]}
    got = evaluate(project, "previous(email_list_size, '1 year')", "day", dt.date(2024, 12, 25), dt.date(2025, 1, 8))
    for day, value in got.items():
        assert value == days.get(months_back(day, 12)), day  # 2023 has no snapshot: null
    assert got[dt.date(2024, 12, 31)] is None and got[dt.date(2025, 1, 2)] == days[dt.date(2024, 1, 2)]


@pytest.mark.parametrize("formula, grain, message", [
    ("previous(new_contacts, '1 month')", "quarter", "'1 month' is not a whole number of quarters"),
    ("previous(new_contacts, '10 days')", "month", "'10 days' cannot be counted in months"),
    ("previous(new_contacts, '10 days')", "week", "'10 days' is not a whole number of weeks"),
    ("previous(new_contacts, '1 fortnight')", "day", "'1 fortnight' is not a length of time"),
])
def test_units_that_do_not_fit_the_grain_are_one_clear_error(formula, grain, message):
    result = CliRunner().invoke(cli, ["evaluate", str(EXAMPLE), "--formula", formula, "--grain", grain])
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output


def test_sqlite_equals_duckdb(project, tmp_path_factory):
    url = sqlite_warehouse(tmp_path_factory.mktemp("sqlite"), "example", EXAMPLE_TABLES, reference.DEFAULT_DATA_DIR)
    with open_project(EXAMPLE, warehouse=url) as other:
        for formula, grain in [("previous(new_contacts, '1 year')", "day"), ("previous(revenue, '1 month')", "day"),
                               ("previous(email_list_size, '1 year')", "week")]:
            options = dict(formulas=[formula], grain=grain, start=dt.date(2025, 2, 20), end=dt.date(2025, 4, 5))
            want = {r["period"]: r["formula"] for r in project.evaluate([], **options).to_dicts()}
            got = {r["period"]: r["formula"] for r in other.evaluate([], **options).to_dicts()}
            assert got.keys() == want.keys(), formula
            for key, value in want.items():
                assert (value is None and got[key] is None) or got[key] == pytest.approx(value, rel=1e-9), (formula, key)


def test_month_to_date_by_day_reads_the_month_from_its_first_day(project, data):
    daily: dict = defaultdict(Decimal)
    for row in data["ad_spend"]:
        daily[dt.date.fromisoformat(row["spend_date"][:10])] += Decimal(row["spend"])
    got = evaluate(project, "cumulative(ad_spend_total, 'month')", "day", dt.date(2024, 2, 20), dt.date(2024, 3, 10))
    assert len(got) == 19
    for day, value in got.items():
        expected = sum((v for d, v in daily.items() if d.replace(day=1) == day.replace(day=1) and d <= day), Decimal(0))
        assert value == pytest.approx(float(expected), rel=1e-12), day


def test_at_start_reads_the_first_period_of_the_month_and_quarter(project, data):
    size = {dt.date.fromisoformat(r["snapshot_date"]): int(r["subscribers"]) for r in data["email_list"]}
    got = evaluate(project, "at_start(email_list_size, 'month')", "day", dt.date(2024, 2, 20), dt.date(2024, 4, 3))
    assert len(got) == 43
    for day, value in got.items():
        assert value == size[day.replace(day=1)], day
    weekly = contacts_per(data, monday)
    got = evaluate(project, "at_start(new_contacts, 'quarter')", "week", dt.date(2024, 3, 18), dt.date(2024, 5, 6))
    for week, value in got.items():
        quarter_start = dt.date(week.year, (week.month - 1) // 3 * 3 + 1, 1)
        assert value == weekly.get(monday(quarter_start), 0), week  # a week belongs to the quarter of its first day


def test_at_start_needs_a_finer_grain():
    result = CliRunner().invoke(cli, ["evaluate", str(EXAMPLE), "--formula", "at_start(new_contacts, 'month')",
                                      "--grain", "month"])
    assert result.exit_code == 1
    assert "at_start(x, 'month') reads the first period of a month, which --grain month does not divide" in result.output
