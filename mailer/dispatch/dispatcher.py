"""Send an edition: fill the ledger, then claim, hand over and record, batch by batch.

Every step commits before the next begins, so a process killed anywhere
resumes from the ledger (Invariant 4): queued rows are still queued, and once
its claim is taken over the rows of its posted batches become ``unknown`` and those
of batches it never posted are queued again.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import queue
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import NamedTuple

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from mailer.db.base import utcnow
from mailer.db.models import (
    Briefing,
    BriefingStatus,
    DeliveryStatus,
    Edition,
    EditionBriefing,
    EditionStatus,
)
from mailer.db.session import one_writer, transaction
from mailer.dispatch import ledger, liveness
from mailer.dispatch.senders import (
    START_TIMEOUT,
    BatchTakenOver,
    SenderProcess,
    Senders,
    SenderThreads,
    SenderUnavailable,
)
from mailer.editions import states
from mailer.links import UnsubscribeLinks
from mailer.transports.base import (
    Envelope,
    Outcome,
    Result,
    Transport,
    TransportUnauthorized,
)

log = logging.getLogger(__name__)

ProgressCallback = Callable[[dict[str, int]], None]


class DispatchError(RuntimeError):
    """The edition cannot be sent as asked."""


@dataclass(frozen=True)
class DispatchSettings:
    base_url: str
    secret_key: bytes
    batch_size: int = ledger.MAX_BATCH
    claim_timeout: timedelta = timedelta(seconds=60)
    throttle_per_second: float = 0.0
    # Sign, build and post in a child process (``senders.SenderProcess``), so that
    # sending and claiming use two cores; the transport must pickle (built-in ones do).
    sender_process: bool = False


class Throttle:
    """Keeps one process at or under ``rate`` messages per second (0: no limit)."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate, self.clock, self.sleep = rate, clock, sleep
        self.started = clock()
        self.handed = 0

    def wait_for(self, count: int) -> None:
        if self.rate <= 0:
            return
        # The batch may go once everything before it fits within the rate.
        due = self.started + self.handed / self.rate
        delay = due - self.clock()
        if delay > 0:
            self.sleep(delay)
        self.handed += count


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _move(edition: Edition, new: EditionStatus, reason: str | None, refusal: str) -> None:
    try:
        states.move(edition, new, reason)
    except states.TransitionError as exc:
        raise DispatchError(refusal) from exc


def start(session: Session, edition: Edition) -> int:
    """Move a rendered edition into ``sending`` and fill its ledger. Idempotent."""
    if edition.status in (EditionStatus.SENT, EditionStatus.CANCELLED):
        return 0
    if edition.status == EditionStatus.SKIPPED:
        why = edition.status_reason or "skipped"
        raise DispatchError(f"edition {edition.id} was skipped ({why}): there is nothing to send")
    if edition.status == EditionStatus.DRAFT or edition.html is None or edition.text is None:
        raise DispatchError(f"edition {edition.id} has not been rendered yet")
    added = 0
    if edition.status == EditionStatus.READY:
        added = ledger.fill(session, edition)
        _move(edition, EditionStatus.SENDING, None, f"edition {edition.id} cannot start")
        edition.send_started_at = utcnow()
        # Sent copies are immutable from here on: later source edits become corrections.
        session.execute(
            update(Briefing)
            .where(
                Briefing.id.in_(
                    select(EditionBriefing.briefing_id).where(
                        EditionBriefing.edition_id == edition.id
                    )
                )
            )
            .values(status=BriefingStatus.SENT)
        )
        log.info("edition.started", extra={"edition_id": edition.id, "queued": added})
    return added


def envelope_for(edition: Edition) -> Envelope:
    newsletter = edition.newsletter
    assert edition.html is not None and edition.text is not None and edition.token_nonce
    return Envelope(
        edition_id=edition.id,
        newsletter_slug=newsletter.slug,
        from_name=newsletter.from_name,
        from_email=newsletter.from_email,
        reply_to=newsletter.reply_to,
        subject=edition.subject,
        html=edition.html,
        text=edition.text,
        nonce=edition.token_nonce,
        newsletter_name=newsletter.name,
        language=newsletter.language,
    )


def send_edition(
    factory: sessionmaker[Session],
    edition_id: int,
    transport: Transport,
    settings: DispatchSettings,
    *,
    worker: str | None = None,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, int]:
    """Drain the edition's ledger through ``transport``; return counts by status.

    Safe to run again at any time: it resumes where the last run stopped and
    never mails a (edition, subscriber) pair twice.
    """
    worker = worker or worker_name()
    engine = factory.kw["bind"]
    with liveness.Liveness(engine, worker):
        return _send(factory, edition_id, transport, settings, worker, on_progress, should_stop)


def _send(
    factory: sessionmaker[Session],
    edition_id: int,
    transport: Transport,
    settings: DispatchSettings,
    worker: str,
    on_progress: ProgressCallback | None,
    should_stop: Callable[[], bool] | None,
) -> dict[str, int]:
    with transaction(factory) as session:
        # Locked: an editor's change and the start of sending cannot interleave.
        edition = _load(session, edition_id, lock=True)
        start(session, edition)
        ledger.reap(session, settings.claim_timeout)
        envelope = envelope_for(edition) if edition.status == EditionStatus.SENDING else None
        list_ids = [mailing_list.id for mailing_list in edition.newsletter.lists]

    progress = _Progress(factory, edition_id, on_progress)
    progress.report(force=True)
    if envelope is not None:
        # One connection for the whole hot path (claims and records), without the ORM.
        with _interpreter_for_sends(), ledger.claiming(factory.kw["bind"]) as connection:
            pipeline = _Pipeline(connection, edition_id, envelope, transport, settings, progress)
            with pipeline:
                _claim_and_hand_over(
                    connection,
                    edition_id,
                    list_ids,
                    worker,
                    transport,
                    settings,
                    pipeline,
                    should_stop,
                )

    with transaction(factory) as session:
        edition = _load(session, edition_id)
        tally = ledger.counts(session, edition_id)
        unfinished = tally[DeliveryStatus.QUEUED] + tally[DeliveryStatus.SENDING]
        if edition.status == EditionStatus.SENDING and unfinished == 0:
            states.move(edition, EditionStatus.SENT)
            edition.sent_at = utcnow()
            log.info("edition.sent", extra={"edition_id": edition_id, **tally})
    progress.report(force=True)
    return tally


def _claim_and_hand_over(
    connection: Connection,
    edition_id: int,
    list_ids: list[int],
    worker: str,
    transport: Transport,
    settings: DispatchSettings,
    pipeline: _Pipeline,
    should_stop: Callable[[], bool] | None,
) -> None:
    throttle = Throttle(settings.throttle_per_second)
    after_id = 0
    while True:
        if should_stop is not None and should_stop():
            break  # asked to stop (SIGTERM): nothing more claimed, what is in flight finishes
        # Claimed batches are handed over at once: none waits, claimed, in memory
        # (a throttled sender claims one batch at a time, when it may go).
        batches = 1 if settings.throttle_per_second > 0 else pipeline.claim_depth
        pipeline.make_room(batches)
        if pipeline.halted:
            break  # the transport is down or refused our credentials
        throttle.wait_for(0)
        with one_writer(connection.engine), connection.begin():
            status, claimed = ledger.lock_and_claim(
                connection,
                edition_id,
                list_ids,
                worker,
                transport.name,
                settings.batch_size,
                after_id=after_id,
                batches=batches,
            )
        if status != EditionStatus.SENDING:
            break  # paused or cancelled by an operator
        if claimed is None:
            # Rows handed over may come back queued (a temporary refusal): settle them,
            # then one more pass from the start for anything queued behind us.
            pipeline.settle_all()
            if after_id == 0:
                break
            after_id = 0
            continue
        after_id = claimed.last_id
        for batch in claimed.batches:
            throttle.wait_for(len(batch.deliveries))
            pipeline.hand_over(batch)
        pipeline.progress.report()


# The threads that wait on the database (the claimer, the recorder) take the GIL back
# after every round trip, and the senders building bodies hold it for a whole switch
# interval (5 ms by default) at a time: on PostgreSQL a claim's half-dozen round trips
# spent longer waiting for the GIL than in the database. At 0.5 ms, 1,000,000
# recipients went out 8 % faster (18.75 s against 20.27 s, median of 3 each).
_SEND_SWITCH_INTERVAL = 0.0005
# A send makes a few objects per recipient that live while their batch is in flight.
# At the default threshold (700) the collector ran thousands of times per million
# recipients, and every run that reached the oldest generation walked every object
# the process held: 15 % of a send's CPU. Raising the threshold tenfold instead let
# the cycles each HTTP exchange leaves (httpx's response and its request, holding the
# 300 KB body) outlive many batches: 70 MB more at the peak. So the heap that predates
# the send is frozen (collections no longer walk it), and the threshold is raised
# only a little: as fast, and the peak stays near 110 MB at 300,000 recipients.
_SEND_GC_THRESHOLD = 2_000
_tuning_lock = threading.Lock()
_sends = 0
_gc_default = gc.get_threshold()
_switch_default = sys.getswitchinterval()


@contextmanager
def _interpreter_for_sends() -> Iterator[None]:
    """While any send runs here: the older heap frozen, the collector run a little less
    often, and the GIL handed over sooner."""
    global _sends, _gc_default, _switch_default
    with _tuning_lock:
        if _sends == 0:
            _gc_default = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(max(_SEND_GC_THRESHOLD, _gc_default[0]), *_gc_default[1:])
            _switch_default = sys.getswitchinterval()
            sys.setswitchinterval(min(_SEND_SWITCH_INTERVAL, _switch_default))
        _sends += 1
    try:
        yield
    finally:
        with _tuning_lock:
            _sends -= 1
            if _sends == 0:
                sys.setswitchinterval(_switch_default)
                gc.set_threshold(*_gc_default)
                gc.unfreeze()


class _Progress:
    """Counts by state for a progress display, read from the ledger at most every second
    (a count over a million-row ledger per batch would cost more than the batch)."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        edition_id: int,
        callback: ProgressCallback | None,
        interval: float = 1.0,
    ) -> None:
        self.factory, self.edition_id, self.callback = factory, edition_id, callback
        self.interval = interval
        self.last = -interval

    def report(self, *, force: bool = False) -> None:
        if self.callback is None:
            return
        now = time.monotonic()
        if force or now - self.last >= self.interval:
            self.last = now
            with self.factory() as session:
                self.callback(ledger.counts(session, self.edition_id))


class _Pipeline:
    """Batches in flight, several at once (``_pace``), so that claiming the next batch,
    the provider's work on this one and recording the last overlap.

    The calling thread claims; senders (threads here, or a process of their own) sign
    the recipients' links and talk to the transport; a recorder writes outcomes on its
    own connection (on PostgreSQL, so that marking one batch overlaps claiming the
    next; on SQLite, with one writer at a time, the calling thread records them itself).
    """

    def __init__(
        self,
        connection: Connection,
        edition_id: int,
        envelope: Envelope,
        transport: Transport,
        settings: DispatchSettings,
        progress: _Progress,
    ) -> None:
        self.connection, self.edition_id = connection, edition_id
        self.envelope, self.transport, self.progress = envelope, transport, progress
        self.settings = settings
        self._pace(in_a_process=settings.sender_process)
        # Started with the first batch: a pass that finds nothing to claim starts none.
        self.senders: Senders | None = None
        self.in_flight: dict[Future[list[Result]], ledger.ClaimedBatch] = {}
        self.halted = False  # stop claiming: the transport is down or unauthorized
        self.crash: BaseException | None = None
        engine = connection.engine
        self.recorder = (
            _Recorder(engine, edition_id) if engine.dialect.name == "postgresql" else None
        )

    def __enter__(self) -> _Pipeline:
        return self

    def _pace(self, *, in_a_process: bool) -> None:
        """How many batches may be in flight, and how many one claim takes."""
        concurrency = max(1, self.transport.concurrency)
        if in_a_process:
            # A sender process answers later than threads do (the pipe, and its own
            # interpreter lock between reading the pipe and building a body): three
            # times as many batches in flight keep it busy (12 against 4 in flight:
            # 2.76 s against 3.56 s for 300,000 on SQLite). The extra ones wait in its
            # queue for a sender thread, not here. SQLite claims a turn's worth at a
            # time (2.89 s against 3.03 s with half that); on PostgreSQL a claim of
            # twice as many rows held the lock so long that the senders ran dry
            # (68,300/s against 75,300/s).
            self.depth = concurrency * 3
            postgres = self.connection.dialect.name == "postgresql"
            self.claim_depth = max(1, concurrency // 2) if postgres else concurrency
        else:
            # Batches per claim: half of those in flight, so that a claim's round trips
            # are shared while the other half is in flight.
            self.depth, self.claim_depth = concurrency, max(1, concurrency // 2)

    def __exit__(self, *exc_info: object) -> None:
        # Whatever happens, what went out is recorded before we leave.
        settled = False
        try:
            self.settle_all()
            settled = True
        finally:
            if self.senders is not None:
                # Unsettled (the recorder failed, say): batches not yet begun stay
                # unsent rather than go out with nobody to record them.
                self.senders.close(cancel=not settled)
                if isinstance(self.senders, SenderProcess):
                    log.info(
                        "sender_process.stopped",
                        extra={
                            "edition_id": self.edition_id,
                            "peak_rss_mb": round(self.senders.peak_rss_kb / 1024, 1),
                        },
                    )
            if self.recorder is not None:
                self.recorder.close()
        if self.crash is not None and exc_info[0] is None:
            raise self.crash

    def hand_over(self, batch: ledger.ClaimedBatch) -> None:
        self.in_flight[self._senders().submit(batch.deliveries, batch.batch_id)] = batch

    def _senders(self) -> Senders:
        if self.senders is None:
            settings = self.settings
            links = UnsubscribeLinks(settings.base_url, settings.secret_key)
            # Each batch is marked posted, on a connection of its own, just before it
            # goes: a crash then leaves unknown only what may have reached the wire.
            engine = self.connection.engine
            gate = functools.partial(ledger.mark_posted, engine)
            if settings.sender_process:
                try:
                    # Well within the claim timeout: the batch just claimed waits.
                    timeout = min(START_TIMEOUT, settings.claim_timeout.total_seconds() / 2)
                    self.senders = SenderProcess(
                        self.transport,
                        self.envelope,
                        settings.base_url,
                        settings.secret_key,
                        gate=gate,
                        start_timeout=timeout,
                    )
                except SenderUnavailable as exc:
                    # Slower, not stopped: threads here send the same mail.
                    log.warning(
                        "sender_process.unavailable",
                        extra={"edition_id": self.edition_id, "error": str(exc)},
                    )
                    self._pace(in_a_process=False)
            if self.senders is None:
                self.senders = SenderThreads(self.transport, self.envelope, links, gate)
        return self.senders

    def make_room(self, batches: int) -> None:
        while self.in_flight and len(self.in_flight) > self.depth - batches:
            self._settle()

    def settle_all(self) -> None:
        # Each batch is recorded as soon as it is answered, not when the slowest is.
        while self.in_flight:
            self._settle()
        if self.recorder is not None:
            self.recorder.flush()

    def _settle(self) -> None:
        done, _ = wait(self.in_flight, return_when=FIRST_COMPLETED)
        finished: list[_Answered] = []
        for future in done:
            batch = self.in_flight.pop(future)
            batch_id, _, whole = batch
            ids = batch.delivery_ids
            try:
                finished.append(_Answered(batch_id, ids, future.result(), whole))
            except TransportUnauthorized as exc:
                _pause_for(self.connection, self.edition_id, batch_id, ids, str(exc))
                self.halted = True
            except BatchTakenOver as exc:
                # Another worker took the claim over (this one was thought dead): its
                # rows are queued again and theirs. Nothing to record; stop this run
                # rather than claim beside the worker that replaced it.
                log.warning(
                    "batch.taken_over",
                    extra={"edition_id": self.edition_id, "batch_id": batch_id, "error": str(exc)},
                )
                self.halted = True
            except SenderUnavailable as exc:
                # Nothing of it went out: queued again, for this send's next run.
                retry = [Result(i, Outcome.RETRY, error=str(exc), transport_down=True) for i in ids]
                finished.append(_Answered(batch_id, ids, retry, whole))
            except Exception as exc:
                # A bug or an unforeseen error: the batch may have gone out, so its rows
                # are `unknown` now (an open batch would hold them until this process
                # ends); the others are still recorded, and the error is raised.
                log.exception(
                    "batch.handover_failed",
                    extra={"edition_id": self.edition_id, "batch_id": batch_id},
                )
                error = f"hand-over failed: {type(exc).__name__}: {exc}"
                unknown = [Result(i, Outcome.UNKNOWN, error=error) for i in ids]
                finished.append(_Answered(batch_id, ids, unknown, whole))
                self.crash = self.crash or exc
                self.halted = True
        for _batch_id, _ids, results, _whole in finished:
            if results and all(r.transport_down for r in results):
                # Nothing went out: the transport is down, not the recipients. Stop
                # rather than burn every row's attempts in a tight loop; rerun later.
                log.warning(
                    "edition.transport_unavailable",
                    extra={"edition_id": self.edition_id, "error": results[0].error},
                )
                self.halted = True
        if self.recorder is not None:
            for answered in finished:
                self.recorder.put(answered)
            if self.recorder.error is not None:
                self.crash, self.halted = self.crash or self.recorder.error, True
        elif finished:
            _record(self.connection, self.edition_id, finished)


class _Answered(NamedTuple):
    """A batch the transport has answered for, waiting to be recorded."""

    batch_id: int
    delivery_ids: list[int]
    results: list[Result]
    whole: bool


def _record(connection: Connection, edition_id: int, finished: list[_Answered]) -> None:
    """Record finished batches in one transaction (a group commit)."""
    with one_writer(connection.engine), connection.begin():
        tallies = [
            ledger.record(connection, batch_id, ids, results, whole=whole)
            for batch_id, ids, results, whole in finished
        ]
    for (batch_id, *_), outcomes in zip(finished, tallies, strict=True):
        log.info(
            "batch.recorded",
            extra={
                "edition_id": edition_id,
                "batch_id": batch_id,
                **{k.value: v for k, v in outcomes.items() if v},
            },
        )


class _Recorder:
    """Writes finished batches' outcomes from a thread of its own, on its own connection,
    committing whatever has finished since its last commit together."""

    def __init__(self, engine: Engine, edition_id: int) -> None:
        self.engine, self.edition_id = engine, edition_id
        self.queue: queue.Queue[_Answered | None] = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self.thread.start()

    def put(self, answered: _Answered) -> None:
        self.queue.put(answered)

    def flush(self) -> None:
        """Wait until everything handed to the recorder is committed (or failed)."""
        self.queue.join()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()

    def _run(self) -> None:
        with self.engine.connect() as connection:
            stop = False
            while not stop:
                items = [self.queue.get()]
                while True:
                    try:
                        items.append(self.queue.get_nowait())
                    except queue.Empty:
                        break
                finished = [item for item in items if item is not None]
                stop = len(finished) < len(items)
                try:
                    if finished and self.error is None:
                        _record(connection, self.edition_id, finished)
                except Exception as exc:
                    # Unrecorded batches stay open and are reaped as `unknown`: the
                    # sender stops and raises this.
                    log.exception("batch.record_failed", extra={"edition_id": self.edition_id})
                    self.error = exc
                finally:
                    for _ in items:
                        self.queue.task_done()


def _pause_for(
    connection: Connection,
    edition_id: int,
    batch_id: int,
    delivery_ids: list[int],
    reason: str,
) -> None:
    """Nothing of this batch went out: queue it again and pause until an operator looks."""
    with connection.begin():
        # No backoff: they go as soon as an operator has fixed the cause and resumed.
        ledger.record(
            connection,
            batch_id,
            delivery_ids,
            [Result(i, Outcome.RETRY, error=reason, transport_down=True) for i in delivery_ids],
            backoff=False,
        )
        # Raw SQL on the claiming connection (no session holds the row here): the same
        # sending → paused as ``states``, the WHERE standing in for its check.
        connection.execute(
            update(Edition)
            .where(Edition.id == edition_id, Edition.status == states.SENDING)
            .values(status=states.PAUSED, status_reason=reason)
        )
    log.error("edition.paused", extra={"edition_id": edition_id, "reason": reason})


def pause(session: Session, edition: Edition, reason: str = "paused by an operator") -> None:
    _move(
        edition,
        EditionStatus.PAUSED,
        reason,
        f"edition {edition.id} is {edition.status}, not sending",
    )


def resume(session: Session, edition: Edition) -> None:
    refusal = f"edition {edition.id} is {edition.status}, not paused"
    _move(edition, EditionStatus.SENDING, None, refusal)


def cancel(session: Session, edition: Edition, reason: str = "cancelled by an operator") -> int:
    """Stop for good: whoever is still queued is skipped. Returns how many.

    An edition cancelled before it started gives its briefings back: the next
    edition may carry them (see ``mailer.editions.compose``).
    """
    if edition.status in (EditionStatus.SENT, EditionStatus.CANCELLED):
        raise DispatchError(f"edition {edition.id} is already {edition.status}")
    # Claims of this edition wait (or have committed): none can start a batch whose
    # rows the skip below would miss.
    ledger.lock_edition(session.connection(), edition.id)
    _move(edition, EditionStatus.CANCELLED, reason, f"edition {edition.id} cannot be cancelled")
    return ledger.skip_queued(session, edition.id, reason)


def _load(session: Session, edition_id: int, *, lock: bool = False) -> Edition:
    edition = session.get(Edition, edition_id, with_for_update=lock or None)
    if edition is None:
        raise DispatchError(f"no edition with id {edition_id}")
    return edition
