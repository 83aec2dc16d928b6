"""The audit log: every change a person makes, who made it, when, and before/after."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.accounts.models import AuditEntry, Role
from mailer.app.actors import Actor
from mailer.runtime import Runtime


def record(
    session: Session,
    actor: Actor,
    action: str,
    target_kind: str,
    target_id: object = None,
    *,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    note: str | None = None,
) -> None:
    """Add an entry in the caller's transaction: it lands with the change or not at all."""
    session.add(
        AuditEntry(
            actor=actor.label,
            account_id=actor.account_id,
            action=action,
            target_kind=target_kind,
            target_id=None if target_id is None else str(target_id),
            before=dict(before) if before is not None else None,
            after=dict(after) if after is not None else None,
            note=note,
        )
    )


@dataclass(frozen=True)
class Entry:
    id: int
    at: datetime
    actor: str
    action: str
    target_kind: str
    target_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    note: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "target": f"{self.target_kind}:{self.target_id}"
            if self.target_id
            else self.target_kind,
            "before": self.before,
            "after": self.after,
            "note": self.note,
        }


def list_entries(
    runtime: Runtime,
    actor: Actor,
    *,
    limit: int = 100,
    before_id: int | None = None,
    action: str | None = None,
    target_kind: str | None = None,
    target_id: object = None,
) -> list[Entry]:
    """Newest first, a page at a time (``before_id`` is the last id of the previous page)."""
    actor.require(Role.ADMIN)
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(max(1, min(limit, 1000)))
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    if action:
        query = query.where(AuditEntry.action == action)
    if target_kind:
        query = query.where(AuditEntry.target_kind == target_kind)
    if target_id is not None:
        query = query.where(AuditEntry.target_id == str(target_id))
    with runtime.sessions() as session:
        return [
            Entry(
                e.id, e.at, e.actor, e.action, e.target_kind, e.target_id, e.before, e.after, e.note
            )
            for e in session.scalars(query)
        ]
