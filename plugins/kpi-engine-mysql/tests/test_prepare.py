"""Each rewrite of ``prepare``, run on MariaDB and checked against values computed in plain Python."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlglot
from sqlglot import exp

from kpi_engine_mysql import MySQLAdapter, to_mysql

#: Days around year, quarter and month ends, a leap day, and every weekday.
DAYS = [dt.date(2023, 12, 31), dt.date(2024, 1, 1), dt.date(2024, 2, 29), dt.date(2024, 3, 31), dt.date(2024, 4, 1),
        dt.date(2024, 6, 30), dt.date(2024, 9, 30), dt.date(2024, 12, 29), dt.date(2024, 12, 30),
        dt.date(2024, 12, 31), dt.date(2025, 1, 1), dt.date(2025, 1, 4), dt.date(2025, 1, 5), dt.date(2025, 1, 6),
        dt.date(2026, 1, 1), dt.date(2027, 1, 3)]
WEEKDAYS = ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY"]


def python_bucket(day: dt.date, unit: str) -> dt.date:
    if unit == "DAY":
        return day
    if unit.startswith("WEEK"):
        start = WEEKDAYS.index(unit[5:-1]) if "(" in unit else 0
        return day - dt.timedelta(days=(day.weekday() - start) % 7)
    if unit == "MONTH":
        return day.replace(day=1)
    if unit == "QUARTER":
        return dt.date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    return dt.date(day.year, 1, 1)


UNITS = ["DAY", "WEEK", *[f"WEEK({name})" for name in WEEKDAYS[1:]], "MONTH", "QUARTER", "YEAR"]


def days_table() -> exp.Expression:
    """(SELECT CAST('2023-12-31 13:45:00' AS DATETIME) AS t UNION ALL ...) AS days: afternoon times,
    so a bucket that kept the time of day would show."""
    selects = [exp.select(exp.alias_(exp.cast(exp.Literal.string(f"{day.isoformat()} 13:45:00"), "DATETIME"), "t"))
               for day in DAYS]
    union = selects[0]
    for select in selects[1:]:
        union = exp.union(union, select, distinct=False)
    return exp.Subquery(this=union, alias=exp.TableAlias(this=exp.to_identifier("days")))


@pytest.fixture
def connection(mariadb_server, marketing_db, tmp_path):
    settings = {key: value for key, value in mariadb_server.settings(marketing_db).items() if key != "adapter"}
    opened = MySQLAdapter.connect(settings, tmp_path)
    yield opened
    opened.close()


@pytest.mark.parametrize("kind", [exp.TimestampTrunc, exp.DateTrunc])
def test_buckets_are_the_first_day_of_their_period(connection, kind):
    column = exp.column("t", "days")
    value = column if kind is exp.TimestampTrunc else exp.cast(column, "DATE")
    buckets = [exp.alias_(kind(this=value.copy(), unit=exp.Var(this=unit)), f"b{i}") for i, unit in enumerate(UNITS)]
    rows = connection.execute(exp.select(column.copy(), *buckets).from_(days_table()).order_by(column.copy())).rows
    assert [row[0].date() for row in rows] == DAYS
    for row in rows:
        for unit, bucket in zip(UNITS, row[1:]):
            expected = python_bucket(row[0].date(), unit)
            if kind is exp.TimestampTrunc:
                assert bucket == dt.datetime.combine(expected, dt.time()), (row[0], unit)
            else:
                assert bucket == expected, (row[0], unit)


def test_division_and_averages_are_floating_point(connection, mariadb_server, marketing_db):
    rows = connection.execute(sqlglot.parse_one(
        "SELECT 2 / 3 AS a, SUM(pages_viewed) / COUNT(*) AS b, AVG(pages_viewed) AS c, "
        "AVG(DISTINCT pages_viewed) AS d FROM web_sessions", read="mysql")).rows
    writer = mariadb_server.connect(marketing_db)
    with writer.cursor() as cursor:
        cursor.execute("SELECT pages_viewed FROM web_sessions")
        pages = [value for (value,) in cursor.fetchall()]
    writer.close()
    a, b, c, d = rows[0]
    assert a == pytest.approx(2 / 3, rel=1e-15) and isinstance(a, float)
    assert b == pytest.approx(sum(pages) / len(pages), rel=1e-12) and c == pytest.approx(b, rel=1e-12)
    distinct = set(pages)
    assert d == pytest.approx(sum(distinct) / len(distinct), rel=1e-12)
    plain = sqlglot.parse_one("SELECT 2 / 3 AS a", read="mysql")
    assert "0.6667" == str(_direct(mariadb_server, marketing_db, plain.sql(dialect="mysql")))  # what MySQL does


def _direct(mariadb_server, database: str, sql: str):
    reader = mariadb_server.connect(database)
    try:
        with reader.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone()[0]
    finally:
        reader.close()


def test_utc_needs_no_time_zone_tables(connection):
    moment = exp.cast(exp.Literal.string("2025-03-30 01:30:00"), "DATETIME")
    utc_to_utc = exp.ConvertTimezone(source_tz=exp.Literal.string("UTC"), target_tz=exp.Literal.string("Etc/UTC"),
                                     timestamp=moment.copy())
    to_offset = exp.ConvertTimezone(source_tz=exp.Literal.string("UTC"), target_tz=exp.Literal.string("+02:00"),
                                    timestamp=moment.copy())
    prepared = to_mysql(exp.select(exp.alias_(utc_to_utc, "same"), exp.alias_(to_offset, "shifted")))
    assert "UTC" not in prepared.sql(dialect="mysql")
    assert connection.execute(prepared).rows == [(dt.datetime(2025, 3, 30, 1, 30), dt.datetime(2025, 3, 30, 3, 30))]


def test_units_it_does_not_rewrite_are_left_to_sqlglot():
    milliseconds = exp.TimestampTrunc(this=exp.column("t"), unit=exp.Var(this="MILLISECOND"))
    assert to_mysql(milliseconds.copy()) == milliseconds
    assert to_mysql(to_mysql(exp.select(exp.Div(this=exp.column("a"), expression=exp.column("b"))))).sql(
        dialect="mysql") == "SELECT CAST(a AS DOUBLE) / b"


def test_sub_daily_buckets_clock_parts_and_period_index(connection):
    """--grain hour (minute, second) as kpi-engine's calendar writes it, left to sqlglot's MySQL
    rendering: the bucket keeps the day and cuts the time; hour_of_day and the window index."""
    from kpi_engine.calendar import SUBDAILY, Calendar

    column = exp.column("t", "days")
    selects = [column.copy()]
    for grain in SUBDAILY:
        bucket = Calendar().bucket(column.copy(), grain, "mysql")
        selects += [bucket, Calendar.period_index(bucket.copy(), grain)]
    selects.append(Calendar.date_part(column.copy(), "hour_of_day"))
    rows = connection.execute(to_mysql(exp.select(*selects).from_(days_table()).order_by(column.copy()))).rows
    epoch = dt.datetime(1970, 1, 5)
    for row in rows:
        moment = row[0]
        expected = [moment.replace(minute=0, second=0), moment.replace(second=0), moment]
        assert list(row[1:7:2]) == expected
        assert list(row[2:7:2]) == [int((e - epoch).total_seconds()) // unit for e, unit in zip(expected, (3600, 60, 1))]
        assert row[7] == 13
