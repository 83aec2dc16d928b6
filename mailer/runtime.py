"""What a command or the web app needs at hand: settings, the database, a transport."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailer.config import Settings
from mailer.db.session import make_engine, make_point_read_engine, make_sessionmaker
from mailer.dispatch.dispatcher import DispatchSettings


@dataclass
class Runtime:
    settings: Settings
    engine: Engine = field(init=False)
    sessions: sessionmaker[Session] = field(init=False)
    # The web's event loop only: see make_point_read_engine. Connects when first used.
    point_reads: Engine = field(init=False)

    def __post_init__(self) -> None:
        self.engine = make_engine(self.settings.database_url)
        self.sessions = make_sessionmaker(self.engine)
        self.point_reads = make_point_read_engine(self.settings.database_url)

    def dispatch_settings(self) -> DispatchSettings:
        return DispatchSettings(
            base_url=self.settings.base_url,
            secret_key=self.settings.require_secret_key(),
            batch_size=self.settings.batch_size,
            claim_timeout=timedelta(seconds=self.settings.claim_timeout_seconds),
            throttle_per_second=self.settings.throttle_per_second,
            sender_process=self.settings.sender_process,
        )

    def close(self) -> None:
        self.engine.dispose()
        self.point_reads.dispose()
