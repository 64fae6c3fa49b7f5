"""Custom calendars (issue 15, item 2): named granularities of kpi_engine.yaml as --grain NAME.

A retail 4-5-4 calendar, weeks starting on Thursday, fiscal months starting on the 26th and a
calendar table are checked against plain-Python references over seeded random events spanning
three retail years, one of them (retail 2023) 53 weeks long: counts and sums per period and per
period and channel, previous/rolling/cumulative (with --from inside the range, so the first
period reads earlier ones), --fill, the table giving the generated calendar's numbers, clear
errors, PostgreSQL equal to DuckDB, and the SQL parsing back in several dialects.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict

import pytest
import sqlglot
from click.testing import CliRunner

from conftest import write_project
from kpi_engine.cli import cli
from kpi_engine.custom_calendars import Granularity
from kpi_engine.engine import open_project, check_project
from kpi_engine.errors import KpiEngineError, QueryError

pytest_plugins = ["pg"]

SPEC = """
sources:
  events:
    table: events
    time: day
    dimensions: [channel]
kpis:
  orders:
    formula: count(events)
  revenue:
    formula: sum(events.amount)
"""
GRANULARITIES = """granularities:
  retail_week: {retail: 4-5-4, length: week}
  retail_month: {retail: 4-5-4, length: month}
  retail_quarter: {retail: 4-5-4, length: quarter}
  retail_year: {retail: 4-5-4, length: year}
  retail_month_445: {retail: {pattern: 4-4-5}, length: month}
  marketing_week: {week_start: thursday}
  fiscal_month: {fiscal_start: '01-26', length: month}
  fiscal_year_july: {fiscal_start: '07-01', length: year}
"""
TABLE_GRANULARITY = "  retail_month_table: {table: dim_calendar, date: date_day, start: retail_month_start}\n"
FIRST, LAST = dt.date(2022, 1, 30), dt.date(2025, 2, 1)  # retail 2022 to retail 2024, inclusive


# --- plain-Python reference: the NRF rule, written independently of the engine ---------------------

def retail_year_start(year: int) -> dt.date:
    """Retail year ``year`` starts the Sunday after the Saturday nearest January 31 of ``year``:
    that Saturday is one of January 28 ... February 3."""
    saturday = next(day for day in (dt.date(year, 1, 28) + dt.timedelta(days=k) for k in range(7))
                    if day.strftime("%A") == "Saturday")
    return saturday + dt.timedelta(days=1)


def retail_month_starts(year: int, pattern=(4, 5, 4)) -> list[dt.date]:
    weeks = (retail_year_start(year + 1) - retail_year_start(year)).days // 7
    lengths = list(pattern) * 4
    lengths[-1] += weeks - 52  # the 53rd week goes to the last month
    starts, day = [], retail_year_start(year)
    for length in lengths:
        starts.append(day)
        day += dt.timedelta(weeks=length)
    return starts


def period_of(day: dt.date, starts: list[dt.date]) -> dt.date:
    return max(start for start in starts if start <= day)


def all_retail_months(pattern=(4, 5, 4)) -> list[dt.date]:
    return [start for year in range(2019, 2028) for start in retail_month_starts(year, pattern)]


def test_the_reference_matches_published_retail_years():
    # NRF: retail 2023 ran from Sunday 2023-01-29 to Saturday 2024-02-03, 53 weeks; 2024 began 2024-02-04.
    assert retail_year_start(2023) == dt.date(2023, 1, 29)
    assert retail_year_start(2024) == dt.date(2024, 2, 4)
    assert (retail_year_start(2024) - retail_year_start(2023)).days == 53 * 7
    assert (retail_year_start(2023) - retail_year_start(2022)).days == 52 * 7
    assert (retail_year_start(2018) - retail_year_start(2017)).days == 53 * 7  # NRF: FY'17 had 53 weeks too
    # Retail 2023's months: 4-5-4 weeks, and January (the last) five weeks instead of four.
    starts = retail_month_starts(2023)
    assert starts[:4] == [dt.date(2023, 1, 29), dt.date(2023, 2, 26), dt.date(2023, 4, 2), dt.date(2023, 4, 30)]
    assert starts[-1] == dt.date(2023, 12, 31) and (retail_year_start(2024) - starts[-1]).days == 35


def test_the_generated_calendar_follows_the_reference():
    engine = Granularity("m", "retail", "month")
    for year in range(1995, 2040):
        assert engine.retail_year_start(year) == retail_year_start(year), year
        assert engine.retail_starts(year) == retail_month_starts(year), year
    pattern = Granularity("m", "retail", "month", pattern=(4, 4, 5))
    assert pattern.retail_starts(2023) == retail_month_starts(2023, (4, 4, 5))


# --- data --------------------------------------------------------------------------------------------

def make_events(seed: int = 15) -> list[dict]:
    generator = random.Random(seed)
    rows = []
    for i in range(1500):
        day = FIRST + dt.timedelta(days=generator.randrange((LAST - FIRST).days + 1))
        channel = generator.choice(["ppc", "email", "social"])
        if channel == "social" and day.month in (3, 4, 9):  # periods where a channel has no rows (--fill)
            continue
        rows.append({"id": i, "day": day.isoformat(), "channel": channel, "amount": generator.randrange(1, 500)})
    return rows


EVENTS = make_events()


def calendar_table(first: dt.date, last: dt.date) -> list[dict]:
    starts = all_retail_months()
    return [{"date_day": (first + dt.timedelta(days=k)).isoformat(),
             "retail_month_start": period_of(first + dt.timedelta(days=k), starts).isoformat()}
            for k in range((last - first).days + 1)]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    tables = {"events": EVENTS, "dim_calendar": calendar_table(dt.date(2021, 1, 31), dt.date(2025, 12, 31))}
    config = "name: calendars\nwarehouse: {adapter: duckdb, data: data}\n" + GRANULARITIES + TABLE_GRANULARITY
    return write_project(tmp_path_factory.mktemp("calendars") / "project", {"spec.yaml": SPEC}, tables, config)


@pytest.fixture(scope="module")
def project(root):
    with open_project(root) as opened:
        yield opened


def totals(grain_of, by_channel: bool = False) -> tuple[dict, dict]:
    counts, sums = defaultdict(int), defaultdict(int)
    for row in EVENTS:
        key = grain_of(dt.date.fromisoformat(row["day"]))
        key = (key, row["channel"]) if by_channel else key
        counts[key] += 1
        sums[key] += row["amount"]
    return dict(counts), dict(sums)


def evaluate(project, grain: str, **options) -> dict:
    by = options.pop("by", [])
    result = project.evaluate(options.pop("kpis", ["orders", "revenue"]), grain=grain, by=by, **options)
    rows = {}
    for row in result.to_dicts():
        key = (row["period"], *[row[d] for d in by]) if by else row["period"]
        rows[key] = {k: v for k, v in row.items() if k not in ("period", "complete", *by)}
    return rows


RETAIL_MONTHS = all_retail_months()


def retail_month(day: dt.date) -> dt.date:
    return period_of(day, RETAIL_MONTHS)


# --- counts and sums -----------------------------------------------------------------------------------

@pytest.mark.parametrize("grain, period", [
    ("retail_month", retail_month),
    ("retail_month_445", lambda day: period_of(day, all_retail_months((4, 4, 5)))),
    ("retail_quarter", lambda day: period_of(day, [s for y in range(2019, 2028) for s in retail_month_starts(y)[::3]])),
    ("retail_year", lambda day: period_of(day, [retail_year_start(y) for y in range(2019, 2028)])),
    ("retail_week", lambda day: period_of(day, [retail_year_start(2019) + dt.timedelta(weeks=w) for w in range(500)])),
    ("marketing_week", lambda day: day - dt.timedelta(days=(day.weekday() - 3) % 7)),
    ("fiscal_month", lambda day: dt.date(day.year, day.month, 26) if day.day >= 26
     else (dt.date(day.year, day.month, 1) - dt.timedelta(days=1)).replace(day=26)),
    ("fiscal_year_july", lambda day: dt.date(day.year if day.month >= 7 else day.year - 1, 7, 1)),
    ("retail_month_table", retail_month),
])
def test_counts_and_sums_per_period(project, grain, period):
    counts, sums = totals(period)
    rows = evaluate(project, grain)
    assert rows == {key: {"orders": counts[key], "revenue": sums[key]} for key in counts}


def test_the_53_week_year_has_53_retail_weeks_and_a_five_week_january(project):
    weeks = evaluate(project, "retail_week", start=dt.date(2023, 1, 29), end=dt.date(2024, 2, 4), fill=True)
    assert len(weeks) == 53
    months = evaluate(project, "retail_month", start=dt.date(2023, 12, 31), end=dt.date(2024, 2, 4))
    counts, _ = totals(lambda day: day)
    assert list(months) == [dt.date(2023, 12, 31)]
    assert months[dt.date(2023, 12, 31)]["orders"] == sum(counts.get(dt.date(2023, 12, 31) + dt.timedelta(days=k), 0)
                                                          for k in range(35))


def test_counts_and_sums_per_retail_month_and_channel(project):
    counts, sums = totals(retail_month, by_channel=True)
    rows = evaluate(project, "retail_month", by=["channel"])
    assert rows == {key: {"orders": counts[key], "revenue": sums[key]} for key in counts}


# --- time functions ---------------------------------------------------------------------------------

def shifted(values: dict, starts: list[dt.date], back: int) -> dict:
    return {p: values.get(starts[starts.index(p) - back], 0) for p in starts}


@pytest.mark.parametrize("grain", ["retail_month", "retail_month_table"])
def test_previous_rolling_cumulative_by_retail_month(project, grain):
    # --from in the middle of a retail month of retail 2023 (the 53-week year): its first period
    # reads the months before --from; rolling(3) at retail 2024's first month spans the 5-week January.
    start, end = dt.date(2023, 2, 10), dt.date(2024, 6, 1)
    # windows read whole earlier periods, and none reads past --to
    counts, sums = totals(lambda day: retail_month(day) if day < end else None)
    shown = [p for p in RETAIL_MONTHS if retail_month(start) <= p < end]
    a_year = "'1 year'" if grain == "retail_month" else "12"  # a table's years need not have 12 months
    formulas = ["previous(count(events))", "previous(sum(events.amount), 3)", "rolling(sum(events.amount), 3)",
                "cumulative(count(events))", f"previous(count(events), {a_year})",
                "sum(events.amount) / previous(sum(events.amount)) - 1", "count(events)"]
    result = project.evaluate([], formulas=formulas, grain=grain, start=start, end=end)
    rows = {row["period"]: row for row in result.to_dicts()}
    assert list(rows) == shown
    for p in shown:
        i = RETAIL_MONTHS.index(p)
        # the first period counts from --from alone; windows over earlier periods read whole ones
        own = sum(1 for r in EVENTS if retail_month(dt.date.fromisoformat(r["day"])) == p
                  and start <= dt.date.fromisoformat(r["day"]) < end)
        assert rows[p]["formula"] == counts.get(RETAIL_MONTHS[i - 1], 0), p
        assert rows[p]["formula_2"] == sums.get(RETAIL_MONTHS[i - 3], 0), p
        assert rows[p]["formula_3"] == sum(sums.get(RETAIL_MONTHS[i - k], 0) for k in range(3)), p
        assert rows[p]["formula_4"] == sum(v for q, v in counts.items() if q is not None and q <= p), p
        assert rows[p]["formula_5"] == counts.get(RETAIL_MONTHS[i - 12], 0), p  # the same retail month a year back
        before = sums.get(RETAIL_MONTHS[i - 1], 0)
        assert rows[p]["formula_6"] == pytest.approx(
            (sum(r["amount"] for r in EVENTS if retail_month(dt.date.fromisoformat(r["day"])) == p
                 and start <= dt.date.fromisoformat(r["day"]) < end) / before - 1) if before else None), p
        assert rows[p]["formula_7"] == own, p


def test_growth_and_share_by_retail_month_and_channel(project):
    counts, sums = totals(retail_month, by_channel=True)
    start, end = dt.date(2024, 2, 4), dt.date(2024, 9, 1)
    result = project.evaluate([], formulas=["share(count(events))", "sum(events.amount) - previous(sum(events.amount))"],
                              grain="retail_month", by=["channel"], start=start, end=end)
    months = [p for p in RETAIL_MONTHS if start <= p < end]
    totals_per_month = {p: sum(v for (q, _), v in counts.items() if q == p) for p in months}
    for row in result.to_dicts():
        p, channel = row["period"], row["channel"]
        before = RETAIL_MONTHS[RETAIL_MONTHS.index(p) - 1]
        assert row["formula"] == pytest.approx(counts.get((p, channel), 0) / totals_per_month[p])
        assert row["formula_2"] == sums.get((p, channel), 0) - sums.get((before, channel), 0)


@pytest.mark.parametrize("grain", ["retail_month", "retail_week", "day"])
def test_cumulative_restarts_each_retail_year(project, grain):
    start, end = dt.date(2023, 6, 1), dt.date(2024, 9, 1)
    years = [retail_year_start(y) for y in range(2019, 2028)]
    result = project.evaluate([], formulas=["cumulative(sum(events.amount), 'retail_year')"], grain=grain,
                              start=start, end=end)
    rows = result.to_dicts()
    assert len(rows) > 10
    for row in rows:
        period = row["period"]
        year = period_of(period, years)
        last = (project.project.config.calendar.shift(period, grain, 1) if grain != "day"
                else period + dt.timedelta(days=1))
        expected = sum(r["amount"] for r in EVENTS if year <= dt.date.fromisoformat(r["day"]) < min(last, end))
        assert row["formula"] == expected, period


def test_restarts_that_cut_periods_are_refused(project):
    with pytest.raises(QueryError, match="the year starting 2022-01-01 starts inside a retail_month period"):
        project.evaluate([], formulas=["cumulative(count(events), 'year')"], grain="retail_month",
                         start=dt.date(2022, 6, 1), end=dt.date(2023, 6, 1))
    with pytest.raises(QueryError, match="starts inside a week period"):  # retail years start on Sundays
        project.evaluate([], formulas=["cumulative(count(events), 'retail_year')"], grain="week",
                         start=dt.date(2023, 6, 1), end=dt.date(2024, 6, 1))
    with pytest.raises(QueryError, match="starts inside a retail_quarter period"):
        project.evaluate([], formulas=["cumulative(count(events), 'retail_month')"], grain="retail_quarter",
                         start=dt.date(2023, 6, 1), end=dt.date(2024, 6, 1))
    with pytest.raises(QueryError, match="at_start"):
        project.evaluate([], formulas=["at_start(count(events), 'month')"], grain="retail_month",
                         start=dt.date(2024, 2, 4), end=dt.date(2024, 6, 1))
    with pytest.raises(QueryError, match="not a whole number of marketing_week periods"):
        project.evaluate([], formulas=["previous(count(events), '1 month')"], grain="marketing_week",
                         start=dt.date(2024, 2, 4), end=dt.date(2024, 6, 1))


# --- --fill ----------------------------------------------------------------------------------------------

def test_fill_lists_every_retail_month_for_every_channel(project):
    start, end = dt.date(2023, 1, 29), dt.date(2024, 2, 4)
    counts, _ = totals(retail_month, by_channel=True)
    rows = evaluate(project, "retail_month", by=["channel"], start=start, end=end, fill=True, kpis=["orders"])
    months = [p for p in RETAIL_MONTHS if start <= p < end]
    assert len(months) == 12
    expected = {(p, c): {"orders": counts.get((p, c), 0)} for p in months for c in ("email", "ppc", "social")}
    assert rows == expected
    assert any(value["orders"] == 0 for value in rows.values())  # the months without social rows are listed


# --- errors ---------------------------------------------------------------------------------------------

def test_a_misspelt_grain_names_the_available_ones(root, project):
    result = CliRunner().invoke(cli, ["evaluate", str(root), "orders", "--grain", "retail_mnth"])
    assert result.exit_code == 2
    assert "'retail_mnth' is not one of" in result.output and "Did you mean 'retail_month'?" in result.output
    assert "'marketing_week'" in result.output
    with pytest.raises(QueryError, match="unknown time grain 'retail_mnth'") as error:
        project.evaluate(["orders"], grain="retail_mnth")
    assert "retail_month_table" in error.value.hint and "Did you mean 'retail_month'?" in error.value.hint


def test_list_and_a_saved_query_use_a_custom_grain(tmp_path):
    spec = SPEC + "queries:\n  retail_revenue:\n    kpis: [revenue]\n    grain: retail_month\n"
    root = write_project(tmp_path / "p", {"spec.yaml": spec}, {"events": EVENTS},
                         "name: c\nwarehouse: {adapter: duckdb, data: data}\n" + GRANULARITIES)
    result = CliRunner().invoke(cli, ["evaluate", str(root), "--query", "retail_revenue", "--format", "csv"])
    assert result.exit_code == 0, result.output
    _, sums = totals(retail_month)
    lines = result.output.strip().splitlines()[1:]
    assert {line.split(",")[0]: float(line.split(",")[1]) for line in lines} == \
        {p.isoformat(): float(v) for p, v in sums.items()}
    bad = write_project(tmp_path / "bad", {"spec.yaml": spec.replace("grain: retail_month", "grain: retail_mont")},
                        {"events": EVENTS}, "name: c\nwarehouse: {adapter: duckdb, data: data}\n" + GRANULARITIES)
    _, errors = check_project(bad)
    assert any("unknown time grain 'retail_mont'" in e.message and "Did you mean 'retail_month'?" in e.hint
               for e in errors)


@pytest.mark.parametrize("granularities, message", [
    ("  month: {retail: 4-5-4, length: month}\n", "granularity 'month' has the name of a built-in grain"),
    ("  rm: {retail: 4-5-4}\n", "say how long a period is"),
    ("  rm: {retail: 4-5-4, week_start: sunday, length: month}\n", "exactly one of"),
    ("  rm: {fiscal_start: '02-30', length: month}\n", "fiscal_start"),
    ("  rm: {table: dim_calendar, date: date_day}\n", "needs 'start'"),
])
def test_declaration_mistakes_are_one_clear_error(tmp_path, granularities, message):
    root = write_project(tmp_path / "p", {"spec.yaml": SPEC}, {"events": EVENTS},
                         "name: c\nwarehouse: {adapter: duckdb, data: data}\ngranularities:\n" + granularities)
    _, errors = check_project(root)
    assert any(message in error.message for error in errors), [e.message for e in errors]
    assert all("kpi_engine.yaml" in str(error.location) for error in errors if message in error.message)


def table_project(tmp_path, rows):
    return write_project(tmp_path / "p", {"spec.yaml": SPEC}, {"events": EVENTS, "dim_calendar": rows},
                         "name: c\nwarehouse: {adapter: duckdb, data: data}\ngranularities:\n" + TABLE_GRANULARITY)


def test_a_calendar_table_too_short_for_the_data_is_refused(tmp_path):
    root = table_project(tmp_path, calendar_table(dt.date(2023, 1, 29), dt.date(2024, 2, 3)))
    with open_project(root) as opened:
        days = sorted(row["day"] for row in EVENTS)
        with pytest.raises(QueryError, match=f"has days from 2023-01-29 to 2024-02-03, but this request reads days "
                                             f"from {days[0]} to {days[-1]}") as error:
            opened.evaluate(["orders"], grain="retail_month_table")
        assert "Add the missing days" in error.value.hint
        # inside the table, the numbers are those of the generated calendar
        counts, _ = totals(retail_month)
        rows = evaluate(opened, "retail_month_table", start=dt.date(2023, 1, 29), end=dt.date(2024, 2, 4),
                        kpis=["orders"])
        assert rows == {p: {"orders": counts[p]} for p in counts if dt.date(2023, 1, 29) <= p < dt.date(2024, 2, 4)}
        # previous() at the table's first month would read a month the table does not have
        with pytest.raises(QueryError, match="has days from 2023-01-29"):
            opened.evaluate([], formulas=["previous(count(events))"], grain="retail_month_table",
                            start=dt.date(2023, 1, 29), end=dt.date(2023, 6, 1))


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows[:40] + rows[41:], "has no row for 2021-03-12"),
    (lambda rows: rows + rows[10:11], "two rows for 2021-02-10"),
    (lambda rows: [dict(r, retail_month_start="2021-03-01") if r["date_day"] == "2021-03-10" else r for r in rows],
     "on 2021-03-10 the period changes to one starting 2021-03-01"),
])
def test_a_broken_calendar_table_is_one_clear_error(tmp_path, change, message):
    root = table_project(tmp_path, change(calendar_table(dt.date(2021, 1, 31), dt.date(2025, 12, 31))))
    with open_project(root) as opened:
        with pytest.raises(KpiEngineError, match=message) as error:
            opened.evaluate(["orders"], grain="retail_month_table")
        assert "retail_month_table" in str(error.value.location)
    _, errors = check_project(root)  # validate reads the table too, and points at its declaration
    assert [e.location.file.endswith("kpi_engine.yaml") for e in errors if message in e.message] == [True]


def test_a_missing_calendar_table_is_named(tmp_path):
    root = write_project(tmp_path / "p", {"spec.yaml": SPEC}, {"events": EVENTS},
                         "name: c\nwarehouse: {adapter: duckdb, data: data}\ngranularities:\n" + TABLE_GRANULARITY)
    with open_project(root) as opened:
        with pytest.raises(QueryError, match="the calendar table 'dim_calendar' of granularity 'retail_month_table' "
                                             "cannot be read") as error:
            opened.evaluate(["orders"], grain="retail_month_table", start=dt.date(2024, 2, 4), end=dt.date(2024, 3, 3))
        assert "create the table" in error.value.hint


# --- SQL ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dialect", ["duckdb", "postgres", "snowflake", "bigquery", "spark", "tsql", "mysql"])
def test_a_custom_grain_compiles_and_parses_back(project, dialect):
    sql = project.compile([], formulas=["rolling(sum(events.amount), 3)"], grain="retail_month", by=["channel"],
                          start=dt.date(2023, 3, 1), end=dt.date(2024, 3, 1), dialect=dialect).sql()
    assert "2023-01-01" in sql  # the first boundary: three months back from --from's month
    sqlglot.parse_one(sql, read=dialect)


def test_postgres_equals_duckdb(pg_server, project, tmp_path):
    with pg_server.connect() as connection:
        connection.execute("DROP TABLE IF EXISTS events")
        connection.execute("CREATE TABLE events (id integer, day date, channel text, amount integer)")
        with connection.cursor() as cursor:
            cursor.executemany("INSERT INTO events VALUES (%s, %s, %s, %s)",
                               [(r["id"], r["day"], r["channel"], r["amount"]) for r in EVENTS])
    root = tmp_path / "pg"
    root.mkdir()
    (root / "kpi_engine.yaml").write_text(f"name: pg\nwarehouse: '{pg_server.url}'\n" + GRANULARITIES)
    (root / "spec.yaml").write_text(SPEC)
    options = dict(formulas=["rolling(count(events), 3)", "cumulative(sum(events.amount))"], grain="retail_month",
                   by=["channel"], start=dt.date(2023, 5, 1), end=dt.date(2024, 5, 1), fill=True)
    with open_project(root) as pg_project:
        on_pg = pg_project.evaluate(["orders"], **options).to_dicts()
    on_duckdb = project.evaluate(["orders"], **options).to_dicts()
    assert on_pg == on_duckdb and len(on_pg) == 12 * 3  # 2023-04-30 to 2024-04-07


def test_the_documented_granularities_load_and_cut_as_described(tmp_path):
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "time.md").read_text()
    section = text.split("## Custom calendars: retail 4-5-4, marketing weeks, fiscal periods", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    root = write_project(tmp_path / "p", {"spec.yaml": SPEC}, {"events": EVENTS},
                         "name: c\nwarehouse: {adapter: duckdb, data: data}\n" + example)
    _, errors = check_project(root, describe=False)
    assert errors == []
    with open_project(root) as opened:
        calendar = opened.project.config.calendar
        # the year ends on the last Saturday of January (2024-01-27), then 4-4-5 weeks
        assert calendar.periods(dt.date(2024, 1, 28), dt.date(2024, 5, 1), "promo_month") == \
            [dt.date(2024, 1, 28), dt.date(2024, 2, 25), dt.date(2024, 3, 24), dt.date(2024, 4, 28)]
        assert calendar.period_start(dt.date(2024, 3, 1), "retail_month") == dt.date(2024, 2, 4)
        assert calendar.period_start(dt.date(2024, 3, 25), "billing_month") == dt.date(2024, 2, 26)
        assert calendar.period_start(dt.date(2024, 6, 30), "fiscal_year_jul") == dt.date(2023, 7, 1)
        assert calendar.period_start(dt.date(2025, 1, 8), "marketing_week") == dt.date(2025, 1, 2)


def test_an_open_range_needs_the_warehouse_and_a_huge_one_is_refused(project):
    from kpi_engine.compiler import Request, compile_request
    from kpi_engine.completeness import Extent
    from kpi_engine.source_sql import ExtentsNeeded

    model = project.model()
    with pytest.raises(ExtentsNeeded, match="--grain retail_week is cut by the boundaries of the days read") as error:
        compile_request(model, Request(kpis=("orders",), grain="retail_week"), "duckdb")
    assert error.value.sources == ("events",) and "Give --from and --to" in error.value.hint
    query = compile_request(model, Request(kpis=("orders",), grain="retail_week"), "duckdb",
                            extents={"events": Extent(dt.date(2024, 2, 4), dt.date(2024, 2, 10))})
    assert "2024-02-04" in query.sql() and "2024-02-11" in query.sql()  # one week: its start and end
    with pytest.raises(QueryError, match="would cut more than 5,000 periods"):
        project.compile(["orders"], grain="marketing_week", start=dt.date(1900, 1, 1), end=dt.date(2024, 1, 1))


def test_timestamps_are_cut_in_the_project_time_zone(tmp_path):
    # 2023-01-29 03:00 UTC is still Saturday 2023-01-28 in New York: the last retail month of 2022.
    rows = [{"id": 1, "at": "2023-01-29 03:00:00"}, {"id": 2, "at": "2023-01-29 06:00:00"},
            {"id": 3, "at": "2023-02-26 04:59:00"}, {"id": 4, "at": "2023-02-26 05:00:00"}]
    spec = "sources:\n  visits:\n    table: visits\n    time: at\n    columns: {at: timestamp}\n" \
           "kpis:\n  visits:\n    formula: count(visits)\n  last_visits:\n    formula: last(visits.id)\n"
    root = write_project(tmp_path / "p", {"spec.yaml": spec}, {"visits": rows},
                         "name: c\nwarehouse: {adapter: duckdb, data: data}\ntimezone: America/New_York\n"
                         + GRANULARITIES)
    with open_project(root) as opened:
        result = opened.evaluate(["visits", "last_visits"], grain="retail_month")
        assert [(r["period"], r["visits"], r["last_visits"]) for r in result.to_dicts()] == [
            (dt.date(2023, 1, 1), 1, 1), (dt.date(2023, 1, 29), 2, 3), (dt.date(2023, 2, 26), 1, 4)]


def test_an_interval_source_is_spread_over_retail_months(tmp_path):
    # Members active at the end of each retail month (last()) and at its start (first()).
    generator = random.Random(7)
    rows = []
    for i in range(300):
        joined = FIRST + dt.timedelta(days=generator.randrange(700))
        left = joined + dt.timedelta(days=generator.randrange(1, 400)) if generator.random() < 0.7 else None
        rows.append({"id": i, "joined_on": joined.isoformat(), "left_on": left.isoformat() if left else ""})
    spec = "sources:\n  members:\n    table: members\n    time: joined_on\n    time_end: left_on\n" \
           "    columns: {joined_on: date, left_on: date}\n" \
           "kpis:\n  active: {formula: last(members)}\n  at_start: {formula: first(members)}\n"
    root = write_project(tmp_path / "p", {"spec.yaml": spec}, {"members": rows},
                         "name: c\nwarehouse: {adapter: duckdb, data: data}\n" + GRANULARITIES)
    start, end = dt.date(2023, 1, 29), dt.date(2024, 2, 4)

    def active(day: dt.date) -> int:
        return sum(1 for r in rows if dt.date.fromisoformat(r["joined_on"]) <= day
                   and (not r["left_on"] or dt.date.fromisoformat(r["left_on"]) > day))

    with open_project(root) as opened:
        result = opened.evaluate(["active", "at_start"], grain="retail_month", start=start, end=end, as_of=end)
    months = [p for p in RETAIL_MONTHS if start <= p < end]
    got = {r["period"]: (r["active"], r["at_start"]) for r in result.to_dicts()}
    assert got == {p: (active(RETAIL_MONTHS[RETAIL_MONTHS.index(p) + 1] - dt.timedelta(days=1)), active(p))
                   for p in months}


def test_the_http_api_serves_a_custom_grain(root):
    TestClient = pytest.importorskip("fastapi.testclient").TestClient

    from kpi_engine.serve.api import create_app
    from kpi_engine.serve.service import KpiService
    from kpi_engine.serve.settings import ServeSettings

    with TestClient(create_app(KpiService.open(ServeSettings(project=root)))) as client:
        assert "retail_month" in client.get("/v1/info").json()["grains"]
        answer = client.post("/v1/query", json={"kpis": ["orders"], "grain": "retail_month",
                                                "from": "2024-02-04", "to": "2024-05-05"})
        assert answer.status_code == 200, answer.text
        counts, _ = totals(retail_month)
        rows = answer.json()["rows"]
        assert [[row["period"], row["orders"]] for row in rows] == [[p.isoformat(), counts[p]] for p in RETAIL_MONTHS
                                             if dt.date(2024, 2, 4) <= p < dt.date(2024, 5, 5)]
        wrong = client.post("/v1/query", json={"kpis": ["orders"], "grain": "retail_mnth"})
        assert wrong.status_code == 422 and "Did you mean 'retail_month'?" in wrong.text


def test_a_ratio_across_two_sources_by_retail_quarter(tmp_path):
    generator = random.Random(3)
    spend = [{"day": (FIRST + dt.timedelta(days=k)).isoformat(), "channel": generator.choice(["ppc", "email"]),
              "cost": generator.randrange(10, 90)} for k in range(0, (LAST - FIRST).days, 2)]
    spec = """
sources:
  events: {table: events, time: day, dimensions: [channel]}
  spend: {table: spend, time: day, dimensions: [channel]}
kpis:
  return_on_spend: {formula: sum(events.amount) / sum(spend.cost)}
"""
    root = write_project(tmp_path / "p", {"spec.yaml": spec}, {"events": EVENTS, "spend": spend},
                         "name: c\nwarehouse: {adapter: duckdb, data: data}\n" + GRANULARITIES)
    quarters = [s for y in range(2019, 2028) for s in retail_month_starts(y)[::3]]
    revenue, cost = defaultdict(int), defaultdict(int)
    for row in EVENTS:
        revenue[(period_of(dt.date.fromisoformat(row["day"]), quarters), row["channel"])] += row["amount"]
    for row in spend:
        cost[(period_of(dt.date.fromisoformat(row["day"]), quarters), row["channel"])] += row["cost"]
    with open_project(root) as opened:
        rows = opened.evaluate(["return_on_spend"], grain="retail_quarter", by=["channel"]).to_dicts()
    assert {(r["period"], r["channel"]): r["return_on_spend"] for r in rows} == pytest.approx(
        {key: (revenue[key] / cost[key] if cost.get(key) else None) for key in set(revenue) | set(cost)})
