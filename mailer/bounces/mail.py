"""Bounce mail: which addresses a report says failed, how hard, and for which delivery.

RFC 3464 delivery-status reports are read field by field here, since only their Action
and Status tell a mailbox that is full from one that does not exist. The many older
free-text formats (Exim, qmail, Exchange 5.5, ...) go to flufl.bounce, which knows
permanent from temporary and nothing more; an RFC 3463 code found in the lines about an
address refines that. Pure parsing, no database.

Nothing here raises on the message itself: bounce mail is whatever anybody sent, and one
malformed message must not wedge the mailbox it came from. It comes back as ``[]``.
"""

from __future__ import annotations

import email
import logging
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses, parseaddr
from enum import StrEnum
from functools import lru_cache

from flufl.bounce import all_failures

from subscribers.addresses import InvalidAddress, normalize_email

log = logging.getLogger(__name__)

DIAGNOSTIC_LIMIT = 500
# Where a bounce was delivered, i.e. the VERP return path the message went out with.
RECIPIENT_HEADERS = ("To", "Delivered-To", "X-Original-To", "Envelope-To")

# RFC 3463 class.subject.detail, not the middle of an IP address or a version number.
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
_BASIC_CODE = re.compile(r"^([245])\d\d\b")
_DIAGNOSTIC_TYPE = re.compile(r"^[A-Za-z][\w.-]*\s*;\s*")  # "smtp; ", "X-Postfix; "
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_MESSAGE_ID = re.compile(r"<[^<>\s@]{1,200}@[^<>\s@]{1,200}>")
# Free-text bounces quote the returned message, headers first, after their own text.
_QUOTED_MESSAGE_ID = re.compile(
    r"^message-id:[ \t]*(<[^<>\s@]{1,200}@[^<>\s@]{1,200}>)", re.IGNORECASE | re.MULTILINE
)
# Permanent failures that say nothing bad about the address itself, so they count as soft:
#   5.2.2  mailbox full: the mailbox exists, and quota problems clear up;
#   5.3.4  message too big: a property of our message, not of the reader's address;
#   5.7.x  security or policy: spam filtering, our sending IP on a blocklist, DMARC. These
#          arrive for every reader at a provider at once when our reputation or DNS is at
#          fault; as hard bounces they would unsubscribe them all. A reader who keeps
#          bouncing this way still reaches the soft-bounce limit of the policy.
_SOFT_PERMANENT = re.compile(r"5\.(?:2\.2|3\.4|7\.\d{1,3})")
_BODY_LIMIT = 256 * 1024  # enough for any failure text; returned messages can be huge
_PARTS_LIMIT = 200
_PARAGRAPH_LINES = 12


class BounceClass(StrEnum):
    HARD = "hard"  # the address is gone: stop mailing it
    SOFT = "soft"  # the address exists or may: count, and try again later


@dataclass(frozen=True)
class MailBounce:
    email: str  # normal form (subscribers.addresses.normalize_email)
    kind: BounceClass
    status: str | None  # RFC 3463 code, e.g. "5.1.1", when the report gave one
    diagnostic: str  # the remote server's words, one line, at most DIAGNOSTIC_LIMIT chars
    delivery_id: int | None  # from the VERP address the bounce came back to
    message_id: str | None  # Message-ID of the returned message, with its angle brackets


def parse_bounce(raw: bytes, *, verp_pattern: str | None = None) -> list[MailBounce]:
    """The failed recipients one bounce message reports; ``[]`` when it is no bounce.

    ``verp_pattern`` is the configured return path, e.g. ``bounces+{delivery_id}@host``;
    a pattern without exactly one ``{delivery_id}`` raises ValueError (a configuration
    mistake, unlike anything in ``raw``).
    """
    if not isinstance(raw, bytes | bytearray):
        raise TypeError(f"raw must be bytes, not {type(raw).__name__}")
    if verp_pattern is not None:
        if not isinstance(verp_pattern, str):
            raise TypeError(f"verp_pattern must be a str, not {type(verp_pattern).__name__}")
        _verp_regex(verp_pattern)
    try:
        return _parse(bytes(raw), verp_pattern)
    except Exception:
        # A bug of ours or of a detector on some message never seen before: log it for a
        # fix, and let the mailbox move on.
        log.exception("bounce_parse_failed")
        return []


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
    for literal, field, _spec, conversion in string.Formatter().parse(pattern):
        regex.append(re.escape(literal))
        if field is None:
            continue
        if conversion:
            raise ValueError(f"return path pattern {pattern!r}: no conversions (!{conversion})")
        if field == "delivery_id":
            ids += 1
            regex.append("(?P<id>[0-9]{1,18})")
        elif field == "edition_id":  # the SMTP transport fills this one in too
            regex.append("[0-9]{1,18}")
        else:
            raise ValueError(f"return path pattern {pattern!r}: unknown field {{{field}}}")
        if ids > 1:
            raise ValueError(f"return path pattern {pattern!r}: {{delivery_id}} twice")
    if ids != 1:
        raise ValueError(f"return path pattern {pattern!r} has no {{delivery_id}}")
    return re.compile("".join(regex), re.IGNORECASE)


@dataclass(frozen=True)
class _Failure:
    email: str
    kind: BounceClass
    status: str | None
    diagnostic: str


def _parse(raw: bytes, verp_pattern: str | None) -> list[MailBounce]:
    msg = email.message_from_bytes(raw, policy=compat32)
    parts = list(_parts(msg))
    report = _delivery_status(parts)
    if report is None:
        failures = _other_formats(msg, parts)
        original_id = _quoted_message_id(_body_text(parts))
    else:
        failures, original_id = report
    if not failures:
        return []
    # The SMTP transport sends one recipient per message, so one VERP address: its id
    # belongs to every address the report names (normally just the one).
    delivery_id = _delivery_id(msg, verp_pattern) if verp_pattern else None
    message_id = _returned_message_id(parts) or original_id
    kept: dict[str, _Failure] = {}
    for failure in failures:
        # One address reported twice (two blocks, two detectors' views): the harder wins.
        seen = kept.get(failure.email)
        if seen is None or (seen.kind is BounceClass.SOFT and failure.kind is BounceClass.HARD):
            kept[failure.email] = failure
    return [
        MailBounce(f.email, f.kind, f.status, f.diagnostic, delivery_id, message_id)
        for f in kept.values()
    ]


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


def _delivery_status(parts: list[Message]) -> tuple[list[_Failure], str | None] | None:
    """The failures an RFC 3464 report lists, and the X-Original-Message-ID some MTAs
    (Google) give; None when the message has no per-recipient delivery-status fields."""
    failures: list[_Failure] = []
    original_id: str | None = None
    found = False
    for part in parts:
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):
            continue
        for block in blocks:
            if not isinstance(block, Message):
                continue
            original_id = original_id or _message_id(_field(block, "X-Original-Message-ID"))
            action = _field(block, "Action")
            if not action:
                continue  # the per-message block
            found = True
            failure = _recipient_block(block, action)
            if failure is not None:
                failures.append(failure)
    return (failures, original_id) if found else None


def _recipient_block(block: Message, action: str) -> _Failure | None:
    # "Action: failed (bad address)" has been seen, and OpenSMTPD writes "error".
    verb = re.match(r"[a-z]*", action.lower())
    verb_text = verb.group(0) if verb else ""
    if verb_text not in ("failed", "error", "delayed"):
        return None  # delivered, relayed, expanded: news, not a bounce
    # The address we sent to is the original recipient; the final one may be an alias
    # that the receiving system expanded it to.
    address = _dsn_address(_field(block, "Original-Recipient")) or _dsn_address(
        _field(block, "Final-Recipient")
    )
    if address is None:
        return None
    diagnostic = _DIAGNOSTIC_TYPE.sub("", _field(block, "Diagnostic-Code"), count=1)
    status = _status(_field(block, "Status")) or _status(diagnostic)
    kind = BounceClass.SOFT if verb_text == "delayed" else classify_status(status, diagnostic)
    return _Failure(address, kind, status, _short(diagnostic or _field(block, "Status")))


def _dsn_address(value: str) -> str | None:
    if not value:
        return None
    kind, sep, rest = value.partition(";")
    if sep:
        if kind.strip().lower() not in ("rfc822", "utf-8"):
            return None  # X.400 and friends: nothing we could have sent to
        value = rest
    # Some MTAs leave out the type and write an angle-addr.
    return _normal(parseaddr(value)[1] or value.strip().strip("<>"))


def _other_formats(msg: Message, parts: list[Message]) -> list[_Failure]:
    _plain_headers_for_flufl(msg)
    try:
        temporary, permanent = all_failures(msg)
    except Exception:
        # flufl.bounce re-raises what a heuristic detector trips over.
        log.warning("bounce_detector_failed", exc_info=True)
        return []
    if not temporary and not permanent:
        return []
    text = _body_text(parts)
    failures: list[_Failure] = []
    for found, is_permanent in [(a, True) for a in permanent] + [(a, False) for a in temporary]:
        try:
            address = _normal(found.decode("utf-8"))
        except UnicodeDecodeError:
            continue
        if address is None:
            continue
        paragraph = _paragraph(text, address)
        status = _status(paragraph)
        kind = classify_status(status, "") if is_permanent else BounceClass.SOFT
        failures.append(_Failure(address, kind, status, _short(paragraph)))
    return failures


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


def classify_status(status: str | None, diagnostic: str = "") -> BounceClass:
    """The class of a bounce the receiving side has given up on, from its RFC 3463
    status (or the reply code at the start of ``diagnostic``). One rule for bounce
    mail, the webhook and the provider sync."""
    if status is None:
        code = _BASIC_CODE.match(diagnostic.strip())
        return BounceClass.SOFT if code and code.group(1) == "4" else BounceClass.HARD
    if status.startswith("4") or _SOFT_PERMANENT.fullmatch(status):
        return BounceClass.SOFT
    # 5.x.x, and 2.x.x in a failed block: the MTA has given up on the address.
    return BounceClass.HARD


def _status(text: str) -> str | None:
    match = _STATUS.search(text)
    return ".".join(match.groups()) if match else None


def _normal(address: str) -> str | None:
    try:
        return normalize_email(address)
    except InvalidAddress:
        return None


def _field(block: Message, name: str) -> str:
    # compat32 hands back a Header object for values with 8-bit bytes; str() copes.
    value = block.get(name)
    return "" if value is None else " ".join(_CONTROL.sub(" ", str(value)).split())


def _short(text: str) -> str:
    text = " ".join(_CONTROL.sub(" ", text).split())
    return text if len(text) <= DIAGNOSTIC_LIMIT else text[: DIAGNOSTIC_LIMIT - 1] + "…"


def _body_text(parts: list[Message]) -> str:
    """The text/plain parts, decoded: where free-text formats say what went wrong."""
    chunks: list[str] = []
    size = 0
    for part in parts:
        if part.get_content_type() != "text/plain" or part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        charset = part.get_content_charset() or "utf-8"
        try:
            text = payload[:_BODY_LIMIT].decode(charset, "replace")
        except LookupError:  # a charset Python does not know
            text = payload[:_BODY_LIMIT].decode("latin-1")
        chunks.append(text)
        size += len(text)
        if size >= _BODY_LIMIT:
            break
    return "\n".join(chunks)


def _paragraph(text: str, address: str) -> str:
    """The lines about ``address``: from its first mention to the next blank line."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if address in line.lower():
            paragraph: list[str] = []
            for following in lines[index : index + _PARAGRAPH_LINES]:
                if not following.strip():
                    break
                paragraph.append(following.strip())
            return " ".join(paragraph)
    return ""


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
    for part in parts:
        content_type = part.get_content_type()
        headers: Message | None = None
        if content_type in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                headers = payload[0]
        elif content_type in ("text/rfc822-headers", "message/global-headers"):
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                headers = BytesHeaderParser(policy=compat32).parsebytes(payload)
        if headers is not None:
            found = _message_id(_field(headers, "Message-ID"))
            if found:
                return found
    return None


def _quoted_message_id(text: str) -> str | None:
    match = _QUOTED_MESSAGE_ID.search(text)
    return match.group(1) if match else None
