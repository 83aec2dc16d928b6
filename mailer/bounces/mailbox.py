"""Where bounce mail waits: a folder of .eml files, an mbox, or an IMAP mailbox.

Each source yields ``(key, raw)`` pairs; ``done(key)`` takes a message out of the way
(moved aside, removed, or flagged deleted) once the caller has applied it, so a rerun
does not read it again, and a crash before then means it is read again, not lost.
"""

from __future__ import annotations

import hashlib
import imaplib
import logging
import mailbox
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from ssl import SSLContext, create_default_context
from types import TracebackType
from typing import Protocol, Self

log = logging.getLogger(__name__)

_UID = re.compile(r"[0-9]{1,10}")
# "* 3 FETCH (UID 17 BODY[] {2048}": the UID of the message a literal belongs to.
_FETCH_UID = re.compile(rb"\bUID\s+([0-9]+)", re.IGNORECASE)


class BounceSourceError(Exception):
    """A source could not be read; the message never holds a password."""


class BounceSource(Protocol):
    def messages(self) -> Iterator[tuple[str, bytes]]: ...

    def done(self, key: str) -> None: ...

    def close(self) -> None: ...


class _ClosedOnExit:
    """``with source:`` closes it however the block ends."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class FolderSource(_ClosedOnExit):
    """``*.eml`` files in one directory (as a pipe-to-file alias or a drop folder leaves
    them); done ones move into ``processed/`` beside them."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.processed = self.directory / "processed"

    def messages(self) -> Iterator[tuple[str, bytes]]:
        if not self.directory.is_dir():
            raise BounceSourceError(f"bounce folder {self.directory} is not a directory")
        names = sorted(
            entry.name
            for entry in os.scandir(self.directory)
            if entry.is_file() and entry.name.lower().endswith(".eml")
        )
        for name in names:
            try:
                raw = (self.directory / name).read_bytes()
            except FileNotFoundError:
                continue  # another run took it first
            yield name, raw

    def done(self, key: str) -> None:
        if key in ("", ".", "..") or Path(key).name != key:
            raise ValueError(f"not a file name from this folder: {key!r}")
        self.processed.mkdir(exist_ok=True)
        os.replace(self.directory / key, self.processed / key)

    def close(self) -> None:
        pass


class MboxSource(_ClosedOnExit):
    """An mbox file, as a local delivery agent appends to it.

    The file is locked (fcntl and a dot-lock, as mail delivery agents do) while it is
    read and while a done message is cut out of it; between those the delivery agent
    may append. So ``done()`` re-reads the file under the lock and finds the message by
    its content, never trusting a position read earlier.
    """

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        self._read: dict[str, tuple[int, bytes]] = {}  # key -> (position, content digest)
        self._removed: list[int] = []  # positions (as read) of the messages done since

    def messages(self) -> Iterator[tuple[str, bytes]]:
        if not self.path.parent.is_dir():
            raise BounceSourceError(f"no directory for the mbox {self.path}")
        if not self.path.exists():
            return  # nothing delivered yet: delivery agents create the file on demand
        box = self._locked()
        try:
            snapshot = [box.get_bytes(toc_key) for toc_key in box.iterkeys()]
        finally:
            box.unlock()
            box.close()
        self._read = {}
        self._removed = []
        for position, raw in enumerate(snapshot):
            key = str(position)
            self._read[key] = (position, _digest(raw))
            yield key, raw

    def done(self, key: str) -> None:
        if key not in self._read:
            raise ValueError(f"not a message read from {self.path}: {key!r}")
        position, digest = self._read[key]
        box = self._locked()
        try:
            toc_key = self._find(box, position, digest)
            if toc_key is not None:
                box.remove(toc_key)
                box.flush()
        finally:
            box.unlock()
            box.close()
        del self._read[key]
        self._removed.append(position)
        if toc_key is None:
            log.warning("bounce_mbox_message_gone", extra={"mbox": str(self.path), "key": key})

    def close(self) -> None:
        self._read = {}

    def _locked(self) -> mailbox.mbox:
        try:
            box = mailbox.mbox(self.path, create=False)
        except mailbox.NoSuchMailboxError:
            raise BounceSourceError(f"mbox {self.path} is gone") from None
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                box.lock()
                return box
            except mailbox.ExternalClashError:
                # mailbox gives up at once when the delivery agent holds the lock.
                if time.monotonic() >= deadline:
                    box.close()
                    raise BounceSourceError(f"mbox {self.path} stayed locked") from None
                time.sleep(0.05)

    def _find(self, box: mailbox.mbox, position: int, digest: bytes) -> str | None:
        # (mbox keys are ints at run time, whatever the stubs say; they go back unchanged.)
        keys = list(box.keys())
        # Messages only leave through done() (and new ones are appended), so this one
        # usually sits where it was, less those removed before it since.
        expected = position - sum(1 for removed in self._removed if removed < position)
        candidates = keys[expected : expected + 1] if 0 <= expected < len(keys) else []
        for toc_key in candidates + keys:
            if _digest(box.get_bytes(toc_key)) == digest:
                return toc_key
        return None


def _digest(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


class ImapSource(_ClosedOnExit):
    """An IMAP mailbox that bounces are delivered to.

    Messages are fetched with BODY.PEEK[] so that reading alone marks nothing: only
    ``done()`` flags a message \\Seen and \\Deleted, and ``close()`` expunges them. A run
    that dies half way leaves the rest for the next one. The search skips deleted
    messages and, unless ``unseen_only``, reads seen ones too: somebody glancing at the
    mailbox in a mail client must not make bounces disappear.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        folder: str = "INBOX",
        ssl: bool = True,
        timeout: float = 30,
        *,
        starttls: bool = False,
        unseen_only: bool = False,
        ssl_context: SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.folder = folder
        self.ssl = ssl
        self.timeout = timeout
        self.starttls = starttls
        self.unseen_only = unseen_only
        self._ssl_context = ssl_context
        self._connection: imaplib.IMAP4 | None = None
        self._flagged = False

    def __repr__(self) -> str:
        return (
            f"ImapSource(host={self.host!r}, port={self.port}, username={self.username!r}, "
            f"folder={self.folder!r}, ssl={self.ssl}, starttls={self.starttls})"
        )

    def __enter__(self) -> Self:
        self._connect()
        return self

    def messages(self) -> Iterator[tuple[str, bytes]]:
        connection = self._connect()
        criteria = ("UNSEEN", "NOT", "DELETED") if self.unseen_only else ("NOT", "DELETED")
        uids: list[str] = []
        for line in self._uid(connection, "SEARCH", *criteria):
            if isinstance(line, bytes):
                uids.extend(uid.decode("ascii") for uid in line.split() if uid.isdigit())
        for uid in uids:
            raw = self._fetch(connection, uid)
            if raw is not None:  # expunged by somebody else meanwhile
                yield uid, raw

    def done(self, key: str) -> None:
        if not _UID.fullmatch(key):
            raise ValueError(f"not an IMAP UID: {key!r}")
        self._uid(self._connect(), "STORE", key, "+FLAGS.SILENT", r"(\Seen \Deleted)")
        self._flagged = True

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        flagged, self._flagged = self._flagged, False
        try:
            if flagged:
                # Should this fail, the flagged messages still stay out of every search.
                typ, data = connection.expunge()
                if typ != "OK":
                    log.warning("bounce_imap_expunge_failed", extra={"reply": _text(data)})
            connection.logout()
        except (OSError, imaplib.IMAP4.error) as exc:
            log.warning("bounce_imap_close_failed", extra={"host": self.host, "error": str(exc)})
            connection.shutdown()

    def _connect(self) -> imaplib.IMAP4:
        if self._connection is not None:
            return self._connection
        where = f"IMAP server {self.host}:{self.port}"
        try:
            connection = self._open()
        except (OSError, imaplib.IMAP4.error) as exc:
            raise BounceSourceError(f"cannot connect to {where}: {self._clean(exc)}") from None
        try:
            self._start(connection, where)
        except BaseException:
            connection.shutdown()
            raise
        self._connection = connection
        return connection

    def _open(self) -> imaplib.IMAP4:
        if self.ssl:
            context = self._ssl_context or create_default_context()
            return imaplib.IMAP4_SSL(
                self.host, self.port, ssl_context=context, timeout=self.timeout
            )
        return imaplib.IMAP4(self.host, self.port, timeout=self.timeout)

    def _start(self, connection: imaplib.IMAP4, where: str) -> None:
        if self.starttls and not self.ssl:
            try:
                connection.starttls(ssl_context=self._ssl_context or create_default_context())
            except (OSError, imaplib.IMAP4.error) as exc:
                raise BounceSourceError(
                    f"STARTTLS with {where} failed: {self._clean(exc)}"
                ) from None
        # Raised outside the except clause, so that not even __context__ keeps imaplib's
        # error, which holds what the server answered to a command carrying the password.
        refusal: str | None = None
        try:
            connection.login(self.username, self._password)
        except UnicodeEncodeError:
            refusal = f"IMAP LOGIN to {where} takes ASCII user names and passwords only"
        except (OSError, imaplib.IMAP4.error) as exc:
            refusal = f"{where} refused the login of {self.username!r}: {self._clean(exc)}"
        if refusal is not None:
            raise BounceSourceError(refusal)
        try:
            typ, data = connection.select(_quoted(self.folder))
        except (OSError, imaplib.IMAP4.error) as exc:
            typ, data = "NO", [str(exc).encode()]
        if typ != "OK":
            raise BounceSourceError(
                f"cannot open folder {self.folder!r} on {where}: {self._clean(data)}"
            )

    def _uid(self, connection: imaplib.IMAP4, command: str, *args: str) -> list[object]:
        try:
            typ, data = connection.uid(command, *args)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise BounceSourceError(
                f"IMAP UID {command} on {self.host} failed: {self._clean(exc)}"
            ) from exc
        if typ != "OK":
            raise BounceSourceError(
                f"IMAP UID {command} on {self.host} refused: {self._clean(data)}"
            )
        return list(data)

    def _fetch(self, connection: imaplib.IMAP4, uid: str) -> bytes | None:
        for item in self._uid(connection, "FETCH", uid, "(BODY.PEEK[])"):
            # A literal comes as (b"* 3 FETCH (UID 17 BODY[] {2048}", b"<the message>");
            # unsolicited FETCH responses (flag changes) may come alongside.
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], bytes):
                match = _FETCH_UID.search(item[0])
                if match and match.group(1).decode("ascii") == uid:
                    return bytes(item[1])
        return None

    def _clean(self, detail: object) -> str:
        """Server or library words, without the password should anybody echo it."""
        if isinstance(detail, BaseException) and len(detail.args) == 1:
            detail = detail.args[0]  # imaplib raises with the server's reply as bytes
        text = _text(detail)
        if self._password:
            # As given, and as quoted in the LOGIN command, should a server echo that.
            quoted = self._password.replace("\\", "\\\\").replace('"', '\\"')
            for form in (quoted, self._password):
                text = text.replace(form, "[password]")
        return text or "no reason given"


def _text(detail: object) -> str:
    if isinstance(detail, list):
        detail = b" ".join(d for d in detail if isinstance(d, bytes))
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    return " ".join(str(detail).split())[:300]


def _quoted(name: str) -> str:
    # imaplib sends arguments as they are; a folder name with a space needs the quotes.
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
