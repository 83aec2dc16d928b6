"""The service jobs the leading scheduler runs between slots.

Pull sources when their interval has passed, take over the claims of dead workers,
prune old provider events, fold the lists' kept counts, and the hooks of the bounce
and event tracking work: sync the provider's suppression lists, reconcile ``unknown``
deliveries from provider events.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from mailer.bounces.sync import sync_sendgrid
from mailer.briefings import feeds
from mailer.briefings.pull import pull_sources
from mailer.briefings.sources import enabled_sources
from mailer.db.models import Event
from mailer.db.session import transaction
from mailer.dispatch import ledger
from mailer.events.reconcile import reconcile_due
from mailer.events.store import PROVIDER_SOURCES
from mailer.runtime import Runtime
from mailer.schedule.models import Schedule
from subscribers import tallies

log = logging.getLogger(__name__)

# One pull at a time in a process: the interval job and a slot's pull step never store
# the same items at once (only the leader pulls, so one process is all there is).
PULL_LOCK = threading.Lock()
# Sources of no scheduled newsletter are pulled this often.
DEFAULT_PULL_INTERVAL = timedelta(minutes=15)
PRUNE_CHUNK = 5000


def pull_due(runtime: Runtime, now: datetime) -> int:
    """Pull every enabled source whose interval has passed; returns how many were pulled.

    A newsletter's sources follow its schedule's pull interval; a source shared by
    every newsletter follows the shortest interval among enabled schedules.
    """
    with runtime.sessions() as session:
        intervals = {
            newsletter_id: timedelta(minutes=minutes)
            for newsletter_id, minutes in session.execute(
                select(Schedule.newsletter_id, Schedule.pull_interval_minutes).where(
                    Schedule.enabled.is_(True)
                )
            )
        }
        shared = min(intervals.values(), default=DEFAULT_PULL_INTERVAL)
        due = [
            source
            for source in enabled_sources(session)
            if source.last_pulled_at is None
            or now - source.last_pulled_at
            >= (intervals.get(source.newsletter_id, shared) if source.newsletter_id else shared)
        ]
    if not due:
        return 0
    settings = runtime.settings
    with PULL_LOCK, feeds.make_client(feeds.user_agent(settings.base_url)) as client:
        pull_sources(runtime.sessions, due, client, boilerplate=settings.boilerplate_patterns)
    return len(due)


def reap(runtime: Runtime) -> int:
    """Claims of workers that died become ``unknown`` (see ledger.reap)."""
    with transaction(runtime.sessions) as session:
        taken = ledger.reap(session, timedelta(seconds=runtime.settings.claim_timeout_seconds))
    if taken:
        log.warning("ledger.reaped", extra={"deliveries": taken})
    return taken


def prune_events(runtime: Runtime, now: datetime) -> int:
    """Delete provider events older than the retention that the policy has processed
    (suppressions, the ledger's facts and our own records of readers and operators
    stay). In chunks: no giant transaction."""
    cutoff = now - timedelta(days=runtime.settings.event_retention_days)
    total = 0
    while True:
        with transaction(runtime.sessions) as session:
            ids = list(
                session.scalars(
                    select(Event.id)
                    .where(
                        Event.received_at < cutoff,
                        Event.processed_at.is_not(None),
                        Event.source.in_(PROVIDER_SOURCES),
                    )
                    .order_by(Event.id)
                    .limit(PRUNE_CHUNK)
                )
            )
            if ids:
                session.execute(
                    delete(Event)
                    .where(Event.id.in_(ids))
                    .execution_options(synchronize_session=False)
                )
        total += len(ids)
        if len(ids) < PRUNE_CHUNK:
            break
    if total:
        log.info("events.pruned", extra={"events": total, "before": cutoff.isoformat()})
    return total


def fold_tallies(runtime: Runtime) -> None:
    """Fold the lists' differences (one row per membership change) into a row per list,
    so that reading the counts stays cheap however many readers came and went."""
    with transaction(runtime.sessions) as session:
        tallies.fold(session.connection())


def sync_suppressions(runtime: Runtime) -> bool:
    """The provider's bounce, block, spam-report and unsubscribe lists into ours."""
    settings = runtime.settings
    if settings.transport != "sendgrid" or settings.sendgrid_api_key is None:
        log.debug("job.skipped", extra={"job": "sync", "why": "no SendGrid account configured"})
        return False
    sync_sendgrid(runtime)
    return True


def reconcile_unknown(runtime: Runtime) -> bool:
    """Apply pending provider events (which settle ``unknown`` deliveries) and report
    what still waits for an operator."""
    reconcile_due(runtime)
    return True
