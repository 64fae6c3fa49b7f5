"""Interval sources (``time_end:``): rows with a start and an end, each counted in every period it
overlaps, and last()/first() read at the period's end (start). Every value is checked against a
plain-Python reading of the raw rows: each row is active on the local days from its start up to
the day before its end (an open row up to today), and a request is answered by walking those days.

The project (written here, data generated with a seed) has a TIMESTAMP interval source (members,
with open rows, rows that start and end on one day, rows without a channel), a DATE interval
source (subscriptions) and an event source (signups) to ask together with them.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpi_engine.cli import cli
from kpi_engine.engine import open_project
from warehouse_loading import load_postgres, sqlite_warehouse

pytest_plugins = ["pg"]

D = dt.date
TODAY = dt.date.today()
CHANNELS = ["ads", "email", "referral", None]

PROJECT = """\
name: intervals
warehouse: {adapter: duckdb, data: data}
"""

SPECS = """\
sources:
  members:
    table: members
    time: joined_at
    time_end: left_at
    dimensions: [channel]
  subscriptions:
    table: subscriptions
    time: started_on
    time_end: ended_on
    dimensions: [channel]
  signups:
    table: signups
    time: signed_up_at
    dimensions: [channel]

kpis:
  members_at_end: {formula: last(members)}
  members_at_start: {formula: first(members)}
  active_members: {formula: count(members)}
  active_people: {formula: count_distinct(members.person_id)}
  mrr: {formula: last(subscriptions.mrr), unit: currency}
  mrr_change: {formula: mrr - previous(mrr), unit: currency}
  net_members: {formula: members_at_end - members_at_start}
  signups: {formula: count(signups)}
"""

TABLES = {  # column kinds, as tests/warehouse_loading.py loads them into PostgreSQL and SQLite
    "members": {"member_id": "integer", "person_id": "integer", "joined_at": "timestamp", "left_at": "timestamp",
                "channel": "text"},
    "subscriptions": {"sub_id": "integer", "started_on": "date", "ended_on": "date", "channel": "text",
                      "mrr": "decimal"},
    "signups": {"signup_id": "integer", "signed_up_at": "timestamp", "channel": "text"},
}


def generate(seed: int = 5) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    first = dt.datetime(2024, 11, 1)

    def moment() -> dt.datetime:
        return first + dt.timedelta(days=rng.randrange(200), hours=rng.randrange(24), minutes=rng.randrange(60))

    members = []
    for i in range(1, 161):
        joined = moment()
        shape = rng.random()
        if shape < 0.25:
            left = None  # still a member
        elif shape < 0.3:
            left = joined + dt.timedelta(hours=rng.randrange(3))  # joined and left the same day (or the next)
        else:
            left = joined + dt.timedelta(days=rng.randrange(1, 120), hours=rng.randrange(24))
        members.append({"member_id": i, "person_id": rng.randrange(1, 90), "joined_at": joined, "left_at": left,
                        "channel": rng.choice(CHANNELS)})
    subscriptions = []
    for i in range(1, 81):
        start = moment().date()
        end = None if rng.random() < 0.3 else start + dt.timedelta(days=rng.choice([1, 15, 31, 45, 90, 150]))
        subscriptions.append({"sub_id": i, "started_on": start, "ended_on": end, "channel": rng.choice(CHANNELS),
                              "mrr": Decimal(rng.randrange(900, 30000)) / 100})
    signups = [{"signup_id": i, "signed_up_at": moment(), "channel": rng.choice(CHANNELS)} for i in range(1, 121)]
    return {"members": members, "subscriptions": subscriptions, "signups": signups}


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


@pytest.fixture(scope="module")
def rows():
    return generate()


@pytest.fixture(scope="module")
def folder(rows, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("intervals")
    (root / "kpi_engine.yaml").write_text(PROJECT)
    (root / "specs.yaml").write_text(SPECS)
    (root / "data").mkdir()
    for table, columns in TABLES.items():
        with open(root / "data" / f"{table}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows([_text(row[c]) for c in columns] for row in rows[table])
    return root


@pytest.fixture(scope="module")
def project(folder):
    with open_project(folder) as opened:
        yield opened


# --------------------------------------------------------------------------- the plain-Python reading

def _day(value) -> dt.date | None:
    return value.date() if isinstance(value, dt.datetime) else value


def _period(day: dt.date, grain: str | None) -> dt.date | None:
    if grain is None:
        return None
    if grain == "day":
        return day
    if grain == "week":
        return day - dt.timedelta(days=day.weekday())
    if grain == "month":
        return day.replace(day=1)
    return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)  # quarter


class Intervals:
    """One interval table read by walking days: which rows are active on each day."""

    def __init__(self, rows: list[dict], start: str, end: str):
        self.rows = [(r, _day(r[start]), _day(r[end])) for r in rows]
        self.first_day = min(s for _, s, _ in self.rows)

    @staticmethod
    def active(start: dt.date, end: dt.date | None, day: dt.date) -> bool:
        return start <= day and (end is None or end > day)

    def periods(self, grain, start, end) -> dict:
        """Period -> the days of the range in it (the range: --from or the first day of the data,
        to --to and never after today)."""
        first = start or self.first_day
        stop = min(end, TODAY + dt.timedelta(days=1)) if end else TODAY + dt.timedelta(days=1)
        days: dict = defaultdict(list)
        day = first
        while day < stop:
            days[_period(day, grain)].append(day)
            day += dt.timedelta(days=1)
        return days

    def answer(self, kind: str, grain, start, end, by: bool, value=None, where=None) -> dict:
        """{(period, channel?): value} over the keys where some row is active on some day."""
        result: dict = {}
        for period, days in self.periods(grain, start, end).items():
            groups: dict = defaultdict(list)
            for row, s, e in self.rows:
                if where is not None and row["channel"] not in where:
                    continue
                if any(self.active(s, e, d) for d in days):
                    groups[(row["channel"],) if by else ()].append((row, s, e))
            for dims, group in groups.items():
                key = ((period,) if grain else ()) + dims
                if kind == "count":
                    result[key] = len(group)
                elif kind == "count_distinct":
                    result[key] = len({row[value] for row, _, _ in group})
                else:
                    day = days[-1] if kind == "last" else days[0]
                    result[key] = sum((row[value] if value else 1) for row, s, e in group if self.active(s, e, day))
        return result

    def snapshot_periods(self, grain) -> set:
        """Whole periods in which some row is active (each has a snapshot)."""
        return {p for p, days in self.periods(grain, None, None).items()
                if any(self.active(s, e, d) for _, s, e in self.rows for d in days)}


def _previous(period: dt.date, grain: str) -> dt.date:
    return _period(period - dt.timedelta(days=1), grain)


def _close(engine: dict, expected: dict, name: str) -> list[str]:
    problems = []
    if set(engine) != set(expected):
        return [f"{name}: keys only in the engine {sorted(set(engine) - set(expected), key=repr)[:3]}, "
                f"only in the reference {sorted(set(expected) - set(engine), key=repr)[:3]}"]
    for key, want in expected.items():
        got = engine[key]
        if (want is None) != (got is None) or (want is not None and abs(float(want) - got) > 1e-9):
            problems.append(f"{name} {key}: engine {got!r}, reference {want!r}")
    return problems


def _engine(project, names, grain, start, end, by, where=None) -> dict[str, dict]:
    result = project.evaluate(names, grain=grain, start=start, end=end, by=["channel"] if by else [],
                              where=where)
    keys = (["period"] if grain else []) + (["channel"] if by else [])
    values: dict[str, dict] = {name: {} for name in names}
    for row in result.to_dicts():
        key = tuple(row[k] for k in keys)
        for name in names:
            values[name][key] = row[name]
    return values


READINGS = {  # KPI -> (table, kind, column)
    "members_at_end": ("members", "last", None),
    "members_at_start": ("members", "first", None),
    "active_members": ("members", "count", None),
    "active_people": ("members", "count_distinct", "person_id"),
    "mrr": ("subscriptions", "last", "mrr"),
}

REQUESTS = [  # grain, --from, --to, by channel
    ("month", D(2024, 11, 1), D(2025, 7, 1), False),
    ("month", D(2025, 1, 15), D(2025, 5, 10), True),
    ("week", D(2025, 2, 3), D(2025, 4, 1), True),
    ("quarter", None, D(2025, 8, 1), True),
    ("day", D(2025, 3, 1), D(2025, 3, 20), False),
    (None, D(2025, 2, 1), D(2025, 3, 1), True),
    (None, None, D(2025, 1, 1), False),
    ("month", None, None, False),  # open rows run to today
]


@pytest.fixture(scope="module")
def tables(rows):
    return {"members": Intervals(rows["members"], "joined_at", "left_at"),
            "subscriptions": Intervals(rows["subscriptions"], "started_on", "ended_on")}


@pytest.mark.parametrize("grain, start, end, by", REQUESTS, ids=[f"{r[0]}-{r[1]}-{r[2]}-{'by' if r[3] else 'all'}"
                                                                  for r in REQUESTS])
def test_each_reading_alone_and_together_matches_walking_the_days(project, tables, grain, start, end, by):
    together = _engine(project, list(READINGS), grain, start, end, by)
    problems = []
    for name, (table, kind, column) in READINGS.items():
        expected = tables[table].answer(kind, grain, start, end, by, column)
        alone = _engine(project, [name], grain, start, end, by)[name]
        problems += _close(alone, expected, name)
        # Asked with the others, its cells hold the same values and are empty outside its rows.
        problems += _close({k: v for k, v in together[name].items() if k in expected}, expected, f"{name} (together)")
        problems += [f"{name} {key}: {value!r} outside its rows" for key, value in together[name].items()
                     if key not in expected and value is not None]
    assert not problems, "\n".join(problems[:20])


def test_where_filters_the_rows_before_they_are_spread(project, tables):
    expected = tables["members"].answer("last", "month", D(2025, 1, 1), D(2025, 6, 1), False,
                                        where={"ads", "email"})
    engine = _engine(project, ["members_at_end"], "month", D(2025, 1, 1), D(2025, 6, 1), False,
                     where="channel in ('ads', 'email')")
    assert not _close(engine["members_at_end"], expected, "members_at_end")


@pytest.mark.parametrize("start", [D(2025, 2, 1), D(2025, 2, 14)], ids=["from-period-start", "from-mid-period"])
def test_previous_of_a_snapshot_reads_the_whole_previous_period(project, tables, start):
    subs = tables["subscriptions"]
    end = D(2025, 6, 1)
    now = subs.answer("last", "month", start, end, False, "mrr")
    whole = subs.answer("last", "month", None, end, False, "mrr")  # earlier periods, uncut
    has_snapshot = subs.snapshot_periods("month")
    expected = {}
    for (period,), value in now.items():
        back = _previous(period, "month")
        before = whole.get((back,), 0) if back in has_snapshot else None
        expected[(period,)] = None if before is None else value - before
    engine = _engine(project, ["mrr_change"], "month", start, end, False)
    assert not _close(engine["mrr_change"], expected, "mrr_change")


def test_a_row_that_starts_and_ends_on_one_day_is_never_active(project, rows):
    same_day = [r for r in rows["members"] if r["left_at"] is not None and r["left_at"].date() == r["joined_at"].date()]
    assert same_day, "the generated data has such rows"
    row = same_day[0]
    day = row["joined_at"].date()
    result = project.evaluate(["active_members"], start=day, end=day + dt.timedelta(days=1),
                              where=f"channel = '{row['channel']}'" if row["channel"] else "channel is null")
    others = [r for r in rows["members"] if r["channel"] == row["channel"] and r["joined_at"].date() <= day
              and (r["left_at"] is None or r["left_at"].date() > day)]
    assert result.rows[0][0] == len(others)


def test_an_interval_source_combines_with_an_event_source(project, tables, rows):
    engine = _engine(project, ["members_at_end", "signups"], "month", D(2025, 1, 1), D(2025, 4, 1), True)
    expected_members = tables["members"].answer("last", "month", D(2025, 1, 1), D(2025, 4, 1), True)
    expected_signups: dict = defaultdict(int)
    for r in rows["signups"]:
        day = r["signed_up_at"].date()
        if D(2025, 1, 1) <= day < D(2025, 4, 1):
            expected_signups[(_period(day, "month"), r["channel"])] += 1
    assert not _close({k: v for k, v in engine["members_at_end"].items() if k in expected_members},
                      expected_members, "members_at_end")
    assert not _close({k: v for k, v in engine["signups"].items() if k in expected_signups},
                      dict(expected_signups), "signups")


def test_the_extent_of_an_interval_source_runs_to_today_while_a_row_is_open(project, rows):
    extents = project.extents(["members", "signups"])
    assert extents["members"].first == min(r["joined_at"] for r in rows["members"]).date()
    assert extents["members"].last == TODAY  # some members never left
    assert extents["signups"].last == max(r["signed_up_at"] for r in rows["signups"]).date()


def test_compile_without_a_warehouse_start_asks_for_from(project):
    result = CliRunner().invoke(cli, ["compile", str(project.project.config.root), "members_at_end",
                                      "--grain", "month", "--from", "2025-01-01", "--to", "2025-03-01"])
    assert result.exit_code == 0, result.output
    assert '"__kpi_active_at_end" = 1' in result.output


def test_time_end_without_time_is_one_clear_error(tmp_path):
    (tmp_path / "kpi_engine.yaml").write_text(PROJECT)
    (tmp_path / "specs.yaml").write_text("sources:\n  members:\n    table: members\n    time_end: left_at\n"
                                         "kpis:\n  n: {formula: count(members)}\n")
    result = CliRunner().invoke(cli, ["validate", str(tmp_path), "--offline"])
    assert result.exit_code != 0
    assert "source 'members' declares 'time_end' but no 'time'" in result.output
    assert result.output.count("error") <= 2, result.output


# --------------------------------------------------------------------------- other warehouses equal DuckDB

@pytest.fixture(scope="module")
def on_postgres(folder, pg_server):
    import dataclasses

    import psycopg
    from psycopg import sql

    database = dataclasses.replace(pg_server, dbname="kpi_intervals")
    with pg_server.admin_connect("postgres") as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(database.dbname)))
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database.dbname),
                                                                   sql.Identifier(database.user)))
    with psycopg.connect(database.url, autocommit=True) as connection:
        load_postgres(connection, TABLES, folder / "data")
    with open_project(folder, warehouse=database.url) as opened:
        yield opened


@pytest.fixture(scope="module")
def on_sqlite(folder, tmp_path_factory):
    url = sqlite_warehouse(tmp_path_factory.mktemp("sqlite"), "intervals", TABLES, folder / "data")
    with open_project(folder, warehouse=url) as opened:
        yield opened


@pytest.mark.parametrize("warehouse", ["on_postgres", "on_sqlite"])
@pytest.mark.parametrize("grain, start, end, by", [REQUESTS[1], REQUESTS[3], REQUESTS[7]],
                         ids=["month-cut", "quarter-no-from", "month-to-today"])
def test_other_warehouses_equal_duckdb(request, project, warehouse, grain, start, end, by):
    other = request.getfixturevalue(warehouse)
    names = list(READINGS) + ["mrr_change", "net_members"]
    want = _engine(project, names, grain, start, end, by)
    got = _engine(other, names, grain, start, end, by)
    problems = [p for name in names for p in _close(got[name], want[name], name)]
    assert not problems, "\n".join(problems[:20])


# --------------------------------------------------------------------------- random requests

DAYS = st.dates(min_value=D(2024, 10, 1), max_value=D(2025, 8, 1))


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(grain=st.sampled_from([None, "day", "week", "month", "quarter"]), start=st.one_of(st.none(), DAYS),
       length=st.integers(min_value=1, max_value=200), by=st.booleans(),
       names=st.lists(st.sampled_from(list(READINGS)), min_size=1, max_size=5, unique=True))
def test_random_requests_match_walking_the_days(project, tables, grain, start, length, by, names):
    end = (start or D(2024, 11, 1)) + dt.timedelta(days=length)
    if grain == "day" and length > 60:
        length, end = 60, (start or D(2024, 11, 1)) + dt.timedelta(days=60)
    together = _engine(project, names, grain, start, end, by)
    problems = []
    for name in names:
        table, kind, column = READINGS[name]
        expected = tables[table].answer(kind, grain, start, end, by, column)
        problems += _close({k: v for k, v in together[name].items() if k in expected}, expected, name)
        problems += [f"{name} {k}: {v!r} outside its rows" for k, v in together[name].items()
                     if k not in expected and v is not None]
    assert not problems, f"grain={grain} start={start} end={end} by={by}\n" + "\n".join(problems[:10])
