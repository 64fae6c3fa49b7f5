"""Several sources lined up by key on DuckDB: stacked with UNION ALL and grouped (key_fold.py)
instead of a key union LEFT JOINed to each source. Checked against plain Python over the rows
written here and against the joined shape (the one every other dialect runs), on the cases a
fold could get wrong: a NULL dimension value in some sources only, a key of one source only, a
sum of nothing but NULL amounts, a minimum of text and of a timestamp, KPIs blanked outside their
own rows, --having and --order on a KPI not shown, and the requests it must leave joined."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import pytest

import kpi_engine.compiler as compiler
from kpi_engine.engine import open_project
from sql_parts import named_parts

SPECS = """\
sources:
  leads: {table: leads, time: created_at, dimensions: [channel]}
  spend: {table: spend, time: day, dimensions: [channel]}
  orders: {table: orders, time: ordered_at, dimensions: [channel]}
kpis:
  cost_per_lead: {formula: "sum(spend.amount) / count(leads)", unit: currency}
  leads_count: {formula: "count(leads)"}
  revenue: {formula: "sum(orders.amount)", unit: currency}
  first_product: {formula: "count(orders where product = 'seat')"}
  spend_per_order: {formula: "sum(spend.amount) / count(orders)", unit: currency}
  cheapest: {formula: "min(orders.amount)", unit: currency}
  last_spend_day: {formula: "days_between(min(spend.day), max(spend.day))"}
  products: {formula: "count_distinct(orders.product)"}
"""
LEADS = [  # created_at, channel
    ("2025-01-03 10:00:00", "ppc"), ("2025-01-09 23:59:59", "ppc"), ("2025-01-15 08:00:00", ""),
    ("2025-02-01 00:00:00", "email"), ("2025-02-11 12:00:00", ""), ("2025-03-05 09:00:00", "ppc"),
]
SPEND = [  # day, channel, amount
    ("2025-01-01", "ppc", "100.50"), ("2025-01-20", "ppc", "49.50"), ("2025-01-31", "", "10"),
    ("2025-02-02", "social", "75"), ("2025-03-01", "ppc", ""), ("2025-03-09", "ppc", "20.25"),
]
ORDERS = [  # ordered_at, channel, amount, product
    ("2025-01-05 10:00:00", "ppc", "300", "seat"), ("2025-01-06 11:00:00", "ppc", "", "seat"),
    ("2025-02-07 12:00:00", "email", "", "training"), ("2025-02-08 13:00:00", "email", "", "seat"),
    ("2025-04-01 00:00:00", "", "99.99", "training"),
]


@pytest.fixture
def project(make_project):
    def csv_rows(header, rows):
        return [dict(zip(header, row)) for row in rows]

    return make_project({"specs.yaml": SPECS}, {
        "leads": csv_rows(("created_at", "channel"), LEADS),
        "spend": csv_rows(("day", "channel", "amount"), SPEND),
        "orders": csv_rows(("ordered_at", "channel", "amount", "product"), ORDERS)})


def month(text: str) -> dt.date:
    return dt.date(int(text[:4]), int(text[5:7]), 1)


def reference() -> dict[tuple, dict[str, float | None]]:
    """Plain Python: per (month, channel) of any source, each KPI by docs/semantics.md (no rows
    count 0 and sum 0; a KPI is empty where none of its sources has a row; a CSV's empty channel
    is NULL, one group)."""
    groups: dict[str, dict[tuple, list]] = {"leads": defaultdict(list), "spend": defaultdict(list),
                                            "orders": defaultdict(list)}
    for created, channel in LEADS:
        groups["leads"][(month(created), channel or None)].append(1)
    for day, channel, amount in SPEND:
        groups["spend"][(month(day), channel or None)].append((float(amount) if amount else None, day))
    for ordered, channel, amount, product in ORDERS:
        groups["orders"][(month(ordered), channel or None)].append((float(amount) if amount else None, product))
    keys = set().union(*[set(g) for g in groups.values()])

    def total(values):
        return sum(v for v in values if v is not None)

    rows = {}
    for key in keys:
        leads, spend, orders = (groups[s].get(key) for s in ("leads", "spend", "orders"))
        spent = total(a for a, _ in spend or [])
        days = [dt.date.fromisoformat(d) for _, d in spend or []]
        amounts = [a for a, _ in orders or [] if a is not None]
        rows[key] = {
            "cost_per_lead": spent / len(leads) if leads else None,
            "leads_count": len(leads) if leads else None,
            "revenue": total(amounts) if orders else None,
            "first_product": sum(p == "seat" for _, p in orders) if orders else None,
            "spend_per_order": spent / len(orders) if orders else None,
            "cheapest": min(amounts) if amounts else None,
            "last_spend_day": (max(days) - min(days)).days if days else None,
        }
    return rows


def evaluate(root, kpis, fold: bool, monkeypatch, **options):
    monkeypatch.setattr(compiler, "FOLD_DIALECTS", compiler.FOLD_DIALECTS if fold else ())
    with open_project(root) as kpi_project:
        result = kpi_project.evaluate(kpis, by=["channel"], grain="month", **options)
    monkeypatch.undo()
    return result


KPIS = ["cost_per_lead", "leads_count", "revenue", "first_product", "spend_per_order", "cheapest", "last_spend_day"]


def test_stacked_sources_give_the_reference_and_the_joined_shape(project, monkeypatch):
    folded = evaluate(project, KPIS, True, monkeypatch)
    joined = evaluate(project, KPIS, False, monkeypatch)
    assert "UNION ALL" in folded.sql and "IS NOT DISTINCT FROM" not in folded.sql
    # every source grouped by day first: their day totals are stacked and cut into months once
    parts = named_parts(folded.sql)
    assert "leads_agg_days" in parts and "leads_agg" not in parts
    assert "UNION ALL" not in joined.sql and "IS NOT DISTINCT FROM" in joined.sql
    assert folded.rows == joined.rows
    expected = reference()
    got = {(row[0], row[1]): dict(zip(KPIS, row[2:2 + len(KPIS)])) for row in folded.rows}
    assert set(got) == set(expected)
    for key, values in expected.items():
        for name, value in values.items():
            assert got[key][name] == (value if value is None else pytest.approx(value, rel=1e-12)), \
                (key, name, got[key][name], value)
    # Not vacuous: the NULL channel is a key of several sources, revenue of NULL amounts is 0.
    assert got[(dt.date(2025, 1, 1), None)]["cost_per_lead"] == pytest.approx(10.0)
    assert got[(dt.date(2025, 2, 1), "email")]["revenue"] == 0
    assert got[(dt.date(2025, 2, 1), "social")]["leads_count"] is None


@pytest.mark.parametrize("options", [
    {"having": "revenue > 0"},
    {"order_by": ["-leads_count"], "limit": 3},
    {"start": "2025-01-15", "end": "2025-03-02"},
])
def test_options_read_the_same_rows_either_way(project, monkeypatch, options):
    kpis = ["cost_per_lead", "revenue"]
    folded = evaluate(project, kpis, True, monkeypatch, **options)
    joined = evaluate(project, kpis, False, monkeypatch, **options)
    assert folded.rows == joined.rows and folded.rows


def test_time_functions_over_several_sources_are_stacked_too(project, monkeypatch):
    options = {"formulas": ["cumulative(sum(spend.amount)) / cumulative(count(leads))"]}
    folded = evaluate(project, [], True, monkeypatch, **options)
    joined = evaluate(project, [], False, monkeypatch, **options)
    assert "UNION ALL" in folded.sql and folded.rows == joined.rows
    by_key = {(row[0], row[1]): row[2] for row in folded.rows}
    # ppc to date in March: spend 100.50 + 49.50 + 20.25 (the empty amount adds nothing) over 3 leads
    assert by_key[(dt.date(2025, 3, 1), "ppc")] == pytest.approx((100.50 + 49.50 + 20.25) / 3)
    # social has spend in February and no lead to date: no value
    assert by_key[(dt.date(2025, 2, 1), "social")] is None


def test_fill_and_other_dialects_keep_the_joins(project):
    with open_project(project) as kpi_project:
        filled = kpi_project.compile(["cost_per_lead"], by=["channel"], grain="month", fill=True,
                                     start="2025-01-01", end="2025-04-01").sql()
        postgres = kpi_project.compile(["cost_per_lead"], by=["channel"], grain="month", dialect="postgres",
                                       describe=False).sql()
    assert "IS NOT DISTINCT FROM" in filled and "IS NOT DISTINCT FROM" in postgres
    assert "UNION ALL" not in postgres


def test_a_source_not_grouped_by_day_keeps_its_grouped_rows_stacked(project, monkeypatch):
    """A distinct count does not add up over days, so orders are grouped by month from their rows;
    the sources' month rows are stacked then (not their day totals), and give the same numbers."""
    kpis = ["cost_per_lead", "products"]
    folded = evaluate(project, kpis, True, monkeypatch)
    joined = evaluate(project, kpis, False, monkeypatch)
    assert "UNION ALL" in folded.sql and "leads_agg" in named_parts(folded.sql) and folded.rows == joined.rows
    products = defaultdict(set)
    for ordered, channel, _, product in ORDERS:
        products[(month(ordered), channel or None)].add(product)
    expected = reference()
    got = {(row[0], row[1]): row[2:4] for row in folded.rows}
    assert set(got) == set(expected)  # the keys of every source read
    for key, (cost_per_lead, count) in got.items():
        assert count == (len(products[key]) if key in products else None), key
        assert cost_per_lead == (None if expected[key]["cost_per_lead"] is None
                                 else pytest.approx(expected[key]["cost_per_lead"], rel=1e-12)), key


def test_stacked_day_totals_are_never_cut_into_periods_per_source(project, monkeypatch):
    """When the day totals are stacked, no source's own second step (days_to_periods) is built:
    the fold decides from what the source read knows. Where they are not stacked (PostgreSQL, a
    distinct count that does not add up over days) it is built for each source grouped by day,
    and the two shapes give the same rows."""
    from kpi_engine.source_sql import SourceReader

    built = []
    cut = SourceReader.days_to_periods
    monkeypatch.setattr(SourceReader, "days_to_periods", lambda self, read, *rest: built.append(read.name)
                        or cut(self, read, *rest))
    with open_project(project) as kpi_project:
        stacked = kpi_project.evaluate(["cost_per_lead", "revenue"], by=["channel"], grain="month")
        assert built == [] and "leads_agg" not in named_parts(stacked.sql)
        kpi_project.compile(["cost_per_lead", "revenue"], by=["channel"], grain="month", dialect="postgres",
                            describe=False)
        assert sorted(built) == ["leads_agg", "orders_agg", "spend_agg"]
        built.clear()
        mixed = kpi_project.evaluate(["cost_per_lead", "products"], by=["channel"], grain="month")
        assert sorted(built) == ["leads_agg", "spend_agg"]  # orders: grouped by month from its rows
    joined = evaluate(project, ["cost_per_lead", "revenue"], False, monkeypatch)
    assert stacked.rows == joined.rows
    assert mixed.rows == evaluate(project, ["cost_per_lead", "products"], False, monkeypatch).rows
