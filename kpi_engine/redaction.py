"""Secrets out of messages: whatever form a connection string takes, its password is never shown.

A warehouse setting may be a URL (``postgresql://user:password@host/db``), a libpq
``key=value`` string (``host=db password=s3cret``), a query string (``?password=...&...``),
a Spark Connect URL (``sc://host:15002/;token=...``) or something JSON- or YAML-like
(``{"password": "..."}``). ``redact`` hides the secret part of each.
"""

from __future__ import annotations

import re
from typing import Iterable

MASK = "***"
#: A setting name that holds a secret: password, PGPASSWORD, db_pass, token, api_key, client_secret...
_SECRET_NAME = (r"[A-Za-z0-9_.-]*(?:password|passwd|passphrase|pwd|pass|secret|token|api[_-]?key|access[_-]?key"
                r"|private[_-]?key|credentials?)")
#: name = value / name: value, the name optionally quoted (JSON), the value quoted ('...' with
#: backslash escapes as libpq writes it, "...") or running to a space, '&', ';', ',' or a closing brace.
_NAMED_SECRET = re.compile(
    rf"""(?P<name>["']?\b{_SECRET_NAME}["']?\s*[=:]\s*)"""
    r"""(?P<value>'(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|[^\s&;,}'"]+)""",
    re.IGNORECASE)
#: scheme://user:password@host: everything from the first ':' of the user info to the last '@'
#: of the URL, so a password holding '@' does not leak either.
_URL_PASSWORD = re.compile(r"(//[^/\s:@]*:)\S*@")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret, URL password and password-like ``name=value`` hidden."""
    for secret in sorted((s for s in secrets if s and len(s) >= 3), key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
    return _NAMED_SECRET.sub(lambda match: match.group("name") + MASK, text)
