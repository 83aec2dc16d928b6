"""An editor's changes to a composed edition before it is sent: exclude, reorder, retitle.

Every change re-renders the edition once, so what is previewed is what is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.orm import Session

from mailer.db.models import Edition, EditionBriefing
from mailer.editions.compose import EDITABLE, rerender


class EditionLocked(RuntimeError):
    """The edition has started sending (or was sent): it no longer changes."""


def _check(edition: Edition) -> None:
    if edition.status not in EDITABLE:
        raise EditionLocked(f"edition {edition.id} is {edition.status}; it can no longer change")


def exclude(
    session: Session, edition: Edition, briefing_id: int, *, templates_dir: Path | None = None
) -> None:
    _check(edition)
    remaining = [i for i in edition.items if i.briefing_id != briefing_id]
    if len(remaining) == len(edition.items):
        raise LookupError(f"briefing {briefing_id} is not in edition {edition.id}")
    if not remaining:
        raise ValueError(f"briefing {briefing_id} is the last one in edition {edition.id}")
    _place(session, edition, [i.briefing_id for i in sorted(remaining, key=lambda i: i.position)])
    rerender(edition, templates_dir=templates_dir)


def reorder(
    session: Session,
    edition: Edition,
    briefing_ids: Sequence[int],
    *,
    templates_dir: Path | None = None,
) -> None:
    """Put the named briefings first, in that order; the others keep theirs after them."""
    _check(edition)
    current = [i.briefing_id for i in sorted(edition.items, key=lambda i: i.position)]
    unknown = [b for b in briefing_ids if b not in current]
    if unknown:
        raise LookupError(f"not in edition {edition.id}: {', '.join(map(str, unknown))}")
    first = list(dict.fromkeys(briefing_ids))
    _place(session, edition, first + [b for b in current if b not in first])
    rerender(edition, templates_dir=templates_dir)


def retitle(
    edition: Edition,
    *,
    subject: str | None = None,
    preheader: str | None = None,
    templates_dir: Path | None = None,
) -> None:
    """Override subject and/or preheader; an empty string goes back to the template."""
    _check(edition)
    for name, value in (("subject", subject), ("preheader", preheader)):
        if value is None:
            continue
        value = " ".join(value.split())
        if len(value) > 300:
            raise ValueError(f"{name} is {len(value)} characters; at most 300")
        setattr(edition, f"{name}_override", value or None)
    rerender(edition, templates_dir=templates_dir)


def _place(session: Session, edition: Edition, order: list[int]) -> None:
    by_id = {i.briefing_id: i for i in edition.items}
    for item in list(edition.items):
        if item.briefing_id not in order:
            edition.items.remove(item)
    session.flush()
    # Positions are rewritten in two steps so no intermediate state clashes.
    for position, briefing_id in enumerate(order):
        by_id[briefing_id].position = position + len(order)
    session.flush()
    for position, briefing_id in enumerate(order):
        by_id[briefing_id].position = position
    edition.items.sort(key=lambda i: i.position)


__all__ = ["EditionBriefing", "EditionLocked", "exclude", "reorder", "retitle"]
