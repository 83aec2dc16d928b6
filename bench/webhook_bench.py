"""Benchmark: SendGrid Event Webhook ingest through the real HTTP endpoint, signatures on.

    .venv/bin/python bench/webhook_bench.py [--events 100000] [--batch 1000] [--runs 3]
        [--deliveries 20000] [--concurrency 1] [--database-url URL] [--profile DIR]

Per run, not timed: a fresh database (a new SQLite file, or PostgreSQL's tables
emptied), an edition with a ledger of ``--deliveries`` sent rows (seeded directly,
in batches of 1,000 with a SendGrid message id each, as dispatch_bench.py seeds
subscribers), a fresh P-256 key pair, and ``mailer serve --no-scheduler --no-worker``
(uvicorn, the production entry point) in a child process on 127.0.0.1 with that
public key. The event bodies are built and signed before the clock starts: realistic
SendGrid items (processed, delivered, open, click, deferred, bounce, blocked, dropped,
spamreport, unsubscribe) for real deliveries, custom args ``edition_id`` and
``delivery_id`` as the dispatch sets them, unique ``sg_event_id``s.

Timed: from the first POST to the last 2xx answer (ingest: verified, parsed,
stored), and from the first POST until no event is pending any more (the bounce
policy, which runs after each answer, has applied everything). Afterwards one batch
is replayed: it must store nothing. Peak memory is the server process's VmHWM.
With ``--profile DIR``, py-spy samples the server during each run (flame graphs).
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, func, insert, select, text, update

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailer.db import migrate  # noqa: E402
from mailer.db.models import (  # noqa: E402
    Base,
    Batch,
    Delivery,
    DeliveryStatus,
    Edition,
    Event,
    MailingList,
    Subscriber,
    Subscription,
)
from mailer.db.session import make_engine, make_sessionmaker, transaction  # noqa: E402
from mailer.dispatch import tallies  # noqa: E402
from mailer.events.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER  # noqa: E402
from tests import factories  # noqa: E402
from tests.webhook_keys import new_private_key, public_key_b64, sign  # noqa: E402

# Share of each kind among the events posted (per cent).
MIX = {
    "processed": 20,
    "delivered": 19,
    "open": 36,
    "click": 12,
    "deferred": 5,
    "bounce": 2,
    "blocked": 1,  # a bounce of type "blocked"
    "dropped": 2,
    "spamreport": 1,
    "unsubscribe": 2,
}
DROP_REASONS = ("Bounced Address", "Bounced Address", "Unsubscribed Address", "Invalid")
USER_AGENT = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15"


class Runtime:
    """Just what tests.factories needs."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self.sessions = make_sessionmaker(self.engine)


@dataclass(frozen=True)
class Ledger:
    edition_id: int
    # (delivery id, email, SendGrid X-Message-Id of its batch)
    rows: list[tuple[int, str, str]]


@dataclass
class RunResult:
    ingest: float
    applied: float
    peak_rss_mb: float
    stored: int
    unmatched: int
    retries: int
    server_errors: dict[str, int]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def seed(url: str, deliveries: int) -> Ledger:
    engine = make_engine(url)
    migrate.upgrade(engine)
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    runtime = Runtime(url)
    newsletter_id = factories.newsletter(runtime)  # type: ignore[arg-type]
    with transaction(runtime.sessions) as session:
        list_id = session.scalar(select(MailingList.id).where(MailingList.name == "morning"))
    edition_id = factories.edition(runtime, newsletter_id)  # type: ignore[arg-type]
    now = datetime.now(UTC)
    emails = {i: f"reader{i}@example{i % 97}.com" for i in range(1, deliveries + 1)}
    with engine.begin() as connection:
        connection.execute(
            insert(Subscriber),
            [
                {
                    "id": i,
                    "email": email,
                    "name": f"Reader {i}",
                    "status": "active",
                    "attributes": {},
                    "created_at": now,
                    "updated_at": now,
                }
                for i, email in emails.items()
            ],
        )
        connection.execute(
            insert(Subscription),
            [
                {"subscriber_id": i, "list_id": list_id, "status": "active", "created_at": now}
                for i in emails
            ],
        )
        batches = []
        for number, start in enumerate(range(1, deliveries + 1, 1000), start=1):
            size = min(1000, deliveries + 1 - start)
            batches.append((number, start, size, secrets.token_urlsafe(16)))
        connection.execute(
            insert(Batch),
            [
                {
                    "id": number,
                    "edition_id": edition_id,
                    "worker": "bench",
                    "transport": "sendgrid",
                    "size": size,
                    "outcome": "sent",
                    "provider_message_id": message_id,
                    "claimed_at": now,
                    "finished_at": now,
                }
                for number, _, size, message_id in batches
            ],
        )
        rows: list[tuple[int, str, str]] = []
        values = []
        for number, start, size, message_id in batches:
            for i in range(start, start + size):
                rows.append((i, emails[i], message_id))
                values.append(
                    {
                        "id": i,
                        "edition_id": edition_id,
                        "subscriber_id": i,
                        "email": emails[i],
                        "status": DeliveryStatus.SENT,
                        "batch_id": number,
                        "attempts": 1,
                        "message_id": message_id,
                        "queued_at": now,
                        "claimed_at": now,
                        "finished_at": now,
                    }
                )
        connection.execute(insert(Delivery), values)
        # Written by hand, so the ledger's kept counts are too (ledger.record would add them).
        tallies.add(connection, edition_id, {DeliveryStatus.SENT: len(values)})
        if connection.dialect.name == "postgresql":
            # The ids above were given, not drawn: move each sequence past them, or the
            # next row the application adds (a sign-up, a claim) collides with one.
            for table in ("subscribers", "batches", "deliveries"):
                connection.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                        f" (SELECT max(id) FROM {table}))"
                    )
                )
        connection.execute(
            update(Edition)
            .where(Edition.id == edition_id)
            .values(status="sent", send_started_at=now, sent_at=now)
        )
        connection.execute(text("ANALYZE"))
    runtime.engine.dispose()
    engine.dispose()
    return Ledger(edition_id, rows)


def make_events(ledger: Ledger, count: int, rng: random.Random) -> list[dict[str, Any]]:
    """``count`` SendGrid event items for random deliveries of the ledger, kinds per MIX."""
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=count)
    now = int(time.time())
    edition = str(ledger.edition_id)
    items = []
    for kind in kinds:
        delivery_id, email, message_id = rng.choice(ledger.rows)
        item: dict[str, Any] = {
            "email": email,
            "timestamp": now - rng.randrange(6 * 3600),
            "event": "bounce" if kind == "blocked" else kind,
            "sg_event_id": secrets.token_urlsafe(16),
            "sg_message_id": f"{message_id}.filterdrecv-5bf99c48d-5jl5f-21-5C5B8A2D-18.0",
            "category": ["newsletter-daily", f"edition-{edition}"],
            "edition_id": edition,
            "delivery_id": str(delivery_id),
        }
        if kind in ("processed", "delivered", "deferred", "bounce", "blocked", "dropped"):
            item["smtp-id"] = f"<{message_id}@ismtpd0001p1lon1.sendgrid.net>"
        if kind == "delivered":
            item |= {"response": "250 2.0.0 OK 1700000000 ok", "ip": "149.72.1.1", "tls": 1}
        elif kind == "deferred":
            item |= {"response": "421 4.7.0 try again later", "attempt": "1"}
        elif kind == "bounce":
            item |= {
                "type": "bounce",
                "status": "5.1.1",
                "reason": "550 5.1.1 The email account that you tried to reach does not exist",
                "bounce_classification": "Invalid Address",
            }
        elif kind == "blocked":
            item |= {
                "type": "blocked",
                "status": "5.7.1",
                "reason": "554 5.7.1 Message rejected due to local policy",
                "bounce_classification": "Reputation",
            }
        elif kind == "dropped":
            item |= {"reason": rng.choice(DROP_REASONS), "status": "5.0.0"}
        elif kind in ("open", "click", "unsubscribe"):
            item |= {"useragent": USER_AGENT, "ip": f"203.0.113.{rng.randrange(1, 255)}"}
            if kind == "open":
                item["sg_machine_open"] = False
            if kind == "click":
                item |= {
                    "url": f"https://news.example.org/2026/11/25/story-{rng.randrange(12)}",
                    "url_offset": {"index": rng.randrange(12), "type": "html"},
                }
        items.append(item)
    return items


def signed(key: ec.EllipticCurvePrivateKey, body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    return {
        SIGNATURE_HEADER: sign(key, stamp, body),
        TIMESTAMP_HEADER: stamp,
        "Content-Type": "application/json",
    }


def start_server(
    url: str, key: ec.EllipticCurvePrivateKey, work: Path, log_path: Path
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env |= {
        "MAILER_CONFIG_FILE": str(work / "absent.toml"),
        "MAILER_DATABASE_URL": url,
        "MAILER_SECRET_KEY": secrets.token_urlsafe(32),
        "MAILER_BASE_URL": "https://news.example.org",
        "MAILER_OUTBOX_DIR": str(work / "outbox"),
        "MAILER_SENDGRID_WEBHOOK_PUBLIC_KEY": public_key_b64(key),
        "MAILER_LOG_FORMAT": "json",
    }
    command = [sys.executable, "-m", "mailer", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--no-scheduler", "--no-worker"]
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: see {log_path}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                connection.close()
                return server, port
        except OSError:
            pass
        time.sleep(0.1)
    server.terminate()
    raise RuntimeError("the server did not become ready")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def server_errors(log: Path) -> dict[str, int]:
    """Errors the server logged (its JSON lines), by message, e.g. a failed policy run."""
    found: dict[str, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("level") in ("error", "critical"):
            # The exception's own line, e.g. "sqlalchemy.exc.OperationalError: (...) deadlock"
            lines = str(record.get("exception") or "").splitlines()
            cause = [x for x in lines if x[:1].isalpha() and ("Error" in x or "Exception" in x)]
            name = " / ".join([str(record.get("event")).strip()[:60], *cause[-1:]])[:160]
            found[name] = found.get(name, 0) + 1
    return found


def pending(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.scalar(select(func.count(Event.id)).where(Event.processed_at.is_(None))) or 0
        )


def stored_events(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.scalar(select(func.count(Event.id)).where(Event.source == "sendgrid")) or 0
        )


class Refused(Exception):
    """The server answered, but not 2xx."""


def post_one(
    connection: http.client.HTTPConnection, body: bytes, headers: dict[str, str]
) -> dict[str, Any]:
    connection.request("POST", "/webhooks/sendgrid", body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    if response.status != 200:
        raise Refused(f"HTTP {response.status}: {data[:300]!r}")
    report: dict[str, Any] = orjson.loads(data)
    return report


@dataclass
class Posted:
    reports: list[dict[str, Any]]
    # POSTs that failed (connection dropped, non-2xx) and were sent again, as SendGrid would
    retries: list[str]


def post_all(
    port: int,
    requests: list[tuple[bytes, dict[str, str]]],
    concurrency: int,
    key: ec.EllipticCurvePrivateKey,
) -> Posted:
    """POST every body; one keep-alive connection per poster, as SendGrid's senders hold.

    A failed POST is sent again on a new connection, re-signed (SendGrid retries for a
    day); up to 5 tries, each failure recorded.
    """
    retries: list[str] = []

    def poster(share: list[tuple[bytes, dict[str, str]]]) -> list[dict[str, Any]]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        reports = []
        try:
            for body, headers in share:
                for attempt in range(5):
                    try:
                        reports.append(post_one(connection, body, headers))
                        break
                    except (OSError, http.client.HTTPException, Refused) as exc:
                        if attempt == 4:
                            raise
                        retries.append(f"{type(exc).__name__}: {str(exc)[:100]}")
                        connection.close()
                        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                        headers = signed(key, body)
            return reports
        finally:
            connection.close()

    if concurrency == 1:
        return Posted(poster(requests), retries)
    shares = [requests[i::concurrency] for i in range(concurrency)]
    with ThreadPoolExecutor(concurrency) as pool:
        reports = [report for result in pool.map(poster, shares) for report in result]
    return Posted(reports, retries)


def one_run(args: argparse.Namespace, run: int, work: Path) -> RunResult:
    url = args.database_url or f"sqlite:///{work / f'bench-{run}.db'}"
    ledger = seed(url, args.deliveries)
    rng = random.Random(run)
    key = new_private_key()
    items = make_events(ledger, args.events, rng)
    bodies = [orjson.dumps(items[i : i + args.batch]) for i in range(0, len(items), args.batch)]
    log_path = work / f"server-{run}.log"  # one per run: its errors are this run's
    server, port = start_server(url, key, work, log_path)
    profiler: subprocess.Popen[bytes] | None = None
    engine = make_engine(url)
    try:
        if args.profile:
            out = Path(args.profile) / f"webhook-{'pg' if args.database_url else 'sqlite'}-{run}"
            # --idle: wall-clock time, so waits on the database show too.
            spy = str(Path(sys.executable).parent / "py-spy")
            py_spy = [spy, "record", "--rate", "200", "--idle"]
            profiler = subprocess.Popen(
                [*py_spy, "--pid", str(server.pid), "--format", "raw", "--output", f"{out}.txt"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
        # Signed now: well within the verifier's window for the whole run.
        requests = [(body, signed(key, body)) for body in bodies]
        started = time.perf_counter()
        posted = post_all(port, requests, args.concurrency, key)
        reports = posted.reports
        ingest = time.perf_counter() - started
        while pending(engine):
            time.sleep(0.05)
        applied = time.perf_counter() - started
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(60)
        # A retried POST may have been stored before its connection dropped: count the rows.
        stored = stored_events(engine)
        unmatched = sum(r["unmatched"] for r in reports)
        assert stored == args.events, (stored, args.events)
        assert sum(r["rejected"] for r in reports) == 0

        # A replayed batch (SendGrid retries for a day): nothing new is stored.
        [replay] = post_all(port, [(bodies[0], signed(key, bodies[0]))], 1, key).reports
        assert replay["stored"] == 0 and replay["duplicates"] == len(items[: args.batch]), replay
        assert stored_events(engine) == args.events
        assert pending(engine) == 0
        rss = peak_rss_mb(server.pid)
        errors = server_errors(log_path)
    except BaseException:
        log = log_path.read_text(errors="replace").splitlines()
        print("\n".join(["server log (last 40 lines):", *log[-40:]]), file=sys.stderr)
        raise
    finally:
        if profiler is not None and profiler.poll() is None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(60)
        server.terminate()
        server.wait(30)
        engine.dispose()
    print(
        f"  run {run + 1}: ingest {ingest:.2f}s ({args.events / ingest:,.0f} events/s), "
        f"applied {applied:.2f}s ({args.events / applied:,.0f} events/s), "
        f"unmatched {unmatched}, server peak RSS {rss:.0f} MB; replay stored nothing"
        + (
            f"; {len(posted.retries)} POST(s) RETRIED: {posted.retries[:3]}"
            if posted.retries
            else ""
        )
        + (f"; SERVER ERRORS: {errors}" if errors else ""),
        flush=True,
    )
    return RunResult(ingest, applied, rss, stored, unmatched, len(posted.retries), errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1, help="POSTs in flight")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--profile", default=None, help="directory for py-spy profiles")
    args = parser.parse_args()
    database = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"{args.events:,} events in batches of {args.batch:,}, {args.deliveries:,} deliveries, "
        f"{args.concurrency} POST(s) in flight, {database}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        results = [one_run(args, run, Path(tmp)) for run in range(args.runs)]
    ingest = statistics.median(r.ingest for r in results)
    applied = statistics.median(r.applied for r in results)
    print(
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.machine()}, {os.cpu_count()} "
        f"cores, CPython {platform.python_version()}, {database}; median of {args.runs}"
    )
    print(
        f"ingest (first POST to last 2xx): {ingest:.2f}s = {args.events / ingest:,.0f} events/s "
        f"(runs: {', '.join(f'{r.ingest:.2f}' for r in results)})"
    )
    print(
        f"until applied (no event pending): {applied:.2f}s = {args.events / applied:,.0f} "
        f"events/s (runs: {', '.join(f'{r.applied:.2f}' for r in results)})"
    )
    print(f"server peak RSS: {max(r.peak_rss_mb for r in results):.0f} MB (largest of the runs)")
    errors: dict[str, int] = {}
    for result in results:
        for name, count in result.server_errors.items():
            errors[name] = errors.get(name, 0) + count
    retries = sum(r.retries for r in results)
    print(f"POSTs retried: {retries}; server errors: {errors or 'none'}")


if __name__ == "__main__":
    main()
