"""kpi-engine-clickhouse: run kpi-engine projects on ClickHouse tables, in-process through chdb."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from kpi_engine.errors import WarehouseError
from kpi_engine.hookspecs import Adapter, Connection, hookimpl

from .connection import PINNED_SETTINGS, ClickHouseConnection, render, type_name
from .rewrite import to_clickhouse
from .settings import Target, read_settings

__version__ = "0.1.0"
__all__ = ["ClickHouseAdapter", "ClickHouseConnection", "PINNED_SETTINGS", "Target", "kpi_engine_adapters",
           "read_settings", "render", "to_clickhouse", "type_name"]


class ClickHouseAdapter(Adapter):
    name = "clickhouse"
    schemes = ("chdb",)
    dialect = "clickhouse"
    description = "ClickHouse in-process through chdb (read-only sessions): clickhouse+chdb:///path/to/folder"

    @classmethod
    def prepare(cls, query):
        """Rewrite what ClickHouse computes or spells differently (see ``rewrite``)."""
        return to_clickhouse(query)

    @classmethod
    def connect(cls, settings: Mapping[str, Any], project_root: Path) -> Connection:
        target = read_settings(settings, Path(project_root))
        try:
            import chdb  # noqa: F401
        except ImportError:
            raise WarehouseError("the ClickHouse adapter needs chdb, which is not installed.", None,
                                 "Install it with: pip install chdb") from None
        return ClickHouseConnection(target)


@hookimpl
def kpi_engine_adapters():
    return [ClickHouseAdapter]
