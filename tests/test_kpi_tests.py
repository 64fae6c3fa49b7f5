"""kpi-engine test: YAML unit tests of KPIs, run on embedded DuckDB, with readable failures."""

from pathlib import Path

from click.testing import CliRunner

from kpi_engine.cli import cli

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = "name: team\nwarehouse: {adapter: postgres, host: nowhere.invalid}\ninclude: [builtin:marketing]\n"


def run(root, *names):
    return CliRunner().invoke(cli, ["test", str(root), *names])


def test_the_library_tests_pass_whatever_the_warehouse(make_project):
    # The project's warehouse is a PostgreSQL server that does not exist: tests never touch it.
    result = run(make_project({}, config=LIBRARY))
    assert result.exit_code == 0, result.output
    assert "PASS cost_per_lead_article_example (builtin:marketing)" in result.stdout
    assert result.stdout.endswith("10 passed, 0 failed.\n")


def test_a_redefined_kpi_shows_what_changed(make_project):
    root = make_project({"close_rate.yaml": """
        kpis:
          close_rate:
            formula: 100 * count(leads where sql_at is not null) / qualified_leads
        """}, config=LIBRARY)
    result = run(root, "close_rate_is_a_cohort_reading", "nps_from_known_scores")
    assert result.exit_code == 1
    assert "FAIL close_rate_is_a_cohort_reading (builtin:marketing)\n" \
           "     [period=2025-01-01] close_rate: expected 25, got 0.0\n" in result.stdout
    assert "PASS nps_from_known_scores" in result.stdout and result.stdout.endswith("1 passed, 1 failed.\n")


def test_a_project_test_with_missing_and_unexpected_rows(make_project):
    root = make_project({"t.yaml": """
        sources:
          orders: {table: orders, time: ordered_at, dimensions: [region]}
        kpis:
          revenue: {formula: sum(orders.amount)}
        tests:
          by_region:
            by: [region]
            given:
              orders:
                - {ordered_at: 2025-01-05, region: eu, amount: 10}
                - {_repeat: 3, ordered_at: 2025-01-06, region: us, amount: 5}
            expect:
              - {region: eu, revenue: 10}
              - {region: apac, revenue: 1}
        """})
    result = run(root)
    assert result.exit_code == 1
    assert "     [region=apac] expected a row, got none\n     [region=us] unexpected row\n" in result.stdout
    unknown = run(root, "by_regoin")
    assert unknown.exit_code == 1 and "Did you mean 'by_region'?" in unknown.stderr


# --- tests keyed by source, run against the project's map ---------------------------------------

MAPPED = """
sources:
  contacts:
    table: crm_people
    map: {lead_id: person, created_at: created, channel: src, is_qualified: "stage != 'subscriber'",
          campaign: null, industry: null, company_size: null, mql_at: null, sql_at: null, customer_at: won}
  ad_spend:
    table: costs
    map: {spend_date: day, spend: cents / 100, campaign: null}
"""


def test_the_library_tests_run_through_a_remapped_source(make_project):
    # Renamed columns are written under the warehouse's names and read back through the map; the
    # test gives is_qualified itself, so its formula is left aside. nps_responses has no data.
    root = make_project({"map.yaml": MAPPED + "  nps_responses: {unmapped: true}\n"}, config=LIBRARY)
    result = run(root)
    assert result.exit_code == 0, result.output
    assert "PASS contacts_who_are_not_leads_do_not_count_as_leads (builtin:marketing)\n" in result.stdout
    assert "SKIP nps_from_known_scores (builtin:marketing): needs source nps_responses, which the project " \
           "declares unmapped\n" in result.stdout
    assert result.stdout.endswith("9 passed, 0 failed, 1 skipped (the SKIP lines say why).\n")


def test_a_mapped_formula_runs_when_the_test_gives_the_columns_it_reads(make_project):
    root = make_project({"map.yaml": MAPPED + """
tests:
  spend_in_cents:
    kpis: [cost_per_lead]
    given:
      ad_spend:
        - {day: 2025-01-05, cents: 100000, channel: ppc}
      contacts:
        - {_repeat: 4, created_at: 2025-01-06 10:00:00, stage: lead}
        - {created_at: 2025-01-06 10:00:00, stage: subscriber}
    expect:
      - {cost_per_lead: 250}
"""}, config=LIBRARY)
    # 1,000.00 $ read from cents through the map, 4 leads: stage != 'subscriber' is computed too.
    result = run(root, "spend_in_cents")
    assert result.exit_code == 0, result.output


def test_a_redefined_source_reading_shows_in_the_library_tests(make_project):
    # Placing contacts by the day they became MQLs changes which period a lead belongs to.
    root = make_project({"s.yaml": "sources:\n  contacts: {time: mql_at}\n"}, config=LIBRARY)
    result = run(root, "cost_per_lead_article_example")
    assert result.exit_code == 1
    assert "[channel=paid_social] cost_per_lead: expected 50, got None" in result.stdout


def test_rows_keyed_by_a_table_name_say_which_source_to_use(make_project):
    root = make_project({"t.yaml": """
        tests:
          old_style:
            kpis: [new_contacts]
            given:
              leads_table: [{created_at: 2025-01-01}]
            expect: [{new_contacts: 1}]
        sources:
          people: {table: leads_table, time: created_at}
        kpis:
          new_contacts: {formula: count(people)}
        """})
    result = run(root)
    assert result.exit_code == 1
    assert "the test gives rows for 'leads_table', which is not a source. Test rows are keyed by source, in the " \
           "source's columns: use people." in result.stdout
