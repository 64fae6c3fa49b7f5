"""History-aware joins (issue 16, item 3): a history source (slowly changing dimension, type 2)
declares valid_from/valid_to, and a fact row takes the version that held at its own time, or
with ``as_of: latest`` each key's latest version.

The data is generated with the awkward cases on purpose (gaps, overlapping versions, two
versions starting together, members without history, purchases exactly at a version's start
and end) and every number is checked against plain Python over the generated rows, written from
the documented rule: a row takes the latest version that started at or before its time, unless
that version ended by then; of versions starting together the longest-running (then the smallest
tier) counts.
"""

pytest_plugins = ["pg"]

import datetime as dt  # noqa: E402
import random  # noqa: E402
from collections import defaultdict  # noqa: E402
from decimal import Decimal  # noqa: E402
from pathlib import Path  # noqa: E402
from zoneinfo import ZoneInfo  # noqa: E402

import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from kpi_engine.cli import cli  # noqa: E402
from kpi_engine.engine import open_project  # noqa: E402
from kpi_engine.errors import KpiEngineError  # noqa: E402
from conftest import write_project  # noqa: E402
from warehouse_loading import load_postgres, sqlite_warehouse  # noqa: E402

ZONE = "America/New_York"
SPECS = """\
sources:
  purchases:
    table: purchases
    time: bought_at
    relationships:
      - {to: tier_history, on: {buyer: member_code}, name: plan_at_purchase}
      - {to: tier_history, on: {buyer: member_code}, name: current_plan, as_of: latest}
  tier_history:
    table: tier_history
    primary_key: [member_code, effective_from]
    valid_from: effective_from
    valid_to: effective_until
    dimensions: [tier]
  signups:                       # no time column: only the latest view can join it
    table: members
    relationships:
      - {to: tier_history, on: {code: member_code}, name: at_time}
      - {to: tier_history, on: {code: member_code}, name: now, as_of: latest}
kpis:
  revenue: {formula: sum(purchases.total), unit: currency}
  buyers: {formula: count_distinct(purchases.buyer)}
  members: {formula: count(signups)}
"""
TIERS = ["basic", "enterprise", "free", "pro"]


def generate(seed: int = 16) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    history, purchases, members = [], [], []

    def moment(start: dt.datetime, days: int) -> dt.datetime:
        return start + dt.timedelta(days=rng.randrange(days), hours=rng.randrange(24), minutes=rng.randrange(60))

    for i in range(1, 41):
        code = f"m{i:03d}"
        members.append({"code": code})
        if i % 10 == 0:
            continue  # no history at all
        start = moment(dt.datetime(2024, 11, 1), 60)
        for v in range(rng.randrange(1, 5)):
            following = start + dt.timedelta(days=rng.randrange(10, 60), hours=rng.randrange(24))
            last = v == 3 or rng.random() < 0.3
            shape = rng.random()
            if last:
                until = None if shape < 0.8 else start + dt.timedelta(days=rng.randrange(5, 40))
            elif shape < 0.15:
                until = following - dt.timedelta(days=rng.randrange(1, 8))  # a gap
            elif shape < 0.3:
                until = following + dt.timedelta(days=rng.randrange(1, 15))  # overlaps the next version
            else:
                until = following
            history.append({"member_code": code, "tier": rng.choice(TIERS), "effective_from": start,
                            "effective_until": until})
            if rng.random() < 0.12:  # a second version starting at the same time
                other = None if rng.random() < 0.3 else start + dt.timedelta(days=rng.randrange(1, 30))
                history.append({"member_code": code, "tier": rng.choice(TIERS), "effective_from": start,
                                "effective_until": other})
            if last:
                break
            start = following
    codes = [m["code"] for m in members]
    for _ in range(600):
        purchases.append({"buyer": rng.choice(codes), "bought_at": moment(dt.datetime(2024, 11, 15), 200),
                          "total": Decimal(rng.randrange(500, 90000)) / 100})
    for version in rng.sample(history, 25):  # exactly at a start, an end, and just before a start
        for at in (version["effective_from"], version["effective_until"],
                   version["effective_from"] - dt.timedelta(seconds=1)):
            if at is not None:
                purchases.append({"buyer": version["member_code"], "bought_at": at,
                                  "total": Decimal(rng.randrange(500, 90000)) / 100})
    rng.shuffle(history)
    return {"purchases": purchases, "tier_history": history, "members": members}


# --- the plain-Python reference ---------------------------------------------------------------------------


def _versions(history: list[dict], code: str) -> list[dict]:
    """One version per start (the longest-running, then the smallest tier), in start order."""
    starts: dict[dt.datetime, list[dict]] = defaultdict(list)
    for row in history:
        if row["member_code"] == code and row["effective_from"] is not None:
            starts[row["effective_from"]].append(row)
    def rank(row):  # open first, then the latest end, then the smallest tier
        until = row["effective_until"]
        return (0, 0.0, row["tier"]) if until is None else (1, -until.timestamp(), row["tier"])

    return [min(rows, key=rank) for _, rows in sorted(starts.items())]


def tier_at(history: list[dict], code: str, at: dt.datetime) -> str | None:
    started = [v for v in _versions(history, code) if v["effective_from"] <= at]
    if not started:
        return None
    version = started[-1]
    return version["tier"] if version["effective_until"] is None or at < version["effective_until"] else None


def latest_tier(history: list[dict], code: str) -> str | None:
    versions = _versions(history, code)
    return versions[-1]["tier"] if versions else None


def local_month(at: dt.datetime, zone: str | None) -> dt.date:
    if zone:
        at = at.replace(tzinfo=dt.timezone.utc).astimezone(ZoneInfo(zone))
    return at.date().replace(day=1)


def revenue_by(rows: dict, tier_of, zone: str | None = ZONE) -> dict:
    totals: dict = defaultdict(Decimal)
    for row in rows["purchases"]:
        totals[(local_month(row["bought_at"], zone), tier_of(row))] += row["total"]
    return dict(totals)


#: purchases -> member_list -> tier_history: the history two hops from the facts, read at their time.
TWO_HOP_SPECS = SPECS.replace("""      - {to: tier_history, on: {buyer: member_code}, name: plan_at_purchase}
      - {to: tier_history, on: {buyer: member_code}, name: current_plan, as_of: latest}
""", "      - {to: member_list, on: {buyer: code}}\n").replace("kpis:\n", """  member_list:
    table: members
    primary_key: code
    relationships: [{to: tier_history, on: {code: member_code}}]
kpis:
""")


# --- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rows():
    return generate()


@pytest.fixture(scope="module")
def folder(rows, tmp_path_factory):
    config = f"name: scd\ntimezone: {ZONE}\nwarehouse: {{adapter: duckdb, data: data}}\n"
    return write_project(tmp_path_factory.mktemp("scd") / "scd", {"specs.yaml": SPECS}, rows, config)


@pytest.fixture(scope="module")
def project(folder):
    with open_project(folder) as opened:
        yield opened


def by_key(result, dim: str, kpi: str) -> dict:
    return {(r["period"], r[dim]): r[kpi] for r in result.to_dicts()}


# --- tests ----------------------------------------------------------------------------------------------


def test_the_generated_history_has_the_awkward_cases(rows):
    history = rows["tier_history"]
    starts = defaultdict(int)
    for row in history:
        starts[(row["member_code"], row["effective_from"])] += 1
    assert any(count > 1 for count in starts.values()), "no two versions starting together"
    ordered = sorted(history, key=lambda r: (r["member_code"], r["effective_from"]))
    pairs = [(a, b) for a, b in zip(ordered, ordered[1:]) if a["member_code"] == b["member_code"]
             and a["effective_from"] != b["effective_from"] and a["effective_until"]]
    assert any(a["effective_until"] > b["effective_from"] for a, b in pairs), "no overlap"
    assert any(a["effective_until"] < b["effective_from"] for a, b in pairs), "no gap"


def test_revenue_by_the_tier_held_when_buying(project, rows):
    history = rows["tier_history"]
    want = revenue_by(rows, lambda r: tier_at(history, r["buyer"], r["bought_at"]))
    got = by_key(project.evaluate(["revenue"], grain="month", by=["plan_at_purchase__tier"]),
                 "plan_at_purchase__tier", "revenue")
    assert set(got) == set(want)
    assert got == pytest.approx({k: float(v) for k, v in want.items()})
    assert None in {tier for _, tier in want}  # purchases outside any version, and members without history


def test_revenue_by_the_latest_tier(project, rows):
    history = rows["tier_history"]
    want = revenue_by(rows, lambda r: latest_tier(history, r["buyer"]))
    got = by_key(project.evaluate(["revenue"], grain="month", by=["current_plan__tier"]), "current_plan__tier",
                 "revenue")
    assert got == pytest.approx({k: float(v) for k, v in want.items()})


def test_a_filter_on_the_tier_at_purchase_and_a_distinct_count(project, rows):
    history = rows["tier_history"]
    buyers = defaultdict(set)
    for row in rows["purchases"]:
        if tier_at(history, row["buyer"], row["bought_at"]) == "pro":
            buyers[local_month(row["bought_at"], ZONE)].add(row["buyer"])
    result = project.evaluate(["buyers"], grain="month", where="plan_at_purchase__tier = 'pro'")
    assert {r["period"]: r["buyers"] for r in result.to_dicts()} == {k: len(v) for k, v in buyers.items()}


def test_a_source_without_time_joins_the_latest_version_only(project, rows):
    history = rows["tier_history"]
    want = defaultdict(int)
    for member in rows["members"]:
        want[latest_tier(history, member["code"])] += 1
    result = project.evaluate(["members"], by=["now__tier"])
    assert {r["now__tier"]: r["members"] for r in result.to_dicts()} == want
    with pytest.raises(KpiEngineError) as error:
        project.evaluate(["members"], by=["at_time__tier"])
    assert error.value.message == ("'signups' cannot be joined to the history source 'tier_history' at each row's "
                                   "time: it has no time column.")
    assert "as_of: latest" in error.value.hint


def test_an_interval_source_joins_the_latest_version_only(folder, tmp_path):
    extra = ("  stays:\n    table: tier_history\n    time: effective_from\n    time_end: effective_until\n"
             "    relationships: [{to: tier_history, on: member_code, name: at_time}]\n")
    write_project(tmp_path, {"specs.yaml": SPECS.replace("kpis:\n", extra + "kpis:\n  stays: {formula: last(stays)}\n")},
                  config=f"name: t\nwarehouse: {{adapter: duckdb, data: {folder / 'data'}}}\n")
    with open_project(tmp_path) as opened, pytest.raises(KpiEngineError) as error:
        opened.evaluate(["stays"], grain="month", start="2025-01-01", end="2025-03-01", by=["at_time__tier"])
    assert error.value.message == ("'stays' cannot be joined to the history source 'tier_history' at each row's time: "
                                   "it is an interval source (time_end): its rows span many times.")


def test_values_of_a_dimension_at_the_rows_time(project, rows):
    history = rows["tier_history"]
    want = {(local_month(r["bought_at"], ZONE), tier_at(history, r["buyer"], r["bought_at"])) for r in rows["purchases"]}
    got = project.values(["plan_at_purchase__tier"], grain="month").to_dicts()
    assert {(r["period"], r["plan_at_purchase__tier"]) for r in got} == want


def test_a_history_two_hops_away_is_read_at_the_facts_time(folder, rows, tmp_path):
    write_project(tmp_path, {"specs.yaml": TWO_HOP_SPECS},
                  config=f"name: t\ntimezone: {ZONE}\nwarehouse: {{adapter: duckdb, data: {folder / 'data'}}}\n")
    history = rows["tier_history"]
    want = revenue_by(rows, lambda r: tier_at(history, r["buyer"], r["bought_at"]))
    with open_project(tmp_path) as opened:
        got = by_key(opened.evaluate(["revenue"], grain="month", by=["tier"]), "tier", "revenue")
    assert got == pytest.approx({k: float(v) for k, v in want.items()})


def test_two_paths_to_the_history_must_be_named(project):
    with pytest.raises(KpiEngineError) as error:
        project.evaluate(["revenue"], by=["tier"])
    assert error.value.message == ("cannot slice by 'tier': 'tier' is reached from 'purchases' through 2 paths: "
                                   "plan_at_purchase__tier, current_plan__tier.")


# --- the edges, by hand ---------------------------------------------------------------------------------

EDGE_HISTORY = """\
member_code,tier,effective_from,effective_until
a,basic,2025-01-01 00:00:00,2025-02-01 00:00:00
a,pro,2025-02-01 00:00:00,
b,basic,2025-01-01 00:00:00,2025-03-01 00:00:00
b,pro,2025-02-01 00:00:00,2025-02-15 00:00:00
c,free,2025-01-01 00:00:00,2025-01-10 00:00:00
c,pro,2025-01-01 00:00:00,
e,free,2025-01-05 00:00:00,2025-01-20 00:00:00
e,basic,2025-01-05 00:00:00,2025-01-20 00:00:00
"""
# (buyer, bought_at, total, the tier by hand)
EDGE_PURCHASES = [
    ("a", "2024-12-31 23:59:59", 1, None),      # before the first version
    ("a", "2025-01-01 00:00:00", 2, "basic"),   # exactly at valid_from: included
    ("a", "2025-02-01 00:00:00", 4, "pro"),     # exactly at valid_to: the next version
    ("b", "2025-02-10 00:00:00", 8, "pro"),     # overlap: the later start wins
    ("b", "2025-02-20 00:00:00", 16, None),     # the later one ended; the earlier was superseded
    ("c", "2025-01-20 00:00:00", 32, "pro"),    # two start together: the longest-running
    ("d", "2025-01-15 00:00:00", 64, None),     # no history at all
    ("e", "2025-01-06 00:00:00", 128, "basic"),  # same start and end: the smallest tier
    ("e", "2025-01-20 00:00:00", 256, None),    # exactly at valid_to, nothing after
]


def write_edge_data(data: Path) -> None:
    """The edge cases' three tables as CSV files in ``data``."""
    data.mkdir()
    (data / "tier_history.csv").write_text(EDGE_HISTORY)
    (data / "purchases.csv").write_text("buyer,bought_at,total\n" + "".join(
        f"{b},{at},{total}\n" for b, at, total, _ in EDGE_PURCHASES))
    (data / "members.csv").write_text("code\na\nb\nc\nd\ne\n")


@pytest.fixture
def edge_project(tmp_path):
    (tmp_path / "kpi_engine.yaml").write_text("name: edges\nwarehouse: {adapter: duckdb, data: data}\n")
    (tmp_path / "specs.yaml").write_text(SPECS)
    write_edge_data(tmp_path / "data")
    with open_project(tmp_path) as opened:
        yield opened


def test_the_window_edges_by_hand(edge_project):
    want = defaultdict(int)
    for _, _, total, tier in EDGE_PURCHASES:
        want[tier] += total
    result = edge_project.evaluate(["revenue"], by=["plan_at_purchase__tier"])
    assert {r["plan_at_purchase__tier"]: r["revenue"] for r in result.to_dicts()} == want
    assert dict(want) == {None: 1 + 16 + 64 + 256, "basic": 2 + 128, "pro": 4 + 8 + 32}
    latest = edge_project.evaluate(["revenue"], by=["current_plan__tier"])
    # a: pro; b: pro (started last); c: pro (longest of two); d: none; e: basic (smallest of a tie)
    assert {r["current_plan__tier"]: r["revenue"] for r in latest.to_dicts()} == \
        {"pro": 1 + 2 + 4 + 8 + 16 + 32, None: 64, "basic": 128 + 256}


def edge_history() -> list[dict]:
    """EDGE_HISTORY's rows as the reference reads them."""
    history = [dict(zip(("member_code", "tier", "effective_from", "effective_until"), line.split(",")))
               for line in EDGE_HISTORY.splitlines()[1:]]
    for row in history:
        row["effective_from"] = dt.datetime.fromisoformat(row["effective_from"])
        row["effective_until"] = dt.datetime.fromisoformat(row["effective_until"]) if row["effective_until"] else None
    return history


def test_the_edges_against_the_reference(edge_project):
    history = edge_history()
    for buyer, at, _, tier in EDGE_PURCHASES:
        assert tier_at(history, buyer, dt.datetime.fromisoformat(at)) == tier, (buyer, at)


def test_the_documented_example_runs(tmp_path):
    """docs/time.md's history example, on a few rows whose plans are known by hand."""
    import re
    from pathlib import Path

    docs = (Path(__file__).resolve().parent.parent / "docs" / "time.md").read_text()
    specs = next(b for b in re.findall(r"```yaml\n(.*?)```", docs, re.S) if "plan_history:" in b)
    write_project(tmp_path, {"specs.yaml": specs}, {
        "orders": [{"customer_id": 1, "ordered_at": "2025-01-10 09:00:00", "amount": 10},
                   {"customer_id": 1, "ordered_at": "2025-03-01 00:00:00", "amount": 20},
                   {"customer_id": 2, "ordered_at": "2025-03-05 12:00:00", "amount": 40}],
        "plan_history": [{"customer_id": 1, "plan": "starter", "valid_from": "2025-01-01 00:00:00",
                          "valid_to": "2025-03-01 00:00:00"},
                         {"customer_id": 1, "plan": "pro", "valid_from": "2025-03-01 00:00:00", "valid_to": None}],
    })
    with open_project(tmp_path) as opened:
        at_purchase = opened.evaluate(["revenue"], by=["plan_at_purchase__plan"]).to_dicts()
        current = opened.evaluate(["revenue"], by=["current__plan"]).to_dicts()
    assert {r["plan_at_purchase__plan"]: r["revenue"] for r in at_purchase} == {"starter": 10, "pro": 20, None: 40}
    assert {r["current__plan"]: r["revenue"] for r in current} == {"pro": 30, None: 40}


#: DATE facts against TIMESTAMP validity (stamp_history) and TIMESTAMP facts against DATE validity (day_history).
DATE_SPECS = """\
sources:
  visits:
    table: visits
    time: visited_on
    relationships: [{to: stamp_history, on: who}]
  calls:
    table: calls
    time: called_at
    relationships: [{to: day_history, on: who}]
  stamp_history: {table: stamp_history, primary_key: who, valid_from: since, valid_to: until, dimensions: [level]}
  day_history:
    table: day_history
    primary_key: who
    valid_from: since
    valid_to: until
    dimensions: [{name: grade, column: level}]
kpis:
  visits: {formula: count(visits)}
  calls: {formula: count(calls)}
"""
DATE_TABLES = {
    "visits": [{"who": "x", "visited_on": d} for d in ("2025-01-01", "2025-01-10", "2025-01-11")],
    "calls": [{"who": "x", "called_at": t} for t in ("2025-01-09 23:59:59", "2025-01-10 00:00:00",
                                                     "2025-01-10 08:00:00")],
    "stamp_history": [{"who": "x", "level": "one", "since": "2025-01-01 00:00:00", "until": "2025-01-10 12:00:00"},
                      {"who": "x", "level": "two", "since": "2025-01-10 12:00:00", "until": None}],
    "day_history": [{"who": "x", "level": "one", "since": "2025-01-01", "until": "2025-01-10"},
                    {"who": "x", "level": "two", "since": "2025-01-10", "until": None}],
}
VISITS_BY_LEVEL = {"one": 2, "two": 1}  # Jan 10 is its midnight: before the noon change
CALLS_BY_GRADE = {"one": 1, "two": 2}   # the day Jan 10 starts at its midnight


def date_counts(opened) -> tuple[dict, dict]:
    """(visits by level, calls by grade) of a project over DATE_SPECS."""
    visits = {r["level"]: r["visits"] for r in opened.evaluate(["visits"], by=["level"]).to_dicts()}
    calls = {r["grade"]: r["calls"] for r in opened.evaluate(["calls"], by=["grade"]).to_dicts()}
    return visits, calls


def test_dates_against_timestamps_mean_midnight(tmp_path):
    """A DATE fact against timestamp validity, and timestamp facts against DATE validity."""
    write_project(tmp_path, {"specs.yaml": DATE_SPECS}, DATE_TABLES)
    with open_project(tmp_path) as opened:
        assert date_counts(opened) == (VISITS_BY_LEVEL, CALLS_BY_GRADE)


# --- validation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, message", [
    ("  plain: {table: members, primary_key: code}\n  p2:\n    table: purchases\n    time: bought_at\n"
     "    relationships: [{to: plain, on: {buyer: code}, as_of: latest}]\n",
     "relationship p2 -> plain sets 'as_of' but 'plain' is not a history source."),
    ("  h2: {table: tier_history, valid_to: effective_until, primary_key: member_code}\n",
     "source 'h2' declares 'valid_to' but no 'valid_from'."),
    ("  h3: {table: tier_history, valid_from: effective_from, primary_key: effective_from}\n",
     "history source 'h3' declares no key its versions belong to."),
    ("  h4: {table: tier_history, primary_key: member_code, valid_from: starts_at}\n",
     "valid from column 'starts_at' does not exist in tier_history."),
    ("  p3:\n    table: purchases\n    time: bought_at\n    relationships: [{to: tier_history, on: {total: tier}}]\n",
     "relationship p3.total -> tier_history.tier could fan out: 'tier' is not the entity key of 'tier_history' "
     "(primary key: member_code)."),
])
def test_history_mistakes_are_one_clear_error(folder, tmp_path, extra, message):
    (tmp_path / "kpi_engine.yaml").write_text(f"name: t\nwarehouse: {{adapter: duckdb, data: {folder / 'data'}}}\n")
    (tmp_path / "specs.yaml").write_text(SPECS.replace("kpis:\n", extra + "kpis:\n"))
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split()), result.output
    assert result.output.count("Error:") == 1, result.output
    assert "Traceback" not in result.output


def test_the_history_join_reads_back_in_each_dialect(project):
    import sqlglot

    with pytest.raises(KpiEngineError) as error:
        project.compile(["revenue"], by=["plan_at_purchase__tier"], dialect="clickhouse")
    assert error.value.message.startswith("joining the history source 'tier_history' is not supported on ClickHouse")
    for dialect in ("duckdb", "postgres", "bigquery", "snowflake", "spark", "mysql"):
        sql = project.compile(["revenue"], grain="month", by=["plan_at_purchase__tier"], dialect=dialect).sql()
        tree = sqlglot.parse_one(sql, read=dialect)
        windows = {w.this.key for w in tree.find_all(sqlglot.exp.Window)}
        assert windows == {"rownumber", "lead"}, (dialect, windows)


def test_the_catalogue_shows_the_history_and_the_named_relationships(folder, tmp_path):
    page = tmp_path / "catalogue.md"
    result = CliRunner().invoke(cli, ["docs", str(folder), "--format", "markdown", "-o", str(page)])
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert "`effective_from`, `until effective_until`" in text
    assert "`(buyer) -> tier_history.(member_code) (many-to-one, as plan_at_purchase)`" in text
    assert "`(buyer) -> tier_history.(member_code) (many-to-one, as current_plan, as of latest)`" in text


# --- PostgreSQL -----------------------------------------------------------------------------------------

PG_TABLES = {
    "purchases": {"buyer": "text", "bought_at": "timestamp", "total": "decimal"},
    "tier_history": {"member_code": "text", "tier": "text", "effective_from": "timestamp",
                     "effective_until": "timestamp"},
    "members": {"code": "text"},
}


def test_sqlite_equals_duckdb(folder, tmp_path_factory):
    # SQLite has no time zones: both read the project without one.
    root = write_project(tmp_path_factory.mktemp("utc") / "p", {"specs.yaml": SPECS},
                         config=f"name: utc\nwarehouse: {{adapter: duckdb, data: {folder / 'data'}}}\n")
    url = sqlite_warehouse(tmp_path_factory.mktemp("sqlite"), "scd", PG_TABLES, folder / "data")
    with open_project(root) as duck, open_project(root, warehouse=url) as lite:
        for dim in ("plan_at_purchase__tier", "current_plan__tier"):
            want = by_key(duck.evaluate(["revenue"], grain="month", by=[dim]), dim, "revenue")
            assert by_key(lite.evaluate(["revenue"], grain="month", by=[dim]), dim, "revenue") == pytest.approx(want)


def test_postgres_equals_duckdb(pg_server, folder, rows, tmp_path):
    with pg_server.connect() as connection:
        load_postgres(connection, PG_TABLES, folder / "data")
    write_project(tmp_path, {"specs.yaml": SPECS}, config=f"name: scd_pg\ntimezone: {ZONE}\nwarehouse: '{pg_server.url}'\n")
    with open_project(folder) as duck, open_project(tmp_path) as pg:
        for dim in ("plan_at_purchase__tier", "current_plan__tier"):
            want = by_key(duck.evaluate(["revenue"], grain="month", by=[dim]), dim, "revenue")
            got = by_key(pg.evaluate(["revenue"], grain="month", by=[dim]), dim, "revenue")
            assert got == pytest.approx(want), dim
        history = rows["tier_history"]
        assert by_key(pg.evaluate(["revenue"], grain="month", by=["plan_at_purchase__tier"]),
                      "plan_at_purchase__tier", "revenue") == pytest.approx(
            {k: float(v) for k, v in revenue_by(rows, lambda r: tier_at(history, r["buyer"], r["bought_at"])).items()})
