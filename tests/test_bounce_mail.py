"""Bounce mail: the reports of several MTAs parsed, and the three places they are read from.

The fixtures in tests/data/bounces follow what each MTA writes (structure, field order,
wording); addresses and hosts are the documentation ranges.
"""

from __future__ import annotations

import logging
import mailbox
import random
import socket
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailer.bounces.mail import (
    DIAGNOSTIC_LIMIT,
    BounceClass,
    MailBounce,
    parse_bounce,
    verp_delivery_id,
)
from mailer.bounces.mailbox import (
    BounceSource,
    BounceSourceError,
    FolderSource,
    ImapSource,
    MboxSource,
)
from tests.imap_server import ImapServer

DATA = Path(__file__).parent / "data" / "bounces"
VERP = "bounces+{delivery_id}@news.example.org"
HARD, SOFT = BounceClass.HARD, BounceClass.SOFT


def fixture(name: str) -> bytes:
    return (DATA / name).read_bytes()


# file, address, class, status, delivery id (VERP), Message-ID of the returned message,
# words of the remote server's diagnostic
REPORTS = [
    (
        "postfix-user-unknown.eml",
        "dana.whitfield@example.net",
        HARD,
        "5.1.1",
        4211,
        "<9c1e0b7d2a4f6e83.e17.d4211@news.example.org>",
        "550 5.1.1 <dana.whitfield@example.net>: Recipient address rejected: User unknown",
    ),
    (
        "exim-permanent.eml",
        "marc.okafor@example.org",
        HARD,
        "5.1.1",
        3307,
        "<51aa0e9f3c7d2b68.e17.d3307@news.example.org>",
        "Recipient address rejected: User unknown in local recipient table",
    ),
    (
        "office365-recipient-not-found.eml",
        "priya.nair@contoso.com",
        HARD,
        "5.1.10",
        7788,
        "<7e5c9a2d4b1f0368.e17.d7788@news.example.org>",
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound",
    ),
    (
        "gmail-no-such-user.eml",
        "noah.brandt@gmail.com",
        HARD,
        "5.1.1",
        5120,
        "<2b8e4c6a1d9f0735.e17.d5120@news.example.org>",
        "550-5.1.1 The email account that you tried to reach does not exist.",
    ),
    (
        "gmail-mailbox-full-delayed.eml",
        "ravi.menon@gmail.com",
        SOFT,
        "4.2.2",
        5133,
        "<a41c9e07d3b25f86.e17.d5133@news.example.org>",
        "452-4.2.2 The recipient's inbox is out of storage space.",
    ),
    (
        "qmail-permanent.eml",
        "lena.svensson@example.com",
        HARD,
        "5.1.1",
        2290,
        "<0d2f7a9b81c64e35.e17.d2290@news.example.org>",
        "Remote host said: 550 5.1.1 <lena.svensson@example.com>",
    ),
    (
        "postfix-delayed.eml",
        "omar.haddad@example.com",
        SOFT,
        "4.4.1",
        6021,
        "<c3d9e1f07a5b2864.e17.d6021@news.example.org>",
        "connect to mx.example.com[203.0.113.9]:25: Connection timed out",
    ),
    (
        # A permanent 5.2.2 (mailbox full) is soft; the relayed recipient is no bounce.
        "sendmail-mailbox-full.eml",
        "sam.iverson@example.com",
        SOFT,
        "5.2.2",
        8104,
        "<e8b27c4d19f05a36.e17.d8104@news.example.org>",
        "552 5.2.2 Mailbox full",
    ),
]


@pytest.mark.parametrize(
    ("name", "address", "kind", "status", "delivery_id", "message_id", "words"), REPORTS
)
def test_reports_of_each_mta(
    name: str,
    address: str,
    kind: BounceClass,
    status: str,
    delivery_id: int,
    message_id: str,
    words: str,
) -> None:
    [bounce] = parse_bounce(fixture(name), verp_pattern=VERP)
    assert (bounce.email, bounce.kind, bounce.status) == (address, kind, status)
    assert (bounce.delivery_id, bounce.message_id) == (delivery_id, message_id)
    assert words in bounce.diagnostic
    assert "\n" not in bounce.diagnostic and len(bounce.diagnostic) <= DIAGNOSTIC_LIMIT


def test_report_names_the_original_recipient_in_normal_form() -> None:
    # Postfix: Original-Recipient "Dana.Whitfield@…" (what we sent to) over Final-Recipient.
    raw = fixture("postfix-user-unknown.eml").replace(
        b"Final-Recipient: rfc822; dana.whitfield@example.net",
        b"Final-Recipient: rfc822; dana@mailstore.example.net",
    )
    [bounce] = parse_bounce(raw)
    assert bounce.email == "dana.whitfield@example.net"


@pytest.mark.parametrize("name", ["out-of-office.eml", "garbage.bin"])
def test_what_is_no_bounce(name: str) -> None:
    assert parse_bounce(fixture(name), verp_pattern=VERP) == []


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n\r\n",
        b"\x00" * 64,
        b"Subject: hello\r\n\r\nJust a letter.\r\n",
        b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\nno boundary",
        b"Content-Type: message/delivery-status\r\n\r\nAction: failed\r\n",
        bytearray(b"From: \xff\xfe\r\nX-Mailer: \xc3\r\n\r\n\xff"),
    ],
)
def test_fragments_and_junk_are_no_bounce(raw: bytes) -> None:
    assert parse_bounce(raw, verp_pattern=VERP) == []


def test_mangled_reports_never_raise(caplog: pytest.LogCaptureFixture) -> None:
    # Truncated, bit-flipped, shuffled: whatever comes back must come back as a result,
    # not by way of the catch-all (which logs bounce_parse_failed at ERROR).
    samples = [fixture(name) for name, *_ in REPORTS]
    rng = random.Random(1894)
    found = 0
    with caplog.at_level(logging.ERROR, logger="mailer.bounces"):
        for _ in range(300):
            raw = bytearray(rng.choice(samples))
            cut = rng.randrange(len(raw))
            match rng.randrange(3):
                case 0:
                    del raw[cut:]
                case 1:
                    for _ in range(rng.randrange(1, 30)):
                        raw[rng.randrange(len(raw))] = rng.randrange(256)
                case _:
                    lines = bytes(raw).split(b"\n")
                    rng.shuffle(lines)
                    raw = bytearray(b"\n".join(lines))
            for bounce in parse_bounce(bytes(raw), verp_pattern=VERP):
                assert isinstance(bounce, MailBounce) and "@" in bounce.email
                found += 1
    assert not [r for r in caplog.records if r.name.startswith("mailer.bounces")]
    assert found > 50  # the mangling left many reports readable


def test_without_a_verp_pattern_there_is_no_delivery_id() -> None:
    for name, *_ in REPORTS:
        assert [b.delivery_id for b in parse_bounce(fixture(name))] == [None]


def test_verp_address_is_found_in_the_envelope_headers() -> None:
    # The header To may name somebody else; Delivered-To is where the bounce went.
    raw = fixture("postfix-user-unknown.eml").replace(
        b"\nTo: bounces+4211@news.example.org", b"\nTo: postmaster@news.example.org"
    )
    assert b"\nDelivered-To: bounces+4211@" in raw and b"\nTo: postmaster" in raw
    [bounce] = parse_bounce(raw, verp_pattern=VERP)
    assert bounce.delivery_id == 4211
    # A return path of another form: still a bounce, just without a delivery.
    [bounce] = parse_bounce(raw, verp_pattern="return+{delivery_id}@news.example.org")
    assert (bounce.email, bounce.delivery_id) == ("dana.whitfield@example.net", None)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("bounces+4211@news.example.org", 4211),
        ("BOUNCES+0042@News.Example.ORG", 42),
        ("<bounces+7@news.example.org>", 7),
        ("Mail System <bounces+8@news.example.org>", 8),
        ("bounces+@news.example.org", None),
        ("bounces+12a@news.example.org", None),
        ("bounces+12@other.example.org", None),
        ("bounces+12@news.example.org.attacker.test", None),
        ("xbounces+12@news.example.org", None),
        ("bounces+1+2@news.example.org", None),
        ("bounces+\u0661\u0662@news.example.org", None),  # Arabic-Indic digits
        ("bounces+1234567890123456789@news.example.org", None),  # beyond any row id
        ("", None),
    ],
)
def test_verp_delivery_id(address: str, expected: int | None) -> None:
    assert verp_delivery_id(address, VERP) == expected


def test_verp_pattern_literals_are_literal() -> None:
    pattern = "bounces.{delivery_id}@news.example.org"
    assert verp_delivery_id("bounces.5@news.example.org", pattern) == 5
    assert verp_delivery_id("bouncesX5@news.example.org", pattern) is None
    assert verp_delivery_id("bounces.5@newsXexample.org", pattern) is None
    # The SMTP transport also offers {edition_id}.
    pattern = "b-{edition_id}-{delivery_id}@news.example.org"
    assert verp_delivery_id("b-17-4211@news.example.org", pattern) == 4211
    assert verp_delivery_id("b-x-4211@news.example.org", pattern) is None


@pytest.mark.parametrize(
    "pattern",
    [
        "bounces@news.example.org",
        "b+{delivery_id}.{delivery_id}@x.test",
        "{user}+{delivery_id}@x.test",
        "b+{delivery_id!r}@x.test",
        "b+{delivery_id@x.test",
    ],
)
def test_malformed_verp_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError):
        verp_delivery_id("b+1@x.test", pattern)
    with pytest.raises(ValueError):
        parse_bounce(fixture("postfix-user-unknown.eml"), verp_pattern=pattern)


def test_wrong_argument_types() -> None:
    with pytest.raises(TypeError):
        parse_bounce("Subject: text, not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        parse_bounce(b"", verp_pattern=b"bounces+{delivery_id}@x.test")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        verp_delivery_id(b"bounces+1@x.test", VERP)  # type: ignore[arg-type]


def dsn(*blocks: str, per_message: str = "Reporting-MTA: dns; mx.example.net\n") -> bytes:
    """A minimal RFC 3464 report with these per-recipient blocks and nothing returned."""
    report = per_message + "".join("\n" + block.strip() + "\n" for block in blocks)
    return (
        "From: MAILER-DAEMON@mx.example.net\n"
        "To: bounces+99@news.example.org\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n'
        "\n--B\nContent-Type: text/plain\n\nYour message could not be delivered.\n"
        "\n--B\nContent-Type: message/delivery-status\n\n" + report + "\n--B--\n"
    ).encode()


def recipient(address: str, action: str, status: str, diagnostic: str = "") -> str:
    block = f"Final-Recipient: rfc822; {address}\nAction: {action}\nStatus: {status}\n"
    return block + (f"Diagnostic-Code: smtp; {diagnostic}\n" if diagnostic else "")


@pytest.mark.parametrize(
    ("action", "status", "kind"),
    [
        ("failed", "5.1.1", HARD),  # no such user
        ("failed", "5.4.4", HARD),  # no such domain
        ("failed", "5.2.1", SOFT),  # mailbox disabled: it exists, and may be enabled again
        ("failed", "5.2.2", SOFT),  # mailbox full
        ("failed", "5.3.4", SOFT),  # our message too big
        ("failed", "5.7.1", SOFT),  # policy: spam filter, blocklist
        ("failed", "5.7.26", SOFT),  # DMARC: our DNS, not their address
        ("failed", "4.4.7", SOFT),  # gave up after the queue lifetime, never refused
        ("failed (bad address)", "5.1.1", HARD),
        ("Failed", "5.0.0", SOFT),  # a generic code, no words: nothing says the address is gone
        ("error", "5.1.1", HARD),  # OpenSMTPD
        ("delayed", "4.4.1", SOFT),
        ("delayed", "5.1.1", SOFT),  # nothing final yet
    ],
)
def test_classes_by_action_and_status(action: str, status: str, kind: BounceClass) -> None:
    [bounce] = parse_bounce(dsn(recipient("ann@example.com", action, status)))
    assert (bounce.kind, bounce.status) == (kind, status)


@pytest.mark.parametrize("action", ["delivered", "relayed", "expanded"])
def test_success_notices_are_no_bounce(action: str) -> None:
    assert parse_bounce(dsn(recipient("ann@example.com", action, "2.0.0"))) == []


def test_several_recipients_in_one_report() -> None:
    raw = dsn(
        recipient("ann@example.com", "failed", "5.1.1", "550 5.1.1 no such user"),
        recipient("bob@example.com", "delivered", "2.0.0"),
        recipient("cy@example.com", "delayed", "4.2.2", "452 4.2.2 over quota"),
        # Reported twice (two MTA hops): the harder verdict stands.
        recipient("dee@example.com", "delayed", "4.4.1"),
        recipient("dee@example.com", "failed", "5.1.1"),
        "Final-Recipient: x400; /C=US/ADMD=ATT/PRMD=Example/O=Corp/\nAction: failed\n"
        "Status: 5.1.1\n",
        "Action: failed\nStatus: 5.1.1\n",  # names nobody: left out
    )
    found = {(b.email, b.kind, b.status) for b in parse_bounce(raw)}
    assert found == {
        ("ann@example.com", HARD, "5.1.1"),
        ("cy@example.com", SOFT, "4.2.2"),
        ("dee@example.com", HARD, "5.1.1"),
    }


def test_recipient_fields_in_the_forms_seen() -> None:
    raw = dsn(
        # Only the Original-Recipient, no Final-Recipient.
        "Original-Recipient: rfc822;Ann@Example.COM\nAction: failed\nStatus: 5.1.1\n",
        # No address type, an angle-addr (SMTP-GATEWAY, per flufl.bounce's notes).
        "Final-Recipient: <bob@example.com>\nAction: failed\nStatus: 5.1.1\n",
        # Not an address at all.
        "Final-Recipient: rfc822; postmaster\nAction: failed\nStatus: 5.1.1\n",
    )
    assert sorted(b.email for b in parse_bounce(raw)) == ["ann@example.com", "bob@example.com"]


def test_status_from_the_diagnostic_when_the_status_field_is_missing() -> None:
    block = "Final-Recipient: rfc822; ann@example.com\nAction: failed\n"
    [bounce] = parse_bounce(dsn(block + "Diagnostic-Code: smtp; 552-5.2.2 Over quota\n"))
    assert (bounce.kind, bounce.status) == (SOFT, "5.2.2")
    [bounce] = parse_bounce(dsn(block + "Diagnostic-Code: smtp; 450 try again later\n"))
    assert (bounce.kind, bounce.status) == (SOFT, None)
    [bounce] = parse_bounce(dsn(block))
    assert (bounce.kind, bounce.status, bounce.diagnostic) == (SOFT, None, "")


def test_diagnostic_is_one_short_line() -> None:
    long_reason = "550 5.1.1 " + "very long reason\r\n\t" * 100
    [bounce] = parse_bounce(dsn(recipient("ann@example.com", "failed", "5.1.1", long_reason)))
    assert len(bounce.diagnostic) == DIAGNOSTIC_LIMIT
    assert bounce.diagnostic.startswith("550 5.1.1 very long reason very long reason")
    assert bounce.diagnostic.endswith("…")
    assert not any(ch in bounce.diagnostic for ch in "\r\n\t")


def test_eight_bit_junk_in_fields_is_read_not_raised() -> None:
    raw = dsn(recipient("ann@example.com", "failed", "5.1.1", "550 5.1.1 caf\xe9 \xff"))
    raw = raw.replace("caf\xe9 \xff".encode(), b"caf\xc3\xa9 \xff")
    [bounce] = parse_bounce(raw)
    assert bounce.email == "ann@example.com" and bounce.diagnostic.startswith("550 5.1.1 caf")


def test_message_id_from_the_report_when_nothing_is_returned() -> None:
    per_message = (
        "Reporting-MTA: dns; googlemail.com\nX-Original-Message-ID: <abc.e1.d2@news.example.org>\n"
    )
    raw = dsn(recipient("ann@example.com", "failed", "5.1.1"), per_message=per_message)
    [bounce] = parse_bounce(raw, verp_pattern=VERP)
    assert (bounce.message_id, bounce.delivery_id) == ("<abc.e1.d2@news.example.org>", 99)
    [bounce] = parse_bounce(dsn(recipient("ann@example.com", "failed", "5.1.1")))
    assert bounce.message_id is None


def test_free_text_bounce_without_from_header() -> None:
    # flufl.bounce's Yale detector raises on a single-part message without From, which
    # would stop all detectors after it, qmail's among them.
    raw = fixture("qmail-permanent.eml").replace(b"From: MAILER-DAEMON@mx.example.com\n", b"")
    assert b"\nFrom:" not in raw.split(b"\n\n", 1)[0]
    [bounce] = parse_bounce(raw)
    assert (bounce.email, bounce.kind) == ("lena.svensson@example.com", HARD)


def test_free_text_bounce_with_eight_bit_from_header() -> None:
    raw = fixture("qmail-permanent.eml").replace(
        b"From: MAILER-DAEMON@mx.example.com",
        "From: Système de messagerie <MAILER-DAEMON@mx.example.com>".encode(),
    )
    [bounce] = parse_bounce(raw)
    assert (bounce.email, bounce.kind) == ("lena.svensson@example.com", HARD)


# --- Sources ------------------------------------------------------------------------


def drain(source: BounceSource) -> list[tuple[str, bytes]]:
    return list(source.messages())


def test_folder_source(tmp_path: Path) -> None:
    (tmp_path / "b-postfix.eml").write_bytes(fixture("postfix-user-unknown.eml"))
    (tmp_path / "a-exim.EML").write_bytes(fixture("exim-permanent.eml"))
    (tmp_path / "c-qmail.eml").write_bytes(fixture("qmail-permanent.eml"))
    (tmp_path / "notes.txt").write_text("not mail")
    (tmp_path / "sub.eml").mkdir()  # a directory, whatever its name
    source = FolderSource(tmp_path)
    pairs = drain(source)
    assert [key for key, _ in pairs] == ["a-exim.EML", "b-postfix.eml", "c-qmail.eml"]
    assert pairs[1][1] == fixture("postfix-user-unknown.eml")
    source.done("a-exim.EML")
    source.done("c-qmail.eml")
    assert sorted(p.name for p in (tmp_path / "processed").iterdir()) == [
        "a-exim.EML",
        "c-qmail.eml",
    ]
    assert (tmp_path / "processed" / "a-exim.EML").read_bytes() == fixture("exim-permanent.eml")
    # A rerun reads only what was not done; done again, nothing is left.
    again = FolderSource(tmp_path)
    assert [key for key, _ in drain(again)] == ["b-postfix.eml"]
    again.done("b-postfix.eml")
    assert drain(FolderSource(tmp_path)) == []


def test_folder_source_refuses_paths_and_missing_folders(tmp_path: Path) -> None:
    outside = tmp_path / "outside.eml"
    outside.write_bytes(b"x")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    source = FolderSource(inbox)
    for key in ["../outside.eml", "..", "", "processed/../../outside.eml"]:
        with pytest.raises(ValueError):
            source.done(key)
    assert outside.exists()
    with pytest.raises(BounceSourceError):
        drain(FolderSource(tmp_path / "absent"))


def make_mbox(path: Path, *names: str) -> None:
    box = mailbox.mbox(path)
    box.lock()
    for name in names:
        box.add(fixture(name))
    box.flush()
    box.unlock()
    box.close()


def mbox_subjects(path: Path) -> list[str]:
    box = mailbox.mbox(path, create=False)
    try:
        return [str(message["Subject"]) for message in box]
    finally:
        box.close()


def test_mbox_source(tmp_path: Path) -> None:
    path = tmp_path / "bounces.mbox"
    make_mbox(path, "postfix-user-unknown.eml", "exim-permanent.eml", "qmail-permanent.eml")
    source = MboxSource(path)
    pairs = drain(source)
    assert len(pairs) == 3
    assert parse_bounce(pairs[1][1])[0].email == "marc.okafor@example.org"
    source.done(pairs[0][0])
    source.done(pairs[2][0])
    assert mbox_subjects(path) == ["Mail delivery failed: returning message to sender"]
    assert not (tmp_path / "bounces.mbox.lock").exists()
    again = MboxSource(path)
    [(key, raw)] = drain(again)
    assert parse_bounce(raw)[0].email == "marc.okafor@example.org"
    again.done(key)
    assert drain(MboxSource(path)) == []
    assert path.exists()  # emptied, not removed: the delivery agent keeps appending


def test_mbox_source_while_mail_is_delivered(tmp_path: Path) -> None:
    path = tmp_path / "bounces.mbox"
    make_mbox(path, "postfix-user-unknown.eml", "qmail-permanent.eml")
    source = MboxSource(path)
    pairs = drain(source)
    # The delivery agent appends one, and somebody removes the first meanwhile.
    box = mailbox.mbox(path)
    box.lock()
    box.add(fixture("gmail-no-such-user.eml"))
    box.remove(next(box.iterkeys()))
    box.flush()
    box.unlock()
    box.close()
    source.done(pairs[1][0])  # qmail's: no longer where it was read
    source.done(pairs[0][0])  # postfix's: gone already; nothing else goes instead
    assert mbox_subjects(path) == ["Delivery Status Notification (Failure)"]


def test_mbox_source_waits_for_the_lock_then_gives_up(tmp_path: Path) -> None:
    path = tmp_path / "bounces.mbox"
    make_mbox(path, "postfix-user-unknown.eml")
    holder = mailbox.mbox(path)
    holder.lock()  # the delivery agent's dot-lock
    try:
        with pytest.raises(BounceSourceError, match="locked"):
            drain(MboxSource(path, lock_timeout=0.2))
    finally:
        holder.unlock()
        holder.close()
    assert len(drain(MboxSource(path))) == 1


def test_mbox_source_before_any_delivery(tmp_path: Path) -> None:
    assert drain(MboxSource(tmp_path / "not-yet.mbox")) == []
    assert not (tmp_path / "not-yet.mbox").exists()
    with pytest.raises(BounceSourceError):
        drain(MboxSource(tmp_path / "no-such-dir" / "bounces.mbox"))


USER, PASSWORD = "bounces@news.example.org", 'Corr3ct horse "battery" staple'


@pytest.fixture
def imap() -> Iterator[ImapServer]:
    server = ImapServer(USER, PASSWORD)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def imap_source(
    server: ImapServer, folder: str = "INBOX", *, starttls: bool = False, unseen_only: bool = False
) -> ImapSource:
    return ImapSource(
        "127.0.0.1",
        server.port,
        USER,
        PASSWORD,
        folder,
        ssl=False,
        timeout=5,
        starttls=starttls,
        unseen_only=unseen_only,
    )


def test_imap_source(imap: ImapServer) -> None:
    postfix = imap.add(fixture("postfix-user-unknown.eml"))
    office = imap.add(fixture("office365-recipient-not-found.eml"), {"\\Seen"})  # read by a person
    imap.add(fixture("exim-permanent.eml"), {"\\Seen", "\\Deleted"})  # done, not expunged
    holiday = imap.add(fixture("out-of-office.eml"))
    with imap_source(imap) as source:
        pairs = drain(source)
        assert [key for key, _ in pairs] == [str(postfix), str(office), str(holiday)]
        assert pairs[0][1] == fixture("postfix-user-unknown.eml")
        assert pairs[1][1] == fixture("office365-recipient-not-found.eml")  # CRLF intact
        # Reading marks nothing: a run that stops here leaves all for the next one.
        assert [m.flags for m in imap.messages] == [
            set(),
            {"\\Seen"},
            {"\\Seen", "\\Deleted"},
            set(),
        ]
        assert [b.delivery_id for b in parse_bounce(pairs[0][1], verp_pattern=VERP)] == [4211]
        source.done(str(postfix))
        source.done(str(holiday))
        assert imap.messages[0].flags == {"\\Seen", "\\Deleted"}
    # Closing expunged every deleted message, this run's and the earlier one's.
    assert [m.uid for m in imap.messages] == [office]
    assert "EXPUNGE" in imap.commands and imap.commands[-1] == "LOGOUT"
    with imap_source(imap) as source:
        assert [key for key, _ in drain(source)] == [str(office)]


def test_imap_source_unseen_only(imap: ImapServer) -> None:
    imap.add(fixture("postfix-user-unknown.eml"), {"\\Seen"})
    fresh = imap.add(fixture("qmail-permanent.eml"))
    with imap_source(imap, unseen_only=True) as source:
        assert [key for key, _ in drain(source)] == [str(fresh)]
        source.done(str(fresh))
    with imap_source(imap, unseen_only=True) as source:
        assert drain(source) == []
    assert len(imap.messages) == 1


def test_imap_source_rerun_after_a_crash(imap: ImapServer) -> None:
    first = imap.add(fixture("postfix-user-unknown.eml"))
    second = imap.add(fixture("qmail-permanent.eml"))
    source = imap_source(imap)
    messages = source.messages()
    key, _ = next(messages)
    source.done(key)
    # The process dies here: no close(), no EXPUNGE.
    assert source._connection is not None
    source._connection.shutdown()
    assert [m.uid for m in imap.messages] == [first, second]
    with imap_source(imap) as rerun:
        assert [key for key, _ in drain(rerun)] == [str(second)]


def assert_secret_kept(error: BaseException) -> None:
    shown = "".join(traceback.format_exception(error)) + repr(error)
    assert PASSWORD not in shown and "battery" not in shown
    assert error.__context__ is None and error.__cause__ is None


@pytest.mark.parametrize("echo", [False, True])
def test_imap_wrong_password(imap: ImapServer, echo: bool) -> None:
    # echo: a careless server quoting the rejected command back, password included.
    imap.echo_login_failure = echo
    source = ImapSource("127.0.0.1", imap.port, USER, PASSWORD + "-old", ssl=False, timeout=5)
    with pytest.raises(BounceSourceError) as caught:
        drain(source)
    message = str(caught.value)
    assert "refused the login" in message and USER in message
    assert "AUTHENTICATIONFAILED" in message
    if echo:
        assert "[password]" in message
    assert_secret_kept(caught.value)
    assert PASSWORD not in repr(source) and "battery" not in repr(source)


def test_imap_wrong_folder(imap: ImapServer) -> None:
    with pytest.raises(BounceSourceError, match="Bounces/MTA") as caught:
        imap_source(imap, folder="Bounces/MTA").__enter__()
    assert "NONEXISTENT" in str(caught.value)
    assert_secret_kept(caught.value)


def test_imap_connection_failures(imap: ImapServer) -> None:
    # TLS expected, plain IMAP answered.
    with pytest.raises(BounceSourceError, match="cannot connect"):
        ImapSource("127.0.0.1", imap.port, USER, PASSWORD, ssl=True, timeout=5).__enter__()
    # STARTTLS required, not offered.
    with pytest.raises(BounceSourceError, match="STARTTLS"):
        imap_source(imap, starttls=True).__enter__()
    # Nobody listening.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(BounceSourceError, match="cannot connect"):
        ImapSource("127.0.0.1", closed_port, USER, PASSWORD, ssl=False, timeout=5).__enter__()


def test_imap_done_takes_only_uids(imap: ImapServer) -> None:
    imap.add(fixture("postfix-user-unknown.eml"))
    with imap_source(imap) as source:
        for key in ["1:*", "1 2", "", "-1", "1) (\\Flagged"]:
            with pytest.raises(ValueError):
                source.done(key)
    assert imap.messages[0].flags == set()
