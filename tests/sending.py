"""Editions to send and a send through a real transport, for the transport tests."""

from __future__ import annotations

from dataclasses import replace

from mailer.dispatch.dispatcher import send_edition
from mailer.runtime import Runtime
from mailer.transports.base import Transport
from tests import factories


def prepared(runtime: Runtime, count: int) -> int:
    """A rendered edition of a newsletter with ``count`` subscribers."""
    newsletter_id = factories.newsletter(runtime)
    factories.subscribers(runtime, count)
    return factories.edition(runtime, newsletter_id)


def send(
    runtime: Runtime, edition_id: int, transport: Transport, **overrides: object
) -> dict[str, int]:
    """``send_edition`` as the CLI runs it (a sender process unless told otherwise);
    the transport is closed after."""
    settings = replace(runtime.dispatch_settings(), **overrides)  # type: ignore[arg-type]
    try:
        return send_edition(runtime.sessions, edition_id, transport, settings)
    finally:
        transport.close()
