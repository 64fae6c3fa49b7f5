"""kpi-engine-cloud: adapters for the warehouses that run as a service: Snowflake, BigQuery,
Redshift, Databricks SQL and Trino.

Each is registered through the ``kpi_engine`` entry-point group under its own name (so
``KPI_ENGINE_DISABLE_PLUGINS=trino`` leaves one out), and imports its official driver only when
a project connects; the drivers are optional dependencies, one extra each::

    pip install 'kpi-engine-cloud[snowflake]'     # or bigquery, redshift, databricks, trino, all

None of these warehouses runs in kpi-engine's CI: the adapters are tested against fake driver
modules that record what is sent (tests/), and the SQL against golden files.
"""

from __future__ import annotations

from .base import APPLICATION, CloudAdapter, CloudConnection, query_label
from .bigquery import BigQueryAdapter
from .databricks import DatabricksAdapter
from .redshift import RedshiftAdapter
from .snowflake import SnowflakeAdapter
from .trino import TrinoAdapter

__version__ = "0.1.0"
ADAPTERS = (SnowflakeAdapter, BigQueryAdapter, RedshiftAdapter, DatabricksAdapter, TrinoAdapter)
__all__ = ["ADAPTERS", "APPLICATION", "BigQueryAdapter", "CloudAdapter", "CloudConnection", "DatabricksAdapter",
           "RedshiftAdapter", "SnowflakeAdapter", "TrinoAdapter", "query_label"]
