"""An operator reads an edition's stats in a real browser: headless Chromium, uvicorn, SQLite.

The same story as ``test_web_stats`` (a sent edition, signed provider events, a
reader leaving by link); the page is opened with an editor's workspace session, and
what Chromium renders is checked: the table, and the SVG chart's bars,
drawn with the page's CSP in force (no scripts on the page).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailer.config import Settings
from mailer.db import migrate
from mailer.db.session import make_engine
from mailer.runtime import Runtime
from tests.browser import chromium, is_png, require_browser
from tests.conftest import SECRET
from tests.test_web_stats import Site, page_path, serve, tell_story

pytestmark = pytest.mark.browser


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    require_browser()  # skip before doing any work when there is no browser
    url = f"sqlite:///{tmp_path / 'mailer.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    settings = Settings(
        database_url=url,
        outbox_dir=tmp_path / "outbox",
        secret_key=SECRET,
        base_url="https://news.example.org",
    )
    runtime = Runtime(settings)
    try:
        with serve(runtime) as served:  # stopped before the database engine is closed
            yield served
    finally:
        runtime.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "chromium-profile") as driver:
        yield driver


def test_an_operator_sees_the_table_and_the_chart(site: Site, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    story = tell_story(site)
    port = site.server.port
    base = f"http://127.0.0.1:{port}"
    browser.get(base + "/healthz")  # a page of the site, to set its cookie on
    browser.add_cookie({"name": "mailer_session", "value": site.session_cookie, "path": "/"})
    browser.get(base + page_path(story.edition_id))

    assert browser.title.startswith(f"Edition {story.edition_id}: <script>")
    heading = browser.find_element(By.ID, "subject")
    assert heading.text == '<script>alert("pwned")</script> & <b>Tuesday</b>'  # shown as text

    # The table, as rendered.
    for metric, count in story.counts.items():
        row = browser.find_element(By.ID, f"row-{metric}")
        assert row.find_element(By.CLASS_NAME, "count").text == count, metric
        assert row.find_element(By.CLASS_NAME, "rate").text == story.rates.get(metric, ""), metric

    # The chart: one drawn bar per hour and kind, each with the area its count implies.
    chart = browser.find_element(By.CSS_SELECTOR, "figure#timeline svg.chart")
    assert chart.is_displayed()
    assert chart.size["width"] > 500 and chart.size["height"] > 150
    drawn = browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")
    assert len(drawn) == len(story.bars) == 8
    seen: dict[tuple[str, str], int] = {}
    heights: dict[int, float] = {}
    for bar in drawn:
        key = (bar.get_attribute("data-start"), bar.get_attribute("data-kind"))
        seen[key] = int(bar.get_attribute("data-count"))
        assert bar.is_displayed()
        assert bar.size["width"] > 5 and bar.size["height"] > 0
        heights.setdefault(seen[key], bar.size["height"])
        # The fill comes from the SVG attribute: nothing was blocked.
        assert bar.value_of_css_property("fill").startswith("rgb(")
    assert seen == story.bars
    # Heights are proportional to counts (8 vs 1), within a pixel's rounding.
    assert heights[8] / heights[1] == pytest.approx(8, rel=0.1)
    legend = browser.find_elements(By.CSS_SELECTOR, "svg.chart g.legend-item")
    assert [item.text for item in legend] == [
        "delivered",
        "opens",
        "clicks",
        "bounces",
        "drops",
        "complaints",
        "unsubscribes",
    ]
    # The accessible table is in the page, but takes no room on screen.
    data_table = browser.find_element(By.ID, "timeline-data")
    assert data_table.size["width"] <= 1 and data_table.size["height"] <= 1
    rows = data_table.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == len({start for start, _ in story.bars})

    screenshot = tmp_path / "stats-page.png"
    assert browser.save_screenshot(str(screenshot))
    assert is_png(screenshot)

    # On a phone the numbers stay on screen and the chart keeps legible type: it scrolls
    # sideways rather than shrinking its labels.
    browser.set_window_size(390, 844)
    browser.get(base + page_path(story.edition_id))
    width = browser.execute_script("return document.documentElement.clientWidth")
    assert browser.find_element(By.ID, "counts").size["width"] <= width
    label = browser.find_element(By.CSS_SELECTOR, "svg.chart g.x-axis text")
    assert label.size["height"] >= 11, label.size
    browser.execute_script("arguments[0].scrollIntoView()", label)
    phone = tmp_path / "stats-page-phone.png"
    assert browser.save_screenshot(str(phone))
    assert is_png(phone)
    keep = os.environ.get("MAILER_TEST_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(phone, Path(keep) / phone.name)
        shutil.copy(screenshot, Path(keep) / screenshot.name)
