"""The first and last day of a source's data read off the rollup its request reads (rollups.py).

A request routed to a rollup needs the extent of the source's data for the ``complete`` flag and,
without a range, for a series of every period, windows in days and custom calendars. Those days
are read from the rollup's days plus the raw rows after its last materialized day (before its
first, when it starts later), never by a scan of the whole raw table. Each test checks the
routed result (with its complete flags) against --no-rollups and against plain Python over the
rows, and the extent query's SQL for what it reads. The project is test_rollups.py's (orders in
UTC read in Asia/Tokyo, test orders dropped by where:, a DATE source) plus an interval source.
"""

from __future__ import annotations

import datetime as dt
import random
import re

import duckdb
import pytest
from click.testing import CliRunner

from kpi_engine import engine as engine_module
from kpi_engine.cli import cli
from kpi_engine.completeness import Extent
from kpi_engine.engine import open_project
from test_rollups import (CONFIG, FIRST_DAY, SPECS, build, insert_orders, load, local_day, make_orders,
                          order_facts, plan_notes, reference, same)

CUT = dt.date(2024, 5, 1)  # materialized up to the day before
BY_MARKET, DAILY, VISITS = "analytics_orders_by_market", "kpi_rollup_orders_daily", "kpi_rollup_visits_daily"
SPECS_X = SPECS.replace("kpis:\n", """\
  memberships:
    table: memberships
    time: started_on
    time_end: ended_on
kpis:
  members_during: {formula: count(memberships)}
""")
CONFIG_X = CONFIG + "granularities:\n  retail_month: {retail: 4-5-4, length: month}\n"


def make_memberships(rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(150):
        start = FIRST_DAY + dt.timedelta(days=rng.randrange(-40, 150))
        end = None if rng.random() < 0.3 else start + dt.timedelta(days=rng.randrange(0, 90))
        rows.append({"started_on": start, "ended_on": end})
    return rows


def build_x(folder):
    data = build(folder, SPECS_X, CONFIG_X)
    data["memberships"] = make_memberships(random.Random(23))
    with duckdb.connect(str(folder / "warehouse.duckdb")) as connection:
        connection.execute("CREATE TABLE memberships (started_on DATE, ended_on DATE)")
        load(connection, "memberships", data["memberships"], folder)
    return data


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shop")
    data = build_x(folder)
    with open_project(folder) as project:
        project.materialize(end=CUT)
        yield folder, project, order_facts(data["orders"]), data


@pytest.fixture
def extent_sql(monkeypatch):
    """The SQL of every extent query the engine runs, in order."""
    seen: list[str] = []
    real = engine_module.extent_query

    def recording(*args, **kwargs):
        query = real(*args, **kwargs)
        seen.append(query.sql(dialect="duckdb"))
        return query

    monkeypatch.setattr(engine_module, "extent_query", recording)
    return seen


# -- plain Python


def extent(days) -> tuple[dt.date, dt.date] | None:
    days = list(days)
    return (min(days), max(days)) if days else None


def month_after(month: dt.date) -> dt.date:
    return (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def complete(period: dt.date, after: dt.date, extents, start=None, end=None) -> bool:
    """completeness.py's rule: the period [period, after) inside the range and every source's data."""
    if (start and period < start) or (end and after > end):
        return False
    return all(e is not None and e[0] <= period and after <= e[1] + dt.timedelta(days=1) for e in extents)


def parts(sql: str) -> dict[str, str]:
    """source -> its part of an extent query."""
    pieces = re.split(r"'(\w+)' AS \"source_name\"", sql)
    return dict(zip(pieces[1::2], pieces[2::2]))


def off_rollup(sql: str, table: str, boundary: dt.date, source: str = "orders") -> bool:
    """The extent of ``source`` is read from ``table`` and its raw rows from ``boundary`` (local) on alone."""
    part = parts(sql)[source]
    return (table in part and part.count(f'FROM "{source}"') == 1 and part.count(f">= CAST('{boundary}") == 1
            and " < " not in part)


def off_raw_rows(sql: str, source: str) -> bool:
    """The extent of ``source`` is read from all its raw rows, as without rollups."""
    part = parts(sql)[source]
    return ("kpi_rollup" not in part and "analytics" not in part and part.count(f'FROM "{source}"') == 1
            and ">= CAST(" not in part)


# -- the complete flag


def test_the_complete_flag_reads_the_rollup_and_the_raw_rows_after_it(shop, extent_sql):
    _, project, facts, _ = shop
    query = project.compile(["orders", "revenue"], grain="month", by=["market"])
    assert set(query.extent_rollups) == {"orders"}
    got = project.evaluate(["orders", "revenue"], grain="month", by=["market"]).to_dicts()
    assert len(extent_sql) == 1 and off_rollup(extent_sql[0], BY_MARKET, CUT)
    assert got == project.evaluate(["orders", "revenue"], grain="month", by=["market"], rollups=False).to_dicts()
    assert off_raw_rows(extent_sql[-1], "orders")  # --no-rollups
    data = extent(row["day"] for row in facts)
    for kpi in ("orders", "revenue"):
        same({(r["period"], r["market"]): r[kpi] for r in got}, reference(facts, kpi, "month", ("market",)), kpi)
    assert [r["complete"] for r in got] == [complete(r["period"], month_after(r["period"]), [data]) for r in got]
    assert {r["complete"] for r in got} == {True, False}  # the first and last months are cut by the data
    # --complete-only runs on the complete months alone, found from the same days
    assert project.evaluate(["orders", "revenue"], grain="month", by=["market"], complete_only=True).to_dicts() == \
        [r for r in got if r["complete"]]


def test_two_sources_each_read_where_their_groupings_read(shop, extent_sql):
    _, project, facts, data = shop
    # by market both sources read a rollup; by device visits_daily cannot answer: visits' extent is raw
    for by, rolled in ((["market"], {"orders", "visits"}), (["device"], {"orders"})):
        extent_sql.clear()
        got = project.evaluate(["conversion"], grain="week", by=by, start=dt.date(2024, 1, 8)).to_dicts()
        assert set(project.compile(["conversion"], grain="week", by=by).extent_rollups) == rolled
        assert off_rollup(extent_sql[0], BY_MARKET if by == ["market"] else DAILY, CUT)
        if "visits" in rolled:
            assert off_rollup(extent_sql[0], VISITS, CUT, "visits")
        else:
            assert off_raw_rows(extent_sql[0], "visits")
        assert got == project.evaluate(["conversion"], grain="week", by=by, start=dt.date(2024, 1, 8),
                                       rollups=False).to_dicts()
        extents = [extent(r["day"] for r in facts), extent(r["visit_day"] for r in data["visits"])]
        for row in got:
            after = row["period"] + dt.timedelta(days=7)
            assert row["complete"] == complete(row["period"], after, extents, dt.date(2024, 1, 8)), row


@pytest.mark.parametrize("options, why", [
    (dict(kpis=["orders"], where="status = 'paid'"), "--where reads a dimension no rollup keeps"),
    (dict(kpis=["orders", "buyers"]), "a distinct count: the grouping reads raw rows"),
    (dict(kpis=["orders"], rollups=False), "--no-rollups"),
])
def test_a_grouping_on_raw_rows_keeps_the_raw_extent(shop, extent_sql, options, why):
    _, project, facts, _ = shop
    query = project.compile(grain="month", **options)
    assert query.extent_rollups == {}, why
    assert not any(n.startswith("first and last day of data") for n in plan_notes(query.plan))
    rows = project.evaluate(grain="month", **options).to_dicts()
    assert off_raw_rows(extent_sql[0], "orders"), why
    data = extent(row["day"] for row in facts)
    assert [r["complete"] for r in rows] == [complete(r["period"], month_after(r["period"]), [data]) for r in rows]


def test_a_where_the_rollup_answers_reads_the_extent_of_all_rows_as_before(shop, extent_sql):
    """--where narrows the numbers, never the extent (completeness.py): the rollup gives all its days."""
    _, project, facts, _ = shop
    options = dict(grain="day", by=["market"], where="market = 'kr'", start=dt.date(2023, 12, 30),
                   end=dt.date(2024, 1, 4))
    rows = project.evaluate(["orders"], **options).to_dicts()
    assert off_rollup(extent_sql[0], BY_MARKET, CUT)
    assert rows == project.evaluate(["orders"], rollups=False, **options).to_dicts()
    first = min(row["day"] for row in facts)  # of every market: the first 'kr' day may come later
    kr = reference(facts, "orders", "day", ("market",), lambda r: r["market"] == "kr", options["start"], options["end"])
    assert {(r["period"], r["market"]): r["orders"] for r in rows} == kr
    assert all(r["complete"] == (r["period"] >= first) for r in rows)


# -- extents needed to compile: series, windows in days, custom calendars, interval starts


def test_a_series_of_every_period_reads_its_ends_off_the_rollup(shop, extent_sql):
    _, project, facts, _ = shop
    options = dict(formulas=["before=previous(cumulative(count(orders)))"], grain="month")
    query = project.compile(**options)
    assert BY_MARKET in query.sql() and set(query.extent_rollups) == {"orders"}
    extent_sql.clear()
    rows = project.evaluate(**options).to_dicts()
    assert len(extent_sql) == 2  # the series' ends (to compile), then the complete flag
    assert all(off_rollup(sql, BY_MARKET, CUT) for sql in extent_sql)
    assert rows == project.evaluate(rollups=False, **options).to_dicts()
    first, last = extent(row["day"] for row in facts)
    months, month = [], first.replace(day=1)
    while month <= last:
        months.append(month)
        month = month_after(month)
    assert [r["period"] for r in rows] == months
    for row in rows:
        earlier = [r for r in facts if r["day"] < row["period"]]
        assert row["before"] == len(earlier), row  # (0 before the first month: a count of no rows)
        assert row["complete"] == complete(row["period"], month_after(row["period"]), [(first, last)])


def test_a_guess_the_groupings_do_not_confirm_is_read_again_from_the_raw_rows(shop, extent_sql):
    """The series' ends are needed before the groupings are compiled: read off the rollup that would
    likely answer, then again from the raw rows when the grouping turns out to read them."""
    _, project, facts, _ = shop
    options = dict(formulas=["before=previous(cumulative(count(orders where status = 'paid')))"], grain="month")
    rows = project.evaluate(**options).to_dicts()
    assert len(extent_sql) == 3 and off_rollup(extent_sql[0], BY_MARKET, CUT)  # the guess
    assert off_raw_rows(extent_sql[1], "orders") and off_raw_rows(extent_sql[2], "orders")
    assert project.compile(**options).extent_rollups == {}
    assert rows == project.evaluate(rollups=False, **options).to_dicts()
    paid = [r for r in facts if r["status"] == "paid"]
    first, last = extent(r["day"] for r in facts)
    assert [r["period"] for r in rows][0] == first.replace(day=1) and rows[-1]["period"] == last.replace(day=1)
    for row in rows:
        assert row["before"] == sum(1 for r in paid if r["day"] < row["period"]), row


def test_windows_in_days_and_a_custom_calendar_without_a_range(shop, extent_sql):
    _, project, facts, _ = shop
    first, last = extent(row["day"] for row in facts)
    cases = [(dict(formulas=["week=rolling(count(orders), '7 days')"], grain="month", by=["device"]), DAILY),
             (dict(kpis=["orders", "revenue"], grain="retail_month"), BY_MARKET)]
    for options, table in cases:
        extent_sql.clear()
        rows = project.evaluate(**options).to_dicts()
        assert len(extent_sql) == 2 and all(off_rollup(sql, table, CUT) for sql in extent_sql), options
        assert rows == project.evaluate(rollups=False, **options).to_dicts(), options
    week = project.evaluate(**cases[0][0]).to_dicts()
    for row in week:
        # a window ends on its period's last day (only --to cuts it short)
        end = month_after(row["period"]) - dt.timedelta(days=1)
        mine = [r for r in facts if r["device"] == row["device"] and end - dt.timedelta(days=6) <= r["day"] <= end]
        assert row["week"] == len(mine), row
    retail = project.evaluate(**cases[1][0]).to_dicts()
    starts = [r["period"] for r in retail] + [None]
    for row, after in zip(retail, starts[1:]):
        mine = [r for r in facts if row["period"] <= r["day"] and (after is None or r["day"] < after)]
        assert row["orders"] == len(mine) and row["revenue"] == float(sum(r["amount"] for r in mine))
    assert starts[0] <= first and [r["complete"] for r in retail][1:-1] == [True] * (len(retail) - 2)
    assert retail[0]["complete"] is (starts[0] == first) and retail[-1]["complete"] is False


def test_an_interval_source_keeps_its_raw_extent_beside_a_routed_source(shop, extent_sql):
    _, project, facts, data = shop
    end = dt.date(2024, 7, 1)
    options = dict(kpis=["orders", "members_during"], grain="month", end=end)
    query = project.compile(**options)
    assert set(query.extent_rollups) == {"orders"}  # an interval source is never rolled up
    extent_sql.clear()
    rows = project.evaluate(**options).to_dicts()
    # the start of the memberships (to compile), then both sources (the complete flag)
    assert len(extent_sql) == 2 and list(parts(extent_sql[0])) == ["memberships"]
    assert off_raw_rows(extent_sql[0], "memberships") and off_raw_rows(extent_sql[1], "memberships")
    assert off_rollup(extent_sql[1], BY_MARKET, CUT)
    assert rows == project.evaluate(rollups=False, **options).to_dicts()
    members = data["memberships"]
    today = project.project.config.calendar.today()
    first_member = min(m["started_on"] for m in members)
    last_member = max(today if m["ended_on"] is None or m["ended_on"] > today else m["ended_on"] - dt.timedelta(days=1)
                      for m in members)
    for row in rows:
        days = [row["period"] + dt.timedelta(days=i) for i in range((month_after(row["period"]) - row["period"]).days)]
        days = [d for d in days if first_member <= d < end]
        active = sum(1 for m in members if any(m["started_on"] <= d and (m["ended_on"] is None or m["ended_on"] > d)
                                               for d in days))
        assert (row["members_during"] or 0) == active, row  # (empty outside the KPI's own rows)
        assert (row["orders"] or 0) == sum(1 for r in facts if row["period"] <= r["day"] < month_after(row["period"]))
        whole = [extent(r["day"] for r in facts), (first_member, last_member)]
        assert row["complete"] == complete(row["period"], month_after(row["period"]), whole, end=end), row


# -- what the rollup holds against what the raw table holds now


def test_late_and_deleted_rows_count_as_the_routed_numbers_do_until_a_refresh(tmp_path, extent_sql):
    folder = tmp_path / "shop"
    data = build_x(folder)
    facts = order_facts(data["orders"])
    first, last = extent(r["day"] for r in facts)
    with open_project(folder) as project:
        project.materialize(["orders_daily"], end=last + dt.timedelta(days=4))  # materialized to last + 3
    # After materializing: a late row inside the lookback (a day after the data's last), and the
    # orders of the first week deleted upstream.
    late = make_orders(random.Random(8), 1, last + dt.timedelta(days=2), 1, 50_000)
    late[0].update(status="paid", placed_at=dt.datetime.combine(last + dt.timedelta(days=2), dt.time(3)))
    insert_orders(folder / "warehouse.duckdb", late)
    week = dt.datetime.combine(first + dt.timedelta(days=7), dt.time()) - dt.timedelta(hours=9)  # Tokyo midnight
    with duckdb.connect(str(folder / "warehouse.duckdb")) as connection:
        connection.execute(f"DELETE FROM orders WHERE placed_at < TIMESTAMP '{week}'")
    raw_now = order_facts([r for r in data["orders"] if r["placed_at"] >= week] + late)
    options = dict(grain="month", by=["device"])
    with open_project(folder) as project:
        assert set(project.compile(["orders"], **options).extent_rollups) == {"orders"}
        routed = project.evaluate(["orders"], **options).to_dicts()
        raw = project.evaluate(["orders"], rollups=False, **options).to_dicts()
        # The routed numbers still count the deleted week and not the late row; so does its extent.
        assert {(r["period"], r["device"]): r["orders"] for r in routed} == reference(facts, "orders", "month",
                                                                                      ("device",))
        assert [r["complete"] for r in routed] == [
            complete(r["period"], month_after(r["period"]), [(first, last)]) for r in routed]
        assert routed[0]["period"] == first.replace(day=1) and routed[0]["complete"] is (first.day == 1)
        # Read raw, the first week is gone and the late row is there.
        now = extent(r["day"] for r in raw_now)
        assert now == (first + dt.timedelta(days=7), last + dt.timedelta(days=2))
        assert {(r["period"], r["device"]): r["orders"] for r in raw} == reference(raw_now, "orders", "month",
                                                                                   ("device",))
        assert [r["complete"] for r in raw] == [complete(r["period"], month_after(r["period"]), [now]) for r in raw]
        # A refresh from the first day recomputes every day: routed and raw agree again.
        project.materialize(["orders_daily"], full=True)
        extent_sql.clear()
        assert project.evaluate(["orders"], **options).to_dicts() == raw
        fresh = project.rollup_state()["orders_daily"].last_day + dt.timedelta(days=1)
        assert off_rollup(extent_sql[0], DAILY, fresh)


def test_an_empty_rollup_leaves_every_day_to_the_raw_rows(tmp_path, extent_sql):
    folder = tmp_path / "shop"
    facts = order_facts(build_x(folder)["orders"])
    with open_project(folder) as project:
        project.materialize(["orders_daily"], end=dt.date(2023, 6, 1))  # before the data: no rows
        assert project.rollup_state()["orders_daily"].rows == 0
        options = dict(kpis=["orders", "revenue"], grain="week", by=["device"])
        rows = project.evaluate(**options).to_dicts()
        assert off_rollup(extent_sql[0], DAILY, dt.date(2023, 6, 1))
        assert rows == project.evaluate(rollups=False, **options).to_dicts()
        first, last = extent(r["day"] for r in facts)
        assert [r["complete"] for r in rows] == [
            complete(r["period"], r["period"] + dt.timedelta(days=7), [(first, last)]) for r in rows]
        assert project.extents(["orders"], rollups=project.compile(**options).extent_rollups) == \
            project.extents(["orders"])


def test_a_rollup_materialized_from_a_later_day_adds_the_raw_rows_before_it(tmp_path, extent_sql):
    folder = tmp_path / "shop"
    facts = order_facts(build_x(folder)["orders"])
    start = dt.date(2024, 2, 1)
    # Test orders (dropped by the source's where:) before and after all the others: the raw parts
    # read through the where: too, so neither moves the first or last day.
    ghosts = make_orders(random.Random(4), 2, dt.date(2023, 10, 1), 1, 60_000)
    ghosts[1]["placed_at"] = dt.datetime(2024, 9, 1, 12)
    for row in ghosts:
        row["status"] = "test"
    insert_orders(folder / "warehouse.duckdb", ghosts)
    with open_project(folder) as project:
        project.materialize(["orders_daily"], start=start, end=CUT)
        options = dict(kpis=["orders"], grain="month", by=["device"], start=start)
        rows = project.evaluate(**options).to_dicts()
        sql = extent_sql[0]
        assert DAILY in sql and sql.count('FROM "orders"') == 2
        assert f"< CAST('{start} 00:00:00' AS TIMESTAMP)" in sql and f">= CAST('{CUT} 00:00:00' AS TIMESTAMP)" in sql
        assert rows == project.evaluate(rollups=False, **options).to_dicts()
        first, last = extent(r["day"] for r in facts)
        assert first < start and project.extents(["orders"], rollups=project.compile(**options).extent_rollups) == \
            {"orders": Extent(first, last)}
        assert [r["complete"] for r in rows] == [
            complete(r["period"], month_after(r["period"]), [(first, last)], start) for r in rows]


# -- the plan says so


def test_plan_and_explain_say_where_the_first_and_last_day_are_read(shop):
    folder, project, _, _ = shop
    notes = plan_notes(project.compile(["first_orders"], grain="month").plan)
    note = ("first and last day of data (the complete flag, a series' ends): the days of rollup orders_daily and "
            f"the raw rows after {CUT - dt.timedelta(days=1)}")
    assert note in notes
    assert note not in plan_notes(project.compile(["first_orders", "buyers"], grain="month").plan)
    project.close()  # the commands below open the warehouse themselves
    for command in (["compile", str(folder), "first_orders", "--grain", "month", "--plan"],
                    ["explain", str(folder), "first_orders"]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 0, result.output
        assert re.search(re.escape(note), " ".join(result.output.split())), result.output


def test_the_stored_time_bound_keeps_a_row_whose_local_day_is_after_its_utc_day(tmp_path, extent_sql):
    """In Tokyo, 00:30 on a day is 15:30 UTC the day before: the bound on the stored time that lets a
    scan skip the materialized rows must still keep that row in the raw part."""
    folder = tmp_path / "shop"
    facts = order_facts(build_x(folder)["orders"])
    first, last = extent(r["day"] for r in facts)
    edge = last + dt.timedelta(days=5)
    row = make_orders(random.Random(9), 1, edge, 1, 70_000)[0]
    row.update(status="paid", placed_at=dt.datetime.combine(edge, dt.time(0, 30)) - dt.timedelta(hours=9))
    insert_orders(folder / "warehouse.duckdb", [row])
    with open_project(folder) as project:
        project.materialize(["orders_daily"], end=edge)  # the edge day is the first one read raw
        options = dict(kpis=["orders"], grain="day", by=["device"], start=edge - dt.timedelta(days=1))
        rows = project.evaluate(**options).to_dicts()
        part = parts(extent_sql[0])["orders"]
        assert off_rollup(extent_sql[0], DAILY, edge)
        assert f"""CAST("orders"."placed_at" AS TIMESTAMP) >= CAST('{edge - dt.timedelta(days=2)} 00:00:00'""" in part
        assert rows == [{"period": edge, "device": row["device"], "orders": 1.0, "complete": True}]
        # the routed query's raw rows after the rollup are bounded the same way
        assert f"""CAST("orders"."placed_at" AS TIMESTAMP) >= CAST('{edge - dt.timedelta(days=2)} 00:00:00'""" in \
            project.compile(**options).sql(pretty=False)
        routed = project.compile(**options).extent_rollups
        assert project.extents(["orders"], rollups=routed) == {"orders": Extent(first, edge)} == \
            project.extents(["orders"])


def test_the_stored_time_bounds_west_of_utc(tmp_path):
    """In New York, 23:30 on a day is 04:30 UTC the next day: the bounds on the stored time before
    a rollup's first day and before --to must keep such a row."""
    from zoneinfo import ZoneInfo

    york = ZoneInfo("America/New_York")
    folder = tmp_path / "shop"
    data = build(folder, config=CONFIG.replace("Asia/Tokyo", "America/New_York"))

    def utc(day: dt.date, hour: int, minute: int) -> dt.datetime:  # a New York time, stored in UTC
        at = dt.datetime.combine(day, dt.time(hour, minute), tzinfo=york)
        return at.astimezone(dt.timezone.utc).replace(tzinfo=None)

    start, end = dt.date(2024, 3, 1), dt.date(2024, 6, 1)
    with duckdb.connect(str(folder / "warehouse.duckdb")) as connection:
        connection.execute(f"DELETE FROM orders WHERE placed_at < TIMESTAMP '{utc(start, 0, 0)}'")
    edges = make_orders(random.Random(10), 2, start, 1, 80_000)
    for row, at in zip(edges, (utc(start - dt.timedelta(days=1), 23, 30), utc(end - dt.timedelta(days=1), 23, 30))):
        row.update(status="paid", placed_at=at)
    insert_orders(folder / "warehouse.duckdb", edges)
    kept = [r for r in data["orders"] + edges if r["status"] != "test" and r["placed_at"] >= utc(start, 0, 0)] + edges[:1]
    days = [r["placed_at"].replace(tzinfo=dt.timezone.utc).astimezone(york).date() for r in kept]
    with open_project(folder) as project:
        project.materialize(["orders_daily"], start=start, end=CUT)
        options = dict(kpis=["orders"], grain="day", start=end - dt.timedelta(days=2), end=end)
        routed = project.compile(**options).extent_rollups
        assert list(routed) == ["orders"] and routed["orders"].first_day == start
        assert project.extents(["orders"], rollups=routed) == {"orders": Extent(min(days), max(days))} == \
            project.extents(["orders"])
        assert min(days) == start - dt.timedelta(days=1)
        rows = project.evaluate(**options).to_dicts()
        assert rows == project.evaluate(rollups=False, **options).to_dicts()
        assert [(r["period"], r["orders"]) for r in rows] == [
            (day, float(days.count(day))) for day in (end - dt.timedelta(days=2), end - dt.timedelta(days=1))]


# -- serve's freshness check


def test_serve_checks_freshness_off_the_rollup_its_request_reads(tmp_path, extent_sql):
    """serve keys a cached answer by the extents of its sources: for a routed request they are read
    as evaluate reads them for the complete flag (off the rollup and the raw rows after its last
    day), never by a scan of the whole raw table; they equal the raw extent while the rollup holds
    what the raw table holds, and a change the routed answer cannot see keeps its cached answer."""
    pytest.importorskip("pydantic")
    from kpi_engine.serve.access import OPEN
    from kpi_engine.serve.cache import HIT, MISS
    from kpi_engine.serve.models import QueryRequest
    from kpi_engine.serve.service import KpiService
    from kpi_engine.serve.settings import CacheSettings, ServeSettings

    folder = tmp_path / "shop"
    rows = build(folder)["orders"]
    with open_project(folder) as project:
        project.materialize(["orders_by_market"], end=CUT)  # the raw rows of May and June come after it
    service = KpiService.open(ServeSettings(project=folder, cache=CacheSettings(freshness_interval=0)))
    request = QueryRequest.model_validate({"kpis": ["orders"], "grain": "month", "by": ["market"]})
    options = dict(grain="month", by=["market"])

    def ask(facts, status: str) -> list[dict]:
        """Ask serve; check how the answer came, that every extent query read the rollup (the
        freshness check and, on a miss, evaluate's: the same query), and the numbers."""
        extent_sql.clear()
        answer = service.query(request, OPEN)
        assert answer.cache == status
        assert extent_sql and all(off_rollup(sql, BY_MARKET, CUT) for sql in extent_sql)
        assert len(set(extent_sql)) == 1 and len(extent_sql) == (2 if status == MISS else 1)
        got = answer.result.to_dicts()
        assert {(r["period"], r["market"]): r["orders"] for r in got} == reference(facts, "orders", "month",
                                                                                   ("market",))
        return got

    def freshness(routed: bool):
        rollups = service.project.compile(["orders"], **options).extent_rollups if routed else None
        return service.freshness.key(["orders"], rollups)[0]

    try:
        facts = order_facts(rows)
        assert set(service.project.compile(["orders"], **options).extent_rollups) == {"orders"}
        first, last = extent(r["day"] for r in facts)
        assert last > CUT  # rows after the last materialized day
        got = ask(facts, MISS)
        assert [r["complete"] for r in got] == [complete(r["period"], month_after(r["period"]), [(first, last)])
                                                for r in got]
        ask(facts, HIT)
        assert freshness(routed=True) == freshness(routed=False) == (("orders", str(first), str(last)),)

        # New rows after the last day of data: a new key, the answer computed again with them.
        new = make_orders(random.Random(31), 25, last + dt.timedelta(days=3), 2, 60_000)
        for row in new:
            row["status"] = "paid"
        service.project.close()  # let the test write the file (the project reopens it on its next query)
        insert_orders(folder / "warehouse.duckdb", new)
        facts = order_facts(rows + new)
        first, last = extent(r["day"] for r in facts)
        ask(facts, MISS)
        assert freshness(routed=True) == freshness(routed=False) == (("orders", str(first), str(last)),)

        # The orders of the first day deleted upstream: the raw extent starts a day later, but the
        # rollup still holds that day, so the routed answer is the same and stays cached.
        service.project.close()
        gone = [r["order_id"] for r in rows if local_day(r["placed_at"]) == first]
        with duckdb.connect(str(folder / "warehouse.duckdb")) as connection:
            connection.execute(f"DELETE FROM orders WHERE order_id IN ({', '.join(map(str, gone))})")
        cached = ask(facts, HIT)
        assert cached == service.project.evaluate(["orders"], **options).to_dicts()
        assert freshness(routed=True) == (("orders", str(first), str(last)),)
        after = min(r["day"] for r in facts if r["order_id"] not in gone)
        assert freshness(routed=False) == (("orders", str(after), str(last)),) and after > first
    finally:
        service.close()
