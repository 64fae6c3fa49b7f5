"""History-aware joins and richer relationships (issue 16, items 3 and 4) on Spark (local[2],
tests/spark_fixture.py) give what DuckDB gives on the same CSV files and what the plain-Python
references of tests/test_scd.py and tests/test_relationships.py give over the generated rows:
facts exactly at a version's start and end, facts with no version at their time (null), overlapping
versions and versions starting together, the latest version, a history two hops away, DATE facts
against TIMESTAMP validity and the reverse, all with a project time zone; composite keys, paths of
three hops and a dimension named by its path, as dimensions and in a filter.

Each project is opened once per module on both warehouses, and requests put several of these
shapes in one query, since every Spark query costs seconds on two cores.
"""

from __future__ import annotations

pytest_plugins = ["spark_fixture"]

import json  # noqa: E402
from collections import defaultdict  # noqa: E402
from decimal import Decimal  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from sqlglot import exp  # noqa: E402

import test_relationships as rel  # noqa: E402
import test_scd as scd  # noqa: E402
from conftest import write_project  # noqa: E402
from kpi_engine.engine import KpiProject  # noqa: E402
from kpi_engine.spec import load_project  # noqa: E402
from test_spark import make_registry  # noqa: E402


@pytest.fixture(scope="module")
def open_pair(spark, tmp_path_factory):
    """Factory: (Spark project, DuckDB project) of the same specs over one data folder."""
    registry = make_registry()
    opened: list[KpiProject] = []

    def make(specs: str, data: Path, timezone: str | None = None) -> tuple[KpiProject, KpiProject]:
        pair = []
        for adapter in ("spark", "duckdb"):
            root = tmp_path_factory.mktemp(adapter)
            zone = f"timezone: {timezone}\n" if timezone else ""
            warehouse = json.dumps({"adapter": adapter, "data": str(data)})
            (root / "kpi_engine.yaml").write_text(f"name: history_{adapter}\n{zone}warehouse: {warehouse}\n")
            (root / "specs.yaml").write_text(specs)
            pair.append(KpiProject(load_project(root), registry=registry))
        opened.extend(pair)
        return pair[0], pair[1]

    yield make
    for project in opened:
        project.close()


def table(result, kpi: str, dims: list[str], period: bool = True) -> dict:
    keys = (["period"] if period else []) + dims
    return {tuple(r[k] for k in keys): r[kpi] for r in result.to_dicts()}


def same(on_spark: dict, on_duckdb: dict, want: dict) -> None:
    """Spark equals DuckDB, and both equal the reference (floating-point tolerance for sums of money)."""
    want = {key: float(value) if isinstance(value, Decimal) else value for key, value in want.items()}
    assert on_duckdb == pytest.approx(want)
    assert on_spark == pytest.approx(on_duckdb)


# --- history-aware joins ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scd_rows():
    return scd.generate()


@pytest.fixture(scope="module")
def scd_data(scd_rows, tmp_path_factory):
    return write_project(tmp_path_factory.mktemp("scd") / "scd", {}, scd_rows) / "data"


@pytest.fixture(scope="module")
def scd_pair(open_pair, scd_data):
    return open_pair(scd.SPECS, scd_data, scd.ZONE)


def test_the_tier_held_at_each_purchase_and_the_latest_tier_in_one_query(scd_pair, scd_rows):
    """Both views of one history joined together, by month in New York time: every generated
    awkward case (overlaps, gaps, two versions starting together, purchases exactly at a start,
    at an end and a second before a start, members without history) takes its version."""
    history = scd_rows["tier_history"]
    revenue, buyers = defaultdict(Decimal), defaultdict(set)
    for row in scd_rows["purchases"]:
        key = (scd.local_month(row["bought_at"], scd.ZONE), scd.tier_at(history, row["buyer"], row["bought_at"]),
               scd.latest_tier(history, row["buyer"]))
        revenue[key] += row["total"]
        buyers[key].add(row["buyer"])
    assert None in {key[1] for key in revenue} and None in {key[2] for key in revenue}
    dims = ["plan_at_purchase__tier", "current_plan__tier"]
    on_spark, on_duckdb = (project.evaluate(["revenue", "buyers"], grain="month", by=dims) for project in scd_pair)
    same(table(on_spark, "revenue", dims), table(on_duckdb, "revenue", dims), revenue)
    same(table(on_spark, "buyers", dims), table(on_duckdb, "buyers", dims), {k: len(v) for k, v in buyers.items()})


def test_a_filter_on_the_tier_held_the_tiers_values_and_a_source_without_time(scd_pair, scd_rows):
    history = scd_rows["tier_history"]
    held = {(scd.local_month(r["bought_at"], scd.ZONE), scd.tier_at(history, r["buyer"], r["bought_at"]))
            for r in scd_rows["purchases"]}
    on_spark, on_duckdb = ({(r["period"], r["plan_at_purchase__tier"]) for r in
                            p.values(["plan_at_purchase__tier"], grain="month").to_dicts()} for p in scd_pair)
    assert on_spark == on_duckdb == held
    pro = defaultdict(Decimal)
    for row in scd_rows["purchases"]:
        if scd.tier_at(history, row["buyer"], row["bought_at"]) == "pro":
            pro[(scd.local_month(row["bought_at"], scd.ZONE),)] += row["total"]
    members = defaultdict(int)
    for member in scd_rows["members"]:
        members[(scd.latest_tier(history, member["code"]),)] += 1
    filtered = [table(p.evaluate(["revenue"], grain="month", where="plan_at_purchase__tier = 'pro'"), "revenue", [])
                for p in scd_pair]
    same(*filtered, pro)
    latest = [table(p.evaluate(["members"], by=["now__tier"]), "members", ["now__tier"], period=False)
              for p in scd_pair]
    same(*latest, members)


def test_a_history_two_hops_away(open_pair, scd_data, scd_rows):
    history = scd_rows["tier_history"]
    want = {(month, tier): total for (month, tier), total in
            scd.revenue_by(scd_rows, lambda r: scd.tier_at(history, r["buyer"], r["bought_at"])).items()}
    on_spark, on_duckdb = (table(p.evaluate(["revenue"], grain="month", by=["tier"]), "revenue", ["tier"])
                           for p in open_pair(scd.TWO_HOP_SPECS, scd_data, scd.ZONE))
    same(on_spark, on_duckdb, want)


def test_the_edges_by_hand(open_pair, tmp_path_factory):
    """Exactly at valid_from (included) and at valid_to (the next version, or none), overlapping
    versions, two starting together, a buyer without history; the tiers written by hand in
    test_scd.EDGE_PURCHASES, the latest tiers from the reference."""
    data = tmp_path_factory.mktemp("edges") / "data"
    scd.write_edge_data(data)
    history = scd.edge_history()
    at_purchase, latest = defaultdict(int), defaultdict(int)
    for buyer, _, total, tier in scd.EDGE_PURCHASES:
        at_purchase[(tier,)] += total
        latest[(scd.latest_tier(history, buyer),)] += total
    pair = open_pair(scd.SPECS, data)
    for dim, want in (("plan_at_purchase__tier", at_purchase), ("current_plan__tier", latest)):
        same(*(table(p.evaluate(["revenue"], by=[dim]), "revenue", [dim], period=False) for p in pair), want)


def test_dates_against_timestamps_in_a_project_time_zone(open_pair, tmp_path_factory):
    """DATE facts against TIMESTAMP validity and TIMESTAMP facts against DATE validity: a date is
    its midnight on both warehouses, whatever the project's time zone (validity is compared as
    stored)."""
    data = write_project(tmp_path_factory.mktemp("dates") / "dates", {}, scd.DATE_TABLES) / "data"
    on_spark, on_duckdb = open_pair(scd.DATE_SPECS, data, scd.ZONE)
    assert on_spark.connection().columns(exp.to_table("day_history"))["since"] == "date"
    assert on_spark.connection().columns(exp.to_table("stamp_history"))["since"] == "timestamp"
    assert scd.date_counts(on_duckdb) == (scd.VISITS_BY_LEVEL, scd.CALLS_BY_GRADE)
    assert scd.date_counts(on_spark) == (scd.VISITS_BY_LEVEL, scd.CALLS_BY_GRADE)


# --- richer relationships -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rel_rows():
    return rel.generate()


@pytest.fixture(scope="module")
def rel_pair(open_pair, rel_rows, tmp_path_factory):
    data = write_project(tmp_path_factory.mktemp("relationships") / "rel", {}, rel_rows) / "data"
    return open_pair(rel.SPECS, data)


def test_a_composite_key_and_a_region_three_hops_away_by_its_path(rel_pair, rel_rows):
    lookups = rel.Lookups(rel_rows)
    dims = ["client__accounts__regions__region", "mood", "priority"]
    want = rel.minutes_by(rel_rows, lookups.client_region, lookups.mood, lambda t: t["priority"])
    assert None in {key[2] for key in want} and {"calm", "angry"} <= {key[2] for key in want}
    same(*(rel.engine(p, dims) for p in rel_pair), want)


def test_two_paths_to_one_dimension_and_a_filter_through_a_path(rel_pair, rel_rows):
    lookups = rel.Lookups(rel_rows)
    dims = ["shops__regions__region", "account_tier"]
    same(*(rel.engine(p, dims) for p in rel_pair), rel.minutes_by(rel_rows, lookups.shop_region, lookups.tier))
    north = {key[:1]: value for key, value in rel.minutes_by(rel_rows, lookups.client_region).items()
             if key[1] == "north"}
    same(*(rel.engine(p, [], where="client__accounts__regions__region = 'north'") for p in rel_pair), north)
