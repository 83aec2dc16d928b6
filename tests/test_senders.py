"""Senders in a process of their own: what crosses, what happens when it dies or cannot start."""

from __future__ import annotations

import logging
import os
import pickle
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import select

from mailer.db.models import Delivery, Edition
from mailer.dispatch import ledger
from mailer.dispatch.dispatcher import envelope_for
from mailer.dispatch.senders import (
    BatchTakenOver,
    SenderFailed,
    SenderProcess,
    Senders,
    SenderThreads,
    SenderUnavailable,
)
from mailer.links import UnsubscribeLinks
from mailer.runtime import Runtime
from mailer.transports.base import Envelope, Outcome, Recipient, Result
from mailer.transports.outbox import OutboxTransport
from mailer.transports.sendgrid import SendGridTransport
from mailer.transports.smtp import SmtpConfig, SmtpTransport
from subscribers.tokens import verify_unsubscribe
from tests.sendgrid_sink import API_KEY, SinkServer, sendgrid_sink
from tests.sending import prepared, send
from tests.waits import no_wait

SECRET = b"s" * 32
T = TypeVar("T")


@pytest.fixture
def sink() -> Iterator[SinkServer]:
    with sendgrid_sink() as server:
        yield server


def transport(base_url: str, *, timeout: float = 5.0, concurrency: int = 4) -> SendGridTransport:
    return SendGridTransport(
        API_KEY, base_url, timeout=timeout, concurrency=concurrency, sleep=no_wait
    )


def sender_processes() -> list[int]:
    """Pids of this process's children that run a sender process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent == os.getpid() and b"mailer.dispatch.senders" in command:
            found.append(int(entry.name))
    return found


def wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


def test_an_edition_goes_out_through_a_sender_process(runtime: Runtime, sink: SinkServer) -> None:
    edition_id = prepared(runtime, 2500)

    tally = send(runtime, edition_id, transport(sink.base_url), batch_size=100, sender_process=True)

    assert tally["sent"] == 2500
    seen = sink.sink.delivery_ids()
    assert len(seen) == len(set(seen)) == 2500
    # The links were signed in the sender process, with the key the parent holds.
    with runtime.sessions() as session:
        by_delivery = {d.id: d.subscriber_id for d in session.scalars(select(Delivery))}
    key = runtime.settings.require_secret_key()
    for body in sink.sink.bodies[:3]:
        for personalization in body["personalizations"]:
            url = personalization["headers"]["List-Unsubscribe"].strip("<>")
            token = verify_unsubscribe(key, url.rpartition("/u/")[2])
            delivery_id = int(personalization["custom_args"]["delivery_id"])
            assert token.subscriber_id == by_delivery[delivery_id]
            assert token.edition_id == edition_id
    assert sender_processes() == []  # it is gone once the send is over


def test_a_sender_process_killed_mid_send_leaves_what_it_held_unknown(
    runtime: Runtime, sink: SinkServer
) -> None:
    edition_id = prepared(runtime, 30)
    # Three batches handed over together; the second hangs at the provider.
    sink.sink.actions = ["ok", "hang"]
    sink.sink.hang_seconds = 3.0
    outcome: list[BaseException | dict[str, int]] = []

    def run() -> None:
        try:
            outcome.append(
                send(
                    runtime,
                    edition_id,
                    transport(sink.base_url),
                    batch_size=10,
                    sender_process=True,
                )
            )
        except BaseException as exc:
            outcome.append(exc)

    sending = threading.Thread(target=run)
    sending.start()
    wait_for(lambda: -1 in sink.sink.answered and len(sink.sink.bodies) == 3)
    (child,) = sender_processes()
    os.kill(child, signal.SIGKILL)
    sending.join(timeout=30)

    assert not sending.is_alive()
    (error,) = outcome
    assert isinstance(error, SenderFailed) and "exited" in str(error)
    with runtime.sessions() as session:
        tally = ledger.counts(session, edition_id)
        rows = ledger.rows(session, edition_id)
    # The hung batch (and any whose answer had not come back yet) may have gone out.
    assert tally["unknown"] >= 10 and tally["sent"] + tally["unknown"] == 30
    assert tally["queued"] == tally["sending"] == 0
    assert all("sender process exited" in (r.error or "") for r in rows if r.status == "unknown")

    again = send(runtime, edition_id, transport(sink.base_url), batch_size=10, sender_process=True)

    assert again["unknown"] == tally["unknown"]  # never resent blindly
    seen = sink.sink.delivery_ids()
    assert len(seen) == len(set(seen)) == 30


def test_a_transport_that_cannot_move_to_a_sender_process_sends_from_threads(
    runtime: Runtime, sink: SinkServer, caplog: pytest.LogCaptureFixture
) -> None:
    edition_id = prepared(runtime, 20)
    # A transport holding a lambda cannot cross to another process.
    sg = SendGridTransport(API_KEY, sink.base_url, sleep=lambda _seconds: None)

    with caplog.at_level(logging.WARNING, logger="mailer.dispatch.dispatcher"):
        tally = send(runtime, edition_id, sg, batch_size=10, sender_process=True)

    assert tally["sent"] == 20
    seen = sink.sink.delivery_ids()
    assert len(seen) == len(set(seen)) == 20
    (record,) = [r for r in caplog.records if r.getMessage() == "sender_process.unavailable"]
    assert "cannot move to a sender process" in record.__dict__["error"]


def envelope(runtime: Runtime) -> Envelope:
    edition_id = prepared(runtime, 1)
    with runtime.sessions() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        return envelope_for(edition)


def rows(first: int, count: int) -> list[ledger.Claimed]:
    return [(i, i, f"reader{i}@example.org", f"Reader {i}") for i in range(first, first + count)]


def three_batches_the_first_hanging(
    runtime: Runtime, sink: SinkServer
) -> tuple[SenderProcess, list[Future[list[Result]]]]:
    """A sender process with one thread, handed three batches; the first is at the
    provider, which will not answer it in time."""
    env = replace(envelope(runtime), edition_id=1)
    sg = transport(sink.base_url, timeout=1.0, concurrency=1)
    senders = SenderProcess(sg, env, "https://x.test", SECRET)
    sink.sink.actions = ["hang"]
    sink.sink.hang_seconds = 0.5
    futures = [senders.submit(rows(1 + 10 * n, 10), n + 1) for n in range(3)]
    wait_for(lambda: len(sink.sink.bodies) == 1)
    return senders, futures


def test_a_sender_process_finishes_what_it_holds_and_ignores_interrupts(
    runtime: Runtime, sink: SinkServer
) -> None:
    senders, futures = three_batches_the_first_hanging(runtime, sink)
    # A terminal's Ctrl-C reaches the whole process group; the parent decides.
    os.kill(senders.process.pid, signal.SIGINT)

    senders.close()

    assert senders.process.returncode == 0 and senders.peak_rss_kb > 0
    first, *rest = [future.result() for future in futures]
    assert {r.outcome for r in first} == {Outcome.UNKNOWN}  # the hung request timed out
    assert all(r.outcome is Outcome.SENT for results in rest for r in results)
    assert sorted(sink.sink.accepted_ids()) == list(range(11, 31))


def test_a_sender_process_whose_parent_is_gone_exits_and_begins_nothing_more(
    runtime: Runtime, sink: SinkServer
) -> None:
    senders, futures = three_batches_the_first_hanging(runtime, sink)

    senders.outbox.close()  # what the child sees when its parent dies: end of file
    senders.process.wait(timeout=10)  # at once, without waiting for the hung request
    senders.close()

    assert len(sink.sink.bodies) == 1  # the two batches not yet begun never went out
    for future in futures:
        with pytest.raises(SenderFailed):
            future.result()


def test_a_batch_the_gate_refuses_or_cannot_mark_is_never_posted(
    runtime: Runtime, tmp_path: Path
) -> None:
    env = envelope(runtime)
    outbox = OutboxTransport(tmp_path)

    def failing(_ids: object) -> set[int]:
        raise OSError("database is locked")

    def refusing(_ids: object) -> set[int]:
        return set()  # as when another worker took the batch over

    links = UnsubscribeLinks("https://x.test", SECRET)
    for gate, why, taken_over in ((refusing, "taken over", True), (failing, "marked", False)):
        made: list[Senders] = [
            SenderThreads(outbox, env, links, gate),
            SenderProcess(outbox, env, "https://x.test", SECRET, gate=gate),
        ]
        for senders in made:
            future = senders.submit(rows(1, 3), 1)
            # Not unknown: nothing went out, so the rows may be sent again; and a batch
            # taken over is told from a transport that is down (the send stops for it,
            # but says why).
            with pytest.raises(SenderUnavailable, match=why) as raised:
                future.result(timeout=30)
            assert isinstance(raised.value, BatchTakenOver) is taken_over
            senders.close()
    assert not list(outbox.folder_for(env.edition_id).glob("*.eml"))


def crossed(transport: T) -> T:
    """The transport as a sender process receives it."""
    copy: T = pickle.loads(pickle.dumps(transport))  # noqa: S301 - made just above
    return copy


def test_transports_cross_to_a_sender_process_as_their_configuration(
    runtime: Runtime, tmp_path: Path, sink: SinkServer
) -> None:
    env = envelope(runtime)
    sg = SendGridTransport(API_KEY, sink.base_url, timeout=7.0, concurrency=3, sleep=no_wait)
    sg.close()  # the copy opens connections of its own
    copy = crossed(sg)
    assert copy.concurrency == 3
    recipients = [Recipient(7, "ada@example.org", "Ada", "https://x.test/u/7")]
    assert [r.outcome for r in copy.send(env, recipients)] == [Outcome.SENT]
    assert sink.sink.delivery_ids() == [7]
    copy.close()

    smtp = SmtpTransport(SmtpConfig(host="127.0.0.1", port=2525, security="none"))
    smtp_copy = crossed(smtp)
    assert smtp_copy.config == smtp.config
    smtp.close()
    smtp_copy.close()

    outbox = crossed(OutboxTransport(tmp_path))
    assert [r.outcome for r in outbox.send(env, recipients)] == [Outcome.SENT]
    assert list(outbox.folder_for(env.edition_id).glob("*.eml"))
