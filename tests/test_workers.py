"""Real `mailer worker` processes sharing editions through the ledger, and dying mid-send."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailer.db.models import Edition
from mailer.db.session import transaction
from mailer.dispatch import dispatcher, ledger
from mailer.runtime import Runtime
from tests import factories
from tests.conftest import SECRET
from tests.sendgrid_sink import API_KEY, SinkServer, sendgrid_sink

MAILER = [sys.executable, "-m", "mailer"]


@pytest.fixture
def sink() -> Iterator[SinkServer]:
    with sendgrid_sink() as server:
        yield server


def worker_env(runtime: Runtime, sink: SinkServer, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_DATABASE_URL=runtime.settings.database_url,
        MAILER_TRANSPORT="sendgrid",
        MAILER_SENDGRID_API_KEY=API_KEY,
        MAILER_SENDGRID_BASE_URL=sink.base_url,
        MAILER_SENDGRID_TIMEOUT_SECONDS="60",
        MAILER_SECRET_KEY=SECRET,
        MAILER_BASE_URL="https://news.example.org",
        MAILER_CONFIG_FILE=str(tmp_path / "absent.toml"),
        MAILER_LOG_FORMAT="json",
    )
    return env


def started_edition(runtime: Runtime, count: int) -> int:
    newsletter_id = factories.newsletter(runtime)
    factories.subscribers(runtime, count)
    edition_id = factories.edition(runtime, newsletter_id)
    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        assert dispatcher.start(session, edition) == count
    return edition_id


def counts(runtime: Runtime, edition_id: int) -> dict[str, int]:
    with runtime.sessions() as session:
        return ledger.counts(session, edition_id)


def killed_when(env: dict[str, str], ready: Callable[[], bool]) -> None:
    """Start a draining worker and SIGKILL it as soon as ``ready`` (within a minute)."""
    victim = subprocess.Popen(
        [*MAILER, "worker", "--drain"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ready():
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)


def drained(env: dict[str, str]) -> None:
    """A survivor worker drains what is left, and exits 0."""
    survivor = subprocess.run(
        [*MAILER, "worker", "--drain", "--poll-interval", "0.2"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert survivor.returncode == 0, survivor.stderr.decode()[-2000:]


def test_three_workers_share_one_edition_exactly_once(
    runtime: Runtime, sink: SinkServer, tmp_path: Path
) -> None:
    if not runtime.settings.database_url.startswith("postgresql"):
        pytest.skip("several machines' workers are a PostgreSQL deployment")
    edition_id = started_edition(runtime, 20_000)
    env = worker_env(runtime, sink, tmp_path)

    workers = [
        subprocess.Popen(
            [*MAILER, "worker", "--drain", "--poll-interval", "0.2"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    outputs = [w.communicate(timeout=240) for w in workers]

    assert [w.returncode for w in workers] == [0, 0, 0], outputs
    seen = sink.sink.delivery_ids()
    assert len(seen) == len(set(seen)) == 20_000
    assert counts(runtime, edition_id)["sent"] == 20_000
    recorded = [
        json.loads(line)
        for _, err in outputs
        for line in err.decode().splitlines()
        if '"batch.recorded"' in line
    ]
    # Every batch recorded once, by one worker, and together they are the edition.
    # (A claim that skips rows locked by another worker may be smaller than 1000.)
    batch_ids = [r["batch_id"] for r in recorded]
    assert len(batch_ids) == len(set(batch_ids)) >= 20
    assert sum(r["sent"] for r in recorded) == 20_000


def test_a_worker_killed_mid_send_loses_nobody_and_doubles_nobody(
    runtime: Runtime, sink: SinkServer, tmp_path: Path
) -> None:
    edition_id = started_edition(runtime, 3000)
    env = worker_env(runtime, sink, tmp_path)
    # Three batches go out at once (the sender keeps several in flight): one is
    # answered, two hang until the worker is killed.
    sink.sink.actions = ["ok", "hang", "hang"]
    sink.sink.hang_seconds = 30

    killed_when(
        env, lambda: len(sink.sink.bodies) == 3 and counts(runtime, edition_id)["sent"] == 1000
    )
    assert len(sink.sink.bodies) == 3, "the worker never handed over all three batches"
    assert counts(runtime, edition_id)["sending"] == 2000

    drained(env)

    final = counts(runtime, edition_id)
    assert final["sent"] == 1000 and final["unknown"] == 2000 and final["queued"] == 0
    seen = sink.sink.delivery_ids()
    assert len(seen) == len(set(seen)) == 3000


def test_a_worker_killed_with_batches_claimed_but_not_posted_leaves_only_the_posted_unknown(
    runtime: Runtime, sink: SinkServer, tmp_path: Path
) -> None:
    edition_id = started_edition(runtime, 5000)
    # One connection to SendGrid: the sender process holds three batches (it is kept
    # ahead of its threads), of which one is posted and hangs.
    env = worker_env(runtime, sink, tmp_path) | {"MAILER_SENDGRID_CONCURRENCY": "1"}
    sink.sink.actions = ["hang"]
    sink.sink.hang_seconds = 30

    killed_when(
        env, lambda: len(sink.sink.bodies) == 1 and counts(runtime, edition_id)["sending"] == 3000
    )
    assert counts(runtime, edition_id)["sending"] == 3000, "three batches were never claimed"

    drained(env)

    final = counts(runtime, edition_id)
    # Unknown: at most the transport's concurrency times the batch size, and only
    # the batch that reached the provider.
    assert (final["unknown"], final["sent"], final["queued"]) == (1000, 4000, 0)
    seen = sink.sink.delivery_ids()
    assert len(seen) == len(set(seen)) == 5000


def test_sigterm_stops_a_worker_cleanly(runtime: Runtime, sink: SinkServer, tmp_path: Path) -> None:
    env = worker_env(runtime, sink, tmp_path)
    idle = subprocess.Popen(
        [*MAILER, "worker", "--poll-interval", "0.2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # Signal only once it is running (its handlers are installed before it logs this).
    assert idle.stderr is not None
    deadline = time.monotonic() + 60
    seen = b""
    while b"worker.started" not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([idle.stderr], [], [], 1.0)
        if ready:
            seen += os.read(idle.stderr.fileno(), 65536)
    assert b"worker.started" in seen, seen.decode()[-2000:]
    idle.send_signal(signal.SIGTERM)
    out, err = idle.communicate(timeout=20)
    assert idle.returncode == 0, err.decode()[-2000:]
    assert b"worker stopped" in out
