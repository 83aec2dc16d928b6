"""Engines and sessions."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def make_engine(url: str, **kwargs: Any) -> Engine:
    # JSON columns (event payloads by the thousand) through orjson, not the json module.
    kwargs.setdefault("json_serializer", _json_text)
    kwargs.setdefault("json_deserializer", orjson.loads)
    if url.startswith("sqlite"):
        # As many pooled connections as the web's worker threads (anyio's 40): a smaller
        # pool opened and closed an overflow connection, PRAGMAs and all, per request.
        kwargs.setdefault("pool_size", 40)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(_with_driver(url), pool_pre_ping=True, **kwargs)


def _with_driver(url: str) -> str:
    # Plain postgresql:// URLs would pick psycopg2, which we don't ship.
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def make_point_read_engine(url: str) -> Engine:
    """One connection for the point reads a web process makes on its event loop.

    For the most-opened public link, handing one indexed read to a worker thread cost
    more than the read itself. Inline, a query holds up every request of the process
    while it runs, so this engine is for single-row reads by key only, and is made so
    that nothing else can make it wait: its one connection is nobody else's (no queue
    for the pool), and a lock it meets makes it fail within a second instead of
    stalling the process (SQLite's busy timeout; PostgreSQL's lock and statement
    timeouts, for a migration's table lock).
    """
    # Autocommit: a read by key needs no transaction, and on PostgreSQL each BEGIN and
    # ROLLBACK around it would be a round trip more.
    single: dict[str, Any] = {
        "pool_size": 1,
        "max_overflow": 0,
        "pool_timeout": 1,
        "isolation_level": "AUTOCOMMIT",
    }
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 1}, **single)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # No pre-ping: it would be a round trip more per read. After a database restart the
    # first read fails, the pool drops the dead connection, and the next one reconnects.
    options = "-c lock_timeout=1000 -c statement_timeout=2000"
    return create_engine(
        _with_driver(url), connect_args={"options": options, "connect_timeout": 2}, **single
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the web app read while a send writes; foreign keys are off by default.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits as one unit, or not at all."""
    with factory() as session, session.begin():
        yield session


_sqlite_writer = threading.Lock()


@contextmanager
def one_writer(engine: Engine) -> Iterator[None]:
    """On SQLite, the short write transactions of web requests take turns in this process.

    SQLite has one writer anyway; left to its busy handler, concurrent writers wait for
    the lock in sleeps of up to 100 ms, which cut a burst of requests to a tenth and
    stretch the slowest to seconds. A Python lock hands over at once. Only for short
    transactions: a long one would hold every request of the process behind it.
    PostgreSQL writes concurrently and takes no lock here.
    """
    if engine.dialect.name != "sqlite":
        yield
        return
    with _sqlite_writer:
        yield
