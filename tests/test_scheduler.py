"""The scheduler against a real database (SQLite and PostgreSQL), with an injected clock.

No test waits for real time: each moves a fake clock and calls the jobs that
APScheduler would call (renew the lease, tick), exactly as the service does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from mailer.app import accounts
from mailer.app.actors import Actor
from mailer.config import Settings
from mailer.db.models import Edition, EditionStatus, Event, Newsletter, Source
from mailer.db.session import transaction
from mailer.dispatch import ledger
from mailer.runtime import Runtime
from mailer.schedule import jobs
from mailer.schedule.models import RunState, Schedule, ScheduleRun
from mailer.schedule.runner import ApprovalError, Runner, approve
from mailer.schedule.service import SchedulerService
from mailer.web.app import create_app
from subscribers.models import Subscriber
from tests.scheduling import (
    Clock,
    counts,
    drain,
    editions,
    ledger_size,
    outbox_recipients,
    runs,
    scheduled_newsletter,
    utc,
    write_briefing,
)

LEASE = 10.0


def service(runtime: Runtime, clock: Clock, holder: str = "a") -> SchedulerService:
    return SchedulerService(runtime, clock=clock, holder=holder, lease_seconds=LEASE)


def step(svc: SchedulerService) -> list[str]:
    """What APScheduler does at a tick: keep the lease, then look at the schedules."""
    svc.renew()
    report = svc.tick()
    return report.states() if report is not None else []


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "desk"


def test_a_daily_slot_fires_once_and_sends_once(
    runtime: Runtime, folder: Path, tmp_path: Path
) -> None:
    scheduled_newsletter(
        runtime, folder, slot="07:00", timezone="Europe/Berlin", since=utc(2025, 6, 10)
    )
    clock = Clock(utc(2025, 6, 10, 4, 59, 50))  # 06:59:50 in Berlin (CEST)
    first = service(runtime, clock)

    assert step(first) == []
    assert runs(runtime) == []
    clock.advance(seconds=20)
    assert step(first) == [RunState.DUE, RunState.SENT]
    assert step(first) == []  # the next tick: nothing more

    [run] = runs(runtime)
    [edition] = editions(runtime)
    assert (run.slot_date, run.slot_at, run.state) == (
        date(2025, 6, 10),
        utc(2025, 6, 10, 5),
        RunState.SENT,
    )
    assert run.edition_id == edition.id and edition.edition_date == date(2025, 6, 10)
    assert edition.status == EditionStatus.SENDING
    assert drain(runtime, edition.id)["sent"] == 3
    assert len(outbox_recipients(runtime.settings.outbox_dir, edition.id)) == 3

    # The process dies and another starts a minute later: its lease has to expire first,
    # then it leads, and sends nothing more.
    clock.advance(minutes=1)
    restarted = service(runtime, clock, holder="b")
    assert step(restarted) == []
    assert restarted.leading()
    assert len(runs(runtime)) == 1 and len(editions(runtime)) == 1
    assert ledger_size(runtime) == 3
    assert drain(runtime, edition.id)["sent"] == 3

    # The next day's slot: a new edition with the new briefing pulled at the slot.
    write_briefing(folder, published=utc(2025, 6, 11, 4))
    clock.set(utc(2025, 6, 11, 5, 0, 1))
    assert step(restarted) == [RunState.DUE, RunState.SENT]
    assert [r.slot_date for r in runs(runtime)] == [date(2025, 6, 10), date(2025, 6, 11)]
    assert len(editions(runtime)) == 2


@pytest.mark.parametrize(
    ("zone", "day", "slot", "fires_at"),
    [
        # Spring forward (02:00 → 03:00): a 02:30 slot runs at 03:00 local.
        ("Europe/Berlin", date(2025, 3, 30), "02:30", utc(2025, 3, 30, 1, 0)),
        ("America/New_York", date(2025, 3, 9), "02:30", utc(2025, 3, 9, 7, 0)),
        # Fall back (the hour repeats): once, at the first 02:30 / 01:30.
        ("Europe/Berlin", date(2025, 10, 26), "02:30", utc(2025, 10, 26, 0, 30)),
        ("America/New_York", date(2025, 11, 2), "01:30", utc(2025, 11, 2, 5, 30)),
    ],
)
def test_daylight_saving_days_send_once_at_the_right_instant(
    runtime: Runtime, folder: Path, zone: str, day: date, slot: str, fires_at: object
) -> None:
    start = utc(day.year, day.month, day.day) - timedelta(hours=3)
    scheduled_newsletter(runtime, folder, slot=slot, timezone=zone, subscribers=2, since=start)
    clock = Clock(start)
    svc = service(runtime, clock)
    fired = []
    # Every five minutes through the changing night (and the repeated hour).
    while clock() < start + timedelta(hours=11):
        if step(svc):
            fired.append(clock())
        clock.advance(minutes=5)
    [run] = runs(runtime)
    assert run.slot_date == day and run.slot_at == fires_at and run.state == RunState.SENT
    assert len(fired) == 1 and timedelta(0) <= fired[0] - run.slot_at < timedelta(minutes=5)
    [edition] = editions(runtime)
    assert counts(runtime, edition.id)["queued"] == 2


def test_downtime_across_a_slot(runtime: Runtime, folder: Path) -> None:
    scheduled_newsletter(runtime, folder, slot="07:00", timezone="UTC", since=utc(2025, 6, 9))
    # Down from the 9th to 12:59 on the 10th: the 10th's slot is 5h59m late, within
    # the grace, so it runs at start-up; the 9th's (29h59m late) is recorded as missed.
    clock = Clock(utc(2025, 6, 10, 12, 59))
    assert sorted(step(service(runtime, clock))) == sorted(
        [RunState.MISSED, RunState.DUE, RunState.SENT]
    )
    by_date = {r.slot_date: r for r in runs(runtime)}
    missed = by_date[date(2025, 6, 9)]
    assert missed.state == RunState.MISSED and missed.edition_id is None
    assert missed.reason == "missed by 1d 5h 59m, beyond the 6h 00m grace: not sent"
    assert by_date[date(2025, 6, 10)].state == RunState.SENT


def test_downtime_beyond_the_grace_is_recorded_not_sent(runtime: Runtime, folder: Path) -> None:
    scheduled_newsletter(runtime, folder, slot="07:00", timezone="UTC", since=utc(2025, 6, 10))
    clock = Clock(utc(2025, 6, 10, 13, 1))
    assert step(service(runtime, clock)) == [RunState.MISSED]
    [run] = runs(runtime)
    assert run.state == RunState.MISSED and "beyond the 6h 00m grace" in (run.reason or "")
    assert editions(runtime) == [] and ledger_size(runtime) == 0


def test_an_interrupted_run_is_resumed_within_the_grace_and_missed_beyond(
    runtime: Runtime, folder: Path
) -> None:
    newsletter_id = scheduled_newsletter(runtime, folder, slot="07:00", since=utc(2025, 6, 10))
    clock = Clock(utc(2025, 6, 10, 7, 0, 5))
    # A scheduler claimed the slot and died before composing (the row is `due`).
    with transaction(runtime.sessions) as session:
        session.add(
            ScheduleRun(
                newsletter_id=newsletter_id,
                slot_date=date(2025, 6, 10),
                slot_at=utc(2025, 6, 10, 7),
                state=RunState.DUE,
                claimed_by="dead",
            )
        )
    clock.advance(hours=1)
    assert step(service(runtime, clock)) == [RunState.SENT]
    assert len(editions(runtime)) == 1

    # The same on another day, found only after the grace: missed, nothing sent.
    with transaction(runtime.sessions) as session:
        session.add(
            ScheduleRun(
                newsletter_id=newsletter_id,
                slot_date=date(2025, 6, 11),
                slot_at=utc(2025, 6, 11, 7),
                state=RunState.DUE,
                claimed_by="dead",
            )
        )
    clock.set(utc(2025, 6, 11, 13, 30))
    assert step(service(runtime, clock, holder="c")) == [RunState.MISSED]
    assert len(editions(runtime)) == 1


def test_nothing_new_is_recorded_as_skipped(runtime: Runtime, folder: Path) -> None:
    scheduled_newsletter(runtime, folder, slot="07:00", since=utc(2025, 6, 10))
    clock = Clock(utc(2025, 6, 10, 7, 0, 1))
    svc = service(runtime, clock)
    assert step(svc) == [RunState.DUE, RunState.SENT]
    clock.set(utc(2025, 6, 11, 7, 0, 1))  # no new briefing since
    assert step(svc) == [RunState.DUE, RunState.SKIPPED]
    run = runs(runtime)[-1]
    assert run.reason == "no new briefings since the previous edition"


def test_schedule_edits_apply_at_the_next_tick(runtime: Runtime, folder: Path) -> None:
    newsletter_id = scheduled_newsletter(runtime, folder, slot="07:00", since=utc(2025, 6, 10))
    clock = Clock(utc(2025, 6, 10, 6, 0))
    svc = service(runtime, clock)
    assert step(svc) == []
    # An editor moves the slot to 06:30 and switches it off, then on again at 06:10.
    with transaction(runtime.sessions) as session:
        session.execute(
            update(Schedule)
            .where(Schedule.newsletter_id == newsletter_id)
            .values(slot="06:30", enabled=False)
        )
    clock.set(utc(2025, 6, 10, 6, 31))
    assert step(svc) == []
    with transaction(runtime.sessions) as session:
        session.execute(update(Schedule).values(enabled=True, effective_from=clock()))
    clock.set(utc(2025, 6, 10, 6, 32))
    assert step(svc) == []  # 06:30 passed before it took effect
    with transaction(runtime.sessions) as session:
        session.execute(update(Schedule).values(slot="06:40", effective_from=clock()))
    clock.set(utc(2025, 6, 10, 6, 40, 1))
    assert step(svc) == [RunState.DUE, RunState.SENT]


def test_steps_without_send_compose_and_wait(runtime: Runtime, folder: Path) -> None:
    scheduled_newsletter(runtime, folder, steps="pull,compose", since=utc(2025, 6, 10))
    clock = Clock(utc(2025, 6, 10, 7, 0, 1))
    assert step(service(runtime, clock)) == [RunState.DUE, RunState.COMPOSED]
    [edition] = editions(runtime)
    assert edition.status == EditionStatus.READY and ledger_size(runtime) == 0


def test_held_for_approval_then_approved(runtime: Runtime, folder: Path) -> None:
    scheduled_newsletter(
        runtime,
        folder,
        requires_approval=True,
        approval_deadline_minutes=60,
        since=utc(2025, 6, 10),
    )
    clock = Clock(utc(2025, 6, 10, 7, 0, 1))
    svc = service(runtime, clock)
    assert step(svc) == [RunState.DUE, RunState.HELD]
    [run] = runs(runtime)
    assert run.deadline_at == utc(2025, 6, 10, 8) and ledger_size(runtime) == 0
    clock.advance(minutes=30)
    assert step(svc) == []  # still held
    with transaction(runtime.sessions) as session:
        held = session.get(ScheduleRun, run.id)
        assert held is not None
        approve(session, held, clock())
    [run] = runs(runtime)
    assert run.state == RunState.SENT and run.approved_at == clock()
    [edition] = editions(runtime)
    assert edition.status == EditionStatus.SENDING and ledger_size(runtime) == 3


def test_held_past_its_deadline_is_skipped(runtime: Runtime, folder: Path) -> None:
    scheduled_newsletter(
        runtime,
        folder,
        requires_approval=True,
        approval_deadline_minutes=60,
        since=utc(2025, 6, 10),
    )
    clock = Clock(utc(2025, 6, 10, 7, 0, 1))
    svc = service(runtime, clock)
    assert step(svc) == [RunState.DUE, RunState.HELD]
    clock.set(utc(2025, 6, 10, 8, 0, 0))
    with transaction(runtime.sessions) as session:
        late = session.scalar(select(ScheduleRun))
        assert late is not None
        with pytest.raises(ApprovalError, match="deadline passed"):
            approve(session, late, clock())
    assert step(svc) == [RunState.SKIPPED]
    [run] = runs(runtime)
    assert run.reason == "not approved by its deadline (2025-06-10T08:00+00:00): skipped"
    [edition] = editions(runtime)
    assert edition.status == EditionStatus.CANCELLED and edition.status_reason == run.reason
    assert ledger_size(runtime) == 0


def test_held_edition_sent_by_hand_is_recorded_as_sent(runtime: Runtime, folder: Path) -> None:
    scheduled_newsletter(runtime, folder, requires_approval=True, since=utc(2025, 6, 10))
    clock = Clock(utc(2025, 6, 10, 7, 0, 1))
    svc = service(runtime, clock)
    step(svc)
    [edition] = editions(runtime)
    drain(runtime, edition.id)  # `mailer editions send ID`
    assert step(svc) == [RunState.SENT]


def test_local_time_delivery_in_waves(
    runtime: Runtime, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduled_newsletter(
        runtime,
        folder,
        slot="07:00",
        timezone="Europe/London",
        local_time_delivery=True,
        subscribers=7,
        since=utc(2025, 6, 9),
        # After the slot of the 9th in London: news for the edition of the 10th.
        published=utc(2025, 6, 9, 21),
    )
    zones = {
        "reader00001@example.com": "Asia/Tokyo",
        "reader00002@example.com": "Asia/Tokyo",
        "reader00003@example.com": "America/New_York",
        "reader00004@example.com": "America/New_York",
        "reader00005@example.com": None,  # the newsletter's
        "reader00006@example.com": None,
        "reader00007@example.com": "Mars/Olympus_Mons",  # not a zone: the newsletter's
    }
    with transaction(runtime.sessions) as session:
        for address, zone in zones.items():
            session.execute(
                update(Subscriber).where(Subscriber.email == address).values(timezone=zone)
            )
    # 07:00 on 10 June is 22:00 UTC on the 9th in Tokyo, 06:00 UTC in London (BST)
    # and 11:00 UTC in New York (EDT). The edition is composed for Tokyo's slot.
    clock = Clock(utc(2025, 6, 9, 21, 59))
    # Claims compare "not before" with the ledger's clock: the same fake one here.
    monkeypatch.setattr(ledger, "utcnow", clock)
    svc = service(runtime, clock)
    assert step(svc) == []
    clock.set(utc(2025, 6, 9, 22, 0, 5))
    assert step(svc) == [RunState.DUE, RunState.SENT]
    [run] = runs(runtime)
    assert run.slot_date == date(2025, 6, 10) and run.slot_at == utc(2025, 6, 9, 22)
    [edition] = editions(runtime)

    outbox = runtime.settings.outbox_dir
    waves = [
        (utc(2025, 6, 9, 22, 0, 5), ["reader00001", "reader00002"]),
        (utc(2025, 6, 10, 5, 59), []),
        (utc(2025, 6, 10, 6, 0, 5), ["reader00005", "reader00006", "reader00007"]),
        (utc(2025, 6, 10, 10, 59), []),
        (utc(2025, 6, 10, 11, 0, 5), ["reader00003", "reader00004"]),
    ]
    seen: list[str] = []
    for moment, newcomers in waves:
        clock.set(moment)
        drain(runtime, edition.id)
        now_seen = [a.split("@")[0] for a in outbox_recipients(outbox, edition.id)]
        assert sorted(set(now_seen) - set(seen)) == newcomers, moment
        seen = now_seen
    assert counts(runtime, edition.id)["sent"] == 7
    with runtime.sessions() as session:
        assert session.get(Edition, edition.id).status == EditionStatus.SENT  # type: ignore[union-attr]


def test_two_schedulers_one_leads_and_the_other_takes_over(
    database_url: str, folder: Path, tmp_path: Path
) -> None:
    """Each with its own engine (as two processes would have); one clock for both."""
    settings = Settings(
        database_url=database_url,
        outbox_dir=tmp_path / "outbox",
        secret_key="test-secret-key-that-is-long-enough-for-production-use",
        base_url="https://news.example.org",
    )
    one, two = Runtime(settings), Runtime(settings)
    try:
        scheduled_newsletter(one, folder, slot="07:00", since=utc(2025, 6, 10))
        clock = Clock(utc(2025, 6, 10, 6, 59, 55))
        a, b = service(one, clock, "a"), service(two, clock, "b")
        assert a.renew() and not b.renew()
        assert (a.role, b.role) == ("leader", "standby")
        clock.set(utc(2025, 6, 10, 7, 0, 1))
        assert step(b) == [] and step(a) == [RunState.DUE, RunState.SENT]

        # `a` dies (it stops renewing). `b` keeps trying and takes over once the lease
        # has run out, within the ttl (plus one renewal interval).
        clock.advance(seconds=LEASE / 3)
        assert not b.renew()
        clock.advance(seconds=LEASE)
        assert b.renew() and b.leading() and not a.leading()
        assert step(b) == []  # the slot of the 10th is done: still one edition
        # `a` comes back from a long pause: it cannot lead any more.
        assert not a.renew() and a.tick() is None

        write_briefing(folder, published=utc(2025, 6, 11, 6))
        clock.set(utc(2025, 6, 11, 7, 0, 1))
        assert b.renew()  # (renewed all along, in the service)
        assert step(a) == [] and step(b) == [RunState.DUE, RunState.SENT]
        assert [r.slot_date for r in runs(one)] == [date(2025, 6, 10), date(2025, 6, 11)]
        assert len(editions(one)) == 2
    finally:
        one.close()
        two.close()


def test_racing_schedulers_still_make_one_edition_per_slot(
    database_url: str, folder: Path, tmp_path: Path
) -> None:
    """Even two runners at the same instant (a split brain the lease should prevent)
    claim the slot once: the run row's unique key decides."""
    settings = Settings(
        database_url=database_url,
        outbox_dir=tmp_path / "outbox",
        secret_key="test-secret-key-that-is-long-enough-for-production-use",
        base_url="https://news.example.org",
    )
    runtimes = [Runtime(settings) for _ in range(3)]
    try:
        scheduled_newsletter(runtimes[0], folder, slot="07:00", since=utc(2025, 6, 10))
        clock = Clock(utc(2025, 6, 10, 7, 0, 1))
        runners = [Runner(rt, holder=f"r{i}", clock=clock) for i, rt in enumerate(runtimes)]
        barrier = threading.Barrier(len(runners))
        results: list[list[str]] = []

        def race(runner: Runner) -> None:
            barrier.wait()
            results.append(runner.tick().states())

        threads = [threading.Thread(target=race, args=(r,)) for r in runners]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(s for states in results for s in states) == [RunState.DUE, RunState.SENT]
        assert len(runs(runtimes[0])) == 1 and len(editions(runtimes[0])) == 1
        assert ledger_size(runtimes[0]) == 3
    finally:
        for rt in runtimes:
            rt.close()


def test_service_jobs(runtime: Runtime, folder: Path) -> None:
    now = utc(2030, 1, 1, 12)
    scheduled_newsletter(runtime, folder, since=now)
    clock = Clock(now)
    svc = service(runtime, clock)
    assert svc.pull() == 0  # standby: does nothing
    svc.renew()
    # Pulls each source once its interval (the schedule's 15 minutes) has passed.
    with transaction(runtime.sessions) as session:
        session.execute(update(Source).values(last_pulled_at=now - timedelta(minutes=14)))
    assert svc.pull() == 0
    clock.advance(minutes=1)
    svc.renew()  # (every ttl/3 in the service)
    assert svc.pull() == 1
    with runtime.sessions() as session:
        assert session.scalar(select(Source.last_pulled_at)) is not None
    # Prunes processed events older than the retention, keeps the rest.
    old = now - timedelta(days=runtime.settings.event_retention_days + 1)
    with transaction(runtime.sessions) as session:
        session.add_all(
            [
                Event(source="sendgrid", kind="delivered", email="a@x.org", received_at=old,
                      processed_at=old),
                Event(source="sendgrid", kind="bounce", email="b@x.org", received_at=old,
                      processed_at=None),
                Event(source="sendgrid", kind="delivered", email="c@x.org", received_at=now,
                      processed_at=now),
                # Our own records outlive the retention of provider feedback.
                Event(source="operator", kind="suppression_lifted", email="d@x.org",
                      received_at=old, processed_at=old),
            ]
        )  # fmt: skip
    with transaction(runtime.sessions) as session:  # (the model's default would set it)
        session.execute(update(Event).where(Event.email == "b@x.org").values(processed_at=None))
    assert svc.prune() == 1
    with runtime.sessions() as session:
        assert sorted(session.scalars(select(Event.email))) == ["b@x.org", "c@x.org", "d@x.org"]
    assert svc.reap() == 0
    # Hooks into the tracking work: skipped unless SendGrid (and the module) is there.
    assert svc.sync() is False
    assert isinstance(svc.reconcile(), bool)


def test_the_sync_and_reconcile_jobs_reach_the_tracking_work(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import SecretStr

    from subscribers.models import Suppression
    from tests.suppression_server import API_KEY, item, suppression_server

    with suppression_server() as server:
        server.state.add("bounces", item("bounces", "gone@example.com", int(time.time()) - 600))
        monkeypatch.setattr(runtime.settings, "transport", "sendgrid")
        monkeypatch.setattr(runtime.settings, "sendgrid_api_key", SecretStr(API_KEY))
        monkeypatch.setattr(runtime.settings, "sendgrid_base_url", server.base_url)
        assert jobs.sync_suppressions(runtime) is True
    with runtime.sessions() as session:
        assert session.scalar(select(Suppression.reason)) == "hard bounce"
    with transaction(runtime.sessions) as session:
        session.add(
            Event(source="sendgrid", kind="spamreport", email="x@example.com", processed_at=None)
        )
    assert jobs.reconcile_unknown(runtime) is True  # applies pending events first
    with runtime.sessions() as session:
        assert session.scalar(select(Event.processed_at).where(Event.email == "x@example.com"))


@pytest.fixture
def admin_client(runtime: Runtime) -> Iterator[TestClient]:
    """A client with a workspace session (the status view is behind sign-in)."""
    made, _ = accounts.create_account(
        runtime, Actor.cli(), "ops@news.example.org", "editor", password="a long password here"
    )
    ticket = accounts.open_session(runtime, made.id, "testclient", "tests")
    with TestClient(create_app(runtime=runtime), base_url="https://testserver") as client:
        client.cookies.set("mailer_session", ticket.cookie_value)
        yield client


def test_status_view(runtime: Runtime, folder: Path, admin_client: TestClient) -> None:
    scheduled_newsletter(
        runtime, folder, slot="07:00", timezone="Europe/Paris", since=utc(2025, 6, 10)
    )
    with TestClient(admin_client.app, base_url="https://testserver") as stranger:
        stranger.cookies.set("mailer_session", "forged.value")
        assert stranger.get("/status").status_code == 401
    body = admin_client.get("/status").json()
    assert body["scheduler"]["role"] == "none"  # this test app runs no scheduler
    [newsletter] = body["newsletters"]
    assert newsletter["slug"] == "daily" and newsletter["last_run"] is None
    slots = newsletter["schedule"]["next_slots"]
    assert len(slots) == 3 and all(s["local"][11:16] == "07:00" for s in slots)
    assert body["sources"][0]["name"] == "daily-desk"
    assert body["editions_in_flight"] == []

    # With a scheduler in this process (as `mailer serve` runs it).
    clock = Clock(utc(2025, 6, 10, 5, 0, 1))
    svc = service(runtime, clock, holder="web-1")
    admin_client.app.state.scheduler = svc  # type: ignore[attr-defined]
    step(svc)
    body = admin_client.get("/status").json()
    assert body["scheduler"]["role"] == "leader"
    assert body["scheduler"]["this_process"] == "web-1"
    assert body["newsletters"][0]["last_run"]["state"] == RunState.SENT
    [in_flight] = body["editions_in_flight"]
    assert in_flight["status"] == "sending" and in_flight["deliveries"]["queued"] == 3


def test_status_view_needs_a_session_or_a_token(runtime: Runtime) -> None:
    with TestClient(create_app(runtime=runtime)) as client:
        refused = client.get("/status")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"


def test_a_template_error_fails_the_run_with_its_message(runtime: Runtime, folder: Path) -> None:
    newsletter_id = scheduled_newsletter(runtime, folder, since=utc(2025, 6, 10))
    with transaction(runtime.sessions) as session:
        session.execute(
            update(Newsletter).where(Newsletter.id == newsletter_id).values(template="missing")
        )
    clock = Clock(utc(2025, 6, 10, 7, 0, 1))
    svc = service(runtime, clock)
    assert step(svc) == [RunState.DUE, RunState.FAILED]
    [run] = runs(runtime)
    assert run.state == RunState.FAILED and "missing" in (run.reason or "")
    assert editions(runtime) == [] and step(svc) == []
