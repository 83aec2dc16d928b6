"""The lists' memberships by status, kept as subscriptions change instead of counted on
every read.

The database's triggers on ``subscriptions`` (migration 0015) add a ``list_tallies`` row
of differences for every change, in the transaction of the change: an insert, a move
between statuses, a delete, a cascade from a subscriber or a list. A list's sums are
what ``GROUP BY status`` over its subscriptions would say. Rows are only ever inserted,
so two writers never wait for each other here; ``fold`` replaces a list's rows by their
sum, so that reading stays a few rows however many changes there were.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Connection, FromClause, Select, Table, delete, func, insert, select
from sqlalchemy.orm import Session

from subscribers.models import ListTally, MailingList, SubscriptionStatus

TALLIES = cast(Table, ListTally.__table__)
LISTS = cast(Table, MailingList.__table__)

# A column per stored status; the values are the columns' names.
COUNTED = (SubscriptionStatus.ACTIVE, SubscriptionStatus.PENDING, SubscriptionStatus.UNSUBSCRIBED)


def counts(executor: Connection | Session, list_id: int | None = None) -> dict[int, dict[str, int]]:
    """Every list's memberships by status, by list id, or only the list given (lists
    never joined are absent)."""
    query = _sums(TALLIES)
    if list_id is not None:
        query = query.where(TALLIES.c.list_id == list_id)
    return {
        row[0]: {str(s): int(n or 0) for s, n in zip(COUNTED, row[1:], strict=True)}
        for row in executor.execute(query)
    }


def forget(executor: Connection | Session, list_id: int) -> None:
    """Drop a deleted list's differences (its cascade wrote some on its way out), so that
    a list given the same id later starts from nothing."""
    executor.execute(delete(TALLIES).where(TALLIES.c.list_id == list_id))


def fold(connection: Connection) -> None:
    """Replace each list's differences by one row of their sums; the caller commits.

    Safe beside writers on both databases. PostgreSQL deletes and re-inserts in one
    statement: rows still uncommitted when it starts are not seen, so they stay, and are
    counted. SQLite has one writer: the first statement takes the write lock, so the
    rows summed are exactly the rows below the sums' ids.
    """
    names = ["list_id", *map(str, COUNTED)]
    # A fold that ran beside a list's deletion (on PostgreSQL: it took the list's rows
    # before, and wrote their sum after, ``forget``) leaves a row for a list that is gone;
    # the next fold drops it. Cheap: folded, the table holds about a row per list.
    connection.execute(delete(TALLIES).where(TALLIES.c.list_id.not_in(select(LISTS.c.id))))
    if connection.dialect.name == "postgresql":
        gone = (
            delete(TALLIES)
            .returning(TALLIES.c.list_id, *(TALLIES.c[s] for s in COUNTED))
            .cte("gone")
        )
        connection.execute(insert(TALLIES).from_select(names, _sums(gone)))
        return
    added = connection.execute(insert(TALLIES).from_select(names, _sums(TALLIES))).rowcount
    if added:
        # Without AUTOINCREMENT each new rowid is the largest plus one: the sums took the
        # ``added`` ids above every row they summed.
        last = select(func.max(TALLIES.c.id)).scalar_subquery()
        connection.execute(delete(TALLIES).where(TALLIES.c.id <= last - added))


def _sums(rows: FromClause) -> Select[Any]:
    return select(rows.c.list_id, *(func.sum(rows.c[s]).label(str(s)) for s in COUNTED)).group_by(
        rows.c.list_id
    )
