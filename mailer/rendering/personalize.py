"""Per-recipient tokens (Invariant 3: render once, personalize cheaply).

The rendered edition holds placeholders such as ``%%3f9a0c1b2d4e:unsubscribe_url%%``.
The nonce is drawn afresh for every render, so text from a briefing can never
collide with, or smuggle in, a placeholder.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping

from markupsafe import Markup, escape

TOKENS = frozenset({"unsubscribe_url", "preferences_url", "web_url", "name", "email"})
# Links every recipient of an edition shares: filled once per send (``fill_shared``).
SHARED_TOKENS = frozenset({"web_url"})
_PLACEHOLDER = re.compile(r"%%([0-9a-f]{12}):([a-z_]+)%%")


class PersonalizationError(KeyError):
    """A template asked for a token that no recipient can supply."""


def new_nonce() -> str:
    return secrets.token_hex(6)


def placeholder(nonce: str, name: str) -> Markup:
    if name not in TOKENS:
        raise PersonalizationError(f"unknown token {name!r}; known: {sorted(TOKENS)}")
    return Markup(f"%%{nonce}:{name}%%")  # noqa: S704 - hex nonce and a known name only


def placeholders_in(content: str, nonce: str) -> set[str]:
    return {m[2] for m in _PLACEHOLDER.finditer(content) if m[1] == nonce}


def personalize(content: str, nonce: str, values: Mapping[str, str], *, html: bool) -> str:
    """Fill the placeholders of ``content``; values are HTML-escaped in HTML."""

    def fill(match: re.Match[str]) -> str:
        if match[1] != nonce:
            return match[0]
        value = values.get(match[2])
        if value is None:
            # A link nobody gave a value for leads where the unsubscribe link leads
            # (in a preview, ``/preview/link``), never to an empty href.
            value = values.get("unsubscribe_url", "") if match[2].endswith("_url") else ""
        return str(escape(value)) if html else value

    return _PLACEHOLDER.sub(fill, content)


def fill_shared(content: str, nonce: str, values: Mapping[str, str], *, html: bool) -> str:
    """Fill only the placeholders named in ``values`` (the same for every recipient),
    leaving the per-recipient ones for the transport."""

    def fill(match: re.Match[str]) -> str:
        if match[1] != nonce or match[2] not in values:
            return match[0]
        value = values[match[2]]
        return str(escape(value)) if html else value

    return _PLACEHOLDER.sub(fill, content)
