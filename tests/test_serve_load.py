"""A 5-second run of benchmarks/serve_load.py against the small serve project: every answer is
a 200 equal to `project.evaluate` for its request, and the fixed requests come from the cache.
(Speed is not asserted; the 60-second figures are in docs/serve.md.)"""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from serve_helpers import make_serve_project  # noqa: E402

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "serve_load.py"


def load_module():
    spec = importlib.util.spec_from_file_location("serve_load", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_short_load_run_has_no_errors_and_no_wrong_answers(tmp_path):
    serve_load = load_module()
    project = make_serve_project(tmp_path / "shop")
    fixed = [{"kpis": ["cpl"], "by": ["channel"], "grain": "month"}, {"kpis": ["lead_count", "spend"]}]
    report = serve_load.run(project, clients=8, duration=5, cached_share=0.5, fixed=fixed,
                            kpi_sets=[["lead_count"], ["spend", "cpl"]], dimensions=["channel"],
                            first=dt.date(2024, 12, 1), days=100, verify_sample=40)
    assert report["requests"] > 0 and report["errors"] == 0, report
    assert report["wrong_answers"] == 0 and report["inconsistent_answers"] == 0, report
    assert report["verified_requests"] >= 2
    assert report["cache"].get("fixed:hit", 0) > 0  # warmed before the run
    assert set(report["statuses"]) == {"200"}


def test_same_rows_tolerates_float_order_but_not_other_numbers():
    serve_load = load_module()
    rows = [{"channel": "a", "x": 0.1 + 0.2}, {"channel": "b", "x": 1.0}]
    assert serve_load.same_rows(rows, [{"channel": "b", "x": 1.0}, {"channel": "a", "x": 0.3}])
    assert not serve_load.same_rows(rows, [{"channel": "a", "x": 0.3}, {"channel": "b", "x": 1.001}])
    assert not serve_load.same_rows(rows, rows[:1])
