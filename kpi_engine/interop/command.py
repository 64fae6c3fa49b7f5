"""``kpi-engine import metricflow|cube`` and ``kpi-engine export metricflow``."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from ..errors import SpecError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_path = click.Path(exists=False, path_type=Path)
_output = click.option("-o", "--output", "out", type=_path, default=Path("."), show_default=True,
                       help="The kpi-engine project folder to write into.")


def _reported(verb: str):
    """Run a translation, print its report, and exit 1 when nothing was translated (the command
    line's error handling, imported when run)."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            from ..cli import _show, handle_errors

            @handle_errors
            def run() -> None:
                report = fn(*args, **kwargs)
                for line in report.lines(verb):
                    _show(line)
                if not report.sources and not report.kpis:
                    raise SpecError(f"nothing could be {verb.lower()}.", None,
                                    "Each construct above says why; fix them or write the definitions by hand.")

            run()

        return wrapper

    return decorate


@click.group("import", context_settings=CONTEXT)
def import_command() -> None:
    """Translate another semantic layer's definitions into kpi-engine sources and KPIs.

    Writes <OUT>/<tool>_sources.yaml and <OUT>/<tool>_kpis.yaml (and kpi_engine.yaml when OUT has
    none), prints every construct it could not translate with its file:line and why, and exits 1
    only when nothing could be translated.
    """


@import_command.command("metricflow", context_settings=CONTEXT)
@click.argument("path", type=_path)
@_output
@click.option("--tables", is_flag=True, help="Write 'table: NAME' for ref('NAME') instead of 'model: NAME' "
                                             "(no dbt manifest needed).")
@_reported("Translated")
def import_metricflow_command(path: Path, out: Path, tables: bool):
    """Import dbt MetricFlow semantic models and metrics from PATH (a folder or a YAML file)."""
    from .metricflow import import_metricflow

    return import_metricflow(path, out, tables)


@import_command.command("cube", context_settings=CONTEXT)
@click.argument("path", type=_path)
@_output
@_reported("Translated")
def import_cube_command(path: Path, out: Path):
    """Import a Cube data model (YAML cubes) from PATH (a folder or a YAML file)."""
    from .cube import import_cube

    return import_cube(path, out)


@click.group("export", context_settings=CONTEXT)
def export_command() -> None:
    """Write a kpi-engine project's definitions in another semantic layer's format."""


@export_command.command("metricflow", context_settings=CONTEXT)
@click.argument("project", type=_path)
@click.argument("out_dir", type=_path)
@_reported("Exported")
def export_metricflow_command(project: Path, out_dir: Path):
    """Write PROJECT's sources and KPIs as dbt MetricFlow semantic models and metrics in OUT_DIR
    (semantic_models.yml and metrics.yml), reporting what MetricFlow cannot say."""
    from .export_metricflow import export_metricflow

    return export_metricflow(project, out_dir)
