"""Relative ranges: --last N UNITS (the complete periods before the current one), --from/--to
written relative to today ('start of quarter', '6 months ago', today), --as-of pinning "today",
in the project's calendar (time zone, week start, fiscal year). Expected dates are by hand."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from kpi_engine.calendar import Calendar
from kpi_engine.cli import cli
from kpi_engine.dates import last_periods, parse_last, resolve_day
from kpi_engine.engine import make_request, open_project
from kpi_engine.errors import QueryError, UsageError

D = dt.date
MONDAY = Calendar()
SUNDAY_APRIL = Calendar(week_start="sunday", fiscal_year_start=4)
TODAY = D(2025, 3, 31)  # a Monday, the last day of a quarter


@pytest.mark.parametrize("text, calendar, expected", [
    ("2025-01-02", MONDAY, D(2025, 1, 2)),
    ("today", MONDAY, TODAY),
    (" Yesterday ", MONDAY, D(2025, 3, 30)),
    ("tomorrow", MONDAY, D(2025, 4, 1)),
    ("10 days ago", MONDAY, D(2025, 3, 21)),
    ("2 weeks ago", MONDAY, D(2025, 3, 17)),
    ("1 month ago", MONDAY, D(2025, 2, 28)),  # no 31 February: its last day
    ("13 months ago", MONDAY, D(2024, 2, 29)),  # a leap year
    ("1 quarter ago", MONDAY, D(2024, 12, 31)),
    ("3 years ago", MONDAY, D(2022, 3, 31)),
    ("start of week", MONDAY, D(2025, 3, 31)),
    ("this week", SUNDAY_APRIL, D(2025, 3, 30)),  # weeks start on Sunday in that project
    ("last week", MONDAY, D(2025, 3, 24)),
    ("start of month", MONDAY, D(2025, 3, 1)),
    ("last month", MONDAY, D(2025, 2, 1)),
    ("next month", MONDAY, D(2025, 4, 1)),
    ("this quarter", MONDAY, D(2025, 1, 1)),
    ("start of last quarter", MONDAY, D(2024, 10, 1)),
    ("start of year", MONDAY, D(2025, 1, 1)),
    ("next year", MONDAY, D(2026, 1, 1)),
    ("this fiscal year", SUNDAY_APRIL, D(2024, 4, 1)),  # fiscal years start in April
    ("last fiscal_quarter", SUNDAY_APRIL, D(2024, 10, 1)),  # Jan-Mar is the current fiscal quarter
    ("next fiscal quarter", SUNDAY_APRIL, D(2025, 4, 1)),
])
def test_days_relative_to_today(text, calendar, expected):
    assert resolve_day(text, "--from", calendar, TODAY) == expected


@pytest.mark.parametrize("text, calendar, start, end", [
    ("6 months", MONDAY, D(2024, 9, 1), D(2025, 3, 1)),  # March is running: September to February
    ("7 days", MONDAY, D(2025, 3, 24), D(2025, 3, 31)),  # the seven days before today
    ("2 weeks", MONDAY, D(2025, 3, 17), D(2025, 3, 31)),
    ("2 weeks", SUNDAY_APRIL, D(2025, 3, 16), D(2025, 3, 30)),
    ("1 quarter", MONDAY, D(2024, 10, 1), D(2025, 1, 1)),
    ("1 year", MONDAY, D(2024, 1, 1), D(2025, 1, 1)),
    ("1 fiscal year", SUNDAY_APRIL, D(2023, 4, 1), D(2024, 4, 1)),
])
def test_last_is_the_complete_periods_before_the_current_one(text, calendar, start, end):
    assert last_periods(*parse_last(text), TODAY, calendar) == (start, end)


@pytest.mark.parametrize("text", ["2025-02-30", "2025/01/01", "this day", "next tuesday", "6 months", "-1 days ago",
                                  "1.5 months ago", ""])
def test_what_is_not_a_day_is_refused_with_the_forms(text):
    with pytest.raises(UsageError) as raised:
        resolve_day(text, "--from", MONDAY, TODAY)
    assert str(raised.value).startswith(f"{text!r} is not a date (--from). Write YYYY-MM-DD, today, yesterday, ")


def test_days_outside_the_calendar_are_refused():
    with pytest.raises(QueryError, match="'tomorrow' from 9999-12-31 falls outside the calendar"):
        resolve_day("tomorrow", "--to", MONDAY, D(9999, 12, 31))
    with pytest.raises(QueryError, match="'3000 years ago' from 2025-03-31 falls outside the calendar"):
        resolve_day("3000 years ago", "--from", MONDAY, TODAY)


def test_today_is_the_day_in_the_projects_time_zone():
    # UTC+14 and UTC-11: the two dates differ by one day whenever it is run.
    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):
        assert resolve_day("today", "--to", Calendar(timezone=zone)) == dt.datetime.now(ZoneInfo(zone)).date()


SPEC = """
sources:
  orders: {table: orders, time: ordered_at}
  subscriptions: {table: subscriptions, time: started_on, time_end: ended_on}
kpis:
  orders_n: {formula: count(orders), target: {min: 1}}
  active: {formula: count(subscriptions)}
"""
# One order on the 10th of every month from October 2024 to April 2025, and two on 2025-03-31.
ORDERS = [{"ordered_at": f"{year}-{month:02d}-10"} for year, month in
          [(2024, 10), (2024, 11), (2024, 12), (2025, 1), (2025, 2), (2025, 3), (2025, 4)]]
ORDERS += [{"ordered_at": "2025-03-31"}, {"ordered_at": "2025-03-31"}]
SUBSCRIPTIONS = [{"started_on": "2025-01-10", "ended_on": ""}]  # still open: active up to "today"


CONFIG = """\
name: relative
warehouse: {adapter: duckdb, data: data, tables: {subscriptions: {types: {ended_on: date}}}}
"""


@pytest.fixture
def root(make_project):
    return make_project({"s.yaml": SPEC}, {"orders": ORDERS, "subscriptions": SUBSCRIPTIONS}, config=CONFIG)


def csv_of(root, *args):
    result = CliRunner().invoke(cli, ["evaluate", str(root), "orders_n", "--format", "csv", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_last_months_on_the_command_line(root):
    # As of 2025-03-31, the last 3 complete months are December to February: one order in each.
    assert csv_of(root, "--last", "3", "months", "--as-of", "2025-03-31", "--grain", "month") == (
        "period,orders_n,complete\n2024-12-01,1,true\n2025-01-01,1,true\n2025-02-01,1,true\n")
    # October to March: eight orders; the range starts before the data (10 October): not complete.
    assert csv_of(root, "--last", "2", "quarters", "--as-of", "2025-04-02") == "orders_n,complete\n8,false\n"


def test_from_and_to_relative_to_as_of(root):
    # 'start of year' to today (exclusive): 2025-01-01 to 2025-03-30, the orders of 10 January to
    # 10 March; today's two orders are not counted, tomorrow's end includes them.
    assert csv_of(root, "--from", "start of year", "--to", "today", "--as-of", "2025-03-31") == (
        "orders_n,complete\n3,true\n")
    assert csv_of(root, "--from", "start of year", "--to", "tomorrow", "--as-of", "2025-03-31") == (
        "orders_n,complete\n5,true\n")
    assert csv_of(root, "--from", "this quarter", "--as-of", "2025-02-01", "--grain", "quarter") == (
        "period,orders_n,complete\n2025-01-01,5,true\n2025-04-01,1,false\n")  # the data end on 10 April


def test_as_of_pins_where_open_intervals_end(make_project, root):
    result = CliRunner().invoke(cli, ["evaluate", str(root), "active", "--grain", "month", "--from", "2025-01-01",
                                      "--to", "2025-05-01", "--as-of", "2025-02-15", "--format", "csv"])
    assert result.exit_code == 0, result.output
    # Active from 10 January up to the pinned today: January and February only, neither complete
    # (the data start on the 10th of January and end on the pinned today).
    assert result.stdout.splitlines()[1:3] == ["2025-01-01,1,false", "2025-02-01,1,false"]
    assert all(line.split(",")[1] in ("", "0") for line in result.stdout.splitlines()[3:])


def test_as_of_stops_interval_sources_but_does_not_rewind_events(make_project):
    """docs/time.md: an interval source is read up to the as-of day (a subscription started after
    it is not counted, one ended after it is active until it); event rows after it still count."""
    subscriptions = [{"started_on": "2025-01-10", "ended_on": "2025-05-20"},  # ends after the as-of day
                     {"started_on": "2025-02-01", "ended_on": ""},
                     {"started_on": "2025-04-05", "ended_on": "2025-06-01"}]  # starts after it
    root = make_project({"s.yaml": SPEC}, {"orders": ORDERS, "subscriptions": subscriptions}, config=CONFIG)

    def read(kpi):
        out = CliRunner().invoke(cli, ["evaluate", str(root), kpi, "--grain", "month", "--from", "2025-01-01",
                                       "--to", "2025-06-01", "--as-of", "2025-03-15", "--format", "csv"])
        assert out.exit_code == 0, out.output
        return {line.split(",")[0]: line.split(",")[1] for line in out.stdout.splitlines()[1:]}

    active = read("active")
    assert {period: active.get(period, "") for period in ("2025-01-01", "2025-02-01", "2025-03-01")} == {
        "2025-01-01": "1", "2025-02-01": "2", "2025-03-01": "2"}
    assert all(active.get(period, "") in ("", "0") for period in ("2025-04-01", "2025-05-01"))
    # Orders on the 10th of each month and two on 31 March, whatever the as-of day.
    assert read("orders_n") == {"2025-01-01": "1", "2025-02-01": "1", "2025-03-01": "3", "2025-04-01": "1"}


def test_the_python_api_takes_the_same_forms(root):
    with open_project(root) as project:
        last = project.evaluate(["orders_n"], grain="month", last="2 months", as_of="2025-03-31").to_dicts()
        pair = project.evaluate(["orders_n"], last=(2, "months"), as_of=D(2025, 3, 31)).to_dicts()
        relative = project.compile(["orders_n"], start="last month", end="this month", as_of="2025-03-31")
    assert [(row["period"], row["orders_n"]) for row in last] == [(D(2025, 1, 1), 1), (D(2025, 2, 1), 1)]
    assert pair == [{"orders_n": 2, "complete": True}]
    assert "CAST('2025-02-01' AS DATE)" in relative.sql() and "CAST('2025-03-01' AS DATE)" in relative.sql()
    request = make_request(["orders_n"], start="this quarter", as_of="2025-05-05", calendar=SUNDAY_APRIL)
    assert (request.start, request.end, request.as_of) == (D(2025, 4, 1), None, D(2025, 5, 5))


@pytest.mark.parametrize("args, message", [
    (("--last", "2", "months", "--from", "2025-01-01"),
     "Error: --last sets both ends of the range, so it cannot be combined with --from or --to. Drop --from and "
     "--to, or write the range with them alone (--from 'start of year' --to today).\n"),
    (("--last", "0", "months"), "'0 months' is not a number of periods. Write a whole number of 1 or more and a "
                                "unit: '6 months', '7 days', '2 weeks', '4 quarters', '1 year', '2 fiscal quarters'."),
    (("--last", "2", "fortnights"), "Invalid value for '--last': '2 fortnights' is not a number of periods."),
    (("--as-of", "someday"), "Invalid value for '--as-of': 'someday' is not a date. Write YYYY-MM-DD, today,"),
])
def test_bad_relative_ranges_are_usage_errors(root, args, message):
    result = CliRunner().invoke(cli, ["evaluate", str(root), "orders_n", *args])
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


def test_the_api_names_a_bad_last():
    with pytest.raises(UsageError, match=r"'last' must be text such as '6 months' or a pair \(6, 'months'\), not int"):
        make_request(["n"], last=6)
    with pytest.raises(UsageError, match="'6' is not a number of periods \\(last\\)"):
        make_request(["n"], last="6")


def test_check_and_report_take_a_relative_as_of(root, tmp_path):
    first_of_month = Calendar().today().replace(day=1)
    outputs = []
    for as_of in ("start of month", first_of_month.isoformat()):
        outputs.append(CliRunner().invoke(cli, ["check", str(root), "orders_n", "--as-of", as_of]))
    assert outputs[0].exit_code == outputs[1].exit_code and outputs[0].stdout == outputs[1].stdout
    previous = (first_of_month - dt.timedelta(days=1)).replace(day=1)
    assert f"the month starting {previous.isoformat()}" in outputs[0].stdout
    page = CliRunner().invoke(cli, ["report", str(root), "orders_n", "--as-of", "2025-03-15", "-o",
                                    tmp_path / "r.html"])
    relative = CliRunner().invoke(cli, ["report", str(root), "orders_n", "--as-of", "nope", "-o", tmp_path / "x.html"])
    assert page.exit_code == 0 and "2025-02" in (tmp_path / "r.html").read_text()
    assert relative.exit_code == 2 and "'nope' is not a date" in relative.stderr
