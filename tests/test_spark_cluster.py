"""Spark as a cluster: the marketing library evaluated through a standalone cluster (a master and two
workers on 127.0.0.1, tests/spark_cluster.py) and through a Spark Connect server running on the same
cluster, with the example warehouse as Parquet files (written by DuckDB from the shipped CSVs) that
the executors read. Both must give what DuckDB gives on the same files, and the work must have run
on the two executors, not in the driver.

Slow (two applications start on a fresh cluster): marked ``spark_cluster``, left out of the quick
``python -m pytest -q`` by the root's addopts; run with ``python -m pytest -q -m spark_cluster``.
Skipped when Spark (or, for Connect, its client libraries) is missing, unless
KPI_ENGINE_REQUIRE_SPARK is set (CI), where that is a failure.
"""

pytest_plugins = ["spark_fixture", "spark_cluster"]

import json  # noqa: E402
import urllib.request  # noqa: E402

import pytest  # noqa: E402
from test_spark import DATA_DIR, assert_same, make_registry, open_with, write_project  # noqa: E402

pytestmark = pytest.mark.spark_cluster

#: What each project evaluates: the whole library, one query, by month and channel.
OPTIONS = dict(by=["channel"], grain="month")
#: Spark settings of the cluster project: small executors, one core each, and a driver web UI on
#: a known port (the test reads the executors' task counts there). The application waits for both
#: executors before its first job, so the work is spread over the two workers.
CLUSTER_CONFIG = {"spark.executor.memory": "512m", "spark.executor.cores": "1", "spark.cores.max": "2",
                  "spark.scheduler.minRegisteredResourcesRatio": "1.0",
                  "spark.scheduler.maxRegisteredResourcesWaitingTime": "120s",
                  "spark.sql.shuffle.partitions": "4", "spark.driver.host": "127.0.0.1",
                  "spark.driver.bindAddress": "127.0.0.1", "spark.ui.showConsoleProgress": "false",
                  "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
                  "spark.executor.extraJavaOptions": "-XX:TieredStopAtLevel=1"}


@pytest.fixture(scope="module")
def parquet_data(tmp_path_factory):
    """The example warehouse as one Parquet file per table, written by DuckDB from the shipped CSVs."""
    import duckdb

    folder = tmp_path_factory.mktemp("parquet_data")
    connection = duckdb.connect()
    for csv in sorted(DATA_DIR.glob("*.csv")):
        connection.execute(f"COPY (SELECT * FROM read_csv('{csv}')) TO '{folder / (csv.stem + '.parquet')}' "
                           "(FORMAT parquet)")
    connection.close()
    assert len(list(folder.glob("*.parquet"))) == len(list(DATA_DIR.glob("*.csv"))) >= 10
    return folder


@pytest.fixture(scope="module")
def registry():
    return make_registry()


@pytest.fixture(scope="module")
def on_duckdb(registry, parquet_data, tmp_path_factory):
    """The library by month and channel on DuckDB, reading the same Parquet files."""
    root = write_project(tmp_path_factory.mktemp("duckdb") / "p", {"adapter": "duckdb", "data": str(parquet_data)})
    with open_with(registry, root) as project:
        names = list(project.project.kpis)
        return names, project.evaluate(names, **OPTIONS)


def library_equals_duckdb(project, on_duckdb) -> None:
    names, expected = on_duckdb
    assert len(names) >= 39 and set(names) == set(project.project.kpis)
    result = project.evaluate(names, **OPTIONS)
    assert len(result.to_dicts()) > 100
    assert assert_same(result, expected, names) > 2500
    for name in names:  # nothing passes for being null everywhere
        assert any(row[name] not in (None, 0) for row in result.to_dicts()), name


def worker_json(worker: dict) -> dict:
    with urllib.request.urlopen(f"{worker['webuiaddress']}/json/", timeout=10) as response:
        return json.load(response)


def executors_ran_tasks(ui_port: int, count: int) -> dict[str, int]:
    """Tasks per executor of the application whose driver UI is on ui_port: ``count`` executors
    (besides the driver), each of which ran tasks; the driver ran none."""
    from spark_cluster import application_executors

    tasks = {executor["id"]: executor["totalTasks"] for executor in application_executors(ui_port)}
    assert tasks.pop("driver") == 0, tasks
    assert len(tasks) == count and all(n > 0 for n in tasks.values()), tasks
    return tasks


# --- a standalone master and two workers ---------------------------------------------------------------


APP = "kpi-engine-cluster-tests"


@pytest.fixture(scope="class")
def cluster_project(spark_cluster, registry, parquet_data, tmp_path_factory):
    """A project whose warehouse is the cluster's master: the adapter starts the application (the
    driver in this process, executors on the workers) and stops it at the end of the class, which
    frees the cores for the Connect server's application."""
    from spark_cluster import free_port

    ui_port = free_port()
    warehouse = {"adapter": "spark", "master": spark_cluster.master_url, "app_name": APP,
                 "data": str(parquet_data), "config": {**CLUSTER_CONFIG, "spark.ui.port": ui_port}}
    root = write_project(tmp_path_factory.mktemp("cluster") / "p", warehouse)
    project = open_with(registry, root)
    try:
        project.connection()  # starts the application
        yield project, ui_port
    finally:
        project.close()
    app = spark_cluster.application(APP)
    assert app is not None and app["state"] == "FINISHED", app  # the adapter stopped what it started


@pytest.fixture(scope="class")
def connect_project(spark_connect_server, registry, parquet_data, tmp_path_factory):
    """A project whose warehouse is the Connect server (``remote: sc://...``); the server's
    application reads the Parquet files on the cluster's executors."""
    warehouse = {"adapter": "spark", "remote": spark_connect_server.url, "data": str(parquet_data),
                 "config": {"spark.sql.shuffle.partitions": 4}}
    root = write_project(tmp_path_factory.mktemp("connect") / "p", warehouse)
    with open_with(registry, root) as project:
        yield project


class TestStandaloneCluster:

    def test_library_by_month_and_channel_equals_duckdb(self, cluster_project, on_duckdb):
        project, _ = cluster_project
        library_equals_duckdb(project, on_duckdb)

    def test_the_work_ran_on_an_executor_on_each_worker(self, spark_cluster, cluster_project):
        project, ui_port = cluster_project
        project.evaluate(["cost_per_lead"], **OPTIONS)  # also when this test runs alone
        app = spark_cluster.application(APP)
        assert app["state"] == "RUNNING" and app["cores"] == 2, app
        executors_ran_tasks(ui_port, count=2)
        workers = spark_cluster.alive_workers()
        hosting = [w["id"] for w in workers if any(e["appid"] == app["id"] for e in worker_json(w)["executors"])]
        assert len(workers) == 2 and len(hosting) == 2, hosting


# --- a Spark Connect server on the same cluster --------------------------------------------------------


class TestSparkConnect:
    def test_library_by_month_and_channel_equals_duckdb(self, connect_project, on_duckdb):
        from pyspark.sql.connect.session import SparkSession as RemoteSession

        assert isinstance(connect_project.connection().session, RemoteSession)
        library_equals_duckdb(connect_project, on_duckdb)

    def test_the_work_ran_on_the_clusters_executors(self, spark_cluster, spark_connect_server, connect_project):
        connect_project.evaluate(["cost_per_lead"], **OPTIONS)
        app = spark_cluster.application("kpi-engine-connect-server")
        assert app["state"] == "RUNNING" and app["cores"] == 2, app
        executors_ran_tasks(spark_connect_server.ui_port, count=2)


# --- a cluster that cannot start -----------------------------------------------------------------------


def test_a_worker_that_cannot_start_is_reported_and_nothing_is_left_running(tmp_path):
    """What the fixture skips (or, under KPI_ENGINE_REQUIRE_SPARK, fails) with: which daemon exited,
    and its log's error; and stop() leaves no process of any group behind."""
    from spark_cluster import ClusterFailed, LocalCluster, group_alive
    from spark_fixture import skip_or_fail, spark_unavailable

    reason = spark_unavailable()
    if reason:
        skip_or_fail(reason)
    broken = LocalCluster(tmp_path / "broken", workers=1, worker_memory="plenty")  # not a memory size
    with pytest.raises(ClusterFailed) as caught:
        with broken:
            broken.start(timeout=180)
    message = str(caught.value)
    assert message.startswith("the Spark worker1 exited") and "worker1.log" in message, message
    # The worker's own explanation, from its log: Spark prints its usage for an option it cannot read.
    last_line = (broken.folder / "worker1.log").read_text().strip().splitlines()[-1].strip()
    assert last_line and last_line in message and "--memory MEM" in message, message
    assert len(broken.launched) == 2 and not any(group_alive(pid) for pid in broken.launched)
