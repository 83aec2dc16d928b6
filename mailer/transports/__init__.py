"""Transports: how a claimed batch leaves the building. One small protocol, several backends."""

from __future__ import annotations

from mailer.config import ConfigError, Settings
from mailer.transports.base import Transport


def transport_for(settings: Settings) -> Transport:
    if settings.transport == "outbox":
        from mailer.transports.outbox import OutboxTransport

        return OutboxTransport(settings.outbox_dir)
    if settings.transport == "sendgrid":
        from mailer.transports.sendgrid import SendGridTransport

        if settings.sendgrid_api_key is None or not settings.sendgrid_api_key.get_secret_value():
            raise ConfigError("MAILER_TRANSPORT=sendgrid needs MAILER_SENDGRID_API_KEY")
        return SendGridTransport(
            settings.sendgrid_api_key.get_secret_value(),
            settings.sendgrid_base_url,
            timeout=settings.sendgrid_timeout_seconds,
            click_tracking=settings.sendgrid_click_tracking,
            open_tracking=settings.sendgrid_open_tracking,
        )
    raise ConfigError(
        f"MAILER_TRANSPORT={settings.transport!r} is not available in this version; "
        "use 'outbox' (the default)"
    )
