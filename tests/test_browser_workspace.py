"""An editor's morning in a real browser: headless Chromium against the app on uvicorn.

The editor signs in, opens the draft, reorders two briefings, sets a headline and the
subject, sees the preview follow at desktop and phone width, sends a test that arrives
with "[TEST]" and a dead unsubscribe link, approves, sends, and watches the counts rise
until the send is done. SQLite (the HTTP tests cover PostgreSQL). Screenshots at both
widths are kept under the test's directory, and copied to ``MAILER_TEST_SCREENSHOTS``
when it is set, to be looked at.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mailer.config import Settings
from mailer.db import migrate
from mailer.db.session import make_engine
from mailer.dispatch import worker as dispatch_worker
from mailer.runtime import Runtime
from mailer.transports.outbox import OutboxTransport
from mailer.web.app import create_app
from tests import factories
from tests.browser import LiveServer, chromium, is_png, require_browser
from tests.conftest import SECRET
from tests.workspace import PASSWORD, account

pytestmark = pytest.mark.browser
READERS = 240
T = TypeVar("T")


@dataclass(frozen=True)
class World:
    runtime: Runtime
    server: LiveServer
    edition_id: int
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
        # Slow enough to watch: small batches at a steady pace.
        batch_size=20,
        throttle_per_second=80,
        sender_process=False,
    )
    runtime = Runtime(settings)
    stop = threading.Event()
    worker = threading.Thread(
        target=dispatch_worker.run,
        args=(runtime.sessions, OutboxTransport(settings.outbox_dir), runtime.dispatch_settings()),
        kwargs={"stop": stop, "poll_interval": 0.2},
        daemon=True,
    )
    try:
        with server:
            newsletter_id = factories.newsletter(runtime)
            factories.subscribers(runtime, READERS)
            edition_id = factories.edition(runtime, newsletter_id)
            account(runtime, "editor@news.example.org")
            server.start(create_app(runtime=runtime))
            worker.start()
            yield World(runtime, server, edition_id, tmp_path / "screenshots")
            stop.set()
            worker.join(20)
    finally:
        stop.set()
        runtime.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "chromium-profile", page_load_timeout=20) as driver:
        yield driver


def wait(condition: Callable[[], T | None], timeout: float = 15.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # stale elements while htmx swaps the page
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or condition}: {last!r}")


def shoot(driver: Any, world: World, name: str) -> None:
    world.shots.mkdir(parents=True, exist_ok=True)
    for label, width, height in (("desktop", 1280, 1000), ("phone", 390, 900)):
        driver.set_window_size(width, height)
        time.sleep(0.3)
        path = world.shots / f"{name}-{label}.png"
        driver.save_screenshot(str(path))
        assert is_png(path)
        keep = os.environ.get("MAILER_TEST_SCREENSHOTS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(keep) / path.name)
    driver.set_window_size(1280, 1000)


def frame_text(driver: Any, frame_id: str) -> str:
    from selenium.webdriver.common.by import By

    driver.switch_to.frame(driver.find_element(By.ID, frame_id))
    try:
        return str(driver.find_element(By.TAG_NAME, "body").text)
    finally:
        driver.switch_to.default_content()


def item_ids(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [
        li.get_attribute("data-briefing")
        for li in driver.find_elements(By.CSS_SELECTOR, "#items > li")
    ]


def titles(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [t.text for t in driver.find_elements(By.CSS_SELECTOR, "#items [data-role=title]")]


def test_an_editor_shapes_tests_approves_and_sends_the_draft(world: World, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    base = world.server.url
    browser.set_window_size(1280, 1000)
    browser.get(base + "/")
    wait(lambda: "/signin" in browser.current_url, what="the sign-in page")
    shoot(browser, world, "signin")
    browser.find_element(By.ID, "email").send_keys("editor@news.example.org")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "sign-in").click()
    wait(lambda: browser.find_elements(By.CSS_SELECTOR, "[data-role=draft]"), what="Today")
    shoot(browser, world, "today")

    browser.find_element(By.CSS_SELECTOR, "[data-role=draft]").click()
    wait(lambda: browser.find_elements(By.ID, "preview-desktop"), what="the editor")
    shoot(browser, world, "editor")
    before = titles(browser)
    order = item_ids(browser)
    assert len(order) >= 3
    desktop = frame_text(browser, "preview-desktop")
    assert desktop.index(before[0]) < desktop.index(before[1])

    # Reorder: the first briefing goes down one place.
    browser.find_element(By.CSS_SELECTOR, f"#item-{order[0]} [data-action=down]").click()
    wait(lambda: item_ids(browser)[:2] == [order[1], order[0]], what="the new order")
    for frame in ("preview-desktop", "preview-phone"):
        shown = wait(
            lambda f=frame: (
                (t := frame_text(browser, f)) and t.index(before[1]) < t.index(before[0]) and t
            ),
            what=f"{frame} to follow the new order",
        )
        assert shown

    # A short headline for the briefing now on top.
    field = browser.find_element(By.ID, f"headline-{order[1]}")
    field.clear()
    field.send_keys("Harbour bridge reopens")
    browser.find_element(By.CSS_SELECTOR, f"#item-{order[1]} [data-action=headline]").click()
    wait(lambda: titles(browser)[0] == "Harbour bridge reopens", what="the headline")
    for frame in ("preview-desktop", "preview-phone"):
        wait(lambda f=frame: "Harbour bridge reopens" in frame_text(browser, f), what=frame)

    # The subject, with its count and the inbox mock following as it is typed.
    subject = browser.find_element(By.ID, "subject")
    subject.send_keys("Bridge reopens, rates hold, and more")
    wait(
        lambda: browser.find_element(By.ID, "subject-count").text == "36",
        what="the live character count",
    )
    browser.find_element(By.ID, "save-titles").click()
    wait(
        lambda: (
            browser.find_element(By.ID, "edition-subject").text
            == "Bridge reopens, rates hold, and more"
        ),
        what="the saved subject",
    )
    assert "Bridge reopens, rates hold, and more" in browser.find_element(By.ID, "inbox-mock").text
    shoot(browser, world, "editor-edited")

    # A test send: it arrives with [TEST] and a link that does nothing.
    browser.find_element(By.ID, "test-addresses").send_keys("desk@news.example.org")
    browser.find_element(By.ID, "send-test").click()
    wait(lambda: browser.find_elements(By.ID, "test-sent"), what="the test-send notice")
    [sent] = list(Path(world.runtime.settings.outbox_dir).rglob("*.eml"))
    message = message_from_bytes(sent.read_bytes(), policy=policy.default)
    assert str(message["Subject"]) == "[TEST] Bridge reopens, rates hold, and more"
    body = message.get_body(("html",))
    assert body is not None
    html = body.get_content()
    assert "Harbour bridge reopens" in html
    links = set(re.findall(r'href="([^"]+)"', html))
    dead = [link for link in links if "/preview/link" in link]
    assert dead and not [link for link in links if "/u/" in link]
    browser.get(dead[0])
    assert "This link is from a preview" in browser.find_element(By.ID, "preview-link").text
    browser.back()
    wait(lambda: browser.find_elements(By.ID, "approve"), what="the editor again")

    # Approve, then send now and watch it go.
    browser.find_element(By.ID, "approve").click()
    wait(
        lambda: (
            not browser.find_elements(By.ID, "approve")
            and "approved by editor@news.example.org" in browser.find_element(By.ID, "edition").text
        ),
        what="approval",
    )
    browser.find_element(By.ID, "send-now-open").click()
    browser.find_element(By.ID, "send-now").click()
    progress = f"#progress-{world.edition_id}"
    wait(lambda: browser.find_elements(By.CSS_SELECTOR, progress), what="the progress panel")
    seen: list[int] = []

    def finished() -> bool:
        panel = browser.find_element(By.CSS_SELECTOR, progress)
        done = int(panel.find_element(By.CSS_SELECTOR, "[data-count=done]").text.replace(",", ""))
        seen.append(done)
        return panel.get_attribute("data-status") == "sent"

    wait(finished, timeout=60, what="the send to finish")
    shoot(browser, world, "editor-sent")
    panel = browser.find_element(By.CSS_SELECTOR, progress)
    assert panel.find_element(By.CSS_SELECTOR, "[data-count=done]").text == f"{READERS:,}"
    assert panel.find_element(By.CSS_SELECTOR, "[data-count=sent]").text == f"{READERS:,}"
    # The counts rose while the page watched, without a reload.
    assert any(0 < n < READERS for n in seen), seen
    assert len(list((Path(world.runtime.settings.outbox_dir)).rglob("*.eml"))) == READERS + 1

    browser.get(base + f"/editions/{world.edition_id}/stats")
    wait(lambda: browser.find_elements(By.ID, "counts"), what="the stats page")
    shoot(browser, world, "stats")
    browser.get(base + "/")
    shoot(browser, world, "today-after")


def test_the_last_sends_and_stats_are_legible_on_a_phone(world: World, browser: Any) -> None:
    """Not a snapshot: the stats page at phone width keeps its numbers on screen."""
    from selenium.webdriver.common.by import By

    settings = replace(world.runtime.dispatch_settings(), throttle_per_second=0)
    from mailer.dispatch.dispatcher import send_edition

    send_edition(
        world.runtime.sessions,
        world.edition_id,
        OutboxTransport(world.runtime.settings.outbox_dir),
        settings,
    )
    browser.set_window_size(390, 900)
    browser.get(world.server.url + "/signin")
    browser.find_element(By.ID, "email").send_keys("editor@news.example.org")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "sign-in").click()
    wait(lambda: "/signin" not in browser.current_url, what="sign-in")
    browser.get(world.server.url + f"/editions/{world.edition_id}/stats")
    counts = wait(lambda: browser.find_elements(By.ID, "counts"), what="the counts")
    width = browser.execute_script("return document.documentElement.clientWidth")
    assert counts[0].size["width"] <= width
    sent_row = browser.find_element(By.CSS_SELECTOR, "#row-sent .count")
    assert sent_row.text == f"{READERS:,}"
    shoot(browser, world, "stats-phone")
