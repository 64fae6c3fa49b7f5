"""Date parts as dimensions (issue 15, item 6): --by day_of_week, day_of_month, month_of_year,
quarter_of_year and year, alone or with a grain, in --where, with time functions where they can be
read and a clear error where they cannot. Values are checked against the example's CSV files read
in plain Python (tests/reference.py), a ratio KPI included; SQLite and PostgreSQL equal DuckDB.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from fractions import Fraction

import pytest
from click.testing import CliRunner

import reference
from kpi_engine.calendar import DATE_PARTS, Calendar, part_of
from kpi_engine.cli import cli
from kpi_engine.engine import open_project
from kpi_engine.testing import TABLES as EXAMPLE_TABLES
from warehouse_loading import sqlite_warehouse

EXAMPLE = reference.DEFAULT_DATA_DIR.parent
START, END = dt.date(2024, 1, 1), dt.date(2025, 1, 1)


def _day(text: str) -> dt.date:
    return dt.date.fromisoformat(text[:10])


def python_part(day: dt.date, part: str) -> int:
    """Written apart from kpi_engine.calendar.part_of, which the SQL is also tested against."""
    if part == "day_of_week":
        return (day - dt.date(2024, 1, 1)).days % 7 + 1  # 2024-01-01 was a Monday
    if part == "day_of_month":
        return int(day.strftime("%d"))
    if part == "month_of_year":
        return int(day.strftime("%m"))
    if part == "quarter_of_year":
        return {1: 1, 2: 1, 3: 1, 4: 2, 5: 2, 6: 2, 7: 3, 8: 3, 9: 3, 10: 4, 11: 4, 12: 4}[day.month]
    return day.year


@pytest.fixture(scope="module")
def data():
    return reference.load()


@pytest.fixture(scope="module")
def project():
    with open_project(EXAMPLE) as opened:
        yield opened


def contacts_by(data, part: str, keep=lambda day: True, grain_year: bool = False) -> dict:
    counts: dict = defaultdict(int)
    for row in data["leads"]:
        if not row["created_at"]:
            continue
        day = _day(row["created_at"])
        if START <= day < END and keep(day):
            key = ((dt.date(day.year, 1, 1),) if grain_year else ()) + (python_part(day, part),)
            counts[key] += 1
    return dict(counts)


def rows_by(result, *keys) -> dict:
    return {tuple(row[k] for k in keys): row for row in result.to_dicts()}


def test_the_sql_date_parts_equal_python_on_every_day_of_four_years(project):
    days = [dt.date(2023, 1, 1) + dt.timedelta(days=k) for k in range(4 * 366)]
    for part in DATE_PARTS:
        assert all(part_of(day, part) == python_part(day, part) for day in days), part
    # ... and the SQL equals part_of: a KPI by each part, over a range that starts on every weekday.
    for part in DATE_PARTS:
        result = project.evaluate(["new_contacts"], by=[part], start=START, end=END)
        assert {k[0]: r["new_contacts"] for k, r in rows_by(result, part).items()} == \
            {k[0]: v for k, v in contacts_by(reference.load(), part).items()}, part


def test_by_month_of_year_with_a_yearly_grain_and_a_weekend_filter(project, data):
    result = project.evaluate(["new_contacts"], by=["month_of_year"], grain="year", start=START, end=END,
                              where="day_of_week in (6, 7)")
    expected = contacts_by(data, "month_of_year", keep=lambda day: day.weekday() >= 5, grain_year=True)
    assert {k: r["new_contacts"] for k, r in rows_by(result, "period", "month_of_year").items()} == expected


def test_a_ratio_by_day_of_week_divides_the_sums_of_each_weekday(project, data):
    spend: dict = defaultdict(Decimal)
    leads: dict = defaultdict(int)
    for row in data["ad_spend"]:
        day = _day(row["spend_date"])
        if START <= day < END:
            spend[day.isoweekday()] += Decimal(row["spend"])
    for row in data["leads"]:
        day = _day(row["created_at"])
        if START <= day < END and row["is_qualified"] == "true":
            leads[day.isoweekday()] += 1
    result = project.evaluate(["cost_per_lead"], by=["day_of_week"], start=START, end=END)
    got = {k[0]: r["cost_per_lead"] for k, r in rows_by(result, "day_of_week").items()}
    assert set(got) == set(range(1, 8))
    for weekday, value in got.items():
        assert value == pytest.approx(float(Fraction(spend[weekday]) / leads[weekday]), rel=1e-12)


def test_previous_by_a_finer_part_compares_the_same_part_of_the_period_before(project, data):
    result = project.evaluate(["new_contacts"], formulas=["previous(new_contacts)"], by=["month_of_year"],
                              grain="year", start=dt.date(2025, 1, 1), end=dt.date(2026, 1, 1))
    last_year = contacts_by(data, "month_of_year")  # 2024, by month
    for (period, month), row in rows_by(result, "period", "month_of_year").items():
        assert row["formula"] == last_year.get((month,), 0), month


@pytest.mark.parametrize("part, grain", [("month_of_year", "month"), ("day_of_week", "day"), ("year", "quarter")])
def test_previous_by_a_part_fixed_within_each_period_is_refused(part, grain):
    result = CliRunner().invoke(cli, ["evaluate", str(EXAMPLE), "revenue_growth_rate", "--by", part, "--grain", grain])
    assert result.exit_code != 0
    assert f"--by {part} with --grain {grain} gives each period a single {part}" in result.output
    assert "Traceback" not in result.output


def test_cumulative_and_share_by_a_part_are_allowed():
    assert not Calendar().constant_within("day_of_week", "month")
    assert Calendar().constant_within("quarter_of_year", "month")
    assert not Calendar(fiscal_year_start=2).constant_within("quarter_of_year", "fiscal_quarter")
    result = CliRunner().invoke(cli, ["evaluate", str(EXAMPLE), "--formula", "share(new_contacts)",
                                      "--by", "day_of_week", "--grain", "month", "--from", "2024-01-01",
                                      "--to", "2024-02-01", "--format", "json"])
    assert result.exit_code == 0, result.output


def test_a_declared_dimension_of_the_same_name_wins(tmp_path):
    (tmp_path / "kpi_engine.yaml").write_text("name: t\nwarehouse: {adapter: duckdb, data: data}\n")
    (tmp_path / "specs.yaml").write_text("sources:\n  sales:\n    table: sales\n    time: sold_at\n"
                                         "    dimensions: [year]\nkpis:\n  n: {formula: count(sales)}\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sales.csv").write_text("sold_at,year\n2024-05-01,1999\n2024-06-01,1999\n")
    with open_project(tmp_path) as opened:
        assert opened.evaluate(["n"], by=["year"]).to_dicts() == [{"year": 1999, "n": 2.0, "complete": True}]


def test_a_source_without_time_has_no_date_parts(tmp_path):
    (tmp_path / "kpi_engine.yaml").write_text("name: t\nwarehouse: {adapter: duckdb, data: data}\n")
    (tmp_path / "specs.yaml").write_text("sources:\n  plans:\n    table: plans\nkpis:\n  n: {formula: count(plans)}\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "plans.csv").write_text("name\nbasic\n")
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path), "n", "--by", "day_of_week"])
    assert result.exit_code != 0 and "cannot slice by 'day_of_week'" in result.output


def test_sqlite_equals_duckdb(project, tmp_path_factory):
    url = sqlite_warehouse(tmp_path_factory.mktemp("sqlite"), "example", EXAMPLE_TABLES, reference.DEFAULT_DATA_DIR)
    with open_project(EXAMPLE, warehouse=url) as other:
        for part in DATE_PARTS:
            options = dict(by=[part, "channel"], grain="quarter", start=START, end=END)
            want = rows_by(project.evaluate(["new_contacts", "ad_spend_total"], **options), "period", part, "channel")
            got = rows_by(other.evaluate(["new_contacts", "ad_spend_total"], **options), "period", part, "channel")
            assert set(got) == set(want), part
            for key, row in want.items():
                assert got[key]["new_contacts"] == row["new_contacts"]
                if row["ad_spend_total"] is None:  # outside ad_spend's rows (a channel without spend)
                    assert got[key]["ad_spend_total"] is None
                else:
                    assert got[key]["ad_spend_total"] == pytest.approx(row["ad_spend_total"], rel=1e-9)
