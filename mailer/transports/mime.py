"""One RFC 5322 multipart/alternative message per recipient (outbox and SMTP)."""

from __future__ import annotations

import email.policy
import re
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from mailer.db.base import utcnow
from mailer.rendering.personalize import personalize
from mailer.transports.base import Envelope, Recipient

_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f;,\"<>]")

# CRLF line ends as on the wire. Headers are not folded below RFC 5322's 998-octet limit:
# some receivers mishandle a List-Unsubscribe whose URL starts on a continuation line.
WIRE_POLICY = email.policy.SMTP.clone(max_line_length=998)


def display_name(name: str | None) -> str:
    """A name safe to put in a header: no control characters or separators."""
    return _UNSAFE_NAME.sub("", name or "").strip()


def build_message(envelope: Envelope, recipient: Recipient) -> EmailMessage:
    domain = envelope.from_email.rpartition("@")[2]
    values = recipient.tokens()
    message = EmailMessage()
    message["From"] = Address(display_name(envelope.from_name), addr_spec=envelope.from_email)
    message["To"] = Address(display_name(recipient.name), addr_spec=recipient.email)
    if envelope.reply_to:
        message["Reply-To"] = envelope.reply_to
    message["Subject"] = envelope.subject
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = make_msgid(
        idstring=f"e{envelope.edition_id}.d{recipient.delivery_id}", domain=domain
    )
    message["List-Id"] = f"<{envelope.newsletter_slug}.{domain}>"
    # RFC 8058: one-click unsubscribe, as Gmail and Yahoo require of bulk senders.
    message["List-Unsubscribe"] = f"<{recipient.unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["X-Mailer-Delivery"] = f"{envelope.edition_id}.{recipient.delivery_id}"
    message.set_content(personalize(envelope.text, envelope.nonce, values, html=False))
    message.add_alternative(
        personalize(envelope.html, envelope.nonce, values, html=True), subtype="html"
    )
    return message
