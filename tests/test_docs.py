"""The Python code blocks of docs/python.md run as written."""

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_python_walkthrough_runs(capsys):
    text = (ROOT / "docs" / "python.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 5
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        namespace: dict = {}
        for block in blocks:
            exec(compile(block, "docs/python.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert "marketing_example" in out and "rows written" in out
    assert "unknown KPI 'cost_per_leed'." in out and "Did you mean 'cost_per_lead'?" in out
    assert 'WITH "orders_agg_days" AS (' in out
