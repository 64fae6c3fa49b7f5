"""Without the `serve` extra the rest of the command line works, and `serve`/`mcp` say what to install."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from kpi_engine.cli import cli


@pytest.mark.parametrize("command", ["serve", "mcp"])
def test_serving_without_the_extra_says_what_to_install(monkeypatch, command):
    for module in ("fastapi", "uvicorn", "mcp"):
        monkeypatch.setitem(__import__("sys").modules, module, None)  # as if not installed
    result = CliRunner().invoke(cli, [command, "examples/marketing"])
    assert result.exit_code == 2
    assert result.output == ("Error: serving needs the 'serve' extra (fastapi is not installed). "
                             "pip install 'kpi-engine[serve]'\n")


def test_the_cli_does_not_import_the_web_libraries():
    import subprocess
    import sys

    code = ("import sys, kpi_engine.cli; "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'mcp', 'starlette') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr
