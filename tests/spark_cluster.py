"""A pytest plugin that runs a Spark standalone cluster on this machine: a master and two workers
on 127.0.0.1, and a Spark Connect server whose application runs on them.

Load it with ``pytest_plugins = ["spark_fixture", "spark_cluster"]``. The tests that use it carry
the ``spark_cluster`` marker (declared in pyproject.toml, whose addopts leave them out of the quick
run: ``python -m pytest -q -m spark_cluster`` runs them). Everything is started from what the PySpark package ships (``bin/spark-class`` and
``bin/spark-submit`` of its SPARK_HOME: no Spark download), on free ports, with small memory and one
core per worker, and stopped when the module's tests end, failing ones included: each daemon is
started in a process group of its own, and the whole group (a worker's executors with it) is
terminated, then killed if it lingers.

When the cluster cannot start, its fixtures skip with the reason (the daemon's error, from its log);
with KPI_ENGINE_REQUIRE_SPARK set (CI) that is a failure instead. ``LocalCluster`` is also used by
benchmarks/spark_large_run.py, outside pytest.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from spark_fixture import skip_or_fail, spark_unavailable

#: Memory of each daemon's own JVM (master, workers): they only keep bookkeeping.
DAEMON_MEMORY = "256m"
#: Short-lived JVMs warm up much faster with the C1 compiler alone.
QUICK_JVM = "-XX:TieredStopAtLevel=1"
CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


class ClusterFailed(RuntimeError):
    """A daemon did not start; the message says which, then its log's first error (or last lines)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def spark_home() -> Path:
    from pyspark.find_spark_home import _find_spark_home

    return Path(_find_spark_home())


def connect_unavailable() -> str | None:
    """Why a Spark Connect server and client cannot run here, or None."""
    try:
        from pyspark.sql.connect.utils import check_dependencies

        try:
            check_dependencies()
        except TypeError:  # PySpark 3.5 takes the importing module's name
            check_dependencies("pyspark.sql.connect.session")
    except Exception as error:  # ImportError, or PySpark's own error naming the missing module
        return f"the Spark Connect client libraries are missing ({error}); pip install 'kpi-engine[spark-connect]'"
    if not list((spark_home() / "jars").glob("spark-connect_*.jar")):
        return ("this PySpark ships no Spark Connect server (jars/spark-connect_*.jar, PySpark 4 has it); "
                "install PySpark 4 or a Spark distribution")
    return None


class LocalCluster:
    """A standalone master and ``workers`` workers on 127.0.0.1, their files under ``folder``."""

    def __init__(self, folder: Path, workers: int = 2, worker_cores: int = 1, worker_memory: str = "512m"):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.workers = workers
        self.worker_cores = worker_cores
        self.worker_memory = worker_memory
        self.port = free_port()
        self.web_port = free_port()
        self.master_url = f"spark://127.0.0.1:{self.port}"
        self._processes: list[tuple[str, subprocess.Popen, Path]] = []
        #: Every daemon's pid (= its process group), kept after stop() to check nothing is left.
        self.launched: list[int] = []

    # --- starting ---------------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        home = spark_home()
        env.update(SPARK_HOME=str(home), SPARK_LOCAL_IP="127.0.0.1", SPARK_LOCAL_DIRS=str(self.folder / "local"),
                   SPARK_LOG_DIR=str(self.folder), SPARK_CONF_DIR=str(self.folder / "conf"))
        (self.folder / "local").mkdir(parents=True, exist_ok=True)
        (self.folder / "conf").mkdir(parents=True, exist_ok=True)  # no spark-defaults.conf of the machine's
        return env

    def _launch(self, name: str, command: list[str], **env: str) -> subprocess.Popen:
        log = self.folder / f"{name}.log"
        with open(log, "wb") as out:
            # A process group of its own: stop() ends the daemon and whatever it started (executors).
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env={**self._environment(), **env}, start_new_session=True)
        self._processes.append((name, process, log))
        self.launched.append(process.pid)
        return process

    def start(self, timeout: float = 240) -> "LocalCluster":
        """Start the master and the workers; return once every worker is registered (ALIVE)."""
        spark_class = str(spark_home() / "bin" / "spark-class")
        daemon = {"SPARK_DAEMON_MEMORY": DAEMON_MEMORY, "SPARK_DAEMON_JAVA_OPTS": QUICK_JVM}
        self._launch("master", [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                "--port", str(self.port), "--webui-port", str(self.web_port)], **daemon)
        deadline = time.monotonic() + timeout
        self._wait(lambda: self.status() is not None, deadline, "the master's web UI to answer")
        for number in range(1, self.workers + 1):
            work = self.folder / f"worker{number}"
            work.mkdir(exist_ok=True)
            self._launch(f"worker{number}", [
                spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--webui-port", "0",
                "--cores", str(self.worker_cores), "--memory", self.worker_memory, "--work-dir", str(work),
                self.master_url], **daemon)
        self._wait(lambda: len(self.alive_workers()) == self.workers, deadline,
                   f"{self.workers} workers to register with the master")
        return self

    def start_connect_server(self, port: int, conf: dict[str, str], timeout: float = 240) -> None:
        """A Spark Connect server on 127.0.0.1:``port`` whose application runs on this cluster."""
        command = [str(spark_home() / "bin" / "spark-submit"), "--class", CONNECT_SERVER_CLASS,
                   "--master", self.master_url, "--name", "kpi-engine-connect-server"]
        settings = {"spark.connect.grpc.binding.address": "127.0.0.1", "spark.connect.grpc.binding.port": str(port),
                    "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                    "spark.driver.memory": "1g", "spark.driver.extraJavaOptions": QUICK_JVM, **conf}
        for key, value in settings.items():
            command += ["--conf", f"{key}={value}"]
        # No application jar: the server's class is in PySpark's jars/ (as start-connect-server.sh runs it).
        self._launch("connect-server", command, SPARK_CONNECT_MODE="0")
        log = self.folder / "connect-server.log"
        self._wait(lambda: "Spark Connect server started" in log.read_text(errors="replace"),
                   time.monotonic() + timeout, f"the Spark Connect server on port {port}")

    def _wait(self, ready, deadline: float, what: str) -> None:
        while True:
            for name, process, log in self._processes:
                if process.poll() is not None:
                    raise ClusterFailed(f"the Spark {name} exited (status {process.returncode}) while waiting for "
                                        f"{what}; {log}:\n{tail(log)}")
            if ready():
                return
            if time.monotonic() > deadline:
                name, _, log = self._processes[-1]
                raise ClusterFailed(f"timed out waiting for {what}; {log}:\n{tail(log)}")
            time.sleep(0.5)

    # --- what the master says ---------------------------------------------------------------------

    def status(self) -> dict | None:
        """The master's JSON (workers, active and completed applications), or None if it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/json/", timeout=5) as response:
                return json.load(response)
        except (OSError, ValueError):
            return None

    def alive_workers(self) -> list[dict]:
        return [worker for worker in (self.status() or {}).get("workers", []) if worker.get("state") == "ALIVE"]

    def application(self, name: str) -> dict | None:
        """The master's record of the running (or finished) application of that name."""
        status = self.status() or {}
        for app in status.get("activeapps", []) + status.get("completedapps", []):
            if app.get("name") == name:
                return app
        return None

    # --- stopping ---------------------------------------------------------------------------------

    def stop(self, grace: float = 30) -> None:
        """Terminate every daemon's process group (Connect server, workers, then master), kill what lingers."""
        _stop([process for _, process, _ in reversed(self._processes)], grace)
        self._processes.clear()

    def stop_connect_server(self, grace: float = 30) -> None:
        _stop([process for name, process, _ in self._processes if name == "connect-server"], grace)
        self._processes = [entry for entry in self._processes if entry[0] != "connect-server"]

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _stop(processes: list[subprocess.Popen], grace: float) -> None:
    for process in processes:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal_group(process, signal.SIGKILL)  # the group's leftovers (a worker's executors) too
        process.wait()
    # Killed members that are not our children (executors) are reaped by init: give it a moment.
    settle = time.monotonic() + 15
    while any(group_alive(process.pid) for process in processes) and time.monotonic() < settle:
        time.sleep(0.2)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # the group's id is the daemon's pid (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


def application_executors(ui_port: int) -> list[dict]:
    """The executors of the application whose driver's web UI is on ``ui_port`` (Spark's REST API):
    id ('driver' or a number), hostPort, totalTasks, ..."""
    base = f"http://127.0.0.1:{ui_port}/api/v1/applications"
    with urllib.request.urlopen(base, timeout=10) as response:
        (app,) = json.load(response)
    with urllib.request.urlopen(f"{base}/{app['id']}/executors", timeout=10) as response:
        return json.load(response)


def tail(log: Path, lines: int = 12) -> str:
    """The log's first error line and what follows it (else its last lines), JVM stack frames left out."""
    try:
        text = [line for line in log.read_text(errors="replace").splitlines() if not line.startswith("\tat ")]
    except OSError:
        return "(no log)"
    first_error = next((i for i, line in enumerate(text) if " ERROR " in line or "Exception" in line), None)
    return "\n".join(text[first_error:first_error + lines] if first_error is not None else text[-lines:])


def group_alive(pid: int) -> bool:
    """Whether any process of the group ``pid`` led is still running."""
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists, owned by someone else
        return True


# --- pytest -------------------------------------------------------------------------------------


def start_or_skip(start, stop, what: str) -> None:
    """start(); if it fails, stop() what did start, then skip (fail under KPI_ENGINE_REQUIRE_SPARK)."""
    try:
        start()
    except ClusterFailed as error:
        stop()
        skip_or_fail(f"{what} did not start: {error}")
    except BaseException:
        stop()
        raise


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory):
    """A running LocalCluster (master + 2 workers of 1 core and 512 MiB), stopped at the module's end."""
    reason = spark_unavailable()
    if reason:
        skip_or_fail(reason)
    cluster = LocalCluster(tmp_path_factory.mktemp("spark-cluster"))
    start_or_skip(cluster.start, cluster.stop, "the Spark standalone cluster")
    try:
        yield cluster
    finally:
        cluster.stop()
        leftovers = [pid for pid in cluster.launched if group_alive(pid)]
        assert not leftovers, f"Spark daemons still running after stop: {leftovers}"


class ConnectServer:
    def __init__(self, url: str, ui_port: int, cluster: LocalCluster):
        self.url, self.ui_port, self.cluster = url, ui_port, cluster


@pytest.fixture(scope="class")
def spark_connect_server(spark_cluster):
    """A Spark Connect server whose application runs on ``spark_cluster`` (executors of 512 MiB),
    stopped at the end of the test class, so that an application of another class can have the cores."""
    reason = connect_unavailable()
    if reason:
        skip_or_fail(reason)
    port, ui_port = free_port(), free_port()
    conf = {"spark.executor.memory": "512m", "spark.ui.port": str(ui_port), "spark.ui.showConsoleProgress": "false",
            "spark.executor.extraJavaOptions": QUICK_JVM}
    start_or_skip(lambda: spark_cluster.start_connect_server(port, conf), spark_cluster.stop_connect_server,
                  "the Spark Connect server")
    try:
        yield ConnectServer(f"sc://127.0.0.1:{port}", ui_port, spark_cluster)
    finally:
        spark_cluster.stop_connect_server()
