"""A compiled query's tree written out as SQL text by sqlglot's generator, with its leaves remembered.

A query names the same few columns, tables, identifiers and types over and over (a 2,000-KPI
project renders about 40 columns, 7 tables, 110 identifiers and 9 casts per query, from a few
hundred distinct ones), and sqlglot's generator works each one out again: a column is three
dispatches and two quoting checks, a table some twenty lookups of arguments it does not have,
and DuckDB's type check builds five DataType nodes to compare a cast's type with.

``render`` uses the dialect's own generator class, subclassed once per dialect: the subclass keeps
the text the dialect's own method wrote for a leaf, keyed by everything that text depends on, and
hands it back for an equal leaf. It only does so for leaves whose every argument is in the key
and for methods whose text depends on nothing else (not on the node's parent, not on generator
settings other than the dialect and ``pretty``, which key the store): other leaves, and dialects
that override these methods, render exactly as sqlglot renders them. The generated SQL is the
same byte for byte (tests/test_render.py compares it with sqlglot's own rendering). With sqlglot
compiled by mypyc (the ``fast`` extra), whose generators cannot be subclassed in Python, the
dialect's generator is used as it is.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.generator import Generator

# Each store is bounded: a process that renders for many projects must not grow without end.
_MAX_REMEMBERED = 20_000
_classes: dict[type, type] = {}
_stores: dict[tuple[str, bool], dict[Any, str]] = {}


def render(expression: exp.Expression, dialect: str, pretty: bool, copy: bool) -> str:
    """What ``expression.sql(dialect=dialect, pretty=pretty, copy=copy,
    unsupported_level=RAISE)`` returns."""
    found = Dialect.get_or_raise(dialect)
    generator = _remembering(found.generator_class)(dialect=found, pretty=pretty,
                                                      unsupported_level=sqlglot.ErrorLevel.RAISE)
    if isinstance(generator, _Remembering):
        store = _stores.get((dialect, bool(pretty)))
        if store is None or len(store) > _MAX_REMEMBERED:
            store = _stores[(dialect, bool(pretty))] = {}
        generator._texts = store
    return generator.generate(expression, copy=copy)


class _Remembering:
    """Marks the generated subclasses (their methods are added by ``_remembering``)."""

    __slots__ = ()


def _remembering(base: type[Generator]) -> type[Generator]:
    """``base`` with the leaf methods that may be remembered, or ``base`` itself if none may."""
    made = _classes.get(base)
    if made is not None:
        return made
    methods: dict[str, Any] = {}
    if base.sql is Generator.sql and base.maybe_comment is Generator.maybe_comment:
        methods["sql"] = _sql
    if base.identifier_sql is Generator.identifier_sql:
        methods["identifier_sql"] = _identifier_sql
        if base.column_sql is Generator.column_sql and base.column_parts is Generator.column_parts:
            methods["column_sql"] = _column_sql
        if (base.table_sql is Generator.table_sql and base.table_parts is Generator.table_parts
                and base.tablealias_sql is Generator.tablealias_sql):
            methods["table_sql"] = _table_sql
    if base.datatype_sql in _plain_datatype_methods():
        methods["datatype_sql"], methods["_dialect_datatype_sql"] = _datatype_sql, base.datatype_sql
    made = base
    if methods:
        made = type(f"Remembering{base.__name__}", (_Remembering, base), {"__slots__": ("_texts",), **methods})
        try:
            made()
        except TypeError:  # sqlglot compiled with mypyc (the `fast` extra): its classes take no Python subclass
            made = base
    _classes[base] = made
    return made


@functools.cache
def _plain_datatype_methods() -> frozenset:
    """The datatype_sql methods whose text for a type without parameters depends on that type alone
    (read in sqlglot's source: the base generator's, DuckDB's and PostgreSQL's). Others look at
    the node's parent (Snowflake, ClickHouse) or rewrite the node (Hive, Spark, Presto)."""
    try:
        from sqlglot.generators.duckdb import DuckDBGenerator
        from sqlglot.generators.postgres import PostgresGenerator
    except ImportError:  # a sqlglot 30 release laid out otherwise: only the base generator's types
        return frozenset({Generator.datatype_sql})
    return frozenset({Generator.datatype_sql, DuckDBGenerator.datatype_sql, PostgresGenerator.datatype_sql})


# Keys of the store, told apart by their length: an identifier (name, quoted), a type (DType,),
# a column ("column", name, quoted[, table, quoted]), a table ("table", sep, alias, catalog, db, name).
_IDENTIFIER_ARGS = frozenset({"this", "quoted"})
_COLUMN_ARGS = frozenset({"this", "table"})


def _plain_identifier(node: Any) -> tuple[str, bool] | None:
    """(name, quoted) of an Identifier that has nothing else to render, else None."""
    if type(node) is not exp.Identifier or node.comments or not node.args.keys() <= _IDENTIFIER_ARGS:
        return None
    name = node.args.get("this")
    return (name, bool(node.args.get("quoted"))) if type(name) is str else None


def _sql(self, expression: Any, key: str | None = None, comment: bool = True) -> str:
    # Generator.sql, called for every node and for every argument a node looks up, minus one call
    # per node: maybe_comment only adds a node's comments, so it is called when there are some.
    if not expression:
        return ""
    if isinstance(expression, str):
        return expression
    if key:
        value = expression.args.get(key)
        return self.sql(value) if value else ""
    handler = self._dispatch.get(expression.__class__)
    if handler is None:  # functions, properties and what sqlglot refuses: as sqlglot handles them
        text = Generator.sql(self, expression, comment=False)
    else:
        text = handler(self, expression)
    if comment and self.comments and expression.comments:
        return self.maybe_comment(text, expression)
    return text


def _identifier_sql(self, expression: exp.Identifier) -> str:
    # With identify=False (render's setting), the base method's text depends on the name and on
    # whether it is quoted only.
    key = _plain_identifier(expression)
    if key is None:
        return Generator.identifier_sql(self, expression)
    text = self._texts.get(key)
    if text is None:
        text = self._texts[key] = Generator.identifier_sql(self, expression)
    return text


def _column_sql(self, expression: exp.Column) -> str:
    # _plain_identifier written out for both parts: a query has about forty columns
    args = expression.args
    this, table = args.get("this"), args.get("table")
    if (args.keys() <= _COLUMN_ARGS and type(this) is exp.Identifier and not this.comments
            and this.args.keys() <= _IDENTIFIER_ARGS and type(this.args.get("this")) is str):
        if table is None:
            key = ("column", this.args.get("this"), bool(this.args.get("quoted")))
        elif (type(table) is exp.Identifier and not table.comments and table.args.keys() <= _IDENTIFIER_ARGS
              and type(table.args.get("this")) is str):
            key = ("column", this.args.get("this"), bool(this.args.get("quoted")), table.args.get("this"),
                   bool(table.args.get("quoted")))
        else:
            return Generator.column_sql(self, expression)
        text = self._texts.get(key)
        if text is None:
            text = self._texts[key] = Generator.column_sql(self, expression)
        return text
    return Generator.column_sql(self, expression)


_TABLE_ARGS = frozenset({"this", "db", "catalog", "alias"})


def _table_sql(self, expression: exp.Table, sep: str = " AS ") -> str:
    # a table named by plain identifiers, with at most a plain alias (no column list): its text
    # depends on those names and on ``sep`` (Oracle writes its aliases without AS)
    args = expression.args
    if args.keys() <= _TABLE_ARGS:
        alias = args.get("alias")
        named = None
        if alias is None:
            named = ()
        elif type(alias) is exp.TableAlias and not alias.comments and alias.args.keys() <= {"this"}:
            named = _plain_identifier(alias.args.get("this"))
        parts = [_plain_identifier(args.get(key)) if args.get(key) is not None else ()
                 for key in ("catalog", "db", "this")]
        if named is not None and None not in parts:
            key = ("table", sep, named, *parts)
            text = self._texts.get(key)
            if text is None:
                text = self._texts[key] = Generator.table_sql(self, expression, sep)
            return text
    return Generator.table_sql(self, expression, sep)


def _datatype_sql(self, expression: exp.DataType) -> str:
    args = expression.args
    kind = args.get("this")
    if not isinstance(kind, exp.DType) or any(value for key, value in args.items() if key != "this"):
        return self._dialect_datatype_sql(expression)
    key = (kind,)
    text = self._texts.get(key)
    if text is not None:
        return text
    unsupported = len(self.unsupported_messages)
    text = self._dialect_datatype_sql(expression)
    # remembered only if it wrote the type as it is: no warning, the node left as it was
    if len(self.unsupported_messages) == unsupported and expression.args.get("this") is kind and not any(
            value for key, value in expression.args.items() if key != "this"):
        self._texts[key] = text
    return text

