"""The folder source: every ``.txt`` and ``.md`` file in a directory is a briefing.

Incremental: a file whose content hash matches what is stored is not parsed
again, so re-pulling an unchanged folder costs a read and a hash per file.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailer.briefings.parser import (
    DEFAULT_BOILERPLATE,
    MARKDOWN_SUFFIXES,
    BriefingError,
    parse_file,
)
from mailer.briefings.report import PullReport
from mailer.briefings.store import StoreOutcome, store_briefing
from mailer.db.models import Briefing, BriefingStatus
from mailer.db.session import transaction

log = logging.getLogger(__name__)

BRIEFING_SUFFIXES = frozenset({".txt"}) | MARKDOWN_SUFFIXES
MAX_FILE_BYTES = 1_048_576


def briefing_files(folder: Path) -> Iterator[Path]:
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a directory")
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in BRIEFING_SUFFIXES:
            yield path


def source_key_for(path: Path) -> str:
    return f"folder:{path.resolve()}"


def _known_hashes(factory: sessionmaker[Session], folder: Path) -> dict[str, str]:
    prefix = f"folder:{folder.resolve()}/"
    with factory() as session:
        rows = session.execute(
            select(Briefing.source_key, Briefing.content_hash).where(
                Briefing.source_key.startswith(prefix, autoescape=True)
            )
        )
        return {key: digest for key, digest in rows}


def pull_folder(
    factory: sessionmaker[Session],
    folder: Path,
    *,
    source_id: int | None = None,
    mark_ready: bool = True,
    name: str | None = None,
    boilerplate: Sequence[str] = DEFAULT_BOILERPLATE,
    on_item: Callable[[], None] | None = None,
) -> PullReport:
    """Parse and store each new or changed file in its own transaction.

    A bad file is reported (its path and what is wrong) and leaves nothing
    behind; the files around it are still stored, whatever went wrong with it.
    """
    report = PullReport(source=name or str(folder))
    known = _known_hashes(factory, folder)
    status = BriefingStatus.READY if mark_ready else BriefingStatus.DRAFT
    for path in briefing_files(folder):
        key = source_key_for(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            report.fail(str(path), f"{path}: cannot read file: {exc.strerror}")
            continue
        if known.get(key) == hashlib.sha256(data).hexdigest():
            report.counts[StoreOutcome.UNCHANGED] += 1
        else:
            _store_file(factory, path, key, source_id, status, boilerplate, report)
        if on_item is not None:
            on_item()
    return report


def _store_file(
    factory: sessionmaker[Session],
    path: Path,
    key: str,
    source_id: int | None,
    status: BriefingStatus,
    boilerplate: Sequence[str],
    report: PullReport,
) -> None:
    try:
        parsed = parse_file(path, max_bytes=MAX_FILE_BYTES, boilerplate=boilerplate)
        with transaction(factory) as session:
            _, outcome = store_briefing(
                session, key, parsed, source_id=source_id, initial_status=status
            )
    except BriefingError as exc:
        report.fail(str(path), str(exc))
        return
    except Exception as exc:
        # A parser bug or a database refusal costs this file only; the others go on.
        log.warning("folder.file_failed", extra={"path": str(path)}, exc_info=True)
        report.fail(str(path), f"{path}: cannot ingest: {type(exc).__name__}: {str(exc)[:300]}")
        return
    report.counts[outcome] += 1
