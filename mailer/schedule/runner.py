"""One scheduler tick: claim due slots, run their steps, settle held editions.

Exactly once per (newsletter, slot): the run row (unique per newsletter and slot
date) is inserted in its own transaction *before* anything is pulled, composed or
sent; whoever fails to insert it leaves the slot alone. Every step after that is
idempotent (compose finds the edition of that date, starting a send twice fills
nothing twice), so a run interrupted by a crash is simply resumed by the next
tick, and two schedulers meeting on one run during a lease hand-over still make
one edition and one send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.app import audit
from mailer.app.actors import Actor
from mailer.briefings import feeds
from mailer.briefings.pull import pull_sources
from mailer.db.base import utcnow
from mailer.db.models import Edition, EditionStatus, Newsletter, Source, SourceKind
from mailer.db.session import transaction
from mailer.dispatch import dispatcher
from mailer.dispatch.dispatcher import DispatchError
from mailer.editions import checks, states
from mailer.editions.compose import checkable, compose_edition
from mailer.editions.titles import TitleTemplateError
from mailer.rendering.render import RenderError
from mailer.runtime import Runtime
from mailer.schedule import jobs, waves
from mailer.schedule.models import RunState, Schedule, ScheduleRun
from mailer.schedule.planner import LOOKBACK, duration, plan
from mailer.schedule.slots import Rule, ScheduleError, Slot
from subscribers.segments import SegmentRuleError

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# A run that fails with one of these is recorded as failed, with the message: an
# operator has to fix a template or segment. Anything else (the database going away)
# leaves the run due, and the next tick resumes it.
DOMAIN_ERRORS = (RenderError, TitleTemplateError, SegmentRuleError, DispatchError, ScheduleError)
STARTED = states.STARTED
# Local-time delivery: the audience's timezones are looked up at most this often.
ZONES_TTL = timedelta(minutes=10)


class ApprovalError(RuntimeError):
    """A held edition cannot be approved (not held, or its deadline passed)."""


@dataclass
class TickReport:
    """What one tick did, as (newsletter id, slot date, new state), and which editions
    it started at the one-off time an editor set (``Edition.scheduled_for``)."""

    changes: list[tuple[int, date, str]] = field(default_factory=list)
    started: list[int] = field(default_factory=list)

    def states(self) -> list[str]:
        return [state for _, _, state in self.changes]


class Runner:
    def __init__(
        self,
        runtime: Runtime,
        *,
        holder: str,
        clock: Clock = utcnow,
        grace: timedelta | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.runtime, self.sessions, self.holder, self.clock = (
            runtime,
            runtime.sessions,
            holder,
            clock,
        )
        self.grace = (
            grace if grace is not None else timedelta(hours=runtime.settings.scheduler_grace_hours)
        )
        self.stopping = stopping
        self._zones: dict[int, tuple[datetime, tuple[ZoneInfo, ...]]] = {}

    # -- the tick -------------------------------------------------------------------

    def tick(self) -> TickReport:
        """Claim what is due now, record what was missed, move open runs on."""
        report = TickReport()
        with self.sessions() as session:
            scheduled = list(
                session.scalars(
                    select(Schedule.newsletter_id)
                    .where(Schedule.enabled.is_(True))
                    .order_by(Schedule.newsletter_id)
                )
            )
        for newsletter_id in scheduled:
            if self.stopping():
                return report
            try:
                self._plan(newsletter_id, report)
            except ScheduleError as exc:
                log.error(
                    "schedule.invalid", extra={"newsletter_id": newsletter_id, "error": str(exc)}
                )
            except Exception:
                # One newsletter's trouble must not keep the others from their slots.
                log.exception("schedule.plan_failed", extra={"newsletter_id": newsletter_id})
        with self.sessions() as session:
            open_runs = list(
                session.scalars(
                    select(ScheduleRun.id)
                    .where(ScheduleRun.state.in_((RunState.DUE, RunState.HELD)))
                    .order_by(ScheduleRun.slot_at)
                )
            )
        for run_id in open_runs:
            if self.stopping():
                break
            try:
                self._advance(run_id, report)
            except Exception:
                # Left as it is for the next tick (a database hiccup clears; a lasting
                # fault ends as `missed` after the grace), and the other runs go on.
                log.exception("schedule.run_failed", extra={"run_id": run_id})
        self._start_scheduled(report)
        return report

    # -- one-off send times ---------------------------------------------------------

    def _start_scheduled(self, report: TickReport) -> None:
        """Start the ready editions whose ``scheduled_for`` has come. Exactly once: each
        is started under its row lock and leaves ``ready`` (dispatcher.start is
        idempotent too), so a second tick or a second scheduler finds nothing to do."""
        now = self.clock()
        with self.sessions() as session:
            due = list(
                session.scalars(
                    select(Edition.id)
                    .where(
                        Edition.scheduled_for.is_not(None),
                        Edition.scheduled_for <= now,
                        Edition.status == EditionStatus.READY,
                    )
                    .order_by(Edition.scheduled_for, Edition.id)
                )
            )
        for edition_id in due:
            if self.stopping():
                return
            try:
                self._start_one(edition_id, report)
            except Exception:
                # Left ready and scheduled: the next tick tries again.
                log.exception("schedule.scheduled_start_failed", extra={"edition_id": edition_id})

    def _start_one(self, edition_id: int, report: TickReport) -> None:
        now = self.clock()
        actor = Actor.system()
        with transaction(self.sessions) as session:
            # The holding run first, then the edition: the order every approval takes.
            run_id = session.scalar(
                select(ScheduleRun.id)
                .where(ScheduleRun.edition_id == edition_id, ScheduleRun.state == RunState.HELD)
                .limit(1)
            )
            run = self._take(session, run_id, (RunState.HELD,)) if run_id is not None else None
            edition = session.get(Edition, edition_id, with_for_update=True, populate_existing=True)
            if (
                edition is None
                or edition.status != EditionStatus.READY
                or edition.scheduled_for is None
                or edition.scheduled_for > now
            ):
                return  # started, cancelled or rescheduled meanwhile
            at = edition.scheduled_for.isoformat(timespec="minutes")
            rendition = checkable(edition)
            refusals = (
                [c.message for c in checks.evaluate(rendition) if c.level == "refuse"]
                if rendition is not None
                else ["it is not rendered"]
            )
            queued = 0
            if not refusals:
                try:
                    # A savepoint: a start that fails half-way leaves nothing behind.
                    with session.begin_nested():
                        if run is not None:
                            approve(session, run, now)
                            self._log(run)
                            report.changes.append((run.newsletter_id, run.slot_date, run.state))
                        else:
                            queued = dispatcher.start(session, edition)
                except (ApprovalError, *DOMAIN_ERRORS) as exc:
                    refusals = [str(exc)]
            if refusals:
                # Not sent, and not tried again at every tick: an editor looks, fixes
                # and schedules it anew.
                why = f"the send scheduled for {at} did not start: {'; '.join(refusals)}"
                edition.scheduled_for = None
                states.move(edition, EditionStatus.READY, why)
                audit.record(
                    session,
                    actor,
                    "edition.scheduled_send_refused",
                    "edition",
                    edition.id,
                    before={"scheduled_for": at},
                    after={"scheduled_for": None},
                    note=why,
                )
                log.error(
                    "edition.scheduled_send_refused",
                    extra={"edition_id": edition.id, "reason": why},
                )
                return
            audit.record(
                session,
                actor,
                "edition.start",
                "edition",
                edition.id,
                before={"status": EditionStatus.READY},
                after={"status": edition.status, "queued": queued},
                note=f"scheduled for {at}",
            )
            log.info(
                "edition.scheduled_start",
                extra={"edition_id": edition.id, "scheduled_for": at, "queued": queued},
            )
            report.started.append(edition.id)

    def _plan(self, newsletter_id: int, report: TickReport) -> None:
        now = self.clock()
        with self.sessions() as session:
            schedule = session.get(Schedule, newsletter_id)
            if schedule is None or not schedule.enabled:
                return
            rule = Rule.parse(schedule.slot, schedule.timezone, schedule.weekdays)
            zones = self._audience_zones(session, schedule, now)
            since = max(schedule.effective_from, now - LOOKBACK)
            taken = set(
                session.scalars(
                    select(ScheduleRun.slot_date).where(
                        ScheduleRun.newsletter_id == newsletter_id,
                        ScheduleRun.slot_date >= since.date() - timedelta(days=3),
                    )
                )
            )
            effective_from = schedule.effective_from
        decided = plan(
            rule,
            now=now,
            effective_from=effective_from,
            taken=taken,
            grace=self.grace,
            zones=zones,
        )
        for slot, why in decided.missed:
            if self._insert(newsletter_id, slot, RunState.MISSED, why, now):
                log.warning(
                    "schedule.missed",
                    extra={
                        "newsletter_id": newsletter_id,
                        "slot_date": slot.day.isoformat(),
                        "slot_at": slot.at.isoformat(),
                        "reason": why,
                    },
                )
                report.changes.append((newsletter_id, slot.day, RunState.MISSED))
        if decided.run is not None and self._insert(
            newsletter_id, decided.run, RunState.DUE, None, now
        ):
            log.info(
                "schedule.claimed",
                extra={
                    "newsletter_id": newsletter_id,
                    "slot_date": decided.run.day.isoformat(),
                    "slot_at": decided.run.at.isoformat(),
                    "late_seconds": round((now - decided.run.at).total_seconds()),
                    "holder": self.holder,
                },
            )
            report.changes.append((newsletter_id, decided.run.day, RunState.DUE))

    def _audience_zones(
        self, session: Session, schedule: Schedule, now: datetime
    ) -> tuple[ZoneInfo, ...]:
        if not schedule.local_time_delivery:
            return ()
        cached = self._zones.get(schedule.newsletter_id)
        if cached is not None and abs(now - cached[0]) < ZONES_TTL:
            return cached[1]
        zones = waves.audience_zones(session, schedule.newsletter)
        self._zones[schedule.newsletter_id] = (now, zones)
        return zones

    def _insert(
        self, newsletter_id: int, slot: Slot, state: RunState, reason: str | None, now: datetime
    ) -> bool:
        """The exactly-once claim: True if this call created the slot's run row."""
        try:
            with transaction(self.sessions) as session:
                session.add(
                    ScheduleRun(
                        newsletter_id=newsletter_id,
                        slot_date=slot.day,
                        slot_at=slot.at,
                        state=state,
                        reason=reason,
                        claimed_by=self.holder,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            return False  # someone else (a second scheduler, an earlier tick) has it
        return True

    # -- open runs ------------------------------------------------------------------

    def _advance(self, run_id: int, report: TickReport) -> None:
        with self.sessions() as session:
            run = session.get(ScheduleRun, run_id)
            state = run.state if run is not None else None
        try:
            if state == RunState.DUE:
                self._execute(run_id, report)
            elif state == RunState.HELD:
                self._settle_held(run_id, report)
        except DOMAIN_ERRORS as exc:
            self._fail(run_id, str(exc), report)

    def _execute(self, run_id: int, report: TickReport) -> None:
        now = self.clock()
        with self.sessions() as session:
            run = session.get(ScheduleRun, run_id)
            schedule = session.get(Schedule, run.newsletter_id) if run is not None else None
            if run is None or run.state != RunState.DUE:
                return
            steps = schedule.step_list if schedule is not None else ()
            late = now - run.slot_at
            started = run.edition is not None and run.edition.status in STARTED
        if schedule is None:
            self._finish(
                run_id, RunState.SKIPPED, "the newsletter has no schedule any more", report
            )
            return
        if late > self.grace and not started:
            why = (
                f"interrupted, and not resumed within the {duration(self.grace)} grace "
                f"(now {duration(late)} late): not sent"
            )
            self._finish(run_id, RunState.MISSED, why, report)
            return
        if "pull" in steps and not started:
            self._pull_for(schedule.newsletter_id)
        with transaction(self.sessions) as session:
            run = self._take(session, run_id, (RunState.DUE,))
            if run is None:
                return  # another scheduler finished it meanwhile
            schedule = session.get(Schedule, run.newsletter_id)
            assert schedule is not None
            self._compose_and_go(session, run, schedule, now)
            run.updated_at = now
            self._log(run)
            report.changes.append((run.newsletter_id, run.slot_date, run.state))

    def _compose_and_go(
        self, session: Session, run: ScheduleRun, schedule: Schedule, now: datetime
    ) -> None:
        newsletter = session.get(Newsletter, run.newsletter_id)
        assert newsletter is not None
        composed = compose_edition(
            session,
            newsletter,
            edition_date=run.slot_date,
            now=now,
            templates_dir=self.runtime.settings.templates_dir,
        )
        edition = composed.edition
        session.flush()
        run.edition_id = edition.id
        if composed.skipped:
            run.state, run.reason = RunState.SKIPPED, edition.status_reason
        elif edition.status in STARTED:
            run.state, run.reason = RunState.SENT, f"edition {edition.id} was already started"
        elif edition.status == EditionStatus.CANCELLED:
            run.state = RunState.SKIPPED
            run.reason = edition.status_reason or f"edition {edition.id} was cancelled"
        elif edition.scheduled_for is not None and edition.scheduled_for > now:
            # An editor set the edition's own time: it goes then (``_start_scheduled``).
            run.state = RunState.COMPOSED
            run.reason = (
                f"edition {edition.id} is scheduled for "
                f"{edition.scheduled_for.isoformat(timespec='minutes')}"
            )
        # An editor who approved the edition before its slot has given the go already.
        elif schedule.requires_approval and run.approved_at is None and edition.approved_at is None:
            run.deadline_at = run.slot_at + timedelta(minutes=schedule.approval_deadline_minutes)
            run.state = RunState.HELD
            run.reason = (
                f"edition {edition.id} waits for an editor's approval until "
                f"{run.deadline_at.isoformat(timespec='minutes')}"
            )
        elif "send" not in schedule.step_list:
            run.state = RunState.COMPOSED
            run.reason = f"edition {edition.id} composed; this schedule's steps do not send"
        else:
            start_send(session, run, schedule)

    def _settle_held(self, run_id: int, report: TickReport) -> None:
        now = self.clock()
        with transaction(self.sessions) as session:
            run = self._take(session, run_id, (RunState.HELD,))
            if run is None:
                return
            # Locked and re-read: an editor starting the send at the deadline must not
            # have it cancelled under them by a stale read.
            edition = (
                session.get(Edition, run.edition_id, with_for_update=True, populate_existing=True)
                if run.edition_id
                else None
            )
            schedule = session.get(Schedule, run.newsletter_id)
            if edition is None:
                run.state, run.reason = RunState.SKIPPED, "its edition was deleted"
            elif edition.status in STARTED:
                run.state, run.reason = RunState.SENT, f"edition {edition.id} started by an editor"
            elif edition.status == EditionStatus.CANCELLED:
                run.state = RunState.SKIPPED
                run.reason = edition.status_reason or f"edition {edition.id} was cancelled"
            elif run.approved_at is not None and schedule is not None:
                start_send(session, run, schedule)
            elif run.deadline_at is not None and now >= run.deadline_at:
                why = (
                    "not approved by its deadline "
                    f"({run.deadline_at.isoformat(timespec='minutes')}): skipped"
                )
                dispatcher.cancel(session, edition, why)
                run.state, run.reason = RunState.SKIPPED, why
            else:
                return
            run.updated_at = now
            self._log(run)
            report.changes.append((run.newsletter_id, run.slot_date, run.state))

    def _finish(self, run_id: int, state: RunState, reason: str, report: TickReport) -> None:
        now = self.clock()
        with transaction(self.sessions) as session:
            run = self._take(session, run_id, (RunState.DUE, RunState.HELD))
            if run is None:
                return
            run.state, run.reason, run.updated_at = state, reason, now
            self._log(run)
            report.changes.append((run.newsletter_id, run.slot_date, run.state))

    def _take(
        self, session: Session, run_id: int, states: tuple[RunState, ...]
    ) -> ScheduleRun | None:
        """The run, if still in one of ``states``, held by this transaction: a write first,
        so that it is a row lock on PostgreSQL and the write lock on SQLite, and whoever
        comes second sees what the first one did."""
        taken = session.execute(
            update(ScheduleRun)
            .where(ScheduleRun.id == run_id, ScheduleRun.state.in_(states))
            .values(claimed_by=self.holder)
            .returning(ScheduleRun.id)
            .execution_options(synchronize_session=False)
        ).first()
        if taken is None:
            return None
        return session.get(ScheduleRun, run_id, populate_existing=True)

    def _fail(self, run_id: int, reason: str, report: TickReport) -> None:
        self._finish(run_id, RunState.FAILED, reason, report)

    def _log(self, run: ScheduleRun) -> None:
        level = logging.ERROR if run.state == RunState.FAILED else logging.INFO
        log.log(
            level,
            f"schedule.{run.state}",
            extra={
                "newsletter_id": run.newsletter_id,
                "slot_date": run.slot_date.isoformat(),
                "edition_id": run.edition_id,
                "reason": run.reason,
            },
        )

    def _pull_for(self, newsletter_id: int) -> None:
        """The newsletter's own sources and the shared ones. A failure is recorded against
        its source; the edition is composed from what is there."""
        with self.sessions() as session:
            sources = list(
                session.scalars(
                    select(Source)
                    .where(
                        Source.enabled.is_(True),
                        Source.kind != SourceKind.API,
                        or_(Source.newsletter_id == newsletter_id, Source.newsletter_id.is_(None)),
                    )
                    .order_by(Source.id)
                )
            )
        if not sources:
            return
        settings = self.runtime.settings
        try:
            with jobs.PULL_LOCK, feeds.make_client(feeds.user_agent(settings.base_url)) as client:
                pull_sources(
                    self.sessions, sources, client, boilerplate=settings.boilerplate_patterns
                )
        except Exception:
            log.exception("schedule.pull_failed", extra={"newsletter_id": newsletter_id})


def start_send(session: Session, run: ScheduleRun, schedule: Schedule) -> None:
    """Fill the ledger and hand the run's edition to the workers (in waves for local-time
    delivery). The caller holds the run row and commits."""
    assert run.edition_id is not None
    session.flush()
    # Locked like dispatcher._send: an editor's change and the start cannot interleave.
    edition = session.get(Edition, run.edition_id, with_for_update=True, populate_existing=True)
    assert edition is not None
    queued = dispatcher.start(session, edition)
    detail = f"edition {edition.id} handed to the workers: {queued} deliveries queued"
    if schedule.local_time_delivery and edition.status == EditionStatus.SENDING:
        rule = Rule.parse(schedule.slot, schedule.timezone, schedule.weekdays)
        released = waves.assign(session, edition.id, run.slot_date, rule.at, rule.zone)
        detail += f", in {len(released)} local-time wave(s)"
    run.state, run.reason = RunState.SENT, detail


def approve(session: Session, run: ScheduleRun, now: datetime) -> None:
    """An editor's go for a held edition: it starts at once. The caller commits."""
    if run.state != RunState.HELD:
        raise ApprovalError(
            f"the {run.slot_date.isoformat()} run is {run.state}, not held for approval"
        )
    if run.deadline_at is not None and now >= run.deadline_at:
        raise ApprovalError(
            f"the approval deadline passed at {run.deadline_at.isoformat(timespec='minutes')}; "
            "the edition is skipped"
        )
    schedule = session.get(Schedule, run.newsletter_id)
    if schedule is None:
        raise ApprovalError("the newsletter has no schedule any more")
    run.approved_at = now
    start_send(session, run, schedule)
    run.updated_at = now
