"""Data and spec text are printed as data: rich markup in a value is text, control characters
(colour and cursor sequences, OSC 52 clipboard writes, carriage returns, C1 controls, bidi
overrides) reach a terminal only as visible escapes, and CSV or JSON on a pipe or in a file keep
every character exactly."""

import csv
import io
import json

import pytest
from click.testing import CliRunner

from kpi_engine import cli as cli_module
from kpi_engine.cli import cli
from kpi_engine.terminal import visible

OSC52 = "\x1b]52;c;cm0gLXJmIH4=\x07"  # would put 'rm -rf ~' on the clipboard
HOSTILE = ["[/bold]", "[red]x[/red] :smile:", "\x1b[31mred\x1b[0m", OSC52 + "clip", "over\rwritten", "csi\x9b2J",
           "rtl\u202etxt.exe", "two\nlines", "tab\there"]
#: What a terminal acts on (the format's own newlines aside).
RAW_CONTROLS = ["\x1b", "\x07", "\r", "\x9b", "\u202e", "\t"]
SPEC = """
sources:
  leads: {table: leads, time: created_at, dimensions: [channel]}
kpis:
  n: {formula: count(leads), label: "Leads \\e[31m[/bold]", description: "Counts \\e]52;c;eA==\\a leads", target: {min: 5}}
"""


@pytest.fixture
def hostile(make_project):
    rows = [{"created_at": f"2025-01-{i + 1:02d} 10:00:00", "channel": value} for i, value in enumerate(HOSTILE)]
    return make_project({"s.yaml": SPEC}, {"leads": rows})


def run(*args, terminal: bool = False, monkeypatch=None):
    if terminal:
        monkeypatch.setattr(cli_module, "is_terminal", lambda stream: True)
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def assert_no_raw_controls(text: str, allowed: str = "\n") -> None:
    for char in RAW_CONTROLS:
        if char not in allowed:
            assert char not in text, (char, text)


def test_the_table_shows_markup_and_controls_as_text(hostile):
    result = run("evaluate", hostile, "n", "--by", "channel")
    assert result.exit_code == 0, result.output
    assert_no_raw_controls(result.stdout)
    lines = result.stdout.splitlines()
    assert lines[-1] == f"{len(HOSTILE)} rows" and len(lines) == len(HOSTILE) + 3  # header, rule, rows, count
    for value in HOSTILE:  # each value on its own line, as text
        assert any(line.startswith(visible(value)) for line in lines), value
    assert "[/bold]" in result.stdout and "[red]x[/red] :smile:" in result.stdout
    assert "\\u001b]52;c;cm0gLXJmIH4=\\u0007clip" in result.stdout and "over\\rwritten" in result.stdout


def test_csv_and_json_on_a_pipe_and_in_files_keep_every_character(hostile, tmp_path):
    csv_out = run("evaluate", hostile, "n", "--by", "channel", "--format", "csv")
    json_out = run("evaluate", hostile, "n", "--by", "channel", "--format", "json")
    assert csv_out.exit_code == 0 and json_out.exit_code == 0
    assert sorted(row["channel"] for row in csv.DictReader(io.StringIO(csv_out.stdout, newline=""))) == sorted(HOSTILE)
    assert sorted(row["channel"] for row in json.loads(json_out.stdout)) == sorted(HOSTILE)
    files = {}
    for fmt in ("csv", "json"):
        files[fmt] = tmp_path / f"out.{fmt}"
        assert run("evaluate", hostile, "n", "--by", "channel", "--format", fmt, "-o", files[fmt]).exit_code == 0
    assert files["csv"].read_bytes() == csv_out.stdout_bytes
    assert sorted(row["channel"] for row in json.loads(files["json"].read_text(encoding="utf-8"))) == sorted(HOSTILE)


def test_csv_and_json_on_a_terminal_make_controls_visible(hostile, monkeypatch):
    csv_out = run("evaluate", hostile, "n", "--by", "channel", "--format", "csv", terminal=True, monkeypatch=monkeypatch)
    json_out = run("evaluate", hostile, "n", "--by", "channel", "--format", "json", terminal=True,
                   monkeypatch=monkeypatch)
    assert csv_out.exit_code == 0 and json_out.exit_code == 0
    assert_no_raw_controls(csv_out.stdout)
    assert_no_raw_controls(json_out.stdout)
    assert "\\u001b[31mred" in csv_out.stdout
    # The escapes are JSON's own: what a program reads from the terminal's text is still exact.
    assert sorted(row["channel"] for row in json.loads(json_out.stdout)) == sorted(HOSTILE)


def test_spec_labels_and_descriptions_are_text_in_list_explain_and_docs(hostile, monkeypatch):
    listed = run("list", hostile)
    assert listed.exit_code == 0, listed.output
    assert "Leads \\u001b[31m[/bold]" in listed.stdout
    explained = run("explain", hostile, "n")
    assert explained.exit_code == 0 and "Counts \\u001b]52;c;eA==\\u0007 leads" in explained.stdout
    docs = run("docs", hostile, terminal=True, monkeypatch=monkeypatch)
    assert docs.exit_code == 0 and "Leads \\u001b\\[31m\\[/bold\\]" in docs.stdout
    for result in (listed, explained, docs):
        assert_no_raw_controls(result.stdout)


def test_check_output_and_errors_show_values_as_text(hostile):
    checked = run("check", hostile, "--by", "channel", "--as-of", "2025-02-10")
    assert checked.exit_code == 1  # each channel has 1 lead, below the target of 5
    assert_no_raw_controls(checked.stdout)
    assert "[channel=\\u001b[31mred\\u001b[0m]" in checked.stdout
    for args in (["evaluate", hostile, "n", "--where", f"channel = '{OSC52}' and"],  # the filter is echoed
                 ["evaluate", hostile, f"n{OSC52}"]):  # an unknown KPI is named
        result = run(*args)
        assert result.exit_code in (1, 2) and result.stderr.startswith("Error: ")
        assert_no_raw_controls(result.stderr)
        assert "\\u001b]52;c;cm0gLXJmIH4=\\u0007" in result.stderr


def test_docs_markdown_keeps_spec_text_out_of_the_markup(make_project):
    spec = """
    kpis:
      n:
        formula: "1"
        label: "a | b <script>x</script> [link](javascript:x) `code` *bold*"
        description: "<img src=x onerror=alert(1)>"
    """
    root = make_project({"s.yaml": spec})
    result = run("docs", root)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if line.startswith("| [`n`]"))
    assert row.count(" | ") == 2  # the label's '|' does not add a column
    assert "\\<script\\>" in row and "\\[link\\](javascript:x)" in row and "\\`code\\`" in row
    assert "\\<img src=x onerror=alert(1)\\>" in result.stdout and "<img" not in result.stdout.replace("\\<img", "")


def test_the_python_api_table_does_not_read_markup(hostile):
    from kpi_engine.engine import open_project
    from kpi_engine.output import to_table

    with open_project(hostile) as project:
        text = to_table(project.evaluate(["n"], by=["channel"]))
    assert "[/bold]" in text and "\x1b" not in text
