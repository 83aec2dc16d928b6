"""Header values in ASCII, for the messages we write (outbox, SMTP) and the ones
SendGrid writes for us: display names, free text, folding, and the bulk-mail headers
every edition carries (List-Id, Feedback-ID).

- **Words that are not plain ASCII** become RFC 2047 encoded words of at most 75
  characters (B or Q, whichever is shorter), cut between characters, never inside
  one. Neighbouring such words share their encoded words, the space between them
  encoded too, since a decoder drops the space between two encoded words (RFC 2047
  6.2). ASCII words stay readable. A word that merely looks like an encoded word
  (``=?…?=``) is encoded as well, so that no reader decodes it.
- **Display names** (From, To, and the newsletter's name in List-Id) are phrases:
  their ASCII words are quoted where they hold specials such as ``,`` ``"`` ``<``.
  A name is cleaned first (``clean_name``): control characters go and runs of white
  space become one space; every other character is kept.
- **Lines** are folded at spaces to at most 78 characters. List-Unsubscribe stays on
  one line: some receivers mishandle a URL that starts on a continuation line.

The standard library's ``email`` package is the judge (the tests read every message
back under ``email.policy.default`` and ``strict``) but not the writer: it reads any
value it is given as if it were already encoded, so a subject or name that only looks
like an encoded word reaches readers decoded; its folding lets encoded words run to 77
characters; and it cuts names anywhere, which its own parser then reads back with
spaces in them (CPython gh-128110).
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Callable

from mailer.transports.base import Envelope

MAX_LINE = 78  # RFC 5322 2.1.1: "SHOULD be no more than 78 characters"
MAX_ENCODED_WORD = 75  # RFC 2047 2

# Characters no header may carry: C0 and C1 controls (line breaks among them), the line
# and paragraph separators (str.splitlines breaks at them), and lone surrogates.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# Atoms separated by single spaces (RFC 5322 atext): a phrase as it is.
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# The characters an encoded word in a phrase may carry as themselves (RFC 2047 5(3)).
_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_EW_OVERHEAD = len("=?utf-8?b??=")
# Where a header may be folded: a single space between two words.
_FOLD_POINT = re.compile(r"(?<=\S) (?=\S)")
# A word no folded line can hold is encoded, so that it can be cut (never happens to a
# real name; it keeps every line within RFC 5322's 998).
_LONGEST_WORD = MAX_LINE - 2


def clean_name(name: str | None) -> str:
    """A display name as headers carry it: control characters removed, white space
    runs made one space, ends trimmed; every other character kept."""
    if not name:
        return ""
    if not name.isprintable():  # the usual name is, and skips the regex
        name = CONTROL.sub(" ", name)
    return " ".join(name.split())


def quoted_string(text: str) -> str:
    """``text`` as an RFC 5322 quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _plain(words: list[str]) -> str:
    text = " ".join(words)
    return text if _ATOMS.fullmatch(text) else quoted_string(text)


def _q_length(data: bytes) -> int:
    return sum(1 if byte in _Q_SAFE or byte == 0x20 else 3 for byte in data)


def _encoded_word(data: bytes) -> str:
    """The shorter of the B and Q encodings of ``data`` (whole characters)."""
    if _q_length(data) <= 4 * ((len(data) + 2) // 3):
        text = "".join(
            "_" if byte == 0x20 else chr(byte) if byte in _Q_SAFE else f"={byte:02X}"
            for byte in data
        )
        return f"=?utf-8?q?{text}?="
    return f"=?utf-8?b?{binascii.b2a_base64(data, newline=False).decode('ascii')}?="


def _fits(data_length: int, q_length: int, limit: int) -> bool:
    budget = limit - _EW_OVERHEAD
    return 4 * ((data_length + 2) // 3) <= budget or q_length <= budget


def encoded_words(text: str, first: int = MAX_ENCODED_WORD) -> list[str]:
    """``text`` as encoded words of at most 75 characters (the first one at most
    ``first``, to fit beside a field's name), cut between characters, never inside
    one; a decoder joins them back without the spaces between them."""
    data = text.encode("utf-8")
    if _fits(len(data), _q_length(data), first):
        return [_encoded_word(data)]
    words: list[str] = []
    chunk = bytearray()
    q_length = 0
    for character in text:
        encoded = character.encode("utf-8")
        extra = _q_length(encoded)
        limit = MAX_ENCODED_WORD if words else first
        if chunk and not _fits(len(chunk) + len(encoded), q_length + extra, limit):
            words.append(_encoded_word(bytes(chunk)))
            chunk.clear()
            q_length = 0
        chunk += encoded
        q_length += extra
    words.append(_encoded_word(bytes(chunk)))
    return words


def _needs_encoding(word: str) -> bool:
    return not word.isascii() or "=?" in word or len(word) > _LONGEST_WORD


def as_it_is(name: str) -> bool:
    """Plain atoms that read back as they are (the usual name: no work at all)."""
    return len(name) <= _LONGEST_WORD and "=?" not in name and _ATOMS.fullmatch(name) is not None


def _mixed(text: str, plain: Callable[[list[str]], str], room: int) -> str:
    """``text`` with each run of words that need encoding as encoded words (the spaces
    inside a run encoded with it, since a decoder drops the space between two encoded
    words) and each run of the other words through ``plain``; the first encoded word
    at most ``room`` long when it comes first."""
    parts: list[str] = []
    plain_words: list[str] = []
    encoded: list[str] = []
    for word in text.split(" "):
        # An empty word (two spaces in a row) stays with the run it is in.
        if _needs_encoding(word) or (encoded and not word):
            if plain_words:
                parts.append(plain(plain_words))
                plain_words = []
            encoded.append(word)
        else:
            if encoded:
                parts.extend(
                    encoded_words(" ".join(encoded), room if not parts else MAX_ENCODED_WORD)
                )
                encoded = []
            plain_words.append(word)
    if plain_words:
        parts.append(plain(plain_words))
    if encoded:
        parts.extend(encoded_words(" ".join(encoded), room if not parts else MAX_ENCODED_WORD))
    return " ".join(parts)


def room(field: str) -> int:
    """How long an encoded word may be on the field's first line."""
    return min(MAX_ENCODED_WORD, MAX_LINE - len(field) - 2)


def phrase(name: str, room: int = MAX_ENCODED_WORD) -> str:
    """A cleaned display name as an RFC 5322 phrase in ASCII (see the module's notes):
    ASCII words as atoms, or as a quoted string where they hold specials; the others as
    encoded words."""
    if name.isascii() and "=?" not in name and len(name) <= _LONGEST_WORD:
        return name if _ATOMS.fullmatch(name) else quoted_string(name)
    return _mixed(name, _plain, room)


def unstructured(text: str, room: int = MAX_ENCODED_WORD) -> str:
    """Free text (a Subject) in ASCII: ASCII words as they are, the others as encoded
    words. Written here rather than by ``email.policy``: the standard library reads a
    value it is given as if it were already encoded, so a subject that only looks like
    an encoded word would reach readers decoded."""
    if text.isascii() and "=?" not in text and all(len(w) <= _LONGEST_WORD for w in text.split()):
        return text
    return _mixed(text, " ".join, room)


def fold(field: str, value: str) -> str:
    """``Field: value`` and CRLF, folded into lines of at most 78 characters at single
    spaces between words (a word longer than a line keeps a line of its own). Every
    such space in a value written here may carry a fold: between words and encoded
    words, before an angle address, inside a quoted string."""
    line = f"{field}: {value}"
    if len(line) <= MAX_LINE:
        return line + "\r\n"
    lines: list[str] = []
    current = f"{field}:"
    for word in _FOLD_POINT.split(value):
        # Never right after the field's name: a value must not start with a fold.
        if len(current) + 1 + len(word) > MAX_LINE and (lines or current != f"{field}:"):
            lines.append(current)
            current = ""
        current += " " + word
    lines.append(current)
    return "\r\n".join(lines) + "\r\n"


def address(name: str | None, addr_spec: str, room: int = MAX_ENCODED_WORD) -> str:
    """``Name <addr>`` (or the bare address) with the name cleaned and encoded."""
    cleaned = clean_name(name)
    return f"{phrase(cleaned, room)} <{addr_spec}>" if cleaned else addr_spec


def feedback_sender(from_email: str) -> str:
    """Gmail's Feedback-ID SenderId for a From address: its domain when that has the
    5 to 15 characters Gmail asks for; else the domain's first characters and a short
    digest of it, so that it stays the same for every message from that domain."""
    domain = from_email.rpartition("@")[2].lower()
    if 5 <= len(domain) <= 15:
        return domain
    digest = hashlib.sha256(domain.encode("utf-8")).hexdigest()[:8]
    return f"{domain[:6].rstrip('.-')}-{digest}"


def feedback_id(envelope: Envelope) -> str:
    """``edition:newsletter:sender`` (Gmail's a:b:SenderId), the same for the whole
    edition and nothing in it about a reader. A test send is ``test`` in the edition's
    place, so editors' complaints never count against an edition."""
    edition = "test" if envelope.test_send else f"e{envelope.edition_id}"
    return f"{edition}:{envelope.newsletter_slug}:{feedback_sender(envelope.from_email)}"


def list_id(envelope: Envelope) -> str:
    """RFC 2919: the newsletter's name, then a label that names it for good."""
    domain = envelope.from_email.rpartition("@")[2]
    label = f"<{envelope.newsletter_slug}.{domain}>"
    name = clean_name(envelope.newsletter_name)
    return f"{phrase(name, room('List-Id'))} {label}" if name else label


def ascii_value(what: str, value: str) -> str:
    if CONTROL.search(value) or any(ch in value for ch in "<>"):
        raise ValueError(f"refusing a {what} with line breaks or brackets: {value!r}")
    if not value.isascii():
        raise ValueError(f"refusing a {what} that is not ASCII: {value!r}")
    return value
