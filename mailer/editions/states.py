"""An edition's status, and the one place that changes it.

    draft ─┬─▶ ready ◀──▶ skipped          composed; re-rendered; nothing new (recomposed later)
           │     │
           │     ▼
           │  sending ◀──▶ paused          handed to the workers; an operator stops, resumes
           │     │   ▲
           │     ▼   │ resend unknown deliveries (reconcile)
           │    sent
           │
           └─▶ cancelled                   from anything not sent yet; final

Compose, the dispatcher (start, pause, resume, cancel, the end of a send), the
scheduler and reconciliation all call ``move`` (directly or through the dispatcher), so an
illegal change (resuming a sent edition, sending a skipped one) fails the same
way wherever it comes from. One hot path changes the status in raw SQL on the
claiming connection instead of loading the row through a session (the dispatcher
pausing an edition whose transport refused our credentials): it uses these
constants, and its WHERE clause is this table's sending → paused.
"""

from __future__ import annotations

from mailer.db.models import Edition, EditionStatus

DRAFT = EditionStatus.DRAFT
READY = EditionStatus.READY
SENDING = EditionStatus.SENDING
PAUSED = EditionStatus.PAUSED
SENT = EditionStatus.SENT
CANCELLED = EditionStatus.CANCELLED
SKIPPED = EditionStatus.SKIPPED

# Editions in these states may still change (briefings, order, headlines, subject).
EDITABLE = frozenset({DRAFT, READY, SKIPPED})
# The ledger has been filled: the edition went (or is going) to readers.
STARTED = frozenset({SENDING, PAUSED, SENT})

TRANSITIONS: dict[EditionStatus, frozenset[EditionStatus]] = {
    # A new edition is a draft only until compose renders it or records it skipped.
    DRAFT: frozenset({READY, SKIPPED, CANCELLED}),
    # ready → ready: every edit renders again.
    READY: frozenset({READY, SKIPPED, SENDING, CANCELLED}),
    # skipped → skipped: recomposed, and still nothing new.
    SKIPPED: frozenset({READY, SKIPPED, CANCELLED}),
    SENDING: frozenset({PAUSED, SENT, CANCELLED}),
    PAUSED: frozenset({SENDING, CANCELLED}),
    # An operator queues deliveries of unknown outcome again (``mailer editions reconcile``).
    SENT: frozenset({SENDING}),
    CANCELLED: frozenset(),
}


class TransitionError(RuntimeError):
    """The edition's status does not allow the change asked for."""


def allowed(current: str, new: str) -> bool:
    return EditionStatus(new) in TRANSITIONS[EditionStatus(current)]


def move(edition: Edition, new: EditionStatus, reason: str | None = None) -> None:
    """Set ``edition``'s status (and why, or no reason) if the table allows it.

    The caller holds the edition row (or has just made it) and commits.
    """
    # An edition made in this transaction has no status until its insert applies the
    # column default.
    current = EditionStatus(edition.status or DRAFT)
    if new not in TRANSITIONS[current]:
        name = f"edition {edition.id}" if edition.id is not None else "the edition"
        raise TransitionError(f"{name} is {current}; it cannot become {new}")
    edition.status = new
    edition.status_reason = reason
