"""Time functions over time functions (issue 15, items 3 and 5): previous of a running total,
growth of a rolling average, a running total of a ratio of windows, year-over-year to date; and
rolling windows in days at a coarser grain (item 4: a month's value is the window ending on its
last day).

The data are webinar registrations (a TIMESTAMP source) and daily campaign costs (a DATE source)
over three regions, with holes on purpose: one region has no registrations for two months, one
month has none at all, and a leap day. Every value is compared with a plain-Python reference that
walks every period from the first month of the data, so a running total carried through an empty
month is checked."""

from __future__ import annotations

import csv
import datetime as dt
import random
from collections import defaultdict

import pytest

from kpi_engine.engine import open_project
from kpi_engine.errors import KpiEngineError
from warehouse_loading import postgres_warehouse, sqlite_warehouse

pytest_plugins = ["pg"]
TABLES = {"registrations": {"registered_at": "timestamp", "region": "text", "fee": "decimal"},
          "costs": {"day": "date", "region": "text", "cost": "decimal"}}

SPECS = """\
sources:
  registrations:
    table: registrations
    time: registered_at
    dimensions: [region]
  costs:
    table: costs
    time: day
    dimensions: [region]
kpis:
  registrations_3m:
    formula: rolling(count(registrations), 3)
  average_fee_3m:
    unit: currency
    formula: rolling(avg(registrations.fee), 3)
  average_fee_3m_growth:
    unit: percent
    formula: 100 * (average_fee_3m - previous(average_fee_3m)) / previous(average_fee_3m)
  fees_to_date:
    unit: currency
    formula: cumulative(sum(registrations.fee), 'year')
  fees_to_date_last_year:
    unit: currency
    formula: previous(fees_to_date, '1 year')
"""
REGIONS = ("north", "south", "west")
FIRST_DAY, LAST_DAY = dt.date(2023, 11, 3), dt.date(2025, 4, 27)


def _empty(day: dt.date, region: str) -> bool:
    """No registrations at all in June 2024; none in the west in February and March 2024."""
    return (day.year, day.month) == (2024, 6) or (region == "west" and (day.year, day.month) in ((2024, 2), (2024, 3)))


def generate(seed: int = 15):
    rng = random.Random(seed)
    registrations, costs = [], []
    day = FIRST_DAY
    while day <= LAST_DAY:
        for region in REGIONS:
            if not _empty(day, region):
                for _ in range(rng.randrange(0, 3) + (2 if day == dt.date(2024, 2, 29) else 0)):
                    at = dt.datetime.combine(day, dt.time(rng.randrange(24), rng.randrange(60)))
                    registrations.append({"registered_at": at, "region": region, "fee": rng.randrange(0, 40000) / 100})
            if day.weekday() < 5 and region != "south":
                costs.append({"day": day, "region": region, "cost": rng.randrange(1000, 9000) / 100})
        day += dt.timedelta(days=1)
    return registrations, costs


@pytest.fixture(scope="module")
def data():
    return generate()


@pytest.fixture(scope="module")
def folder(data, tmp_path_factory):
    registrations, costs = data
    root = tmp_path_factory.mktemp("webinars")
    (root / "kpi_engine.yaml").write_text("name: webinars\nwarehouse: {adapter: duckdb, data: data}\n")
    (root / "specs.yaml").write_text(SPECS)
    (root / "data").mkdir()
    for name, rows in (("registrations", registrations), ("costs", costs)):
        with open(root / "data" / f"{name}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def project(folder):
    with open_project(folder) as opened:
        yield opened


# -- the plain-Python reference ---------------------------------------------------------------

def month_of(day: dt.date) -> dt.date:
    return day.replace(day=1)


def months(first: dt.date, end: dt.date) -> list[dt.date]:
    """Every month from the one holding ``first`` up to ``end`` (exclusive)."""
    result, current = [], month_of(first)
    while current < end:
        result.append(current)
        current = (current + dt.timedelta(days=32)).replace(day=1)
    return result


def days(first: dt.date, end: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((end - first).days)]


class Series:
    """Values per (period, group) over every period from the first of the data up to ``end``: 0
    where there are no rows, so running totals and windows run through empty periods."""

    def __init__(self, rows, time, value, periods, period_of, by_region, start=None, end=None):
        self.periods, self.groups = periods, (REGIONS if by_region else (None,))
        self.values = defaultdict(float)
        self.seen = set()  # keys with rows inside [start, end): the rows a request shows
        for row in rows:
            day = row[time].date() if isinstance(row[time], dt.datetime) else row[time]
            if end is not None and day >= end:
                continue  # --to cuts every read; time functions read whole periods before --from only
            key = (period_of(day), row["region"] if by_region else None)
            self.values[key] += value(row)
            if (start is None or day >= start) and (end is None or day < end):
                self.seen.add(key)

    def at(self, period, group) -> float:
        return self.values[(period, group)]

    def map(self, fn) -> "Derived":
        return Derived(self, {(p, g): fn(p, g) for p in self.periods for g in self.groups})


class Derived:
    def __init__(self, base, values):
        self.periods, self.groups, self.values = base.periods, base.groups, values

    def at(self, period, group):
        return self.values.get((period, group), 0.0)

    def map(self, fn) -> "Derived":
        return Derived(self, {(p, g): fn(p, g) for p in self.periods for g in self.groups})


def previous(series, n):
    index = {p: i for i, p in enumerate(series.periods)}
    return series.map(lambda p, g: series.at(series.periods[index[p] - n], g) if index[p] >= n else 0.0)


def rolling(series, n):
    index = {p: i for i, p in enumerate(series.periods)}
    return series.map(lambda p, g: sum(series.at(q, g) for q in series.periods[max(0, index[p] - n + 1):index[p] + 1]))


def cumulative(series, restart=None):
    def value(p, g):
        return sum(series.at(q, g) for q in series.periods if q <= p and (restart is None or restart(q) == restart(p)))
    return series.map(value)


def ratio(a, b):
    return a.map(lambda p, g: a.at(p, g) / b.at(p, g) if b.at(p, g) else None)


def expected_rows(series_list, result, first_period):
    """{(period, group): value} over the keys any source has rows for from the first period on."""
    keys = set().union(*(s.seen for s in series_list))
    return {key: result.at(*key) for key in keys if key[0] >= first_period}


def actual(project, formula, by_region, **options):
    rows = project.evaluate(formulas=[f"x={formula}"], by=["region"] if by_region else [], **options).to_dicts()
    return {(row["period"], row.get("region")): row["x"] for row in rows}


def assert_same(got, want):
    assert set(got) == set(want), (sorted(set(got) ^ set(want)))[:5]
    for key, value in want.items():
        if value is None:
            assert got[key] is None, key
        else:
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key


def monthly(data, start, end, by_region, what="count"):
    registrations, _ = data
    periods = months(FIRST_DAY, end)
    value = (lambda row: 1.0) if what == "count" else (lambda row: row["fee"])
    return Series(registrations, "registered_at", value, periods, month_of, by_region, start, end)


# -- the cases --------------------------------------------------------------------------------

@pytest.mark.parametrize("by_region", [False, True])
@pytest.mark.parametrize("start", [dt.date(2024, 1, 1), dt.date(2024, 3, 17)])
def test_previous_of_a_running_total(project, data, by_region, start):
    """The running total one month back, carried through the west's empty months and June."""
    end = dt.date(2024, 10, 1)
    counts = monthly(data, start, end, by_region)
    want = expected_rows([counts], previous(cumulative(counts), 1), month_of(start))
    got = actual(project, "previous(cumulative(count(registrations)))", by_region, grain="month",
                 start=start, end=end)
    assert_same(got, want)
    # Asked alone or beside its inner KPI, the same numbers.
    both = project.evaluate(formulas=["x=previous(cumulative(count(registrations)))", "c=cumulative(count(registrations))"],
                            by=["region"] if by_region else [], grain="month", start=start, end=end).to_dicts()
    assert {(r["period"], r.get("region")): r["x"] for r in both} == got


@pytest.mark.parametrize("by_region", [False, True])
def test_rolling_of_a_running_total_and_previous_of_previous(project, data, by_region):
    start, end = dt.date(2024, 2, 1), dt.date(2024, 12, 1)
    counts = monthly(data, start, end, by_region)
    want = expected_rows([counts], rolling(cumulative(counts), 3), month_of(start))
    assert_same(actual(project, "rolling(cumulative(count(registrations)), 3)", by_region, grain="month",
                       start=start, end=end), want)
    # previous(previous(x, 2), 3) is previous(x, 5)
    want = expected_rows([counts], previous(counts, 5), month_of(start))
    assert_same(actual(project, "previous(previous(count(registrations), 2), 3)", by_region, grain="month",
                       start=start, end=end), want)


@pytest.mark.parametrize("by_region", [False, True])
def test_growth_of_a_rolling_average(project, data, by_region):
    """average_fee_3m = rolling sum of fees / rolling count (a ratio of sums, never an average of
    averages); its growth compares it with the month before, itself a 3-month window."""
    start, end = dt.date(2024, 4, 1), dt.date(2025, 1, 1)
    fees, counts = monthly(data, start, end, by_region, "fee"), monthly(data, start, end, by_region)
    average = ratio(rolling(fees, 3), rolling(counts, 3))
    before = ratio(previous(rolling(fees, 3), 1), previous(rolling(counts, 3), 1))
    growth = average.map(lambda p, g: 100 * (average.at(p, g) - before.at(p, g)) / before.at(p, g)
                         if before.at(p, g) and average.at(p, g) is not None else None)
    want = expected_rows([fees], growth, month_of(start))
    rows = project.evaluate(["average_fee_3m_growth"], by=["region"] if by_region else [], grain="month",
                            start=start, end=end).to_dicts()
    assert_same({(r["period"], r.get("region")): r["average_fee_3m_growth"] for r in rows}, want)


def test_running_total_of_a_ratio_of_windows(project, data):
    """cumulative(a / b) is cumulative(a) / cumulative(b), for windows as for aggregates: the
    running total of 3-month fees over the running total of 3-month weekday costs."""
    start, end = dt.date(2024, 1, 1), dt.date(2024, 12, 1)
    fees = monthly(data, start, end, True, "fee")
    _, costs_rows = data
    costs = Series(costs_rows, "day", lambda row: row["cost"], fees.periods, month_of, True, start, end)
    want = expected_rows([fees, costs], ratio(cumulative(rolling(fees, 3)), cumulative(rolling(costs, 3))),
                         month_of(start))
    got = actual(project, "cumulative(rolling(sum(registrations.fee), 3) / rolling(sum(costs.cost), 3))", True,
                 grain="month", start=start, end=end)
    assert_same(got, want)


@pytest.mark.parametrize("grain", ["month", "day"])
def test_year_to_date_against_the_same_point_last_year(project, data, grain):
    """fees_to_date_last_year: the running total of the year, at the same point a year before
    (at day grain the same day; 29 February 2024 reads 28 February 2023)."""
    registrations, _ = data
    start, end = dt.date(2024, 2, 20), dt.date(2024, 7, 10)
    if grain == "month":
        periods, period_of = months(FIRST_DAY, end), month_of
    else:
        periods, period_of = days(FIRST_DAY, end), (lambda day: day)
    fees = Series(registrations, "registered_at", lambda row: row["fee"], periods, period_of, False, start, end)
    to_date = cumulative(fees, restart=lambda p: p.year)

    def year_before(p, g):
        day = p.replace(year=p.year - 1) if not (p.month == 2 and p.day == 29) else dt.date(p.year - 1, 2, 28)
        return to_date.at(period_of(day), g)

    first = period_of(start)
    want = expected_rows([fees], to_date.map(year_before), first)
    rows = project.evaluate(["fees_to_date_last_year", "fees_to_date"], grain=grain, start=start, end=end).to_dicts()
    assert_same({(r["period"], None): r["fees_to_date_last_year"] for r in rows}, want)
    assert_same({(r["period"], None): r["fees_to_date"] for r in rows}, expected_rows([fees], to_date, first))
    if grain == "day":
        leap = next(r for r in rows if r["period"] == dt.date(2024, 2, 29))
        assert leap["fees_to_date_last_year"] == pytest.approx(to_date.at(dt.date(2023, 2, 28), None))


def test_share_of_a_running_total(project, data):
    """share(cumulative(x)): a region's share of all registrations so far."""
    start, end = dt.date(2024, 5, 1), dt.date(2024, 9, 1)
    counts = monthly(data, start, end, True)
    running = cumulative(counts)
    total = {p: sum(running.at(p, g) for g in REGIONS) for p in counts.periods}
    share = running.map(lambda p, g: 100 * running.at(p, g) / total[p] if total[p] else None)
    assert_same(actual(project, "100 * share(cumulative(count(registrations)))", True, grain="month",
                       start=start, end=end), expected_rows([counts], share, month_of(start)))


def test_without_a_range_the_warehouse_gives_the_first_and_last_day(project, data):
    """No --from/--to: the series runs from the data's first month to its last, asked of the
    warehouse in one small query."""
    counts = monthly(data, None, dt.date(2025, 5, 1), False)
    want = expected_rows([counts], previous(cumulative(counts), 2), month_of(FIRST_DAY))
    assert_same(actual(project, "previous(cumulative(count(registrations)), 2)", False, grain="month"), want)


def test_compile_without_a_warehouse_says_what_it_needs(project):
    """Without a range, compiling alone cannot know the data's extent: one clear error."""
    from kpi_engine.compiler import compile_request
    from kpi_engine.engine import make_request

    request = make_request(formulas=["x=previous(cumulative(count(registrations)))"], grain="month")
    with pytest.raises(KpiEngineError) as error:
        compile_request(project.model(), request, "duckdb")
    assert "time function over another time function" in error.value.message
    assert "--from and --to" in error.value.hint


def test_the_dense_series_has_a_limit(project):
    with pytest.raises(KpiEngineError) as error:
        project.compile(formulas=["x=previous(rolling(count(registrations), 7))"], grain="day",
                        start="1900-01-01", end="2200-01-01")
    assert "time function over another time function would list" in error.value.message


# -- rolling windows in days at a coarser grain (issue 15, item 4) -----------------------------

def next_period(period: dt.date, grain: str) -> dt.date:
    if grain == "week":
        return period + dt.timedelta(days=7)
    step = {"month": 1, "quarter": 3}[grain]
    index = period.year * 12 + period.month - 1 + step
    return dt.date(index // 12, index % 12 + 1, 1)


def period_of(day: dt.date, grain: str) -> dt.date:
    if grain == "day":
        return day
    if grain == "week":
        return day - dt.timedelta(days=day.weekday())
    if grain == "quarter":
        return dt.date(day.year, (day.month - 1) // 3 * 3 + 1, 1)
    return day.replace(day=1)


def day_window(data, grain, days, start, end, by_region, value, pick=sum, region=None):
    """{(period, region): the rows' values over the ``days`` days ending on the period's last day
    (the day before ``end`` for the period it cuts)}, over the keys with rows in [start, end)."""
    registrations, _ = data
    rows = [r for r in registrations if r["registered_at"].date() < end and (region is None or r["region"] == region)]
    keys = {(period_of(r["registered_at"].date(), grain), r["region"] if by_region else None)
            for r in rows if r["registered_at"].date() >= start}
    result = {}
    for period, group in keys:
        last = min(next_period(period, grain), end) - dt.timedelta(days=1)
        inside = [value(r) for r in rows if last - dt.timedelta(days=days - 1) <= r["registered_at"].date() <= last
                  and (group is None or r["region"] == group)]
        result[(period, group)] = pick(inside) if inside else (0 if pick is sum else None)
    return result


@pytest.mark.parametrize("grain,days", [("month", 30), ("quarter", 45), ("week", 10), ("month", 90)])
@pytest.mark.parametrize("by_region", [False, True])
def test_rolling_days_at_a_coarser_grain_ends_on_each_periods_last_day(project, data, grain, days, by_region):
    start, end = dt.date(2024, 1, 10), dt.date(2024, 11, 20)
    want = day_window(data, grain, days, start, end, by_region, lambda r: 1)
    got = actual(project, f"rolling(count(registrations), '{days} days')", by_region, grain=grain, start=start, end=end)
    assert_same(got, want)


def test_rolling_days_of_averages_minimums_and_with_a_filter(project, data):
    start, end = dt.date(2024, 3, 1), dt.date(2024, 9, 1)
    fees = day_window(data, "month", 30, start, end, True, lambda r: r["fee"])
    counts = day_window(data, "month", 30, start, end, True, lambda r: 1)
    want = {key: fees[key] / counts[key] if counts[key] else None for key in fees}
    assert_same(actual(project, "rolling(avg(registrations.fee), '30 days')", True, grain="month", start=start, end=end),
                want)
    want = day_window(data, "month", 30, start, end, True, lambda r: r["fee"], pick=min)
    assert_same(actual(project, "rolling(min(registrations.fee), '30 days')", True, grain="month", start=start, end=end),
                want)
    want = day_window(data, "month", 30, start, end, False, lambda r: 1, region="north")
    assert_same(actual(project, "rolling(count(registrations), '30 days')", False, grain="month", start=start, end=end,
                       where="region = 'north'"), want)


def test_previous_of_a_rolling_window_in_days_and_no_range(project, data):
    """Last month's trailing 30 days, and the trailing 30 days without --from/--to (the data's
    first day comes from the warehouse; the last month's window is not cut by the data's end)."""
    start, end = dt.date(2024, 4, 1), dt.date(2024, 10, 1)
    shown = day_window(data, "month", 30, start, end, False, lambda r: 1)
    # The month before p, read as if p were --to: the window ending on that month's last day.
    want = {(p, g): day_window(data, "month", 30, dt.date(p.year, p.month - 1, 1), p, False, lambda r: 1).get(
        (dt.date(p.year, p.month - 1, 1), g), 0) for (p, g) in shown}
    assert_same(actual(project, "previous(rolling(count(registrations), '30 days'))", False, grain="month",
                       start=start, end=end), want)
    # Without --to nothing cuts the last month: its window ends on April 30 (three days of April
    # after the data's last day, the 27th), whatever the last day of other sources asked with it.
    everything = day_window(data, "month", 30, FIRST_DAY, dt.date(2025, 5, 1), True, lambda r: 1)
    assert LAST_DAY == dt.date(2025, 4, 27)
    assert_same(actual(project, "rolling(count(registrations), '30 days')", True, grain="month"), everything)


def test_rolling_days_over_another_time_function_is_refused(project):
    with pytest.raises(KpiEngineError) as error:
        project.compile(formulas=["x=rolling(cumulative(count(registrations)), '30 days')"], grain="month",
                        start="2024-01-01", end="2024-06-01")
    assert "cannot be taken over another time function" in error.value.message


def months_back(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 - months
    year, month = index // 12, index % 12 + 1
    following = dt.date(year + month // 12, month % 12 + 1, 1)
    return dt.date(year, month, min(day.day, (following - dt.timedelta(days=1)).day))


@pytest.mark.parametrize("grain", ["day", "week"])
def test_rolling_months_at_a_day_or_week_grain(project, data, grain):
    """rolling(x, '3 months') on a day: from the day after the same day three months back (the
    shorter month's last day) to that day; on a week: up to the week's last day."""
    registrations, _ = data
    start, end = dt.date(2024, 5, 27), dt.date(2024, 6, 12)  # the end of May, and June's first empty days
    shown = {period_of(r["registered_at"].date(), grain) for r in registrations
             if start <= r["registered_at"].date() < end}
    want = {}
    for period in shown:
        last = min(period + dt.timedelta(days=1 if grain == "day" else 7), end) - dt.timedelta(days=1)
        first = months_back(last, 3) + dt.timedelta(days=1)
        want[(period, None)] = sum(r["fee"] for r in registrations if first <= r["registered_at"].date() <= last)
    got = actual(project, "rolling(sum(registrations.fee), '3 months')", False, grain=grain, start=start, end=end)
    assert_same(got, want)
    assert months_back(dt.date(2024, 5, 31), 3) == dt.date(2024, 2, 29)  # the window of May 31 starts March 1


# -- other warehouses equal DuckDB ----------------------------------------------------------------

@pytest.fixture(scope="module")
def on_postgres(request, folder):
    url = postgres_warehouse(request.getfixturevalue("pg_server"), "kpi_nested_time", TABLES, folder / "data")
    with open_project(folder, warehouse=url) as opened:
        yield opened


@pytest.fixture(scope="module")
def on_sqlite(folder, tmp_path_factory):
    url = sqlite_warehouse(tmp_path_factory.mktemp("sqlite"), "webinars", TABLES, folder / "data")
    with open_project(folder, warehouse=url) as opened:
        yield opened


@pytest.mark.parametrize("warehouse", ["on_postgres", "on_sqlite"])
@pytest.mark.parametrize("grain", ["month", "day"])
def test_other_warehouses_equal_duckdb(request, project, warehouse, grain):
    other = request.getfixturevalue(warehouse)
    formulas = ["a=previous(cumulative(count(registrations)))", "b=rolling(sum(registrations.fee), '30 days')",
                "c=cumulative(rolling(sum(registrations.fee), 3) / rolling(sum(costs.cost), 3))",
                "d=rolling(count(registrations), '2 months')"]
    options = dict(formulas=formulas, by=["region"], grain=grain, start="2024-02-20",
                   end="2024-04-10" if grain == "day" else "2024-09-01")
    want = {(r["period"], r["region"]): r for r in project.evaluate(**options).to_dicts()}
    got = {(r["period"], r["region"]): r for r in other.evaluate(**options).to_dicts()}
    assert got.keys() == want.keys()
    for key, row in want.items():
        for name in "abcd":
            if row[name] is None:
                assert got[key][name] is None, (key, name)
            else:
                assert got[key][name] == pytest.approx(row[name], rel=1e-9, abs=1e-9), (key, name)


@pytest.mark.parametrize("by_region", [False, True])
def test_previous_of_a_running_total_under_fill_reads_the_days_before_from(project, data, by_region):
    """--fill lists the periods of the range; a time function over a time function still needs
    every period before --from too (yesterday's running total on a day after a day with no rows)."""
    registrations, _ = data
    days = {r["registered_at"].date() for r in registrations}
    day = next(d for d in sorted(days) if d - dt.timedelta(days=1) not in days and d > FIRST_DAY)
    start, end = day, day + dt.timedelta(days=3)
    regions = sorted({r["region"] for r in registrations if start <= r["registered_at"].date() < end}) \
        if by_region else [None]
    # yesterday's running total: every registration before the day
    want = {(p, g): sum(1 for r in registrations if r["registered_at"].date() < p and (g is None or r["region"] == g))
            for p in (start + dt.timedelta(days=k) for k in range(3)) for g in regions}
    got = actual(project, "previous(cumulative(count(registrations)))", by_region, grain="day", start=start,
                 end=end, fill=True)
    assert_same(got, want)
    assert all(value > 0 for value in want.values())  # the running total before a day without rows


def test_a_range_that_ends_before_the_data_has_no_rows_and_no_error(project):
    """The dense series of a time function over a time function has no period to list when --to
    comes before the first day of data (it used to render an empty VALUES list)."""
    before = FIRST_DAY - dt.timedelta(days=40)
    for grain in ("week", "month"):
        assert actual(project, "previous(cumulative(count(registrations)))", True, grain=grain, end=before) == {}


def test_fill_lists_only_the_dimension_values_seen_in_the_range_for_windows_in_days(project, data):
    """The days a window in days reads before --from must not add dimension values to the rows
    --fill lists (as for every other time function): a region with rows only before the range
    gets no row."""
    registrations, _ = data
    by_day: dict[dt.date, set] = {}
    for r in registrations:
        by_day.setdefault(r["registered_at"].date(), set()).add(r["region"])
    regions = set().union(*by_day.values())
    day = next(d for d in sorted(by_day) if d > FIRST_DAY + dt.timedelta(days=40) and by_day[d] != regions)
    for formula, grain in (("rolling(count_distinct(registrations.fee), '30 days')", "day"),
                           ("rolling(count(registrations), '30 days')", "week")):
        start = day - dt.timedelta(days=day.weekday()) if grain == "week" else day
        seen = set().union(*(by_day.get(start + dt.timedelta(days=k), set()) for k in range((day - start).days + 1)))
        got = actual(project, formula, True, grain=grain, start=start, end=day + dt.timedelta(days=1), fill=True)
        assert {region for _, region in got} == seen, formula
