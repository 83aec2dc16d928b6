"""Parsing and validating a SendGrid Event Webhook body, one cheap pass per batch.

The body is a JSON array of event objects. A body that is not such an array at all
raises ``PayloadError`` (the web layer answers 4xx). Within a good array each item is
judged on its own: a bad item becomes a ``Rejected`` with its index and reason and
the rest still count, because SendGrid retries a whole batch for 24 hours on any
non-2xx answer and one odd item must not block the others or come back forever.

Validation is hand-written rather than a pydantic model per event: at batches of
1,000 events and thousands of events a second the per-item cost matters. Required
fields are strict about types; optional, descriptive fields of an unexpected type
read as ``None`` (the original item is kept in ``raw``).
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any

import orjson

from mailer.briefings.sanitize import clean_data
from mailer.jsondata import excess

KNOWN_EVENTS = frozenset(
    {
        "processed",
        "dropped",
        "delivered",
        "deferred",
        "bounce",
        "open",
        "click",
        "spamreport",
        "unsubscribe",
        "group_unsubscribe",
        "group_resubscribe",
    }
)
# SendGrid's bounce ``type``: "blocked" is a refusal by the receiving server (often
# reputation or content), "bounce" a permanent failure of the address.
BOUNCE_TYPES = frozenset({"bounce", "blocked"})

MAX_REASON_CHARS = 1000
# Column sizes of the events table: longer values could not be stored.
MAX_EVENT_ID_CHARS = 200
MAX_EMAIL_CHARS = 320
# One event: SendGrid's are flat objects (custom args, a list of categories), a few KB.
# Deeper or larger is refused on its own (JSON columns cannot store any depth either).
MAX_EVENT_DEPTH = 16
MAX_EVENT_CHARS = 64 * 1024
# Ids are BIGINT columns.
_MAX_ID = 2**63 - 1
# datetime cannot hold a later second than the end of year 9999.
_MAX_TIMESTAMP = 253_402_300_799


class PayloadError(ValueError):
    """The body as a whole is unusable: too large, not JSON, or not a JSON array."""


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    event_id: str  # sg_event_id: the dedupe key, SendGrid retries for 24 h
    kind: str  # one of KNOWN_EVENTS
    email: str  # lower-cased and stripped
    occurred_at: int  # unix seconds
    message_id: str | None  # sg_message_id; see message_id_prefix()
    edition_id: int | None  # from the custom args the dispatch put on the send
    delivery_id: int | None
    bounce_type: str | None  # "bounce" or "blocked", bounce events only
    reason: str | None
    status: str | None  # enhanced SMTP status, e.g. "5.1.1"
    asm_group_id: int | None
    url: str | None  # the link clicked, click events only
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejected:
    index: int
    reason: str  # e.g. "item 17: `timestamp` must be an integer (unix seconds)"
    raw: Any


def parse_events(
    body: bytes, *, max_bytes: int = 1_048_576
) -> tuple[list[ProviderEvent], list[Rejected]]:
    """Events in body order, and the items that could not be read.

    An sg_event_id seen earlier in the same body is skipped without a ``Rejected``:
    a repeat is SendGrid's normal behaviour, not a fault, and the first copy counts.
    """
    if len(body) > max_bytes:
        raise PayloadError(f"body is {len(body)} bytes, over the limit of {max_bytes} bytes")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson's message carries the line, column and character position.
        raise PayloadError(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise PayloadError(f"body must be a JSON array of events, not {_json_type(data)}")
    # PostgreSQL stores no NUL in text or JSONB: one in a remote server's reply
    # would fail the whole batch, and SendGrid would retry it until it gave up. Control
    # characters are cleaned as at every way in (clean_data); they can only come as a
    # \u escape or as raw non-ASCII bytes, so a plain ASCII body skips the walk.
    may_be_unclean = b"\\u" in body or not body.isascii()

    events: list[ProviderEvent] = []
    rejected: list[Rejected] = []
    seen: set[str] = set()
    for index, item in enumerate(data):
        oversized = excess(item, max_depth=MAX_EVENT_DEPTH, max_chars=MAX_EVENT_CHARS)
        if oversized is not None:
            rejected.append(Rejected(index, f"item {index}: {oversized}", _excerpt_of(item)))
            continue
        if may_be_unclean:
            item = clean_data(item)
        result = _event(item)
        if isinstance(result, str):
            rejected.append(Rejected(index, f"item {index}: {result}", item))
        elif result.event_id not in seen:
            seen.add(result.event_id)
            events.append(result)
    return events, rejected


_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel, _EXCERPT.maxdict, _EXCERPT.maxlist = 3, 8, 8
_EXCERPT.maxstring = _EXCERPT.maxother = 80


def _excerpt_of(item: Any) -> dict[str, str]:
    """What is kept of an item too deep or large to store: a short, bounded excerpt."""
    return {"excerpt": _EXCERPT.repr(item)[:500]}


def message_id_prefix(sg_message_id: str) -> str:
    """The ``X-Message-Id`` the send got back, from an event's ``sg_message_id``.

    SendGrid builds ``sg_message_id`` as the request's ``X-Message-Id``, a dot, then
    routing details (``W86EgYT6SQKk0lRflfLRsA.filterdrecv-...-18.0``), so the part
    before the first dot is the id of the whole request. One request carries up to
    1,000 recipients, so this finds a batch: pair it with the address for a delivery.
    """
    return sg_message_id.partition(".")[0]


def _event(item: Any) -> ProviderEvent | str:
    """The event, or what is wrong with the item."""
    if not isinstance(item, dict):
        return f"must be a JSON object, not {_json_type(item)}"
    problems: list[str] = []

    # Typed Any on purpose: each value is JSON of unknown shape until checked below.
    kind: Any = item.get("event")
    if kind is None:
        problems.append("`event` is missing")
    elif not isinstance(kind, str):
        problems.append(f"`event` must be a string, not {_json_type(kind)}")
    elif kind not in KNOWN_EVENTS:
        problems.append(f"unknown event name {_excerpt(kind)}")

    event_id: Any = item.get("sg_event_id")
    if event_id is None:
        problems.append("`sg_event_id` is missing")
    elif not isinstance(event_id, str):
        problems.append(f"`sg_event_id` must be a string, not {_json_type(event_id)}")
    elif not event_id.strip():
        problems.append("`sg_event_id` is empty")
    elif len(event_id) > MAX_EVENT_ID_CHARS:
        problems.append(f"`sg_event_id` is longer than {MAX_EVENT_ID_CHARS} characters")

    email: Any = item.get("email")
    if email is None:
        problems.append("`email` is missing")
    elif not isinstance(email, str):
        problems.append(f"`email` must be a string, not {_json_type(email)}")
    else:
        email = email.strip().lower()
        if "@" not in email:
            problems.append(f"`email` is not an address: {_excerpt(email)}")
        elif len(email) > MAX_EMAIL_CHARS:
            problems.append(f"`email` is longer than {MAX_EMAIL_CHARS} characters")

    timestamp: Any = item.get("timestamp")
    if timestamp is None:
        problems.append("`timestamp` is missing")
    # type() rather than isinstance(): JSON true must not pass as the integer 1.
    elif type(timestamp) is not int:
        problems.append(
            f"`timestamp` must be an integer (unix seconds), not {_json_type(timestamp)}"
        )
    elif not 0 <= timestamp <= _MAX_TIMESTAMP:
        problems.append(f"`timestamp` is out of range: {timestamp}")

    if problems:
        return "; ".join(problems)

    status = _text(item.get("status"))
    bounce_type = item.get("type") if kind == "bounce" else None
    # isinstance first: a JSON array or object here is unhashable, and must not crash.
    if not (isinstance(bounce_type, str) and bounce_type in BOUNCE_TYPES):
        bounce_type = None
    return ProviderEvent(
        event_id=event_id,
        kind=kind,
        email=email,
        occurred_at=timestamp,
        message_id=_text(item.get("sg_message_id")),
        edition_id=_id(item.get("edition_id")),
        delivery_id=_id(item.get("delivery_id")),
        bounce_type=bounce_type,
        reason=_reason(item, status),
        status=status,
        asm_group_id=_id(item.get("asm_group_id")),
        url=_text(item.get("url")) if kind == "click" else None,
        raw=item,
    )


def _id(value: Any) -> int | None:
    """A positive database id from a custom arg: SendGrid returns them as strings."""
    if type(value) is int:
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        number = int(value)
    else:
        return None
    return number if 0 < number <= _MAX_ID else None


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None


def _reason(item: dict[str, Any], status: str | None) -> str | None:
    """SendGrid's words: ``reason`` (bounce, dropped) and ``response`` (delivered, deferred).

    The status is added only where the text does not already say it, e.g. a dropped
    event's "Bounced Address (status 5.0.0)".
    """
    parts: list[str] = []
    for key in ("reason", "response"):
        text = _text(item.get(key))
        if text and text not in parts:
            parts.append(text)
    if not parts:
        return None
    reason = "; ".join(parts)
    if status and status not in reason:
        reason = f"{reason} (status {status})"
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 1] + "…"
    return reason


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _excerpt(value: str) -> str:
    # Reasons are logged and stored: an attacker-sized string must not come along whole.
    return repr(value if len(value) <= 60 else value[:57] + "...")
