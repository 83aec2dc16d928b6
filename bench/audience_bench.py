"""Audience benchmark: import, export and segment counts over a million subscribers.

    .venv/bin/python bench/audience_bench.py all --n 1000000 --runs 3 [--database-url URL]

``import``: a fresh database each run (migrated; on PostgreSQL the tables are emptied), a
CSV of N rows written beforehand (email, name, three attributes: age as a number, city,
a joined date), then ``subscribers.importer.import_file`` onto one list in a child process
of its own, whose peak RSS (VmHWM) is the import's memory. ``export``: the CSV of everyone,
consumed and thrown away. ``segment``: ``SELECT count(*)`` of the newsletter's audience
narrowed by a rule of three conditions (a numeric attribute comparison, ``subscribed_at``
within the last 30 days and a text match). Export and segment run on the last import's
database. Medians of ``--runs``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dispatch_bench import _cpu, postgres_cpu, start_sink  # noqa: E402
from sqlalchemy import Engine, func, select, text  # noqa: E402

from mailer.db import migrate  # noqa: E402
from mailer.db.session import make_engine, make_sessionmaker  # noqa: E402
from mailer.dispatch.dispatcher import DispatchSettings, send_edition  # noqa: E402
from mailer.transports.sendgrid import SendGridTransport  # noqa: E402
from subscribers import exporter, importer  # noqa: E402
from subscribers.audience import mailable  # noqa: E402
from subscribers.models import MailingList, Subscriber  # noqa: E402
from subscribers.segments import compile_rule  # noqa: E402
from tests import factories  # noqa: E402

RULE = {
    "match": "all",
    "conditions": [
        {"field": "attributes.age", "op": "gte", "value": 40},
        {"field": "subscribed_at", "op": "within_last_days", "value": 30},
        {"field": "attributes.city", "op": "in", "value": ["Arden", "Porth"]},
    ],
}
CITIES = ["Arden", "Porth", "Valmere", "Lisbon", "Tokyo"]


def write_csv(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("email,name,age,city,joined\n")
        for i in range(n):
            domain = ("example.com", "example.org", "mail.example.net")[i % 3]
            out.write(
                f"reader{i:07d}@{domain},Reader {i},{18 + i % 60},{CITIES[i % 5]},"
                f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}\n"
            )


def fresh(url: str) -> None:
    """An empty, migrated database. On PostgreSQL the schema is dropped and made again, so
    that no statistics of an earlier run are left for the planner (as with a new file on
    SQLite): point ``--database-url`` at a database of the benchmark's own."""
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":
        Path(engine.url.database or "").unlink(missing_ok=True)
    else:
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()


def child_import(url: str, path: Path, *, analyze: bool = True) -> None:
    """Run in a child process: the import alone, then its peak memory. Without
    ``analyze``, the import as it was before it refreshed the planner's statistics."""
    if not analyze:
        vars(importer)["analyze_audience"] = lambda factory: None
    engine = make_engine(url)
    started, cpu = time.perf_counter(), time.process_time()
    report = importer.import_file(make_sessionmaker(engine), path, "morning")
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    server = None
    if engine.dialect.name == "postgresql":
        # The server process of the connection the import used (the pool's one), read
        # before this process ends and closes it.
        with engine.connect() as connection:
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        server = round(_cpu(Path(f"/proc/{pid}/stat")), 2)
    hwm = next(
        int(line.split()[1]) // 1024
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmHWM")
    )
    print(
        json.dumps(
            {
                "seconds": round(elapsed, 2),
                "cpu": round(cpu, 2),
                "server_cpu": server,
                "added": report.added,
                "peak_mb": hwm,
            }
        )
    )


def imported(url: str, path: Path, *, analyze: bool = True) -> dict[str, float]:
    """Import ``path`` in a child process (onto the database as it is)."""
    command = [sys.executable, __file__, "_child", "--database-url", url, "--csv", str(path)]
    out = subprocess.run(
        [*command, *([] if analyze else ["--no-analyze"])],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run_import(url: str, path: Path, runs: int) -> list[dict[str, float]]:
    results = []
    for _ in range(runs):
        fresh(url)
        result = imported(url, path)
        print(f"  import: {result}", flush=True)
        results.append(result)
    return results


def run_export(url: str, runs: int) -> list[float]:
    engine = make_engine(url)
    times = []
    for _ in range(runs):
        started, cpu = time.perf_counter(), time.process_time()
        server = postgres_cpu()
        size = sum(len(chunk) for chunk in exporter.export_rows(engine))
        times.append(time.perf_counter() - started)
        cpu, server = time.process_time() - cpu, postgres_cpu() - server
        print(
            f"  export: {times[-1]:.2f} s, {size / 1e6:.0f} MB of CSV, CPU {cpu:.2f} s here"
            + (f", {server:.2f} s in PostgreSQL" if engine.dialect.name == "postgresql" else ""),
            flush=True,
        )
    return times


def run_segment(url: str, runs: int) -> list[float]:
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        list_ids = list(session.scalars(select(MailingList.id)))
        if engine.dialect.name == "postgresql":
            session.execute(text("ANALYZE"))
            session.commit()
    times = []
    for _ in range(runs):
        with sessions() as session:
            started = time.perf_counter()
            count = session.scalar(
                select(func.count())
                .select_from(Subscriber)
                .where(mailable(list_ids), compile_rule(RULE))
            )
            times.append(time.perf_counter() - started)
        print(f"  segment: {times[-1] * 1000:.0f} ms, {count} match", flush=True)
    return times


def run_send(url: str, path: Path, runs: int) -> dict[str, list[float]]:
    """Send an edition to everyone just imported, through the SendGrid transport to the
    local sink, right after the import: once as the import was (no ANALYZE; the
    planner still takes the tables for empty) and once as it is now."""
    times: dict[str, list[float]] = {"without ANALYZE": [], "with ANALYZE": []}
    sink, sink_url = start_sink()
    try:
        for _ in range(runs):
            for label, analyze in (("without ANALYZE", False), ("with ANALYZE", True)):
                fresh(url)
                engine = make_engine(url)
                runtime = _Runtime(engine)
                newsletter_id = factories.newsletter(runtime)  # type: ignore[arg-type]
                imported(url, path, analyze=analyze)
                edition_id = factories.edition(runtime, newsletter_id)  # type: ignore[arg-type]
                transport = SendGridTransport("SG.bench", sink_url, timeout=60)
                settings = DispatchSettings(
                    base_url="https://news.example.org", secret_key=b"k" * 32
                )
                started = time.perf_counter()
                tally = send_edition(runtime.sessions, edition_id, transport, settings)
                times[label].append(time.perf_counter() - started)
                transport.close()
                engine.dispose()
                print(f"  send {label}: {times[label][-1]:.2f} s, {tally}", flush=True)
    finally:
        sink.terminate()
        sink.wait()
    return times


class _Runtime:
    """Just what tests.factories needs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = make_sessionmaker(engine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["all", "import", "export", "segment", "send", "_child"])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--csv", type=Path, default=None)
    parser.add_argument("--no-analyze", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.what == "_child":
        child_import(args.database_url, args.csv, analyze=not args.no_analyze)
        return
    # The CSV and the SQLite file (hundreds of MB at a million) go when the run ends.
    workdir = Path(tempfile.mkdtemp(prefix="audience-bench-"))
    try:
        run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, workdir: Path) -> None:
    url = args.database_url or f"sqlite:///{workdir / 'bench.db'}"
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{make_engine(url).dialect.name}, n={args.n}",
        flush=True,
    )
    if args.what in ("all", "import"):
        path = args.csv or workdir / "people.csv"
        if not path.exists():
            write_csv(path, args.n)
        imports = run_import(url, path, args.runs)
        seconds = statistics.median(r["seconds"] for r in imports)
        peak = statistics.median(r["peak_mb"] for r in imports)
        print(f"import: median {seconds:.2f} s, {args.n / seconds:,.0f} rows/s, peak {peak} MB")
    if args.what == "send":
        path = args.csv or workdir / "people.csv"
        if not path.exists():
            write_csv(path, args.n)
        for label, spent in run_send(url, path, args.runs).items():
            median = statistics.median(spent)
            print(f"send after import, {label}: median {median:.2f} s, {args.n / median:,.0f}/s")
        return
    if args.what in ("all", "export"):
        seconds = statistics.median(run_export(url, args.runs))
        print(f"export: median {seconds:.2f} s, {args.n / seconds:,.0f} rows/s")
    if args.what in ("all", "segment"):
        seconds = statistics.median(run_segment(url, args.runs))
        print(f"segment count: median {seconds * 1000:.0f} ms")


if __name__ == "__main__":
    main()
