"""Tiled benchmark warehouses (benchmarks/build_warehouse.py --tile-from): the shipped example
data loaded as the benchmark loads it, repeated three times. Checked in plain Python against the
base rows (each tiled row is a base row with its keys moved into copy c's range, in the base's
order), then through the engine: counts and sums are three times the base's, ratios equal."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import duckdb
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
COPIES = 3
BLOCK = 1000  # base rows per block of the tiled order (the default, 40,960 at K=3, is more than they have)

# Written here independently of build_warehouse.py: each key column and the table whose key it is.
KEY_OF = {
    ("web_sessions", "session_id"): "web_sessions",
    ("leads", "lead_id"): "leads",
    ("leads", "customer_id"): "customers",
    ("opportunities", "opportunity_id"): "opportunities",
    ("opportunities", "lead_id"): "leads",
    ("customers", "customer_id"): "customers",
    ("customers", "lead_id"): "leads",
    ("orders", "order_id"): "orders",
    ("orders", "customer_id"): "customers",
    ("subscriptions", "customer_id"): "customers",
    ("email_sends", "send_id"): "email_sends",
    ("email_sends", "contact_id"): "contacts",  # the email list's contacts: no table of their own
    ("social_posts", "post_id"): "social_posts",
    ("nps_responses", "response_id"): "nps_responses",
    ("nps_responses", "customer_id"): "customers",
}
PRIMARY_KEYS = {"web_sessions": "session_id", "leads": "lead_id", "opportunities": "opportunity_id",
                "customers": "customer_id", "orders": "order_id", "email_sends": "send_id",
                "social_posts": "post_id", "nps_responses": "response_id"}
FOREIGN_KEYS = [(table, column, KEY_OF[table, column]) for table, column in KEY_OF
                if KEY_OF[table, column] in PRIMARY_KEYS and PRIMARY_KEYS.get(table) != column]
SNAPSHOTS = {"ad_spend": {"spend"}, "email_list": {"subscribers", "new_subscribers", "unsubscribes"},
             "social_followers": {"followers"}}
ENTITIES = sorted({table for table, _ in KEY_OF})

DISTINCT_KPIS = """\
kpis:
  contacts_emailed:
    label: Contacts emailed
    formula: count_distinct(email_sends.contact_id)
  customers_ordering:
    label: Customers with an order
    formula: count_distinct(orders.customer_id)
"""
TIMES_COPIES = ["new_contacts", "qualified_leads", "customers_won", "emails_sent", "website_sessions",
                "ad_spend_total", "revenue", "unsubscribes", "social_shares", "email_list_size", "followers",
                "active_subscriptions", "mrr", "contacts_emailed", "customers_ordering"]
EQUAL = ["cost_per_lead", "close_rate", "lead_to_customer_rate", "lead_to_opportunity_rate", "email_open_rate",
         "unsubscribe_rate", "nps", "roi", "avg_session_duration", "lead_to_customer_rate_90d"]


@pytest.fixture(scope="module")
def warehouses(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("build_warehouse", BENCH / "build_warehouse.py")
    build_warehouse = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_warehouse)
    folder = tmp_path_factory.mktemp("tiled")
    base, tiled = folder / "base" / "warehouse.duckdb", folder / "tiled" / "warehouse.duckdb"
    for db_file in (base, tiled):
        db_file.parent.mkdir()
    build_warehouse._load(build_warehouse.SHIPPED_DATA, base, 2, lambda text: None)
    rows = build_warehouse.tile(base, tiled, COPIES, block=BLOCK, log=lambda text: None)
    for db_file in (base, tiled):
        build_warehouse._write_project(db_file.parent / "project", db_file)
        (db_file.parent / "project" / "distinct.yaml").write_text(DISTINCT_KPIS)
    connection = duckdb.connect()
    connection.execute(f"ATTACH '{base}' AS base (READ_ONLY)")
    connection.execute(f"ATTACH '{tiled}' AS tiled (READ_ONLY)")
    yield connection, base, tiled, rows
    connection.close()


def table_rows(connection, catalog: str, table: str) -> tuple[list[str], list[tuple]]:
    """Column names and rows in stored order."""
    cursor = connection.execute(f'SELECT * FROM {catalog}."{table}" ORDER BY rowid')
    return [d[0] for d in cursor.description], cursor.fetchall()


def spans(connection) -> dict[str, int]:
    """max - min + 1 of each key space over the base's columns of that space."""
    values: dict[str, list[int]] = {}
    for (table, column), space in KEY_OF.items():
        names, rows = table_rows(connection, "base", table)
        index = names.index(column)
        values.setdefault(space, []).extend(row[index] for row in rows if row[index] is not None)
    return {space: max(found) - min(found) + 1 for space, found in values.items()}


def test_row_counts(warehouses):
    connection, _, _, rows = warehouses
    for table in ENTITIES + sorted(SNAPSHOTS):
        base = connection.execute(f'SELECT count(*) FROM base."{table}"').fetchone()[0]
        tiled = connection.execute(f'SELECT count(*) FROM tiled."{table}"').fetchone()[0]
        assert base > 0
        assert tiled == rows[table] == (base if table in SNAPSHOTS else COPIES * base), table


def test_each_tiled_row_is_a_base_row_moved_into_its_copy(warehouses):
    """A tiled entity table is each block of 1,000 base rows three times over (copy 0, 1, 2), in
    the base's order, each copy's keys shifted by copy x the span of their key space: same
    values, keys and foreign keys in the same copy."""
    connection = warehouses[0]
    span = spans(connection)
    for table in ENTITIES:
        names, base_rows = table_rows(connection, "base", table)
        tiled_names, tiled_rows = table_rows(connection, "tiled", table)
        assert tiled_names == names
        shifted = {i: span[KEY_OF[table, name]] for i, name in enumerate(names) if (table, name) in KEY_OF}
        expected = [tuple(value + copy * shifted[i] if i in shifted and value is not None else value
                          for i, value in enumerate(row))
                    for start in range(0, len(base_rows), BLOCK) for copy in range(COPIES)
                    for row in base_rows[start:start + BLOCK]]
        assert tiled_rows == expected, table


def test_snapshot_tables_keep_their_rows_with_measures_times_copies(warehouses):
    connection = warehouses[0]
    for table, measures in SNAPSHOTS.items():
        names, base_rows = table_rows(connection, "base", table)
        tiled_names, tiled_rows = table_rows(connection, "tiled", table)
        assert tiled_names == names and len(tiled_rows) == len(base_rows)
        for base_row, tiled_row in zip(base_rows, tiled_rows):
            for name, value, tiled_value in zip(names, base_row, tiled_row):
                if name not in measures:
                    assert tiled_value == value, (table, name)
                elif isinstance(value, float):
                    assert tiled_value == round(value * COPIES, 2), (table, name)  # whole cents
                else:
                    assert isinstance(tiled_value, int) and tiled_value == value * COPIES, (table, name)


def test_keys_unique_and_foreign_keys_resolve_within_their_copy(warehouses):
    connection = warehouses[0]
    span = spans(connection)
    lows = {}
    for (table, column), space in KEY_OF.items():
        low = connection.execute(f'SELECT min("{column}") FROM base."{table}"').fetchone()[0]
        lows[space] = min(low, lows.get(space, low))
    for table, key in PRIMARY_KEYS.items():
        for catalog in ("base", "tiled"):
            total, distinct = connection.execute(
                f'SELECT count(*), count(DISTINCT "{key}") FROM {catalog}."{table}"').fetchone()
            assert total == distinct, (catalog, table)
    for table, column, parent in FOREIGN_KEYS:
        parent_key = PRIMARY_KEYS[parent]
        counts = {}
        for catalog in ("base", "tiled"):
            names, children = table_rows(connection, catalog, table)
            parents = {row[0] for row in connection.execute(f'SELECT "{parent_key}" FROM {catalog}."{parent}"').fetchall()}
            values = [row[names.index(column)] for row in children if row[names.index(column)] is not None]
            counts[catalog] = (sum(v in parents for v in values), sum(v not in parents for v in values))
            if catalog == "tiled" and table in PRIMARY_KEYS:  # the child's copy is the parent's copy
                own = names.index(PRIMARY_KEYS[table])
                own_space = KEY_OF[table, PRIMARY_KEYS[table]]
                for row in children:
                    value = row[names.index(column)]
                    if value is not None and value in parents:
                        assert ((row[own] - lows[own_space]) // span[own_space]
                                == (value - lows[parent]) // span[parent]), (table, column, row)
        assert counts["base"][0] > 0, (table, column)
        assert counts["tiled"] == (COPIES * counts["base"][0], COPIES * counts["base"][1]), (table, column)


def test_engine_counts_times_copies_and_ratios_equal(warehouses):
    from kpi_engine.engine import open_project

    _, base, tiled, _ = warehouses
    results = {}
    for db_file in (base, tiled):
        with open_project(db_file.parent / "project") as project:
            result = project.evaluate(TIMES_COPIES + EQUAL, grain="month", by=["channel"])
            results[db_file] = {tuple(row[:2]): dict(zip(result.names, row)) for row in result.rows}
    assert results[base].keys() == results[tiled].keys() and len(results[base]) > 100
    checked = {name: 0 for name in TIMES_COPIES + EQUAL}
    for key, base_row in results[base].items():
        tiled_row = results[tiled][key]
        assert tiled_row["complete"] == base_row["complete"]
        for name in TIMES_COPIES + EQUAL:
            value, tiled_value = base_row[name], tiled_row[name]
            if value is None:
                assert tiled_value is None, (key, name)
                continue
            checked[name] += 1
            expected = COPIES * value if name in TIMES_COPIES else value
            if isinstance(value, int) and isinstance(tiled_value, int):
                assert tiled_value == expected, (key, name)
            else:
                assert math.isclose(tiled_value, expected, rel_tol=1e-9, abs_tol=1e-9), (key, name)
    assert all(checked.values()), checked  # every KPI had values to compare
