"""Named ad-hoc formulas: --formula 'cpl=spend / lead_count' names its column, keeps the unit of
the KPIs it reads, and a name that is a KPI, a dimension or another output column is refused.
Expected values are worked out by hand from the rows below."""

from __future__ import annotations

import json

import pytest

from kpi_engine.adhoc import unit_of
from kpi_engine.engine import open_project
from kpi_engine.resolve import resolve_formula

SPEC = """
sources:
  ad_spend: {table: ad_spend, time: day, dimensions: [channel]}
  leads: {table: leads, time: created_at, dimensions: [channel]}
kpis:
  spend: {unit: currency, format: ',.0f', formula: sum(ad_spend.spend)}
  lead_count: {unit: count, formula: count(leads)}
  budget: {unit: currency, formula: max(ad_spend.budget)}
  days_to_call: {unit: days, formula: avg(leads.wait_days)}
  score: {unit: score, formula: avg(leads.score)}
"""
# A budget of 2000 on every spend row. ppc: 1000 spent, 2 leads (waits 2 and 4 days, scores 8 and 6); email: 100 spent, 4 leads
# (waits 1, 1, 1, 5; scores 10, 10, 0, 0).
SPEND = [{"day": "2025-01-01", "channel": "ppc", "spend": 600, "budget": 2000},
         {"day": "2025-01-20", "channel": "ppc", "spend": 400, "budget": 2000},
         {"day": "2025-01-10", "channel": "email", "spend": 100, "budget": 2000}]
LEADS = [{"created_at": f"2025-01-{day:02d}", "channel": channel, "wait_days": wait, "score": score}
         for day, channel, wait, score in [(1, "ppc", 2, 8), (30, "ppc", 4, 6), (11, "email", 1, 10),
                                           (12, "email", 1, 10), (13, "email", 1, 0), (14, "email", 5, 0)]]


@pytest.fixture
def root(make_project):
    return make_project({"s.yaml": SPEC}, {"ad_spend": SPEND, "leads": LEADS})


def test_a_named_formula_is_a_column_with_the_unit_it_keeps(root, run_evaluate):
    out = run_evaluate(root, "--formula", "cpl=spend / lead_count", "--formula", "per_lead = budget / lead_count",
                   "--by", "channel", "--order", "-cpl").stdout
    lines = [line.rstrip() for line in out.splitlines()]
    # ppc: 1000 / 2 = 500, 2000 / 2 = 1000; email: 100 / 4 = 25, 2000 / 4 = 500. Currency both.
    assert lines == ["channel ┃     cpl ┃  per_lead ┃ complete",
                     "━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━",
                     "ppc     │ $500.00 │ $1,000.00 │ yes",
                     "email   │  $25.00 │   $500.00 │ yes",
                     "2 rows"]


def test_named_columns_in_csv_and_json(root, run_evaluate):
    csv = run_evaluate(root, "--formula", "leads_x2=2 * lead_count", "--formula", "count(leads)", "--format", "csv").stdout
    assert csv == "leads_x2,formula_2,complete\n12,6,true\n"  # 2 * 6 leads; an unnamed one keeps its old name
    rows = json.loads(run_evaluate(root, "--formula", "avg_score=score", "--by", "channel", "--format", "json").stdout)
    assert [(row["channel"], row["avg_score"]) for row in rows] == [("email", 5.0), ("ppc", 7.0)]  # 20/4, 14/2


def test_a_formula_that_is_one_kpi_keeps_its_format(root, run_evaluate):
    out = run_evaluate(root, "--formula", "total=spend").stdout
    assert out.splitlines()[2].split("│")[0].strip() == "$1,100"  # ',.0f' of spend


def test_the_python_api_names_and_units(root):
    with open_project(root) as project:
        result = project.evaluate(formulas=["cpl=spend/lead_count", "ratio=lead_count/lead_count"], by="channel")
    assert [(c.name, c.unit) for c in result.columns] == [("channel", None), ("cpl", "currency"),
                                                          ("ratio", "ratio"), ("complete", None)]
    assert {row["channel"]: row["cpl"] for row in result.to_dicts()} == {"ppc": 500.0, "email": 25.0}


@pytest.mark.parametrize("formula, unit", [
    ("spend", "currency"),
    ("spend + budget", "currency"),
    ("spend - 100", "currency"),
    ("-spend", "currency"),
    ("spend * 1.2", "currency"),
    ("spend / 1000", "currency"),
    ("spend / lead_count", "currency"),  # a cost per lead
    ("days_to_call * lead_count", "days"),  # an average times a count is a total
    ("budget / spend", "ratio"),
    ("lead_count / lead_count", "ratio"),
    ("lead_count + 1", "count"),
    ("2 * lead_count", "count"),
    ("lead_count * lead_count", "number"),
    ("spend * budget", "number"),
    ("spend + lead_count", "number"),
    ("spend / days_to_call", "number"),
    ("1 / spend", "number"),
    ("round(spend, 2)", "currency"),
    ("coalesce(spend, 0)", "currency"),
    ("greatest(spend, budget)", "currency"),
    ("if(spend > 0, spend, budget)", "currency"),
    ("if(spend > 0, spend, lead_count)", "number"),
    ("previous(spend)", "currency"),
    ("rolling(score, 3)", "score"),
    ("share(spend)", "ratio"),
    ("count(leads)", "count"),
    ("sum(ad_spend.spend) / count(leads)", "number"),  # a column's sum has no unit
    ("100", "number"),
])
def test_the_unit_a_formula_keeps(root, formula, unit):
    with open_project(root) as project:
        model = project.model()
        assert unit_of(model, resolve_formula(model, formula)[0])[0] == unit


@pytest.mark.parametrize("formula, message", [
    ("spend=sum(ad_spend.spend)", "Error: --formula spend: the formula name 'spend' is a KPI of the project; an output "
                                  "column needs a name of its own. Name the formula otherwise, e.g. "
                                  "'spend_adhoc=sum(ad_spend.spend)', or ask for the KPI itself: 'spend'.\n"),
    ("channel=count(leads)", "Error: --formula channel: the formula name 'channel' is a dimension; an output column "
                             "needs a name of its own. Name the formula otherwise, e.g. "
                             "'channel_adhoc=count(leads)'.\n"),
    ("complete = count(leads)", "Error: --formula complete: the formula name 'complete' is an output column; an output "
                                "column needs a name of its own. Name the formula otherwise, e.g. "
                                "'complete_adhoc=count(leads)'.\n"),
])
def test_a_name_that_clashes_is_refused(root, formula, message, run_evaluate):
    assert run_evaluate(root, "--formula", formula, code=1).stderr == message


def test_two_formulas_of_one_name_are_refused(root, run_evaluate):
    result = run_evaluate(root, "--formula", "a=count(leads)", "--formula", "a=spend", code=1)
    assert result.stderr.startswith("Error: --formula a: the formula name 'a' is the name of another formula;")


def test_an_error_in_a_named_formula_names_it(root, run_evaluate):
    result = run_evaluate(root, "--formula", "x=count(lead)", code=1)
    assert result.stderr.splitlines()[0] == "Error: formula 'x': unknown source 'lead'. Did you mean 'leads'?"


def test_a_comparison_is_not_a_name(root, run_evaluate):
    # 'lead_count >= 3' starts with a name but is a comparison: not named, and not a number.
    result = run_evaluate(root, "--formula", "lead_count >= 3", code=1)
    assert "the formula must give a number" in result.stderr
