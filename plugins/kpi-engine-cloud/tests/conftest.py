"""Fixtures: the five adapters, each connected to a fake of its driver (fakes.py), and the DuckDB
example project whose data extents the fakes answer with, so a query compiled for a fake
warehouse is the query the golden files hold.

No warehouse runs here: these tests check what the adapters send and how they handle what
comes back, not what the warehouses compute."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

PLUGIN = Path(__file__).resolve().parents[1]
REPO = PLUGIN.parents[1]
EXAMPLE = REPO / "examples" / "marketing"
if importlib.util.find_spec("kpi_engine_cloud") is None:  # run from a clone without installing it
    sys.path.insert(0, str(PLUGIN))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakes import FakeWarehouse, install  # noqa: E402
from kpi_engine.engine import open_project  # noqa: E402
from kpi_engine.plugins import DISABLE_ENV, ENTRY_POINT_GROUP, Registry  # noqa: E402

import kpi_engine_cloud  # noqa: E402

NAMES = [adapter.name for adapter in kpi_engine_cloud.ADAPTERS]
#: One setting of each warehouse, and the secret each reads from the environment.
SETTINGS = {
    "snowflake": {"adapter": "snowflake", "account": "myorg-acct1", "user": "analyst", "database": "MARKETING",
                  "schema": "PUBLIC", "warehouse": "REPORTING", "role": "ANALYST"},
    "bigquery": {"adapter": "bigquery", "project": "acme-analytics", "dataset": "marketing", "location": "EU"},
    "redshift": {"adapter": "redshift", "host": "examplecluster.abc123.us-west-2.redshift.amazonaws.com",
                 "database": "marketing", "user": "analyst"},
    "databricks": {"adapter": "databricks", "host": "adb-1234.5.azuredatabricks.net",
                   "http_path": "/sql/1.0/warehouses/abc123", "catalog": "main", "schema": "marketing"},
    "trino": {"adapter": "trino", "host": "trino.example.com", "user": "analyst", "catalog": "hive",
              "schema": "marketing"},
}
SECRET_ENV = {"snowflake": "SNOWFLAKE_PASSWORD", "bigquery": "GOOGLE_APPLICATION_CREDENTIALS",
              "redshift": "REDSHIFT_PASSWORD", "databricks": "DATABRICKS_TOKEN", "trino": "TRINO_PASSWORD"}
SECRET = "Sup3r-s3cret-V4lue"


def cloud_registry() -> Registry:
    """kpi-engine's own adapters and the five cloud ones, whether or not this package is installed
    (installed, they come through their entry points; otherwise they are registered here)."""
    others = [entry.name for entry in __import__("importlib.metadata").metadata.entry_points(group=ENTRY_POINT_GROUP)
              if getattr(entry, "dist", None) is not None
              and entry.dist.name not in ("kpi-engine", "kpi-engine-cloud")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DISABLE_ENV, ",".join([os.environ.get(DISABLE_ENV, ""), *others]))
        registry = Registry()
    for name in NAMES:
        if name not in registry.plugins:
            registry.register(importlib.import_module(f"kpi_engine_cloud.{name}"), name)
    return registry


@pytest.fixture(scope="session")
def duck():
    """The example project on its DuckDB warehouse, with only kpi-engine's own plugins."""
    registry = cloud_registry()
    with open_project(EXAMPLE, registry=registry) as project:
        yield project


@pytest.fixture(scope="session")
def extents(duck):
    """The first and last day of each timed source of the example data, by DuckDB."""
    return duck.extents(list(duck.project.sources))


def source_names(sql: str, dialect: str) -> list[str] | None:
    """The sources an extents query asks about (SELECT 'leads' AS source_name, MIN(...) ...), or None
    for another query."""
    parsed = sqlglot.parse_one(FakeWarehouse.strip(sql), read=dialect)
    if parsed.named_selects != ["source_name", "first_day", "last_day"]:
        return None
    selects = [parsed] if isinstance(parsed, exp.Select) else [s for s in parsed.find_all(exp.Select)]
    return [select.expressions[0].this.this for select in selects
            if isinstance(select.expressions[0].this, exp.Literal)]


@pytest.fixture
def fake(request, monkeypatch, tmp_path, extents):
    """(adapter name, FakeWarehouse, its settings) with the fake driver installed and the secret
    in the environment. The warehouse answers extents queries with DuckDB's extents of the
    example data and other queries with no rows, unless a test sets ``answer``."""
    name = request.param
    adapter = next(a for a in kpi_engine_cloud.ADAPTERS if a.name == name)
    warehouse = FakeWarehouse(adapter.dialect)

    def answer(sql: str):
        names = source_names(sql, adapter.dialect)
        if names is not None:
            return ["source_name", "first_day", "last_day"], [(n, extents[n].first, extents[n].last) for n in names]
        return list(sqlglot.parse_one(FakeWarehouse.strip(sql), read=adapter.dialect).named_selects), []

    warehouse.answer = answer
    install(monkeypatch, name, warehouse)
    if name == "bigquery":
        key = tmp_path / "key.json"
        key.write_text('{"type": "service_account"}')
        monkeypatch.setenv(SECRET_ENV[name], str(key))
    else:
        monkeypatch.setenv(SECRET_ENV[name], SECRET)
    return name, warehouse, dict(SETTINGS[name])


def open_on(settings, **options):
    return open_project(EXAMPLE, warehouse=settings, registry=cloud_registry(), **options)
