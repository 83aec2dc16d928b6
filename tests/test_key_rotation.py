"""Signing keys rotate: the first key signs, every configured key verifies, and a link
signed with a key that was dropped opens nothing."""

from __future__ import annotations

import email
import email.policy
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from mailer.app import readers
from mailer.app import subscribers as app_subscribers
from mailer.app.actors import Actor
from mailer.app.errors import Conflict
from mailer.config import ConfigError, Settings
from mailer.dispatch.dispatcher import send_edition
from mailer.runtime import Runtime
from mailer.transports.outbox import OutboxTransport
from mailer.web.app import create_app
from subscribers.importer import ImportReport, Row, import_rows
from subscribers.tokens import TokenError, sign_confirmation, verify_unsubscribe
from tests import factories

OLD = "the-old-key-that-signed-last-years-mail"
NEW = "the-new-key-from-the-rotation-on-monday"
ADMIN = Actor.cli()


@contextmanager
def keyed(
    settings: Settings, *, secret_key: str | None, secret_keys: tuple[str, ...]
) -> Iterator[Runtime]:
    runtime = Runtime(
        settings.model_copy(
            update={
                "secret_key": SecretStr(secret_key) if secret_key is not None else None,
                "secret_keys": tuple(SecretStr(k) for k in secret_keys),
            }
        )
    )
    try:
        yield runtime
    finally:
        runtime.close()


def test_the_settings_take_a_list_of_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_SECRET_KEYS", f'["{NEW}", "{OLD}"]')
    settings = Settings()
    assert settings.require_secret_keys() == (NEW.encode(), OLD.encode())
    assert settings.require_secret_key() == NEW.encode()  # the first signs
    # The single key, set as well, verifies after the list (and is not listed twice).
    monkeypatch.setenv("MAILER_SECRET_KEY", "the-single-key-set-before-there-were-lists")
    assert Settings().require_secret_keys()[2:] == (b"the-single-key-set-before-there-were-lists",)
    monkeypatch.setenv("MAILER_SECRET_KEY", OLD)
    assert Settings().require_secret_keys() == (NEW.encode(), OLD.encode())
    # The single key alone works as it always did.
    monkeypatch.delenv("MAILER_SECRET_KEYS")
    assert Settings().require_secret_keys() == (OLD.encode(),)
    assert Settings().require_secret_key() == OLD.encode()


def test_every_key_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    production = {"env": "production", "base_url": "https://news.example.org"}
    with pytest.raises(ConfigError, match=r"MAILER_SECRET_KEYS\[1\] is too short"):
        Settings(**production, secret_keys=(NEW, "short")).require_secret_keys()
    with pytest.raises(ConfigError, match=r"MAILER_SECRET_KEYS\[0\] is empty"):
        Settings(secret_keys=("",)).require_secret_keys()
    with pytest.raises(ConfigError, match="MAILER_SECRET_KEY is not set"):
        Settings(secret_key="").require_secret_key()
    monkeypatch.setenv("MAILER_SECRET_KEYS", "not json")
    with pytest.raises(ValueError, match="secret_keys"):
        Settings()


def sent_links(runtime: Runtime) -> tuple[str, str]:
    """An edition sent to one reader: its unsubscribe token and its web copy's token."""
    newsletter_id = factories.newsletter(runtime)
    factories.subscribers(runtime, 1)
    edition_id = factories.edition(runtime, newsletter_id)
    transport = OutboxTransport(runtime.settings.outbox_dir)
    settings = replace(runtime.dispatch_settings(), sender_process=False)
    assert send_edition(runtime.sessions, edition_id, transport, settings)["sent"] == 1
    (path,) = transport.folder_for(edition_id).glob("*.eml")
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    unsubscribe = message["List-Unsubscribe"].strip("<>").rpartition("/u/")[2]
    html = message.get_body(("html",))
    assert html is not None
    (web,) = set(re.findall(r"/e/([A-Za-z0-9_.-]+)", html.get_content()))
    return unsubscribe, web


def test_links_signed_with_an_old_key_work_after_rotation_and_not_once_it_is_dropped(
    settings: Settings,
) -> None:
    with keyed(settings, secret_key=OLD, secret_keys=()) as before:
        unsubscribe, web = sent_links(before)
        subscriber_id = verify_unsubscribe(OLD.encode(), unsubscribe).subscriber_id
    confirm = sign_confirmation(OLD.encode(), subscriber_id, int(time.time()) + 3600)

    # Rotated: the new key signs, the old one (still the single key) verifies.
    with keyed(settings, secret_key=OLD, secret_keys=(NEW,)) as rotated:
        assert readers.preferences_page(rotated, unsubscribe).subscriber_id == subscriber_id
        assert readers.edition_web(rotated, web).subject
        assert readers.confirmation(rotated, confirm).email.endswith("@example.com")
        with TestClient(create_app(runtime=rotated), base_url="https://news.example.org") as client:
            page = client.get(f"/u/{unsubscribe}")
            assert page.status_code == 200 and "Unsubscribe" in page.text
            assert client.get(f"/e/{web}").status_code == 200
        # What it signs now is the new key's.
        fresh = readers.preferences_url(rotated, subscriber_id).rpartition("/p/")[2]
        assert readers.preferences_page(rotated, fresh).subscriber_id == subscriber_id

    # The same, with both keys listed.
    with keyed(settings, secret_key=None, secret_keys=(NEW, OLD)) as listed:
        assert readers.preferences_page(listed, unsubscribe).subscriber_id == subscriber_id
        assert readers.preferences_page(listed, fresh).subscriber_id == subscriber_id

    # The old key dropped: its links open nothing; the new key's still do.
    with keyed(settings, secret_key=None, secret_keys=(NEW,)) as dropped:
        for opening in (
            lambda: readers.preferences_page(dropped, unsubscribe),
            lambda: readers.edition_web(dropped, web),
            lambda: readers.confirmation(dropped, confirm),
        ):
            with pytest.raises(TokenError, match="signature"):
                opening()
        with TestClient(create_app(runtime=dropped), base_url="https://news.example.org") as client:
            assert client.get(f"/u/{unsubscribe}").status_code == 400
            assert client.post(f"/u/{unsubscribe}", data={"via": "page"}).status_code == 400
            assert client.get(f"/e/{web}").status_code in (400, 404)
        assert readers.preferences_page(dropped, fresh).subscriber_id == subscriber_id


def test_a_session_survives_a_rotation(settings: Settings) -> None:
    from mailer.app import accounts

    with keyed(settings, secret_key=OLD, secret_keys=()) as before:
        account, _ = accounts.create_account(before, ADMIN, "ed@example.org", role="editor")
        ticket = accounts.open_session(before, account.id, "127.0.0.1", "test")
    with keyed(settings, secret_key=OLD, secret_keys=(NEW,)) as rotated:
        assert accounts.resolve_session(rotated, ticket.cookie_value) is not None
    with keyed(settings, secret_key=None, secret_keys=(NEW,)) as dropped:
        assert accounts.resolve_session(dropped, ticket.cookie_value) is None


def test_an_erased_reader_stays_erased_after_rotation(settings: Settings) -> None:
    with keyed(settings, secret_key=OLD, secret_keys=()) as before:
        factories.subscribers(before, 2)
        app_subscribers.erase_subscriber(before, ADMIN, "reader00001@example.com")
    with keyed(settings, secret_key=OLD, secret_keys=(NEW,)) as rotated:
        with pytest.raises(Conflict, match="erased"):
            app_subscribers.add_subscriber(
                rotated, ADMIN, "reader00001@example.com", lists=["morning"]
            )
        report = ImportReport()
        rows = [Row(line=1, email="reader00001@example.com", name=None, attributes={})]
        import_rows(
            rotated.sessions,
            rows,
            "morning",
            report,
            erasure_key=rotated.settings.require_secret_keys(),
        )
        assert report.erased == 1 and report.added == 0
