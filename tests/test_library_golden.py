"""The marketing library against an independent plain-Python reference (tests/reference_library.py).

The reference is written from the textbook readings of docs/library.md and the CSV files only. It
is first checked by hand on a tiny data set, then every one of the 39 KPIs is evaluated alone with
the engine on the example project, by month and channel and by month, and compared key by key;
finally all 39 are evaluated together in one call.
"""

from __future__ import annotations

import csv
import datetime as dt
from fractions import Fraction
from pathlib import Path

import pytest

import reference_library as ref
from kpi_engine.engine import open_project

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "marketing"

KPI_NAMES = [
    "new_contacts", "qualified_leads", "mql_count", "sql_count", "cost_per_lead", "close_rate",
    "lead_to_customer_rate", "lead_to_opportunity_rate", "time_to_conversion_days",
    "traffic_to_lead_rate", "leads_per_customer", "customer_acquisition_cost", "cost_per_sale",
    "customer_lifetime_value", "ltv_to_cac", "mrr", "arr", "nps", "roi", "revenue",
    "revenue_growth_rate", "email_list_size", "email_open_rate", "email_click_through_rate",
    "inbox_placement_rate", "unsubscribe_rate", "list_growth_rate", "list_churn_rate",
    "website_sessions", "organic_sessions", "bounce_rate", "avg_session_duration", "social_shares",
    "social_engagement", "follower_growth_rate", "customer_retention_rate",
    "repeat_customer_revenue", "lead_value", "lead_to_customer_rate_90d",
]

JAN, FEB, MAR = dt.date(2024, 1, 1), dt.date(2024, 2, 1), dt.date(2024, 3, 1)


def test_the_reference_covers_the_39_kpis():
    assert len(KPI_NAMES) == 39 == len(set(KPI_NAMES))
    assert set(ref.KPIS) == set(KPI_NAMES)
    assert all(function.__doc__ for function in ref.KPIS.values())


# --------------------------------------------------------------------------- the reference by hand

TINY = {
    "leads": [
        # lead_id, created_at, channel, is_qualified, mql_at, sql_at, customer_at
        ("1", "2024-01-05 10:00:00", "ppc", "true", "2024-01-20 09:00:00", "2024-02-02 09:00:00",
         "2024-02-10 08:00:00"),
        ("2", "2024-01-31 23:59:59", "ppc", "false", "", "", ""),
        ("3", "2024-02-01 00:00:00", "", "true", "2024-02-03 00:30:00", "", "2024-02-03 01:00:00"),
        ("4", "2024-02-15 12:00:00", "organic", "false", "2024-02-16 12:00:00", "", ""),
    ],
    "opportunities": [
        ("1", "1", "2024-01-25 10:00:00", "ppc"),
        ("2", "1", "2024-02-01 10:00:00", "ppc"),
        ("3", "3", "2024-03-01 10:00:00", ""),
    ],
    "customers": [("10", "2024-02-10", "ppc"), ("11", "2024-02-03", "")],
    "orders": [
        ("1", "10", "2024-02-10 09:00:00", "100.10", "paid"),
        ("2", "10", "2024-03-05 09:00:00", "50.00", "paid"),
        ("3", "11", "2024-02-04 09:00:00", "30.00", "refunded"),
        ("4", "11", "2024-03-01 09:00:00", "20.00", "paid"),
    ],
    "ad_spend": [
        ("2024-01-01", "ppc", "10.50"), ("2024-01-31", "ppc", "9.50"),
        ("2024-02-01", "ppc", "30.00"), ("2024-03-01", "email", "5.00"),
    ],
    "subscriptions": [
        ("2024-02-25", "10", "100.00", "ppc"), ("2024-02-29", "10", "110.00", "ppc"),
        ("2024-02-28", "11", "40.00", ""),
        ("2024-03-31", "10", "110.00", "ppc"), ("2024-03-31", "11", "40.00", ""),
    ],
    "web_sessions": [
        ("1", "2024-01-02 10:00:00", "ppc", "1", "10", "true"),
        ("2", "2024-01-03 10:00:00", "organic", "3", "100", "false"),
        ("3", "2024-01-04 10:00:00", "organic", "1", "5", "true"),
    ],
    "social_followers": [
        ("2024-01-30", "linkedin", "100", "organic"), ("2024-01-31", "linkedin", "110", "organic"),
        ("2024-02-29", "linkedin", "121", "organic"),
    ],
    "email_list": [
        ("2024-01-01", "1000", "10", "2", "email"), ("2024-01-31", "1008", "5", "3", "email"),
    ],
    "email_sends": [
        ("1", "2024-01-10 10:00:00", "true", "true", "false", "false", "false", "email"),
        ("2", "2024-01-11 10:00:00", "false", "true", "true", "false", "true", "email"),
    ],
}
TINY_COLUMNS = {
    "leads": "lead_id created_at channel is_qualified mql_at sql_at customer_at",
    "opportunities": "opportunity_id lead_id created_at channel",
    "customers": "customer_id acquired_at channel",
    "orders": "order_id customer_id ordered_at amount status",
    "ad_spend": "spend_date channel spend",
    "subscriptions": "snapshot_date customer_id mrr channel",
    "web_sessions": "session_id started_at channel pages_viewed duration_seconds is_bounce",
    "social_followers": "snapshot_date network followers channel",
    "email_list": "snapshot_date subscribers new_subscribers unsubscribes channel",
    "email_sends": "send_id sent_at inbox opened clicked unsubscribed bounced channel",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    for table, rows in TINY.items():
        with open(folder / f"{table}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(TINY_COLUMNS[table].split())
            writer.writerows(rows)
    return ref.load(folder)


def f(value) -> float:
    return float(Fraction(value))


HAND = [
    # (kpi, by_channel, expected values on all keys)
    ("new_contacts", True, {(JAN, "ppc"): 2, (FEB, None): 1, (FEB, "organic"): 1}),
    ("new_contacts", False, {(JAN,): 2, (FEB,): 2}),
    # leads are the qualified contacts: 2 and 4 are contacts only, so (FEB, organic) has no lead
    ("qualified_leads", True, {(JAN, "ppc"): 1, (FEB, None): 1}),
    ("mql_count", True, {(JAN, "ppc"): 1, (FEB, None): 1, (FEB, "organic"): 1}),
    ("sql_count", False, {(FEB,): 1}),
    ("cost_per_lead", True, {(JAN, "ppc"): 20, (FEB, "ppc"): None, (MAR, "email"): None, (FEB, None): 0}),
    ("cost_per_lead", False, {(JAN,): 20, (FEB,): 30, (MAR,): None}),
    ("close_rate", True, {(JAN, "ppc"): 100, (FEB, None): 100}),
    # the opportunities are a lookup over all time: (FEB, ppc) and (MAR, None) have only
    # opportunities and are no keys of the KPI
    ("lead_to_opportunity_rate", True, {(JAN, "ppc"): 100, (FEB, None): 100}),
    ("lead_to_opportunity_rate", False, {(JAN,): 100, (FEB,): 100}),
    ("time_to_conversion_days", True, {(FEB, "ppc"): 36, (FEB, None): 2}),
    ("time_to_conversion_days", False, {(FEB,): 19}),
    # lead 1 is won after 35 days 22 hours, lead 3 after 2 days 1 hour: both within 90 days
    ("lead_to_customer_rate_90d", True, {(JAN, "ppc"): 100, (FEB, None): 100}),
    ("lead_to_customer_rate_90d", False, {(JAN,): 100, (FEB,): 100}),
    ("lead_to_customer_rate", True, {(JAN, "ppc"): 0, (FEB, "ppc"): None, (FEB, None): 100}),
    ("lead_to_customer_rate", False, {(JAN,): 0, (FEB,): 200}),
    ("leads_per_customer", False, {(JAN,): None, (FEB,): 0.5}),
    ("customer_acquisition_cost", True, {(JAN, "ppc"): None, (FEB, "ppc"): 30, (FEB, None): 0,
                                         (MAR, "email"): None}),
    ("cost_per_sale", True, {(JAN, "ppc"): None, (FEB, "ppc"): None, (FEB, None): 0, (MAR, "email"): None}),
    ("cost_per_sale", False, {(JAN,): None, (FEB,): 15, (MAR,): None}),
    ("revenue", True, {(FEB, "ppc"): f("100.10"), (MAR, "ppc"): 50, (FEB, None): 0,
                       (MAR, None): 20}),
    ("revenue_growth_rate", True, {(FEB, "ppc"): None, (MAR, "ppc"): f(Fraction(100) * (50 - Fraction("100.10"))
                                                     / Fraction("100.10")), (FEB, None): None, (MAR, None): None}),
    ("revenue_growth_rate", False, {(FEB,): None, (MAR,): f(Fraction(100) * (70 - Fraction("100.10"))
                                                           / Fraction("100.10"))}),
    ("customer_lifetime_value", True, {(FEB, "ppc"): f("100.10"), (MAR, "ppc"): f("150.10"),
                                       (FEB, None): 0, (MAR, None): 20}),
    ("customer_lifetime_value", False, {(FEB,): f("50.05"), (MAR,): f("85.05")}),
    ("ltv_to_cac", True, {(JAN, "ppc"): None, (FEB, "ppc"): f(Fraction("100.10") / 30),
                          (FEB, None): None, (MAR, "ppc"): None, (MAR, None): None,
                          (MAR, "email"): None}),
    ("ltv_to_cac", False, {(JAN,): None, (FEB,): f(Fraction("50.05") / 15), (MAR,): None}),
    ("roi", False, {(JAN,): -100, (FEB,): f(Fraction(100) * (Fraction("100.10") - 30) / 30),
                    (MAR,): f(100 * Fraction(70 - 5, 5))}),
    ("repeat_customer_revenue", True, {(FEB, "ppc"): f("100.10"), (MAR, "ppc"): 50,
                                       (FEB, None): 0, (MAR, None): 0}),
    ("lead_value", False, {(JAN,): 0, (FEB,): f("100.10"), (MAR,): None}),
    ("mrr", True, {(FEB, "ppc"): 110, (FEB, None): 0, (MAR, "ppc"): 110, (MAR, None): 40}),
    ("mrr", False, {(FEB,): 110, (MAR,): 150}),
    ("arr", False, {(FEB,): 1320, (MAR,): 1800}),
    ("customer_retention_rate", True, {(FEB, "ppc"): None, (MAR, "ppc"): 100, (FEB, None): None,
                                       (MAR, None): None}),
    ("customer_retention_rate", False, {(FEB,): None, (MAR,): 200}),
    ("bounce_rate", True, {(JAN, "ppc"): 100, (JAN, "organic"): 50}),
    ("bounce_rate", False, {(JAN,): f(Fraction(200, 3))}),
    ("organic_sessions", True, {(JAN, "ppc"): 0, (JAN, "organic"): 2}),
    ("avg_session_duration", False, {(JAN,): f(Fraction(115, 3))}),
    ("traffic_to_lead_rate", False, {(JAN,): f(Fraction(100, 3)), (FEB,): None}),
    ("follower_growth_rate", True, {(JAN, "organic"): None, (FEB, "organic"): 10}),
    ("email_list_size", False, {(JAN,): 1008}),
    ("unsubscribe_rate", False, {(JAN,): f(Fraction(500, 1008))}),
    ("list_growth_rate", False, {(JAN,): f(Fraction(1000, 1008))}),
    ("list_churn_rate", False, {(JAN,): f(Fraction(600, 1008))}),
    ("email_open_rate", False, {(JAN,): 100}),
    ("email_click_through_rate", False, {(JAN,): 50}),
    ("inbox_placement_rate", False, {(JAN,): 50}),
]


@pytest.mark.parametrize("kpi, by_channel, expected", HAND,
                         ids=[f"{kpi}-{'channel' if by else 'month'}" for kpi, by, _ in HAND])
def test_reference_by_hand(tiny, kpi, by_channel, expected):
    got = ref.compute(tiny, kpi, by_channel)
    assert set(got) == set(expected)
    for key, value in expected.items():
        if value is None:
            assert got[key] is None, key
        else:
            assert got[key] == pytest.approx(value, rel=1e-12), key


# --------------------------------------------------------------------------- the engine

@pytest.fixture(scope="module")
def data():
    return ref.load(EXAMPLE / "data")


@pytest.fixture(scope="module")
def project():
    with open_project(EXAMPLE) as kpi_project:
        yield kpi_project


def _as_date(value) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


def engine_values(project, names: list[str], by_channel: bool) -> dict[tuple, dict]:
    """``{key: row}`` of an evaluation by month (and channel); keys are unique."""
    rows = project.evaluate(names, by=["channel"] if by_channel else [], grain="month").to_dicts()
    result: dict[tuple, dict] = {}
    for row in rows:
        key = (_as_date(row["period"]),) + ((row["channel"],) if by_channel else ())
        assert key not in result, f"duplicate key {key}"
        result[key] = row
    return result


def mismatches(name: str, expected: dict, engine: dict[tuple, dict], keys) -> list[str]:
    problems = []
    for key in sorted(keys, key=repr):
        want, got = expected.get(key), engine[key][name]
        if want is None or got is None:
            if want is not got:
                problems.append(f"{name} {key}: engine {got!r}, reference {want!r}")
        elif got != pytest.approx(want, rel=1e-9):
            problems.append(f"{name} {key}: engine {got!r}, reference {want!r}")
    return problems


@pytest.mark.parametrize("by_channel", [True, False], ids=["month-channel", "month"])
@pytest.mark.parametrize("name", KPI_NAMES)
def test_kpi_alone_matches_the_reference(project, data, name, by_channel):
    expected = ref.compute(data, name, by_channel)
    engine = engine_values(project, [name], by_channel)
    assert expected, name
    missing, extra = set(expected) - set(engine), set(engine) - set(expected)
    assert not missing and not extra, (
        f"{name}: keys only in the reference {sorted(missing, key=repr)[:5]} "
        f"({len(missing)}), only in the engine {sorted(extra, key=repr)[:5]} ({len(extra)})")
    problems = mismatches(name, expected, engine, expected)
    assert not problems, f"{len(problems)} mismatches, e.g.\n" + "\n".join(problems[:10])


def test_all_39_together_match_the_reference(project, data):
    """Asked together, every KPI has the values and the rows it has alone: on the keys of the
    other KPIs (where its own sources have no row) its cell is empty."""
    engine = engine_values(project, KPI_NAMES, by_channel=True)
    problems = []
    for name in KPI_NAMES:
        expected = ref.compute(data, name, by_channel=True)
        missing, extra = set(expected) - set(engine), set(engine) - set(expected)
        problems += [f"{name} {key}: missing from the engine" for key in missing]
        problems += mismatches(name, expected, engine, set(expected) & set(engine))
        problems += [f"{name} {key}: engine {engine[key][name]!r} on a key without rows of its sources "
                     "(expected an empty cell)" for key in extra if engine[key][name] is not None]
    assert not problems, f"{len(problems)} mismatches, e.g.\n" + "\n".join(problems[:20])


def test_reference_on_keys_of_other_kpis(tiny):
    apr = dt.date(2024, 4, 1)
    assert ref.compute(tiny, "customer_lifetime_value", True, keys=[(JAN, "ppc"), (apr, "ppc"),
                                                                    (apr, "email")]) == {
        (JAN, "ppc"): None, (apr, "ppc"): pytest.approx(150.10), (apr, "email"): None}
    assert ref.compute(tiny, "revenue_growth_rate", False, keys=[(JAN,), (apr,)]) == {
        (JAN,): None, (apr,): -100}
    assert ref.compute(tiny, "new_contacts", True, keys=[(MAR, "ppc")]) == {(MAR, "ppc"): 0}


# --------------------------------------------------------------------------- edited example data

SNAPSHOT_KPIS = ["mrr", "arr", "customer_retention_rate"]


@pytest.fixture(scope="module")
def edited(tmp_path_factory):
    """The example project with the 'email' subscriptions taken off the last snapshot day of
    June 2024 (the channel has rows earlier in the month, none at its end)."""
    folder = tmp_path_factory.mktemp("edited")
    for path in EXAMPLE.glob("*.yaml"):
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "data").mkdir()
    for path in (EXAMPLE / "data").glob("*.csv"):
        (folder / "data" / path.name).write_bytes(path.read_bytes())
    table = folder / "data" / "subscriptions.csv"
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    last = max(row["snapshot_date"] for row in rows if row["snapshot_date"].startswith("2024-06"))
    kept = [row for row in rows if not (row["snapshot_date"] == last and row["channel"] == "email")]
    assert len(kept) < len(rows)
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    with open_project(folder) as kpi_project:
        yield ref.load(folder / "data"), kpi_project


@pytest.mark.parametrize("name", SNAPSHOT_KPIS)
def test_snapshot_of_a_channel_absent_on_the_last_day(edited, name):
    data, project = edited
    expected = ref.compute(data, name, by_channel=True)
    engine = engine_values(project, [name], by_channel=True)
    key = (dt.date(2024, 6, 1), "email")
    assert key in expected and (expected[key] == 0 or name == "customer_retention_rate")
    assert set(engine) == set(expected), name
    problems = mismatches(name, expected, engine, expected)
    assert not problems, "\n".join(problems[:10])
