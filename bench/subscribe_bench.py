"""Benchmark: the public subscribe form over real HTTP, concurrent clients, nothing lost.

    .venv/bin/python bench/subscribe_bench.py [--requests 5000] [--concurrency 32]
        [--runs 3] [--database-url URL]

``mailer serve`` (uvicorn, the production entry point, without scheduler or worker) runs
in a child process with the outbox transport. Each run seeds a newsletter with one public
double opt-in list, then posts ``--requests`` sign-ups of distinct addresses from
``--concurrency`` keep-alive connections (one thread each) and times them. Afterwards it
checks that nothing was lost: every answered sign-up (200) has its subscriber row, its
pending subscription, its consent record and its confirmation email in the outbox.

All clients are 127.0.0.1 (loopback cannot fake distinct client addresses), so the
per-client limit is raised for the server with ``MAILER_SUBSCRIBE_PER_CLIENT_PER_MINUTE``;
in production it stays at its default (10 a minute).
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

from sqlalchemy import func, select, text, update

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailer.db import migrate  # noqa: E402
from mailer.db.models import Base, MailingList  # noqa: E402
from mailer.db.session import make_engine, make_sessionmaker, transaction  # noqa: E402
from subscribers.models import Consent, Subscriber, Subscription  # noqa: E402
from tests import factories  # noqa: E402


class Runtime:
    """Just what tests.factories needs."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self.sessions = make_sessionmaker(self.engine)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def seed(url: str) -> int:
    engine = make_engine(url)
    migrate.upgrade(engine)
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    runtime = Runtime(url)
    factories.newsletter(runtime)  # type: ignore[arg-type]
    with transaction(runtime.sessions) as session:
        session.execute(update(MailingList).values(public=True))
        list_id = session.scalar(select(MailingList.id))
    runtime.engine.dispose()
    assert list_id is not None
    return list_id


def start_server(
    url: str, work: Path, log_path: Path, workers: int
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env |= {
        "MAILER_CONFIG_FILE": str(work / "absent.toml"),
        "MAILER_DATABASE_URL": url,
        "MAILER_SECRET_KEY": secrets.token_urlsafe(32),
        "MAILER_BASE_URL": "https://news.example.org",
        "MAILER_OUTBOX_DIR": str(work / "outbox"),
        "MAILER_LOG_LEVEL": "WARNING",
        "MAILER_LOG_FORMAT": "json",
        # Every client of the benchmark is 127.0.0.1 (see the docstring).
        "MAILER_SUBSCRIBE_PER_CLIENT_PER_MINUTE": "100000000",
    }
    command = [sys.executable, "-m", "mailer", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--no-scheduler", "--no-worker", "--workers", str(workers)]
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


def post_all(port: int, addresses: list[str], list_id: int, concurrency: int) -> dict[str, int]:
    """Each address's answer status (0: the connection failed)."""

    def poster(share: list[str]) -> dict[str, int]:
        answers: dict[str, int] = {}
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        try:
            for address in share:
                body = urlencode({"email": address, "name": "Bench Reader", "lists": list_id})
                try:
                    connection.request("POST", "/subscribe/daily", body, headers)
                    response = connection.getresponse()
                    response.read()
                    answers[address] = response.status
                except OSError:
                    answers[address] = 0
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        finally:
            connection.close()
        return answers

    shares = [addresses[i::concurrency] for i in range(concurrency)]
    with ThreadPoolExecutor(concurrency) as pool:
        merged: dict[str, int] = {}
        for part in pool.map(poster, shares):
            merged |= part
    return merged


def check(url: str, outbox: Path, accepted: set[str]) -> list[str]:
    """What an accepted sign-up is missing: row, pending subscription, consent, email."""
    problems = []
    engine = make_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(select(Subscriber.id, Subscriber.email)).all()
        emails = {email: sid for sid, email in rows}
        pending = set(
            connection.scalars(
                select(Subscription.subscriber_id).where(Subscription.status == "pending")
            )
        )
        consented = set(connection.scalars(select(Consent.subscriber_id)))
        consents = connection.scalar(select(func.count()).select_from(Consent))
    engine.dispose()
    folder = outbox / "test-sends" / "edition-0"
    mailed = {p.name.rsplit("-", 1)[1].removesuffix(".eml") for p in folder.glob("*.eml")}
    for address in sorted(accepted):
        sid = emails.get(address)
        if sid is None:
            problems.append(f"{address}: no subscriber row")
        elif sid not in pending:
            problems.append(f"{address}: no pending subscription")
        elif sid not in consented:
            problems.append(f"{address}: no consent record")
        elif str(sid) not in mailed:
            problems.append(f"{address}: no confirmation email")
    if consents != len(accepted):
        problems.append(f"{consents} consent rows for {len(accepted)} sign-ups")
    return problems


def one_run(args: argparse.Namespace, run: int, work: Path) -> tuple[float, int]:
    url = args.database_url or f"sqlite:///{work / f'bench-{run}.db'}"
    list_id = seed(url)
    outbox = work / "outbox"
    server, port = start_server(url, work, work / f"server-{run}.log", args.workers)
    try:
        addresses = [f"run{run}-reader{i}@example{i % 89}.com" for i in range(args.requests)]
        # Warm the server's code paths (not timed, not counted).
        post_all(port, [f"warm{run}-{i}@example.org" for i in range(50)], list_id, 4)
        started = time.perf_counter()
        answers = post_all(port, addresses, list_id, args.concurrency)
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(30)
    accepted = {a for a, status in answers.items() if status == 200}
    refused = len(answers) - len(accepted)
    warm = {f"warm{run}-{i}@example.org" for i in range(50)}
    problems = check(url, outbox, accepted | warm)
    rate = args.requests / elapsed
    print(
        f"run {run}: {args.requests:,} sign-ups in {elapsed:.2f}s = {rate:,.0f}/s; "
        f"{len(accepted):,} answered 200, {refused} not; lost: {len(problems)}"
    )
    for problem in problems[:10]:
        print("  ", problem)
    if problems or refused:
        raise SystemExit("sign-ups were lost or refused")
    return rate, len(accepted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--workers", type=int, default=1, help="web processes (serve --workers)")
    args = parser.parse_args()
    rates = []
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory() as tmp:
            rates.append(one_run(args, run, Path(tmp))[0])
    backend = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.machine()}, "
        f"{os.cpu_count()} cores, CPython {platform.python_version()}, {backend}; "
        f"median of {args.runs}"
    )
    runs = ", ".join(f"{r:,.0f}" for r in rates)
    print(
        f"{statistics.median(rates):,.0f} sign-ups/s (runs: {runs}), "
        f"{args.concurrency} concurrent clients, {args.workers} web process(es), "
        "each sign-up with its row, consent and confirmation"
    )


if __name__ == "__main__":
    main()
