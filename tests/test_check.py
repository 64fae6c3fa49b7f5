"""kpi-engine check: targets for the latest complete period, exit 1 on a breach, JSON report."""

import json

from click.testing import CliRunner

from kpi_engine.cli import cli

SPEC = """
sources:
  orders: {table: orders, time: ordered_at, dimensions: [region]}
kpis:
  revenue: {formula: sum(orders.amount), target: {min: 1000}}
  avg_order: {formula: avg(orders.amount), target: {max: 400, direction: lower_is_better}}
  orders_n: {formula: count(orders)}
"""
ORDERS = [  # February 2025 is the last complete month before 2025-03-10
    {"ordered_at": "2025-02-03", "region": "eu", "amount": 300},
    {"ordered_at": "2025-02-10", "region": "eu", "amount": 500},
    {"ordered_at": "2025-02-11", "region": "us", "amount": 100},
    {"ordered_at": "2025-03-01", "region": "us", "amount": 5000},  # the current month: not checked
]


def run(root, *args):
    return CliRunner().invoke(cli, ["check", str(root), "--as-of", "2025-03-10", *args])


def test_a_breach_exits_1_and_says_by_how_much(make_project):
    root = make_project({"s.yaml": SPEC}, {"orders": ORDERS})
    result = run(root)
    assert result.exit_code == 1
    # revenue = 900 < 1000 (off by 100); avg = 300 <= 400; shown as evaluate shows them.
    assert "Targets for the month starting 2025-02-01, complete before 2025-03-10:" in result.stdout
    assert "BREACHED revenue: 900.00 (target >= 1000), off by 100.00" in result.stdout
    assert "OK       avg_order: 300.00 (target <= 400)" in result.stdout
    assert "orders_n" not in result.stdout  # no target, not checked


def test_json_report_by_dimension(make_project):
    root = make_project({"s.yaml": SPEC}, {"orders": ORDERS})
    result = run(root, "--by", "region", "--format", "json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["period"] == "2025-02-01" and report["breached"] == 2
    by = {(r["kpi"], r["dimensions"]["region"]): r for r in report["results"]}
    assert by[("revenue", "eu")]["status"] == "breached" and by[("revenue", "eu")]["gap"] == 200
    assert by[("avg_order", "eu")]["status"] == "ok" and by[("avg_order", "eu")]["value"] == 400
    assert by[("revenue", "us")]["gap"] == 900


def test_all_on_target_exits_0(make_project):
    root = make_project({"s.yaml": SPEC.replace("min: 1000", "min: 500")}, {"orders": ORDERS})
    result = run(root)
    assert result.exit_code == 0 and "0 breached, 2 on target" in result.stdout


def test_without_as_of_the_latest_complete_month_of_the_data_is_checked(make_project):
    # The orders run from 2025-01-02 to 2025-03-01: February is the last month wholly inside the
    # data, whatever today's date is (no --as-of); January starts before the data.
    orders = [{"ordered_at": "2025-01-02", "region": "eu", "amount": 50}] + ORDERS
    root = make_project({"s.yaml": SPEC}, {"orders": orders})
    result = CliRunner().invoke(cli, ["check", str(root), "--format", "json"])
    report = json.loads(result.stdout)
    assert report["period"] == "2025-02-01" and report["basis"].startswith("the latest complete month of the data")
    assert result.exit_code == 1 and report["breached"] == 1  # revenue 900 < 1000
    # orders from 2025-02-03 only: no month is wholly inside the data, nothing to check
    later = make_project({"s.yaml": SPEC}, {"orders": ORDERS}, name="later")
    result = CliRunner().invoke(cli, ["check", str(later)])
    assert result.exit_code == 6 and "no period, no complete month in the data" in result.stdout


def test_a_stale_source_exits_6(make_project):
    # freshness: 3 days, and the latest order is from 2025-03-01, long before today.
    spec = SPEC.replace("dimensions: [region]}", "dimensions: [region], freshness: 3 days}")
    root = make_project({"s.yaml": spec.replace("min: 1000", "min: 500")}, {"orders": ORDERS})
    result = CliRunner().invoke(cli, ["check", str(root)])
    assert result.exit_code == 6, result.output
    assert "STALE    source 'orders' is stale: its latest row is from 2025-03-01" in result.stdout
    assert "1 stale source." in result.stdout


def test_a_kpi_without_data_in_the_checked_period_exits_6(make_project):
    root = make_project({"s.yaml": SPEC}, {"orders": ORDERS})
    result = CliRunner().invoke(cli, ["check", str(root), "--as-of", "2025-06-15", "--format", "json"])
    report = json.loads(result.stdout)
    assert result.exit_code == 6 and report["period"] == "2025-05-01" and report["no_data"] == 2


def test_freshness_needs_a_time_column(make_project):
    spec = "sources:\n  orders: {table: orders, freshness: 2 days}\nkpis:\n  n: {formula: count(orders)}\n"
    root = make_project({"s.yaml": spec}, {"orders": ORDERS})
    result = CliRunner().invoke(cli, ["validate", str(root)])
    assert result.exit_code == 1 and "declares 'freshness' but has no time column" in result.stderr
