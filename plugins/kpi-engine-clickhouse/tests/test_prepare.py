"""Each rewrite of ``prepare``, run in chdb and checked against values computed in plain Python
from the CSV files the tables were loaded from."""

from __future__ import annotations

import csv
import math
from decimal import Decimal

import pytest
import sqlglot
from conftest import EXAMPLE_DATA, settings
from sqlglot import exp

from kpi_engine_clickhouse import ClickHouseAdapter, render, to_clickhouse


def csv_column(table: str, column: str) -> list[str]:
    with open(EXAMPLE_DATA / f"{table}.csv", newline="", encoding="utf-8") as handle:
        return [row[column] for row in csv.DictReader(handle)]


def query(sql: str) -> exp.Expression:
    return sqlglot.parse_one(sql, read="clickhouse")


@pytest.fixture
def connection(chdb_folder, tmp_path):
    opened = ClickHouseAdapter.connect({k: v for k, v in settings(chdb_folder).items() if k != "adapter"}, tmp_path)
    yield opened
    opened.close()


def test_division_of_decimals_is_floating_point(connection):
    spend = [Decimal(value) for value in csv_column("ad_spend", "spend")]
    (total, third, two_thirds), = connection.execute(query(
        "SELECT SUM(spend) AS total, SUM(spend) / 3 AS third, 2 / 3 AS two_thirds FROM ad_spend")).rows
    assert total == sum(spend)
    assert third == pytest.approx(float(sum(spend)) / 3, rel=1e-12) and isinstance(third, float)
    assert round(third, 2) != third  # more than the two decimals ClickHouse's Decimal division keeps
    assert two_thirds == pytest.approx(2 / 3, rel=1e-15)


def test_modulo_of_decimals_keeps_the_whole_part(connection):
    amounts = [float(value) for value in csv_column("opportunities", "amount") if value]
    divisor = exp.Nullif(this=exp.Literal.number(7), expression=exp.Literal.number(0))  # as formulas compile it
    mod = exp.Mod(this=exp.column("amount"), expression=divisor)
    (total,), = connection.execute(exp.select(exp.alias_(exp.Sum(this=mod), "m")).from_("opportunities")).rows
    assert total == pytest.approx(math.fsum(math.fmod(amount, 7) for amount in amounts), rel=1e-9)
    plain = exp.select(exp.alias_(exp.Mod(this=exp.cast(exp.Literal.string("123.45"), "DECIMAL(14, 2)"),
                                          expression=exp.Literal.number(7)), "m"))
    assert connection.execute(plain.copy()).rows == [(Decimal("0.04"),)]  # what ClickHouse itself does
    calendar_like = exp.select(exp.alias_(exp.Mod(this=exp.Literal.number(-7), expression=exp.Literal.number(2)), "m"))
    assert connection.execute(calendar_like).rows == [(-1,)] and "CAST" not in render(calendar_like)


def test_subquery_columns_are_named_as_elsewhere(connection):
    """An unaliased t.x in a subquery is a column x, also through s.* (ClickHouse names it 't.x')."""
    leads = [value or None for value in csv_column("leads", "channel")]  # an empty cell is NULL
    expected = sorted(((channel, leads.count(channel)) for channel in set(leads)), key=str)
    sql = ("SELECT w.channel, COUNT(*) AS n FROM (SELECT s.* FROM (SELECT l.channel, l.lead_id FROM leads AS l) "
           "AS s) AS w GROUP BY w.channel ORDER BY w.channel")
    assert sorted(connection.execute(query(sql)).rows, key=str) == expected
    assert 'AS "channel"' in render(query(sql)) or "AS channel" in render(query(sql))


def test_a_left_join_without_a_match_gives_nulls(connection):
    """join_use_nulls: an unmatched row's columns are NULL, not 0 and '' (ClickHouse's default)."""
    lead_ids = {int(value) for value in csv_column("opportunities", "lead_id")}
    all_leads = [int(value) for value in csv_column("leads", "lead_id")]
    rows = connection.execute(query(
        "SELECT COUNT(*) AS n, COUNT(o.lead_id) AS matched, SUM(o.lead_id IS NULL) AS unmatched FROM leads AS l "
        "LEFT JOIN (SELECT lead_id FROM opportunities GROUP BY lead_id) AS o ON l.lead_id = o.lead_id")).rows
    matched = sum(1 for lead in all_leads if lead in lead_ids)
    assert rows == [(len(all_leads), matched, len(all_leads) - matched)]


def test_preparing_twice_changes_nothing():
    sql = ("SELECT s.a / s.b AS r, s.a % NULLIF(s.b, 0) AS m, s.c FROM (SELECT t.a, t.b, t.c FROM t AS t) AS s")
    once = ClickHouseAdapter.prepare(query(sql))
    assert to_clickhouse(once.copy()).sql(dialect="clickhouse") == once.sql(dialect="clickhouse")
    assert once.sql(dialect="clickhouse").count("Float64") == 2
