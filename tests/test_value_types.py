"""Values keep their kind in every output: a KPI that counts whole things is written as integers
(CSV, JSON, Parquet, pandas, the terminal), decimals are written without the noise of binary
arithmetic or at the KPI's declared precision, and pandas gets datetime64 periods.

The warehouse returns every KPI as a DOUBLE; the expected texts below are worked out by hand from
the rows written here."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner

from kpi_engine.cli import cli
from kpi_engine.engine import open_project
from kpi_engine.values import counts_whole, decimal_places

SPEC = """
sources:
  orders: {table: orders, time: ordered_at, dimensions: [channel]}
  visits: {table: visits, time: visited_at}
kpis:
  orders_n: {formula: count(orders)}
  items: {unit: count, formula: sum(orders.qty)}
  revenue: {unit: currency, formula: sum(orders.amount)}
  revenue_third: {unit: currency, format: ',.2f', formula: sum(orders.amount) / 3}
  half_orders: {unit: count, formula: count(orders) / 2}
  visits_n: {formula: count(visits)}
"""
# January: orders of 0.1 and 0.2 (qty 2 and 1), a visit. February: one order of 10.25 (qty 4).
# March: a visit only, so the order KPIs are empty there (outside their own rows).
ORDERS = [{"ordered_at": "2025-01-05", "channel": "ppc", "qty": 2, "amount": 0.1},
          {"ordered_at": "2025-01-09", "channel": "email", "qty": 1, "amount": 0.2},
          {"ordered_at": "2025-02-03", "channel": "ppc", "qty": 4, "amount": 10.25}]
VISITS = [{"visited_at": "2025-01-02"}, {"visited_at": "2025-03-04"}]
KPIS = ["orders_n", "items", "revenue", "revenue_third", "half_orders", "visits_n"]


@pytest.fixture
def root(make_project):
    return make_project({"s.yaml": SPEC}, {"orders": ORDERS, "visits": VISITS})


def evaluate(root, *args):
    result = CliRunner().invoke(cli, ["evaluate", str(root), *KPIS, "--grain", "month", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_warehouse_gives_doubles_with_noise(root):
    """The premise: DuckDB returns 2.0 for two orders and 0.30000000000000004 for 0.1 + 0.2."""
    with open_project(root) as project:
        rows = project.evaluate(["orders_n", "revenue"], grain="month").rows
    assert rows[0][1:3] == (2.0, 0.1 + 0.2) and isinstance(rows[0][1], float) and 0.1 + 0.2 != 0.3


def test_csv_writes_counts_as_integers_and_decimals_without_noise(root):
    # revenue_third: 0.3 / 3 = 0.1 and 10.25 / 3 = 3.41666... written at its format's 2 places;
    # half_orders (unit count): 2 / 2 = 1 is whole, 1 / 2 = 0.5 is not and keeps its decimals.
    expected = ("period,orders_n,items,revenue,revenue_third,half_orders,visits_n,complete\n"
                "2025-01-01,2,3,0.3,0.1,1,1,false\n"
                "2025-02-01,1,4,10.25,3.42,0.5,,false\n"
                "2025-03-01,,,,,,1,false\n")
    assert evaluate(root, "--format", "csv") == expected


def test_csv_streamed_to_a_file_is_the_same(root, tmp_path):
    target = tmp_path / "out.csv"
    evaluate(root, "-o", target)
    assert target.read_text() == evaluate(root, "--format", "csv")


def test_json_writes_counts_as_integers(root, tmp_path):
    text = evaluate(root, "--format", "json", "--to", "2025-02-01")  # January; the data start on the 2nd
    assert text == ('[\n  {\n    "period": "2025-01-01",\n    "orders_n": 2,\n    "items": 3,\n    "revenue": 0.3,\n'
                    '    "revenue_third": 0.1,\n    "half_orders": 1,\n    "visits_n": 1,\n    "complete": false\n'
                    '  }\n]\n')
    target = tmp_path / "out.json"
    evaluate(root, "-o", target)
    assert json.loads(target.read_text())[1] == {"period": "2025-02-01", "orders_n": 1, "items": 4, "revenue": 10.25,
                                                 "revenue_third": 3.42, "half_orders": 0.5, "visits_n": None,
                                                 "complete": False}
    assert '"orders_n": 1, "items": 4,' in target.read_text()  # the text itself has no '.0'


def test_the_terminal_shows_counts_without_decimals(root):
    lines = [line.rstrip() for line in evaluate(root, "--to", "2025-02-01").splitlines()]
    assert lines[2].split("│") == ["2025-01-01 ", "        2 ", "     3 ", "   $0.30 ", "         $0.10 ",
                                  "           1 ", "        1 ", " no"]


def test_parquet_has_integer_columns(root, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    target = tmp_path / "out.parquet"
    evaluate(root, "-o", target)
    table = pq.read_table(target)
    assert {field.name: str(field.type) for field in table.schema} == {
        "period": "date32[day]", "orders_n": "int64", "items": "int64", "revenue": "double",
        "revenue_third": "double", "half_orders": "double", "visits_n": "int64", "complete": "bool"}
    assert table.column("orders_n").to_pylist() == [2, 1, None]
    assert table.column("half_orders").to_pylist() == [1.0, 0.5, None]


def test_an_empty_parquet_file_keeps_the_column_types(root, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    target = tmp_path / "out.parquet"
    evaluate(root, "-o", target, "--from", "2030-01-01", "--to", "2030-02-01")
    assert [str(field.type) for field in pq.read_table(target).schema] == [  # half_orders: unit count
        "date32[day]", "int64", "int64", "double", "double", "int64", "int64", "bool"]


def test_a_later_parquet_batch_that_does_not_fit_is_refused_with_its_row(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from kpi_engine.compiler import OutputColumn
    from kpi_engine.errors import OutputError
    from kpi_engine.output import write_stream

    columns = [OutputColumn("n", "kpi", "count", whole=True)]
    with pytest.raises(OutputError) as raised:
        write_stream("parquet", columns, iter([[(1.0,), (2.0,)], [(2.5,)]]), tmp_path / "out.parquet")
    assert str(raised.value) == ("row 3 has 2.5 in column 'n', whose earlier rows were whole numbers: a Parquet "
                                 "column has one type. Give the KPI a unit other than 'count' if its values can be "
                                 "fractions, or write CSV or JSON.")
    assert not (tmp_path / "out.parquet").exists()
    write_stream("parquet", columns, iter([[(1.0,)], [(3.0,)]]), tmp_path / "ok.parquet")
    assert pq.read_table(tmp_path / "ok.parquet").column("n").to_pylist() == [1, 3]


def test_pandas_gets_integers_nullable_integers_and_datetime64_periods(root):
    pd = pytest.importorskip("pandas")
    with open_project(root) as project:
        frame = project.evaluate(KPIS, grain="month").to_pandas()
        whole = project.evaluate(["orders_n"], grain="month", end=dt.date(2025, 3, 1)).to_pandas()
        dicts = project.evaluate(["orders_n", "revenue"]).to_dicts()
    assert {name: str(kind) for name, kind in frame.dtypes.items()} == {
        "period": "datetime64[s]", "orders_n": "Int64", "items": "Int64", "revenue": "float64",
        "revenue_third": "float64", "half_orders": "float64", "visits_n": "Int64", "complete": "bool"}
    assert list(frame["period"]) == [pd.Timestamp("2025-01-01"), pd.Timestamp("2025-02-01"), pd.Timestamp("2025-03-01")]
    assert frame["orders_n"].tolist()[:2] == [2, 1] and frame["orders_n"].isna().tolist() == [False, False, True]
    assert str(whole["orders_n"].dtype) == "int64" and whole["orders_n"].tolist() == [2, 1]  # no empty cell
    assert dicts == [{"orders_n": 3, "revenue": 0.1 + 0.2 + 10.25, "complete": True}]
    assert type(dicts[0]["orders_n"]) is int


@pytest.mark.parametrize("formula, unit, whole", [
    ("count(orders)", "number", True),
    ("count_distinct(orders.channel)", None, True),
    ("count(orders) + 2 * count(visits) - 1", None, True),
    ("count(orders) % 7", None, True),
    ("-count(orders)", None, True),
    ("count(orders) / 2", None, False),
    ("count(orders) * 1.5", None, False),
    ("sum(orders.qty)", None, False),  # the column's values may be fractions
    ("sum(orders.qty)", "count", True),  # the unit says it counts
    ("round(sum(orders.amount))", None, True),
    ("round(sum(orders.amount), 0)", None, True),
    ("round(sum(orders.amount), 1)", None, False),
    ("if(count(orders) > 1, count(orders), null)", None, True),
    ("coalesce(count(orders), 0)", None, True),
    ("greatest(count(orders), count(visits))", None, True),
    ("previous(count(orders))", None, True),
    ("rolling(count(orders), 3)", None, True),
    ("cumulative(count(orders), 'year')", None, True),
    ("share(count(orders))", None, False),
    ("orders_n + visits_n", None, True),  # KPIs that count
    ("items - orders_n", None, True),  # items counts by its unit
    ("orders_n + revenue", None, False),
])
def test_which_formulas_count_whole_things(root, formula, unit, whole):
    from kpi_engine.resolve import resolve_formula

    with open_project(root) as project:
        model = project.model()
        expr, _ = resolve_formula(model, formula)
        assert counts_whole(model, expr, unit) is whole


@pytest.mark.parametrize("spec, places", [(",.2f", 2), (">10.1F", 1), (".1%", 3), (",.0f", 0), (",", None),
                                          (".3g", None), (None, None), (">50", None)])
def test_the_digits_a_format_fixes(spec, places):
    assert decimal_places(spec) == places
