"""Building blocks for tests: a newsletter, subscribers, a composed edition."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select, update

from mailer.briefings.folder import pull_folder
from mailer.db.models import Delivery, MailingList, Newsletter
from mailer.db.session import transaction
from mailer.demo.setup import BRIEFINGS_DIR
from mailer.editions.compose import compose_edition
from mailer.runtime import Runtime
from mailer.transports.base import Envelope
from subscribers.importer import ImportReport, Row, import_rows


def newsletter(runtime: Runtime, slug: str = "daily", lists: Sequence[str] = ("morning",)) -> int:
    with transaction(runtime.sessions) as session:
        mailing_lists = []
        for name in lists:
            found = session.scalar(select(MailingList).where(MailingList.name == name))
            mailing_lists.append(found or MailingList(name=name))
        item = Newsletter(
            slug=slug,
            name="The Daily Briefing",
            from_name="Briefing Desk",
            from_email="briefing@news.example.org",
            postal_address="100 Harbour Street, Valmere VM 20410",
            audience_note="you signed up at news.example.org",
            lists=mailing_lists,
        )
        session.add(item)
        session.flush()
        return item.id


def subscribers(
    runtime: Runtime, count: int, list_name: str = "morning", prefix: str = "reader"
) -> list[str]:
    rows = [
        Row(line=i, email=f"{prefix}{i:05d}@example.com", name=f"Reader {i}", attributes={})
        for i in range(1, count + 1)
    ]
    import_rows(runtime.sessions, rows, list_name, ImportReport())
    return [r.email for r in rows]


def edition(runtime: Runtime, newsletter_id: int, folder: Path = BRIEFINGS_DIR) -> int:
    pull_folder(runtime.sessions, folder)
    with transaction(runtime.sessions) as session:
        item = session.get(Newsletter, newsletter_id)
        assert item is not None
        return compose_edition(session, item).edition.id


def backoff_passed(runtime: Runtime) -> None:
    """As if every queued retry's backoff had run out (instead of sleeping through it)."""
    with transaction(runtime.sessions) as session:
        session.execute(update(Delivery).values(retry_after=None))


NONCE = "0123456789ab"


def envelope(**overrides: object) -> Envelope:
    """A rendered edition's shared parts, written by hand; placeholders use ``NONCE``."""
    values: dict[str, object] = {
        "edition_id": 1,
        "newsletter_slug": "daily",
        "from_name": "Desk",
        "from_email": "desk@news.example.org",
        "reply_to": None,
        "subject": "Today",
        "html": f"<p>Hi %%{NONCE}:name%%</p>",
        "text": f"Hi %%{NONCE}:name%% %%{NONCE}:unsubscribe_url%%",
        "nonce": NONCE,
    }
    values.update(overrides)
    return Envelope(**values)  # type: ignore[arg-type]
