"""The audience pages in headless Chromium: search, a subscriber, lists, the segment
editor's live count as the rule is typed, the import preview; desktop and phone shots."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mailer.app import segments
from mailer.app.actors import Actor
from mailer.runtime import Runtime
from tests import factories
from tests.browser import chromium, is_png
from tests.workspace import PASSWORD, account, serve

T = TypeVar("T")


def wait(condition: Callable[[], T | None], timeout: float = 15.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # an element htmx swapped out while it was read
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


def shoot(driver: Any, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for label, width, height in (("desktop", 1280, 1000), ("phone", 390, 900)):
        driver.set_window_size(width, height)
        time.sleep(0.3)
        path = folder / f"audience-{name}-{label}.png"
        driver.save_screenshot(str(path))
        assert is_png(path)
        keep = os.environ.get("MAILER_TEST_SCREENSHOTS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(keep) / path.name)
    driver.set_window_size(1280, 1000)


def test_audience_pages_in_a_browser(runtime: Runtime, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    factories.newsletter(runtime)
    factories.subscribers(runtime, 120)
    segments.create_segment(
        runtime,
        Actor.cli(),
        "sevens",
        {"conditions": [{"field": "email", "op": "ends_with", "value": "7@example.com"}]},
    )
    account(runtime, "admin@news.example.org", "admin")
    shots = tmp_path / "screenshots"
    with serve(runtime) as site, chromium(tmp_path / "profile", page_load_timeout=20) as driver:
        driver.get(site.server.url + "/signin")
        driver.find_element(By.ID, "email").send_keys("admin@news.example.org")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.ID, "sign-in").click()
        wait(lambda: "/signin" not in driver.current_url, what="signed in")

        driver.get(site.server.url + "/admin/subscribers")
        assert len(driver.find_elements(By.CSS_SELECTOR, "[data-subscriber]")) == 50
        driver.find_element(By.ID, "q").send_keys("reader0001")
        driver.find_element(By.ID, "search").click()
        wait(lambda: "q=reader0001" in driver.current_url, what="the search")
        assert len(driver.find_elements(By.CSS_SELECTOR, "[data-subscriber]")) == 10
        shoot(driver, shots, "subscribers")

        # A name, whatever its case; then text too short for a name search, said so.
        box = driver.find_element(By.ID, "q")
        box.clear()
        box.send_keys("READER 11")
        driver.find_element(By.ID, "search").click()
        wait(lambda: "q=READER" in driver.current_url, what="the name search")
        names = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "[data-subscriber] td")]
        assert "Reader 11" in names and "Reader 110" in names
        box = driver.find_element(By.ID, "q")
        box.clear()
        box.send_keys("zq")
        driver.find_element(By.ID, "search").click()
        flash = wait(lambda: driver.find_element(By.ID, "flash").text or None, what="the message")
        assert "at least 3 characters" in flash
        assert not driver.find_elements(By.CSS_SELECTOR, "[data-subscriber]")
        shoot(driver, shots, "search-too-short")
        driver.get(site.server.url + "/admin/subscribers?q=reader0001")

        driver.find_element(By.CSS_SELECTOR, "[data-subscriber] a").click()
        wait(lambda: driver.find_elements(By.ID, "subscriber-email"), what="the subscriber")
        shoot(driver, shots, "subscriber")

        driver.get(site.server.url + "/admin/lists")
        shoot(driver, shots, "lists")

        driver.get(site.server.url + "/admin/segments")
        box = driver.find_element(By.ID, "segment-form-rule")
        wait(
            lambda: (
                "match now"
                in driver.find_element(By.CSS_SELECTOR, "#segment-form .segment-count").text
            ),
            what="the first count",
        )
        box.clear()
        box.send_keys(
            '{"conditions": [{"field": "email", "op": "ends_with", "value": "9@example.com"}]}'
        )
        count = wait(
            lambda: (
                "12 subscribers"
                in (t := driver.find_element(By.CSS_SELECTOR, "#segment-form .segment-count").text)
                and t
            ),
            what="the live count",
        )
        assert count
        box.send_keys(" ,")
        wait(
            lambda: (
                "(top level)"
                in driver.find_element(By.CSS_SELECTOR, "#segment-form .segment-count").text
                or "not JSON"
                in driver.find_element(By.CSS_SELECTOR, "#segment-form .segment-count").text
            ),
            what="the error",
        )
        box.clear()
        box.send_keys('{"conditions": [{"field": "nope", "op": "eq", "value": "x"}]}')
        wait(
            lambda: (
                "conditions[0]"
                in driver.find_element(By.CSS_SELECTOR, "#segment-form .segment-count").text
            ),
            what="the condition at fault",
        )
        shoot(driver, shots, "segments")

        csv_file = tmp_path / "people.csv"
        csv_file.write_text("email,name,plan\nzed@example.com,Zed,pro\nyan@example.com,Yan,free\n")
        driver.get(site.server.url + "/admin/import")
        driver.find_element(By.ID, "file").send_keys(str(csv_file))
        driver.find_element(By.ID, "import-list").send_keys("morning")
        driver.find_element(By.ID, "preview-import").click()
        wait(lambda: driver.find_elements(By.ID, "import-preview"), what="the preview")
        assert "zed@example.com" in driver.find_element(By.ID, "import-preview").text
        shoot(driver, shots, "import-preview")
        driver.find_element(By.ID, "import-now").click()
        wait(lambda: driver.find_elements(By.ID, "import-report"), what="the report")
        assert "2 added" in driver.find_element(By.ID, "import-report").text
