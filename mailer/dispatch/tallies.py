"""The ledger's counts by status, kept as rows change instead of counted on every read.

Every statement that adds ledger rows or moves them between stored states adds, in its
own transaction, one ``ledger_tallies`` row of differences; an edition's sums are what
``GROUP BY status`` over its deliveries would say. The same rows count what the event
policy stamps on ledger rows once (``STAMPS``: first delivered, opened, clicked, and the
bounce class). Rows are only ever inserted, so two writers never wait for each other
here, and a crash loses a difference only together with the change it describes.
States that are not stored (``sending``, and ``sent`` through a batch sent whole) are
read from the batch rows (``mailer.dispatch.ledger``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import cast

from sqlalchemy import Connection, Subquery, Table, bindparam, func, insert, select
from sqlalchemy.orm import Session

from mailer.db.models import DeliveryStatus, LedgerTally

TALLIES = cast(Table, LedgerTally.__table__)

# The states a ledger row can be stored in.
STORED = (
    DeliveryStatus.QUEUED,
    DeliveryStatus.SENT,
    DeliveryStatus.FAILED,
    DeliveryStatus.SKIPPED,
    DeliveryStatus.UNKNOWN,
)

# The stamps' columns: rows with delivered_at, opened_at, clicked_at set, and with
# bounce_class hard or soft.
STAMPS = ("delivered", "opened", "clicked", "bounced_hard", "bounced_soft")

# By column: a status (a DeliveryStatus is its value) or a stamp.
Changes = Mapping[str, int]


def moved(number: int, source: str, target: str) -> dict[str, int]:
    """``number`` rows went from ``source`` to ``target``."""
    if not number or source == target:
        return {}
    return {source: -number, target: number}


def combined(*changes: Changes) -> dict[str, int]:
    total: dict[str, int] = {}
    for change in changes:
        for status, number in change.items():
            total[status] = total.get(status, 0) + number
    return total


def add(executor: Connection | Session, edition_id: int, changes: Changes) -> None:
    """Record ``changes`` to the edition's counts; the caller commits with the change."""
    values = {str(column): number for column, number in changes.items() if number}
    if values:
        executor.execute(insert(TALLIES).values(edition_id=edition_id, **values))


@functools.cache
def kept(columns: tuple[str, ...] = tuple(STORED)) -> Subquery:
    """The sums of an edition's differences, one column each (named as given), for
    the edition given as the ``edition_id`` parameter. Built once: a caller reads it
    in one statement with whatever must agree with it."""
    return (
        select(*(func.coalesce(func.sum(TALLIES.c[c]), 0).label(c) for c in columns))
        .where(TALLIES.c.edition_id == bindparam("edition_id"))
        .subquery()
    )
