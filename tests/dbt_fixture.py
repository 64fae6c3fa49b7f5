"""The shop of examples/dbt_project, built as `dbt build` would leave it: seeded rows in a DuckDB
file (main.fct_orders, main.dim_customers, main.fct_balances) and a target/manifest.json naming
each model's relation. dbt itself is not needed; the rows are returned for plain-Python references.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil
import statistics
from pathlib import Path
from typing import Any

import duckdb

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "dbt_project"
CUBE_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "cube_project"
REGIONS = ("emea", "amer", "apac")
CHANNELS = ("email", "ppc", "organic")
STATUSES = ("paid", "paid", "refunded", "pending")


def make_rows(seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(seed)
    start = dt.date(2025, 1, 1)
    customers = [{"customer_id": i, "region": rng.choice(REGIONS),
                  "signed_up_at": start + dt.timedelta(days=rng.randrange(0, 150))} for i in range(1, 41)]
    orders = []
    for i in range(1, 701):
        day = start + dt.timedelta(days=rng.randrange(0, 181))
        shipped = day + dt.timedelta(days=rng.randrange(0, 12)) if rng.random() < 0.8 else None
        orders.append({"order_id": i, "customer_id": rng.randrange(1, 41), "ordered_at": day, "shipped_at": shipped,
                       "amount": round(rng.uniform(5, 400), 2), "discount": round(rng.uniform(0, 20), 2),
                       "status": rng.choice(STATUSES), "channel": rng.choice(CHANNELS),
                       "is_gift": rng.choice((True, False, False, None))})
    balances, balance_id = [], 0
    for customer in range(1, 41):
        for month in range(1, 7):
            for _ in range(rng.randrange(0, 4)):  # some months a customer reports nothing
                balance_id += 1
                day = dt.date(2025, month, rng.randrange(1, 29))
                balances.append({"balance_id": balance_id, "customer_id": customer, "snapshot_date": day,
                                 "balance": round(rng.uniform(-50, 900), 2)})
    return {"fct_orders": orders, "dim_customers": customers, "fct_balances": balances}


TYPES = {"fct_orders": "order_id INTEGER, customer_id INTEGER, ordered_at DATE, shipped_at DATE, amount DOUBLE, "
                       "discount DOUBLE, status VARCHAR, channel VARCHAR, is_gift BOOLEAN",
         "dim_customers": "customer_id INTEGER, region VARCHAR, signed_up_at DATE",
         "fct_balances": "balance_id INTEGER, customer_id INTEGER, snapshot_date DATE, balance DOUBLE"}


def build_warehouse(file: Path, rows: dict[str, list[dict[str, Any]]], schema: str = "main",
                    aliases: dict[str, str] | None = None) -> None:
    aliases = aliases or {}
    connection = duckdb.connect(str(file))
    try:
        connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        for table, items in rows.items():
            name = f'"{schema}"."{aliases.get(table, table)}"'
            connection.execute(f"CREATE OR REPLACE TABLE {name} ({TYPES[table]})")
            columns = list(items[0])
            connection.executemany(f"INSERT INTO {name} VALUES ({', '.join('?' for _ in columns)})",
                                   [[row[c] for c in columns] for row in items])
    finally:
        connection.close()


def write_manifest(file: Path, database: str, schema: str = "main", aliases: dict[str, str] | None = None,
                   models: tuple[str, ...] = ("fct_orders", "dim_customers", "fct_balances")) -> None:
    """A manifest.json shaped as dbt writes it (only the fields kpi-engine reads, plus neighbours)."""
    aliases = aliases or {}
    nodes = {f"model.shop.{name}": {"resource_type": "model", "name": name, "package_name": "shop",
                                    "database": database, "schema": schema, "alias": aliases.get(name, name),
                                    "unique_id": f"model.shop.{name}", "config": {"materialized": "table"}}
             for name in models}
    nodes["test.shop.not_null_fct_orders_order_id"] = {"resource_type": "test", "name": "not_null_order_id"}
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps({"metadata": {"dbt_version": "1.8.0", "adapter_type": "duckdb"}, "nodes": nodes,
                                "sources": {}, "semantic_models": {}, "metrics": {}}), encoding="utf-8")


def built_example(folder: Path, seed: int = 7) -> tuple[Path, dict[str, list[dict[str, Any]]]]:
    """A copy of examples/dbt_project in ``folder`` after a (simulated) dbt build: shop.duckdb
    and target/manifest.json. Returns the dbt project folder and the rows."""
    project = folder / "dbt_project"
    shutil.copytree(EXAMPLE, project)
    rows = make_rows(seed)
    build_warehouse(project / "shop.duckdb", rows)
    write_manifest(project / "target" / "manifest.json", database="shop")
    return project, rows


# -- plain-Python helpers for the references

def month(day: dt.date) -> dt.date:
    return day.replace(day=1)


def percentile_cont(values: list[float], p: float) -> float | None:
    """PERCENTILE_CONT at a tenth (0.1 ... 0.9): the standard library's inclusive quantiles
    interpolate between the two nearest ranks the same way."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    tenth = round(p * 10)
    assert abs(tenth - p * 10) < 1e-9, "the reference reads percentiles at tenths"
    return statistics.quantiles(values, n=10, method="inclusive")[tenth - 1]


def by_period(rows, key, period=month) -> dict[dt.date, list[dict]]:
    groups: dict[dt.date, list[dict]] = {}
    for row in rows:
        if row[key] is not None:
            groups.setdefault(period(row[key]), []).append(row)
    return groups


def evaluated(project, kpi: str, grain: str = "month", by: tuple[str, ...] = ()) -> dict:
    """{period (or (period, *dimensions)): value} of one KPI evaluated alone."""
    result = project.evaluate([kpi], grain=grain, by=list(by)).to_dicts()
    out = {}
    for row in result:
        period = row["period"]
        period = period.date() if isinstance(period, dt.datetime) else period
        out[(period, *(row[d] for d in by)) if by else period] = row[kpi]
    return out


def assert_close(actual: dict, expected: dict, what: str, extra_zero: bool = False) -> None:
    """Same periods, same values (to 1e-9 relative). ``extra_zero``: periods only kpi-engine shows
    must hold 0 or nothing (a count or sum over no rows)."""
    missing = set(expected) - set(actual)
    assert not missing, f"{what}: periods missing: {sorted(missing)[:5]}"
    extra = set(actual) - set(expected)
    if extra_zero:
        assert all(actual[k] in (0, None) for k in extra), f"{what}: unexpected values at {sorted(extra)[:5]}"
    else:
        assert not extra, f"{what}: periods not expected: {sorted(extra)[:5]}"
    for key, value in expected.items():
        got = actual[key]
        if value is None:
            assert got is None, f"{what} at {key}: expected nothing, got {got}"
        else:
            assert got is not None and abs(got - value) <= 1e-9 * max(1.0, abs(value)), \
                f"{what} at {key}: expected {value}, got {got}"
