"""The series and its window stage folded into the output SELECT on DuckDB (window_merge.py):
the same rows as the three-SELECT shape for every kind of time function, alone and with other
sources, and the shapes it must leave alone. (tests/test_time.py checks the numbers of the time
functions against plain Python; it runs the folded shape wherever it applies.)"""

from __future__ import annotations

from pathlib import Path

import pytest

import kpi_engine.compiler as compiler
from kpi_engine.engine import open_project
from row_compare import same_rows
from sql_parts import named_parts

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "marketing"

FORMULAS = [
    "cumulative(count(leads))",
    "cumulative(sum(ad_spend.spend), 'year')",
    "rolling(sum(ad_spend.spend), 3)",
    "100 * share(count(leads))",
    "count(leads) - previous(count(leads), 2)",
    "cumulative(sum(orders.amount)) / nullif(cumulative(count(leads)), 0)",
    "rolling(min(orders.amount), 2)",
    "previous(max(orders.amount))",
]


def merged(sql: str) -> bool:
    return not {"series", "windowed"} & set(named_parts(sql))


@pytest.fixture(scope="module")
def example():
    with open_project(EXAMPLE) as kpi_project:
        yield kpi_project


@pytest.fixture()
def evaluate(example, monkeypatch):
    def run(merge: bool, formulas, **options):
        monkeypatch.setattr(compiler, "INLINE_DIALECTS", compiler.INLINE_DIALECTS if merge else frozenset())
        try:
            return example.evaluate(formulas=formulas, **options)
        finally:
            monkeypatch.undo()
    return run


@pytest.mark.parametrize("formula", FORMULAS)
@pytest.mark.parametrize("options", [dict(grain="month", by=["channel"]), dict(grain="week")])
def test_one_time_function_folded_gives_the_same_rows(evaluate, formula, options):
    folded = evaluate(True, [formula], **options)
    kept = evaluate(False, [formula], **options)
    assert merged(folded.sql) and not merged(kept.sql)
    assert folded.rows and same_rows(folded.rows, kept.rows)


@pytest.mark.parametrize("formulas", [["cumulative(count(leads))"], ["cumulative(count(leads))", "count(customers)"],
                                      ["100 * share(count(leads))"]])
def test_without_a_grain_the_running_total_is_the_total(evaluate, formulas):
    # no grain: cumulative() is the series' own column, no window function (found by
    # test_consistency's second project: the column was left reading the series)
    folded = evaluate(True, formulas, by=["channel"])
    assert merged(folded.sql) and folded.rows
    assert same_rows(folded.rows, evaluate(False, formulas, by=["channel"]).rows)


def test_several_sources_and_kpis_folded_give_the_same_rows(evaluate):
    # each KPI blanked outside its own source's rows (a CASE around the window function)
    formulas = ["a=cumulative(count(leads))", "b=rolling(sum(ad_spend.spend), 2)", "c=count(orders)"]
    folded = evaluate(True, formulas, grain="month", by=["channel"], order_by=["-a"], limit=7)
    kept = evaluate(False, formulas, grain="month", by=["channel"], order_by=["-a"], limit=7)
    assert merged(folded.sql) and "CASE" in folded.sql
    assert len(folded.rows) == 7 and same_rows(folded.rows, kept.rows)


@pytest.mark.parametrize("formulas, options", [
    # a window value read twice: folded, the window would be computed twice
    (["100 * (count(leads) - previous(count(leads))) / previous(count(leads))"], dict(grain="month")),
    # the requested periods are kept after the windows (a WHERE between)
    (["cumulative(count(leads))"], dict(grain="month", start="2025-03-01")),
    # --having filters on the windows' values
    (["cumulative(count(leads))"], dict(grain="month", by=["channel"], having="cumulative(count(leads)) > 5")),
    # a window over a window: two stages
    (["previous(cumulative(count(leads)))"], dict(grain="month")),
])
def test_shapes_with_something_between_are_left_as_they_are(evaluate, formulas, options):
    result = evaluate(True, formulas, **options)
    assert not merged(result.sql)
    assert same_rows(result.rows, evaluate(False, formulas, **options).rows)


def test_other_dialects_keep_the_series_and_the_windows(example):
    sql = example.compile(formulas=["cumulative(count(leads))"], grain="month", dialect="postgres").sql()
    assert {"series", "windowed"} <= set(named_parts(sql, "postgres"))
