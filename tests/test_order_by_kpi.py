"""--order by a KPI that is not asked for: it is computed for the ordering alone, is not output,
and its sources add no rows to the result. Orders are worked out by hand from the rows below."""

from __future__ import annotations

import pytest

from kpi_engine.engine import open_project

SPEC = """
sources:
  orders: {table: orders, time: ordered_at, dimensions: [channel]}
  leads: {table: leads, time: created_at, dimensions: [channel]}
kpis:
  revenue: {formula: sum(orders.amount)}
  revenue_change: {formula: revenue - previous(revenue)}
  lead_count: {unit: count, formula: count(leads)}
"""
# Revenue: January ppc 100, email 300; February ppc 500, email 50, tv 1000 (tv has no leads).
# Leads: January ppc 3, email 1, social 2 (social has no orders); February ppc 1, email 2.
# Totals: revenue ppc 600, email 350, tv 1000, social none; leads ppc 4, email 3, social 2.
ORDERS = [{"ordered_at": day, "channel": channel, "amount": amount} for day, channel, amount in [
    ("2025-01-01", "ppc", 100), ("2025-01-15", "email", 300), ("2025-02-03", "ppc", 500),
    ("2025-02-10", "email", 50), ("2025-02-28", "tv", 1000)]]
LEADS = [{"created_at": day, "channel": channel} for day, channel in [
    ("2025-01-01", "ppc"), ("2025-01-02", "ppc"), ("2025-01-03", "ppc"), ("2025-01-04", "email"),
    ("2025-01-05", "social"), ("2025-01-06", "social"), ("2025-02-01", "ppc"), ("2025-02-02", "email"),
    ("2025-02-28", "email")]]


@pytest.fixture
def root(make_project):
    return make_project({"s.yaml": SPEC}, {"orders": ORDERS, "leads": LEADS})


def test_ordered_by_a_kpi_that_is_not_shown(root, run_evaluate):
    out = run_evaluate(root, "lead_count", "--by", "channel", "--order", "-revenue", "--format", "csv").stdout
    # ppc 600, email 350, then social without revenue (empty values sort last); tv has no leads: no row.
    assert out == "channel,lead_count,complete\nppc,4,true\nemail,3,true\nsocial,2,true\n"
    ascending = run_evaluate(root, "lead_count", "--by", "channel", "--order", "revenue", "--format", "csv").stdout
    assert ascending == "channel,lead_count,complete\nemail,3,true\nppc,4,true\nsocial,2,true\n"


def test_the_rows_are_those_of_the_kpis_shown(root, run_evaluate):
    plain = run_evaluate(root, "lead_count", "--by", "channel", "--format", "csv").stdout.splitlines()
    ordered = run_evaluate(root, "lead_count", "--by", "channel", "--order", "-revenue", "--format", "csv").stdout
    assert sorted(plain) == sorted(ordered.splitlines())


def test_with_a_limit_it_is_a_top_n(root, run_evaluate):
    out = run_evaluate(root, "lead_count", "--by", "channel", "--order", "-revenue", "--limit", "1", "--format", "csv")
    assert out.stdout == "channel,lead_count,complete\nppc,4,true\n"


def test_by_a_time_function_kpi(root, run_evaluate):
    # Revenue: January 400, February 1,550: the change is empty in January (no month before), 1,150
    # in February, so February comes first.
    out = run_evaluate(root, "lead_count", "--grain", "month", "--order", "-revenue_change", "--format", "csv")
    assert out.stdout == "period,lead_count,complete\n2025-02-01,3,true\n2025-01-01,6,true\n"


def test_a_kpi_shown_and_one_hidden_as_a_second_key(root, run_evaluate):
    out = run_evaluate(root, "revenue", "--by", "channel", "--order", "-lead_count", "--order", "channel",
                       "--format", "csv")
    # Leads: ppc 4, email 3, then tv, which has none (an empty value sorts last). Social has leads
    # but no orders: no row, as the rows are those of revenue's source.
    assert out.stdout == "channel,revenue,complete\nppc,600.0,true\nemail,350.0,true\ntv,1000.0,true\n"


def test_an_unknown_name_suggests_kpis_too(root, run_evaluate):
    result = run_evaluate(root, "lead_count", "--order", "-revenu", code=1)
    assert result.stderr == ("Error: cannot order by 'revenu': it is neither an output column nor a KPI of the "
                             "project. Did you mean 'revenue'?\n")


def test_the_python_api(root):
    with open_project(root) as project:
        result = project.evaluate(["lead_count"], by=["channel"], order_by=["-revenue"])
    assert result.names == ["channel", "lead_count", "complete"]
    assert [row["channel"] for row in result.to_dicts()] == ["ppc", "email", "social"]


def test_ties_are_broken_by_the_keys_so_a_limit_keeps_the_same_rows(root, run_evaluate):
    """By month and channel, lead counts tie: January email 1 and February ppc 1; January social 2
    and February email 2. Among equal counts the rows come in key order (period, then channel), so
    --limit cuts the same rows on every run and on every warehouse."""
    out = run_evaluate(root, "lead_count", "--by", "channel", "--grain", "month", "--order", "lead_count",
                       "--limit", "3", "--format", "csv").stdout
    assert out.splitlines()[1:] == ["2025-01-01,email,1,true", "2025-02-01,ppc,1,true",
                                    "2025-01-01,social,2,true"]
    by_channel_first = run_evaluate(root, "lead_count", "--by", "channel", "--grain", "month", "--order",
                                    "-lead_count", "--order", "channel", "--format", "csv").stdout
    # Descending counts; among the 2s, channel (asked) before period (the key left).
    assert by_channel_first.splitlines()[1:4] == ["2025-01-01,ppc,3,true", "2025-02-01,email,2,true",
                                                  "2025-01-01,social,2,true"]
