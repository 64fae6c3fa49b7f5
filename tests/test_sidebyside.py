"""The side-by-side suite (benchmarks/sidebyside.py) on the shipped example data: every
hand-written shape of every query returns the engine's rows (same keys and columns, floats within
1e-9). The hand-written SQL is an independent statement of each KPI's semantics, so a compiler
change that alters a number of the suite fails here before it reaches a benchmark run."""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
DATA = BENCH.parent / "examples" / "marketing" / "data"


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    saved = list(sys.path)
    sys.path.insert(0, str(BENCH))
    try:
        import run  # benchmarks/run.py
        import sidebyside  # benchmarks/sidebyside.py
    finally:
        sys.path[:] = saved  # the scripts put benchmarks/ first; the test's path stays as it was
    folder = tmp_path_factory.mktemp("sidebyside")
    db_file = folder / "warehouse.duckdb"
    connection = duckdb.connect(str(db_file))
    for csv_file in sorted(DATA.glob("*.csv")):
        path = str(csv_file).replace("'", "''")
        connection.execute(f'CREATE TABLE "{csv_file.stem}" AS SELECT * FROM read_csv(\'{path}\')')
    connection.close()
    project = sidebyside.suite_project(db_file, folder / "project")
    return run, sidebyside, db_file, sidebyside.engine_queries(project)


@pytest.mark.parametrize("name", [
    "cost_per_lead", "close_rate", "nps", "roi", "mom_growth", "cumulative", "spend_30d", "spend_mtd",
    "lead_to_customer_30d", "quarter_by_group", "engaged_30d", "conversion_30d"])
def test_every_hand_written_shape_returns_the_engine_rows(suite, name):
    run, sidebyside, db_file, engine_sql = suite
    query = next(q for q in sidebyside.QUERIES if q.name == name)
    connection = duckdb.connect(str(db_file), read_only=True)
    try:
        engine = connection.execute(engine_sql[name])
        columns, rows = [d[0] for d in engine.description], engine.fetchall()
        assert rows and columns[:2] == ["period", query.by]
        # Not a vacuous comparison: the KPI columns hold numbers on most rows.
        assert sum(row[2] is not None for row in rows) > len(rows) // 2
        for shape, sql in sidebyside.hand_shapes(query).items():
            hand = connection.execute(sql)
            run.compare(f"{name}: engine vs {shape}", columns, rows, [d[0] for d in hand.description], hand.fetchall())
    finally:
        connection.close()


def test_a_different_number_is_caught(suite):
    """The comparison the suite relies on fails on one value changed by 1e-6 relative."""
    run, _, _, _ = suite
    rows = [("2024-01-01", "ppc", 50.0), ("2024-01-01", "email", None)]
    run.compare("same", ["period", "channel", "x"], rows, ["period", "channel", "x"], list(rows))
    with pytest.raises(run.Mismatch, match="ppc"):
        run.compare("changed", ["period", "channel", "x"], rows, ["period", "channel", "x"],
                    [("2024-01-01", "ppc", 50.00005), rows[1]])
    with pytest.raises(run.Mismatch, match="key"):
        run.compare("missing", ["period", "channel", "x"], rows, ["period", "channel", "x"], rows[:1])


def test_the_conversion_variants_report_the_fixes_made(suite):
    """The engine's conversion_30d SQL has neither the attribution step nor the stacked leads any
    more, so the variants that edited them say they no longer apply."""
    _, _, _, engine_sql = suite
    saved = list(sys.path)
    sys.path.insert(0, str(BENCH))
    try:
        import engine_variants  # benchmarks/engine_variants.py
    finally:
        sys.path[:] = saved
    text = engine_sql["conversion_30d"]
    assert "ROW_NUMBER" not in text and '0 AS "__kpi_touch"' not in text
    for variant in engine_variants.VARIANTS:
        if variant.query == "conversion_30d":
            with pytest.raises(engine_variants.NotApplicable):
                variant.edit(text)


def test_only_names_queries_of_the_suite(suite, capsys):
    _, sidebyside, _, _ = suite
    with pytest.raises(SystemExit):
        sidebyside.main(["--only", "conversion_31d"])
    assert "unknown query 'conversion_31d'" in capsys.readouterr().err


def _table_reads(sql: str) -> dict[str, int]:
    """How many times each warehouse table is read by a query: its table references that are not
    one of the query's own CTEs."""
    import sqlglot
    from sqlglot import exp

    tree = sqlglot.parse_one(sql, read="duckdb")
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    reads: dict[str, int] = {}
    for table in tree.find_all(exp.Table):
        if table.name not in ctes:
            reads[table.name] = reads.get(table.name, 0) + 1
    return reads


@pytest.mark.parametrize("name", [q for q in (
    "cost_per_lead", "close_rate", "nps", "roi", "mom_growth", "cumulative", "spend_30d", "spend_mtd",
    "lead_to_customer_30d", "quarter_by_group", "engaged_30d", "conversion_30d")])
def test_the_engine_reads_no_table_more_often_than_the_hand_written_query(suite, name):
    """One scan per source: for every query of the suite the engine's SQL reads each warehouse
    table at most as many times as the kept hand-written query does (which reads customers twice
    in the quarter query, for orders' channel and for customers won, and leads twice for the
    conversion source), and reads no table the hand-written query does not: the 6-row channels
    table of the quarter query, which four sources reach, is joined once to their stacked totals
    (key_fold.py), as the hand-written query does."""
    _, sidebyside, _, engine_sql = suite
    query = next(q for q in sidebyside.QUERIES if q.name == name)
    hand = _table_reads(sidebyside.hand_shapes(query)["hand"])
    engine = _table_reads(engine_sql[name])
    assert engine and set(engine) <= set(hand), (engine, hand)
    over = {table: (count, hand[table]) for table, count in engine.items() if count > hand[table]}
    assert not over, f"{name}: tables read more often than by the hand-written query: {over}"


@pytest.mark.parametrize("count", [2, 3, 4])
def test_each_side_runs_first_and_before_each_other_side_equally_often(suite, count):
    """A round's first run is slower (the comparison of the previous round ran just before it), so
    an order that favours one side biases the ratios: over 2 x count rounds each side must come
    first equally often and precede every other side in half of the rounds."""
    sidebyside = suite[1]
    sides = [f"side{k}" for k in range(count)]
    orders = [sidebyside.round_order(sides, i) for i in range(2 * count)]
    assert all(sorted(order) == sides for order in orders)
    firsts = {side: sum(order[0] == side for order in orders) for side in sides}
    assert firsts == {side: 2 for side in sides}
    for a in sides:
        for b in sides:
            if a != b:
                assert sum(order.index(a) < order.index(b) for order in orders) == count


def test_the_paired_ratio_weighs_each_order_of_the_sides_alike(suite):
    """Worked by hand: rounds of (engine, hand) = (2, 1), (4, 4), (9, 3) with the engine first,
    ratios 2, 1, 3 (median 2), and (4, 2), (1, 2) with it second, ratios 2 and 0.5 (median 1.25):
    sqrt(2 * 1.25). A machine slowing down through the run, the engine 2% slower within each round,
    reads 1.02 whatever the drift; and running first costing 10% more cancels out."""
    sidebyside = suite[1]
    first = [True, True, True, False, False]
    assert sidebyside.paired_ratio([2, 4, 9, 4, 1], [1, 4, 3, 2, 2], first) == pytest.approx((2 * 1.25) ** 0.5)
    hand = [0.010 * (1 + 0.05 * i) for i in range(9)]
    order = [i % 2 == 0 for i in range(9)]
    assert sidebyside.paired_ratio([1.02 * h for h in hand], hand, order) == pytest.approx(1.02)
    penalised = [1.02 * h * (1.1 if f else 1) for h, f in zip(hand, order)]
    hand_penalised = [h * (1 if f else 1.1) for h, f in zip(hand, order)]
    assert sidebyside.paired_ratio(penalised, hand_penalised, order) == pytest.approx(1.02)
    with pytest.raises(ValueError):
        sidebyside.paired_ratio([1.0, 2.0], [1.0, 2.0], [True, True])
