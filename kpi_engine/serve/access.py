"""Who may read what: API tokens, each allowed a set of KPIs and optionally a row policy.

Tokens live outside the project (an environment variable or a file), as YAML or JSON:

    tokens:
      - name: analytics                 # shown in access logs, never the secret
        token: "long random secret"     # or sha256: <hex digest of the secret>
      - name: agency-email
        sha256: 9f86d081884c7d659a2f...
        kpis: [cost_per_lead, new_contacts]
        where: "channel in ('email')"  # a row policy, compiled like any --where filter

``kpis`` defaults to every KPI; ``formulas`` (ad-hoc formulas and aggregates in --having)
defaults to true for a token without a KPI list and false for one with a list. Without any
token configured the server is open: every caller reads everything (for localhost).

A row policy is ANDed with the caller's own filter as formula text, ``(policy) and (where)``,
and the combined text must parse into exactly that conjunction, so no filter can widen it.
Every source a request aggregates must have the policy's dimensions, and per-entity lookups
(which read an entity's rows outside the filter) are refused under a policy.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .. import nodes as n
from ..errors import FormulaError, KpiEngineError, Location, UsageError, did_you_mean
from ..parser import FormulaSource, parse
from ..adhoc import named_formulas
from ..resolve import Model, aggregates_in, dimension_paths, expand, resolve_formula


class Unauthorized(KpiEngineError):
    """No token, or one the server does not know (HTTP 401)."""

    exit_code = 2
    http_status = 401


class Forbidden(KpiEngineError):
    """A valid token asked for something its policy does not allow (HTTP 403)."""

    exit_code = 2
    http_status = 403


@dataclass(frozen=True)
class Access:
    """What one caller may read."""

    name: str
    kpis: frozenset[str] | None = None  # None: every KPI
    formulas: bool = True
    where: str | None = None  # the row policy

    @property
    def policy_dimensions(self) -> frozenset[str]:
        if not self.where:
            return frozenset()
        return frozenset(node.dotted for node in parse(self.where).walk() if isinstance(node, n.Name))

    # -- what is visible
    def can_read(self, model: Model, name: str) -> bool:
        """A KPI is readable when it is allowed and the row policy can be applied to it."""
        if self.kpis is not None and name not in self.kpis:
            return False
        if not self.where:
            return True
        kpi = model.kpi(name)
        return self._policy_applies(model, kpi.sources, expand(model, kpi.expr)) is None

    def _policy_applies(self, model: Model, sources: Iterable[str], tree: n.Node) -> str | None:
        """Why the row policy cannot filter what ``tree`` reads from ``sources`` (None when it can)."""
        if not self.where:
            return None
        sources = sorted(set(sources))
        missing = sorted(self.policy_dimensions - set(model.dimensions_of(sources))) if sources else []
        if missing:
            return f"it reads {', '.join(sources)}, which cannot be filtered by {', '.join(missing)}"
        if any(isinstance(node, n.EntityLookup) for node in tree.walk()):
            return "it looks up each entity's rows, which the row policy cannot filter"
        return None

    # -- checking a request
    def check(self, model: Model, kpis: Iterable[str], formulas: Iterable[str], having: str | None) -> None:
        """Raise Forbidden unless every KPI, formula and --having condition may be read."""
        if self.kpis is None and self.formulas and not self.where:
            return  # unrestricted: the engine alone judges the request, and reports its errors in its order
        for name in kpis:
            if self.kpis is not None and name not in self.kpis:  # known or not: names beyond the list stay hidden
                raise Forbidden(f"the KPI '{name}' is not allowed for the token '{self.name}'.", None,
                                self._allowed_hint())
            kpi = model.kpi(name)
            why = self._policy_applies(model, kpi.sources, expand(model, kpi.expr))
            if why:
                raise Forbidden(f"the KPI '{name}' cannot be read under the row policy of the token '{self.name}': "
                                f"{why}.", None, self._allowed_hint())
        texts = [(text, "kpi", label) for _, text, label in named_formulas(model, list(formulas))]
        if having:
            texts.append((having, "having", "--having condition"))
        for text, mode, label in texts:
            self._check_formula(model, text, mode, label)

    def _check_formula(self, model: Model, text: str, mode: str, label: str) -> None:
        expr, _ = resolve_formula(model, text, mode, label)
        refs = sorted({node.name for node in expr.walk() if isinstance(node, n.KpiRef)})
        own = {agg.source for agg in aggregates_in(expr)}
        if own and not self.formulas:
            raise Forbidden(f"the token '{self.name}' may not send ad-hoc formulas (the {label} aggregates "
                            f"{', '.join(sorted(own))} itself).", Location(obj=label),
                            "Use the KPIs by name; " + self._allowed_hint())
        for ref in refs:
            if self.kpis is not None and ref not in self.kpis:
                raise Forbidden(f"the {label} uses the KPI '{ref}', which is not allowed for the token "
                                f"'{self.name}'.", Location(obj=label), self._allowed_hint())
        if self.kpis is not None:
            readable = set().union(*(model.kpi(name).sources for name in self.kpis if name in model.kpis))
            outside = sorted(own - readable)
            if outside:
                raise Forbidden(f"the {label} reads {', '.join(outside)}, which no KPI allowed for the token "
                                f"'{self.name}' reads.", Location(obj=label), self._allowed_hint())
        expanded = expand(model, expr)
        why = self._policy_applies(model, {agg.source for agg in aggregates_in(expanded)}, expanded)
        if why:
            raise Forbidden(f"the {label} cannot be read under the row policy of the token '{self.name}': {why}.",
                            Location(obj=label), None)

    def restrict(self, where: str | None) -> str | None:
        """The caller's --where with the row policy ANDed in front of it."""
        if not self.where:
            return where
        if not where:
            return self.where
        source = FormulaSource(obj="--where filter")
        own = parse(where, source)  # a filter that is not one whole expression fails here, alone
        combined = f"({self.where}) and ({where})"
        if parse(combined, source) != n.Logical("and", parse(self.where), own):
            raise Forbidden("the --where filter cannot be combined with the row policy.", Location(obj="--where filter"),
                            "Write one condition on dimensions, e.g. \"region = 'EU'\".")
        return combined

    def _allowed_hint(self) -> str:
        if self.kpis is None:
            return "Ask for another token to read it."
        return f"This token may read: {', '.join(sorted(self.kpis)) or 'no KPI'}."


OPEN = Access("open")


class Tokens:
    """The configured tokens, by the SHA-256 digest of their secret."""

    def __init__(self, entries: Mapping[str, Access] | None = None):
        self._by_digest = dict(entries or {})

    @property
    def configured(self) -> bool:
        return bool(self._by_digest)

    @property
    def accesses(self) -> list[Access]:
        return list(self._by_digest.values())

    def authenticate(self, authorization: str | None) -> Access:
        """The Access of an ``Authorization: Bearer <token>`` header; OPEN when no token is configured."""
        if not self.configured:
            return OPEN
        hint = "Send 'Authorization: Bearer <token>' with a token the server's administrator gave you."
        if not authorization:
            raise Unauthorized("this server needs an API token.", None, hint)
        scheme, _, secret = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthorized("the Authorization header is not 'Bearer <token>'.", None, hint)
        digest = _digest(secret.strip())
        for known, access in self._by_digest.items():  # compare every digest in constant time
            if hmac.compare_digest(known, digest):
                return access
        raise Unauthorized("the API token is not valid.", None, hint)

    def validate(self, model: Model) -> None:
        """Check every token's KPI names and row policy against the project (at start-up)."""
        for access in self._by_digest.values():
            where = Location(obj=f"token '{access.name}'")
            for name in sorted(access.kpis or ()):
                if name not in model.kpis:
                    raise UsageError(f"the token '{access.name}' allows the unknown KPI '{name}'.", where,
                                     did_you_mean(name, model.kpis))
            if access.where:
                resolve_formula(model, access.where, "dimension", f"row policy of token '{access.name}'")
                known = {dim for source in model.sources for dim in dimension_paths(model.sources, source)}
                for dim in sorted(access.policy_dimensions - known):
                    raise UsageError(f"the row policy of the token '{access.name}' uses '{dim}', which is not a "
                                     "dimension of any source.", where, did_you_mean(dim, known))


def load_tokens(text: str | None = None, path: Path | None = None) -> Tokens:
    """Tokens from YAML/JSON text (an environment variable) and/or a file."""
    entries: dict[str, Access] = {}
    documents = ([(f"file {path}", _read(path))] if path else []) + ([("KPI_ENGINE_TOKENS", text)] if text else [])
    for origin, content in documents:
        try:
            document = yaml.safe_load(content)
        except yaml.YAMLError as error:
            raise UsageError(f"the tokens in {origin} are not valid YAML or JSON: {error}".rstrip(".") + ".",
                             None, "See docs/serve.md for the format.") from None
        items = document.get("tokens") if isinstance(document, dict) else document
        if not isinstance(items, list):
            raise UsageError(f"the tokens in {origin} are not a list.", None,
                             "Write 'tokens:' followed by one '- name: ...' entry per token (docs/serve.md).")
        for index, item in enumerate(items):
            digest, access = _entry(item, f"{origin}, token {index + 1}")
            if digest in entries:
                raise UsageError(f"two tokens in {origin} have the same secret.", None, "Give each token its own.")
            entries[digest] = access
    return Tokens(entries)


_KEYS = {"name", "token", "sha256", "kpis", "formulas", "where"}


def _entry(item: Any, where: str) -> tuple[str, Access]:
    location = Location(obj=where)
    if not isinstance(item, dict):
        raise UsageError("a token entry is not a mapping.", location, "Write 'name:', 'token:' or 'sha256:', ...")
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise UsageError(f"unknown key '{unknown[0]}' in a token entry.", location, did_you_mean(unknown[0], _KEYS))
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise UsageError("a token has no name.", location, "Add 'name: <who it is for>' (shown in the access log).")
    secret, digest = item.get("token"), item.get("sha256")
    if (secret is None) == (digest is None):
        raise UsageError(f"the token '{name}' needs exactly one of 'token' and 'sha256'.", location,
                         "Give the secret itself, or its SHA-256 hex digest (sha256sum).")
    if secret is not None:
        if not isinstance(secret, str) or len(secret) < 16:
            raise UsageError(f"the secret of the token '{name}' is shorter than 16 characters.", location,
                             "Use a long random secret, e.g. from 'python -c \"import secrets; "
                             "print(secrets.token_urlsafe(32))\"'.")
        digest = _digest(secret)
    elif not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest.lower())):
        raise UsageError(f"the sha256 of the token '{name}' is not a 64-digit hex digest.", location,
                         "Write the output of: printf %s 'SECRET' | sha256sum")
    kpis = item.get("kpis", "*")
    if kpis != "*" and not (isinstance(kpis, list) and all(isinstance(k, str) for k in kpis)):
        raise UsageError(f"'kpis' of the token '{name}' is neither '*' nor a list of KPI names.", location, None)
    formulas = item.get("formulas", kpis == "*")
    if not isinstance(formulas, bool):
        raise UsageError(f"'formulas' of the token '{name}' is not true or false.", location, None)
    policy = item.get("where")
    if policy is not None:
        if not isinstance(policy, str) or not policy.strip():
            raise UsageError(f"the row policy ('where') of the token '{name}' is not a condition.", location,
                             "Write a filter on dimensions, e.g. \"channel in ('email')\".")
        try:
            parse(policy, FormulaSource(obj=f"row policy of token '{name}'"))
        except FormulaError as error:
            raise UsageError(f"{error.location}: {error.message}", location, error.hint, error.detail) from None
    allowed = None if kpis == "*" else frozenset(kpis)
    return digest.lower(), Access(name.strip(), allowed, formulas, policy)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _read(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot read the tokens file {path}: {error.strerror}.", None,
                         "Give --tokens-file the path of a readable YAML or JSON file.") from None


__all__ = ["Access", "Forbidden", "OPEN", "Tokens", "Unauthorized", "load_tokens"]
