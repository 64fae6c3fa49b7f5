"""Fake driver modules: small DB-API doubles of the five official drivers, installed in
sys.modules by the tests, that record what the adapters send (connect() arguments, session
statements, tags and labels, SQL text, cancel calls) and answer from a ``FakeWarehouse``.

They imitate the parts of each driver the adapters use, with the drivers' own names:
snowflake.connector (execute_async, get_query_status_throw_if_error, is_still_running,
get_results_from_sfqid, abort_query), google.cloud.bigquery (Client.query, QueryJobConfig,
job.result / job.cancel / job.schema), redshift_connector (connect, cursor, autocommit),
databricks.sql (connect, cursor.execute(query_tags=...), cursor.cancel) and trino.dbapi
(connect(client_tags=..., source=...), cursor.cancel)."""

from __future__ import annotations

import itertools
import threading
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import sqlglot
from sqlglot import exp


class FakeError(Exception):
    """The driver's error class (each fake module exposes it under the driver's name)."""


@dataclass
class Sent:
    sql: str
    tags: Any = None  # what labelled it: a query tag, labels, client tags
    session: int = 0


@dataclass
class FakeWarehouse:
    """What the fake drivers talk to. ``answer(sql)`` gives (columns, rows); ``slow`` queries
    wait until cancelled (or ``release`` is set); ``fail`` makes every query fail with it."""

    dialect: str
    answer: Callable[[str], tuple[list[str], list[tuple]]] | None = None
    slow: bool = False
    fail: str | None = None
    asynchronous: bool = False  # queries run beside the client, which polls (Snowflake's execute_async)
    connects: list[dict] = field(default_factory=list)
    statements: list[Sent] = field(default_factory=list)  # session statements (SET, ALTER SESSION...)
    queries: list[Sent] = field(default_factory=list)
    cancels: list[Any] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)  # a slow query runs (and the client waits)
    cancelled: threading.Event = field(default_factory=threading.Event)
    column_types: dict[str, Any] = field(default_factory=dict)  # type codes cursor.description reports
    sessions: itertools.count = field(default_factory=lambda: itertools.count(1))

    def query(self, sql: str, tags: Any = None, session: int = 0) -> tuple[list[str], list[tuple]]:
        self.queries.append(Sent(sql, tags, session))
        parsed = sqlglot.parse_one(self.strip(sql), read=self.dialect)  # what is sent parses back
        assert isinstance(parsed, exp.Query), sql
        if self.fail:
            raise FakeError(self.fail)
        if self.slow:
            if not self.asynchronous:  # the client waits in this call
                self.started.set()
            if not self.cancelled.wait(10):
                raise AssertionError("the slow query was never cancelled")
            raise FakeError("Query was cancelled by the client")
        if self.answer is None:
            return list(parsed.named_selects), []
        return self.answer(sql)

    @staticmethod
    def strip(sql: str) -> str:
        """The SQL without a leading /* label */ comment."""
        if sql.startswith("/*"):
            return sql[sql.index("*/") + 2:].lstrip()
        return sql

    def cancel(self, what: Any) -> None:
        self.cancels.append(what)
        self.cancelled.set()


def connector(warehouse: FakeWarehouse, connection_class):
    """connect(**arguments): recorded, then a connection, or the failure ``fail`` asks for."""
    def connect(**arguments):
        warehouse.connects.append(arguments)
        if warehouse.fail and warehouse.fail.startswith("connect:"):
            raise FakeError(warehouse.fail[8:])
        return connection_class(arguments)

    return connect


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


# --- snowflake.connector ------------------------------------------------------------------------

def snowflake_modules(warehouse: FakeWarehouse) -> dict[str, types.ModuleType]:
    warehouse.asynchronous = True
    results: dict[str, tuple[list[str], list[tuple]]] = {}
    errors: dict[str, BaseException] = {}
    query_ids = itertools.count(1)

    class Cursor:
        def __init__(self, connection):
            self.connection, self.description, self._rows = connection, None, []

        def execute(self, sql, params=None):
            if sql.upper().startswith("ALTER SESSION"):
                warehouse.statements.append(Sent(sql, session=self.connection.number))
                tag = sqlglot.parse_one(sql, read="snowflake")
                self.connection.tag = tag.find(exp.Literal).this
                return self
            columns, rows = warehouse.query(sql, self.connection.tag, self.connection.number)
            self.description = [(name, warehouse.column_types.get(name, 2)) for name in columns]
            self._rows = rows
            return self

        def execute_async(self, sql):
            qid = f"01b-{next(query_ids)}"
            self.connection.running[qid] = True

            def work():
                try:
                    results[qid] = warehouse.query(sql, self.connection.tag, self.connection.number)
                except BaseException as error:
                    errors[qid] = error
                finally:
                    self.connection.running[qid] = False

            threading.Thread(target=work, daemon=True).start()
            return {"queryId": qid}

        def get_results_from_sfqid(self, qid):
            columns, rows = results[qid]
            self.description = [(name, 2) for name in columns]
            self._rows = rows

        def abort_query(self, qid):
            warehouse.cancel(qid)
            return True

        def fetchall(self):
            return list(self._rows)

        def close(self):
            pass

    class Connection:
        def __init__(self, arguments):
            self.number, self.tag, self.running = next(warehouse.sessions), None, {}
            self.arguments = arguments

        def cursor(self):
            return Cursor(self)

        def get_query_status_throw_if_error(self, qid):
            if warehouse.slow:
                warehouse.started.set()  # the client polls: the query is submitted and running
            if qid in errors:
                raise ProgrammingError(str(errors[qid]))
            return "RUNNING" if self.running.get(qid) else "SUCCESS"

        @staticmethod
        def is_still_running(status):
            return status == "RUNNING"

        def close(self):
            pass

    class ProgrammingError(FakeError):
        pass

    connect = connector(warehouse, Connection)

    module = _module("snowflake.connector", connect=connect, Error=FakeError, ProgrammingError=ProgrammingError)
    return {"snowflake": _module("snowflake", connector=module), "snowflake.connector": module}


# --- google.cloud.bigquery ----------------------------------------------------------------------

def bigquery_modules(warehouse: FakeWarehouse) -> dict[str, types.ModuleType]:
    class GoogleAPIError(FakeError):
        pass

    class QueryJobConfig:
        def __init__(self, **settings):
            self.__dict__.update(settings)

    @dataclass
    class SchemaField:
        name: str
        field_type: str

    class Row(tuple):
        def values(self):
            return tuple(self)

    class Job:
        def __init__(self, sql, config, client):
            self.sql, self.config, self.client, self.done = sql, config, client, threading.Event()
            self.schema = []
            if getattr(config, "dry_run", False):
                columns, _ = warehouse.query(sql, config.labels, client.number)
                self.schema = [SchemaField(name, warehouse.column_types.get(name, "STRING")) for name in columns]

        def result(self):
            try:
                columns, rows = warehouse.query(self.sql, self.config.labels, self.client.number)
            except FakeError as error:
                raise GoogleAPIError(str(error)) from None
            self.schema = [SchemaField(name, "STRING") for name in columns]
            return _Result(self.schema, [Row(row) for row in rows])

        def cancel(self):
            warehouse.cancel(self)
            return True

    class _Result(list):
        def __init__(self, schema, rows):
            super().__init__(rows)
            self.schema = schema

    class Client:
        def __init__(self, project=None, credentials=None, location=None):
            warehouse.connects.append(dict(project=project, credentials=credentials, location=location))
            self.number = next(warehouse.sessions)

        def query(self, sql, job_config=None):
            return Job(sql, job_config, self)

        def close(self):
            pass

    class Credentials:
        @classmethod
        def from_service_account_file(cls, path):
            with open(path, encoding="utf-8") as handle:  # a missing key file fails as the real one does
                text = handle.read()
            if '"type": "service_account"' not in text:  # what google-auth says of a malformed key file
                raise ValueError("Service account info was not in the expected format, missing fields client_email.")
            return ("service-account", path, text)

    exceptions = _module("google.api_core.exceptions", GoogleAPIError=GoogleAPIError)
    service_account = _module("google.oauth2.service_account", Credentials=Credentials)
    bigquery = _module("google.cloud.bigquery", Client=Client, QueryJobConfig=QueryJobConfig)
    return {"google.cloud.bigquery": bigquery, "google.api_core": _module("google.api_core", exceptions=exceptions),
            "google.api_core.exceptions": exceptions, "google.oauth2": _module("google.oauth2",
                                                                             service_account=service_account),
            "google.oauth2.service_account": service_account}


# --- DB-API drivers: redshift_connector, databricks.sql, trino.dbapi -----------------------------

def dbapi_modules(warehouse: FakeWarehouse, kind: str) -> dict[str, types.ModuleType]:
    class Cursor:
        def __init__(self, connection):
            self.connection, self.description, self._rows = connection, None, []

        def execute(self, sql, params=None, query_tags=None):
            statement = sql.split(None, 1)[0].upper()
            if statement in ("SET", "BEGIN", "ROLLBACK") or sql.startswith("SELECT pg_"):
                warehouse.statements.append(Sent(sql if params is None else (sql, params),
                                                 session=self.connection.number))
                if sql == "SELECT pg_backend_pid()":
                    self._rows = [(4000 + self.connection.number,)]
                if sql.startswith("SELECT pg_cancel_backend"):
                    warehouse.cancel(params)
                return self
            tags = query_tags if kind == "databricks" else self.connection.arguments.get("client_tags")
            columns, rows = warehouse.query(sql, tags, self.connection.number)
            self.description = [(name, warehouse.column_types.get(name, "string"), None, None, None, None, None)
                                for name in columns]
            self._rows = rows
            return self

        def fetchall(self):
            return list(self._rows)

        def fetchone(self):
            return self._rows[0] if self._rows else None

        def cancel(self):
            warehouse.cancel(self)

        def close(self):
            pass

    class Connection:
        def __init__(self, arguments):
            self.arguments, self.number, self.autocommit = arguments, next(warehouse.sessions), False

        def cursor(self):
            return Cursor(self)

        def close(self):
            pass

    connect = connector(warehouse, Connection)

    if kind == "redshift":
        return {"redshift_connector": _module("redshift_connector", connect=connect, Error=FakeError)}
    if kind == "databricks":
        sql_module = _module("databricks.sql", connect=connect, Error=FakeError)
        return {"databricks": _module("databricks", sql=sql_module), "databricks.sql": sql_module}

    @dataclass
    class BasicAuthentication:
        user: str
        password: str

    dbapi = _module("trino.dbapi", connect=connect, Error=FakeError)
    auth = _module("trino.auth", BasicAuthentication=BasicAuthentication)
    return {"trino": _module("trino", dbapi=dbapi, auth=auth), "trino.dbapi": dbapi, "trino.auth": auth}


def install(monkeypatch, name: str, warehouse: FakeWarehouse) -> None:
    """Put the fake driver of adapter ``name`` in sys.modules for the test."""
    modules = {"snowflake": snowflake_modules, "bigquery": bigquery_modules}.get(name)
    found = modules(warehouse) if modules else dbapi_modules(warehouse, name)
    for module_name, module in found.items():
        monkeypatch.setitem(__import__("sys").modules, module_name, module)
