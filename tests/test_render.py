"""Queries are rendered by sqlglot's generator with their leaves remembered (kpi_engine/render.py):
the text must be the one sqlglot itself writes, for every dialect, for leaves that may be
remembered and for those that may not, however often and in whatever order trees are rendered."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from kpi_engine import render as rendering
from kpi_engine.engine import open_project
from kpi_engine.render import render

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "marketing"
DIALECTS = ["duckdb", "postgres", "spark", "snowflake", "bigquery", "tsql", "mysql", "clickhouse", "trino",
            "redshift", "databricks", "oracle", "sqlite"]


def sqlglot_text(tree: exp.Expression, dialect: str, pretty: bool = True) -> str:
    """The reference: sqlglot's own rendering, of a copy (the generator may rewrite the tree)."""
    return tree.copy().sql(dialect=dialect, pretty=pretty, unsupported_level=sqlglot.ErrorLevel.RAISE)


def assert_renders_as_sqlglot(query: exp.Expression, dialect: str) -> None:
    """render() writes sqlglot's text, or refuses what sqlglot refuses with the same error."""
    try:
        expected = sqlglot_text(query, dialect)
    except sqlglot.errors.UnsupportedError as error:
        with pytest.raises(sqlglot.errors.UnsupportedError, match=re.escape(str(error)[:40])):
            render(query.copy(), dialect, True, copy=False)
        return
    assert render(query.copy(), dialect, True, copy=False) == expected


@pytest.fixture(scope="module")
def trees():
    """Every library KPI's query (by channel and month) and one request of several KPIs, per dialect."""
    built = {}
    with open_project(EXAMPLE) as project:
        names = list(project.model(describe=False).kpis)
        for dialect in ("duckdb", "postgres", "spark", "snowflake", "bigquery", "tsql"):
            for name in names:
                built[(name, dialect)] = project.compile([name], by=["channel"], grain="month", describe=False,
                                                         dialect=dialect).expression
            built[("several", dialect)] = project.compile(names[:8], grain="week", describe=False,
                                                          dialect=dialect).expression
    return built


@pytest.mark.parametrize("pretty", [True, False])
def test_every_library_query_renders_as_sqlglot_renders_it(trees, pretty):
    # the leaves of the first queries are remembered by the time the later ones are rendered
    for (name, dialect), tree in trees.items():
        expected = sqlglot_text(tree, dialect, pretty)
        assert render(tree.copy(), dialect, pretty, copy=False) == expected, (name, dialect)


@pytest.mark.parametrize("dialect", ["duckdb", "postgres", "spark"])
def test_one_tree_rendered_twice_without_a_copy_gives_sqlglots_text_each_time(trees, dialect):
    # as CompiledQuery.sql does in the dialects it renders in place: the tree is not copied first
    built = trees[("several", dialect)]
    tree, expected = built.copy(), sqlglot_text(built, dialect)
    assert render(tree, dialect, True, copy=False) == expected
    assert render(tree, dialect, False, copy=False) == sqlglot_text(built, dialect, pretty=False)
    assert render(tree, dialect, True, copy=False) == expected


def test_one_query_in_two_dialects_gives_sqlglots_text_in_each(trees):
    built = trees[("several", "duckdb")]
    for dialect in ("duckdb", "postgres", "duckdb", "snowflake", "duckdb"):
        assert render(built, dialect, True, copy=True) == sqlglot_text(built, dialect), dialect


def test_compiling_a_then_b_then_a_gives_the_text_of_a_fresh_project():
    with open_project(EXAMPLE) as project:
        first = project.compile(["cost_per_lead"], by=["channel"], grain="month").sql()
        other = project.compile(["nps"], grain="week", dialect="postgres").sql()
        again = project.compile(["cost_per_lead"], by=["channel"], grain="month").sql()
    with open_project(EXAMPLE) as fresh:
        query = fresh.compile(["cost_per_lead"], by=["channel"], grain="month")
        assert first == again == sqlglot_text(query.expression, "duckdb")
        assert other == sqlglot_text(fresh.compile(["nps"], grain="week", dialect="postgres").expression, "postgres")


def column(name: str, table: str | None = None, quoted: bool = True) -> exp.Column:
    return exp.Column(this=exp.Identifier(this=name, quoted=quoted),
                      table=exp.Identifier(this=table, quoted=quoted) if table else None)


def leaves() -> list[exp.Expression]:
    """Leaves that look alike but render differently, and leaves that must not be remembered."""
    commented = column("amount", "orders")
    commented.this.comments = ["the paid amount"]
    return [
        column("amount", "orders"), column("amount", "orders", quoted=False), column("Amount", "Orders", quoted=False),
        column("select", quoted=False), column("1st", quoted=False), column('say "hi"'), column("amount"),
        commented,
        exp.Identifier(this="order", quoted=False), exp.Identifier(this="order", quoted=True),
        exp.DataType.build("DATE"), exp.DataType.build("TIMESTAMP"), exp.DataType.build("DECIMAL"),
        exp.DataType.build("DECIMAL(10, 2)"), exp.DataType.build("VARCHAR(20)"), exp.DataType.build("TEXT"),
        exp.DataType.build("TIMESTAMPTZ"), exp.DataType.build("ARRAY<INT>"), exp.DataType.build("FLOAT"),
    ]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_leaves_render_as_sqlglot_renders_them_in_any_order(dialect):
    items = leaves()
    selects = [exp.select(*[exp.Cast(this=column("x"), to=leaf) if isinstance(leaf, exp.DataType) else leaf
                            for leaf in items]).from_("t")]
    selects.append(exp.select(*reversed(selects[0].copy().expressions)).from_("t"))
    for query in selects + selects:  # twice: the second time every leaf comes from the store
        assert_renders_as_sqlglot(query, dialect)


def table(name: str, alias: str | None = None, db: str | None = None, quoted: bool = True,
          columns: tuple[str, ...] = ()) -> exp.Table:
    table_alias = None
    if alias is not None:
        table_alias = exp.TableAlias(this=exp.Identifier(this=alias, quoted=quoted))
        if columns:
            table_alias.set("columns", [exp.Identifier(this=c, quoted=quoted) for c in columns])
    return exp.Table(this=exp.Identifier(this=name, quoted=quoted),
                     db=exp.Identifier(this=db, quoted=quoted) if db else None, alias=table_alias)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_tables_render_as_sqlglot_renders_them_in_any_order(dialect):
    # the same names quoted and not, with and without a schema, an alias, an alias with columns
    # (not remembered); Oracle writes aliases without AS
    tables = [table("orders", "o", "sales"), table("orders", "o", "sales", quoted=False), table("orders"),
              table("orders", quoted=False), table("orders", "o"), table("order", "select", quoted=False),
              table("orders", "t", columns=("a", "b")), table("orders", "o", "sales")]
    commented = table("orders", "c")
    commented.args["alias"].comments = ["the alias"]
    tables.append(commented)
    queries = []
    for ordered in (tables, list(reversed(tables))):
        query = exp.select(exp.Star()).from_(ordered[0].copy())
        for other in ordered[1:]:
            query = query.join(other.copy(), on=exp.true(), join_type="left")
        queries.append(query)
    for query in queries + queries:
        assert_renders_as_sqlglot(query, dialect)


@pytest.mark.parametrize("dialect", ["oracle", "duckdb"])
def test_a_column_with_a_join_mark_is_written_by_the_dialect_each_time(dialect):
    # (+) is Oracle's; DuckDB refuses it: neither answer may come from a plain column's text
    for marked in (False, True, False, True):
        query = exp.select(column("amount", "orders")).from_("orders")
        query.expressions[0].set("join_mark", marked or None)
        try:
            expected = sqlglot_text(query, dialect)
        except sqlglot.errors.UnsupportedError:
            with pytest.raises(sqlglot.errors.UnsupportedError, match="Outer join syntax"):
                render(query.copy(), dialect, True, copy=False)
        else:
            assert render(query.copy(), dialect, True, copy=False) == expected
            assert ("(+)" in expected) == marked


def test_a_type_the_dialect_cannot_write_is_refused_every_time(monkeypatch):
    # remembering must not swallow the warning that makes the render fail; no dialect render uses
    # refuses a plain type, so DuckDB is told here that it cannot write UUID
    from sqlglot.generators.duckdb import DuckDBGenerator

    query = exp.select(exp.Cast(this=column("x"), to=exp.DataType.build("UUID"))).from_("t")
    monkeypatch.setattr(rendering, "_stores", {})
    monkeypatch.setattr(DuckDBGenerator, "UNSUPPORTED_TYPES", {exp.DType.UUID})
    for _ in range(2):
        with pytest.raises(sqlglot.errors.UnsupportedError, match="UUID"):
            sqlglot_text(query, "duckdb")
        with pytest.raises(sqlglot.errors.UnsupportedError, match="UUID"):
            render(query.copy(), "duckdb", True, copy=False)


def test_the_store_is_bounded(monkeypatch):
    monkeypatch.setattr(rendering, "_MAX_REMEMBERED", 50)
    monkeypatch.setattr(rendering, "_stores", {})
    for i in range(30):
        query = exp.select(*[column(f"c{i}_{j}", "t") for j in range(10)]).from_("t")
        assert render(query, "duckdb", False, copy=False) == sqlglot_text(query, "duckdb", False)
        # past the bound by one query at most: 10 columns, their 10 names, the table and its name
        assert len(rendering._stores[("duckdb", False)]) <= 50 + 22


def test_dialects_that_write_leaves_by_their_context_are_not_remembered():
    from sqlglot.generators.bigquery import BigQueryGenerator
    from sqlglot.generators.snowflake import SnowflakeGenerator
    from sqlglot.generators.tsql import TSQLGenerator

    bigquery, tsql = rendering._remembering(BigQueryGenerator), rendering._remembering(TSQLGenerator)
    # BigQuery writes a column's parts its own way, T-SQL its identifiers: their own methods run
    assert bigquery.column_sql is BigQueryGenerator.column_sql
    assert tsql.identifier_sql is TSQLGenerator.identifier_sql and tsql.column_sql is TSQLGenerator.column_sql
    assert rendering._remembering(SnowflakeGenerator).datatype_sql is SnowflakeGenerator.datatype_sql


def test_a_generator_that_cannot_be_subclassed_is_used_as_it_is(monkeypatch):
    # sqlglot compiled with mypyc (the `fast` extra) refuses to build an instance of a Python
    # subclass of its classes ("interpreted classes cannot inherit from compiled"): stood in for here
    from sqlglot.dialects.dialect import Dialect
    from sqlglot.generators.duckdb import DuckDBGenerator

    made = []

    class Compiled(DuckDBGenerator):
        def __new__(cls, *args, **kwargs):
            if cls is not Compiled:
                raise TypeError("interpreted classes cannot inherit from compiled")
            made.append(cls)
            return super().__new__(cls)

    monkeypatch.setattr(type(Dialect.get_or_raise("duckdb")), "generator_class", Compiled)
    monkeypatch.setattr(rendering, "_classes", {})
    assert rendering._remembering(Compiled) is Compiled
    query = exp.select(column("amount", "orders"), exp.Cast(this=column("x"), to=exp.DataType.build("DATE"))) \
        .from_("orders")
    made.clear()
    assert render(query.copy(), "duckdb", True, copy=False) == 'SELECT\n  "orders"."amount",\n  CAST("x" AS DATE)\nFROM orders'
    assert made == [Compiled]  # the dialect's own generator wrote it


@pytest.mark.parametrize("dialect", DIALECTS)
def test_comments_on_any_node_are_written_as_sqlglot_writes_them(dialect):
    # render's generator calls maybe_comment only for nodes that have comments: every kind of
    # node below carries one (a query, a select item and its alias, a function, a column, a
    # literal, a condition, a table), and empty comment lists are left out as sqlglot leaves them
    total = exp.Alias(this=exp.Sum(this=column("amount", "orders")), alias=exp.Identifier(this="total", quoted=True))
    condition = exp.GT(this=column("amount", "orders"), expression=exp.Literal.number(10))
    query = exp.select(total, column("channel", "orders")).from_(table("orders", "orders")) \
        .where(condition).group_by(column("channel", "orders"))
    plain = query.copy()
    for i, node in enumerate(list(query.walk())):
        node.comments = [f"note {i}"] if i % 2 == 0 else []
    for tree in (query, plain, query):
        assert_renders_as_sqlglot(tree, dialect)
    assert "note 0" in render(query.copy(), dialect, True, copy=False)
