"""`mailer serve` as real processes over real HTTP: two processes share one database's
sessions, throttles and limits; `--workers 2` serves from one address; large anonymous
bodies are refused without a byte spooled to disk (SQLite and PostgreSQL)."""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from mailer.app import accounts
from mailer.app.actors import Actor
from mailer.db.models import MailingList
from mailer.db.session import transaction
from mailer.runtime import Runtime
from subscribers.tokens import sign_unsubscribe
from tests import factories
from tests.conftest import SECRET
from tests.test_serve_e2e import Running, free_port, process_env
from tests.workspace import PASSWORD, csrf_in

ADMIN = "admin@news.example.org"


def start(runtime: Runtime, tmp_path: Path, *args: str, **env: str) -> tuple[Running, str]:
    port = free_port()
    proc = Running(
        ["serve", "--port", str(port), "--no-scheduler", "--no-worker", *args],
        process_env(runtime, tmp_path, MAILER_BASE_URL=f"http://127.0.0.1:{port}", **env),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.process.poll() is None, proc.tail()
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not become ready\n{proc.tail()}")


@pytest.fixture
def two(runtime: Runtime, tmp_path: Path) -> Iterator[tuple[str, str]]:
    factories.newsletter(runtime)
    with transaction(runtime.sessions) as session:
        session.execute(update(MailingList).values(public=True))
    accounts.create_account(runtime, Actor.cli(), ADMIN, "admin", password=PASSWORD)
    limit = {"MAILER_SUBSCRIBE_PER_CLIENT_PER_MINUTE": "3"}
    first, first_url = start(runtime, tmp_path, **limit)
    try:
        second, second_url = start(runtime, tmp_path, **limit)
        try:
            yield first_url, second_url
        finally:
            assert second.stop()[0] == 0, second.tail()
    finally:
        assert first.stop()[0] == 0, first.tail()


def sign_in(client: httpx.Client, password: str) -> httpx.Response:
    form = client.get("/signin")
    return client.post(
        "/signin", data={"email": ADMIN, "password": password, "csrf": csrf_in(form.text)}
    )


def test_two_processes_share_sessions_throttles_and_limits(two: tuple[str, str]) -> None:
    first, second = two
    with (
        httpx.Client(base_url=first, timeout=20) as a,
        httpx.Client(base_url=second, timeout=20) as b,
    ):
        # A session begun on one process works on the other, and ends on both.
        assert sign_in(a, PASSWORD).status_code == 303
        b.cookies.update(a.cookies)
        assert b.get("/", follow_redirects=False).status_code == 200
        # Failures counted by one process block the account on the other.
        a.cookies.clear()
        b.cookies.clear()
        for _ in range(5):
            assert sign_in(a, "not the password").status_code == 401
        blocked = sign_in(b, PASSWORD)
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
        # One sign-up limit for both: 3 a minute from this client, wherever they land.
        answers = [
            (a if n % 2 else b).post(
                "/subscribe/daily", data={"email": f"new{n}@example.org", "name": "New"}
            )
            for n in range(4)
        ]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]


def post_streaming(url: str, path: str, headers: dict[str, str], chunks: int) -> tuple[int, int]:
    """POST a chunked body of ``chunks`` MB, stopping when the server answers or hangs up;
    (the status, MB sent)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        conn.sendall(head.encode())
        part = b'--x\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\n'
        conn.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        block = b"%x\r\n%s\r\n" % (1 << 20, b"a" * (1 << 20))
        sent = 0
        conn.settimeout(0)
        answer = b""
        try:
            for sent in range(1, chunks + 1):  # noqa: B007 (sent is reported)
                with contextlib.suppress(BlockingIOError):
                    answer += conn.recv(65536)
                if answer:
                    break
                conn.settimeout(30)
                conn.sendall(block)
                conn.settimeout(0)
        except (BrokenPipeError, ConnectionResetError):
            pass
        conn.settimeout(30)
        try:
            while b"\r\n" not in answer:
                more = conn.recv(65536)
                if not more:
                    break
                answer += more
        except (ConnectionResetError, TimeoutError):
            pass
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split()[1]), sent


def post_declared(url: str, path: str, length: int) -> int:
    """The status of a urlencoded POST that declares ``length`` bytes and sends none."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode()
        )
        answer = conn.recv(65536)
    return int(answer.split()[1])


def test_anonymous_uploads_are_refused_without_touching_the_disk(
    runtime: Runtime, tmp_path: Path
) -> None:
    newsletter = factories.newsletter(runtime)
    edition = factories.edition(runtime, newsletter)
    reader = factories.subscribers(runtime, 1)
    assert reader
    spool = tmp_path / "spool"
    spool.mkdir()
    proc, url = start(runtime, tmp_path, "--workers", "2", TMPDIR=str(spool))
    try:
        multipart = {"Content-Type": "multipart/form-data; boundary=x"}
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        token = sign_unsubscribe(SECRET.encode(), 1, edition)
        cases = [
            ("/u/not-a-token", multipart, (400,)),  # the token first: nothing read
            (f"/u/{token}", multipart, (400, 413)),  # a good link: a file part is refused
            ("/u/not-a-token", form, (400,)),
            ("/admin/import/preview", multipart, (303, 401, 413)),  # no session: unread
            ("/subscribe/daily", multipart, (415,)),
            ("/webhooks/sendgrid", form, (403, 413, 503)),
        ]
        for path, headers, expected in cases:
            status, sent = post_streaming(url, path, headers, chunks=200)
            assert status in expected, (path, status)
            assert sent < 50, f"{path}: the server read {sent} MB before answering"
            assert list(spool.iterdir()) == [], f"{path} spooled to disk"
        # A declared size over the limit is refused before a byte of it is read.
        for path in (f"/u/{token}", "/subscribe/daily", "/signin"):
            assert post_declared(url, path, 1 << 30) == 413, path
        assert list(spool.iterdir()) == []
        answer = httpx.get(f"{url}/healthz", timeout=10)
        assert answer.status_code == 200
        assert "server" not in answer.headers
    finally:
        code, _ = proc.stop(signal.SIGTERM)
    assert code == 0, proc.tail()
    assert all("\x1b[" not in line for line in proc.lines), "colour codes in the log"
