"""SQLiteAdapter.prepare: each rewritten node gives on SQLite what the same node gives on DuckDB,
and the calendar's SQL buckets agree with its Python rules on SQLite."""

from __future__ import annotations

import datetime as dt
import sqlite3

import duckdb
import pytest
import sqlglot
from kpi_engine.calendar import GRAINS, SUBDAILY, Calendar, cast
from kpi_engine.errors import QueryError
from sqlglot import exp

from kpi_engine_sqlite import SQLiteAdapter

TIMESTAMPS = ["2024-01-31 23:59:59", "2024-02-29 00:00:00", "2024-03-31 12:30:00", "2024-05-31 08:00:00",
              "2024-08-31 00:00:01", "2024-12-31 23:00:00", "2025-01-01 00:00:00", "2025-06-15 10:00:00",
              "2023-11-30 06:00:00", "2024-10-06 00:00:00", "2024-10-07 13:00:00"]
DATES = ["2024-01-31", "2024-02-29", "2024-03-01", "2024-05-31", "2024-12-31", "2025-01-01", "2023-02-28"]


def on_sqlite(expression: exp.Expression):
    query = SQLiteAdapter.prepare(exp.select(exp.alias_(expression, "v")))
    with sqlite3.connect(":memory:") as connection:
        return connection.execute(query.sql(dialect="sqlite")).fetchone()[0]


def on_duckdb(expression: exp.Expression):
    connection = duckdb.connect(":memory:")
    try:
        return connection.execute(exp.select(exp.alias_(expression, "v")).sql(dialect="duckdb")).fetchall()[0][0]
    finally:
        connection.close()


def plain(value):
    """DuckDB's dates and datetimes as SQLite writes them."""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def ts(text: str) -> exp.Expression:
    return cast(exp.Literal.string(text), "TIMESTAMP")


def day(text: str) -> exp.Expression:
    return cast(exp.Literal.string(text), "DATE")


def number(value) -> exp.Expression:
    return exp.Literal.number(str(value)) if value >= 0 else exp.Neg(this=exp.Literal.number(str(-value)))


# --- node by node, against DuckDB -------------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["DAY", "WEEK", "MONTH", "QUARTER", "YEAR", "HOUR", "MINUTE"])
@pytest.mark.parametrize("value", TIMESTAMPS)
def test_timestamp_trunc(value, unit):
    node = exp.TimestampTrunc(this=ts(value), unit=exp.var(unit))
    assert plain(on_sqlite(node)) == plain(on_duckdb(node))


@pytest.mark.parametrize("unit", ["DAY", "WEEK", "MONTH", "QUARTER", "YEAR"])
@pytest.mark.parametrize("value", DATES)
def test_date_trunc_of_dates(value, unit):
    node = cast(exp.TimestampTrunc(this=day(value), unit=exp.var(unit)), "DATE")
    assert on_sqlite(node) == plain(on_duckdb(node))


@pytest.mark.parametrize("unit,amount", [("DAY", 1), ("DAY", -40), ("WEEK", 2), ("MONTH", 1), ("MONTH", -3),
                                         ("MONTH", 13), ("QUARTER", 1), ("YEAR", 1), ("YEAR", -1), ("HOUR", 5)])
@pytest.mark.parametrize("value", TIMESTAMPS)
def test_date_add_clamps_months_to_the_last_day(value, unit, amount):
    node = exp.DateAdd(this=ts(value), expression=number(amount), unit=exp.var(unit))
    assert plain(on_sqlite(node)) == plain(on_duckdb(node))


@pytest.mark.parametrize("value", DATES)
def test_date_add_on_dates_and_with_a_computed_amount(value):
    amount = exp.Add(this=exp.Literal.number("1"), expression=exp.Literal.number("1"))
    for unit in ("DAY", "MONTH"):
        node = cast(exp.DateAdd(this=day(value), expression=amount.copy(), unit=exp.var(unit)), "DATE")
        assert on_sqlite(node) == plain(on_duckdb(node))
    assert on_sqlite(exp.DateAdd(this=day("2024-01-31"), expression=amount.copy(), unit=exp.var("MONTH"))) \
        == "2024-03-31"


@pytest.mark.parametrize("unit", ["DAY", "MONTH", "QUARTER", "YEAR"])
@pytest.mark.parametrize("later", ["2024-03-01 00:30:00", "2025-01-01 23:59:59", "2023-12-31 00:00:00"])
def test_date_diff(later, unit):
    for earlier in ("2024-01-31 22:00:00", "2024-12-31 23:59:59"):
        node = exp.DateDiff(this=cast(ts(later), "DATE"), expression=cast(ts(earlier), "DATE"), unit=exp.var(unit))
        assert on_sqlite(node) == on_duckdb(node)


@pytest.mark.parametrize("node_type", [exp.Year, exp.Month, exp.Day, exp.Quarter, exp.DayOfWeek])
@pytest.mark.parametrize("value", TIMESTAMPS[:6])
def test_date_parts(value, node_type):
    node = node_type(this=ts(value))
    assert on_sqlite(node) == on_duckdb(node)


@pytest.mark.parametrize("unit", ["HOUR", "MINUTE", "SECOND"])
@pytest.mark.parametrize("value", TIMESTAMPS)
def test_clock_parts(value, unit):
    node = cast(exp.Extract(this=exp.var(unit), expression=ts(value)), "INT")
    assert on_sqlite(node) == on_duckdb(node)


@pytest.mark.parametrize("a,b", [(7, 3), (-7, 3), (7, -3), (5.5, 2), (-5.5, 2), (0.25, 0.1), (10, 0)])
def test_modulo_keeps_fractions_and_the_sign_of_the_dividend(a, b):
    node = exp.Mod(this=number(a), expression=exp.Nullif(this=number(b), expression=exp.Literal.number("0")))
    sqlite_value, duckdb_value = on_sqlite(node), on_duckdb(node)
    if duckdb_value is None:
        assert sqlite_value is None
    else:
        assert sqlite_value == pytest.approx(float(duckdb_value))


def test_if_becomes_case_and_keeps_case_branches():
    node = exp.If(this=exp.GT(this=number(2), expression=number(1)), true=exp.Literal.string("yes"),
                  false=exp.Literal.string("no"))
    assert on_sqlite(node) == "yes"
    prepared = SQLiteAdapter.prepare(exp.select(node.copy()))
    assert "IIF" not in prepared.sql(dialect="sqlite")
    inner = exp.Case(ifs=[exp.If(this=exp.Boolean(this=False), true=number(1))], default=number(2))
    assert on_sqlite(inner) == 2


def test_values_with_named_columns_run():
    rows = exp.values([(exp.Literal.string("2024-01-01"), number(1)), (exp.Literal.string("2024-02-01"), number(2))],
                      alias="spine", columns=["period", "n"])
    query = exp.select(exp.column("period", "spine"), exp.column("n", "spine")).from_(rows)
    prepared = SQLiteAdapter.prepare(query)
    with sqlite3.connect(":memory:") as connection:
        assert connection.execute(prepared.sql(dialect="sqlite")).fetchall() == [("2024-01-01", 1), ("2024-02-01", 2)]


def test_null_safe_equality_and_range_frames_run():
    sql = """
        SELECT x, MAX(y) OVER (ORDER BY x RANGE BETWEEN 2 PRECEDING AND 2 PRECEDING) AS two_back,
               NULL IS NOT DISTINCT FROM NULL AS nulls_equal
        FROM (SELECT 1 AS x, 10 AS y UNION ALL SELECT 2, 20 UNION ALL SELECT 3, 30)
        ORDER BY x NULLS LAST"""
    query = SQLiteAdapter.prepare(sqlglot.parse_one(sql, read="duckdb"))
    rendered = query.sql(dialect="sqlite")
    assert " IS " in rendered
    with sqlite3.connect(":memory:") as connection:
        assert connection.execute(rendered).fetchall() == [(1, None, 1), (2, None, 1), (3, 10, 1)]


def test_midnight_bounds_compare_as_dates():
    """A DATE column (or dates in a column of unknown kind) keeps the range's first day and
    loses its last one, as a timestamp column does."""
    rows = exp.values([(exp.Literal.string(v),) for v in ("2024-12-31", "2025-01-01", "2025-01-01 00:00:00",
                                                          "2025-01-31 23:59:59", "2025-02-01",
                                                          "2025-02-01 00:00:00")], alias="t", columns=["d"])
    where = exp.and_(exp.GTE(this=exp.column("d"), expression=ts("2025-01-01 00:00:00")),
                     exp.LT(this=exp.column("d"), expression=ts("2025-02-01 00:00:00")))
    query = SQLiteAdapter.prepare(exp.select("d").from_(rows).where(where))
    with sqlite3.connect(":memory:") as connection:
        found = [row[0] for row in connection.execute(query.sql(dialect="sqlite"))]
    assert found == ["2025-01-01", "2025-01-01 00:00:00", "2025-01-31 23:59:59"]


def test_prepare_does_not_change_its_argument_and_is_idempotent():
    query = exp.select(exp.TimestampTrunc(this=ts("2024-05-31 10:00:00"), unit=exp.var("MONTH")))
    before = query.sql(dialect="duckdb")
    once = SQLiteAdapter.prepare(query)
    assert query.sql(dialect="duckdb") == before
    assert SQLiteAdapter.prepare(once).sql(dialect="sqlite") == once.sql(dialect="sqlite")
    assert once.sql(dialect="sqlite") == "SELECT DATETIME('2024-05-31 10:00:00', 'start of month')"


@pytest.mark.parametrize("zone", ["Europe/Paris", "America/New_York"])
def test_time_zone_conversion_is_refused_clearly(zone):
    node = Calendar(timezone=zone).local_time(exp.column("created_at"), is_timestamp=True)
    with pytest.raises(QueryError) as raised:
        SQLiteAdapter.prepare(exp.select(node))
    assert "timezone" in str(raised.value) and "SQLite" in str(raised.value) and zone in str(raised.value)


def test_utc_to_utc_needs_no_conversion():
    node = Calendar(timezone="UTC").local_time(ts("2024-05-31 10:00:00"), is_timestamp=True)
    assert on_sqlite(node) == "2024-05-31 10:00:00"


def test_unsupported_units_are_clear_errors():
    with pytest.raises(QueryError, match="SQLite"):
        SQLiteAdapter.prepare(exp.select(exp.TimestampTrunc(this=ts("2024-01-01"), unit=exp.var("MILLENNIUM"))))


# --- the calendar: SQL buckets on SQLite == the calendar's Python rules --------------------------------------

CALENDARS = [Calendar(), Calendar(week_start="sunday", fiscal_year_start=4),
             Calendar(week_start="wednesday", fiscal_year_start=11)]
SAMPLE_DAYS = [dt.date(2023, 12, 20) + dt.timedelta(days=i) for i in range(0, 460, 3)] + \
              [dt.date(2024, m, d) for m in (1, 3, 5, 8, 10, 12) for d in (29, 30, 31)]


@pytest.mark.parametrize("calendar", CALENDARS, ids=lambda c: f"{c.week_start}-fy{c.fiscal_year_start}")
@pytest.mark.parametrize("grain", GRAINS)
@pytest.mark.parametrize("stored", ["date", "timestamp"])
def test_buckets_follow_the_calendar(calendar, grain, stored):
    moments = [dt.datetime.combine(d, dt.time() if stored == "date" else dt.time(23, 59, 59)) for d in SAMPLE_DAYS]
    times = [d.isoformat() if stored == "date" else f"{d.isoformat()} 23:59:59" for d in SAMPLE_DAYS]
    rows = exp.values([(exp.Literal.string(t),) for t in times], alias="t", columns=["at"])
    bucket = calendar.bucket(exp.column("at", "t"), grain, "sqlite")
    index = Calendar.period_index(bucket.copy(), grain)
    query = SQLiteAdapter.prepare(exp.select(exp.column("at", "t"), bucket, index).from_(rows))
    rendered = query.sql(dialect="sqlite")
    assert "TRUNC" not in rendered.upper()
    with sqlite3.connect(":memory:") as connection:
        found = connection.execute(rendered).fetchall()
    indexes = {}
    clock = grain in SUBDAILY  # periods are local datetimes: their index counts hours (minutes, seconds)
    for (_, period, period_index), day_, moment in zip(found, SAMPLE_DAYS, moments):
        expected = calendar.period_start(moment if clock else day_, grain)
        assert period == (expected.isoformat(sep=" ") if clock else expected.isoformat()), (day_, grain)
        indexes[period] = period_index
    starts = sorted(indexes)
    for before, after in zip(starts, starts[1:]):
        if clock:
            apart = dt.datetime.fromisoformat(after) - dt.datetime.fromisoformat(before)
            one = calendar.shift(dt.datetime(2000, 1, 1), grain, 1) - dt.datetime(2000, 1, 1)
            assert indexes[after] - indexes[before] == apart / one
        elif calendar.shift(dt.date.fromisoformat(before), grain, 1).isoformat() == after:
            assert indexes[after] - indexes[before] == Calendar.index_step(grain)
