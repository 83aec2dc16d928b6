"""Benchmark: ingest 10,000 briefing files and a 500-item feed, then pull them again.

    .venv/bin/python bench/pull_bench.py [--files 10000] [--items 500] [--runs 3]
                                          [--database-url URL]

Each run starts from an empty database (a SQLite file unless --database-url is
given; on PostgreSQL the tables are emptied between runs). The feed is served
by a real HTTP server on 127.0.0.1 with an ETag, so the re-pull of the feed is
one conditional GET answered 304. Prints medians over the runs and the ratio
first pull / re-pull.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailer.briefings import feeds
from mailer.briefings.pull import pull_sources
from mailer.briefings.sources import add_source
from mailer.db import migrate
from mailer.db.models import Base, Source, SourceKind
from mailer.db.session import make_engine, make_sessionmaker, transaction
from tests.feed_server import Route, rss, serving

LABELS = ("Some stuff you should know before you read", "What's going on now", "Why it matters")


def write_files(folder: Path, count: int) -> None:
    for i in range(count):
        body = [
            "Already a subscriber? Log in to keep reading.",
            f"Officials in district {i} announced a new plan for the harbour on Monday.",
        ]
        body += [
            f"{label}: Paragraph {n} about item {i}, with enough words to be realistic "
            "and a number or two like 42 and 2026."
            for n, label in enumerate(LABELS)
        ]
        body.append("An unlabelled follow-on paragraph that belongs to the section before.")
        (folder / f"briefing-{i:05d}.txt").write_text("\n".join(body) + "\n", encoding="utf-8")


def feed_items(count: int) -> list[dict[str, str]]:
    return [
        {
            "guid": f"item-{i}",
            "title": f"Feed story {i}",
            "content": (
                f"<p>Something happened in place {i} this morning.</p>"
                f"<p><strong>What&rsquo;s going on now:</strong> Details about story {i}.</p>"
                "<p>More context in a follow-on paragraph.</p>"
                f"<p><b>What to watch:</b> A decision is due on day {i % 30 + 1}.</p>"
            ),
            "tags": "news,bench",
        }
        for i in range(count)
    ]


def reset(url: str | None, workdir: Path, run: int) -> str:
    if url is None:
        return f"sqlite:///{workdir / f'bench-{run}.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    with engine.begin() as connection:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


def one_run(url: str, folder: Path, feed_url: str) -> dict[str, float]:
    engine = make_engine(url)
    migrate.upgrade(engine)
    sessions = make_sessionmaker(engine)
    with transaction(sessions) as session:
        add_source(session, name="desk", kind=SourceKind.FOLDER, location=str(folder))
        add_source(session, name="wire", kind=SourceKind.FEED, location=feed_url)
    timings: dict[str, float] = {}
    with feeds.make_client("mailer-bench/1.0") as client:
        for phase in ("first", "again"):
            for name in ("desk", "wire"):
                with sessions() as session:
                    source = session.query(Source).filter_by(name=name).one()
                started = time.perf_counter()
                (report,) = pull_sources(sessions, [source], client)
                timings[f"{name}_{phase}"] = time.perf_counter() - started
                assert report.failed == 0, report.errors[:3]
    engine.dispose()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, serving() as server:
        workdir = Path(tmp)
        folder = workdir / "briefings"
        folder.mkdir()
        write_files(folder, args.files)
        server.routes["/feed.rss"] = Route(body=rss(feed_items(args.items)), etag='"bench"')
        runs = [
            one_run(reset(args.database_url, workdir, run), folder, server.url("/feed.rss"))
            for run in range(args.runs)
        ]

    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    database = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, "
        f"{platform.python_implementation()} {platform.python_version()}, {database}; "
        f"median of {args.runs} runs"
    )
    for name, count in (("desk", args.files), ("wire", args.items)):
        first, again = median(f"{name}_first"), median(f"{name}_again")
        print(
            f"{name:>4}: first pull {count} items in {first:.2f}s ({count / first:,.0f} items/s); "
            f"re-pull {again:.3f}s ({count / again:,.0f} items/s); "
            f"first/re-pull = {first / again:.0f}x"
        )


if __name__ == "__main__":
    main()
