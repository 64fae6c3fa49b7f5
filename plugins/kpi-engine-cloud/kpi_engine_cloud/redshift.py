"""Amazon Redshift through redshift_connector: ``pip install 'kpi-engine-cloud[redshift]'``.

::

    warehouse: redshift://analyst@examplecluster.abc123.us-west-2.redshift.amazonaws.com:5439/marketing
    # the password from REDSHIFT_PASSWORD

Every query runs in a transaction of its own begun ``BEGIN READ ONLY`` and rolled back; ``query_group`` is set to
kpi-engine (it shows as the label in STL_QUERY and SYS_QUERY_HISTORY) and each query starts with
a comment naming kpi-engine and its KPIs. A timeout or Ctrl-C cancels the query from a second
connection with ``pg_cancel_backend`` (redshift_connector has no cancel call), and
``statement_timeout`` bounds it in Redshift too.
"""

from __future__ import annotations

import contextlib

from kpi_engine.hookspecs import hookimpl
from sqlglot import exp

from .base import APPLICATION, CloudAdapter, CloudConnection, Running, Target, query_label

#: PostgreSQL type OIDs of cursor.description (Redshift's subset).
TYPE_CODES = {16: "BOOLEAN", 20: "BIGINT", 21: "SMALLINT", 23: "INTEGER", 25: "TEXT", 700: "REAL",
              701: "DOUBLE PRECISION", 1042: "CHARACTER", 1043: "CHARACTER VARYING", 1082: "DATE",
              1114: "TIMESTAMP", 1184: "TIMESTAMP WITH TIME ZONE", 1700: "NUMERIC"}


def comment(kpis: tuple[str, ...]) -> str:
    """The leading comment of a query: ``/* kpi-engine: a, b */`` (KPI names are identifiers)."""
    return f"/* {query_label(kpis)} */ "


class RedshiftConnection(CloudConnection):
    dialect = "redshift"
    name_case = "lower"  # Redshift folds identifiers to lower case, quoted or not (by default)

    def __init__(self, target, driver):
        self._pids: dict[int, int] = {}  # id of a session -> its backend process id, for pg_cancel_backend
        super().__init__(target, driver)

    def arguments(self) -> dict:
        values = self.target.values
        arguments = dict(host=values["host"], port=int(values.get("port") or 5439), database=values["database"],
                         user=values["user"], password=self.target.secrets.get("password"),
                         application_name=APPLICATION, ssl=True, timeout=int(values.get("connect_timeout") or 10))
        return arguments

    def open_session(self):
        session = self.driver.connect(**self.arguments())
        try:
            session.autocommit = True  # each query runs in a READ ONLY transaction of its own (run)
            cursor = session.cursor()
            cursor.execute(f"SET query_group TO {exp.Literal.string(APPLICATION).sql(dialect='redshift')}")
            cursor.execute("SET timezone TO 'UTC'")
            if self.target.query_timeout:
                cursor.execute(f"SET statement_timeout TO {max(1, round(self.target.query_timeout * 1000))}")
            cursor.execute("SELECT pg_backend_pid()")
            self._pids[id(session)] = int(cursor.fetchone()[0])
            cursor.close()
        except BaseException:
            with contextlib.suppress(Exception):
                session.close()
            raise
        return session

    def credentials_hint(self) -> str:
        return "REDSHIFT_PASSWORD"

    def run(self, session, sql, kpis, running: Running):
        cursor = session.cursor()
        running.started(self._pids[id(session)])
        try:
            cursor.execute("BEGIN READ ONLY")
            try:
                cursor.execute(comment(kpis) + sql)
                return tuple(column[0] for column in cursor.description or ()), cursor.fetchall()
            finally:
                with contextlib.suppress(Exception):  # a cancelled or failed query left it aborted
                    cursor.execute("ROLLBACK")
        finally:
            cursor.close()

    def cancel(self, running: Running) -> None:
        """pg_cancel_backend from a second connection: the first is busy with the query."""
        killer = self.driver.connect(**{**self.arguments(), "timeout": 5})
        try:
            killer.autocommit = True
            cursor = killer.cursor()
            cursor.execute("SELECT pg_cancel_backend(%s)", (int(running.handle),))
            cursor.close()
        finally:
            killer.close()

    def type_name(self, code):
        return TYPE_CODES.get(code, str(code))


class RedshiftAdapter(CloudAdapter):
    name = "redshift"
    dialect = "redshift"
    warehouse = "Redshift"
    driver, package, extra = "redshift_connector", "redshift_connector", "redshift"
    description = ("Amazon Redshift through redshift_connector (read-only transactions, pg_cancel_backend on timeout): "
                   "redshift://user@host:5439/database")
    settings = ("host", "port", "database", "user", "connect_timeout")
    secret_env = {"password": "REDSHIFT_PASSWORD"}
    required = ("host", "database", "user")
    url_example = "redshift://analyst@examplecluster.abc123.us-west-2.redshift.amazonaws.com:5439/marketing"
    connection_class = RedshiftConnection

    @classmethod
    def url_parts(cls, user, host, port, path):
        return {"user": user, "host": host, "port": str(port) if port else None, "database": path[0] if path else None}

    @classmethod
    def where(cls, target: Target) -> str:
        return f"{target.values.get('host')}:{target.values.get('port') or 5439}"


@hookimpl
def kpi_engine_adapters():
    return [RedshiftAdapter]
