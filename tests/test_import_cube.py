"""`kpi-engine import cube`: the shop's Cube data model (examples/cube_project) imported and
evaluated on seeded rows must give what Cube's documented semantics give, computed here in plain
Python over the same rows (a query by the cube's time dimension at a granularity)."""

from __future__ import annotations

import datetime as dt

import pytest
from click.testing import CliRunner

from dbt_fixture import CUBE_EXAMPLE, assert_close, build_warehouse, by_period, evaluated, make_rows, month
from kpi_engine import open_project
from kpi_engine.cli import cli


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cube")
    rows = make_rows(11)
    build_warehouse(folder / "shop.duckdb", rows)
    (folder / "kpi_engine.yaml").write_text("name: shop\nwarehouse: {adapter: duckdb, path: shop.duckdb}\n")
    result = CliRunner().invoke(cli, ["import", "cube", str(CUBE_EXAMPLE / "model"), "-o", str(folder)])
    assert result.exit_code == 0, result.output
    with open_project(folder) as project:
        yield project, rows, result.output


def _orders(rows, aggregate, key="ordered_at"):
    return {period: aggregate(items) for period, items in by_period(rows["fct_orders"], key).items()}


def _amounts(items, keep=lambda r: True):
    return [r["amount"] for r in items if keep(r)]


MEASURES = {
    "orders_count": len,
    "orders_paid_count": lambda items: sum(r["status"] == "paid" for r in items),
    "orders_shipped_count": lambda items: sum(r["shipped_at"] is not None for r in items),  # COUNT(shipped_at)
    "orders_revenue": lambda items: sum(_amounts(items)),
    "orders_email_revenue": lambda items: sum(_amounts(items, lambda r: r["channel"] == "email"
                                                       and r["status"] != "refunded")),
    "orders_average_amount": lambda items: sum(_amounts(items)) / len(items),
    "orders_smallest": lambda items: min(_amounts(items)),
    "orders_largest": lambda items: max(_amounts(items)),
    "orders_buyers": lambda items: len({r["customer_id"] for r in items}),
    "orders_paid_share": lambda items: 100.0 * sum(r["status"] == "paid" for r in items) / len(items),
}


@pytest.mark.parametrize("kpi", sorted(MEASURES))
def test_measures_match_cube(shop, kpi):
    project, rows, _ = shop
    assert_close(evaluated(project, kpi), _orders(rows, MEASURES[kpi]), kpi)


def test_rolling_windows(shop):
    project, rows, _ = shop
    orders = rows["fct_orders"]
    months = sorted({month(r["ordered_at"]) for r in orders})
    # trailing unbounded: everything up to the end of each month
    assert_close(evaluated(project, "orders_revenue_to_date"),
                 {m: sum(r["amount"] for r in orders if month(r["ordered_at"]) <= m) for m in months},
                 "orders_revenue_to_date")
    # trailing 7 day at the day granularity: the day and the six before
    days = sorted({r["ordered_at"] for r in orders})
    assert_close(evaluated(project, "orders_revenue_7_days", grain="day"),
                 {d: sum(r["amount"] for r in orders if d - dt.timedelta(days=6) <= r["ordered_at"] <= d)
                  for d in days}, "orders_revenue_7_days")


def test_segments_are_sources_that_filter_the_cube(shop):
    project, rows, _ = shop
    result = project.evaluate(formulas=["paid=count(orders_paid)", "gifts=sum(orders_gifts.amount)"],
                              grain="month").to_dicts()
    paid = {row["period"]: row["paid"] for row in result}
    gifts = {row["period"]: row["gifts"] for row in result}
    assert_close(paid, _orders(rows, lambda items: sum(r["status"] == "paid" for r in items)), "segment paid")
    # {CUBE.status} != 'pending' and is_gift: a NULL flag is not a gift
    expected = _orders(rows, lambda items: sum(r["amount"] for r in items
                                               if r["status"] != "pending" and r["is_gift"] is True))
    assert_close(gifts, expected, "segment gifts")


def test_time_dimensions_and_joins(shop):
    project, rows, _ = shop
    signups = {p: len(items) for p, items in by_period(rows["dim_customers"], "signed_up_at").items()}
    assert_close(evaluated(project, "customers_count"), signups, "customers_count")
    region = {c["customer_id"]: c["region"] for c in rows["dim_customers"]}
    expected: dict = {}
    for row in rows["fct_orders"]:  # the many_to_one join: orders sliced by their customer's region
        key = (month(row["ordered_at"]), region[row["customer_id"]])
        expected[key] = expected.get(key, 0) + 1
    assert_close(evaluated(project, "orders_count", by=("region",)), expected, "orders by region")
    # the second time dimension is a time axis: orders in the month they shipped
    shipped = project.evaluate(formulas=["n=count(orders at shipped_at)"], grain="month").to_dicts()
    assert_close({row["period"]: row["n"] for row in shipped},
                 {p: len(items) for p, items in by_period(rows["fct_orders"], "shipped_at").items()}, "shipped")


def test_report_names_what_is_not_translated(shop):
    _, _, output = shop
    lines = [line.strip() for line in output.splitlines()]
    text = (CUBE_EXAMPLE / "model" / "cubes.yml").read_text().splitlines()

    def line_of(fragment):
        found = next(line for line in lines if fragment in line)
        return found, text[int(found.split(":")[1]) - 1].strip()

    found, source = line_of("join 'customers' -> 'orders'")
    assert "one_to_many" in found and source == "- name: orders"
    found, source = line_of("'orders.buyers_estimate'")
    assert "approximate" in found and source == "- name: buyers_estimate"
    found, source = line_of("'customers.orders_per_customer'")
    assert "another cube" in found and source == "- name: orders_per_customer"


def test_nothing_translated_exits_1(tmp_path):
    (tmp_path / "model.yml").write_text("cubes:\n  - name: events\n    sql: select * from {FILTER_PARAMS.x}\n")
    result = CliRunner().invoke(cli, ["import", "cube", str(tmp_path / "model.yml"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "model.yml:2: cube 'events': its sql uses template references" in result.output
    assert not (tmp_path / "out").exists()
