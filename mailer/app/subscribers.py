"""Subscribers for operators: import a CSV onto a list, look one up.

The import itself is ``subscribers.importer``'s (streamed, bad rows reported by line and
skipped, chunks committed as they go, nobody who left re-subscribed); here it gains its
audit entry once it is over (or stopped). Exports stream ``subscribers.exporter``'s CSV.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import and_, delete, exists, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from mailer.accounts.models import Role
from mailer.app import audit
from mailer.app.actors import Actor
from mailer.app.errors import Conflict, Invalid, NotFound
from mailer.bounces.reasons import reason_label
from mailer.config import ConfigError
from mailer.db.base import utcnow
from mailer.db.models import Delivery, Edition, Event
from mailer.db.session import transaction
from mailer.runtime import Runtime
from mailer.schedule.slots import ScheduleError, parse_timezone
from subscribers import erased, erasure, exporter, importer, personal_data
from subscribers.addresses import InvalidAddress, normalize_email
from subscribers.importer import ImportFileError, ImportReport, Progress, import_rows
from subscribers.models import (
    Consent,
    MailingList,
    Segment,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
)
from subscribers.segments import SegmentRuleError, compile_rule, contains_text

__all__ = [
    "Delivered",
    "Happened",
    "Membership",
    "SubscriberDetail",
    "SubscriberSummary",
    "add_subscriber",
    "edit_subscriber",
    "erase_subscriber",
    "export_csv",
    "export_subscriber_data",
    "get_subscriber",
    "import_file",
    "import_text",
    "remove_subscriber",
    "search_subscribers",
    "set_memberships",
    "show_subscriber",
    "suggest_addresses",
]

_MAX_LIST_NAME = 100


def _list_name(value: str) -> str:
    name = value.strip()
    if not name or len(name) > _MAX_LIST_NAME or not name.isprintable():
        raise Invalid(
            f"list {value!r}: give a name of 1 to {_MAX_LIST_NAME} printable characters",
            field="list",
        )
    return name


def _erasure_key(runtime: Runtime) -> tuple[bytes, ...] | None:
    """The keys erased addresses are hashed with (markers made before the keys rotated
    too); without one nobody can have been erased."""
    try:
        return runtime.settings.require_secret_keys()
    except ConfigError:
        return None


def _import(
    runtime: Runtime,
    actor: Actor,
    list_name: str,
    origin: str,
    dry_run: bool,
    run: Callable[[ImportReport], object],
) -> dict[str, Any]:
    """Run an import (chunks committed as they go, see ``subscribers.importer``) and audit
    it afterwards, also when it stopped part way: the entry says from which line."""
    report = ImportReport(dry_run=dry_run)
    try:
        run(report)
    except ImportFileError as exc:
        raise Invalid(str(exc), field="file") from exc
    except SQLAlchemyError as exc:
        _audit_import(runtime, actor, list_name, origin, report)
        raise Conflict(
            f"import stopped at line {report.stopped_at_line}: {exc.__class__.__name__}; the "
            "rows before it were written, nothing from it on; run it again to finish"
        ) from exc
    if not dry_run:
        _audit_import(runtime, actor, list_name, origin, report)
    return report.as_dict()


def _audit_import(
    runtime: Runtime, actor: Actor, list_name: str, origin: str, report: ImportReport
) -> None:
    summary = report.as_dict()
    after = {k: summary[k] for k in ("added", "updated", "subscribed", "kept_unsubscribed")}
    after["rejected"] = summary["rejected"]
    # Rarer facts only when they happened, so the usual entry stays short.
    after |= {k: summary[k] for k in ("suppressed", "erased", "stopped_at_line") if summary[k]}
    with transaction(runtime.sessions) as session:
        audit.record(
            session, actor, "subscribers.import", "list", list_name, after=after, note=origin
        )


def import_file(
    runtime: Runtime,
    actor: Actor,
    path: Path,
    list_name: str,
    *,
    dry_run: bool = False,
    report_file: TextIO | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Stream a CSV file onto a list, made if need be (see ``subscribers.importer`` for the
    columns, encodings and delimiters understood). Returns the report's ``as_dict()``:
    added, updated, subscribed, kept_unsubscribed, suppressed, erased, rejected, errors
    (line, reason; the first 1000, all of them also to ``report_file``), stopped_at_line.
    ``dry_run`` checks everything and writes nothing."""
    actor.require(Role.ADMIN)
    name = _list_name(list_name)
    key = _erasure_key(runtime)
    return _import(
        runtime,
        actor,
        name,
        str(path),
        dry_run,
        lambda report: importer.import_file(
            runtime.sessions,
            path,
            name,
            report=report,
            erasure_key=key,
            dry_run=dry_run,
            report_file=report_file,
            progress=progress,
        ),
    )


def import_text(
    runtime: Runtime,
    actor: Actor,
    text: str,
    list_name: str,
    *,
    origin: str = "upload",
    dry_run: bool = False,
) -> dict[str, Any]:
    """``import_file`` for CSV text already read (an upload); ``origin`` names it in
    the rejected rows' reasons, the consent records and the audit log."""
    actor.require(Role.ADMIN)
    name = _list_name(list_name)
    key = _erasure_key(runtime)

    def run(report: ImportReport) -> object:
        lines = io.StringIO(text.removeprefix("\ufeff"), newline="")
        rows = importer.iter_rows(lines, source=origin, report=report)
        return import_rows(
            runtime.sessions,
            rows,
            name,
            report,
            source=f"import:{origin}",
            erasure_key=key,
            dry_run=dry_run,
        )

    return _import(runtime, actor, name, origin, dry_run, run)


def export_csv(
    runtime: Runtime, actor: Actor, *, list_name: str | None = None, segment: str | None = None
) -> Iterator[str]:
    """CSV text of everyone, a list's members or a saved segment's matches, with their
    statuses, as it is read (keyset pages; see ``subscribers.exporter``). The list or
    segment is looked up, and the export audited, before the first line."""
    actor.require(Role.ADMIN)
    if list_name is not None and segment is not None:
        raise Invalid("export a list or a segment, not both", field="segment")
    with transaction(runtime.sessions) as session:
        list_id = rule = None
        if list_name is not None:
            list_id = session.scalar(select(MailingList.id).where(MailingList.name == list_name))
            if list_id is None:
                raise NotFound(f"no list {list_name!r}")
        if segment is not None:
            found = session.scalar(select(Segment).where(Segment.name == segment))
            if found is None:
                raise NotFound(f"no segment {segment!r}")
            rule = found.rule
            try:
                compile_rule(rule)
            except SegmentRuleError as exc:
                raise Invalid(str(exc), field="segment") from exc
        target = ("list", list_name) if list_name else ("segment", segment or "everyone")
        audit.record(session, actor, "subscribers.export", target[0], target[1])
    return exporter.export_rows(runtime.engine, list_id=list_id, rule=rule)


def show_subscriber(runtime: Runtime, actor: Actor, email: str) -> dict[str, Any]:
    """A subscriber's status, lists and attributes, and the address's suppression:
    ``email``, ``subscriber`` (None if only suppressed), ``suppression`` (or None)."""
    actor.require(Role.ADMIN)
    try:
        address = normalize_email(email)
    except InvalidAddress as exc:
        raise Invalid(str(exc), field="email") from exc
    with runtime.sessions() as session:
        subscriber = session.scalar(select(Subscriber).where(Subscriber.email == address))
        suppression = session.scalar(select(Suppression).where(Suppression.email == address))
        if subscriber is None and suppression is None:
            raise NotFound(f"no subscriber {address}")
        data: dict[str, Any] = {"email": address, "subscriber": None, "suppression": None}
        if subscriber is not None:
            data["subscriber"] = {
                "id": subscriber.id,
                "name": subscriber.name,
                "status": subscriber.status,
                "attributes": subscriber.attributes,
                "timezone": subscriber.timezone,
                "created_at": subscriber.created_at.isoformat(),
                "lists": [
                    {
                        "name": s.mailing_list.name,
                        "status": s.status,
                        "unsubscribed_at": s.unsubscribed_at.isoformat()
                        if s.unsubscribed_at
                        else None,
                    }
                    for s in sorted(subscriber.subscriptions, key=lambda s: s.list_id)
                ],
            }
        if suppression is not None:
            data["suppression"] = {
                "reason": suppression.reason,
                "source": suppression.source,
                "detail": suppression.detail,
                "since": suppression.created_at.isoformat(),
            }
    return data


def suggest_addresses(runtime: Runtime, actor: Actor, prefix: str, *, limit: int = 8) -> list[str]:
    """Addresses that begin with ``prefix`` (at least two characters), for an editor who
    looks for a reader to preview an edition as.

    A range scan of the address index from ``prefix`` on, filtered here: LIKE would only
    use the index under the C collation, and this stays quick at millions of subscribers.
    """
    actor.require(Role.EDITOR)
    start = prefix.strip().lower()
    if len(start) < 2:
        return []
    limit = max(1, min(limit, 50))
    with runtime.sessions() as session:
        found = session.scalars(
            select(Subscriber.email)
            .where(Subscriber.email >= start)
            .order_by(Subscriber.email)
            .limit(limit * 5)
        )
        return [email for email in found if email.startswith(start)][:limit]


# --- Operators: find, look at, add, change, remove and erase one subscriber ---------------

MAX_PAGE = 200
MIN_NAME_SEARCH = 3  # characters of a name substring search
RECENT = 20  # deliveries and events shown with a subscriber
_MAX_NAME = 200  # subscribers.name
_MEMBERSHIP_STATES = (SubscriptionStatus.ACTIVE, SubscriptionStatus.UNSUBSCRIBED)


@dataclass(frozen=True)
class SubscriberSummary:
    id: int
    email: str
    name: str | None
    status: str
    created_at: datetime
    lists: tuple[str, ...]  # the lists they are actively on

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"created_at": self.created_at.isoformat(), "lists": list(self.lists)}


@dataclass(frozen=True)
class Membership:
    list: str
    status: str
    since: datetime
    unsubscribed_at: datetime | None


@dataclass(frozen=True)
class Delivered:
    edition_id: int
    subject: str | None
    status: str
    sent_at: datetime | None
    opened_at: datetime | None
    clicked_at: datetime | None
    bounce: str | None


@dataclass(frozen=True)
class Happened:
    kind: str
    at: datetime
    source: str
    detail: str | None


@dataclass(frozen=True)
class SubscriberDetail:
    id: int
    email: str
    name: str | None
    status: str
    attributes: dict[str, Any]
    timezone: str | None
    paused_until: datetime | None
    created_at: datetime
    updated_at: datetime
    memberships: tuple[Membership, ...]
    consents: tuple[dict[str, Any], ...]
    suppression: dict[str, Any] | None
    deliveries: tuple[Delivered, ...]  # the most recent first
    events: tuple[Happened, ...]  # the most recent first

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = _jsonable(asdict(self))
        return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _address(email: str) -> str:
    try:
        return normalize_email(email)
    except InvalidAddress as exc:
        raise Invalid(str(exc), field="email") from exc


def _prefix_range(prefix: str) -> tuple[str, str]:
    """Bounds of a range scan of the address index that holds every address starting with
    ``prefix``: LIKE 'x%' alone uses that index only under the C collation."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def search_subscribers(
    runtime: Runtime,
    actor: Actor,
    *,
    query: str | None = None,
    list_name: str | None = None,
    status: str | None = None,
    limit: int = 50,
    after_id: int | None = None,
) -> list[SubscriberSummary]:
    """A page of subscribers in id order after ``after_id``. ``query`` is an address prefix
    or, when no address starts with it (and it has no ``@``), a name substring (of at
    least ``MIN_NAME_SEARCH`` characters when all ASCII), the case of letters aside (on
    SQLite, of ASCII letters only); ``status`` is the status on ``list_name`` when a list
    is given, the subscriber's own status otherwise.

    Pages are keyset pages (``after_id`` is the last id of the previous one) and nothing
    counts the whole audience, so a page costs the same at a million subscribers.
    """
    actor.require(Role.ADMIN)
    limit = max(1, min(limit, MAX_PAGE))
    select_rows = select(Subscriber).order_by(Subscriber.id).limit(limit)
    if after_id is not None:
        select_rows = select_rows.where(Subscriber.id > after_id)
    text = (query or "").strip()
    by_address = None
    if text:
        low, high = _prefix_range(text.lower())
        by_address = and_(
            Subscriber.email >= low,
            Subscriber.email < high,
            Subscriber.email.startswith(text.lower(), autoescape=True),
        )
    with runtime.sessions() as session:
        if by_address is not None:
            # An address prefix if any address has it (one probe of the address index),
            # else a name substring: that needs a scan of the table, so it is only done
            # when the text cannot be the start of an address. Decided on the query, not
            # the page, so that every page of one search means the same.
            is_prefix = "@" in text or (
                session.scalar(select(Subscriber.id).where(by_address).limit(1)) is not None
            )
            if not is_prefix and len(text) < MIN_NAME_SEARCH and text.isascii():
                # Shorter text has no trigram for PostgreSQL's index to look up: every
                # name would be read, for a search nobody can page through anyway. Not
                # so in scripts whose names are one or two characters (王五, 김민): those
                # are searched at any length, at the cost of that read.
                raise Invalid(
                    f"no address starts with {text!r}, and a name search needs at least "
                    f"{MIN_NAME_SEARCH} characters",
                    field="q",
                )
            select_rows = select_rows.where(
                by_address if is_prefix else contains_text(Subscriber.name, text)
            )
        if list_name:
            list_id = session.scalar(select(MailingList.id).where(MailingList.name == list_name))
            if list_id is None:
                raise NotFound(f"no list {list_name!r}")
            on_list = select(Subscription.subscriber_id).where(
                Subscription.list_id == list_id, Subscription.subscriber_id == Subscriber.id
            )
            if after_id is not None:
                # Said again of the subscriptions: PostgreSQL merges the two in id order
                # and would otherwise read the memberships from the first id on.
                on_list = on_list.where(Subscription.subscriber_id > after_id)
            if status:
                on_list = on_list.where(Subscription.status == _status(status, list_status=True))
            select_rows = select_rows.where(exists(on_list))
        elif status:
            select_rows = select_rows.where(Subscriber.status == _status(status, list_status=False))
        found = list(session.scalars(select_rows))
        lists: dict[int, list[str]] = {s.id: [] for s in found}
        if found:
            for subscriber_id, name in session.execute(
                select(Subscription.subscriber_id, MailingList.name)
                .join(MailingList, MailingList.id == Subscription.list_id)
                .where(
                    Subscription.subscriber_id.in_(list(lists)),
                    Subscription.status == SubscriptionStatus.ACTIVE,
                )
                .order_by(MailingList.name)
            ):
                lists[subscriber_id].append(name)
        return [
            SubscriberSummary(s.id, s.email, s.name, s.status, s.created_at, tuple(lists[s.id]))
            for s in found
        ]


def _status(value: str, *, list_status: bool) -> str:
    allowed = [str(s) for s in (SubscriptionStatus if list_status else SubscriberStatus)]
    if value not in allowed:
        raise Invalid(f"status {value!r}: one of {', '.join(allowed)}", field="status")
    return value


def _load(session: Session, subscriber: int | str, *, lock: bool = False) -> Subscriber:
    """By id or by address."""
    if isinstance(subscriber, int) or subscriber.isdigit():
        found = session.get(Subscriber, int(subscriber), with_for_update=lock)
    else:
        query = select(Subscriber).where(Subscriber.email == _address(subscriber))
        found = session.scalar(query.with_for_update() if lock else query)
    if found is None:
        raise NotFound(f"no subscriber {subscriber}")
    return found


def _snapshot(session: Session, subscriber: Subscriber) -> dict[str, Any]:
    return {
        "email": subscriber.email,
        "name": subscriber.name,
        "status": subscriber.status,
        "attributes": dict(subscriber.attributes or {}),
        "timezone": subscriber.timezone,
        "lists": {
            name: status
            for name, status in session.execute(
                select(MailingList.name, Subscription.status)
                .join(Subscription, Subscription.list_id == MailingList.id)
                .where(Subscription.subscriber_id == subscriber.id)
                .order_by(MailingList.name)
            )
        },
    }


def get_subscriber(runtime: Runtime, actor: Actor, subscriber: int | str) -> SubscriberDetail:
    """One subscriber (by id or address) with lists, consents, suppression and history."""
    actor.require(Role.ADMIN)
    with runtime.sessions() as session:
        found = _load(session, subscriber)
        memberships = tuple(
            Membership(name, s.status, s.created_at, s.unsubscribed_at)
            for s, name in session.execute(
                select(Subscription, MailingList.name)
                .join(MailingList, MailingList.id == Subscription.list_id)
                .where(Subscription.subscriber_id == found.id)
                .order_by(MailingList.name)
            )
        )
        consents = tuple(
            {"kind": c.kind, "list": name, "source": c.source, "wording": c.wording, "at": c.at}
            for c, name in session.execute(
                select(Consent, MailingList.name)
                .outerjoin(MailingList, MailingList.id == Consent.list_id)
                .where(Consent.subscriber_id == found.id)
                .order_by(Consent.at.desc(), Consent.id.desc())
                .limit(RECENT)
            )
        )
        suppression = session.scalar(select(Suppression).where(Suppression.email == found.email))
        # The ledger has no index on subscriber_id alone; (edition_id, subscriber_id) is
        # unique, so probing it once per recent edition stays quick on a large ledger.
        recent_editions = select(Edition.id).order_by(Edition.id.desc()).limit(RECENT * 5)
        deliveries = tuple(
            Delivered(
                d.edition_id,
                subject,
                d.status,
                d.finished_at,
                d.opened_at,
                d.clicked_at,
                d.bounce_class,
            )
            for d, subject in session.execute(
                select(Delivery, Edition.subject)
                .outerjoin(Edition, Edition.id == Delivery.edition_id)
                .where(
                    Delivery.subscriber_id == found.id,
                    Delivery.edition_id.in_(recent_editions.scalar_subquery()),
                )
                .order_by(Delivery.edition_id.desc())
                .limit(RECENT)
            )
        )
        events = tuple(
            Happened(e.kind, e.occurred_at, e.source, e.detail)
            for e in session.scalars(
                select(Event)
                .where(Event.email == found.email)
                .order_by(Event.occurred_at.desc(), Event.id.desc())
                .limit(RECENT)
            )
        )
        return SubscriberDetail(
            id=found.id,
            email=found.email,
            name=found.name,
            status=found.status,
            attributes=dict(found.attributes or {}),
            timezone=found.timezone,
            paused_until=found.paused_until,
            created_at=found.created_at,
            updated_at=found.updated_at,
            memberships=memberships,
            consents=consents,
            suppression=None
            if suppression is None
            else {
                "reason": suppression.reason,
                "bounce_reason": reason_label(suppression.bounce_reason),
                "source": suppression.source,
                "detail": suppression.detail,
                "since": suppression.created_at,
            },
            deliveries=deliveries,
            events=events,
        )


def _name(value: str | None) -> str | None:
    if value is None:
        return None
    cleaned = " ".join(value.split())
    if len(cleaned) > _MAX_NAME:
        raise Invalid(f"name is {len(cleaned)} characters; at most {_MAX_NAME}", field="name")
    return cleaned or None


def _timezone(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    try:
        return parse_timezone(value).key
    except ScheduleError as exc:
        raise Invalid(str(exc), field="timezone") from exc


def _attributes(value: Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and k for k in value):
        raise Invalid("attributes: an object with named keys", field="attributes")
    return dict(value)


def _lists_named(session: Session, names: Iterable[str]) -> list[MailingList]:
    wanted = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    found = {
        m.name: m for m in session.scalars(select(MailingList).where(MailingList.name.in_(wanted)))
    }
    missing = [n for n in wanted if n not in found]
    if missing:
        raise NotFound(f"no list {', '.join(repr(n) for n in missing)}")
    return [found[n] for n in wanted]


def _erased_key(runtime: Runtime) -> tuple[bytes, ...] | None:
    """The keys of erasure markers, or None when no secret key is configured (then no
    address can have been erased through this installation)."""
    settings = runtime.settings
    return settings.require_secret_keys() if settings.secret_key or settings.secret_keys else None


def add_subscriber(
    runtime: Runtime,
    actor: Actor,
    email: str,
    *,
    name: str | None = None,
    lists: Sequence[str] = (),
    attributes: Mapping[str, Any] | None = None,
    timezone: str | None = None,
    override_suppression: bool = False,
) -> SubscriberDetail:
    """Add a subscriber by hand: active at once on ``lists``, with a consent record of kind
    "operator" per list. A suppressed or erased address is refused unless
    ``override_suppression`` (the operator has their fresh consent); an erased one then
    loses its marker, a suppression stays until it is lifted."""
    actor.require(Role.ADMIN)
    address = _address(email)
    clean_name = _name(name)
    zone = _timezone(timezone)
    attrs = _attributes(attributes)
    key = _erased_key(runtime)
    with transaction(runtime.sessions) as session:
        if session.scalar(select(Subscriber.id).where(Subscriber.email == address)) is not None:
            raise Conflict(f"{address} is already a subscriber")
        suppressed = session.scalar(select(Suppression).where(Suppression.email == address))
        was_erased = key is not None and erased.was_erased(session, key, address)
        if (suppressed is not None or was_erased) and not override_suppression:
            why = (
                "asked to be erased"
                if suppressed is None
                else f"is suppressed ({suppressed.reason})"
            )
            raise Conflict(
                f"{address} {why}: add them only with their fresh consent (override the check)"
            )
        if was_erased and key is not None:
            erased.forget_erasure(session, key, address)
        mailing_lists = _lists_named(session, lists)
        subscriber = Subscriber(
            email=address,
            name=clean_name,
            status=SubscriberStatus.ACTIVE,
            attributes=attrs,
            timezone=zone,
        )
        session.add(subscriber)
        session.flush()
        for mailing_list in mailing_lists:
            session.add(Subscription(subscriber_id=subscriber.id, list_id=mailing_list.id))
            session.add(
                Consent(
                    subscriber_id=subscriber.id,
                    list_id=mailing_list.id,
                    kind="operator",
                    source=actor.label[:200],
                )
            )
        session.flush()
        audit.record(
            session,
            actor,
            "subscribers.add",
            "subscriber",
            subscriber.id,
            after=_snapshot(session, subscriber),
            note="suppression overridden" if suppressed is not None or was_erased else None,
        )
        subscriber_id = subscriber.id
    return get_subscriber(runtime, actor, subscriber_id)


def edit_subscriber(
    runtime: Runtime,
    actor: Actor,
    subscriber: int | str,
    *,
    email: str | None = None,
    name: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    timezone: str | None = None,
    status: str | None = None,
) -> SubscriberDetail:
    """Change what is given (``None`` leaves it; ``name=""`` and ``timezone=""`` clear it;
    ``attributes`` replaces them all)."""
    actor.require(Role.ADMIN)
    new_address = _address(email) if email is not None else None
    new_status = _status(status, list_status=False) if status is not None else None
    with transaction(runtime.sessions) as session:
        found = _load(session, subscriber, lock=True)
        before = _snapshot(session, found)
        if new_address is not None and new_address != found.email:
            taken = session.scalar(select(Subscriber.id).where(Subscriber.email == new_address))
            if taken is not None:
                raise Conflict(f"{new_address} is already a subscriber")
            found.email = new_address
        if name is not None:
            found.name = _name(name)
        if attributes is not None:
            found.attributes = _attributes(attributes)
        if timezone is not None:
            found.timezone = _timezone(timezone)
        if new_status is not None:
            found.status = new_status
        session.flush()
        after = _snapshot(session, found)
        if after != before:
            audit.record(
                session,
                actor,
                "subscribers.edit",
                "subscriber",
                found.id,
                before=before,
                after=after,
            )
        subscriber_id = found.id
    return get_subscriber(runtime, actor, subscriber_id)


def set_memberships(
    runtime: Runtime, actor: Actor, subscriber: int | str, memberships: Mapping[str, str]
) -> SubscriberDetail:
    """Put the subscriber on (``active``) or take them off (``unsubscribed``) each named
    list; lists not named are left as they are. Each change is a consent record."""
    actor.require(Role.ADMIN)
    for list_name, state in memberships.items():
        if state not in _MEMBERSHIP_STATES:
            raise Invalid(
                f"list {list_name!r}: status is active or unsubscribed, not {state!r}",
                field="status",
            )
    now = utcnow()
    with transaction(runtime.sessions) as session:
        found = _load(session, subscriber, lock=True)
        before = _snapshot(session, found)
        for mailing_list in _lists_named(session, memberships):
            state = memberships[mailing_list.name]
            row = session.get(Subscription, (found.id, mailing_list.id))
            if row is not None and row.status == state:
                continue
            if row is None:
                row = Subscription(subscriber_id=found.id, list_id=mailing_list.id)
                session.add(row)
            row.status = state
            row.unsubscribed_at = now if state == SubscriptionStatus.UNSUBSCRIBED else None
            session.add(
                Consent(
                    subscriber_id=found.id,
                    list_id=mailing_list.id,
                    kind="operator" if state == SubscriptionStatus.ACTIVE else "unsubscribe",
                    source=actor.label[:200],
                )
            )
        session.flush()
        after = _snapshot(session, found)
        if after != before:
            audit.record(
                session,
                actor,
                "subscribers.memberships",
                "subscriber",
                found.id,
                before={"lists": before["lists"]},
                after={"lists": after["lists"]},
            )
        subscriber_id = found.id
    return get_subscriber(runtime, actor, subscriber_id)


def remove_subscriber(runtime: Runtime, actor: Actor, subscriber: int | str) -> int:
    """Delete the subscriber (subscriptions and consents go with them; the ledger keeps
    its rows, which count editions already sent). Returns their id. Unlike erasure this
    keeps no marker: an import may add the address again."""
    actor.require(Role.ADMIN)
    with transaction(runtime.sessions) as session:
        found = _load(session, subscriber, lock=True)
        before = _snapshot(session, found)
        subscriber_id = found.id
        session.expunge(found)
        # Through SQL, so the database's ON DELETE CASCADE takes the dependent rows.
        session.execute(delete(Subscriber).where(Subscriber.id == subscriber_id))
        audit.record(
            session, actor, "subscribers.remove", "subscriber", subscriber_id, before=before
        )
    return subscriber_id


def erase_subscriber(runtime: Runtime, actor: Actor, subscriber: int | str) -> int:
    """Erase the subscriber (``subscribers.erasure``): their address stays nowhere in clear
    text, only a keyed hash as a suppression. The audit entry names them by id alone."""
    actor.require(Role.ADMIN)
    key = runtime.settings.require_secret_key()
    with transaction(runtime.sessions) as session:
        found = _load(session, subscriber, lock=True)
        subscriber_id = found.id
        erasure.erase(session, subscriber_id, key)
        audit.record(
            session,
            actor,
            "subscribers.erase",
            "subscriber",
            subscriber_id,
            before={"id": subscriber_id},
            after={"erased": True},
        )
    return subscriber_id


def export_subscriber_data(runtime: Runtime, actor: Actor, subscriber: int | str) -> dict[str, Any]:
    """Everything held about one subscriber (``subscribers.personal_data``), JSON-ready.
    Audited: reading someone's whole file is worth a trace."""
    actor.require(Role.ADMIN)
    with transaction(runtime.sessions) as session:
        found = _load(session, subscriber)
        data = personal_data.export(session, found.id)
        audit.record(session, actor, "subscribers.export_data", "subscriber", found.id)
    return data
