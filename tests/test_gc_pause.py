"""The garbage collector is paused while a query is compiled and rendered (kpi_engine/gc_pause.py),
and always left as the application had it."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

from kpi_engine import compiler
from kpi_engine import render as rendering
from kpi_engine.engine import open_project
from kpi_engine.gc_pause import collector_paused

PROJECT = "name: paused\nwarehouse: {adapter: duckdb, data: data}\n"
KPIS = """sources:
  orders:
    table: orders
    time: ordered_at
kpis:
  paid:
    label: Paid
    formula: sum(orders.amount where status = 'paid')
"""


@pytest.fixture()
def project(tmp_path):
    (tmp_path / "kpi_engine.yaml").write_text(PROJECT)
    (tmp_path / "kpis.yaml").write_text(KPIS)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "orders.csv").write_text(
        "ordered_at,amount,status\n2024-01-03,10,paid\n2024-01-20,5,refunded\n2024-02-05,20,paid\n")
    with open_project(tmp_path) as opened:
        yield opened


@pytest.fixture(autouse=True)
def collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


def test_compiling_and_rendering_run_with_the_collector_off_and_turn_it_back_on(project, monkeypatch):
    seen = []
    build, render = compiler._Compiler.compile, compiler.CompiledQuery.sql

    def compiling(self):
        seen.append(("compile", gc.isenabled()))
        return build(self)

    monkeypatch.setattr(compiler._Compiler, "compile", compiling)
    query = project.compile(["paid"], grain="month")
    assert gc.isenabled()
    monkeypatch.setattr(rendering, "render",  # (CompiledQuery.sql's renderer, kpi_engine/render.py)
                        lambda *a, **k: seen.append(("render", gc.isenabled())) or "SELECT 1")
    assert render(query) == "SELECT 1"
    assert seen == [("compile", False), ("render", False)] and gc.isenabled()


def test_the_numbers_are_those_of_the_rows(project):
    rows = project.evaluate(["paid"], grain="month").to_dicts()
    assert [(str(r["period"]), r["paid"]) for r in rows] == [("2024-01-01", 10), ("2024-02-01", 20)]
    assert gc.isenabled()


def test_a_collector_the_application_turned_off_stays_off(project):
    gc.disable()
    project.compile(["paid"], grain="month").sql()
    assert not gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_an_error_inside_turns_it_back_on(project):
    with pytest.raises(Exception, match="unknown KPI"):
        project.compile(["unpaid"], grain="month")
    assert gc.isenabled()
    with pytest.raises(ZeroDivisionError):
        with collector_paused():
            1 / 0
    assert gc.isenabled()


def other_thread_pausing() -> tuple[threading.Thread, threading.Event]:
    """A thread that holds the pause until the event returned is set."""
    inside, leave = threading.Event(), threading.Event()

    def other():
        with collector_paused():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(10)
    return thread, leave


def test_only_the_thread_that_paused_turns_it_back_on():
    thread, leave = other_thread_pausing()
    assert not gc.isenabled()
    with collector_paused():  # a compile of this thread while the other one holds the pause
        with collector_paused():  # nested in the same thread
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert not gc.isenabled()  # still the other thread's pause: not ended here
    leave.set()
    thread.join(10)
    assert gc.isenabled()  # ended with the compile that started it
    with collector_paused():  # and a pause of this thread ends with it
        assert not gc.isenabled()
    assert gc.isenabled()


class Probe:
    """Put in a query's meta: alive as long as the query's (cyclic) tree is."""


def probed(project, kpi: str = "paid"):
    query = project.compile([kpi], grain="month")
    query.sql()
    probe = Probe()
    query.expression.meta["probe"] = probe
    return weakref.ref(probe)


def test_the_next_compile_frees_the_tree_of_a_query_that_was_dropped(project):
    # reference counting alone never frees a tree (each node points to its parent); the young
    # collection at the start of the next compile does, before it can reach the oldest generation
    gc.collect()
    tree = probed(project)
    assert tree() is not None
    project.compile(["paid"], grain="week").sql()
    assert tree() is None
    kept = project.compile(["paid"], grain="month")
    kept.expression.meta["probe"] = probe = Probe()
    project.compile(["paid"], grain="week")
    assert kept.expression.meta["probe"] is probe  # a query still held is left alone


def test_no_collection_when_the_application_turned_the_collector_off(project):
    collections = []
    gc.callbacks.append(lambda phase, info: collections.append(info["generation"]) if phase == "start" else None)
    try:
        gc.disable()
        tree = probed(project)
        project.compile(["paid"], grain="week").sql()
        assert tree() is not None and collections == []
        gc.enable()
        project.compile(["paid"], grain="week")
        assert 1 in collections and tree() is None
    finally:
        gc.callbacks.pop()


def test_no_collection_while_another_thread_holds_the_pause(project):
    collections = []
    thread, leave = other_thread_pausing()
    gc.callbacks.append(lambda phase, info: collections.append(info["generation"]) if phase == "start" else None)
    try:
        project.compile(["paid"], grain="week").sql()
        assert collections == [] and not gc.isenabled()
    finally:
        gc.callbacks.pop()
        leave.set()
        thread.join(10)
    assert gc.isenabled()


def test_no_young_collection_while_the_query_compiled_last_is_still_held(project):
    # a caller that keeps the previous query (query = project.compile(...) in a loop): collecting
    # at the next compile would only move that living tree to the oldest generation
    collections = []
    held = project.compile(["paid"], grain="month")
    gc.collect()  # (every count at zero: no automatic collection of the middle generation below)
    gc.callbacks.append(lambda phase, info: collections.append(info["generation"]) if phase == "start" else None)
    try:
        project.compile(["paid"], grain="week").sql()
        assert 1 not in collections and 2 not in collections
        assert held.sql() == project.compile(["paid"], grain="month").sql()
        dropped = project.compile(["paid"], grain="month")
        del dropped, held
        collections.clear()
        project.compile(["paid"], grain="week")  # the query compiled last was dropped: collected young
        assert collections[0] == 1
    finally:
        gc.callbacks.pop()
