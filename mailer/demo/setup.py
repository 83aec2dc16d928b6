"""Build the demo's world: a newsletter, two lists and sample subscribers. Idempotent."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailer.db.models import MailingList, Newsletter
from mailer.db.session import transaction
from subscribers.importer import ImportReport, Row, import_rows

BRIEFINGS_DIR = Path(__file__).parent / "briefings"
NEWSLETTER_SLUG = "daily"
LISTS = ("morning-readers", "weekend-readers")
FIRST_NAMES = ("Ada", "Bea", "Cai", "Dev", "Ela", "Fen", "Gus", "Hana", "Ivo", "Juno", "Kit", "Lev")


def ensure_newsletter(factory: sessionmaker[Session]) -> int:
    with transaction(factory) as session:
        newsletter = session.scalar(select(Newsletter).where(Newsletter.slug == NEWSLETTER_SLUG))
        if newsletter is None:
            lists = []
            for name in LISTS:
                mailing_list = session.scalar(select(MailingList).where(MailingList.name == name))
                lists.append(
                    mailing_list or MailingList(name=name, description=f"Demo list {name}")
                )
            newsletter = Newsletter(
                slug=NEWSLETTER_SLUG,
                name="The Daily Briefing",
                from_name="The Daily Briefing",
                from_email="briefing@news.example.org",
                reply_to="desk@news.example.org",
                postal_address="100 Harbour Street, Suite 4, Valmere VM 20410",
                audience_note="you signed up for the morning briefing at news.example.org",
                timezone="America/New_York",
                send_time="06:30",
                # The shipped samples carry dates from across the year; a real
                # newsletter keeps the default window of 48 hours.
                max_age_hours=24 * 366 * 2,
                lists=lists,
            )
            session.add(newsletter)
            session.flush()
        return newsletter.id


def sample_rows(count: int) -> list[Row]:
    width = max(5, len(str(count)))
    return [
        Row(
            line=i + 1,
            email=f"reader{i + 1:0{width}d}@example.com",
            name=f"{FIRST_NAMES[i % len(FIRST_NAMES)]} Reader",
            attributes={"source": "demo"},
        )
        for i in range(count)
    ]


def ensure_subscribers(factory: sessionmaker[Session], count: int) -> ImportReport:
    """Readers 1..count: two thirds on the morning list, every third on the weekend list."""
    rows = sample_rows(count)
    report = ImportReport()
    morning = [r for i, r in enumerate(rows) if i % 3 != 2]
    weekend = [r for i, r in enumerate(rows) if i % 3 == 2 or i % 6 == 0]
    import_rows(factory, morning, LISTS[0], report)
    import_rows(factory, weekend, LISTS[1], report)
    return report
