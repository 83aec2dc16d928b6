"""Who leads among schedulers: a lease row, on SQLite and PostgreSQL alike.

The leader holds ``scheduler_leases[name]`` until ``expires_at`` and renews it
every ttl/3. A standby tries as often; it takes the row only once it has
expired (a conditional UPDATE, or the INSERT of a missing row, that only one
contender can win), so a leader that dies is replaced within ttl + ttl/3.
A leader that cannot renew stops leading when its own lease runs out, so two
never lead at once (given clocks within well under a ttl of each other, as NTP
keeps them).

Leadership only decides who *looks* for due slots; the unique run row per slot
is what makes a slot run once even during a hand-over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Engine, Table, case, literal, or_, select, update

from mailer.db.base import UTCDateTime, utcnow
from mailer.db.dialect import conflict_insert
from mailer.schedule.models import SchedulerLease

log = logging.getLogger(__name__)

LEASES = cast(Table, SchedulerLease.__table__)
DEFAULT_NAME = "scheduler"

Clock = Callable[[], datetime]


class Lease:
    def __init__(
        self,
        engine: Engine,
        holder: str,
        ttl: timedelta,
        *,
        name: str = DEFAULT_NAME,
        clock: Clock = utcnow,
    ) -> None:
        self.engine, self.holder, self.ttl, self.name, self.clock = (
            engine,
            holder,
            ttl,
            name,
            clock,
        )
        self._until: datetime | None = None  # our lease's end, by our clock
        self._lock = threading.Lock()

    def leading(self) -> bool:
        """We hold an unexpired lease (by our own clock)."""
        with self._lock:
            return self._until is not None and self.clock() < self._until

    def acquire(self) -> bool:
        """Renew our lease, or take it over if it expired. Returns whether we lead."""
        now = self.clock()
        until = now + self.ttl
        was_leading = self.leading()
        try:
            won = self._try(now, until)
        except Exception:
            # The database is unreachable: we lead until our lease runs out, no longer.
            log.exception("scheduler.lease_error", extra={"holder": self.holder})
            return self.leading()
        with self._lock:
            self._until = until if won else None
        if won and not was_leading:
            log.info("scheduler.leading", extra={"holder": self.holder, "lease": self.name})
        elif was_leading and not won:
            log.warning("scheduler.lost_lease", extra={"holder": self.holder, "lease": self.name})
        return won

    def _try(self, now: datetime, until: datetime) -> bool:
        with self.engine.begin() as connection:
            renewed = connection.execute(
                update(LEASES)
                .where(
                    LEASES.c.name == self.name,
                    or_(LEASES.c.holder == self.holder, LEASES.c.expires_at <= now),
                )
                .values(
                    holder=self.holder,
                    expires_at=until,
                    acquired_at=case(
                        (LEASES.c.holder == self.holder, LEASES.c.acquired_at),
                        else_=literal(now, UTCDateTime()),
                    ),
                )
                # RETURNING, not rowcount: psycopg may report -1 for these statements.
                .returning(LEASES.c.name)
            ).first()
            if renewed is not None:
                return True
            insert = conflict_insert(connection.dialect.name)
            created = connection.execute(
                insert(LEASES)
                .values(name=self.name, holder=self.holder, acquired_at=now, expires_at=until)
                .on_conflict_do_nothing(index_elements=["name"])
                .returning(LEASES.c.name)
            ).first()
            return created is not None

    def release(self) -> None:
        """Hand over at once (a clean stop): the lease expires now if it is ours."""
        with self._lock:
            held, self._until = self._until is not None, None
        if not held:
            return
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    update(LEASES)
                    .where(LEASES.c.name == self.name, LEASES.c.holder == self.holder)
                    .values(expires_at=self.clock())
                )
            log.info("scheduler.released", extra={"holder": self.holder, "lease": self.name})
        except Exception:
            log.exception("scheduler.release_failed", extra={"holder": self.holder})


def current(engine: Engine, name: str = DEFAULT_NAME) -> SchedulerLease | None:
    """The lease row as stored (holder and expiry), whoever holds it."""
    with engine.connect() as connection:
        row = connection.execute(select(LEASES).where(LEASES.c.name == name)).first()
    if row is None:
        return None
    return SchedulerLease(
        name=row.name, holder=row.holder, acquired_at=row.acquired_at, expires_at=row.expires_at
    )
