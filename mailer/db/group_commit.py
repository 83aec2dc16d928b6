"""Group commit: the same short write, asked for by many requests at once, committed as one
transaction by one writer thread.

A web process answering a burst of one-click unsubscribes paid, per request, a hand-off
to a worker thread, a transaction (BEGIN, the statements, COMMIT and, on PostgreSQL, a
WAL flush) and its turn on SQLite's one writer. Here the requests queue their items, and
a thread of the process takes every item waiting, up to ``most``, into one call of
``apply`` in one transaction: whatever arrived while the last group was being written
makes the next group, so nobody waits for a timer and a quiet process writes each item
at once.

Each caller gets a ``concurrent.futures.Future`` that is resolved only after its group
has committed, so an answer is never given for a write that could still be lost. If a
group fails, its items are written again one at a time, so that one bad item fails alone
and the rest commit.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar, cast

from sqlalchemy import Connection, Engine

from mailer.db.session import one_writer

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# ``apply`` returns, per item and in order, its result or the exception it should raise
# for its caller (a domain error such as "no such link"), without failing the group.
Apply = Callable[[Connection, Sequence[T]], Sequence[R | Exception]]

_CLOSE = object()


class Closed(RuntimeError):
    """The writer was closed: its process is shutting down."""


class GroupCommit(Generic[T, R]):
    def __init__(self, engine: Engine, apply: Apply[T, R], *, name: str, most: int = 256) -> None:
        self._engine = engine
        self._apply = apply
        self._name = name
        self._most = most
        self._queue: queue.SimpleQueue[tuple[T, Future[R]] | object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, item: T) -> Future[R]:
        """Queue one item; its future holds ``apply``'s result once the group committed.

        Once queued, an item is written whatever becomes of its caller: the future is
        running from the start, so a caller that gives up (a request cancelled as its
        server stops) cannot take back what a reader asked for.
        """
        future: Future[R] = Future()
        future.set_running_or_notify_cancel()
        with self._lock:
            if self._closed:
                raise Closed(f"{self._name}: the writer is closed")
            if self._thread is None or not self._thread.is_alive():
                # Started by the first item, so that a process that never writes (a
                # forked worker, a command) has no thread of it.
                self._thread = threading.Thread(
                    target=self._run, name=f"group-commit-{self._name}", daemon=True
                )
                self._thread.start()
            self._queue.put((item, future))
        return future

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._queue.put(_CLOSE)
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        closing = False
        while not closing:
            group, closing = self._take()
            if not group:
                return
            try:
                self._write(group)
            except BaseException as exc:  # never a caller left waiting on a dead thread
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                log.exception("group_commit.crashed", extra={"writer": self._name})

    def _take(self) -> tuple[list[tuple[T, Future[R]]], bool]:
        """Every item waiting, up to ``most`` (waiting for the first), and whether the
        writer was closed behind them."""
        group: list[tuple[T, Future[R]]] = []
        entry = self._queue.get()
        while entry is not _CLOSE:
            group.append(cast("tuple[T, Future[R]]", entry))
            if len(group) >= self._most:
                return group, False
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                return group, False
        return group, True

    def _write(self, group: list[tuple[T, Future[R]]]) -> None:
        try:
            results = self._transaction([item for item, _ in group])
        except Exception as exc:
            if len(group) == 1:
                log.exception("group_commit.failed", extra={"writer": self._name})
                group[0][1].set_exception(exc)
                return
            log.warning(
                "group_commit.retrying_one_by_one",
                extra={"writer": self._name, "items": len(group), "error": type(exc).__name__},
            )
            for entry in group:
                self._write_one(entry)
            return
        for (_, future), result in zip(group, results, strict=True):
            _settle(future, result)

    def _write_one(self, entry: tuple[T, Future[R]]) -> None:
        item, future = entry
        try:
            (result,) = self._transaction([item])
        except Exception as exc:
            log.exception("group_commit.failed", extra={"writer": self._name})
            future.set_exception(exc)
            return
        _settle(future, result)

    def _transaction(self, items: list[T]) -> Sequence[R | Exception]:
        with one_writer(self._engine), self._engine.begin() as connection:
            results = self._apply(connection, items)
            if len(results) != len(items):  # rolled back: a fault of ``apply``, not of data
                raise RuntimeError(f"{self._name}: {len(results)} results for {len(items)} items")
        return results


def _settle(future: Future[R], result: R | Exception) -> None:
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
