"""CTEs read once written in place on DuckDB (kpi_engine/cte_inline.py): the same rows as the
CTE form, on hand-built queries over tables written here (the scoping cases a move could get
wrong) and on every KPI of the example project; CTEs read twice stay; other dialects unchanged."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
import sqlglot
from sqlglot import exp

import kpi_engine.cte_inline as cte_inline
from kpi_engine.cte_inline import attach_ctes
from kpi_engine.engine import open_project
from row_compare import same_rows
from sql_parts import named_parts

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "marketing"


@pytest.fixture()
def connection():
    con = duckdb.connect()
    con.execute("CREATE TABLE leads AS SELECT * FROM (VALUES (1, 'ppc'), (2, 'ppc'), (3, 'email'), (4, NULL)) "
                "AS t(id, channel)")
    con.execute("CREATE TABLE totals AS SELECT * FROM (VALUES ('ppc', 100)) AS t(channel, amount)")
    yield con
    con.close()


def build(ctes: list[tuple[str, str]], query: str, dialect: str = "duckdb") -> str:
    """The SQL of ``query`` with ``ctes`` attached as the compiler attaches them."""
    parsed = [(name, sqlglot.parse_one(body, read="duckdb")) for name, body in ctes]
    return attach_ctes(sqlglot.parse_one(query, read="duckdb"), parsed, dialect).sql(dialect=dialect)


def with_clause(sql: str) -> list[str]:
    found = sqlglot.parse_one(sql, read="duckdb").args.get("with_")
    return [cte.alias for cte in found.expressions] if found else []


def rows(con, sql: str) -> list[tuple]:
    return sorted(con.execute(sql).fetchall(), key=repr)


CHAIN = [("counted", "SELECT channel, COUNT(*) AS n FROM leads GROUP BY channel"),
         ("ranked", "SELECT counted.channel, counted.n * 10 AS score FROM counted")]


def test_a_chain_read_once_is_written_in_place_with_the_same_rows(connection):
    sql = build(CHAIN, "SELECT ranked.channel, ranked.score FROM ranked")
    assert with_clause(sql) == []
    assert {"counted", "ranked"} <= set(named_parts(sql))
    # by hand: ppc 2 leads, email 1, NULL 1
    assert rows(connection, sql) == sorted([("ppc", 20), ("email", 10), (None, 10)], key=repr)


def test_a_cte_read_twice_stays_and_the_alias_of_a_read_is_kept(connection):
    sql = build(CHAIN, "SELECT a.channel, b.n FROM ranked AS a JOIN counted AS c ON a.channel = c.channel "
                       "JOIN counted AS b ON b.channel = c.channel")
    assert with_clause(sql) == ["counted"]
    assert 'AS "a"' in sql  # ranked, read once under the alias a
    assert rows(connection, sql) == sorted([("ppc", 2), ("email", 1)], key=repr)


def test_a_table_named_like_a_later_cte_leaves_every_cte_in_place(connection):
    # "totals" is a table of the warehouse in the first CTE and a CTE after it: moving the first
    # CTE below the second would make it read the CTE.
    ctes = [("first", "SELECT totals.channel, totals.amount FROM totals"),
            ("totals", "SELECT leads.channel, COUNT(*) AS amount FROM leads GROUP BY leads.channel")]
    query = "SELECT f.channel, f.amount, t.amount AS leads FROM first AS f JOIN totals AS t ON f.channel = t.channel"
    sql = build(ctes, query)
    assert with_clause(sql) == ["first", "totals"]
    assert rows(connection, sql) == [("ppc", 100, 2)]  # the table's 100, the CTE's 2 leads
    # the same names in another case are the same names to DuckDB
    upper = build([("first", "SELECT Totals.channel, Totals.amount FROM Totals"), ctes[1]], query)
    assert with_clause(upper) == ["first", "totals"]


def test_other_dialects_and_nested_with_keep_the_ctes(connection):
    assert with_clause(build(CHAIN, "SELECT ranked.channel FROM ranked", dialect="postgres")) == ["counted", "ranked"]
    nested = [("inner_with", "WITH x AS (SELECT 1 AS one) SELECT x.one FROM x")]
    sql = build(nested, "SELECT inner_with.one FROM inner_with")
    assert with_clause(sql) == ["inner_with"] and rows(connection, sql) == [(1,)]


def test_a_reference_with_column_aliases_is_not_moved(connection):
    table = exp.to_table("counted")
    table.set("alias", exp.TableAlias(this=exp.to_identifier("c"), columns=[exp.to_identifier("ch"),
                                                                              exp.to_identifier("k")]))
    query = exp.select("c.ch", "c.k").from_(table)
    parsed = [(name, sqlglot.parse_one(body, read="duckdb")) for name, body in CHAIN[:1]]
    sql = attach_ctes(query, parsed, "duckdb").sql(dialect="duckdb")
    assert with_clause(sql) == ["counted"]
    assert rows(connection, sql) == sorted([("ppc", 2), ("email", 1), (None, 1)], key=repr)


def evaluate_all(kpi_project, monkeypatch, inline: bool, **options) -> dict[str, object]:
    monkeypatch.setattr(cte_inline, "INLINE_DIALECTS", cte_inline.INLINE_DIALECTS if inline else frozenset())
    results = {}
    for name in kpi_project.project.kpis:
        by = ["channel"] if "channel" in kpi_project.model().kpi(name).dimensions else []
        result = kpi_project.evaluate([name], by=by, **options)
        results[name] = (result.sql, result.rows)
    monkeypatch.undo()
    return results


def test_every_example_kpi_gives_the_same_rows_in_place_or_as_ctes(monkeypatch):
    with open_project(EXAMPLE) as kpi_project:
        inline = evaluate_all(kpi_project, monkeypatch, True, grain="month")
        ctes = evaluate_all(kpi_project, monkeypatch, False, grain="month")
        # and all the KPIs by channel in one request over a range (windows read before --from)
        names = [name for name in kpi_project.project.kpis if "channel" in kpi_project.model().kpi(name).dimensions]
        together = {}
        for inline_on in (True, False):
            monkeypatch.setattr(cte_inline, "INLINE_DIALECTS", cte_inline.INLINE_DIALECTS if inline_on else frozenset())
            together[inline_on] = kpi_project.evaluate(names, by=["channel"], grain="week", start="2025-02-10",
                                                       end="2025-05-01")
            monkeypatch.undo()
    moved = 0
    for name, (sql, result) in inline.items():
        assert same_rows(result, ctes[name][1]), name
        moved += len(with_clause(ctes[name][0])) - len(with_clause(sql))
    assert moved > len(inline)  # most queries had CTEs moved
    assert len(names) > 20 and together[True].rows and same_rows(together[True].rows, together[False].rows)
    assert len(with_clause(together[True].sql)) < len(with_clause(together[False].sql))
