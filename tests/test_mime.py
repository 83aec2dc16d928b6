"""Messages written by hand read back exactly, by Python's own email parser.

Hostile names and subjects (commas, quotes, backslashes, brackets, emoji, words that
look like encoded words, control characters, 200 characters…) go through the writer
both transports share, and through the outbox and SMTP transports themselves, and are
read back under ``email.policy.default`` and ``email.policy.strict``.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from email.header import decode_header
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.rendering.personalize import personalize
from mailer.transports.base import Envelope, Recipient
from mailer.transports.headers import (
    MAX_ENCODED_WORD,
    MAX_LINE,
    address,
    clean_name,
    encoded_words,
    phrase,
    room,
)
from mailer.transports.mime import MessageWriter
from mailer.transports.outbox import OutboxTransport
from mailer.transports.smtp import SmtpConfig, SmtpTransport
from tests.smtp_server import Recorder, running

NONCE = "0123456789ab"
TEXT = (
    "Grüße, %%0123456789ab:name%% — “quotes” and a trailing space \n"
    "From the start of a line.\n" + "x" * 300 + "\n=equals= and tabs\t\n"
    "Leave: %%0123456789ab:unsubscribe_url%%\n"
)
HTML = '<p>Hi %%0123456789ab:name%%</p><a href="%%0123456789ab:unsubscribe_url%%">Leave</a>'
UNSUBSCRIBE = "https://news.example.org/u/1.3.sig"
POLICIES = (email.policy.default, email.policy.strict)
ENCODED_WORD = re.compile(rb"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
ADJACENT_ENCODED_WORDS = re.compile(r"\?= =\?")

ZOE = 'Zoë Ünïcødé, "quoted"'
LONG_SUBJECT = (
    "Heute 🎉 in Kürze: Fähren fahren wieder, die Brücke bleibt zu, und was der Rat "
    "über „Mieten“ sagte — alles, was Sie wissen müssen, bevor Sie heute das Haus "
    "verlassen; dazu ein Blick aufs Wetter am Wochenende…"
)
HOSTILE_NAMES = [
    ZOE,
    "Ada Reader",
    "Zoë O'Brien",
    'Bo "B" <Bad>, Esq;',
    "Dr. J. R. Smith (ret.)",
    'back\\slash \\ and \\"quote',
    "=?utf-8?q?not_me?=",
    "a =?x?= b",
    "Bérénice-Amélie Rosemonde Dûbois-Bénard",
    "山田 太郎",
    "👩‍👩‍👧 family",
    "Ünïcødé " * 12,  # one run longer than an encoded word
    "x" * 120,  # a word longer than a line
    "tab\tand\r\nbreak\x00s\u2028and\x85more",
    "  spaced   out  ",
    "@ : ; [ ] ( ) < > ,",
    '"',
    "\\",
]
HOSTILE_SUBJECTS = [
    LONG_SUBJECT,
    "Heute: Fähren fahren wieder — und mehr",
    "=?utf-8?q?looks_encoded?= and is not",
    'Quotes "in" it, commas, and ; semicolons',
    "🎉" * 80,
    "x" * 200,
    "Plain",
]
assert len(LONG_SUBJECT) >= 200


def envelope(
    subject: str = "Heute: Fähren fahren wieder — und mehr",
    from_name: str = "Rédaction",
    newsletter_name: str = "Daily, “the” news",
) -> Envelope:
    return Envelope(
        edition_id=3,
        newsletter_slug="daily",
        from_name=from_name,
        from_email="d@news.example.org",
        reply_to="desk@news.example.org",
        subject=subject,
        html=HTML,
        text=TEXT,
        nonce=NONCE,
        newsletter_name=newsletter_name,
        language="de",
    )


def check_display_name(raw: str, parsed: str, name: str) -> None:
    """``parsed`` is the name back, exactly, once cleaned. Except where a name needs
    more than one encoded word in a row: RFC 2047 6.2 says the space between them is
    not text, and Python (3.11, CPython gh-128110) still reads one there; then the
    characters must all be there in order, and each run of encoded words must decode,
    the RFC's way, to exactly a piece of the name."""
    expected = clean_name(name)
    if not ADJACENT_ENCODED_WORDS.search(raw):
        assert parsed == expected
        return
    assert parsed.replace(" ", "") == expected.replace(" ", "")
    for run in re.findall(r"=\?[^?]+\?[bq]\?[^?]*\?=(?: =\?[^?]+\?[bq]\?[^?]*\?=)+", raw):
        decoded = b"".join(part for part, _ in decode_header(run)).decode("utf-8")
        assert decoded in expected


def check_message(data: bytes, sent: Envelope, recipient: Recipient) -> None:
    head, _, _ = data.partition(b"\r\n\r\n")
    assert data.isascii()
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    for line in head.split(b"\r\n"):
        # Longer only where nothing can fold: List-Unsubscribe's URL, a single word.
        single = re.fullmatch(rb"(?:[\w-]+: | )\S+(?: <\S+>)?", line)
        assert len(line) <= MAX_LINE or line.startswith(b"List-Unsubscribe:") or single, line
        assert len(line) <= 998
    for word in ENCODED_WORD.findall(head):
        assert len(word) <= MAX_ENCODED_WORD, word
    unfolded = head.replace(b"\r\n ", b" ").decode("ascii")
    raw = dict(line.split(": ", 1) for line in unfolded.split("\r\n"))

    for policy in POLICIES:
        message = email.message_from_bytes(data, policy=policy)
        assert message.defects == []
        for field in message:
            assert message[field].defects == (), field
        assert message["Subject"] == sent.subject
        (sender,) = message["From"].addresses
        assert sender.addr_spec == sent.from_email
        check_display_name(raw["From"], sender.display_name, sent.from_name)
        (to,) = message["To"].addresses
        assert to.addr_spec == recipient.email
        check_display_name(raw["To"], to.display_name, recipient.name or "")
        assert message["Reply-To"] == sent.reply_to
        assert message["List-Unsubscribe"] == f"<{recipient.unsubscribe_url}>"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["Feedback-ID"] == "e3:daily:news.e-3256d6fb"
        assert message["Content-Language"] == "de"
        assert message.get_content_type() == "multipart/alternative"
        plain, html = (part.get_content() for part in message.iter_parts())
        values = recipient.tokens()
        # Line ends are the wire's (a name with a line break in it included).
        expected_text = personalize(TEXT, NONCE, values, html=False)
        assert plain.replace("\r\n", "\n") == expected_text.replace("\r\n", "\n")
        expected_html = personalize(HTML, NONCE, values, html=True)
        assert html.replace("\r\n", "\n") == expected_html.replace("\r\n", "\n")
    # List-Id: the newsletter's name as a phrase, then its label (RFC 2919).
    label = "<daily.news.example.org>"
    name = clean_name(sent.newsletter_name)
    assert raw["List-Id"] == (f"{phrase(name, room('List-Id'))} {label}" if name else label)
    as_address = email.policy.strict.header_factory(
        "To", raw["List-Id"].replace(label, "<daily@news.example.org>")
    )
    check_display_name(raw["List-Id"], as_address.addresses[0].display_name, name)


@pytest.mark.parametrize("name", [*HOSTILE_NAMES, None])
def test_hostile_names_read_back(name: str | None) -> None:
    sent = envelope(from_name=name or "", newsletter_name=name or "")
    recipient = Recipient(42, "reader@example.com", name, UNSUBSCRIBE)
    data, message_id = MessageWriter(sent).render(recipient)
    check_message(data, sent, recipient)
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["Message-ID"] == message_id and "e3.d42@news.example.org" in message_id


@pytest.mark.parametrize("subject", HOSTILE_SUBJECTS)
def test_hostile_subjects_read_back(subject: str) -> None:
    sent = envelope(subject=subject, from_name=ZOE)
    recipient = Recipient(7, "zoe@example.com", ZOE, UNSUBSCRIBE)
    check_message(MessageWriter(sent).render(recipient)[0], sent, recipient)


def test_the_new_users_message_is_exact() -> None:
    """The issue's own trial: names and a 200-character subject with an emoji."""
    sent = envelope(subject=LONG_SUBJECT, from_name=ZOE, newsletter_name=ZOE)
    data, _ = MessageWriter(sent).render(Recipient(1, "zoe@example.com", ZOE, UNSUBSCRIBE))
    for policy in POLICIES:
        message = email.message_from_bytes(data, policy=policy)
        assert message["To"].addresses[0].display_name == ZOE
        assert message["From"].addresses[0].display_name == ZOE
        assert message["Subject"] == LONG_SUBJECT
    assert max(len(w) for w in ENCODED_WORD.findall(data)) <= MAX_ENCODED_WORD


# Characters that have broken header writers: specials, quoting, encoded-word syntax,
# combining marks and joiners, wide and astral characters, white space and controls.
_PIECES = st.sampled_from(
    [
        *" ,;:\"'\\<>()[]@.=?_-!#$%&*+/^`{|}~",
        *"Zoëüßçñ日本Ω",
        *("=?", "?=", "=?utf-8?q?x?=", "🎉", "👩\u200d👩\u200d👧", "\u0301"),
        *("\xa0", "\t", "\u2028", "\x00", "\r\n", "\x85"),
    ]
)
NAMES = st.lists(_PIECES | st.characters(blacklist_categories=("Cs",)), max_size=50).map("".join)
SUBJECTS = (
    st.lists(_PIECES | st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=220)
    .map(lambda pieces: " ".join("".join(pieces).split()))  # as editions write them
    .filter(lambda subject: subject and not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029]", subject))
)


@settings(max_examples=120, derandomize=True, database=None, deadline=None)
@given(name=NAMES, from_name=NAMES, subject=SUBJECTS)
def test_any_name_and_subject_read_back(name: str, from_name: str, subject: str) -> None:
    sent = envelope(subject=subject, from_name=from_name, newsletter_name=name)
    recipient = Recipient(9, "any@example.com", name, UNSUBSCRIBE)
    check_message(MessageWriter(sent).render(recipient)[0], sent, recipient)


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[Recorder, SmtpTransport]]:
    with running() as (recorder, port):
        transport = SmtpTransport(SmtpConfig("127.0.0.1", port, security="none", pool_size=1))
        try:
            yield recorder, transport
        finally:
            transport.close()


def _through_smtp(
    smtp: tuple[Recorder, SmtpTransport], sent: Envelope, recipient: Recipient
) -> bytes:
    recorder, transport = smtp
    recorder.messages.clear()
    (result,) = transport.send(sent, [recipient])
    assert result.outcome == "sent", result.error
    ((_, rcpts, data),) = recorder.messages
    assert rcpts == [recipient.email]
    return data


def _through_outbox(directory: Path, sent: Envelope, recipient: Recipient) -> bytes:
    (result,) = OutboxTransport(directory).send(sent, [recipient])
    assert result.outcome == "sent", result.error
    return (directory / f"edition-{sent.edition_id}" / f"{recipient.delivery_id}.eml").read_bytes()


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_through_both_transports(
    name: str, smtp: tuple[Recorder, SmtpTransport], tmp_path: Path
) -> None:
    sent = envelope(subject=LONG_SUBJECT, from_name=name, newsletter_name=name)
    recipient = Recipient(5, "reader@example.com", name, UNSUBSCRIBE)
    check_message(_through_outbox(tmp_path, sent, recipient), sent, recipient)
    check_message(_through_smtp(smtp, sent, recipient), sent, recipient)


@settings(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # one server for all
)
@given(name=NAMES, subject=SUBJECTS)
def test_any_name_and_subject_through_both_transports(
    name: str, subject: str, smtp: tuple[Recorder, SmtpTransport], tmp_path: Path
) -> None:
    sent = envelope(subject=subject, from_name=name, newsletter_name=name)
    recipient = Recipient(6, "reader@example.com", name, UNSUBSCRIBE)
    check_message(_through_outbox(tmp_path, sent, recipient), sent, recipient)
    check_message(_through_smtp(smtp, sent, recipient), sent, recipient)


def test_clean_name_removes_controls_and_nothing_else() -> None:
    assert clean_name(" a\tb\r\n c\x00d\u2028e\x85f  ") == "a b c d e f"
    assert clean_name(ZOE) == ZOE
    assert clean_name('<@> "\\" =?x?=') == '<@> "\\" =?x?='
    assert clean_name(None) == "" and clean_name("\x00 \t") == ""


def test_names_are_quoted_only_when_they_need_it() -> None:
    assert address("Ada Reader", "a@example.com") == "Ada Reader <a@example.com>"
    assert address("Dr. Who", "a@example.com") == '"Dr. Who" <a@example.com>'
    assert address('say "hi" \\o/', "a@example.com") == '"say \\"hi\\" \\\\o/" <a@example.com>'
    assert address(None, "a@example.com") == "a@example.com"
    # ASCII words around encoded ones stay readable; a lookalike encoded word is encoded.
    assert phrase("Zoë and Bo").endswith(" and Bo") and phrase("Zoë and Bo").startswith("=?")
    assert "=?x?=" not in phrase("a =?x?= b")


def test_encoded_words_are_cut_between_characters() -> None:
    text = "👩\u200d👩\u200d👧 Ünïcødé " * 6
    words = encoded_words(text)
    assert len(words) > 1 and all(len(w) <= MAX_ENCODED_WORD for w in words)
    decoded = [part.decode("utf-8") for part, _ in decode_header(" ".join(words))]
    assert "".join(decoded) == text
    for word in words:  # each one whole characters
        ((part, _),) = decode_header(word)
        part.decode("utf-8")


def test_the_standard_library_alone_gets_these_wrong() -> None:
    """Why display names are not left to ``email.headerregistry``: its folding lets a
    lookalike encoded word through as it is, which every reader then decodes."""
    message = EmailMessage()
    message["To"] = email.headerregistry.Address("=?utf-8?q?not_me?=", addr_spec="a@example.com")
    reread = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert reread["To"].addresses[0].display_name == "not me"
    ours = MessageWriter(envelope()).render(
        Recipient(1, "a@example.com", "=?utf-8?q?not_me?=", UNSUBSCRIBE)
    )[0]
    assert (
        email.message_from_bytes(ours, policy=email.policy.default)["To"].addresses[0].display_name
        == "=?utf-8?q?not_me?="
    )


def test_line_breaks_in_header_values_are_refused() -> None:
    writer = MessageWriter(envelope())
    with pytest.raises(ValueError, match="line breaks"):
        writer.render(Recipient(1, "a@example.com", "A", "https://x/u/1\r\nBcc: all@example.com"))
    with pytest.raises(ValueError, match="subject"):
        MessageWriter(envelope(subject="Two\nlines"))
    with pytest.raises(ValueError, match="subject"):
        MessageWriter(envelope(subject="a bell\x07"))
