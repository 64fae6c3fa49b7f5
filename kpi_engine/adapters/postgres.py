"""The PostgreSQL adapter (psycopg 3): ``pip install 'kpi-engine[postgres]'``.

Settings (``warehouse:`` in kpi_engine.yaml), either a URL::

    warehouse: postgresql://analyst:${PG_PASSWORD}@db.example.com:5432/marketing?sslmode=require

or a mapping::

    warehouse:
      adapter: postgres
      host: db.example.com        # or a URL in 'url', the keys below override its parts
      port: 5432
      dbname: marketing
      user: analyst
      password: ${PG_PASSWORD}    # or password_file: secrets/pg_password, or PGPASSWORD / ~/.pgpass
      sslmode: require
      connect_timeout: 10         # seconds (default 10)
      statement_timeout: 60       # seconds; a longer query is cancelled
      pool_size: 4                # connections opened on demand for concurrent evaluations

``${NAME}`` in any value is replaced by the environment variable ``NAME``. In a URL the
variables are replaced after the URL is parsed, so a password with ``@`` or ``/`` needs no
escaping; a URL that is entirely ``${NAME}`` is read from the variable first. What libpq reads
itself (``PGHOST``, ``PGPASSWORD``, ``~/.pgpass``, ``PGSSLMODE``...) applies to anything not set.

Sessions are read-only: every query runs in a ``READ ONLY`` transaction of a session opened with
``default_transaction_read_only=on``, and is rolled back afterwards. The password never appears
in a message. Registered through the ``kpi_engine`` entry-point group, like DuckDB.

The session settings the SQL and the reading of results depend on (``PINNED_SETTINGS``:
``standard_conforming_strings``, the client encoding, date, interval and float output, and the
time zone) are set when the session opens, over whatever the server, the database, the role or
``PGOPTIONS`` say, then read back: a session that does not have them is refused. A string
literal holding a backslash is written as an escape string (``E'a\\\\b'``), whose meaning no
setting changes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import unquote

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres

from ..errors import ConnectionFailed, QueryFailed, QueryTimeout, WarehouseError
from ..hookspecs import Adapter, Connection, Rows, hookimpl, timeout_seconds
from ..redaction import redact

INSTALL_HINT = "pip install 'kpi-engine[postgres]'"
URL_SCHEMES = ("postgresql", "postgres")
#: Settings passed to libpq as they are (after ${ENV} interpolation).
LIBPQ_SETTINGS = ("host", "port", "dbname", "user", "password", "sslmode", "connect_timeout")
SETTINGS = ("url", *LIBPQ_SETTINGS, "password_file", "statement_timeout", "query_timeout", "pool_size", "writable")
DEFAULT_CONNECT_TIMEOUT = 10
DEFAULT_POOL_SIZE = 4
SOURCE_HINT = "Check that the tables and columns the sources name exist ('kpi-engine validate' checks them)."

_log = logging.getLogger("kpi_engine.postgres")
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Session settings the rendered SQL and the reading of its results rely on, set at connect time
#: and checked: with standard_conforming_strings off, 'a\' would not end where sqlglot ends it;
#: psycopg reads dates, intervals and floats in these output formats; CAST(timestamptz AS
#: timestamp) reads the stored UTC time only in UTC.
PINNED_SETTINGS = {"standard_conforming_strings": "on", "client_encoding": "UTF8", "DateStyle": "ISO",
                   "IntervalStyle": "postgres", "extra_float_digits": "3", "TimeZone": "UTC"}


# --- settings ----------------------------------------------------------------------------------


def interpolate(value: Any, what: str) -> str:
    """``${NAME}`` -> the environment variable NAME. An unset variable is an error naming the
    variable and the setting, never the value."""
    def replace(match: re.Match) -> str:
        name = match.group(1)
        if not _VARIABLE_NAME.match(name):
            raise WarehouseError(f"'${{{name}}}' in the warehouse setting '{what}' is not an environment variable "
                                 "reference.", None, "Write ${NAME} with NAME made of letters, digits and '_'.")
        if name not in os.environ:
            raise WarehouseError(f"the environment variable {name} is not set (used in the warehouse setting "
                                 f"'{what}').", None, f"Set {name} in the environment, or change '{what}' in "
                                 "kpi_engine.yaml.")
        return os.environ[name]

    return _VARIABLE.sub(replace, str(value))


def _seconds(value: Any, what: str) -> float:
    return timeout_seconds(interpolate(value, what), what)


def _split_url_option(url: str, name: str) -> tuple[str, str | None]:
    """Take ``name=value`` out of a URL's query string (libpq does not know it); keep the rest as written."""
    base, sep, query = url.partition("?")
    if not sep:
        return url, None
    kept, value = [], None
    for pair in query.split("&"):
        key, _, raw = pair.partition("=")
        if unquote(key) == name:
            value = unquote(raw)
        elif pair:
            kept.append(pair)
    return (base + "?" + "&".join(kept) if kept else base), value


def _parse_url(url: str) -> tuple[dict[str, str], str | None]:
    """A postgresql:// URL -> (libpq parameters, statement_timeout from its query string)."""
    from psycopg.conninfo import conninfo_to_dict

    text = url.strip()
    if _VARIABLE.fullmatch(text):  # the whole URL comes from the environment
        text = interpolate(text, "url").strip()
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.split("+")[0].lower() not in URL_SCHEMES:
        raise WarehouseError("the warehouse URL is not a PostgreSQL URL.", None,
                             "Write it as postgresql://user:password@host:port/dbname (or postgres://...).")
    text, timeout = _split_url_option("postgresql://" + rest, "statement_timeout")
    try:
        parsed = conninfo_to_dict(text)
    except Exception as error:  # psycopg.ProgrammingError: the message may quote the URL or the password
        secrets = [text, url, *_url_passwords(text)]
        raise WarehouseError(f"the warehouse URL is not valid: {redact(_first_line(error), secrets)}.", None,
                             "Write it as postgresql://user:password@host:port/dbname?sslmode=require; "
                             "percent-encode special characters, or use ${NAME} for the password.") from None
    params = {key: interpolate(value, f"url ({key})") for key, value in parsed.items() if value is not None}
    return params, timeout


def _url_passwords(url: str) -> list[str]:
    """What may be the password in a URL that libpq could not parse: from the first ':' of the
    user info to the first and to the last '@'."""
    rest = url.partition("://")[2]
    user_info, at, _ = rest.rpartition("@")
    if not at or ":" not in user_info:
        return []
    password = user_info.partition(":")[2]
    return [password, password.partition("@")[0]]


def connection_parameters(settings: Mapping[str, Any], project_root: Path) -> tuple[dict[str, Any], float | None, int]:
    """(keyword arguments for psycopg.connect, statement_timeout in seconds, pool size)."""
    settings = dict(settings)
    writable = settings.pop("writable", None) is True  # kpi-engine materialize alone: it writes rollup tables
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise WarehouseError(f"unknown PostgreSQL setting(s): {', '.join(unknown)}.", None,
                             f"PostgreSQL takes {', '.join(SETTINGS)}.")
    params: dict[str, Any] = {}
    timeout: Any = None
    if settings.get("url"):
        params, timeout = _parse_url(str(settings["url"]))
    for key in LIBPQ_SETTINGS:
        if settings.get(key) is not None:
            params[key] = interpolate(settings[key], key)
    if settings.get("password_file") is not None:
        if settings.get("password") is not None:
            raise WarehouseError("both 'password' and 'password_file' are set.", None, "Keep one of them.")
        file = project_root / interpolate(settings["password_file"], "password_file")
        try:
            params["password"] = file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as error:
            raise WarehouseError(f"cannot read the password file '{file}': {error.strerror or error}.", None,
                                 "Fix 'password_file' (relative to the project folder).") from None
    if settings.get("statement_timeout") is not None:
        timeout = settings["statement_timeout"]
    if settings.get("query_timeout") is not None:  # the engine-wide name (kpi-engine --timeout)
        timeout = settings["query_timeout"]
    seconds = _seconds(timeout, "statement_timeout") if timeout not in (None, "") else None
    if "connect_timeout" in params:
        params["connect_timeout"] = str(max(1, math.ceil(_seconds(params["connect_timeout"], "connect_timeout"))))
    elif not os.environ.get("PGCONNECT_TIMEOUT"):
        params["connect_timeout"] = str(DEFAULT_CONNECT_TIMEOUT)
    pool_size = settings.get("pool_size", DEFAULT_POOL_SIZE)
    try:
        pool_size = int(interpolate(pool_size, "pool_size"))
    except ValueError:
        pool_size = 0
    if pool_size < 1:
        raise WarehouseError("the warehouse setting 'pool_size' must be a whole number of at least 1.", None,
                             "For example 'pool_size: 4'.")
    # Read-only sessions; the timeout is enforced by the server. Options given at connect time
    # override the server's, the database's and the role's settings; later ones override PGOPTIONS.
    options = [params.get("options") or os.environ.get("PGOPTIONS", ""),
               "" if writable else "-c default_transaction_read_only=on", pinned_options()]
    if seconds is not None:
        options.append(f"-c statement_timeout={max(1, round(seconds * 1000))}")
    params["options"] = " ".join(option for option in options if option)
    if not os.environ.get("PGAPPNAME"):
        params.setdefault("application_name", "kpi-engine")
    return params, seconds, pool_size


def pinned_options() -> str:
    """``-c name=value`` for each of PINNED_SETTINGS (none of the values holds a space)."""
    return " ".join(f"-c {name}={value}" for name, value in PINNED_SETTINGS.items())


def check_settings(connection, where: str) -> None:
    """Refuse a session whose pinned settings are not what the engine set (a connection pooler
    may drop startup options): the SQL would not mean what it says."""
    names = list(PINNED_SETTINGS)
    rows = connection.execute("SELECT current_setting(name) FROM unnest(%s::text[]) WITH ORDINALITY AS s(name, i) "
                              "ORDER BY i", (names,)).fetchall()
    for name, (value,) in zip(names, rows):
        if not _setting_matches(name, value):
            raise ConnectionFailed(f"the PostgreSQL session at {where} has {name} = '{value}', and kpi-engine "
                                   f"needs '{PINNED_SETTINGS[name]}'; it set it when connecting, but the setting "
                                   "did not hold, so no query is run.", None,
                                   "Connect to the server directly, or let the connection pooler pass startup "
                                   f"options (PgBouncer: not in ignore_startup_parameters), or set {name} to "
                                   f"'{PINNED_SETTINGS[name]}' for this role (ALTER ROLE ... SET).")


def _setting_matches(name: str, value: str | None) -> bool:
    expected = PINNED_SETTINGS[name]
    if name == "DateStyle":  # 'ISO, MDY': the output format is what matters
        return (value or "").split(",")[0].strip().upper() == expected
    return (value or "").strip().upper() == expected.upper()


# --- messages ----------------------------------------------------------------------------------


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _server_message(error: BaseException) -> str:
    """The server's own words: the primary message of a query error, without "ERROR:"."""
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    return primary or re.sub(r"^(ERROR|FATAL):\s*", "", _first_line(error))


def _where(params: Mapping[str, Any]) -> str:
    host = params.get("host") or os.environ.get("PGHOST") or "localhost"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    return f"{host}:{port}" if not str(host).startswith("/") else f"socket {host} port {port}"


def connect_error(error: BaseException, params: Mapping[str, Any], secrets: list[str]) -> WarehouseError:
    """A failed connection attempt as one clear, password-free message."""
    detail = redact(" ".join(str(error).split()), secrets)
    low = detail.lower()
    sqlstate = getattr(error, "sqlstate", None)
    where = _where(params)
    user = params.get("user") or os.environ.get("PGUSER") or "(default)"
    dbname = params.get("dbname") or os.environ.get("PGDATABASE") or user
    if sqlstate == "28P01" or "password authentication failed" in low or "authentication failed" in low:
        return ConnectionFailed(f"PostgreSQL authentication failed for user '{user}' at {where}.", None,
                              "Check the user name and password ('password', 'password_file', ${NAME} variables, "
                              "PGPASSWORD or ~/.pgpass).")
    if "no password supplied" in low or "password is required" in low:
        return ConnectionFailed(f"PostgreSQL at {where} asks for a password for user '{user}' and none was given.",
                              None, "Set 'password' (e.g. password: ${PG_PASSWORD}), 'password_file', PGPASSWORD "
                              "or ~/.pgpass.")
    if sqlstate == "3D000" or re.search(r"database \S+ does not exist", low):
        return ConnectionFailed(f"the PostgreSQL database '{dbname}' does not exist at {where}.", None,
                              "Fix 'dbname' (or the path of the URL), or create the database.")
    if re.search(r"role \S+ does not exist", low):
        return ConnectionFailed(f"PostgreSQL authentication failed: the user '{user}' does not exist at {where}.",
                              None, "Fix 'user' in the warehouse settings.")
    if re.search(r"pg_hba\.conf|no pg_hba", low):
        return ConnectionFailed(f"the PostgreSQL server at {where} does not accept this connection (pg_hba.conf).",
                              None, "Ask the administrator to allow the user from this host, or set 'sslmode'.")
    unreachable = ("connection refused", "could not connect", "timeout expired", "could not translate host name",
                   "no route to host", "network is unreachable", "name or service not known",
                   "nodename nor servname", "no such file or directory", "connection timed out")
    if any(phrase in low for phrase in unreachable):
        return ConnectionFailed(f"cannot reach the PostgreSQL server at {where}: {_reason(detail)}.", None,
                              "Check 'host' and 'port', that the server is running and accepts TCP connections, "
                              "and any firewall in between.")
    return ConnectionFailed(f"cannot connect to PostgreSQL at {where}: {_reason(detail)}.", None,
                          "Check the warehouse settings in kpi_engine.yaml.")


def _reason(detail: str) -> str:
    """'connection to server at "h", port 1 failed: Connection refused Is the server...' -> 'Connection refused'."""
    reason = detail.rsplit("failed:", 1)[-1].strip()
    reason = re.sub(r"^(FATAL|ERROR):\s*", "", reason)
    reason = reason.split(" Is the server running", 1)[0].strip()
    return reason.rstrip(".") or "connection failed"


def query_error(error: BaseException, timeout: float | None, secrets: list[str], lost: bool = False,
                elapsed: float | None = None) -> WarehouseError:
    """A failed query as one clear, password-free message. A query is never run again after a
    failure: a query cancelled or a session ended by the server says so (``elapsed``: seconds the
    query ran, to tell the statement_timeout from a cancel by someone else)."""
    from psycopg import errors as pg

    message = redact(_server_message(error), secrets)
    if isinstance(error, pg.QueryCanceled) and (timeout is None or (elapsed is not None and elapsed < timeout)):
        return QueryFailed(f"PostgreSQL cancelled the query before it finished: {message}. It was not run again.",
                           None, "An administrator or another session cancelled it (pg_cancel_backend), or a "
                                 "standby server did; run the command again, or ask them why.")
    if isinstance(error, pg.QueryCanceled):
        return QueryTimeout(f"PostgreSQL cancelled the query after the statement_timeout of {timeout:g} s: "
                            f"{message}.", None,
                            "Raise 'statement_timeout' in the warehouse settings, or ask for less "
                            "(a shorter --from/--to range, fewer KPIs or dimensions).")
    if isinstance(error, (pg.AdminShutdown, pg.CrashShutdown)):
        return ConnectionFailed(f"PostgreSQL ended the session while the query ran: {message}. "
                                "The query was not run again.", None,
                                "An administrator or another session ended it (pg_terminate_backend), or the server "
                                "is shutting down or restarting; run the command again once it is available.")
    if isinstance(error, pg.UndefinedTable):
        return QueryFailed(f"the query reads a table that does not exist in PostgreSQL: {message}.", None,
                              SOURCE_HINT)
    if isinstance(error, pg.UndefinedColumn):
        return QueryFailed(f"the query reads a column that does not exist in PostgreSQL: {message}.", None,
                              SOURCE_HINT)
    if isinstance(error, pg.InsufficientPrivilege):
        return QueryFailed(f"PostgreSQL refused the query: {message}.", None,
                              "Grant the warehouse user SELECT on the tables the sources read.")
    if isinstance(error, pg.ReadOnlySqlTransaction):
        return QueryFailed(f"the PostgreSQL session is read-only: {message}.", None,
                              "kpi-engine only reads from the warehouse.")
    if lost:
        return ConnectionFailed(f"lost the connection to PostgreSQL while the query ran: "
                                f"{redact(_first_line(error), secrets)}. The query was not run again.", None,
                                "Check that the server is running and reachable, then try again.")
    return QueryFailed(f"the query failed in PostgreSQL: {message}.", None, SOURCE_HINT)


# --- connections --------------------------------------------------------------------------------


class _Pool:
    """A few psycopg connections opened on demand and shared by threads: each query borrows one."""

    def __init__(self, open_connection, size: int):
        self._open_connection = open_connection
        self._size = size
        self._idle: list = []
        self._count = 0  # open connections, idle or borrowed
        self._closed = False
        self._condition = threading.Condition()

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        connection = self._acquire()
        try:
            yield connection
        finally:
            self._release(connection)

    def _acquire(self):
        while True:
            with self._condition:
                if self._closed:
                    raise WarehouseError("the PostgreSQL connection is closed.", None,
                                         "Open the project again.")
                if self._idle:
                    connection = self._idle.pop()
                elif self._count < self._size:
                    self._count += 1
                    break
                else:
                    self._condition.wait()
                    continue
            alive = False
            try:
                alive = _alive(connection)
            finally:
                if not alive:  # dropped while idle, or Ctrl-C during the check: counted out, closed
                    _close_quietly(connection)
                    self._release(connection)
            if alive:
                return connection
        try:
            return self._open_connection()
        except BaseException:
            with self._condition:
                self._count -= 1
                self._condition.notify()
            raise

    def _release(self, connection) -> None:
        with self._condition:
            if self._closed or connection.closed or connection.broken:
                self._count -= 1
                _close_quietly(connection)
            else:
                self._idle.append(connection)
            self._condition.notify()

    def close(self) -> None:
        with self._condition:
            self._closed = True
            for connection in self._idle:
                _close_quietly(connection)
            self._count -= len(self._idle)
            self._idle.clear()
            self._condition.notify_all()


def _alive(connection) -> bool:
    """Whether an idle pooled connection still works: an empty statement outside any transaction,
    one round trip. The server may have closed it meanwhile (a restart, an idle timeout, an
    administrator); then a new connection is opened for the query instead. This is the only
    retry: a query that fails once it is sent is never sent again."""
    import psycopg

    if connection.closed or connection.broken:
        return False
    try:
        connection.autocommit = True
        connection.execute("")
        connection.autocommit = False
        return True
    except psycopg.Error as error:
        _log.info("a pooled PostgreSQL connection no longer works (%s); opening a new one",
                  _first_line(error))
        return False


def _close_quietly(connection) -> None:
    with contextlib.suppress(Exception):
        connection.close()


class PostgresConnection(Connection):
    """Connections to one PostgreSQL database; safe to share between threads."""

    dialect = "postgres"

    def __init__(self, params: Mapping[str, Any], statement_timeout: float | None = None,
                 pool_size: int = DEFAULT_POOL_SIZE, writable: bool = False):
        self._params = dict(params)
        self._writable = writable
        self._secrets = [str(self._params["password"])] if self._params.get("password") else []
        self.statement_timeout = statement_timeout
        self._pool = _Pool(self._open, pool_size)
        with self._pool.connection():  # connect now: a wrong password or host is reported when opening
            pass

    def _open(self):
        import psycopg

        try:
            connection = psycopg.connect(**self._params, autocommit=False, prepare_threshold=None)
        except psycopg.Error as error:
            raise connect_error(error, self._params, self._secrets) from None
        connection.read_only = not self._writable  # every transaction is BEGIN READ ONLY, but materialize's
        try:
            check_settings(connection, _where(self._params))
        except BaseException:
            _close_quietly(connection)
            raise
        finally:
            _rollback(connection)
        return connection

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        """Borrow a psycopg connection (read-only; rolled back when given back)."""
        with self._pool.connection() as connection:
            try:
                yield connection
            finally:
                _rollback(connection)

    def execute(self, query) -> Rows:
        import psycopg

        if not isinstance(query, exp.Expression):
            raise TypeError("PostgresConnection.execute takes a sqlglot expression")
        sql = render(query)
        with self.session() as connection:  # a connection checked alive (see _alive)
            started = time.monotonic()
            try:
                cursor = connection.execute(sql)
                columns = tuple(column.name for column in cursor.description or ())
                return Rows(columns, cursor.fetchall())
            except psycopg.Error as error:  # sent once: a failure, even a lost connection, is reported
                raise query_error(error, self.statement_timeout, self._secrets, connection.closed,
                                  time.monotonic() - started) from None

    def stream(self, query, batch_size: int | None = 10_000):
        """Rows in batches of ``batch_size``, read through a server-side cursor: PostgreSQL keeps
        the result and sends one batch per FETCH, so a large result never sits whole in Python.
        The pooled connection stays borrowed until the last batch is read (or the iterator is
        closed); ``statement_timeout`` applies to the query and to each FETCH."""
        import psycopg

        if batch_size is None:
            rows = self.execute(query)
            return rows.columns, iter([rows.rows] if rows.rows else [])
        if not isinstance(query, exp.Expression):
            raise TypeError("PostgresConnection.stream takes a sqlglot expression")
        sql = render(query)
        session = self.session()
        connection = session.__enter__()
        started = time.monotonic()
        try:
            cursor = connection.cursor(name="kpi_engine_stream")  # in the session's read-only transaction
            cursor.execute(sql)
            columns = tuple(column.name for column in cursor.description or ())
        except BaseException as error:
            lost = connection.closed
            session.__exit__(None, None, None)
            if isinstance(error, psycopg.Error):
                raise query_error(error, self.statement_timeout, self._secrets, lost,
                                  time.monotonic() - started) from None
            raise
        return columns, self._batches(session, connection, cursor, batch_size)

    def _batches(self, session, connection, cursor, batch_size: int):
        import psycopg

        try:
            while True:
                started = time.monotonic()
                try:
                    batch = cursor.fetchmany(batch_size)
                except psycopg.Error as error:
                    raise query_error(error, self.statement_timeout, self._secrets, connection.closed,
                                      time.monotonic() - started) from None
                if not batch:
                    return
                yield batch
        finally:
            with contextlib.suppress(Exception):
                cursor.close()
            session.__exit__(None, None, None)  # rolled back and given back to the pool

    def write(self, statements) -> None:
        """Run sqlglot statements in one transaction, all or none (kpi-engine materialize, on a
        connection opened ``writable``)."""
        import psycopg

        if not self._writable:
            raise QueryFailed("this PostgreSQL connection is read-only.", None,
                              "Rollups are written by 'kpi-engine materialize', which opens its own connection.")
        with self._pool.connection() as connection:
            started = time.monotonic()
            try:
                for statement in statements:
                    connection.execute(render(statement))
                connection.commit()
            except psycopg.Error as error:
                _rollback(connection)
                failure = query_error(error, self.statement_timeout, self._secrets, connection.closed,
                                      time.monotonic() - started)
                raise type(failure)(f"writing to PostgreSQL failed, and nothing was written: {failure.message}",
                                    None, failure.hint) from None
            except BaseException:
                _rollback(connection)
                raise

    def columns(self, relation) -> Mapping[str, str] | None:
        import psycopg
        from psycopg import errors as pg

        sql = render(exp.select(exp.Star()).from_(relation).limit(0))
        with self.session() as connection:
            try:
                cursor = connection.execute(sql)
                described = [(column.name, column.type_code) for column in cursor.description or []]
                names = {}
                for name, oid in described:
                    info = connection.adapters.types.get(oid)
                    names[name] = info.regtype if info is not None else self._type_name(connection, oid)
                return names
            except (pg.UndefinedTable, pg.InvalidSchemaName):
                return None
            except psycopg.Error as error:
                what = (f"table {'.'.join(part.name for part in relation.parts)}"
                        if isinstance(relation, exp.Table) else "the source's sql")
                raise WarehouseError(f"cannot describe {what} in PostgreSQL: "
                                     f"{redact(_server_message(error), self._secrets)}.", None,
                                     "Check the source's table or sql.") from None

    @staticmethod
    def _type_name(connection, oid: int) -> str:
        """The name of a type psycopg does not know (an enum, a domain, an extension type)."""
        row = connection.execute("SELECT format_type(%s::oid, NULL)", (oid,)).fetchone()
        return row[0] if row and row[0] else str(oid)

    def close(self) -> None:
        self._pool.close()


def _rollback(connection) -> None:
    """End the read-only transaction; this also undoes any SET the query made."""
    if not connection.closed:
        try:
            connection.rollback()
        except Exception:  # a broken connection is dropped by the pool
            _close_quietly(connection)


class PostgresEscapeStrings(Postgres):
    r"""PostgreSQL, with every string literal that holds a backslash written as an escape string
    E'...' (backslashes and quotes escaped). A plain '...' literal means one thing when
    standard_conforming_strings is on and another when it is off ('a\' would swallow its
    closing quote); an escape string means the same under both."""

    class Generator(Postgres.Generator):
        def literal_sql(self, expression: exp.Literal) -> str:
            if expression.is_string and "\\" in expression.this:
                return "E'" + expression.this.replace("\\", "\\\\").replace("'", "''") + "'"
            return super().literal_sql(expression)


def render(query) -> str:
    """The SQL text run on PostgreSQL for a compiled query."""
    return PostgresAdapter.prepare(query).sql(dialect=PostgresEscapeStrings)


# --- the adapter --------------------------------------------------------------------------------


def _round_on_numeric(node: exp.Expression) -> exp.Expression:
    """ROUND(x, n) -> ROUND(CAST(x AS NUMERIC), n): PostgreSQL has no ROUND(double precision, int),
    and its ROUND(double precision) breaks ties to even (2.5 -> 2) where NUMERIC rounds them away
    from zero, as the other warehouses do."""
    if isinstance(node, exp.Round):
        value = node.this
        if not (isinstance(value, exp.Cast) and value.to.is_type(exp.DataType.Type.DECIMAL)):
            node = node.copy()
            node.set("this", exp.cast(value, exp.DataType.build("NUMERIC", dialect="postgres")))
    return node


class PostgresAdapter(Adapter):
    name = "postgres"
    schemes = ("postgres", "postgresql")
    dialect = "postgres"
    description = "PostgreSQL through psycopg 3 (read-only sessions): postgresql://user:password@host/dbname"

    @classmethod
    def prepare(cls, query):
        """Every ROUND on NUMERIC: PostgreSQL has no ROUND(double precision, integer), and its
        ROUND(double precision) breaks ties to even."""
        if next(query.find_all(exp.Round), None) is None:
            return query
        return query.transform(_round_on_numeric)

    @classmethod
    def connect(cls, settings: Mapping[str, Any], project_root: Path) -> Connection:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise WarehouseError("the PostgreSQL adapter needs psycopg, which is not installed.", None,
                                 f"Install it with: {INSTALL_HINT}") from None
        params, timeout, pool_size = connection_parameters(settings, project_root)
        return PostgresConnection(params, timeout, pool_size, writable=settings.get("writable") is True)


@hookimpl
def kpi_engine_adapters():
    return [PostgresAdapter]
