"""The two shorter shapes of a conversion source (docs/performance.md, `conversion_30d`):

1. no attribution step when ``per`` is the base source's whole primary key (each conversion can
   follow one base event only), and
2. no base events stacked under the conversions when the request groups the base source itself
   (that read supplies the rows where base events are).

Each is checked against plain Python over the rows generated here, on the cases where it applies
and on the neighbouring ones where it must not: ``per`` not the key, a composite key holding
``per``, a formula reading the conversions without the base, a time function over them."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import replace
import statistics
from collections import defaultdict

import pytest

import test_conversions as conversions
from kpi_engine.conversions import attributes
from kpi_engine.engine import open_project
from kpi_engine.spec import load_project
from warehouse_loading import postgres_warehouse, sqlite_warehouse

pytest_plugins = ["pg"]

SPECS = """\
sources:
  leads: {table: leads, time: created_at, primary_key: lead_id, dimensions: [channel, region]}
  opportunities: {table: opportunities, time: opened_at, primary_key: opp_id}
  touches: {table: touches, time: touched_at, primary_key: [lead_id, touch_no], dimensions: [channel]}
  unpaid_leads: {extends: leads, where: "channel != 'paid'"}
  lead_opps:
    conversion: {from: leads, to: opportunities, per: lead_id, within: 30 days}
    time_axes: [converted_at]
  lead_opps_first:
    conversion: {from: leads, to: opportunities, per: lead_id, within: 30 days, attribution: first_touch}
  lead_opps_same_region:
    conversion: {from: leads, to: opportunities, per: lead_id, within: 30 days, same: [region]}
  lead_opps_ever:
    conversion: {from: leads, to: opportunities, per: lead_id}
  unpaid_lead_opps:
    conversion: {from: unpaid_leads, to: opportunities, per: lead_id, within: 30 days}
  account_opps:
    conversion: {from: leads, to: opportunities, per: account_id, within: 30 days}
  account_opps_first:
    conversion: {from: leads, to: opportunities, per: account_id, within: 30 days, attribution: first_touch}
  touch_opps:
    conversion: {from: touches, to: opportunities, per: lead_id, within: 30 days}
"""
TABLES = {"leads": {"lead_id": "integer", "account_id": "text", "created_at": "timestamp", "channel": "text",
                    "region": "text"},
          "opportunities": {"opp_id": "integer", "lead_id": "integer", "account_id": "text", "opened_at": "timestamp",
                            "region": "text"},
          "touches": {"lead_id": "integer", "touch_no": "integer", "touched_at": "timestamp", "channel": "text"}}
T = dt.datetime
DAY = dt.timedelta(days=1)
WINDOW = dt.timedelta(days=30)


def generate(seed: int = 17) -> dict[str, list[dict]]:
    """Hand-made edge cases, then random accounts of one to three leads, each lead with zero to
    three opportunities between two days before and forty days after it, and zero to three
    touches of the lead (some at the same instant)."""
    rng = random.Random(seed)
    leads = [  # lead_id, account, created_at, channel, region
        (1, "a_exact", T(2025, 1, 10, 8), "paid", "eu"),  # opportunity exactly 30 days later: counted
        (2, "a_late", T(2025, 1, 10, 8), "paid", "eu"),  # one second after the window: not counted
        (3, "a_before", T(2025, 2, 1, 12, 0, 1), "email", "us"),  # the opportunity is a second earlier
        (4, "a_two", T(2025, 2, 3, 9), "email", "us"),  # two opportunities: both count, one at its instant
        (5, "a_twins", T(2025, 2, 14, 10), "social", "eu"),  # two opportunities at one instant: both count
        (6, "a_none", T(2025, 3, 2, 10), "social", "us"),  # none at all
        (7, "a_region", T(2025, 3, 5, 10), "paid", "eu"),  # opportunities of another region and of none
        (None, "a_nokey", T(2025, 3, 6, 10), "paid", "eu"),  # no key: never matches
        (8, "a_shared", T(2025, 1, 20, 10), "email", "us"),  # an account with two leads: per account,
        (9, "a_shared", T(2025, 1, 28, 10), "paid", "us"),  # last and first touch differ
        (10, "a_tie", T(2025, 3, 20, 10), "social", "eu"),  # two leads of one account at one instant
        (11, "a_tie", T(2025, 3, 20, 10), "paid", "eu"),
    ]
    opportunities = [  # lead_id, account, opened_at, region
        (1, "a_exact", T(2025, 2, 9, 8), "eu"), (2, "a_late", T(2025, 2, 9, 8, 0, 1), "eu"),
        (3, "a_before", T(2025, 2, 1, 12), "us"),
        (4, "a_two", T(2025, 2, 3, 9), "us"), (4, "a_two", T(2025, 2, 20, 9), "eu"),
        (5, "a_twins", T(2025, 2, 16, 10), "eu"), (5, "a_twins", T(2025, 2, 16, 10), "eu"),
        (7, "a_region", T(2025, 3, 7, 10), "us"), (7, "a_region", T(2025, 3, 8, 10), None),
        (None, "a_nokey", T(2025, 3, 7, 10), "eu"),
        (9, "a_shared", T(2025, 2, 2, 10), "us"), (10, "a_tie", T(2025, 3, 22, 10), "eu"),
    ]
    touches = [  # lead_id, touch_no, touched_at, channel
        (4, 1, T(2025, 1, 25, 9), "paid"), (4, 2, T(2025, 2, 1, 9), "email"),  # last touch: the second
        (5, 1, T(2025, 2, 10, 10), "social"), (5, 2, T(2025, 2, 10, 10), "paid"),  # a tie: touch 1
    ]
    next_lead = 100
    for n in range(45):
        account = f"acct{n:02d}"
        for _ in range(rng.randrange(1, 4)):
            lead, next_lead = next_lead, next_lead + 1
            at = T(2025, 1, 1) + dt.timedelta(seconds=rng.randrange(100 * 86400))
            leads.append((lead, account, at, rng.choice(["paid", "email", "social"]), rng.choice(["eu", "us"])))
            for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
                opened = at + dt.timedelta(seconds=rng.randrange(-2 * 86400, 40 * 86400))
                opportunities.append((lead, account, opened, rng.choice(["eu", "us", None])))
            first_touch = at - dt.timedelta(days=rng.randrange(0, 20))
            for no in range(1, rng.randrange(0, 4) + 1):
                touched = first_touch + dt.timedelta(days=rng.choice([0, 0, 3, 9]))
                touches.append((lead, no, touched, rng.choice(["paid", "email", "social"])))
    return {"leads": [dict(zip(TABLES["leads"], row)) for row in leads],
            "opportunities": [{"opp_id": i, **dict(zip(("lead_id", "account_id", "opened_at", "region"), row))}
                              for i, row in enumerate(opportunities, start=1)],
            "touches": [dict(zip(TABLES["touches"], row)) for row in touches]}


# ----------------------------------------------------------------------------- plain Python

BASES = {"leads": ("created_at", ("lead_id",)), "touches": ("touched_at", ("lead_id", "touch_no"))}


def attribute(data, base="leads", per="lead_id", within=WINDOW, touch="last", same=(), keep=None):
    """(base row, opportunity) for every opportunity with a base row of its ``per`` at most
    ``within`` before it (both ends included), the latest such row (earliest for first touch),
    ties to the lower key; with ``same``, only base rows with the opportunity's values of those
    columns (an empty value matches none); ``keep`` filters the base rows first."""
    time, key = BASES[base]
    rows = [row for row in data[base] if keep is None or keep(row)]
    pairs = []
    for opp in data["opportunities"]:
        if opp[per] is None:
            continue
        candidates = [row for row in rows if row[per] == opp[per] and row[time] <= opp["opened_at"]
                      and (within is None or opp["opened_at"] <= row[time] + within)
                      and all(row[c] is not None and row[c] == opp[c] for c in same)]
        if candidates:
            sign = -1 if touch == "last" else 1
            pairs.append((min(candidates, key=lambda r: (sign * r[time].timestamp(), *[r[k] for k in key])), opp))
    return pairs


def period(at: dt.datetime, grain: str | None) -> tuple:
    day = at.date()
    if grain is None:
        return ()
    return ({"day": day, "week": day - dt.timedelta(days=day.weekday()), "month": day.replace(day=1)}[grain],)


def reference(data, grain="month", by_channel=True, base="leads", keep=None, **options) -> dict[tuple, dict]:
    """Per base period (and channel): conversions, base rows, the rate, avg and median days."""
    time, _ = BASES[base]

    def key(row):
        return period(row[time], grain) + ((row["channel"],) if by_channel else ())

    counts: dict = defaultdict(int)
    for row in data[base]:
        if keep is None or keep(row):
            counts[key(row)] += 1
    days: dict = defaultdict(list)
    for row, opp in attribute(data, base=base, keep=keep, **options):
        days[key(row)].append((opp["opened_at"] - row[time]).total_seconds() / 86400)
    converted: dict = defaultdict(set)
    for row, _ in attribute(data, base=base, keep=keep, **options):
        converted[key(row)].add(row[BASES[base][1][0]])
    return {k: {"count": len(days[k]), "base": n, "rate": len(days[k]) / n,
                "avg": statistics.fmean(days[k]) if days[k] else None,
                "median": statistics.median(days[k]) if days[k] else None,
                "days_per_base": sum(days[k]) / n, "share": len(converted[k]) / n} for k, n in counts.items()}


# ----------------------------------------------------------------------------- the project

def write_folder(root, data) -> None:
    conversions.write_folder(root, data, specs=SPECS, tables=TABLES)


@pytest.fixture(scope="module")
def data():
    return generate()


@pytest.fixture(scope="module")
def folder(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("conversion_shortcuts")
    write_folder(root, data)
    return root


@pytest.fixture(scope="module")
def project(folder):
    with open_project(folder) as opened:
        yield opened


def measures(source: str, base: str = "leads") -> dict[str, str]:
    """The count and time to convert with the base count in the same request (the shape that
    leaves the base events out), and the rate."""
    return {"count": f"count({source})", "base": f"count({base})", "rate": f"count({source}) / count({base})",
            "avg": f"avg({source}.days_to_convert)", "median": f"median({source}.days_to_convert)"}


def over_base(source: str, base: str = "leads") -> dict[str, str]:
    """Formulas that each read the base source too: the request leaves the base events out."""
    return {"base": f"count({base})", "rate": f"count({source}) / count({base})",
            "days_per_base": f"sum({source}.days_to_convert) / count({base})",
            "share": f"count_distinct({source}.lead_id) / count({base})"}


def evaluate(project, formulas: dict[str, str], grain="month", by_channel=True, **options) -> dict[tuple, dict]:
    return conversions.evaluate(project, formulas, by_channel, grain=grain, **options)


def assert_close(got: dict, want: dict) -> None:
    """test_conversions' comparison, over the columns asked for."""
    names = {name for values in got.values() for name in values}
    conversions.assert_close(got, {key: {name: value for name, value in values.items() if name in names}
                                   for key, values in want.items()})


def sql_of(project, formulas: dict[str, str], **options) -> str:
    return project.compile(formulas=[f"{name}={text}" for name, text in formulas.items()], grain="month",
                           by=["channel"], **options).sql()


EVENTS = '0 AS "__kpi_touch"'  # the base events stacked under the conversions


def plan_notes(query) -> list[str]:
    """Every note of a compiled query's plan (what `explain` prints), its steps depth first."""
    found, steps = [], [query.plan]
    while steps:
        step = steps.pop()
        found += step.notes
        steps += step.inputs
    return found


# ----------------------------------------------------------------------------- 1. no attribution step

@pytest.mark.parametrize("grain", ["day", "week", "month", None])
@pytest.mark.parametrize("source, options", [
    ("lead_opps", {}),
    ("lead_opps_first", {"touch": "first"}),
    ("lead_opps_same_region", {"same": ("region",)}),
    ("lead_opps_ever", {"within": None}),
    ("account_opps", {"per": "account_id"}),
    ("account_opps_first", {"per": "account_id", "touch": "first"}),
], ids=["last-touch", "first-touch", "same-region", "no-window", "per-account", "per-account-first"])
def test_counts_and_days_match_python(project, data, source, options, grain):
    assert_close(evaluate(project, measures(source), grain=grain), reference(data, grain=grain, **options))


def test_a_composite_key_holding_per_keeps_the_attribution(project, data):
    """touches has the key (lead_id, touch_no): a lead's opportunity may follow several of its
    touches and counts for the latest one only (ties to the lower touch_no)."""
    assert_close(evaluate(project, measures("touch_opps", "touches")), reference(data, base="touches"))
    pairs = attribute(data, base="touches")
    every = [(row, opp) for opp in data["opportunities"] for row in data["touches"]
             if opp["lead_id"] is not None and row["lead_id"] == opp["lead_id"]
             and row["touched_at"] <= opp["opened_at"] <= row["touched_at"] + WINDOW]
    assert len(every) > len(pairs)  # counting every touch would be wrong here
    text = sql_of(project, {"n": "count(touch_opps)"})
    assert "ROW_NUMBER() OVER" in text


@pytest.mark.parametrize("source, attributed", [("lead_opps", False), ("lead_opps_first", False),
                                                ("lead_opps_same_region", False), ("unpaid_lead_opps", False),
                                                ("account_opps", True), ("touch_opps", True)])
def test_the_attribution_step_is_left_out_only_when_per_is_the_whole_key(project, source, attributed):
    text = sql_of(project, {"n": f"count({source})"})
    assert ("ROW_NUMBER() OVER" in text) == attributed
    assert ("__kpi_conversion" in text) == attributed


def test_a_history_sources_key_never_qualifies(folder):
    """A history source's key may name the entity alone (its versions share it)."""
    leads = load_project(folder).sources["leads"]
    assert not attributes(leads, "lead_id")
    assert attributes(leads, "account_id")
    assert attributes(replace(leads, valid_from="created_at"), "lead_id")
    assert attributes(replace(leads, primary_key=("lead_id", "account_id")), "lead_id")
    assert attributes(replace(leads, primary_key=()), "lead_id")


@pytest.mark.parametrize("lead, count, days", [
    (1, 1, 30.0),  # exactly at the window's end
    (2, 0, None),  # a second after it
    (3, 0, None),  # a second before the lead
    (4, 2, 17.0),  # two opportunities: at the lead's instant (0 days) and 17 days later
    (5, 2, 4.0),  # two at one instant
    (6, 0, None),
])
def test_edges_by_hand(project, lead, count, days):
    got = evaluate(project, {"n": f"count(lead_opps where lead_id = {lead})",
                             "days": f"sum(lead_opps.days_to_convert where lead_id = {lead})"}, grain=None,
                   by_channel=False)
    assert got[()] == {"n": count, "days": days if days is not None else 0}


def test_same_region_and_missing_keys_by_hand(project):
    """Lead 7's opportunities are of another region and of none: no same-region conversion; the
    lead and the opportunity without a key never pair."""
    got = evaluate(project, {"same": "count(lead_opps_same_region where lead_id = 7)",
                             "any": "count(lead_opps where lead_id = 7)",
                             "keyless": "count(lead_opps where account_id = 'a_nokey')"}, grain=None,
                   by_channel=False)
    assert got[()] == {"same": 0, "any": 2, "keyless": 0}


def test_per_account_last_and_first_touch_by_hand(project):
    """Account a_shared's opportunity follows its leads 8 (January 20, email) and 9 (January 28,
    paid); a_tie's two leads share an instant and the lower lead_id, 10 (social), gets it."""
    got = evaluate(project, {"last": "count(account_opps where account_id in ('a_shared', 'a_tie'))",
                             "first": "count(account_opps_first where account_id in ('a_shared', 'a_tie'))"},
                   grain=None)
    assert got[("paid",)]["last"] == 1 and got[("email",)]["last"] == 0
    assert got[("email",)]["first"] == 1 and got[("paid",)]["first"] == 0
    assert got[("social",)] == {"last": 1, "first": 1}


# ----------------------------------------------------------------------------- 2. no base events stacked

@pytest.mark.parametrize("grain", ["day", "week", "month"])
def test_with_the_base_count_in_the_request_the_events_are_not_stacked(project, data, grain):
    formulas = over_base("lead_opps")
    assert EVENTS not in sql_of(project, formulas)
    assert_close(evaluate(project, formulas, grain=grain), reference(data, grain=grain))


def test_where_on_a_base_dimension(project, data):
    formulas = over_base("lead_opps")
    assert EVENTS not in sql_of(project, formulas, where="region = 'eu'")
    got = evaluate(project, formulas, where="region = 'eu'")
    assert_close(got, reference(data, keep=lambda row: row["region"] == "eu"))


def test_a_base_source_with_a_where(project, data):
    formulas = over_base("unpaid_lead_opps", "unpaid_leads")
    assert EVENTS not in sql_of(project, formulas)
    assert_close(evaluate(project, formulas), reference(data, keep=lambda row: row["channel"] != "paid"))


def test_a_range_that_cuts_the_base_events(project, data):
    """--from and --to select base events; their conversions count even after --to."""
    start, end = dt.date(2025, 2, 1), dt.date(2025, 3, 1)
    formulas = over_base("lead_opps")
    assert EVENTS not in sql_of(project, formulas, start=start, end=end)
    got = evaluate(project, formulas, start=start, end=end)
    assert_close(got, reference(data, keep=lambda row: start <= row["created_at"].date() < end))


def test_under_fill_every_month_and_channel(project, data):
    """--fill lists every month for every channel seen: a month without leads reads 0 leads and
    null ratios, as with the base events stacked."""
    formulas = over_base("lead_opps")
    start, end = dt.date(2024, 12, 1), dt.date(2025, 6, 1)
    assert EVENTS not in sql_of(project, formulas, start=start, end=end, fill=True)
    got = evaluate(project, formulas, start=start, end=end, fill=True)
    want = reference(data)
    months = [dt.date(2024, 12, 1)] + [dt.date(2025, m, 1) for m in range(1, 6)]
    expected = {}
    for month in months:
        for channel in ("email", "paid", "social"):
            row = want.get((month, channel))
            expected[(month, channel)] = {name: row[name] for name in formulas} if row else \
                {"base": 0, "rate": None, "days_per_base": None, "share": None}
    assert_close(got, expected)


def test_a_formula_of_the_conversions_alone_keeps_the_events(project, data):
    """count(lead_opps) beside count(leads) in another column: it has its own rows (0 where leads
    did not convert), so the base events stay under it."""
    formulas = {"count": "count(lead_opps)", "base": "count(leads)"}
    assert EVENTS in sql_of(project, formulas)
    got = evaluate(project, formulas)
    want = reference(data)
    assert_close(got, {k: {"count": v["count"], "base": v["base"]} for k, v in want.items()})
    assert 0 in {v["count"] for v in got.values()}  # a month and channel with leads and no conversion


def test_the_conversions_alone_keep_the_events(project, data):
    formulas = {"count": "count(lead_opps)"}
    assert EVENTS in sql_of(project, formulas)
    assert_close(evaluate(project, formulas), {k: {"count": v["count"]} for k, v in reference(data).items()})


@pytest.mark.parametrize("text, shift", [("previous(count(lead_opps))", 1), ("rolling(count(lead_opps), 2)", 0)])
def test_a_time_function_over_the_conversions_keeps_the_events(project, data, text, shift):
    formulas = {"value": text, "base": "count(leads)"}
    assert EVENTS in sql_of(project, formulas)
    got = evaluate(project, formulas)
    counts = {k: v["count"] for k, v in reference(data).items()}

    def month_back(month: dt.date, n: int) -> dt.date:
        index = month.year * 12 + month.month - 1 - n
        return dt.date(index // 12, index % 12 + 1, 1)

    assert got.keys() == counts.keys()
    for (month, channel), row in got.items():  # (no month before the first: a count of no rows, 0)
        before = counts.get((month_back(month, 1), channel), 0)
        assert row["value"] == (before if shift else counts[(month, channel)] + before), (month, channel)


def test_conversions_placed_at_their_own_time(project, data):
    """At converted_at the conversions are counted in the month they happened, beside the leads
    of that month: the view placed at another time does not share the leads' rows."""
    formulas = {"n": "count(lead_opps at converted_at)", "base": "count(leads)"}
    got = evaluate(project, formulas)
    want: dict = defaultdict(lambda: {"n": None, "base": 0})  # (n is blank where it has no row)
    for row in data["leads"]:
        want[(row["created_at"].date().replace(day=1), row["channel"])]["base"] += 1
    for lead, opp in attribute(data):
        cell = want[(opp["opened_at"].date().replace(day=1), lead["channel"])]
        cell["n"] = (cell["n"] or 0) + 1
    assert_close(got, dict(want))


@pytest.mark.parametrize("source, options", [("lead_opps", {}), ("account_opps", {"per": "account_id"}),
                                             ("lead_opps_same_region", {"same": ("region",)})])
@pytest.mark.parametrize("warehouse", ["on_postgres", "on_sqlite"])
def test_other_warehouses_match_python(request, data, warehouse, source, options):
    other = request.getfixturevalue(warehouse)
    formulas = measures(source)
    if warehouse == "on_sqlite":  # (no median there)
        del formulas["median"]
    assert_close(evaluate(other, formulas), reference(data, **options))


@pytest.fixture(scope="module")
def on_postgres(request, folder):
    url = postgres_warehouse(request.getfixturevalue("pg_server"), "kpi_conversion_shortcuts", TABLES,
                             folder / "data")
    with open_project(folder, warehouse=url) as opened:
        yield opened


@pytest.fixture(scope="module")
def on_sqlite(folder, tmp_path_factory):
    url = sqlite_warehouse(tmp_path_factory.mktemp("sqlite"), "conversion_shortcuts", TABLES, folder / "data")
    with open_project(folder, warehouse=url) as opened:
        yield opened


def test_the_generated_rows_hold_every_case(data):
    """The references see each case the tests are meant to exercise (so none is vacuous)."""
    pairs = attribute(data)
    per_lead = defaultdict(int)
    for lead, _ in pairs:
        per_lead[lead["lead_id"]] += 1
    assert max(per_lead.values()) >= 2  # a lead with several conversions
    assert attribute(data, per="account_id") != attribute(data, per="account_id", touch="first")
    assert len(attribute(data, within=None)) > len(pairs)  # some come after the window
    assert len(attribute(data, same=("region",))) < len(pairs)
    assert len({row["lead_id"] for row in data["leads"]}) == len(data["leads"])  # lead_id is the key


def test_the_plan_says_where_the_base_events_rows_come_from(project):
    def notes(formulas: dict[str, str]) -> list[str]:
        return plan_notes(project.compile(formulas=[f"{k}={v}" for k, v in formulas.items()], grain="month",
                                          by=["channel"]))

    said = "the conversions only: the rows where there are base events come from the request's read of 'leads'"
    assert said in notes(over_base("lead_opps"))
    assert said not in notes({"n": "count(lead_opps)", "base": "count(leads)"})
    assert any(note.startswith("rows: the rows of 'opportunities' that follow a row of 'leads' of the same ")
               and note.endswith("of source 'lead_opps'") for note in notes({"n": "count(lead_opps)"}))


def test_a_base_source_a_rollup_answers_keeps_the_events(data, tmp_path):
    """The leads' rows then come from the rollup's days: the conversions keep their own rows, and
    the numbers are the raw rows' (a materialized part and raw days after it)."""
    write_folder(tmp_path, data)
    with open(tmp_path / "specs.yaml", "a") as specs:
        specs.write("rollups:\n  leads_daily: {source: leads, dimensions: [channel, region], measures: [count(leads)]}\n")
    with open_project(tmp_path) as opened:
        opened.materialize(["leads_daily"], end=dt.date(2025, 3, 1))
        formulas = over_base("lead_opps")
        query = opened.compile(formulas=[f"{k}={v}" for k, v in formulas.items()], grain="month", by=["channel"])
        notes = plan_notes(query)
        assert any(note.startswith("read from rollup leads_daily") for note in notes), notes
        assert EVENTS in query.sql()
        assert_close(evaluate(opened, formulas), reference(data))
