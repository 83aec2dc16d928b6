"""Benchmark: the web workspace's pages on a production-sized database, over real HTTP.

    .venv/bin/python bench/workspace_bench.py [--n 1000000] [--runs 15] [--database-url URL]
        [--history 5] [--history-n 100000] [--keep DIR] [--reuse]

Not timed, per run: a fresh database (a new SQLite file in a temporary directory, or
PostgreSQL's tables emptied) with ``--n`` subscribers (one INSERT … SELECT over a
series of numbers: a few hundred unsubscribed or bounced and suppressed, a tenth with
a timezone of their own) on two lists, two newsletters with their schedules
("daily" on every list member, "evening" on a quarter of them, with approval), the
demo briefings plus an archive of 5,000 older ones, ``--history`` sent editions of
"daily" on the days before (``--history-n`` deliveries each, in batches sent whole,
with their provider events), today's "evening" edition composed and waiting (the
draft), and today's "daily" edition in flight: ``dispatcher.start`` fills its ledger
(one row per mailable subscriber), ``send_edition`` sends about 40 % of it through an
in-process transport (most batches sent whole under one message id, every tenth
written row by row with a few failed, retried and unknown rows), then another
worker's two claims of two batches stay open (4,000 rows in flight), and the
provider's events for what was sent are stored (processed, delivered, opens, clicks, bounces, drops,
complaints, unsubscribes, stamped on the ledger as the policy does), with 10,000
audit entries and an editor and an administrator account.

Then ``mailer serve --no-scheduler --no-worker`` (uvicorn, the production entry
point) runs as a child process on 127.0.0.1; each account signs in over HTTP (the
sign-in form's CSRF field, the ``mailer_session`` cookie), and every page is fetched
twice to warm up, then ``--runs`` times, the pages taking turns (one round fetches
each page once, so the machine's noise spreads over all of them). A time is the
client's, from sending the GET to the last byte of the answer on one keep-alive
connection. Prints per page the median and p90 in ms and the status; exits 1 if any
median is at or over 150 ms or any answer is not 200.

``--keep DIR`` puts the SQLite file in DIR and leaves it there; ``--reuse`` benchmarks
a database seeded before (``--keep``, or PostgreSQL's as it is) without seeding it.
"""

from __future__ import annotations

import argparse
import http.client
import math
import os
import platform
import re
import secrets
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Connection, Engine, bindparam, func, insert, select, text
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import TextClause

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailer.accounts.models import AuditEntry  # noqa: E402
from mailer.app import accounts, newsletters  # noqa: E402
from mailer.app.actors import Actor  # noqa: E402
from mailer.config import Settings  # noqa: E402
from mailer.db import migrate  # noqa: E402
from mailer.db.base import UTCDateTime  # noqa: E402
from mailer.db.models import (  # noqa: E402
    Base,
    Batch,
    Briefing,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionBriefing,
    EditionStatus,
    MailingList,
    Newsletter,
)
from mailer.db.session import make_engine, transaction  # noqa: E402
from mailer.dispatch import dispatcher, ledger, tallies  # noqa: E402
from mailer.dispatch.dispatcher import DispatchSettings, send_edition  # noqa: E402
from mailer.editions.compose import compose_edition  # noqa: E402
from mailer.runtime import Runtime  # noqa: E402
from mailer.schedule import models as _schedule_models  # noqa: E402, F401 - tables to empty
from mailer.transports.base import Envelope, Outcome, Recipient, Result  # noqa: E402
from subscribers import tallies as list_tallies  # noqa: E402
from subscribers.models import Subscriber  # noqa: E402
from tests import factories  # noqa: E402

TARGET_MS = 150.0
WARM_UPS = 2
PASSWORD = "a long bench password, not a real one"  # noqa: S105 - throwaway accounts
EDITOR = "editor@news.example.org"
ADMIN = "admin@news.example.org"
SENT_SHARE = 0.4  # of today's ledger, sent before the pages are timed
OPEN_CLAIMS = 2  # claims of two batches each, left open by "another worker"
ARCHIVE_BRIEFINGS = 5_000
AUDIT_ENTRIES = 10_000
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')

# Provider feedback per sent delivery, in basis points of a hash of its id: kind,
# multiplier of the hash, [low, high) range, bounce class, ledger column stamped.
FEEDBACK: tuple[tuple[str, int, int, int, str | None, str | None], ...] = (
    ("processed", 1, 0, 10_000, None, None),
    ("delivered", 1, 0, 9_700, None, "delivered_at"),
    ("bounce", 1, 9_900, 9_960, "hard", None),
    ("bounce", 1, 9_960, 9_990, "soft", None),
    ("dropped", 1, 9_990, 10_000, None, None),
    ("open", 7, 0, 3_000, None, "opened_at"),
    ("open", 7, 0, 1_500, None, None),  # a second open by half the readers who opened
    ("click", 13, 0, 600, None, "clicked_at"),
    ("unsubscribe", 17, 0, 20, None, None),
    ("spamreport", 19, 0, 5, None, None),
)
ATTRIBUTES = '{"source": "import", "plan": "free"}'
PAYLOAD = (
    '{"useragent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15",'
    ' "ip": "203.0.113.7", "category": ["newsletter-daily"]}'
)


@dataclass(frozen=True)
class Seeded:
    live_id: int  # today's "daily", sending
    draft_id: int  # today's "evening", composed and waiting
    old_id: int | None  # the newest sent edition
    address: str  # a subscriber's address, for "preview as"


@dataclass(frozen=True)
class Page:
    label: str
    path: str
    account: str  # who fetches it


@dataclass
class Timing:
    page: Page
    times_ms: list[float]
    statuses: set[int]
    size: int

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def p90(self) -> float:
        ordered = sorted(self.times_ms)
        return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


class LocalTransport:
    """Answers at once: most batches go out whole under one message id; every tenth has
    per-recipient outcomes (a few failed, retried later, unknown), written row by row."""

    name = "sendgrid"
    concurrency = 2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.batches = 0
        self.handed = 0

    def send(self, envelope: Envelope, recipients: Sequence[Recipient]) -> list[Result]:
        with self._lock:
            self.batches += 1
            number = self.batches
            self.handed += len(recipients)
        message_id = f"bench{envelope.edition_id}x{number:07d}"
        if number % 10:
            return [Result(r.delivery_id, Outcome.SENT, message_id) for r in recipients]
        results = []
        for k, r in enumerate(recipients):
            if k % 100 == 0:
                results.append(
                    Result(r.delivery_id, Outcome.FAILED, None, "550 5.1.1 no such user")
                )
            elif k % 100 == 1:
                results.append(Result(r.delivery_id, Outcome.RETRY, None, "421 4.7.0 try later"))
            elif k % 250 == 2:
                results.append(Result(r.delivery_id, Outcome.UNKNOWN, None, "timed out"))
            else:
                results.append(Result(r.delivery_id, Outcome.SENT, f"{message_id}.{k}"))
        return results

    def close(self) -> None:
        pass


def settings_for(url: str, work: Path, secret: str, base_url: str) -> Settings:
    return Settings(
        database_url=url,
        secret_key=secret,
        base_url=base_url,
        outbox_dir=work / "outbox",
    )


# -- seeding ------------------------------------------------------------------------------


def _numbers(dialect: str) -> str:
    """A FROM clause yielding ``n.i`` for i in [:lo, :hi]."""
    if dialect == "postgresql":
        return "generate_series(CAST(:lo AS BIGINT), CAST(:hi AS BIGINT)) AS n(i)"
    return (
        "(WITH RECURSIVE s(i) AS (SELECT :lo UNION ALL SELECT i + 1 FROM s WHERE i < :hi) "
        "SELECT i FROM s) AS n"
    )


def _json(dialect: str, literal: str) -> str:
    return f"CAST('{literal}' AS JSONB)" if dialect == "postgresql" else f"'{literal}'"


def _minutes_after(dialect: str, base: str, minutes: str) -> str:
    """SQL for ``base`` (a bound UTC time) plus ``minutes`` (an integer expression)."""
    if dialect == "postgresql":
        return f"({base} + ({minutes}) * INTERVAL '1 minute')"
    return f"datetime({base}, '+' || ({minutes}) || ' minutes')"


TIME_PARAMETERS = ("now", "base", "at")


def sql(statement: str) -> TextClause:
    """``text(statement)`` whose time parameters (:now, :base, :at) are UTC-aware."""
    clause = text(statement)
    times = [t for t in TIME_PARAMETERS if re.search(rf":{t}\b", statement)]
    return clause.bindparams(*(bindparam(t, type_=UTCDateTime()) for t in times))


def seed_subscribers(connection: Connection, n: int, now: datetime) -> None:
    dialect = connection.dialect.name
    lists = dict(connection.execute(select(MailingList.name, MailingList.id)).all())
    connection.execute(
        sql(
            "INSERT INTO subscribers (id, email, name, status, attributes, timezone,"
            " created_at, updated_at) SELECT n.i,"
            " 'reader' || n.i || '@example' || (n.i % 97) || '.com', 'Reader ' || n.i,"
            " CASE WHEN n.i % 200 = 7 THEN 'unsubscribed' WHEN n.i % 331 = 5 THEN 'bounced'"
            " ELSE 'active' END,"
            f" {_json(dialect, ATTRIBUTES)},"
            " CASE n.i % 10 WHEN 0 THEN 'America/New_York' WHEN 1 THEN 'Asia/Tokyo' END,"
            f" :now, :now FROM {_numbers(dialect)}"
        ),
        {"lo": 1, "hi": n, "now": now},
    )
    for name, every in (("morning", 1), ("evening", 4)):
        connection.execute(
            sql(
                "INSERT INTO subscriptions (subscriber_id, list_id, status, created_at,"
                " unsubscribed_at) SELECT id, :list_id,"
                " CASE WHEN status = 'unsubscribed' THEN 'unsubscribed' ELSE 'active' END,"
                " :now, CASE WHEN status = 'unsubscribed' THEN :now END"
                " FROM subscribers WHERE id % :every = 0"
            ),
            {"list_id": lists[name], "now": now, "every": every},
        )
    connection.execute(
        sql(
            "INSERT INTO suppressions (email, reason, source, detail, created_at)"
            " SELECT email, 'bounce', 'sendgrid', '550 5.1.1 user unknown', :now"
            " FROM subscribers WHERE status = 'bounced'"
        ),
        {"now": now},
    )
    if dialect == "postgresql":
        connection.execute(
            text("SELECT setval(pg_get_serial_sequence('subscribers', 'id'), :n)"), {"n": n}
        )


def seed_archive(runtime: Runtime, now: datetime) -> list[int]:
    """5,000 older briefings, sent or archived, like months of a newsroom's desk."""
    with transaction(runtime.sessions) as session:
        demo = list(session.scalars(select(Briefing).order_by(Briefing.id)))
        rows = []
        for k in range(ARCHIVE_BRIEFINGS):
            model = demo[k % len(demo)]
            rows.append(
                {
                    "source_key": f"folder:/srv/briefings/archive/{k:05d}.txt",
                    "content_hash": f"{k:064x}",
                    "title": f"{model.title} ({k})",
                    "lead": model.lead,
                    "lead_html": model.lead_html,
                    "sections": model.sections,
                    "tags": model.tags,
                    "url": f"https://news.example.org/archive/{k}",
                    "dropped": [],
                    "status": "sent" if k % 7 else "archived",
                    "published_at": now - timedelta(hours=49 + k),
                    "created_at": now - timedelta(hours=49 + k),
                    "updated_at": now - timedelta(hours=49 + k),
                }
            )
        session.execute(insert(Briefing), rows)
        return list(
            session.scalars(
                select(Briefing.id).where(Briefing.source_key.like("folder:/srv/briefings/%"))
            )
        )


def _feedback(
    connection: Connection,
    edition_id: int,
    where: str,
    params: dict[str, Any],
    base: datetime,
    span_minutes: int,
) -> None:
    """Provider events for the deliveries ``where`` selects (alias d), stamped on the
    ledger as the bounce policy stamps them; spread over ``span_minutes`` after ``base``
    (second opens in the second half)."""
    dialect = connection.dialect.name
    for kind, mult, low, high, bounce_class, column in FEEDBACK:
        chosen = f"(d.id * {mult}) % 10000 >= {low} AND (d.id * {mult}) % 10000 < {high}"
        second = kind == "open" and column is None
        minutes = f"(d.id * 31 + {mult}) % {span_minutes // 2 if second else span_minutes}"
        when = _minutes_after(dialect, ":base", minutes)
        connection.execute(
            sql(
                "INSERT INTO events (source, external_id, kind, email, edition_id, delivery_id,"
                " bounce_class, payload, occurred_at, received_at, processed_at)"
                " SELECT 'sendgrid',"
                f" CAST(:tag AS TEXT) || CAST(d.id AS TEXT), '{kind}', d.email, d.edition_id,"
                f" d.id, :bounce_class, {_json(dialect, PAYLOAD)}, {when}, {when}, {when}"
                f" FROM deliveries d WHERE d.edition_id = :edition_id AND {where} AND {chosen}"
            ),
            {
                **params,
                "edition_id": edition_id,
                "tag": f"sg-{kind}{'2' if second else ''}-{low}-{edition_id}-",
                "bounce_class": bounce_class,
                "base": base + timedelta(minutes=span_minutes // 2 if second else 0),
            },
        )
        stamp = column or ("bounce_class" if bounce_class else None)
        if stamp is None:
            continue
        value = (
            ":bounce_class"
            if stamp == "bounce_class"
            else _minutes_after(dialect, ":base", minutes.replace("d.id", "deliveries.id"))
        )
        connection.execute(
            sql(
                f"UPDATE deliveries SET {stamp} = {value} WHERE edition_id = :edition_id"
                f" AND {where.replace('d.', 'deliveries.')}"
                f" AND {chosen.replace('d.id', 'deliveries.id')}"
            ),
            {**params, "edition_id": edition_id, "bounce_class": bounce_class, "base": base},
        )


def seed_history(
    runtime: Runtime, model: Edition, count: int, size: int, archive: list[int], now: datetime
) -> list[int]:
    """``count`` sent editions of the days before today, ``size`` deliveries each in
    batches sent whole (as the dispatcher records them), with their events."""
    ids = []
    for k in range(count, 0, -1):
        started = now - timedelta(days=k)
        with transaction(runtime.sessions) as session:
            edition = Edition(
                newsletter_id=model.newsletter_id,
                edition_date=model.edition_date - timedelta(days=k),
                subject=f"{model.subject} ({k} days ago)",
                preheader=model.preheader,
                status=EditionStatus.SENT,
                html=model.html,
                text=model.text,
                token_nonce=model.token_nonce,
                rendered_at=started,
                send_started_at=started,
                sent_at=started + timedelta(minutes=25),
                created_at=started - timedelta(hours=1),
                excluded_briefing_ids=[],
            )
            session.add(edition)
            session.flush()
            for position in range(6):
                session.add(
                    EditionBriefing(
                        edition_id=edition.id,
                        briefing_id=archive[(6 * k + position) % len(archive)],
                        position=position,
                    )
                )
            ids.append(edition.id)
        with runtime.engine.begin() as connection:
            connection.execute(
                sql(
                    "INSERT INTO deliveries (edition_id, subscriber_id, email, status, attempts,"
                    " queued_at) SELECT :edition_id, id, email, 'queued', 0, :at"
                    " FROM subscribers WHERE id <= :size AND status = 'active' ORDER BY id"
                ),
                {"edition_id": edition.id, "size": size, "at": started},
            )
            low, high, filled = connection.execute(
                select(func.min(Delivery.id), func.max(Delivery.id), func.count()).where(
                    Delivery.edition_id == edition.id
                )
            ).one()
            # Written by hand, so its kept counts are too (ledger.fill would add them).
            tallies.add(connection, edition.id, {DeliveryStatus.QUEUED: filled})
            connection.execute(
                insert(Batch),
                [
                    {
                        "edition_id": edition.id,
                        "worker": "bench-host:1:history",
                        "transport": "sendgrid",
                        "size": min(1000, high - first + 1),
                        "first_id": first,
                        "last_id": min(first + 999, high),
                        "outcome": "sent",
                        "provider_message_id": f"hist{edition.id}x{first}",
                        "claimed_at": started,
                        "finished_at": started,
                        "sent_whole": True,
                    }
                    for first in range(low, high + 1, 1000)
                ],
            )
            _feedback(connection, edition.id, "1 = 1", {}, started, 48 * 60)
    return ids


def seed_audit(runtime: Runtime, now: datetime, edition_ids: list[int]) -> None:
    actions = ("edition.retitle", "edition.move", "briefing.correct", "edition.approve")
    with runtime.engine.begin() as connection:
        connection.execute(
            insert(AuditEntry),
            [
                {
                    "at": now - timedelta(minutes=AUDIT_ENTRIES - k),
                    "actor": f"account:{EDITOR}",
                    "action": actions[k % len(actions)],
                    "target_kind": "edition",
                    "target_id": str(edition_ids[k % len(edition_ids)]),
                    "before": {"subject": f"Subject {k}"},
                    "after": {"subject": f"Subject {k + 1}"},
                }
                for k in range(AUDIT_ENTRIES)
            ],
        )


def seed(runtime: Runtime, n: int, history: int, history_n: int) -> Seeded:
    engine = runtime.engine
    dialect = engine.dialect.name
    migrate.upgrade(engine)
    if dialect == "postgresql":
        with engine.begin() as connection:
            tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    now = datetime.now(UTC)
    cli = Actor.cli()
    step = time.perf_counter()

    def done(what: str) -> None:
        nonlocal step
        print(f"seed: {what} in {time.perf_counter() - step:.1f}s", flush=True)
        step = time.perf_counter()

    common = {
        "from_name": "Briefing Desk",
        "from_email": "briefing@news.example.org",
        "postal_address": "100 Harbour Street, Valmere VM 20410",
        "audience_note": "you signed up at news.example.org",
    }
    newsletters.create_newsletter(
        runtime,
        cli,
        "daily",
        name="The Daily Briefing",
        lists=["morning"],
        slot="06:30",
        timezone="Europe/Paris",
        weekdays="mon,tue,wed,thu,fri,sat,sun",
        **common,
    )
    newsletters.create_newsletter(
        runtime,
        cli,
        "evening",
        name="The Evening Edition",
        lists=["evening"],
        slot="18:00",
        timezone="America/New_York",
        approval=True,
        approval_deadline=90,
        **common,
    )
    with engine.begin() as connection:
        seed_subscribers(connection, n, now)
        # What the scheduler's fold job does within a minute of a bulk change.
        list_tallies.fold(connection)
    done(f"{n:,} subscribers")
    with transaction(runtime.sessions) as session:
        daily_id = session.scalar(select(Newsletter.id).where(Newsletter.slug == "daily"))
        evening_id = session.scalar(select(Newsletter.id).where(Newsletter.slug == "evening"))
    assert daily_id is not None and evening_id is not None
    # Today's "daily" from the demo briefings (tests.factories), before any history, so
    # that the history's briefings (the archive) cannot be what it would carry.
    live_id = factories.edition(runtime, daily_id)
    with transaction(runtime.sessions) as session:
        evening = session.get(Newsletter, evening_id)
        assert evening is not None
        draft_id = compose_edition(session, evening).edition.id
    archive = seed_archive(runtime, now)
    with runtime.sessions() as session:
        model = session.get(Edition, live_id)
        assert model is not None and model.status == EditionStatus.READY, model
        session.expunge(model)
    done("briefings and today's two editions")
    old = seed_history(runtime, model, history, history_n, archive, now)
    done(f"{history} sent editions of {history_n:,}")

    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, live_id, with_for_update=True)
        assert edition is not None
        queued = dispatcher.start(session, edition)
    done(f"dispatcher.start: {queued:,} deliveries")
    transport = LocalTransport()
    target = int(queued * SENT_SHARE)
    settings = DispatchSettings(
        base_url=runtime.settings.base_url, secret_key=b"k" * 32, sender_process=False
    )
    send_edition(
        runtime.sessions,
        live_id,
        transport,
        settings,
        worker="bench-host:1:sender",
        should_stop=lambda: transport.handed >= target,
    )
    done(f"send_edition: {transport.handed:,} handed to the transport")
    with engine.begin() as connection:
        sent_upto = connection.scalar(
            select(func.max(Batch.last_id)).where(
                Batch.edition_id == live_id, Batch.finished_at.is_not(None)
            )
        )
        _feedback(
            connection,
            live_id,
            "d.id <= :upto AND d.status IN ('queued', 'sent') AND d.retry_after IS NULL",
            {"upto": sent_upto},
            now - timedelta(minutes=20),
            20,
        )
    with runtime.sessions() as session:
        list_ids = [
            m.id
            for m in session.get(Newsletter, daily_id).lists  # type: ignore[union-attr]
        ]
    with ledger.claiming(engine) as connection:
        after = int(sent_upto or 0)
        for _ in range(OPEN_CLAIMS):
            with connection.begin():
                _status, claimed = ledger.lock_and_claim(
                    connection,
                    live_id,
                    list_ids,
                    "bench-host:2:elsewhere",
                    "sendgrid",
                    1000,
                    after_id=after,
                    batches=2,
                )
            assert claimed is not None
            after = claimed.last_id
    done("events and open claims")
    seed_audit(runtime, now, [live_id, draft_id, *old])
    with engine.begin() as connection:
        connection.execute(text("ANALYZE"))
        address = connection.scalar(select(Subscriber.email).where(Subscriber.id == max(1, n // 3)))
    done("audit entries, ANALYZE")
    return Seeded(live_id, draft_id, old[-1] if old else None, str(address))


def reused(runtime: Runtime, n: int) -> Seeded:
    """The ids of a database seeded before (``--reuse``)."""
    with runtime.sessions() as session:
        live = session.scalar(
            select(Edition.id).where(Edition.status == EditionStatus.SENDING).limit(1)
        )
        draft = session.scalar(
            select(Edition.id)
            .join(Newsletter)
            .where(Newsletter.slug == "evening")
            .order_by(Edition.id.desc())
            .limit(1)
        )
        old = session.scalar(
            select(Edition.id)
            .where(Edition.status == EditionStatus.SENT)
            .order_by(Edition.id.desc())
            .limit(1)
        )
        address = session.scalar(select(Subscriber.email).where(Subscriber.id == max(1, n // 3)))
    assert live is not None and draft is not None and address is not None
    return Seeded(live, draft, old, address)


def counts(engine: Engine, seeded: Seeded) -> dict[str, int]:
    """Row counts that show the seeding did what it says."""
    with Session(engine) as session:
        tally = ledger.counts(session, seeded.live_id)
        out = {f"today {k}": v for k, v in tally.items() if v}
        for table in (
            "subscribers",
            "subscriptions",
            "suppressions",
            "deliveries",
            "events",
            "batches",
            "briefings",
            "editions",
            "audit_log",
        ):
            out[table] = int(session.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
        edition = session.get(Edition, seeded.live_id)
        draft = session.get(Edition, seeded.draft_id)
        assert edition is not None and draft is not None
        out[f"today is {edition.status}"] = 1
        out[f"draft is {draft.status}"] = 1
    return out


def fingerprint(engine: Engine) -> tuple[int, ...]:
    """Row counts of the big tables and the newsletters, to see that nobody else emptied
    the database while the pages were timed."""
    with engine.connect() as connection:
        return tuple(
            int(connection.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
            for table in ("newsletters", "editions", "deliveries", "events")
        )


# -- the server and the clients -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(
    url: str, secret: str, port: int, work: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env |= {
        "MAILER_CONFIG_FILE": str(work / "absent.toml"),
        "MAILER_DATABASE_URL": url,
        "MAILER_SECRET_KEY": secret,
        "MAILER_BASE_URL": f"http://127.0.0.1:{port}",
        "MAILER_OUTBOX_DIR": str(work / "outbox"),
        "MAILER_LOG_FORMAT": "json",
        "MAILER_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "mailer", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--no-scheduler", "--no-worker"]
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: see {log_path}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                connection.close()
                return server
        except OSError:
            pass
        time.sleep(0.1)
    server.terminate()
    raise RuntimeError("the server did not become ready")


def signed_in(base_url: str, email: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url, timeout=60, follow_redirects=False)
    form = client.get("/signin")
    found = _CSRF.search(form.text)
    assert form.status_code == 200 and found, (form.status_code, form.text[:300])
    answer = client.post("/signin", data={"email": email, "password": PASSWORD, "csrf": found[1]})
    assert answer.status_code == 303, (answer.status_code, answer.text[:500])
    assert "mailer_session" in client.cookies, "no session cookie after signing in"
    return client


def pages(seeded: Seeded) -> list[Page]:
    live, draft = seeded.live_id, seeded.draft_id
    found = [
        Page("Today", "/", "editor"),
        Page("Briefings", "/briefings", "editor"),
        Page("Editions", "/editions", "editor"),
        Page("Editor (in flight)", f"/editions/{live}", "editor"),
        Page("Progress", f"/editions/{live}/progress", "editor"),
        Page("Preview", f"/editions/{live}/preview", "editor"),
        Page("Preview as", f"/editions/{live}/preview?as={seeded.address}", "editor"),
        Page("Address suggestions", f"/editions/{live}/subscribers?as=reader12", "editor"),
        Page("Editor (draft)", f"/editions/{draft}", "editor"),
        Page("Edition stats (in flight)", f"/editions/{live}/stats", "editor"),
    ]
    if seeded.old_id is not None:
        found.append(Page("Edition stats (sent)", f"/editions/{seeded.old_id}/stats", "editor"))
    found += [
        Page("Stats", "/stats", "editor"),
        Page("Status", "/status", "editor"),
        Page("Accounts", "/admin/accounts", "admin"),
        Page("Audit", "/admin/audit", "admin"),
        Page("Subscribers", "/admin/subscribers", "admin"),
        Page("Subscriber search (address)", "/admin/subscribers?q=reader12345", "admin"),
        # A name no address starts with, held by one subscriber: the whole table is searched.
        Page("Subscriber search (name)", "/admin/subscribers?q=Reader+999999", "admin"),
        Page(
            "Subscribers (list, deep page)",
            "/admin/subscribers?list=evening&status=active&after=600000",
            "admin",
        ),
        Page("Subscriber", "/admin/subscribers/424242", "admin"),
        Page("Lists", "/admin/lists", "admin"),
        Page("Segments", "/admin/segments", "admin"),
    ]
    return found


def reconnected(client: httpx.Client) -> httpx.Client:
    """The same session on a new connection: uvicorn closes a keep-alive connection
    after an unhandled exception, and the next request on it would be reset."""
    fresh = httpx.Client(base_url=client.base_url, timeout=client.timeout, cookies=client.cookies)
    client.close()
    return fresh


def measure(clients: dict[str, httpx.Client], wanted: list[Page], runs: int) -> list[Timing]:
    timings = [Timing(page, [], set(), 0) for page in wanted]
    for round_ in range(WARM_UPS + runs):
        for timing in timings:
            account = timing.page.account
            started = time.perf_counter()
            try:
                answer = clients[account].get(timing.page.path)
                status, size = answer.status_code, len(answer.content)
            except httpx.HTTPError as exc:  # reported as status 0
                print(f"{timing.page.path}: {exc!r}", flush=True)
                status, size = 0, 0
            elapsed = (time.perf_counter() - started) * 1000
            if status == 0 or status >= 500:
                clients[account] = reconnected(clients[account])
            if round_ < WARM_UPS:
                continue
            timing.times_ms.append(elapsed)
            timing.statuses.add(status)
            timing.size = size
    return timings


# -- the machine ---------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def database_version(engine: Engine) -> str:
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            return f"PostgreSQL {connection.scalar(text('SHOW server_version'))}"
    return f"SQLite {sqlite3.sqlite_version}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="subscribers")
    parser.add_argument("--runs", type=int, default=15, help="timed requests per page")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--history", type=int, default=5, help="sent editions before today")
    parser.add_argument("--history-n", type=int, default=100_000, help="deliveries of each")
    parser.add_argument("--keep", type=Path, default=None, help="keep the SQLite file in DIR")
    parser.add_argument("--reuse", action="store_true", help="benchmark without seeding")
    parser.add_argument("--seed-only", action="store_true", help="seed, print counts, stop")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = args.keep or work
        folder.mkdir(parents=True, exist_ok=True)
        url = args.database_url or f"sqlite:///{folder / 'workspace-bench.db'}"
        port = free_port()
        secret = secrets.token_urlsafe(32)
        runtime = Runtime(settings_for(url, work, secret, f"http://127.0.0.1:{port}"))
        try:
            started = time.perf_counter()
            if args.reuse:
                seeded = reused(runtime, args.n)
            else:
                seeded = seed(runtime, args.n, args.history, args.history_n)
            print(f"seeded in {time.perf_counter() - started:.1f}s: {seeded}")
            for name, value in counts(runtime.engine, seeded).items():
                print(f"  {name}: {value:,}")
            if args.seed_only:
                return
            for email, role in ((EDITOR, "editor"), (ADMIN, "admin")):
                try:
                    accounts.create_account(runtime, Actor.cli(), email, role, password=PASSWORD)
                except Exception as exc:  # --reuse: the account exists
                    if not args.reuse:
                        raise
                    print(f"  {email}: {exc}")
            version = database_version(runtime.engine)
            before = fingerprint(runtime.engine)
        finally:
            runtime.close()

        log_path = folder / "server.log"
        server = start_server(url, secret, port, work, log_path)
        try:
            base_url = f"http://127.0.0.1:{port}"
            clients = {"editor": signed_in(base_url, EDITOR), "admin": signed_in(base_url, ADMIN)}
            try:
                load_before = os.getloadavg()[0]
                timings = measure(clients, pages(seeded), args.runs)
                load_after = os.getloadavg()[0]
            finally:
                for client in clients.values():
                    client.close()
        finally:
            server.terminate()
            server.wait(30)
        log_lines = log_path.read_text().splitlines()
        errors = [line for line in log_lines if '"level": "error"' in line]
        engine = make_engine(url)
        after = fingerprint(engine)
        engine.dispose()

    print(
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {cpu_model()}, {os.cpu_count()} cores, "
        f"CPython {platform.python_version()}, {version}; {args.n:,} subscribers, "
        f"{args.history} older editions of {args.history_n:,}; {args.runs} requests per page "
        f"after {WARM_UPS} warm-ups; load average {load_before:.1f} before, {load_after:.1f} after"
    )
    width = max(len(t.page.label) for t in timings)
    print(f"{'page':<{width}}  {'median ms':>9}  {'p90 ms':>8}  status  bytes    path")
    failed = False
    for t in timings:
        status = ",".join(str(s) for s in sorted(t.statuses))
        over = t.median >= TARGET_MS or t.statuses != {200}
        failed |= over
        print(
            f"{t.page.label:<{width}}  {t.median:>9.1f}  {t.p90:>8.1f}  {status:<6}  "
            f"{t.size:<7,}  {t.page.path}{'  <-- over' if over else ''}"
        )
    if errors:
        print(f"{len(errors)} errors in the server's log, first: {errors[0][:500]}")
    if after != before:
        # The PostgreSQL database is shared: another benchmark may empty it meanwhile.
        print(f"the database changed during the run ({before} before, {after} after): discard it")
        failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
