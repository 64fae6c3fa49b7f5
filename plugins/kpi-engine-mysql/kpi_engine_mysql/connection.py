"""Read-only sessions on a MySQL or MariaDB server through pymysql, shared by threads.

Each thread gets its own pymysql connection (opened on first use, checked with a ping before
each query, reopened when the server dropped it while idle). Every session is set up the same
way when it opens, then read back, and refused when a setting did not hold:

- ``SET SESSION TRANSACTION READ ONLY``: every statement runs in a read-only transaction
  (autocommit), so nothing kpi-engine sends can change a table;
- ``PINNED_SETTINGS``: the SQL mode (no ``ANSI_QUOTES``, ``NO_BACKSLASH_ESCAPES``,
  ``PIPES_AS_CONCAT``...: sqlglot's MySQL SQL quotes names with backticks and escapes
  backslashes in strings), the time zone (UTC), the character sets (``utf8mb4``: in GBK, Big5
  or SJIS a character can end in the byte of a backslash) and no row limit;
- the query timeout: ``max_statement_time`` (seconds) on MariaDB, ``max_execution_time``
  (milliseconds) on MySQL, enforced by the server.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from typing import Any, Mapping

from kpi_engine.errors import ConnectionFailed, QueryFailed, QueryTimeout, WarehouseError
from kpi_engine.hookspecs import Connection, Rows, rendered_text
from kpi_engine.redaction import redact
from sqlglot import exp

from .rewrite import UTC_OFFSET, named_zones, to_mysql
from .settings import Target

_log = logging.getLogger("kpi_engine.mysql")

#: Session settings the rendered SQL and the reading of its results rely on.
PINNED_SETTINGS = {
    "sql_mode": "NO_ENGINE_SUBSTITUTION",
    "time_zone": "+00:00",
    "character_set_client": "utf8mb4",
    "character_set_connection": "utf8mb4",
    "character_set_results": "utf8mb4",
    "sql_select_limit": "18446744073709551615",
}
#: What sets them (the character sets: charset= at connect); the limit is a number, not a string.
_SET_BY_STATEMENT = {"sql_mode": PINNED_SETTINGS["sql_mode"], "time_zone": PINNED_SETTINGS["time_zone"],
                     "sql_select_limit": int(PINNED_SETTINGS["sql_select_limit"])}
#: The oldest servers whose SQL the rendering needs (WITH, window functions, CAST(x AS DOUBLE)).
MIN_MYSQL, MIN_MARIADB = (8, 0, 17), (10, 5, 0)
SOURCE_HINT = "Check that the tables and columns the sources name exist ('kpi-engine validate' checks them)."

# Server error numbers (MySQL's and MariaDB's manuals).
_ACCESS_DENIED, _DB_ACCESS_DENIED, _UNKNOWN_DATABASE, _HOST_NOT_ALLOWED = 1045, 1044, 1049, 1130
_NO_SUCH_TABLE, _UNKNOWN_COLUMN, _SYNTAX, _NO_FUNCTION = 1146, 1054, 1064, 1305
_TABLE_DENIED, _COLUMN_DENIED = 1142, 1143
_INTERRUPTED, _MARIADB_TIMEOUT, _MYSQL_TIMEOUT = 1317, 1969, 3024
_READ_ONLY_TRANSACTION = 1792
_CANNOT_CONNECT, _UNKNOWN_HOST, _GONE_AWAY, _LOST = 2003, 2005, 2006, 2013
_SERVER_SHUTDOWN = (1053, 1927, 4031)  # shutdown in progress, connection killed, idle timeout


def _code(error: BaseException) -> int | None:
    args = getattr(error, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _text(error: BaseException) -> str:
    args = getattr(error, "args", ())
    text = args[1] if len(args) > 1 and isinstance(args[1], str) else str(error)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


class MySQLConnection(Connection):
    """Read-only sessions on one MySQL or MariaDB database; safe to share between threads."""

    dialect = "mysql"

    def __init__(self, target: Target):
        self.target = target
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[Any] = []
        self._closed = False
        self.server_version = ""
        self._zones: set[str] = set()  # time zone names the server was seen to know
        self._local.session = self._open()  # a wrong password or host is reported when connecting

    @property
    def is_mariadb(self) -> bool:
        return "mariadb" in self.server_version.lower()

    # -- sessions
    def _open(self):
        import pymysql

        target = self.target
        try:
            session = pymysql.connect(**target.connect_arguments())
        except pymysql.Error as error:
            raise connect_error(error, target) from None
        except OSError as error:  # a certificate file that cannot be read, for one
            raise ConnectionFailed(f"cannot connect to MySQL at {target.where}: "
                                   f"{redact(str(error), target.secrets)}.", None,
                                   "Check 'ssl_ca' and the server's address.") from None
        try:
            self._set_up(session)
        except BaseException:
            with contextlib.suppress(Exception):
                session.close()
            raise
        with self._lock:
            if self._closed:
                session.close()
                raise WarehouseError("the MySQL connection is closed.", None, "Open the project again.")
            self._opened.append(session)
        return session

    def _set_up(self, session) -> None:
        import pymysql

        target = self.target
        try:
            with session.cursor() as cursor:
                cursor.execute("SELECT VERSION()")
                self.server_version = str(cursor.fetchone()[0])
                problem = version_problem(self.server_version)
                if problem:
                    raise ConnectionFailed(f"the server at {target.where} is {problem}", None,
                                           "Upgrade the server, or evaluate on a copy of the data in a newer one.")
                cursor.execute("SET SESSION TRANSACTION READ ONLY")
                assignments = ", ".join(f"SESSION {name} = %s" for name in _SET_BY_STATEMENT)
                cursor.execute(f"SET {assignments}", list(_SET_BY_STATEMENT.values()))
                if target.query_timeout is not None:
                    if self.is_mariadb:
                        cursor.execute("SET SESSION max_statement_time = %s", [target.query_timeout])
                    else:
                        cursor.execute("SET SESSION max_execution_time = %s",
                                       [max(1, round(target.query_timeout * 1000))])
                names = list(PINNED_SETTINGS)
                cursor.execute("SELECT " + ", ".join(f"@@SESSION.{name}" for name in names))
                values = cursor.fetchone()
                read_only = _read_only(cursor)
        except pymysql.Error as error:
            raise ConnectionFailed(f"cannot set up the MySQL session at {target.where}: "
                                   f"{redact(_text(error), target.secrets)}.", None,
                                   "kpi-engine needs MySQL 8.0 or MariaDB 10.5 or later; check the server.") from None
        for name, value in zip(names, values):
            if str(value).upper() != PINNED_SETTINGS[name].upper():
                raise ConnectionFailed(
                    f"the MySQL session at {target.where} has {name} = '{value}', and kpi-engine needs "
                    f"'{PINNED_SETTINGS[name]}'; it set it when connecting, but the setting did not hold, so no "
                    "query is run.", None,
                    "Connect to the server directly rather than through a proxy that rewrites session settings, "
                    f"or ask the administrator why {name} cannot be set for this session.")
        if not read_only:
            raise ConnectionFailed(f"the MySQL session at {target.where} did not become read-only "
                                   "(SET SESSION TRANSACTION READ ONLY did not hold), so no query is run.", None,
                                   "Connect to the server directly, or use a user that may set its session "
                                   "read-only.")

    def _session(self):
        """This thread's session, alive: a session the server dropped while it was idle is replaced
        before the query is sent (never after)."""
        import pymysql

        if self._closed:
            raise WarehouseError("the MySQL connection is closed.", None, "Open the project again.")
        session = getattr(self._local, "session", None)
        if session is not None:
            try:
                session.ping(reconnect=False)
                return session
            except (pymysql.Error, OSError) as error:
                _log.info("a MySQL session no longer works (%s); opening a new one", _text(error))
                self._forget(session)
        session = self._local.session = self._open()
        return session

    def _forget(self, session) -> None:
        self._local.session = None
        with self._lock:
            if session in self._opened:
                self._opened.remove(session)
        with contextlib.suppress(Exception):
            session.close()

    def _abandon(self, session) -> None:
        """Interrupted while the server worked (Ctrl-C): stop the query on the server from a
        second session, and drop this one, whose reply was not read."""
        import pymysql

        with contextlib.suppress(Exception):
            thread_id = session.thread_id()
            killer = pymysql.connect(**{**self.target.connect_arguments(), "connect_timeout": 5})
            try:
                with killer.cursor() as cursor:
                    cursor.execute("KILL QUERY %s", [int(thread_id)])
            finally:
                killer.close()
        self._forget(session)

    # -- queries
    def execute(self, query) -> Rows:
        import pymysql

        if not isinstance(query, exp.Expression):
            raise TypeError("MySQLConnection.execute takes a sqlglot expression")
        if not isinstance(query, exp.Query):
            raise QueryFailed(f"MySQL connections of kpi-engine only read: {type(query).__name__} is not a query.",
                              None, "Pass a SELECT.")
        prepared, sql = query, rendered_text(query, self.dialect)  # the engine's request: prepared already
        if sql is None:  # any other tree
            prepared = to_mysql(query)
            sql = prepared.sql(dialect=self.dialect)
        session = self._session()
        try:
            with session.cursor() as cursor:
                self._check_zones(cursor, named_zones(prepared))
                cursor.execute(sql)
                columns = tuple(column[0] for column in cursor.description or ())
                return Rows(columns, list(cursor.fetchall()))
        except pymysql.Error as error:  # sent once: a failure, even a lost connection, is reported
            failure = query_error(error, self.target)
            if _code(error) in (_GONE_AWAY, _LOST, *_SERVER_SHUTDOWN) or not session.open:
                self._forget(session)
            raise failure from None
        except BaseException:
            self._abandon(session)
            raise

    def _check_zones(self, cursor, zones: set[str]) -> None:
        """Refuse a query that converts to a time zone the server does not know: CONVERT_TZ would
        be null for every row, and every KPI empty, without an error."""
        for zone in sorted(zones - self._zones):
            cursor.execute("SELECT CONVERT_TZ('2000-01-01 00:00:00', %s, %s)", [UTC_OFFSET, zone])
            if cursor.fetchone()[0] is None:
                raise QueryFailed(
                    f"MySQL at {self.target.where} does not know the time zone '{zone}' (the project's timezone "
                    "setting): its time zone tables do not hold it, so timestamps cannot be converted to local "
                    "time. The query was not run.", None,
                    "Load the time zone tables into the server (MariaDB: mariadb-tzinfo-to-sql /usr/share/zoneinfo "
                    "| mariadb -u root mysql; MySQL: mysql_tzinfo_to_sql), or remove 'timezone:' from "
                    "kpi_engine.yaml (timestamps are then cut into periods in UTC).")
            with self._lock:
                self._zones.add(zone)

    # -- description
    def columns(self, relation) -> Mapping[str, str] | None:
        import pymysql

        if not isinstance(relation, (exp.Table, exp.Subquery)):
            raise TypeError(f"cannot describe a {type(relation).__name__}")
        if isinstance(relation, exp.Table) and relation.args.get("catalog") is not None:
            return None  # MySQL names are database.table at most
        sql = render(exp.select(exp.Star()).from_(relation.copy()).limit(0))
        session = self._session()
        try:
            with session.cursor() as cursor:
                cursor.execute(sql)
                return {column[0]: type_name(column[1], column[3]) for column in cursor.description or ()}
        except pymysql.Error as error:
            if _code(error) in (_NO_SUCH_TABLE, _UNKNOWN_DATABASE):
                return None
            what = (f"table {'.'.join(part.name for part in relation.parts)}" if isinstance(relation, exp.Table)
                    else "the source's sql")
            raise WarehouseError(f"cannot describe {what} in MySQL: {redact(_text(error), self.target.secrets)}.",
                                 None, "Check the source's table or sql.") from None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            opened, self._opened = self._opened, []
        for session in opened:
            with contextlib.suppress(Exception):
                session.close()


def version_problem(version: str) -> str | None:
    """Why a server of this VERSION() is too old, or None."""
    numbers = tuple(int(part) for part in re.findall(r"\d+", version.split("-")[0])[:3])
    mariadb = "mariadb" in version.lower()
    if mariadb and numbers[:1] == (5,) and "-10." in version:  # '5.5.5-10.3.39-MariaDB' from old proxies
        numbers = tuple(int(part) for part in re.findall(r"\d+", version.split("-")[1])[:3])
    oldest = MIN_MARIADB if mariadb else MIN_MYSQL
    if numbers >= oldest:
        return None
    name = "MariaDB" if mariadb else "MySQL"
    return (f"{name} {version}; kpi-engine needs {name} {'.'.join(map(str, oldest))} or later "
            "(WITH queries, window functions and CAST(x AS DOUBLE)).")


def _read_only(cursor) -> bool:
    """Whether the session's transactions are read-only (transaction_read_only since MySQL 8.0
    and MariaDB 11.1, tx_read_only before)."""
    import pymysql

    for name in ("transaction_read_only", "tx_read_only"):
        try:
            cursor.execute(f"SELECT @@SESSION.{name}")
        except pymysql.err.OperationalError:
            continue  # unknown system variable on this server
        return str(cursor.fetchone()[0]) == "1"
    return False


def render(query) -> str:
    """The SQL text run on MySQL for a compiled query."""
    return to_mysql(query).sql(dialect="mysql")


#: Column types reported by the protocol -> type names kpi-engine's catalogue understands.
_TYPE_NAMES = {0: "DECIMAL", 246: "DECIMAL", 1: "TINYINT", 2: "SMALLINT", 3: "INTEGER", 8: "BIGINT",
               9: "INTEGER", 13: "INTEGER", 4: "FLOAT", 5: "DOUBLE", 10: "DATE", 14: "DATE", 12: "DATETIME",
               7: "TIMESTAMP", 11: "TIME", 15: "VARCHAR", 253: "VARCHAR", 254: "CHAR", 247: "ENUM", 248: "SET",
               249: "TEXT", 250: "TEXT", 251: "TEXT", 252: "TEXT", 245: "JSON", 16: "BIT", 255: "GEOMETRY",
               6: "NULL"}


def type_name(code: int, length: int | None) -> str:
    """A type name for a column of a result: ``TINYINT(1)`` (what BOOLEAN declares) is BOOLEAN."""
    if code == 1 and length == 1:
        return "BOOLEAN"
    return _TYPE_NAMES.get(code, f"type {code}")


# --- messages ----------------------------------------------------------------------------------


def connect_error(error: BaseException, target: Target) -> WarehouseError:
    """A failed connection attempt as one clear, password-free message."""
    code, detail = _code(error), redact(_text(error), target.secrets)
    where, user = target.where, target.user
    if code == _ACCESS_DENIED:
        return ConnectionFailed(f"MySQL authentication failed for user '{user}' at {where}: {detail}.", None,
                                "Check the user name and password ('password', 'password_file' or a ${NAME} "
                                "variable), and that the user may connect from this host.")
    if code == _UNKNOWN_DATABASE:
        return ConnectionFailed(f"the MySQL database '{target.database}' does not exist at {where}.", None,
                                "Fix 'database' (or the path of the URL), or create the database.")
    if code == _DB_ACCESS_DENIED:
        return ConnectionFailed(f"the MySQL user '{user}' may not use the database '{target.database}' at {where} "
                                "(MySQL says so too when the database does not exist).", None,
                                "Fix 'database' (or the path of the URL), or grant the user SELECT on it.")
    if code == _HOST_NOT_ALLOWED:
        return ConnectionFailed(f"the MySQL server at {where} does not accept connections from this host: "
                                f"{detail}.", None, "Ask the administrator to allow the user from this host.")
    if code in (_CANNOT_CONNECT, _UNKNOWN_HOST, _GONE_AWAY, _LOST):
        return ConnectionFailed(f"cannot connect to MySQL at {where}: {detail}.", None,
                                "Check that the server is running and reachable (host, port, firewall), "
                                "and the 'host' and 'port' settings.")
    return ConnectionFailed(f"cannot connect to MySQL at {where}: {detail}.", None,
                            "Check the warehouse settings (host, port, user, password, database, ssl_ca).")


def query_error(error: BaseException, target: Target) -> WarehouseError:
    """A failed query as one clear, password-free message; the query is never sent again."""
    code, message = _code(error), redact(_text(error), target.secrets)
    if code in (_MARIADB_TIMEOUT, _MYSQL_TIMEOUT):
        return QueryTimeout(f"MySQL stopped the query after the query_timeout of {target.query_timeout or 0:g} s: "
                            f"{message}.", None,
                            "Raise 'query_timeout' (or --timeout), or ask for less (a shorter --from/--to "
                            "range, fewer KPIs or dimensions).")
    if code == _INTERRUPTED:
        return QueryFailed(f"MySQL interrupted the query before it finished: {message}. It was not run again.",
                           None, "An administrator or another session stopped it (KILL QUERY); run the command "
                                 "again, or ask them why.")
    if code in (_GONE_AWAY, _LOST, *_SERVER_SHUTDOWN):
        return ConnectionFailed(f"lost the connection to MySQL at {target.where} while the query ran: {message}. "
                                "The query was not run again.", None,
                                "Check that the server is running and reachable, then try again.")
    if code == _NO_SUCH_TABLE:
        return QueryFailed(f"the query reads a table that does not exist in MySQL: {message}.", None, SOURCE_HINT)
    if code == _UNKNOWN_COLUMN:
        return QueryFailed(f"the query reads a column that does not exist in MySQL: {message}.", None, SOURCE_HINT)
    if code in (_TABLE_DENIED, _COLUMN_DENIED, _DB_ACCESS_DENIED):
        return QueryFailed(f"MySQL refused the query: {message}.", None,
                           "Grant the warehouse user SELECT on the tables the sources read.")
    if code == _READ_ONLY_TRANSACTION:
        return QueryFailed(f"the MySQL session is read-only: {message}.", None,
                           "kpi-engine only reads from the warehouse.")
    if code in (_SYNTAX, _NO_FUNCTION):
        return QueryFailed(f"MySQL cannot run the query's SQL: {message}.", None,
                           "A source's sql, a --where/--having filter or a plugin function may use another "
                           "engine's SQL; see 'kpi-engine compile --dialect mysql' for the SQL that ran.")
    return QueryFailed(f"the query failed in MySQL: {message}.", None, SOURCE_HINT)
