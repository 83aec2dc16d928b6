"""The real outbox transport, instrumented for tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mailer.transports.base import Envelope, Recipient, Result
from mailer.transports.outbox import OutboxTransport


class Recording(OutboxTransport):
    """The real outbox, remembering every delivery it was ever handed."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.handed: list[int] = []

    def send(self, envelope: Envelope, recipients: Sequence[Recipient]) -> list[Result]:
        self.handed += [r.delivery_id for r in recipients]
        return super().send(envelope, recipients)


class BatchApi(Recording):
    """The real outbox, answering as a batch API does: one message id per request."""

    def send(self, envelope: Envelope, recipients: Sequence[Recipient]) -> list[Result]:
        results = super().send(envelope, recipients)
        batch = f"batch-{recipients[0].delivery_id}"
        return [r._replace(message_id=batch) for r in results]
