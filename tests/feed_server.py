"""A real HTTP server on 127.0.0.1 that serves feeds the way publishers do (and fail)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from tests.loopback import LoopbackServer


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "application/rss+xml; charset=utf-8"
    etag: str | None = None
    last_modified: str | None = None
    delay: float = 0.0  # seconds before answering: a slow server
    requests: list[dict[str, str]] = field(default_factory=list)


class FeedServer(LoopbackServer):
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                route.requests.append({k.lower(): v for k, v in self.headers.items()})
                if route.delay:
                    time.sleep(route.delay)
                # RFC 9110: If-None-Match, when sent, decides; If-Modified-Since only without it.
                if self.headers.get("If-None-Match") is not None:
                    fresh = route.etag is not None and self.headers["If-None-Match"] == route.etag
                else:
                    fresh = route.last_modified is not None and (
                        self.headers.get("If-Modified-Since") == route.last_modified
                    )
                if route.status == 200 and fresh:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                if route.etag:
                    self.send_header("ETag", route.etag)
                if route.last_modified:
                    self.send_header("Last-Modified", route.last_modified)
                self.end_headers()
                # The client may have given up already (the timeout test).
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(route.body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)


@contextmanager
def serving() -> Iterator[FeedServer]:
    server = FeedServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def rss(items: list[dict[str, str]], title: str = "The Daily Briefing") -> bytes:
    """A minimal RSS 2.0 document; each item gives guid, title, link, pubDate, content."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">',
        f"<channel><title>{title}</title><link>https://news.example.org/</link>",
        "<description>Briefings</description>",
    ]
    for item in items:
        parts.append(
            "<item>"
            f"<title>{item['title']}</title>"
            f"<link>{item.get('link', 'https://news.example.org/' + item['guid'])}</link>"
            f'<guid isPermaLink="false">{item["guid"]}</guid>'
            f"<pubDate>{item.get('pubDate', 'Tue, 24 Nov 2026 11:00:00 GMT')}</pubDate>"
            + "".join(f"<category>{t}</category>" for t in item.get("tags", "").split(",") if t)
            + f"<content:encoded><![CDATA[{item['content']}]]></content:encoded>"
            "</item>"
        )
    parts.append("</channel></rss>")
    return "\n".join(parts).encode("utf-8")
