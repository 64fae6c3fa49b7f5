"""The ``kpi-engine`` command line. Library errors become one clear message and an exit code."""

from __future__ import annotations

import functools
import io
import json
import os
import shlex
import sys
from pathlib import Path

import click

from . import __version__
from .calendar import DAY_GRAINS, GRAINS, SUBDAILY
from .errors import KpiEngineError, OutputError, ProjectInvalid, UsageError
from .files import check_writable, write_atomically
from .terminal import cell, is_terminal, visible

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _show(text: str, err: bool = False) -> None:
    """A line for people (a message, an error, a check's outcome): values and spec text in it
    are shown with their control characters made visible, wherever the line goes."""
    click.echo(visible(text, keep="\n"), err=err)


def _emit(text: str) -> None:
    """Output for programs (CSV, JSON, SQL, a catalogue): exactly these characters on a pipe or
    in a file; on a terminal, control characters are made visible instead of acted on."""
    if is_terminal(sys.stdout):
        text = visible(text, keep="\n")
    click.echo(text, nl=False, color=True)  # color=True: click would strip escape sequences on a pipe


def _fail(error: KpiEngineError) -> None:
    """Print a library error without a traceback and exit with its code."""
    if isinstance(error, ProjectInvalid):
        for item in error.errors:
            _show(f"Error: {item}", err=True)
        _show(f"{error.message}.", err=True)
    else:
        _show(f"Error: {error}", err=True)
    sys.exit(error.exit_code)


def handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KpiEngineError as error:
            _fail(error)
        except KeyboardInterrupt:
            _show("Interrupted.", err=True)
            sys.exit(130)

    return wrapper


def _split(values) -> tuple[str, ...]:
    """--by a,b --by c -> (a, b, c)"""
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


project_argument = click.argument("project", type=click.Path(file_okay=True, dir_okay=True, path_type=Path),
                                  is_eager=True)  # first, so that --grain can read the project's granularities


def _project_of(ctx) -> Path | None:
    """The PROJECT argument while completing (click leaves it unparsed before an option value)."""
    return ctx.params.get("project") or (Path(ctx.args[0]) if ctx.args else None)


def _complete_kpis(ctx, param, incomplete: str):
    """Shell completion of KPI names from the project named earlier on the line."""
    from click.shell_completion import CompletionItem

    try:
        from .spec import load_project

        project = load_project(_project_of(ctx))
    except Exception:  # completion must never fail loudly
        return []
    return [CompletionItem(name, help=spec.label) for name, spec in project.kpis.items() if name.startswith(incomplete)]


def _complete_dimensions(ctx, param, incomplete: str):
    try:
        from .spec import load_project

        project = load_project(_project_of(ctx))
    except Exception:
        return []
    names = sorted({d for source in project.sources.values() for d in source.dimension_names})
    return [name for name in names if name.startswith(incomplete)]


class _Day(click.ParamType):
    """A date or a day relative to today (dates.py); checked as the command line is read, placed
    in the project's calendar once the project is open."""

    name = "date"

    def convert(self, value, param, ctx):
        from .dates import parse_day

        try:
            parse_day(value)
        except UsageError as error:
            self.fail(f"{str(value)[:60]!r} is not a date. {error.hint}", param, ctx)
        return value


DAY = _Day()


class _Grain(click.ParamType):
    """A built-in grain, or a granularity the project declares (read from its kpi_engine.yaml
    when the project argument came first; otherwise the compiler checks the name)."""

    name = "grain"

    def __init__(self, built_in: tuple[str, ...] = GRAINS):
        self.built_in = built_in  # DAY_GRAINS where periods must be days or longer (report, check, values)

    def known(self, ctx) -> tuple[list[str], bool]:
        """The grains to accept, and whether the project's own are among them."""
        from .custom_calendars import declared_grains
        from .spec import find_project_root

        project = ctx.params.get("project") if ctx else None
        try:
            return list(self.built_in) + declared_grains(find_project_root(project)), True
        except (KpiEngineError, TypeError):
            return list(self.built_in), False

    def convert(self, value, param, ctx):
        from .errors import did_you_mean

        known, complete = self.known(ctx)
        if value in known or (not complete and str(value).isidentifier()):
            return value
        close = did_you_mean(str(value), known)
        self.fail(f"{str(value)[:60]!r} is not one of {', '.join(repr(g) for g in known)}."
                  + (f" {close}" if close.startswith("Did") else ""), param, ctx)

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        return [CompletionItem(name) for name in self.known(ctx)[0] if name.startswith(incomplete)]


GRAIN = _Grain()
DAY_GRAIN = _Grain(DAY_GRAINS)


def _check_last(ctx, param, value):
    from .dates import parse_last

    if value is None:
        return None
    try:
        parse_last(value)
    except UsageError as error:
        raise click.BadParameter(f"{' '.join(value)[:60]!r} is not a number of periods. {error.hint}") from None
    return value


def query_options(fn):
    """Options shared by compile and evaluate: what to compute and how to slice it."""
    options = [
        click.argument("kpis", nargs=-1, shell_complete=_complete_kpis),
        click.option("--all", "all_kpis", is_flag=True, help="Every KPI of the project."),
        click.option("--formula", "formulas", multiple=True, metavar="EXPR",
                     help="An ad-hoc formula, e.g. 'sum(ad_spend.spend) / count(leads)', or named: "
                          "'cpl=ad_spend_total / new_contacts' (it keeps the unit of the KPIs it reads). Repeatable."),
        click.option("--by", "by", multiple=True, metavar="DIM[,DIM]", shell_complete=_complete_dimensions,
                     help="Dimensions to group by. Repeatable."),
        click.option("--grain", type=GRAIN,
                     help="Time bucket (hour, minute, second: local wall-clock time, on TIMESTAMP sources). "
                          "Without it, one total for the whole range."),
        click.option("--from", "start", type=DAY,
                     help="First day (inclusive): YYYY-MM-DD, a local time YYYY-MM-DDTHH:MM, or relative: "
                          "'start of quarter', '6 months ago', ..."),
        click.option("--to", "end", type=DAY, help="End (exclusive): YYYY-MM-DD[THH:MM], today, 'start of month', ..."),
        click.option("--last", nargs=2, metavar="N UNITS", callback=_check_last,
                     help="The N complete periods before the current one: --last 6 months (minutes, hours, days, "
                          "weeks, months, quarters, years, fiscal quarters, fiscal years). Instead of --from/--to."),
        click.option("--as-of", "as_of", type=DAY,
                     help="The day relative dates count from (default: today in the project's time zone)."),
        click.option("--where", metavar="CONDITION", help="Filter on dimensions: \"channel in ('ppc', 'email')\"."),
        click.option("--having", metavar="CONDITION", help="Filter on KPI values: 'cost_per_lead > 100'."),
        click.option("--order", "order_by", multiple=True, metavar="COLUMN",
                     help="Sort by an output column; prefix '-' for descending. Repeatable."),
        click.option("--limit", type=click.IntRange(min=0), help="At most this many rows."),
        click.option("--fill", is_flag=True,
                     help="Dense series: every period of --from/--to for every dimension value (0 counts, null ratios)."),
        click.option("--time-axis", "time_axis", metavar="COLUMN",
                     help="Place rows in time by this column on the sources that list it in time_axes (e.g. won_at)."),
        click.option("--query", "query", metavar="NAME",
                     help="Run a saved query (queries: in a spec file); options given here replace its own."),
        click.option("--no-rollups", "no_rollups", is_flag=True,
                     help="Read every source's raw rows, never a materialized rollup (docs/rollups.md)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _request_options(project, kpis, all_kpis, formulas, by, grain, start, end, last, as_of, where, having, order_by,
                     limit, fill, time_axis, query, no_rollups=False):
    from .engine import with_saved_query

    names = list(kpis)
    if all_kpis:
        names = _all_kpis(project, _split(by), grain) + [k for k in names if k not in project.project.kpis]
    options = dict(by=_split(by), grain=grain, start=start, end=end, last=last, as_of=as_of, where=where,
                   having=having, order_by=tuple(order_by), limit=limit, formulas=tuple(formulas), fill=fill,
                   time_axis=time_axis)
    if query is not None:
        names, options = with_saved_query(project.project, query, names, options)
        names = list(names)
    if no_rollups:
        options["rollups"] = False
    if not names and not options.get("formulas"):
        raise UsageError("no KPI given.", None,
                         "Name KPIs after the project folder, use --all, or pass --formula; "
                         "'kpi-engine list PROJECT' shows the KPIs.")
    return names, options


def _from_saved_query(kpi_project, query: str | None, kpis: tuple[str, ...], grain: str,
                      by: tuple[str, ...]) -> tuple[tuple[str, ...], str, tuple[str, ...]]:
    """report and check with --query: the saved query's KPIs, grain and dimensions, where the
    command line gives none (their periods are the latest complete ones, not its range)."""
    if query is None:
        return kpis, grain, by
    from .engine import with_saved_query

    names, options = with_saved_query(kpi_project.project, query, (), {})
    given_grain = click.get_current_context().get_parameter_source("grain") != click.core.ParameterSource.DEFAULT
    return (tuple(kpis) or tuple(names), grain if given_grain or not options.get("grain") else options["grain"],
            tuple(by) or tuple(options.get("by", ())))


def _all_kpis(project, by: tuple[str, ...], grain: str | None) -> list[str]:
    """Every KPI that can answer this request; says on stderr which cannot and why."""
    from .resolve import dimension_paths

    model = project.model()
    usable, skipped = [], []
    for name in project.project.kpis:
        kpi = model.kpis[name]
        missing = [d for d in by if d not in kpi.dimensions  # (or named by its path)
                   and not (kpi.sources and all(d in dimension_paths(model.sources, s) for s in kpi.sources))]
        if kpi.unavailable:
            skipped.append(f"{name} (needs unmapped {', '.join(kpi.unavailable)})")
        elif missing:
            skipped.append(f"{name} (no {', '.join(missing)})")
        elif grain is None and model.needs_grain(name):
            skipped.append(f"{name} (needs --grain)")
        elif grain in SUBDAILY and any(not _has_clock(model, source) for source in kpi.sources):
            skipped.append(f"{name} (no time of day for --grain {grain})")
        else:
            usable.append(name)
    if skipped:
        _show(f"Note: left out {len(skipped)} KPI{'s' if len(skipped) != 1 else ''}: {', '.join(skipped)}.",
              err=True)
    return usable


def _has_clock(model, source: str) -> bool:
    """The source's rows have a time of day: a time column that is not a DATE, and no time_end."""
    spec = model.sources[source]
    return bool(spec.time) and not spec.time_end and model.column_type(source, spec.time) != "date"


def _day(kpi_project, text: str | None):
    """--as-of of report and check as a date in the project's calendar."""
    from .dates import resolve_day

    return resolve_day(text, "--as-of", kpi_project.project.config.calendar, clock=False)


def _progress(message: str):
    """A spinner with elapsed time on a terminal's stderr while the warehouse works; nothing otherwise."""
    import contextlib

    if not sys.stderr.isatty():
        return contextlib.nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(f"{message}...", spinner="dots")


def _open(path: Path, warehouse: str | None, timeout: float | None = None):
    from .engine import open_project

    return open_project(path, warehouse=warehouse, timeout=timeout)


def _check_timeout(ctx, param, value: float | None) -> float | None:
    """--timeout inf, nan or 1e300 would silently mean no timeout: refuse them as click does 0."""
    from .hookspecs import timeout_seconds

    if value is None:
        return None
    try:
        return timeout_seconds(value, "--timeout", UsageError)
    except UsageError as error:
        raise click.BadParameter(f"{error.message.removeprefix(repr(param.opts[0]) + ' ')} {error.hint}") from None


warehouse_option = click.option("--warehouse", metavar="URL", envvar="KPI_ENGINE_WAREHOUSE",
                                 help="Override the project's warehouse, e.g. duckdb:///other.duckdb.")


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="kpi-engine")
@click.option("--profiles-dir", metavar="FOLDER", help="The folder of dbt's profiles.yml, for a warehouse that "
              "names a dbt profile (wins over DBT_PROFILES_DIR; docs/dbt.md).")
def cli(profiles_dir: str | None) -> None:
    """Define marketing and sales KPIs in YAML; compile them to SQL; run them on your warehouse.

    PROJECT is a folder holding kpi_engine.yaml and YAML files of sources and KPIs.

    Shell completion (commands, KPI names, dimensions): add to ~/.bashrc
    eval "$(_KPI_ENGINE_COMPLETE=bash_source kpi-engine)"  (zsh_source / fish_source for other shells).
    """
    from .dbt import set_profiles_dir

    set_profiles_dir(profiles_dir)


_INIT_FILES = {
    "kpi_engine.yaml": """\
# A kpi-engine project. Evaluate it with:  kpi-engine evaluate {folder} --all --grain month
{name}
warehouse:
  adapter: duckdb
  data: data            # every data/<table>.csv is a read-only table named after the file
# include: [builtin:marketing]   # the 39-KPI marketing library (docs/library.md)
""",
    "sources.yaml": """\
sources:
  orders:
    label: Orders
    table: orders
    time: ordered_at
    primary_key: order_id
    dimensions: [channel]
""",
    "kpis.yaml": """\
kpis:
  revenue:
    label: Revenue
    description: Paid order revenue in the period.
    unit: currency
    formula: sum(orders.amount where status = 'paid')

  average_order_value:
    label: Average order value
    unit: currency
    formula: revenue / count(orders where status = 'paid')
""",
    "data/orders.csv": """\
order_id,ordered_at,channel,amount,status
1,2025-01-05 10:00:00,email,120.00,paid
2,2025-01-19 15:30:00,ppc,80.00,paid
3,2025-02-02 09:15:00,email,200.00,paid
4,2025-02-14 18:45:00,ppc,50.00,refunded
5,2025-02-20 11:00:00,ppc,150.00,paid
""",
}


@cli.command(context_settings=CONTEXT)
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@handle_errors
def init(folder: Path) -> None:
    """Create a small working project in FOLDER: config, a source, two KPIs and sample data."""
    import yaml

    if folder.exists() and any(folder.iterdir()):
        raise UsageError(f"'{folder}' is not empty.", None, "Choose a new folder; init never overwrites files.")
    # The folder name may mean something to YAML (yes, null, 1e3, '- x', 'a: b', '#x'), hold
    # quotes or bytes that are not UTF-8: the name is written by a YAML emitter, quoted as needed.
    name_line = yaml.safe_dump({"name": _project_name(folder)}, allow_unicode=True, width=1_000).rstrip("\n")
    shown = shlex.quote(str(folder))
    if not shown.isprintable():  # a newline or an undecodable byte would break the comment
        shown = "PROJECT_FOLDER"
    try:
        for relative, template in _INIT_FILES.items():
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(template.format(name=name_line, folder=shown), encoding="utf-8")
    except OSError as error:
        raise OutputError(f"cannot create the project in '{folder}': {error.strerror or error}.", None,
                          "Choose a folder you can write to, with a shorter name if the name is too long.") from None
    _show(f"Created {_printable(folder)}. Next:\n  kpi-engine evaluate {shown} --all --grain month")


def _printable(path: Path) -> str:
    """A path as text a terminal shows as it is: bytes that are not UTF-8 and control characters escaped."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _project_name(folder: Path) -> str:
    """The folder's name as the project's: '-' as '_', characters that cannot be written in a UTF-8
    file (bytes of another encoding) or shown on a line (controls) as '_', at most 200 characters."""
    name = folder.resolve().name if folder.name in ("", ".", "..") else folder.name
    name = "".join(c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF else "_" for c in name.replace("-", "_"))
    return name.strip()[:200] or "my_kpis"


@cli.command(context_settings=CONTEXT)
@project_argument
@click.option("--offline", is_flag=True, help="Do not open the warehouse (skip table and column checks).")
@warehouse_option
@handle_errors
def validate(project: Path, offline: bool, warehouse: str | None) -> None:
    """Check every spec file and formula; report all problems with file:line:column."""
    from .engine import check_project

    from .mapping import unavailable_kpis

    model, errors = check_project(project, warehouse=warehouse, describe=not offline)
    if errors:
        _fail(ProjectInvalid(errors))
    checked = "specs and formulas" if offline else "specs, formulas, tables and columns"
    unmapped = [name for name, source in model.sources.items() if source.unmapped]
    unavailable = unavailable_kpis(model)
    shown = [s for s in model.sources.values() if not s.axis_of]  # a time axis's view is part of its source
    counts = (f"{len(shown)} sources" + (f" ({len(unmapped)} unmapped)" if unmapped else "") +
              f", {len(model.kpis)} KPIs" + (f" ({len(unavailable)} unavailable)" if unavailable else ""))
    _show(f"OK: project '{model.project.config.name}': {counts}; {checked} are valid.")
    for source in unmapped:
        needing = [name for name, sources in unavailable.items() if source in sources]
        _show(f"Unavailable (source '{source}' is unmapped): {', '.join(needing) or 'no KPI'}.")


def _unavailable_offline(loaded) -> dict[str, tuple[str, ...]]:
    """KPI -> the unmapped sources it needs, from the specs alone; empty when the project
    declares no unmapped source or its formulas do not resolve (validate reports why)."""
    if not any(source.unmapped for source in loaded.sources.values()):
        return {}
    from .engine import KpiProject
    from .mapping import unavailable_kpis

    try:
        return unavailable_kpis(KpiProject(loaded).model(describe=False))
    except KpiEngineError:
        return {}


def _origin(location) -> str | None:
    """file:line of a definition (None when there is none)."""
    return f"{location.file}:{location.line}" if location else None


@cli.command("list", context_settings=CONTEXT)
@project_argument
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@handle_errors
def list_(project: Path, fmt: str) -> None:
    """List the KPIs and sources of a project, with where each is defined."""
    import json

    from .spec import load_project, relation_name

    loaded = load_project(project)
    needs = _unavailable_offline(loaded)
    kpis = [{"name": k.name, "label": k.label, "unit": k.unit, "defined_in": _origin(k.where(key=True)),
             "overrides": _origin(k.overrides), "formula": " ".join(k.formula.split()),
             "unavailable": list(needs.get(k.name, ())) or None} for k in loaded.kpis.values()]
    sources = [{"name": s.name, "relation": "(unmapped)" if s.unmapped else relation_name(s), "time": s.time,
                "time_axes": list(s.time_axes), "dimensions": list(s.dimension_names),
                "defined_in": _origin(s.where(key=True)), "overrides": _origin(s.overrides),
                "mapped": sorted(s.column_map)} for s in loaded.sources.values() if not s.axis_of]
    granularities = [{"name": name, "periods": g.describe()}
                     for name, g in getattr(loaded.config.calendar, "granularities", {}).items()]
    if fmt == "json":
        _emit(json.dumps({"kpis": kpis, "sources": sources, **({"granularities": granularities} if granularities else {})},
                         indent=2) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160, no_color=not sys.stdout.isatty(), highlight=False)
    table = Table(title=cell(f"KPIs of {loaded.config.name}"), title_justify="left", show_edge=False)
    headers = ("name", "label", "unit", "defined in", "overrides") + (("unavailable",) if needs else ())
    for header in headers:
        table.add_column(header, no_wrap=True)
    for k in kpis:
        extra = (f"needs unmapped {', '.join(k['unavailable'])}" if k["unavailable"] else "",) if needs else ()
        table.add_row(*(cell(k[key] or "") for key in ("name", "label", "unit", "defined_in", "overrides")),
                      *(cell(text) for text in extra))
    console.print(table)
    console.print()
    table = Table(title="Sources", title_justify="left", show_edge=False)
    for header in ("name", "relation", "time", "dimensions", "defined in", "overrides"):
        table.add_column(header, no_wrap=True)
    for s in sources:
        time = s["time"] + (f" (also {', '.join(s['time_axes'])})" if s["time_axes"] else "") if s["time"] else None
        table.add_row(*(cell(value or "") for value in (s["name"], s["relation"], time, ", ".join(s["dimensions"]),
                                                        s["defined_in"], s["overrides"])))
    console.print(table)
    if granularities:  # named periods of kpi_engine.yaml, usable as --grain
        console.print()
        table = Table(title="Granularities (--grain)", title_justify="left", show_edge=False)
        for header in ("name", "periods"):
            table.add_column(header, no_wrap=True)
        for g in granularities:
            table.add_row(cell(g["name"]), cell(g["periods"]))
        console.print(table)


@cli.command(context_settings=CONTEXT)
@project_argument
@query_options
@click.option("--dialect", metavar="NAME", help="Any sqlglot dialect: postgres, snowflake, bigquery, spark, ... "
                                               "Default: the warehouse's.")
@click.option("--offline", is_flag=True, help="Do not open the warehouse to read column types.")
@click.option("--plan", "plan", is_flag=False, flag_value="text", default=None, type=click.Choice(["text", "json"]),
              help="Print the logical plan instead of the SQL: the rows each source reads, its aggregates, the keys, "
                   "the windows and the filters (--plan json: as JSON).")
@warehouse_option
@handle_errors
def compile(project: Path, dialect: str | None, offline: bool, plan: str | None, warehouse: str | None,
            **query) -> None:
    """Print the SQL that computes KPIS (one named part per source, then the join), or its plan."""
    with _open(project, warehouse) as kpi_project:
        names, options = _request_options(kpi_project, **query)
        compiled = kpi_project.compile(names, dialect=dialect, describe=not offline, **options)
        if plan == "json":
            _emit(json.dumps(compiled.plan.to_dict(), indent=2) + "\n")
        elif plan:
            _emit(compiled.plan.text() + "\n")
        else:
            _emit(compiled.sql(pretty=True) + ";\n")


@cli.command(context_settings=CONTEXT)
@project_argument
@query_options
@click.option("--format", "fmt", metavar="FORMAT",
              help="table (the default on a terminal), markdown (a GitHub table), csv, json, parquet (to --output), "
                   "or a format added by a plugin. With --output and no --format, the file's extension says: "
                   ".csv, .json, .parquet, .md, .txt.")
@click.option("--transpose", is_flag=True,
              help="table and markdown: one line per KPI, one column per period (and dimension values).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file (atomically) instead of standard output.")
@click.option("--complete-only", "complete_only", is_flag=True,
              help="Only periods that are complete: inside --from/--to and inside every source's data.")
@warehouse_option
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS", callback=_check_timeout,
              help="Cancel the query in the warehouse after this long (exit code 5); at most a week.")
@handle_errors
def evaluate(project: Path, fmt: str, transpose: bool, output: Path | None, complete_only: bool,
             warehouse: str | None, timeout: float | None, **query) -> None:
    """Compute KPIS on the project's warehouse and print them."""
    from .output import FORMATS, STREAMED, check_transpose, format_of_file, render, write_stream

    if fmt is None:
        fmt = format_of_file(output) if output is not None else "table"
    check_transpose(fmt, transpose)  # before the query runs
    if output is not None:
        check_writable(output)  # a read-only folder or a name too long fails before the query, not after
    with _open(project, warehouse, timeout) as kpi_project:
        writer = None
        if fmt not in FORMATS:
            writers = kpi_project.registry.writers()
            if fmt not in writers:
                raise UsageError(f"unknown output format '{fmt}'.", None,
                                 f"Use one of: {', '.join(list(FORMATS) + sorted(writers))}.")
            writer = writers[fmt]
            if writer.binary and output is None:
                raise UsageError(f"the '{fmt}' format is binary.", None, "Write it to a file with --output FILE.")
        names, options = _request_options(kpi_project, **query)
        if writer is None and output is not None and fmt in STREAMED:
            compiled, batches = kpi_project.stream(names, complete_only=complete_only, **options)
            count = write_stream(fmt, compiled.columns, batches, output)
            _show(f"Wrote {count} rows to {output}.", err=True)
            return
        with _progress(f"Evaluating {len(names) + len(options.get('formulas', ()))} KPIs"):
            result = kpi_project.evaluate(names, complete_only=complete_only, **options)
        if writer is not None:
            buffer = io.BytesIO() if writer.binary else io.StringIO()
            writer.write(result, buffer)
            content = buffer.getvalue()
        else:
            color = output is None and fmt == "table" and sys.stdout.isatty()
            content = render(result, fmt, kpi_project.project.config.currency, color, transpose)
    if output is None and writer is None and fmt == "table":
        click.echo(content, nl=False)  # every value in it is already shown as text (output.to_table)
    elif output is None:
        _emit(content)
    else:
        write_atomically(output, content)
        _show(f"Wrote {len(result)} rows to {output}.", err=True)


@cli.command(context_settings=CONTEXT)
@project_argument
@click.argument("kpis", nargs=-1)
@click.option("--grain", type=DAY_GRAIN, default="month", show_default=True)
@click.option("--as-of", "as_of", type=DAY,
              help="Check the last period complete before this day, YYYY-MM-DD or relative ('start of month'); "
                   "default: the latest complete period of the data.")
@click.option("--by", "by", multiple=True, metavar="DIM", help="Check each value of these dimensions too.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--query", "query", metavar="NAME", help="Take the KPIs, grain and --by of a saved query.")
@warehouse_option
@handle_errors
def check(project: Path, kpis: tuple[str, ...], grain: str, as_of, by, fmt: str, query: str | None,
          warehouse: str | None) -> None:
    """Check KPI targets (min/max) for the latest complete period of the data; exit 1 when one is
    breached, 6 when a KPI has no value for that period or a source is stale."""
    import json

    from .output import format_value
    from .targets import check_targets

    with _open(project, warehouse) as kpi_project:
        kpis, grain, by = _from_saved_query(kpi_project, query, kpis, grain, by)
        report = check_targets(kpi_project, list(kpis), grain, _day(kpi_project, as_of), _split(by))
        currency = kpi_project.project.config.currency
    if fmt == "json":
        _emit(json.dumps(report, indent=2, default=str) + "\n")
    else:
        when = f"the {grain.replace('_', ' ')} starting {report['period']}" if report["period"] else "no period"
        _show(f"Targets for {when}, {report['basis']}:")
        for message in report["stale"]:
            _show(f"  STALE    {message}")
        for item in report["results"]:
            where = "".join(f" [{k}={v}]" for k, v in item["dimensions"].items())
            value = "no data" if item["value"] is None else format_value(item["value"], item["unit"], currency,
                                                                         item["format"])
            line = f"  {item['status'].upper():8} {item['kpi']}{where}: {value} (target {item['target']})"
            if item["status"] == "breached":
                line += f", off by {format_value(item['gap'], item['unit'], currency, item['format'])}"
            _show(line)
        _show(f"{report['breached']} breached, {report['ok']} on target, {report['no_data']} without data"
              + (f", {len(report['stale'])} stale source{'s' if len(report['stale']) != 1 else ''}."
                 if report["stale"] else "."))
    if not report["healthy"]:
        sys.exit(6)
    if report["breached"]:
        sys.exit(1)


@cli.command(context_settings=CONTEXT)
@project_argument
@click.argument("dimensions", nargs=-1, shell_complete=_complete_dimensions)
@click.option("--source", "sources", multiple=True, metavar="SOURCE",
              help="Only where this source has rows (repeatable); default: every source with the dimensions.")
@click.option("--grain", type=DAY_GRAIN, help="List the values of each period.")
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), help="First day (inclusive).")
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]), help="Last day (exclusive).")
@click.option("--where", metavar="CONDITION", help="A condition over dimensions, as for evaluate.")
@click.option("--limit", type=click.IntRange(min=0), help="At most this many rows.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@warehouse_option
@handle_errors
def values(project: Path, dimensions: tuple[str, ...], sources: tuple[str, ...], grain: str | None, start, end,
           where: str | None, limit: int | None, fmt: str, warehouse: str | None) -> None:
    """List the values of DIMENSIONS (e.g. channel), per period with --grain, where sources have rows."""
    from .output import render

    with _open(project, warehouse) as kpi_project:
        result = kpi_project.values(list(dimensions), sources=list(sources), grain=grain,
                                    start=start.date() if start else None, end=end.date() if end else None,
                                    where=where, limit=limit)
        content = render(result, fmt, kpi_project.project.config.currency, fmt == "table" and sys.stdout.isatty())
    if fmt == "table":
        click.echo(content, nl=False)
    else:
        _emit(content)


@cli.command("test", context_settings=CONTEXT)
@project_argument
@click.argument("names", nargs=-1)
@handle_errors
def test_command(project: Path, names: tuple[str, ...]) -> None:
    """Run the KPI unit tests declared under 'tests:' on embedded DuckDB; exit 1 if any fails.

    Test rows are keyed by source, in the source's own columns: they run against the project's
    definitions and map, whatever the warehouse."""
    from .kpi_tests import run_tests
    from .spec import load_project

    loaded = load_project(project)
    outcomes = run_tests(loaded, list(names))
    for outcome in outcomes:
        origin = f" ({outcome.library})" if outcome.library else ""
        status = "SKIP" if outcome.skipped else "PASS" if outcome.passed else "FAIL"
        _show(f"{status} {outcome.name}{origin}" + (f": {outcome.skipped}" if outcome.skipped else ""))
        for problem in outcome.problems:
            _show(f"     {problem}")
    failed = sum(not o.passed for o in outcomes)
    skipped = sum(bool(o.skipped) for o in outcomes)
    _show(f"{len(outcomes) - failed - skipped} passed, {failed} failed" +
               (f", {skipped} skipped (the SKIP lines say why)." if skipped else "."))
    if failed:
        sys.exit(1)


@cli.command("map", context_settings=CONTEXT)
@project_argument
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="The spec file to write (default: mapping.yaml in the project folder).")
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
@warehouse_option
@handle_errors
def map_(project: Path, output: Path | None, force: bool, warehouse: str | None) -> None:
    """Propose how the included libraries' sources read your warehouse, as a YAML file to review."""
    from .engine import KpiProject, check_project
    from .mapping import unavailable_kpis
    from .proposal import propose, render
    from .spec import find_project_root, load_project

    root = find_project_root(project)
    target = output or root / "mapping.yaml"
    if target.exists() and not force:
        raise UsageError(f"'{target}' exists.", None, "Pass --force to replace it, or --output another file.")
    # A previous proposal in the project would count as the project's own mapping: set it aside
    # (a dot file is not read) while proposing, and put it back if nothing replaces it.
    aside = target.with_name(f".{target.name}.previous") if target.exists() else None
    if aside:
        target.replace(aside)
    try:
        with _open(project, warehouse) as kpi_project:
            guesses = propose(kpi_project)
        if not guesses:
            _show("Every library source already reads a table of the warehouse with the columns it needs, "
                       "or is mapped by the project: nothing to propose.")
            return
        write_atomically(target, render(guesses))
    finally:
        if aside and aside.exists():
            if target.exists():
                aside.unlink()
            else:
                aside.replace(target)
    tables = [g for g in guesses if g.table]
    todo = sum(len(g.missing) for g in tables)
    guessed = sum(1 for g in tables for c in g.columns if c.found not in (None, c.column))
    _show(f"Wrote {target}: {len(tables)} source{'s' if len(tables) != 1 else ''} mapped to tables "
               f"({guessed} columns guessed, {todo} TODO), {len(guesses) - len(tables)} unmapped. Review every entry.")
    for guess in guesses:
        where = guess.table or "unmapped"
        _show(f"  {guess.source}: {where}" + (f", {len(guess.missing)} TODO" if guess.table and guess.missing else ""))
    if target.parent.resolve() != root.resolve():
        return  # not part of the project: nothing more to check
    try:
        unavailable = unavailable_kpis(KpiProject(load_project(root), warehouse=warehouse).model(describe=False))
    except KpiEngineError:
        unavailable = {}
    total = len(load_project(root).kpis)
    _show(f"KPIs available with this mapping: {total - len(unavailable)} of {total}"
               + (f" (unavailable: {', '.join(unavailable)})" if unavailable else "") + ".")
    _, errors = check_project(root, warehouse=warehouse)
    _show(f"kpi-engine validate: {len(errors)} problem{'s' if len(errors) != 1 else ''} to review."
               if errors else "kpi-engine validate: OK.")


@cli.command(context_settings=CONTEXT)
@project_argument
@click.argument("rollups", nargs=-1)
@click.option("--from", "start", type=DAY, help="First day to compute (default: the last materialized day minus "
                                                "the rollup's lookback_days; every day on a first run).")
@click.option("--to", "end", type=DAY, help="End day, exclusive (default: today: a day still receiving rows is "
                                            "read from the raw rows).")
@click.option("--full", is_flag=True, help="Compute every day again and replace the whole table.")
@warehouse_option
@handle_errors
def materialize(project: Path, rollups: tuple[str, ...], start, end, full: bool, warehouse: str | None) -> None:
    """Compute the day totals of ROLLUPS (default: every rollup) and store them, so the requests
    they answer read them instead of the raw rows (docs/rollups.md)."""
    with _open(project, warehouse) as kpi_project:
        for done in kpi_project.materialize(rollups, start=start, end=end, full=full):
            days = f"{done['from'] or 'the first day of data'} to {done['to']} (excluded)"
            _show(f"{done['rollup']}: {done['refresh']} refresh ({done['why']}) of {days} into {done['table']}; "
                  f"materialized to {done['last_day']}, {done['rows']:,} rows.")


def _explained(kpi_project, kpi: str, grain: str, dialect: str | None):
    """The KPI compiled offline; with rollups, as the warehouse would run it (which rollups are
    materialized is known there), when it can be opened."""
    if kpi_project.project.rollups:
        try:
            return kpi_project.compile([kpi], grain=grain, dialect=dialect)
        except KpiEngineError:
            pass  # no warehouse at hand: the plan says the rollups' state is not known
    return kpi_project.compile([kpi], grain=grain, dialect=dialect, describe=False)


@cli.command(context_settings=CONTEXT)
@project_argument
@click.argument("kpi", shell_complete=_complete_kpis)
@click.option("--dialect", metavar="NAME", help="Show the SQL in this dialect (default: the warehouse's).")
@click.option("--grain", type=GRAIN, default="month", show_default=True,
              help="The grain of the SQL shown.")
@handle_errors
def explain(project: Path, kpi: str, dialect: str | None, grain: str) -> None:
    """Describe a KPI: meaning, formula, what it is built from, dimensions and its SQL."""
    from .catalog import explain as explain_text

    with _open(project, None) as kpi_project:
        model = kpi_project.model(describe=False)
        query = _explained(kpi_project, kpi, grain, dialect)
        _show(explain_text(model, kpi) + "\nPlan (by " + grain + "):\n" + query.plan.text()
              + "\n\nSQL (by " + grain + "):\n" + query.sql() + ";")


@cli.command(context_settings=CONTEXT)
@project_argument
@click.argument("kpis", nargs=-1, shell_complete=_complete_kpis)
@click.option("--grain", type=DAY_GRAIN, default="month", show_default=True,
              help="The periods of the figures and of the charts.")
@click.option("--by", "by", metavar="DIM", shell_complete=_complete_dimensions,
              help="One line per value of this dimension in the charts of the KPIs it can slice.")
@click.option("--as-of", "as_of", type=DAY,
              help="Report the last period complete before this day, YYYY-MM-DD or relative ('start of month'); "
                   "default: the latest complete period of the data.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The HTML file to write (atomically).")
@click.option("--query", "query", metavar="NAME", help="Take the KPIs, grain and --by of a saved query.")
@warehouse_option
@handle_errors
def report(project: Path, kpis: tuple[str, ...], grain: str, by: str | None, as_of, output: Path, query: str | None,
           warehouse: str | None) -> None:
    """Write a self-contained HTML report of KPIS (default: all): latest value, change, target, trend chart."""
    from .report import build_report

    check_writable(output)
    with _open(project, warehouse) as kpi_project:
        kpis, grain, dims = _from_saved_query(kpi_project, query, kpis, grain, (by,) if by else ())
        if len(dims) > 1:
            raise UsageError(f"the report draws one --by dimension; saved query '{query}' has {len(dims)}.", None,
                             "Pass --by DIM to choose one.")
        by = dims[0] if dims else None
        page = build_report(kpi_project, list(kpis) or None, grain=grain, by=by,
                            as_of=_day(kpi_project, as_of))
    write_atomically(output, page)
    _show(f"Wrote {output}.", err=True)


@cli.command(context_settings=CONTEXT)
@project_argument
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the catalogue to this file instead of standard output.")
@click.option("--format", "fmt", type=click.Choice(["markdown", "html"]), default="markdown", show_default=True,
              help="Markdown, or one self-contained HTML page with a table of contents.")
@handle_errors
def docs(project: Path, output: Path | None, fmt: str) -> None:
    """Generate a catalogue of every KPI: formula, description, unit, dimensions, target."""
    from .catalog import markdown
    from .report import catalog_html

    if output is not None:
        check_writable(output)
    with _open(project, None) as kpi_project:
        model = kpi_project.model(describe=False)
        text = catalog_html(model) if fmt == "html" else markdown(model)
    if output is None:
        _emit(text)
        return
    write_atomically(output, text)
    _show(f"Wrote {output}.", err=True)


@cli.command(context_settings=CONTEXT)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@handle_errors
def plugins(fmt: str) -> None:
    """List registered adapters and plugins, and where each comes from."""
    import json

    from .plugins import default_registry

    registry = default_registry()
    adapters = registry.adapters()
    rows = []
    for info in list(registry.plugins.values()):
        provided = registry.provided_by(info.name)
        info = registry.plugins.get(info.name, info)  # calling the hooks may have marked it failed
        rows.append({"plugin": info.name, **provided,
                     "dialects": [adapters[name].adapter.dialect for name in provided["adapters"]],
                     "module": info.module,
                     "distribution": f"{info.distribution} {info.version}" if info.distribution else None,
                     "status": f"failed: {info.error}" if info.error else "ok"})
    if fmt == "json":
        _emit(json.dumps(rows, indent=2) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_edge=False)
    for header in ("plugin", "provides", "module", "package", "status"):
        table.add_column(header)
    for row in rows:
        provides = [f"adapter {a} ({d})" for a, d in zip(row["adapters"], row["dialects"])]
        provides += [f"function {f}" for f in row["functions"]] + [f"format {f}" for f in row["formats"]]
        table.add_row(*(cell(value) for value in (row["plugin"], ", ".join(provides), row["module"],
                                                  row["distribution"] or "", row["status"])))
    Console(width=160, no_color=not sys.stdout.isatty(), highlight=False).print(table)


# `serve` and `mcp` live in kpi_engine/serve/command.py; they import the web libraries only when run.
from .serve.command import mcp_command, serve_command  # noqa: E402

cli.add_command(serve_command)
cli.add_command(mcp_command)

# `import` and `export` (dbt MetricFlow, Cube) live in kpi_engine/interop/command.py.
from .interop.command import export_command, import_command  # noqa: E402

cli.add_command(import_command)
cli.add_command(export_command)


def main() -> None:
    cli(prog_name="kpi-engine")


if __name__ == "__main__":  # pragma: no cover
    main()
