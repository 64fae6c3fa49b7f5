"""The explorer page at /: one self-contained HTML file (no CDN, no external fonts) that reads
the catalogue and runs queries through the same /v1 API as every other client, with the
token the person types in. Its script and style run under a per-response nonce."""

from __future__ import annotations

import html
import secrets
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def _template() -> str:
    return resources.files("kpi_engine.serve").joinpath("explorer.html").read_text(encoding="utf-8")


def explorer_page(project: str) -> tuple[str, str]:
    """(the page, its Content-Security-Policy header)."""
    nonce = secrets.token_urlsafe(16)
    page = _template().replace("{{nonce}}", nonce).replace("{{project}}", html.escape(project))
    policy = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
              "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return page, policy
