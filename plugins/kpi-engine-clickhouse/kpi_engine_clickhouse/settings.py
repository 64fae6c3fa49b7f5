"""Reading the ``warehouse:`` settings of a ClickHouse (chdb) project.

A mapping (``{adapter: clickhouse, path: warehouse.chdb, database: marketing, query_timeout: 60}``)
or a URL: ``clickhouse+chdb:///abs/path`` or ``chdb:///abs/path`` (an absolute folder), or
``clickhouse+chdb://relative/path`` (relative to the project folder), with ``?database=...&
query_timeout=...``. ``${NAME}`` in a value reads the environment variable NAME.

The path is the folder of a chdb (embedded ClickHouse) database, which must exist: chdb would
create an empty one in its place, and every table would then be missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from kpi_engine.adapters.postgres import interpolate
from kpi_engine.errors import WarehouseError
from kpi_engine.hookspecs import timeout_seconds

#: Keys of the mapping form; a URL's query string takes database and query_timeout.
SETTINGS = ("url", "path", "database", "query_timeout")
_URL_OPTIONS = ("database", "query_timeout")
_HOW = ("Write it as clickhouse+chdb:///absolute/folder (or chdb:///absolute/folder), or use the mapping "
        "{adapter: clickhouse, path: folder} with a path relative to the project folder.")


@dataclass(frozen=True)
class Target:
    """Which chdb database folder to open, the database whose tables unqualified names read, and
    the query timeout (seconds)."""

    path: Path
    database: str = "default"
    query_timeout: float | None = None


def _split_url(url: str, project_root: Path) -> dict[str, str]:
    text = url.strip()
    if text.startswith("${") and text.endswith("}") and text.count("${") == 1:
        text = interpolate(text, "url").strip()
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in ("clickhouse+chdb", "chdb"):
        if sep and scheme.lower().split("+")[0] == "clickhouse":
            raise WarehouseError("the ClickHouse adapter runs ClickHouse in-process through chdb and does not "
                                 "connect to a ClickHouse server.", None, _HOW)
        raise WarehouseError("the warehouse URL is not a chdb URL.", None, _HOW)
    parts = urlsplit(text)
    if parts.port is not None or parts.username or parts.password is not None:
        raise WarehouseError("a chdb URL names a folder, not a server: it has no user, password or port.", None, _HOW)
    folder = unquote(parts.netloc + parts.path)
    if not folder:
        raise WarehouseError("the warehouse URL names no chdb database folder.", None, _HOW)
    found = {"path": folder if Path(folder).is_absolute() else str(project_root / folder)}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _URL_OPTIONS:
            raise WarehouseError(f"the warehouse URL has an unknown option '{key}'.", None,
                                 f"chdb URLs take {', '.join(_URL_OPTIONS)} after '?'.")
        found[key] = value
    return {key: interpolate(value, f"url ({key})") for key, value in found.items()}


def read_settings(settings: Mapping[str, Any], project_root: Path) -> Target:
    """The chdb database of a ``warehouse:`` mapping (or ``{"url": ...}``)."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise WarehouseError(f"unknown ClickHouse setting(s): {', '.join(unknown)}.", None,
                             f"The ClickHouse adapter takes {', '.join(SETTINGS)}.")
    if settings.get("url") and settings.get("path") is not None:
        raise WarehouseError("both 'url' and 'path' are set for the ClickHouse adapter.", None, "Keep one of them.")
    values: dict[str, str] = _split_url(str(settings["url"]), project_root) if settings.get("url") else {}
    for key in SETTINGS[1:]:
        if settings.get(key) is not None:
            values[key] = interpolate(settings[key], key)
    if not values.get("path"):
        raise WarehouseError("no chdb database folder is given.", None,
                             "Set 'path' in the warehouse settings (relative to the project folder), e.g. "
                             "{adapter: clickhouse, path: warehouse.chdb}, or pass --warehouse "
                             "clickhouse+chdb:///absolute/folder.")
    folder = (Path(project_root) / Path(values["path"]).expanduser()).resolve()
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise WarehouseError(f"the chdb database folder '{folder}' {what}.", None,
                             "Fix 'path' (relative to the project folder): the folder of a chdb database, "
                             "made with chdb.connect(folder) or session.Session(folder).")
    database = values.get("database") or "default"
    if not database.replace("_", "a").isalnum():
        raise WarehouseError(f"the ClickHouse database name '{database[:60]}' is not a plain name.", None,
                             "Use letters, digits and underscores, e.g. 'database: marketing'.")
    timeout = timeout_seconds(values["query_timeout"], "query_timeout") if values.get("query_timeout") else None
    return Target(path=folder, database=database, query_timeout=timeout)
