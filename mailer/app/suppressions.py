"""The suppression list for operators: read it, add to it, lift from it, all audited.

``subscribers.suppressions`` does the work (the first reason stands; lifting keeps an
event with who lifted what and why); here each change also lands in the audit log.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailer.accounts.models import Role
from mailer.app import audit
from mailer.app.actors import Actor
from mailer.app.errors import Invalid, NotFound
from mailer.db.session import transaction
from mailer.runtime import Runtime
from subscribers.addresses import InvalidAddress, normalize_email
from subscribers.suppressions import (
    NotSuppressed,
    SuppressionReason,
    SuppressionView,
    lift,
    listing,
    suppress,
)

__all__ = ["SuppressionView", "add_suppression", "lift_suppression", "list_suppressions"]

MAX_LIST = 100_000
MAX_NOTE = 1000  # what suppressions.detail keeps
_SOURCE_WIDTH = 50  # suppressions.source


def _address(email: str) -> str:
    try:
        return normalize_email(email)
    except InvalidAddress as exc:
        raise Invalid(str(exc), field="email") from exc


def _note(note: str) -> str:
    cleaned = " ".join(note.split())
    if not cleaned:
        raise Invalid("say why in a note (it is kept with the change)", field="note")
    if len(cleaned) > MAX_NOTE:
        raise Invalid(f"note is {len(cleaned)} characters; at most {MAX_NOTE}", field="note")
    return cleaned


def list_suppressions(
    runtime: Runtime, actor: Actor, *, reason: str | None = None, limit: int = 100
) -> Sequence[SuppressionView]:
    """Suppressed addresses, newest first, with reason, source, detail and time."""
    actor.require(Role.ADMIN)
    if not 1 <= limit <= MAX_LIST:
        raise Invalid(f"limit {limit}: give 1 to {MAX_LIST}", field="limit")
    with runtime.sessions() as session:
        return listing(session, reason=reason, limit=limit)


def add_suppression(runtime: Runtime, actor: Actor, email: str, *, note: str) -> bool:
    """Suppress an address by hand; False if it already was (its first reason stands)."""
    actor.require(Role.ADMIN)
    address, detail = _address(email), _note(note)
    source = f"operator:{actor.name}"[:_SOURCE_WIDTH]
    with transaction(runtime.sessions) as session:
        added = suppress(session, address, SuppressionReason.OPERATOR, source=source, detail=detail)
        if added:
            audit.record(
                session,
                actor,
                "suppression.add",
                "suppression",
                address,
                after={"reason": SuppressionReason.OPERATOR.value, "source": source},
                note=detail,
            )
    return added


def lift_suppression(runtime: Runtime, actor: Actor, email: str, *, note: str) -> SuppressionView:
    """Lift a suppression: the address may be mailed again. Returns what was lifted."""
    actor.require(Role.ADMIN)
    address, detail = _address(email), _note(note)
    with transaction(runtime.sessions) as session:
        try:
            lifted = lift(session, address, operator=actor.label, note=detail)
        except NotSuppressed as exc:
            raise NotFound(str(exc)) from exc
        audit.record(
            session,
            actor,
            "suppression.lift",
            "suppression",
            address,
            before={
                "reason": lifted.reason,
                "source": lifted.source,
                "detail": lifted.detail,
                "since": lifted.created_at.isoformat(),
            },
            note=detail,
        )
    return lifted
