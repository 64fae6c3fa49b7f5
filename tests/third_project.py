"""The saas_billing test project (tests/projects/saas_billing), ready to evaluate.

A third layout, unlike the marketing example and bike_rentals: dimensions two joins away (fact ->
accounts -> segments, with dangling keys at both hops), an interval source with TIMESTAMP starts
and ends read in a project time zone (America/New_York) and ends on local month boundaries, an
event source with several invoices a day near local midnight, a DATE source with sparse months, a
per-entity snapshot and a per-entity condition across two sources, and weeks starting on Sunday.

Its data is generated with ``generate.py`` beside the YAML (second_project.make_folder). Open
subscriptions run to "today", so every request pins it with ``as_of`` (third_reference.AS_OF).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import second_project

PROJECT_DIR = Path(__file__).resolve().parent / "projects" / "saas_billing"

#: Column kinds of the generated tables, in CSV column order.
TABLES: dict[str, dict[str, str]] = {
    "segments": {"segment_code": "text", "segment": "text", "sales_team": "text"},
    "accounts": {"account_id": "integer", "name": "text", "country": "text", "segment_code": "text"},
    "subscriptions": {"subscription_id": "integer", "account_id": "integer", "started_at": "timestamp",
                      "ended_at": "timestamp", "plan": "text", "mrr": "decimal"},
    "invoices": {"invoice_id": "integer", "account_id": "integer", "issued_at": "timestamp", "plan": "text",
                 "status": "text", "amount": "decimal"},
    "usage_events": {"event_id": "integer", "account_id": "integer", "used_on": "date", "feature": "text",
                     "seats": "integer", "quantity": "integer"},
}
ZONE = "America/New_York"
#: The project file without its time zone: SQLite has none, so it is compared in UTC.
UTC_PROJECT_FILE = "\n".join(line for line in (PROJECT_DIR / "kpi_engine.yaml").read_text().splitlines()
                             if not line.startswith("timezone:")) + "\n"


def make_folder(folder: Path, utc: bool = False) -> Path:
    """The project with freshly generated data in ``folder``; ``utc`` leaves its time zone out."""
    return second_project.make_folder(folder, {"kpi_engine.yaml": UTC_PROJECT_FILE} if utc else None, PROJECT_DIR)


def read_tables(data_dir: Path) -> dict[str, list[dict]]:
    return second_project.read_tables(data_dir, TABLES)


@pytest.fixture(scope="session")
def saas_folder(tmp_path_factory) -> Path:
    """The saas_billing project with freshly generated data (DuckDB over the CSV files)."""
    return make_folder(tmp_path_factory.mktemp("saas_billing") / "saas_billing")
