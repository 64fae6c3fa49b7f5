"""Per-entity snapshots (issue 16, item 6): last(x per key) / first(x per key) take each entity's
own latest (earliest) row of the period and sum them, for tables where entities report on
different days (balances per account at month end). Checked against plain Python over generated
rows, with --by, --where, no grain, previous(), and SQLite against DuckDB."""

from __future__ import annotations

import csv
import datetime as dt
import random
from collections import defaultdict
from decimal import Decimal

import pytest
from click.testing import CliRunner

from kpi_engine.cli import cli
from kpi_engine.engine import open_project
from warehouse_loading import sqlite_warehouse

SPECS = """\
sources:
  balances:
    table: balances
    time: reported_at
    dimensions: [region]
kpis:
  total_balance: {formula: last(balances.balance per account_id), unit: currency}
  opening_balance: {formula: first(balances.balance per account_id), unit: currency}
  reporting_accounts: {formula: last(balances per account_id)}
  large_balances: {formula: last(balances.balance where balance > 500 per account_id)}
"""
TABLE = {"account_id": "integer", "reported_at": "timestamp", "region": "text", "balance": "decimal"}


def generate(seed: int = 9) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for account in range(1, 41):
        for _ in range(rng.randrange(1, 12)):
            at = dt.datetime(2025, 1, 1) + dt.timedelta(days=rng.randrange(120), hours=rng.randrange(24))
            rows.append({"account_id": account, "reported_at": at, "region": rng.choice(["eu", "us", "apac"]),
                         "balance": Decimal(rng.randrange(0, 100000)) / 100})
    return rows


@pytest.fixture(scope="module")
def rows():
    return generate()


@pytest.fixture(scope="module")
def folder(rows, tmp_path_factory):
    root = tmp_path_factory.mktemp("balances")
    (root / "kpi_engine.yaml").write_text("name: balances\nwarehouse: {adapter: duckdb, data: data}\n")
    (root / "specs.yaml").write_text(SPECS)
    (root / "data").mkdir()
    with open(root / "data" / "balances.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(TABLE))
        writer.writeheader()
        writer.writerows({**r, "reported_at": r["reported_at"].strftime("%Y-%m-%d %H:%M:%S")} for r in rows)
    return root


@pytest.fixture(scope="module")
def project(folder):
    with open_project(folder) as opened:
        yield opened


def reference(rows, pick, by_region=False, grain="month", start=None, end=None, region=None, value=None):
    """Each account's latest (earliest) row of each period, then summed by period (and region)."""
    chosen: dict = {}
    for row in rows:
        day = row["reported_at"].date()
        if (start and day < start) or (end and day >= end):
            continue
        period = (day.replace(day=1),) if grain == "month" else ()
        key = (period, row["account_id"])
        if key not in chosen or (row["reported_at"] > chosen[key]["reported_at"]) == (pick == "last"):
            chosen[key] = row
    totals: dict = defaultdict(Decimal)
    keys = set()
    for (period, _), row in chosen.items():
        key = period + ((row["region"],) if by_region else ())
        keys.add(key)
        if region is None or row["region"] == region:
            totals[key] += (value or (lambda r: r["balance"]))(row)
    return {key: float(totals[key]) for key in keys}


def engine(project, name, by_region=False, grain="month", **options) -> dict:
    result = project.evaluate([name], grain=grain, by=["region"] if by_region else [], **options)
    keys = (["period"] if grain else []) + (["region"] if by_region else [])
    return {tuple(r[k] for k in keys): r[name] for r in result.to_dicts()}


@pytest.mark.parametrize("by_region", [False, True], ids=["month", "month-region"])
@pytest.mark.parametrize("name, pick, value", [
    ("total_balance", "last", None), ("opening_balance", "first", None),
    ("reporting_accounts", "last", lambda r: 1),
    ("large_balances", "last", lambda r: r["balance"] if r["balance"] > 500 else 0),
])
def test_each_entitys_own_latest_row_summed(project, rows, by_region, name, pick, value):
    got = engine(project, name, by_region)
    want = reference(rows, pick, by_region, value=value)
    assert got == pytest.approx(want), name


def test_without_a_grain_and_with_a_range(project, rows):
    start, end = dt.date(2025, 2, 10), dt.date(2025, 3, 20)
    got = engine(project, "total_balance", grain=None, start=start, end=end)
    assert got == pytest.approx(reference(rows, "last", grain=None, start=start, end=end))


def test_where_keeps_the_entities_whose_latest_row_matches(project, rows):
    got = engine(project, "total_balance", where="region = 'eu'")
    want = reference(rows, "last", region="eu")
    # Periods where no account's latest row is in eu still have eu rows: their total is 0.
    assert {k: v for k, v in got.items()} == pytest.approx({k: v for k, v in want.items() if k in got})


def test_previous_is_last_periods_total(project, rows):
    got = project.evaluate(["total_balance"], formulas=["previous(total_balance)"], grain="month",
                           start=dt.date(2025, 2, 15)).to_dicts()
    whole = reference(rows, "last")
    for row in got:
        before = (row["period"] - dt.timedelta(days=1)).replace(day=1)
        assert row["formula"] == pytest.approx(whole.get((before,), 0.0))


def test_sqlite_equals_duckdb(project, folder, tmp_path_factory):
    url = sqlite_warehouse(tmp_path_factory.mktemp("sqlite"), "balances", {"balances": TABLE}, folder / "data")
    with open_project(folder, warehouse=url) as other:
        for name in ("total_balance", "opening_balance"):
            assert engine(other, name, True) == pytest.approx(engine(project, name, True))


def test_per_entity_outside_a_filter_is_still_refused_for_other_aggregates(folder):
    result = CliRunner().invoke(cli, ["evaluate", str(folder), "--formula", "sum(balances.balance per account_id)"])
    assert result.exit_code == 1
    assert "only makes sense inside another aggregate's filter" in result.output
