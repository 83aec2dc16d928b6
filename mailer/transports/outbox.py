"""The outbox transport: each message written as a real ``.eml`` file.

Files appear atomically (written aside, then renamed), one folder per edition,
named by delivery id, so a resent delivery would overwrite rather than add.
Test sends go to ``test-sends/edition-<id>/`` instead, named by time, so they never
mix with what the edition's readers got.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mailer.db.base import utcnow
from mailer.transports.base import Envelope, Outcome, Recipient, Result
from mailer.transports.mime import MessageWriter


class OutboxTransport:
    name = "outbox"
    concurrency = 1  # a local directory: nothing to overlap with

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._writer: MessageWriter | None = None

    # Pickled as its folder (a sender process encodes the shared headers anew).
    def __getstate__(self) -> dict[str, Path]:
        return {"directory": self.directory}

    def __setstate__(self, state: dict[str, Path]) -> None:
        self.__init__(state["directory"])  # type: ignore[misc]

    def _writer_for(self, envelope: Envelope) -> MessageWriter:
        # One writer per edition run: its shared headers are encoded once.
        if self._writer is None or self._writer.envelope is not envelope:
            self._writer = MessageWriter(envelope)
        return self._writer

    def folder_for(self, edition_id: int) -> Path:
        return self.directory / f"edition-{edition_id}"

    def test_folder_for(self, edition_id: int) -> Path:
        return self.directory / "test-sends" / f"edition-{edition_id}"

    def send(self, envelope: Envelope, recipients: Sequence[Recipient]) -> list[Result]:
        if envelope.test_send:
            folder = self.test_folder_for(envelope.edition_id)
            # Test sends carry no delivery id of their own: each send gets a fresh prefix,
            # to the microsecond so that a folder listed by name lists them in order (a
            # sign-up's two confirmations can be a few milliseconds apart).
            prefix = f"{utcnow():%Y%m%dT%H%M%S.%fZ}-{secrets.token_hex(3)}-"
        else:
            folder, prefix = self.folder_for(envelope.edition_id), ""
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            # Nothing was written: the whole batch can be queued again.
            return [
                Result(r.delivery_id, Outcome.RETRY, error=str(exc), transport_down=True)
                for r in recipients
            ]
        try:
            writer = self._writer_for(envelope)
        except (ValueError, TypeError) as exc:
            # The shared headers cannot be written (say, a subject with a line break).
            return [Result(r.delivery_id, Outcome.FAILED, error=str(exc)) for r in recipients]
        results = []
        for recipient in recipients:
            try:
                data, message_id = writer.render(recipient)
            except (ValueError, TypeError) as exc:
                # A value no header can carry: this recipient can never be sent.
                results.append(Result(recipient.delivery_id, Outcome.FAILED, error=str(exc)))
                continue
            try:
                _write_atomically(folder / f"{prefix}{recipient.delivery_id}.eml", data)
            except OSError as exc:
                results.append(Result(recipient.delivery_id, Outcome.RETRY, error=str(exc)))
            else:
                results.append(Result(recipient.delivery_id, Outcome.SENT, message_id=message_id))
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
