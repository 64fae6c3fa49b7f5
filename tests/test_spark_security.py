"""Spark reads the generated SQL as written: a string literal is the text it holds (backslashes,
quotes, '${...}', '\\u0041' included) whatever the session's parser settings, and a data folder
is read by its exact path, not as a Hadoop glob.

Spark SQL reads backslash escapes in string literals, and by default replaces '${name}' in the
query text with a configuration value, a Java property or an environment variable
('${env:NAME}'): the adapter pins the settings (PINNED_CONF) on the session it uses.
"""

pytest_plugins = ["spark_fixture"]

import getpass  # noqa: E402
import os  # noqa: E402

import pytest  # noqa: E402

from kpi_engine.adapters.spark import PINNED_CONF, spark_settings  # noqa: E402
from kpi_engine.engine import KpiProject  # noqa: E402
from kpi_engine.errors import WarehouseError  # noqa: E402
from kpi_engine.spec import load_project  # noqa: E402

#: Values and, after each, what Spark would have made of the literal without the pinned settings.
HOSTILE = ["a\\", "x\\'y", "it's", "${spark.app.name}", "kpi-engine-tests", "${env:HOME}", os.environ.get("HOME", "/"),
           "${system:user.name}", getpass.getuser(), "\\u0041", "A", "[1]", "*"]
#: The project's rows: what a substituted or unescaped literal would match is there more often
#: than the literal's own text. Its sibling folder holds other rows.
OWN = HOSTILE + HOSTILE[:3] + ["kpi-engine-tests", os.environ.get("HOME", "/"), getpass.getuser(), "A"]
SIBLING = ["a\\", "intruder"]
SPEC = """
sources:
  leads: {table: leads, time: created_at, dimensions: [channel]}
kpis:
  n: {formula: count(leads)}
"""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _write_parquet(folder, values) -> None:
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    times = [dt.datetime(2025, 1, 1 + i % 28, 10) for i in range(len(values))]
    pq.write_table(pa.table({"created_at": times, "channel": values}), folder / "leads.parquet")


@pytest.fixture(scope="module")
def spark_project(spark, tmp_path_factory):
    """A project in 'proj[1]' (as a glob, it would match its sibling 'proj1')."""
    base = tmp_path_factory.mktemp("glob")
    root = base / "proj[1]"
    _write_parquet(root / "data", OWN)
    _write_parquet(base / "proj1" / "data", SIBLING)
    (root / "kpi_engine.yaml").write_text("name: t\nwarehouse: {adapter: spark, data: data}\n")
    (root / "s.yaml").write_text(SPEC)
    with KpiProject(load_project(root)) as project:
        yield project


def test_string_literals_are_the_text_they_hold(spark_project):
    formulas = [f"count(leads where channel = {_literal(value)})" for value in HOSTILE]
    result = spark_project.evaluate([], formulas=formulas)
    assert list(result.rows[0][:-1]) == [float(OWN.count(value)) for value in HOSTILE]  # plain Python (then "complete")
    having = spark_project.evaluate(["n"], by=["channel"],
                                    having="n > 0 and 'a\\' = ' IS NOT NULL) UNION ALL SELECT 1, 1 -- '")
    assert having.rows == []  # two different strings: never equal


def test_the_data_folder_is_read_by_its_exact_path(spark_project):
    assert spark_project.evaluate(["n"]).rows == [(float(len(OWN)), True)]  # True: complete


def test_the_settings_are_pinned_on_the_engine_session_only(spark, spark_project):
    session = spark_project.connection().session
    assert {key: session.conf.get(key) for key in PINNED_CONF} == PINNED_CONF
    assert spark.conf.get("spark.sql.variable.substitute") == "true"  # the active session is left as it was
    with pytest.raises(WarehouseError, match="spark.sql.variable.substitute"):
        spark_settings({"config": {"spark.sql.variable.substitute": True}})
