"""The output's formulas written in the SELECT that groups, on DuckDB (output_fold.py): the
numbers against plain Python over the rows written here, ORDER BY and LIMIT on output columns
and on KPIs that are not output, and the shapes that must be left as they are (each compared
with the same request compiled without the fold)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import pytest

import kpi_engine.compiler as compiler
from kpi_engine.engine import open_project
from row_compare import same_rows
from sql_parts import named_parts

SPECS = """\
sources:
  deals: {table: deals, time: closed_at, dimensions: [region]}
  calls: {table: calls, time: called_on, dimensions: [region]}
kpis:
  win_rate: {formula: "100 * count(deals where won = 1) / count(deals)"}
  won_amount: {formula: "sum(deals.amount where won = 1)"}
  avg_amount: {formula: "avg(deals.amount)"}
  deal_count: {formula: "count(deals)"}
  call_count: {formula: "count(calls)"}
"""
DEALS = [  # closed_at, region, amount, won
    ("2025-01-03 10:00:00", "north", "120.5", "1"), ("2025-01-09 23:59:59", "north", "80", "0"),
    ("2025-01-31 12:00:00", "south", "300", "1"), ("2025-02-01 00:00:00", "north", "45.25", "1"),
    ("2025-02-14 08:30:00", "south", "10", "0"), ("2025-02-20 09:00:00", "south", "", "0"),
    ("2025-03-02 11:11:11", "east", "999", "1"), ("2025-03-15 16:00:00", "north", "60", "0"),
    ("2025-03-28 07:00:00", "south", "75", "1"), ("2025-03-29 07:00:00", "south", "25", "1"),
]
CALLS = [("2025-01-05", "north"), ("2025-02-07", "west"), ("2025-03-02", "east")]
KPIS = ["win_rate", "won_amount", "avg_amount", "deal_count"]


def reference() -> dict[tuple, dict]:
    groups = defaultdict(list)
    for at, region, amount, won in DEALS:
        groups[(dt.date(int(at[:4]), int(at[5:7]), 1), region)].append((float(amount) if amount else None, won == "1"))
    rows = {}
    for key, deals in groups.items():
        amounts = [a for a, _ in deals if a is not None]
        rows[key] = {"win_rate": 100 * sum(w for _, w in deals) / len(deals),
                     "won_amount": sum(a for a, w in deals if w and a is not None),
                     "avg_amount": sum(amounts) / len(amounts) if amounts else None,
                     "deal_count": len(deals)}
    return rows


@pytest.fixture
def project(make_project):
    root = make_project({"specs.yaml": SPECS}, {
        "deals": [dict(zip(("closed_at", "region", "amount", "won"), row)) for row in DEALS],
        "calls": [dict(zip(("called_on", "region"), row)) for row in CALLS]})
    with open_project(root) as opened:
        yield opened


@pytest.fixture
def unfolded(monkeypatch):
    """Run a callable with the fold turned off (the shape every other dialect gets)."""
    def run(call):
        monkeypatch.setattr(compiler, "fold_output", lambda query: query)
        try:
            return call()
        finally:
            monkeypatch.undo()
    return run


def folded(result) -> bool:
    return "deals_agg" not in named_parts(result.sql) and "GROUP BY" in result.sql.rsplit("FROM", 1)[-1]


def test_formulas_beside_the_group_by_give_the_numbers_of_plain_python(project):
    result = project.evaluate(KPIS, by=["region"], grain="month")
    assert folded(result)
    assert [column.name for column in result.columns][:6] == ["period", "region", *KPIS]
    got = {(row["period"], row["region"]): {k: row[k] for k in KPIS} for row in result.to_dicts()}
    want = reference()
    assert set(got) == set(want)
    for key, values in want.items():
        for kpi, value in values.items():
            assert got[key][kpi] == (None if value is None else pytest.approx(value, rel=1e-12)), (key, kpi)
    assert [(row["period"], row["region"]) for row in result.to_dicts()] == sorted(want)  # ordered by the keys


def test_ordered_by_an_output_kpi_with_a_limit(project, unfolded):
    options = dict(by=["region"], grain="month", order_by=["-won_amount"], limit=3)
    result = project.evaluate(KPIS, **options)
    assert folded(result)
    want = reference()
    # ties (0 won) broken by the keys, as the engine documents
    top = sorted(want, key=lambda key: (-want[key]["won_amount"], key))[:3]
    assert [(row["period"], row["region"]) for row in result.to_dicts()] == top
    assert same_rows(result.rows, unfolded(lambda: project.evaluate(KPIS, **options)).rows)


def test_ordered_by_a_kpi_that_is_not_output(project, unfolded):
    # the order's formula reads the grouped values too: written with the aggregates, beside the GROUP BY
    options = dict(by=["region"], grain="month", order_by=["avg_amount"])
    result = project.evaluate(["deal_count"], **options)
    assert folded(result)
    want = reference()
    nulls_last = sorted(want, key=lambda key: (want[key]["avg_amount"] is None, want[key]["avg_amount"] or 0, key))
    assert [(row["period"], row["region"]) for row in result.to_dicts()] == nulls_last
    assert [row["deal_count"] for row in result.to_dicts()] == [want[key]["deal_count"] for key in nulls_last]
    assert same_rows(result.rows, unfolded(lambda: project.evaluate(["deal_count"], **options)).rows)


@pytest.mark.parametrize("kpis, options", [
    (KPIS, dict(by=["region"], grain="month", having="deal_count > 1")),  # a WHERE on the formulas
    (["formula:100 * (count(deals) - previous(count(deals))) / previous(count(deals))"], dict(grain="month")),
    (["deal_count", "call_count"], dict(by=["region"], grain="month")),  # two sources (keys stacked)
    (["deal_count"], dict(grain="month", start="2025-01-01", end="2025-06-01", fill=True)),  # a dense series
])
def test_other_shapes_give_the_same_rows_folded_or_not(project, unfolded, kpis, options):
    formulas = [k.split(":", 1)[1] for k in kpis if k.startswith("formula:")]
    names = [k for k in kpis if not k.startswith("formula:")]
    result = project.evaluate(names, formulas=formulas, **options) if formulas else project.evaluate(names, **options)
    kept = unfolded(lambda: project.evaluate(names, formulas=formulas, **options) if formulas
                    else project.evaluate(names, **options))
    assert result.rows and same_rows(result.rows, kept.rows)


def test_having_is_left_as_it_is(project):
    result = project.evaluate(KPIS, by=["region"], grain="month", having="deal_count > 1")
    assert not folded(result)
    want = {key for key, values in reference().items() if values["deal_count"] > 1}
    assert {(row["period"], row["region"]) for row in result.to_dicts()} == want


def test_other_dialects_keep_the_grouped_part(project):
    sql = project.compile(KPIS, by=["region"], grain="month", dialect="postgres", describe=False).sql()
    assert "deals_agg" in named_parts(sql, "postgres")
