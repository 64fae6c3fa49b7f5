"""A seeded mutation fuzzer of real spec files: whatever is done to them, loading, validating
and compiling raise only the engine's own errors, within a time and memory bound per case.

The corpus is the example project as its files are written: kpi_engine.yaml, its kpis.yaml and
the marketing library's sources, KPIs and KPI tests, copied into one folder. Each case takes
one file and mutates it a few times (lines deleted, repeated, swapped or re-indented; hostile
values put where values go; YAML syntax, tags, anchors and aliases inserted; deep nesting,
long text, huge numbers, odd characters; bytes flipped), then runs ``check_project`` offline
and, when the project is still valid, compiles a few KPIs (and runs the KPI tests when their file
was mutated). Anything other than a
``KpiEngineError`` (a TypeError, a RecursionError...) fails the case with its mutations and
the mutated file.

The cases are seeded, so a failure repeats; KPI_ENGINE_SPEC_FUZZ_CASES=5000 runs more of them.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import signal
from pathlib import Path

import pytest

from kpi_engine.engine import KpiProject, check_project
from kpi_engine.errors import KpiEngineError
from kpi_engine.kpi_tests import run_tests

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "marketing"
LIBRARY = ROOT / "definitions" / "marketing"
CASES = int(os.environ.get("KPI_ENGINE_SPEC_FUZZ_CASES", "120"))
SECONDS_PER_CASE = 20  # a bound for hangs (an alias bomb, a runaway loop), not a speed test
MEMORY_GROWTH_MB = 1_000  # for the whole run: a file that expands to gigabytes fails it

# Values put where a value goes: YAML's special words and tags, numbers no float holds, names
# that are not names, text a formula or SQL would choke on, and structures where text goes.
VALUES = [
    "null", "~", "yes", "no", "on", "true", "1e400", "1.0e+400", ".inf", "-.inf", ".nan", "9" * 400, "-0", "0x1F",
    "0o17", "1_000", "2025-01-01", "2025-13-45", "2025-01-01 10:00:00+02:00", "!!timestamp 2025-01-01",
    "!!timestamp 2025-02-30", "!!binary aGVsbG8=", "!!int abc", "!!float x", "!!str 5", "!!python/object:os.system x",
    "!!set {a, b}", "!!omap [a: 1]", "!x y", "&anchor value", "*undefined", "[]", "{}", "[a, [b, [c]]]",
    "{a: {b: {c: d}}}", "'quoted ''text'''", '"esc\\u0000aped\\x07"', "|\n  block\n  text", ">-\n  folded",
    "x" * 20_000, "é", "٥", "１２", "𝟘", "\u202eevil", "a\u00a0b", "${HOME}", "'); drop table leads; --",
    "count(leads) * ٥", "sum(orders.amount where status = 'paid'", "previous(previous(previous(revenue)))",
    "(" * 150 + "1" + ")" * 150, "+".join(["1"] * 300), "k" * 300, "1 +", "--comment", "a.b.c.d",
    "[" * 60 + "]" * 60, "{a: " * 40 + "1" + "}" * 40, "- a\n- b", "? complex\n: key",
    "<<: *base", ",.100000000f", ">1000000000", "{min: " + "9" * 400 + "}", "{min: .inf, max: .nan}",
    "{_repeat: 300000}", "{_repeat: -5}", "{_repeat: abc}", "[{_repeat: 20000, a: 1}]",
]
# Whole lines and fragments put between lines.
SNIPPETS = [
    "---", "...", "%YAML 1.1", "%TAG ! tag:example.com,2000:", "\t", "# a comment", "kpis:", "sources:", "tests:",
    "  extra: {formula: count(leads)}", "  loop_a: {formula: loop_b}", "  loop_b: {formula: loop_a}",
    "  self_ref: {formula: self_ref + 1}", "  base: &base {formula: count(leads), unit: count}",
    "  alias_user: *base", "  merged: {<<: *base, label: merged}",
    "bomb: &b0 [x, x, x, x, x, x, x, x, x, x]\nb1: &b1 [*b0, *b0, *b0, *b0, *b0, *b0, *b0, *b0]\n"
    "b2: &b2 [*b1, *b1, *b1, *b1, *b1, *b1, *b1, *b1]\nb3: [*b2, *b2, *b2, *b2, *b2, *b2, *b2, *b2]",
    "deep: " + "[" * 500 + "]" * 500, "  : no key", "? [a, b]\n: complex key", "[unclosed", "{unclosed: 1",
    "'unterminated", "key: value: other", "- a list at the top", "\ufeffbom: 1", "a:\n\tb: tab",
]
PROBLEM_CHARACTERS = ["\x00", "\x07", "\x1b", "\r", "\u2028", "\ufeff", "\ud800", "'", '"', ":", "#", "&", "*", "!",
                      "|", ">", "%", "@", "`", "{", "}", "[", "]", ",", "-", "?", "\\", " ", "\t", "\n"]


def corpus() -> dict[str, str]:
    files = {"kpi_engine.yaml": (EXAMPLE / "kpi_engine.yaml").read_text(encoding="utf-8").replace(
        "include:\n  - builtin:marketing\n", ""), "kpis.yaml": (EXAMPLE / "kpis.yaml").read_text(encoding="utf-8")}
    for path in sorted(LIBRARY.glob("*.yaml")):
        if path.name != "kpi_engine.yaml":
            files[f"library_{path.name}"] = path.read_text(encoding="utf-8")
    return files


CORPUS = corpus()


def _value_position(rng: random.Random, lines: list[str]) -> int | None:
    """A line holding 'key: value' (the value is then replaced), or None."""
    candidates = [i for i, line in enumerate(lines) if ": " in line and not line.lstrip().startswith("#")]
    return rng.choice(candidates) if candidates else None


def mutate(rng: random.Random, text: str) -> tuple[str | bytes, list[str]]:
    """``text`` after one to three mutations, and what they were."""
    done: list[str] = []
    for _ in range(rng.randint(1, 3)):
        lines = text.split("\n")
        i = rng.randrange(len(lines))
        kind = rng.choice(["value", "value", "value", "snippet", "delete_line", "repeat_lines", "swap_lines",
                           "indent", "character", "cut", "repeat_block", "bytes"])
        if kind == "value" and (at := _value_position(rng, lines)) is not None:
            key = lines[at].split(": ", 1)[0]
            value = rng.choice(VALUES)
            lines[at] = f"{key}: {value}"
            done.append(f"line {at + 1}: value -> {value[:60]!r}")
        elif kind == "snippet":
            snippet = rng.choice(SNIPPETS)
            lines.insert(i, snippet)
            done.append(f"line {i + 1}: insert {snippet[:60]!r}")
        elif kind == "delete_line":
            del lines[i]
            done.append(f"line {i + 1}: deleted")
        elif kind == "repeat_lines":
            count, times = rng.randint(1, 8), rng.choice([2, 3, 50])
            lines[i:i] = lines[i:i + count] * (times - 1)
            done.append(f"lines {i + 1}-{i + count}: repeated {times} times")
        elif kind == "swap_lines":
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            done.append(f"lines {i + 1} and {j + 1} swapped")
        elif kind == "indent":
            shift = rng.choice([-4, -2, -1, 1, 2, 8])
            lines[i] = " " * shift + lines[i] if shift > 0 else lines[i][-shift:]
            done.append(f"line {i + 1}: indented {shift:+}")
        elif kind == "character" and lines[i]:
            j = rng.randrange(len(lines[i]))
            char = rng.choice(PROBLEM_CHARACTERS)
            lines[i] = lines[i][:j] + char + lines[i][j + rng.choice([0, 1]):]
            done.append(f"line {i + 1} column {j + 1}: {char!r}")
        elif kind == "cut":
            end = rng.randrange(len(text) + 1)
            done.append(f"cut at character {end}")
            text = text[:end]
            continue
        elif kind == "repeat_block":
            block = "\n".join(lines[i:i + rng.randint(2, 20)])
            times = rng.choice([10, 200])
            lines.append("\n".join([block] * times))
            done.append(f"lines from {i + 1}: appended {times} times")
        elif kind == "bytes":
            data = bytearray("\n".join(lines).encode("utf-8", "surrogatepass"))
            for _ in range(rng.randint(1, 5)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            done.append("bytes flipped")
            return bytes(data), done
        text = "\n".join(lines)
    return text, done


class _TookTooLong(BaseException):
    pass


def _alarm(signum, frame):
    raise _TookTooLong()


def check_case(root: Path, name: str, content: str | bytes, kpi_tests: bool = True) -> list[KpiEngineError]:
    """Write the mutated file into a fresh copy of the corpus, validate it offline and compile a
    few of its KPIs; only engine errors may come out. Returns the problems found."""
    for file in root.iterdir():
        if file.is_file():
            file.unlink()
    for file, text in CORPUS.items():
        (root / file).write_text(text, encoding="utf-8")
    target = root / name
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_bytes(content.encode("utf-8", "surrogatepass"))  # a lone surrogate is an undecodable byte
    try:
        model, errors = check_project(root, describe=False)
    except KpiEngineError as error:
        return [error]
    assert all(isinstance(error, KpiEngineError) for error in errors)
    if model is None:
        return errors
    project = KpiProject(model.project)
    for kpi in list(model.kpis)[:3]:
        try:
            project.compile([kpi], describe=False, grain="month").sql()
        except KpiEngineError:
            pass
    if kpi_tests and name == "library_tests.yaml":  # the KPI tests' rows go into DuckDB: run them
        for outcome in run_tests(model.project):
            assert all(isinstance(problem, str) for problem in outcome.problems)
    return []


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs SIGALRM to bound a case's time")
@pytest.mark.parametrize("seed", [2024, 13])
def test_mutated_spec_files_raise_only_engine_errors(tmp_path, seed):
    rng = random.Random(seed)
    root = tmp_path / "project"
    root.mkdir()
    memory_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for case in range(CASES // 2):
            name = rng.choice(sorted(CORPUS))
            content, mutations = mutate(rng, CORPUS[name])
            signal.setitimer(signal.ITIMER_REAL, SECONDS_PER_CASE)
            try:
                check_case(root, name, content)
            except _TookTooLong:
                pytest.fail(f"case {case} (seed {seed}) of {name} ran past {SECONDS_PER_CASE} s: {mutations}")
            except Exception as error:  # noqa: BLE001 - what the fuzzer looks for
                shown = content if isinstance(content, str) else content.decode("utf-8", "replace")
                pytest.fail(f"case {case} (seed {seed}) of {name}, {mutations}: {type(error).__name__}: {error}\n"
                            f"--- {name} ---\n{shown[:3000]}")
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, previous)
        shutil.rmtree(root, ignore_errors=True)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - memory_before) / 1024
    assert grown < MEMORY_GROWTH_MB, f"memory grew by {grown:,.0f} MB"


def test_the_mutations_reach_every_part_of_the_engine(tmp_path):
    """The fuzzer is not only breaking YAML: some mutated projects stay valid (and get compiled),
    some fail in the schema, some in formulas and some in the YAML itself."""
    rng = random.Random(7)
    root = tmp_path / "project"
    root.mkdir()
    outcomes: dict[str, int] = {}
    for _ in range(60):
        name = rng.choice(sorted(CORPUS))
        content, _ = mutate(rng, CORPUS[name])
        errors = check_case(root, name, content, kpi_tests=False)
        kinds = {type(error).__name__ for error in errors} or {"valid"}
        for kind in kinds:
            outcomes[kind] = outcomes.get(kind, 0) + 1
    assert outcomes.get("valid", 0) >= 5 and outcomes.get("SpecError", 0) >= 10, outcomes
    assert outcomes.get("FormulaError", 0) + outcomes.get("ResolveError", 0) >= 3, outcomes
