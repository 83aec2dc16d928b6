"""`mailer serve` and `mailer scheduler` as real processes, with slots a few seconds ahead."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from mailer.app import sources
from mailer.app.actors import Actor
from mailer.runtime import Runtime
from mailer.schedule import lease
from mailer.schedule.models import RunState
from tests.conftest import SECRET
from tests.scheduling import editions, ledger_size, outbox_recipients, runs, scheduled_newsletter

MAILER = [sys.executable, "-m", "mailer"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def process_env(runtime: Runtime, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_DATABASE_URL=runtime.settings.database_url,
        MAILER_TRANSPORT="outbox",
        MAILER_OUTBOX_DIR=str(runtime.settings.outbox_dir),
        MAILER_SECRET_KEY=SECRET,
        MAILER_BASE_URL="https://news.example.org",
        MAILER_CONFIG_FILE=str(tmp_path / "absent.toml"),
        MAILER_LOG_FORMAT="auto",  # JSON: stderr is a pipe, not a terminal
        MAILER_SCHEDULER_TICK_SECONDS="0.3",
        MAILER_SCHEDULER_LEASE_SECONDS="3",
        MAILER_SHUTDOWN_TIMEOUT_SECONDS="15",
    )
    env.update(extra)
    return env


class Running:
    """A `mailer` process whose stderr (its JSON log) is collected as it goes."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [*MAILER, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in list(self.lines)]

    def has(self, event: str) -> bool:
        return any(f'"event": "{event}"' in line for line in list(self.lines))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> tuple[int, str]:
        self.process.send_signal(sig)
        code = self.process.wait(timeout)
        assert self.process.stdout is not None
        out = self.process.stdout.read().decode()  # (stderr is the reader thread's alone)
        self._reader.join(5)
        return code, out

    def tail(self) -> str:
        return "\n".join(self.lines[-40:])


def wait_for(check: Callable[[], bool], timeout: float, what: str, proc: Running) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc.process.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{proc.tail()}")


def slot_in(seconds: float) -> tuple[str, datetime]:
    """A UTC slot ``seconds`` from now, as HH:MM:SS, and its instant."""
    at = (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)
    return at.strftime("%H:%M:%S"), at


def test_serve_sends_a_slot_once_and_stops_cleanly_on_sigterm(
    runtime: Runtime, tmp_path: Path
) -> None:
    # Far enough ahead that a slow start (a loaded machine) still sees the slot coming.
    slot, slot_at = slot_in(14)
    scheduled_newsletter(
        runtime, tmp_path / "desk", slot=slot, since=datetime.now(UTC), subscribers=5
    )
    # Monitoring reads /status with an API token, as a machine would.
    token = sources.create_api_token(runtime, Actor.cli(), "monitor")
    watch = {"Authorization": f"Bearer {token}"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve = Running(
        ["serve", "--port", str(port), "--poll-interval", "0.2"], process_env(runtime, tmp_path)
    )
    try:

        def answers() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, 30, "/healthz", serve)
        assert httpx.get(f"{base}/readyz").json() == {"status": "ok"}
        wait_for(lambda: serve.has("scheduler.started"), 30, "the scheduler", serve)
        status = httpx.get(f"{base}/status", headers=watch).json()
        assert status["scheduler"]["role"] == "leader"
        assert status["newsletters"][0]["schedule"]["next_slots"][0]["at"] == slot_at.isoformat()

        outbox = runtime.settings.outbox_dir

        def delivered() -> bool:
            found = editions(runtime)
            return bool(found) and len(outbox_recipients(outbox, found[0].id)) == 5

        wait_for(delivered, 40, "the edition in the outbox", serve)
        wait_for(lambda: editions(runtime)[0].status == "sent", 10, "edition sent", serve)
        time.sleep(1.5)  # several more ticks and polls: nothing more happens
        [run] = runs(runtime)
        [edition] = editions(runtime)
        assert run.state == RunState.SENT and run.slot_at == slot_at
        assert len(outbox_recipients(outbox, edition.id)) == 5 and ledger_size(runtime) == 5
        body = httpx.get(f"{base}/status", headers=watch).json()
        assert body["newsletters"][0]["last_run"]["state"] == "sent"
        assert body["sources"][0]["last_pulled_at"] is not None
    finally:
        code, _ = serve.stop(signal.SIGTERM, timeout=30)
    assert code == 0, serve.tail()
    logged = serve.events()  # every line is one JSON event
    names = [e["event"] for e in logged]
    for expected in ("schedule.claimed", "schedule.sent", "edition.sent", "serve.stopped"):
        assert expected in names, (expected, names[-12:])
    assert names.index("scheduler.stopped") < names.index("serve.stopped")
    assert SECRET not in "\n".join(serve.lines) and token not in "\n".join(serve.lines)


def test_scheduler_processes_one_leads_and_a_standby_takes_over(
    runtime: Runtime, tmp_path: Path
) -> None:
    if not runtime.settings.database_url.startswith("postgresql"):
        pytest.skip("several schedulers on several machines are a PostgreSQL deployment")
    slot, _ = slot_in(6)
    scheduled_newsletter(
        runtime, tmp_path / "desk", slot=slot, since=datetime.now(UTC), subscribers=3
    )
    env = process_env(runtime, tmp_path, MAILER_SCHEDULER_LEASE_SECONDS="2")
    first = Running(["scheduler"], env)
    second = Running(["scheduler"], env)
    both = {first, second}
    try:
        for proc in both:
            wait_for(lambda p=proc: p.has("scheduler.started"), 30, "start-up", proc)  # type: ignore[misc]
        held = lease.current(runtime.engine)
        assert held is not None
        leader = next(p for p in both if f":{p.process.pid}:" in held.holder)
        standby = (both - {leader}).pop()
        assert not standby.has("scheduler.leading")

        # The leader sends the slot...
        wait_for(lambda: [r.state for r in runs(runtime)] == ["sent"], 30, "the slot", leader)
        # ...and dies without a word. The standby takes over within the lease (2 s) and
        # one renewal interval.
        leader.process.send_signal(signal.SIGKILL)
        leader.process.wait(10)
        killed_at = time.monotonic()
        wait_for(lambda: standby.has("scheduler.leading"), 10, "the take-over", standby)
        assert time.monotonic() - killed_at < 2 + 2 / 3 + 1.5
        new = lease.current(runtime.engine)
        assert new is not None and f":{standby.process.pid}:" in new.holder
        time.sleep(1.0)  # the new leader ticks: still one run, one edition, one ledger
        assert len(runs(runtime)) == 1 and len(editions(runtime)) == 1
        assert ledger_size(runtime) == 3
        code, out = standby.stop(signal.SIGTERM)
        assert code == 0 and "scheduler stopped" in out, standby.tail()
    finally:
        for proc in both:
            if proc.process.poll() is None:
                proc.process.kill()
                proc.process.wait(10)
