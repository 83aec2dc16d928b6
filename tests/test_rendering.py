"""Render once, personalize cheaply (Invariant 3), with escaped values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from mailer.rendering.personalize import personalize, placeholder, placeholders_in
from mailer.rendering.render import (
    BriefingView,
    EditionView,
    NewsletterView,
    RenderError,
    render_edition,
)

NEWSLETTER = NewsletterView(
    name="The Daily Briefing",
    from_name="Briefing Desk",
    postal_address="100 Harbour Street, Valmere VM 20410",
    audience_note="you signed up at news.example.org",
)
EDITION = EditionView(subject="Ferries stop", preheader="Plus 1 more", date=date(2026, 11, 25))


@dataclass
class Stored:
    title: str
    lead: str
    lead_html: str
    sections: list[dict[str, Any]]
    url: str | None
    tags: list[str]


def briefing(title: str = "Ferries stop as crews strike", **overrides: Any) -> BriefingView:
    values: dict[str, Any] = {
        "title": title,
        "lead": "Ferry crews walked off the job on Monday.",
        "lead_html": "",
        "sections": [],
        "url": "https://news.example.org/ferries",
        "tags": [],
    }
    values.update(overrides)
    return BriefingView.from_stored(Stored(**values))


def test_template_layout_and_footer() -> None:
    item = briefing(
        sections=[
            {"label": "What’s going on now", "paragraphs": ["Talks broke down.", "Crews wait."]},
            {"label": None, "paragraphs": ["An unlabelled paragraph."]},
        ]
    )
    rendered = render_edition(
        "stuff-you-should-know", NEWSLETTER, EDITION, [item, briefing("Second story")]
    )

    html, text = rendered.html, rendered.text
    assert "Wednesday, November 25, 2026" in html and "Wednesday, November 25, 2026" in text
    assert "Plus 1 more" in html  # preheader
    assert html.index("Ferries stop as crews strike") < html.index("Second story")
    assert '<strong class="label"' in html and "What’s going on now:</strong>" in html
    assert "Crews wait." in html and "An unlabelled paragraph." in html
    assert "100 Harbour Street, Valmere VM 20410" in html and "100 Harbour Street" in text
    assert "you signed up at news.example.org" in html
    assert "What’s going on now: Talks broke down." in text
    # The footer says whom it was sent to: a forwarded copy tells its reader whose it is.
    # Every email also carries the reader's preference link and its edition's web copy.
    tokens = {"unsubscribe_url", "preferences_url", "web_url", "email"}
    assert placeholders_in(html, rendered.nonce) == tokens
    assert placeholders_in(text, rendered.nonce) == tokens
    assert len(html.encode()) < 90_000


def test_briefing_text_is_escaped_and_unsafe_links_dropped() -> None:
    hostile = briefing(
        title="<script>alert(1)</script> & friends",
        lead='She said "hi" <b>loudly</b>',
        url="javascript:alert(1)",
    )
    rendered = render_edition("stuff-you-should-know", NEWSLETTER, EDITION, [hostile])
    assert "<script>alert(1)</script>" not in rendered.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; friends" in rendered.html
    assert "javascript:" not in rendered.html
    # The plain-text twin is text: nothing to escape, nothing escaped.
    assert "<script>alert(1)</script> & friends" in rendered.text


def test_placeholders_cannot_be_forged_by_content() -> None:
    rendered = render_edition(
        "stuff-you-should-know",
        NEWSLETTER,
        EDITION,
        [briefing(lead="Click %%000000000000:unsubscribe_url%% now")],
    )
    values = {"unsubscribe_url": "https://news.example.org/u/abc", "name": "", "email": ""}
    html = personalize(rendered.html, rendered.nonce, values, html=True)
    assert "%%000000000000:unsubscribe_url%%" in html  # left as the author wrote it
    assert 'href="https://news.example.org/u/abc"' in html


def test_personalized_values_are_escaped_in_html_only() -> None:
    nonce = "0123456789ab"
    content = f"Hi {placeholder(nonce, 'name')}!"
    values = {"name": "<Bo & Co>", "unsubscribe_url": "", "email": ""}
    assert personalize(content, nonce, values, html=True) == "Hi &lt;Bo &amp; Co&gt;!"
    assert personalize(content, nonce, values, html=False) == "Hi <Bo & Co>!"
    with pytest.raises(KeyError):
        placeholder(nonce, "password")


def test_template_without_unsubscribe_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bare.mjml").write_text(
        "<mjml><mj-body><mj-section><mj-column><mj-text>{{ edition.subject }}</mj-text>"
        "</mj-column></mj-section></mj-body></mjml>"
    )
    (tmp_path / "bare.txt").write_text("{{ edition.subject }} {{ token('unsubscribe_url') }}")
    with pytest.raises(RenderError, match="HTML part has no unsubscribe link"):
        render_edition("bare", NEWSLETTER, EDITION, [briefing()], directory=tmp_path)


def test_broken_template_names_the_problem(tmp_path: Path) -> None:
    (tmp_path / "broken.mjml").write_text("<mjml><mj-body>{% for x in %}</mj-body></mjml>")
    (tmp_path / "broken.txt").write_text("x")
    with pytest.raises(RenderError, match=r"template 'broken' \(line 1\)"):
        render_edition("broken", NEWSLETTER, EDITION, [briefing()], directory=tmp_path)


def test_oversized_edition_is_refused_before_gmail_would_clip_it() -> None:
    long = [{"label": "More", "paragraphs": ["word " * 4000]}]
    with pytest.raises(RenderError, match="Gmail clips"):
        render_edition(
            "stuff-you-should-know",
            NEWSLETTER,
            EDITION,
            [briefing(f"Story {i}", sections=long) for i in range(6)],
        )


def test_the_html_says_what_language_it_is_in(tmp_path: Path) -> None:
    german = NewsletterView(
        name="Der Tag",
        from_name="Redaktion",
        postal_address="Hafenstraße 1, Valmere",
        audience_note="",
        language="de",
    )
    html = render_edition("stuff-you-should-know", german, EDITION, [briefing()]).html
    assert '<html lang="de"' in html and 'lang="und"' not in html
    # A template that names no language of its own gets the newsletter's.
    (tmp_path / "plain.mjml").write_text(
        "<mjml><mj-body><mj-section><mj-column><mj-text>"
        "<a href=\"{{ token('unsubscribe_url') }}\">x</a></mj-text>"
        "</mj-column></mj-section></mj-body></mjml>"
    )
    (tmp_path / "plain.txt").write_text("{{ token('unsubscribe_url') }}")
    html = render_edition("plain", german, EDITION, [], directory=tmp_path).html
    assert '<html lang="de"' in html and 'lang="und"' not in html
