"""Formula text -> typed AST (``nodes``), using the Lark grammar in grammar/formula.lark.

The parser is built once, lazily, on first use (LALR, so parsing is linear and
fast). Syntax errors become ``FormulaError`` with the formula, a caret under the
offending column and what was expected there.
"""

from __future__ import annotations

import functools
import re
import sys
import threading
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources

from lark import Lark, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import nodes as n
from .errors import FormulaError, Location

MAX_FORMULA_LENGTH = 10_000
MAX_NESTING_DEPTH = 100
# Levels of operators and function calls (see tree_depth): count(x) is 1, a + b + c + d is 3 (a chain
# nests to the left), (a + b) + (c + d) is 2.
# Every later stage walks the tree recursively, and warehouses cap expression depth too (DuckDB at
# about 490 of these levels, Spark's parser between 225 and 300), so a formula is held well below them,
# and a KPI with the KPIs it references written out in full (what the SQL carries) a little more.
MAX_FORMULA_DEPTH = 100
MAX_EXPANDED_DEPTH = 150

# What the user should read instead of Lark's terminal names.
_TERMINAL_NAMES = {
    "NUMBER": "a number", "STRING": "a 'string'", "NAME": "a name", "LPAR": "'('", "RPAR": "')'",
    "COMMA": "','", "DOT": "'.'", "COMPARE_OP": "a comparison (= != < <= > >=)",
    "ADD_OP": "'+' or '-'", "MUL_OP": "'*', '/' or '%'", "MINUS": "'-'", "PLUS": "'+'",
    "_OR": "'or'", "_AND": "'and'", "_NOT": "'not'", "NOT": "'not'", "_IN": "'in'",
    "_BETWEEN": "'between'", "_IS": "'is'", "_NULL": "'null'", "_TRUE": "'true'",
    "_FALSE": "'false'", "_WHERE": "'where'", "_PER": "'per'", "_AT": "'at'", "$END": "the end of the formula",
}


@dataclass(frozen=True)
class FormulaSource:
    """Where a formula's text sits in a spec file, to turn formula positions into file ones.

    ``line``/``column`` are the file position of the formula's first character;
    ``indent`` is set for YAML block scalars, whose later lines start at that column.
    """

    file: str | None = None
    line: int = 1
    column: int = 1
    indent: int | None = None
    obj: str | None = None

    def locate(self, pos: n.Pos) -> Location:
        if self.file is None:
            return Location(obj=self.obj) if self.obj else Location(obj=f"formula, line {pos.line}, column {pos.column}")
        if pos.line == 1:
            return Location(self.file, self.line, self.column + pos.column - 1, self.obj)
        indent = self.indent if self.indent is not None else 1
        return Location(self.file, self.line + pos.line - 1, indent + pos.column - 1, self.obj)


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    grammar = resources.files("kpi_engine").joinpath("grammar/formula.lark").read_text(encoding="utf-8")
    # re.ASCII: case-insensitive keywords must not match non-ASCII letters ('ıs' is not 'is')
    # and no class may match non-ASCII digits ('٥' is not 5).
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True, g_regex_flags=re.ASCII)


def _pos(meta_or_token) -> n.Pos:
    return n.Pos(getattr(meta_or_token, "line", 1) or 1, getattr(meta_or_token, "column", 1) or 1)


class _Depth(Exception):
    pass


@v_args(meta=True, inline=True)
class _ToAst(Transformer):
    """Lark tree -> nodes. Tracks nesting depth so hostile input fails cleanly."""

    def __default__(self, data, children, meta):  # pragma: no cover - every rule is handled
        raise AssertionError(f"unhandled grammar rule {data}")

    def number(self, meta, token):
        text = str(token)
        try:
            value = int(text) if text.isascii() and text.isdigit() else Decimal(text)
        except (ValueError, InvalidOperation):  # pragma: no cover - the regex only admits numbers
            raise FormulaError(f"'{text}' is not a number")
        return n.NumberLit(value, pos=_pos(meta))

    def string(self, meta, token):
        return n.StringLit(str(token)[1:-1].replace("''", "'"), pos=_pos(meta))

    def true(self, meta):
        return n.BoolLit(True, pos=_pos(meta))

    def false(self, meta):
        return n.BoolLit(False, pos=_pos(meta))

    def null(self, meta):
        return n.NullLit(pos=_pos(meta))

    def name(self, meta, *parts):
        return n.Name(tuple(str(p) for p in parts), pos=_pos(meta))

    def arguments(self, meta, *args):
        return tuple(args)

    def call(self, meta, name, args, at, where, per):
        return n.Call(str(name), args or (), where, str(per) if per is not None else None,
                      str(at) if at is not None else None, pos=_pos(meta))

    def neg(self, meta, operand):
        return n.Unary("-", operand, pos=_pos(meta))

    def not_op(self, meta, operand):
        return n.Unary("not", operand, pos=_pos(meta))

    def binary(self, meta, left, op, right):
        return n.Binary(str(op), left, right, pos=_pos(meta))

    def compare(self, meta, left, op, right):
        op = {"==": "=", "<>": "!="}.get(str(op), str(op))
        return n.Compare(op, left, right, pos=_pos(meta))

    def and_op(self, meta, left, right):
        return n.Logical("and", left, right, pos=_pos(meta))

    def or_op(self, meta, left, right):
        return n.Logical("or", left, right, pos=_pos(meta))

    def in_list(self, meta, operand, negated, *items):
        return n.InList(operand, tuple(items), negated is not None, pos=_pos(meta))

    def between(self, meta, operand, negated, low, high):
        return n.Between(operand, low, high, negated is not None, pos=_pos(meta))

    def is_null(self, meta, operand, negated):
        return n.IsNull(operand, negated is not None, pos=_pos(meta))


_NOT_THE_LANGUAGE = {"--": "a comment ('--')", "/*": "a comment ('/*')", "#": "a comment ('#')", ";": "a ';'",
                     '"': "a double quote", "`": "a backtick"}


def _scan(text: str) -> tuple[int, tuple[str, int] | None, int | None]:
    """One pass outside string literals: the deepest parenthesis nesting, the first thing that
    is not part of the language (what, offset), and the offset of a string left open."""
    depth = deepest = 0
    opened = None
    foreign = None
    i = 0
    while i < len(text):
        char = text[i]
        if opened is not None:
            if char == "'":
                if text.startswith("''", i):
                    i += 2
                    continue
                opened = None
        elif char == "'":
            opened = i
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
        elif foreign is None:
            for token, what in _NOT_THE_LANGUAGE.items():
                if text.startswith(token, i):
                    foreign = (what, i)
                    break
        i += 1
    return deepest, foreign, opened


def _pos_of(text: str, offset: int) -> n.Pos:
    line = text.count("\n", 0, offset) + 1
    return n.Pos(line, offset - (text.rfind("\n", 0, offset) + 1) + 1)


def caret(text: str, pos: n.Pos) -> str:
    lines = text.splitlines() or [""]
    line = lines[min(pos.line, len(lines)) - 1]
    return f"    {line}\n    {' ' * (pos.column - 1)}^"


def _expected(error: UnexpectedInput) -> str:
    names = getattr(error, "expected", None) or getattr(error, "allowed", None) or set()
    shown = sorted({_TERMINAL_NAMES.get(name, name.lower()) for name in names if not name.startswith("__")})
    return ", ".join(shown)


def parse(text: str, source: FormulaSource | None = None) -> n.Node:
    """Parse one formula; raise ``FormulaError`` with a caret on bad input.

    Trees are immutable, so a formula seen before (same text, same place) is parsed once
    per process: re-validating or re-compiling a project does not parse it again.
    """
    return _parse(text, source or FormulaSource())


@functools.lru_cache(maxsize=8192)
def _parse(text: str, source: FormulaSource) -> n.Node:
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("the formula is empty.", source.locate(n.Pos()),
                           "Write an expression such as 'sum(orders.amount) / count(orders)'.")
    if len(text) > MAX_FORMULA_LENGTH:
        raise FormulaError(f"the formula is {len(text):,} characters long; the limit is {MAX_FORMULA_LENGTH:,}.",
                           source.locate(n.Pos()), "Split it into smaller KPIs that reference each other by name.")
    deepest, foreign, opened = _scan(text)
    if deepest > MAX_NESTING_DEPTH:
        raise FormulaError(f"the formula nests parentheses more than {MAX_NESTING_DEPTH} deep.",
                           source.locate(n.Pos()), "Split it into smaller KPIs that reference each other by name.")
    if opened is not None:
        pos = _pos_of(text, opened)
        raise FormulaError("formula syntax error: a 'string' is not closed.", source.locate(pos),
                           "End it with a single quote; write '' for a quote inside the text.", detail=caret(text, pos))
    if foreign is not None:
        what, offset = foreign
        pos = _pos_of(text, offset)
        raise FormulaError(f"formula syntax error: {what} is not part of the formula language.", source.locate(pos),
                           "A formula is one expression: no comments or statements; quote text with single quotes; "
                           "write 'x - -y' with a space for a double minus. Put notes in the KPI's description.",
                           detail=caret(text, pos))
    try:
        with _deep_recursion():
            tree = _lark().parse(text)
            depth = tree_depth(tree)
            if depth > MAX_FORMULA_DEPTH:
                raise too_deep(f"the formula nests operators and function calls {depth:,} levels deep; "
                               f"the limit is {MAX_FORMULA_DEPTH}.", source.locate(n.Pos()))
            return _ToAst().transform(tree)
    except UnexpectedInput as error:
        raise _syntax_error(text, error, source) from None
    except VisitError as error:  # an error raised inside a transformer callback
        if isinstance(error.orig_exc, FormulaError):
            raise error.orig_exc from None
        if isinstance(error.orig_exc, RecursionError):
            raise _too_long(source) from None
        raise
    except RecursionError:
        raise _too_long(source) from None


# Lark rules that are not a level of their own: an argument list, and the leaves.
_NOT_A_LEVEL = frozenset({"arguments", "number", "string", "true", "false", "null", "name"})


def tree_depth(tree) -> int:
    """Levels of operators and calls in a Lark parse tree, counted without recursion (the
    tree may be thousands deep); the same count as ``resolve.formula_depth`` on the AST."""
    depths: dict[int, int] = {}
    for subtree in tree.iter_subtrees():  # children before their parents
        below = max((depths[id(c)] for c in subtree.children if isinstance(c, Tree)), default=0)
        depths[id(subtree)] = below + (subtree.data not in _NOT_A_LEVEL)
    return depths[id(tree)]


def too_deep(message: str, location: Location,
             remedy: str = "Split it into smaller KPIs that reference each other by name") -> FormulaError:
    return FormulaError(message, location, f"{remedy}, or group long chains in parentheses: "
                                           "(a + b) + (c + d) is 2 levels deep, a + b + c + d is 3.")


def _too_long(source: FormulaSource) -> FormulaError:
    return FormulaError("the formula chains too many operators to process.", source.locate(n.Pos()),
                        "Split it into smaller KPIs that reference each other by name.")


_recursion_lock = threading.Lock()
_recursion_users = 0  # threads (or nested blocks) inside _deep_recursion
_recursion_previous = 0


class _deep_recursion:
    """Deep trees (up to MAX_EXPANDED_DEPTH levels, several Python frames each in sqlglot's
    generator) are parsed, compiled and rendered recursively. Allow more than Python's
    default 1,000 frames while it lasts. The limit is process-wide: it is restored only when
    the last thread inside leaves, so one thread finishing cannot cut another's short.
    (A class, not a generator-based context manager: it wraps every compile and render.)"""

    __slots__ = ("limit",)

    def __init__(self, limit: int = 6000):
        self.limit = limit

    def __enter__(self) -> None:
        global _recursion_users, _recursion_previous
        with _recursion_lock:
            if _recursion_users == 0:
                _recursion_previous = sys.getrecursionlimit()
            _recursion_users += 1
            sys.setrecursionlimit(max(sys.getrecursionlimit(), self.limit))

    def __exit__(self, *exc) -> None:
        global _recursion_users
        with _recursion_lock:
            _recursion_users -= 1
            if _recursion_users == 0:
                sys.setrecursionlimit(_recursion_previous)


def _syntax_error(text: str, error: UnexpectedInput, source: FormulaSource) -> FormulaError:
    at_end = isinstance(error, UnexpectedEOF) or (
        isinstance(error, UnexpectedToken) and error.token.type == "$END")
    char = ""
    if at_end:
        lines = text.rstrip().splitlines() or [""]
        pos = n.Pos(len(lines), len(lines[-1]) + 1)
        found = "the formula ends too early"
    else:
        pos = n.Pos(error.line if error.line > 0 else 1, error.column if error.column > 0 else 1)
        if isinstance(error, UnexpectedCharacters):
            char = text[error.pos_in_stream] if error.pos_in_stream < len(text) else ""
            found = "a comment is not part of the formula language" if text.startswith(("--", "/*", "#"), error.pos_in_stream) \
                else f"unexpected character {char!r}"
        elif isinstance(error, UnexpectedToken):
            found = f"unexpected {str(error.token)!r}"
        else:  # pragma: no cover - Lark raises only the three above
            found = "syntax error"
    expected = _expected(error)
    hint = f"Expected {expected}." if expected else None
    if not char.isascii():  # e.g. an Arabic-Indic or full-width digit, a dotless 'ı', a no-break space
        found = f"unexpected character {char!r} (U+{ord(char):04X}), which is not ASCII"
        hint = ("Outside 'strings' a formula is ASCII: digits 0-9, letters A-Z and a-z, '_' and the operators; "
                "retype the character (it may come from a word processor).")
    return FormulaError(f"formula syntax error: {found}.", source.locate(pos), hint, detail=caret(text, pos))
