"""Rate limits every process shares: at most ``limit`` requests per key per minute.

Counted in the database (``request_windows``), one row per key and minute, so that any
number of web processes behind one address enforce one limit, not one each. The minute
before weighs in by how much of it the sliding minute still covers (the usual two-window
estimate), so a client cannot double its rate across a minute's boundary. A refused
request is counted too: a client that keeps trying stays refused.

Unlike ``throttle`` (failures of a credential), this counts every request, good or not.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, select
from sqlalchemy.orm import Session

from mailer.accounts.models import RequestWindow
from mailer.db.base import utcnow
from mailer.db.dialect import conflict_insert

__all__ = ["WINDOW", "take", "take_all"]

WINDOW = timedelta(minutes=1)
# The key column's width (models.RequestWindow.key).
_KEY_LENGTH = 400


def _window_of(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0)


_WINDOWS = cast(Table, RequestWindow.__table__)
_PREVIOUS = select(_WINDOWS.c.hits).where(
    _WINDOWS.c.key == bindparam("key"), _WINDOWS.c.window_start == bindparam("previous")
)
_FORGET = delete(_WINDOWS).where(_WINDOWS.c.window_start < bindparam("previous"))


@functools.cache
def _count(dialect: str) -> Any:
    """The upsert that counts a key's hits in a minute, built once per database
    (building it, and its cache key, cost more than running it on a sign-up)."""
    statement = conflict_insert(dialect)(_WINDOWS).values(
        key=bindparam("key"), window_start=bindparam("current"), hits=bindparam("hits")
    )
    return statement.on_conflict_do_update(
        index_elements=["key", "window_start"],
        set_={"hits": _WINDOWS.c.hits + statement.excluded.hits},
    ).returning(_WINDOWS.c.hits)


def take(session: Session, key: str, limit: int, now: datetime | None = None) -> float | None:
    """Count one request under ``key``; the seconds to wait if that is over ``limit``.

    Runs in the caller's transaction (a write: one upsert, and on a key's first request
    in a minute a delete of the minutes nobody needs any more).
    """
    return take_all(session, [(key, now or utcnow())], limit)[0]


def take_all(
    session: Session, requests: Sequence[tuple[str, datetime]], limit: int
) -> list[float | None]:
    """``take`` for many requests (key, when) at once, as if one after the other: per
    request, the seconds to wait or None. One upsert per key and minute, however many
    requests it counts (a group of sign-ups from one network)."""
    counted: dict[tuple[str, datetime], list[int]] = {}
    for index, (key, now) in enumerate(requests):
        counted.setdefault((key[:_KEY_LENGTH], _window_of(now)), []).append(index)
    connection = session.connection()
    upsert = _count(connection.dialect.name)
    waits: list[float | None] = [None] * len(requests)
    forget: datetime | None = None
    # Keys in one order in every transaction: two web processes' groups that share
    # networks lock their rows in the same order, and never wait for each other in a ring.
    for (key, current), indexes in sorted(counted.items()):
        values = {"key": key, "current": current, "previous": current - WINDOW}
        total: int = connection.execute(upsert, {**values, "hits": len(indexes)}).scalar_one()
        if total == len(indexes):  # the key's first requests in this minute
            forget = max(forget or current, current)
        before: int | None = connection.execute(_PREVIOUS, values).scalar()
        first = total - len(indexes)
        for number, index in enumerate(indexes, start=1):
            waits[index] = _wait(first + number, before or 0, requests[index][1], current, limit)
    if forget is not None:
        # The minutes nobody needs any more, once, after every count.
        connection.execute(_FORGET, {"previous": forget - WINDOW})
    return waits


def _wait(hits: int, before: int, now: datetime, current: datetime, limit: int) -> float | None:
    elapsed = (now - current) / WINDOW
    estimate = before * (1 - elapsed) + hits
    if estimate <= limit:
        return None
    # Until the estimate falls back to the limit as the minute before slides out of view
    # (or, if this minute alone is over it, until the next minute).
    if before and hits <= limit:
        share = (estimate - limit) / before
        return max(1.0, math.ceil(share * WINDOW.total_seconds()))
    return max(1.0, math.ceil((1 - elapsed) * WINDOW.total_seconds()))
