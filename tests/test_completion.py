"""Shell completion of commands, KPI names and dimensions (click's completion protocol)."""

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = str(Path(__file__).resolve().parent.parent / "examples" / "marketing")


def complete(words: str) -> list[str]:
    env = {**os.environ, "_KPI_ENGINE_COMPLETE": "bash_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
    script = Path(sys.executable).parent / "kpi-engine"  # the installed entry point, as a shell calls it
    output = subprocess.run([str(script)], env=env, capture_output=True, text=True, check=True).stdout
    return [line.split(",", 1)[1] for line in output.splitlines()]


def test_commands_kpis_and_dimensions_complete():
    assert {"evaluate", "explain"} <= set(complete("kpi-engine e"))
    assert complete(f"kpi-engine evaluate {EXAMPLE} cost_per") == ["cost_per_lead", "cost_per_sale"]
    assert complete(f"kpi-engine explain {EXAMPLE} ltv") == ["ltv_to_cac"]
    assert "channel" in complete(f"kpi-engine evaluate {EXAMPLE} revenue --by ch")
