"""The marketing library: its names, the articles' worked examples, overrides, one-query evaluation."""

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kpi_engine.cli import cli
from kpi_engine.engine import open_project
from kpi_engine.spec import load_project

ROOT = Path(__file__).resolve().parent.parent
LIBRARY_NAMES = """new_contacts qualified_leads mql_count sql_count cost_per_lead close_rate lead_to_customer_rate
lead_to_opportunity_rate time_to_conversion_days traffic_to_lead_rate leads_per_customer customer_acquisition_cost
cost_per_sale customer_lifetime_value ltv_to_cac mrr arr nps roi revenue revenue_growth_rate email_list_size
email_open_rate email_click_through_rate inbox_placement_rate unsubscribe_rate list_growth_rate list_churn_rate
website_sessions organic_sessions bounce_rate avg_session_duration social_shares social_engagement
follower_growth_rate customer_retention_rate repeat_customer_revenue lead_value lead_to_customer_rate_90d""".split()
CONFIG = "name: team\nwarehouse: {adapter: duckdb, data: data}\ninclude: [builtin:marketing]\n"


def test_every_catalogue_kpi_is_in_the_library_and_fully_described():
    assert len(LIBRARY_NAMES) == 39
    with open_project(ROOT / "definitions" / "marketing") as project:
        model = project.model(describe=False)
    for name in LIBRARY_NAMES:
        kpi = model.kpi(name)
        assert kpi.spec.label and kpi.spec.description and kpi.spec.unit and kpi.spec.formula, name
        assert "channel" in kpi.dimensions, name
    assert model.kpi("ltv_to_cac").spec.target["min"] == 3


def leads(n, start="2025-01-01", customers=1):
    """n complete rows of the standard leads table, the first ``customers`` of them won."""
    day = dt.date.fromisoformat(start)
    rows = []
    for i in range(n):
        created = dt.datetime.combine(day + dt.timedelta(days=i % 28), dt.time(10))
        won = created + dt.timedelta(days=40) if i < customers else None
        rows.append({"lead_id": i, "created_at": created, "channel": "paid_social", "campaign": "c",
                     "industry": "retail", "company_size": "1-10", "is_qualified": "true",
                     "mql_at": created, "sql_at": won or "", "opportunity_at": won or "",
                     "customer_at": won or "", "customer_id": i if won else ""})
    return rows


def customers(n, acquired="2025-01-15"):
    return [{"customer_id": i, "lead_id": i, "acquired_at": acquired, "channel": "ppc", "industry": "x",
             "plan": "pro", "churned_at": ""} for i in range(n)]


def evaluate(make_project, tables, kpis, **options):
    root = make_project({}, tables, config=CONFIG)
    with open_project(root) as project:  # only the tables these KPIs read need to exist
        return project.evaluate(kpis, **options).to_dicts()[0]


def test_cost_per_lead_article_example(make_project):
    # "$1,000 on paid social brings 20 leads: a CPL of $50."
    spend = [{"spend_date": "2025-01-05", "channel": "paid_social", "campaign": "c", "spend": "1000.00"}]
    row = evaluate(make_project, {"ad_spend": spend, "leads": leads(20)}, ["cost_per_lead"])
    assert row["cost_per_lead"] == 50


@pytest.mark.parametrize("won, cac", [(5000, 100), (1000, 500)])
def test_customer_acquisition_cost_article_example(make_project, won, cac):
    # The article: "$500,000 of spend, 5,000 customers: a CAC of $500". Its division is off:
    # 500,000 / 5,000 is 100. The formula stands; $500 needs 1,000 customers.
    spend = [{"spend_date": f"2025-01-{d:02d}", "channel": "ppc", "campaign": "c", "spend": "20000.00"}
             for d in range(1, 26)]
    row = evaluate(make_project, {"ad_spend": spend, "customers": customers(won)}, ["customer_acquisition_cost"])
    assert row["customer_acquisition_cost"] == cac


def test_lead_to_customer_rate_article_example(make_project):
    # "15 sales from 100 leads in the first quarter: 15%."
    row = evaluate(make_project, {"leads": leads(100), "customers": customers(15, "2025-02-10")},
                   ["lead_to_customer_rate"],
                   grain="quarter", start="2025-01-01", end="2025-04-01")
    assert row["lead_to_customer_rate"] == 15


def test_traffic_to_lead_rate_article_example(make_project):
    # "1,000 visits and 100 leads: a 10:1 ratio, 10%."
    sessions = [{"session_id": i, "started_at": "2025-03-03 12:00:00", "channel": "organic", "landing_page": "/",
                 "duration_seconds": 30, "is_bounce": "false"} for i in range(1000)]
    row = evaluate(make_project, {"web_sessions": sessions, "leads": leads(100, start="2025-03-01")},
                   ["traffic_to_lead_rate"])
    assert row["traffic_to_lead_rate"] == 10


def test_cost_per_sale_article_example(make_project):
    # "CPL of $100 and 5 leads per sale: $500 per sale." 10 leads, $1,000, 2 customers.
    spend = [{"spend_date": "2025-01-05", "channel": "ppc", "campaign": "c", "spend": "1000.00"}]
    row = evaluate(make_project, {"ad_spend": spend, "leads": leads(10), "customers": customers(2, "2025-01-20")},
                   ["cost_per_lead", "leads_per_customer", "cost_per_sale"])
    assert (row["cost_per_lead"], row["leads_per_customer"], row["cost_per_sale"]) == (100, 5, 500)


def test_nps_from_a_known_list_of_scores(make_project):
    scores = [10, 10, 9, 9, 9, 8, 7, 7, 6, 3, 0, 10]  # 6 promoters, 3 passives, 3 detractors of 12
    responses = [{"response_id": i, "responded_at": "2025-01-10 10:00:00", "customer_id": i, "channel": "email",
                  "score": s} for i, s in enumerate(scores)]
    row = evaluate(make_project, {"nps_responses": responses}, ["nps"])
    assert row["nps"] == pytest.approx(100 * 6 / 12 - 100 * 3 / 12)


def test_redefining_a_kpi_is_a_three_line_file(make_project):
    data = {"leads": leads(20, customers=5)}
    data["leads"][0]["is_qualified"] = "false"  # a converted lead that is not qualified
    root = make_project({"close_rate.yaml": """
        kpis:
          close_rate:
            formula: 100 * count(leads where customer_at is not null and is_qualified) / qualified_leads
        """}, data, config=CONFIG)
    with open_project(root) as project:
        spec = project.project.kpis["close_rate"]
        assert spec.label == "Close rate" and spec.unit == "percent"  # kept from the library
        assert spec.overrides.file == "builtin:marketing/funnel.yaml"
        row = project.evaluate(["close_rate", "new_contacts"]).to_dicts()[0]
    assert row["close_rate"] == pytest.approx(100 * 4 / 19)
    listing = CliRunner().invoke(cli, ["list", str(root), "--format", "json"])
    (entry,) = [k for k in __import__("json").loads(listing.stdout)["kpis"] if k["name"] == "close_rate"]
    assert entry["defined_in"].endswith("close_rate.yaml:2") and entry["overrides"].startswith("builtin:marketing/")


def test_mapping_a_standard_source_onto_another_table(make_project):
    rows = leads(7)
    rows[0]["is_qualified"] = "false"
    root = make_project({"sources.yaml": "sources:\n  contacts:\n    table: crm_contacts\n"},
                        {"crm_contacts": rows}, config=CONFIG)
    with open_project(root) as project:
        row = project.evaluate(["new_contacts", "qualified_leads"]).to_dicts()[0]
        assert (row["new_contacts"], row["qualified_leads"]) == (7, 6)  # leads extend contacts: same table
        assert project.project.sources["contacts"].time == "created_at"  # the rest of the library's source stays
        assert project.project.sources["leads"].table == "crm_contacts"


def test_a_missing_table_fails_only_the_requests_that_read_it(make_project):
    root = make_project({}, {"leads": leads(3)}, config=CONFIG)
    with open_project(root) as project:
        assert project.evaluate(["new_contacts"]).to_dicts()[0]["new_contacts"] == 3
        with pytest.raises(Exception, match="table 'ad_spend' does not exist"):
            project.evaluate(["cost_per_lead"])
    result = CliRunner().invoke(cli, ["validate", str(root)])
    assert result.exit_code == 1 and "table 'orders' does not exist" in result.stderr


def test_the_whole_library_is_one_query_with_one_cte_per_source():
    with open_project(ROOT / "examples" / "marketing") as project:
        names = list(project.project.kpis)
        query = project.compile(names, by=["channel"], grain="month")
    source_ctes = [c.alias for c in query.expression.ctes if c.alias.endswith("_agg")]
    assert sorted(source_ctes) == sorted(f"{s}_agg" for s in query.sources)
    # Every standard source once; opportunities is read inside the leads CTE, one row per lead, and
    # won_contacts inside the conversion source lead_conversions_90d.
    assert len(source_ctes) == len(set(source_ctes)) == 16 and "opportunities" not in query.sources
    assert "lead_conversions_90d" in query.sources and "won_contacts" not in query.sources


def test_evaluate_all_without_a_grain_leaves_out_growth_rates():
    result = CliRunner().invoke(cli, ["evaluate", str(ROOT / "examples" / "marketing"), "--all", "--format", "json"])
    assert result.exit_code == 0
    assert "left out 3 KPIs: revenue_growth_rate (needs --grain), customer_retention_rate (needs --grain), " \
           "follower_growth_rate (needs --grain)" in result.stderr
    (row,) = __import__("json").loads(result.stdout)
    assert len(row) == len(load_project(ROOT / "examples" / "marketing").kpis) - 3 + 1  # and "complete"
    # no range: the whole of the data, but close_rate's latest cohorts are not 90 days old yet
    assert row["complete"] is False


def test_docs_kpis_md_is_generated_from_the_library():
    generated = CliRunner().invoke(cli, ["docs", str(ROOT / "definitions" / "marketing")])
    assert generated.exit_code == 0
    assert (ROOT / "docs" / "kpis.md").read_text() == generated.stdout, \
        "docs/kpis.md is stale: run kpi-engine docs definitions/marketing -o docs/kpis.md"


def test_explain_shows_meaning_formula_tree_dimensions_and_sql():
    result = CliRunner().invoke(cli, ["explain", str(ROOT / "examples" / "marketing"), "ltv_to_cac",
                                      "--dialect", "snowflake"])
    assert result.exit_code == 0
    text = result.stdout
    assert text.startswith("ltv_to_cac: LTV:CAC ratio (ratio)\n")
    assert "  - KPI customer_lifetime_value\n    - KPI revenue\n      - source orders (orders, time ordered_at)\n" in text
    assert "Dimensions: channel\nTarget: at least 3; higher is better\n" in text
    assert '"orders_agg" AS (' in text and "SUM(" in text
    unknown = CliRunner().invoke(cli, ["explain", str(ROOT / "examples" / "marketing"), "ltv_to_cak"])
    assert unknown.exit_code == 1 and "Did you mean 'ltv_to_cac'?" in unknown.stderr
