"""The outbox transport: each message written as a real ``.eml`` file.

Files appear atomically (written aside, then renamed), one folder per edition,
named by delivery id, so a resent delivery would overwrite rather than add.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mailer.transports.base import Envelope, Outcome, Recipient, Result
from mailer.transports.mime import WIRE_POLICY, build_message


class OutboxTransport:
    name = "outbox"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def folder_for(self, edition_id: int) -> Path:
        return self.directory / f"edition-{edition_id}"

    def send(self, envelope: Envelope, recipients: Sequence[Recipient]) -> list[Result]:
        folder = self.folder_for(envelope.edition_id)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            # Nothing was written: the whole batch can be queued again.
            return [
                Result(r.delivery_id, Outcome.RETRY, error=str(exc), transport_down=True)
                for r in recipients
            ]
        results = []
        for recipient in recipients:
            try:
                message = build_message(envelope, recipient)
            except (ValueError, TypeError) as exc:
                # A header the email package refuses: this recipient can never be sent.
                results.append(Result(recipient.delivery_id, Outcome.FAILED, error=str(exc)))
                continue
            try:
                _write_atomically(
                    folder / f"{recipient.delivery_id}.eml",
                    message.as_bytes(policy=WIRE_POLICY),
                )
            except OSError as exc:
                results.append(Result(recipient.delivery_id, Outcome.RETRY, error=str(exc)))
            else:
                results.append(
                    Result(recipient.delivery_id, Outcome.SENT, message_id=message["Message-ID"])
                )
        return results

    def close(self) -> None:
        return None


def _write_atomically(path: Path, data: bytes) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
