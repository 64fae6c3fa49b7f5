"""What a server is told: the project, where to listen, who may call, and its limits.

Every setting has a command-line flag and an environment variable (``KPI_ENGINE_<NAME>``, see
``command.py``); the defaults suit one machine serving a team.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class Limits:
    """Bounds on one request, so no caller can tie up the server or the warehouse."""

    max_body_bytes: int = 64 * 1024  # a query request is a few hundred bytes
    max_rows: int = 10_000  # rows in one answer; a larger one is refused, never cut short
    max_kpis: int = 25  # KPIs plus ad-hoc formulas in one request
    max_dimensions: int = 5
    max_text: int = 2_000  # characters of one formula, --where or --having
    query_timeout: float = 30.0  # seconds; the warehouse cancels longer queries
    concurrent_queries: int = 8  # warehouse queries at once; cached answers do not wait for these


@dataclass(frozen=True)
class CacheSettings:
    entries: int = 512  # answers kept at most
    max_cells: int = 5_000_000  # rows x columns kept at most, over every answer
    ttl: float = 600.0  # seconds an answer is served from the cache at most
    freshness_interval: float = 30.0  # seconds a source's last day is reused before it is read again
    refresh_signal: Path | None = None  # a file whose modification time marks a data load


@dataclass(frozen=True)
class ServeSettings:
    project: Path
    warehouse: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    tokens: str | None = None  # tokens as YAML/JSON text (from KPI_ENGINE_TOKENS)
    tokens_file: Path | None = None
    allow_open: bool = False  # serve without tokens on an address other than loopback
    cors_origins: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    cache: CacheSettings = field(default_factory=CacheSettings)
    mcp_path: str = "/mcp"
    graceful_shutdown: float = 10.0  # seconds requests in flight get after SIGTERM


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
