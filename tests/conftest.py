"""Fixtures: every database test runs on SQLite and, when configured, on PostgreSQL.

PostgreSQL tests need ``MAILER_TEST_POSTGRES_URL`` (for example
``postgresql://postgres@127.0.0.1:5432/test``); each test session creates its own
database on that server and drops it afterwards. With
``MAILER_TEST_REQUIRE_POSTGRES=1`` (as in CI) a missing server fails instead of
skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, case, create_engine, func, inspect, select, text
from sqlalchemy.engine import make_url

from mailer.config import Settings
from mailer.db import migrate
from mailer.db.models import Base, Delivery, Event
from mailer.db.session import make_engine
from mailer.dispatch.tallies import STAMPS, STORED, TALLIES
from mailer.events.tallies import EVENT_TALLIES, hour_of
from mailer.runtime import Runtime
from subscribers import tallies as list_tallies
from subscribers.models import Subscription

SECRET = "test-secret-key-that-is-long-enough-for-production-use"
POSTGRES_URL = os.environ.get("MAILER_TEST_POSTGRES_URL")
REQUIRE_POSTGRES = os.environ.get("MAILER_TEST_REQUIRE_POSTGRES") == "1"


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Neither a developer's mailer.toml nor their MAILER_* variables leak into tests.
    for name in list(os.environ):
        if name.startswith("MAILER_") and not name.startswith("MAILER_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MAILER_CONFIG_FILE", str(tmp_path / "absent.toml"))


def _admin_engine(url: str) -> Engine:
    admin = make_url(url).set(drivername="postgresql+psycopg")
    return create_engine(admin, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    if not POSTGRES_URL:
        if REQUIRE_POSTGRES:
            pytest.fail("MAILER_TEST_REQUIRE_POSTGRES=1 but MAILER_TEST_POSTGRES_URL is not set")
        pytest.skip("PostgreSQL tests are off: set MAILER_TEST_POSTGRES_URL to run them")
    name = f"mailer_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine(POSTGRES_URL)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        if REQUIRE_POSTGRES:
            raise
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} is not reachable: {exc}")
    url = make_url(POSTGRES_URL).set(drivername="postgresql+psycopg", database=name)
    rendered = url.render_as_string(hide_password=False)
    engine = make_engine(rendered)
    migrate.upgrade(engine)
    engine.dispose()
    yield rendered
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def tallies_disagreeing(url: str) -> list[str]:
    """Where the kept counts (the ledger's, the events', the lists') differ from counting
    rows."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table(TALLIES.name):
                return []  # a test that migrated the database down
            counted: dict[tuple[int, str], int] = {}
            for edition, status, number in connection.execute(
                select(Delivery.edition_id, Delivery.status, func.count()).group_by(
                    Delivery.edition_id, Delivery.status
                )
            ):
                counted[(edition, status)] = number
            stamps = {
                "delivered": Delivery.delivered_at.is_not(None),
                "opened": Delivery.opened_at.is_not(None),
                "clicked": Delivery.clicked_at.is_not(None),
                "bounced_hard": Delivery.bounce_class == "hard",
                "bounced_soft": Delivery.bounce_class == "soft",
            }
            for edition, *numbers in connection.execute(
                select(
                    Delivery.edition_id,
                    *(func.sum(case((c, 1), else_=0)) for c in stamps.values()),
                ).group_by(Delivery.edition_id)
            ):
                counted |= {(edition, s): n for s, n in zip(stamps, numbers, strict=True)}
            columns = [*map(str, STORED), *STAMPS]
            kept: dict[tuple[int, str], int] = {}
            for edition, *sums in connection.execute(
                select(TALLIES.c.edition_id, *(func.sum(TALLIES.c[c]) for c in columns)).group_by(
                    TALLIES.c.edition_id
                )
            ):
                kept |= {(edition, c): n for c, n in zip(columns, sums, strict=True)}
            for edition, kind, at in connection.execute(
                select(Event.edition_id, Event.kind, Event.occurred_at).where(
                    Event.edition_id.is_not(None)
                )
            ):
                key = (edition, f"{kind} events at {hour_of(at):%Y-%m-%d %H}h")
                counted[key] = counted.get(key, 0) + 1
            for edition, kind, hour, number in connection.execute(
                select(
                    EVENT_TALLIES.c.edition_id,
                    EVENT_TALLIES.c.kind,
                    EVENT_TALLIES.c.hour,
                    func.sum(EVENT_TALLIES.c.events),
                ).group_by(EVENT_TALLIES.c.edition_id, EVENT_TALLIES.c.kind, EVENT_TALLIES.c.hour)
            ):
                kept[(edition, f"{kind} events at {hour_of(hour):%Y-%m-%d %H}h")] = number
            # The lists' memberships, keyed by a negative id so as not to meet an edition's.
            for list_id, status, number in connection.execute(
                select(Subscription.list_id, Subscription.status, func.count()).group_by(
                    Subscription.list_id, Subscription.status
                )
            ):
                counted[(-list_id, status)] = number
            for list_id, by_status in list_tallies.counts(connection).items():
                for status, number in by_status.items():
                    if number:
                        kept[(-list_id, status)] = number
    finally:
        engine.dispose()
    return [
        f"{f'list {-edition}' if edition < 0 else f'edition {edition}'} {what}: "
        f"kept {kept.get((edition, what), 0)}, "
        f"counted {counted.get((edition, what), 0)}"
        for edition, what in sorted(set(counted) | set(kept))
        if kept.get((edition, what), 0) != counted.get((edition, what), 0)
    ]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    # Every test that writes the ledger and events through the application checks, at
    # its end, that the kept counts (mailer.dispatch.tallies, mailer.events.tallies,
    # subscribers.tallies) say
    # what counting the rows says.
    checked = request.node.get_closest_marker("ledger_by_hand") is None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'mailer.db'}"
        engine = make_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        yield url
        if checked:
            assert not tallies_disagreeing(url)
        return
    url = request.getfixturevalue("postgres_database")
    yield url
    disagreeing = tallies_disagreeing(url) if checked else []
    engine = make_engine(url)
    with engine.begin() as connection:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    assert not disagreeing


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        outbox_dir=tmp_path / "outbox",
        secret_key=SECRET,
        base_url="https://news.example.org",
    )


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    yield rt
    rt.close()


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The command line pointed at the test database, run from a scratch directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAILER_DATABASE_URL", database_url)
    monkeypatch.setenv("MAILER_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("MAILER_BASE_URL", "https://news.example.org")
    return tmp_path
