"""``kpi-engine import metricflow|cube`` and ``kpi-engine export metricflow``."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import SpecError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_path = click.Path(exists=False, path_type=Path)


def _finish(report, verb: str, handled: int) -> None:
    from ..cli import _show

    for line in report.lines(verb):
        _show(line)
    if not handled:
        raise SpecError(f"nothing could be {verb.lower()}.", None,
                        "Each construct above says why; fix them or write the definitions by hand.")


@click.group("import", context_settings=CONTEXT)
def import_command() -> None:
    """Translate another semantic layer's definitions into kpi-engine sources and KPIs.

    Writes <OUT>/<tool>_sources.yaml and <OUT>/<tool>_kpis.yaml (and kpi_engine.yaml when OUT has
    none), prints every construct it could not translate with its file:line and why, and exits 1
    only when nothing could be translated.
    """


@import_command.command("metricflow", context_settings=CONTEXT)
@click.argument("path", type=_path)
@click.option("-o", "--output", "out", type=_path, default=Path("."), show_default=True,
              help="The kpi-engine project folder to write into.")
@click.option("--tables", is_flag=True, help="Write 'table: NAME' for ref('NAME') instead of 'model: NAME' "
                                             "(no dbt manifest needed).")
def import_metricflow_command(path: Path, out: Path, tables: bool) -> None:
    """Import dbt MetricFlow semantic models and metrics from PATH (a folder or a YAML file)."""
    from ..cli import handle_errors
    from .metricflow import import_metricflow

    @handle_errors
    def run() -> None:
        report = import_metricflow(path, out, tables)
        _finish(report, "Translated", len(report.sources) + len(report.kpis))

    run()


@import_command.command("cube", context_settings=CONTEXT)
@click.argument("path", type=_path)
@click.option("-o", "--output", "out", type=_path, default=Path("."), show_default=True,
              help="The kpi-engine project folder to write into.")
def import_cube_command(path: Path, out: Path) -> None:
    """Import a Cube data model (YAML cubes) from PATH (a folder or a YAML file)."""
    from ..cli import handle_errors
    from .cube import import_cube

    @handle_errors
    def run() -> None:
        report = import_cube(path, out)
        _finish(report, "Translated", len(report.sources) + len(report.kpis))

    run()


@click.group("export", context_settings=CONTEXT)
def export_command() -> None:
    """Write a kpi-engine project's definitions in another semantic layer's format."""


@export_command.command("metricflow", context_settings=CONTEXT)
@click.argument("project", type=_path)
@click.argument("out_dir", type=_path)
def export_metricflow_command(project: Path, out_dir: Path) -> None:
    """Write PROJECT's sources and KPIs as dbt MetricFlow semantic models and metrics in OUT_DIR."""
    from ..cli import handle_errors
    from .export_metricflow import export_metricflow

    @handle_errors
    def run() -> None:
        report = export_metricflow(project, out_dir)
        _finish(report, "Exported", len(report.sources) + len(report.kpis))

    run()
