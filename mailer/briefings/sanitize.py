"""Make untrusted HTML from feeds, CMS posts and Markdown safe to put in an email.

Everything goes through nh3 (the Rust ammonia sanitizer, which parses like a browser
does) before any of our own code looks at the markup, so the small hand-written walkers
below only ever see well-formed, already-harmless HTML.

* :func:`sanitize_html` is the allow-list for the inline HTML of one paragraph.
* :func:`html_to_text` is the plain-text twin of a fragment.
* :func:`html_blocks` splits a body into the paragraphs a briefing is made of.
* :func:`clean_text` (and :func:`clean_data` for parsed JSON) removes the characters no
  stored text may hold. Every way text comes in (files, feeds, the push API, CSV imports,
  provider webhooks) goes through it, so all of them treat a NUL the same way.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from html.parser import HTMLParser
from typing import Any, NamedTuple

import nh3

__all__ = [
    "ALLOWED_ATTRIBUTES",
    "ALLOWED_TAGS",
    "ALLOWED_URL_SCHEMES",
    "HtmlBlock",
    "clean_data",
    "clean_text",
    "html_blocks",
    "html_to_text",
    "sanitize_html",
]

ALLOWED_TAGS: frozenset[str] = frozenset(
    {"p", "br", "a", "em", "i", "strong", "b", "ul", "ol", "li"}
)
ALLOWED_ATTRIBUTES: dict[str, frozenset[str]] = {"a": frozenset({"href", "title"})}
ALLOWED_URL_SCHEMES: frozenset[str] = frozenset({"http", "https", "mailto"})
LINK_REL = "noopener noreferrer"

# Elements whose text is never something a reader should see in a briefing: code, styling,
# embedded documents, form controls and their captions, images drawn as markup. Removing only
# the tags would leave the raw script or CSS as visible text.
_DROP_WITH_CONTENT: frozenset[str] = frozenset(
    {
        "script",
        "style",
        "iframe",
        "frame",
        "frameset",
        "template",
        "noscript",
        "noembed",
        "noframes",
        "object",
        "embed",
        "applet",
        "svg",
        "math",
        "title",
        "head",
        "textarea",
        "select",
        "button",
        "xmp",
        "plaintext",
    }
)

# Elements that end one paragraph and start the next. They survive the first pass so the
# splitter can see where paragraphs are; the final allow-list keeps none of them but p.
_BLOCK_TAGS: frozenset[str] = frozenset(
    {
        "p",
        "div",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "blockquote",
        "pre",
        "address",
        "article",
        "aside",
        "footer",
        "header",
        "main",
        "nav",
        "section",
        "figure",
        "figcaption",
        "details",
        "summary",
        "dl",
        "dt",
        "dd",
        "table",
        "caption",
        "thead",
        "tbody",
        "tfoot",
        "tr",
        "td",
        "th",
    }
)
_LIST_TAGS: frozenset[str] = frozenset({"ul", "ol"})
# Inline elements a CMS wraps its prompts in ("<span class=paywall>"). They survive the
# first pass with their class, so a prompt can be dropped in whatever element it comes;
# the final allow-list unwraps them.
_CLASSED_INLINE: frozenset[str] = frozenset(
    {"span", "small", "mark", "u", "s", "sub", "sup", "abbr", "cite", "q", "time", "font"}
    | {"ins", "del", "code", "kbd", "samp", "var", "dfn", "bdi", "bdo", "data", "label"}
)
_BREAK_TAGS: frozenset[str] = frozenset({"hr"})

_STRICT = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    clean_content_tags=set(_DROP_WITH_CONTENT),
    attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
    url_schemes=set(ALLOWED_URL_SCHEMES),
    link_rel=LINK_REL,
    strip_comments=True,
    # A relative or protocol-relative link has no base in a mail client: it is either
    # broken or ("//host/…") pointing somewhere the writer did not choose.
    url_relative="deny",
)

# The first pass keeps block structure and the class attribute: the class is how a CMS
# marks its paywall prompt, and it must be read before the strict pass strips it.
_STRUCTURE = nh3.Cleaner(
    tags=set(ALLOWED_TAGS | _BLOCK_TAGS | _BREAK_TAGS | _CLASSED_INLINE),
    clean_content_tags=set(_DROP_WITH_CONTENT),
    attributes={
        tag: {"class"} | ALLOWED_ATTRIBUTES.get(tag, frozenset())
        for tag in ALLOWED_TAGS | _BLOCK_TAGS | _CLASSED_INLINE
    },
    url_schemes=set(ALLOWED_URL_SCHEMES),
    link_rel=LINK_REL,
    strip_comments=True,
    url_relative="deny",
)

_HTML_SPACE = re.compile(r"[ \t\n\r\f]+")
_SPACES = re.compile(r" {2,}")
# Structure marks while collecting text: control characters, which are removed from the
# text itself, so they cannot be forged by the input.
_LINE = "\x00"
_PARA = "\x01"
# What clean_text removes: the C0 controls but tab, line feed and carriage return, DEL and
# the C1 controls, lone surrogates and the non-characters U+FFFE and U+FFFF. PostgreSQL
# cannot store a NUL in text or JSON, a lone surrogate cannot be encoded as UTF-8 at all,
# and XML (which the renderer speaks) refuses every one of them; none is text a reader sees.
_UNWANTED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_SEPARATORS = re.compile(r" *[\x00\x01][ \x00\x01]*")
_BR = "<br>"
_SPACE_AROUND_STRUCTURE = re.compile(r"\s*(<br>|</?(?:ul|ol|li)>)\s*")


def clean_text(text: str) -> str:
    """Return ``text`` without control characters, lone surrogates and non-characters.

    Stripped rather than refused: they are noise a copy-and-paste or a broken encoder left,
    and refusing would lose the good text around them. Tab, line feed and carriage return
    stay (they are layout); anything that must be one line checks that itself.
    """
    return _UNWANTED.sub("", text)


def clean_data(value: Any) -> Any:
    """:func:`clean_text` applied to every string in parsed JSON: keys, values, nested."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [clean_data(item) for item in value]
    if isinstance(value, dict):
        return {clean_data(k): clean_data(v) for k, v in value.items()}
    return value


def sanitize_html(fragment: str) -> str:
    """Return ``fragment`` reduced to the inline allow-list, safe inside an email body."""
    # Character references such as &#1; decode to control characters in the parse.
    return clean_text(_STRICT.clean(fragment))


def html_to_text(fragment: str) -> str:
    """Return the text a reader sees: entities decoded, whitespace collapsed.

    Line breaks and list items start new lines (items as ``• item``); blocks are
    separated by a blank line. The result is plain text: escape it before putting it
    back into HTML.
    """
    return _visible_text(_STRUCTURE.clean(fragment))


def _visible_text(clean: str) -> str:
    walker = _TextWalker()
    walker.feed(clean)
    walker.close()
    return walker.text()


class HtmlBlock(NamedTuple):
    """One paragraph of a body: sanitized inline HTML, its text, the classes around it."""

    html: str
    text: str
    # Space-separated class attributes of the block and every element around it, read
    # from the untrusted input; only for recognizing boilerplate, never rendered.
    classes: str
    # True for a part the ``drop`` test of :func:`html_blocks` took out; its text is kept
    # only so the caller can say what was dropped.
    boilerplate: bool = False


# Called with the visible text of a part of a body and the classes around it: True to
# drop the part as boilerplate (a paywall or log-in prompt).
DropTest = Callable[[str, str], bool]


def html_blocks(fragment: str, *, drop: DropTest | None = None) -> list[HtmlBlock]:
    """Split a body into paragraphs.

    A paragraph is the inline content of a block element (p, div, h1-h6, blockquote, …),
    a whole list (ul/ol), or a run of text ended by ``<br><br>``. Paragraphs without
    visible text are left out.

    With ``drop``, boilerplate goes in whatever element it comes: every paragraph, every
    list item and every inline element that carries a class is tested, and each part
    dropped is returned as a block marked ``boilerplate`` (in document order).
    """
    splitter = _BlockSplitter(drop)
    splitter.feed(_STRUCTURE.clean(fragment))
    splitter.close()
    blocks: list[HtmlBlock] = []
    for raw, classes, dropped in splitter.blocks:
        if dropped:
            blocks.append(HtmlBlock("", raw, classes, boilerplate=True))
            continue
        inline = _tidy(sanitize_html(raw))
        # The strict pass's output is safe to walk directly; another nh3 pass would
        # only cost time on deeply nested input.
        text = _visible_text(inline)
        if not text:
            continue
        if drop is not None and drop(text, classes):
            blocks.append(HtmlBlock("", text, classes, boilerplate=True))
        else:
            blocks.append(HtmlBlock(inline, text, classes))
    return blocks


def _tidy(fragment: str) -> str:
    # Source line wraps next to line breaks and list items render as nothing; dropping
    # them keeps the stored HTML readable and the text twin free of stray spaces.
    tidy = _SPACE_AROUND_STRUCTURE.sub(r"\1", fragment).strip()
    # Index arithmetic, not a "(<br>)+$" pattern or repeated slicing: both are quadratic
    # on a long run of breaks.
    start, end = 0, len(tidy)
    while tidy.startswith(_BR, start, end):
        start += len(_BR)
    while end > start and tidy.endswith(_BR, start, end):
        end -= len(_BR)
    return tidy[start:end]


def _start_tag(tag: str, attrs: Sequence[tuple[str, str | None]]) -> str:
    rendered = "".join(
        f' {name}="{html.escape(value, quote=True)}"' for name, value in attrs if value is not None
    )
    return f"<{tag}{rendered}>"


class _TextWalker(HTMLParser):
    """Collects visible text from already-sanitized HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "li":
            self._parts += [_LINE, "• "]
        elif tag == "br" or tag in _LIST_TAGS:
            self._parts.append(_LINE)
        elif tag in _BLOCK_TAGS or tag in _BREAK_TAGS:
            self._parts.append(_PARA)

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCK_TAGS:
            self._parts.append(_PARA)
        elif tag == "li" or tag in _LIST_TAGS:
            self._parts.append(_LINE)

    def handle_data(self, data: str) -> None:
        # Cleaning removes the structure marks too, so the input cannot forge them.
        self._parts.append(clean_text(_HTML_SPACE.sub(" ", data)))

    def text(self) -> str:
        joined = _SEPARATORS.sub(
            lambda m: "\n\n" if _PARA in m.group() else "\n", "".join(self._parts)
        )
        return _SPACES.sub(" ", joined).strip()


class _Open(NamedTuple):
    """An element the splitter may drop once it sees its end: a list item, or an inline
    element with a class."""

    tag: str
    # Index of its start tag in the buffer; None once a flush cut the element in two.
    start: int | None
    classes: str  # its own and its ancestors'


class _BlockSplitter(HTMLParser):
    """Cuts already-sanitized HTML into paragraph-sized fragments of inline HTML."""

    def __init__(self, drop: DropTest | None = None) -> None:
        super().__init__(convert_charrefs=True)
        # (fragment, classes, dropped): inline HTML of a paragraph, or the visible text
        # of a part that ``drop`` took out.
        self.blocks: list[tuple[str, str, bool]] = []
        self._drop = drop
        self._buffer: list[str] = []
        self._classes: list[str] = []
        # Every open list item and inline element, innermost last (sanitized input is
        # well-formed, so end tags pop them in order); None for one never dropped.
        self._open: list[_Open | None] = []
        self._list_depth = 0
        # Index in the buffer of a <br> that only whitespace has followed so far: a
        # second one makes the pair a paragraph break.
        self._open_break: int | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._list_depth:
            self._in_list_start(tag, attrs)
        elif tag in _LIST_TAGS:
            self._flush()
            self._classes.append(_class_of(attrs))
            self._list_depth = 1
            self._buffer.append(f"<{tag}>")
        elif tag in _BLOCK_TAGS:
            self._flush()
            self._classes.append(_class_of(attrs))
        elif tag in _BREAK_TAGS:
            self._flush()
        elif tag == "br":
            self._line_break()
        else:
            self._open_break = None
            self._inline_start(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if self._list_depth:
            self._in_list_end(tag)
        elif tag in _BLOCK_TAGS:
            self._flush()
            self._pop_class()
        elif tag not in _BREAK_TAGS and tag != "br":
            self._inline_end(tag)

    def handle_data(self, data: str) -> None:
        if data.strip(" \t\n\r\f"):
            self._open_break = None
        self._buffer.append(html.escape(_HTML_SPACE.sub(" ", data), quote=False))

    def close(self) -> None:
        super().close()
        self._flush()

    def _in_list_start(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _LIST_TAGS:
            self._list_depth += 1
            self._buffer.append(f"<{tag}>")
        elif tag == "li":
            self._push(tag, _class_of(attrs))
            self._buffer.append("<li>")
        elif tag in _BLOCK_TAGS or tag in _BREAK_TAGS:
            # A list stays one paragraph; blocks inside an item only need a word gap.
            self._buffer.append(" ")
        else:
            self._inline_start(tag, attrs)

    def _in_list_end(self, tag: str) -> None:
        if tag in _LIST_TAGS:
            self._list_depth -= 1
            self._buffer.append(f"</{tag}>")
            if not self._list_depth:
                self._flush()
                self._pop_class()
        elif tag == "li":
            self._close(tag)
        elif tag in _BLOCK_TAGS:
            self._buffer.append(" ")
        elif tag != "br":
            self._inline_end(tag)

    def _inline_start(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        own = _class_of(attrs)
        if own:
            self._push(tag, own)
        else:
            self._open.append(None)
        self._buffer.append(_start_tag(tag, attrs))

    def _inline_end(self, tag: str) -> None:
        self._close(tag)

    def _push(self, tag: str, own: str) -> None:
        self._classes.append(own)
        self._open.append(_Open(tag, len(self._buffer), " ".join(c for c in self._classes if c)))

    def _close(self, tag: str) -> None:
        """End the innermost open element; drop it (with its content) if ``drop`` says so."""
        element = self._open.pop() if self._open else None
        if element is None:
            self._buffer.append(f"</{tag}>")
            return
        self._pop_class()
        if element.start is not None and self._drop is not None:
            # What the element holds, after its own start tag (a list item's bullet).
            text = _visible_text(sanitize_html("".join(self._buffer[element.start + 1 :])))
            if text and self._drop(text, element.classes):
                del self._buffer[element.start :]
                self.blocks.append((text, element.classes, True))
                return
        self._buffer.append(f"</{tag}>")

    def _line_break(self) -> None:
        if self._open_break is None:
            self._open_break = len(self._buffer)
            self._buffer.append("<br>")
            return
        del self._buffer[self._open_break :]
        self._flush()

    def _flush(self) -> None:
        self._open_break = None
        # An element still open loses its beginning to this paragraph: it can no longer
        # be dropped whole (the blocks inside it still carry its class).
        self._open = [None if e is None else e._replace(start=None) for e in self._open]
        content = _SPACES.sub(" ", "".join(self._buffer)).strip()
        self._buffer = []
        if content:
            self.blocks.append((content, " ".join(c for c in self._classes if c), False))

    def _pop_class(self) -> None:
        if self._classes:
            self._classes.pop()


def _class_of(attrs: Sequence[tuple[str, str | None]]) -> str:
    return " ".join(value or "" for name, value in attrs if name == "class").strip()
