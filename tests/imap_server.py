"""A small IMAP4rev1 server on 127.0.0.1, enough for the bounce reader (imaplib as client).

One user, one folder (INBOX). Commands: CAPABILITY, NOOP, LOGIN, SELECT, UID SEARCH
(ALL, SEEN, UNSEEN, DELETED, UNDELETED, NOT), UID FETCH (UID, FLAGS, RFC822, BODY[],
BODY.PEEK[]), UID STORE (+FLAGS, -FLAGS, FLAGS, .SILENT), EXPUNGE, LOGOUT. Message
bodies go out as {n} literals, sequence numbers shift on EXPUNGE as RFC 3501 says.
"""

from __future__ import annotations

import re
import socketserver
import threading
from dataclasses import dataclass, field

_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|(\([^)]*\))|([^\s()"]+)')


@dataclass
class StoredMessage:
    uid: int
    raw: bytes
    flags: set[str] = field(default_factory=set)


class ImapServer:
    """The shared mailbox, and the server answering for it in a background thread."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self.folder = "INBOX"
        self.uidvalidity = 1731391200
        self.messages: list[StoredMessage] = []
        self.commands: list[str] = []  # every command line after the tag, LOGIN masked
        self.echo_login_failure = False  # a careless server quoting the attempted password
        self._next_uid = 1
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.imap = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def add(self, raw: bytes, flags: set[str] | None = None) -> int:
        with self.lock:
            uid = self._next_uid
            self._next_uid += 1
            self.messages.append(StoredMessage(uid, raw, set(flags or ())))
            return uid

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    imap: ImapServer


class _Handler(socketserver.StreamRequestHandler):
    server: _Server
    # Replies go out line by line; with Nagle each waits for the client's delayed ACK.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.authenticated = False
        self.selected = False

    def handle(self) -> None:
        self.send(b"* OK [CAPABILITY IMAP4rev1] test IMAP server ready")
        while True:
            line = self.rfile.readline(65536)
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            tag, _, rest = text.partition(" ")
            command, _, args = rest.partition(" ")
            command = command.upper()
            imap = self.server.imap
            imap.commands.append("LOGIN ***" if command == "LOGIN" else rest)
            if not tag or not command:
                self.send(f"{tag or '*'} BAD empty command".encode())
                continue
            if command == "LOGOUT":
                self.send(b"* BYE logging out")
                self.send(f"{tag} OK LOGOUT completed".encode())
                return
            handler = getattr(self, f"do_{command}", None)
            if handler is None:
                self.send(f"{tag} BAD unknown command {command}".encode())
                continue
            if command not in ("CAPABILITY", "NOOP", "LOGIN") and not self.authenticated:
                self.send(f"{tag} BAD log in first".encode())
                continue
            if command in ("UID", "EXPUNGE") and not self.selected:
                self.send(f"{tag} BAD select a mailbox first".encode())
                continue
            handler(tag, args)

    def send(self, data: bytes) -> None:
        self.wfile.write(data + b"\r\n")
        self.wfile.flush()

    def do_CAPABILITY(self, tag: str, args: str) -> None:
        self.send(b"* CAPABILITY IMAP4rev1")
        self.send(f"{tag} OK CAPABILITY completed".encode())

    def do_NOOP(self, tag: str, args: str) -> None:
        self.send(f"{tag} OK NOOP completed".encode())

    def do_LOGIN(self, tag: str, args: str) -> None:
        imap = self.server.imap
        words = _words(args)
        if len(words) == 2 and words == [imap.username, imap.password]:
            self.authenticated = True
            self.send(f"{tag} OK [CAPABILITY IMAP4rev1] LOGIN completed".encode())
        elif imap.echo_login_failure:
            self.send(f"{tag} NO [AUTHENTICATIONFAILED] bad credentials {args}".encode())
        else:
            self.send(f"{tag} NO [AUTHENTICATIONFAILED] Authentication failed.".encode())

    def do_SELECT(self, tag: str, args: str) -> None:
        imap = self.server.imap
        words = _words(args)
        if len(words) != 1 or words[0].upper() != imap.folder:
            self.selected = False
            self.send(f"{tag} NO [NONEXISTENT] Unknown mailbox".encode())
            return
        with imap.lock:
            exists = len(imap.messages)
            next_uid = imap._next_uid
        self.selected = True
        self.send(rb"* FLAGS (\Answered \Flagged \Deleted \Seen \Draft)")
        self.send(f"* {exists} EXISTS".encode())
        self.send(b"* 0 RECENT")
        self.send(f"* OK [UIDVALIDITY {imap.uidvalidity}] UIDs valid".encode())
        self.send(f"* OK [UIDNEXT {next_uid}] Predicted next UID".encode())
        self.send(f"{tag} OK [READ-WRITE] SELECT completed".encode())

    def do_EXPUNGE(self, tag: str, args: str) -> None:
        imap = self.server.imap
        with imap.lock:
            sequence = 1
            kept: list[StoredMessage] = []
            for message in imap.messages:
                if "\\Deleted" in message.flags:
                    # Later messages move up one: report each with the number it has now.
                    self.send(f"* {sequence} EXPUNGE".encode())
                else:
                    kept.append(message)
                    sequence += 1
            imap.messages[:] = kept
        self.send(f"{tag} OK EXPUNGE completed".encode())

    def do_UID(self, tag: str, args: str) -> None:
        command, _, rest = args.partition(" ")
        command = command.upper()
        if command == "SEARCH":
            self.uid_search(tag, rest)
        elif command == "FETCH":
            self.uid_fetch(tag, rest)
        elif command == "STORE":
            self.uid_store(tag, rest)
        else:
            self.send(f"{tag} BAD UID {command} not supported".encode())

    def uid_search(self, tag: str, args: str) -> None:
        keys = [word.upper() for word in _words(args)]
        imap = self.server.imap
        with imap.lock:
            try:
                found = [m.uid for m in imap.messages if _matches(keys, m.flags)]
            except ValueError as exc:
                self.send(f"{tag} BAD {exc}".encode())
                return
        self.send(("* SEARCH " + " ".join(map(str, found))).rstrip().encode())
        self.send(f"{tag} OK UID SEARCH completed".encode())

    def uid_fetch(self, tag: str, args: str) -> None:
        uid_set, _, items_text = args.partition(" ")
        items = [item.upper() for item in _words(items_text.strip().strip("()"))]
        imap = self.server.imap
        with imap.lock:
            try:
                wanted = _uid_set(uid_set, imap)
            except ValueError:
                self.send(f"{tag} BAD bad UID set".encode())
                return
            for sequence, message in enumerate(imap.messages, start=1):
                if message.uid not in wanted:
                    continue
                head = [f"UID {message.uid}"]
                literal: bytes | None = None
                for item in items:
                    if item in ("RFC822", "BODY[]"):
                        message.flags.add("\\Seen")  # fetching the body marks it read
                        literal = message.raw
                        head.append(f"{item} {{{len(message.raw)}}}")
                    elif item == "BODY.PEEK[]":
                        literal = message.raw
                        head.append(f"BODY[] {{{len(message.raw)}}}")
                    elif item == "FLAGS":
                        head.insert(1, f"FLAGS ({' '.join(sorted(message.flags))})")
                    elif item != "UID":
                        self.send(f"{tag} BAD unsupported fetch item {item}".encode())
                        return
                line = f"* {sequence} FETCH ({' '.join(head)}".encode()
                if literal is None:
                    self.send(line + b")")
                else:
                    self.wfile.write(line + b"\r\n" + literal)
                    self.send(b")")
        self.send(f"{tag} OK UID FETCH completed".encode())

    def uid_store(self, tag: str, args: str) -> None:
        match = re.fullmatch(r"(\S+) ([+-]?FLAGS(?:\.SILENT)?) \(([^)]*)\)", args, re.IGNORECASE)
        if match is None:
            self.send(f"{tag} BAD bad STORE arguments".encode())
            return
        uid_set, action, flag_text = match.groups()
        flags = set(flag_text.split())
        imap = self.server.imap
        with imap.lock:
            try:
                wanted = _uid_set(uid_set, imap)
            except ValueError:
                self.send(f"{tag} BAD bad UID set".encode())
                return
            for sequence, message in enumerate(imap.messages, start=1):
                if message.uid not in wanted:
                    continue
                if action.upper().startswith("+"):
                    message.flags |= flags
                elif action.upper().startswith("-"):
                    message.flags -= flags
                else:
                    message.flags = set(flags)
                if not action.upper().endswith(".SILENT"):
                    current = " ".join(sorted(message.flags))
                    self.send(f"* {sequence} FETCH (UID {message.uid} FLAGS ({current}))".encode())
        self.send(f"{tag} OK UID STORE completed".encode())


def _words(text: str) -> list[str]:
    words = []
    for quoted, group, atom in _TOKEN.findall(text):
        if group:
            words.append(group)
        elif atom:
            words.append(atom)
        else:
            words.append(re.sub(r"\\(.)", r"\1", quoted))
    return words


def _uid_set(text: str, imap: ImapServer) -> set[int]:
    highest = max((m.uid for m in imap.messages), default=0)
    wanted: set[int] = set()
    for piece in text.split(","):
        low, _, high = piece.partition(":")
        first = highest if low == "*" else int(low)
        last = first if not high else (highest if high == "*" else int(high))
        wanted.update(range(min(first, last), max(first, last) + 1))
    return wanted


def _matches(keys: list[str], flags: set[str]) -> bool:
    """All search keys hold (RFC 3501 ANDs them); NOT negates the key after it."""
    tests = {
        "ALL": True,
        "SEEN": "\\Seen" in flags,
        "UNSEEN": "\\Seen" not in flags,
        "DELETED": "\\Deleted" in flags,
        "UNDELETED": "\\Deleted" not in flags,
    }
    negate = False
    for key in keys:
        if key == "NOT":
            negate = not negate
            continue
        if key not in tests:
            raise ValueError(f"unsupported search key {key}")
        if tests[key] == negate:
            return False
        negate = False
    if negate:
        raise ValueError("NOT without a key")
    return True
