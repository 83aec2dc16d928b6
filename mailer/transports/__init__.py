"""Transports: how a claimed batch leaves the building. One small protocol, several backends."""

from __future__ import annotations

from mailer.config import ConfigError, Settings
from mailer.transports.base import Transport


def transport_for(settings: Settings) -> Transport:
    if settings.transport == "outbox":
        from mailer.transports.outbox import OutboxTransport

        return OutboxTransport(settings.outbox_dir)
    raise ConfigError(
        f"MAILER_TRANSPORT={settings.transport!r} is not available in this version; "
        "use 'outbox' (the default)"
    )
