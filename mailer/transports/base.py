"""The transport protocol and the values that cross it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, Protocol

from mailer.links import preferences_from_unsubscribe


@dataclass(frozen=True)
class Envelope:
    """What every recipient of an edition shares: rendered once (Invariant 3)."""

    edition_id: int
    newsletter_slug: str
    from_name: str
    from_email: str
    reply_to: str | None
    subject: str
    html: str
    text: str
    nonce: str
    # An editor's test send: no ledger row, and marked so that nothing coming back
    # (provider events, bounces) can be taken for the edition's (see each transport).
    test_send: bool = False
    # The newsletter's name (List-Id's phrase) and language (Content-Language).
    newsletter_name: str = ""
    language: str = "en"


# Recipients and results are made a million times a send: named tuples, which cost a
# third of a frozen dataclass to create.
class Recipient(NamedTuple):
    delivery_id: int
    email: str
    name: str | None
    unsubscribe_url: str

    # The preference link is derived from the unsubscribe link (the same token under
    # another path) when a transport asks for it, so it costs a send no second signature.
    # ``web_url`` is the same for every recipient and is filled into the envelope once
    # per send (mailer.dispatch.senders); a recipient is asked for it only where nobody
    # filled it (a test send), and then gives the unsubscribe link's value, which there
    # is the harmless ``/preview/link``.

    def tokens(self) -> dict[str, str]:
        return {
            "unsubscribe_url": self.unsubscribe_url,
            "preferences_url": preferences_from_unsubscribe(self.unsubscribe_url),
            "web_url": self.unsubscribe_url,
            "name": self.name or "",
            "email": self.email,
        }

    def token(self, name: str) -> str:
        """One token's value (cheaper than building all of them, once per recipient)."""
        if name == "unsubscribe_url":
            return self.unsubscribe_url
        if name == "preferences_url":
            return preferences_from_unsubscribe(self.unsubscribe_url)
        if name == "name":
            return self.name or ""
        if name == "email":
            return self.email
        if name == "web_url":
            return self.unsubscribe_url
        raise KeyError(name)


class Outcome(StrEnum):
    SENT = "sent"
    FAILED = "failed"  # definite refusal: will not be tried again
    RETRY = "retry"  # definite, temporary: nothing went out, safe to queue again
    UNKNOWN = "unknown"  # may or may not have gone out: never resent blindly


class Result(NamedTuple):
    delivery_id: int
    outcome: Outcome
    message_id: str | None = None
    error: str | None = None
    # A retry because the transport itself is unavailable (provider down, no connection,
    # bad credentials), not because of this recipient: not counted as an attempt.
    transport_down: bool = False


class TransportUnauthorized(RuntimeError):
    """The provider refused our credentials: stop the edition before it burns the list."""


class Transport(Protocol):
    name: str
    # How many batches one sender may have in flight at once (``send`` is then
    # called from that many threads).
    concurrency: int

    def send(self, envelope: Envelope, recipients: Sequence[Recipient]) -> list[Result]:
        """Hand a batch over; return one Result per recipient, in any order."""
        ...

    def close(self) -> None: ...
