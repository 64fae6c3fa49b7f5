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
