"""Subscribers for operators: import a CSV onto a list, look one up.

The import itself is ``subscribers.importer``'s (bad rows reported by line and skipped,
the rest in one transaction, nobody who left re-subscribed); here it gains its audit
entry, in the same transaction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailer.accounts.models import Role
from mailer.app import audit
from mailer.app.actors import Actor
from mailer.app.errors import Invalid, NotFound
from mailer.runtime import Runtime
from subscribers.addresses import InvalidAddress, normalize_email
from subscribers.importer import (
    ImportFileError,
    ImportReport,
    Row,
    import_rows,
    parse_rows,
    read_rows,
)
from subscribers.models import Subscriber, Suppression

__all__ = ["import_file", "import_text", "show_subscriber", "suggest_addresses"]

_MAX_LIST_NAME = 100


def _list_name(value: str) -> str:
    name = value.strip()
    if not name or len(name) > _MAX_LIST_NAME or not name.isprintable():
        raise Invalid(
            f"list {value!r}: give a name of 1 to {_MAX_LIST_NAME} printable characters",
            field="list",
        )
    return name


def _import(
    runtime: Runtime,
    actor: Actor,
    rows: list[Row],
    errors: list[tuple[int, str]],
    list_name: str,
    origin: str,
) -> dict[str, Any]:
    report = ImportReport(errors=[(line, f"{origin}:{line}: {r}") for line, r in errors])
    with runtime.engine.connect() as connection, connection.begin():
        # The importer opens its own transaction; bound to this connection it joins ours
        # (its commit leaves ours open), so the rows and their audit entry land together.
        import_rows(sessionmaker(bind=connection), rows, list_name, report)
        with Session(bind=connection) as session:
            audit.record(
                session,
                actor,
                "subscribers.import",
                "list",
                list_name,
                after={k: v for k, v in report.as_dict().items() if k != "errors"}
                | {"rejected": len(report.errors)},
                note=origin,
            )
            session.flush()
    return report.as_dict()


def import_file(runtime: Runtime, actor: Actor, path: Path, list_name: str) -> dict[str, Any]:
    """Import ``email,name,<attributes…>`` rows (a ``timezone`` column is the subscriber's
    zone) onto a list, made if need be. Returns added, updated, subscribed,
    kept_unsubscribed and errors (line, reason) for the rows rejected."""
    actor.require(Role.ADMIN)
    name = _list_name(list_name)
    try:
        rows, errors = read_rows(path)
    except ImportFileError as exc:
        raise Invalid(str(exc), field="file") from exc
    return _import(runtime, actor, rows, errors, name, str(path))


def import_text(
    runtime: Runtime, actor: Actor, text: str, list_name: str, *, origin: str = "upload"
) -> dict[str, Any]:
    """``import_file`` for CSV text already read (an upload); ``origin`` names it in
    the rejected rows' reasons and the audit log."""
    actor.require(Role.ADMIN)
    name = _list_name(list_name)
    try:
        rows, errors = parse_rows(text.removeprefix("\ufeff"), source=origin)
    except ImportFileError as exc:
        raise Invalid(str(exc), field="file") from exc
    return _import(runtime, actor, rows, errors, name, origin)


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
