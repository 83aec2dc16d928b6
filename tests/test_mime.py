"""Messages written by hand read back exactly, by Python's own email parser."""

from __future__ import annotations

import email
import email.policy

import pytest

from mailer.rendering.personalize import personalize
from mailer.transports.base import Envelope, Recipient
from mailer.transports.mime import MessageWriter

NONCE = "0123456789ab"
TEXT = (
    "Grüße, %%0123456789ab:name%% — “quotes” and a trailing space \n"
    "From the start of a line.\n" + "x" * 300 + "\n=equals= and tabs\t\n"
    "Leave: %%0123456789ab:unsubscribe_url%%\n"
)
HTML = '<p>Hi %%0123456789ab:name%%</p><a href="%%0123456789ab:unsubscribe_url%%">Leave</a>'


def envelope(subject: str = "Heute: Fähren fahren wieder — und mehr") -> Envelope:
    return Envelope(
        edition_id=3,
        newsletter_slug="daily",
        from_name="Rédaction",
        from_email="d@news.example.org",
        reply_to="desk@news.example.org",
        subject=subject,
        html=HTML,
        text=TEXT,
        nonce=NONCE,
    )


@pytest.mark.parametrize("name", ["Ada Reader", "Zoë O'Brien", 'Bo "B" <Bad>, Esq;', None])
def test_written_message_parses_back(name: str | None) -> None:
    recipient = Recipient(42, "reader@example.com", name, "https://news.example.org/u/1.3.sig")
    data, message_id = MessageWriter(envelope()).render(recipient)

    message = email.message_from_bytes(data, policy=email.policy.default)
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert message["Subject"] == "Heute: Fähren fahren wieder — und mehr"
    assert message["From"].addresses[0].display_name == "Rédaction"
    assert message["To"].addresses[0].addr_spec == "reader@example.com"
    assert message["Message-ID"] == message_id and "e3.d42@news.example.org" in message_id
    assert message["List-Unsubscribe"] == "<https://news.example.org/u/1.3.sig>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Reply-To"] == "desk@news.example.org"
    assert message.get_content_type() == "multipart/alternative"
    plain, html = (part.get_content() for part in message.iter_parts())
    values = {"name": name or "", "unsubscribe_url": recipient.unsubscribe_url, "email": ""}
    assert plain.replace("\r\n", "\n") == personalize(TEXT, NONCE, values, html=False)
    assert html.replace("\r\n", "\n") == personalize(HTML, NONCE, values, html=True)
    if name:
        assert message["To"].addresses[0].display_name  # kept, cleaned of separators


def test_line_breaks_in_header_values_are_refused() -> None:
    writer = MessageWriter(envelope())
    with pytest.raises(ValueError, match="line breaks"):
        writer.render(Recipient(1, "a@example.com", "A", "https://x/u/1\r\nBcc: all@example.com"))
    with pytest.raises(ValueError):
        MessageWriter(envelope(subject="Two\nlines"))
