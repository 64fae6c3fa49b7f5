"""The fakes against the real drivers: every argument an adapter passes to the fake driver's
connect() is one the official driver takes, and every driver call the adapters make exists in
it. Runs where the drivers are installed (pip install 'kpi-engine-cloud[all]', as CI does with
KPI_ENGINE_REQUIRE_CLOUD_DRIVERS=1, where a missing driver fails instead of skipping). No
warehouse is contacted: connect() is never called on a real driver."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os

import pytest
from conftest import NAMES, SECRET, SECRET_ENV, SETTINGS, open_on
from fakes import FakeWarehouse, install

import kpi_engine_cloud

ADAPTERS = {adapter.name: adapter for adapter in kpi_engine_cloud.ADAPTERS}


def real(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        message = f"{module} is not installed (pip install './plugins/kpi-engine-cloud[all]')"
        if os.environ.get("KPI_ENGINE_REQUIRE_CLOUD_DRIVERS") == "1":
            pytest.fail(f"the cloud drivers are required (KPI_ENGINE_REQUIRE_CLOUD_DRIVERS=1) but {message}",
                        pytrace=False)
        pytest.skip(message)


def parameters(function) -> set[str]:
    return {name for name, p in inspect.signature(function).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def accepted(name: str) -> set[str]:
    """The keyword arguments the real driver's connect takes."""
    if name == "snowflake":
        real("snowflake.connector")
        try:
            from snowflake.connector.connection_config import ConnectionConfig  # the 5.x connector
            return {f.name for f in dataclasses.fields(ConnectionConfig)} | {"private_key_file_pwd"}
        except ImportError:  # the 3.x connector validates against this table
            from snowflake.connector.connection import DEFAULT_CONFIGURATION
            return set(DEFAULT_CONFIGURATION)
    if name == "bigquery":
        return parameters(real("google.cloud.bigquery").Client.__init__)
    if name == "redshift":
        return parameters(real("redshift_connector").connect)
    if name == "databricks":
        from_client = parameters(importlib.import_module("databricks.sql.client").Connection.__init__) \
            if real("databricks.sql") else set()
        return from_client | {"user_agent_entry"}  # read from **kwargs, documented
    return parameters(real("trino.dbapi").Connection.__init__)


@pytest.mark.parametrize("name", NAMES)
def test_connect_arguments_exist_in_the_real_driver(name, monkeypatch, tmp_path):
    warehouse = FakeWarehouse(ADAPTERS[name].dialect)
    with pytest.MonkeyPatch.context() as patch:
        install(patch, name, warehouse)
        if name == "bigquery":
            (tmp_path / "key.json").write_text('{"type": "service_account"}')
            patch.setenv(SECRET_ENV[name], str(tmp_path / "key.json"))
        else:
            patch.setenv(SECRET_ENV[name], SECRET)
        with open_on({**SETTINGS[name], "query_timeout": 60}) as project:
            project.connection()
    passed = set(warehouse.connects[0])
    unknown = passed - accepted(name)
    assert not unknown, f"{name}: the real driver does not take {sorted(unknown)}"


def test_the_driver_calls_the_adapters_make_exist():
    connector = real("snowflake.connector")
    cursor_class = connector.cursor.SnowflakeCursor if hasattr(connector, "cursor") else None
    cursor_class = cursor_class or importlib.import_module("snowflake.connector.cursor").SnowflakeCursor
    for method in ("execute", "execute_async", "get_results_from_sfqid", "abort_query", "fetchall"):
        assert callable(getattr(cursor_class, method)), method
    assert issubclass(connector.Error, Exception)
    connection_class = connector.SnowflakeConnection
    for method in ("get_query_status_throw_if_error", "is_still_running", "cursor", "close"):
        assert callable(getattr(connection_class, method)), method

    bigquery = real("google.cloud.bigquery")
    config = bigquery.QueryJobConfig(labels={"application": "kpi-engine"}, use_legacy_sql=False, dry_run=True)
    config.default_dataset = "acme-analytics.marketing"
    config.maximum_bytes_billed = 10**9
    config.job_timeout_ms = 60_000
    assert config.labels == {"application": "kpi-engine"} and int(config.job_timeout_ms) == 60_000
    assert callable(bigquery.QueryJob.cancel) and callable(bigquery.QueryJob.result)
    assert "job_config" in parameters(bigquery.Client.query)
    from google.api_core import exceptions
    from google.oauth2 import service_account

    from google.auth.exceptions import GoogleAuthError

    assert issubclass(exceptions.GoogleAPIError, Exception) and issubclass(GoogleAuthError, Exception)

    assert callable(service_account.Credentials.from_service_account_file)

    assert issubclass(real("redshift_connector").Error, Exception)

    databricks = real("databricks.sql")
    cursor = importlib.import_module("databricks.sql.client").Cursor
    assert "query_tags" in parameters(cursor.execute) and callable(cursor.cancel)
    assert issubclass(databricks.Error, Exception)

    trino = real("trino.dbapi")
    assert callable(trino.Cursor.cancel)
    from trino.auth import BasicAuthentication

    assert parameters(BasicAuthentication.__init__) >= {"username", "password"}
    assert issubclass(trino.Error, Exception)
