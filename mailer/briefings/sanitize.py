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
    "MAX_NESTING",
    "HtmlBlock",
    "TooDeep",
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


# Deeper than any page a newsroom writes. The HTML parser under nh3 (html5ever) takes time
# quadratic in the depth (each nested list item walks the stack of open elements), so a
# 200 KB body of nested lists would otherwise cost minutes.
MAX_NESTING = 100

# Elements that have no end tag, or whose end tag is implied by the next one (so they do
# not nest when written without it): neither deepens the tree.
_NOT_NESTING: frozenset[str] = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
        "li",
        "p",
        "dt",
        "dd",
        "option",
        "optgroup",
        "tr",
        "td",
        "th",
        "thead",
        "tbody",
        "tfoot",
        "colgroup",
        "caption",
        "rb",
        "rt",
        "rp",
    ]
)
# Elements whose content is text to the HTML parser, whatever tags it seems to hold.
_RAW_TEXT: frozenset[str] = frozenset(
    {"script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes"}
    | {"noscript", "plaintext"}
)
_TAG_NAME = re.compile(r"[a-z][^\s/>]*")
# One attribute (its name, then = and a value, quoted or not) or a stray "/", as the HTML
# tokenizer reads them. Each match consumes at least a character.
_ATTRIBUTE = re.compile(r"""[^\s/>][^\s/>=]*(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]*))?|/""")


class TooDeep(ValueError):
    """A body whose elements nest deeper than :data:`MAX_NESTING`."""


def _check_nesting(fragment: str) -> None:
    """Raise TooDeep if the elements of ``fragment`` nest deeper than MAX_NESTING.

    Read on the raw input before any parser sees it, in one linear pass that tokenizes
    tags as the HTML parser does (quoted attribute values, comments and the text of
    script-like elements hold no tags), so that an end tag the parser would not see
    never lowers the count. Where it differs from the parser it counts deeper: "<div/>"
    opens a div, and a quote that never closes does not end the tags.
    """
    text = fragment.lower()
    depth, at, size = 0, 0, len(text)
    while (at := text.find("<", at)) >= 0:
        if text.startswith("<!--", at):
            end = text.find("-->", at + 4)
            if end < 0:
                return
            at = end + 3
            continue
        closing = text.startswith("</", at)
        name = _TAG_NAME.match(text, at + 2 if closing else at + 1)
        if name is None:
            if text.startswith(("<!", "<?", "</"), at):  # a bogus comment, up to ">"
                end = text.find(">", at)
                if end < 0:
                    return
                at = end + 1
            else:
                at += 1  # "<" as text
            continue
        at = _end_of_tag(text, name.end(), size)
        if at < 0:
            return
        tag = name.group()
        if tag in _NOT_NESTING:
            continue
        if closing:
            depth = max(depth - 1, 0)
        elif tag in _RAW_TEXT:
            end = text.find(f"</{tag}", at)
            if end < 0:
                return
            at = end + 2 + len(tag)  # past its end tag's name; the rest reads as a tag's
        else:
            depth += 1
            if depth > MAX_NESTING:
                raise TooDeep(f"elements nested more than {MAX_NESTING} deep")


def _end_of_tag(text: str, at: int, size: int) -> int:
    """The index after the ">" that ends the tag whose attributes start at ``at``, or -1."""
    while at < size:
        if text[at].isspace():
            at += 1
        elif text[at] == ">":
            return at + 1
        else:
            attribute = _ATTRIBUTE.match(text, at)
            assert attribute is not None  # any character but space and ">" starts one
            at = attribute.end()
    return -1


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

    Raises :class:`TooDeep` for elements nested deeper than :data:`MAX_NESTING`.
    """
    _check_nesting(fragment)
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
    start: int  # index of its start tag in the buffer
    text_start: int  # index of its first piece of text in the splitter's text pieces
    flushes: int  # paragraphs ended before it began: another one cuts it in two
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
        # The visible text of the buffer, piece by piece, so that an element's text can
        # be read without parsing its markup again (nested lists would make that
        # quadratic).
        self._texts: list[str] = []
        # The classes around the current position, outermost first, one entry per open
        # element: each a tuple of distinct names, shared with its parent when it adds
        # none, so nesting costs nothing however deep.
        self._classes: list[tuple[str, ...]] = [()]
        self._flushes = 0
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
            self._push_class(_class_of(attrs))
            self._list_depth = 1
            self._buffer.append(f"<{tag}>")
        elif tag in _BLOCK_TAGS:
            self._flush()
            self._push_class(_class_of(attrs))
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
        collapsed = _HTML_SPACE.sub(" ", data)
        self._texts.append(collapsed)
        self._buffer.append(html.escape(collapsed, quote=False))

    def close(self) -> None:
        super().close()
        self._flush()

    def _in_list_start(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _LIST_TAGS:
            self._list_depth += 1
            self._buffer.append(f"<{tag}>")
        elif tag == "li":
            self._texts.append(" ")
            self._push(tag, _class_of(attrs))
            self._buffer.append("<li>")
        elif tag in _BLOCK_TAGS or tag in _BREAK_TAGS:
            # A list stays one paragraph; blocks inside an item only need a word gap.
            self._texts.append(" ")
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
        self._push_class(own)
        classes = " ".join(self._classes[-1])
        self._open.append(_Open(tag, len(self._buffer), len(self._texts), self._flushes, classes))

    def _push_class(self, own: str) -> None:
        around = self._classes[-1]
        added = tuple(c for c in dict.fromkeys(own.split()) if c not in around)
        # Enough for any real page; a hostile one cannot grow every entry without end.
        self._classes.append((around + added)[:_MAX_CLASSES] if added else around)

    def _close(self, tag: str) -> None:
        """End the innermost open element; drop it (with its content) if ``drop`` says so."""
        element = self._open.pop() if self._open else None
        if element is None:
            self._buffer.append(f"</{tag}>")
            return
        self._pop_class()
        # Boilerplate patterns match at the start, so the start of the text decides; the
        # whole text is only joined for a part that is dropped.
        whole = element.flushes == self._flushes  # no paragraph began inside it
        start = _text_of(self._texts, element.text_start, _TEST_CHARS)
        if whole and self._drop is not None and self._drop(start, element.classes):
            text = _text_of(self._texts, element.text_start)
            if text:
                del self._buffer[element.start :]
                del self._texts[element.text_start :]
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
        self._flushes += 1
        content = _SPACES.sub(" ", "".join(self._buffer)).strip()
        self._buffer = []
        self._texts = []
        if content:
            self.blocks.append((content, " ".join(self._classes[-1]), False))

    def _pop_class(self) -> None:
        if len(self._classes) > 1:
            self._classes.pop()


# How much of an element's text the drop test reads: more than any boilerplate phrase.
_TEST_CHARS = 300
_MAX_CLASSES = 32


def _text_of(pieces: list[str], start: int, limit: int | None = None) -> str:
    """The visible text of ``pieces[start:]``; with ``limit``, of no more pieces than
    that (each holds at least a character, so that is at least ``limit`` characters)."""
    taken = pieces[start:] if limit is None else pieces[start : start + limit]
    return clean_text(" ".join("".join(taken).split()))


def _class_of(attrs: Sequence[tuple[str, str | None]]) -> str:
    return " ".join(value or "" for name, value in attrs if name == "class").strip()
