"""What a command or the web app needs at hand: settings, the database, a transport."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailer.config import Settings
from mailer.db.group_commit import Apply, Closed, GroupCommit
from mailer.db.session import make_engine, make_point_read_engine, make_sessionmaker
from mailer.dispatch.dispatcher import DispatchSettings

# As many as the transport calls one process may usefully have in flight.
HELPER_THREADS = 8

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Runtime:
    settings: Settings
    engine: Engine = field(init=False)
    sessions: sessionmaker[Session] = field(init=False)
    # The web's event loop only: see make_point_read_engine. Connects when first used.
    point_reads: Engine = field(init=False)
    _writers: dict[str, GroupCommit[Any, Any]] = field(init=False, default_factory=dict)
    _writers_lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _helpers: ThreadPoolExecutor | None = field(init=False, default=None)
    _closed: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.engine = make_engine(self.settings.database_url)
        self.sessions = make_sessionmaker(self.engine)
        self.point_reads = make_point_read_engine(self.settings.database_url)

    def group_commit(self, name: str, apply: Apply[T, R]) -> GroupCommit[T, R]:
        """This process's group-commit writer for one kind of write (mailer.db.group_commit),
        made on first use and stopped by ``close``."""
        with self._writers_lock:
            if self._closed:
                raise Closed("the runtime is closed: its process is shutting down")
            writer = self._writers.get(name)
            if writer is None:
                writer = self._writers[name] = GroupCommit(self.engine, apply, name=name)
            return writer

    def dispatch_settings(self) -> DispatchSettings:
        return DispatchSettings(
            base_url=self.settings.base_url,
            secret_key=self.settings.require_secret_key(),
            batch_size=self.settings.batch_size,
            claim_timeout=timedelta(seconds=self.settings.claim_timeout_seconds),
            throttle_per_second=self.settings.throttle_per_second,
            sender_process=self.settings.sender_process,
        )

    def helpers(self) -> ThreadPoolExecutor:
        """A few threads for slow work that follows a commit (posting a reader's email),
        so that a writer never waits on a transport. Made on first use."""
        with self._writers_lock:
            if self._closed:
                raise Closed("the runtime is closed: its process is shutting down")
            if self._helpers is None:
                self._helpers = ThreadPoolExecutor(HELPER_THREADS, thread_name_prefix="helper")
            return self._helpers

    def close(self) -> None:
        with self._writers_lock:
            self._closed = True
            writers, self._writers = list(self._writers.values()), {}
        # The writers first: what they commit on the way out may still hand work over.
        for writer in writers:
            writer.close()
        with self._writers_lock:
            helpers, self._helpers = self._helpers, None
        if helpers is not None:
            helpers.shutdown(wait=True)
        self.engine.dispose()
        self.point_reads.dispose()
