"""Senders: sign each recipient's links, then hand the batch to the transport.

Both kinds take the rows a claim picked and give back a future of the transport's
results, up to ``transport.concurrency`` batches at once:

- ``SenderThreads`` does it in this process, on a pool of threads;
- ``SenderProcess`` does it in a child process of its own (which runs ``SenderThreads``).

Signing links, building request bodies and talking HTTP are Python work, and so is
claiming and recording: under one interpreter lock they took turns on one core, and
every database round trip of the claimer waited for the senders to let go of the lock.
In a process of their own the senders use the machine's other core, and the claimer's
round trips wait for nobody.

The child process imports the transport, ``links`` and little else, so that it stays
small. It ignores SIGINT and SIGTERM: the parent decides when sending stops (it says so
down the pipe, and the child finishes what it holds and exits). If the parent dies, or
closes the pipe without a word, the child exits at once: nobody would record what it
sends, and the rows of everything it held are ``unknown`` by then.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import pickle
import queue
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mailer.links import UnsubscribeLinks
from mailer.rendering.personalize import fill_shared
from mailer.transports.base import (
    Envelope,
    Outcome,
    Recipient,
    Result,
    Transport,
    TransportUnauthorized,
)

if TYPE_CHECKING:
    # Not at run time: the sender process has no use for the ledger (SQLAlchemy).
    from mailer.dispatch.ledger import Claimed

log = logging.getLogger(__name__)

# How long a new sender process may take to say it is ready (imports, the transport).
START_TIMEOUT = 20.0
# How long a sender process may take to finish after it was asked to stop; everything
# it held was answered by then, so this only bounds a hang in closing connections.
STOP_TIMEOUT = 30.0


class SenderUnavailable(RuntimeError):
    """The batch never reached the transport (no sender could start, it had stopped,
    or the batch might not be posted any more): nothing of it went out."""


class BatchTakenOver(SenderUnavailable):
    """The gate refused the batch's posted mark: another worker took it over (this one
    was thought dead), its rows are queued again and they are that worker's now. Not the
    transport's fault, and nothing of it went out."""


# Asked, with batches' ids, just before they go to the transport: returns those durably
# marked as posted (``mailer.dispatch.ledger.mark_posted``); the others may not go. It
# runs on the parent's side, where the database is.
Gate = Callable[[Sequence[int]], set[int]]


class SenderFailed(RuntimeError):
    """The sender failed with a batch in hand: it may have gone out."""


class Senders(Protocol):
    def submit(self, rows: Sequence[Claimed], batch_id: int) -> Future[list[Result]]:
        """Sign the rows' links and hand them to the transport as one batch, once the
        gate (if any) lets batch ``batch_id`` go."""
        ...

    def close(self, *, cancel: bool = False) -> None:
        """Wait for the batches in hand (with ``cancel``, only those begun)."""
        ...


class SenderThreads:
    """Senders on a pool of threads in this process."""

    def __init__(
        self,
        transport: Transport,
        envelope: Envelope,
        links: UnsubscribeLinks,
        gate: Gate | None = None,
    ) -> None:
        self.transport, self.envelope, self.links = transport, with_web_link(envelope, links), links
        self.gate = gate
        self.pool = ThreadPoolExecutor(max(1, transport.concurrency), thread_name_prefix="sender")

    def submit(self, rows: Sequence[Claimed], batch_id: int) -> Future[list[Result]]:
        return self.pool.submit(self._send, rows, batch_id)

    def _send(self, rows: Sequence[Claimed], batch_id: int) -> list[Result]:
        url, edition_id = self.links.url, self.envelope.edition_id
        recipients = [
            Recipient(delivery_id, email, name, url(subscriber_id, edition_id))
            for delivery_id, subscriber_id, email, name in rows
        ]
        # Asked by the thread that posts, when it is about to: batches waiting for a
        # thread are not marked, so at most ``concurrency`` are posted and unanswered.
        if self.gate is not None:
            try:
                allowed = batch_id in self.gate([batch_id])
            except Exception as exc:
                # Unmarked, it must not go; and since it did not, it may be sent again.
                raise SenderUnavailable(f"the batch could not be marked posted: {exc}") from exc
            if not allowed:
                raise BatchTakenOver("the batch may not be posted: it was taken over")
        return self.transport.send(self.envelope, recipients)

    def close(self, *, cancel: bool = False) -> None:
        """Wait for the batches begun; with ``cancel``, those not yet begun are dropped."""
        self.pool.shutdown(wait=True, cancel_futures=cancel)


def with_web_link(envelope: Envelope, links: UnsubscribeLinks) -> Envelope:
    """The envelope with its "view in the browser" link filled in, once per send: it is
    the same for every recipient, so no transport carries it per recipient."""
    if envelope.test_send:
        return envelope  # a test send's links all lead to /preview/link
    values = {"web_url": links.edition_web(envelope.edition_id)}
    return dataclasses.replace(
        envelope,
        html=fill_shared(envelope.html, envelope.nonce, values, html=True),
        text=fill_shared(envelope.text, envelope.nonce, values, html=False),
    )


class SenderProcess:
    """Senders in a child process: batches go down one pipe, results come up another.

    The transport crosses as its pickle (its configuration: it opens its own
    connections there). A reader thread here resolves each batch's future as its
    results arrive; whoever takes a batch's ticket off the pending list, the reader or
    a failed ``submit``, is the one that resolves it. With a gate, a sender thread
    there asks up the pipe before it posts a batch, and a gatekeeper thread here asks
    the gate (for every question waiting, together: one commit) and answers: so this
    side knows which batches reached the transport, and if the child dies, only those
    may have gone out.
    """

    def __init__(
        self,
        transport: Transport,
        envelope: Envelope,
        base_url: str,
        secret_key: bytes,
        *,
        gate: Gate | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        try:
            job = pickle.dumps((transport, envelope, base_url, secret_key, gate is not None))
        except Exception as exc:
            raise SenderUnavailable(
                f"the {transport.name} transport cannot move to a sender process: {exc}"
            ) from exc
        self._pending: dict[int, tuple[Future[list[Result]], list[int], int]] = {}
        self._posted: set[int] = set()  # tickets the gate let go
        self.gate = gate
        self._asking: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._child_gone = False  # then no question left is let go
        self._lock = threading.Lock()
        # The claimer submits and the gatekeeper answers the child's questions: one
        # writer of the pipe at a time, so that messages never interleave.
        self._writing = threading.Lock()
        self._tickets = 0
        self._gone: str | None = None
        self.peak_rss_kb = 0
        try:
            self.process, self.outbox, self.inbox = _spawn()
        except OSError as exc:
            raise SenderUnavailable(f"could not start a sender process: {exc}") from exc
        try:
            self._hand_job(job, start_timeout)
        except BaseException as exc:
            self._abandon()
            if isinstance(exc, SenderUnavailable) or not isinstance(exc, Exception):
                raise  # an interrupt stays one
            raise SenderUnavailable(f"the sender process could not start: {exc}") from exc
        # The gatekeeper first: the reader stops it when the child goes.
        self.gatekeeper = threading.Thread(target=self._keep_gate, name="sender-gate", daemon=True)
        self.gatekeeper.start()
        self.reader = threading.Thread(target=self._read, name="sender-results", daemon=True)
        self.reader.start()

    def _hand_job(self, job: bytes, timeout: float) -> None:
        # The job (the rendered edition) outgrows the pipe's buffer: written from a
        # thread, so that a child stuck before reading it cannot hold us past the timeout.
        def write() -> None:
            with contextlib.suppress(OSError):  # a child that died reads nothing more
                self.outbox.send_bytes(job)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        if not self.inbox.poll(timeout):
            raise SenderUnavailable(f"the sender process did not start in {timeout:g} s")
        answer = self.inbox.recv()
        writer.join()
        if answer[0] != "ready":
            raise SenderUnavailable(f"the sender process could not start: {answer[1]}")

    def submit(self, rows: Sequence[Claimed], batch_id: int) -> Future[list[Result]]:
        future: Future[list[Result]] = Future()
        future.set_running_or_notify_cancel()
        with self._lock:
            if self._gone is not None:
                future.set_exception(SenderUnavailable(self._gone))
                return future
            self._tickets += 1
            ticket = self._tickets
            self._pending[ticket] = (future, [row[0] for row in rows], batch_id)
        try:
            with self._writing:
                self.outbox.send((ticket, rows))
        except OSError as exc:
            with self._lock:
                mine = self._pending.pop(ticket, None) is not None
            if mine:  # else the reader saw the child go and failed it already
                # The child had closed its end: it never read this batch.
                future.set_exception(SenderUnavailable(f"the sender process is gone: {exc}"))
        return future

    def _read(self) -> None:
        try:
            while True:
                try:
                    message = self.inbox.recv()
                except (EOFError, OSError):
                    break
                if message[0] == "bye":
                    self.peak_rss_kb = int(message[1])
                    continue
                ticket, kind, payload = message
                if kind == "posting":
                    self._asking.put(ticket)
                    continue
                with self._lock:
                    future, ids, _batch_id = self._pending.pop(ticket)
                    self._posted.discard(ticket)
                if kind == "sent":
                    future.set_result([Result(i, Outcome.SENT, payload) for i in ids])
                elif kind == "results":
                    future.set_result([Result(i, Outcome(o), m, e, d) for i, o, m, e, d in payload])
                elif kind == "unauthorized":
                    future.set_exception(TransportUnauthorized(payload))
                elif kind == "taken_over":
                    future.set_exception(BatchTakenOver(payload))
                elif kind == "unposted":
                    future.set_exception(SenderUnavailable(payload))
                else:
                    future.set_exception(SenderFailed(payload))
        except BaseException:
            # Answers that make no sense (a bug): stop the child, so that what it
            # holds is failed below rather than waited for.
            self.process.kill()
            raise
        finally:
            # The child is gone (or its answers make no sense): what it held may have
            # gone out.
            code = self.process.wait()
            self._child_gone = True
            self._asking.put(None)
            self.gatekeeper.join()
            with self._lock:
                self._gone = f"the sender process exited (code {code})"
                held = [
                    (future, self.gate is None or ticket in self._posted)
                    for ticket, (future, _ids, _batch_id) in self._pending.items()
                ]
                self._pending.clear()
            for future, posted in held:
                if posted:
                    future.set_exception(SenderFailed(f"{self._gone} with the batch in hand"))
                else:  # the gate never let it go: it never reached the transport
                    future.set_exception(SenderUnavailable(f"{self._gone} before posting it"))

    def _keep_gate(self) -> None:
        """Answer the child's questions (may this batch go?) until the reader stops."""
        while (first := self._asking.get()) is not None:
            tickets = [first]
            # Every question waiting is answered with one commit.
            while not self._asking.empty():
                if (ticket := self._asking.get()) is None:
                    self._asking.put(None)  # stop after these
                    break
                tickets.append(ticket)
            with self._lock:
                batches = {t: self._pending[t][2] for t in tickets if t in self._pending}
            allowed: set[int] = set()
            failure: str | None = None  # the marks could not be written (not a refusal)
            # A dead child posts nothing more: its questions are not marked.
            if batches and self.gate is not None and not self._child_gone:
                try:
                    allowed = self.gate(list(batches.values()))
                except Exception as exc:
                    # Unmarked, they must not go (nobody could tell afterwards that they did).
                    log.exception("batch.mark_posted_failed", extra={"batches": len(batches)})
                    failure = f"{type(exc).__name__}: {exc}"
            let_go = {t for t, batch_id in batches.items() if batch_id in allowed}
            with self._lock:
                self._posted |= let_go
            for ticket in tickets:
                with self._writing, contextlib.suppress(OSError):
                    self.outbox.send(("go", ticket, ticket in let_go, failure))

    def close(self, *, cancel: bool = False) -> None:
        """Let the child finish every batch it holds and exit; with ``cancel``, only
        those it has begun (the others stay unsent: with a gate they are retried, else
        their rows become unknown)."""
        if cancel:
            with self._writing:
                self.outbox.close()  # end of file: the child stops at once
        else:
            # Kept open until the child exits: the gatekeeper answers its questions.
            with self._writing, contextlib.suppress(OSError):
                self.outbox.send(None)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.reader.join()
        with self._writing:
            self.outbox.close()
        self.inbox.close()

    def _abandon(self) -> None:
        # Killed first: a job still being written then fails on a closed pipe.
        self.process.kill()
        self.process.wait()
        self.outbox.close()
        self.inbox.close()


def _spawn() -> tuple[subprocess.Popen[bytes], Connection, Connection]:
    """A sender process, and the pipe ends that talk to it."""
    from_parent, to_child = os.pipe()
    try:
        from_child, to_parent = os.pipe()
    except OSError:
        os.close(from_parent)
        os.close(to_child)
        raise
    # Isolated (-I): neither the working directory nor PYTHON* variables decide what it
    # imports; it takes this very package, from where this process took it.
    bootstrap = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from mailer.dispatch.senders import run_child; "
        "sys.exit(run_child(int(sys.argv[2]), int(sys.argv[3])))"
    )
    package_root = str(Path(__file__).resolve().parents[2])
    # Its configuration comes down the pipe; the service's secrets stay out of its
    # environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    try:
        process = subprocess.Popen(  # noqa: S603 - our interpreter, our code, two descriptors
            [sys.executable, "-I", "-c", bootstrap, package_root, str(from_parent), str(to_parent)],
            pass_fds=(from_parent, to_parent),
            stdin=subprocess.DEVNULL,
            env=env,
        )
    except BaseException:
        os.close(to_child)
        os.close(from_child)
        raise
    finally:
        # The child's ends are the child's: its exit must read as end-of-file here.
        os.close(from_parent)
        os.close(to_parent)
    return process, Connection(to_child, readable=False), Connection(from_child, writable=False)


def _compact(results: list[Result], ids: list[int]) -> tuple[str, Any]:
    """The usual answer (every row sent under one message id) as that id alone."""
    if results and len(results) == len(ids):
        message_id = results[0].message_id
        if all(r.outcome is Outcome.SENT and r.message_id == message_id for r in results) and {
            r.delivery_id for r in results
        } == set(ids):
            return "sent", message_id
    return "results", [
        (r.delivery_id, r.outcome.value, r.message_id, r.error, r.transport_down) for r in results
    ]


def _peak_rss_kb() -> int:
    """This process's own peak resident memory. Not ``ru_maxrss``: Linux carries the
    parent's peak at the time of the fork over into it, across ``exec``."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_child(read_fd: int, write_fd: int) -> int:
    """The sender process's life: take the job, then batches until told to stop."""
    # The parent decides when sending stops; a terminal's Ctrl-C or a service
    # manager's SIGTERM reaches the whole process group, this process included.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)
    lock = threading.Lock()  # one writer of the pipe up at a time
    # With a gate, each sender thread asks the parent before it posts, and waits for the
    # answer: tickets waiting, each with its event and the answer.
    asked: dict[int, tuple[threading.Event, list[Any]]] = {}

    def may_post(tickets: Sequence[int]) -> set[int]:
        (ticket,) = tickets  # a sender thread asks for its own batch
        event, answer = threading.Event(), [False, None]
        asked[ticket] = (event, answer)
        with lock:
            outbox.send((ticket, "posting", None))
        event.wait()
        allowed, failure = answer
        if failure is not None:
            # As a gate that raises here: the mark could not be written, which is not
            # the batch being taken over.
            raise RuntimeError(failure)
        return {ticket} if allowed else set()

    try:
        # From the parent that started us, over a pipe only it holds.
        transport, envelope, base_url, secret_key, gated = pickle.loads(inbox.recv_bytes())  # noqa: S301
        links = UnsubscribeLinks(base_url, secret_key)
        senders = SenderThreads(transport, envelope, links, may_post if gated else None)
    except Exception as exc:
        outbox.send(("failed", f"{type(exc).__name__}: {exc}"))
        return 1
    outbox.send(("ready",))

    def reply(ticket: int, ids: list[int], future: Future[list[Result]]) -> None:
        message: tuple[int, str, Any]
        try:
            message = (ticket, *_compact(future.result(), ids))
        except TransportUnauthorized as exc:
            message = (ticket, "unauthorized", str(exc))
        except BatchTakenOver as exc:  # the gate said no: nothing of it went out
            message = (ticket, "taken_over", str(exc))
        except SenderUnavailable as exc:  # it could not be marked: nothing went out
            message = (ticket, "unposted", str(exc))
        except BaseException as exc:  # told to the parent, which decides
            message = (ticket, "failed", f"{type(exc).__name__}: {exc}")
        # If the parent is gone, the reaper makes these rows unknown.
        with lock, contextlib.suppress(OSError):
            outbox.send(message)

    finishing: threading.Thread | None = None
    while finishing is None or finishing.is_alive():
        # Once asked to stop, the pipe is still read: the batches being finished may
        # have questions for the gate.
        if finishing is not None and not inbox.poll(0.05):
            continue
        try:
            item = inbox.recv()
        except (EOFError, OSError):
            # The parent died, or gave up on what it handed over: nobody will record
            # what happens now. Batches not yet posted stay unsent (the reaper queues
            # them again); those under way are cut off rather than retried for minutes
            # on nobody's behalf, and are unknown.
            os._exit(0)
        if item is None:
            # Asked to stop: finish every batch handed over.
            finishing = threading.Thread(target=senders.close, name="finishing")
            finishing.start()
            continue
        if item[0] == "go":
            _, ticket, allowed, failure = item
            event, answer = asked.pop(ticket)
            answer[:] = [allowed, failure]
            event.set()
            continue
        ticket, rows = item
        callback = functools.partial(reply, ticket, [row[0] for row in rows])
        senders.submit(rows, ticket).add_done_callback(callback)
    transport.close()
    with lock, contextlib.suppress(OSError):
        outbox.send(("bye", _peak_rss_kb()))
    return 0
