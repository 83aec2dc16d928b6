"""Benchmark: one edition to N subscribers through the SendGrid transport to a local sink.

    .venv/bin/python bench/dispatch_bench.py [--n 100000] [--runs 3] [--database-url URL]

Seeding the N subscribers is not timed. The timed part is what `mailer editions
send` does: fill the ledger, claim batches of 1000, build and post the bodies,
record the outcomes, until the edition is sent. The sink is ../shared/bench/sinks.py
(a fast SendGrid capture server) run as a child process on 127.0.0.1. Peak
memory is this process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailer.db import migrate  # noqa: E402
from mailer.db.models import Base, Edition, MailingList, Subscriber, Subscription  # noqa: E402
from mailer.db.session import make_engine, make_sessionmaker, transaction  # noqa: E402
from mailer.dispatch.dispatcher import DispatchSettings, send_edition  # noqa: E402
from mailer.transports.sendgrid import SendGridTransport  # noqa: E402
from tests import factories  # noqa: E402

SINK = ROOT.parent / "shared" / "bench" / "sinks.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_sink() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, str(SINK), "sendgrid", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/stats", timeout=1)  # noqa: S310 - loopback
            return sink, url
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the sink did not start")


def _cpu(stat: Path, command: str | None = None) -> float:
    """CPU seconds (user + system) of the process whose /proc stat file this is."""
    try:
        text_ = stat.read_text()
    except OSError:
        return 0.0
    name, _, rest = text_.partition(") ")
    if command is not None and not name.endswith(f"({command}"):
        return 0.0
    fields = rest.split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu() -> float:
    """CPU seconds used so far by the local PostgreSQL server's processes (readable as root)."""
    return sum(_cpu(stat, "postgres") for stat in Path("/proc").glob("[0-9]*/stat"))


def sink_cpu(pid: int) -> float:
    """CPU seconds used so far by the sink (it shares the machine's two cores with us)."""
    return _cpu(Path(f"/proc/{pid}/stat"))


class SenderPeaks(logging.Handler):
    """Catches the sender process's peak memory, which the dispatcher logs as it stops."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.peak_mb = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "sender_process.stopped":
            self.peak_mb = max(self.peak_mb, float(record.__dict__["peak_rss_mb"]))


class Runtime:
    """Just what tests.factories needs."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self.sessions = make_sessionmaker(self.engine)


def seed(url: str, n: int) -> int:
    engine = make_engine(url)
    migrate.upgrade(engine)
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    runtime = Runtime(url)
    newsletter_id = factories.newsletter(runtime)  # type: ignore[arg-type]
    with transaction(runtime.sessions) as session:
        list_id = session.query(MailingList.id).filter_by(name="morning").scalar()
    now = datetime.now(UTC)
    step = 50_000
    with engine.begin() as connection:
        for start in range(1, n + 1, step):
            ids = range(start, min(start + step, n + 1))
            connection.execute(
                insert(Subscriber),
                [
                    {
                        "id": i,
                        "email": f"reader{i}@example{i % 97}.com",
                        "name": f"Reader {i}",
                        "status": "active",
                        "attributes": {},
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in ids
                ],
            )
            connection.execute(
                insert(Subscription),
                [
                    {"subscriber_id": i, "list_id": list_id, "status": "active", "created_at": now}
                    for i in ids
                ],
            )
        if engine.dialect.name == "postgresql":
            connection.execute(text("ANALYZE"))
        else:
            connection.execute(text("ANALYZE"))
    edition_id = factories.edition(runtime, newsletter_id)  # type: ignore[arg-type]
    runtime.engine.dispose()
    engine.dispose()
    return edition_id


def seeded(url: str, n: int) -> int:
    """Seed in a child process, so that this process's peak memory is the send's."""
    child = subprocess.run(
        [sys.executable, __file__, "--seed-only", "--n", str(n), "--database-url", url],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(child.stdout.split()[-1])


def one_run(url: str, n: int, sink: subprocess.Popen[bytes], sink_url: str) -> tuple[float, float]:
    edition_id = seeded(url, n)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    transport = SendGridTransport("SG.bench", sink_url, timeout=60)
    # A sender process, as `mailer editions send` has by default (MAILER_SENDER_PROCESS).
    settings = DispatchSettings(
        base_url="https://news.example.org", secret_key=b"k" * 32, sender_process=True
    )
    sender_peaks = SenderPeaks()
    dispatch_log = logging.getLogger("mailer.dispatch.dispatcher")
    dispatch_log.setLevel(logging.INFO)
    dispatch_log.addHandler(sender_peaks)
    started, cpu_before = time.perf_counter(), os.times()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before, sink_before = postgres_cpu(), sink_cpu(sink.pid)
    try:
        tally = send_edition(sessions, edition_id, transport, settings)
    finally:
        dispatch_log.removeHandler(sender_peaks)
    elapsed, cpu_after = time.perf_counter() - started, os.times()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    sender = (children_after.ru_utime - children_before.ru_utime) + (
        children_after.ru_stime - children_before.ru_stime
    )
    user = cpu_after.user - cpu_before.user
    cpu = user + (cpu_after.system - cpu_before.system)
    server, sink_used = postgres_cpu() - server_before, sink_cpu(sink.pid) - sink_before
    print(
        f"run: {elapsed:.2f}s wall, CPU {cpu:.2f}s in this process ({user:.2f}s user)"
        + (f", {server:.2f}s in PostgreSQL's processes" if engine.dialect.name != "sqlite" else "")
        + f", {sender:.2f}s in the sender process, {sink_used:.2f}s in the sink"
    )
    transport.close()
    with sessions() as session:
        status = session.get(Edition, edition_id).status  # type: ignore[union-attr]
    assert tally["sent"] == n and status == "sent", (tally, status)
    engine.dispose()
    return elapsed, sender_peaks.peak_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--seed-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed_only:
        print(seed(args.database_url, args.n))
        return
    sink, sink_url = start_sink()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            times, sender_peaks = [], []
            for run in range(args.runs):
                url = args.database_url or f"sqlite:///{Path(tmp) / f'bench-{run}.db'}"
                elapsed, sender_peak = one_run(url, args.n, sink, sink_url)
                times.append(elapsed)
                sender_peaks.append(sender_peak)
    finally:
        sink.terminate()
        sink.wait()
    median = statistics.median(times)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    database = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.machine()}, {os.cpu_count()} "
        f"cores, CPython {platform.python_version()}, {database}; median of {args.runs}"
    )
    print(
        f"{args.n:,} recipients in {median:.2f}s = {args.n / median:,.0f} recipients/s "
        f"(runs: {', '.join(f'{t:.2f}' for t in times)}); peak RSS {peak_mb:.0f} MB "
        f"in this process and {max(sender_peaks):.0f} MB in the sender process "
        "(the send; seeding runs in a child process)"
    )


if __name__ == "__main__":
    main()
