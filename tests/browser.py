"""Helpers for tests that talk to the app over real HTTP, and drive a real Chromium.

``LiveServer`` runs an ASGI app with uvicorn in a background thread on
127.0.0.1. It binds its port when created (so the URL is known before the app
is built, for example to put it in the links of an edition), starts serving
on ``start`` and stops cleanly on ``stop``; use it as a context manager.

``chromium`` makes a headless Chromium driven through chromedriver, with a
throwaway profile. ``require_browser`` skips a test when Chromium,
chromedriver or selenium are missing, or fails it when
``MAILER_TEST_REQUIRE_BROWSER=1`` (as in CI).
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import uvicorn

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REQUIRE_BROWSER_ENV = "MAILER_TEST_REQUIRE_BROWSER"

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1024,768",
)


class LiveServer:
    """An ASGI app served by uvicorn from a background thread."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        # Bound now and handed to uvicorn later: no window in which another
        # process could take a port we picked but had not bound yet.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, app: Any, *, ready_path: str = "/healthz", timeout: float = 10.0) -> None:
        """Serve ``app`` and return once ``ready_path`` answers 200."""
        if self._thread is not None:
            raise RuntimeError("this LiveServer was already started")
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=5
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"uvicorn:{self.port}", daemon=True)
        self._thread.start()
        self._wait_until_ready(ready_path, timeout)

    def _run(self) -> None:
        assert self._server is not None
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # reported to the test by _wait_until_ready
            self._error = exc

    def _wait_until_ready(self, path: str, timeout: float) -> None:
        assert self._thread is not None
        deadline = time.monotonic() + timeout
        last: object = "no answer yet"
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                self.stop()
                raise RuntimeError(f"uvicorn stopped while starting: {self._error!r}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=1) as response:  # noqa: S310
                    if response.status == 200:
                        return
                    last = f"HTTP {response.status}"
            except (urllib.error.URLError, OSError) as exc:
                last = exc
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.url}{path} did not answer 200 within {timeout}s: {last}")

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"uvicorn on {self.url} did not stop within {timeout}s")
        self._socket.close()

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def require_browser() -> None:
    """Skip (or, with MAILER_TEST_REQUIRE_BROWSER=1, fail) without a usable browser."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if not missing:
        return
    message = f"browser tests need {', '.join(missing)}, which is missing"
    if os.environ.get(REQUIRE_BROWSER_ENV) == "1":
        pytest.fail(f"{message} (and {REQUIRE_BROWSER_ENV}=1 requires them)")
    pytest.skip(f"{message}; set {REQUIRE_BROWSER_ENV}=1 to make this a failure")


@contextmanager
def chromium(
    user_data_dir: Path | None = None, *, page_load_timeout: float = 10.0
) -> Iterator[Any]:
    """A headless Chromium WebDriver with a throwaway profile; quit on exit.

    The profile lives in ``user_data_dir`` (for example under pytest's
    ``tmp_path``), or else in a temporary directory removed afterwards.
    """
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with ExitStack() as cleanup:
        if user_data_dir is None:
            user_data_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory()))
        user_data_dir.mkdir(parents=True, exist_ok=True)
        options = webdriver.ChromeOptions()
        # Both paths given explicitly, so Selenium Manager never looks anything up online.
        options.binary_location = str(CHROMIUM)
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={user_data_dir}")
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        cleanup.callback(driver.quit)  # runs before the profile directory is removed
        driver.set_page_load_timeout(page_load_timeout)
        yield driver


def is_png(path: Path) -> bool:
    data = path.read_bytes() if path.is_file() else b""
    return len(data) > 8 and data.startswith(b"\x89PNG\r\n\x1a\n")
