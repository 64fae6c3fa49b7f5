"""kpi-engine map: a reviewed proposal of how the library's sources read an unknown warehouse,
on the two warehouses of tests/test_adoption.py (whose hand-written mappings are the answer)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import test_adoption as adoption
from kpi_engine.cli import cli
from kpi_engine.spec import load_project

ROOT = Path(__file__).resolve().parent.parent


def fresh(tmp_path: Path, name: str) -> Path:
    """The adoption project's folder with its data, without its sources.yaml: nothing mapped yet."""
    root = tmp_path / name
    root.mkdir()
    shutil.copy(adoption.ADOPTION / name / "kpi_engine.yaml", root / "kpi_engine.yaml")
    return root


@pytest.fixture
def crm_folder(tmp_path):
    root = fresh(tmp_path, "crm_export")
    for name, rows in adoption.crm_export_rows().items():
        adoption.write_csv(root / "data", name, rows)
    return root


@pytest.fixture
def db_folder(tmp_path):
    import duckdb

    root = fresh(tmp_path, "warehouse_db")
    raw = adoption.warehouse_db_rows()
    connection = duckdb.connect(str(root / "warehouse.duckdb"))
    for table, columns in adoption.TABLES_DB.items():
        connection.execute(f"create schema if not exists {table.split('.')[0]}")
        connection.execute(f"create table {table} ({columns})")
        connection.executemany(f"insert into {table} values ({', '.join('?' * len(raw[table][0]))})", raw[table])
    connection.close()
    return root


def proposal(root: Path) -> tuple[str, dict]:
    result = CliRunner().invoke(cli, ["map", str(root)])
    assert result.exit_code == 0, result.output
    text = (root / "mapping.yaml").read_text()
    return result.stdout, yaml.safe_load(text)["sources"]


def hand_mapping(name: str) -> dict:
    return yaml.safe_load((adoption.ADOPTION / name / "sources.yaml").read_text())["sources"]


@pytest.mark.parametrize("name", ["crm_export", "warehouse_db"])
def test_the_proposed_tables_and_unmapped_sources_are_the_ones_chosen_by_hand(name, request):
    root = request.getfixturevalue("crm_folder" if name == "crm_export" else "db_folder")
    out, proposed = proposal(root)
    by_hand = hand_mapping(name)
    assert {s for s, body in proposed.items() if body.get("unmapped")} == \
        {s for s, body in by_hand.items() if body.get("unmapped")}
    for source, body in by_hand.items():
        if "table" in body:
            assert proposed[source]["table"] == body["table"], source
    assert out.startswith("Wrote ") and "Review every entry." in out
    assert re.search(r"KPIs available with this mapping: \d+ of 45", out)
    load_project(root)  # the proposal is a valid spec file, TODOs included (as comments)


def test_column_guesses_match_the_hand_mapping_where_names_tell(crm_folder):
    out, proposed = proposal(crm_folder)
    assert "mapping.yaml: 8 sources mapped to tables (36 columns guessed, 9 TODO), 4 unmapped." in out  # docs/library.md
    assert "\n  contacts: hubspot_contacts, 1 TODO\n" in out
    assert "KPIs available with this mapping: 33 of 45 (unavailable: email_list_size, emails_sent, " in out
    contacts = proposed["contacts"]["map"]
    for column in ("created_at", "lead_id", "is_qualified", "mql_at", "sql_at", "customer_at", "campaign"):
        assert contacts[column] == hand_mapping("crm_export")["contacts"]["map"][column], column
    assert proposed["orders"]["map"]["customer_id"] == "account_id"
    # A guess by name only: the unit (cents) is for the reviewer, and the file says it is a guess.
    assert proposed["ad_spend"]["map"]["spend"] == "cost_cents"
    text = (crm_folder / "mapping.yaml").read_text()
    assert re.search(r"spend: cost_cents +# guess: name 80% alike, a number", text)
    assert re.search(r"# saves: +# TODO: no column found \(a number\)", text)
    assert all("#" in line for line in text.splitlines() if re.match(r"\s+\w+: \S", line) and "table:" not in line)


def test_tables_of_intervals_are_proposed_for_snapshot_sources(db_folder):
    out, proposed = proposal(db_folder)
    by_hand = hand_mapping("warehouse_db")
    for source in ("subscriptions", "social_followers"):
        assert (proposed[source]["time"], proposed[source]["time_end"]) == \
            (by_hand[source]["time"], by_hand[source]["time_end"]), source
    assert proposed["social_followers"]["map"]["followers"] == 1  # each follower row counts once
    assert proposed["subscriptions"]["map"]["mrr"] == "mrr_usd"
    text = (db_folder / "mapping.yaml").read_text()
    assert re.search(r"time_end: cancelled +# \.\.\.until here \(empty: still active\)", text)


def test_flags_exported_as_times_or_numbers_become_conditions(db_folder):
    _, proposed = proposal(db_folder)
    assert proposed["email_sends"]["map"]["opened"] == "opened_ts is not null"
    assert proposed["web_sessions"]["map"]["is_bounce"] == "bounced = 1"
    assert proposed["opportunities"]["map"]["created_at"] == "opened_on"


def test_a_previous_proposal_is_kept_unless_forced(crm_folder):
    runner = CliRunner()
    assert runner.invoke(cli, ["map", str(crm_folder)]).exit_code == 0
    (crm_folder / "mapping.yaml").write_text("sources:\n  contacts: {unmapped: true}\n")
    again = runner.invoke(cli, ["map", str(crm_folder)])
    assert again.exit_code == 2 and "mapping.yaml' exists. Pass --force" in again.stderr
    forced = runner.invoke(cli, ["map", str(crm_folder), "--force"])
    assert forced.exit_code == 0, forced.output
    # the previous file did not count as the project's own mapping while proposing
    assert yaml.safe_load((crm_folder / "mapping.yaml").read_text())["sources"]["contacts"]["table"] == \
        "hubspot_contacts"
    assert not list(crm_folder.glob(".mapping*"))


def test_nothing_to_propose_on_the_standard_tables(tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    shutil.copytree(ROOT / "examples" / "marketing" / "data", root / "data")
    (root / "kpi_engine.yaml").write_text("name: p\nwarehouse: {adapter: duckdb, data: data}\n"
                                          "include: [builtin:marketing]\n")
    result = CliRunner().invoke(cli, ["map", str(root)])
    assert result.exit_code == 0 and "nothing to propose" in result.stdout
    assert not (root / "mapping.yaml").exists()


def test_a_project_without_a_library(make_project):
    root = make_project({"s.yaml": "sources:\n  a: {table: t}\n"})
    result = CliRunner().invoke(cli, ["map", str(root)])
    assert result.exit_code == 2 and "the project includes no library sources to map" in result.stderr
