"""The ledger's counts by status, kept as rows change instead of counted on every read.

Every statement that adds ledger rows or moves them between stored states adds, in its
own transaction, one ``ledger_tallies`` row of differences; an edition's sums are what
``GROUP BY status`` over its deliveries would say. Rows are only ever inserted, so two
writers never wait for each other here, and a crash loses a difference only together
with the change it describes. States that are not stored (``sending``, and ``sent``
through a batch sent whole) are read from the batch rows (``mailer.dispatch.ledger``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from sqlalchemy import Connection, Table, func, insert, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ScalarSelect

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

Changes = Mapping[DeliveryStatus, int]


def moved(number: int, source: DeliveryStatus, target: DeliveryStatus) -> dict[DeliveryStatus, int]:
    """``number`` rows went from ``source`` to ``target``."""
    if not number or source == target:
        return {}
    return {source: -number, target: number}


def combined(*changes: Changes) -> dict[DeliveryStatus, int]:
    total: dict[DeliveryStatus, int] = {}
    for change in changes:
        for status, number in change.items():
            total[status] = total.get(status, 0) + number
    return total


def add(executor: Connection | Session, edition_id: int, changes: Changes) -> None:
    """Record ``changes`` to the edition's counts; the caller commits with the change."""
    values = {status.value: number for status, number in changes.items() if number}
    if values:
        executor.execute(insert(TALLIES).values(edition_id=edition_id, **values))


def sums(edition_id: int) -> list[ScalarSelect[int]]:
    """The edition's stored counts, one scalar subquery per state in ``STORED`` (for a
    caller to read in one statement with whatever must agree with them)."""
    return [
        select(func.coalesce(func.sum(TALLIES.c[status.value]), 0))
        .where(TALLIES.c.edition_id == edition_id)
        .scalar_subquery()
        for status in STORED
    ]
