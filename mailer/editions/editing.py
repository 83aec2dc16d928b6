"""An editor's changes to a composed edition before it is sent.

Exclude a briefing (it stays out when the edition is recomposed), include one back
(an excluded one, or one that arrived since), reorder or move them, give one a
short headline for this edition, override the subject or preheader, recompose.
Every change re-renders the edition once, so what is previewed is what is sent;
an edition left with no briefings is recorded skipped again (unless its newsletter
sends empty editions). The caller holds the edition row locked and commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.db.base import utcnow
from mailer.db.models import Briefing, BriefingStatus, Edition, EditionBriefing
from mailer.editions import compose
from mailer.editions.compose import EDITABLE, fill, ordered, rerender

MAX_HEADLINE_CHARS = 300


class EditionLocked(RuntimeError):
    """The edition has started sending (or was sent): it no longer changes."""


@dataclass(frozen=True)
class Recomposed:
    added: tuple[int, ...]
    dropped: tuple[int, ...]


def _check(edition: Edition) -> None:
    if edition.status not in EDITABLE:
        raise EditionLocked(f"edition {edition.id} is {edition.status}; it can no longer change")


def _item(edition: Edition, briefing_id: int) -> EditionBriefing:
    for item in edition.items:
        if item.briefing_id == briefing_id:
            return item
    raise LookupError(f"briefing {briefing_id} is not in edition {edition.id}")


def exclude(
    session: Session, edition: Edition, briefing_id: int, *, templates_dir: Path | None = None
) -> None:
    """Take a briefing out; recomposing leaves it out until it is included again."""
    _check(edition)
    _item(edition, briefing_id)
    remaining = [i for i in ordered(edition) if i.briefing_id != briefing_id]
    if not remaining:
        raise ValueError(
            f"briefing {briefing_id} is the last one in edition {edition.id}: "
            "delete the draft instead"
        )
    # A new list: the JSON column only sees a change when it is assigned.
    edition.excluded_briefing_ids = sorted({*(edition.excluded_briefing_ids or ()), briefing_id})
    fill(edition, remaining, templates_dir=templates_dir)


def include(
    session: Session,
    edition: Edition,
    briefing_id: int,
    position: int | None = None,
    *,
    now: datetime | None = None,
    templates_dir: Path | None = None,
) -> None:
    """Add back a briefing an editor excluded, or one that arrived in the edition's window
    since it was composed, at ``position`` (0 is first; by default last)."""
    _check(edition)
    if any(i.briefing_id == briefing_id for i in edition.items):
        raise ValueError(f"briefing {briefing_id} is already in edition {edition.id}")
    excluded = list(edition.excluded_briefing_ids or ())
    briefing = session.get(Briefing, briefing_id)
    if briefing is None:
        raise LookupError(f"no briefing with id {briefing_id}")
    if briefing_id in excluded:
        # Back in, even if its window has moved on: unless another edition took it since.
        taken = session.scalar(
            select(Briefing.id).where(
                Briefing.id == briefing_id, compose.carried(edition.newsletter_id, but=edition.id)
            )
        )
        usable = briefing.status in (BriefingStatus.READY, BriefingStatus.SENT) and taken is None
    else:
        usable = briefing_id in {
            b.id
            for b in compose.eligible(
                session,
                edition.newsletter,
                edition.edition_date,
                now or utcnow(),
                edition_id=edition.id,
                excluded=excluded,
            )
        }
    if not usable:
        raise ValueError(
            f"briefing {briefing_id} is not available to edition {edition.id} (not ready, "
            "outside its dates, filtered out, or carried by another edition)"
        )
    items = ordered(edition)
    at = len(items) if position is None else max(0, min(position, len(items)))
    items.insert(at, EditionBriefing(briefing=briefing, position=at))
    edition.excluded_briefing_ids = [b for b in excluded if b != briefing_id]
    fill(edition, items, templates_dir=templates_dir)


def reorder(
    session: Session,
    edition: Edition,
    briefing_ids: Sequence[int],
    *,
    templates_dir: Path | None = None,
) -> None:
    """Put the named briefings first, in that order; the others keep theirs after them."""
    _check(edition)
    current = ordered(edition)
    present = {i.briefing_id for i in current}
    unknown = [b for b in briefing_ids if b not in present]
    if unknown:
        raise LookupError(f"not in edition {edition.id}: {', '.join(map(str, unknown))}")
    first = list(dict.fromkeys(briefing_ids))
    by_id = {i.briefing_id: i for i in current}
    order = [by_id[b] for b in first] + [i for i in current if i.briefing_id not in first]
    fill(edition, order, templates_dir=templates_dir)


def move(
    session: Session,
    edition: Edition,
    briefing_id: int,
    offset: int,
    *,
    templates_dir: Path | None = None,
) -> bool:
    """Move a briefing ``offset`` places (-1 up, +1 down), stopping at either end.
    Returns whether anything moved (nothing is rendered when it did not)."""
    _check(edition)
    items = ordered(edition)
    item = _item(edition, briefing_id)
    here = items.index(item)
    there = max(0, min(len(items) - 1, here + offset))
    if there == here:
        return False
    items.insert(there, items.pop(here))
    fill(edition, items, templates_dir=templates_dir)
    return True


def clean_headline(value: str) -> str | None:
    """One line of plain text, at most 300 characters; empty means none."""
    cleaned = " ".join(value.split())
    if len(cleaned) > MAX_HEADLINE_CHARS:
        raise ValueError(f"headline is {len(cleaned)} characters; at most {MAX_HEADLINE_CHARS}")
    return cleaned or None


def set_headline(
    session: Session,
    edition: Edition,
    briefing_id: int,
    headline: str,
    *,
    templates_dir: Path | None = None,
) -> tuple[str | None, str | None]:
    """This edition's short headline for a briefing ('' clears it); (before, after)."""
    _check(edition)
    item = _item(edition, briefing_id)
    before, after = item.headline, clean_headline(headline)
    if before != after:
        item.headline = after
        rerender(edition, templates_dir=templates_dir)
    return before, after


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
    fill(edition, ordered(edition), templates_dir=templates_dir)


def recompose(
    session: Session,
    edition: Edition,
    *,
    now: datetime | None = None,
    templates_dir: Path | None = None,
) -> Recomposed:
    """Take the candidates again, as composing would now, leaving out what an editor
    excluded. Briefings still in keep their order and headlines; newcomers follow them,
    newest first (an editor's arrangement is not undone by news arriving)."""
    _check(edition)
    fresh = compose.candidates(
        session,
        edition.newsletter,
        edition.edition_date,
        now or utcnow(),
        edition_id=edition.id,
        excluded=edition.excluded_briefing_ids or (),
    )
    wanted = {b.id for b in fresh}
    current = ordered(edition)
    kept = [i for i in current if i.briefing_id in wanted]
    held = {i.briefing_id for i in kept}
    added = [EditionBriefing(briefing=b, position=0) for b in fresh if b.id not in held]
    fill(edition, kept + added, templates_dir=templates_dir)
    return Recomposed(
        added=tuple(i.briefing.id for i in added),
        dropped=tuple(i.briefing_id for i in current if i.briefing_id not in wanted),
    )


__all__ = [
    "EditionBriefing",
    "EditionLocked",
    "Recomposed",
    "clean_headline",
    "exclude",
    "include",
    "move",
    "recompose",
    "reorder",
    "retitle",
    "set_headline",
]
