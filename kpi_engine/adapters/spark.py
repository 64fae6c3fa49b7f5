"""The Apache Spark adapter (PySpark): ``pip install 'kpi-engine[spark]'``.

For teams whose data has outgrown one machine: the same compiled query runs as Spark SQL, on a
local Spark, a standalone/YARN/Kubernetes cluster, or a Spark Connect server. Spark needs Java
(17 or newer for Spark 4).

Settings (``warehouse:`` in kpi_engine.yaml)::

    warehouse:
      adapter: spark
      master: local[4]              # or spark://host:7077, yarn, k8s://...  (default local[*])
      # remote: sc://host:15002     # Spark Connect instead of master ('kpi-engine[spark-connect]')
      app_name: kpi-engine
      config:                       # any Spark configuration
        spark.sql.shuffle.partitions: 8
      data: data                    # a folder of CSV/Parquet files -> temporary views
      database: marketing           # and/or tables of a database of the catalog

or a URL (``--warehouse``): ``spark://host:7077`` (a standalone master), ``spark:local[4]``
(local mode) or ``sc://host:15002`` (Spark Connect).

- ``data``: each ``<name>.csv`` / ``<name>.parquet`` of the folder becomes a temporary view
  ``<name>``, read by its exact path (a folder named ``proj[1]`` or ``data*`` is not a glob).
  CSV files are read with their header row and typed by inference: integers,
  decimals, dates, timestamps and booleans (``true``/``false`` in any case) get proper types.
  With Spark Connect the folder must be readable by the server.
- ``database``: unqualified table names are looked up in that database (``USE``).
- When a Spark session is already active in the process (a notebook, spark-submit), it is
  reused. Data views, ``database`` and ``config`` then go to a session of their own that shares
  the Spark application (``newSession``), so the active session is never changed.
- Queries run with the session time zone UTC unless ``config`` sets
  ``spark.sql.session.timeZone``: timestamps are read as stored (in UTC), and the project's
  ``timezone:`` converts them, as on every other warehouse.
- When the adapter starts Spark itself (``kpi-engine`` on the command line), it stops it when the
  project is closed, keeps Spark's log to errors, and puts Spark's default warehouse folder in a
  temporary folder instead of ``./spark-warehouse`` (set ``spark.sql.warehouse.dir`` in ``config``
  to use another).
- ``query_timeout`` (seconds, or ``--timeout``) cancels the Spark jobs of a query that runs longer.
- The SQL settings the generated SQL relies on (``PINNED_CONF``) are set on the session queries
  run in and checked; ``config`` may not change them. An active session without them is not
  changed: a session of its own is used instead.

Registered through the ``kpi_engine`` entry-point group, like DuckDB.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

from sqlglot import exp

from ..errors import ConnectionFailed, QueryFailed, QueryTimeout, WarehouseError
from ..hookspecs import Adapter, Connection, Rows, hookimpl, query_text, timeout_seconds
from ..redaction import redact

INSTALL_HINT = "pip install 'kpi-engine[spark]'"
SETTINGS = ("url", "master", "remote", "app_name", "config", "data", "database", "query_timeout")
DEFAULT_MASTER = "local[*]"
DEFAULT_APP_NAME = "kpi-engine"
TIME_ZONE_CONF = "spark.sql.session.timeZone"
WAREHOUSE_DIR_CONF = "spark.sql.warehouse.dir"
DATA_SUFFIXES = (".csv", ".parquet")
SOURCE_HINT = "Check that the tables and columns the sources name exist ('kpi-engine validate' checks them)."
PANDAS_WARNING = "PySpark does not yet fully support pandas"
_VIEW_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: How the generated SQL must be read: string literals with backslash escapes (as sqlglot writes
#: them for Spark); '${...}' in a literal is text (with substitution on, Spark would put a
#: configuration value, a Java property or an environment variable, '${env:NAME}', there); and a
#: quoted name is a name, not a regular expression over column names.
PINNED_CONF = {"spark.sql.parser.escapedStringLiterals": "false", "spark.sql.variable.substitute": "false",
               "spark.sql.parser.quotedRegexColumnNames": "false"}
#: Characters Hadoop expands in a path (a glob); a backslash makes each stand for itself.
_HADOOP_GLOB_CHARACTER = re.compile(r"[\\{}\[\]*?]")
#: Spark error classes that mean "this relation does not exist".
_MISSING_RELATION = ("TABLE_OR_VIEW_NOT_FOUND", "SCHEMA_NOT_FOUND", "DATABASE_NOT_FOUND", "CATALOG_NOT_FOUND",
                     "PATH_NOT_FOUND")


# --- settings ----------------------------------------------------------------------------------


def parse_url(url: str) -> dict[str, str]:
    """A warehouse URL -> ``{"master": ...}`` or ``{"remote": ...}``.

    ``spark://host:7077`` is a standalone master, ``spark:local[4]`` / ``spark://local[4]`` local
    mode (``spark:yarn`` and ``spark:k8s://...`` likewise name a master), ``sc://host:15002`` a
    Spark Connect server.
    """
    text = str(url).strip()
    scheme, _, rest = text.partition(":")
    scheme = scheme.lower()
    if scheme == "sc":
        return {"remote": text}
    if scheme == "spark":
        bare = rest[2:] if rest.startswith("//") else rest
        if re.fullmatch(r"local(\[(\*|\d+)(,\s*\d+)?\])?|yarn|k8s://\S+|mesos://\S+", bare):
            return {"master": bare}
        if rest.startswith("//") and bare:
            return {"master": text}
    raise WarehouseError(f"'{redact(text)}' is not a Spark URL.", None,
                         "Write spark://host:7077 (a standalone master), spark:local[4] (local mode) or "
                         "sc://host:15002 (Spark Connect).")


def spark_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Check the settings and fill in the defaults: master/remote, app_name, config, data, database."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise WarehouseError(f"unknown Spark setting(s): {', '.join(unknown)}.", None,
                             f"Spark takes {', '.join(s for s in SETTINGS if s != 'query_timeout')}.")
    result = {key: settings[key] for key in SETTINGS if settings.get(key) not in (None, "")}
    if "url" in result:
        for key, value in parse_url(result.pop("url")).items():
            result.setdefault(key, value)
    if "master" in result and "remote" in result:
        raise WarehouseError("the Spark settings 'master' and 'remote' cannot both be set.", None,
                             "Use 'master' for a Spark cluster (or local mode), 'remote' for a Spark Connect server.")
    if "remote" in result and not str(result["remote"]).startswith("sc://"):
        raise WarehouseError("the Spark setting 'remote' must be a Spark Connect URL, "
                             f"not '{redact(result['remote'])}'.", None, "Write it as sc://host:15002.")
    config = result.get("config", {})
    if not isinstance(config, Mapping):
        raise WarehouseError("the Spark setting 'config' must be a mapping of Spark configuration keys to values.",
                             None, "For example 'config: {spark.sql.shuffle.partitions: 8}'.")
    result["config"] = {str(key): _conf_value(value) for key, value in config.items()}
    for key, value in result["config"].items():
        if key in PINNED_CONF and value.strip().lower() != PINNED_CONF[key]:
            raise WarehouseError(f"the Spark setting 'config' sets {key} to '{value}'; kpi-engine needs "
                                 f"'{PINNED_CONF[key]}' (the SQL it writes relies on it).", None,
                                 f"Remove {key} from 'config'.")
    if "database" in result and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?",
                                                   str(result["database"])):
        raise WarehouseError(f"the Spark setting 'database' is not a database name: '{result['database']}'.", None,
                             "Write a name such as 'marketing' or 'catalog.marketing'.")
    if "query_timeout" in result:
        result["query_timeout"] = timeout_seconds(result["query_timeout"], "query_timeout")
    return result


def _conf_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _first_line(error: BaseException) -> str:
    """The first line of an error's message: for Spark, ``[ERROR_CLASS] what went wrong``,
    without the query plan or the JVM stack that follow."""
    text = ""
    java = getattr(error, "java_exception", None)  # a Py4JJavaError PySpark did not convert
    if java is not None and not _is_pyspark_error(error):
        try:
            text = str(java.getMessage() or java.toString())
        except Exception:  # pragma: no cover - the JVM may be gone
            text = ""
    text = (text or str(error)).strip()
    if not text:
        return type(error).__name__
    # "...; line 1 pos 43;" points into the generated query, which the user did not write.
    return re.sub(r";?\s*line \d+ pos \d+;?$", "", text.splitlines()[0].strip()).rstrip(";")


def _is_pyspark_error(error: BaseException) -> bool:
    return type(error).__module__.startswith("pyspark")


def _error_class(error: BaseException) -> str:
    getter = getattr(error, "getCondition", None) or getattr(error, "getErrorClass", None)
    try:
        value = getter() if getter else None
    except Exception:  # pragma: no cover - older PySpark
        value = None
    if value:
        return str(value)
    match = re.match(r"\s*\[([A-Z0-9_.]+)\]", str(error))
    return match.group(1) if match else ""


def find_java() -> str | None:
    """The java executable Spark will start: $JAVA_HOME/bin/java, else java on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = Path(home) / "bin" / "java"
        return str(candidate) if candidate.exists() else None
    return shutil.which("java")


# --- PySpark's error logging --------------------------------------------------------------------

#: PySpark 4 logs every analysis error it raises, as JSON with the JVM stack, to stderr. The
#: adapter turns those errors into one clear message; while it runs a call, the log is dropped.
_QUIET_LOGGERS = ("SQLQueryContextLogger", "DataFrameQueryContextLogger")
_quiet = threading.local()


class _DropWhileQuiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_quiet, "active", False)


def _install_quiet_filter() -> None:
    try:
        from pyspark.logger import PySparkLogger  # PySpark 4; earlier versions do not log errors
    except ImportError:
        return
    for name in _QUIET_LOGGERS:
        logger = PySparkLogger.getLogger(name)  # created as PySpark creates it, with its JSON handler
        if not any(isinstance(f, _DropWhileQuiet) for f in logger.filters):
            logger.addFilter(_DropWhileQuiet())


@contextlib.contextmanager
def _quietly():
    """PySpark's error log is dropped for the calls made by this thread inside the block."""
    before = getattr(_quiet, "active", False)
    _quiet.active = True
    try:
        yield
    finally:
        _quiet.active = before


# --- sessions ----------------------------------------------------------------------------------

_sessions_lock = threading.Lock()
#: Spark applications (and Spark Connect sessions) this adapter started, with the session and how
#: many open connections use it: the last to close stops it. One already running is never stopped.
_owned: dict[int, list] = {}
#: The temporary warehouse folder of each Spark application this adapter started.
_scratch: dict[int, str | None] = {}


def _import_pyspark() -> None:
    try:
        from pyspark.sql import SparkSession  # noqa: F401
    except ImportError as error:
        raise ConnectionFailed(f"the Spark adapter needs PySpark, which is not installed ({error}).", None,
                               f"Install it with: {INSTALL_HINT} (Spark also needs Java 17 or newer).") from None


def _open_session(options: Mapping[str, Any]):
    """(the session queries run in, the session to release on close or None)."""
    _import_pyspark()
    from pyspark.sql import SparkSession

    _install_quiet_filter()
    config: dict[str, str] = dict(options["config"])
    isolate = bool(options.get("data") or options.get("database") or config)
    remote = options.get("remote")
    if remote:
        active = _active_session(remote=True)
        if active is not None and not isolate and _has_pinned_conf(active):
            return active, None
        builder = SparkSession.builder.remote(remote).appName(options.get("app_name", DEFAULT_APP_NAME))
        for key, value in {**PINNED_CONF, **config}.items():
            builder = builder.config(key, value)
        try:
            session = builder.create() if hasattr(builder, "create") else builder.getOrCreate()
        except Exception as error:
            raise ConnectionFailed(f"cannot connect to the Spark Connect server {redact(remote)}: "
                                   f"{redact(_first_line(error))}",
                                   None, "Check that the server runs and that 'remote' is sc://host:port; Spark "
                                   "Connect also needs its client: pip install 'kpi-engine[spark-connect]'.") from None
        with _sessions_lock:
            _owned[_key(session)] = [session, 1]
        try:
            _ensure_time_zone(session, config)
            _check_pinned_conf(session)
        except WarehouseError:
            _release(session)
            raise
        return session, session

    with _sessions_lock:
        root = _active_session(remote=False)
        if root is None:
            root = _start(options, config)
            _owned[_key(root)] = [root, 0]
        entry = _owned.get(_key(root))
        owner = None
        if entry is not None:  # started by this adapter: stopped when its last connection closes
            entry[1] += 1
            owner = entry[0]
    if not isolate and _has_pinned_conf(root):
        return root, owner
    try:
        session = root.newSession()  # own temporary views, SQL configuration and current database
    except Exception as error:
        _release(owner)
        raise ConnectionFailed(f"cannot open a Spark session: {_first_line(error)}", None,
                               "Check that the Spark application is still running.") from None
    try:
        _ensure_time_zone(session, config)
        for key, value in {**PINNED_CONF, **config}.items():
            _set_conf(session, key, value)
        _check_pinned_conf(session)
    except WarehouseError:
        _release(owner)
        raise
    return session, owner


def _start(options: Mapping[str, Any], config: Mapping[str, str]):
    """Start a Spark application (local mode or a cluster's master)."""
    from pyspark.sql import SparkSession

    if find_java() is None:
        raise ConnectionFailed("Spark needs Java, and none was found (no $JAVA_HOME, no java on PATH).", None,
                               "Install a Java runtime, 17 or newer (e.g. apt-get install openjdk-17-jre-headless), "
                               "or set JAVA_HOME to one.")
    master = options.get("master", DEFAULT_MASTER)
    builder = SparkSession.builder.master(master).appName(options.get("app_name", DEFAULT_APP_NAME))
    # Timestamps as stored (UTC); no progress bars in the middle of the command's output; and
    # Spark's default warehouse folder (it creates ./spark-warehouse when it looks up a table)
    # in a temporary folder, not in the user's current directory: the engine creates no tables.
    defaults = {TIME_ZONE_CONF: "UTC", "spark.ui.showConsoleProgress": "false"}
    scratch = None
    if WAREHOUSE_DIR_CONF not in config:
        scratch = tempfile.mkdtemp(prefix="kpi-engine-spark-")
        defaults[WAREHOUSE_DIR_CONF] = str(Path(scratch) / "spark-warehouse")
    for key, value in {**defaults, **PINNED_CONF, **config}.items():
        builder = builder.config(key, value)
    try:
        with warnings.catch_warnings():  # PySpark warns about pandas versions, which the engine does not use
            warnings.filterwarnings("ignore", message=PANDAS_WARNING, category=FutureWarning)
            session = builder.getOrCreate()
        # Spark's own WARN lines would bury the one clear message of a failed command.
        session.sparkContext.setLogLevel("ERROR")
        _scratch[_key(session)] = scratch
        return session
    except Exception as error:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        raise ConnectionFailed(f"cannot start Spark (master {redact(master)}): {redact(_first_line(error))}", None,
                               "Check 'master', and the Java installation (Java 17 or newer for Spark 4, "
                               "found through JAVA_HOME or PATH).") from None


def _active_session(remote: bool):
    """The Spark session already running in this process (classic or Spark Connect), or None."""
    if remote:
        try:
            from pyspark.sql.connect.session import SparkSession as RemoteSession

            return RemoteSession.getActiveSession()
        except Exception:  # Spark Connect's client libraries are not installed
            return None
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    if SparkContext._active_spark_context is None:
        return None
    try:
        # The active session is per thread; the default one (the builder's) is for the process.
        return SparkSession.getActiveSession() or getattr(SparkSession, "_instantiatedSession", None) \
            or SparkSession.builder.getOrCreate()
    except Exception:  # pragma: no cover - a context that is shutting down
        return None


def _ensure_time_zone(session, config: Mapping[str, str]) -> None:
    if TIME_ZONE_CONF not in config:
        _set_conf(session, TIME_ZONE_CONF, "UTC")


def _unpinned(session) -> dict[str, str | None]:
    """The settings of PINNED_CONF the session does not have, with the value it has."""
    found = {}
    for key in PINNED_CONF:
        try:
            found[key] = str(session.conf.get(key)).lower()
        except Exception:  # a Spark that does not know a setting has not got it
            found[key] = None
    return {key: value for key, value in found.items() if value != PINNED_CONF[key]}


def _has_pinned_conf(session) -> bool:
    return not _unpinned(session)


def _check_pinned_conf(session) -> None:
    """Refuse a session in which the settings the SQL relies on did not hold."""
    wrong = _unpinned(session)
    if wrong:
        listed = ", ".join(f"{key} = {value}" for key, value in wrong.items())
        raise ConnectionFailed(f"the Spark session does not keep the settings kpi-engine sets ({listed}), so no "
                               "query is run.", None,
                               "Check that the Spark (or Spark Connect server) allows these SQL settings to be "
                               "changed per session.")


def _set_conf(session, key: str, value: str) -> None:
    try:
        if session.conf.get(key, None) == value:
            return
        session.conf.set(key, value)
    except Exception as error:
        raise ConnectionFailed(f"cannot set the Spark configuration '{key}' on the running Spark application: "
                               f"{_first_line(error)}", None,
                               "Static settings (executor memory, cores...) must be given when Spark starts: set "
                               "them where the running session was created, or remove them from 'config'.") from None


def _key(session) -> int:
    """What identifies a Spark application: its SparkContext (a Spark Connect session: itself)."""
    try:
        return id(session.sparkContext)
    except Exception:  # Spark Connect sessions have no SparkContext
        return id(session)


def _release(owner) -> None:
    """One connection less on a Spark application this adapter started; stop it after the last."""
    if owner is None:
        return
    with _sessions_lock:
        key = _key(owner)
        entry = _owned.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _owned[key]
        scratch = _scratch.pop(key, None)
        try:
            owner.stop()
        except Exception:  # pragma: no cover - the JVM may already be gone at exit
            pass
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _register_data(session, folder: Path) -> list[str]:
    """Each CSV/Parquet file of ``folder`` as a temporary view named after it."""
    if not folder.is_dir():
        raise ConnectionFailed(f"the data folder '{folder}' does not exist.", None,
                               "Fix 'data' in kpi_engine.yaml (relative to the project folder).")
    names = []
    for file in sorted(folder.iterdir()):
        suffix = file.suffix.lower()
        if suffix not in DATA_SUFFIXES or not _VIEW_NAME.match(file.stem) or not file.is_file():
            continue
        try:
            with _quietly():
                path = hadoop_glob_escape(str(file))
                frame = session.read.parquet(path) if suffix == ".parquet" else _read_csv(session, path)
                frame.createOrReplaceTempView(file.stem)
        except Exception as error:
            raise ConnectionFailed(f"cannot read data file '{file.name}' with Spark: {_first_line(error)}", None,
                                   "Check that it is a well-formed CSV (with a header row) or Parquet file.") from None
        names.append(file.stem)
    return names


def _read_csv(session, path: str):
    """A CSV file with typed columns: the header row names them; integers, decimals, dates,
    timestamps and booleans ('true'/'false' in any case) are inferred; empty fields are null."""
    return (session.read.option("header", True).option("inferSchema", True).option("prefersDate", True)
            .option("mode", "FAILFAST").csv(path))


def hadoop_glob_escape(path: str) -> str:
    """A file path that Spark reads as that one file: Hadoop expands globs in paths, so
    'proj[1]/a.csv' would read 'proj1/a.csv' and 'proj*/a.csv' every sibling folder's file."""
    return _HADOOP_GLOB_CHARACTER.sub(lambda match: "\\" + match.group(), path)


# --- the connection ----------------------------------------------------------------------------


class SparkConnection(Connection):
    dialect = "spark"

    def __init__(self, session, where: str, timeout: float | None = None, owner=None):
        self.session = session
        self._where = where
        self._timeout = timeout
        self._owner = owner
        self._closed = False
        self._lock = threading.Lock()

    # -- queries
    def execute(self, query) -> Rows:
        columns, batches = self.stream(query, batch_size=None)
        return Rows(columns, [row for batch in batches for row in batch])

    def stream(self, query, batch_size: int | None = 10_000):
        """Rows in batches of ``batch_size`` (all at once when None). Batches are fetched
        partition by partition (``toLocalIterator``), in the order of the query; the timeout
        then applies to each batch."""
        if not isinstance(query, exp.Expression):
            raise TypeError("SparkConnection takes a sqlglot expression")
        sql = query_text(query, self.dialect)
        with self._cancelling() as cancel, _quietly():
            try:
                frame = self.session.sql(sql)
                columns = tuple(frame.columns)
                converters = _converters(frame.schema, self._session_time_zone())
                if batch_size is None:
                    rows = [_row(row, converters) for row in frame.collect()]
            except Exception as error:
                raise self._failure(error, timed_out=cancel.fired) from None
        if batch_size is None:
            return columns, iter([rows] if rows else [])
        return columns, self._batches(frame, batch_size, converters)

    def _batches(self, frame, batch_size: int, converters) -> Iterator[list[tuple]]:
        rows = None
        while True:
            with self._cancelling() as cancel, _quietly():
                try:
                    if rows is None:
                        rows = frame.toLocalIterator()
                    batch = [_row(row, converters) for row in itertools.islice(rows, batch_size)]
                except Exception as error:
                    raise self._failure(error, timed_out=cancel.fired) from None
            if batch:
                yield batch
            if len(batch) < batch_size:
                return

    def _session_time_zone(self) -> str:
        try:
            return self.session.conf.get(TIME_ZONE_CONF) or "UTC"
        except Exception:  # pragma: no cover
            return "UTC"

    def _cancelling(self):
        return _Cancel(self.session, self._timeout)

    def _failure(self, error: BaseException, timed_out: bool = False) -> WarehouseError:
        if isinstance(error, WarehouseError):
            return error
        if timed_out:
            return QueryTimeout(f"the query ran longer than the {self._timeout:g} s timeout and its Spark jobs were "
                                f"cancelled ({self._where}).", None,
                                "Narrow the request (--from/--to, fewer KPIs) or raise query_timeout / --timeout.")
        if _is_connection_lost(error):
            return ConnectionFailed(f"lost the connection to Spark ({self._where}): {_first_line(error)}", None,
                                    "Check that the Spark application (or Spark Connect server) is still running.")
        return QueryFailed(f"the query failed in Spark ({self._where}): {_first_line(error)}", None, SOURCE_HINT)

    # -- describing relations
    def columns(self, relation) -> Mapping[str, str] | None:
        query = exp.select(exp.Star()).from_(relation.copy()).limit(0)
        try:
            with _quietly():
                schema = self.session.sql(query.sql(dialect=self.dialect)).schema
        except Exception as error:
            if _error_class(error).startswith(_MISSING_RELATION):
                return None
            what = (f"the source's sql (source '{relation.alias}')" if isinstance(relation, exp.Subquery)
                    else relation.sql(dialect=self.dialect))
            raise WarehouseError(f"cannot describe {what} in Spark: {_first_line(error)}", None,
                                 "Check the source's table or sql.") from None
        return {field.name: field.dataType.simpleString() for field in schema.fields}

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _release(self._owner)


class _Cancel:
    """Tags the Spark jobs the current thread starts inside the block; after ``timeout`` seconds,
    or on Ctrl-C, the jobs with the tag are cancelled.

    Classic Spark: SparkContext job tags (``addJobTag`` / ``cancelJobsWithTag``). Spark Connect:
    operation tags of the session (``addTag`` / ``interruptTag``). A cancel that comes while the
    query is still being planned finds no job yet, so it is repeated until the block ends.
    """

    RETRY_SECONDS = 0.5

    def __init__(self, session, timeout: float | None):
        self.session = session
        self.timeout = timeout
        self.fired = False
        self.tag = f"kpi-engine-{uuid.uuid4().hex}"
        self._done = threading.Event()
        self._watcher: threading.Thread | None = None
        self._context = None  # the SparkContext in classic mode; None with Spark Connect
        self._tagged = False

    def __enter__(self) -> "_Cancel":
        try:
            self._context = self.session.sparkContext
        except Exception:  # Spark Connect has no SparkContext
            self._context = None
        try:
            if self._context is not None:
                self._context.addJobTag(self.tag)
            else:
                self.session.addTag(self.tag)
            self._tagged = True
        except Exception:  # pragma: no cover - a Spark without job tags: no cancelling
            self._tagged = False
        if self.timeout and self._tagged:
            self._watcher = threading.Thread(target=self._watch, name="kpi-engine-spark-timeout", daemon=True)
            self._watcher.start()
        return self

    def _watch(self) -> None:
        if self._done.wait(self.timeout):
            return
        self.fired = True
        while True:
            self.cancel()
            if self._done.wait(self.RETRY_SECONDS):
                return

    def cancel(self) -> None:
        try:
            if self._context is not None:
                self._context.cancelJobsWithTag(self.tag)
            else:
                self.session.interruptTag(self.tag)
        except Exception:  # pragma: no cover - the query may have just finished
            pass

    def __exit__(self, kind, value, traceback) -> None:
        self._done.set()
        if kind is KeyboardInterrupt and self._tagged:
            self.cancel()  # Ctrl-C: do not leave the jobs running in the cluster
        if self._tagged:
            try:
                if self._context is not None:
                    self._context.removeJobTag(self.tag)
                else:
                    self.session.removeTag(self.tag)
            except Exception:  # pragma: no cover
                pass


def _is_connection_lost(error: BaseException) -> bool:
    name = type(error).__name__
    text = str(error)
    return name in ("Py4JNetworkError", "ConnectionRefusedError") or "SparkContext was shut down" in text \
        or "Cannot call methods on a stopped SparkContext" in text or "StatusCode.UNAVAILABLE" in text


def _converters(schema, time_zone: str):
    """Per column, a function that fixes a collected value, or None.

    PySpark hands a TIMESTAMP (with local time zone) back as a naive datetime in the *Python
    process's* time zone; show it in the session time zone instead, as Spark SQL does."""
    converters = []
    for field in schema.fields:
        if field.dataType.typeName() == "timestamp":
            converters.append(_timestamp_converter(time_zone))
        else:
            converters.append(None)
    return converters if any(converters) else None


def _timestamp_converter(time_zone: str):
    from zoneinfo import ZoneInfo

    offset = re.fullmatch(r"(?:UTC|GMT)?([+-])(\d{1,2}):?(\d{2})?", time_zone.strip())
    if offset:  # Spark also takes zone offsets such as +02:00
        sign = -1 if offset.group(1) == "-" else 1
        zone = dt.timezone(sign * dt.timedelta(hours=int(offset.group(2)), minutes=int(offset.group(3) or 0)))
    else:
        try:
            zone = ZoneInfo(time_zone)
        except Exception:  # not a zone Python knows: leave the values as PySpark gives them
            zone = None

    def convert(value):
        if not isinstance(value, dt.datetime) or zone is None:
            return value
        return value.astimezone(zone).replace(tzinfo=None)  # naive = the process's local time

    return convert


def _row(row, converters) -> tuple:
    if converters is None:
        return tuple(row)
    return tuple(value if convert is None or value is None else convert(value)
                 for value, convert in zip(row, converters))


# --- the adapter -------------------------------------------------------------------------------


class SparkAdapter(Adapter):
    name = "spark"
    schemes = ("sc",)
    dialect = "spark"
    description = "Apache Spark (PySpark): local, a cluster or Spark Connect; tables of a catalog or CSV/Parquet files"

    @classmethod
    def prepare(cls, query):
        """Make Spark compute what DuckDB computes: divide and average in DOUBLE.

        Spark divides two DECIMALs in DECIMAL arithmetic and cuts the quotient to 6 decimal
        places when the exact result type would exceed 38 digits (``SUM(decimal(12,2)) /
        SUM(...)`` is such a case), and ``AVG`` of a DECIMAL keeps only 4 more decimals than
        its input: a ratio of money columns read from a catalog table came out as 0.057347
        instead of 0.0573468247... Casting the dividend of every division and the argument
        of every AVG to DOUBLE gives the same values as the other warehouses. (Integer
        division needs nothing: Spark's ``/`` is always a true division.)

        The query given is not modified, and preparing twice changes nothing more.
        """
        query = query.copy()
        for node in list(query.find_all(exp.Div)):
            if not _is_double(node.this):
                node.set("this", _as_double(node.this))
        for node in list(query.find_all(exp.Avg)):
            if not isinstance(node.this, exp.Distinct) and not _is_double(node.this):
                node.set("this", _as_double(node.this))
        return query

    @classmethod
    def connect(cls, settings: Mapping[str, Any], project_root: Path) -> Connection:
        options = spark_settings(settings)
        session, owner = _open_session(options)
        try:
            where = _describe_target(options, reused=owner is None and not options.get("remote"))
            database = options.get("database")
            if database:
                try:
                    with _quietly():
                        session.sql(f"USE {exp.to_table(str(database)).sql(dialect='spark')}")
                except Exception as error:
                    raise ConnectionFailed(f"cannot use the Spark database '{database}': {_first_line(error)}", None,
                                           "Fix 'database' in kpi_engine.yaml (SHOW DATABASES lists them).") from None
            data = options.get("data")
            if data:
                _register_data(session, (project_root / str(data)).resolve())
        except BaseException:
            _release(owner)
            raise
        return SparkConnection(session, where, options.get("query_timeout"), owner)


def _is_double(node) -> bool:
    return isinstance(node, exp.Cast) and node.to.is_type(exp.DataType.Type.DOUBLE)


def _as_double(node):
    return exp.Cast(this=node, to=exp.DataType(this=exp.DataType.Type.DOUBLE))


def _describe_target(options: Mapping[str, Any], reused: bool) -> str:
    """Where queries run, for messages: 'master local[4], data folder data'."""
    if options.get("remote"):
        parts = [f"Spark Connect {redact(options['remote'])}"]
    elif reused:
        parts = ["active session"]
    else:
        parts = [f"master {redact(str(options.get('master', DEFAULT_MASTER)))}"]
    if options.get("data"):
        parts.append(f"data folder {options['data']}")
    if options.get("database"):
        parts.append(f"database {options['database']}")
    return ", ".join(parts)


@hookimpl
def kpi_engine_adapters():
    return [SparkAdapter]
