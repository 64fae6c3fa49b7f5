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
    # revenue = 900 < 1000 (off by 100); avg = 300 <= 400.
    assert "BREACHED revenue: 900 (target >= 1000), off by 100" in result.stdout
    assert "OK       avg_order: 300 (target <= 400)" in result.stdout
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
