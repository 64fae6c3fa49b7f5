"""`kpi-engine export metricflow`: a kpi-engine project written as MetricFlow semantic models and
metrics, then imported back, gives the same numbers as the original on the same data; what
MetricFlow cannot say is reported with its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from dbt_fixture import assert_close, built_example, evaluated
from kpi_engine import open_project
from kpi_engine.cli import cli

SOURCES = """\
sources:
  orders:
    model: fct_orders
    time: ordered_at
    time_axes: [shipped_at]
    primary_key: order_id
    dimensions: [channel]
    relationships: [{to: customers, on: customer_id}]
  customers: {model: dim_customers, time: signed_up_at, primary_key: customer_id, dimensions: [region]}
  balances: {model: fct_balances, time: snapshot_date, primary_key: balance_id}
  big_orders: {model: fct_orders, time: ordered_at, where: amount > 100}
"""

KPIS = """\
kpis:
  revenue: {label: Revenue, formula: sum(orders.amount)}
  paid_revenue:
    formula: sum(orders.amount where status = 'paid' and channel in ('email', 'ppc'))
  order_count: {formula: count(orders), fill_nulls_with: 0}
  buyers: {formula: count_distinct(orders.customer_id)}
  average_order: {formula: avg(orders.amount)}
  p75_order: {formula: 'percentile(orders.amount, 0.75)'}
  median_order: {formula: median(orders.amount)}
  shipped_orders: {formula: count(orders at shipped_at)}
  late_shipments: {formula: count(orders at shipped_at where shipped_at > ordered_at)}
  gift_share: {formula: count(orders where is_gift) / count(orders)}
  paid_share: {formula: paid_revenue / revenue}
  revenue_growth: {formula: "100 * (revenue - previous(revenue, '1 month')) / previous(revenue, '1 month')"}
  revenue_per_buyer: {formula: revenue / buyers}
  net_revenue: {formula: revenue - sum(orders.discount where not is_gift is null)}
  revenue_to_date: {formula: cumulative(revenue)}
  revenue_month_to_date: {formula: "cumulative(sum(orders.amount), 'month')"}
  revenue_7_days: {formula: "rolling(sum(orders.amount), '7 days')"}
  closing_balance: {formula: last(balances.balance per customer_id)}
  opening_snapshot_rows: {formula: first(balances)}
  revenue_last_period: {formula: previous(revenue)}
  revenue_share: {formula: share(revenue)}
  repeat_revenue: {formula: sum(orders.amount where count(orders per customer_id) > 1)}
  big_order_count: {formula: count(big_orders)}
  capped: {formula: "if(revenue > 1000, 1000, revenue)"}
"""

NOT_EXPORTED = ("revenue_last_period", "revenue_share", "repeat_revenue", "big_order_count", "capped")
DAILY = ("revenue_month_to_date", "revenue_7_days")


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    dbt_project, rows = built_example(folder)
    original = folder / "original"
    original.mkdir()
    (original / "kpi_engine.yaml").write_text("name: shop\ndbt: {project_dir: ../dbt_project}\n"
                                              "warehouse: {dbt_profile: shop, target: dev}\n")
    (original / "sources.yaml").write_text(SOURCES)
    (original / "kpis.yaml").write_text(KPIS)
    exported = dbt_project / "models" / "exported"
    runner = CliRunner()
    result = runner.invoke(cli, ["export", "metricflow", str(original), str(exported)])
    assert result.exit_code == 0, result.output
    again = runner.invoke(cli, ["import", "metricflow", str(exported), "-o", str(folder / "imported")])
    assert again.exit_code == 0, again.output
    # One project open at a time: DuckDB shares one instance per database file within a process.
    values = []
    for folder_ in (original, folder / "imported"):
        with open_project(folder_) as project:
            found = {kpi: evaluated(project, kpi, "day" if kpi in DAILY else "month") for kpi in EXPORTED}
            found["revenue by region"] = evaluated(project, "revenue", by=("region",))
            values.append(found)
    yield values[0], values[1], result.output, again.output, exported


EXPORTED = [name for name in yaml.safe_load(KPIS)["kpis"] if name not in NOT_EXPORTED]


@pytest.mark.parametrize("kpi", EXPORTED + ["revenue by region"])
def test_export_then_import_gives_the_same_numbers(projects, kpi):
    before, after, *_ = projects
    assert before[kpi], kpi  # the original has values to compare
    assert_close(after[kpi], before[kpi], kpi)


def test_what_metricflow_cannot_say_is_reported(projects):
    _, _, output, reimport, exported = projects
    lines = output.splitlines()
    for name in NOT_EXPORTED:
        assert any(f"KPI '{name}'" in line and "kpis.yaml:" in line for line in lines), name
    assert any("source 'big_orders'" in line and "row filter" in line for line in lines)
    assert any("'previous(...)'" in line or "previous(x, N)" in line for line in lines)
    metrics = {m["name"]: m for m in yaml.safe_load((exported / "metrics.yml").read_text())["metrics"]}
    assert metrics["paid_share"]["type"] == "ratio"
    assert metrics["revenue_growth"]["type"] == "derived"
    assert {"name": "revenue", "offset_window": "1 month", "alias": "revenue_2"} in \
        metrics["revenue_growth"]["type_params"]["metrics"]
    assert metrics["revenue_month_to_date"]["type_params"]["cumulative_type_params"] == \
        {"grain_to_date": "month", "period_agg": "last"}
    models = {m["name"]: m for m in yaml.safe_load((exported / "semantic_models.yml").read_text())["semantic_models"]}
    closing = next(m for m in models["balances"]["measures"] if m.get("non_additive_dimension", {}).get("window_groupings"))
    assert closing["non_additive_dimension"] == {"name": "snapshot_date", "window_choice": "max",
                                                 "window_groupings": ["customer_id"]}  # an entity added for the key
    assert "Not translated" not in reimport and "Not exported (6):" in output


def test_the_marketing_library_round_trips(tmp_path):
    """The example project (the 39-KPI library on its CSV warehouse): every KPI MetricFlow can say
    gives the same numbers once exported and imported back."""
    example = Path(__file__).resolve().parent.parent / "examples" / "marketing"
    exported = tmp_path / "exported"
    result = CliRunner().invoke(cli, ["export", "metricflow", str(example), str(exported)])
    assert result.exit_code == 0, result.output
    back = tmp_path / "back"
    back.mkdir()
    (back / "kpi_engine.yaml").write_text(f"name: back\nwarehouse: {{adapter: duckdb, data: '{example / 'data'}'}}\n")
    again = CliRunner().invoke(cli, ["import", "metricflow", str(exported), "-o", str(back), "--tables"])
    assert again.exit_code == 0, again.output
    assert "Not translated" not in again.output
    names = [m["name"] for m in yaml.safe_load((exported / "metrics.yml").read_text())["metrics"]
             if "__" not in m["name"]]
    assert len(names) >= 30
    options = dict(grain="quarter", by=["channel"], start="2024-01-01", end="2025-01-01")
    with open_project(example) as project:
        names = [name for name in names if "channel" in project.model().kpi(name).dimensions]
        assert len(names) >= 25
        before = project.evaluate(names, **options).to_dicts()
    with open_project(back) as project:
        after = project.evaluate(names, **options).to_dicts()
    key = lambda row: (row["period"], row["channel"])  # noqa: E731
    after_by_key = {key(row): row for row in after}
    assert {key(row) for row in before} <= set(after_by_key)
    bad = []
    for row in before:
        for name in names:
            want, got = row[name], after_by_key[key(row)][name]
            # A source that extends another with 'where' comes back as a filter inside the aggregate: a
            # channel with rows but none passing it shows 0 rather than empty (docs/dbt.md).
            if want is None and got == 0:
                continue
            if (want is None) != (got is None) or (want is not None and abs(want - got) > 1e-9 * max(1, abs(want))):
                bad.append((name, key(row), want, got))
    assert not bad, bad[:10]


def test_a_conversion_source_and_rows_placed_by_another_time_are_not_exported(tmp_path):
    """Exported as subsets of the contacts, they would count every contact: both are left out,
    with the KPIs that read them, and said so."""
    example = Path(__file__).resolve().parent.parent / "examples" / "marketing"
    result = CliRunner().invoke(cli, ["export", "metricflow", str(example), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "source 'lead_conversions_90d': a conversion source is not exported" in result.output
    assert "source 'won_contacts': it places the rows of source 'contacts' by another time column " \
           "('customer_at')" in result.output
    assert "KPI 'lead_to_customer_rate_90d': it reads source 'lead_conversions_90d', which is not exported" \
        in result.output
    exported = yaml.safe_load((tmp_path / "out" / "metrics.yml").read_text())["metrics"]
    assert not {m["name"] for m in exported} & {"lead_to_customer_rate_90d", "won_contacts", "lead_conversions_90d"}
    models = yaml.safe_load((tmp_path / "out" / "semantic_models.yml").read_text())["semantic_models"]
    assert {"contacts", "orders"} <= {model["name"] for model in models}
