"""One RFC 5322 multipart/alternative message per recipient (outbox and SMTP).

Written directly rather than through ``email.message``: the headers every recipient
shares are written once per edition, and each recipient only costs its own few header
lines, token substitution and a quoted-printable pass in C. Python's ``EmailMessage``
took about 7 ms per message; this takes a small fraction of it.

Headers: the shared ones (From, Subject, Reply-To, List-Id, Feedback-ID…) are
encoded and folded once per edition, and each recipient costs only To and a few
fixed lines; ``mailer.transports.headers`` says how values are encoded.
"""

from __future__ import annotations

import binascii
import secrets
from email.utils import format_datetime

from mailer.db.base import utcnow
from mailer.rendering.personalize import personalize
from mailer.transports.base import Envelope, Recipient
from mailer.transports.headers import (
    CONTROL,
    address,
    as_it_is,
    ascii_value,
    feedback_id,
    fold,
    list_id,
    room,
    unstructured,
)


def shared_headers(envelope: Envelope) -> bytes:
    """The headers every recipient of the edition gets, encoded and folded once."""
    if CONTROL.search(envelope.subject):
        raise ValueError(
            f"refusing a subject with line breaks or control characters: {envelope.subject!r}"
        )
    from_email = ascii_value("sender address", envelope.from_email)
    lines = [
        fold("From", address(envelope.from_name, from_email, room("From"))),
        fold("Subject", unstructured(envelope.subject, room("Subject"))),
    ]
    if envelope.reply_to:
        lines.append(fold("Reply-To", ascii_value("reply-to address", envelope.reply_to)))
    lines += [
        fold("List-Id", list_id(envelope)),
        # RFC 8058: one-click unsubscribe, as Gmail and Yahoo require of bulk senders.
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
        fold("Feedback-ID", feedback_id(envelope)),
        fold("Content-Language", ascii_value("language", envelope.language)),
        "MIME-Version: 1.0\r\n",
    ]
    return "".join(lines).encode("ascii")


def _quoted_printable(text: str) -> bytes:
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True)
    # b2a_qp breaks lines with LF; the wire wants CRLF.
    return encoded.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


_TO_ROOM = room("To")


class MessageWriter:
    """Writes the messages of one edition, one recipient at a time."""

    def __init__(self, envelope: Envelope) -> None:
        self.envelope = envelope
        self.domain = envelope.from_email.rpartition("@")[2]
        # "=_" cannot occur in quoted-printable output, so the boundary cannot collide.
        self.boundary = f"=_mailer_{secrets.token_hex(12)}"
        self._delivery_header = "X-Mailer-Test-Send" if envelope.test_send else "X-Mailer-Delivery"
        self._shared = shared_headers(envelope)
        self._content_type = (
            f'Content-Type: multipart/alternative;\r\n boundary="{self.boundary}"\r\n\r\n'
        )

    def _to(self, recipient: Recipient) -> str:
        name = recipient.name
        # The usual name (plain ASCII words) needs neither cleaning nor encoding.
        if name and as_it_is(name):
            return fold("To", f"{name} <{recipient.email}>")
        return fold("To", address(name, recipient.email, _TO_ROOM))

    def message_id(self, recipient: Recipient) -> str:
        if self.envelope.test_send:
            # No edition or delivery in it: a reply or bounce names nobody's delivery.
            return f"<{secrets.token_hex(8)}.test@{self.domain}>"
        return (
            f"<{secrets.token_hex(8)}.e{self.envelope.edition_id}"
            f".d{recipient.delivery_id}@{self.domain}>"
        )

    def render(self, recipient: Recipient) -> tuple[bytes, str]:
        """The message's bytes, and its Message-ID."""
        envelope = self.envelope
        values = recipient.tokens()
        text = personalize(envelope.text, envelope.nonce, values, html=False)
        html = personalize(envelope.html, envelope.nonce, values, html=True)
        message_id = self.message_id(recipient)
        for value in (recipient.unsubscribe_url, recipient.email):
            if any(ch in value for ch in "\r\n<>"):
                raise ValueError(f"refusing a header value with line breaks or brackets: {value!r}")
        head = (
            f"{self._to(recipient)}"
            f"Date: {format_datetime(utcnow())}\r\n"
            f"Message-ID: {message_id}\r\n"
            f"List-Unsubscribe: <{recipient.unsubscribe_url}>\r\n"
            f"{self._delivery_header}: {envelope.edition_id}.{recipient.delivery_id}\r\n"
            f"{self._content_type}"
        ).encode("ascii")
        boundary = self.boundary.encode("ascii")
        part = (
            b'Content-Type: text/%s; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        )
        body = b"".join(
            (
                b"--",
                boundary,
                b"\r\n",
                part % b"plain",
                _quoted_printable(text),
                b"\r\n",
                b"--",
                boundary,
                b"\r\n",
                part % b"html",
                _quoted_printable(html),
                b"\r\n",
                b"--",
                boundary,
                b"--\r\n",
            )
        )
        return self._shared + head + body, message_id
