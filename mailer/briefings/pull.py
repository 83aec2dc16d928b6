"""Pull every source: folders and feeds into briefings, failures recorded against their items.

Nothing one source holds can stop the pull: an item that cannot be parsed or stored is
that item's recorded error, a source that cannot be read (or breaks in a way nobody
foresaw) is that source's ``last_error``, and the next source is pulled all the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mailer.briefings import feeds
from mailer.briefings.folder import pull_folder
from mailer.briefings.parser import DEFAULT_BOILERPLATE, BriefingError
from mailer.briefings.report import PullReport
from mailer.briefings.store import store_briefing
from mailer.db.base import utcnow
from mailer.db.models import BriefingStatus, PullError, Source, SourceKind
from mailer.db.session import transaction

log = logging.getLogger(__name__)

OnItem = Callable[[], None]


def pull_sources(
    factory: sessionmaker[Session],
    sources: Sequence[Source],
    client: httpx.Client,
    *,
    boilerplate: Sequence[str] = DEFAULT_BOILERPLATE,
    on_item: OnItem | None = None,
    parse_seconds: float | None = feeds.DEFAULT_PARSE_SECONDS,
) -> list[PullReport]:
    """Pull each source in turn; ``parse_seconds`` is each feed's parse budget."""
    reports = []
    for source in sources:
        try:
            report = pull_source(
                factory,
                source,
                client,
                boilerplate=boilerplate,
                on_item=on_item,
                parse_seconds=parse_seconds,
            )
        except Exception as exc:
            log.exception("source.pull_failed", extra={"source": source.name})
            report = PullReport(source=source.name)
            report.fail(source.location, f"{source.location}: pull failed: {_described(exc)}")
        try:
            _record(factory, source.id, report)
        except SQLAlchemyError:
            # The outcome could not be written (the database is away): the report still
            # says it, and the next source is pulled.
            log.exception("source.record_failed", extra={"source": source.name})
        log.info("source.pulled", extra={"source": source.name, **report.as_dict()})
        reports.append(report)
    return reports


def pull_source(
    factory: sessionmaker[Session],
    source: Source,
    client: httpx.Client,
    *,
    boilerplate: Sequence[str] = DEFAULT_BOILERPLATE,
    on_item: OnItem | None = None,
    parse_seconds: float | None = feeds.DEFAULT_PARSE_SECONDS,
) -> PullReport:
    if source.kind == SourceKind.FOLDER:
        try:
            return pull_folder(
                factory,
                Path(source.location),
                source_id=source.id,
                mark_ready=source.mark_ready,
                name=source.name,
                boilerplate=boilerplate,
                on_item=on_item,
            )
        except OSError as exc:  # gone, not a folder, or not a name this system takes
            report = PullReport(source=source.name)
            if isinstance(exc, NotADirectoryError):
                report.fail(source.location, str(exc))
            else:
                reason = exc.strerror or type(exc).__name__
                report.fail(source.location, f"{source.location}: cannot read folder: {reason}")
            return report
    if source.kind == SourceKind.FEED:
        return pull_feed(
            factory,
            source,
            client,
            boilerplate=boilerplate,
            on_item=on_item,
            parse_seconds=parse_seconds,
        )
    report = PullReport(source=source.name)
    report.fail(source.location, f"source kind {source.kind!r} is not pulled (it is pushed)")
    return report


def pull_feed(
    factory: sessionmaker[Session],
    source: Source,
    client: httpx.Client,
    *,
    boilerplate: Sequence[str] = DEFAULT_BOILERPLATE,
    on_item: OnItem | None = None,
    parse_seconds: float | None = feeds.DEFAULT_PARSE_SECONDS,
) -> PullReport:
    report = PullReport(source=source.name)
    try:
        fetched = feeds.fetch(
            client, source.location, etag=source.etag, last_modified=source.last_modified
        )
        if fetched.content is None:
            report.not_modified = True
            return report
        parsed_items = feeds.parse_feed(
            fetched.content,
            url=source.location,
            content_type=fetched.content_type,
            boilerplate=boilerplate,
            max_seconds=parse_seconds,
        )
    except feeds.FeedError as exc:
        report.fail(source.location, str(exc))
        return report
    status = BriefingStatus.READY if source.mark_ready else BriefingStatus.DRAFT
    for item in parsed_items:
        if isinstance(item, BriefingError):
            report.fail(item.source, str(item))
        else:
            try:
                with transaction(factory) as session:
                    _, outcome = store_briefing(
                        session,
                        f"feed:{source.name}:{item.guid}",
                        item.parsed,
                        source_id=source.id,
                        author=item.author,
                        initial_status=status,
                    )
            except Exception as exc:
                # This item only: the transaction rolled back, the rest of the feed goes on.
                log.warning("feed.item_not_stored", extra={"item": item.guid}, exc_info=True)
                where = item.parsed.source
                report.fail(where, f"{where}: cannot store: {_described(exc)}")
                continue
            report.counts[outcome] += 1
        if on_item is not None:
            on_item()
    # Validators are kept only once every item was handled, so a feed that broke
    # half-way is fetched in full next time.
    with transaction(factory) as session:
        stored = session.get(Source, source.id)
        if stored is not None:
            stored.etag, stored.last_modified = fetched.etag, fetched.last_modified
    return report


def _described(exc: Exception) -> str:
    """An unexpected error in a line: its type and the start of its message."""
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _record(factory: sessionmaker[Session], source_id: int, report: PullReport) -> None:
    with transaction(factory) as session:
        source = session.get(Source, source_id)
        if source is None:
            return
        source.last_pulled_at = utcnow()
        source.last_outcome = report.summary()[:200]
        source.last_error = report.errors[0].message if report.errors else None
        for error in report.errors:
            session.add(
                PullError(source_id=source_id, item=error.item[:2000], message=error.message)
            )
