"""The dbt world: connections from a dbt ``profiles.yml`` target, and sources that name dbt models.

``warehouse: {dbt_profile: NAME, target: dev}`` in kpi_engine.yaml reads the connection of that
profile's target, found the way dbt finds it (``--profiles-dir``, ``DBT_PROFILES_DIR``, the dbt
project folder, ``~/.dbt``), with ``{{ env_var('X') }}`` and ``{{ env_var('X', 'default') }}``
filled in as dbt fills them. ``model: fct_deals`` on a source reads the relation dbt built for that
model, from the project's ``manifest.json``. dbt itself is never imported; only these two files are
read. This module imports nothing from the package but its errors.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from .errors import Location, SpecError, UsageError, did_you_mean

# Set by the command line's --profiles-dir (it wins over DBT_PROFILES_DIR, as in dbt).
_profiles_dir_option: str | None = None

WAREHOUSE_KEYS = ("dbt_profile", "target")
CONFIG_KEYS = ("project_dir", "manifest", "profiles_dir")


def set_profiles_dir(folder: str | None) -> None:
    """The ``--profiles-dir`` of this run (None: not given)."""
    global _profiles_dir_option
    _profiles_dir_option = folder


# -- YAML with line numbers -------------------------------------------------------------------

def read_yaml(path: Path, shown: str | None = None) -> tuple[Any, dict[tuple, int]]:
    """(plain data, the line of every mapping key and sequence item by its path) of a YAML file."""
    shown = shown or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"cannot read '{shown}': {getattr(error, 'strerror', None) or error}.", Location(shown),
                        "Check the path and that the file is UTF-8 text.") from None
    try:
        data = yaml.safe_load(text)  # the loader applies anchors and '<<' merge keys, as dbt's does
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise SpecError(f"not valid YAML: {getattr(error, 'problem', None) or error}.",
                        Location(shown, mark.line + 1 if mark else None, mark.column + 1 if mark else None),
                        "Fix the YAML syntax.") from None
    lines: dict[tuple, int] = {}
    _lines(node, (), lines)
    return data, lines


def _lines(node: Any, path: tuple, lines: dict[tuple, int]) -> None:
    """The line of each mapping key and sequence item, by its path (the values are read by safe_load)."""
    if node is None:
        return
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                lines[path + (key.value,)] = key.start_mark.line + 1
                _lines(value, path + (key.value,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, path + (i,), lines)


# -- env_var, as dbt renders profiles.yml ------------------------------------------------------

_BLOCK = re.compile(r"\{\{(.*?)\}\}", re.S)
_STRING = r"""(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")"""
_CALL = re.compile(rf"\s*env_var\(\s*{_STRING}\s*(?:,\s*{_STRING}\s*)?\)\s*((?:\|\s*[a-z_]+\s*)*)$")
_FILTERS = {"int": int, "as_number": lambda v: float(v) if "." in v else int(v), "as_text": str, "string": str,
            "trim": str.strip, "as_bool": lambda v: v.strip().lower() == "true"}


def render(value: Any, where: Location) -> Any:
    """``value`` with every ``{{ env_var(...) }}`` filled in; other Jinja is refused, not guessed."""
    if isinstance(value, dict):
        return {key: render(item, where) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, where) for item in value]
    if not isinstance(value, str) or not re.search(r"\{[{%#]", value):
        return value
    blocks = list(_BLOCK.finditer(value))
    if "{%" in value or not blocks:
        raise SpecError(f"'{value[:60]}' uses Jinja beyond env_var().", where,
                        "kpi-engine reads {{ env_var('NAME') }} and {{ env_var('NAME', 'default') }} only "
                        "(optionally followed by | int, | as_number, | as_bool, | as_text or | trim).")
    pieces, last = [], 0
    for block in blocks:
        pieces.append(value[last:block.start()])
        pieces.append(_env_var(block.group(1), where))
        last = block.end()
    pieces.append(value[last:])
    if len(blocks) == 1 and value.strip() == blocks[0].group(0):
        return pieces[1]  # a value that is one {{ ... | int }} keeps its type
    return "".join(str(piece) for piece in pieces)


def _env_var(expression: str, where: Location) -> Any:
    match = _CALL.match(expression)
    if not match:
        raise SpecError(f"'{{{{{expression.strip()[:60]}}}}}' is not an env_var() call kpi-engine can read.", where,
                        "Write {{ env_var('NAME') }} or {{ env_var('NAME', 'default') }}.")
    name = match.group(1) if match.group(1) is not None else match.group(2)
    default = match.group(3) if match.group(3) is not None else match.group(4)
    if name in os.environ:
        text = os.environ[name]
    elif default is not None:
        text = default
    else:
        raise UsageError(f"the environment variable {name} is not set ({where}: env_var('{name}') has no default).",
                         None, f"Set {name}, or give a default: {{{{ env_var('{name}', '...') }}}}.")
    result: Any = text
    for name_ in re.findall(r"[a-z_]+", match.group(5) or ""):
        if name_ not in _FILTERS:
            raise SpecError(f"unknown filter '| {name_}' after env_var().", where,
                            f"kpi-engine reads {', '.join('| ' + f for f in _FILTERS)}.")
        try:
            result = _FILTERS[name_](str(result))
        except ValueError:
            raise SpecError(f"the value of env_var('{name}') is not a number ('| {name_}').", where,
                            f"Set {name} to a number.") from None
    return result


# -- profiles.yml ------------------------------------------------------------------------------

@dataclass(frozen=True)
class DbtSettings:
    """The ``dbt:`` section of kpi_engine.yaml, with paths made absolute."""

    project_dir: Path
    manifest: Path
    profiles_dir: Path | None

    @classmethod
    def of(cls, section: Mapping[str, Any] | None, root: Path) -> "DbtSettings":
        section = section or {}
        project_dir = (root / os.path.expanduser(section.get("project_dir", "."))).resolve()
        manifest = project_dir / os.path.expanduser(section.get("manifest", "target/manifest.json"))
        profiles = section.get("profiles_dir")
        return cls(project_dir, manifest.resolve(), (root / os.path.expanduser(profiles)).resolve() if profiles else None)


def profiles_file(settings: DbtSettings) -> Path:
    """profiles.yml, looked for as dbt does: --profiles-dir, DBT_PROFILES_DIR, (kpi_engine.yaml's
    dbt.profiles_dir), the dbt project folder, ~/.dbt."""
    given = [(_profiles_dir_option, "--profiles-dir"), (os.environ.get("DBT_PROFILES_DIR"), "DBT_PROFILES_DIR"),
             (settings.profiles_dir, "dbt.profiles_dir in kpi_engine.yaml")]
    for folder, what in given:
        if folder:
            file = Path(os.path.expanduser(str(folder))) / "profiles.yml"
            if not file.is_file():
                raise UsageError(f"there is no profiles.yml in '{folder}' ({what}).", None,
                                 f"Point {what} at the folder holding profiles.yml.")
            return file
    for folder in (settings.project_dir, Path.home() / ".dbt"):
        if (folder / "profiles.yml").is_file():
            return folder / "profiles.yml"
    raise UsageError(f"no dbt profiles.yml found (looked in {settings.project_dir} and ~/.dbt).", None,
                     "Pass --profiles-dir, set DBT_PROFILES_DIR, or set 'dbt: {profiles_dir: ...}' in kpi_engine.yaml.")


def profile_warehouse(warehouse: Mapping[str, Any], settings: DbtSettings) -> tuple[str, dict[str, Any]]:
    """(adapter name, adapter settings) of the dbt profile target named by ``warehouse``."""
    extra = sorted(set(warehouse) - set(WAREHOUSE_KEYS))
    if extra:
        raise UsageError(f"the warehouse names a dbt profile and also sets {', '.join(extra)}.", None,
                         "With 'dbt_profile' the warehouse takes only 'target'; the connection comes from "
                         "profiles.yml.")
    file = profiles_file(settings)
    data, lines = read_yaml(file)
    name = str(warehouse["dbt_profile"])
    profiles = {key: value for key, value in (data or {}).items() if key != "config"} if isinstance(data, dict) else {}
    if name not in profiles or not isinstance(profiles[name], dict):
        raise UsageError(f"profile '{name}' is not in {file}.", None, did_you_mean(name, profiles) or
                         "Add it, or fix 'dbt_profile' in kpi_engine.yaml.")
    profile = profiles[name]
    outputs = profile.get("outputs") or {}
    target = warehouse.get("target") or os.environ.get("DBT_TARGET") or profile.get("target")
    where = Location(str(file), lines.get((name,)), None, f"profile '{name}'")
    if target is not None:
        target = render(target, where)
    if not target:
        raise UsageError(f"profile '{name}' in {file} names no target.", None,
                         "Add 'target: dev' to the warehouse in kpi_engine.yaml, or 'target:' to the profile.")
    if target not in outputs or not isinstance(outputs[target], dict):
        raise UsageError(f"profile '{name}' has no target '{target}' ({file}).", None,
                         did_you_mean(str(target), outputs) or "Add it under 'outputs:'.")
    where = Location(str(file), lines.get((name, "outputs", target)), None, f"profile '{name}', target '{target}'")
    output = render(outputs[target], where)
    return _adapter_settings(output, where, settings.project_dir)


def _adapter_settings(output: Mapping[str, Any], where: Location, project_dir: Path) -> tuple[str, dict[str, Any]]:
    adapter, settings = _mapped(output, where, project_dir)
    for key, value in settings.items():
        # the server adapters fill in ${NAME} themselves: a value that holds one would be read twice
        if adapter in ("postgres", "mysql") and "${" in str(value):
            raise UsageError(f"the value of '{key}' in {where} holds '${{', which kpi-engine's {adapter} adapter "
                             "reads as an environment variable reference.", None,
                             f"Write the warehouse in kpi_engine.yaml with '{key}: ${{NAME}}' instead.")
    return adapter, settings


def _mapped(output: Mapping[str, Any], where: Location, project_dir: Path) -> tuple[str, dict[str, Any]]:
    kind = output.get("type")

    def pick(**names: str) -> dict[str, Any]:
        return {ours: output[theirs] for ours, theirs in names.items() if output.get(theirs) not in (None, "")}

    if kind == "duckdb":
        path = output.get("path")
        if output.get("attach"):
            raise UsageError("the dbt-duckdb target attaches other databases ('attach'), which kpi-engine does not "
                             f"follow ({where}).", None, "Point a kpi-engine warehouse at one DuckDB file instead.")
        if not path or path == ":memory:":
            raise UsageError(f"the dbt-duckdb target has no database file ({where}).", None,
                             "Set 'path:' in the target to the .duckdb file dbt builds.")
        # dbt-duckdb reads a relative path from where dbt runs: the dbt project folder.
        return "duckdb", {"path": str((project_dir / os.path.expanduser(str(path))).resolve())}
    if kind in ("postgres", "redshift"):
        settings = pick(host="host", port="port", user="user", password="password",
                        dbname="dbname", sslmode="sslmode", connect_timeout="connect_timeout")
        if "dbname" not in settings and output.get("database"):
            settings["dbname"] = output["database"]
        return "postgres", {key: str(value) for key, value in settings.items()}
    if kind == "spark":
        method = output.get("method", "session")
        if method != "session":
            raise UsageError(f"the dbt-spark target connects by '{method}', which kpi-engine's Spark adapter does not "
                             f"speak ({where}).", None, "Use method 'session' (a local or cluster Spark session), or "
                             "a kpi-engine Spark warehouse ('master:' or 'remote: sc://...').")
        # a session target's 'host' is a placeholder dbt-spark ignores: the session is kpi-engine's own
        return "spark", pick(database="schema")
    if kind == "sqlite":
        paths = output.get("schemas_and_paths") or {}
        main = paths.get(output.get("schema", "main")) or paths.get("main")
        if not main:
            raise UsageError(f"the dbt-sqlite target names no database file ({where}).", None,
                             "Set 'schemas_and_paths: {main: file.db}'.")
        return "sqlite", {"path": str((project_dir / str(main)).resolve())}
    if kind == "mysql":
        settings = pick(host="server", port="port", user="username", password="password",
                        database="schema")
        settings.update(pick(host="host", user="user", database="database"))
        return "mysql", {key: str(value) for key, value in settings.items()}
    if kind == "clickhouse":
        raise UsageError(f"the dbt-clickhouse target is a ClickHouse server ({where}); kpi-engine's ClickHouse "
                         "plugin runs chdb in-process on a data folder.", None,
                         "Write 'warehouse: {adapter: clickhouse, path: <folder>}' in kpi_engine.yaml instead.")
    raise UsageError(f"dbt adapter type '{kind}' is not supported ({where}).", None,
                     "kpi-engine reads dbt targets of type duckdb, postgres, redshift, spark (method session), "
                     "sqlite and mysql (with their plugins); ClickHouse and others: write the warehouse "
                     "in kpi_engine.yaml directly.")


# -- manifest.json -----------------------------------------------------------------------------

_RELATION_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]*$(?!\n)")


class Manifest:
    """The models of a dbt manifest and the relation each was built as."""

    def __init__(self, path: Path):
        self.path = path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"the dbt manifest '{path}' does not exist.", None,
                             "Run 'dbt parse' (or 'dbt compile') in the dbt project to write it, or set "
                             "'dbt: {manifest: path/to/manifest.json}' in kpi_engine.yaml.") from None
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise UsageError(f"cannot read the dbt manifest '{path}': {error}.", None,
                             "Write it again with 'dbt parse'.") from None
        nodes = data.get("nodes") if isinstance(data, dict) else None
        if not isinstance(nodes, dict):
            raise UsageError(f"'{path}' is not a dbt manifest (it has no 'nodes').", None,
                             "Point 'dbt: {manifest: ...}' at target/manifest.json.")
        self.models: dict[str, dict] = {}
        for node in nodes.values():
            if isinstance(node, dict) and node.get("resource_type") in ("model", "seed", "snapshot"):
                self.models.setdefault(node.get("name"), node)

    def relation(self, model: str) -> str:
        """database.schema.identifier of a model (its alias when it has one)."""
        node = self.models.get(model)
        if node is None:
            raise KeyError(model)
        parts = [str(part) for part in (node.get("database"), node.get("schema"),
                                        node.get("alias") or node.get("identifier") or node.get("name")) if part]
        bad = next((part for part in parts if not _RELATION_PART.match(part)), None)
        if bad is not None:  # a part the table: field could not hold either (dots, quotes, spaces)
            raise ValueError(f"its relation part '{bad[:60]}' is not a plain name")
        return ".".join(parts)


def resolve_models(sources: dict, config_dbt: Mapping[str, Any] | None, root: Path,
                   errors: list) -> Iterator[tuple[str, str]]:
    """(source name, relation) for every source with ``model:``; problems go to ``errors``."""
    wanted = {name: source for name, source in sources.items() if source.model}
    if not wanted:
        return
    settings = DbtSettings.of(config_dbt, root)
    try:
        manifest = Manifest(settings.manifest)
    except UsageError as error:
        for source in wanted.values():
            errors.append(SpecError(error.message, source.where("model"), error.hint))
            break
        return
    for name, source in wanted.items():
        try:
            yield name, manifest.relation(source.model)
        except KeyError:
            errors.append(SpecError(f"dbt model '{source.model}' is not in the manifest {manifest.path}.",
                                    source.where("model"), did_you_mean(source.model, manifest.models) or
                                    "Run 'dbt parse' after adding the model."))
        except ValueError as why:
            errors.append(SpecError(f"dbt model '{source.model}' cannot be read: {why}.", source.where("model"),
                                    "Give the model a plain alias in dbt, or read it with 'table:' or 'sql:'."))
