"""Sub-daily grains (hour, minute, second), hour_of_day and ranges that cut a day, checked
against plain Python over generated rows: each UTC time is converted to the project's zone with
zoneinfo and cut into local wall-clock hours (issue 15)."""

import datetime as dt
import json
import os
import random
from collections import defaultdict
from zoneinfo import ZoneInfo

import pytest
import sqlglot
from sqlglot import exp

from kpi_engine.calendar import at_grain
from kpi_engine.engine import KpiProject, make_request
from kpi_engine.errors import QueryError
from kpi_engine.spec import load_project

pytest_plugins = ["pg"]

UTC = dt.timezone.utc
CHANNELS = ("email", "ppc", "social")
# Instants (UTC) the events cluster around: the DST changes of both zones, a New Year's midnight
# (a month and year boundary in every zone), a leap day.
ANCHORS = [dt.datetime(2025, 3, 30, 1), dt.datetime(2025, 10, 26, 1),  # Europe/Berlin
           dt.datetime(2025, 3, 9, 7), dt.datetime(2025, 11, 2, 6),  # America/New_York
           dt.datetime(2025, 1, 1, 0), dt.datetime(2024, 2, 29, 12)]
# A quiet morning with three visits only (UTC), so that --fill has empty hours to add.
QUIET = [dt.datetime(2025, 6, 1, 8, 10), dt.datetime(2025, 6, 1, 8, 50), dt.datetime(2025, 6, 1, 11, 5)]
SPEC = """
sources:
  visits:
    table: visits
    time: visited_at
    columns: {visited_at: timestamp}
    dimensions: [channel]
  daily_spend: {table: daily_spend, time: day, columns: {day: date}, dimensions: [channel]}
  trials: {table: trials, time: started_on, time_end: ended_on, columns: {started_on: date, ended_on: date}}
kpis:
  sessions: {unit: count, formula: count(visits)}
  pageviews: {unit: count, formula: sum(visits.pages)}
  pages_per_session: {unit: ratio, formula: pageviews / sessions}
  sessions_hour_before: {unit: count, formula: previous(sessions)}
  sessions_day_before: {unit: count, formula: "previous(sessions, '1 day')"}
  sessions_3h: {unit: count, formula: "rolling(sessions, 3)"}
  sessions_today: {unit: count, formula: "cumulative(sessions, 'day')"}
"""


def _events(seed=15):
    rng = random.Random(seed)
    rows = []
    for anchor in ANCHORS:
        for _ in range(160):
            at = anchor + dt.timedelta(seconds=rng.randint(-30 * 3600, 30 * 3600))
            rows.append((at, rng.choice(CHANNELS), rng.randint(1, 9)))
    rows += [(at, "email", 2 + k) for k, at in enumerate(QUIET)]
    rng.shuffle(rows)
    return [{"visited_at": at.isoformat(sep=" "), "channel": channel, "pages": pages} for at, channel, pages in rows]


VISITS = _events()
SPEND = [{"day": "2025-03-30", "channel": "email", "spend": 10}]
TRIALS = [{"started_on": "2025-03-01", "ended_on": "2025-04-01"}]


def local(text: str, zone: str) -> dt.datetime:
    """A stored UTC time as the project's local wall-clock time (naive)."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC).astimezone(ZoneInfo(zone)).replace(tzinfo=None)


def hour_of(moment: dt.datetime) -> dt.datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def reference(zone, key=lambda t, row: (hour_of(t),), keep=lambda t: True):
    """count and sum(pages) per key of each visit's local time."""
    counts, pages = defaultdict(int), defaultdict(int)
    for row in VISITS:
        t = local(row["visited_at"], zone)
        if keep(t):
            counts[key(t, row)] += 1
            pages[key(t, row)] += row["pages"]
    return counts, pages


def local_hours(start: dt.datetime, end: dt.datetime, zone: str) -> list[dt.datetime]:
    """Every local hour the clocks of ``zone`` show in [start, end), found by walking UTC hours
    (a plain-Python spine, independent of the calendar's)."""
    first = start.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC) - dt.timedelta(hours=3)
    hours = set()
    for k in range(int((end - start).total_seconds() // 3600) + 8):
        wall = hour_of((first + dt.timedelta(hours=k)).astimezone(ZoneInfo(zone)).replace(tzinfo=None))
        if start <= wall < end:
            hours.add(wall)
    return sorted(hours)


def _open(root_factory, zone):
    from conftest import write_project

    config = "name: web\nwarehouse: {adapter: duckdb, data: data}\n" + (f"timezone: {zone}\n" if zone else "")
    root = write_project(root_factory.mktemp("subdaily") / "p", {"spec.yaml": SPEC},
                         {"visits": VISITS, "daily_spend": SPEND, "trials": TRIALS}, config=config)
    return KpiProject(load_project(root))


@pytest.fixture(scope="module", params=["Europe/Berlin", "America/New_York"])
def zoned(request, tmp_path_factory):
    with _open(tmp_path_factory, request.param) as project:
        yield project, request.param


@pytest.fixture(scope="module")
def berlin(tmp_path_factory):
    with _open(tmp_path_factory, "Europe/Berlin") as project:
        yield project


def by_period(result, *dims):
    return {(row["period"], *(row[d] for d in dims)): row for row in result.to_dicts()}


def test_counts_and_sums_by_local_hour(zoned):
    project, zone = zoned
    counts, pages = reference(zone)
    rows = by_period(project.evaluate(["sessions", "pageviews"], grain="hour"))
    assert set(rows) == set(counts)
    for key, row in rows.items():
        assert isinstance(row["period"], dt.datetime)
        assert (row["sessions"], row["pageviews"]) == (counts[key], pages[key])


@pytest.mark.parametrize("zone, spring, fall", [
    ("Europe/Berlin", dt.datetime(2025, 3, 30), dt.datetime(2025, 10, 26)),
    ("America/New_York", dt.datetime(2025, 3, 9), dt.datetime(2025, 11, 2)),
])
def test_daylight_saving_days(tmp_path_factory, zone, spring, fall):
    """The spring-forward day has 23 local hours (02:00 never exists, and --fill does not invent
    it); the fall-back day's repeated 01:00 (New York) or 02:00 (Berlin) holds both UTC hours."""
    with _open(tmp_path_factory, zone) as project:
        rows = by_period(project.evaluate(["sessions"], grain="hour", start=spring.isoformat(),
                                          end=(spring + dt.timedelta(days=1)).isoformat(), fill=True))
        assert len(rows) == 23 and (spring.replace(hour=2),) not in rows
        assert sorted(key[0] for key in rows) == local_hours(spring, spring + dt.timedelta(days=1), zone)
        repeated = fall.replace(hour=2 if zone == "Europe/Berlin" else 1)
        both = [row for row in VISITS if hour_of(local(row["visited_at"], zone)) == repeated]
        utc_hours = {hour_of(dt.datetime.fromisoformat(row["visited_at"])) for row in both}
        assert len(utc_hours) == 2  # the data has visits in both of the hours the clock shows twice
        day = by_period(project.evaluate(["sessions"], grain="hour", start=fall.isoformat(),
                                         end=(fall + dt.timedelta(days=1)).isoformat(), fill=True))
        assert len(day) == 24 and day[(repeated,)]["sessions"] == len(both)


def test_by_hour_and_channel(berlin):
    counts, pages = reference("Europe/Berlin", key=lambda t, row: (hour_of(t), row["channel"]))
    rows = by_period(berlin.evaluate(["sessions", "pages_per_session"], grain="hour", by=["channel"]), "channel")
    assert set(rows) == set(counts)
    for key, row in rows.items():
        assert row["sessions"] == counts[key]
        assert row["pages_per_session"] == pytest.approx(pages[key] / counts[key])


def test_hour_of_day_is_the_local_hour(zoned):
    project, zone = zoned
    counts, _ = reference(zone, key=lambda t, row: (t.hour, row["channel"]))
    rows = project.evaluate(["sessions"], by=["hour_of_day", "channel"]).to_dicts()
    assert {(r["hour_of_day"], r["channel"]): r["sessions"] for r in rows} == dict(counts)
    # and by day, as seasonality within each day
    daily, _ = reference(zone, key=lambda t, row: (t.date(), t.hour))
    rows = project.evaluate(["sessions"], grain="day", by=["hour_of_day"]).to_dicts()
    assert {(r["period"], r["hour_of_day"]): r["sessions"] for r in rows} == dict(daily)
    # by month: the rows are grouped by local day first (and hour), then the days cut into months
    monthly, _ = reference(zone, key=lambda t, row: (t.date().replace(day=1), t.hour))
    rows = project.evaluate(["sessions"], grain="month", by=["hour_of_day"]).to_dicts()
    assert {(r["period"], r["hour_of_day"]): r["sessions"] for r in rows} == dict(monthly)


def test_office_hours_in_where(zoned):
    project, zone = zoned
    counts, _ = reference(zone, key=lambda t, row: (t.date(), row["channel"]), keep=lambda t: 9 <= t.hour < 18)
    rows = project.evaluate(["sessions"], grain="day", by=["channel"],
                            where="hour_of_day >= 9 and hour_of_day < 18 and minute_of_hour >= 0").to_dicts()
    assert {(r["period"], r["channel"]): r["sessions"] for r in rows} == dict(counts)


def test_minute_grain_and_minute_of_hour(berlin):
    start, end = dt.datetime(2025, 3, 30, 1, 0), dt.datetime(2025, 3, 30, 4, 0)
    counts, _ = reference("Europe/Berlin", key=lambda t, row: (t.replace(second=0),), keep=lambda t: start <= t < end)
    rows = by_period(berlin.evaluate(["sessions"], grain="minute", start="2025-03-30T01:00", end="2025-03-30T04:00"))
    assert len(counts) > 3 and {key: row["sessions"] for key, row in rows.items()} == dict(counts)
    minutes, _ = reference("Europe/Berlin", key=lambda t, row: (t.minute,))
    rows = berlin.evaluate(["sessions"], by=["minute_of_hour"]).to_dicts()
    assert {(r["minute_of_hour"],): r["sessions"] for r in rows} == dict(minutes)


def test_a_timestamp_range_cuts_mid_hour(berlin):
    """[from, to) on local times: the hours cut by the range hold only the visits inside it and
    are not complete."""
    start, end = dt.datetime(2024, 12, 31, 22, 30), dt.datetime(2025, 1, 1, 3, 15)
    counts, pages = reference("Europe/Berlin", keep=lambda t: start <= t < end)
    rows = by_period(berlin.evaluate(["sessions", "pageviews"], grain="hour", start="2024-12-31T22:30",
                                     end="2025-01-01 03:15:00", fill=True))
    assert sorted(key[0] for key in rows) == local_hours(dt.datetime(2024, 12, 31, 22), end, "Europe/Berlin")
    assert {key: (row["sessions"], row["pageviews"]) for key, row in rows.items()} == \
        {key: (counts.get(key, 0), pages.get(key, 0)) for key in rows}
    complete = {key[0]: row["complete"] for key, row in rows.items()}
    assert complete[dt.datetime(2024, 12, 31, 22)] is False and complete[dt.datetime(2025, 1, 1, 3)] is False
    assert complete[dt.datetime(2025, 1, 1, 0)] is True
    # The same range by day: the two days it touches, each cut, neither complete.
    days = by_period(berlin.evaluate(["sessions"], grain="day", start="2024-12-31T22:30", end="2025-01-01 03:15:00"))
    expected, _ = reference("Europe/Berlin", key=lambda t, row: (t.date(),), keep=lambda t: start <= t < end)
    assert {key: row["sessions"] for key, row in days.items()} == dict(expected)
    assert not any(row["complete"] for row in days.values())


def test_fill_lists_empty_hours(berlin):
    """A quiet morning: --fill lists every local hour, 0 visits and no ratio where there were none."""
    start, end = dt.datetime(2025, 6, 1, 6), dt.datetime(2025, 6, 1, 15)
    counts, pages = reference("Europe/Berlin", keep=lambda t: start <= t < end)
    rows = by_period(berlin.evaluate(["sessions", "pages_per_session"], grain="hour", start=start.isoformat(),
                                     end=end.isoformat(), fill=True))
    assert sorted(key[0] for key in rows) == local_hours(start, end, "Europe/Berlin")
    assert len(counts) == 2 and len(rows) == 9
    for key, row in rows.items():
        assert row["sessions"] == counts.get(key, 0)
        assert row["pages_per_session"] == (pytest.approx(pages[key] / counts[key]) if key in counts else None)


def test_time_functions_count_wall_clock_hours(berlin):
    """previous, rolling and cumulative(x, 'day') over hours, across the spring-forward day:
    windows count hours on the local clock, so the hour before 03:00 is the 02:00 that never was
    (0), and '1 day' before is the same hour on the clock yesterday."""
    start, end = dt.datetime(2025, 3, 30, 0), dt.datetime(2025, 3, 31, 6)
    counts, _ = reference("Europe/Berlin", key=lambda t, row: hour_of(t))
    rows = by_period(berlin.evaluate(["sessions", "sessions_hour_before", "sessions_day_before", "sessions_3h",
                                      "sessions_today"], grain="hour", start=start.isoformat(), end=end.isoformat(),
                                     fill=True))
    assert sorted(key[0] for key in rows) == local_hours(start, end, "Europe/Berlin")
    for (hour,), row in rows.items():
        assert row["sessions"] == counts.get(hour, 0)
        assert row["sessions_hour_before"] == counts.get(hour - dt.timedelta(hours=1), 0)
        assert row["sessions_day_before"] == counts.get(hour - dt.timedelta(days=1), 0)
        assert row["sessions_3h"] == sum(counts.get(hour - dt.timedelta(hours=k), 0) for k in range(3))
        assert row["sessions_today"] == sum(v for h, v in counts.items() if h.date() == hour.date() and h <= hour)
    assert rows[(dt.datetime(2025, 3, 30, 3),)]["sessions_hour_before"] == 0
    midnight = by_period(berlin.evaluate(formulas=["at_start(count(visits), 'day')"], grain="hour",
                                         start=start.isoformat(), end=end.isoformat(), fill=True))
    assert {key[0]: row["formula"] for key, row in midnight.items()} == {
        hour: counts.get(hour.replace(hour=0), 0) for (hour,) in rows}
    # --from within an hour: that hour counts from --from, the windows read whole earlier hours.
    cut = dt.datetime(2025, 3, 30, 4, 30)
    rows = by_period(berlin.evaluate(["sessions", "sessions_hour_before", "sessions_3h"], grain="hour",
                                     start=cut.isoformat(), end="2025-03-30T08:00", fill=True))
    assert sorted(key[0] for key in rows) == local_hours(hour_of(cut), dt.datetime(2025, 3, 30, 8), "Europe/Berlin")
    within, _ = reference("Europe/Berlin", key=lambda t, row: hour_of(t), keep=lambda t: t >= cut)
    for (hour,), row in rows.items():
        assert row["sessions"] == within.get(hour, 0)
        assert row["sessions_hour_before"] == counts.get(hour - dt.timedelta(hours=1), 0)
        assert row["sessions_3h"] == sum(counts.get(hour - dt.timedelta(hours=k), 0) for k in range(3))
    assert within[dt.datetime(2025, 3, 30, 4)] < counts[dt.datetime(2025, 3, 30, 4)]


def test_previous_by_hour_of_day(berlin):
    """--grain day --by hour_of_day: previous() is the same hour the day before. By hour, each
    period has one hour_of_day, so there is nothing earlier to read: refused."""
    counts, _ = reference("Europe/Berlin", key=lambda t, row: (t.date(), t.hour))
    rows = berlin.evaluate(["sessions", "sessions_hour_before"], grain="day", by=["hour_of_day"],
                           start="2025-10-26", end="2025-10-28").to_dicts()
    assert len(rows) > 24
    for row in rows:
        assert row["sessions"] == counts[(row["period"], row["hour_of_day"])]
        day_before = row["period"] - dt.timedelta(days=1)
        assert row["sessions_hour_before"] == counts.get((day_before, row["hour_of_day"]), 0)
    with pytest.raises(QueryError, match="--by hour_of_day with --grain hour gives each period a single hour_of_day"):
        berlin.evaluate(["sessions_hour_before"], grain="hour", by=["hour_of_day"])
    with pytest.raises(QueryError, match="--by day_of_week with --grain minute"):
        berlin.evaluate(["sessions_3h"], grain="minute", by=["day_of_week"])


def test_relative_hours():
    from kpi_engine.calendar import Calendar

    calendar = Calendar(timezone="Europe/Berlin")
    request = make_request(["sessions"], grain="hour", last="3 hours", as_of="2025-03-30", calendar=calendar)
    assert (request.start, request.end) == (dt.datetime(2025, 3, 29, 21), dt.date(2025, 3, 30))
    request = make_request(["sessions"], grain="hour", start="6 hours ago", end="this hour", as_of="2025-03-30",
                           calendar=calendar)
    assert (request.start, request.end) == (dt.datetime(2025, 3, 29, 18), dt.date(2025, 3, 30))
    # A datetime with a zone is an instant: its local time in the project's zone.
    instant = dt.datetime(2025, 3, 30, 1, 30, tzinfo=UTC)
    assert make_request(["sessions"], start=instant, calendar=calendar).start == dt.datetime(2025, 3, 30, 3, 30)
    before = calendar.now()
    request = make_request(["sessions"], grain="minute", last="30 minutes", calendar=calendar)
    after = calendar.now()  # (a minute may turn between the two)
    end, start = (at_grain(t, "second") for t in (request.end, request.start))  # a midnight is a date
    assert end in (before.replace(second=0), after.replace(second=0)) and start == end - dt.timedelta(minutes=30)
    assert abs(before - dt.datetime.now(ZoneInfo("Europe/Berlin")).replace(tzinfo=None)) < dt.timedelta(minutes=1)


def test_date_sources_refuse_the_time_of_day(berlin):
    for options, needs in [(dict(grain="hour"), "--grain hour"), (dict(by=["hour_of_day"]), "--by hour_of_day"),
                           (dict(where="hour_of_day < 12"), "--where hour_of_day"),
                           (dict(grain="day", start="2025-03-30T06:00"), "--from 2025-03-30 06:00:00")]:
        with pytest.raises(QueryError) as error:
            berlin.evaluate(formulas=["sum(daily_spend.spend)"], **options)
        message = str(error.value)
        assert needs in message and "'daily_spend'" in message and "'day', a DATE" in message
    # A date at midnight is the date: the DATE source still reads it.
    result = berlin.evaluate(formulas=["sum(daily_spend.spend)"], start="2025-03-30T00:00", end="2025-03-31")
    assert result.to_dicts()[0]["formula"] == 10


def test_lengths_at_sub_daily_grains(berlin):
    with pytest.raises(QueryError, match="'1 month' cannot be counted in hours"):
        berlin.evaluate(formulas=["previous(count(visits), '1 month')"], grain="hour")
    with pytest.raises(QueryError, match="'90 minutes' is not a whole number of hours"):
        berlin.evaluate(formulas=["rolling(count(visits), '90 minutes')"], grain="hour")
    with pytest.raises(QueryError, match="'3 hours' is not a whole number of days"):
        berlin.evaluate(formulas=["rolling(count(visits), '3 hours')"], grain="day")
    counts, _ = reference("Europe/Berlin", key=lambda t, row: t.replace(second=0))
    rows = by_period(berlin.evaluate(formulas=["rolling(count(visits), '1 hour')"], grain="minute",
                                     start="2025-03-30T03:00", end="2025-03-30T05:00", fill=True))
    assert len(rows) == 120 and any(row["formula"] for row in rows.values())
    for (minute,), row in rows.items():
        assert row["formula"] == sum(counts.get(minute - dt.timedelta(minutes=k), 0) for k in range(60))


def test_fill_is_capped(berlin):
    with pytest.raises(QueryError, match="--fill would list about 172,800 periods; the limit is 100,000"):
        berlin.compile(["sessions"], grain="second", start="2025-01-01", end="2025-01-03", fill=True)
    # 100,000 minutes (69 days and 10 hours 40 minutes) are listed; one more is refused.
    end = dt.datetime(2025, 1, 1) + dt.timedelta(minutes=100_000)
    assert berlin.compile(["sessions"], grain="minute", start="2025-01-01", end=end.isoformat(), fill=True)
    with pytest.raises(QueryError, match="--fill would list about 100,001 periods"):
        berlin.compile(["sessions"], grain="minute", start="2025-01-01",
                       end=(end + dt.timedelta(seconds=30)).isoformat(), fill=True)


GOLDEN_DIALECTS = ["snowflake", "bigquery", "redshift", "databricks", "trino", "clickhouse", "mysql", "tsql",
                   "oracle", "postgres", "spark", "duckdb"]


@pytest.mark.parametrize("dialect", GOLDEN_DIALECTS)
def test_sub_daily_sql_parses_back(berlin, dialect):
    for kpis, options in [(["sessions", "sessions_3h", "sessions_today"], dict(grain="hour", by=["channel"],
                                                                             start="2025-03-30T01:30",
                                                                             end="2025-03-31", fill=True)),
                          (["pages_per_session"], dict(grain="minute", by=["hour_of_day"])),
                          (["sessions_day_before"], dict(grain="second", start="2025-03-30", end="2025-03-30T00:01"))]:
        sql = berlin.compile(kpis, dialect=dialect, **options).sql()
        parsed = sqlglot.parse_one(sql, read=dialect)
        assert isinstance(parsed, exp.Query)
        assert {t.name for t in parsed.find_all(exp.Table)} >= {"visits"}


def test_interval_sources_refuse_the_time_of_day(berlin):
    with pytest.raises(QueryError, match="interval source 'trials' .* counts its rows as active on whole days"):
        berlin.evaluate(formulas=["last(trials)"], grain="hour", start="2025-03-01", end="2025-03-02")


def test_completeness_by_hour(berlin):
    """An hour is complete inside the range and the data: the hours before the first visit are
    not; --complete-only keeps the whole hours of a range cut mid-hour."""
    times = sorted(local(row["visited_at"], "Europe/Berlin") for row in VISITS)
    first = hour_of(times[0])
    start, end = first - dt.timedelta(hours=2), first + dt.timedelta(hours=2)
    rows = by_period(berlin.evaluate(["sessions"], grain="hour", start=start.isoformat(), end=end.isoformat(),
                                     fill=True))
    assert {key[0]: row["complete"] for key, row in rows.items()} == {
        first - dt.timedelta(hours=2): False, first - dt.timedelta(hours=1): False, first: True,
        first + dt.timedelta(hours=1): True}
    counts, _ = reference("Europe/Berlin", key=lambda t, row: hour_of(t))
    cut = berlin.evaluate(["sessions"], grain="hour", start="2025-10-26T00:20", end="2025-10-26T04:40",
                          complete_only=True).to_dicts()
    assert {row["period"]: row["sessions"] for row in cut} == {
        h: counts[h] for h in counts if dt.datetime(2025, 10, 26, 1) <= h < dt.datetime(2025, 10, 26, 4)}
    assert all(row["complete"] for row in cut)


def test_snapshots_by_hour(berlin):
    """last() at an hour grain: the rows at the latest visit time of each local hour."""
    latest = defaultdict(list)
    for row in VISITS:
        latest[hour_of(local(row["visited_at"], "Europe/Berlin"))].append((local(row["visited_at"], "Europe/Berlin"),
                                                                            row["pages"]))
    expected = {}
    for hour, visits in latest.items():
        top = max(t for t, _ in visits)
        expected[hour] = sum(p for t, p in visits if t == top)
    rows = berlin.evaluate(formulas=["last(visits.pages)"], grain="hour").to_dicts()
    assert {row["period"]: row["formula"] for row in rows} == expected


def test_command_line_and_saved_query(berlin, tmp_path_factory):
    from click.testing import CliRunner

    from kpi_engine.cli import cli

    counts, _ = reference("Europe/Berlin", key=lambda t, row: hour_of(t),
                          keep=lambda t: dt.datetime(2025, 3, 30, 1, 30) <= t < dt.datetime(2025, 3, 30, 5))
    root = berlin.project.config.root
    (root / "queries.yaml").write_text("queries:\n  night:\n    kpis: [sessions]\n    grain: hour\n"
                                       "    from: '2025-03-30 01:30'\n    to: 2025-03-30T05:00\n")
    for args in (["--grain", "hour", "--from", "2025-03-30T01:30", "--to", "2025-03-30 05:00"], ["--query", "night"]):
        result = CliRunner().invoke(cli, ["evaluate", str(root), "sessions", "--format", "csv", *args])
        assert result.exit_code == 0, result.output
        lines = result.output.strip().splitlines()
        assert lines[0] == "period,sessions,complete"
        got = {dt.datetime.fromisoformat(line.split(",")[0]): int(line.split(",")[1]) for line in lines[1:]}
        assert got == dict(counts)
    (root / "queries.yaml").unlink()
    # --all at an hour grain leaves out the KPIs over a DATE source, and says so.
    (root / "spend.yaml").write_text("kpis:\n  spend_total: {unit: currency, formula: sum(daily_spend.spend)}\n")
    try:
        result = CliRunner().invoke(cli, ["evaluate", str(root), "--all", "--grain", "hour", "--format", "csv",
                                          "--from", "2025-03-30T01:30", "--to", "2025-03-30T05:00"])
        assert result.exit_code == 0, result.output
        assert "spend_total (no time of day for --grain hour)" in result.stderr
        assert result.stdout.splitlines()[0].startswith("period,sessions,")
    finally:
        (root / "spend.yaml").unlink()


def test_postgres_equals_duckdb(pg_server, berlin, tmp_path_factory):
    """The same visits in PostgreSQL (timestamp without time zone, UTC) read in Europe/Berlin."""
    from psycopg import sql

    with pg_server.connect() as connection:
        connection.execute("DROP TABLE IF EXISTS visits")
        connection.execute("CREATE TABLE visits (visited_at timestamp, channel text, pages integer)")
        with connection.cursor() as cursor:
            cursor.executemany(sql.SQL("INSERT INTO visits VALUES (%s, %s, %s)"),
                               [(row["visited_at"], row["channel"], row["pages"]) for row in VISITS])
    settings = {"adapter": "postgres", "host": pg_server.host, "port": pg_server.port, "dbname": pg_server.dbname,
                "user": pg_server.user, "password": pg_server.password}
    from conftest import write_project

    spec = SPEC.split("  daily_spend:")[0] + "kpis:" + SPEC.split("kpis:")[1]
    config = "name: web\nwarehouse: {" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in settings.items()) + \
        "}\ntimezone: Europe/Berlin\n"
    root = write_project(tmp_path_factory.mktemp("pg_subdaily") / "p", {"spec.yaml": spec}, None, config=config)
    kpis = ["sessions", "pages_per_session", "sessions_hour_before", "sessions_day_before", "sessions_3h",
            "sessions_today"]
    with KpiProject(load_project(root)) as pg_project:
        for options in [dict(grain="hour", by=["channel"]),
                        dict(grain="hour", start="2025-03-29T20:00", end="2025-03-31T02:30", fill=True),
                        dict(grain="hour", start="2025-10-25T22:00", end="2025-10-27", fill=True, by=["channel"]),
                        dict(by=["hour_of_day"]), dict(grain="minute", start="2025-03-30T00:50",
                                                       end="2025-03-30T06:10")]:
            keys = ["period"] * ("grain" in options) + list(options.get("by", []))
            names = kpis if "grain" in options else kpis[:2]
            want = {tuple(r[k] for k in keys): r for r in berlin.evaluate(names, **options).to_dicts()}
            got = {tuple(r[k] for k in keys): r for r in pg_project.evaluate(names, **options).to_dicts()}
            assert set(got) == set(want) and want, options
            for key, row in want.items():
                for name in names + ["complete"] * ("grain" in options):
                    assert got[key][name] == (None if row[name] is None else pytest.approx(row[name])), (options, key)


def test_periods_keep_their_time_of_day_in_every_output(berlin, tmp_path):
    """A local midnight is a datetime like the other hours (never a date), in pandas, Arrow and
    Parquet too."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kpi_engine.output import write_stream

    result = berlin.evaluate(["sessions"], grain="hour", start="2024-12-31T22:00", end="2025-01-01T02:00", fill=True)
    expected = local_hours(dt.datetime(2024, 12, 31, 22), dt.datetime(2025, 1, 1, 2), "Europe/Berlin")
    assert [row["period"] for row in result.to_dicts()] == expected and dt.datetime(2025, 1, 1) in expected
    assert list(result.to_pandas()["period"]) == expected
    assert result.to_arrow().schema.field("period").type == pa.timestamp("s")
    path = tmp_path / "hours.parquet"
    write_stream("parquet", result.columns, [result.rows], path)
    assert pq.read_table(path).column("period").to_pylist() == expected
    from kpi_engine.output import _write_parquet_with_duckdb

    _write_parquet_with_duckdb(result.columns, [result.rows], str(tmp_path / "duckdb.parquet"))
    assert pq.read_table(tmp_path / "duckdb.parquet").column("period").to_pylist() == expected


def test_sqlite_equals_duckdb(tmp_path_factory):
    """SQLite (the kpi-engine-sqlite plugin: UTC only) against DuckDB, on the same visits."""
    from warehouse_loading import sqlite_warehouse

    with _open(tmp_path_factory, None) as duck:
        data = duck.project.config.root / "data"
        kinds = {"visits": {"visited_at": "timestamp", "channel": "text", "pages": "integer"},
                 "daily_spend": {"day": "date", "channel": "text", "spend": "integer"},
                 "trials": {"started_on": "date", "ended_on": "date"}}
        url = sqlite_warehouse(tmp_path_factory.mktemp("sqlite_subdaily"), "web", kinds, data)
        from kpi_engine_sqlite import rewrite

        if not hasattr(rewrite, "_CLOCK_PARTS"):  # an install of the plugin older than its EXTRACT rule
            message = "the installed kpi-engine-sqlite predates EXTRACT(HOUR ...): pip install ./plugins/kpi-engine-sqlite"
            if os.environ.get("KPI_ENGINE_REQUIRE_POSTGRES", "").strip().lower() not in ("", "0", "false", "no"):
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
        with KpiProject(load_project(duck.project.config.root), warehouse=url) as lite:
            kpis = ["sessions", "pages_per_session", "sessions_hour_before", "sessions_day_before", "sessions_3h",
                    "sessions_today"]
            for options in [dict(grain="hour", by=["channel"]),
                            dict(grain="hour", start="2025-03-29T20:30", end="2025-03-31T02:00", fill=True),
                            dict(grain="minute", start="2025-01-01T00:00", end="2025-01-01T03:00", fill=True),
                            dict(grain="day", by=["hour_of_day"], where="minute_of_hour < 30")]:
                want, got = (project.evaluate(kpis, **options).to_dicts() for project in (duck, lite))
                assert len(want) > 20 and [r["period"] for r in got] == [r["period"] for r in want], options
                for expected, row in zip(want, got):
                    assert row == {k: (pytest.approx(v) if isinstance(v, float) else v) for k, v in expected.items()}
