"""What an edition's emails carry, as a reader's mailbox receives them (outbox files)."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import replace
from email.message import EmailMessage

from mailer.app import readers
from mailer.db.models import Newsletter
from mailer.db.session import transaction
from mailer.dispatch.dispatcher import send_edition
from mailer.runtime import Runtime
from mailer.transports.headers import feedback_sender
from mailer.transports.outbox import OutboxTransport
from tests import factories


def sent_messages(runtime: Runtime, language: str) -> tuple[int, list[EmailMessage]]:
    newsletter_id = factories.newsletter(runtime)
    with transaction(runtime.sessions) as session:
        newsletter = session.get(Newsletter, newsletter_id)
        assert newsletter is not None
        newsletter.name = 'The "Daily", Briefing'
        newsletter.language = language
    factories.subscribers(runtime, 2)
    edition_id = factories.edition(runtime, newsletter_id)
    transport = OutboxTransport(runtime.settings.outbox_dir)
    settings = replace(runtime.dispatch_settings(), sender_process=False)
    assert send_edition(runtime.sessions, edition_id, transport, settings)["sent"] == 2
    folder = transport.folder_for(edition_id)
    messages = [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.strict)
        for path in sorted(folder.glob("*.eml"))
    ]
    assert len(messages) == 2
    return edition_id, messages  # type: ignore[return-value]


def test_every_email_carries_the_bulk_senders_headers(runtime: Runtime) -> None:
    edition_id, messages = sent_messages(runtime, "fr")
    sender = feedback_sender("briefing@news.example.org")
    assert 5 <= len(sender) <= 15 and ":" not in sender
    for message in messages:
        assert message["List-Id"] == '"The \\"Daily\\", Briefing" <daily.news.example.org>'
        assert message["Feedback-ID"] == f"e{edition_id}:daily:{sender}"
        assert message["Content-Language"] == "fr"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        html = message.get_body(("html",))
        assert html is not None
        assert '<html lang="fr"' in html.get_content()


def test_every_email_links_its_web_copy_and_the_readers_preferences(runtime: Runtime) -> None:
    _, messages = sent_messages(runtime, "en")
    base = re.escape(runtime.settings.base_url)
    readers_seen = set()
    for message in messages:
        html_part, text_part = message.get_body(("html",)), message.get_body(("plain",))
        assert html_part is not None and text_part is not None
        html, text = html_part.get_content(), text_part.get_content()
        (web,) = set(re.findall(rf'href="{base}/e/([^"]+)"', html))
        assert f"/e/{web}" in text
        assert readers.edition_web(runtime, web).subject == message["Subject"]
        (preferences,) = set(re.findall(rf'href="{base}/p/([^"]+)"', html))
        assert f"/p/{preferences}" in text
        page = readers.preferences_page(runtime, preferences)
        assert message["To"].addresses[0].addr_spec.startswith(page.email[0])
        readers_seen.add(page.subscriber_id)
        # The preference link is the reader's own: the one-click link's token, on /p/.
        assert message["List-Unsubscribe"] == f"<{runtime.settings.base_url}/u/{preferences}>"
    assert len(readers_seen) == 2
