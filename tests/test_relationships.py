"""Richer relationships (issue 16, item 4): multi-hop paths, a dimension two paths reach named by
its path, composite keys (a key plus a partition day), and refusals where a join could count a
row twice. Values are checked against plain Python over generated rows, in a layout unlike the
example: DATE facts keyed by text codes, a region reached through the client's account and
through the shop."""

pytest_plugins = ["pg"]

import datetime as dt  # noqa: E402
import random  # noqa: E402
from collections import defaultdict  # noqa: E402

import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from kpi_engine.cli import cli  # noqa: E402
from kpi_engine.engine import open_project  # noqa: E402
from kpi_engine.errors import KpiEngineError  # noqa: E402
from conftest import write_project  # noqa: E402
from warehouse_loading import load_postgres  # noqa: E402

SPECS = """\
sources:
  tickets:
    table: tickets
    time: opened_on
    dimensions: [priority]
    relationships:
      - {to: clients, on: client_no, name: client}
      - {to: shops, on: shop, to_column: shop_code}
      - {to: client_days, on: {client_no: client_no, opened_on: day}}
      - {to: ticket_tags, on: ticket_no, type: one_to_many}
  clients:
    table: clients
    primary_key: client_no
    relationships: [{to: accounts, on: account_ref, to_column: ref}]
  accounts:
    table: accounts
    primary_key: ref
    dimensions: [{name: account_tier, column: tier}]
    relationships: [{to: regions, on: region_id}]
  shops:
    table: shops
    primary_key: shop_code
    relationships: [{to: regions, on: region_id}]
  regions:
    table: regions
    primary_key: region_id
    dimensions: [{name: region, column: region_name}]
  client_days:                    # one row per client and day: a composite key
    table: client_days
    primary_key: [client_no, day]
    dimensions: [mood]
  ticket_tags:
    table: ticket_tags
    dimensions: [tag]
kpis:
  tickets: {formula: count(tickets)}
  minutes: {formula: sum(tickets.minutes)}
"""
REGIONS = {1: "north", 2: "south", 3: "east", 4: "west"}


def generate(seed: int = 4) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    regions = [{"region_id": i, "region_name": name} for i, name in REGIONS.items()]
    accounts = [{"ref": f"A{i}", "tier": rng.choice(["gold", "silver", None]), "region_id": rng.choice([1, 2, 3, 4, None])}
                for i in range(1, 13)]
    clients = [{"client_no": f"C{i:02d}", "account_ref": rng.choice([a["ref"] for a in accounts] + ["A99"])}
               for i in range(1, 31)]
    shops = [{"shop_code": f"S{i}", "region_id": rng.choice([1, 2, 3, 4])} for i in range(1, 7)]
    tickets, days, tags = [], {}, []
    for i in range(1, 401):
        opened = dt.date(2025, 1, 1) + dt.timedelta(days=rng.randrange(120))
        client = rng.choice(clients)["client_no"]
        tickets.append({"ticket_no": i, "opened_on": opened, "client_no": client,
                        "shop": rng.choice([s["shop_code"] for s in shops] + ["S9"]),
                        "priority": rng.choice(["low", "high"]), "minutes": rng.randrange(5, 300)})
        if rng.random() < 0.6:
            days[(client, opened)] = rng.choice(["calm", "angry"])
        for tag in rng.sample(["billing", "bug", "login"], rng.randrange(0, 3)):
            tags.append({"ticket_no": i, "tag": tag})
    for _ in range(40):  # days of clients without a ticket that day
        days.setdefault((rng.choice(clients)["client_no"], dt.date(2025, 1, 1) + dt.timedelta(days=rng.randrange(120))),
                        "calm")
    client_days = [{"client_no": c, "day": d, "mood": m} for (c, d), m in days.items()]
    return {"tickets": tickets, "clients": clients, "accounts": accounts, "shops": shops, "regions": regions,
            "client_days": client_days, "ticket_tags": tags}


# --- the plain-Python reference -------------------------------------------------------------------------


class Lookups:
    def __init__(self, rows: dict):
        self.clients = {c["client_no"]: c for c in rows["clients"]}
        self.accounts = {a["ref"]: a for a in rows["accounts"]}
        self.shops = {s["shop_code"]: s for s in rows["shops"]}
        self.days = {(d["client_no"], d["day"]): d["mood"] for d in rows["client_days"]}

    def account(self, ticket):
        client = self.clients.get(ticket["client_no"])
        return self.accounts.get(client["account_ref"]) if client else None

    def client_region(self, ticket):
        account = self.account(ticket)
        return REGIONS.get(account["region_id"]) if account else None

    def shop_region(self, ticket):
        shop = self.shops.get(ticket["shop"])
        return REGIONS[shop["region_id"]] if shop else None

    def tier(self, ticket):
        account = self.account(ticket)
        return account["tier"] if account else None

    def mood(self, ticket):
        return self.days.get((ticket["client_no"], ticket["opened_on"]))


def minutes_by(rows: dict, *keys) -> dict:
    totals: dict = defaultdict(int)
    for ticket in rows["tickets"]:
        totals[(ticket["opened_on"].replace(day=1),) + tuple(k(ticket) for k in keys)] += ticket["minutes"]
    return dict(totals)


# --- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rows():
    return generate()


@pytest.fixture(scope="module")
def folder(rows, tmp_path_factory):
    return write_project(tmp_path_factory.mktemp("relationships") / "rel", {"specs.yaml": SPECS}, rows)


@pytest.fixture(scope="module")
def project(folder):
    with open_project(folder) as opened:
        yield opened


def engine(project, by: list[str], **options) -> dict:
    result = project.evaluate(["minutes"], grain="month", by=by, **options)
    return {(r["period"], *(r[d] for d in by)): r["minutes"] for r in result.to_dicts()}


# --- tests ----------------------------------------------------------------------------------------------


def test_two_hops_by_a_dimension_one_path_reaches(project, rows):
    assert engine(project, ["account_tier"]) == minutes_by(rows, Lookups(rows).tier)


def test_three_hops_to_the_region_of_the_clients_account(project, rows):
    want = minutes_by(rows, Lookups(rows).client_region)
    assert engine(project, ["client__accounts__regions__region"]) == want
    assert engine(project, ["client__accounts__account_tier"]) == minutes_by(rows, Lookups(rows).tier)


def test_the_region_of_the_shop_by_its_path(project, rows):
    lookups = Lookups(rows)
    want = minutes_by(rows, lookups.shop_region, lookups.client_region)
    assert engine(project, ["shops__regions__region", "client__accounts__regions__region"]) == want


def test_a_filter_through_a_path(project, rows):
    lookups = Lookups(rows)
    want = minutes_by(rows, lookups.client_region)
    want = {k[:1]: v for k, v in want.items() if k[1] == "north"}
    assert engine(project, [], where="client__accounts__regions__region = 'north'") == want


def test_a_composite_key_joins_the_clients_day(project, rows):
    lookups = Lookups(rows)
    assert engine(project, ["mood"]) == minutes_by(rows, lookups.mood)
    assert engine(project, ["mood", "priority"]) == minutes_by(rows, lookups.mood, lambda t: t["priority"])


def test_an_ambiguous_dimension_names_its_paths(project):
    with pytest.raises(KpiEngineError) as error:
        project.evaluate(["minutes"], by=["region"])
    assert error.value.message == ("cannot slice by 'region': 'region' is reached from 'tickets' through 2 paths: "
                                   "shops__regions__region, client__accounts__regions__region.")
    assert error.value.hint == ("Name the one you mean, e.g. --by shops__regions__region, or give the relationships "
                                "a 'name:' to tell them apart.")
    with pytest.raises(KpiEngineError) as error:
        project.evaluate(["minutes"], where="region = 'north'")
    assert error.value.message.startswith("--where uses 'region': 'region' is reached from 'tickets' through 2 paths")


def test_a_one_to_many_path_is_refused(project):
    with pytest.raises(KpiEngineError) as error:
        project.evaluate(["minutes"], by=["tag"])
    assert error.value.message == ("cannot slice by 'tag': 'tag' is reached from 'tickets' only through the "
                                   "one-to-many relationship tickets -> ticket_tags: each tickets row matches "
                                   "several ticket_tags rows and would be counted once for each.")


def test_an_unknown_path_is_refused(project):
    with pytest.raises(KpiEngineError) as error:
        project.evaluate(["minutes"], by=["client__regions__region"])
    assert error.value.message == "cannot slice by 'client__regions__region': sources tickets do not have it."
    assert "client__accounts__regions__region" in error.value.hint


def test_the_cli_names_the_paths(folder):
    result = CliRunner().invoke(cli, ["evaluate", str(folder), "minutes", "--by", "region"])
    assert result.exit_code != 0
    assert "through 2 paths: shops__regions__region, client__accounts__regions__region" in " ".join(result.output.split())
    assert "Traceback" not in result.output


@pytest.mark.parametrize("relationship, message", [
    ("{to: client_days, on: client_no}",
     "relationship t2.client_no -> client_days.client_no could fan out: 'client_no' is not the primary key of "
     "'client_days' (primary key: client_no, day)."),
    ("{to: client_days, on: {client_no: client_no, opened_on: mood}}",
     "relationship t2.(client_no, opened_on) -> client_days.(client_no, mood) could fan out: (client_no, mood) is "
     "not the primary key of 'client_days' (primary key: client_no, day)."),
    ("{to: client_days, on: [client_no, day], to_column: day}",
     "relationship t2 -> client_days has both a composite 'on:' and 'to_column'."),
])
def test_relationship_mistakes_are_one_clear_error(folder, tmp_path, relationship, message):
    (tmp_path / "kpi_engine.yaml").write_text(f"name: t\nwarehouse: {{adapter: duckdb, data: {folder / 'data'}}}\n")
    extra = f"  t2:\n    table: tickets\n    time: opened_on\n    relationships: [{relationship}]\n"
    (tmp_path / "specs.yaml").write_text(SPECS.replace("kpis:\n", extra + "kpis:\n"))
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split()), result.output
    assert result.output.count("Error:") == 1, result.output


def test_two_relationships_with_one_name_are_refused(folder, tmp_path):
    (tmp_path / "kpi_engine.yaml").write_text(f"name: t\nwarehouse: {{adapter: duckdb, data: {folder / 'data'}}}\n")
    (tmp_path / "specs.yaml").write_text(SPECS.replace("{to: shops, on: shop, to_column: shop_code}",
                                                      "{to: shops, on: shop, to_column: shop_code, name: client}"))
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert ("relationships 1 and 2 of 'tickets' are both named 'client', so a dimension through them cannot be told "
            "apart.") in " ".join(result.output.split())


def test_join_aliases_follow_the_path_names(project):
    # A relationship without a name keeps the alias it always had: source__target.
    sql = project.compile(["minutes"], by=["account_tier", "shops__regions__region"]).sql()
    assert '"tickets__client__accounts"' in sql and '"tickets__shops__regions"' in sql


def test_all_kpis_and_declared_kpi_dimensions_accept_a_path(folder, rows, tmp_path):
    import json

    result = CliRunner().invoke(cli, ["evaluate", str(folder), "--all", "--by", "shops__regions__region",
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    got = {r["shops__regions__region"]: r["minutes"] for r in json.loads(result.stdout)}
    want = defaultdict(int)
    for ticket in rows["tickets"]:
        want[Lookups(rows).shop_region(ticket)] += ticket["minutes"]
    assert got == want
    (tmp_path / "kpi_engine.yaml").write_text(f"name: t\nwarehouse: {{adapter: duckdb, data: {folder / 'data'}}}\n")
    (tmp_path / "specs.yaml").write_text(SPECS.replace(
        "minutes: {formula: sum(tickets.minutes)}",
        "minutes: {formula: sum(tickets.minutes), dimensions: [shops__regions__region, account_tier]}"))
    validated = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert validated.exit_code == 0, validated.output


def test_the_listed_dimensions_name_an_ambiguous_one_by_its_paths(project):
    listed = project.model().kpi("minutes").dimensions
    assert "region" not in listed
    assert {"shops__regions__region", "client__accounts__regions__region", "account_tier", "mood"} <= set(listed)
    assert "client__accounts__account_tier" not in listed  # its short name is enough


PG_TABLES = {
    "tickets": {"ticket_no": "integer", "opened_on": "date", "client_no": "text", "shop": "text", "priority": "text",
                "minutes": "integer"},
    "clients": {"client_no": "text", "account_ref": "text"},
    "accounts": {"ref": "text", "tier": "text", "region_id": "integer"},
    "shops": {"shop_code": "text", "region_id": "integer"},
    "regions": {"region_id": "integer", "region_name": "text"},
    "client_days": {"client_no": "text", "day": "date", "mood": "text"},
    "ticket_tags": {"ticket_no": "integer", "tag": "text"},
}


def test_postgres_equals_the_reference(pg_server, folder, rows, tmp_path):
    with pg_server.connect() as connection:
        load_postgres(connection, PG_TABLES, folder / "data")
    write_project(tmp_path, {"specs.yaml": SPECS}, config=f"name: rel_pg\nwarehouse: '{pg_server.url}'\n")
    lookups = Lookups(rows)
    with open_project(tmp_path) as pg:
        assert engine(pg, ["client__accounts__regions__region", "mood"]) == \
            minutes_by(rows, lookups.client_region, lookups.mood)
        assert engine(pg, ["shops__regions__region", "account_tier"]) == \
            minutes_by(rows, lookups.shop_region, lookups.tier)

