"""Trino (and Starburst) through the trino client: ``pip install 'kpi-engine-cloud[trino]'``.

::

    warehouse: trino://analyst@trino.example.com:443/hive/marketing
    # with TRINO_PASSWORD set, the client logs in with HTTP basic authentication over HTTPS

Each query is sent with ``source = kpi-engine`` and client tags ``kpi-engine`` and
``kpi:<name>`` for each KPI (shown in the Web UI and system.runtime.queries, usable by resource
group selectors). A timeout or Ctrl-C calls ``cursor.cancel()``, and the ``query_max_run_time``
session property bounds it in Trino too. Trino has no read-only session: give the user SELECT
only (kpi-engine sends nothing but SELECTs).
"""

from __future__ import annotations

from kpi_engine.hookspecs import hookimpl
from sqlglot import exp

from .base import APPLICATION, CloudAdapter, CloudConnection, Running, Target


def client_tags(kpis: tuple[str, ...]) -> list[str]:
    return [APPLICATION, *(f"kpi:{name}" for name in kpis)]


class TrinoConnection(CloudConnection):
    dialect = "trino"
    name_case = "lower"  # Trino folds names to lower case

    def open_session(self, kpis: tuple[str, ...] = ()):
        """A client session: no network until a query runs; one per query carries its tags."""
        values, secrets = self.target.values, self.target.secrets
        arguments = dict(host=values["host"], port=int(values.get("port") or 443), user=values["user"],
                         catalog=values.get("catalog"), schema=values.get("schema"), source=APPLICATION,
                         client_tags=client_tags(kpis), timezone="UTC",
                         http_scheme=values.get("http_scheme") or "https")
        if self.target.query_timeout:
            arguments["session_properties"] = {"query_max_run_time": f"{max(1, round(self.target.query_timeout))}s"}
        if secrets.get("password"):
            from trino.auth import BasicAuthentication

            arguments["auth"] = BasicAuthentication(values["user"], secrets["password"])
        return self.driver.connect(**arguments)

    def credentials_hint(self) -> str:
        return "TRINO_PASSWORD"

    def run(self, session, sql, kpis, running: Running):
        tagged = self.open_session(kpis)
        try:
            cursor = tagged.cursor()
            running.started(cursor)
            cursor.execute(sql)
            rows = cursor.fetchall()
            return tuple(column[0] for column in cursor.description or ()), rows
        finally:
            tagged.close()

    def cancel(self, running: Running) -> None:
        running.handle.cancel()

    def current_schema(self):
        return exp.column("current_schema")  # a Trino function written without parentheses


class TrinoAdapter(CloudAdapter):
    name = "trino"
    schemes = ("starburst",)
    dialect = "trino"
    warehouse = "Trino"
    driver, package, extra = "trino.dbapi", "trino", "trino"
    description = "Trino through the trino client (client tags, cursor.cancel on timeout): trino://user@host:443/catalog/schema"
    settings = ("host", "port", "user", "catalog", "schema", "http_scheme")
    secret_env = {"password": "TRINO_PASSWORD"}
    required = ("host", "user")
    url_example = "trino://analyst@trino.example.com:443/hive/marketing"
    connection_class = TrinoConnection

    @classmethod
    def url_parts(cls, user, host, port, path):
        return {"user": user, "host": host, "port": str(port) if port else None,
                "catalog": path[0] if path else None, "schema": path[1] if len(path) > 1 else None}

    @classmethod
    def where(cls, target: Target) -> str:
        return f"{target.values.get('host')}:{target.values.get('port') or 443}"


@hookimpl
def kpi_engine_adapters():
    return [TrinoAdapter]
