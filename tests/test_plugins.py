"""The plugin registry: adapters from entry points and from test-only plugins.

Plugins here are plain objects with ``@hookimpl`` methods, registered on a fresh
``Registry(load_entry_points=False)`` so nothing depends on what else is installed.
Expected numbers are worked out by hand from the rows written below.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import duckdb
import pytest
from click.testing import CliRunner
from sqlglot import exp

import kpi_engine.adapters.duckdb as duckdb_plugin
from kpi_engine import plugins as plugins_module
from kpi_engine.engine import KpiProject
from kpi_engine.errors import PluginError
from kpi_engine.hookspecs import Adapter, Connection, Rows, hookimpl
from kpi_engine.plugins import PluginInfo, Registry, default_registry
from kpi_engine.spec import load_project

# --- a test-only warehouse -------------------------------------------------------------------------

# north: 120 + 90 = 210 over 2 orders; south: 50 + 150 + 100 = 300 over 3 orders.
# March: 120 + 90 + 50 = 260 over 3; April: 150 + 100 = 250 over 2.
ORDERS = [
    ("2025-03-01", "north", 120.0),
    ("2025-03-15", "north", 90.0),
    ("2025-03-20", "south", 50.0),
    ("2025-04-02", "south", 150.0),
    ("2025-04-10", "south", 100.0),
]


class FakeConnection(Connection):
    dialect = "duckdb"

    def __init__(self, connection):
        self.connection = connection
        self.closed = False
        self.queries: list[str] = []

    def execute(self, query) -> Rows:
        sql = query.sql(dialect=self.dialect)
        self.queries.append(sql)
        cursor = self.connection.cursor()
        try:
            cursor.execute(sql)
            return Rows(tuple(d[0] for d in cursor.description), cursor.fetchall())
        finally:
            cursor.close()

    def columns(self, relation) -> Mapping[str, str] | None:
        cursor = self.connection.cursor()
        try:
            cursor.execute(exp.select(exp.Star()).from_(relation).limit(0).sql(dialect=self.dialect))
            return {d[0]: str(d[1]) for d in cursor.description}
        except duckdb.CatalogException:
            return None
        finally:
            cursor.close()

    def close(self) -> None:
        self.closed = True
        self.connection.close()


class FakeAdapter(Adapter):
    name = "fake"
    dialect = "duckdb"
    description = "In-memory DuckDB with one preloaded table, for tests"
    connections: list[tuple[dict, Path, FakeConnection]] = []

    @classmethod
    def connect(cls, settings: Mapping[str, Any], project_root: Path) -> Connection:
        con = duckdb.connect(":memory:")
        con.execute("CREATE TABLE orders (ordered_at DATE, region VARCHAR, amount DOUBLE)")
        con.executemany("INSERT INTO orders VALUES (CAST(? AS DATE), ?, ?)", [list(r) for r in ORDERS])
        connection = FakeConnection(con)
        cls.connections.append((dict(settings), project_root, connection))
        return connection


class FakePlugin:
    @hookimpl
    def kpi_engine_adapters(self):
        return [FakeAdapter]


class OtherFakeAdapter(FakeAdapter):
    """Another class that claims the name 'fake'."""


class DuplicatePlugin:
    @hookimpl
    def kpi_engine_adapters(self):
        return [OtherFakeAdapter]


class RaisingPlugin:
    @hookimpl
    def kpi_engine_adapters(self):
        raise RuntimeError("warehouse driver missing")


class NotAnAdapter:
    name = "impostor"
    dialect = "duckdb"


class NonAdapterPlugin:
    @hookimpl
    def kpi_engine_adapters(self):
        return [NotAnAdapter]


class NoDialectAdapter(Adapter):
    name = "nodialect"

    @classmethod
    def connect(cls, settings, project_root):  # pragma: no cover - never connected
        raise AssertionError


class NoDialectPlugin:
    @hookimpl
    def kpi_engine_adapters(self):
        return [NoDialectAdapter]


class MisspelledPlugin:
    @hookimpl
    def kpi_engine_adaptors(self):  # sic: not a hook kpi-engine defines
        return [FakeAdapter]


SPECS = """\
sources:
  orders:
    table: orders
    time: ordered_at
    dimensions: [region]
kpis:
  revenue:
    unit: currency
    formula: sum(orders.amount)
  order_count:
    unit: count
    formula: count(orders)
  aov:
    unit: currency
    formula: revenue / order_count
"""


def write_project(root: Path, warehouse: str = "{adapter: fake}") -> Path:
    root.mkdir(parents=True)
    (root / "kpi_engine.yaml").write_text(f"name: shop\nwarehouse: {warehouse}\n")
    (root / "shop.yaml").write_text(SPECS)
    return root


def write_duckdb_project(root: Path) -> Path:
    """The same KPIs on the built-in adapter, reading data/orders.csv."""
    write_project(root, "{adapter: duckdb, data: data}")
    (root / "data").mkdir()
    lines = ["ordered_at,region,amount"] + [f"{d},{r},{a:g}" for d, r, a in ORDERS]
    (root / "data" / "orders.csv").write_text("\n".join(lines) + "\n")
    return root


def fresh_registry(*plugins: tuple[object, str]) -> Registry:
    registry = Registry(load_entry_points=False)
    registry.register(duckdb_plugin, "duckdb")
    for plugin, name in plugins:
        registry.register(plugin, name)
    return registry


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("KPI_ENGINE_DISABLE_PLUGINS", raising=False)
    FakeAdapter.connections.clear()
    yield
    FakeAdapter.connections.clear()


# --- a third-party adapter ---------------------------------------------------------------------------


def test_test_only_adapter_evaluates_kpis(tmp_path):
    registry = fresh_registry((FakePlugin(), "fake_plugin"))
    root = write_project(tmp_path / "shop")
    with KpiProject(load_project(root), registry=registry) as project:
        by_region = {r["region"]: (r["revenue"], r["order_count"], r["aov"])
                     for r in project.evaluate(["revenue", "order_count", "aov"], by=["region"]).to_dicts()}
        by_month = {r["period"].isoformat(): r["aov"] for r in project.evaluate(["aov"], grain="month").to_dicts()}
        total = project.evaluate(["revenue"], start="2025-03-15", end="2025-04-10").to_dicts()
    assert by_region == {"north": (210.0, 2.0, 210 / 2), "south": (300.0, 3.0, 300 / 3)}
    assert by_month == {"2025-03-01": pytest.approx(260 / 3), "2025-04-01": 250 / 2}
    # [03-15, 04-10): 90 + 50 + 150.
    assert total == [{"revenue": 290.0, "complete": True}]

    # One connection, opened with the settings minus 'adapter', closed with the project.
    assert len(FakeAdapter.connections) == 1
    settings, project_root, connection = FakeAdapter.connections[0]
    assert settings == {}
    assert project_root == root.resolve()
    assert connection.closed
    assert connection.queries, "the fake connection ran no query"


def test_adapter_settings_are_passed_through(tmp_path):
    registry = fresh_registry((FakePlugin(), "fake_plugin"))
    root = write_project(tmp_path / "shop", "{adapter: fake, schema: sales, threads: 4}")
    with KpiProject(load_project(root), registry=registry) as project:
        assert project.evaluate(["order_count"]).to_dicts() == [{"order_count": 5.0, "complete": True}]
    assert FakeAdapter.connections[0][0] == {"schema": "sales", "threads": 4}


def test_both_adapters_are_available_side_by_side(tmp_path):
    registry = fresh_registry((FakePlugin(), "fake_plugin"))
    adapters = registry.adapters()
    assert set(adapters) == {"duckdb", "fake"}
    assert adapters["fake"].adapter is FakeAdapter
    assert adapters["fake"].plugin.name == "fake_plugin"
    assert adapters["duckdb"].adapter is duckdb_plugin.DuckDBAdapter
    assert all(info.error is None for info in registry.plugins.values())
    # The same KPIs on the built-in adapter and CSV data give the same numbers.
    root = write_duckdb_project(tmp_path / "csv_shop")
    with KpiProject(load_project(root), registry=registry) as project:
        rows = project.evaluate(["aov"], by=["region"]).to_dicts()
    assert {r["region"]: r["aov"] for r in rows} == {"north": 105.0, "south": 100.0}
    assert FakeAdapter.connections == []


# --- the built-in adapter comes from the entry-point group --------------------------------------------


def test_duckdb_is_declared_in_the_entry_point_group():
    entry_points = {ep.name: ep for ep in metadata.entry_points(group="kpi_engine")}
    assert "duckdb" in entry_points
    assert entry_points["duckdb"].value == "kpi_engine.adapters.duckdb"
    assert entry_points["duckdb"].load() is duckdb_plugin


def test_registry_loads_duckdb_with_its_distribution(tmp_path):
    registry = Registry()
    assert registry.plugins["duckdb"] == PluginInfo(
        "duckdb", "kpi_engine.adapters.duckdb", "kpi-engine", metadata.version("kpi-engine"), None)
    assert registry.adapter("duckdb") is duckdb_plugin.DuckDBAdapter
    assert registry.adapters()["duckdb"].plugin.distribution == "kpi-engine"
    root = write_duckdb_project(tmp_path / "shop")
    with KpiProject(load_project(root), registry=registry) as project:
        assert project.evaluate(["revenue"]).to_dicts() == [{"revenue": 510.0, "complete": True}]  # 210 + 300


def test_registry_without_entry_points_has_no_adapters():
    registry = Registry(load_entry_points=False)
    assert registry.plugins == {}
    assert dict(registry.adapters()) == {}
    with pytest.raises(PluginError, match="no adapter named 'duckdb'"):
        registry.adapter("duckdb")


# --- broken plugins are reported, the rest keep working ----------------------------------------------


def test_plugin_whose_hook_raises_is_reported(tmp_path):
    registry = fresh_registry((RaisingPlugin(), "raiser"), (FakePlugin(), "fake_plugin"))
    adapters = registry.adapters()
    assert set(adapters) == {"duckdb", "fake"}
    error = registry.plugins["raiser"].error
    assert error is not None
    assert "RuntimeError" in error and "warehouse driver missing" in error
    assert registry.plugins["fake_plugin"].error is None
    assert registry.plugins["duckdb"].error is None
    root = write_project(tmp_path / "shop")
    with KpiProject(load_project(root), registry=registry) as project:
        assert project.evaluate(["revenue"]).to_dicts() == [{"revenue": 510.0, "complete": True}]


def test_hook_returning_a_non_adapter_is_reported():
    registry = fresh_registry((NonAdapterPlugin(), "impostor_plugin"))
    adapters = registry.adapters()
    assert "impostor" not in adapters
    assert "duckdb" in adapters
    error = registry.plugins["impostor_plugin"].error
    assert error is not None and "NotAnAdapter" in error and "Adapter" in error


def test_adapter_without_dialect_is_reported():
    registry = fresh_registry((NoDialectPlugin(), "nodialect_plugin"))
    assert "nodialect" not in registry.adapters()
    error = registry.plugins["nodialect_plugin"].error
    assert error is not None and "dialect" in error


def test_second_plugin_with_the_same_adapter_name_is_reported():
    registry = fresh_registry((FakePlugin(), "first"), (DuplicatePlugin(), "second"))
    adapters = registry.adapters()
    assert adapters["fake"].adapter is FakeAdapter
    assert adapters["fake"].plugin.name == "first"
    assert registry.plugins["first"].error is None
    error = registry.plugins["second"].error
    assert error is not None and "'fake'" in error and "first" in error


def test_misspelled_hook_is_rejected_as_invalid():
    plugin = MisspelledPlugin()
    registry = fresh_registry((plugin, "typo"), (FakePlugin(), "fake_plugin"))
    error = registry.plugins["typo"].error
    assert error is not None
    assert error.startswith("invalid plugin")
    assert "kpi_engine_adaptors" in error
    assert not registry.manager.is_registered(plugin)
    assert set(registry.adapters()) == {"duckdb", "fake"}
    assert registry.plugins["fake_plugin"].error is None


def test_second_plugin_under_a_taken_name_does_not_corrupt_the_first():
    first = FakePlugin()
    registry = fresh_registry((first, "shared"), (NonAdapterPlugin(), "shared"))
    assert registry.manager.get_plugin("shared") is first
    # The plugin actually registered under 'shared' is FakePlugin, and it works.
    assert registry.adapters()["fake"].adapter is FakeAdapter
    info = registry.plugins["shared"]
    assert info.module == "FakePlugin"
    assert info.error is None
    assert registry.adapters()["fake"].plugin.error is None


def test_unknown_adapter_suggests_the_close_name():
    registry = fresh_registry((FakePlugin(), "fake_plugin"))
    with pytest.raises(PluginError) as info:
        registry.adapter("duckbd")
    assert "no adapter named 'duckbd'" in str(info.value)
    assert "Did you mean 'duckdb'?" in str(info.value)
    assert info.value.exit_code == 1


def test_unknown_adapter_in_project_file(tmp_path):
    registry = fresh_registry((FakePlugin(), "fake_plugin"))
    root = write_project(tmp_path / "shop", "{adapter: faek}")
    with KpiProject(load_project(root), registry=registry) as project:
        with pytest.raises(PluginError) as info:
            project.evaluate(["revenue"])
    assert "'faek'" in str(info.value)
    assert "Did you mean 'fake'?" in str(info.value)


def test_unknown_adapter_error_names_failed_plugins():
    registry = fresh_registry((RaisingPlugin(), "raiser"))
    with pytest.raises(PluginError) as info:
        registry.adapter("fake")
    assert "raiser" in str(info.value)
    assert "warehouse driver missing" in str(info.value)


# --- entry points that fail to import -------------------------------------------------------------------


def _fake_entry_points(monkeypatch, *extra: metadata.EntryPoint) -> list[str | None]:
    real = {ep.name: ep for ep in metadata.entry_points(group="kpi_engine")}["duckdb"]
    groups: list[str | None] = []

    def entry_points(group=None, **kwargs):
        groups.append(group)
        return [*extra, real]

    monkeypatch.setattr(plugins_module.metadata, "entry_points", entry_points)
    return groups


def test_entry_point_that_fails_to_import_is_reported(monkeypatch, tmp_path):
    broken = metadata.EntryPoint(name="broken", value="no_such_module_xyz", group="kpi_engine")
    groups = _fake_entry_points(monkeypatch, broken)
    registry = Registry()
    assert groups == ["kpi_engine"]
    info = registry.plugins["broken"]
    assert info.module == "no_such_module_xyz"
    assert info.error is not None
    assert "no_such_module_xyz" in info.error and "ModuleNotFoundError" in info.error
    assert registry.plugins["duckdb"].error is None
    assert registry.adapter("duckdb") is duckdb_plugin.DuckDBAdapter
    root = write_duckdb_project(tmp_path / "shop")
    with KpiProject(load_project(root), registry=registry) as project:
        assert project.evaluate(["order_count"], by=["region"]).to_dicts() == [
            {"region": "north", "order_count": 2.0, "complete": True},
            {"region": "south", "order_count": 3.0, "complete": True}]


def test_entry_point_with_missing_attribute_is_reported(monkeypatch):
    broken = metadata.EntryPoint(name="noattr", value="kpi_engine.adapters.duckdb:no_such_attr", group="kpi_engine")
    _fake_entry_points(monkeypatch, broken)
    registry = Registry()
    assert "no_such_attr" in (registry.plugins["noattr"].error or "")
    assert "duckdb" in registry.adapters()


def test_plugins_command_shows_a_failed_entry_point(monkeypatch):
    broken = metadata.EntryPoint(name="broken", value="no_such_module_xyz", group="kpi_engine")
    _fake_entry_points(monkeypatch, broken)
    from kpi_engine.cli import cli

    default_registry.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["plugins", "--format", "json"])
    finally:
        default_registry.cache_clear()
    assert result.exit_code == 0, result.output
    rows = {row["plugin"]: row for row in json.loads(result.stdout)}
    assert rows["duckdb"]["status"] == "ok"
    assert rows["broken"]["status"].startswith("failed:")
    assert "no_such_module_xyz" in rows["broken"]["status"]
    assert rows["broken"]["adapters"] == []


# --- disabling plugins ------------------------------------------------------------------------------------


def test_disable_env_leaves_duckdb_out(monkeypatch):
    monkeypatch.setenv("KPI_ENGINE_DISABLE_PLUGINS", "duckdb")
    registry = Registry()
    assert "duckdb" not in registry.plugins
    assert "duckdb" not in registry.adapters()
    with pytest.raises(PluginError):
        registry.adapter("duckdb")


def test_disable_env_is_a_comma_separated_list(monkeypatch):
    monkeypatch.setenv("KPI_ENGINE_DISABLE_PLUGINS", "something_else , duckdb")
    assert "duckdb" not in Registry().adapters()
    monkeypatch.setenv("KPI_ENGINE_DISABLE_PLUGINS", "something_else")
    assert "duckdb" in Registry().adapters()


def test_queries_passed_to_adapters_name_the_kpis_they_compute():
    """hookspecs.asked_kpis: what adapters put in a warehouse's query tag or label."""
    from kpi_engine.engine import open_project
    from kpi_engine.hookspecs import asked_kpis

    class Recording(Connection):
        dialect = "duckdb"

        def __init__(self, inner):
            self.inner, self.asked = inner, []

        def execute(self, query):
            self.asked.append(asked_kpis(query))
            return self.inner.execute(query)

        def columns(self, relation):
            return self.inner.columns(relation)

    root = Path(__file__).resolve().parent.parent / "examples" / "marketing"
    with open_project(root) as project:
        recording = Recording(project.connection())
        project._connection = recording
        project.evaluate(["cost_per_lead", "close_rate"], by=["channel"], grain="month")
        project.evaluate(formulas=["spend_k=sum(ad_spend.spend) / 1000"])
    assert recording.asked == [(), ("cost_per_lead", "close_rate"), ("spend_k",)]  # the extents query: none
    assert asked_kpis(exp.select("1")) == ()
