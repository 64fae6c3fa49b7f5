"""The evaluate path (issue 17): a request's query is rendered to SQL text once, and that text is
what the warehouse runs; the numbers stay those of the raw rows (plain Python over the example's
CSV files)."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from sqlglot import exp
from sqlglot.generator import Generator

import reference
from kpi_engine.adapters import duckdb as duckdb_adapter
from kpi_engine.engine import open_project
from kpi_engine.hookspecs import KPIS_META, query_text, rendered, rendered_text

EXAMPLE = reference.DEFAULT_DATA_DIR.parent


@pytest.fixture(scope="module")
def data():
    return reference.load()


@pytest.fixture()
def project():
    with open_project(EXAMPLE) as opened:
        opened.model()  # described before counting: describing renders queries of its own
        yield opened


@pytest.fixture()
def renders(monkeypatch):
    """How many times the tree of a request's query (the one holding the KPIs asked) is rendered,
    and the texts DuckDB was given to run."""
    counted = Counter()
    original = Generator.generate  # every render ends here: Expression.sql's and kpi_engine.render's

    def counting(self, expression, *args, **kwargs):
        if (expression._meta or {}).get(KPIS_META) is not None:
            counted["request"] += 1
        return original(self, expression, *args, **kwargs)

    ran: list[str] = []
    original_text = duckdb_adapter.query_text

    def recording(query, dialect):
        text = original_text(query, dialect)
        ran.append(text)
        return text

    monkeypatch.setattr(Generator, "generate", counting)
    monkeypatch.setattr(duckdb_adapter, "query_text", recording)
    return counted, ran


def _month(text: str) -> dt.date:
    return dt.date.fromisoformat(text[:10]).replace(day=1)


def test_evaluate_renders_the_query_once_and_runs_that_text(project, renders, data):
    counted, ran = renders
    start, end = dt.date(2024, 1, 1), dt.date(2024, 7, 1)
    result = project.evaluate(formulas=["count(leads where is_qualified)"], by=["channel"], grain="month",
                              start=start, end=end)
    assert counted["request"] == 1
    assert ran[-1] == result.sql  # the warehouse ran the text the result shows
    expected = Counter((_month(r["created_at"]), r["channel"] or None) for r in data["leads"]
                       if r["is_qualified"] == "true" and start <= dt.date.fromisoformat(r["created_at"][:10]) < end)
    got = {(row["period"], row["channel"]): row["formula"] for row in result.to_dicts()}
    assert {key: value for key, value in got.items() if value} == dict(expected)
    assert all(row["complete"] for row in result.to_dicts())  # whole months inside the data


def test_stream_and_values_render_once_too(project, renders, data):
    counted, ran = renders
    query, batches = project.stream(formulas=["count(leads)"], by=["channel"], batch_size=2)
    rows = [row for batch in batches for row in batch]
    assert counted["request"] == 1 and ran[-1] == query.sql()
    # the leads source is the qualified contacts
    qualified = Counter(r["channel"] or None for r in data["leads"] if r["is_qualified"] == "true")
    assert {row[0]: row[1] for row in rows} == dict(qualified)
    counted.clear()
    result = project.values("channel", sources="leads")
    assert counted["request"] == 1 and ran[-1] == result.sql
    assert {row["channel"] for row in result.to_dicts()} == set(qualified)


def test_the_kept_text_serves_only_that_tree_in_that_dialect_inside_the_block():
    query = exp.select(exp.column("a")).from_("t")
    other = query.copy()
    with rendered(query, "duckdb", "SELECT 'kept'"):
        assert query_text(query, "duckdb") == "SELECT 'kept'"
        assert query_text(other, "duckdb") == "SELECT a FROM t"  # a copy (e.g. rewritten by an adapter)
        assert query_text(query, "postgres") == "SELECT a FROM t"
    assert query_text(query, "duckdb") == "SELECT a FROM t"  # after the block: rendered again


def test_rendered_text_is_the_kept_text_or_none():
    """What an adapter that prepares trees itself asks first: the engine's text for this very tree
    in this dialect, else None (it then prepares and renders the tree itself)."""
    query = exp.select(exp.column("a")).from_("t")
    with rendered(query, "sqlite", "SELECT 'kept'"):
        assert rendered_text(query, "sqlite") == "SELECT 'kept'"
        assert rendered_text(query.copy(), "sqlite") is None and rendered_text(query, "mysql") is None
        with rendered(query.copy(), "sqlite", "SELECT 'inner'"):  # another tree's block hides this one's
            assert rendered_text(query, "sqlite") is None
        assert rendered_text(query, "sqlite") == "SELECT 'kept'"
    assert rendered_text(query, "sqlite") is None
