"""Transports: how a claimed batch leaves the building. One small protocol, several backends."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailer.transports.base import Transport

# Not imported here at run time: a sender process imports a transport's module, and
# with it this package, and it has no use for settings (pydantic, a third of its start).
if TYPE_CHECKING:
    from mailer.config import Settings


def transport_for(settings: Settings) -> Transport:
    if settings.transport == "outbox":
        from mailer.transports.outbox import OutboxTransport

        return OutboxTransport(settings.outbox_dir)
    if settings.transport == "sendgrid":
        return _sendgrid(settings)
    return _smtp(settings)


def _sendgrid(settings: Settings) -> Transport:
    from mailer.config import ConfigError
    from mailer.transports.sendgrid import SendGridTransport

    if settings.sendgrid_api_key is None or not settings.sendgrid_api_key.get_secret_value():
        raise ConfigError("MAILER_TRANSPORT=sendgrid needs MAILER_SENDGRID_API_KEY")
    return SendGridTransport(
        settings.sendgrid_api_key.get_secret_value(),
        settings.sendgrid_base_url,
        timeout=settings.sendgrid_timeout_seconds,
        concurrency=settings.sendgrid_concurrency,
        click_tracking=settings.sendgrid_click_tracking,
        open_tracking=settings.sendgrid_open_tracking,
    )


def _smtp(settings: Settings) -> Transport:
    from mailer.config import ConfigError
    from mailer.transports.smtp import SmtpConfig, SmtpTransport, load_dkim_key

    dkim_key = None
    if settings.dkim_private_key is not None:
        if not (settings.dkim_domain and settings.dkim_selector):
            raise ConfigError("DKIM signing needs MAILER_DKIM_DOMAIN and MAILER_DKIM_SELECTOR")
        try:
            dkim_key = load_dkim_key(settings.dkim_private_key.get_secret_value())
        except OSError as exc:
            raise ConfigError(f"MAILER_DKIM_PRIVATE_KEY: cannot read: {exc}") from exc
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    return SmtpTransport(
        SmtpConfig(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=password,
            pool_size=settings.smtp_pool_size,
            timeout=settings.smtp_timeout_seconds,
            return_path=settings.smtp_return_path,
            dkim_domain=settings.dkim_domain,
            dkim_selector=settings.dkim_selector,
            dkim_key=dkim_key,
        )
    )
