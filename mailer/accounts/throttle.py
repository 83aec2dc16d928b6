"""Sign-in throttling: failed attempts in a row per key, and how long a key must wait.

Every attempt is counted under two keys, its account (``account:<address>``, also for
addresses that have no account, so that being throttled tells nothing) and its client
(``client:<address>``, so that one client cannot try a password on many accounts).
After ``FAILURES_ALLOWED`` failures in a row a key is blocked for ``FIRST_WAIT``, and
each further failure doubles the wait up to ``LONGEST_WAIT``; while a key is blocked
nothing is tried at all, not even the right password. A key quiet for ``FORGET_AFTER``
(no failure, no block in force) starts again from nothing.

An attempt is counted as a failure *before* its password is checked (``begin``), and
taken back when it turns out right (``succeeded``). Counting afterwards would let a
burst of parallel attempts all pass the check before the first failure is written,
each one a free guess.

Machines' credentials (API tokens, webhook signatures) are long random secrets, where a
burst of parallel guesses is as hopeless as one: they are checked against the same keys
with ``wait_for`` (a read) before and ``failed`` after a failed check, so that a good
request writes nothing.

The rules are pure functions of a ``State`` and the time, which every function takes
as ``now`` (tests pass their own); the functions taking a ``Session`` store states.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from mailer.accounts.models import SignInThrottle
from mailer.db.base import utcnow
from mailer.db.dialect import conflict_insert

__all__ = [
    "FAILURES_ALLOWED",
    "FIRST_WAIT",
    "FORGET_AFTER",
    "LONGEST_WAIT",
    "Attempt",
    "Blocked",
    "Counted",
    "State",
    "account_key",
    "after_failure",
    "begin",
    "client_key",
    "current",
    "failed",
    "forget",
    "prune",
    "retry_after",
    "succeeded",
    "wait_after",
    "wait_for",
]

FAILURES_ALLOWED = 5
FIRST_WAIT = timedelta(seconds=30)
LONGEST_WAIT = timedelta(hours=1)
FORGET_AFTER = timedelta(hours=1)
# The key column's width (models.SignInThrottle.key).
_KEY_LENGTH = 400


class Blocked(Exception):
    """The attempt was not made: a key it counts under is blocked."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"blocked for {retry_after:.0f} more seconds")
        self.retry_after = retry_after


@dataclass(frozen=True)
class State:
    failures: int
    last_failure_at: datetime
    blocked_until: datetime | None


def account_key(text: str) -> str:
    """The key of an account: its normalised address, or what was typed, lower-cased."""
    return ("account:" + text.strip().lower())[:_KEY_LENGTH]


def client_key(client: str) -> str:
    return ("client:" + client.strip())[:_KEY_LENGTH]


def wait_after(failures: int) -> timedelta | None:
    """How long a key is blocked after its ``failures``-th failure in a row."""
    if failures < FAILURES_ALLOWED:
        return None
    # Past the cap the exact power does not matter: stop before it grows large.
    doublings = min(failures - FAILURES_ALLOWED, 16)
    return min(FIRST_WAIT * (1 << doublings), LONGEST_WAIT)


def current(state: State | None, now: datetime | None = None) -> State | None:
    """The state as it stands at ``now``: None for nothing counted, or all forgotten."""
    if state is None or state.failures <= 0:
        return None
    now = now or utcnow()
    quiet_since = max(state.last_failure_at, state.blocked_until or state.last_failure_at)
    if now - quiet_since >= FORGET_AFTER:
        return None
    return state


def retry_after(state: State | None, now: datetime | None = None) -> float | None:
    """Seconds until the key may try again, or None when it may now."""
    now = now or utcnow()
    state = current(state, now)
    if state is None or state.blocked_until is None or state.blocked_until <= now:
        return None
    return (state.blocked_until - now).total_seconds()


def after_failure(state: State | None, now: datetime | None = None) -> State:
    """The state once one more failure is counted at ``now``."""
    now = now or utcnow()
    state = current(state, now)
    failures = 1 if state is None else state.failures + 1
    wait = wait_after(failures)
    return State(failures, now, None if wait is None else now + wait)


@dataclass(frozen=True)
class Counted:
    key: str
    before: State | None
    after: State


@dataclass(frozen=True)
class Attempt:
    """An attempt counted in advance under its keys, to be taken back if it succeeds."""

    counted: tuple[Counted, ...]


def _stored(row: SignInThrottle) -> State | None:
    # A row with no failures is a placeholder ``begin`` inserted to lock.
    if row.failures <= 0:
        return None
    return State(row.failures, row.last_failure_at, row.blocked_until)


def _lock_rows(session: Session, keys: Sequence[str], now: datetime) -> dict[str, SignInThrottle]:
    """The keys' rows, created if missing, locked (PostgreSQL) or under the write lock."""
    insert = conflict_insert(session.get_bind().dialect.name)
    session.execute(
        insert(SignInThrottle)
        .values([{"key": key, "failures": 0, "last_failure_at": now} for key in keys])
        .on_conflict_do_nothing(index_elements=["key"])
    )
    return {
        row.key: row
        for row in session.scalars(
            select(SignInThrottle)
            .where(SignInThrottle.key.in_(keys))
            .order_by(SignInThrottle.key)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    }


def _count(rows: dict[str, SignInThrottle], keys: Sequence[str], now: datetime) -> list[Counted]:
    counted = []
    for key in keys:
        row = rows[key]
        before = current(_stored(row), now)
        after = after_failure(before, now)
        row.failures, row.last_failure_at, row.blocked_until = (
            after.failures,
            after.last_failure_at,
            after.blocked_until,
        )
        counted.append(Counted(key, before, after))
    return counted


def begin(session: Session, keys: Sequence[str], now: datetime | None = None) -> Attempt:
    """Count an attempt as a failure under every key, or raise Blocked and count nothing.

    Runs in the caller's transaction, which it starts with a write: the keys' rows are
    then locked on PostgreSQL, and SQLite's write lock is held, before they are read,
    so that two attempts at once are counted one after the other.
    """
    now = now or utcnow()
    keys = sorted(set(keys))  # one order for every caller: no deadlocks between them
    rows = _lock_rows(session, keys, now)
    states = {key: current(_stored(rows[key]), now) for key in keys}
    waits = [wait for wait in (retry_after(states[key], now) for key in keys) if wait is not None]
    if waits:
        # The caller's transaction rolls back: the placeholder rows go with it.
        raise Blocked(max(waits))
    counted = _count(rows, keys, now)
    session.flush()
    return Attempt(tuple(counted))


def wait_for(session: Session, keys: Sequence[str], now: datetime | None = None) -> float | None:
    """Seconds until every key may try again, or None when all may now (a read only)."""
    now = now or utcnow()
    rows = session.scalars(select(SignInThrottle).where(SignInThrottle.key.in_(set(keys))))
    waits = [w for w in (retry_after(_stored(row), now) for row in rows) if w is not None]
    return max(waits) if waits else None


def failed(session: Session, keys: Sequence[str], now: datetime | None = None) -> None:
    """Count one failed check under every key (in the caller's transaction)."""
    now = now or utcnow()
    keys = sorted(set(keys))
    _count(_lock_rows(session, keys, now), keys, now)
    session.flush()


def succeeded(session: Session, attempt: Attempt, *, clear: Collection[str] = ()) -> None:
    """Take back what ``begin`` counted for an attempt that turned out right.

    Keys in ``clear`` start again from nothing. Every other key gets back the state it
    had before the attempt if nothing was counted under it since; otherwise it only
    loses this attempt's failure, and keeps the wait the others brought on.
    """
    for item in attempt.counted:
        if item.key in clear:
            session.execute(
                delete(SignInThrottle)
                .where(SignInThrottle.key == item.key)
                .execution_options(synchronize_session=False)
            )
            continue
        table = SignInThrottle
        untouched = (
            table.key == item.key,
            table.failures == item.after.failures,
            table.last_failure_at == item.after.last_failure_at,
            table.blocked_until.is_not_distinct_from(item.after.blocked_until),
        )
        if item.before is None:
            restored = session.execute(
                delete(table)
                .where(*untouched)
                .returning(table.key)
                .execution_options(synchronize_session=False)
            ).first()
        else:
            restored = session.execute(
                update(table)
                .where(*untouched)
                .values(
                    failures=item.before.failures,
                    last_failure_at=item.before.last_failure_at,
                    blocked_until=item.before.blocked_until,
                )
                .returning(table.key)
                .execution_options(synchronize_session=False)
            ).first()
        if restored is None:
            session.execute(
                update(table)
                .where(table.key == item.key, table.failures > 0)
                .values(failures=table.failures - 1)
                .execution_options(synchronize_session=False)
            )


def forget(session: Session, key: str) -> None:
    """Start a key again from nothing (an administrator vouched for the account)."""
    session.execute(
        delete(SignInThrottle)
        .where(SignInThrottle.key == key)
        .execution_options(synchronize_session=False)
    )


def prune(session: Session, now: datetime | None = None) -> int:
    """Delete the keys that have been quiet long enough to be forgotten."""
    now = now or utcnow()
    horizon = now - FORGET_AFTER
    result = session.execute(
        delete(SignInThrottle)
        .where(
            SignInThrottle.last_failure_at <= horizon,
            or_(SignInThrottle.blocked_until.is_(None), SignInThrottle.blocked_until <= horizon),
        )
        .returning(SignInThrottle.key)
        .execution_options(synchronize_session=False)
    )
    return len(result.all())
