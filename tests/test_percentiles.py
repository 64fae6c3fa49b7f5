"""Medians and percentiles (issue 16, item 5): median(x), percentile(x, p) exact (linear
interpolation between the two nearest rows, as PERCENTILE_CONT), approx_percentile(x, p) named as
approximate; with --by, a grain, filters and previous(); refused across periods and groups;
null over no rows. Checked against Python over the example's CSV files, on DuckDB and PostgreSQL,
and the SQL of each dialect (or its clear error)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from decimal import Decimal

import pytest
from click.testing import CliRunner

import reference
from kpi_engine.cli import cli
from kpi_engine.engine import open_project
from kpi_engine.testing import TABLES as EXAMPLE_TABLES
from warehouse_loading import load_postgres

pytest_plugins = ["pg"]
EXAMPLE = reference.DEFAULT_DATA_DIR.parent
START, END = dt.date(2024, 1, 1), dt.date(2025, 1, 1)


def percentile(values: list[Decimal], fraction: float) -> float | None:
    """Linear interpolation between the closest ranks (what PERCENTILE_CONT computes)."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * Decimal(str(position - low)))


def quarter(day: dt.date) -> dt.date:
    return dt.date(day.year, (day.month - 1) // 3 * 3 + 1, 1)


@pytest.fixture(scope="module")
def data():
    return reference.load()


@pytest.fixture(scope="module")
def project():
    with open_project(EXAMPLE) as opened:
        yield opened


def paid_amounts(data, key) -> dict:
    channel = {r["customer_id"]: r["channel"] or None for r in data["customers"]}
    groups: dict = defaultdict(list)
    for row in data["orders"]:
        day = dt.date.fromisoformat(row["ordered_at"][:10])
        if START <= day < END and row["status"] == "paid":
            groups[key(day, channel.get(row["customer_id"]))].append(Decimal(row["amount"]))
    return groups


@pytest.mark.parametrize("formula, fraction", [("median(orders.amount where status = 'paid')", 0.5),
                                               ("percentile(orders.amount, 0.9 where status = 'paid')", 0.9),
                                               ("percentile(orders.amount, 0 where status = 'paid')", 0.0),
                                               ("percentile(orders.amount, 1 where status = 'paid')", 1.0)])
def test_exact_percentiles_by_quarter_and_channel(project, data, formula, fraction):
    result = project.evaluate([], formulas=[formula], grain="quarter", by=["channel"], start=START, end=END)
    got = {(r["period"], r["channel"]): r["formula"] for r in result.to_dicts()}
    groups = paid_amounts(data, lambda day, channel: (quarter(day), channel))
    assert len(groups) >= 20
    for key, values in groups.items():
        assert got[key] == pytest.approx(percentile(values, fraction), rel=1e-9), key


def test_a_group_whose_rows_all_fail_the_filter_has_no_median(project):
    result = project.evaluate([], formulas=["median(orders.amount where amount > 1000000000)", "count(orders)"],
                              grain="quarter", start=START, end=END)
    rows = result.to_dicts()
    assert rows and all(r["formula"] is None and r["formula_2"] > 0 for r in rows)


def test_previous_of_a_median_is_the_median_of_the_period_before(project, data):
    result = project.evaluate([], formulas=["median(orders.amount where status = 'paid')",
                                            "previous(median(orders.amount where status = 'paid'))"],
                              grain="quarter", start=dt.date(2024, 4, 1), end=END)
    groups = paid_amounts(data, lambda day, channel: quarter(day))
    for row in result.to_dicts():
        before = quarter(row["period"] - dt.timedelta(days=1))
        assert row["formula_2"] == pytest.approx(percentile(groups[before], 0.5), rel=1e-9)


@pytest.mark.parametrize("formula", ["cumulative(median(orders.amount))", "rolling(median(orders.amount), 3)",
                                     "share(percentile(orders.amount, 0.9))"])
def test_a_percentile_is_never_added_up_across_periods_or_groups(formula):
    result = CliRunner().invoke(cli, ["evaluate", str(EXAMPLE), "--formula", formula, "--grain", "month"])
    assert result.exit_code == 1
    assert "cannot be added up across" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("formula, message", [
    ("percentile(orders.amount, 1.5)", "percentile's second argument is the fraction of rows below the value"),
    ("percentile(orders.amount)", "'percentile' takes two arguments, not 1"),
    ("median(orders.amount, 0.5)", "'median' takes one argument, not 2"),
    ("sum(orders.amount where median(orders.amount per customer_id) > 10)", "'median' cannot be used per entity"),
])
def test_misuse_is_one_clear_error(formula, message):
    result = CliRunner().invoke(cli, ["evaluate", str(EXAMPLE), "--formula", formula])
    assert result.exit_code == 1
    assert message in result.output and result.output.count("Error") == 1, result.output


@pytest.mark.parametrize("dialect, expected", [
    ("duckdb", "QUANTILE_CONT("), ("postgres", "PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY"),
    ("spark", "PERCENTILE("), ("snowflake", "PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY"),
])
def test_the_exact_form_of_each_dialect(dialect, expected):
    result = CliRunner().invoke(cli, ["compile", str(EXAMPLE), "--formula", "percentile(orders.amount, 0.9)",
                                      "--dialect", dialect, "--offline"])
    assert result.exit_code == 0, result.output
    assert expected in result.output and "APPROX" not in result.output.upper()


@pytest.mark.parametrize("dialect, formula, message", [
    ("sqlite", "median(orders.amount)", "the sqlite dialect has no aggregate for exact percentiles"),
    ("trino", "median(orders.amount)", "Use approx_percentile() on this warehouse"),
    ("postgres", "approx_percentile(orders.amount, 0.9)", "Use exact ones: median() and percentile()"),
])
def test_dialects_without_the_aggregate_say_so(dialect, formula, message):
    result = CliRunner().invoke(cli, ["compile", str(EXAMPLE), "--formula", formula, "--dialect", dialect,
                                      "--offline"])
    assert result.exit_code == 1
    assert message in result.output


@pytest.fixture(scope="module")
def on_postgres(pg_server):
    import psycopg
    from psycopg import sql

    database = dataclasses.replace(pg_server, dbname="kpi_percentiles")
    with pg_server.admin_connect("postgres") as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(database.dbname)))
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database.dbname),
                                                                   sql.Identifier(database.user)))
    with psycopg.connect(database.url, autocommit=True) as connection:
        load_postgres(connection, EXAMPLE_TABLES, reference.DEFAULT_DATA_DIR)
    with open_project(EXAMPLE, warehouse=database.url) as opened:
        yield opened


def test_postgres_equals_duckdb(project, on_postgres):
    options = dict(formulas=["median(orders.amount)", "percentile(web_sessions.duration_seconds, 0.75)"],
                   grain="month", by=["channel"], start=START, end=END)
    want = {(r["period"], r["channel"]): r for r in project.evaluate([], **options).to_dicts()}
    got = {(r["period"], r["channel"]): r for r in on_postgres.evaluate([], **options).to_dicts()}
    assert got.keys() == want.keys()
    for key, row in want.items():
        for name in ("formula", "formula_2"):
            assert (row[name] is None and got[key][name] is None) or got[key][name] == pytest.approx(row[name], rel=1e-9)
