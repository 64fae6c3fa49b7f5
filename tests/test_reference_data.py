"""The example warehouse and the plain-Python reference, checked without the engine."""

from __future__ import annotations

import csv
import datetime as dt
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

import reference

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "examples" / "marketing" / "generate.py"
DATA = ROOT / "examples" / "marketing" / "data"

COLUMNS = {
    "ad_spend": "spend_date channel campaign spend",
    "web_sessions": "session_id started_at channel landing_page pages_viewed duration_seconds "
                    "is_bounce",
    "leads": "lead_id created_at channel campaign industry company_size is_qualified mql_at sql_at "
             "opportunity_at customer_at customer_id",
    "opportunities": "opportunity_id lead_id created_at channel amount stage closed_at",
    "customers": "customer_id lead_id acquired_at channel industry plan churned_at",
    "orders": "order_id customer_id ordered_at amount status product",
    "subscriptions": "snapshot_date customer_id plan mrr channel",
    "email_sends": "send_id sent_at campaign contact_id delivered inbox opened clicked "
                   "unsubscribed bounced channel",
    "email_list": "snapshot_date subscribers new_subscribers unsubscribes channel",
    "social_posts": "post_id posted_at network channel likes comments shares saves clicks",
    "social_followers": "snapshot_date network followers channel",
    "nps_responses": "response_id responded_at customer_id channel score",
}
CHANNELS = {"paid_social", "ppc", "email", "organic", "content", "referral"}
STAGES = ("created_at", "mql_at", "sql_at", "opportunity_at", "customer_at")
TIMESTAMP = re.compile(r"^20(24|25)-\d\d-\d\d \d\d:\d\d:\d\d$")
MONEY = re.compile(r"^\d+\.\d\d$")


@pytest.fixture(scope="module")
def data():
    return reference.load(DATA)


def month(value: str) -> dt.date:
    return dt.date(int(value[:4]), int(value[5:7]), 1)


def generate(out: Path, *args: str) -> None:
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(out), *args], check=True)


# --------------------------------------------------------------------------- the generator

def test_generator_is_deterministic_and_matches_the_shipped_files(tmp_path):
    generate(tmp_path / "a")
    generate(tmp_path / "b")
    names = sorted(path.name for path in DATA.glob("*.csv"))
    assert names == sorted(f"{table}.csv" for table in COLUMNS)
    for name in names:
        shipped = (DATA / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() == shipped, name
        assert (tmp_path / "b" / name).read_bytes() == shipped, name


def test_scale_multiplies_rows(tmp_path, data):
    generate(tmp_path, "--scale", "2")
    with open(tmp_path / "leads.csv", newline="") as handle:
        leads = sum(1 for _ in handle) - 1
    assert 1.8 < leads / len(data["leads"]) < 2.2


def test_headers_and_formats(data):
    total = 0
    for table, columns in COLUMNS.items():
        with open(DATA / f"{table}.csv", newline="") as handle:
            assert next(csv.reader(handle)) == columns.split(), table
        total += (DATA / f"{table}.csv").stat().st_size
    assert total < 3_200_000
    for table, column in [("ad_spend", "spend"), ("opportunities", "amount"),
                          ("orders", "amount"), ("subscriptions", "mrr")]:
        assert all(MONEY.match(row[column]) for row in data[table]), table
    for table, column in [("web_sessions", "started_at"), ("leads", "created_at"),
                          ("orders", "ordered_at"), ("email_sends", "sent_at"),
                          ("nps_responses", "responded_at"), ("social_posts", "posted_at")]:
        assert all(TIMESTAMP.match(row[column]) for row in data[table]), table
    for table, column in [("web_sessions", "is_bounce"), ("leads", "is_qualified"),
                          ("email_sends", "opened")]:
        assert {row[column] for row in data[table]} == {"true", "false"}, table
    assert 6000 <= len(data["leads"]) <= 8000
    assert len(data["web_sessions"]) <= 40_000


# --------------------------------------------------------------------------- invariants

def test_lead_funnel_order_and_narrowing(data):
    reached = Counter()
    for lead in data["leads"]:
        times = [lead[stage] for stage in STAGES]
        present = [t for t in times if t is not None]
        assert times[:len(present)] == present, lead  # no stage without the ones before it
        assert present == sorted(present), lead       # each stage at or after the previous one
        assert all(t < "2026-01-01" for t in present)
        assert (lead["customer_id"] is None) == (lead["customer_at"] is None)
        assert (lead["campaign"] is None) or lead["channel"] not in ("organic", "referral")
        reached.update(stage for stage, t in zip(STAGES, times) if t is not None)
    counts = [reached[stage] for stage in STAGES]
    assert counts == sorted(counts, reverse=True) and counts[-1] > 0
    later = sum(month(lead["customer_at"]) > month(lead["created_at"])
                for lead in data["leads"] if lead["customer_at"])
    assert later > 0


def test_content_converts_faster_than_ppc(data):
    days = defaultdict(list)
    for lead in data["leads"]:
        if lead["customer_at"]:
            delta = (dt.datetime.fromisoformat(lead["customer_at"])
                     - dt.datetime.fromisoformat(lead["created_at"]))
            days[lead["channel"]].append(delta.total_seconds() / 86400)
    mean = {channel: sum(values) / len(values) for channel, values in days.items()}
    assert mean["ppc"] - mean["content"] > 20


def test_opportunities_customers_and_subscriptions_follow_leads(data):
    leads = {lead["lead_id"]: lead for lead in data["leads"]}
    per_lead = defaultdict(list)
    for opportunity in data["opportunities"]:
        per_lead[opportunity["lead_id"]].append(opportunity)
        lead = leads[opportunity["lead_id"]]
        assert opportunity["channel"] == lead["channel"]
        assert (opportunity["closed_at"] is None) == (opportunity["stage"] == "open")
    assert set(per_lead) == {i for i, lead in leads.items() if lead["opportunity_at"]}
    for lead_id, opportunities in per_lead.items():
        assert opportunities[0]["created_at"] == leads[lead_id]["opportunity_at"]
    assert Counter(len(o) for o in per_lead.values()).keys() == {1, 2}

    customers = {c["customer_id"]: c for c in data["customers"]}
    assert set(customers) == {lead["customer_id"] for lead in leads.values() if lead["customer_id"]}
    for customer in customers.values():
        lead = leads[customer["lead_id"]]
        assert lead["customer_id"] == customer["customer_id"]
        assert customer["acquired_at"] == lead["customer_at"][:10]
        assert customer["channel"] == lead["channel"]
        assert customer["churned_at"] is None or customer["churned_at"] > customer["acquired_at"]
    for row in data["subscriptions"]:
        customer = customers[row["customer_id"]]
        day = dt.date.fromisoformat(row["snapshot_date"])
        assert day.weekday() == 6 or (day + dt.timedelta(days=1)).day == 1
        assert customer["acquired_at"] <= row["snapshot_date"]
        assert customer["churned_at"] is None or row["snapshot_date"] < customer["churned_at"]
    orders = Counter(order["customer_id"] for order in data["orders"])
    assert set(orders) == set(customers)
    assert 0.3 < sum(n > 1 for n in orders.values()) / len(orders) < 0.5


def test_sessions_and_email_flags_are_consistent(data):
    for session in data["web_sessions"]:
        assert int(session["pages_viewed"]) >= 1
        assert session["is_bounce"] == ("true" if session["pages_viewed"] == "1" else "false")
    for send in data["email_sends"]:
        flags = {key: send[key] == "true" for key in
                 ("delivered", "inbox", "opened", "clicked", "unsubscribed", "bounced")}
        assert flags["bounced"] == (not flags["delivered"])
        assert flags["delivered"] or not (flags["inbox"] or flags["opened"])
        assert flags["opened"] or not flags["clicked"]
        assert send["channel"] == "email"


def test_channels_spend_and_the_required_gaps(data):
    spend_channels = {row["channel"] for row in data["ad_spend"]}
    assert spend_channels == CHANNELS - {"organic", "referral"}  # free channels: no rows at all
    content_months = {month(row["spend_date"]) for row in data["ad_spend"]
                      if row["channel"] == "content"}
    assert dt.date(2024, 8, 1) not in content_months and len(content_months) == 23

    cpl = reference.cost_per_lead(data)
    spend = reference.total_spend(data)
    assert any(value is None and spend.get(key, 0) > 0 for key, value in cpl.items())
    assert cpl[(dt.date(2024, 5, 1), "email")] is None          # spend, no leads
    assert cpl[(dt.date(2024, 3, 1), "organic")] == 0.0         # leads, no spend
    assert cpl[(dt.date(2024, 8, 1), "content")] == 0.0

    lead_channels = Counter(lead["channel"] for lead in data["leads"])
    assert set(lead_channels) == CHANNELS | {None}
    assert 0.001 < lead_channels[None] / len(data["leads"]) < 0.015
    no_industry = sum(lead["industry"] is None for lead in data["leads"])
    assert 0 < no_industry < 0.03 * len(data["leads"])


def test_months_and_channels_without_nps_responses(data):
    scores = reference.nps(data)
    leads = reference.lead_count(data)
    by_month = reference.nps(data, by_channel=False)
    assert (dt.date(2024, 8, 1),) not in by_month                # the survey was paused
    gaps = [key for key in leads
            if key not in scores and (key[0],) in by_month and key[1] is not None]
    assert gaps


# --------------------------------------------------------------------------- the reference

def test_reference_totals_agree_across_groupings(data):
    for function in (reference.lead_count, reference.total_spend):
        detailed = function(data)
        for by_month, by_channel, project in [(True, False, lambda k: k[:1]),
                                              (False, True, lambda k: k[1:]),
                                              (False, False, lambda k: ())]:
            summed = defaultdict(int)
            for key, value in detailed.items():
                summed[project(key)] += value
            coarse = function(data, by_channel=by_channel, by_month=by_month)
            assert coarse.keys() == summed.keys()
            assert all(coarse[key] == pytest.approx(summed[key]) for key in coarse)
    total_cpl = reference.cost_per_lead(data, by_channel=False, by_month=False)[()]
    total_spend = reference.total_spend(data, by_channel=False, by_month=False)[()]
    qualified = [row for row in data["leads"] if row["is_qualified"] == "true"]
    assert 0 < len(qualified) < len(data["leads"])  # contacts that are not leads exist
    assert total_cpl == pytest.approx(total_spend / len(qualified))


def write_csv(folder: Path, table: str, rows: list[dict]) -> None:
    folder.mkdir(exist_ok=True)
    with open(folder / f"{table}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def tiny(tmp_path):
    folder = tmp_path / "tiny"
    write_csv(folder, "ad_spend", [
        {"spend_date": "2025-03-01", "channel": "ppc", "campaign": "a", "spend": "600.00"},
        {"spend_date": "2025-03-31", "channel": "ppc", "campaign": "b", "spend": "400.00"},
        {"spend_date": "2025-04-01", "channel": "ppc", "campaign": "a", "spend": "99.99"},
        {"spend_date": "2025-03-15", "channel": "email", "campaign": "n", "spend": "10.00"},
    ])
    leads = []
    for i in range(100):
        channel = "ppc" if i < 20 else "organic" if i < 99 else ""
        leads.append({"lead_id": i + 1, "created_at": f"2025-03-{1 + i % 31:02d} 23:59:59",
                      "channel": channel, "is_qualified": "true",
                      "customer_at": "2025-05-02 10:00:00" if i % 20 < 3 else ""})
    # A contact who is not a lead: counted by no lead KPI of the reference.
    leads.append({"lead_id": 101, "created_at": "2025-03-05 10:00:00", "channel": "ppc", "is_qualified": "false",
                  "customer_at": "2025-05-02 10:00:00"})
    write_csv(folder, "leads", leads)
    write_csv(folder, "nps_responses", [
        {"response_id": i + 1, "responded_at": "2025-03-10 12:00:00", "channel": "ppc",
         "score": score} for i, score in enumerate([10, 9, 8, 7, 6, 0])
    ] + [{"response_id": 7, "responded_at": "2025-04-01 00:00:00", "channel": "", "score": 3}])
    return reference.load(folder)


def test_hand_computed_values(tiny):
    march, april = dt.date(2025, 3, 1), dt.date(2025, 4, 1)
    cpl = reference.cost_per_lead(tiny)
    assert cpl[(march, "ppc")] == 50.0                # 1000.00 spend / 20 leads
    assert cpl[(march, "organic")] == 0.0             # free channel: no spend rows
    assert cpl[(march, None)] == 0.0                  # the NULL-channel group
    assert cpl[(march, "email")] is None              # spend, no leads
    assert cpl[(april, "ppc")] is None
    assert set(cpl) == {(march, "ppc"), (march, "organic"), (march, None), (march, "email"),
                        (april, "ppc")}
    assert reference.cost_per_lead(tiny, by_channel=False) == {(march,): 10.1, (april,): None}
    assert reference.cost_per_lead(tiny, by_month=False)[("ppc",)] == pytest.approx(54.9995)

    assert reference.close_rate(tiny, by_channel=False, by_month=False) == {(): 15.0}
    assert reference.close_rate(tiny)[(march, "ppc")] == 15.0   # 3 of 20

    scores = reference.nps(tiny)
    assert scores[(march, "ppc")] == 0.0                        # (2 - 2) / 6
    assert scores[(april, None)] == -100.0
    assert reference.nps(tiny, by_month=False, by_channel=False) == {(): pytest.approx(-100 / 7)}


def test_half_open_range_on_each_tables_own_time(tiny):
    march = dt.date(2025, 3, 1)
    in_march = {"start": "2025-03-01", "end": dt.date(2025, 4, 1)}
    assert reference.total_spend(tiny, by_month=False, **in_march) == \
        {("ppc",): 1000.0, ("email",): 10.0}
    assert reference.nps(tiny, by_channel=False, **in_march) == {(march,): 0.0}
    assert reference.lead_count(tiny, by_month=False, by_channel=False,
                                start="2025-03-31", end="2025-04-01") == {(): 3}
    empty = {"start": "2026-01-01", "end": "2026-02-01"}
    assert reference.cost_per_lead(tiny, by_month=False, by_channel=False, **empty) == {(): None}
    assert reference.cost_per_lead(tiny, **empty) == {}
