"""Benchmark: messages per second through the SMTP transport to a local SMTP sink.

    .venv/bin/python bench/smtp_bench.py [--messages 5000] [--runs 3] [--pools 1,4,8]

Builds one rendered edition (the demo briefings and template), then hands N
recipients in batches of 1000 to ``SmtpTransport`` with each pool size, against
../shared/bench/sinks.py's aiosmtpd sink in a child process on 127.0.0.1.
Each message is the full multipart/alternative MIME the outbox writes.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.dispatch_bench import SINK, free_port  # noqa: E402
from mailer.briefings.parser import parse_file  # noqa: E402
from mailer.briefings.store import stored_sections  # noqa: E402
from mailer.demo.setup import BRIEFINGS_DIR  # noqa: E402
from mailer.rendering.render import (  # noqa: E402
    BriefingView,
    EditionView,
    NewsletterView,
    render_edition,
)
from mailer.transports.base import Envelope, Outcome, Recipient  # noqa: E402
from mailer.transports.smtp import SmtpConfig, SmtpTransport  # noqa: E402


class _Stored:
    def __init__(self, path: Path) -> None:
        parsed = parse_file(path)
        self.title, self.lead, self.lead_html = parsed.title, parsed.lead, parsed.lead_html
        self.sections = stored_sections(parsed)
        self.url, self.tags = parsed.url, list(parsed.tags)


def envelope() -> Envelope:
    rendered = render_edition(
        "stuff-you-should-know",
        NewsletterView(
            "The Daily Briefing", "Briefing Desk", "100 Harbour Street", "you signed up"
        ),
        EditionView("Today's briefing", "Plus 5 more", date(2026, 11, 25)),
        [BriefingView.from_stored(_Stored(p)) for p in sorted(BRIEFINGS_DIR.iterdir())],
    )
    return Envelope(
        edition_id=1,
        newsletter_slug="daily",
        from_name="Briefing Desk",
        from_email="desk@news.example.org",
        reply_to=None,
        subject="Today's briefing",
        html=rendered.html,
        text=rendered.text,
        nonce=rendered.nonce,
    )


def one_run(port: int, pool: int, count: int, env: Envelope) -> float:
    transport = SmtpTransport(
        SmtpConfig(host="127.0.0.1", port=port, security="none", pool_size=pool)
    )
    recipients = [
        Recipient(i, f"reader{i}@example.com", f"Reader {i}", f"https://news.example.org/u/{i}")
        for i in range(1, count + 1)
    ]
    started = time.perf_counter()
    for start in range(0, count, 1000):
        results = transport.send(env, recipients[start : start + 1000])
        assert all(r.outcome is Outcome.SENT for r in results), results[0]
    elapsed = time.perf_counter() - started
    transport.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pools", default="1,4,8")
    args = parser.parse_args()
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, str(SINK), "smtp", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.5)
    env = envelope()
    try:
        print(
            f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.machine()}, CPython "
            f"{platform.python_version()}; {len(env.html) // 1024} KB HTML per message; "
            f"median of {args.runs}"
        )
        for pool in (int(p) for p in args.pools.split(",")):
            times = [one_run(port, pool, args.messages, env) for _ in range(args.runs)]
            median = statistics.median(times)
            print(
                f"pool {pool}: {args.messages:,} messages in {median:.2f}s = "
                f"{args.messages / median:,.0f} messages/s"
            )
    finally:
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    main()
