"""A reader leaves from a real browser: headless Chromium against the app served by uvicorn.

SQLite only (the web tests cover PostgreSQL): an edition is sent with the live
server's address as its base URL, so the link in the ``.eml`` is opened as is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailer.config import Settings
from mailer.db import migrate
from mailer.db.models import Event
from mailer.db.session import make_engine
from mailer.runtime import Runtime
from mailer.web.app import create_app
from subscribers.models import SubscriptionStatus
from tests import factories
from tests.browser import LiveServer, chromium, is_png, require_browser
from tests.conftest import SECRET
from tests.test_web_unsubscribe import (
    list_unsubscribe_url,
    outbox_message,
    send,
    subscription_status,
    unsubscribe_events,
)

pytestmark = pytest.mark.browser


@dataclass(frozen=True)
class World:
    runtime: Runtime
    server: LiveServer
    edition_id: int
    readers: list[str]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    require_browser()  # skip before doing any work when there is no browser
    url = f"sqlite:///{tmp_path / 'mailer.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    server = LiveServer()
    settings = Settings(
        database_url=url,
        outbox_dir=tmp_path / "outbox",
        secret_key=SECRET,
        base_url=server.url,  # links in the mail point at this very server
    )
    runtime = Runtime(settings)
    try:
        with server:  # stopped before the database engine is closed
            newsletter_id = factories.newsletter(runtime)
            readers = factories.subscribers(runtime, 2)
            edition_id = factories.edition(runtime, newsletter_id)
            send(runtime, edition_id)
            server.start(create_app(runtime=runtime))
            yield World(runtime, server, edition_id, readers)
    finally:
        runtime.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "chromium-profile") as driver:
        yield driver


def test_a_reader_unsubscribes_from_the_link_in_their_email(
    world: World, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    reader, other = world.readers
    url = list_unsubscribe_url(outbox_message(world.runtime, world.edition_id, reader))
    assert url.startswith(f"{world.server.url}/u/")

    # The page names the newsletter, shows one button, and changes nothing yet.
    browser.get(url)
    heading = browser.find_element(By.TAG_NAME, "h1").text
    assert heading == "Unsubscribe from The Daily Briefing?"
    assert browser.title == "Unsubscribe from The Daily Briefing"
    buttons = browser.find_elements(By.TAG_NAME, "button")
    assert [b.text for b in buttons] == ["Unsubscribe"]
    button = buttons[0]
    assert button.is_displayed() and button.is_enabled()
    # The inline stylesheet is allowed by the page's CSP (the button is styled dark).
    assert button.value_of_css_property("background-color") == "rgba(29, 29, 31, 1)"
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "@example.com" in body and reader not in body
    assert subscription_status(world.runtime, reader) == [SubscriptionStatus.ACTIVE]
    assert unsubscribe_events(world.runtime) == []

    screenshot = tmp_path / "unsubscribe-page.png"
    assert browser.save_screenshot(str(screenshot))
    assert is_png(screenshot)

    # Pressing it posts the form (CSP form-action 'self' lets it) and confirms.
    button.click()
    done = WebDriverWait(browser, 5).until(
        expected_conditions.visibility_of_element_located((By.ID, "done"))
    )
    assert done.text == "You're unsubscribed"
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "will get no more emails from The Daily Briefing" in body
    assert browser.current_url == url  # answered in place: no redirect anywhere

    assert subscription_status(world.runtime, reader) == [SubscriptionStatus.UNSUBSCRIBED]
    assert subscription_status(world.runtime, other) == [SubscriptionStatus.ACTIVE]
    [event] = unsubscribe_events(world.runtime)
    assert (event.source, event.email, event.edition_id) == ("link", reader, world.edition_id)

    # A mangled link (one signature character changed) shows the error page, changes nothing.
    other_url = list_unsubscribe_url(outbox_message(world.runtime, world.edition_id, other))
    spot = len(other_url) - 10
    tampered = other_url[:spot] + ("B" if other_url[spot] == "A" else "A") + other_url[spot + 1 :]
    browser.get(tampered)
    assert browser.find_element(By.ID, "invalid").text == "This link does not work"
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "The link's signature does not match. Nothing was changed." in body
    assert browser.find_elements(By.TAG_NAME, "form") == []
    assert subscription_status(world.runtime, other) == [SubscriptionStatus.ACTIVE]
    with world.runtime.sessions() as session:
        assert session.scalars(select(Event.email)).all() == [reader]
