"""Conversion sources (issue 16, items 1 and 7): signups that follow a visit of the same visitor
within a window, attributed to one visit (last touch by default, first touch on request, the same
campaign when asked), counted in the visit's period and dimensions, with the rate over the visits
and the time to convert. Checked against plain Python over generated rows with hand-made edge
cases, on DuckDB and PostgreSQL; the Spark SQL is compiled and parsed back."""

from __future__ import annotations

import csv
import datetime as dt
import random
import statistics
from collections import defaultdict
from zoneinfo import ZoneInfo

import pytest
import sqlglot


from kpi_engine.engine import open_project
from kpi_engine.errors import KpiEngineError, ProjectInvalid
from warehouse_loading import postgres_warehouse, sqlite_warehouse

pytest_plugins = ["pg"]

SPECS = """\
sources:
  visits: {table: visits, time: visited_at, primary_key: visit_id, dimensions: [channel, campaign]}
  signups: {table: signups, time: signed_up_at, primary_key: signup_id}
  visit_signups:
    label: Signups within 7 days of a visit
    conversion: {from: visits, to: signups, per: visitor_id, within: 7 days}
    time_axes: [converted_at]
  first_touch_signups:
    conversion: {from: visits, to: signups, per: visitor_id, within: 7 days, attribution: first_touch}
  same_campaign_signups:
    conversion: {from: visits, to: signups, per: visitor_id, within: 7 days, same: [campaign]}
  quick_signups:
    conversion: {from: visits, to: signups, per: visitor_id, within: 2 hours}
  ever_signups:
    conversion: {from: visits, to: signups, per: visitor_id}
  unpaid_visits: {extends: visits, where: "channel != 'paid'"}
  campaign_x_signups: {extends: signups, where: "campaign = 'x'"}
  filtered_signups:
    conversion: {from: unpaid_visits, to: campaign_x_signups, per: visitor_id, within: 7 days}
kpis:
  visit_count: {formula: count(visits)}
  signups_after_visit: {formula: count(visit_signups)}
  visit_to_signup_rate: {formula: count(visit_signups) / count(visits)}
  visit_to_signup_rate_or_zero: {formula: count(visit_signups) / count(visits), fill_nulls_with: 0}
  avg_days_to_signup: {formula: avg(visit_signups.days_to_convert)}
  median_days_to_signup: {formula: median(visit_signups.days_to_convert)}
"""
TABLES = {"visits": {"visit_id": "integer", "visited_at": "timestamp", "visitor_id": "text", "channel": "text",
                     "campaign": "text"},
          "signups": {"signup_id": "integer", "signed_up_at": "timestamp", "visitor_id": "text", "campaign": "text"}}
T = dt.datetime


def edge_rows() -> tuple[list[tuple], list[tuple]]:
    """(visitor, time, channel, campaign) visits and (visitor, time, campaign) signups whose
    outcome is worked out by hand in test_edges_by_hand."""
    visits = [
        ("edge_exact", T(2025, 1, 10, 8), "paid", "x"),  # signup exactly 7 days later: counted
        ("edge_late", T(2025, 1, 10, 8), "paid", "x"),  # one second after the window: not counted
        ("edge_before", T(2025, 2, 1, 12, 0, 1), "paid", "x"),  # the signup is a second before it
        ("edge_same_time", T(2025, 2, 2, 9), "email", "y"),  # signup at the visit's instant: 0 days
        ("edge_two_touches", T(2025, 1, 30, 10), "email", "x"),  # first touch (and same campaign)
        ("edge_two_touches", T(2025, 2, 3, 10), "social", "y"),  # last touch
        ("edge_two_conversions", T(2025, 3, 1, 10), "paid", "z"),  # one visit, two signups
        ("edge_twins", T(2025, 3, 5, 10), "social", "z"),  # two signups at the same instant
        ("edge_none", T(2025, 4, 2, 10), "email", "y"),  # no signup at all
        ("edge_tie", T(2025, 3, 20, 10), "paid", "x"),  # two visits at one instant: the lower visit_id
        ("edge_tie", T(2025, 3, 20, 10), "email", "x"),
        (None, T(2025, 3, 21, 10), "paid", "x"),  # no visitor: never matches
        ("edge_quick", T(2025, 4, 10, 10), "paid", "x"),  # 2 hours exactly, then 2 hours and a second
        ("edge_quick", T(2025, 4, 12, 10), "paid", "x"),
    ]
    signups = [
        ("edge_exact", T(2025, 1, 17, 8), "x"), ("edge_late", T(2025, 1, 17, 8, 0, 1), "x"),
        ("edge_before", T(2025, 2, 1, 12), "x"), ("edge_same_time", T(2025, 2, 2, 9), "y"),
        ("edge_two_touches", T(2025, 2, 5, 10), "x"),
        ("edge_two_conversions", T(2025, 3, 2, 10), "z"), ("edge_two_conversions", T(2025, 3, 4, 10), "z"),
        ("edge_twins", T(2025, 3, 6, 10), "z"), ("edge_twins", T(2025, 3, 6, 10), "z"),
        ("edge_tie", T(2025, 3, 21, 10), "x"), (None, T(2025, 3, 21, 11), "x"),
        ("edge_quick", T(2025, 4, 10, 12), "x"), ("edge_quick", T(2025, 4, 12, 12, 0, 1), "x"),
    ]
    return visits, signups


def generate(seed: int = 16) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    visits, signups = edge_rows()
    for n in range(70):
        visitor = f"v{n:02d}"
        times = []
        for _ in range(rng.randrange(0, 5)):
            at = T(2025, 1, 1) + dt.timedelta(seconds=rng.randrange(119 * 86400))
            times.append(at)
            visits.append((visitor, at, rng.choice(["paid", "email", "social"]), rng.choice(["x", "y", "z"])))
        for _ in range(rng.choice([0, 0, 1, 1, 2]) if times else rng.choice([0, 1])):
            anchor = rng.choice(times) if times else T(2025, 2, 1)
            offset = dt.timedelta(seconds=rng.randrange(-2 * 86400, 12 * 86400))
            signups.append((visitor, anchor + offset, rng.choice(["x", "y", "z"])))
    visit_rows = [{"visit_id": i, "visited_at": at, "visitor_id": who, "channel": channel, "campaign": campaign}
                  for i, (who, at, channel, campaign) in enumerate(visits, start=9001)]
    signup_rows = [{"signup_id": i, "signed_up_at": at, "visitor_id": who, "campaign": campaign}
                   for i, (who, at, campaign) in enumerate(signups, start=1)]
    return {"visits": visit_rows, "signups": signup_rows}


def attribute(data, within=dt.timedelta(days=7), touch="last", same=()) -> list[tuple[dict, dict]]:
    """(visit, signup) for every signup with a visit of its visitor at most ``within`` before it
    (both ends included), the latest such visit (earliest for first touch), ties to the lower
    visit_id; with ``same``, only visits with the signup's values of those columns."""
    pairs = []
    for signup in data["signups"]:
        if signup["visitor_id"] is None:
            continue
        candidates = [v for v in data["visits"] if v["visitor_id"] == signup["visitor_id"]
                      and v["visited_at"] <= signup["signed_up_at"] <= v["visited_at"] + within
                      and all(v[c] is not None and v[c] == signup[c] for c in same)]
        if candidates:
            sign = -1 if touch == "last" else 1
            chosen = min(candidates, key=lambda v: (sign * v["visited_at"].timestamp(), v["visit_id"]))
            pairs.append((chosen, signup))
    return pairs


def reference(data, by_channel=False, zone=None, **options) -> dict[tuple, dict]:
    """Per visit month (and channel): conversions, rate, avg and median days to convert. With
    ``zone``, the visits' months are those of their local time (stored times are UTC)."""
    def key(visit):
        at = visit["visited_at"]
        if zone is not None:
            at = at.replace(tzinfo=dt.timezone.utc).astimezone(ZoneInfo(zone))
        return (at.date().replace(day=1),) + ((visit["channel"],) if by_channel else ())

    visits: dict = defaultdict(int)
    for visit in data["visits"]:
        visits[key(visit)] += 1
    days: dict = defaultdict(list)
    for visit, signup in attribute(data, **options):
        days[key(visit)].append((signup["signed_up_at"] - visit["visited_at"]).total_seconds() / 86400)
    return {k: {"count": len(days[k]), "rate": len(days[k]) / visits[k] if visits[k] else None,
                "avg": statistics.fmean(days[k]) if days[k] else None,
                "median": statistics.median(days[k]) if days[k] else None} for k in visits}


def write_folder(root, data, config: str = "", specs: str = SPECS, tables: dict = TABLES) -> None:
    (root / "kpi_engine.yaml").write_text("name: conversions\nwarehouse: {adapter: duckdb, data: data}\n" + config)
    (root / "specs.yaml").write_text(specs)
    (root / "data").mkdir()
    for table, rows in data.items():
        with open(root / "data" / f"{table}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(tables[table]))
            writer.writeheader()
            writer.writerows({k: v.strftime("%Y-%m-%d %H:%M:%S") if isinstance(v, dt.datetime) else v
                              for k, v in row.items()} for row in rows)


@pytest.fixture(scope="module")
def data():
    return generate()


@pytest.fixture(scope="module")
def folder(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("conversions")
    write_folder(root, data)
    return root


@pytest.fixture(scope="module")
def project(folder):
    with open_project(folder) as opened:
        yield opened


def evaluate(project, formulas: dict[str, str], by_channel=False, **options) -> dict[tuple, dict]:
    options.setdefault("grain", "month")
    result = project.evaluate([], formulas=[f"{name}={text}" for name, text in formulas.items()],
                              by=["channel"] if by_channel else [], **options)
    keys = (["period"] if options["grain"] else []) + (["channel"] if by_channel else [])
    return {tuple(row[k] for k in keys): {name: row[name] for name in formulas} for row in result.to_dicts()}


def measures(source: str) -> dict[str, str]:
    return {"count": f"count({source})", "rate": f"count({source}) / count(visits)",
            "avg": f"avg({source}.days_to_convert)", "median": f"median({source}.days_to_convert)"}


def assert_close(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, values in want.items():
        for name, value in values.items():
            if value is None:
                assert got[key][name] is None, (key, name)
            else:
                assert got[key][name] == pytest.approx(value, rel=1e-9, abs=1e-9), (key, name, got[key][name], value)


@pytest.mark.parametrize("by_channel", [False, True], ids=["month", "month-channel"])
@pytest.mark.parametrize("source, options", [
    ("visit_signups", {}),
    ("first_touch_signups", {"touch": "first"}),
    ("same_campaign_signups", {"same": ("campaign",)}),
    ("quick_signups", {"within": dt.timedelta(hours=2)}),
    ("ever_signups", {"within": dt.timedelta(days=100_000)}),
], ids=["last-touch", "first-touch", "same-campaign", "two-hours", "no-window"])
def test_count_rate_and_time_to_convert_match_python(project, data, source, options, by_channel):
    got = evaluate(project, measures(source), by_channel)
    assert_close(got, reference(data, by_channel, **options))


def test_in_a_time_zone_conversions_follow_their_visits_local_month(data, tmp_path_factory):
    """Visits are placed by their New York month (the base count's own placement); the window and
    the time to convert are measured between the stored instants."""
    root = tmp_path_factory.mktemp("conversions_new_york")
    write_folder(root, data, "timezone: America/New_York\n")
    with open_project(root) as opened:
        got = evaluate(opened, measures("visit_signups"), by_channel=True)
    want = reference(data, by_channel=True, zone="America/New_York")
    assert want != reference(data, by_channel=True)  # some visit changes month
    assert_close(got, want)


def test_the_wheres_of_both_sources_apply(project, data):
    """From visits not paid, to signups of campaign x: only those rows are paired and counted."""
    kept = {"visits": [v for v in data["visits"] if v["channel"] != "paid"],
            "signups": [s for s in data["signups"] if s["campaign"] == "x"]}
    got = evaluate(project, {"count": "count(filtered_signups)", "rate": "count(filtered_signups) / count(unpaid_visits)",
                             "avg": "avg(filtered_signups.days_to_convert)",
                             "median": "median(filtered_signups.days_to_convert)"}, by_channel=True)
    assert_close(got, reference(kept, by_channel=True))


def test_the_generated_rows_hold_every_case(data):
    """The reference sees each case the edges are meant to exercise (so none is vacuous)."""
    pairs = attribute(data)
    converted = [signup["signup_id"] for _, signup in pairs]
    assert len(converted) == len(set(converted))  # one visit per signup
    per_visit = defaultdict(int)
    for visit, _ in pairs:
        per_visit[visit["visit_id"]] += 1
    assert max(per_visit.values()) >= 2  # a visit with two conversions
    assert attribute(data, touch="first") != pairs  # first and last touch differ somewhere
    assert len(attribute(data, within=dt.timedelta(days=100_000))) > len(pairs)  # some signups come later
    late = [s for s in data["signups"] if s["visitor_id"] and s["signup_id"] not in converted]
    assert late  # signups before any visit or after the window


@pytest.mark.parametrize("source, visitor, count, days", [
    ("visit_signups", "edge_exact", 1, 7.0),
    ("visit_signups", "edge_late", 0, None),
    ("visit_signups", "edge_before", 0, None),
    ("visit_signups", "edge_same_time", 1, 0.0),
    ("visit_signups", "edge_two_touches", 1, 2.0),  # the February social visit
    ("first_touch_signups", "edge_two_touches", 1, 6.0),  # the January email visit
    ("same_campaign_signups", "edge_two_touches", 1, 6.0),  # the visit of campaign x
    ("visit_signups", "edge_two_conversions", 2, 4.0),  # 1 day + 3 days
    ("visit_signups", "edge_twins", 2, 2.0),
    ("visit_signups", "edge_none", 0, None),
    ("quick_signups", "edge_quick", 1, 2 / 24),
])
def test_edges_by_hand(project, source, visitor, count, days):
    got = evaluate(project, {"n": f"count({source} where visitor_id = '{visitor}')",
                             "days": f"sum({source}.days_to_convert where visitor_id = '{visitor}')"}, grain=None)
    assert got[()]["n"] == count
    assert got[()]["days"] == (pytest.approx(days) if days is not None else 0)


def test_a_conversion_counts_in_its_visits_month_and_channel(project):
    """edge_two_touches signed up in February after an email visit in January and a social one in
    February: last touch counts it in February for social, first touch in January for email."""
    formulas = {"last": "count(visit_signups where visitor_id = 'edge_two_touches')",
                "first": "count(first_touch_signups where visitor_id = 'edge_two_touches')"}
    got = evaluate(project, formulas, by_channel=True)
    assert got[(dt.date(2025, 2, 1), "social")] == {"last": 1, "first": 0}
    assert got[(dt.date(2025, 1, 1), "email")] == {"last": 0, "first": 1}


def test_ties_go_to_the_lower_visit_id(project, data):
    """edge_tie's two visits share an instant: the paid one (the lower visit_id) gets the signup."""
    got = evaluate(project, {"n": "count(visit_signups where visitor_id = 'edge_tie')"}, by_channel=True)
    assert got[(dt.date(2025, 3, 1), "paid")]["n"] == 1
    assert got[(dt.date(2025, 3, 1), "email")]["n"] == 0


def test_no_visits_is_a_null_rate_and_zero_conversions(project, data):
    """Under --fill, December 2024 and May 2025 have no visit: the rate is null (0 with
    fill_nulls_with: 0), the count of conversions 0; months with visits and none converting read 0."""
    result = project.evaluate(["signups_after_visit", "visit_to_signup_rate", "visit_to_signup_rate_or_zero"],
                              grain="month", start=dt.date(2024, 12, 1), end=dt.date(2025, 6, 1), fill=True)
    rows = {row["period"]: row for row in result.to_dicts()}
    want = reference(data)
    for month in (dt.date(2024, 12, 1), dt.date(2025, 5, 1)):
        assert rows[month]["signups_after_visit"] == 0
        assert rows[month]["visit_to_signup_rate"] is None
        assert rows[month]["visit_to_signup_rate_or_zero"] == 0
    for month in (dt.date(2025, m, 1) for m in range(1, 5)):
        assert rows[month]["signups_after_visit"] == want[(month,)]["count"]
        assert rows[month]["visit_to_signup_rate"] == pytest.approx(want[(month,)]["rate"])


def test_a_visit_channel_without_conversions_counts_zero(project, data):
    """Asked alone, the conversions have a row wherever there are visits (0 where none converted)."""
    got = evaluate(project, {"n": "count(visit_signups)"}, by_channel=True)
    want = reference(data, by_channel=True)
    assert got.keys() == want.keys()
    assert {k: v["n"] for k, v in got.items()} == {k: v["count"] for k, v in want.items()}
    assert 0 in {v["n"] for v in got.values()}


def test_where_filters_the_attributed_visits(project, data):
    got = evaluate(project, {"n": "count(visit_signups)"}, where="channel = 'paid'")
    pairs = [visit for visit, _ in attribute(data) if visit["channel"] == "paid"]
    want = defaultdict(int)
    for visit in data["visits"]:
        if visit["channel"] == "paid":
            want[(visit["visited_at"].date().replace(day=1),)] += 0
    for visit in pairs:
        want[(visit["visited_at"].date().replace(day=1),)] += 1
    assert {k: v["n"] for k, v in got.items()} == dict(want)


def test_placed_at_the_conversion_by_its_time_axis(project, data):
    """time_axes: [converted_at] counts the same conversions in the month they happened."""
    got = evaluate(project, {"n": "count(visit_signups at converted_at)",
                             "days": "avg(visit_signups.days_to_convert at converted_at)"}, by_channel=True)
    days = defaultdict(list)
    for visit, signup in attribute(data):
        key = (signup["signed_up_at"].date().replace(day=1), visit["channel"])
        days[key].append((signup["signed_up_at"] - visit["visited_at"]).total_seconds() / 86400)
    assert_close(got, {key: {"n": len(values), "days": statistics.fmean(values)} for key, values in days.items()})


def test_seconds_to_convert_and_converted_at(project, data):
    got = evaluate(project, {"seconds": "sum(visit_signups.seconds_to_convert)",
                             "in_march": "count(visit_signups where converted_at >= '2025-03-01' and "
                                         "converted_at < '2025-04-01')"}, grain=None)
    pairs = attribute(data)
    assert got[()]["seconds"] == pytest.approx(sum((s["signed_up_at"] - v["visited_at"]).total_seconds()
                                                   for v, s in pairs))
    assert got[()]["in_march"] == sum(1 for _, s in pairs if s["signed_up_at"].month == 3)


def test_per_entity_lookup_reads_conversions_only(project, data):
    """count(visit_signups per visitor_id) inside a filter counts each visitor's conversions."""
    got = evaluate(project, {"n": "count(visits where count(visit_signups per visitor_id) > 0)"}, grain=None)
    converted = {signup["visitor_id"] for _, signup in attribute(data)}
    assert got[()]["n"] == sum(1 for v in data["visits"] if v["visitor_id"] in converted)


def test_compile_for_spark_and_parse_back(project):
    for dialect in ("spark", "postgres", "duckdb"):
        text = project.compile(["visit_to_signup_rate", "median_days_to_signup"], grain="month", by=["channel"],
                               dialect=dialect).sql()
        assert sqlglot.parse_one(text, read=dialect) is not None
        assert "ROW_NUMBER() OVER" in text


@pytest.mark.parametrize("conversion, message", [
    ("{from: visit, to: signups, per: visitor_id, within: 7 days}", "'from: visit' is not a source"),
    ("{from: visits, to: visits, per: visitor_id, within: 7 days}", "'from' and 'to' are both 'visits'"),
    ("{from: visits, to: signups, per: visitor_id, within: 7 fortnights}", "within"),
    ("{from: visits, to: signups, per: visitor_id, within: 7 days, attribution: linear}", "attribution"),
    ("{from: visits, to: signups, per: visitor, within: 7 days}", "'per: visitor' is not a column of source 'visits'"),
    ("{from: visits, to: signups, per: visitor_id, within: 7 days, same: [channel]}",
     "'same: channel' is not a column of source 'signups'"),
])
def test_bad_conversions_are_one_clear_error(folder, tmp_path, conversion, message):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "kpi_engine.yaml").write_text(f"name: bad\nwarehouse: {{adapter: duckdb, data: {folder / 'data'}}}\n")
    (root / "specs.yaml").write_text(
        "sources:\n  visits: {table: visits, time: visited_at, dimensions: [channel]}\n"
        "  signups: {table: signups, time: signed_up_at}\n"
        f"  conv:\n    conversion: {conversion}\nkpis:\n  n: {{formula: count(conv)}}\n")
    with pytest.raises(KpiEngineError) as error:
        with open_project(root) as opened:
            opened.evaluate(["n"], grain="month")
    assert message in str(error.value)


@pytest.mark.parametrize("formula", ["last(visit_signups)", "first(visit_signups.days_to_convert per visitor_id)"])
def test_snapshots_of_conversions_are_refused(project, formula):
    with pytest.raises(KpiEngineError, match="'visit_signups' is a conversion source, whose rows are events"):
        project.evaluate([], formulas=[formula], grain="month")


def test_a_conversion_source_declares_nothing_else(folder, tmp_path):
    root = tmp_path / "extra"
    root.mkdir()
    (root / "kpi_engine.yaml").write_text(f"name: bad\nwarehouse: {{adapter: duckdb, data: {folder / 'data'}}}\n")
    (root / "specs.yaml").write_text(
        "sources:\n  visits: {table: visits, time: visited_at}\n  signups: {table: signups, time: signed_up_at}\n"
        "  conv:\n    table: visits\n    conversion: {from: visits, to: signups, per: visitor_id, within: 7 days}\n")
    with pytest.raises(ProjectInvalid, match="conversion source 'conv' also declares table"):
        open_project(root)


@pytest.fixture(scope="module")
def on_postgres(request, folder):
    url = postgres_warehouse(request.getfixturevalue("pg_server"), "kpi_conversions", TABLES, folder / "data")
    with open_project(folder, warehouse=url) as opened:
        yield opened


@pytest.fixture(scope="module")
def on_sqlite(folder, tmp_path_factory):
    url = sqlite_warehouse(tmp_path_factory.mktemp("sqlite"), "conversions", TABLES, folder / "data")
    with open_project(folder, warehouse=url) as opened:
        yield opened


@pytest.mark.parametrize("warehouse", ["on_postgres", "on_sqlite"])
@pytest.mark.parametrize("source", ["visit_signups", "first_touch_signups", "same_campaign_signups",
                                    "quick_signups"])
def test_other_warehouses_equal_duckdb(request, project, warehouse, source):
    """(SQLite has no epoch function: its seconds come from Julian days, rounded to 1 ms; it has
    no median either, so there the longest time to convert stands in for it.)"""
    other = request.getfixturevalue(warehouse)
    formulas = measures(source)
    if warehouse == "on_sqlite":
        formulas["median"] = f"max({source}.seconds_to_convert)"
    want = evaluate(project, formulas, by_channel=True)
    got = evaluate(other, formulas, by_channel=True)
    assert_close(got, want)


@pytest.mark.parametrize("dialect, function", [("sqlite", "JULIANDAY"), ("mysql", "UNIX_TIMESTAMP"),
                                               ("clickhouse", "toUnixTimestamp"), ("bigquery", "UNIX_SECONDS"),
                                               ("tsql", "DATEDIFF_BIG"), ("duckdb", "EPOCH"),
                                               ("postgres", "DATE_PART('epoch'")])
def test_seconds_to_convert_use_each_dialects_own_epoch(project, dialect, function):
    text = project.compile(formulas=["avg(visit_signups.days_to_convert)"], grain="month", dialect=dialect).sql()
    assert function in text and "TIME_TO_UNIX" not in text


KPI_TESTS = """\
tests:
  signup_within_a_week_of_the_last_visit:
    description: The second visit gets the signup (last touch); the first visit's month has none.
    grain: month
    by: [channel]
    given:
      visits:
        - {visit_id: 1, visited_at: 2025-01-30 10:00:00, visitor_id: a, channel: email, campaign: x}
        - {visit_id: 2, visited_at: 2025-02-03 10:00:00, visitor_id: a, channel: social, campaign: y}
        - {visit_id: 3, visited_at: 2025-02-04 10:00:00, visitor_id: b, channel: social, campaign: y}
      signups:
        - {signup_id: 1, signed_up_at: 2025-02-06 22:00:00, visitor_id: a, campaign: x}
    expect:
      - {period: 2025-01-01, channel: email, signups_after_visit: 0, visit_to_signup_rate: 0}
      - {period: 2025-02-01, channel: social, signups_after_visit: 1, visit_to_signup_rate: 0.5,
         median_days_to_signup: 3.5}
  rows_of_a_conversion_source:
    given:
      visit_signups:
        - {visit_id: 1, visited_at: 2025-01-30 10:00:00, visitor_id: a}
    expect:
      - {signups_after_visit: 1}
"""


def test_kpi_unit_tests_give_the_rows_of_both_sources(tmp_path):
    from kpi_engine.kpi_tests import run_tests
    from kpi_engine.spec import load_project

    (tmp_path / "kpi_engine.yaml").write_text("name: t\nwarehouse: {adapter: duckdb, data: data}\n")
    (tmp_path / "specs.yaml").write_text(SPECS)
    (tmp_path / "tests.yaml").write_text(KPI_TESTS)
    outcomes = {outcome.name: outcome for outcome in run_tests(load_project(tmp_path))}
    assert outcomes["signup_within_a_week_of_the_last_visit"].passed, outcomes
    refused = outcomes["rows_of_a_conversion_source"]
    assert not refused.passed and "give the rows of its sources instead: 'visits' and 'signups'" in \
        refused.problems[0].lower()


def test_share_of_visits_that_converted(project, data):
    """count_distinct of the base key: visits followed by a signup, each once (docs/time.md)."""
    got = evaluate(project, {"share": "count_distinct(visit_signups.visit_id) / count(visits)"})
    converted, visits = defaultdict(set), defaultdict(int)
    for visit in data["visits"]:
        visits[visit["visited_at"].date().replace(day=1)] += 1
    for visit, _ in attribute(data):
        converted[visit["visited_at"].date().replace(day=1)].add(visit["visit_id"])
    assert {k[0]: v["share"] for k, v in got.items()} == pytest.approx(
        {month: len(converted[month]) / n for month, n in visits.items()})


def test_date_columns_and_a_window_in_weeks(tmp_path):
    """Trials to payments on DATE columns, within 2 weeks: day 14 counts, day 15 does not, and a
    payment the day a trial starts counts with 0 days; worked out by hand."""
    (tmp_path / "kpi_engine.yaml").write_text("name: trials\nwarehouse: {adapter: duckdb, data: data}\n")
    (tmp_path / "specs.yaml").write_text(
        "sources:\n"
        "  trials: {table: trials, time: started_on, dimensions: [plan], columns: {started_on: date}}\n"
        "  payments: {table: payments, time: paid_on, columns: {paid_on: date}}\n"
        "  paid_trials:\n"
        "    conversion: {from: trials, to: payments, per: account_id, within: 2 weeks, attribution: first_touch}\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "trials.csv").write_text(
        "account_id,started_on,plan\n1,2025-01-01,pro\n2,2025-01-01,pro\n3,2025-01-20,basic\n3,2025-02-01,pro\n"
        "4,2025-02-10,basic\n")
    (tmp_path / "data" / "payments.csv").write_text(
        "account_id,paid_on\n1,2025-01-15\n2,2025-01-16\n3,2025-02-02\n4,2025-02-10\n")
    with open_project(tmp_path) as opened:
        got = evaluate(opened, {"n": "count(paid_trials)", "days": "sum(paid_trials.days_to_convert)",
                                "rate": "count(paid_trials) / count(trials)"}, by_channel=False)
        by_plan = opened.evaluate([], formulas=["n=count(paid_trials)"], grain="month", by=["plan"]).to_dicts()
    # January: account 1 (day 14) and account 3 (its January trial, first touch, 13 days); account 2
    # paid on day 15. February: account 4 paid the day its trial started.
    assert got == {(dt.date(2025, 1, 1),): {"n": 1 + 1, "days": 14 + 13, "rate": 2 / 3},
                   (dt.date(2025, 2, 1),): {"n": 1, "days": 0, "rate": 1 / 2}}
    assert {(r["period"], r["plan"]): r["n"] for r in by_plan} == {
        (dt.date(2025, 1, 1), "pro"): 1, (dt.date(2025, 1, 1), "basic"): 1,
        (dt.date(2025, 2, 1), "pro"): 0, (dt.date(2025, 2, 1), "basic"): 1}
