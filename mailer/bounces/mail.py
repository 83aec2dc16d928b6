"""Bounce mail: which addresses a report says failed, why, and for which delivery.

Read in this order, the first that finds a failed recipient wins:

1. RFC 3464 delivery-status fields, in a ``message/delivery-status`` part or written out
   as text (Amazon WorkMail, some gateways): Action, Status, Diagnostic-Code per recipient.
2. Amazon SES notifications (JSON ``bouncedRecipients``).
3. Free text, as Sendmail, Exim, qmail, Exchange, DragonFly, OpenSMTPD and dozens more
   write it: the addresses the human-readable part names (and those flufl.bounce's
   detectors find), each with the lines about it up to the next address.

The reason comes from ``reasons.classify``: the remote server's words, then the codes.
Never reported as a failed reader, whatever a report's shape: our own addresses (where
the bounce came back to, the returned message's sender), ``postmaster@`` and
``mailer-daemon@``, Message-ID strings, addresses named only as a contact. Complaint
(ARF) reports, auto-replies and success notices report no address at all.

Nothing here raises on the message itself: bounce mail is whatever anybody sent, and one
malformed message must not wedge the mailbox it came from. What could not be read comes
back with ``unparsed`` set, for an operator to look at.
"""

from __future__ import annotations

import email
import email.header
import logging
import re
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses, parseaddr
from functools import lru_cache

from flufl.bounce import all_failures

from mailer.bounces.reasons import (
    BounceClass,
    BounceReason,
    Verdict,
    classify,
    reason_from_text,
    status_of,
)
from subscribers.addresses import InvalidAddress, normalize_email

__all__ = [
    "DIAGNOSTIC_LIMIT",
    "BounceClass",
    "BounceReason",
    "MailBounce",
    "ReadMail",
    "parse_bounce",
    "read_bounce",
    "verp_delivery_id",
]

log = logging.getLogger(__name__)

DIAGNOSTIC_LIMIT = 500
# Actions of a delivery-status block that report no failure.
_NEWS = frozenset({"delivered", "relayed", "expanded"})
# Where a bounce was delivered, i.e. the VERP return path the message went out with.
RECIPIENT_HEADERS = ("To", "Delivered-To", "X-Original-To", "Envelope-To")
# Where a bounce says it came back to: ours, never a failed reader. (Not X-Original-To:
# some MTAs write the failed recipient there.)
_OWN_HEADERS = ("To", "Delivered-To", "Envelope-To")
# The returned message's own sender.
_SENDER_HEADERS = ("From", "Sender", "Return-Path", "Reply-To", "Errors-To")

_DIAGNOSTIC_TYPE = re.compile(r"^[A-Za-z][\w.-]*\s*;\s*")  # "smtp; ", "X-Postfix; "
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_MESSAGE_ID = re.compile(r"<[^<>\s@]{1,200}@[^<>\s@]{1,200}>")
_ANY_MESSAGE_ID = re.compile(
    r"(?:message-id|msgid|message id|in-reply-to|references|\bid)\s*[:=]?\s*<?"
    r"([^<>\s@\"]{1,200}@[^<>\s@\"]{1,200}?)>?(?=[\s;,)\]]|$)",
    re.IGNORECASE,
)
# Free-text bounces quote the returned message, headers first, after their own text.
_QUOTED_MESSAGE_ID = re.compile(
    r"^message-id:[ \t]*(<[^<>\s@]{1,200}@[^<>\s@]{1,200}>)", re.IGNORECASE | re.MULTILINE
)
_ADDRESS = re.compile(
    r"(?<![\w.+%=/'-])([A-Za-z0-9!#$%&'*+=?^_`{|}~-][A-Za-z0-9!#$%&'*+=?^_`{|}~.-]{0,63}"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}"
    r"[A-Za-z0-9])?)+)"
)
_ROLE_LOCAL = re.compile(
    r"^(?:postmaster|mailer-daemon|mailer_daemon|maildaemon|mail-daemon|mailerdaemon|"
    r"double-bounce|abuse|hostmaster|nobody|no-reply-bounce)$",
    re.IGNORECASE,
)
# Message-ID local parts: long runs of hex and digits in dotted or dashed pieces.
_ID_LIKE = re.compile(r"^[0-9a-f$]{6,}(?:[.$=_-][0-9a-z$]{3,}){1,}$", re.IGNORECASE)
# Where a free-text bounce's own words end and the returned message begins.
_RETURNED = re.compile(
    r"^\s*[-=_*#>| ]*\s*(?:"
    r"(?:the )?original message(?: headers)?(?: follows| is attached| below)?\s*[-=:*]*\s*$|"
    r"[-=_*]{2,}\s*(?:the )?original message|"
    r"(?:a )?copy of (?:the|your) (?:original )?message|"
    r"(?:this is a |below (?:this line )?is a )?copy of (?:the )?message|"
    r"below this line is a copy|"
    r"message headers follow|"
    r"(?:the )?(?:headers|header) of the (?:original|returned) message|"
    r"returned (?:message|mail|content|headers)|"
    r"unsent message below|"
    r"original message headers|"
    r"original headers|"
    r"undelivered message|"
    r"message text follows|"
    r"your (?:original )?message (?:headers )?(?:follows|reads)|"
    r"forwarded message|"
    r"start of (?:the )?returned|"
    r"text of (?:the )?returned"
    r")\b",
    re.IGNORECASE,
)
_HEADER_LINE = re.compile(
    r"^(?:received|return-path|message-id|from|to|cc|subject|date|mime-version|"
    r"content-type|dkim-signature|x-[\w-]+|reply-to|delivered-to|authentication-results)"
    r":[ \t]",
    re.IGNORECASE,
)
_BOUNCE_SENDER = re.compile(
    r"mailer-?daemon|post_?master|mail ?delivery|mail-?router|mailadmin|mail ?system|"
    r"^(?:mail|smtp|mta|daemon|bounce[s]?|root)@",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|deliver(?:y|ing)? (?:status|fail|report|problem|error|notification)|"
    r"not (?:be )?delivered|returned (?:mail|to sender)|failure|failed|bounce|rejected|"
    r"error|could not|unable to deliver|mail system|nondeliverable|non-delivery|"
    r"delayed|warning|problem|unzustellbar|non remis|no entregado",
    re.IGNORECASE,
)
_BOUNCE_WORDS = re.compile(
    r"could not be delivered|couldn't be delivered|delivery (?:has )?failed|undeliverable|"
    r"permanent(?:ly)? (?:fatal )?error|error delivering|was not delivered|"
    r"failed permanently|returned mail|delivery status notification|"
    r"following (?:address|recipient)|not be delivered|delivery to the following|"
    r"unable to deliver|message was not|delivery problem|failed to deliver|"
    r"delivery failure|could not deliver",
    re.IGNORECASE,
)
_ANGLE_AFTER = re.compile(r"\s*<([^<>\s@]+@[^<>\s@]+)>")
# An address named only for people to write to, not as the one that failed.
_CONTACT = re.compile(
    r"contact|write to|send (?:an? )?(?:e-?mail|mail|message) to|questions|"
    r"for (?:more )?(?:help|information|assistance)|reply to this|report this",
    re.IGNORECASE,
)
_AUTO_SUBJECT = re.compile(
    r"^(?:auto(?:matic)?[ -]?(?:reply|response|antwort)|out of (?:the )?office|"
    r"away from|away until|on vacation|vacation|abwesenheit|r[ée]ponse automatique|"
    r"autoreply|auto:)",
    re.IGNORECASE,
)
_BODY_LIMIT = 256 * 1024  # enough for any failure text; returned messages can be huge
_PARTS_LIMIT = 200
_SEGMENT_LINES = 15
_FREE_TEXT_LIMIT = 50  # more addresses than this in free text is a list, not a report
_RECIPIENT_LIMIT = 500  # delivery-status blocks read per report


@dataclass(frozen=True)
class MailBounce:
    email: str  # normal form (subscribers.addresses.normalize_email)
    kind: BounceClass
    status: str | None  # RFC 3463 code, e.g. "5.1.1", when the report gave one
    diagnostic: str  # the remote server's words, one line, at most DIAGNOSTIC_LIMIT chars
    delivery_id: int | None  # from the VERP address the bounce came back to
    message_id: str | None  # Message-ID of the returned message, with its angle brackets
    reason: BounceReason = BounceReason.SYSTEM_ERROR


@dataclass(frozen=True)
class ReadMail:
    """What one message says: the failed recipients, or why it could not be read."""

    bounces: list[MailBounce] = field(default_factory=list)
    # Set when a part of the reading failed and no failed recipient was found: the
    # message may well be a bounce nobody could read, so an operator should look.
    unparsed: str | None = None


def parse_bounce(
    raw: bytes, *, verp_pattern: str | None = None, own_addresses: Iterable[str] = ()
) -> list[MailBounce]:
    """The failed recipients one bounce message reports; ``[]`` when it is no bounce
    (or could not be read: ``read_bounce`` tells those apart).

    ``verp_pattern`` is the configured return path, e.g. ``bounces+{delivery_id}@host``;
    a pattern without exactly one ``{delivery_id}`` raises ValueError (a configuration
    mistake, unlike anything in ``raw``). ``own_addresses`` are our senders: never a
    failed reader.
    """
    return read_bounce(raw, verp_pattern=verp_pattern, own_addresses=own_addresses).bounces


def read_bounce(
    raw: bytes, *, verp_pattern: str | None = None, own_addresses: Iterable[str] = ()
) -> ReadMail:
    """``parse_bounce``, and whether anything went wrong reading the message."""
    if not isinstance(raw, bytes | bytearray):
        raise TypeError(f"raw must be bytes, not {type(raw).__name__}")
    if verp_pattern is not None:
        if not isinstance(verp_pattern, str):
            raise TypeError(f"verp_pattern must be a str, not {type(verp_pattern).__name__}")
        _verp_regex(verp_pattern)
    own = {a.strip().lower() for a in own_addresses if isinstance(a, str)}
    try:
        return _Reader(bytes(raw), verp_pattern, own).read()
    except Exception as exc:
        # A bug of ours on some message never seen before: log it for a fix, let the
        # mailbox move on, and keep the message for an operator.
        log.exception("bounce_parse_failed")
        return ReadMail([], f"{type(exc).__name__}: {exc}"[:300])


def verp_delivery_id(address: str, pattern: str) -> int | None:
    """The delivery id ``address`` carries when it has the form of the VERP ``pattern``.

    The whole address compares case-insensitively: Postfix, for one, lower-cases the
    Delivered-To it writes. The id is ASCII digits only.
    """
    if not isinstance(address, str) or not isinstance(pattern, str):
        raise TypeError("address and pattern must be str")
    addr = parseaddr(address)[1] or address.strip().strip("<>")
    match = _verp_regex(pattern).fullmatch(addr.strip())
    return int(match.group("id")) if match else None


@lru_cache(maxsize=16)
def _verp_regex(pattern: str) -> re.Pattern[str]:
    regex: list[str] = []
    ids = 0
    for literal, field_name, _spec, conversion in string.Formatter().parse(pattern):
        regex.append(re.escape(literal))
        if field_name is None:
            continue
        if conversion:
            raise ValueError(f"return path pattern {pattern!r}: no conversions (!{conversion})")
        if field_name == "delivery_id":
            ids += 1
            regex.append("(?P<id>[0-9]{1,18})")
        elif field_name == "edition_id":  # the SMTP transport fills this one in too
            regex.append("[0-9]{1,18}")
        else:
            raise ValueError(f"return path pattern {pattern!r}: unknown field {{{field_name}}}")
        if ids > 1:
            raise ValueError(f"return path pattern {pattern!r}: {{delivery_id}} twice")
    if ids != 1:
        raise ValueError(f"return path pattern {pattern!r} has no {{delivery_id}}")
    return re.compile("".join(regex), re.IGNORECASE)


@dataclass(frozen=True)
class _Failure:
    email: str
    verdict: Verdict
    diagnostic: str


class _Reader:
    """One message, read once: its parts, its text, whose addresses are ours."""

    def __init__(self, raw: bytes, verp_pattern: str | None, own: set[str]) -> None:
        self.msg = email.message_from_bytes(raw, policy=compat32)
        self.parts = list(_parts(self.msg))
        self.verp_pattern = verp_pattern
        self.text = _unquoted(_body_text(self.parts))
        self.human = _human_part(self.text)
        self.returned = _returned_headers(self.parts)
        inline = self.text[len(self.human) :].lstrip("\n")
        if inline and _HEADER_LINE.match(inline.split("\n", 1)[0]) is None:
            inline = inline.split("\n", 1)[1] if "\n" in inline else ""
        if inline and _HEADER_LINE.match(inline):
            self.returned.append(email.message_from_string(inline[:_BODY_LIMIT], policy=compat32))
        self.envelope = own | {
            a for name in _OWN_HEADERS for a in _header_addresses(self.msg, name)
        }
        self.own = self.envelope | self._own_addresses()
        self.message_ids = self._message_ids()
        self.detector_error: str | None = None

    def read(self) -> ReadMail:
        if self._is_feedback_report():
            return ReadMail()
        report = self._delivery_status()
        original_id: str | None = None
        failures: list[_Failure] = []
        if report is not None:
            failures, original_id, any_failed = report
            if not any_failed and self.detector_error is None:
                return ReadMail()  # delivered, relayed, expanded: news, not a bounce
            named = bool(failures)
            failures = [f for f in failures if self._may_be_reader(f.email, structured=True)]
            if named and not failures:
                # The report names its recipients and they are ours (or role addresses):
                # no other address in its text is one it is about.
                return ReadMail()
        if not failures:
            ses = self._amazon_ses()
            if ses is not None:
                failures = ses
            elif self._looks_like_bounce():
                failures = self._free_text()
            failures = [f for f in failures if self._may_be_reader(f.email)]
        if not failures:
            return ReadMail([], self.detector_error)
        delivery_id = _delivery_id(self.msg, self.verp_pattern) if self.verp_pattern else None
        message_id = (
            _returned_message_id(self.parts) or original_id or _quoted_message_id(self.text)
        )
        kept: dict[str, _Failure] = {}
        for failure in failures:
            # One address reported twice (two blocks, two views): the harder wins.
            seen = kept.get(failure.email)
            if seen is None or (
                seen.verdict.kind is BounceClass.SOFT and failure.verdict.kind is BounceClass.HARD
            ):
                kept[failure.email] = failure
        return ReadMail(
            [
                MailBounce(
                    f.email,
                    f.verdict.kind,
                    f.verdict.status,
                    f.diagnostic,
                    delivery_id,
                    message_id,
                    f.verdict.reason,
                )
                for f in kept.values()
            ]
        )

    # -- what is ours ------------------------------------------------------------------

    def _own_addresses(self) -> set[str]:
        own: set[str] = set()
        for headers in self.returned:
            for name in _SENDER_HEADERS:
                own.update(_header_addresses(headers, name))
        for part in self.parts:
            if part.get_content_type() != "message/delivery-status":
                continue
            for block in _blocks(part):
                for name in ("X-Postfix-Sender", "X-Original-Sender", "Original-Sender"):
                    address = _dsn_address(_field(block, name))
                    if address:
                        own.add(address)
        return own

    def _message_ids(self) -> set[str]:
        ids: set[str] = set()
        for source in [self.msg, *self.returned]:
            for name in ("Message-ID", "In-Reply-To", "References", "X-Original-Message-ID"):
                for value in source.get_all(name) or []:
                    ids.update(m.strip("<>").lower() for m in _MESSAGE_ID.findall(str(value)))
        ids.update(m.lower() for m in _ANY_MESSAGE_ID.findall(self.text))
        return ids

    def _may_be_reader(self, address: str, *, structured: bool = False) -> bool:
        """Whether ``address`` may be a failed reader. A recipient named in a delivery
        status field is excluded only where it is ours for certain (where the bounce
        came back to, a configured sender); one found in free text also when it is the
        returned message's sender."""
        local, _, _domain = address.partition("@")
        own = self.envelope if structured else self.own
        if address in own or address in self.message_ids:
            return False
        if self.verp_pattern and verp_delivery_id(address, self.verp_pattern) is not None:
            return False
        return not (_ROLE_LOCAL.match(local) or _ID_LIKE.match(local))

    # -- what kind of message ----------------------------------------------------------

    def _is_feedback_report(self) -> bool:
        if self.msg.get_content_type() == "multipart/report":
            kind = str(self.msg.get_param("report-type") or "").lower()
            if kind in ("feedback-report", "disposition-notification"):
                return True
        return any(
            p.get_content_type() in ("message/feedback-report", "message/disposition-notification")
            for p in self.parts
        )

    def _is_auto_reply(self) -> bool:
        auto = str(self.msg.get("Auto-Submitted") or "").strip().lower()
        if auto.startswith("auto-replied"):
            return True
        if self.msg.get("X-Autoreply") or self.msg.get("X-Autorespond"):
            return True
        precedence = str(self.msg.get("Precedence") or "").strip().lower()
        if precedence == "auto_reply":
            return True
        subject = _header_text(self.msg, "Subject")
        return bool(_AUTO_SUBJECT.match(subject))

    def _looks_like_bounce(self) -> bool:
        """Whether free text may be read for failed addresses: a message from a mail
        system about a delivery, not a person's reply (Exim marks its bounces
        Auto-Submitted too, so that header alone says nothing)."""
        subject = _header_text(self.msg, "Subject")
        if _AUTO_SUBJECT.match(subject):
            return False
        from_system = bool(_BOUNCE_SENDER.search(_header_text(self.msg, "From")))
        about_delivery = bool(_BOUNCE_SUBJECT.search(subject)) or bool(
            self.msg.get("X-Failed-Recipients")
        )
        null_sender = _header_text(self.msg, "Return-Path").strip() in ("<>", "")
        if from_system or (about_delivery and (null_sender or not self._is_auto_reply())):
            return True
        return null_sender and bool(_BOUNCE_WORDS.search(self.human))

    # -- RFC 3464 ----------------------------------------------------------------------

    def _delivery_status(self) -> tuple[list[_Failure], str | None, bool] | None:
        """The failures an RFC 3464 report lists, the X-Original-Message-ID some MTAs
        give, and whether any recipient failed; None when the message has no
        per-recipient delivery-status fields."""
        blocks: list[Message] = []
        for part in self.parts:
            if part.get_content_type() == "message/delivery-status":
                blocks.extend(_blocks(part))
        if not any(_field(b, "Action") for b in blocks):
            # Written out as text: in the report's own words, or further down in a
            # bounce forwarded as text (as long as the message is a bounce at all).
            blocks = _text_blocks(self.human) or (
                _text_blocks(self.text) if self._looks_like_bounce() else []
            )
        original_id: str | None = None
        failures: list[_Failure] = []
        found = any_failed = False
        for block in blocks:
            original_id = original_id or _message_id(_field(block, "X-Original-Message-ID"))
            action = _field(block, "Action")
            if not action:
                continue  # the per-message block
            found = True
            verb = re.match(r"[a-z]*", action.lower())
            verb_text = verb.group(0) if verb else ""
            # "Action: failed (bad address)" has been seen, and OpenSMTPD writes "error".
            if verb_text in _NEWS:
                continue
            if verb_text not in ("failed", "error", "delayed", "failure"):
                # Mangled (8-bit junk, a cut line): a report nobody could read, which
                # may be a failure; an operator decides.
                self.detector_error = f"delivery-status Action not understood: {action[:80]!r}"
                continue
            any_failed = True
            if len(failures) >= _RECIPIENT_LIMIT:
                continue  # counted as failed, not read: no real report names so many
            failure = self._recipient_block(block, verb_text == "delayed")
            if failure is not None:
                failures.append(failure)
        return (failures, original_id, any_failed) if found else None

    def _recipient_block(self, block: Message, delayed: bool) -> _Failure | None:
        # The address we sent to is the original recipient; the final one may be an
        # alias that the receiving system expanded it to.
        address = _dsn_address(_field(block, "Original-Recipient")) or _dsn_address(
            _field(block, "Final-Recipient")
        )
        if address is None:
            return None
        code = _field(block, "Diagnostic-Code")
        diagnostic = _DIAGNOSTIC_TYPE.sub("", code, count=1)
        # The remote server's own code beats the reporting MTA's summary of it (Amazon
        # SES writes "Status: 5.0.0" over a diagnostic that says 5.2.2).
        status = status_of(diagnostic) or status_of(_field(block, "Status"))
        words = diagnostic
        if not _says_something(diagnostic):
            # Gmail and others put the remote server's words in the human-readable part.
            words = " ".join(filter(None, [diagnostic, _segment(self.human, address, set())]))
        verdict = classify(status, words, context=self.human, temporary=delayed or None)
        retried_out = not delayed and (verdict.status or "").startswith("4")
        if retried_out and verdict.reason is BounceReason.SYSTEM_ERROR:
            # Given up on after temporary failures only: the retries ran out.
            verdict = Verdict(BounceReason.EXPIRED, BounceClass.SOFT, verdict.status)
        if code.lower().startswith("x-unix") and verdict.reason is not BounceReason.MAILBOX_FULL:
            # A local delivery program's words (procmail, a pipe), not a mail server's
            # verdict on the address: the receiving system failed.
            verdict = Verdict(BounceReason.SYSTEM_ERROR, BounceClass.SOFT, verdict.status)
        shown = diagnostic or _segment(self.human, address, set()) or _field(block, "Status")
        return _Failure(address, verdict, _short(shown))

    # -- Amazon SES --------------------------------------------------------------------

    def _amazon_ses(self) -> list[_Failure] | None:
        text = self.text.replace('\\"', '"')
        kind = re.search(r'"notificationType"\s*:\s*"(\w+)"', text)
        if kind is None:
            return None
        if kind.group(1).lower() != "bounce":
            return []  # a complaint or a delivery: no failed reader
        bounce_type = re.search(r'"bounceType"\s*:\s*"(\w+)"', text)
        transient = bool(bounce_type and bounce_type.group(1).lower() == "transient")
        listed = re.search(r'"bouncedRecipients"\s*:\s*\[(.*?)\]', text, re.DOTALL)
        failures: list[_Failure] = []
        for item in re.findall(r"\{[^{}]*\}", listed.group(1) if listed else ""):
            found = re.search(r'"emailAddress"\s*:\s*"([^"]+)"', item)
            address = _normal(found.group(1)) if found else None
            if address is None:
                continue
            status = re.search(r'"status"\s*:\s*"([^"]*)"', item)
            code = re.search(r'"diagnosticCode"\s*:\s*"([^"]*)"', item)
            diagnostic = _DIAGNOSTIC_TYPE.sub("", code.group(1) if code else "", count=1)
            verdict = classify(
                status_of(diagnostic) or (status.group(1) if status else None),
                diagnostic,
                temporary=transient or None,
            )
            failures.append(_Failure(address, verdict, _short(diagnostic)))
        return failures

    # -- free text ---------------------------------------------------------------------

    def _free_text(self) -> list[_Failure]:
        candidates: list[str] = []
        lines = self.human.splitlines()
        # An address offered for questions is no failed reader wherever else it appears.
        contacts = {
            a.lower() for line in lines if _CONTACT.search(line) for a in _ADDRESS.findall(line)
        }
        seen: set[str] = set()
        for line in lines:
            if _CONTACT.search(line) or _HEADER_LINE.match(line.strip()):
                continue
            for match in _ADDRESS.finditer(line):
                before = line[max(0, match.start() - 14) : match.start()]
                if before.lower().rstrip("<: \t").endswith(("from", "sender")):
                    continue  # "MAIL FROM:<...>", "envelope-from <...>": our sender
                found = match.group(1).strip(".'").lower()
                angle = _ANGLE_AFTER.match(line, match.end())
                if angle is not None and angle.group(1).lower() != found:
                    # "ann@x <bob@y>": an address written as the display name of
                    # another; the mailbox is the one in angle brackets (RFC 5322),
                    # and the name is no recipient wherever else the report repeats it.
                    seen.add(found)
                    continue
                if found in seen:
                    continue
                seen.add(found)
                address = _normal(found)
                if address in contacts or address is None or address in candidates:
                    continue
                if self._may_be_reader(address):
                    candidates.append(address)
                    if len(candidates) > _FREE_TEXT_LIMIT:
                        return []  # a list of addresses, not a report about some
        detected = [a for a in self._flufl() if self._may_be_reader(a)]
        if not candidates:
            candidates = detected
        if not candidates:
            # Some reports name nobody and return the message: its one recipient is it.
            returned = {
                a
                for headers in self.returned
                for name in ("To", "Cc")
                for a in _header_addresses(headers, name)
                if self._may_be_reader(a)
            }
            if len(returned) == 1:
                candidates = list(returned)
        elif len(candidates) > 1 and detected:
            # Several addresses in the words: those a detector also names, when it does.
            both = [a for a in candidates if a in detected]
            candidates = both or candidates
        if len(candidates) > _FREE_TEXT_LIMIT:
            return []
        others = set(candidates)
        failures = []
        for address in candidates:
            segment = _segment(self.human, address, others - {address})
            # The words on the line that names the address come first: later lines of
            # a transcript may be about the next recipient.
            line = segment.split("\n", 1)[0] if "\n" in segment else ""
            words = line if line and reason_from_text(line) else segment
            verdict = classify(
                None, words, context=self.human, transcript=segment if len(others) > 1 else None
            )
            failures.append(_Failure(address, verdict, _short(segment)))
        return failures

    def _flufl(self) -> list[str]:
        _plain_headers_for_flufl(self.msg)
        try:
            temporary, permanent = all_failures(self.msg)
        except Exception as exc:
            # flufl.bounce re-raises what a heuristic detector trips over; the message
            # is kept as unparsed unless the other readings find its recipients.
            log.warning("bounce_detector_failed", exc_info=True)
            self.detector_error = f"bounce detector failed: {type(exc).__name__}: {exc}"[:300]
            return []
        found: list[str] = []
        for value in [*permanent, *temporary]:
            try:
                address = _normal(value.decode("utf-8"))
            except UnicodeDecodeError:
                continue
            if address is not None and address not in found:
                found.append(address)
        return found


def _parts(msg: Message) -> Iterator[Message]:
    """The MIME tree in order, without entering attached messages (a returned message
    can itself be a bounce) and without the header blocks of a delivery-status part."""
    stack = [msg]
    count = 0
    while stack and count < _PARTS_LIMIT:
        part = stack.pop()
        count += 1
        yield part
        if part.get_content_maintype() == "multipart":
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend(p for p in reversed(payload) if isinstance(p, Message))


def _blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks: list[Message] = []
        for block in payload:
            if not isinstance(block, Message):
                continue
            if len(block.get_all("Final-Recipient") or []) > 1:
                # Recipients without the blank line between them (AOL): one per block.
                blocks.extend(_text_blocks(block.as_string()))
            else:
                blocks.append(block)
        return blocks
    if isinstance(payload, str):
        # Encoded (base64, quoted-printable) delivery-status parts stay one string.
        data = part.get_payload(decode=True)
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else payload
        return _text_blocks(text)
    return []


_DSN_FIELD = re.compile(
    r"^(?:final-recipient|original-recipient|action|status|diagnostic-code|remote-mta|"
    r"reporting-mta|x-original-message-id|last-attempt-date|arrival-date|x-postfix-sender|"
    r"received-from-mta|will-retry-until|x-[\w-]+)\s*:",
    re.IGNORECASE,
)


def _text_blocks(text: str) -> list[Message]:
    """Delivery-status fields written out in text, as header blocks."""
    if not re.search(r"^final-recipient\s*:", text, re.IGNORECASE | re.MULTILINE):
        return []
    blocks: list[Message] = []
    current: list[str] = []
    for line in [*text.splitlines(), ""]:
        if _DSN_FIELD.match(line) or (current and line[:1] in (" ", "\t") and line.strip()):
            if re.match(r"(?i)final-recipient\s*:", line) and any(
                re.match(r"(?i)final-recipient\s*:", c) for c in current
            ):
                blocks.append(email.message_from_string("\n".join(current), policy=compat32))
                current = []
            current.append(line)
        elif current:
            blocks.append(email.message_from_string("\n".join(current), policy=compat32))
            current = []
    return blocks


def _dsn_address(value: str) -> str | None:
    if not value:
        return None
    kind, sep, rest = value.partition(";")
    if sep:
        if kind.strip().lower() not in ("rfc822", "utf-8"):
            return None  # X.400 and friends: nothing we could have sent to
        value = rest
    # Some MTAs leave out the type and write an angle-addr, or a name and an address.
    return _normal(parseaddr(value)[1] or value.strip().strip("<>"))


def _says_something(diagnostic: str) -> bool:
    """Whether a Diagnostic-Code has words beyond codes (some are only "550 5.0.0")."""
    return bool(re.search(r"[A-Za-z]{3,}", re.sub(r"\b(?:smtp|x-[\w-]+)\b", "", diagnostic)))


def _unquoted(text: str) -> str:
    """A bounce forwarded by a person as a quotation ("> " before each line) without
    that quoting, so its fields and transcript read as the bounce wrote them. Only when
    most lines are quoted: a transcript's own ">>> RCPT TO" lines stay as they are."""
    lines = text.splitlines()
    written = [line for line in lines if line.strip()]
    quoted = sum(1 for line in written if line.startswith(">"))
    if len(written) < 5 or quoted * 10 < len(written) * 6:
        return text
    return "\n".join(
        (line[2:] if line.startswith("> ") else line[1:]) if line.startswith(">") else line
        for line in lines
    )


def _human_part(text: str) -> str:
    """The report's own words: the text before the returned message starts."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if _RETURNED.match(line):
            return "\n".join(lines[:index])
        if _HEADER_LINE.match(line) and index + 2 < len(lines):
            following = lines[index + 1 : index + 4]
            if sum(1 for f in following if _HEADER_LINE.match(f) or f[:1] in (" ", "\t")) >= 2:
                return "\n".join(lines[:index])
    return text


def _segment(text: str, address: str, others: set[str]) -> str:
    """The lines about ``address``: from its first mention to the next other address,
    a separator, or a few lines on; a blank line does not end it (Gmail writes the
    remote server's words after one)."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if address not in line.lower():
            continue
        taken: list[str] = [line.strip()]
        for following in lines[index + 1 : index + _SEGMENT_LINES]:
            lowered = following.lower()
            ends = any(other in lowered for other in others) or re.match(r"^\s*-{5,}", following)
            if ends and not re.search(r"transcript|session", lowered):
                break
            if following.strip():
                taken.append(following.strip())
        return "\n".join(taken)
    return ""


def _plain_headers_for_flufl(msg: Message) -> None:
    """Headers as flufl.bounce's detectors expect them: there, and of type str.

    Its Yale detector fails on a single-part message without a From, and Sina, Yahoo and
    GroupWise call str methods on From and X-Mailer, which compat32 returns as a Header
    when they hold 8-bit bytes. One failing detector stops all_failures() before the
    detectors after it have looked (qmail's among them).
    """
    for name, missing in (("From", "<>"), ("X-Mailer", None)):
        value = msg.get(name)
        text = missing if value is None or not str(value).strip() else str(value)
        if isinstance(value, str) and text == value:
            continue
        del msg[name]
        if text is not None:
            msg[name] = text


def _normal(address: str) -> str | None:
    try:
        return normalize_email(address)
    except InvalidAddress:
        return None


def _field(block: Message, name: str) -> str:
    # compat32 hands back a Header object for values with 8-bit bytes; str() copes.
    value = block.get(name)
    return "" if value is None else " ".join(_CONTROL.sub(" ", str(value)).split())


def _header_text(msg: Message, name: str) -> str:
    value = msg.get(name)
    if value is None:
        return ""
    try:
        decoded = email.header.decode_header(str(value))
        text = "".join(
            part.decode(charset or "latin-1", "replace") if isinstance(part, bytes) else part
            for part, charset in decoded
        )
    except (LookupError, ValueError):
        text = str(value)
    return " ".join(_CONTROL.sub(" ", text).split())


def _header_addresses(msg: Message, name: str) -> set[str]:
    found: set[str] = set()
    for value in msg.get_all(name) or []:
        for _name, address in getaddresses([str(value)]):
            normal = _normal(address) if address else None
            if normal:
                found.add(normal)
    return found


def _short(text: str) -> str:
    text = " ".join(_CONTROL.sub(" ", text).split())
    return text if len(text) <= DIAGNOSTIC_LIMIT else text[: DIAGNOSTIC_LIMIT - 1] + "…"


def _body_text(parts: list[Message]) -> str:
    """The text parts, decoded: where free-text formats say what went wrong."""
    chunks: list[str] = []
    size = 0
    for part in parts:
        if part.is_multipart():
            continue
        if part.get_content_type() not in ("text/plain", "text/html") and not (
            # A multipart type without its boundary: compat32 leaves the body one string.
            part is parts[0] and part.get_content_maintype() == "multipart"
        ):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        charset = part.get_content_charset() or "utf-8"
        try:
            text = payload[:_BODY_LIMIT].decode(charset, "replace")
        except LookupError:  # a charset Python does not know
            text = payload[:_BODY_LIMIT].decode("latin-1")
        if part.get_content_type() == "text/html":
            if any(p.get_content_type() == "text/plain" for p in parts if p is not part):
                continue
            text = re.sub(r"(?is)<(style|script|head)\b.*?</\1\s*>", " ", text)
            text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>", "\n", text)
            text = re.sub(r"<[^>]{0,2000}>", " ", text).replace("&nbsp;", " ")
            text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
        chunks.append(text)
        size += len(text)
        if size >= _BODY_LIMIT:
            break
    return "\n".join(chunks)


def _returned_headers(parts: list[Message]) -> list[Message]:
    """The headers of the returned message, as attached or as returned headers."""
    found: list[Message] = []
    for part in parts:
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                found.append(payload[0])
        elif content_type in ("text/rfc822-headers", "message/global-headers"):
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                found.append(BytesHeaderParser(policy=compat32).parsebytes(payload))
    return found


def _delivery_id(msg: Message, pattern: str) -> int | None:
    for name in RECIPIENT_HEADERS:
        for value in msg.get_all(name) or []:
            for _name, address in getaddresses([str(value)]):
                delivery_id = verp_delivery_id(address, pattern)
                if delivery_id is not None:
                    return delivery_id
    return None


def _message_id(value: str) -> str | None:
    match = _MESSAGE_ID.search(value)
    return match.group(0) if match else None


def _returned_message_id(parts: list[Message]) -> str | None:
    """The Message-ID of the returned message or of its returned headers."""
    for headers in _returned_headers(parts):
        found = _message_id(_field(headers, "Message-ID"))
        if found:
            return found
    return None


def _quoted_message_id(text: str) -> str | None:
    match = _QUOTED_MESSAGE_ID.search(text)
    return match.group(1) if match else None
