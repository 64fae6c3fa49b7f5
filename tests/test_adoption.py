"""The marketing library on two warehouses whose layout it has never seen, mapped with source
overrides only (tests/adoption/*/sources.yaml): every KPI the mapping makes available equals a
plain-Python reference computed from the raw rows of that warehouse.

The raw rows are generated here (seeded), written as the warehouse holds them (CSV files with US
dates and 'n/a'; a DuckDB file with schemas, micros and milliseconds), and read back in plain
Python: each layout is turned into the library's standard rows by hand-written Python (``standard_*``,
no engine, no SQL), and the standard rows go through the independent reference of the library's
readings (tests/reference_library.py).
"""

from __future__ import annotations

import csv
import datetime as dt
import random
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

import reference_library as ref
from kpi_engine.cli import cli
from kpi_engine.engine import open_project

ADOPTION = Path(__file__).resolve().parent / "adoption"
MONTHS = [dt.date(2025, 1, 1), dt.date(2025, 2, 1), dt.date(2025, 3, 1)]
CHANNELS = ["paid_search", "paid_social", "email", "organic", "referral", "content", None]


def moment(rng: random.Random, month: dt.date | None = None) -> dt.datetime:
    """A minute in one of the three months (or in ``month``)."""
    month = month or rng.choice(MONTHS)
    return dt.datetime.combine(month, dt.time()) + dt.timedelta(days=rng.randrange(28), hours=rng.randrange(24),
                                                                 minutes=rng.randrange(60))


def iso(value: dt.date | dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, dt.datetime) else value.isoformat()


def us(value: dt.datetime | None, rng: random.Random, with_time: bool = True) -> str:
    """A US-formatted date as the CRM exports it; a missing one is empty or 'n/a'."""
    if value is None:
        return rng.choice(["", "n/a"])
    return value.strftime("%m/%d/%Y %H:%M" if with_time else "%m/%d/%Y")


def write_csv(folder: Path, name: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def copy_project(name: str, tmp_path: Path) -> Path:
    root = tmp_path / name
    shutil.copytree(ADOPTION / name, root)
    return root


# --------------------------------------------------------------------------- warehouse A: CSV exports

def crm_export_rows(seed: int = 7) -> dict[str, list[dict]]:
    """Raw rows of the CSV exports, as written in the files (text)."""
    rng = random.Random(seed)
    contacts, deals = [], []
    for i in range(1, 181):
        created = moment(rng)
        lead = rng.random() < 0.55
        mql = created + dt.timedelta(days=rng.randrange(1, 20)) if rng.random() < (0.7 if lead else 0.15) else None
        sql = mql + dt.timedelta(days=rng.randrange(1, 15)) if mql and rng.random() < 0.6 else None
        # Some contacts that never qualified as leads buy too.
        won = created + dt.timedelta(days=rng.randrange(3, 70)) if rng.random() < (0.3 if lead else 0.08) else None
        contacts.append({
            "hs_object_id": i, "createdate": us(created, rng), "source_channel": rng.choice(CHANNELS) or "",
            "utm_campaign": rng.choice(["spring", "brand", "n/a", ""]), "industry": rng.choice(["retail", "software", ""]),
            "numberofemployees": rng.choice([5, 40, 300, ""]), "is_lead": "yes" if lead else "no",
            "mql_date": us(mql, rng), "sql_date": us(sql, rng), "customer_date": us(won, rng)})
        for _ in range(rng.choice([0, 0, 1, 2])):
            deals.append({"deal_id": len(deals) + 1, "contact_id": i,
                          "deal_created": us(created + dt.timedelta(days=rng.randrange(40)), rng, with_time=False)})
    costs = []
    for month in MONTHS:
        for day in rng.sample(range(28), 20):  # days without a cost row spend nothing
            for platform in rng.sample(["google", "facebook", "linkedin"], 2):
                costs.append({"report_date": (month + dt.timedelta(days=day)).strftime("%m/%d/%Y"),
                              "platform": platform, "campaign_name": rng.choice(["spring", "brand"]),
                              "cost_cents": rng.randrange(500, 90_000)})
    visits = [{"visit_id": i, "visit_start": iso(moment(rng)), "traffic_source": rng.choice(CHANNELS) or "",
               "entry_page": rng.choice(["/", "/pricing", "/blog"]), "page_count": rng.choice([1, 1, 2, 3, 7]),
               "time_on_site": rng.randrange(5, 900)} for i in range(1, 401)]
    posts = [{"post_urn": f"urn:li:{i}", "published": moment(rng).strftime("%m/%d/%Y"),
              "reactions": rng.randrange(200), "comments": rng.randrange(30), "reposts": rng.randrange(20),
              "clicks": rng.randrange(90)} for i in range(1, 25)]
    accounts = [{"account_id": 100 + i, "contact_id": i, "closed_won": moment(rng).strftime("%m/%d/%Y"),
                 "source": rng.choice(CHANNELS[:-1]), "plan_tier": rng.choice(["basic", "pro"])} for i in range(1, 31)]
    payments = []
    for account in accounts:
        won = dt.datetime.strptime(account["closed_won"], "%m/%d/%Y")
        for k in range(rng.choice([1, 1, 2, 3])):
            payments.append({"payment_id": len(payments) + 1, "account_id": account["account_id"],
                             "paid_at": iso(won + dt.timedelta(days=10 * k, hours=rng.randrange(24))),
                             "amount_usd": f"{rng.randrange(1000, 90000) / 100:.2f}",
                             "outcome": rng.choice(["succeeded", "succeeded", "succeeded", "failed", "refunded"])})
    snapshots = []
    for month in MONTHS:
        # Snapshot days with gaps; the month's last snapshot day is not its last calendar day.
        for day in sorted(rng.sample(range(1, 27), 3)):
            as_of = month.replace(day=day)
            for account in accounts:
                if dt.datetime.strptime(account["closed_won"], "%m/%d/%Y").date() <= as_of:
                    snapshots.append({"as_of": as_of.strftime("%m/%d/%Y"), "account_id": account["account_id"],
                                      "tier": account["plan_tier"], "mrr_cents": rng.choice([4900, 9900, 19900])})
    return {"hubspot_contacts": contacts, "deals": deals, "ads_costs": costs, "site_visits": visits,
            "li_posts": posts, "accounts": accounts, "payments": payments, "mrr_daily": snapshots}


def _us_time(text: str) -> str | None:
    """A US date or timestamp of the export as the standard ISO text; None for '' and 'n/a'."""
    if text in ("", "n/a"):
        return None
    for form in ("%m/%d/%Y %H:%M", "%m/%d/%Y"):
        try:
            parsed = dt.datetime.strptime(text, form)
        except ValueError:
            continue
        return iso(parsed if form.endswith("%M") else parsed.date())
    raise AssertionError(f"not a US date: {text!r}")


def _text(value) -> str | None:
    return None if value in ("", "n/a", None) else str(value)


def standard_from_crm_export(raw: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The library's standard rows, read by hand from the CSV exports (what the mapping says)."""
    def channel(value):
        return "ppc" if value == "paid_search" else _text(value)

    leads = [{"lead_id": str(r["hs_object_id"]), "created_at": _us_time(r["createdate"]),
              "channel": channel(r["source_channel"]), "campaign": _text(r["utm_campaign"]),
              "industry": _text(r["industry"]), "company_size": _text(r["numberofemployees"]),
              "is_qualified": "true" if r["is_lead"] == "yes" else "false", "mql_at": _us_time(r["mql_date"]),
              "sql_at": _us_time(r["sql_date"]), "customer_at": _us_time(r["customer_date"])}
             for r in raw["hubspot_contacts"]]
    opportunities = [{"opportunity_id": str(r["deal_id"]), "lead_id": str(r["contact_id"]),
                      "created_at": _us_time(r["deal_created"]), "channel": None} for r in raw["deals"]]
    spend = [{"spend_date": _us_time(r["report_date"]), "channel": "ppc" if r["platform"] == "google" else "paid_social",
              "campaign": r["campaign_name"], "spend": str(Decimal(r["cost_cents"]) / 100)} for r in raw["ads_costs"]]
    sessions = [{"session_id": str(r["visit_id"]), "started_at": r["visit_start"], "channel": _text(r["traffic_source"]),
                 "landing_page": r["entry_page"], "pages_viewed": str(r["page_count"]),
                 "duration_seconds": str(r["time_on_site"])} for r in raw["site_visits"]]
    posts = [{"post_id": r["post_urn"], "posted_at": _us_time(r["published"]), "network": "linkedin",
              "channel": "organic", "likes": str(r["reactions"]), "comments": str(r["comments"]),
              "shares": str(r["reposts"]), "saves": "0", "clicks": str(r["clicks"])} for r in raw["li_posts"]]
    customers = [{"customer_id": str(r["account_id"]), "acquired_at": _us_time(r["closed_won"]), "channel": r["source"]}
                 for r in raw["accounts"]]
    orders = [{"order_id": str(r["payment_id"]), "customer_id": str(r["account_id"]), "ordered_at": r["paid_at"],
               "amount": r["amount_usd"], "status": "paid" if r["outcome"] == "succeeded" else r["outcome"]}
              for r in raw["payments"]]
    subscriptions = [{"snapshot_date": _us_time(r["as_of"]), "customer_id": str(r["account_id"]),
                      "mrr": str(Decimal(r["mrr_cents"]) / 100), "channel": None} for r in raw["mrr_daily"]]
    return {"leads": leads, "opportunities": opportunities, "ad_spend": spend, "web_sessions": sessions,
            "social_posts": posts, "customers": customers, "orders": orders, "subscriptions": subscriptions}


@pytest.fixture(scope="module")
def crm_export(tmp_path_factory):
    root = copy_project("crm_export", tmp_path_factory.mktemp("adoption"))
    raw = crm_export_rows()
    for name, rows in raw.items():
        write_csv(root / "data", name, rows)
    return root, standard_from_crm_export(raw)


# --------------------------------------------------------------------------- warehouse B: a DuckDB file

def warehouse_db_rows(seed: int = 11) -> dict[str, list[tuple]]:
    """Raw rows of the DuckDB warehouse, typed as its tables hold them."""
    rng = random.Random(seed)
    sources = ["google", "meta", "newsletter", "seo", None]
    people, changes, opportunities = [], [], []
    for i in range(1, 161):
        created = moment(rng)
        status = rng.choice(["subscriber", "lead", "mql", "sql", "customer", "disqualified"])
        people.append((i, created, rng.choice(sources), rng.choice(["spring", None]), rng.choice(["retail", "saas"]),
                       rng.choice(["1-10", "11-50"]), status))
        at = created
        for stage in ("mql", "sql", "customer"):
            if rng.random() < 0.45:
                at += dt.timedelta(days=rng.randrange(1, 25))
                changes.append((i, stage, at))
                if rng.random() < 0.2:  # a stage entered twice: the first time counts
                    changes.append((i, stage, at + dt.timedelta(days=3)))
            else:
                break
        for _ in range(rng.choice([0, 1, 1, 2])):
            opportunities.append((len(opportunities) + 1, i, (created + dt.timedelta(days=rng.randrange(30))).date(),
                                  rng.choice(sources)))
    spend = [((month + dt.timedelta(days=day)), network, rng.randrange(1, 5_000) * 10_000 + rng.randrange(10_000))
             for month in MONTHS for day in rng.sample(range(28), 18) for network in ("google", "meta")]
    sessions = [(i, moment(rng), rng.choice(sources), rng.choice(["/", "/pricing"]), rng.choice([0, 1, 1, 0, 0]),
                 rng.randrange(500, 600_000)) for i in range(1, 301)]
    sends = []
    for i in range(1, 241):
        sent = moment(rng)
        delivered = rng.random() < 0.9
        spam = delivered and rng.random() < 0.1
        opened = sent + dt.timedelta(hours=rng.randrange(48)) if delivered and not spam and rng.random() < 0.5 else None
        clicked = opened + dt.timedelta(minutes=5) if opened and rng.random() < 0.4 else None
        sends.append((i, sent, rng.choice(["welcome", "promo"]), delivered, spam, opened, clicked, not delivered))
    list_daily, members = [], 1000
    for month in MONTHS:
        for day in sorted(rng.sample(range(28), 10)):
            joined, left = rng.randrange(30), rng.randrange(12)
            members += joined - left
            list_daily.append((month + dt.timedelta(days=day), members, joined, left))
    answers = [(i, moment(rng), rng.choice(["smb", "enterprise", None]), rng.randrange(11)) for i in range(1, 91)]
    accounts = [(500 + i, (moment(rng)).date(), i, rng.choice(sources), rng.choice(["team", "business"]))
                for i in range(1, 26)]
    invoices = []
    for acct, won, *_ in accounts:
        for k in range(rng.choice([1, 2, 3])):
            invoices.append((len(invoices) + 1, acct, dt.datetime.combine(won, dt.time(9)) + dt.timedelta(days=9 * k),
                             Decimal(rng.randrange(1_000, 50_000)) / 100, rng.random() < 0.8))
    # Subscriptions and followers as intervals (a start and an end, none while active), not snapshots.
    subscriptions = [(1, 501, MONTHS[0], None, Decimal("99.00"), "team")]  # one is always active
    for acct, won, *_ in accounts:
        start = won + dt.timedelta(days=rng.randrange(5))
        end = None if rng.random() < 0.4 else dt.datetime.combine(start, dt.time(rng.randrange(24))) \
            + dt.timedelta(days=rng.randrange(0, 150))
        subscriptions.append((len(subscriptions) + 1, acct, start, end, Decimal(rng.randrange(2_000, 40_000)) / 100,
                              rng.choice(["team", "business"])))
    followers = []
    for i in range(1, 61):
        followed = moment(rng) - dt.timedelta(days=rng.randrange(40))
        gone = None if i == 1 or rng.random() < 0.5 else followed + dt.timedelta(days=rng.randrange(1, 200))
        followers.append((i, rng.choice(["linkedin", "x"]), followed, gone))
    return {"crm.people": people, "crm.stage_changes": changes, "crm.opportunities": opportunities,
            "ads.spend_daily": spend, "web.sessions": sessions, "esp.sends": sends, "esp.list_daily": list_daily,
            "survey.nps": answers, "billing.accounts": accounts, "billing.invoices": invoices,
            "billing.subscriptions": subscriptions, "social.followers": followers}


TABLES_DB = {
    "crm.people": "person_id INTEGER, created_ts TIMESTAMP, utm_source VARCHAR, utm_campaign VARCHAR, "
                  "sector VARCHAR, size_band VARCHAR, status VARCHAR",
    "crm.stage_changes": "person_id INTEGER, stage VARCHAR, changed_at TIMESTAMP",
    "crm.opportunities": "opp_id INTEGER, person_id INTEGER, opened_on DATE, source VARCHAR",
    "ads.spend_daily": "day DATE, network VARCHAR, cost_micros BIGINT",
    "web.sessions": "id INTEGER, ts TIMESTAMP, source VARCHAR, landing VARCHAR, bounced INTEGER, duration_ms BIGINT",
    "esp.sends": "send_id INTEGER, sent_ts TIMESTAMP, campaign VARCHAR, delivered BOOLEAN, spam BOOLEAN, "
                 "opened_ts TIMESTAMP, clicked_ts TIMESTAMP, bounced BOOLEAN",
    "esp.list_daily": "day DATE, members INTEGER, joined INTEGER, left_count INTEGER",
    "survey.nps": "answer_id INTEGER, answered_at TIMESTAMP, segment VARCHAR, rating INTEGER",
    "billing.accounts": "acct INTEGER, won_on DATE, person INTEGER, source VARCHAR, tier VARCHAR",
    "billing.invoices": "inv INTEGER, acct INTEGER, issued TIMESTAMP, total DECIMAL(12, 2), paid BOOLEAN",
    "billing.subscriptions": "sub INTEGER, acct INTEGER, started DATE, cancelled TIMESTAMP, mrr_usd DECIMAL(12, 2), "
                             "tier VARCHAR",
    "social.followers": "follower INTEGER, network VARCHAR, followed_at TIMESTAMP, unfollowed_at TIMESTAMP",
}


def daily_snapshots(start: dt.date, end: dt.date | None) -> list[dt.date]:
    """The days an interval row is active, as daily snapshots would list them: from its start up
    to the day before its end, up to today while it has no end."""
    last = end - dt.timedelta(days=1) if end else dt.date.today()
    return [start + dt.timedelta(days=k) for k in range((last - start).days + 1)]


def standard_from_warehouse_db(raw: dict[str, list[tuple]]) -> dict[str, list[dict]]:
    """The library's standard rows, read by hand from the warehouse's tables (what the mapping says)."""
    def text(value) -> str | None:
        return None if value is None else str(value)

    first: dict[tuple[int, str], dt.datetime] = {}
    for person, stage, at in raw["crm.stage_changes"]:
        if (person, stage) not in first or at < first[(person, stage)]:
            first[(person, stage)] = at
    leads = [{"lead_id": str(person), "created_at": iso(created), "channel": source, "campaign": campaign,
              "industry": sector, "company_size": size,
              "is_qualified": "true" if status in ("lead", "mql", "sql", "customer") else "false",
              "mql_at": iso(first.get((person, "mql"))), "sql_at": iso(first.get((person, "sql"))),
              "customer_at": iso(first.get((person, "customer")))}
             for person, created, source, campaign, sector, size, status in raw["crm.people"]]
    opportunities = [{"opportunity_id": str(o), "lead_id": str(p), "created_at": iso(d), "channel": s}
                     for o, p, d, s in raw["crm.opportunities"]]
    spend = [{"spend_date": iso(day), "channel": "ppc" if network == "google" else "paid_social",
              "spend": str(Decimal(micros) / 1_000_000)} for day, network, micros in raw["ads.spend_daily"]]
    sessions = [{"session_id": str(i), "started_at": iso(ts), "channel": source, "landing_page": landing,
                 "pages_viewed": "1" if bounced == 1 else "2", "duration_seconds": str(Decimal(ms) / 1000)}
                for i, ts, source, landing, bounced, ms in raw["web.sessions"]]
    sends = [{"send_id": str(i), "sent_at": iso(sent), "campaign": campaign, "channel": "email",
              "opened": "true" if opened else "false", "clicked": "true" if clicked else "false",
              "inbox": "true" if delivered and not spam else "false", "bounced": "true" if bounced else "false"}
             for i, sent, campaign, delivered, spam, opened, clicked, bounced in raw["esp.sends"]]
    email_list = [{"snapshot_date": iso(day), "subscribers": text(members), "new_subscribers": text(joined),
                   "unsubscribes": text(left), "channel": "email"} for day, members, joined, left in raw["esp.list_daily"]]
    answers = [{"response_id": str(i), "responded_at": iso(at), "channel": segment, "score": str(rating)}
               for i, at, segment, rating in raw["survey.nps"]]
    customers = [{"customer_id": str(acct), "acquired_at": iso(won), "channel": source}
                 for acct, won, _, source, _ in raw["billing.accounts"]]
    orders = [{"order_id": str(inv), "customer_id": str(acct), "ordered_at": iso(issued), "amount": str(total),
               "status": "paid" if paid else "open"} for inv, acct, issued, total, paid in raw["billing.invoices"]]
    subscriptions = [{"snapshot_date": iso(day), "customer_id": str(acct), "mrr": str(mrr), "channel": None}
                     for _, acct, started, cancelled, mrr, _ in raw["billing.subscriptions"]
                     for day in daily_snapshots(started, cancelled.date() if cancelled else None)]
    followers = [{"snapshot_date": iso(day), "network": network, "channel": "organic", "followers": "1"}
                 for _, network, followed, gone in raw["social.followers"]
                 for day in daily_snapshots(followed.date(), gone.date() if gone else None)]
    return {"leads": leads, "opportunities": opportunities, "ad_spend": spend, "web_sessions": sessions,
            "email_sends": sends, "email_list": email_list, "nps_responses": answers, "customers": customers,
            "orders": orders, "subscriptions": subscriptions, "social_followers": followers}


@pytest.fixture(scope="module")
def warehouse_db(tmp_path_factory):
    import duckdb

    root = copy_project("warehouse_db", tmp_path_factory.mktemp("adoption"))
    raw = warehouse_db_rows()
    connection = duckdb.connect(str(root / "warehouse.duckdb"))
    try:
        for table, columns in TABLES_DB.items():
            connection.execute(f"create schema if not exists {table.split('.')[0]}")
            connection.execute(f"create table {table} ({columns})")
            if raw[table]:
                marks = ", ".join("?" * len(raw[table][0]))
                connection.executemany(f"insert into {table} values ({marks})", raw[table])
    finally:
        connection.close()
    return root, standard_from_warehouse_db(raw)


# --------------------------------------------------------------------------- the checks

# The KPIs each mapping leaves without data, written from the sources each one reads.
UNAVAILABLE = {
    "crm_export": {  # no email_sends, email_list, social_followers, nps_responses
        "email_list_size", "emails_sent", "email_open_rate", "email_click_through_rate", "inbox_placement_rate",
        "unsubscribes", "unsubscribe_rate", "list_growth_rate", "list_churn_rate", "followers",
        "follower_growth_rate", "nps"},
    "warehouse_db": {"social_shares", "social_engagement"},  # no social_posts
}


def _engine_rows(project, names, by_channel: bool) -> dict[tuple, dict]:
    rows = project.evaluate(names, by=["channel"] if by_channel else [], grain="month").to_dicts()
    return {(row["period"],) + ((row["channel"],) if by_channel else ()): row for row in rows}


def _mismatches(name, expected: dict, engine: dict, keys) -> list[str]:
    problems = []
    for key in keys:
        want, got = expected.get(key), engine[key][name]
        if (want is None) != (got is None) or (want is not None and got != pytest.approx(want, rel=1e-9, abs=1e-9)):
            problems.append(f"{name} {key}: engine {got!r}, reference {want!r}")
    return problems


@pytest.fixture(params=["crm_export", "warehouse_db"])
def adopted(request):
    root, standard = request.getfixturevalue(request.param)
    return request.param, root, standard


def test_only_sources_are_overridden(adopted):
    name, root, _ = adopted
    with open_project(root) as project:
        assert all(kpi.library == "builtin:marketing" and kpi.overrides is None for kpi in project.project.kpis.values())
        overridden = [s.name for s in project.project.sources.values() if s.overrides is not None]
    assert overridden and not list(root.glob("**/kpis*.yaml"))


def test_validate_lists_the_kpis_without_data(adopted):
    name, root, _ = adopted
    result = CliRunner().invoke(cli, ["validate", str(root)])
    assert result.exit_code == 0, result.output
    with open_project(root) as project:
        model = project.model()
        unavailable = {kpi for kpi, resolved in model.kpis.items() if resolved.unavailable}
    assert unavailable == UNAVAILABLE[name]
    assert f"({len(UNAVAILABLE[name])} unavailable)" in result.stdout


@pytest.mark.parametrize("by_channel", [True, False], ids=["month-channel", "month"])
def test_every_available_kpi_alone_matches_the_reference(adopted, by_channel):
    name, root, standard = adopted
    with open_project(root) as project:
        names = [kpi for kpi in project.project.kpis if kpi not in UNAVAILABLE[name] and kpi in ref.KPIS]
        assert len(names) >= 27
        problems = []
        for kpi in names:
            expected = ref.compute(standard, kpi, by_channel)
            engine = _engine_rows(project, [kpi], by_channel)
            if set(expected) != set(engine):
                problems.append(f"{kpi}: keys only in the reference {sorted(set(expected) - set(engine), key=repr)[:3]}, "
                                f"only in the engine {sorted(set(engine) - set(expected), key=repr)[:3]}")
                continue
            problems += _mismatches(kpi, expected, engine, expected)
    assert not problems, f"{len(problems)} mismatches, e.g.\n" + "\n".join(problems[:15])


def test_all_available_kpis_in_one_query_match_the_reference(adopted):
    name, root, standard = adopted
    with open_project(root) as project:
        names = [kpi for kpi in project.project.kpis if kpi not in UNAVAILABLE[name] and kpi in ref.KPIS]
        engine = _engine_rows(project, names, by_channel=True)
    problems = []
    for kpi in names:  # its own rows hold its values; the other KPIs' rows leave its cell empty
        own = ref.compute(standard, kpi, True)
        problems += [f"{kpi} {key}: missing" for key in set(own) - set(engine)]
        problems += _mismatches(kpi, own, engine, set(own) & set(engine))
        problems += [f"{kpi} {key}: {engine[key][kpi]!r} outside its rows" for key in set(engine) - set(own)
                     if engine[key][kpi] is not None]
    assert not problems, f"{len(problems)} mismatches, e.g.\n" + "\n".join(problems[:15])


def test_the_worked_examples_of_the_docs_are_these_projects():
    docs = (ADOPTION.parent.parent / "docs" / "library.md").read_text()
    for file in ("crm_export/kpi_engine.yaml", "crm_export/sources.yaml", "warehouse_db/sources.yaml"):
        assert f"```yaml\n{(ADOPTION / file).read_text()}```" in docs, file


def test_validate_summary_of_the_csv_exports(crm_export):
    root, _ = crm_export
    result = CliRunner().invoke(cli, ["validate", str(root)])
    assert result.stdout.startswith("OK: project 'crm_export': 15 sources (4 unmapped), 45 KPIs (12 unavailable); "
                                    "specs, formulas, tables and columns are valid.\n")
    assert "Unavailable (source 'nps_responses' is unmapped): nps.\n" in result.stdout


def test_the_library_tests_pass_on_both_mappings(adopted):
    name, root, _ = adopted
    result = CliRunner().invoke(cli, ["test", str(root)])
    assert result.exit_code == 0, result.output
    skipped = {"crm_export": "nps_from_known_scores: needs source",
               "warehouse_db": "mrr_is_a_month_end_snapshot: reads 'subscriptions' as intervals"}[name]
    assert f"SKIP {skipped.replace(':', ' (builtin:marketing):', 1)}" in result.stdout
    assert result.stdout.endswith("9 passed, 0 failed, 1 skipped (the SKIP lines say why).\n")
