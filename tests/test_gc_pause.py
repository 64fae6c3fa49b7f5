"""The garbage collector is paused while a query is compiled and rendered (kpi_engine/gc_pause.py),
and always left as the application had it."""

from __future__ import annotations

import gc
import threading

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


def test_only_the_thread_that_paused_turns_it_back_on():
    inside, leave = threading.Event(), threading.Event()

    def other():
        with collector_paused():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(10)
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
