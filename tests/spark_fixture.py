"""A pytest plugin for tests that run Apache Spark: the ``spark`` marker and one local Spark
session per test module.

Load it from a test module with ``pytest_plugins = ["spark_fixture"]``. Every test of a module
named ``test_spark*.py`` gets the ``spark`` marker (``pytest -m "not spark"`` leaves them out).
The ``spark`` fixture skips, saying why, when PySpark is not installed or no suitable Java is
found; with KPI_ENGINE_REQUIRE_SPARK set (CI) that is a failure instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import warnings

import pytest

REQUIRE_ENV = "KPI_ENGINE_REQUIRE_SPARK"
MARKER = "spark: runs Apache Spark (PySpark and Java 17+); skipped without them unless " + REQUIRE_ENV + " is set"

#: The local Spark the tests share: two cores, no web UI, few shuffle partitions (the example
#: warehouse is small, and Spark's default of 200 partitions would make every query slow).
TEST_CONFIG = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "2",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    # Short-lived JVM: the C1 compiler alone warms up much faster (the library query twice as fast).
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
}


def pytest_configure(config):
    config.addinivalue_line("markers", MARKER)


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name.startswith("test_spark"):
            item.add_marker("spark")


def java_major_version(java: str) -> int | None:
    """17 for 'openjdk version "17.0.15"', 8 for '"1.8.0_392"'; None when java does not run."""
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def spark_unavailable() -> str | None:
    """Why Spark cannot run here, or None."""
    try:
        import pyspark
    except ImportError:
        return "PySpark is not installed (pip install 'kpi-engine[spark]')"
    from kpi_engine.adapters.spark import find_java

    java = find_java()
    if java is None:
        where = f"JAVA_HOME={os.environ['JAVA_HOME']} has no bin/java" if os.environ.get("JAVA_HOME") else \
            "no java on PATH and JAVA_HOME is not set"
        return f"no Java found for Spark ({where}); install a JDK 17+ (apt-get install openjdk-17-jre-headless)"
    major = java_major_version(java)
    needed = 17 if int(pyspark.__version__.split(".")[0]) >= 4 else 8
    if major is None:
        return f"'{java} -version' does not run"
    if major < needed:
        return f"PySpark {pyspark.__version__} needs Java {needed}+, found Java {major} at {java}"
    return None


def skip_or_fail(reason: str):
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{REQUIRE_ENV} is set but Spark cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    """A local Spark session (local[2]) for the module; the adapter reuses it."""
    reason = spark_unavailable()
    if reason:
        skip_or_fail(reason)
    from pyspark.sql import SparkSession

    from kpi_engine.adapters.spark import PANDAS_WARNING

    warehouse_dir = tmp_path_factory.mktemp("spark-warehouse")
    builder = SparkSession.builder.master("local[2]").appName("kpi-engine-tests")
    for key, value in {**TEST_CONFIG, "spark.sql.warehouse.dir": str(warehouse_dir)}.items():
        builder = builder.config(key, value)
    with warnings.catch_warnings():  # PySpark's warning about the installed pandas (not used here)
        warnings.filterwarnings("ignore", message=PANDAS_WARNING, category=FutureWarning)
        session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
