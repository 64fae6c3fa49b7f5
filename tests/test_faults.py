"""Warehouse faults on DuckDB: a query over the timeout is cancelled with exit code 5 and no
output file; Ctrl-C cancels cleanly; several threads evaluate at once, all correct."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

import reference
from kpi_engine.cli import cli
from kpi_engine.engine import open_project
from kpi_engine.errors import QueryTimeout

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "marketing"
SLOW = "sources:\n  slow:\n    sql: select count(*) as n, now() as at from range(0, 200000000000) a\n    time: at\n"


def slow_project(make_project):
    return make_project({"slow.yaml": SLOW, "k.yaml": "kpis:\n  n: {formula: sum(slow.n)}\n"})


def test_a_query_over_the_timeout_is_cancelled(make_project, tmp_path):
    root = slow_project(make_project)
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(cli, ["evaluate", str(root), "n", "--timeout", "0.5", "--format", "csv",
                                      "--output", str(out)])
    assert result.exit_code == 5
    assert "ran longer than the 0.5 s timeout and was cancelled" in result.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["project"]
    with open_project(root, timeout=0.3) as project, pytest.raises(QueryTimeout):
        project.evaluate(["n"])


def test_ctrl_c_cancels_the_query_and_exits_130(make_project, monkeypatch):
    root = slow_project(make_project)
    from kpi_engine.adapters import duckdb as adapter

    def interrupted(self, query, batch_size=10_000):
        raise KeyboardInterrupt

    monkeypatch.setattr(adapter.DuckDBConnection, "stream", interrupted)
    result = CliRunner().invoke(cli, ["evaluate", str(root), "n"])
    assert result.exit_code == 130 and result.stderr == "Interrupted.\n"


def test_eight_threads_two_hundred_evaluations_all_correct():
    data = reference.load()
    expected = {name: fn(data, by_channel=True, by_month=False) for name, fn in
                (("cost_per_lead", reference.cost_per_lead), ("close_rate", reference.close_rate),
                 ("nps", reference.nps))}
    with open_project(EXAMPLE) as project:
        def one(i):
            name = list(expected)[i % 3]
            rows = project.evaluate([name], by=["channel"]).to_dicts()
            return name, {(r["channel"],): r[name] for r in rows}

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(one, range(200)))
    assert len(results) == 200
    for name, values in results:
        for key, value in expected[name].items():
            assert values[key] == (None if value is None else pytest.approx(value)), (name, key)


# A query DuckDB would run for hours: a count over twenty trillion generated rows.
ENDLESS = ("sources:\n  endless:\n    sql: select count(*) as n, now() as at from range(0, 20000000000000) a\n"
           "    time: at\n")
# Runs the command line, saying on stderr when the query is handed to DuckDB.
ANNOUNCING_CLI = """
import sys
from kpi_engine.adapters import duckdb as adapter
from kpi_engine.cli import main

run = adapter.DuckDBConnection.stream
def announced(self, *args, **kwargs):
    print("QUERY STARTED", file=sys.stderr, flush=True)
    return run(self, *args, **kwargs)
adapter.DuckDBConnection.stream = announced
sys.argv = ["kpi-engine", *sys.argv[1:]]
main()
"""


def test_ctrl_c_during_a_duckdb_query_stops_it_at_once_and_exits_130(make_project, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    root = make_project({"endless.yaml": ENDLESS, "k.yaml": "kpis:\n  n: {formula: sum(endless.n)}\n"})
    out = tmp_path / "out.csv"
    child = subprocess.Popen([sys.executable, "-c", ANNOUNCING_CLI, "evaluate", str(root), "n", "-o", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stderr.readline() == "QUERY STARTED\n"
        time.sleep(1)  # well inside DuckDB's C code now
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=60)
        stopped = time.monotonic() - sent
    finally:
        child.kill()
    assert child.returncode == 130, stderr
    assert stderr == "Interrupted.\n" and stdout == ""  # one line, no traceback
    assert stopped < 20, f"took {stopped:.1f} s to stop"  # a bound for correctness, not a speed test
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["project"]


def test_on_ctrl_c_cancels_from_another_thread_and_only_in_the_main_thread():
    import os
    import signal
    import threading

    from kpi_engine.interrupts import on_ctrl_c

    cancelled = threading.Event()
    with pytest.raises(KeyboardInterrupt):
        with on_ctrl_c(cancelled.set) as interrupted:
            os.kill(os.getpid(), signal.SIGINT)
            assert cancelled.wait(10)  # the watcher called cancel while this thread waited
    assert interrupted.is_set()
    assert signal.set_wakeup_fd(-1) == -1  # the wakeup fd was given back

    outcome = []

    def elsewhere():
        with on_ctrl_c(outcome.append) as flag:
            outcome.append(flag.is_set())

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join(10)
    assert outcome == [False]
