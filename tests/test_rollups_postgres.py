"""Rollups kept in a PostgreSQL warehouse ('store: warehouse'), against a throwaway server
(tests/pg.py): materialized through a writable connection of materialize's own, read back by
requests with the numbers of the raw rows and of plain Python (test_rollups.py's reference)."""

pytest_plugins = ["pg"]

import csv  # noqa: E402
import datetime as dt  # noqa: E402
import io  # noqa: E402
import random  # noqa: E402

import pytest  # noqa: E402

from kpi_engine.engine import open_project  # noqa: E402
from test_rollups import (FIRST_DAY, DAYS, SPECS, STORES, make_orders, make_visits, order_facts,  # noqa: E402
                          plan_notes, reference, same, answer)

PG_SPECS = SPECS.split("rollups:")[0] + """\
rollups:
  orders_daily:
    source: orders
    dimensions: [market, device, country]
    measures: [count(orders), sum(orders.amount), max(orders.amount), avg(orders.discount)]
    store: warehouse
"""
TABLES = {
    "orders": "order_id integer, placed_at timestamp, market text, device text, store_id integer, "
              "customer_id integer, amount numeric(12,2), discount integer, is_first boolean, status text",
    "stores": "id integer, country text",
    "visits": "visit_day date, market text, device text",
}


def copy_rows(connection, table: str, rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerows([["" if v is None else v for v in row.values()] for row in rows])
    with connection.cursor() as cursor, cursor.copy(f"COPY {table} FROM STDIN WITH (FORMAT csv)") as stream:
        stream.write(text.getvalue().encode())


@pytest.fixture
def pg_shop(pg_server, pg_url, tmp_path):
    rng = random.Random(17)
    orders, visits = make_orders(rng, 1200, FIRST_DAY, DAYS), make_visits(rng)
    with pg_server.connect() as connection:
        for table, columns in TABLES.items():
            connection.execute(f"DROP TABLE IF EXISTS {table}")
            connection.execute(f"CREATE TABLE {table} ({columns})")
        for table in ("kpi_rollup_orders_daily", "kpi_rollup_state"):
            connection.execute(f"DROP TABLE IF EXISTS {table}")
        copy_rows(connection, "orders", orders)
        copy_rows(connection, "stores", [{"id": k, "country": v} for k, v in STORES.items()])
        copy_rows(connection, "visits", visits)
    (tmp_path / "kpi_engine.yaml").write_text(f"name: pg_shop\ntimezone: Asia/Tokyo\nwarehouse: '{pg_url}'\n")
    (tmp_path / "specs.yaml").write_text(PG_SPECS)
    return tmp_path, orders


def test_a_rollup_in_a_postgres_warehouse_answers_like_the_raw_rows(pg_server, pg_shop):
    folder, orders = pg_shop
    kpis = ["orders", "revenue", "largest_order", "average_discount"]
    with open_project(folder) as project:
        done = project.materialize(end=dt.date(2024, 5, 1))
        assert [(d["table"], d["last_day"]) for d in done] == [('"kpi_rollup_orders_daily"', dt.date(2024, 4, 30))]
        # New rows: a late one inside the lookback, and new days read raw until the next refresh.
        rng = random.Random(3)
        late, new = make_orders(rng, 3, dt.date(2024, 4, 29), 1, 9_000), make_orders(rng, 30, dt.date(2024, 5, 1), 20,
                                                                                     9_100)
        with pg_server.connect() as connection:
            copy_rows(connection, "orders", late + new)
        options = dict(grain="month", by=["country"], where="market != 'us'")
        notes = plan_notes(project.compile(kpis, **options).plan)
        assert any(n.startswith("read from rollup orders_daily (materialized to 2024-04-30)") for n in notes)
        stale = order_facts(orders + new)

        def not_us(row):  # SQL: a NULL market is not "!= 'us'"
            return row["market"] is not None and row["market"] != "us"
        got = answer(project, kpis, **options)
        for kpi in kpis:
            same(got[kpi], reference(stale, kpi, "month", ("country",), not_us), kpi)
        done = project.materialize(end=dt.date(2024, 5, 21))
        assert (done[0]["refresh"], done[0]["from"]) == ("incremental", dt.date(2024, 4, 27))
        everything = order_facts(orders + late + new)
        got = answer(project, kpis, "week", ("device",))
        raw = answer(project, kpis, "week", ("device",), rollups=False)
        for kpi in kpis:
            same(got[kpi], reference(everything, kpi, "week", ("device",)), kpi)
            same(raw[kpi], reference(everything, kpi, "week", ("device",)), kpi)
        # Requests read through a read-only session: writing needs materialize's own connection.
        with pytest.raises(Exception, match="read-only"):
            project.connection().write([])


def test_the_complete_flag_reads_a_postgres_rollup_and_the_raw_rows_after_it(pg_server, pg_shop):
    folder, orders = pg_shop
    facts = order_facts(orders)
    first, last = min(r["day"] for r in facts), max(r["day"] for r in facts)
    with open_project(folder) as project:
        project.materialize(end=dt.date(2024, 5, 1))
        options = dict(grain="month", by=["device"])
        routed = project.compile(["orders", "revenue"], **options).extent_rollups
        assert [m.rollup.name for m in routed.values()] == ["orders_daily"] and list(routed) == ["orders"]
        assert project.extents(["orders"], rollups=routed) == project.extents(["orders"])
        assert project.extents(["orders"])["orders"].first == first  # (the extents' own reference)
        rows = project.evaluate(["orders", "revenue"], **options).to_dicts()
        assert rows == project.evaluate(["orders", "revenue"], rollups=False, **options).to_dicts()
        same({(r["period"], r["device"]): r["orders"] for r in rows}, reference(facts, "orders", "month", ("device",)),
             "orders")
        for row in rows:
            after = (row["period"].replace(day=28) + dt.timedelta(days=4)).replace(day=1)
            assert row["complete"] == (first <= row["period"] and after <= last + dt.timedelta(days=1)), row
