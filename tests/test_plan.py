"""The printable logical plan (``compile --plan``, issue 15's design): it names every grouping the
SQL has, the rows each one reads, the windows and the filters, and its formula text reads back
as the same formula."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlglot
from click.testing import CliRunner
from sqlglot import exp

from kpi_engine.cli import cli
from kpi_engine.engine import open_project
from kpi_engine.plan import formula
from kpi_engine.resolve import resolve_formula

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "marketing"


@pytest.fixture(scope="module")
def project():
    with open_project(EXAMPLE) as opened:
        yield opened


def titles(step) -> list[str]:
    return [step.title] + [title for child in step.inputs for title in titles(child)]


def notes(step) -> list[str]:
    return list(step.notes) + [note for child in step.inputs for note in notes(child)]


REQUESTS = [
    (["cost_per_lead"], dict(by=["channel"], grain="quarter")),
    (["revenue_growth_rate", "new_contacts"], dict(by=["channel"], grain="month", start="2025-01-15",
                                                   end="2025-06-01")),
    (["mrr"], dict(grain="month", where="channel != 'email'")),
    ([], dict(formulas=["x=previous(cumulative(count(leads)))", "y=rolling(count_distinct(orders.customer_id), "
                                                                   "'30 days')"], grain="month", start="2025-01-01",
              end="2025-05-01")),
]


@pytest.mark.parametrize("kpis, options", REQUESTS)
def test_every_grouping_of_the_sql_is_a_step_of_the_plan(project, kpis, options):
    query = project.compile(kpis, **options)
    plan = query.plan
    groupings = {title.split(":")[0].split(" ", 1)[1] for title in titles(plan)
                 if title.startswith(("Aggregate ", "Windows "))}
    # The query's named parts: its CTEs, and the subqueries that stand where a CTE read once was
    # (DuckDB writes those in place, cte_inline.py).
    tree = sqlglot.parse_one(query.sql(), read="duckdb")
    ctes = {part.alias for part in tree.find_all(exp.CTE, exp.Subquery) if part.alias}
    # The grouping the output reads may be the output's own SELECT (output_fold.py): one step at most.
    folded = groupings - ctes
    assert groupings and len(folded) <= 1, (groupings, ctes)
    if folded:
        assert tree.args.get("group") is not None
    # Every source CTE the query reads is in the plan (snapshot times and day totals are notes).
    assert {name for name in ctes if name.endswith("_agg") or name.endswith("_history")} <= groupings
    assert plan.title.startswith("Output: " + ", ".join(c.name for c in query.columns))


def test_the_plan_says_which_rows_each_source_reads_and_why(project):
    plan = project.compile(["revenue_growth_rate"], by=["channel"], grain="month", start="2025-01-15",
                           end="2025-06-01").plan
    text = plan.text()
    # --from falls inside January: the plain aggregate reads from the 15th, the window's history
    # read from December 1 (one month back), and the output shows January on.
    assert "time: ordered_at (timestamp) from 2025-01-15 to 2025-06-01 (end excluded)" in text
    assert "time: ordered_at (timestamp) from 2024-12-01 to 2025-06-01 (end excluded)" in text
    assert "period >= 2025-01-01: the requested periods" in text
    assert "previous(sum(orders.amount where status = 'paid'), 1 period back)" in text
    assert "channel: through orders -> customers (many-to-one)" in text


def test_nested_and_day_windows_appear_as_their_stages(project):
    plan = project.compile(formulas=["x=previous(cumulative(count(leads)))",
                                     "y=rolling(count_distinct(orders.customer_id), '30 days')"],
                           grain="month", start="2025-01-01", end="2025-05-01").plan
    steps = titles(plan)
    assert steps.index("Window stage 2: by period") < steps.index("Window stage 1: by period")
    assert any("every month from 2024-01-01 to 2025-05-01" in note for note in notes(plan))
    assert any(note.startswith("count_distinct(orders.customer_id): rolling, the 30 days to the period's last day")
               for note in notes(plan))


FORMULAS = [
    "sum(orders.amount where status = 'paid' and amount between 10 and 500) / count(leads)",
    "100 * (revenue - previous(revenue)) / previous(revenue)",
    "-(count(leads) - 1) * 2 - (3 - 4)",
    "count(leads where channel not in ('ppc', 'email') or not is_qualified)",
    "coalesce(nullif(sum(ad_spend.spend), 0), 1) % 7",
    "count(leads where count(opportunities per lead_id) > 0)",
    "avg(days_between(leads.created_at, leads.customer_at)) - 1.50",
    "count(leads where customer_at is not null) / (count(leads) / 2)",
]


@pytest.mark.parametrize("text", FORMULAS)
def test_formula_text_reads_back_as_the_same_formula(project, text):
    model = project.model(describe=False)
    expr, _ = resolve_formula(model, text, "kpi", "test formula")
    again, _ = resolve_formula(model, formula(expr), "kpi", "printed formula")
    assert again == expr, formula(expr)


def test_compile_plan_on_the_command_line():
    runner = CliRunner()
    text = runner.invoke(cli, ["compile", str(EXAMPLE), "cost_per_lead", "--grain", "month", "--plan"])
    assert text.exit_code == 0, text.output
    assert text.output.startswith("Output: period, cost_per_lead\n") and "Aggregate leads_agg" in text.output
    assert "WITH" not in text.output
    as_json = runner.invoke(cli, ["compile", str(EXAMPLE), "cost_per_lead", "--plan", "json"])
    assert as_json.exit_code == 0, as_json.output
    tree = json.loads(as_json.output)
    assert tree["step"] == "Output: cost_per_lead"
    assert {child["step"] for child in tree["inputs"][0]["inputs"]} == {"Aggregate ad_spend_agg: ad_spend by nothing "
                                                                        "(one row)", "Aggregate leads_agg: leads by "
                                                                        "nothing (one row)"}
    explained = runner.invoke(cli, ["explain", str(EXAMPLE), "mrr"])
    assert explained.exit_code == 0 and "Plan (by month):" in explained.output
    assert explained.output.index("Plan (by month):") < explained.output.index("SQL (by month):")
