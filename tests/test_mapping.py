"""Sources mapped onto a warehouse: sql/table overrides, map:, where:, extends: and unmapped:.

Expected values are counted by hand from the rows each test writes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from kpi_engine.cli import cli
from kpi_engine.engine import check_project, open_project
from kpi_engine.errors import KpiEngineError, ProjectInvalid, QueryError

CONFIG = "name: team\nwarehouse: {adapter: duckdb, data: data}\ninclude: [builtin:marketing]\n"
LOCAL_LIBRARY = "name: team\nwarehouse: {adapter: duckdb, data: data}\ninclude: [../lib]\n"

# The library's other sources, declared without data so that only the ones under test matter.
UNMAPPED_REST = "".join(f"  {name}: {{unmapped: true}}\n" for name in (
    "opportunities", "customers", "subscriptions", "orders", "web_sessions", "email_sends", "email_list",
    "social_posts", "social_followers", "nps_responses"))

CONTACTS = [  # id, created, source, flag, became customer
    {"id": 1, "createdate": "2025-01-05 10:00:00", "src": "ppc", "flag": "true", "won": "2025-02-01 09:00:00"},
    {"id": 2, "createdate": "2025-01-06 10:00:00", "src": "ppc", "flag": "false", "won": "2025-02-03 09:00:00"},
    {"id": 3, "createdate": "2025-01-07 10:00:00", "src": "ppc", "flag": "true", "won": ""},
    {"id": 4, "createdate": "2025-02-07 10:00:00", "src": "organic", "flag": "true", "won": ""},
]
COSTS = [{"day": "2025-01-02", "network": "google", "cents": 25000},
         {"day": "2025-01-03", "network": "google", "cents": 15000},
         {"day": "2025-02-03", "network": "meta", "cents": 9999}]

CONTACTS_MAP = """
  contacts:
    table: crm
    map:
      lead_id: id
      created_at: createdate
      channel: src
      campaign: "'none'"
      industry: null
      company_size: null
      is_qualified: flag
      mql_at: null
      sql_at: null
      customer_at: won
"""
SPEND_MAP = """
  ad_spend:
    table: costs
    map: {spend_date: day, channel: "if(network = 'google', 'ppc', 'paid_social')", campaign: null, spend: cents / 100}
"""


def mapped_project(make_project, extra: str = "", tables=None):
    return make_project({"sources.yaml": "sources:\n" + CONTACTS_MAP + SPEND_MAP + UNMAPPED_REST + extra},
                        tables or {"crm": CONTACTS, "costs": COSTS}, config=CONFIG)


def by_key(rows, *keys):
    return {tuple(row[k] for k in keys): row for row in rows}


def test_columns_bound_to_columns_formulas_and_constants(make_project):
    with open_project(mapped_project(make_project)) as project:
        rows = by_key(project.evaluate(["new_contacts", "qualified_leads", "ad_spend_total", "cost_per_lead",
                                        "close_rate", "time_to_conversion_days"], by=["channel"]).to_dicts(),
                      "channel")
    # ppc: contacts 1, 2, 3; leads 1 and 3; (250 + 150) $ spent on google; lead 1 bought.
    assert (rows[("ppc",)]["new_contacts"], rows[("ppc",)]["qualified_leads"]) == (3, 2)
    assert rows[("ppc",)]["ad_spend_total"] == 400 and rows[("ppc",)]["cost_per_lead"] == 200
    assert rows[("ppc",)]["close_rate"] == 50
    assert rows[("paid_social",)]["ad_spend_total"] == pytest.approx(99.99)
    assert rows[("paid_social",)]["cost_per_lead"] is None  # spend, no leads
    assert rows[("organic",)]["cost_per_lead"] == 0  # a free channel


def test_sources_that_extend_contacts_read_its_map(make_project):
    # conversions place the contacts by the mapped customer date: 27 and 28 days, in February
    with open_project(mapped_project(make_project)) as project:
        (row,) = project.evaluate(["time_to_conversion_days"], grain="month").to_dicts()
    assert row["time_to_conversion_days"] == 27.5 and str(row["period"]) == "2025-02-01"


def test_a_mapped_constant_is_one_group(make_project):
    with open_project(mapped_project(make_project)) as project:
        rows = project.evaluate(["new_contacts"], by=["campaign"]).to_dicts()
    assert rows == [{"campaign": "none", "new_contacts": 4, "complete": True}]


def test_the_time_column_and_the_key_are_mapped(make_project):
    # The library places contacts by created_at and counts leads with an opportunity per lead_id:
    # both are names of the map, bound here to createdate and id (deals key them by person).
    deals = [{"deal": 1, "person": 1, "opened": "2025-03-01"}, {"deal": 2, "person": 1, "opened": "2025-03-05"},
             {"deal": 3, "person": 2, "opened": "2025-03-02"}]
    root = make_project({"sources.yaml": "sources:\n" + CONTACTS_MAP + SPEND_MAP + UNMAPPED_REST.replace(
        "  opportunities: {unmapped: true}\n", "") + """
  opportunities:
    table: deals
    map: {opportunity_id: deal, lead_id: person, created_at: opened, channel: null}
"""}, {"crm": CONTACTS, "costs": COSTS, "deals": deals}, config=CONFIG)
    with open_project(root) as project:
        rows = by_key(project.evaluate(["lead_to_opportunity_rate", "qualified_leads"], grain="month").to_dicts(),
                      "period")
    # January's leads are 1 and 3; only 1 has a deal (2 has one but is no lead): 50%.
    jan, feb = sorted(rows)
    assert rows[jan]["lead_to_opportunity_rate"] == 50 and rows[feb]["lead_to_opportunity_rate"] == 0


def test_a_sql_override_replaces_a_library_table(make_project):
    # ad_spend is a table in the library; here a query, with an explicit (optional) table: null.
    sources = "sources:\n" + CONTACTS_MAP + UNMAPPED_REST + """
  ad_spend:
    table: null
    sql: select day as spend_date, 'ppc' as channel, 'x' as campaign, cents / 100.0 as spend from costs where cents > 10000
"""
    root = make_project({"sources.yaml": sources}, {"crm": CONTACTS, "costs": COSTS}, config=CONFIG)
    with open_project(root) as project:
        source = project.project.sources["ad_spend"]
        assert source.table is None and source.time == "spend_date"  # the rest of the library's source stays
        (row,) = project.evaluate(["ad_spend_total", "cost_per_lead"]).to_dicts()
    assert row["ad_spend_total"] == 400 and row["cost_per_lead"] == pytest.approx(400 / 3)  # 3 leads


def test_a_table_override_replaces_a_library_sql_source(make_project):
    root = make_project({"sources.yaml": "sources:\n  spend: {table: costs}\n"}, {"costs": COSTS}, config=LOCAL_LIBRARY)
    (root.parent / "lib").mkdir()
    (root.parent / "lib" / "spend.yaml").write_text(
        'sources:\n  spend: {sql: "select * from nowhere", time: day}\nkpis:\n  total: {formula: sum(spend.cents)}\n')
    with open_project(root) as project:
        source = project.project.sources["spend"]
        assert (source.table, source.sql, source.time) == ("costs", None, "day")
        assert project.evaluate(["total"]).to_dicts() == [{"total": 49999, "complete": True}]


def test_where_and_extends(make_project):
    root = make_project({"s.yaml": """
        sources:
          people: {table: crm, time: createdate, primary_key: id, dimensions: [src]}
          buyers: {extends: people, where: won is not null, time: won}
          ppc_buyers: {extends: buyers, where: "src = 'ppc'"}
        kpis:
          people_count: {formula: count(people)}
          buyers_count: {formula: count(buyers)}
          ppc_buyer_count: {formula: count(ppc_buyers)}
        """}, {"crm": CONTACTS})
    with open_project(root) as project:
        rows = by_key(project.evaluate(["people_count", "buyers_count", "ppc_buyer_count"], grain="month").to_dicts(),
                      "period")
        buyers = project.project.sources["ppc_buyers"]
        assert (buyers.table, buyers.time, buyers.rows_of, len(buyers.filters)) == ("crm", "won", "people", 2)
    counts = [(row["people_count"], row["buyers_count"], row["ppc_buyer_count"]) for _, row in sorted(rows.items())]
    # January: 3 created, no buyer (not a row of the buyer counts: empty); February: 1 created, 2 bought (both ppc)
    assert counts == [(3, None, None), (1, 2, 2)]


def test_a_source_that_reads_its_own_table_does_not_inherit_the_rows(make_project):
    leads = [{"id": 9, "createdate": "2025-01-09 10:00:00", "src": "email", "flag": "true", "won": ""}]
    root = mapped_project(make_project, extra="""
  leads:
    table: sf_leads
    map: {lead_id: id, created_at: createdate, channel: src, campaign: null, industry: null, company_size: null,
          is_qualified: flag, customer_at: won}
""", tables={"crm": CONTACTS, "costs": COSTS, "sf_leads": leads})
    with open_project(root) as project:
        (row,) = project.evaluate(["new_contacts", "qualified_leads"]).to_dicts()
    assert (row["new_contacts"], row["qualified_leads"]) == (4, 1)


def test_leads_of_their_own_table_without_the_librarys_filter(make_project):
    leads = [{"id": 9, "createdate": "2025-01-09 10:00:00", "src": "email", "won": ""},
             {"id": 10, "createdate": "2025-01-10 10:00:00", "src": "email", "won": ""}]
    root = mapped_project(make_project, extra="""
  leads:
    table: sf_leads
    where: null
    map: {lead_id: id, created_at: createdate, channel: src, campaign: null, industry: null, company_size: null,
          customer_at: won}
""", tables={"crm": CONTACTS, "costs": COSTS, "sf_leads": leads})
    with open_project(root) as project:
        assert project.project.sources["leads"].filters == ()
        (row,) = project.evaluate(["qualified_leads", "cost_per_lead"]).to_dicts()
    assert row["qualified_leads"] == 2 and row["cost_per_lead"] == pytest.approx(499.99 / 2)


def test_a_mapped_timestamp_is_seen_in_the_projects_time_zone(make_project):
    # 03:00 UTC on 1 February is still 31 January in New York: the map's column is converted.
    contacts = [dict(CONTACTS[0], createdate="2025-02-01 03:00:00"), dict(CONTACTS[2], createdate="2025-02-01 06:00:00")]
    root = mapped_project(make_project, tables={"crm": contacts, "costs": COSTS})
    (root / "kpi_engine.yaml").write_text(CONFIG + "timezone: America/New_York\n")
    with open_project(root) as project:
        rows = project.evaluate(["new_contacts"], grain="month", start="2025-01-01", end="2025-03-01").to_dicts()
    assert [(str(r["period"]), r["new_contacts"]) for r in rows] == [("2025-01-01", 1), ("2025-02-01", 1)]


# --------------------------------------------------------------------------- unmapped sources

def test_unavailable_kpis_are_listed_skipped_and_refused(make_project):
    root = mapped_project(make_project)
    runner = CliRunner()
    listing = json.loads(runner.invoke(cli, ["list", str(root), "--format", "json"]).stdout)
    unavailable = {k["name"]: k["unavailable"] for k in listing["kpis"] if k["unavailable"]}
    assert unavailable["nps"] == ["nps_responses"] and unavailable["ltv_to_cac"] == ["customers", "orders"]
    assert "cost_per_lead" not in unavailable
    assert {s["name"]: s["relation"] for s in listing["sources"]}["nps_responses"] == "(unmapped)"

    validated = runner.invoke(cli, ["validate", str(root)])
    assert validated.exit_code == 0, validated.output
    assert "Unavailable (source 'nps_responses' is unmapped): nps.\n" in validated.stdout

    everything = runner.invoke(cli, ["evaluate", str(root), "--all", "--format", "json"])
    assert everything.exit_code == 0, everything.output
    (row,) = json.loads(everything.stdout)
    assert "nps" not in row and row["cost_per_lead"] == pytest.approx(499.99 / 3)  # all spend, 3 leads
    assert "nps (needs unmapped nps_responses)" in everything.stderr

    asked = runner.invoke(cli, ["evaluate", str(root), "nps"])
    assert asked.exit_code == 1
    assert "KPI 'nps' is unavailable: it reads source 'nps_responses' (unmapped at " in asked.stderr
    assert "sources.yaml:" in asked.stderr and "Traceback" not in asked.output

    formula = runner.invoke(cli, ["evaluate", str(root), "--formula", "count(email_sends)"])
    assert formula.exit_code == 1 and "reads source 'email_sends' (unmapped at" in formula.stderr


def test_docs_mark_unavailable_kpis(make_project):
    result = CliRunner().invoke(cli, ["docs", str(mapped_project(make_project))])
    section = result.stdout.split("## nps\n")[1].split("\n## ")[0]
    assert "- Unavailable: needs `nps_responses`, declared unmapped" in section
    assert "Unavailable" not in result.stdout.split("## cost_per_lead\n")[1].split("\n## ")[0]


def test_a_dimension_behind_an_unmapped_source_is_not_offered(make_project):
    root = make_project({"s.yaml": """
        sources:
          orders: {table: orders, time: at, relationships: [{to: customers, on: customer_id}]}
          customers: {unmapped: true, primary_key: customer_id, dimensions: [region]}
        kpis:
          revenue: {formula: sum(orders.amount)}
        """}, {"orders": [{"at": "2025-01-01", "customer_id": 1, "amount": 5}]})
    with open_project(root) as project:
        assert project.evaluate(["revenue"]).to_dicts() == [{"revenue": 5, "complete": True}]
        with pytest.raises(QueryError, match="cannot slice by 'region'"):
            project.evaluate(["revenue"], by=["region"])


# --------------------------------------------------------------------------- errors, at file:line:column

def problems(root, offline=False):
    _, errors = check_project(root, describe=not offline)
    return [str(error) for error in errors]


def test_a_mapped_column_the_table_lacks(make_project):
    root = mapped_project(make_project)
    text = (root / "sources.yaml").read_text().replace("spend: cents / 100", "spend: cent / 100")
    (root / "sources.yaml").write_text(text)
    (found,) = problems(root)
    lines = text.splitlines()
    line = next(i for i, l in enumerate(lines, 1) if "cent / 100" in l)
    column = lines[line - 1].index("cent / 100") + 1
    assert f"sources.yaml:{line}:{column} (source 'ad_spend', map 'spend'): " \
           "source 'ad_spend' has no column 'cent'. Did you mean 'cents'?" in found
    assert problems(root, offline=True) == []  # without the warehouse, names cannot be checked


def test_an_unmapped_column_missing_from_the_warehouse_is_one_error_naming_how_to_map_it(make_project):
    root = mapped_project(make_project)
    text = (root / "sources.yaml").read_text().replace("      customer_at: won\n", "")
    (root / "sources.yaml").write_text(text)
    found = problems(root)
    # contacts' time axis, and close_rate's customer_at: one column of one table, one error.
    assert len(found) == 1, found
    assert "'customer_at'" in found[0] and "does not exist in crm" in found[0], found
    assert "map it: 'sources: {contacts: {map: {customer_at: <column or formula>}}}'" in found[0]
    assert "map it: 'sources: {contacts: {map: {customer_at: <column or formula>}}}'" in found[0]
    text = text.replace("      is_qualified: flag\n", "")
    (root / "sources.yaml").write_text(text)
    qualified = [p for p in problems(root) if "'is_qualified'" in p]
    assert len(qualified) == 1
    assert "source 'contacts' reads table 'crm', which has no column 'is_qualified', read by the library " \
           "(the where of source 'leads')" in qualified[0]
    assert "Map it in your project: 'sources: {contacts: {map: {is_qualified:" in qualified[0]
    assert "or declare the source 'unmapped: true'" in qualified[0]


@pytest.mark.parametrize("entry, message", [
    ("spend: max(cents)", "'max' is an aggregate; a source's map and where describe one row."),
    ("spend: cents +", "formula syntax error"),
    ("spend: previous(cents)", "'previous' works on KPI values, not on rows."),
])
def test_map_formulas_are_checked_like_formulas(make_project, entry, message):
    root = mapped_project(make_project)
    text = (root / "sources.yaml").read_text().replace(
        "map: {spend_date: day, channel: \"if(network = 'google', 'ppc', 'paid_social')\", campaign: null, "
        "spend: cents / 100}", f"map:\n      {entry}\n      spend_date: day\n      campaign: null")
    (root / "sources.yaml").write_text(text)
    found = problems(root, offline=True)
    assert len(found) == 1 and message in found[0], found
    line = text.splitlines().index(f"      {entry}") + 1
    assert f"sources.yaml:{line}:" in found[0] and "(source 'ad_spend', map 'spend')" in found[0]


def test_a_where_that_is_not_a_condition(make_project):
    root = make_project({"s.yaml": "sources:\n  people: {table: crm, where: id + 1}\nkpis:\n  n: {formula: count(people)}\n"},
                        {"crm": CONTACTS})
    (found,) = problems(root)
    assert "s.yaml:2:31 (source 'people', where): a source's where must be a condition (true/false), " \
           "but this is a number." in found


@pytest.mark.parametrize("sources, message", [
    ("  a: {extends: b}\n", "s.yaml:2:16 (source 'a'): source 'a' extends unknown source 'b'."),
    ("  a: {extends: b}\n  b: {extends: a}\n", "sources extend each other in a cycle: a -> b -> a."),
    ("  a: {table: null}\n", "source 'a' needs exactly one of 'table' and 'sql'."),
])
def test_source_shape_errors(make_project, sources, message):
    root = make_project({"s.yaml": "sources:\n" + sources})
    with pytest.raises(KpiEngineError) as info:
        with open_project(root):
            pass
    assert message in str(info.value)


def test_the_schema_describes_map_where_extends_and_unmapped(make_project):
    root = make_project({"s.yaml": "sources:\n  a: {table: t, map: {x: [1]}, unmapped: 'yes'}\n"})
    with pytest.raises(ProjectInvalid) as info:
        open_project(root)
    text = str(info.value.errors)
    assert "sources.a.map.x" in text and "sources.a.unmapped must be a boolean" in text
