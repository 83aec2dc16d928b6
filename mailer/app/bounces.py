"""Bounce mail an operator should look at: what the reader could not read.

``mailer bounces import`` keeps each such message as an ``unparsed`` event (which message,
its From, To, Subject, Date and Message-ID, and why it was not read); here they are listed
for an operator, newest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from mailer.accounts.models import Role
from mailer.app.actors import Actor
from mailer.app.errors import Invalid
from mailer.db.models import Event
from mailer.runtime import Runtime

MAX_LIST = 10_000


@dataclass(frozen=True)
class UnparsedMail:
    event_id: int
    received_at: datetime
    key: str  # the file name, mbox position or IMAP UID it was read under
    why: str
    headers: dict[str, str]


def list_unparsed(runtime: Runtime, actor: Actor, *, limit: int = 100) -> Sequence[UnparsedMail]:
    """Bounce mail that could not be read, newest first."""
    actor.require(Role.ADMIN)
    if not 1 <= limit <= MAX_LIST:
        raise Invalid(f"limit {limit}: give 1 to {MAX_LIST}", field="limit")
    with runtime.sessions() as session:
        events = session.scalars(
            select(Event)
            .where(Event.source == "dsn", Event.kind == "unparsed")
            .order_by(Event.id.desc())
            .limit(limit)
        )
        found = []
        for event in events:
            payload = event.payload if isinstance(event.payload, dict) else {}
            headers = payload.get("headers")
            found.append(
                UnparsedMail(
                    event_id=event.id,
                    received_at=event.received_at,
                    key=str(payload.get("key", "")),
                    why=event.detail or "",
                    headers={str(k): str(v) for k, v in headers.items()}
                    if isinstance(headers, dict)
                    else {},
                )
            )
        return found
