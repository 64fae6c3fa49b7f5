"""A small project for the serve tests, its rows, a plain-Python reference over those rows,
API tokens, and a real uvicorn server on 127.0.0.1 for tests that need HTTP over a socket."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import threading
import time
from collections import defaultdict
from pathlib import Path

from conftest import write_project

SPECS = {"specs.yaml": """
    sources:
      leads:
        table: leads
        time: created_at
        dimensions: [channel]
      ad_spend:
        table: ad_spend
        time: day
        dimensions: [channel]
    kpis:
      lead_count:
        label: Leads
        unit: count
        formula: count(leads)
      spend:
        label: Spend
        unit: currency
        formula: sum(ad_spend.spend)
      cpl:
        label: Cost per lead
        unit: currency
        formula: spend / lead_count
      repeat_leads:
        label: Leads from people with several leads
        unit: count
        formula: count(leads where count(leads per person) > 1)
    """}

LEADS = [
    {"lead_id": 1, "created_at": "2025-01-05 09:00:00", "channel": "email", "person": "a"},
    {"lead_id": 2, "created_at": "2025-01-20 10:00:00", "channel": "email", "person": "b"},
    {"lead_id": 3, "created_at": "2025-01-21 11:00:00", "channel": "ppc", "person": "a"},
    {"lead_id": 4, "created_at": "2025-02-03 12:00:00", "channel": "ppc", "person": "c"},
    {"lead_id": 5, "created_at": "2025-02-10 13:00:00", "channel": "ppc", "person": "d"},
    {"lead_id": 6, "created_at": "2025-02-11 14:00:00", "channel": "email", "person": "c"},
    {"lead_id": 7, "created_at": "2025-03-01 15:00:00", "channel": "social", "person": "e"},
]
AD_SPEND = [
    {"day": "2025-01-01", "channel": "email", "spend": 100},
    {"day": "2025-01-15", "channel": "ppc", "spend": 300},
    {"day": "2025-02-01", "channel": "ppc", "spend": 200},
    {"day": "2025-02-01", "channel": "email", "spend": 50},
    {"day": "2025-03-01", "channel": "social", "spend": 70},
]

SECRETS = {"admin": "admin-secret-0123456789", "agency": "agency-secret-0123456789",
           "limited": "limited-secret-0123456789", "composer": "composer-secret-0123456789"}
TOKENS = json.dumps({"tokens": [
    {"name": "admin", "token": SECRETS["admin"]},
    {"name": "agency", "token": SECRETS["agency"], "kpis": ["lead_count", "spend", "cpl", "repeat_leads"],
     "where": "channel in ('email')"},
    {"name": "limited", "token": SECRETS["limited"], "kpis": ["lead_count"]},
    {"name": "composer", "token": SECRETS["composer"], "kpis": ["lead_count", "spend"], "formulas": True},
]})


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[name]}"}


def make_serve_project(root: Path) -> Path:
    return write_project(root, SPECS, {"leads": LEADS, "ad_spend": AD_SPEND})


def _day(text: str) -> dt.date:
    return dt.date.fromisoformat(text[:10])


def reference(kpi: str, *, by_channel: bool = False, monthly: bool = False, start: str | None = None,
              end: str | None = None, channels: set[str] | None = None) -> dict[tuple, float | None]:
    """lead_count, spend or cpl from the rows above: {(month?, channel?): value}."""
    low = dt.date.fromisoformat(start) if start else dt.date.min
    high = dt.date.fromisoformat(end) if end else dt.date.max
    counts: dict[tuple, float] = defaultdict(float)
    spends: dict[tuple, float] = defaultdict(float)

    def key(day: dt.date, channel: str) -> tuple:
        return ((day.replace(day=1).isoformat(),) if monthly else ()) + ((channel,) if by_channel else ())

    for row in LEADS:
        day = _day(row["created_at"])
        if low <= day < high and (channels is None or row["channel"] in channels):
            counts[key(day, row["channel"])] += 1
    for row in AD_SPEND:
        day = _day(row["day"])
        if low <= day < high and (channels is None or row["channel"] in channels):
            spends[key(day, row["channel"])] += row["spend"]
    keys = set(counts) | set(spends)
    if kpi == "lead_count":
        return {k: counts.get(k, 0) for k in keys}
    if kpi == "spend":
        return {k: spends.get(k, 0) for k in keys}
    return {k: (spends.get(k, 0) / counts[k] if counts.get(k) else None) for k in keys}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(app, port: int | None = None):
    """Serve ``app`` with uvicorn on 127.0.0.1 in a thread; yields the base URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
