"""Reading the ``warehouse:`` settings of a MySQL or MariaDB project into pymysql arguments.

A URL (``mysql://user:password@host:3306/marketing?query_timeout=60``, also ``mariadb://``
and ``mysql+pymysql://``) or a mapping (``host``, ``port``, ``database``, ``user``,
``password``...). ``${NAME}`` in any value reads the environment variable NAME, as for the
built-in PostgreSQL adapter; in a URL the variables are filled in after the URL is split,
so a password from a variable needs no escaping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from kpi_engine.adapters.postgres import interpolate
from kpi_engine.errors import WarehouseError
from kpi_engine.hookspecs import timeout_seconds
from kpi_engine.redaction import redact

URL_SCHEMES = ("mysql", "mariadb")
DEFAULT_PORT = 3306
DEFAULT_CONNECT_TIMEOUT = 10
#: Keys of the mapping form; a URL's query string takes the same ones but url.
SETTINGS = ("url", "host", "port", "database", "user", "password", "password_file", "unix_socket", "ssl_ca",
            "connect_timeout", "query_timeout")
_URL_OPTIONS = ("ssl_ca", "connect_timeout", "query_timeout", "unix_socket")
_HOW = ("Write it as mysql://user:password@host:3306/database (or mariadb://...), percent-encoding special "
        "characters of the password, or use ${NAME} for it.")


@dataclass
class Target:
    """Where to connect and how: the arguments of ``pymysql.connect`` that kpi-engine sets."""

    host: str = "localhost"
    port: int = DEFAULT_PORT
    user: str | None = None
    password: str = field(default="", repr=False)
    database: str | None = None
    unix_socket: str | None = None
    ssl_ca: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    query_timeout: float | None = None

    @property
    def where(self) -> str:
        """The server, as messages name it (never with the password)."""
        return f"socket {self.unix_socket}" if self.unix_socket else f"{self.host}:{self.port}"

    @property
    def secrets(self) -> list[str]:
        return [self.password] if self.password else []

    def connect_arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = dict(host=self.host, port=self.port, user=self.user, password=self.password,
                                         database=self.database, connect_timeout=self.connect_timeout,
                                         charset="utf8mb4", autocommit=True, local_infile=False)
        if self.unix_socket:
            arguments["unix_socket"] = self.unix_socket
        if self.ssl_ca:
            arguments["ssl_ca"] = self.ssl_ca
        return arguments


def _setting(value: Any, what: str) -> str:
    return interpolate(value, what)


def _split_url(url: str) -> dict[str, str]:
    """A mysql:// URL -> its settings, with ${NAME} filled in after splitting."""
    text = url.strip()
    if text.startswith("${") and text.endswith("}") and text.count("${") == 1:  # the whole URL in a variable
        text = interpolate(text, "url").strip()
    scheme, sep, _ = text.partition("://")
    if not sep or scheme.split("+")[0].lower() not in URL_SCHEMES:
        raise WarehouseError("the warehouse URL is not a MySQL or MariaDB URL.", None, _HOW)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as error:  # a port that is no number: the message may quote the URL
        raise WarehouseError(f"the warehouse URL is not valid: {redact(str(error), [text])}.", None, _HOW) from None
    found: dict[str, str] = {}
    if parts.hostname:
        found["host"] = unquote(parts.hostname)
    if port is not None:
        found["port"] = str(port)
    if parts.username:
        found["user"] = unquote(parts.username)
    if parts.password is not None:
        found["password"] = unquote(parts.password)
    database = unquote(parts.path.lstrip("/"))
    if "/" in database:
        raise WarehouseError(f"the warehouse URL names the database '{database}', which holds a '/'.", None,
                             "A MySQL URL ends with one database name: mysql://user@host:3306/marketing.")
    if database:
        found["database"] = database
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _URL_OPTIONS:
            raise WarehouseError(f"the warehouse URL has an unknown option '{key}'.", None,
                                 f"MySQL URLs take {', '.join(_URL_OPTIONS)} after '?'.")
        found[key] = value
    return {key: _setting(value, f"url ({key})") for key, value in found.items()}


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise WarehouseError(f"the MySQL port must be a whole number from 1 to 65535, not '{value[:20]}'.", None,
                             "For example 'port: 3306'.")
    return port


def read_settings(settings: Mapping[str, Any], project_root: Path) -> Target:
    """The connection target of a ``warehouse:`` mapping (or ``{"url": ...}``)."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise WarehouseError(f"unknown MySQL setting(s): {', '.join(unknown)}.", None,
                             f"The MySQL adapter takes {', '.join(SETTINGS)}.")
    values: dict[str, str] = _split_url(str(settings["url"])) if settings.get("url") else {}
    for key in SETTINGS[1:]:
        if settings.get(key) is not None:
            values[key] = _setting(settings[key], key)
    if "password_file" in values:
        if settings.get("password") is not None or ("password" in values and settings.get("url")):
            raise WarehouseError("both a password and 'password_file' are set.", None, "Keep one of them.")
        file = Path(project_root) / values.pop("password_file")
        try:
            values["password"] = file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as error:
            raise WarehouseError(f"cannot read the password file '{file}': {error.strerror or error}.", None,
                                 "Fix 'password_file' (relative to the project folder).") from None
    if not values.get("user"):
        raise WarehouseError("no MySQL user is given.", None,
                             "Set 'user' in the warehouse settings, or write it in the URL: "
                             "mysql://user:${MYSQL_PASSWORD}@host:3306/database.")
    if not values.get("database"):
        raise WarehouseError("no MySQL database is given.", None,
                             "Set 'database' in the warehouse settings, or end the URL with it: "
                             "mysql://user@host:3306/marketing.")
    target = Target(host=values.get("host") or "localhost", user=values["user"], password=values.get("password", ""),
                    database=values["database"], unix_socket=values.get("unix_socket") or None)
    if values.get("port"):
        target.port = _port(values["port"])
    if values.get("ssl_ca"):
        certificate = (Path(project_root) / Path(values["ssl_ca"]).expanduser()).resolve()
        if not certificate.is_file():
            raise WarehouseError(f"the CA certificate file '{certificate}' (ssl_ca) does not exist.", None,
                                 "Fix 'ssl_ca' (relative to the project folder): a PEM file of the certificate "
                                 "authority that signed the server's certificate.")
        target.ssl_ca = str(certificate)
    if values.get("connect_timeout"):
        target.connect_timeout = max(1, math.ceil(timeout_seconds(values["connect_timeout"], "connect_timeout")))
    if values.get("query_timeout"):
        target.query_timeout = timeout_seconds(values["query_timeout"], "query_timeout")
    return target
