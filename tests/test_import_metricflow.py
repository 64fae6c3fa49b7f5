"""`kpi-engine import metricflow`: the shop's semantic layer (examples/dbt_project) imported and
evaluated on seeded rows must give the numbers MetricFlow's documented semantics give, computed
here in plain Python over the same rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner

from dbt_fixture import assert_close, built_example, by_period, evaluated, month, percentile_cont
from kpi_engine import open_project
from kpi_engine.cli import cli


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mf")
    dbt_project, rows = built_example(folder)
    result = CliRunner().invoke(cli, ["import", "metricflow", str(dbt_project / "models"), "-o", str(folder / "kpis")])
    assert result.exit_code == 0, result.output
    with open_project(folder / "kpis") as project:
        yield project, rows, result.output


def _per_month(rows, key, aggregate):
    return {period: aggregate(items) for period, items in by_period(rows, key).items()}


def _sum(column):
    return lambda items: sum(row[column] for row in items if row[column] is not None)


SIMPLE = {
    "revenue": ("ordered_at", _sum("amount")),
    "orders": ("ordered_at", len),
    "net_revenue": ("ordered_at", lambda items: sum(r["amount"] - r["discount"] for r in items)),
    "buyers": ("ordered_at", lambda items: len({r["customer_id"] for r in items})),
    "average_order_value": ("ordered_at", lambda items: sum(r["amount"] for r in items) / len(items)),
    "smallest_order": ("ordered_at", lambda items: min(r["amount"] for r in items)),
    "largest_order": ("ordered_at", lambda items: max(r["amount"] for r in items)),
    # sum_boolean: SUM(CASE WHEN is_gift THEN 1 ELSE 0 END); a NULL flag adds 0
    "gift_orders": ("ordered_at", lambda items: sum(1 for r in items if r["is_gift"] is True)),
    "median_order": ("ordered_at", lambda items: percentile_cont([r["amount"] for r in items], 0.5)),
    "p90_order": ("ordered_at", lambda items: percentile_cont([r["amount"] for r in items], 0.9)),
    # the measure's own agg_time_dimension: placed in the month it shipped; unshipped orders nowhere
    "shipped_revenue": ("shipped_at", _sum("amount")),
    "paid_revenue": ("ordered_at", lambda items: sum(r["amount"] for r in items if r["status"] == "paid")),
}


@pytest.mark.parametrize("kpi", sorted(SIMPLE))
def test_simple_metrics_match_metricflow(shop, kpi):
    project, rows, _ = shop
    key, aggregate = SIMPLE[kpi]
    assert_close(evaluated(project, kpi), _per_month(rows["fct_orders"], key, aggregate), kpi)


def test_create_metric_measure_counts_non_null_keys(shop):
    project, rows, _ = shop
    expected = _per_month(rows["dim_customers"], "signed_up_at", lambda items: sum(1 for r in items
                                                                                    if r["customer_id"] is not None))
    assert_close(evaluated(project, "signups"), expected, "signups")


def test_non_additive_dimension_with_and_without_groupings(shop):
    project, rows, _ = shop
    closing, opening = {}, {}
    for period, items in by_period(rows["fct_balances"], "snapshot_date").items():
        # window_groupings [customer], window_choice max: each customer's own latest day of the month
        latest = {}
        for row in items:
            latest[row["customer_id"]] = max(latest.get(row["customer_id"], row["snapshot_date"]), row["snapshot_date"])
        closing[period] = sum(r["balance"] for r in items if r["snapshot_date"] == latest[r["customer_id"]])
        # no groupings, window_choice min: the month's first snapshot day, all customers on it
        first_day = min(r["snapshot_date"] for r in items)
        opening[period] = sum(r["balance"] for r in items if r["snapshot_date"] == first_day)
    assert_close(evaluated(project, "closing_balance"), closing, "closing_balance")
    assert_close(evaluated(project, "opening_book"), opening, "opening_book")


def test_ratio_and_derived_metrics(shop):
    project, rows, _ = shop
    orders = rows["fct_orders"]
    revenue = _per_month(orders, "ordered_at", _sum("amount"))
    paid = _per_month(orders, "ordered_at", lambda items: sum(r["amount"] for r in items if r["status"] == "paid"))
    assert_close(evaluated(project, "paid_share"), {m: paid[m] / revenue[m] for m in revenue}, "paid_share")
    email = _per_month(orders, "ordered_at", lambda items: sum(r["channel"] == "email" for r in items) / len(items))
    assert_close(evaluated(project, "email_order_share"), email, "email_order_share")
    buyers = _per_month(orders, "ordered_at", lambda items: len({r["customer_id"] for r in items}))
    assert_close(evaluated(project, "revenue_per_buyer"), {m: revenue[m] / buyers[m] for m in revenue},
                 "revenue_per_buyer")
    growth = {}
    for period, value in revenue.items():
        before = revenue.get((period - dt.timedelta(days=1)).replace(day=1))
        growth[period] = 100 * (value - before) / before if before else None
    assert_close(evaluated(project, "revenue_growth"), growth, "revenue_growth")


def test_cumulative_metrics(shop):
    project, rows, _ = shop
    orders = rows["fct_orders"]
    months = sorted({month(r["ordered_at"]) for r in orders})
    # all time, period_agg last: everything up to the month's end
    to_date = {m: sum(r["amount"] for r in orders if month(r["ordered_at"]) <= m) for m in months}
    assert_close(evaluated(project, "revenue_to_date"), to_date, "revenue_to_date")
    days = sorted({r["ordered_at"] for r in orders})
    window = {d: sum(r["amount"] for r in orders if d - dt.timedelta(days=6) <= r["ordered_at"] <= d) for d in days}
    assert_close(evaluated(project, "revenue_7_days", grain="day"), window, "revenue_7_days", extra_zero=False)
    mtd = {d: sum(r["amount"] for r in orders if month(r["ordered_at"]) == month(d) and r["ordered_at"] <= d)
           for d in days}
    assert_close(evaluated(project, "revenue_month_to_date", grain="day"), mtd, "revenue_month_to_date")


def test_dimensions_of_a_joined_model(shop):
    """group by customer__region: the order's customer's region (foreign entity -> relationship)."""
    project, rows, _ = shop
    region = {c["customer_id"]: c["region"] for c in rows["dim_customers"]}
    expected: dict = {}
    for row in rows["fct_orders"]:
        key = (month(row["ordered_at"]), region[row["customer_id"]])
        expected[key] = expected.get(key, 0) + row["amount"]
    assert_close(evaluated(project, "revenue", by=("region",)), expected, "revenue by region")


def test_report_names_what_is_not_translated(shop):
    _, _, output = shop
    lines = output.splitlines()
    emea = next(line for line in lines if "'emea_revenue'" in line)
    assert emea.strip().startswith("semantic.yml:") and "semantic model 'customers'" in emea
    assert not any("'signup_to_order'" in line for line in lines)  # translated (test below)
    text = (Path(__file__).parent.parent / "examples/dbt_project/models/semantic.yml").read_text().splitlines()
    line = int(emea.split(":")[1])
    assert text[line - 1].strip() == "- name: emea_revenue"
    assert any("'revenue_7_days'" in line and "day grain" in line for line in lines)


def _import(tmp_path, text, *extra):
    (tmp_path / "mf").mkdir(exist_ok=True)
    (tmp_path / "mf" / "models.yml").write_text(text)
    return CliRunner().invoke(cli, ["import", "metricflow", str(tmp_path / "mf"), "-o", str(tmp_path / "out"),
                                    *extra])


def test_nothing_translated_exits_1_and_says_why(tmp_path):
    result = _import(tmp_path, """\
semantic_models:
  - name: visits
    model: "{{ source('web', 'visits') }}"
""")
    assert result.exit_code == 1
    assert "models.yml:2: semantic model 'visits': its model" in result.output
    assert "nothing could be translated" in result.output
    assert not (tmp_path / "out" / "metricflow_sources.yaml").exists()


def test_untranslatable_constructs_are_reported_one_by_one(tmp_path):
    result = _import(tmp_path, """\
semantic_models:
  - name: visits
    model: ref('visits')
    defaults: {agg_time_dimension: visited_at}
    entities: [{name: visit, type: primary, expr: visit_id}]
    dimensions:
      - {name: visited_at, type: time, type_params: {time_granularity: day}}
      - {name: device, type: categorical, expr: "case when mobile then 'm' else 'd' end"}
    measures:
      - {name: visits, agg: count, expr: visit_id}
      - {name: p50_exact, agg: percentile, expr: seconds, agg_params: {percentile: 0.5, use_discrete_percentile: true}}
metrics:
  - {name: visits, type: simple, type_params: {measure: visits}}
  - {name: p50_exact, type: simple, type_params: {measure: p50_exact}}
  - name: monthly_visits
    type: simple
    type_params: {measure: visits}
    filter: "{{ TimeDimension('visit__visited_at', 'month') }} = '2025-01-01'"
  - name: big_visits
    type: simple
    type_params: {measure: visits}
    filter: "{{ Metric('visits', group_by=['visit']) }} > 3"
""", "--tables")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "models.yml:8: dimension 'visits.device'" in out and "CASE" in out
    assert "metric 'p50_exact' (simple): a discrete percentile" in out
    assert "metric 'monthly_visits' (simple)" in out and "truncates 'visited_at' to months" in out
    assert "metric 'big_visits' (simple)" in out and "metric's value" in out
    kpis = (tmp_path / "out" / "metricflow_kpis.yaml").read_text()
    assert "visits:" in kpis and "count(visits.visit_id)" in kpis and "p50_exact" not in kpis
    assert "table: visits" in (tmp_path / "out" / "metricflow_sources.yaml").read_text()


def test_ratio_filter_applies_to_both_sides_and_offset_to_grain(shop):
    project, rows, _ = shop
    email = [r for r in rows["fct_orders"] if r["channel"] == "email"]
    expected = _per_month(email, "ordered_at",
                          lambda items: sum(r["amount"] for r in items if r["status"] == "paid")
                          / sum(r["amount"] for r in items))
    assert_close(evaluated(project, "email_paid_share"), expected, "email_paid_share")
    # offset_to_grain month at the day grain: the day's orders less those of the month's first day
    per_day: dict = {}
    for row in rows["fct_orders"]:
        per_day[row["ordered_at"]] = per_day.get(row["ordered_at"], 0) + 1
    got = evaluated(project, "orders_since_month_start", grain="day")
    assert set(got) == set(per_day)
    # MetricFlow has no value where the month's first day has no orders; kpi-engine counts that day as 0
    # (docs/dbt.md, "a period with no rows"): compare where MetricFlow has one
    compared = {d: n - per_day[d.replace(day=1)] for d, n in per_day.items() if d.replace(day=1) in per_day}
    assert len(compared) > 100
    assert_close({d: got[d] for d in compared}, compared, "orders_since_month_start")


def test_yaml_of_the_wrong_shape_is_reported_not_a_traceback(tmp_path):
    result = _import(tmp_path, """\
semantic_models:
  - name: visits
    model: ref('visits')
    defaults: [visited_at]
    measures: [{name: visits, agg: count, expr: 1}]
  - name: sessions
    model: ref('sessions')
    label: 12
    entities: "not a list"
    dimensions: [just_a_string, {name: visited_at, type: time}]
    measures: [{name: sessions, agg: count, expr: 1}]
metrics:
  - {name: visits, type: simple, type_params: {measure: visits}}
  - {name: weird, type: ratio, type_params: "abc"}
  - {name: sessions, type: simple, type_params: {measure: sessions}, label: [1, 2]}
""", "--tables")
    assert result.exit_code == 0, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    assert "models.yml:2: semantic model 'visits': its YAML does not have the documented shape" in result.output
    assert "models.yml:14: metric 'weird' (ratio): its YAML does not have the documented shape" in result.output
    kpis = (tmp_path / "out" / "metricflow_kpis.yaml").read_text()
    assert "count(sessions)" in kpis and "label: '[1, 2]'" in kpis


def test_the_latest_yaml_spec_is_named_as_not_read_yet(tmp_path):
    result = _import(tmp_path, """\
models:
  - name: fct_visits
    description: not a semantic model
  - name: fct_orders
    semantic_model: true
    columns:
      - name: order_id
""")
    assert result.exit_code == 1
    assert "models.yml:4: semantic model of model 'fct_orders': it is written in dbt's latest YAML spec" in result.output
    assert "fct_visits" not in result.output


def test_a_slowly_changing_dimension_is_not_joined_as_if_it_had_one_row_per_key(tmp_path):
    result = _import(tmp_path, """\
semantic_models:
  - name: tiers
    model: ref('customer_tiers')
    entities: [{name: customer, type: natural, expr: customer_id}]
    dimensions:
      - {name: tier, type: categorical}
      - name: valid_from
        type: time
        type_params: {time_granularity: day, validity_params: {is_start: true}}
      - name: valid_to
        type: time
        type_params: {time_granularity: day, validity_params: {is_end: true}}
  - name: visits
    model: ref('visits')
    entities: [{name: visit, type: primary, expr: visit_id}, {name: customer, type: foreign, expr: customer_id}]
    dimensions: [{name: visited_at, type: time, type_params: {time_granularity: day}}]
    measures: [{name: visits, agg: count, expr: 1}]
metrics:
  - {name: visits, type: simple, type_params: {measure: visits}}
""", "--tables")
    assert result.exit_code == 0, result.output
    assert "models.yml:2: semantic model 'tiers': it is a slowly changing dimension" in result.output
    sources = (tmp_path / "out" / "metricflow_sources.yaml").read_text()
    assert "tiers" not in sources and "relationships" not in sources


def test_a_conversion_metric_matches_metricflow(shop):
    """signup_to_order: each order is attributed to its customer's signup when it is placed within
    30 days after it (MetricFlow: the closest preceding base event within the window), counted in
    the signup's month; the rate divides by the month's signups."""
    project, rows, _ = shop
    signups = {c["customer_id"]: c["signed_up_at"] for c in rows["dim_customers"]}
    converted: dict = {}
    for order in rows["fct_orders"]:
        signed = signups.get(order["customer_id"])
        if signed is not None and signed <= order["ordered_at"] <= signed + dt.timedelta(days=30):
            converted[month(signed)] = converted.get(month(signed), 0) + 1
    base = {m: len(items) for m, items in by_period(rows["dim_customers"], "signed_up_at").items()}
    want = {m: converted.get(m, 0) / n for m, n in base.items()}
    assert_close(evaluated(project, "signup_to_order"), want, "signup_to_order")
