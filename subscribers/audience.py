"""Who may be mailed: the one definition used when the ledger is filled and
again when each batch is claimed (Invariant 1)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, not_, or_, select, text
from sqlalchemy.orm import Session, sessionmaker

from mailer.db.session import transaction
from subscribers.models import (
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
)


def not_suppressed(email_column: Any, *, probe: bool = False) -> ColumnElement[bool]:
    return not_(
        exists(_probing(select(Suppression.id), probe).where(Suppression.email == email_column))
    )


def mailable(list_ids: Any, *, probe: bool = False) -> ColumnElement[bool]:
    """Subscriber rows that are active, not paused, subscribed to one of ``list_ids``
    (a subquery or a sequence) and not suppressed.

    ``probe`` is for a condition evaluated on a few rows (a claimed batch): each
    subquery then probes its index per row. Without it PostgreSQL may hash all
    subscriptions and suppressions once per statement, which is right for filling
    a whole ledger and a hundred times too slow for a batch of a thousand.
    """
    return and_(
        Subscriber.status == SubscriberStatus.ACTIVE,
        # A reader's pause. The database's clock, not a value bound here: the claim's
        # statement is built once at import. CURRENT_TIMESTAMP is UTC on SQLite too, in
        # the text form naive UTC times are stored in there, so the two compare as text.
        or_(Subscriber.paused_until.is_(None), Subscriber.paused_until <= func.current_timestamp()),
        exists(
            _probing(select(Subscription.subscriber_id), probe).where(
                Subscription.subscriber_id == Subscriber.id,
                Subscription.status == SubscriptionStatus.ACTIVE,
                Subscription.list_id.in_(list_ids),
            )
        ),
        not_suppressed(Subscriber.email, probe=probe),
    )


def _probing(query: Select[Any], probe: bool) -> Select[Any]:
    # OFFSET 0 keeps PostgreSQL from turning EXISTS into a hashed subplan; SQLite
    # probes per row either way.
    return query.offset(0) if probe else query


def analyze_audience(factory: sessionmaker[Session]) -> None:
    """After a bulk change of subscribers or memberships (an import), refresh PostgreSQL's
    statistics of the tables the audience is read from. Autovacuum does so only once a
    fifth of a table has changed, and some time after: until then the planner takes a
    table of a million readers for the few thousand it last counted, and every claimed
    batch of the next send probes it the slow way. SQLite keeps no such statistics
    unless asked to (it never is here)."""
    with transaction(factory) as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("ANALYZE subscribers, subscriptions"))
