"""Events per edition, hour and kind, added as events are stored.

The stats' totals (opens, clicks) and their timeline read these rows, a few per hour
of an edition's life, instead of every event it received. They are only ever inserted
(one row per edition, hour and kind that a stored batch of events touches), so two
webhook requests never wait for each other here; and they are kept when old events
are pruned, so an edition's numbers do not shrink with its raw events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Connection, Table, func, insert, select
from sqlalchemy.orm import Session

from mailer.db.models import EventTally

EVENT_TALLIES = cast(Table, EventTally.__table__)
_ADD = insert(EVENT_TALLIES)


def hour_of(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def add(connection: Connection, stored: Iterable[tuple[int | None, str, datetime]]) -> None:
    """Count stored events, given as (edition id, kind, when); those of no edition are
    not counted. The caller commits with the events."""
    groups = Counter(
        (edition_id, hour_of(at), kind) for edition_id, kind, at in stored if edition_id
    )
    if groups:
        connection.execute(
            _ADD,
            [
                {"edition_id": edition_id, "hour": hour, "kind": kind, "events": number}
                for (edition_id, hour, kind), number in sorted(groups.items())
            ],
        )


def totals(session: Session, edition_id: int, kinds: Iterable[str]) -> dict[str, int]:
    rows = session.execute(
        select(EVENT_TALLIES.c.kind, func.sum(EVENT_TALLIES.c.events))
        .where(EVENT_TALLIES.c.edition_id == edition_id, EVENT_TALLIES.c.kind.in_(list(kinds)))
        .group_by(EVENT_TALLIES.c.kind)
    )
    return {kind: int(number) for kind, number in rows}


def by_hour(
    session: Session, edition_id: int, kinds: Iterable[str]
) -> list[tuple[datetime, str, int]]:
    """(hour, kind, events), oldest first."""
    rows = session.execute(
        select(EVENT_TALLIES.c.hour, EVENT_TALLIES.c.kind, func.sum(EVENT_TALLIES.c.events))
        .where(EVENT_TALLIES.c.edition_id == edition_id, EVENT_TALLIES.c.kind.in_(list(kinds)))
        .group_by(EVENT_TALLIES.c.hour, EVENT_TALLIES.c.kind)
        .order_by(EVENT_TALLIES.c.hour, EVENT_TALLIES.c.kind)
    )
    return [(hour, kind, int(number)) for hour, kind, number in rows]
