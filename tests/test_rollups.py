"""Rollups (rollups.py): day totals materialized ahead of requests and read in their place.

The project here is laid out unlike the marketing example: a TIMESTAMP source stored in UTC and
read in Asia/Tokyo (so the local day differs from the stored one for a third of the rows), a
source where: that drops test orders, a dimension reached through a relationship, NULL dimension
values and NULL measure values, a DATE source without a rollup. Every routed request is checked
three ways: the same request with rollups=False, and a plain-Python reference over the rows.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest
from click.testing import CliRunner

from kpi_engine import rollups as rollups_module
from kpi_engine.cli import cli
from kpi_engine.engine import check_project, open_project
from kpi_engine.errors import KpiEngineError, UsageError

TOKYO = ZoneInfo("Asia/Tokyo")
FIRST_DAY, DAYS = dt.date(2024, 1, 1), 182
MARKETS, DEVICES = ["jp", "kr", "us", None], ["ios", "android", "web"]
STORES = {1: "JP", 2: "KR", 3: "US", 4: "JP"}

CONFIG = """\
name: shop
timezone: Asia/Tokyo
warehouse: {adapter: duckdb, path: warehouse.duckdb}
"""
SPECS = """\
sources:
  orders:
    table: orders
    time: placed_at
    where: "status != 'test'"
    dimensions: [market, device, status]
    relationships:
      - {to: stores, on: store_id, to_column: id}
  stores:
    table: stores
    primary_key: id
    dimensions: [country]
  visits:
    table: visits
    time: visit_day
    dimensions: [market, device]
kpis:
  orders: {formula: count(orders)}
  revenue: {formula: sum(orders.amount)}
  first_orders: {formula: count(orders where is_first)}
  largest_order: {formula: max(orders.amount)}
  smallest_order: {formula: min(orders.amount)}
  average_discount: {formula: avg(orders.discount)}
  buyers: {formula: count_distinct(orders.customer_id)}
  conversion: {formula: count(orders) / count(visits)}
rollups:
  orders_daily:
    source: orders
    dimensions: [market, device, country]
    measures: [count(orders), sum(orders.amount), count(orders where is_first), max(orders.amount),
               min(orders.amount), avg(orders.discount)]
  orders_by_market:
    source: orders
    dimensions: [market]
    measures: [count(orders), sum(orders.amount)]
    store: warehouse
    table: analytics_orders_by_market
  visits_daily:
    source: visits
    dimensions: [market]
    measures: [count(visits)]
queries:
  monthly_orders: {kpis: [orders], grain: month, by: [market]}
"""


def make_orders(rng: random.Random, count: int, first: dt.date, days: int, start_id: int = 1) -> list[dict]:
    rows = []
    for i in range(count):
        at = dt.datetime.combine(first, dt.time()) + dt.timedelta(seconds=rng.randrange(days * 86400))
        rows.append({"order_id": start_id + i, "placed_at": at, "market": rng.choice(MARKETS),
                     "device": rng.choice(DEVICES), "store_id": rng.choice(list(STORES)),
                     "customer_id": rng.randrange(300),
                     "amount": Decimal(rng.randrange(100, 50000)) / 100,
                     "discount": rng.choice([None, 0, 5, 10, 15]), "is_first": rng.random() < 0.3,
                     "status": rng.choice(["paid", "paid", "paid", "refunded", "test"])})
    return rows


def make_visits(rng: random.Random) -> list[dict]:
    return [{"visit_day": FIRST_DAY + dt.timedelta(days=rng.randrange(DAYS)), "market": rng.choice(MARKETS),
             "device": rng.choice(DEVICES)} for _ in range(2500)]


ORDER_COLUMNS = ("order_id INTEGER, placed_at TIMESTAMP, market TEXT, device TEXT, store_id INTEGER, "
                 "customer_id INTEGER, amount DECIMAL(12,2), discount INTEGER, is_first BOOLEAN, status TEXT")


def load(connection, table: str, rows: list[dict], folder: Path) -> None:
    """Rows into a table through a CSV file (DuckDB inserts parameter rows one by one)."""
    file = folder / f"{table}_load.csv"
    with file.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(rows[0])
        writer.writerows([["" if v is None else v for v in row.values()] for row in rows])
    connection.execute(f"COPY {table} FROM '{file}' (HEADER, NULLSTR '')")
    file.unlink()


def insert_orders(database: Path, rows: list[dict]) -> None:
    with duckdb.connect(str(database)) as connection:
        load(connection, "orders", rows, database.parent)


def build(folder: Path, specs: str = SPECS, config: str = CONFIG) -> dict:
    """The project in ``folder`` with its warehouse; returns its rows."""
    rng = random.Random(17)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kpi_engine.yaml").write_text(config)
    (folder / "specs.yaml").write_text(specs)
    orders, visits = make_orders(rng, 1800, FIRST_DAY, DAYS), make_visits(rng)
    with duckdb.connect(str(folder / "warehouse.duckdb")) as connection:
        connection.execute(f"CREATE TABLE orders ({ORDER_COLUMNS})")
        connection.execute("CREATE TABLE stores (id INTEGER, country TEXT)")
        connection.execute("INSERT INTO stores VALUES " + ", ".join(f"({k}, '{v}')" for k, v in STORES.items()))
        connection.execute("CREATE TABLE visits (visit_day DATE, market TEXT, device TEXT)")
        load(connection, "visits", visits, folder)
    insert_orders(folder / "warehouse.duckdb", orders)
    return {"orders": orders, "visits": visits}


# -- the plain-Python reference


def local_day(at: dt.datetime) -> dt.date:
    return at.replace(tzinfo=dt.timezone.utc).astimezone(TOKYO).date()


def period_of(day: dt.date, grain: str | None):
    if grain == "month":
        return day.replace(day=1)
    if grain == "week":
        return day - dt.timedelta(days=day.weekday())
    return day if grain == "day" else None


def order_facts(rows: list[dict]) -> list[dict]:
    """Each order row as the engine sees it: local day, country through its store, tests dropped."""
    return [{**row, "day": local_day(row["placed_at"]), "country": STORES[row["store_id"]],
             "day_of_week": local_day(row["placed_at"]).isoweekday()} for row in rows if row["status"] != "test"]


MEASURES = {
    "orders": len,
    "revenue": lambda rows: float(sum(r["amount"] for r in rows)) if rows else 0,
    "first_orders": lambda rows: sum(1 for r in rows if r["is_first"]),
    "largest_order": lambda rows: float(max(r["amount"] for r in rows)),
    "smallest_order": lambda rows: float(min(r["amount"] for r in rows)),
    "average_discount": lambda rows: (sum(v) / len(v) if (v := [r["discount"] for r in rows
                                                                 if r["discount"] is not None]) else None),
}


def reference(facts, kpi, grain=None, by=(), keep=lambda row: True, start=None, end=None) -> dict:
    groups: dict[tuple, list] = {}
    for row in facts:
        if (start and row["day"] < start) or (end and row["day"] >= end) or not keep(row):
            continue
        key = ((period_of(row["day"], grain),) if grain else ()) + tuple(row[d] for d in by)
        groups.setdefault(key, []).append(row)
    return {key: MEASURES[kpi](rows) for key, rows in groups.items()}


def answer(project, kpis, grain=None, by=(), **options) -> dict[str, dict]:
    """KPI -> {(period, dims...): value} of an evaluated request."""
    rows = project.evaluate(kpis, grain=grain, by=list(by), **options).to_dicts()
    keys = (["period"] if grain else []) + list(by)
    return {kpi: {tuple(row[k] for k in keys): row[kpi] for row in rows} for kpi in kpis}


def plan_notes(step) -> list[str]:
    return list(step.notes) + [note for child in step.inputs for note in plan_notes(child)]


def same(got: dict, want: dict, kpi: str) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        if kpi == "average_discount" and value is not None:
            assert got[key] == pytest.approx(value, rel=1e-12), key
        else:
            assert got[key] == value, (kpi, key)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shop")
    data = build(folder)
    with open_project(folder) as project:
        project.materialize()
        yield folder, project, order_facts(data["orders"]), data


ROUTED = [  # (grain, by, where, keep, start, end)
    ("month", (), None, lambda r: True, None, None),
    ("week", ("device",), None, lambda r: True, dt.date(2024, 2, 7), dt.date(2024, 5, 1)),
    (None, ("market", "device"), None, lambda r: True, None, None),
    ("month", ("country",), "market = 'jp' and device != 'web'",
     lambda r: r["market"] == "jp" and r["device"] != "web", None, None),
    ("day", ("market",), "market in ('kr', 'us')", lambda r: r["market"] in ("kr", "us"),
     dt.date(2024, 3, 30), dt.date(2024, 4, 3)),
    (None, ("day_of_week",), "day_of_week >= 6", lambda r: r["day_of_week"] >= 6, dt.date(2024, 1, 15), None),
]
KPIS = list(MEASURES)


@pytest.mark.parametrize("grain, by, where, keep, start, end", ROUTED)
def test_routed_requests_equal_raw_rows_and_the_reference(shop, grain, by, where, keep, start, end):
    _, project, facts, _ = shop
    options = dict(where=where, start=start, end=end)
    plan = plan_notes(project.compile(KPIS, grain=grain, by=list(by), **options).plan)
    assert any(note.startswith("read from rollup orders_daily (materialized to ") for note in plan), plan
    routed = answer(project, KPIS, grain, by, **options)
    raw = answer(project, KPIS, grain, by, rollups=False, **options)
    for kpi in KPIS:
        want = reference(facts, kpi, grain, by, keep, start, end)
        assert routed[kpi] == raw[kpi] or kpi == "average_discount"
        same(routed[kpi], want, kpi)
        same(raw[kpi], want, kpi)


def test_the_rollup_with_fewest_dimensions_that_covers_a_request_is_read(shop):
    _, project, facts, _ = shop
    query = project.compile(["orders", "revenue"], grain="month", by=["market"])
    assert "analytics_orders_by_market" in query.sql() and "kpi_rollup_orders_daily" not in query.sql()
    notes = plan_notes(query.plan)
    assert any(n.startswith("read from rollup orders_by_market") for n in notes)
    # A measure only the larger rollup keeps sends the request to it.
    assert "kpi_rollup_orders_daily" in project.compile(["first_orders"], grain="month", by=["market"]).sql()
    got = answer(project, ["revenue"], "month", ("market",))["revenue"]
    same(got, reference(facts, "revenue", "month", ("market",)), "revenue")


def test_two_sources_where_only_one_has_a_rollup(shop):
    _, project, facts, data = shop
    query = project.compile(["conversion"], grain="month", by=["market"])
    notes = plan_notes(query.plan)
    assert any(n.startswith("read from rollup orders_by_market") for n in notes)
    assert "FROM \"visits\"" in query.sql()
    got = answer(project, ["conversion"], "month", ("market",))["conversion"]
    assert got == answer(project, ["conversion"], "month", ("market",), rollups=False)["conversion"]
    orders = reference(facts, "orders", "month", ("market",))
    visits: dict[tuple, int] = {}
    for row in data["visits"]:
        key = (period_of(row["visit_day"], "month"), row["market"])
        visits[key] = visits.get(key, 0) + 1
    assert set(got) == set(orders) | set(visits)
    for key in visits:
        assert got[key] == pytest.approx(orders.get(key, 0) / visits[key], rel=1e-12)


def test_two_sources_both_read_from_rollups(shop):
    _, project, facts, data = shop
    notes = plan_notes(project.compile(["conversion"], grain="month", by=["market"]).plan)
    assert any(n.startswith("read from rollup visits_daily") for n in notes)  # a DATE source
    assert "FROM \"visits\"" not in project.compile(["conversion"], grain="month", by=["market"], end=dt.date(2024, 7, 1)).sql()
    routed = answer(project, ["conversion"], "month", ("market",))["conversion"]
    assert routed == answer(project, ["conversion"], "month", ("market",), rollups=False)["conversion"]
    # By device, visits_daily does not keep it: only the orders are read from a rollup.
    notes = plan_notes(project.compile(["conversion"], grain="month", by=["device"]).plan)
    assert "not read from rollup visits_daily: it is not kept by device" in notes
    assert any(n.startswith("read from rollup orders_daily") for n in notes)


def test_a_saved_query_runs_without_rollups_when_asked(shop):
    _, project, facts, _ = shop
    assert "analytics_orders_by_market" in project.compile(query="monthly_orders").sql()
    assert "analytics_orders_by_market" not in project.compile(query="monthly_orders", rollups=False).sql()


def test_time_functions_over_a_routed_source(shop):
    _, project, facts, _ = shop
    formulas = ["before=previous(count(orders))", "running=cumulative(sum(orders.amount))",
                "week=rolling(count(orders), '7 days')"]
    start, end = dt.date(2024, 3, 1), dt.date(2024, 6, 1)
    options = dict(formulas=formulas, grain="month", by=["device"], start=start, end=end)
    notes = plan_notes(project.compile(**options).plan)
    assert sum(n.startswith("read from rollup orders_daily") for n in notes) == 2  # the series and the 7-day window
    rows = project.evaluate(**options).to_dicts()
    assert rows == project.evaluate(rollups=False, **options).to_dicts()
    for row in rows:
        mine = [r for r in facts if r["device"] == row["device"]]
        month = row["period"]
        last = (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
        before = (month - dt.timedelta(days=1)).replace(day=1)
        assert row["before"] == sum(1 for r in mine if period_of(r["day"], "month") == before)
        assert row["running"] == float(sum(r["amount"] for r in mine if r["day"] <= last))
        assert row["week"] == sum(1 for r in mine if last - dt.timedelta(days=6) <= r["day"] <= last)


def test_requests_a_rollup_cannot_answer_read_the_raw_rows_and_say_why(shop):
    _, project, _, _ = shop
    cases = [
        (["buyers"], dict(grain="month"), "not read from rollup orders_daily: count_distinct(orders.customer_id) "
                                          "does not add up across days"),
        (["orders"], dict(grain="month", by=["status"]), "not read from rollup orders_daily: it is not kept by "
                                                          "status"),
        (["orders"], dict(where="status = 'paid'"), "not read from rollup orders_by_market: --where reads status, "
                                                    "which it is not kept by"),
        (["orders"], dict(rollups=False), "not read from rollup orders_daily: --no-rollups asks for the raw rows"),
        (["orders"], dict(dialect="postgres"), "not read from rollup orders_daily: the SQL is for postgres, and the "
                                               "rollups live in the duckdb warehouse"),
        (["orders"], dict(describe=False), "not read from rollup orders_daily: compiled offline: which days are "
                                           "materialized is not known without the warehouse"),
    ]
    for kpis, options, note in cases:
        query = project.compile(kpis, **options)
        assert note in plan_notes(query.plan)
        assert "kpi_rollup" not in query.sql() and "analytics_orders" not in query.sql()


def test_a_range_that_cuts_a_day_reads_the_raw_rows(shop):
    """Day totals cannot be cut at 06:00: such a request reads the raw rows, and says why."""
    _, project, facts, _ = shop
    start, end = dt.datetime(2024, 3, 1, 6, 0), dt.datetime(2024, 4, 10, 18, 30)
    for options, cut in ((dict(start=start), "--from 2024-03-01 06:00:00"),
                         (dict(end=end, grain="month"), "--to 2024-04-10 18:30:00")):
        query = project.compile(["orders"], **options)
        assert "kpi_rollup" not in query.sql() and "analytics_orders" not in query.sql()
        assert f"not read from rollup orders_daily: {cut} cuts a day, and a day total cannot be cut" in \
            plan_notes(query.plan)
    local = [(row, row["placed_at"].replace(tzinfo=dt.timezone.utc).astimezone(TOKYO).replace(tzinfo=None))
             for row in facts]
    assert answer(project, ["orders"], start=start)["orders"] == {(): sum(1 for _, at in local if at >= start)}
    got = answer(project, ["orders"], "month", end=end)["orders"]
    want: dict[tuple, int] = {}
    for row, at in local:
        if at < end:
            want[(row["day"].replace(day=1),)] = want.get((row["day"].replace(day=1),), 0) + 1
    assert got == want


def test_plan_and_explain_name_the_rollup(shop):
    folder, project, _, _ = shop
    state = project.rollup_state()["orders_daily"]
    assert state.last_day == project.project.config.calendar.today() - dt.timedelta(days=1)  # today is read raw
    project.close()  # one process opens a DuckDB file once: the commands below open it themselves
    result = CliRunner().invoke(cli, ["compile", str(folder), "first_orders", "--grain", "month", "--plan"])
    assert result.exit_code == 0, result.output
    assert f"read from rollup orders_daily (materialized to {state.last_day})" in result.output
    result = CliRunner().invoke(cli, ["compile", str(folder), "first_orders", "--grain", "month", "--no-rollups"])
    assert result.exit_code == 0 and "kpi_rollup" not in result.output
    result = CliRunner().invoke(cli, ["explain", str(folder), "first_orders"])
    assert result.exit_code == 0, result.output
    assert f"read from rollup orders_daily (materialized to {state.last_day})" in result.output


# -- materializing


def test_incremental_refresh_takes_late_rows_in_the_lookback_and_new_days(tmp_path):
    folder = tmp_path / "shop"
    data = build(folder)
    facts = order_facts(data["orders"])
    cut = dt.date(2024, 5, 1)
    with open_project(folder) as project:
        done = project.materialize(["orders_daily"], end=cut)
        assert [(d["refresh"], d["why"], d["last_day"]) for d in done] == [("full", "first run", dt.date(2024, 4, 30))]
    # Late rows: two inside the 3-day lookback, one 10 days back (outside it); and rows of new days.
    rng = random.Random(5)
    late = make_orders(rng, 2, dt.date(2024, 4, 28), 1, 10_000) + make_orders(rng, 1, dt.date(2024, 4, 20), 1, 10_100)
    for row in late:
        row["status"] = "paid"
    new = make_orders(rng, 40, cut, 10, 20_000)
    insert_orders(folder / "warehouse.duckdb", late + new)
    everything = order_facts(data["orders"] + late + new)
    with open_project(folder) as project:
        # Until the next refresh, the materialized days miss the late rows; the days after read raw rows.
        stale = order_facts(data["orders"] + new)
        assert answer(project, ["orders"], "month")["orders"] == reference(stale, "orders", "month")
        done = project.materialize(["orders_daily"], end=dt.date(2024, 5, 11))
        assert [(d["refresh"], d["from"], d["to"], d["last_day"]) for d in done] == [
            ("incremental", dt.date(2024, 4, 27), dt.date(2024, 5, 11), dt.date(2024, 5, 10))]
        # The row ten days back stays missing until --full.
        missed = order_facts(data["orders"] + late[:2] + new)
        for kpi in ("orders", "revenue", "largest_order"):
            same(answer(project, [kpi], "week", ("market",))[kpi], reference(missed, kpi, "week", ("market",)), kpi)
        assert project.rollup_state()["orders_daily"].rows == len({
            (r["day"], r["market"], r["device"], r["country"]) for r in missed if r["day"] < dt.date(2024, 5, 11)})
        done = project.materialize(["orders_daily"], end=dt.date(2024, 5, 11), full=True)
        assert done[0]["refresh"] == "full" and done[0]["why"] == "--full"
        for kpi in KPIS:
            same(answer(project, [kpi], "week", ("market",))[kpi], reference(everything, kpi, "week", ("market",)), kpi)
    assert facts  # the original rows were read too


def test_a_request_beyond_the_materialized_days_adds_the_raw_rows_after_them(tmp_path):
    folder = tmp_path / "shop"
    facts = order_facts(build(folder)["orders"])
    with open_project(folder) as project:
        project.materialize(["orders_daily"], end=dt.date(2024, 3, 10))
        options = dict(grain="month", by=["device"], start=dt.date(2024, 2, 1), end=dt.date(2024, 6, 1))
        notes = plan_notes(project.compile(KPIS, **options).plan)
        assert ("read from rollup orders_daily (materialized to 2024-03-09): table "
                '"kpi_rollups"."main"."kpi_rollup_orders_daily"; days after 2024-03-09 from the raw rows') in notes
        got = answer(project, KPIS, **options)
        for kpi in KPIS:
            same(got[kpi], reference(facts, kpi, "month", ("device",), start=options["start"], end=options["end"]), kpi)
        # A range that ends on the last materialized day reads no raw rows.
        sql = project.compile(["orders"], grain="month", end=dt.date(2024, 3, 10)).sql()
        assert 'FROM "orders"' not in sql and "kpi_rollup_orders_daily" in sql
        # A rollup materialized from a later day cannot answer a request from an earlier one.
        project.materialize(["orders_by_market"], start=dt.date(2024, 2, 1), end=dt.date(2024, 3, 1))
        query = project.compile(["orders"], grain="month", by=["market"], start=dt.date(2024, 1, 1))
        assert ("not read from rollup orders_by_market: it holds the days from 2024-02-01, and the request reads "
                "from 2024-01-01") in plan_notes(query.plan)
        got = answer(project, ["orders"], "month", ("market",), start=dt.date(2024, 2, 1))["orders"]
        same(got, reference(facts, "orders", "month", ("market",), start=dt.date(2024, 2, 1)), "orders")


def test_a_changed_definition_is_not_read_until_materialized_again(tmp_path):
    folder = tmp_path / "shop"
    data = build(folder)
    with open_project(folder) as project:
        project.materialize(["orders_daily"])
    (folder / "specs.yaml").write_text(SPECS.replace("status != 'test'", "status = 'paid'"))
    with open_project(folder) as project:
        query = project.compile(["orders"], grain="month", by=["device"])
        assert ("not read from rollup orders_daily: its definition (or its source's) changed since it was "
                "materialized (run kpi-engine materialize)") in plan_notes(query.plan)
        done = project.materialize(["orders_daily"])
        assert done[0]["refresh"] == "full" and done[0]["why"].startswith("the definition changed")
        paid = [r for r in order_facts(data["orders"]) if r["status"] == "paid"]
        assert "kpi_rollup_orders_daily" in project.compile(["orders"], grain="month", by=["device"]).sql()
        same(answer(project, ["orders"], "month", ("device",))["orders"],
             reference(paid, "orders", "month", ("device",)), "orders")


def test_a_failed_refresh_writes_nothing(tmp_path, monkeypatch):
    folder = tmp_path / "shop"
    build(folder)
    with open_project(folder) as project:
        project.materialize(["orders_daily"], end=dt.date(2024, 3, 1))
        before = project.evaluate(["orders"], grain="month").rows
        state = project.rollup_state()["orders_daily"]
        real = rollups_module.refresh_statements

        def failing(*args, **kwargs):  # the last statement fails after the table was written
            from sqlglot import exp
            return real(*args, **kwargs) + [exp.Insert(this=exp.to_table("no_such_table"),
                                                       expression=exp.select("1"))]

        monkeypatch.setattr(rollups_module, "refresh_statements", failing)
        with pytest.raises(KpiEngineError, match="nothing was written"):
            project.materialize(["orders_daily"], end=dt.date(2024, 6, 1))
        assert project.rollup_state()["orders_daily"] == state
        assert project.evaluate(["orders"], grain="month").rows == before
        sql = project.compile(["orders"], grain="month").sql()
        assert "kpi_rollup_orders_daily" in sql and "2024-02-29" in sql


def test_materialize_from_the_command_line_and_its_refusals(tmp_path):
    folder = tmp_path / "shop"
    build(folder)
    runner = CliRunner()
    result = runner.invoke(cli, ["materialize", str(folder), "orders_by_market", "--to", "2024-04-01"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith('orders_by_market: full refresh (first run) of the first day of data to '
                                    '2024-04-01 (excluded) into "analytics_orders_by_market"; materialized to '
                                    '2024-03-31, ')
    with duckdb.connect(str(folder / "warehouse.duckdb"), read_only=True) as connection:  # in the warehouse itself
        assert connection.execute("SELECT last_day FROM kpi_rollup_state").fetchall() == [(dt.date(2024, 3, 31),)]
    result = runner.invoke(cli, ["materialize", str(folder), "orders_weekly"])
    assert result.exit_code != 0 and "unknown rollup 'orders_weekly'" in result.output
    result = runner.invoke(cli, ["materialize", str(folder), "orders_by_market", "--from", "2024-05-01"])
    assert result.exit_code != 0
    assert ("--from 2024-05-01 would leave a gap after 2024-03-31, the last day rollup 'orders_by_market' has "
            "materialized.") in result.output


def test_materialize_never_replaces_a_table_it_did_not_write(tmp_path):
    folder = tmp_path / "shop"
    build(folder, SPECS.replace("table: analytics_orders_by_market", "table: visits"))
    with open_project(folder) as project:
        with pytest.raises(UsageError) as refused:
            project.materialize(["orders_by_market"])
        assert refused.value.message == ("rollup 'orders_by_market' would replace the table \"visits\", which it did "
                                         "not create.")
    with duckdb.connect(str(folder / "warehouse.duckdb"), read_only=True) as connection:
        assert connection.execute("SELECT COUNT(*) FROM visits").fetchone() == (2500,)


def test_a_data_folder_project_keeps_rollups_in_a_local_duckdb_file(tmp_path):
    folder = tmp_path / "shop"
    data = build(folder, config=CONFIG.replace("path: warehouse.duckdb", "data: data"))
    (folder / "data").mkdir()
    with duckdb.connect(str(folder / "warehouse.duckdb")) as connection:
        for table in ("orders", "stores", "visits"):
            connection.execute(f"COPY {table} TO '{folder / 'data' / table}.parquet' (FORMAT PARQUET)")
    (folder / "warehouse.duckdb").unlink()
    with open_project(folder) as project:
        with pytest.raises(UsageError, match="rollup 'orders_by_market' has 'store: warehouse', and the warehouse "
                                             "has no database file"):
            project.materialize()
        project.materialize(["orders_daily"])
        assert (folder / ".kpi_engine" / "rollups.duckdb").is_file()
    with open_project(folder) as project:  # a new session reads the store back
        query = project.compile(["revenue"], grain="month", by=["country"])
        assert "kpi_rollup_orders_daily" in query.sql()
        got = answer(project, ["revenue", "average_discount"], "month", ("country",))
        facts = order_facts(data["orders"])
        for kpi in ("revenue", "average_discount"):
            same(got[kpi], reference(facts, kpi, "month", ("country",)), kpi)


# -- refusals in the spec


BAD = [
    ("measures: [count_distinct(orders.customer_id)]",
     "measure 'count_distinct(orders.customer_id)' cannot be rolled up: distinct counts do not add up across days "
     "(one contact on two days is one contact)."),
    ("measures: [\"percentile(orders.amount, 0.9)\"]",
     "measure 'percentile(orders.amount, 0.9)' cannot be rolled up: percentiles and per-entity snapshots do not add "
     "up across days."),
    ("measures: [last(orders.amount)]",
     "measure 'last(orders.amount)' cannot be rolled up: a snapshot is taken at one time of the period, not added "
     "up over its days."),
    ("measures: [count(visits)]", "measure 'count(visits)' is not one aggregate over source 'orders'."),
    ("measures: [count(orders)]\n    dimensions: [channel]", "source 'orders' has no dimension 'channel'."),
    ("measures: [count(orders)]\n    dimensions: [day_of_week]", "source 'orders' has no dimension 'day_of_week'."),
    ("measures: [count(orders where count(orders per customer_id) > 1)]",
     "measure 'count(orders where count(orders per customer_id) > 1)' cannot be rolled up: its filter reads "
     "per-entity lookups, which depend on rows of other days."),
]


def specs_only(folder: Path, specs: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kpi_engine.yaml").write_text(CONFIG)
    (folder / "specs.yaml").write_text(specs)
    return folder


@pytest.mark.parametrize("body, message", BAD)
def test_a_rollup_that_cannot_be_materialized_is_refused_at_its_line(tmp_path, body, message):
    specs = SPECS.split("rollups:")[0] + "rollups:\n  bad:\n    source: orders\n    " + body + "\n"
    _, errors = check_project(specs_only(tmp_path, specs), describe=False)
    assert [error.message for error in errors] == [message]
    # At the offending item: the last line of the file here.
    assert errors[0].location.file.endswith("specs.yaml") and errors[0].location.line == len(specs.splitlines())


def test_a_rollup_of_an_unknown_source_is_refused(tmp_path):
    specs = SPECS.replace("    source: orders\n    dimensions: [market]\n", "    source: order\n    dimensions: [market]\n")
    _, errors = check_project(specs_only(tmp_path, specs), describe=False)
    assert [(e.message, e.hint, e.location.line) for e in errors] == [
        ("unknown source 'order'.", "Did you mean 'orders'?", specs.splitlines().index("    source: order") + 1)]


def test_a_rollup_may_not_write_to_the_state_table(tmp_path):
    specs = SPECS.split("rollups:")[0] + "rollups:\n  state:\n    source: orders\n    measures: [count(orders)]\n"
    _, errors = check_project(specs_only(tmp_path, specs), describe=False)
    assert [(e.message, e.location.line) for e in errors] == [
        ("rollup 'state' would write to 'kpi_rollup_state', the table that records what is materialized.",
         specs.splitlines().index("  state:") + 1)]


def test_a_project_cannot_open_its_warehouse_for_writing(tmp_path):
    folder = specs_only(tmp_path, SPECS)
    (folder / "kpi_engine.yaml").write_text(CONFIG.replace("path: warehouse.duckdb", "path: warehouse.duckdb, "
                                                                                      "writable: true"))
    with open_project(folder) as project, pytest.raises(UsageError, match="'writable' is not a setting of a project"):
        project.connection()


def test_a_custom_calendar_grain_reads_the_day_totals(tmp_path):
    folder = tmp_path / "shop"
    data = build(folder, config=CONFIG + "granularities:\n  retail_month: {retail: 4-5-4, length: month}\n")
    with open_project(folder) as project:
        project.materialize(["orders_daily"])
        options = dict(grain="retail_month", by=["market"], start=dt.date(2024, 2, 4), end=dt.date(2024, 6, 2))
        assert "kpi_rollup_orders_daily" in project.compile(["orders"], **options).sql()
        rows = project.evaluate(["orders", "revenue"], **options).to_dicts()
        assert rows == project.evaluate(["orders", "revenue"], rollups=False, **options).to_dicts()
    # NRF 4-5-4 2024: months start Feb 4, Mar 3, Apr 7, May 5 (and Jun 2).
    starts = [dt.date(2024, 2, 4), dt.date(2024, 3, 3), dt.date(2024, 4, 7), dt.date(2024, 5, 5), dt.date(2024, 6, 2)]
    facts = order_facts(data["orders"])
    for row in rows:
        end = starts[starts.index(row["period"]) + 1]
        mine = [r for r in facts if row["period"] <= r["day"] < end and r["market"] == row["market"]]
        assert (row["orders"], row["revenue"]) == (len(mine), float(sum(r["amount"] for r in mine)))
    assert {row["period"] for row in rows} == set(starts[:-1])


def test_measures_are_checked_against_the_warehouse_columns(tmp_path):
    specs = (SPECS.split("rollups:")[0] + "rollups:\n  bad:\n    source: orders\n"
             "    measures: [sum(orders.nope), sum(orders.status)]\n")
    build(tmp_path / "shop", specs)
    _, errors = check_project(tmp_path / "shop")
    assert [(e.message, e.location.line, e.location.column) for e in errors] == [
        ("measure 'sum(orders.nope)': source 'orders' has no column 'nope'.", 29, 16),
        ("measure 'sum(orders.status)': 'sum' needs numbers, but this is a string.", 29, 34)]


def test_the_http_api_passes_rollups_false_through(shop):
    from kpi_engine.serve.models import QueryRequest

    _, project, _, _ = shop
    for flag, read in ((True, True), (False, False)):
        options = QueryRequest.model_validate({"kpis": ["orders"], "grain": "month", "rollups": flag}).evaluate_options()
        options.pop("complete_only")
        assert ("analytics_orders_by_market" in project.compile(["orders"], **options).sql()) is read


def test_a_store_that_cannot_be_read_leaves_the_raw_rows_to_answer(tmp_path):
    folder = tmp_path / "shop"
    data = build(folder)
    (folder / ".kpi_engine").mkdir()
    (folder / ".kpi_engine" / "rollups.duckdb").write_bytes(b"not a database" * 100)
    with open_project(folder) as project:
        query = project.compile(["orders"], grain="month")
        note = next(n for n in plan_notes(query.plan) if n.startswith("not read from rollup orders_daily"))
        assert note.startswith("not read from rollup orders_daily: the state of the rollups could not be read "
                               "(cannot open the DuckDB file")
        same(answer(project, ["orders"], "month")["orders"], reference(order_facts(data["orders"]), "orders", "month"),
             "orders")
