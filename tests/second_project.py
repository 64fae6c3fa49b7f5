"""The bike_rentals test project (tests/projects/bike_rentals), ready to evaluate.

A project laid out unlike the marketing example: a dimension table reached by a shop code, a
TIMESTAMP source and two DATE sources (one of them a weekly snapshot with gaps that ends before the
others), a dimension stored under another column name, sparse months and NULL dimension values.
Its data is generated (deterministically) rather than shipped.

The fixture ``bike_folder`` (import it into a test module) is a session-wide copy of the project
beside its generated ``data/`` folder.
"""

from __future__ import annotations

import csv
import importlib.util
import shutil
from pathlib import Path
from typing import Any

import pytest
from kpi_engine.testing import _convert as typed_value  # CSV text -> value by column kind ('' is NULL)

PROJECT_DIR = Path(__file__).resolve().parent / "projects" / "bike_rentals"

#: Column kinds of the generated tables, in CSV column order (integer, decimal, text, date, timestamp).
TABLES: dict[str, dict[str, str]] = {
    "shops": {"code": "text", "name": "text", "region": "text", "tier": "text"},
    "rentals": {"rental_id": "integer", "started_at": "timestamp", "shop_code": "text", "bike_type": "text",
                "channel": "text", "member_id": "integer", "minutes": "integer", "fee": "decimal",
                "status": "text"},
    "repairs": {"repair_id": "integer", "repair_day": "date", "shop_code": "text", "bike_class": "text",
                "cost": "decimal"},
    "fleet_snapshots": {"snapshot_day": "date", "bike_id": "integer", "shop_code": "text", "bike_type": "text",
                        "book_value": "decimal"},
}


def _generator(project_dir: Path = PROJECT_DIR):
    spec = importlib.util.spec_from_file_location(f"{project_dir.name}_generate", project_dir / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_folder(folder: Path, extra_files: dict[str, str] | None = None, project_dir: Path = PROJECT_DIR) -> Path:
    """Copy the YAML files of ``project_dir`` (a project beside its ``generate.py``) into ``folder``,
    generate ``folder/data`` and add ``extra_files`` (name -> text) beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in project_dir.glob("*.yaml"):
        shutil.copy(path, folder / path.name)
    _generator(project_dir).generate(folder / "data")
    for name, text in (extra_files or {}).items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def read_tables(data_dir: Path, kinds_of: dict[str, dict[str, str]] = TABLES) -> dict[str, list[dict[str, Any]]]:
    """Every table of ``data_dir`` named in ``kinds_of`` as typed rows: {table: [{column: value}]},
    NULL as None."""
    tables = {}
    for table, kinds in kinds_of.items():
        with open(Path(data_dir) / f"{table}.csv", newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            assert reader.fieldnames == list(kinds), f"{table}.csv columns differ from TABLES"
            tables[table] = [{name: typed_value(row[name], kind) for name, kind in kinds.items()} for row in reader]
    return tables


@pytest.fixture(scope="session")
def bike_folder(tmp_path_factory) -> Path:
    """The bike_rentals project with freshly generated data (DuckDB over the CSV files)."""
    return make_folder(tmp_path_factory.mktemp("bike_rentals") / "bike_rentals")
