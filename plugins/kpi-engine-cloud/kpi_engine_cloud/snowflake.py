"""Snowflake through snowflake-connector-python: ``pip install 'kpi-engine-cloud[snowflake]'``.

::

    warehouse: snowflake://analyst@myorg-account1/MARKETING/PUBLIC?warehouse=REPORTING&role=ANALYST
    # the password from SNOWFLAKE_PASSWORD, or key-pair authentication:
    warehouse: {adapter: snowflake, account: myorg-account1, user: analyst, database: MARKETING,
                schema: PUBLIC, warehouse: REPORTING, private_key_file: keys/analyst.p8}

Each query is submitted asynchronously, so its query id is known while it runs: a timeout or
Ctrl-C aborts it in Snowflake (``cursor.abort_query``, i.e. SYSTEM$CANCEL_QUERY). The
``QUERY_TAG`` session parameter names kpi-engine and the KPIs of each query, and
``STATEMENT_TIMEOUT_IN_SECONDS`` bounds it in the warehouse too. Snowflake has no read-only
session: give the role SELECT only (kpi-engine sends nothing but SELECTs).
"""

from __future__ import annotations

import time

from kpi_engine.hookspecs import hookimpl
from sqlglot import exp

from .base import APPLICATION, CloudAdapter, CloudConnection, Running, Target, query_label

#: Type codes of the connector's cursor.description (snowflake.connector.constants.FIELD_ID_TO_NAME).
TYPE_CODES = {0: "NUMBER", 1: "FLOAT", 2: "TEXT", 3: "DATE", 4: "TIMESTAMP", 5: "VARIANT", 6: "TIMESTAMP_LTZ",
              7: "TIMESTAMP_TZ", 8: "TIMESTAMP_NTZ", 9: "OBJECT", 10: "ARRAY", 11: "BINARY", 12: "TIME",
              13: "BOOLEAN"}
#: Session parameters the rendered SQL and the reading of its results rely on.
SESSION_PARAMETERS = {"TIMEZONE": "UTC", "QUOTED_IDENTIFIERS_IGNORE_CASE": False, "QUERY_TAG": APPLICATION}


class SnowflakeConnection(CloudConnection):
    dialect = "snowflake"
    name_case = "upper"  # unquoted names are stored upper-case; kpi-engine quotes them: they match as written

    def open_session(self):
        values, secrets = self.target.values, self.target.secrets
        parameters = dict(SESSION_PARAMETERS)
        if self.target.query_timeout:
            parameters["STATEMENT_TIMEOUT_IN_SECONDS"] = max(1, round(self.target.query_timeout))
        arguments = dict(account=values["account"], user=values["user"], application=APPLICATION,
                         session_parameters=parameters, login_timeout=int(values.get("login_timeout") or 60))
        for key in ("warehouse", "database", "schema", "role", "authenticator"):
            if values.get(key):
                arguments[key] = values[key]
        if values.get("private_key_file"):
            arguments["private_key_file"] = values["private_key_file"]
            if secrets.get("private_key_file_pwd"):
                arguments["private_key_file_pwd"] = secrets["private_key_file_pwd"]
        elif secrets.get("password"):
            arguments["password"] = secrets["password"]
        return self.driver.connect(**arguments)

    def credentials_hint(self) -> str:
        return "SNOWFLAKE_PASSWORD, or private_key_file with SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"

    def run(self, session, sql, kpis, running: Running):
        cursor = session.cursor()
        try:
            tag = exp.Literal.string(query_label(kpis)).sql(dialect="snowflake")
            cursor.execute(f"ALTER SESSION SET QUERY_TAG = {tag}")
            submitted = cursor.execute_async(sql)
            running.started(submitted["queryId"])
            pause = 0.05
            while session.is_still_running(session.get_query_status_throw_if_error(running.handle)):
                time.sleep(pause)  # a Python wait: Ctrl-C and the timer get their turn
                pause = min(pause * 2, 1.0)
            cursor.get_results_from_sfqid(running.handle)
            rows = cursor.fetchall()
            return tuple(column[0] for column in cursor.description or ()), rows
        finally:
            cursor.close()

    def cancel(self, running: Running) -> None:
        cursor = running.session.cursor()
        try:
            cursor.abort_query(running.handle)
        finally:
            cursor.close()

    def type_name(self, code):
        return TYPE_CODES.get(code, str(code))


class SnowflakeAdapter(CloudAdapter):
    name = "snowflake"
    dialect = "snowflake"
    warehouse = "Snowflake"
    driver, package, extra = "snowflake.connector", "snowflake-connector-python", "snowflake"
    description = ("Snowflake through snowflake-connector-python (query tags, abort on timeout): "
                   "snowflake://user@account/database/schema?warehouse=WH")
    settings = ("account", "user", "database", "schema", "warehouse", "role", "authenticator", "private_key_file",
                "login_timeout")
    secret_env = {"password": "SNOWFLAKE_PASSWORD", "private_key_file_pwd": "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"}
    required = ("account", "user")
    path_settings = ("private_key_file",)
    url_example = "snowflake://analyst@myorg-account1/MARKETING/PUBLIC?warehouse=REPORTING"
    connection_class = SnowflakeConnection

    @classmethod
    def url_parts(cls, user, host, port, path):
        return {"user": user, "account": host, "database": path[0] if path else None,
                "schema": path[1] if len(path) > 1 else None}

    @classmethod
    def where(cls, target: Target) -> str:
        return f"account {target.values.get('account')}"


@hookimpl
def kpi_engine_adapters():
    return [SnowflakeAdapter]
