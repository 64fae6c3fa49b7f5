"""Text bound for a terminal: data and spec text are shown as data, never acted on.

A value can hold control characters: ESC starts colour and cursor sequences (and OSC 52, which
writes the clipboard), a carriage return overwrites what is shown, C1 characters (U+0080 to
U+009F) are a second form of the same controls, bidirectional overrides make text read in
another order, and lone surrogates (a file name that is not UTF-8) cannot be printed at all.
``visible`` writes each as an escape: ``\\n``, ``\\r``, ``\\t`` or ``\\uXXXX``. That form is
also a valid JSON escape, so JSON stays valid JSON with the same values.

Rich, which draws the tables, reads ``[...]`` in a string as markup; ``cell`` gives it a ``Text``,
which it shows as it is.
"""

from __future__ import annotations

import re
from typing import IO

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def visible(text: str, keep: str = "") -> str:
    """``text`` with every control character except those in ``keep`` written as an escape."""
    def escape(match: re.Match) -> str:
        char = match.group()
        if char in keep:
            return char
        return _SHORT.get(char) or f"\\u{ord(char):04x}"

    return _UNSAFE.sub(escape, text)


def cell(value: object):
    """A table cell for rich: the text as it is (no markup, no emoji codes), one line."""
    from rich.text import Text

    return Text(visible(str(value)))


def is_terminal(stream: IO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
