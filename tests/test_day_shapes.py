"""The SQL shapes of issue 17 that read a source's days (docs/performance.md): a filtered distinct
count's day read keeps only the rows its filter lets through; the windows counted from days are
listed as (period, day) rows joined on the day, or, past a cap, joined by BETWEEN; a dimension
table reached through a relationship is joined to the day totals, grouped by its key. Each is
checked against plain Python over the rows generated here, and SQLite (PostgreSQL where a server
runs) against DuckDB."""

from __future__ import annotations

import csv
import datetime as dt
import random
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import kpi_engine.compiler as compiler
from kpi_engine import windows
from kpi_engine.engine import open_project
from warehouse_loading import postgres_warehouse, sqlite_warehouse
from sql_parts import named_parts

pytest_plugins = ["pg"]

SENDS_SPECS = """\
sources:
  sends:
    table: sends
    time: sent_at
    dimensions: [campaign]
kpis:
  engaged_30d: {formula: "rolling(count_distinct(sends.contact_id where opened), '30 days')"}
  clickers_30d: {formula: "rolling(count_distinct(sends.contact_id where clicked and not opened), '30 days')"}
  reached_30d: {formula: "rolling(count_distinct(sends.contact_id), '30 days')"}
  sends_30d: {formula: "rolling(count(sends), '30 days')"}
  sends_count: {formula: "count(sends)"}
"""
SENDS = {"contact_id": "integer", "sent_at": "timestamp", "campaign": "text", "opened": "boolean",
         "clicked": "boolean"}
ZONE = "America/New_York"


def flag(rng: random.Random, yes: float) -> bool | None:
    draw = rng.random()
    return None if draw < 0.05 else draw < 0.05 + yes


def generate_sends(seed: int = 17) -> list[dict]:
    """Sends to 200 contacts over 2024, some campaigns missing (NULL), some flags unknown (NULL);
    campaign 'spring' only in March to May, and in April nobody opens a 'news' send."""
    rng = random.Random(seed)
    rows = []
    for _ in range(6000):
        day = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(366))
        campaign = rng.choice(["news", "news", "promo", None] + (["spring"] if 3 <= day.month <= 5 else []))
        opened = flag(rng, 0.3)
        if campaign == "news" and day.month == 4:
            opened = False
        rows.append({"contact_id": rng.randrange(1, 201), "campaign": campaign, "opened": opened,
                     "clicked": flag(rng, 0.2),
                     "sent_at": dt.datetime.combine(day, dt.time(rng.randrange(24), rng.randrange(60)))})
    return rows


def write_csv(path: Path, columns, rows) -> None:
    def text(value):
        if value is None:
            return ""
        return str(value).lower() if isinstance(value, bool) else value

    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([[text(row[c]) for c in columns] for row in rows])


def make_project(root: Path, specs: str, tables: dict[str, tuple[dict, list[dict]]], config: str = "") -> Path:
    (root / "kpi_engine.yaml").write_text(f"name: shapes\nwarehouse: {{adapter: duckdb, data: data}}\n{config}")
    (root / "specs.yaml").write_text(specs)
    (root / "data").mkdir()
    for name, (columns, rows) in tables.items():
        write_csv(root / "data" / f"{name}.csv", list(columns), rows)
    return root


@pytest.fixture(scope="module")
def sends():
    return generate_sends()


@pytest.fixture(scope="module")
def sends_folder(sends, tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("sends"), SENDS_SPECS, {"sends": (SENDS, sends)})


@pytest.fixture(scope="module")
def sends_project(sends_folder):
    with open_project(sends_folder) as opened:
        yield opened


# -- plain Python ----------------------------------------------------------------------------

def period_of(day: dt.date, grain: str) -> dt.date:
    if grain == "week":
        return day - dt.timedelta(days=day.weekday())
    months = {"month": 1, "quarter": 3}[grain]
    return dt.date(day.year, (day.month - 1) // months * months + 1, 1)


def next_period(period: dt.date, grain: str) -> dt.date:
    if grain == "week":
        return period + dt.timedelta(days=7)
    index = period.year * 12 + period.month - 1 + {"month": 1, "quarter": 3}[grain]
    return dt.date(index // 12, index % 12 + 1, 1)


def local_day(row: dict, zone: str | None) -> dt.date:
    if zone is None:
        return row["sent_at"].date()
    return row["sent_at"].replace(tzinfo=dt.timezone.utc).astimezone(ZoneInfo(zone)).date()


def sends_reference(rows, grain, start, end, row_filter=lambda r: True, zone=None, keys=None) -> dict:
    """{(period, campaign): {kpi: value}} over the keys with sends in [start, end), or ``keys``
    (the windows end on the period's last day, or the day before ``end``)."""
    rows = [dict(r, day=local_day(r, zone)) for r in rows if row_filter(r)]
    if keys is None:
        keys = {(period_of(r["day"], grain), r["campaign"]) for r in rows if start <= r["day"] < end}
    filters = {"engaged_30d": lambda r: r["opened"] is True,
               "clickers_30d": lambda r: r["clicked"] is True and r["opened"] is False,
               "reached_30d": lambda r: True}
    result = {}
    for period, campaign in keys:
        last = min(next_period(period, grain), end) - dt.timedelta(days=1)
        window = [r for r in rows if last - dt.timedelta(days=29) <= r["day"] <= last and r["campaign"] == campaign]
        values = {name: len({r["contact_id"] for r in window if keep(r)}) for name, keep in filters.items()}
        values["sends_30d"] = len(window)
        values["sends_count"] = sum(1 for r in rows if r["campaign"] == campaign and period_of(r["day"], grain) == period
                                    and start <= r["day"] < end)
        result[(period, campaign)] = values
    return result


KPIS = ["engaged_30d", "clickers_30d", "reached_30d", "sends_30d", "sends_count"]


def evaluate_sends(project, grain, start, end, kpis=KPIS, **options) -> dict:
    got = project.evaluate(kpis, grain=grain, start=start.isoformat(), end=end.isoformat(), by=["campaign"],
                           **options).to_dicts()
    return {(row["period"], row["campaign"]): {k: row[k] for k in kpis} for row in got}


def sql_of(project, kpis, **options) -> str:
    return project.compile(kpis, describe=False, **options).sql(pretty=False)


# -- filtered distinct counts over windows of days ---------------------------------------------

@pytest.mark.parametrize("grain, start, end", [("month", dt.date(2024, 2, 1), dt.date(2024, 11, 1)),
                                               ("week", dt.date(2024, 3, 4), dt.date(2024, 6, 19))])
def test_filtered_and_unfiltered_distinct_counts_over_30_days(sends_project, sends, grain, start, end):
    want = sends_reference(sends, grain, start, end)
    assert evaluate_sends(sends_project, grain, start, end) == want
    # the 'news' campaign of April: sends but no opener in the month (the window reaches into March)
    if grain == "month":
        assert want[(dt.date(2024, 4, 1), "news")]["sends_count"] > 0


def test_the_filter_is_in_the_where_of_the_day_read(sends_project):
    sql = sql_of(sends_project, ["engaged_30d"], grain="month", by=["campaign"], start="2024-02-01", end="2024-11-01",
                 dialect="duckdb")
    read = named_parts(sql)["sends_agg_window_1_days"]
    assert 'AND "sends"."opened"' in read and "CASE" not in read
    assert 'CAST("sends"."sent_at" AS DATE) AS "period"' in read
    # an unfiltered distinct count reads every row: there is nothing to leave out
    sql = sql_of(sends_project, ["reached_30d"], grain="month", by=["campaign"], start="2024-02-01", end="2024-11-01",
                 dialect="duckdb")
    read = named_parts(sql)["sends_agg_window_1_days"]
    assert '"opened"' not in read


def test_a_where_and_fill_with_a_filtered_distinct_count(sends_project, sends):
    start, end = dt.date(2024, 3, 1), dt.date(2024, 7, 1)
    want = sends_reference(sends, "month", start, end, row_filter=lambda r: r["campaign"] not in (None, "promo"))
    assert evaluate_sends(sends_project, "month", start, end, where="campaign != 'promo'") == want
    # under --fill the months without a campaign's sends are listed too: their windows still count
    kpis = ["engaged_30d", "sends_count"]
    got = evaluate_sends(sends_project, "month", start, end, kpis=kpis, fill=True)
    assert set(got) > set(sends_reference(sends, "month", start, end))
    assert any(values["sends_count"] == 0 for values in got.values())
    want = sends_reference(sends, "month", start, end, keys=set(got))
    assert got == {key: {k: want[key][k] for k in kpis} for key in got}


def test_windows_listed_as_days_or_joined_by_between(sends_project, sends, monkeypatch):
    start, end = dt.date(2024, 1, 8), dt.date(2024, 9, 15)
    want = sends_reference(sends, "week", start, end)
    listed = sql_of(sends_project, KPIS, grain="week", by=["campaign"], start=start.isoformat(), end=end.isoformat())
    assert "BETWEEN" not in listed and '"day_offset"' in listed
    assert evaluate_sends(sends_project, "week", start, end) == want
    # 36 weekly windows of 30 days are 1,080 (period, day) rows: past a cap of 1,000, BETWEEN
    monkeypatch.setattr(windows, "MAX_WINDOW_DAYS", 1000)
    capped = sql_of(sends_project, KPIS, grain="week", by=["campaign"], start=start.isoformat(), end=end.isoformat())
    assert "BETWEEN" in capped and '"day_offset"' not in capped
    assert evaluate_sends(sends_project, "week", start, end) == want
    monkeypatch.setattr(windows, "MAX_WINDOW_DAYS", 20_000)
    monkeypatch.setattr(windows, "MAX_WINDOW_LENGTH", 29)  # a window longer than the cap: BETWEEN too
    assert "BETWEEN" in sql_of(sends_project, KPIS, grain="week", by=["campaign"], start=start.isoformat(),
                               end=end.isoformat())
    assert evaluate_sends(sends_project, "week", start, end) == want


def test_a_project_time_zone(sends, tmp_path):
    folder = make_project(tmp_path, SENDS_SPECS, {"sends": (SENDS, sends)}, config=f"timezone: {ZONE}\n")
    start, end = dt.date(2024, 2, 1), dt.date(2024, 8, 1)
    with open_project(folder) as project:
        want = sends_reference(sends, "month", start, end, zone=ZONE)
        assert want != sends_reference(sends, "month", start, end)  # the zone moves some sends to another day
        assert evaluate_sends(project, "month", start, end) == want
        read = sql_of(project, ["engaged_30d"], grain="month", by=["campaign"], start="2024-02-01", end="2024-08-01",
                      dialect="duckdb")
        assert ZONE in read and "BETWEEN" not in read


# -- a dimension table joined to the day totals -----------------------------------------------------

CHANNEL_SPECS = """\
sources:
  channels:
    table: channels
    primary_key: channel
    dimensions: [channel_group]
  spend:
    table: spend
    time: spend_date
    dimensions: [channel]
    relationships: [{to: channels, on: channel}]
  leads:
    table: leads
    time: created_at
    dimensions: [channel]
    relationships: [{to: channels, on: channel}]
  customers:
    table: customers
    time: signed_up_at
    primary_key: customer_id
    relationships: [{to: channels, on: channel}]
  orders:
    table: orders
    time: ordered_at
    relationships: [{to: customers, on: customer_id}]
kpis:
  spend_total: {formula: "sum(spend.amount)"}
  biggest_spend: {formula: "max(spend.amount)"}
  smallest_spend: {formula: "min(spend.amount)"}
  lead_count: {formula: "count(leads)"}
  revenue: {formula: "sum(orders.amount)"}
  lead_days: {formula: "count_distinct(leads.created_day)"}
"""
# 'tiktok' is in no row of the channel table; 'print' is, with no group; facts have NULL channels.
CHANNEL_ROWS = [{"channel": "ppc", "channel_group": "paid"}, {"channel": "social", "channel_group": "paid"},
                {"channel": "email", "channel_group": "owned"}, {"channel": "seo", "channel_group": "earned"},
                {"channel": "print", "channel_group": None}]
FACT_CHANNELS = ["ppc", "social", "email", "seo", "print", "tiktok", None]
CHANNEL_TABLES = {
    "channels": {"channel": "text", "channel_group": "text"},
    "spend": {"spend_date": "date", "channel": "text", "amount": "decimal"},
    "leads": {"created_at": "timestamp", "created_day": "date", "channel": "text"},
    "customers": {"customer_id": "integer", "signed_up_at": "timestamp", "channel": "text"},
    "orders": {"ordered_at": "timestamp", "customer_id": "integer", "amount": "decimal"},
}


def generate_channel_data(seed: int = 171) -> dict[str, list[dict]]:
    rng = random.Random(seed)

    def day() -> dt.date:
        return dt.date(2023, 10, 1) + dt.timedelta(days=rng.randrange(640))

    def moment() -> dt.datetime:
        return dt.datetime.combine(day(), dt.time(rng.randrange(24), rng.randrange(60)))

    spend = [{"spend_date": day(), "channel": rng.choice(FACT_CHANNELS), "amount": rng.randrange(100, 50000) / 100}
             for _ in range(900)]
    leads = []
    for _ in range(2500):
        at = moment()
        leads.append({"created_at": at, "created_day": at.date(), "channel": rng.choice(FACT_CHANNELS)})
    customers = [{"customer_id": i, "signed_up_at": moment(), "channel": rng.choice(FACT_CHANNELS)}
                 for i in range(1, 301)]
    # orders of customers 1-300, and of customer 999 (not in the customers table)
    orders = [{"ordered_at": moment(), "customer_id": rng.choice(list(range(1, 301)) + [999]),
               "amount": rng.randrange(500, 90000) / 100} for _ in range(1500)]
    return {"channels": CHANNEL_ROWS, "spend": spend, "leads": leads, "customers": customers, "orders": orders}


@pytest.fixture(scope="module")
def channel_data():
    return generate_channel_data()


@pytest.fixture(scope="module")
def channel_folder(channel_data, tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("channels"), CHANNEL_SPECS,
                        {name: (CHANNEL_TABLES[name], rows) for name, rows in channel_data.items()})


@pytest.fixture(scope="module")
def channel_project(channel_folder):
    with open_project(channel_folder) as opened:
        yield opened


def channel_reference(data, start, end, kpis, group_filter=lambda group: True, channel_filter=lambda c: True):
    """{(quarter, channel_group): {kpi: value}}: each fact row's group through its channel (NULL
    when the channel is NULL or not in the table; an order's through its customer); a KPI is
    None where its source has no row at that key."""
    group_of = {row["channel"]: row["channel_group"] for row in data["channels"]}
    customer_channel = {row["customer_id"]: row["channel"] for row in data["customers"]}
    facts = {  # kpi -> [(day, channel, value)]
        "spend": [(r["spend_date"], r["channel"], r["amount"]) for r in data["spend"]],
        "leads": [(r["created_at"].date(), r["channel"], r["created_day"]) for r in data["leads"]],
        "orders": [(r["ordered_at"].date(), customer_channel.get(r["customer_id"]), r["amount"])
                   for r in data["orders"]],
    }
    grouped: dict[str, dict[tuple, list]] = {}
    for source, rows in facts.items():
        for day, channel, value in rows:
            group = group_of.get(channel)
            if start <= day < end and group_filter(group) and (source == "orders" or channel_filter(channel)):
                grouped.setdefault(source, {}).setdefault((period_of(day, "quarter"), group), []).append(value)
    how = {"spend_total": ("spend", lambda v: round(sum(v), 2)), "biggest_spend": ("spend", max),
           "smallest_spend": ("spend", min), "lead_count": ("leads", len), "revenue": ("orders", lambda v: round(sum(v), 2)),
           "lead_days": ("leads", lambda v: len(set(v)))}
    keys = {key for source in {how[k][0] for k in kpis} for key in grouped.get(source, {})}
    return {key: {k: (how[k][1](grouped[how[k][0]][key]) if key in grouped.get(how[k][0], {}) else None) for k in kpis}
            for key in keys}


def evaluate_groups(project, kpis, start, end, **options) -> dict:
    got = project.evaluate(kpis, grain="quarter", by=["channel_group"], start=start.isoformat(), end=end.isoformat(),
                           **options).to_dicts()
    return {(row["period"], row["channel_group"]): {k: (round(row[k], 2) if isinstance(row[k], float) else row[k])
                                                    for k in kpis} for row in got}


REGROUPABLE_KPIS = ["spend_total", "biggest_spend", "smallest_spend", "lead_count", "revenue"]
START, END = dt.date(2024, 1, 1), dt.date(2025, 4, 1)


def test_a_dimension_table_joined_to_the_day_totals(channel_project, channel_data):
    want = channel_reference(channel_data, START, END, REGROUPABLE_KPIS)
    assert {group for _, group in want} == {"paid", "owned", "earned", None}
    assert evaluate_groups(channel_project, REGROUPABLE_KPIS, START, END) == want
    sql = sql_of(channel_project, REGROUPABLE_KPIS, grain="quarter", by=["channel_group"], start="2024-01-01",
                 end="2025-04-01", dialect="duckdb")
    parts = named_parts(sql)
    for source in ("spend", "leads"):  # the days grouped by channel
        days = parts[f"{source}_agg_days"]
        assert '"channels"' not in days and f'"{source}"."channel" AS "__kpi_key_1"' in days
    # several sources on DuckDB are stacked (key_fold.py): their day totals, by channel, with the
    # channel table joined once to the stack, not once per source, and no second step per source
    assert sql.count('"channels"') == 1 and "spend_agg" not in parts
    assert 'LEFT JOIN "channels" AS "__kpi_lookup" ON "stacked"."__kpi_lookup_key" = "__kpi_lookup"."channel"' in sql
    # one source alone: the channel table joined to its day totals
    alone = sql_of(channel_project, ["spend_total"], grain="quarter", by=["channel_group"], dialect="duckdb")
    assert 'LEFT JOIN "channels" AS "spend__channels" ON "spend_agg_days"."__kpi_key_1"' in alone
    # orders reach the channel table through customers, a table with a time of its own: the
    # customers are joined to the order rows, the channel table to the day totals
    days = parts["orders_agg_days"]
    assert '"customers" AS "orders__customers"' in days and '"channels"' not in days


@pytest.mark.parametrize("options", [{}, {"having": "spend_total > 5000"},
                                     {"order_by": ["-lead_count"], "limit": 3}])
def test_the_lookup_joined_once_or_once_per_source_gives_the_same_rows(channel_folder, channel_data, monkeypatch,
                                                                       options):
    """The shape of other dialects (each source joined to the channel table, the sources joined
    by key) against DuckDB's (stacked, the channel table joined once, sums added up across the
    channels of a group, min and max taken across them), and both against plain Python."""
    def rows(fold: bool):
        monkeypatch.setattr(compiler, "FOLD_DIALECTS", compiler.FOLD_DIALECTS if fold else ())
        with open_project(channel_folder) as opened:
            result = evaluate_groups(opened, REGROUPABLE_KPIS, START, END, **options)
            sql = opened.compile(REGROUPABLE_KPIS, grain="quarter", by=["channel_group"], start=START.isoformat(),
                                 end=END.isoformat(), **options).sql()
        monkeypatch.undo()
        return result, sql

    (once, once_sql), (each, each_sql) = rows(True), rows(False)
    assert once_sql.count('"channels"') == 1 and each_sql.count('"channels"') == 3
    assert once == each
    if not options:
        assert once == channel_reference(channel_data, START, END, REGROUPABLE_KPIS)
    assert once


def test_a_cumulative_over_sources_stacked_with_the_lookup(channel_project, channel_data):
    """A time function's series reads the stacked keys too: revenue to date per channel group."""
    got = channel_project.evaluate([], formulas=["to_date=cumulative(sum(orders.amount)) + 0 * count(leads)"],
                                   grain="quarter", by=["channel_group"], start=START.isoformat(),
                                   end=END.isoformat()).to_dicts()
    sql = channel_project.compile([], formulas=["to_date=cumulative(sum(orders.amount)) + 0 * count(leads)"],
                                  grain="quarter", by=["channel_group"], start=START.isoformat(),
                                  end=END.isoformat()).sql()
    assert sql.count('"channels"') == 1
    group_of = {row["channel"]: row["channel_group"] for row in channel_data["channels"]}
    channel_of = {row["customer_id"]: row["channel"] for row in channel_data["customers"]}
    for row in got:
        quarter_end = next_period(row["period"], "quarter")
        want = sum(o["amount"] for o in channel_data["orders"]
                   if o["ordered_at"].date() < quarter_end and group_of.get(channel_of.get(o["customer_id"]))
                   == row["channel_group"])
        assert row["to_date"] == pytest.approx(want, rel=1e-9), row
    assert len(got) > 8


def test_sources_joining_the_lookup_differently_keep_their_own_joins(channel_project, channel_data):
    """A distinct count does not add up over days, so leads join the channel table on their rows
    while spend joins it on its day totals: nothing to share, each keeps its join."""
    kpis = ["lead_days", "spend_total"]
    assert evaluate_groups(channel_project, kpis, START, END) == channel_reference(channel_data, START, END, kpis)
    sql = sql_of(channel_project, kpis, grain="quarter", by=["channel_group"], dialect="duckdb")
    assert '"leads__channels"' in sql and '"spend__channels"' in sql and "__kpi_lookup" not in sql


def test_a_where_on_the_dimension_or_on_the_key(channel_project, channel_data):
    want = channel_reference(channel_data, START, END, REGROUPABLE_KPIS, group_filter=lambda g: g == "paid")
    assert evaluate_groups(channel_project, REGROUPABLE_KPIS, START, END, where="channel_group = 'paid'") == want
    # a --where on the dimension itself needs the join on the rows
    sql = sql_of(channel_project, ["spend_total"], grain="quarter", by=["channel_group"], start="2024-01-01",
                 end="2025-04-01", where="channel_group = 'paid'", dialect="duckdb")
    days = named_parts(sql)["spend_agg_days"]
    assert '"channels"' in days
    kpis = ["spend_total", "lead_count"]
    want = channel_reference(channel_data, START, END, kpis, channel_filter=lambda c: c is not None and c != "email")
    assert evaluate_groups(channel_project, kpis, START, END, where="channel != 'email'") == want


def test_what_does_not_add_up_over_days_joins_the_rows(channel_project, channel_data):
    kpis = ["lead_days", "lead_count"]
    want = channel_reference(channel_data, START, END, kpis)
    assert evaluate_groups(channel_project, kpis, START, END) == want
    sql = sql_of(channel_project, kpis, grain="quarter", by=["channel_group"], start="2024-01-01", end="2025-04-01",
                 dialect="duckdb")
    assert '"leads"."channel" = "leads__channels"."channel"' in sql


# -- other warehouses equal DuckDB, and every dialect parses the new shapes back ---------------------

@pytest.fixture(scope="module")
def sends_on_sqlite(sends_folder, tmp_path_factory):
    url = sqlite_warehouse(tmp_path_factory.mktemp("sqlite_sends"), "sends", {"sends": SENDS}, sends_folder / "data")
    with open_project(sends_folder, warehouse=url) as opened:
        yield opened


@pytest.fixture(scope="module")
def sends_on_postgres(request, sends_folder):
    url = postgres_warehouse(request.getfixturevalue("pg_server"), "kpi_day_shapes", {"sends": SENDS},
                             sends_folder / "data")
    with open_project(sends_folder, warehouse=url) as opened:
        yield opened


@pytest.fixture(scope="module")
def channels_on_sqlite(channel_folder, tmp_path_factory):
    url = sqlite_warehouse(tmp_path_factory.mktemp("sqlite_channels"), "channels", CHANNEL_TABLES,
                           channel_folder / "data")
    with open_project(channel_folder, warehouse=url) as opened:
        yield opened


@pytest.mark.parametrize("warehouse", ["sends_on_sqlite", "sends_on_postgres"])
def test_other_warehouses_equal_duckdb(request, sends_project, sends, warehouse):
    other = request.getfixturevalue(warehouse)
    for grain, start, end in (("month", dt.date(2024, 2, 1), dt.date(2024, 10, 1)),
                              ("week", dt.date(2024, 5, 6), dt.date(2024, 7, 3))):
        assert evaluate_sends(other, grain, start, end) == sends_reference(sends, grain, start, end)


def test_sqlite_dimension_table_on_day_totals(channels_on_sqlite, channel_data):
    want = channel_reference(channel_data, START, END, REGROUPABLE_KPIS)
    assert evaluate_groups(channels_on_sqlite, REGROUPABLE_KPIS, START, END) == want


@pytest.mark.parametrize("dialect", ["duckdb", "postgres", "mysql", "clickhouse", "spark", "databricks", "snowflake",
                                     "bigquery", "redshift", "trino"])
def test_the_new_shapes_parse_back(sends_project, channel_project, dialect):
    import sqlglot

    for project, kpis, options in (
            (sends_project, KPIS, dict(grain="month", by=["campaign"], start="2024-02-01", end="2024-11-01")),
            (channel_project, REGROUPABLE_KPIS, dict(grain="quarter", by=["channel_group"], start="2024-01-01"))):
        sql = project.compile(kpis, dialect=dialect, describe=False, **options).sql()
        assert sqlglot.parse_one(sql, read=dialect) is not None


# -- a distinct count of a conversion source over windows of days ----------------------------------

CONVERSION_SPECS = """\
sources:
  visits: {table: visits, time: visited_at, primary_key: visit_id, dimensions: [channel]}
  signups: {table: signups, time: signed_up_at, primary_key: signup_id}
  visit_signups:
    conversion: {from: visits, to: signups, per: visitor_id, within: 7 days}
"""
VISITS = {"visit_id": "integer", "visitor_id": "integer", "visited_at": "timestamp", "channel": "text"}
SIGNUPS = {"signup_id": "integer", "visitor_id": "integer", "signed_up_at": "timestamp"}


def generate_visits(seed: int = 1717) -> dict[str, list[dict]]:
    """Visitors who visit now and then over 2024; a third of them sign up once, some more than
    7 days after their last visit (no conversion)."""
    rng = random.Random(seed)
    visits, signups = [], []
    for visitor in range(1, 401):
        times = sorted(dt.datetime(2024, 1, 1) + dt.timedelta(seconds=rng.randrange(366 * 86400))
                       for _ in range(rng.randrange(1, 6)))
        for at in times:
            visits.append({"visit_id": len(visits) + 1, "visitor_id": visitor, "visited_at": at,
                           "channel": rng.choice(["ads", "mail"])})
        if rng.random() < 0.35:
            at = rng.choice(times) + dt.timedelta(seconds=rng.randrange(12 * 86400))
            signups.append({"signup_id": len(signups) + 1, "visitor_id": visitor, "signed_up_at": at})
    return {"visits": visits, "signups": signups}


def converted_visitors_30d(data, period: dt.date, end: dt.date) -> int:
    """Distinct visitors with a conversion counted in a 30-day window ending on the month's last
    day: each signup within 7 days after a visit of its visitor counts on the day of the latest
    such visit (last touch)."""
    last = min(next_period(period, "month"), end) - dt.timedelta(days=1)
    counted = set()
    for signup in data["signups"]:
        touches = [v for v in data["visits"] if v["visitor_id"] == signup["visitor_id"]
                   and v["visited_at"] <= signup["signed_up_at"] <= v["visited_at"] + dt.timedelta(days=7)]
        if touches:
            day = max(touches, key=lambda v: v["visited_at"])["visited_at"].date()
            if last - dt.timedelta(days=29) <= day <= last:
                counted.add(signup["visitor_id"])
    return len(counted)


def test_a_distinct_count_of_conversions_over_30_days(tmp_path):
    data = generate_visits()
    folder = make_project(tmp_path, CONVERSION_SPECS, {"visits": (VISITS, data["visits"]),
                                                       "signups": (SIGNUPS, data["signups"])})
    start, end = dt.date(2024, 2, 1), dt.date(2024, 12, 1)
    with open_project(folder) as project:
        got = project.evaluate(formulas=["x=rolling(count_distinct(visit_signups.visitor_id), '30 days')"],
                               grain="month", start=start.isoformat(), end=end.isoformat()).to_dicts()
    want = {period_of(v["visited_at"].date(), "month") for v in data["visits"] if start <= v["visited_at"].date() < end}
    assert {row["period"] for row in got} == want  # the base events' rows: every month with visits
    # (a visit that converted nobody is not a conversion: it counted before this was fixed)
    assert {row["period"]: row["x"] for row in got} == {p: converted_visitors_30d(data, p, end) for p in want}
