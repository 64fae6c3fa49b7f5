"""BigQuery through google-cloud-bigquery: ``pip install 'kpi-engine-cloud[bigquery]'``.

::

    warehouse: bigquery://my-gcp-project/marketing?location=EU
    # credentials: Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS names a
    # service-account key file, or `gcloud auth application-default login`), or
    warehouse: {adapter: bigquery, project: my-gcp-project, dataset: marketing,
                credentials_file: ${GOOGLE_APPLICATION_CREDENTIALS}, maximum_bytes_billed: 10000000000}

Every query is a query job labelled ``application: kpi-engine`` and ``kpis: <names>``; a timeout
or Ctrl-C calls ``job.cancel()``, and ``job_timeout_ms`` bounds the job in BigQuery too. Query
jobs of kpi-engine are SELECTs; ``maximum_bytes_billed`` makes BigQuery refuse one that would
scan more.
"""

from __future__ import annotations

import re

from kpi_engine.errors import WarehouseError
from kpi_engine.hookspecs import hookimpl
from sqlglot import exp

from .base import APPLICATION, CloudAdapter, CloudConnection, Running, Target

_LABEL_CHARACTERS = re.compile(r"[^a-z0-9_-]+")


def job_labels(kpis: tuple[str, ...]) -> dict[str, str]:
    """BigQuery labels: lower-case letters, digits, '_' and '-', at most 63 characters; the KPI
    names joined by '-' (cut at 63: the query text in the job says the rest)."""
    labels = {"application": APPLICATION}
    if kpis:
        labels["kpis"] = _LABEL_CHARACTERS.sub("_", "-".join(kpis).lower())[:63]
    return labels


class BigQueryConnection(CloudConnection):
    dialect = "bigquery"

    def open_session(self):
        values, secrets = self.target.values, self.target.secrets
        credentials = None
        if secrets.get("credentials_file"):
            from google.oauth2 import service_account

            credentials = service_account.Credentials.from_service_account_file(secrets["credentials_file"])
        return self.driver.Client(project=values["project"], credentials=credentials,
                                  location=values.get("location") or None)

    def credentials_hint(self) -> str:
        return "GOOGLE_APPLICATION_CREDENTIALS, or credentials_file: ${NAME}"

    def errors(self):
        from google.api_core import exceptions

        found: tuple[type[BaseException], ...] = (exceptions.GoogleAPIError,)
        try:  # no credentials at all: google-auth's error, not an API error
            from google.auth.exceptions import GoogleAuthError
        except ImportError:
            return found
        return found + (GoogleAuthError,)

    def job_config(self, kpis: tuple[str, ...], dry_run: bool = False):
        values = self.target.values
        config = self.driver.QueryJobConfig(labels=job_labels(kpis), use_legacy_sql=False, dry_run=dry_run)
        if values.get("dataset"):
            config.default_dataset = f"{values['project']}.{values['dataset']}"
        if values.get("maximum_bytes_billed"):
            config.maximum_bytes_billed = int(values["maximum_bytes_billed"])
        if self.target.query_timeout:
            config.job_timeout_ms = max(1000, round(self.target.query_timeout * 1000))
        return config

    def run(self, session, sql, kpis, running: Running):
        job = session.query(sql, job_config=self.job_config(kpis))
        running.started(job)
        result = job.result()
        columns = tuple(field.name for field in result.schema)
        return columns, [tuple(row.values()) for row in result]

    def cancel(self, running: Running) -> None:
        running.handle.cancel()

    def describe(self, session, sql):
        job = session.query(sql, job_config=self.job_config((), dry_run=True))  # no bytes scanned
        return {field.name: field.field_type for field in job.schema}

    def information_schema(self, relation):
        project = relation.args.get("catalog")
        return exp.Table(this=exp.to_identifier("INFORMATION_SCHEMA.COLUMNS", quoted=True),
                         db=exp.to_identifier(relation.args["db"].name, quoted=True),
                         catalog=exp.to_identifier(project.name if project else self.target.values["project"],
                                                   quoted=True))

    def columns_query(self, relation):
        if relation.args.get("db") is None:
            dataset = self.target.values.get("dataset")
            if not dataset:
                raise WarehouseError(f"the table '{relation.name}' names no dataset, and the BigQuery warehouse has "
                                     "no 'dataset' setting.", None,
                                     "Write the table as dataset.table, or set 'dataset' in the warehouse settings.")
            relation = relation.copy()
            relation.set("db", exp.to_identifier(dataset, quoted=True))
        return super().columns_query(relation)


class BigQueryAdapter(CloudAdapter):
    name = "bigquery"
    dialect = "bigquery"
    warehouse = "BigQuery"
    driver, package, extra = "google.cloud.bigquery", "google-cloud-bigquery", "bigquery"
    description = "BigQuery through google-cloud-bigquery (job labels, job.cancel on timeout): bigquery://project/dataset"
    settings = ("project", "dataset", "location", "maximum_bytes_billed")
    secret_env = {"credentials_file": "GOOGLE_APPLICATION_CREDENTIALS"}
    required = ("project",)
    url_example = "bigquery://my-gcp-project/marketing?location=EU"
    connection_class = BigQueryConnection

    @classmethod
    def url_parts(cls, user, host, port, path):
        return {"project": host, "dataset": path[0] if path else None}

    @classmethod
    def where(cls, target: Target) -> str:
        return f"project {target.values.get('project')}"


@hookimpl
def kpi_engine_adapters():
    return [BigQueryAdapter]
