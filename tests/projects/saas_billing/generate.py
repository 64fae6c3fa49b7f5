#!/usr/bin/env python3
"""Generate the warehouse of the saas_billing test project: five small CSV files.

    python tests/projects/saas_billing/generate.py OUT_FOLDER [--seed N]

The output depends only on the seed, uses only the standard library and holds about two thousand
rows, so tests generate it afresh in a temporary folder. Timestamps are UTC (the project reads them
in America/New_York); an empty field is NULL.

Tables:

* ``segments``: ``segment_code, segment, sales_team``. Reached from the facts in two hops
  (fact -> accounts -> segments); segment ``S4`` has no sales team.
* ``accounts``: ``account_id, name, country, segment_code``. Some accounts have no country, no
  segment, or a segment code (``S9``) that ``segments`` lacks. Facts also name accounts 61 to 64,
  which ``accounts`` lacks (every dimension reached through them is NULL).
* ``subscriptions`` (an interval source): ``subscription_id, account_id, started_at, ended_at,
  plan, mrr``, TIMESTAMPs from 2024-09 to 2025-12. A quarter are still open (no end); a quarter end
  exactly at a local midnight that starts a month (04:00 or 05:00 UTC, with daylight saving time),
  some one hour before it (the last day of the month, locally), some on the day they started.
* ``invoices``: ``invoice_id, account_id, issued_at, plan, status, amount``. Issued on about 400
  days, one to four on the same day, many in the first hours of the UTC day (the evening before,
  locally); 10% have no amount; status is ``paid``, ``open`` or ``void``.
* ``usage_events``: ``event_id, account_id, used_on (DATE), feature, seats, quantity``. None in March
  and August 2025; some have no feature or no quantity; at most one per account and day.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import random
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

SEED = 20260101
ZONE = ZoneInfo("America/New_York")
UTC = ZoneInfo("UTC")
SEGMENTS = [("S1", "smb", "inside"), ("S2", "mid_market", "field"), ("S3", "enterprise", "field"),
            ("S4", "startup", None)]
COUNTRIES = ["US", "US", "DE", "FR", None]
SEGMENT_CODES = ["S1", "S1", "S2", "S3", "S4", "S9", None]
PLANS = ["basic", "basic", "pro", "team", None]
FEATURES = ["api", "reports", "exports", None]
FIRST_DAY, LAST_DAY = dt.date(2024, 9, 1), dt.date(2025, 12, 31)
NO_USAGE_MONTHS = {(2025, 3), (2025, 8)}


def _utc_of_local_midnight(day: dt.date) -> dt.datetime:
    """The UTC time at which ``day`` begins in New York (04:00 or 05:00 UTC)."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=ZONE).astimezone(UTC).replace(tzinfo=None)


def _day(rng: random.Random, first: dt.date = FIRST_DAY, last: dt.date = LAST_DAY) -> dt.date:
    return first + dt.timedelta(days=rng.randrange((last - first).days + 1))


def _month_start_after(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def _subscriptions(rng: random.Random) -> list[dict]:
    rows = []
    for sub_id in range(1, 181):
        day = _day(rng, FIRST_DAY, dt.date(2025, 11, 30))
        started = dt.datetime.combine(day, dt.time(rng.randrange(24), rng.randrange(60)))
        if rng.random() < 0.15:
            started = _utc_of_local_midnight(day.replace(day=1))  # starts with a local month
        shape = rng.random()
        if shape < 0.25:
            ended = None
        elif shape < 0.5:  # ends as a month begins, locally
            ended = _utc_of_local_midnight(_month_start_after(started.date(), rng.randrange(1, 8)))
        elif shape < 0.6:  # an hour before that: the month's last day, locally
            ended = _utc_of_local_midnight(_month_start_after(started.date(), rng.randrange(1, 8)))
            ended -= dt.timedelta(hours=1)
        elif shape < 0.65:  # the same (UTC) day
            ended = started + dt.timedelta(minutes=rng.randrange(1, 120))
        else:
            ended = started + dt.timedelta(days=rng.randrange(3, 300), hours=rng.randrange(24))
        if ended is not None and ended.date() > LAST_DAY:
            ended = None  # still open at the end of the data
        rows.append({"subscription_id": sub_id, "account_id": rng.randrange(1, 65), "started_at": started,
                     "ended_at": ended, "plan": rng.choice(PLANS), "mrr": Decimal(rng.randrange(1000, 90000)) / 100})
    return rows


def _invoices(rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(420):
        day = _day(rng, dt.date(2024, 10, 1))
        for _ in range(rng.choice([1, 1, 2, 3, 4])):
            hour = rng.randrange(6) if rng.random() < 0.4 else rng.randrange(24)
            amount = None if rng.random() < 0.1 else Decimal(rng.randrange(500, 500000)) / 100
            rows.append({"invoice_id": len(rows) + 1, "account_id": rng.randrange(1, 65),
                         "issued_at": dt.datetime.combine(day, dt.time(hour, rng.randrange(60), rng.randrange(60))),
                         "plan": rng.choice(PLANS), "status": rng.choices(["paid", "open", "void"], [7, 2, 1])[0],
                         "amount": amount})
    return rows


def _usage(rng: random.Random) -> list[dict]:
    rows, seen = [], set()
    while len(rows) < 700:
        day, account = _day(rng, dt.date(2024, 10, 1)), rng.randrange(1, 65)
        if (day.year, day.month) in NO_USAGE_MONTHS or (account, day) in seen:
            continue
        seen.add((account, day))
        rows.append({"event_id": len(rows) + 1, "account_id": account, "used_on": day,
                     "feature": rng.choice(FEATURES), "seats": rng.randrange(1, 40),
                     "quantity": None if rng.random() < 0.05 else rng.randrange(1, 500)})
    return rows


def tables(seed: int = SEED) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    accounts = [{"account_id": i, "name": f"account {i}", "country": rng.choice(COUNTRIES),
                 "segment_code": rng.choice(SEGMENT_CODES)} for i in range(1, 61)]
    return {
        "segments": [dict(zip(("segment_code", "segment", "sales_team"), row)) for row in SEGMENTS],
        "accounts": accounts,
        "subscriptions": _subscriptions(rng),
        "invoices": _invoices(rng),
        "usage_events": _usage(rng),
    }


def generate(out: Path, seed: int = SEED) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for table, rows in tables(seed).items():
        with open(out / f"{table}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(rows[0])
            # str() writes 2025-01-31, 2025-01-31 14:05:00 (whole seconds) and decimals as CSV reads them
            writer.writerows(["" if value is None else str(value) for value in row.values()] for row in rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=SEED)
    arguments = parser.parse_args()
    generate(arguments.out, arguments.seed)
