"""--format markdown (a GitHub table for pull requests and chat) and --transpose (one line per
KPI, one column per period and key) for the tables people read. Expected texts are by hand."""

from __future__ import annotations

import pytest


SPEC = """
sources:
  ad_spend: {table: ad_spend, time: day, dimensions: [channel]}
  leads: {table: leads, time: created_at, dimensions: [channel]}
kpis:
  cpl: {unit: currency, formula: sum(ad_spend.spend) / count(leads)}
  lead_count: {unit: count, formula: count(leads)}
"""
# January: ppc spends 600 + 400 for 2 leads (cpl 500), email 100 for 2 (50). February: ppc 300
# for 1 (300), email 50 for 2 (25). The data end in mid-February: February is not complete.
SPEND = [{"day": "2025-01-01", "channel": "ppc", "spend": 600}, {"day": "2025-01-20", "channel": "ppc", "spend": 400},
         {"day": "2025-01-10", "channel": "email", "spend": 100}, {"day": "2025-02-01", "channel": "ppc", "spend": 300},
         {"day": "2025-02-15", "channel": "email", "spend": 50}]
LEADS = [{"created_at": day, "channel": channel} for day, channel in [
    ("2025-01-01", "ppc"), ("2025-01-31", "ppc"), ("2025-01-11", "email"), ("2025-01-12", "email"),
    ("2025-02-01", "ppc"), ("2025-02-16", "email"), ("2025-02-17", "email")]]


@pytest.fixture
def root(make_project):
    return make_project({"s.yaml": SPEC}, {"ad_spend": SPEND, "leads": LEADS})


def test_markdown_is_a_github_table_of_the_shown_values(root, run_evaluate):
    out = run_evaluate(root, "cpl", "lead_count", "--grain", "month", "--by", "channel", "--format", "markdown").stdout
    assert out == ("| period | channel | cpl | lead_count | complete |\n"
                   "|:---|:---|---:|---:|:---|\n"
                   "| 2025-01-01 | email | $50.00 | 2 | yes |\n"
                   "| 2025-01-01 | ppc | $500.00 | 2 | yes |\n"
                   "| 2025-02-01 | email | $25.00 | 2 | no |\n"
                   "| 2025-02-01 | ppc | $300.00 | 1 | no |\n")


def test_an_md_file_gets_markdown(root, tmp_path, run_evaluate):
    target = tmp_path / "kpis.md"
    run_evaluate(root, "lead_count", "-o", target)
    assert target.read_text() == "| lead_count | complete |\n|---:|:---|\n| 7 | yes |\n"


def test_transposed_table_has_a_line_per_kpi(root, run_evaluate):
    out = run_evaluate(root, "cpl", "lead_count", "--grain", "month", "--by", "channel", "--to", "2025-02-01",
                   "--transpose").stdout
    assert [line.rstrip() for line in out.splitlines()] == [
        "kpi        ┃ 2025-01-01 / email ┃ 2025-01-01 / ppc",
        "━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━",
        "cpl        │             $50.00 │          $500.00",
        "lead_count │                  2 │                2",
        "complete   │                yes │              yes",
        "2 rows, transposed"]


def test_transposed_markdown(root, run_evaluate):
    out = run_evaluate(root, "cpl", "lead_count", "--grain", "month", "--format", "markdown", "--transpose").stdout
    # January: 1,100 / 4 = 275; February: 350 / 3 = 116.666...
    assert out == ("| kpi | 2025-01-01 | 2025-02-01 |\n"
                   "|:---|---:|---:|\n"
                   "| cpl | $275.00 | $116.67 |\n"
                   "| lead_count | 4 | 3 |\n"
                   "| complete | yes | no |\n")


def test_a_total_transposed_has_one_value_column(root, run_evaluate):
    out = run_evaluate(root, "cpl", "lead_count", "--format", "markdown", "--transpose").stdout
    assert out == "| kpi | value |\n|:---|---:|\n| cpl | $207.14 |\n| lead_count | 7 |\n| complete | yes |\n"  # 1450 / 7


@pytest.mark.parametrize("args", [("--format", "csv"), ("--format", "json"), ("-o", "out.json")])
def test_transpose_is_refused_for_formats_that_programs_read(root, tmp_path, args, run_evaluate):
    args = tuple(str(tmp_path / a) if a.startswith("out.") else a for a in args)
    result = run_evaluate(root, "cpl", "--transpose", *args, code=2)
    fmt = args[1] if args[0] == "--format" else "json"
    assert result.stderr == (f"Error: --transpose shapes the table and markdown formats, not {fmt}. Drop --transpose, "
                             "or use --format table or markdown; other formats keep one row per period and key for "
                             "the tools that read them.\n")
    assert not (tmp_path / "out.json").exists()


def test_markdown_cells_are_text(make_project, run_evaluate):
    hostile = [{"created_at": "2025-01-01", "channel": "a|b *c* [x](y) <i>"}, {"created_at": "2025-01-02", "channel": "l1\nl2"}]
    root = make_project({"s.yaml": SPEC}, {"ad_spend": SPEND, "leads": hostile})
    out = run_evaluate(root, "lead_count", "--by", "channel", "--format", "markdown").stdout
    assert out.splitlines()[2:] == ["| a\\|b \\*c\\* \\[x\\](y) \\<i\\> | 1 | yes |", "| l1\\\\nl2 | 1 | yes |"]


def test_an_empty_result_is_the_header_alone(root, run_evaluate):
    out = run_evaluate(root, "lead_count", "--grain", "month", "--from", "2030-01-01", "--to", "2030-02-01",
                   "--format", "markdown").stdout
    assert out == "| period | lead_count | complete |\n|:---|---:|:---|\n"
