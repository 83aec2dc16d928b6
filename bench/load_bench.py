"""Benchmark: the public endpoints under load, each as a ratio of ``/healthz`` in the same run.

    .venv/bin/python bench/load_bench.py [--runs 3] [--seconds 8] [--connections 50]
        [--webhook-connections 20] [--subscribers 40000] [--workers 1]
        [--database-url URL] [--only NAME,NAME] [--profile DIR]

Per run, not timed: a fresh database (a new SQLite file, or PostgreSQL's tables emptied)
with a newsletter, a public list, ``--subscribers`` subscribed readers and a sent edition
with a ledger row each (``webhook_bench.seed``); ``mailer serve --no-scheduler
--no-worker`` (uvicorn, the production entry point; ``--workers N`` web processes) in a
child process on 127.0.0.1, signatures on. Every link is signed as the emails sign them.

Timed, one endpoint after the other for ``--seconds`` each, ``--connections`` keep-alive
connections (one thread each) posting as fast as answers come: ``/healthz`` first, then
GET and POST ``/u/<token>`` (the one-click body; every POST a reader not yet unsubscribed),
GET ``/p/<token>``, GET ``/subscribe/daily``, GET ``/archive/daily``, GET ``/e/<token>``,
POST ``/subscribe/daily`` (a new address each; the per-client limit raised, since every
client here is 127.0.0.1), then signed 1,000-event SendGrid batches from
``--webhook-connections`` connections. Each line: answers per second, its ratio to
``/healthz``'s, p50 and p99 latency, and any answer that was not the expected status (an
endpoint with one is marked FAILED). Afterwards the webhook's events must all be applied
(exactly once: as many stored as sent, none pending); how long that took after the last
answer is reported (the run fails if nothing moves for 60 s before).

With ``--profile DIR``, py-spy samples the server (every process) for the whole run
(collapsed stacks, one file per run).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select, update

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from webhook_bench import Ledger, make_events, seed, signed  # noqa: E402

from mailer.db.models import Event, MailingList, Newsletter  # noqa: E402
from mailer.db.session import make_engine  # noqa: E402
from subscribers.tokens import sign_edition_web, sign_preferences, sign_unsubscribe  # noqa: E402
from tests.webhook_keys import new_private_key, public_key_b64  # noqa: E402

Request = tuple[str, str, bytes | None, dict[str, str]]
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ONE_CLICK = b"List-Unsubscribe=One-Click"


@dataclass
class Measured:
    name: str
    connections: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    unexpected: dict[str, int] = field(default_factory=dict)
    server_cpu: float = 0.0  # CPU seconds the server's processes spent meanwhile

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    @property
    def server_cpu_per_answer(self) -> float:
        return self.server_cpu / len(self.latencies) if self.latencies else float("nan")

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass(frozen=True)
class Endpoint:
    name: str
    make: Callable[[], Request]
    expect: int = 200
    webhook: bool = False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(
    url: str, secret: str, key: ec.EllipticCurvePrivateKey, work: Path, workers: int
) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env |= {
        "MAILER_CONFIG_FILE": str(work / "absent.toml"),
        "MAILER_DATABASE_URL": url,
        "MAILER_SECRET_KEY": secret,
        "MAILER_BASE_URL": "https://news.example.org",
        "MAILER_OUTBOX_DIR": str(work / "outbox"),
        "MAILER_SENDGRID_WEBHOOK_PUBLIC_KEY": public_key_b64(key),
        "MAILER_SUBSCRIBE_PER_CLIENT_PER_MINUTE": "100000000",
        "MAILER_LOG_FORMAT": "json",
    }
    command = [sys.executable, "-m", "mailer", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--no-scheduler", "--no-worker", "--workers", str(workers)]
    log_path = work / f"server-{port}.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log_path.read_text()[-3000:]}")
        try:
            probe = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            probe.request("GET", "/readyz")
            if probe.getresponse().status == 200:
                probe.close()
                return server, port, log_path
        except OSError:
            pass
        time.sleep(0.2)
    server.terminate()
    raise RuntimeError("the server did not become ready")


def server_cpu(pid: int) -> float:
    """CPU seconds (user and system) of a process and its children, from /proc."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def hammer(port: int, endpoint: Endpoint, connections: int, seconds: float) -> Measured:
    """``connections`` threads, each a keep-alive connection, for ``seconds``."""
    result = Measured(endpoint.name, connections, seconds)
    lock = threading.Lock()
    start = threading.Barrier(connections + 1)
    deadline = [0.0]

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        latencies: list[float] = []
        unexpected: dict[str, int] = {}
        start.wait()
        while time.monotonic() < deadline[0]:
            try:
                method, path, body, headers = endpoint.make()
            except StopIteration:  # the signed batches made beforehand are all posted
                with lock:
                    result.unexpected["ran out of requests (raise --webhook-batches)"] = 1
                break
            began = time.perf_counter()
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                status = str(response.status)
                if response.will_close:
                    connection.close()
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            if time.monotonic() > deadline[0] + 30:
                break
            latencies.append(time.perf_counter() - began)
            if status != str(endpoint.expect):
                unexpected[status] = unexpected.get(status, 0) + 1
        connection.close()
        with lock:
            result.latencies += latencies
            for status, count in unexpected.items():
                result.unexpected[status] = result.unexpected.get(status, 0) + count

    threads = [threading.Thread(target=client, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    began = time.monotonic()
    deadline[0] = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    # Requests still in flight at the deadline are counted: the wall time is until the last.
    result.seconds = max(seconds, time.monotonic() - began)
    return result


def endpoints(
    ledger: Ledger, secret: str, key: ec.EllipticCurvePrivateKey, bodies: list[bytes]
) -> list[Endpoint]:
    secret_bytes = secret.encode()
    edition = ledger.edition_id
    ids = [row[0] for row in ledger.rows]
    readers = itertools.cycle(ids)
    # POST /u/<token>: each a reader not yet unsubscribed (the seed's ids are subscriber ids).
    leaving = iter(ids)
    addresses = itertools.count(1)
    batches = iter(bodies)
    web = f"/e/{sign_edition_web(secret_bytes, edition)}"

    def unsubscribe_page() -> Request:
        return ("GET", f"/u/{sign_unsubscribe(secret_bytes, next(readers), edition)}", None, {})

    def one_click() -> Request:
        token = sign_unsubscribe(secret_bytes, next(leaving), edition)
        return ("POST", f"/u/{token}", ONE_CLICK, FORM)

    def preferences() -> Request:
        return ("GET", f"/p/{sign_preferences(secret_bytes, next(readers))}", None, {})

    def sign_up() -> Request:
        body = urlencode({"email": f"new{next(addresses)}@example.net", "name": "New Reader"})
        return ("POST", "/subscribe/daily", body.encode(), FORM)

    def webhook() -> Request:
        body = next(batches)
        return ("POST", "/webhooks/sendgrid", body, signed(key, body))

    return [
        Endpoint("GET /healthz", lambda: ("GET", "/healthz", None, {})),
        Endpoint("GET /u/<token>", unsubscribe_page),
        Endpoint("POST /u/<token>", one_click),
        Endpoint("GET /p/<token>", preferences),
        Endpoint("GET /subscribe/daily", lambda: ("GET", "/subscribe/daily", None, {})),
        Endpoint("GET /archive/daily", lambda: ("GET", "/archive/daily", None, {})),
        Endpoint("GET /e/<token>", lambda: ("GET", web, None, {})),
        Endpoint("POST /subscribe/daily", sign_up),
        Endpoint("POST /webhooks/sendgrid", webhook, webhook=True),
    ]


def applied(url: str, expected: int, stall: float) -> tuple[float, int, int]:
    """Seconds until every posted event is stored and none is pending (or until nothing
    moved for ``stall`` seconds); events stored; events pending."""
    engine = make_engine(url)
    began = last_change = time.monotonic()
    seen = (-1, -1)
    try:
        while True:
            with engine.connect() as connection:
                stored = int(
                    connection.scalar(
                        select(func.count(Event.id)).where(Event.source == "sendgrid")
                    )
                    or 0
                )
                pending = int(
                    connection.scalar(
                        select(func.count(Event.id)).where(Event.processed_at.is_(None))
                    )
                    or 0
                )
            now = time.monotonic()
            if (stored, pending) != seen:
                seen, last_change = (stored, pending), now
            if (stored >= expected and pending == 0) or now - last_change > stall:
                return now - began, stored, pending
            time.sleep(0.5)
    finally:
        engine.dispose()


def one_run(args: argparse.Namespace, run: int, work: Path) -> list[Measured]:
    url = args.database_url or f"sqlite:///{work / f'load-{run}.db'}"
    ledger = seed(url, args.subscribers)
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(update(MailingList).values(public=True))
        connection.execute(update(Newsletter).values(public_archive=True))
    engine.dispose()
    secret = secrets.token_urlsafe(32)
    key = new_private_key()
    # Signed batches for the webhook's seconds (--webhook-batches: more than it can post).
    rng = random.Random(run)
    bodies = [orjson.dumps(make_events(ledger, 1000, rng)) for _ in range(args.webhook_batches)]
    # py-spy is installed beside this interpreter when it is not on the PATH (a venv).
    spy_command = shutil.which("py-spy") or shutil.which("py-spy", path=Path(sys.executable).parent)
    if args.profile and spy_command is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    server, port, log_path = start_server(url, secret, key, work, args.workers)
    spy = None
    if args.profile and spy_command:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        spy = subprocess.Popen(
            [
                spy_command,
                "record",
                "--subprocesses",
                # What holds the interpreter, not threads waiting for it or for SQLite.
                "--gil",
                "--pid",
                str(server.pid),
                "--format",
                "raw",
                "-o",
                str(Path(args.profile) / f"load-run{run}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    results = []
    try:
        for endpoint in endpoints(ledger, secret, key, bodies):
            if args.only and endpoint.name not in args.only and endpoint.name != "GET /healthz":
                continue
            connections = args.webhook_connections if endpoint.webhook else args.connections
            cpu_before = server_cpu(server.pid)
            measured = hammer(port, endpoint, connections, args.seconds)
            measured.server_cpu = server_cpu(server.pid) - cpu_before
            results.append(measured)
            print_line(measured, results[0].rate)
        webhook = [m for m in results if m.name == "POST /webhooks/sendgrid"]
        if webhook:
            sent = len(webhook[0].latencies) * 1000
            seconds, stored, pending = applied(url, sent, 60)
            print(
                f"    webhook: {sent:,} events posted, {stored:,} stored, {pending:,} pending "
                f"{seconds:.1f} s after the last answer"
            )
            if stored != sent or pending:
                webhook[0].unexpected["not applied exactly once"] = 1
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        if spy is not None:
            spy.wait(60)
    errors = [
        line
        for line in log_path.read_text(errors="replace").splitlines()
        if '"level": "error"' in line or '"level": "critical"' in line
    ]
    if errors:
        # The exception's own last line (what went wrong), not the traceback's start.
        record = orjson.loads(errors[0])
        cause = str(record.get("exception") or record.get("event")).strip().splitlines()[-1]
        print(f"    server logged {len(errors)} errors, e.g. {record.get('event')}: {cause[:300]}")
    return results


def print_line(m: Measured, healthz: float) -> None:
    flag = f"  FAILED {m.unexpected}" if m.unexpected else ""
    print(
        f"  {m.name:<26} {m.rate:8.1f}/s  ratio {m.rate / healthz:5.2f}  "
        f"p50 {m.quantile(0.5) * 1000:7.1f} ms  p99 {m.quantile(0.99) * 1000:7.1f} ms  "
        f"server CPU {m.server_cpu_per_answer * 1000:5.2f} ms  "
        f"({len(m.latencies):,} answers, {m.connections} connections){flag}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--webhook-connections", type=int, default=20)
    parser.add_argument("--webhook-batches", type=int, default=400)
    parser.add_argument("--subscribers", type=int, default=40_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--database-url")
    parser.add_argument("--only", type=lambda s: set(s.split(",")), default=None)
    parser.add_argument("--profile")
    args = parser.parse_args()
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, Python "
        f"{platform.python_version()}, database {args.database_url or 'SQLite file'}, "
        f"{args.workers} web process(es)"
    )
    runs: list[list[Measured]] = []
    with tempfile.TemporaryDirectory(prefix="load-bench-") as tmp:
        for run in range(1, args.runs + 1):
            print(f"run {run}:")
            runs.append(one_run(args, run, Path(tmp)))
    print(f"median of {len(runs)} runs (ratios per run, then the median):")
    failed = False
    for index, first in enumerate(runs[0]):
        same = [r[index] for r in runs]
        ratio = statistics.median(m.rate / r[0].rate for m, r in zip(same, runs, strict=True))
        rate = statistics.median(m.rate for m in same)
        p50 = statistics.median(m.quantile(0.5) for m in same) * 1000
        p99 = statistics.median(m.quantile(0.99) for m in same) * 1000
        bad = [m.unexpected for m in same if m.unexpected]
        failed = failed or bool(bad)
        print(
            f"  {first.name:<26} {rate:8.1f}/s  ratio {ratio:5.2f}  p50 {p50:7.1f} ms  "
            f"p99 {p99:7.1f} ms{'  FAILED ' + str(bad) if bad else ''}"
        )
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
