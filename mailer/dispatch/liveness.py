"""Is a worker still alive? So that a dead worker's claim is taken over at once.

On PostgreSQL every worker holds a session-level advisory lock named after
itself for as long as it runs; the lock dies with its connection, so anyone
who can take it knows the worker is gone. On SQLite (one machine) a worker
is alive while its process is; inside one process, while its run is.
What a dead worker had in flight becomes ``unknown``: never resent blindly.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterable

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

# Worker names running in this process, with how many nested holders each has.
_LIVE_HERE: dict[str, int] = {}
_LOCK = threading.Lock()


class Liveness:
    """Held by a running worker; released when it stops (or dies)."""

    def __init__(self, engine: Engine, worker: str) -> None:
        self.engine = engine
        self.worker = worker
        self._connection: Connection | None = None

    def __enter__(self) -> Liveness:
        with _LOCK:
            nested = _LIVE_HERE.get(self.worker, 0)
            _LIVE_HERE[self.worker] = nested + 1
        if nested:
            return self  # already held by an outer run of the same worker
        if self.engine.dialect.name == "postgresql":
            self._connection = self.engine.connect()
            self._connection.execute(
                text("SELECT pg_advisory_lock(hashtext(:w))"), {"w": self.worker}
            )
            self._connection.commit()
        return self

    def __exit__(self, *exc: object) -> None:
        with _LOCK:
            _LIVE_HERE[self.worker] -= 1
            if not _LIVE_HERE[self.worker]:
                del _LIVE_HERE[self.worker]
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                # Closing only returns the session to the pool, lock and all: unlock it
                # explicitly, or the worker would look alive until the pool recycles it.
                connection.execute(
                    text("SELECT pg_advisory_unlock(hashtext(:w))"), {"w": self.worker}
                )
                connection.commit()
            except Exception:
                # Closing the session for good releases the lock just as well.
                connection.invalidate()
            finally:
                connection.close()


def dead(session: Session, workers: Iterable[str]) -> tuple[set[str], set[str]]:
    """Of ``workers``: those that certainly stopped, and those whose state cannot be seen."""
    found: set[str] = set()
    unseen: set[str] = set()
    postgres = session.get_bind().dialect.name == "postgresql"
    for worker in set(workers):
        if worker in _LIVE_HERE:
            continue
        if postgres:
            if session.execute(
                text("SELECT pg_try_advisory_lock(hashtext(:w))"), {"w": worker}
            ).scalar_one():
                session.execute(text("SELECT pg_advisory_unlock(hashtext(:w))"), {"w": worker})
                found.add(worker)
            continue
        gone = _process_gone(worker)
        if gone is None:
            unseen.add(worker)
        elif gone:
            found.add(worker)
    return found, unseen


def _process_gone(worker: str) -> bool | None:
    host, _, rest = worker.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return None  # another machine: cannot be seen from here
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # this process, but not a run that is still going
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
