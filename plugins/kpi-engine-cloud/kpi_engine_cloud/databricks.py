"""Databricks SQL through databricks-sql-connector: ``pip install 'kpi-engine-cloud[databricks]'``.

::

    warehouse: databricks://adb-1234567890123456.7.azuredatabricks.net/sql/1.0/warehouses/abc123?catalog=main&schema=marketing
    # the personal access token (or a service principal's OAuth token) from DATABRICKS_TOKEN

Each query carries query tags (``application: kpi-engine``, ``kpis: <names>``, the connector's
``query_tags``, shown in the query history) and a leading comment saying the same. A timeout or
Ctrl-C calls ``cursor.cancel()``, and the ``STATEMENT_TIMEOUT`` session setting bounds it in the
warehouse too. Databricks has no read-only session: give the token's principal SELECT only
(kpi-engine sends nothing but SELECTs).
"""

from __future__ import annotations

from kpi_engine.hookspecs import hookimpl

from .base import APPLICATION, CloudAdapter, CloudConnection, Running, Target, query_label


def query_tags(kpis: tuple[str, ...]) -> dict[str, str]:
    tags = {"application": APPLICATION}
    if kpis:
        tags["kpis"] = ",".join(kpis)
    return tags


class DatabricksConnection(CloudConnection):
    dialect = "databricks"
    name_case = "lower"  # Unity Catalog stores names in lower case

    def open_session(self):
        values = self.target.values
        configuration = {"TIMEZONE": "UTC", "ANSI_MODE": "true"}
        if self.target.query_timeout:
            configuration["STATEMENT_TIMEOUT"] = str(max(1, round(self.target.query_timeout)))
        arguments = dict(server_hostname=values["host"], http_path=values["http_path"],
                         access_token=self.target.secrets.get("access_token"), user_agent_entry=APPLICATION,
                         session_configuration=configuration)
        for key in ("catalog", "schema"):
            if values.get(key):
                arguments[key] = values[key]
        return self.driver.connect(**arguments)

    def credentials_hint(self) -> str:
        return "DATABRICKS_TOKEN"

    def run(self, session, sql, kpis, running: Running):
        cursor = session.cursor()
        running.started(cursor)
        try:
            cursor.execute(f"/* {query_label(kpis)} */ {sql}", query_tags=query_tags(kpis))
            return tuple(column[0] for column in cursor.description or ()), cursor.fetchall()
        finally:
            cursor.close()

    def cancel(self, running: Running) -> None:
        running.handle.cancel()  # the connector allows it from another thread

    type_column = "full_data_type"


class DatabricksAdapter(CloudAdapter):
    name = "databricks"
    dialect = "databricks"
    warehouse = "Databricks"
    driver, package, extra = "databricks.sql", "databricks-sql-connector", "databricks"
    description = ("Databricks SQL through databricks-sql-connector (query tags, cursor.cancel on timeout): "
                   "databricks://host/sql/1.0/warehouses/ID?catalog=main&schema=marketing")
    settings = ("host", "http_path", "catalog", "schema")
    secret_env = {"access_token": "DATABRICKS_TOKEN"}
    required = ("host", "http_path")
    url_example = "databricks://adb-123.azuredatabricks.net/sql/1.0/warehouses/abc123?catalog=main&schema=marketing"
    connection_class = DatabricksConnection

    @classmethod
    def url_parts(cls, user, host, port, path):
        return {"host": host, "http_path": "/" + "/".join(path) if path else None}

    @classmethod
    def where(cls, target: Target) -> str:
        return str(target.values.get("host"))


@hookimpl
def kpi_engine_adapters():
    return [DatabricksAdapter]
