"""kpi-engine-mysql: run kpi-engine projects on a MySQL or MariaDB server.

A third-party adapter plugin, registered through the ``kpi_engine`` entry-point group::

    # kpi_engine.yaml
    warehouse: mysql://analyst:${MYSQL_PASSWORD}@db.example.com:3306/marketing
    # or
    warehouse: {adapter: mysql, host: db.example.com, database: marketing, user: analyst,
                password: ${MYSQL_PASSWORD}, query_timeout: 60}

Sessions are read-only (``SET SESSION TRANSACTION READ ONLY``), with the SQL mode, time zone
and character sets the rendered SQL relies on set and checked when they open; a query timeout
is enforced by the server (``max_statement_time`` on MariaDB, ``max_execution_time`` on
MySQL). ``prepare`` rewrites what MySQL computes differently from the other engines (see
``rewrite``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from kpi_engine.errors import WarehouseError
from kpi_engine.hookspecs import Adapter, Connection, hookimpl

from .connection import PINNED_SETTINGS, MySQLConnection, render
from .rewrite import to_mysql
from .settings import Target, read_settings

__version__ = "0.1.0"
__all__ = ["MySQLAdapter", "MySQLConnection", "PINNED_SETTINGS", "Target", "kpi_engine_adapters", "read_settings",
           "render", "to_mysql"]


class MySQLAdapter(Adapter):
    name = "mysql"
    schemes = ("mariadb",)
    dialect = "mysql"
    description = "MySQL 8 or MariaDB 10.5+ through pymysql (read-only sessions): mysql://user:password@host/db"

    @classmethod
    def prepare(cls, query):
        """Rewrite what MySQL computes or spells differently (see ``rewrite``)."""
        return to_mysql(query)

    @classmethod
    def connect(cls, settings: Mapping[str, Any], project_root: Path) -> Connection:
        try:
            import pymysql  # noqa: F401
        except ImportError:
            raise WarehouseError("the MySQL adapter needs pymysql, which is not installed.", None,
                                 "Install it with: pip install pymysql") from None
        return MySQLConnection(read_settings(settings, Path(project_root)))


@hookimpl
def kpi_engine_adapters():
    return [MySQLAdapter]
