"""CSV import onto a list, streamed in chunks with constant memory.

**Reading.** The file is read incrementally. Its encoding is UTF-8 (with or without a
byte-order mark) when every byte of it decodes as UTF-8 (checked in one fast pass before
parsing, so that a stray cp1252 byte on line 900,000 cannot turn up after 899,999 rows
were written as UTF-8), else cp1252 with a warning in the report. The delimiter is the
one of ``,`` ``;`` and tab that occurs most in the header line. Headers are matched
without regard to case, spaces, ``_`` and ``-``, so the common exports import as they
come: Mailchimp (``Email Address``, ``First Name``, ``Last Name``, ``TIMEZONE``),
listmonk (``email``, ``name``, ``attributes`` as a JSON object) and Substack (``email``,
``active_subscription``, …). ``email`` (or ``email address``, ``e-mail``) is required,
anywhere in the header; ``name`` (or ``full name``), else ``first name`` + ``last name``,
is the name; ``timezone`` is the subscriber's own zone; ``attributes`` (a JSON object) is
merged into the attributes; the state columns of ``subscribers.exporter`` (``status``,
``list_status``, ``lists``, ``suppressed``, ``created_at``) are ignored, since an import
never sets them (so an export imports again as it was); every other non-empty cell is an
attribute, as a string.

**Writing.** Rows are written ``CHUNK_ROWS`` at a time, each chunk in a transaction of
its own with set-based statements: the chunk goes into a temporary table in one statement
(PostgreSQL ``COPY``; SQLite one ``INSERT … SELECT FROM json_each``), and the look-ups and
``INSERT … ON CONFLICT`` statements join it. The next chunk is read and checked in a
thread meanwhile. On PostgreSQL the tables the audience is read from are analysed at the
end (``subscribers.audience.analyze_audience``). So:

- a bad *row* (bad address, wrong number of cells, bad timezone, the same address again)
  never reaches the database: it is reported with its line number (and written to the
  report file, if one was asked for) and the rest is imported;
- a *chunk* is atomic: if the database fails, the chunk being written is rolled back,
  the chunks before it stay, and the report says from which line nothing was written
  (``stopped_at_line``);
- re-running the same file is idempotent: present subscribers are updated with the same
  values, present memberships are left as they are, so a stopped run is finished by
  running it again.

**Never resubscribed.** An address that is suppressed (bounced, complained, unsubscribed
from everything) or was erased at its owner's request (a keyed hash, see
``subscribers.erased``) is skipped whole: no row is made or changed. A subscriber who left
everything gets no new membership, and a membership that was ended stays ended
(``kept_unsubscribed``). Each new membership gets a consent record (kind ``import``,
source ``import:<file name>``).

A dry run reads and checks everything and asks the database what would change, but
writes nothing. (An address repeated more than one chunk after its first row is reported
by a real run, which finds it made by this run, but counted twice by a dry run.)

Memory: three chunks of rows at most (one written, one waiting, one being read), the
duplicate check of one chunk, the first MAX_ERRORS_KEPT errors; never the file, the
audience or every address seen.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import queue
import re
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TextIO

import orjson
from sqlalchemy import Connection, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from mailer import jsondata
from mailer.briefings.sanitize import clean_data, clean_text
from mailer.db.base import utcnow
from mailer.db.session import transaction
from mailer.schedule.slots import ScheduleError, parse_timezone
from subscribers import tallies
from subscribers.addresses import InvalidAddress, normalize_email
from subscribers.audience import analyze_audience
from subscribers.erased import PREFIX as ERASED_PREFIX
from subscribers.erased import marker
from subscribers.models import (
    MailingList,
    Subscriber,
    SubscriberStatus,
    SubscriptionStatus,
)
from subscribers.tokens import Keys, key_ring

log = logging.getLogger(__name__)

MAX_NAME_LENGTH = 200
CHUNK_ROWS = 5000
# Errors kept in memory (and in as_dict()); all of them go to the report file.
MAX_ERRORS_KEPT = 1000
_SNIFF_BYTES = 1 << 20

_EMAIL_HEADERS = {"email", "emailaddress", "mail"}
_NAME_HEADERS = {"name", "fullname"}
_FIRST_HEADERS = {"firstname", "fname", "givenname"}
_LAST_HEADERS = {"lastname", "lname", "surname", "familyname"}
_HEADER_NOISE = re.compile(r"[\s_\-]+")
# subscribers.exporter's state columns: what an import never sets, so a re-import of an
# export does not turn them into attributes.
_IGNORED = {"status", "liststatus", "lists", "suppressed", "createdat"}


@dataclass(frozen=True)
class Row:
    line: int
    email: str
    name: str | None
    attributes: dict[str, Any]
    timezone: str | None = None  # IANA name, for delivery at the slot in their own time


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    subscribed: int = 0
    kept_unsubscribed: int = 0
    suppressed: int = 0  # skipped: the address is suppressed
    erased: int = 0  # skipped: the address belonged to someone erased
    rejected: int = 0  # bad rows, all of them (``errors`` keeps the first MAX_ERRORS_KEPT)
    rows: int = 0  # rows read, good and bad
    errors: list[tuple[int, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False
    # The first line of the chunk that failed: nothing from it on was written.
    stopped_at_line: int | None = None
    # Every rejected row is also written here as it is found (``--report FILE``).
    error_sink: TextIO | None = field(default=None, repr=False, compare=False)
    # The reader thread rejects bad rows while the writer rejects late duplicates.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def reject(self, line: int, reason: str) -> None:
        with self._lock:
            self.rejected += 1
            if len(self.errors) < MAX_ERRORS_KEPT:
                self.errors.append((line, reason))
            if self.error_sink is not None:
                self.error_sink.write(f"line {line}: {reason}\n")

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "subscribed": self.subscribed,
            "kept_unsubscribed": self.kept_unsubscribed,
            "suppressed": self.suppressed,
            "erased": self.erased,
            "rejected": max(self.rejected, len(self.errors)),
            "rows": self.rows,
            "dry_run": self.dry_run,
            "stopped_at_line": self.stopped_at_line,
            "warnings": list(self.warnings),
            "errors": [{"line": line, "reason": reason} for line, reason in self.errors],
        }


class ImportFileError(ValueError):
    """The file as a whole cannot be read as a subscriber CSV."""


# Called after each chunk with the report so far, bytes read and the file's size (or None).
Progress = Callable[[ImportReport, int, int | None], None]


@dataclass(frozen=True)
class _Columns:
    email: int
    name: int | None
    first: int | None
    last: int | None
    timezone: int | None
    json_attributes: int | None
    attributes: tuple[tuple[int, str], ...]
    width: int


def _columns(header: list[str], source: str) -> _Columns:
    names = [h.strip() for h in header]
    keys = [_HEADER_NOISE.sub("", h.lower()) for h in names]
    if any(not h for h in names) or len(set(keys)) != len(keys):
        raise ImportFileError(f"{source}:1: column names must be non-empty and distinct")

    def find(candidates: set[str]) -> int | None:
        return next((i for i, k in enumerate(keys) if k in candidates), None)

    email = find(_EMAIL_HEADERS)
    if email is None:
        raise ImportFileError(
            f"{source}:1: no email column (looked for 'email' or 'Email Address' in {names[:8]})"
        )
    name, first, last = find(_NAME_HEADERS), find(_FIRST_HEADERS), find(_LAST_HEADERS)
    zone, json_attributes = find({"timezone"}), find({"attributes"})
    taken = {i for i in (email, name, first, last, zone, json_attributes) if i is not None}
    taken |= {i for i, k in enumerate(keys) if k in _IGNORED}
    return _Columns(
        email=email,
        name=name,
        first=first,
        last=last,
        timezone=zone,
        json_attributes=json_attributes,
        attributes=tuple((i, h) for i, h in enumerate(names) if i not in taken),
        width=len(names),
    )


def _delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def iter_rows(
    text: Iterable[str], *, source: str, report: ImportReport, dialect_line: str | None = None
) -> Iterator[Row]:
    """The good rows of CSV ``text`` (lines, as from a file opened with ``newline=""``);
    bad ones go to ``report``. The first line is the header."""
    lines = iter(text)
    first = dialect_line
    if first is None:
        first = next(lines, None)
        if first is None:
            raise ImportFileError(f"{source}: empty file")

    def all_lines() -> Iterator[str]:
        # Control characters go as at every way in (clean_text); CSV's own stay.
        yield clean_text(first)
        yield from map(clean_text, lines)

    reader = csv.reader(all_lines(), delimiter=_delimiter(first))
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError(f"{source}: empty file") from None
    except csv.Error as exc:
        raise ImportFileError(f"{source}:1: {exc}") from exc
    columns = _columns(header, source)
    seen: set[str] = set()  # addresses of the current chunk, for duplicates within it
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            report.rows += 1
            report.reject(reader.line_num, f"unreadable CSV: {exc}")
            return
        line = reader.line_num
        if not "".join(values).strip():
            continue
        report.rows += 1
        if len(values) != columns.width:
            report.reject(line, f"expected {columns.width} columns, found {len(values)}")
            continue
        row = _row(line, values, columns)
        if isinstance(row, str):
            report.reject(line, row)
            continue
        if row.email in seen:
            report.reject(line, f"email: {row.email} appears earlier in the file")
            continue
        if len(seen) >= CHUNK_ROWS:
            seen.clear()  # later duplicates are caught against the database (see _write)
        seen.add(row.email)
        yield row


def _row(line: int, values: list[str], columns: _Columns) -> Row | str:
    """The row, or the reason it is refused."""
    try:
        email = normalize_email(values[columns.email])
    except InvalidAddress as exc:
        return f"email: {exc}"
    if columns.name is not None:
        name = values[columns.name].strip() or None
    else:
        parts = [values[i].strip() for i in (columns.first, columns.last) if i is not None]
        name = " ".join(p for p in parts if p) or None
    if name is not None and (len(name) > MAX_NAME_LENGTH or not name.isprintable()):
        return "name: too long or contains control characters"
    attributes: dict[str, Any] = {}
    if columns.json_attributes is not None:
        raw = values[columns.json_attributes].strip()
        if raw:
            try:
                parsed = jsondata.parse(raw)
            except ValueError as exc:
                return f"attributes: {exc}"
            if not isinstance(parsed, dict):
                return "attributes: must be a JSON object"
            attributes.update(clean_data(parsed))  # \u0000 escapes decode to NUL
    for i, key in columns.attributes:
        value = values[i].strip()
        if value:  # an export's empty columns are no information about the person
            attributes[key] = value
    zone = None
    if columns.timezone is not None:
        zone = values[columns.timezone].strip() or None
        if zone is not None:
            try:
                parse_timezone(zone)
            except ScheduleError as exc:
                return str(exc)
    return Row(line, email, name, attributes, zone)


def _encoding(handle: IO[bytes], report: ImportReport, source: str) -> str:
    """utf-8-sig if the whole (seekable) file decodes as UTF-8, else cp1252."""
    start = handle.tell()
    # utf-8-sig reads UTF-8 with or without a byte-order mark.
    encoding = "utf-8-sig"
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        # C-speed pass (about 1 GB/s); the file is then in the page cache for the parse.
        while chunk := handle.read(_SNIFF_BYTES):
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        encoding = "cp1252"
        report.warnings.append(f"{source}: not UTF-8; read as Windows-1252 (cp1252)")
    handle.seek(start)
    return encoding


def read_rows(path: Path) -> tuple[list[Row], list[tuple[int, str]]]:
    """Every good row and every error of a file, in memory: for small files and tests;
    imports stream with ``import_file``."""
    report = ImportReport()
    with _open(path, report) as text:
        rows = list(iter_rows(text, source=str(path), report=report))
    return rows, report.errors


def parse_rows(text: str, *, source: str) -> tuple[list[Row], list[tuple[int, str]]]:
    report = ImportReport()
    rows = list(
        iter_rows(
            io.StringIO(text.removeprefix("\ufeff"), newline=""), source=source, report=report
        )
    )
    return rows, report.errors


def _open(path: Path, report: ImportReport) -> TextIO:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ImportFileError(f"{path}: {exc.strerror}") from exc
    try:
        encoding = _encoding(handle, report, str(path))
    except OSError as exc:
        handle.close()
        raise ImportFileError(f"{path}: {exc.strerror}") from exc
    # cp1252 leaves five bytes undefined: they read as U+FFFD rather than stop the import.
    errors = "replace" if encoding == "cp1252" else "strict"
    return io.TextIOWrapper(handle, encoding=encoding, errors=errors, newline="")


def import_rows(
    factory: sessionmaker[Session],
    rows: Iterable[Row],
    list_name: str,
    report: ImportReport,
    *,
    source: str = "import",
    erasure_key: Keys | None = None,
    dry_run: bool = False,
    progress: Callable[[ImportReport], None] | None = None,
) -> ImportReport:
    """Write ``rows`` onto the list (made if need be) in chunks of CHUNK_ROWS, each in its
    own transaction. ``source`` is the consent records' (``import:<file name>``);
    ``erasure_key`` finds erased addresses (None: nobody was erased without a key)."""
    report.dry_run = dry_run
    with transaction(factory) as session:
        list_id = session.scalar(select(MailingList.id).where(MailingList.name == list_name))
        if list_id is None and not dry_run:
            mailing_list = MailingList(name=list_name)
            session.add(mailing_list)
            session.flush()
            list_id = mailing_list.id
        # Subscribers above this id were made by this run: an address found among them in a
        # later chunk appeared earlier in the file.
        floor_id = session.scalar(select(func.coalesce(func.max(Subscriber.id), 0))) or 0
    with closing(_read_ahead(rows, CHUNK_ROWS)) as chunks:
        for chunk in chunks:
            _flush(factory, chunk, list_id, floor_id, report, source, erasure_key, dry_run)
            if progress is not None:
                progress(report)
    if progress is not None:
        progress(report)
    if not dry_run and (report.added or report.subscribed or report.updated):
        # On SQLite the memberships' triggers left a difference per row joined. A fold
        # that fails (a concurrent one, say) loses nothing: the scheduler's folds again.
        try:
            with transaction(factory) as session:
                tallies.fold(session.connection())
        except DBAPIError:
            log.warning("import.fold_failed", exc_info=True)
        analyze_audience(factory)
    return report


def _read_ahead(rows: Iterable[Row], size: int) -> Generator[list[Row]]:
    """``rows`` in chunks of ``size``, the next one read and checked in a thread while the
    caller writes this one: reading is Python's work and writing mostly the database's,
    so on two cores they overlap. At most three chunks exist at a time."""
    ready: queue.Queue[list[Row] | BaseException | None] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item: list[Row] | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def read() -> None:
        try:
            chunk: list[Row] = []
            for row in rows:
                chunk.append(row)
                if len(chunk) >= size:
                    if not put(chunk):
                        return
                    chunk = []
            if chunk and not put(chunk):
                return
            put(None)
        except BaseException as exc:  # handed to the caller's thread, raised there
            put(exc)

    reader = threading.Thread(target=read, name="import-reader", daemon=True)
    reader.start()
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def _flush(
    factory: sessionmaker[Session],
    chunk: list[Row],
    list_id: int | None,
    floor_id: int,
    report: ImportReport,
    source: str,
    erasure_key: Keys | None,
    dry_run: bool,
) -> None:
    try:
        with transaction(factory) as session:
            counts = _write(
                session.connection(), chunk, list_id, floor_id, source, erasure_key, dry_run
            )
    except Exception:
        report.stopped_at_line = chunk[0].line
        raise
    for line, reason in counts.pop("errors"):
        report.reject(line, reason)
    for key, value in counts.items():
        setattr(report, key, getattr(report, key) + value)


# The chunk being written, in a temporary table of the connection: every look-up and
# insert of the chunk is then one set-based statement joining it (no statement with
# thousands of bound values, which cost more to compile and parse than to run).
_CREATE_STAGE = {
    "sqlite": (
        "CREATE TEMP TABLE IF NOT EXISTS import_stage (line INTEGER NOT NULL, "
        "email TEXT NOT NULL, name TEXT, attributes TEXT NOT NULL, timezone TEXT, marker TEXT)"
    ),
    "postgresql": (
        "CREATE TEMP TABLE IF NOT EXISTS import_stage (line integer NOT NULL, "
        "email text NOT NULL, name text, attributes text NOT NULL, timezone text, marker text) "
        "ON COMMIT DELETE ROWS"
    ),
}
_STAGE_LITE = (
    "INSERT INTO import_stage (line, email, name, attributes, timezone, marker) "
    "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
    "json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'), "
    "json_extract(value, '$[5]') FROM json_each(?)"
)
_EXISTING = (
    "SELECT st.line, st.email, st.name, st.attributes, st.timezone, "
    "s.id, s.status, s.attributes, s.name, s.timezone "
    "FROM import_stage st JOIN subscribers s ON s.email = st.email ORDER BY st.line"
)
_MEMBERS = (
    "SELECT m.subscriber_id, m.status FROM import_stage st "
    "JOIN subscribers s ON s.email = st.email "
    "JOIN subscriptions m ON m.subscriber_id = s.id AND m.list_id = ?"
)
# DO NOTHING: someone who signed up meanwhile keeps their row, and is not ours. (WHERE
# true: SQLite's parser needs it before ON CONFLICT in an INSERT … SELECT.)
_INSERT_NEW = (
    "INSERT INTO subscribers (email, name, status, attributes, timezone, created_at, "
    "updated_at) SELECT email, name, 'active', attributes, timezone, ?, ? "
    "FROM import_stage WHERE true ORDER BY line ON CONFLICT (email) DO NOTHING"
)
# SQLite: the chunk's transaction holds the database's one write lock from its start,
# so the new rows are exactly those above the highest id before the insert.
_JOIN_NEW = (
    "INSERT INTO subscriptions (subscriber_id, list_id, status, created_at) "
    "SELECT id, ?, 'active', ? FROM subscribers WHERE id > ? "
    "ON CONFLICT (subscriber_id, list_id) DO NOTHING"
)
_CONSENT_NEW = (
    "INSERT INTO consents (subscriber_id, list_id, kind, source, wording, client, at) "
    "SELECT id, ?, 'import', ?, '', '', ? FROM subscribers WHERE id > ?"
)
# PostgreSQL: one statement, the new rows' ids straight on to their memberships and
# consent records.
_NEW_PG = (
    "WITH new AS (INSERT INTO subscribers (email, name, status, attributes, timezone, "
    "created_at, updated_at) SELECT email, name, 'active', attributes::jsonb, timezone, ?, ? "
    "FROM import_stage ORDER BY line ON CONFLICT (email) DO NOTHING RETURNING id), "
    "joined AS (INSERT INTO subscriptions (subscriber_id, list_id, status, "
    "created_at) SELECT id, ?, 'active', ? FROM new "
    "ON CONFLICT (subscriber_id, list_id) DO NOTHING RETURNING subscriber_id, created_at), "
    "consented AS (INSERT INTO consents (subscriber_id, list_id, kind, source, wording, "
    "client, at) SELECT subscriber_id, ?, 'import', ?, '', '', created_at FROM joined) "
    "SELECT (SELECT count(*) FROM new), (SELECT count(*) FROM joined)"
)
_INSERT_SUBSCRIPTIONS = (
    "INSERT INTO subscriptions (subscriber_id, list_id, status, created_at) VALUES (?) "
    "ON CONFLICT (subscriber_id, list_id) DO NOTHING"
)
_INSERT_CONSENTS = (
    "INSERT INTO consents (subscriber_id, list_id, kind, source, wording, client, at) VALUES (?)"
)
# An erased address's marker sorts in this range of the suppressions' unique index.
_ANY_ERASED = "SELECT 1 FROM suppressions WHERE email >= ? AND email < ? LIMIT 1"


def _erased_under(sql: _Sql, key: bytes, emails: list[str]) -> int:
    """Staged rows whose address was erased with ``key`` (an earlier signing key): out."""
    found: list[str] = []
    by_marker = {marker(key, email): email for email in emails}
    wanted = list(by_marker)
    for start in range(0, len(wanted), 1000):
        part = wanted[start : start + 1000]
        holes = ", ".join("?" * len(part))
        query = f"SELECT email FROM suppressions WHERE email IN ({holes})"  # noqa: S608
        found += [by_marker[hit] for (hit,) in sql.run(query, tuple(part))]
    for start in range(0, len(found), 1000):
        part = found[start : start + 1000]
        holes = ", ".join("?" * len(part))
        sql.run(f"DELETE FROM import_stage WHERE email IN ({holes})", tuple(part))  # noqa: S608
    return len(found)


class _Sql:
    """Statements on one connection, in the driver's own parameter style."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.postgres = connection.dialect.name == "postgresql"

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        if self.postgres:
            sql = sql.replace("?", "%s")
        return self.connection.exec_driver_sql(sql, params)

    def many(self, template: str, rows: list[tuple[Any, ...]], types: str) -> None:
        """Insert tuples. SQLite: the driver's ``executemany`` of one prepared statement,
        a loop in C. PostgreSQL: one ``INSERT … SELECT FROM unnest(<an array per
        column>)`` (psycopg's executemany is a round trip per row). ``types`` are the
        PostgreSQL types of the columns, comma-separated."""
        if not rows:
            return
        if not self.postgres:
            group = "(" + ", ".join("?" * len(rows[0])) + ")"
            self.connection.exec_driver_sql(template.replace("(?)", group), rows)
            return
        kinds = types.split(",")
        arrays = ", ".join(f"%s::{'text' if k == 'jsonb' else k}[]" for k in kinds)
        names = [f"c{i}" for i in range(len(kinds))]
        picks = ", ".join(f"{n}::{k}" for n, k in zip(names, kinds, strict=True))
        select_sql = f"SELECT {picks} FROM unnest({arrays}) AS u({', '.join(names)})"  # noqa: S608
        columns = tuple(list(column) for column in zip(*rows, strict=True))
        self.connection.exec_driver_sql(template.replace("VALUES (?)", select_sql), columns)

    def stage(self, rows: list[tuple[Any, ...]]) -> None:
        """The chunk into ``import_stage``: PostgreSQL ``COPY``, SQLite one executemany."""
        if not self.postgres:
            raw_lite: Any = self.connection.connection.dbapi_connection
            if not raw_lite.in_transaction:
                # The write lock first: a transaction that reads and then writes would
                # fail outright (a stale snapshot) if a sign-up committed in between.
                self.connection.exec_driver_sql("BEGIN IMMEDIATE")
        self.run(_CREATE_STAGE["postgresql" if self.postgres else "sqlite"])
        self.run("DELETE FROM import_stage")
        if not self.postgres:
            # One JSON array of the rows, unpacked by SQLite in one statement: the driver
            # then lets go of the GIL for the whole insert (an executemany takes it back
            # for every row), so the reader thread parses the next chunk meanwhile.
            self.connection.exec_driver_sql(_STAGE_LITE, (orjson.dumps(rows).decode(),))
            return
        # The chunk is small and the table large, and while an import runs the table's
        # statistics lag far behind it: left to them, the planner hashes the whole table
        # for every chunk's join. Index probes per staged row are right at any size.
        self.run("SET LOCAL enable_hashjoin = off")
        self.run("SET LOCAL enable_mergejoin = off")
        raw: Any = self.connection.connection.dbapi_connection
        with (
            raw.cursor() as cursor,
            cursor.copy(
                "COPY import_stage (line, email, name, attributes, timezone, marker) FROM STDIN"
            ) as copy,
        ):
            for row in rows:
                copy.write_row(row)


def _write(
    connection: Connection,
    chunk: list[Row],
    list_id: int | None,
    floor_id: int,
    source: str,
    erasure_key: Keys | None,
    dry_run: bool,
) -> dict[str, Any]:
    counts: dict[str, Any] = {
        "added": 0,
        "updated": 0,
        "subscribed": 0,
        "kept_unsubscribed": 0,
        "suppressed": 0,
        "erased": 0,
        "errors": [],
    }
    sql = _Sql(connection)
    # Markers are a keyed hash per address: worked out only while someone was erased.
    keys = key_ring(erasure_key) if erasure_key is not None else ()
    markers = bool(keys) and (
        sql.run(_ANY_ERASED, (ERASED_PREFIX, ERASED_PREFIX[:-1] + ";")).first() is not None
    )
    staged: list[tuple[Any, ...]] = []
    seen: set[str] = set()
    for row in chunk:
        if row.email in seen:  # rows from elsewhere than iter_rows, which checks this
            counts["errors"].append((row.line, f"email: {row.email} appears earlier in the file"))
            continue
        seen.add(row.email)
        staged.append(
            (
                row.line,
                row.email,
                row.name,
                row.attributes if not sql.postgres else _json(row.attributes),
                row.timezone,
                marker(keys[0], row.email) if markers else None,
            )
        )
    sql.stage(staged)
    if markers:
        counts["erased"] = sql.run(
            "DELETE FROM import_stage WHERE marker IN (SELECT email FROM suppressions)"
        ).rowcount
        for earlier in keys[1:]:  # markers made before the keys rotated
            counts["erased"] += _erased_under(sql, earlier, [row[1] for row in staged])
    counts["suppressed"] = sql.run(
        "DELETE FROM import_stage WHERE email IN (SELECT email FROM suppressions)"
    ).rowcount

    changed: list[tuple[Any, ...]] = []
    candidates: list[int] = []  # existing subscribers who may join the list
    existing = 0
    for line, email, name, raw, zone, sid, status, old_raw, old_name, old_zone in sql.run(
        _EXISTING
    ):
        existing += 1
        if sid > floor_id:
            counts["errors"].append((line, f"email: {email} appears earlier in the file"))
            continue
        counts["updated"] += 1
        attributes = _loaded(raw)
        old = _loaded(old_raw) if old_raw is not None else {}
        merged = {**old, **attributes}
        new_name, new_zone = name or old_name, zone or old_zone
        if merged != old or new_name != old_name or new_zone != old_zone:
            changed.append((sid, new_name, _json(merged), new_zone))
        if status == SubscriberStatus.ACTIVE:
            candidates.append(sid)
        else:
            counts["kept_unsubscribed"] += 1  # left everything: no new membership
    members: dict[int, str] = {}
    if candidates and list_id is not None:
        members = dict(sql.run(_MEMBERS, (list_id,)).all())
    joining = [sid for sid in candidates if sid not in members]
    counts["kept_unsubscribed"] += sum(
        1 for s in members.values() if s == SubscriptionStatus.UNSUBSCRIBED
    )
    if dry_run:
        fresh = sql.run("SELECT count(*) FROM import_stage").scalar_one() - existing
        counts["added"] = fresh
        counts["subscribed"] = len(joining) + fresh
        sql.run("DELETE FROM import_stage")
        return counts

    assert list_id is not None
    # One moment per chunk, converted once as the column type would.
    now = _bound(connection, utcnow())
    if sql.postgres:
        added, joined = sql.run(_NEW_PG, (now, now, list_id, now, list_id, source[:200])).one()
    else:
        top = sql.run("SELECT coalesce(max(id), 0) FROM subscribers").scalar_one()
        added = sql.run(_INSERT_NEW, (now, now)).rowcount
        joined = sql.run(_JOIN_NEW, (list_id, now, top)).rowcount if added else 0
        if joined:
            sql.run(_CONSENT_NEW, (list_id, source[:200], now, top))
    counts["added"] = added
    counts["subscribed"] += joined
    if changed:
        _update(sql, changed, now)
    if joining:
        # ON CONFLICT: a concurrent sign-up to the same list keeps its own row.
        sql.many(
            _INSERT_SUBSCRIPTIONS,
            [(sid, list_id, SubscriptionStatus.ACTIVE.value, now) for sid in joining],
            types="int,int,text,timestamptz",
        )
        sql.many(
            _INSERT_CONSENTS,
            [(sid, list_id, "import", source[:200], "", "", now) for sid in joining],
            types="int,int,text,text,text,text,timestamptz",
        )
        counts["subscribed"] += len(joining)
    sql.run("DELETE FROM import_stage")
    return counts


def _update(sql: _Sql, changed: list[tuple[Any, ...]], now: Any) -> None:
    """Present subscribers' merged name, attributes and zone."""
    if not sql.postgres:
        sql.connection.exec_driver_sql(
            "UPDATE subscribers SET name = ?, attributes = ?, timezone = ?, updated_at = ? "
            "WHERE id = ?",
            [(name, attributes, zone, now, sid) for sid, name, attributes, zone in changed],
        )
        return
    ids, names, attributes, zones = (list(c) for c in zip(*changed, strict=True))
    sql.run(
        "UPDATE subscribers s SET name = u.name, attributes = u.attributes::jsonb, "
        "timezone = u.timezone, updated_at = ? "
        "FROM unnest(?::int[], ?::text[], ?::text[], ?::text[]) AS u(id, name, attributes, "
        "timezone) WHERE s.id = u.id",
        (now, ids, names, attributes, zones),
    )


def _json(value: dict[str, Any]) -> str:
    return orjson.dumps(value).decode() if value else "{}"


def _loaded(value: Any) -> dict[str, Any]:
    """A JSON column as read through the driver: text on SQLite, decoded on PostgreSQL."""
    loaded = orjson.loads(value) if isinstance(value, str | bytes) else value
    return loaded if isinstance(loaded, dict) else {}


def _bound(connection: Connection, value: datetime) -> Any:
    """``value`` as the driver takes it for a UTCDateTime column."""
    dialect = connection.dialect
    process = Subscriber.__table__.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
    return process(value) if process else value


def import_file(
    factory: sessionmaker[Session],
    path: Path,
    list_name: str,
    *,
    report: ImportReport | None = None,
    erasure_key: Keys | None = None,
    dry_run: bool = False,
    report_file: TextIO | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Stream a CSV file onto a list. Rejected rows (``line: reason``) also go to
    ``report_file`` as they are found; ``progress`` follows the bytes read."""
    report = report if report is not None else ImportReport()
    if report_file is not None:
        report.error_sink = report_file
    with _open(path, report) as text:
        size = path.stat().st_size
        binary = text.buffer

        def on_chunk(current: ImportReport) -> None:
            if progress is not None:
                progress(current, binary.tell(), size)

        rows = iter_rows(text, source=str(path), report=report)
        try:
            import_rows(
                factory,
                rows,
                list_name,
                report,
                source=f"import:{path.name}",
                erasure_key=erasure_key,
                dry_run=dry_run,
                progress=on_chunk,
            )
        finally:
            if report_file is not None and report.stopped_at_line is not None:
                report_file.write(
                    f"stopped: nothing from line {report.stopped_at_line} on was written\n"
                )
    return report


def import_csv(factory: sessionmaker[Session], path: Path, list_name: str) -> ImportReport:
    return import_file(factory, path, list_name)


__all__ = [
    "CHUNK_ROWS",
    "ImportFileError",
    "ImportReport",
    "Row",
    "import_csv",
    "import_file",
    "import_rows",
    "iter_rows",
    "parse_rows",
    "read_rows",
]
