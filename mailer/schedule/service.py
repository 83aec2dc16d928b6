"""The scheduler as a service: APScheduler drives the ticks and service jobs.

APScheduler (3.11, a BackgroundScheduler in memory) only keeps time; it
decides nothing. Every job reads what to do from the database:

* ``lease`` (every ttl/3): take or renew the leader lease; a standby keeps trying;
* ``tick`` (every ``MAILER_SCHEDULER_TICK_SECONDS``): due slots, missed slots, held
  editions, from the ``schedules`` and ``schedule_runs`` tables, so an edited
  schedule applies at the next tick without a restart;
* ``pull``, ``reap``, ``sync``, ``reconcile``, ``prune``: the service jobs.

Only the leader runs the ticks and service jobs. Jobs coalesce (a late job runs
once, not once per missed interval), never overlap themselves, and run however
late they are (``misfire_grace_time=None``): whether a *slot* may still run after
downtime is the runner's decision (the grace), made from the database, never
APScheduler's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor  # type: ignore[import-untyped]
from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from mailer.db.base import utcnow
from mailer.dispatch.dispatcher import worker_name
from mailer.runtime import Runtime
from mailer.schedule import jobs
from mailer.schedule.lease import Lease
from mailer.schedule.runner import Runner, TickReport

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
PULL_CHECK_SECONDS = 60.0
# Sign-ups and unsubscribes add a row each to the lists' counts until folded.
FOLD_SECONDS = 60.0


class SchedulerService:
    def __init__(
        self,
        runtime: Runtime,
        *,
        clock: Clock = utcnow,
        holder: str | None = None,
        tick_seconds: float | None = None,
        lease_seconds: float | None = None,
        grace: timedelta | None = None,
    ) -> None:
        settings = runtime.settings
        self.runtime, self.clock = runtime, clock
        self.holder = holder or f"scheduler:{worker_name()}"
        self.tick_seconds = tick_seconds or settings.scheduler_tick_seconds
        ttl = timedelta(seconds=lease_seconds or settings.scheduler_lease_seconds)
        self.lease = Lease(runtime.engine, self.holder, ttl, clock=clock)
        self._stopping = threading.Event()
        self.runner = Runner(
            runtime, holder=self.holder, clock=clock, grace=grace, stopping=self._stopping.is_set
        )
        self._scheduler: Any = None
        self.last_tick: datetime | None = None

    # -- what the jobs do (callable directly, with the injected clock, by tests) --------

    def leading(self) -> bool:
        return self.lease.leading()

    @property
    def role(self) -> str:
        return "leader" if self.leading() else "standby"

    def renew(self) -> bool:
        if self._stopping.is_set():
            return False
        return self.lease.acquire()

    def tick(self) -> TickReport | None:
        """One look at the schedules, if we lead. Returns what changed (None: standby)."""
        if not self.leading() or self._stopping.is_set():
            return None
        report = self.runner.tick()
        self.last_tick = self.clock()
        return report

    def pull(self) -> int:
        return jobs.pull_due(self.runtime, self.clock()) if self._may_run() else 0

    def reap(self) -> int:
        return jobs.reap(self.runtime) if self._may_run() else 0

    def prune(self) -> int:
        return jobs.prune_events(self.runtime, self.clock()) if self._may_run() else 0

    def fold(self) -> None:
        if self._may_run():
            jobs.fold_tallies(self.runtime)

    def sync(self) -> bool:
        return jobs.sync_suppressions(self.runtime) if self._may_run() else False

    def reconcile(self) -> bool:
        return jobs.reconcile_unknown(self.runtime) if self._may_run() else False

    def _may_run(self) -> bool:
        return self.leading() and not self._stopping.is_set()

    # -- running as a service -----------------------------------------------------------

    def start(self) -> None:
        """Take the lease if free, then keep time in a background thread."""
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        self.renew()
        settings = self.runtime.settings
        scheduler = BackgroundScheduler(
            timezone=UTC,
            # The lease has a thread of its own: a long pull or tick never delays renewing it.
            executors={
                "default": ThreadPoolExecutor(max_workers=4),
                "lease": ThreadPoolExecutor(max_workers=1),
            },
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        now = datetime.now(UTC)
        ttl = self.lease.ttl.total_seconds()
        every: list[tuple[str, Callable[[], object], float, float]] = [
            # (name, job, interval in seconds, first run after this many seconds)
            ("lease", self.renew, max(ttl / 3, 0.2), max(ttl / 3, 0.2)),
            ("tick", self.tick, self.tick_seconds, 0.0),
            ("pull", self.pull, PULL_CHECK_SECONDS, 5.0),
            ("reap", self.reap, settings.scheduler_reap_seconds, 10.0),
            ("sync", self.sync, settings.scheduler_sync_minutes * 60, 30.0),
            ("reconcile", self.reconcile, settings.scheduler_reconcile_minutes * 60, 60.0),
            ("prune", self.prune, settings.scheduler_prune_hours * 3600, 120.0),
            ("fold", self.fold, FOLD_SECONDS, 90.0),
        ]
        for name, job, seconds, first in every:
            scheduler.add_job(
                self._guarded(name, job),
                IntervalTrigger(seconds=seconds, timezone=UTC),
                id=name,
                name=name,
                next_run_time=now + timedelta(seconds=first),
                executor="lease" if name == "lease" else "default",
            )
        scheduler.start()
        self._scheduler = scheduler
        log.info(
            "scheduler.started",
            extra={
                "holder": self.holder,
                "role": self.role,
                "tick_seconds": self.tick_seconds,
                "lease_seconds": ttl,
            },
        )

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop ticking, let a job in hand finish (up to ``timeout``), hand the lease over.
        Returns whether every job finished in time."""
        self._stopping.set()
        finished = True
        if self._scheduler is not None:
            scheduler, self._scheduler = self._scheduler, None
            waiter = threading.Thread(
                target=scheduler.shutdown, kwargs={"wait": True}, name="scheduler-stop"
            )
            waiter.daemon = True
            waiter.start()
            waiter.join(timeout)
            finished = not waiter.is_alive()
            if not finished:
                log.warning("scheduler.stop_timeout", extra={"timeout_seconds": timeout})
        self.lease.release()
        log.info("scheduler.stopped", extra={"holder": self.holder})
        return finished

    def _guarded(self, name: str, job: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                job()
            except Exception:
                # Logged as one structured event; the next interval tries again.
                log.exception("scheduler.job_failed", extra={"job": name})

        run.__name__ = f"mailer_{name}"
        return run
