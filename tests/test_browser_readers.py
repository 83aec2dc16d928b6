"""A reader's whole life in headless Chromium, with no JavaScript on any page: subscribe on
the form, confirm from the emailed link, open the preference page from an edition's email,
drop a list, pause, unsubscribe, come back with a new confirmation, read the edition on the
web and in the archive, download one's data and erase it. Screenshots of every page at
desktop and phone widths (kept in ``MAILER_TEST_SCREENSHOTS`` when set)."""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select

from mailer.config import Settings
from mailer.db import migrate
from mailer.db.models import Delivery, Newsletter
from mailer.db.session import make_engine, transaction
from mailer.runtime import Runtime
from mailer.web.app import create_app
from subscribers.importer import ImportReport, Row, import_rows
from subscribers.models import MailingList, SubscriberStatus
from subscribers.tokens import sign_unsubscribe
from tests import factories
from tests.browser import LiveServer, chromium, is_png, require_browser
from tests.conftest import SECRET
from tests.test_readers import (
    link_in,
    pace_passed,
    reader_mail,
    scan_for,
    statuses,
    subscriber,
)
from tests.test_web_unsubscribe import send

T = TypeVar("T")
ADDRESS = "grace@example.com"


@dataclass(frozen=True)
class World:
    runtime: Runtime
    server: LiveServer
    newsletter_id: int
    shots: Path


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    require_browser()
    url = f"sqlite:///{tmp_path / 'mailer.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    server = LiveServer()
    settings = Settings(
        database_url=url,
        outbox_dir=tmp_path / "outbox",
        secret_key=SECRET,
        base_url=server.url,
        sender_process=False,
    )
    runtime = Runtime(settings)
    try:
        with server:
            newsletter_id = factories.newsletter(runtime, lists=("morning", "weekend"))
            with transaction(runtime.sessions) as session:
                for mailing_list in session.scalars(select(MailingList)):
                    mailing_list.public = True
                    mailing_list.description = (
                        "Every weekday at 6:30, the stories you should know"
                        if mailing_list.name == "morning"
                        else "Saturday's long read, once a week"
                    )
                newsletter = session.get(Newsletter, newsletter_id)
                assert newsletter is not None
                newsletter.public_archive = True
            server.start(create_app(runtime=runtime))
            yield World(runtime, server, newsletter_id, tmp_path / "screenshots")
    finally:
        runtime.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "chromium-profile", page_load_timeout=20) as driver:
        yield driver


def wait(condition: Callable[[], T | None], timeout: float = 15.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or condition}")


def shoot(driver: Any, world: World, name: str) -> None:
    world.shots.mkdir(parents=True, exist_ok=True)
    for label, width in (("desktop", 1280), ("phone", 390)):
        driver.set_window_size(width, 900)
        time.sleep(0.2)
        # The whole page, not only what fits the window.
        height = driver.execute_script("return document.documentElement.scrollHeight") or 900
        driver.set_window_size(width, min(int(height) + 140, 4000))
        time.sleep(0.2)
        path = world.shots / f"reader-{name}-{label}.png"
        driver.save_screenshot(str(path))
        assert is_png(path)
        keep = os.environ.get("MAILER_TEST_SCREENSHOTS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(keep) / path.name)
    driver.set_window_size(1280, 900)


def press(driver: Any, element_id: str) -> None:
    from selenium.webdriver.common.by import By

    before = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, element_id).click()
    wait(lambda: _gone(before), what=f"the page after #{element_id}")


def _gone(element: Any) -> bool:
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        # Some Chromium versions report an element of a page that was left this way
        # rather than as stale.
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False


def edition_mail(world: World, edition_id: int, address: str) -> EmailMessage:
    with world.runtime.sessions() as session:
        delivery = session.scalar(
            select(Delivery.id).where(Delivery.edition_id == edition_id, Delivery.email == address)
        )
    path = world.runtime.settings.outbox_dir / f"edition-{edition_id}" / f"{delivery}.eml"
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_a_reader_subscribes_manages_leaves_returns_and_erases(
    world: World, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    runtime, base = world.runtime, world.server.url
    browser.set_window_size(1280, 900)
    browser.get(f"{base}/subscribe/daily")
    assert browser.execute_script("return typeof window.htmx") == "undefined"
    shoot(browser, world, "subscribe")
    browser.find_element(By.ID, "email").send_keys(ADDRESS)
    browser.find_element(By.ID, "name").send_keys("Grace Hopper")
    Select(browser.find_element(By.ID, "timezone")).select_by_visible_text("America/New_York")
    press(browser, "subscribe-button")
    assert "Check your inbox" in browser.find_element(By.ID, "done").text
    shoot(browser, world, "subscribed")
    assert statuses(runtime, ADDRESS) == {"morning": "pending", "weekend": "pending"}

    browser.get(base + link_in(reader_mail(runtime)[0], "/confirm/"))
    shoot(browser, world, "confirm")
    assert set(statuses(runtime, ADDRESS).values()) == {"pending"}  # GET changed nothing
    press(browser, "confirm")
    shoot(browser, world, "confirmed")
    assert statuses(runtime, ADDRESS) == {"morning": "active", "weekend": "active"}

    edition_id = factories.edition(runtime, world.newsletter_id)
    send(runtime, edition_id)
    mail = edition_mail(world, edition_id, ADDRESS)
    preferences = base + link_in(mail, "/p/")
    browser.get(preferences)
    shoot(browser, world, "preferences")
    ids = {
        m: i for m, i in runtime.sessions().execute(select(MailingList.name, MailingList.id)).all()
    }
    browser.find_element(By.ID, f"list-{ids['weekend']}").click()  # drop the weekend list
    press(browser, "save-lists")
    assert statuses(runtime, ADDRESS) == {"morning": "active", "weekend": "unsubscribed"}
    press(browser, "pause-month")
    assert "paused until" in browser.find_element(By.ID, "paused").text
    shoot(browser, world, "paused")
    found = subscriber(runtime, ADDRESS)
    assert found is not None and found.paused_until is not None

    press(browser, "leave")
    shoot(browser, world, "left")
    found = subscriber(runtime, ADDRESS)
    assert found is not None and found.status == SubscriberStatus.UNSUBSCRIBED
    pace_passed(runtime)
    press(browser, "come-back-button")
    assert browser.find_element(By.ID, "waiting")
    fresh = reader_mail(runtime)[-1]
    browser.get(base + link_in(fresh, "/confirm/"))
    press(browser, "confirm")
    assert statuses(runtime, ADDRESS)["morning"] == "active"

    # The edition's email, unsubscribed from: the page links to preferences and undo.
    assert found is not None
    browser.get(f"{base}/u/{sign_unsubscribe(SECRET.encode(), found.id, edition_id)}")
    press(browser, "unsubscribe")
    shoot(browser, world, "unsubscribed")
    press(browser, "undo")
    assert statuses(runtime, ADDRESS)["morning"] == "active"

    browser.get(base + link_in(mail, "/e/"))
    assert ADDRESS not in browser.page_source and "Grace" not in browser.page_source
    shoot(browser, world, "edition-web")
    browser.get(f"{base}/archive/daily")
    shoot(browser, world, "archive")

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    browser.get(preferences)
    browser.find_element(By.ID, "download").click()
    saved = wait(lambda: next(iter(downloads.glob("*.json")), None), what="the download")
    data = json.loads(wait(lambda: saved.read_text() or None, what="the file's content"))
    assert data["profile"]["email"] == ADDRESS
    press(browser, "erase")
    shoot(browser, world, "erase")
    press(browser, "erase-confirm")
    shoot(browser, world, "erased")
    assert subscriber(runtime, ADDRESS) is None
    assert scan_for(runtime, ADDRESS) == []
    report = import_rows(
        runtime.sessions,
        [Row(line=2, email=ADDRESS, name="Grace", attributes={})],
        "morning",
        ImportReport(),
        erasure_key=SECRET.encode(),
    )
    assert report.erased == 1 and subscriber(runtime, ADDRESS) is None
