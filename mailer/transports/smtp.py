"""The SMTP transport: one message per recipient (the outbox's MIME) over a pool of connections.

Replies decide: 2xx sent; a 4xx is temporary (queued again for a later try);
a 5xx fails that recipient with the server's reply stored. A connection lost
after the message data went out is ``unknown``: the server may have taken it.
Optional DKIM signing and a VERP envelope sender per delivery.
"""

from __future__ import annotations

import smtplib
import ssl
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import dkim

from mailer.transports.base import (
    Envelope,
    Outcome,
    Recipient,
    Result,
    TransportUnauthorized,
)
from mailer.transports.mime import MessageWriter


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: str = "starttls"  # starttls | tls | none
    username: str | None = None
    password: str | None = None
    pool_size: int = 4
    timeout: float = 30.0
    return_path: str | None = None  # "bounces+{delivery_id}@domain"
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_key: bytes | None = None
    tls_context: ssl.SSLContext | None = None


def load_dkim_key(value: str) -> bytes:
    """PEM text, or the path of a PEM file."""
    if "-----BEGIN" in value:
        return value.encode("ascii")
    return Path(value).read_bytes()


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {text}".strip()


class SmtpTransport:
    name = "smtp"
    # Each batch already fans out over the connection pool; a second one in flight
    # keeps the pool busy while the first is recorded and the next claimed.
    concurrency = 2

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._local = threading.local()
        self._connections: list[smtplib.SMTP] = []
        self._lock = threading.Lock()
        self._writer: MessageWriter | None = None
        self._pool = ThreadPoolExecutor(config.pool_size, thread_name_prefix="smtp")

    # Pickled as its configuration (a sender process opens its own connections).
    def __getstate__(self) -> dict[str, SmtpConfig]:
        return {"config": self.config}

    def __setstate__(self, state: dict[str, SmtpConfig]) -> None:
        self.__init__(state["config"])  # type: ignore[misc]

    def send(self, envelope: Envelope, recipients: Sequence[Recipient]) -> list[Result]:
        return list(self._pool.map(lambda r: self._send_one(envelope, r), recipients))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for connection in self._connections:
                try:
                    connection.quit()
                except (smtplib.SMTPException, OSError):
                    connection.close()
            self._connections.clear()

    def _connection(self) -> smtplib.SMTP:
        connection: smtplib.SMTP | None = getattr(self._local, "connection", None)
        if connection is not None:
            try:
                if connection.noop()[0] == 250:
                    return connection
            except (smtplib.SMTPException, OSError):
                pass
        config = self.config
        context = config.tls_context or ssl.create_default_context()
        if config.security == "tls":
            connection = smtplib.SMTP_SSL(
                config.host, config.port, timeout=config.timeout, context=context
            )
        else:
            connection = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
            if config.security == "starttls":
                connection.starttls(context=context)
        if config.username and config.password:
            connection.login(config.username, config.password)
        self._local.connection = connection
        with self._lock:
            self._connections.append(connection)
        return connection

    def _writer_for(self, envelope: Envelope) -> MessageWriter:
        # One writer per edition run (shared headers encoded once), safe across threads.
        with self._lock:
            if self._writer is None or self._writer.envelope is not envelope:
                self._writer = MessageWriter(envelope)
            return self._writer

    def _message(self, envelope: Envelope, recipient: Recipient) -> tuple[bytes, str]:
        data, message_id = self._writer_for(envelope).render(recipient)
        config = self.config
        if config.dkim_domain and config.dkim_selector and config.dkim_key:
            signature = dkim.sign(
                data,
                config.dkim_selector.encode(),
                config.dkim_domain.encode(),
                config.dkim_key,
                include_headers=[
                    b"from",
                    b"to",
                    b"subject",
                    b"date",
                    b"message-id",
                    b"list-unsubscribe",
                    b"list-unsubscribe-post",
                    b"list-id",
                    # Gmail reads Feedback-ID only when the sender's DKIM signature covers it.
                    b"feedback-id",
                    b"mime-version",
                    b"content-type",
                ],
            )
            data = signature + data
        return data, message_id

    def _send_one(self, envelope: Envelope, recipient: Recipient) -> Result:
        delivery = recipient.delivery_id
        try:
            data, message_id = self._message(envelope, recipient)
        except (ValueError, TypeError, dkim.DKIMException) as exc:
            return Result(delivery, Outcome.FAILED, error=f"cannot build message: {exc}")
        sender = envelope.from_email
        # A test send's bounces go back to the sender, never through the VERP address
        # (whose delivery id would be taken for a ledger row's).
        if self.config.return_path and not envelope.test_send:
            sender = self.config.return_path.format(
                delivery_id=delivery, edition_id=envelope.edition_id
            )
        try:
            connection = self._connection()
        except smtplib.SMTPAuthenticationError as exc:
            # Bad credentials fail every message alike: stop the edition, not the list.
            refusal = _reply(exc.smtp_code, exc.smtp_error)
            raise TransportUnauthorized(f"SMTP login refused: {refusal}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            # Nothing was handed over: try again later.
            self._local.connection = None
            return Result(
                delivery, Outcome.RETRY, error=f"could not connect: {exc}", transport_down=True
            )
        try:
            connection.sendmail(sender, [recipient.email], data)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = exc.recipients[recipient.email]
            return self._refused(delivery, code, reply)
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            return self._refused(delivery, exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPServerDisconnected as exc:
            # Lost mid-conversation: the server may already have taken the message.
            self._local.connection = None
            error = f"outcome unknown: connection lost: {exc}"
            return Result(delivery, Outcome.UNKNOWN, error=error)
        except smtplib.SMTPException as exc:
            # Caught before OSError (SMTPException is one): refused before DATA.
            return Result(delivery, Outcome.RETRY, error=str(exc))
        except OSError as exc:
            self._local.connection = None
            error = f"outcome unknown: connection lost: {exc}"
            return Result(delivery, Outcome.UNKNOWN, error=error)
        return Result(delivery, Outcome.SENT, message_id=message_id)

    @staticmethod
    def _refused(delivery: int, code: int, reply: bytes | str) -> Result:
        outcome = Outcome.RETRY if 400 <= code < 500 else Outcome.FAILED
        return Result(delivery, outcome, error=_reply(code, reply))
