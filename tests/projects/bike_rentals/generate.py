#!/usr/bin/env python3
"""Generate the warehouse of the bike_rentals test project: four small CSV files.

    python tests/projects/bike_rentals/generate.py OUT_FOLDER [--seed N]

The output depends only on the seed (the same seed gives byte-identical files), uses only the
standard library and holds a few thousand rows, so tests generate it afresh in a temporary folder.

Tables (CSV conventions: header row, ``2025-01-31`` dates, ``2025-01-31 14:05:00`` timestamps,
an empty field is NULL):

* ``shops``: ``code, name, region, tier``. A dimension table without a time column; shop ``X1``
  has no region.
* ``rentals``: ``rental_id, started_at (TIMESTAMP), shop_code, bike_type, channel, member_id,
  minutes, fee, status``. 2024-10-01 00:00:00 to 2025-12-31 23:59:59.
* ``repairs``: ``repair_id, repair_day (DATE), shop_code, bike_class, cost``. 2025-01-01 (a
  Wednesday) to 2025-11-30.
* ``fleet_snapshots``: ``snapshot_day (DATE), bike_id, shop_code, bike_type, book_value``. Weekly
  counts on Sundays from 2025-01-05 to 2025-09-28.

Deliberate irregularities the tests rely on:

* No rentals at all in August 2025 (the shops closed), while repairs and fleet counts go on.
* No cargo rentals before March 2025, and every cargo rental of March 2025 was cancelled (its
  revenue is 0 although it has rows).
* The ``partner`` channel starts in April 2025; shop ``E1`` opens on 2025-06-01.
* About 2% of rentals come from shop ``Z9``, which is not in ``shops`` (their region is NULL), 1%
  have no shop and 3% no bike type; walk-in rentals have no member id; 5% have no minutes.
* No e-bike repairs in April 2025; 5% of repairs have no bike class.
* The fleet count of Sunday 2025-05-18 never happened; each bike misses about 15% of the counts it
  should be in; two bikes have no bike type; on Wednesday 2025-07-16 the bikes of shop N1 were
  also counted (a mid-week count). The counts stop after 2025-09-28 while rentals go on.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import random
from pathlib import Path

SEED = 20250101
SHOPS = [  # code, name, region, tier
    ("N1", "North Station", "north", "flagship"),
    ("N2", "Harbour", "north", "standard"),
    ("S1", "Old Town", "south", "standard"),
    ("S2", "Riverside kiosk", "south", "kiosk"),
    ("X1", "Pop-up", None, "kiosk"),
    ("E1", "East Park", "east", "standard"),
]
RENTALS_FROM, RENTALS_TO = dt.date(2024, 10, 1), dt.date(2025, 12, 31)
REPAIRS_FROM, REPAIRS_TO = dt.date(2025, 1, 1), dt.date(2025, 11, 30)
FLEET_FROM, FLEET_TO = dt.date(2025, 1, 5), dt.date(2025, 9, 28)
MISSED_COUNT = dt.date(2025, 5, 18)
MIDWEEK_COUNT = dt.date(2025, 7, 16)
E1_OPENS = dt.date(2025, 6, 1)
PARTNER_FROM = dt.date(2025, 4, 1)


def _days(first: dt.date, last: dt.date):
    day = first
    while day <= last:
        yield day
        day += dt.timedelta(days=1)


def _text(value) -> str:
    return "" if value is None else str(value)


def _write(folder: Path, table: str, header: list[str], rows: list[tuple]) -> None:
    with open(folder / f"{table}.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([[_text(value) for value in row] for row in rows])


def _rentals(rng: random.Random) -> list[tuple]:
    rows = []
    for day in _days(RENTALS_FROM, RENTALS_TO):
        if day.year == 2025 and day.month == 8:
            continue
        count = rng.choice([0, 1, 2, 3, 3, 4, 4, 5, 6, 8])
        if day in (RENTALS_FROM, RENTALS_TO):
            count = max(count, 1)
        for i in range(count):
            seconds = 0 if rng.random() < 0.03 else rng.randrange(24 * 3600)
            if day == RENTALS_FROM and i == 0:
                seconds = 0  # the very first rental starts at midnight
            if day == RENTALS_TO and i == count - 1:
                seconds = 24 * 3600 - 1  # and the last one a second before the year ends
            started = dt.datetime.combine(day, dt.time()) + dt.timedelta(seconds=seconds)
            shops = [code for code, *_ in SHOPS if code != "E1" or day >= E1_OPENS]
            draw = rng.random()
            shop = "Z9" if draw < 0.02 else None if draw < 0.03 else rng.choice(shops)
            types = ["city"] * 11 + ["e-bike"] * 6 + ([] if day < dt.date(2025, 3, 1) else ["cargo"] * 3)
            bike_type = None if rng.random() < 0.03 else rng.choice(types)
            channels = ["app"] * 6 + ["walk_in"] * 3 + (["partner"] if day >= PARTNER_FROM else [])
            channel = rng.choice(channels)
            # Walk-ins have no member id; a few regulars rent often, many members only once.
            regular = rng.random() < 0.7
            member = None if channel == "walk_in" else rng.randrange(1, 40) if regular else rng.randrange(40, 600)
            minutes = None if rng.random() < 0.05 else rng.randrange(5, 181)
            fee = "4.00" if minutes is None else f"{1.5 + minutes * 0.12 + (2 if bike_type == 'e-bike' else 0):.2f}"
            cancelled = rng.random() < 0.1 or (bike_type == "cargo" and (day.year, day.month) == (2025, 3))
            rows.append((started, shop, bike_type, channel, member, minutes, fee,
                         "cancelled" if cancelled else "done"))
    return [(i + 1, *row) for i, row in enumerate(rows)]


def _repairs(rng: random.Random) -> list[tuple]:
    rows = []
    for day in _days(REPAIRS_FROM, REPAIRS_TO):
        count = rng.choice([0, 0, 1, 1, 2])
        if day in (REPAIRS_FROM, REPAIRS_TO):
            count = max(count, 1)
        for _ in range(count):
            shops = [code for code, *_ in SHOPS if code != "E1" or day >= E1_OPENS]
            classes = ["city", "city", "e-bike", "cargo"]
            if (day.year, day.month) == (2025, 4):
                classes = ["city", "city", "cargo"]
            bike_class = None if rng.random() < 0.05 else rng.choice(classes)
            rows.append((day, rng.choice(shops), bike_class, f"{rng.uniform(10, 250):.2f}"))
    return [(i + 1, *row) for i, row in enumerate(rows)]


def _fleet(rng: random.Random) -> list[tuple]:
    sundays = [day for day in _days(FLEET_FROM, FLEET_TO) if day.weekday() == 6 and day != MISSED_COUNT]
    bikes = []
    for bike_id in range(1, 37):
        bike_type = None if bike_id in (17, 33) else rng.choice(["city", "city", "city", "e-bike", "e-bike", "cargo"])
        shop = rng.choice(["N1", "N2", "S1", "S2", "X1"])
        price = rng.uniform(400, 2500) * (1.6 if bike_type == "e-bike" else 1)
        joined = sundays[rng.randrange(0, 8)] if bike_id > 6 else sundays[0]
        left = sundays[rng.randrange(20, len(sundays))] if rng.random() < 0.3 else FLEET_TO
        bikes.append((bike_id, shop, bike_type, price, joined, left))
    rows = []
    for day in sorted(sundays + [MIDWEEK_COUNT]):
        for bike_id, shop, bike_type, price, joined, left in bikes:
            if not joined <= day <= left:
                continue
            if day == MIDWEEK_COUNT and shop != "N1":
                continue
            if day != MIDWEEK_COUNT and rng.random() < 0.15:
                continue  # missed at this count
            value = price * (1 - 0.004 * (day - joined).days / 7)
            rows.append((day, bike_id, shop, bike_type, f"{value:.2f}"))
    return rows


def generate(folder: str | Path, seed: int = SEED) -> Path:
    """Write shops.csv, rentals.csv, repairs.csv and fleet_snapshots.csv into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    _write(folder, "shops", ["code", "name", "region", "tier"], SHOPS)
    _write(folder, "rentals", ["rental_id", "started_at", "shop_code", "bike_type", "channel", "member_id",
                               "minutes", "fee", "status"], _rentals(rng))
    _write(folder, "repairs", ["repair_id", "repair_day", "shop_code", "bike_class", "cost"], _repairs(rng))
    _write(folder, "fleet_snapshots", ["snapshot_day", "bike_id", "shop_code", "bike_type", "book_value"],
           _fleet(rng))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to write the CSV files into")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    generate(args.out, args.seed)


if __name__ == "__main__":
    main()
