"""Running the service: `kpi-engine serve` as a process (JSON access log on stderr, SIGTERM),
and a request in flight when shutdown starts still gets its answer."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("fastapi")

from kpi_engine.serve.api import create_app  # noqa: E402
from kpi_engine.serve.service import KpiService  # noqa: E402
from kpi_engine.serve.settings import ServeSettings  # noqa: E402
from serve_helpers import SECRETS, TOKENS, free_port, make_serve_project, reference  # noqa: E402


def wait_ready(port: int, process: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process is None or process.poll() is None, process.stderr.read() if process else ""
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the server did not start")


def test_serve_process_logs_json_lines_and_stops_on_sigterm(tmp_path):
    project = make_serve_project(tmp_path / "shop")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_ENGINE_")}
    env.update(KPI_ENGINE_TOKENS=TOKENS, KPI_ENGINE_PORT=str(port))  # settings from the environment
    process = subprocess.Popen([sys.executable, "-m", "kpi_engine.cli", "serve", str(project)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(port, process)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/v1/query", json.dumps({"kpis": ["spend"]}),
                     {"Content-Type": "application/json", "Authorization": f"Bearer {SECRETS['agency']}"})
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["rows"][0]["spend"] == sum(reference("spend", channels={"email"}).values())
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    lines = stderr.splitlines()
    assert lines[0].startswith("Serving test on http://127.0.0.1:") and "(4 API tokens)" in lines[0]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert [(r["path"], r["status"], r["token"]) for r in records if r["path"] == "/v1/query"] == [
        ("/v1/query", 200, "agency")]
    assert "Traceback" not in stderr and SECRETS["agency"] not in stderr and stdout == ""


def test_a_request_in_flight_finishes_when_shutdown_starts(tmp_path, monkeypatch):
    import uvicorn

    service = KpiService.open(ServeSettings(project=make_serve_project(tmp_path / "shop")))
    real = service.project.evaluate
    started = threading.Event()

    def slow(*args, **kwargs):
        started.set()
        time.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(service.project, "evaluate", slow)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_ready(port)
    outcome = {}

    def ask():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/v1/query", json.dumps({"kpis": ["lead_count"]}), {"Content-Type": "application/json"})
        response = conn.getresponse()
        outcome["status"], outcome["body"] = response.status, json.loads(response.read())

    client = threading.Thread(target=ask)
    client.start()
    assert started.wait(10)
    server.should_exit = True  # what uvicorn's SIGTERM handler does
    client.join(30)
    thread.join(30)
    assert outcome["status"] == 200 and outcome["body"]["rows"][0]["lead_count"] == 7
    assert not thread.is_alive()
