"""Tests for mailer.briefings.parser against the newsroom's samples and edge cases."""

from __future__ import annotations

import hashlib
import json
import pickle
from datetime import UTC, datetime
from pathlib import Path

import pytest

import mailer.demo
from mailer.briefings.parser import (
    DEFAULT_BOILERPLATE,
    BriefingError,
    ParsedBriefing,
    Section,
    parse_file,
    parse_text,
)

DATA = Path(__file__).parent / "data" / "briefings"
DEMO = Path(mailer.demo.__file__).parent / "briefings"

CENTRAL_BANK = DATA / "2026-11-20-central-bank.txt"
CLOUD_OUTAGE = DATA / "2026-11-21-cloud-outage.txt"
CONGESTION = DATA / "2026-11-22-congestion-pricing.txt"
LUNAR = DATA / "2026-11-23-lunar-lander.md"


def labels(briefing: ParsedBriefing) -> list[str | None]:
    return [s.label for s in briefing.sections]


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def md(text: str) -> ParsedBriefing:
    return parse_text(text, source="t.md", markdown=True)


def txt(text: str) -> ParsedBriefing:
    return parse_text(text, source="t.txt", markdown=False)


# --- the newsroom's samples -------------------------------------------------------------


def test_central_bank_sample() -> None:
    b = parse_file(CENTRAL_BANK)

    assert b.source == str(CENTRAL_BANK)
    assert b.lead == (
        "The Eastland Central Bank kept interest rates unchanged for a third straight "
        "meeting, signalling it is in no hurry to cut again."
    )
    assert b.title == b.lead
    assert labels(b) == [
        "Some stuff you should know before you read",
        "What's going on now",
        "What happens next",
    ]
    assert b.dropped == (
        "Already a subscriber? Log in to keep reading. Having trouble seeing this content "
        "after logging in? Check that your payment method is up to date.",
    )
    now = b.sections[1]
    assert len(now.paragraphs) == 2
    assert now.paragraphs[0].startswith("At Thursday's meeting, policymakers held")
    assert now.paragraphs[0].endswith('keep deciding "meeting by meeting."')
    assert now.paragraphs[1].startswith("Several governors argued")
    assert now.body == "\n\n".join(now.paragraphs)
    assert b.sections[2].paragraphs == (
        "Markets now expect at most one more cut next year. The next policy meeting is "
        "scheduled for late January, when the bank will also publish fresh growth and "
        "inflation forecasts.",
    )
    assert b.tags == ()
    assert b.url is None
    assert b.published_at is None
    assert b.content_hash == hashlib.sha256(CENTRAL_BANK.read_bytes()).hexdigest()


def test_cloud_outage_sample_without_boilerplate() -> None:
    b = parse_file(CLOUD_OUTAGE)

    assert b.dropped == ()
    assert b.lead.startswith("A six-hour outage at Helios Cloud")
    assert labels(b) == [
        "Some stuff you should know before you read",
        "What's going on now",
        "Why it matters",
    ]
    assert b.sections[1].paragraphs[1] == (
        "Customers who had built backups in a second region reported only brief disruption."
    )
    assert len(b.sections[2].paragraphs) == 1


def test_congestion_sample_keeps_label_verbatim_and_drops_login_prompt() -> None:
    b = parse_file(CONGESTION)

    assert len(b.dropped) == 1
    assert b.dropped[0].startswith("Already a subscriber? Make sure to log into your account")
    assert b.lead == (
        "Northbridge's city council voted 7-4 to charge drivers a daily fee to enter the "
        "downtown core starting next spring."
    )
    assert labels(b) == [
        "Some shit you should know before you read",
        "What's going on now",
        "More on the vote",
    ]
    # "7 a.m." inside the text must not confuse the label, and the follow-on stays attached.
    assert b.sections[1].paragraphs[0].startswith("The fee will be $9 on weekdays between 7 a.m.")
    assert b.sections[1].paragraphs[1].startswith("Opponents, including several downtown")
    assert b.sections[2].paragraphs[0].startswith('Mayor Dana Okafor called the decision "the')


def test_lunar_markdown_sample_with_front_matter() -> None:
    b = parse_file(LUNAR)

    assert b.title == "Space agency pushes back crewed lunar landing by a year"
    assert b.lead == (
        "The first crewed landing on the Moon in more than half a century has been delayed "
        "again, this time to late 2028."
    )
    assert b.url == "https://news.example.org/briefings/lunar-landing-delay"
    assert b.published_at == datetime(2026, 11, 23, 11, 0, tzinfo=UTC)
    assert b.published_at is not None and b.published_at.utcoffset() is not None
    assert b.tags == ("science", "space")
    assert labels(b) == [
        "Some stuff you should know before you read",
        "What's going on now",
        "The bigger picture",
    ]
    assert (
        "tanker launches \u2014 something that has never been done" in (b.sections[0].paragraphs[0])
    )
    assert all("**" not in s.body for s in b.sections)
    assert b.dropped == ()


def test_to_dict_is_json_ready() -> None:
    d = parse_file(LUNAR).to_dict()

    assert json.loads(json.dumps(d)) == d
    assert d["published"] == "2026-11-23T11:00:00+00:00"
    assert d["tags"] == ["science", "space"]
    assert d["source"] == str(LUNAR)
    assert d["dropped"] == []
    sections = d["sections"]
    assert isinstance(sections, list)
    assert sections[1] == {
        "label": "What's going on now",
        "body": sections[1]["paragraphs"][0],
        "paragraphs": [
            "Officials said two uncrewed test flights slipped after problems with the lander's "
            "engines during ground testing. The crew of four has already been named and will "
            "keep training on the current timeline."
        ],
    }
    assert set(d) == {
        "title",
        "lead",
        "sections",
        "tags",
        "url",
        "published",
        "dropped",
        "source",
        "content_hash",
    }


# --- demo briefings ---------------------------------------------------------------------


def test_demo_briefings_all_parse() -> None:
    files = sorted(p for p in DEMO.iterdir() if p.is_file())
    assert sorted(p.suffix for p in files) == [".md", ".txt", ".txt", ".txt", ".txt", ".txt"]

    parsed = [parse_file(p) for p in files]
    for b in parsed:
        labelled = [s for s in b.sections if s.label is not None]
        assert len(labelled) >= 2, b.source
        assert all(s.paragraphs and all(s.paragraphs) for s in b.sections), b.source
        assert b.lead and b.title
    assert sum(1 for b in parsed if b.dropped) >= 1
    assert any(len(s.paragraphs) > 1 for b in parsed for s in b.sections)
    (markdown,) = [b for b in parsed if b.source.endswith(".md")]
    assert markdown.tags
    assert markdown.url is not None and markdown.published_at is not None
    assert markdown.title != markdown.lead


# --- paragraphs and typography ----------------------------------------------------------


def test_typographic_characters_survive() -> None:
    b = txt(
        "The mayor\u2019s plan passed \u2014 narrowly.\n"
        "What\u2019s going on now: Critics called it \u201ca gift\u201d to developers "
        "\u2014 and \u00abunfair\u00bb.\n"
    )

    assert b.lead == "The mayor\u2019s plan passed \u2014 narrowly."
    assert labels(b) == ["What\u2019s going on now"]
    assert b.sections[0].paragraphs == (
        "Critics called it \u201ca gift\u201d to developers \u2014 and \u00abunfair\u00bb.",
    )


def test_text_every_line_is_a_paragraph_blank_lines_optional() -> None:
    b = txt("\n\nLead sentence.\r\nWhy it matters: One.\r\n\r\n\r\nTwo.\rThree.\n\n")

    assert b.lead == "Lead sentence."
    assert b.sections == (Section("Why it matters", ("One.", "Two.", "Three.")),)


def test_markdown_joins_soft_wrapped_lines() -> None:
    b = md(
        "The lead is written\non two lines.\n\n"
        "**What happens next:** The vote is\n   on Friday.\n\n"
        "A follow-on\nparagraph.\n"
    )

    assert b.lead == "The lead is written on two lines."
    assert b.sections == (
        Section("What happens next", ("The vote is on Friday.", "A follow-on paragraph.")),
    )


@pytest.mark.parametrize(
    "paragraph",
    [
        "**Why it matters:** Text.",
        "**Why it matters**: Text.",
        "__Why it matters:__ Text.",
        "__Why it matters__: Text.",
        "Why it matters: Text.",
    ],
)
def test_markdown_label_forms(paragraph: str) -> None:
    b = md(f"Lead.\n\n{paragraph}\n")

    assert b.sections == (Section("Why it matters", ("Text.",)),)


def test_bold_label_is_not_special_in_plain_text() -> None:
    b = txt("Lead.\nWhy it matters: One.\n**Bold** text: not a label here.\n")

    assert b.sections[0].paragraphs == ("One.", "**Bold** text: not a label here.")


def test_unlabelled_paragraphs_before_first_label_form_a_none_section() -> None:
    b = txt("Lead.\nFirst context paragraph.\nSecond one.\nWhat's next: Later.\nMore.\n")

    assert b.sections == (
        Section(None, ("First context paragraph.", "Second one.")),
        Section("What's next", ("Later.", "More.")),
    )


def test_label_alone_on_its_line_heads_the_following_paragraphs() -> None:
    b = txt("Lead.\nWhat happens next:\nThe vote is on Friday.\nThen a recount.\n")

    assert b.sections == (
        Section("What happens next", ("The vote is on Friday.", "Then a recount.")),
    )


def test_only_lead_gives_no_sections() -> None:
    b = txt("Just one sentence.\n")

    assert b.lead == b.title == "Just one sentence."
    assert b.sections == ()


# --- what is and is not a label ---------------------------------------------------------


def test_colon_later_in_a_sentence_is_not_a_label() -> None:
    sentence = (
        "Officials said on Tuesday that the plan, which had been debated for years, "
        "was finally ready: the first trains run in May."
    )
    b = txt(f"Lead.\nWhy it matters: One.\n{sentence}\n")

    assert labels(b) == ["Why it matters"]
    assert b.sections[0].paragraphs == ("One.", sentence)


def test_label_is_only_the_part_before_the_first_colon() -> None:
    b = txt("Lead.\nNote: The session starts at 5:30 p.m. sharp.\n")

    assert b.sections == (Section("Note", ("The session starts at 5:30 p.m. sharp.",)),)


@pytest.mark.parametrize(
    "paragraph",
    [
        "https://example.org/story: a link, not a label",
        "The time was 10:30 when it started.",
        'He said "no": and left the room.',
        "He said \u201cno\u201d: and left the room.",
        "It rained. Then: floods everywhere.",
        "Really? Yes: it happened.",
        "One two three four five six seven eight nine ten eleven: too many words.",
        "A" * 81 + ": too many characters.",
        "2026: a number alone is not a phrase.",
    ],
)
def test_things_that_are_not_labels(paragraph: str) -> None:
    b = txt(f"Lead.\nWhy it matters: One.\n{paragraph}\n")

    assert labels(b) == ["Why it matters"]
    assert b.sections[0].paragraphs == ("One.", paragraph)


def test_longest_allowed_label() -> None:
    label = "one two three four five six seven eight nine ten"
    b = txt(f"Lead.\n{label}: Text.\n")

    assert labels(b) == [label]


def test_lead_that_looks_like_a_label_stays_the_lead() -> None:
    b = txt("Breaking: the bridge has reopened.\nWhy it matters: Traffic.\n")

    assert b.lead == "Breaking: the bridge has reopened."
    assert labels(b) == ["Why it matters"]


# --- boilerplate ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt",
    [
        "Already a subscriber? Sign in.",
        "Log in to keep reading.",
        "Log in to continue reading this briefing.",
        "Make sure to log into your account before viewing this content.",
        "Subscribe to keep reading.",
        "Subscribe to continue reading.",
        "This article is for subscribers only.",
        "This content is for subscribers.",
        "Having trouble seeing this content? Refresh the page.",
        "Sign in to read the full story.",
        "SIGN IN TO READ.",
        "To continue reading, please log in.",
        "You\u2019ve reached your free article limit.",
    ],
)
def test_default_boilerplate_phrasings_are_dropped(prompt: str) -> None:
    b = txt(f"{prompt}\nThe real lead.\nWhy it matters: Text.\n")

    assert b.dropped == (prompt,)
    assert b.lead == "The real lead."


def test_boilerplate_is_anchored_at_paragraph_start() -> None:
    para = "Readers who log in to keep reading will see the full budget tables."
    b = txt(f"Lead.\nWhy it matters: One.\n{para}\n")

    assert b.dropped == ()
    assert b.sections[0].paragraphs == ("One.", para)


def test_custom_boilerplate_list_replaces_the_defaults() -> None:
    text = "PAYWALL: members only\nAlready a subscriber? Log in.\nWhy it matters: Text.\n"
    b = parse_text(text, source="x", markdown=False, boilerplate=[r"paywall:"])

    assert b.dropped == ("PAYWALL: members only",)
    assert b.lead == "Already a subscriber? Log in."


def test_no_boilerplate_patterns_drops_nothing() -> None:
    b = parse_text(
        "Already a subscriber? Log in.\nLead.\n", source="x", markdown=False, boilerplate=()
    )

    assert b.dropped == ()
    assert b.lead == "Already a subscriber? Log in."


def test_invalid_boilerplate_pattern_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match=r"invalid boilerplate pattern '\(unclosed'"):
        parse_text("Lead.\n", source="x", markdown=False, boilerplate=["(unclosed"])


def test_default_boilerplate_is_a_tuple_of_regex_sources() -> None:
    assert isinstance(DEFAULT_BOILERPLATE, tuple)
    assert all(isinstance(p, str) for p in DEFAULT_BOILERPLATE)


# --- front matter -----------------------------------------------------------------------


def test_front_matter_variants() -> None:
    b = md(
        "---\n"
        "title: '  A title  '\n"
        "tags: 'energy, climate , , energy'\n"
        "published: 2026-07-18\n"
        "author: Someone\n"
        "---\n"
        "Lead.\n"
    )

    assert b.title == "A title"
    assert b.tags == ("energy", "climate")
    assert b.published_at == datetime(2026, 7, 18, tzinfo=UTC)
    assert b.url is None


def test_published_naive_datetime_and_iso_string() -> None:
    naive = md("---\npublished: 2026-07-18 06:30:00\n---\nLead.\n")
    zulu = md("---\npublished: '2026-07-18T06:30:00Z'\n---\nLead.\n")
    offset = md('---\npublished: "2026-07-18T08:30:00+02:00"\n---\nLead.\n')

    expected = datetime(2026, 7, 18, 6, 30, tzinfo=UTC)
    assert naive.published_at == zulu.published_at == offset.published_at == expected
    assert offset.published_at is not None and offset.published_at.tzinfo == UTC


def test_numeric_tags_are_read_as_text() -> None:
    assert md("---\ntags: [2026, space]\n---\nLead.\n").tags == ("2026", "space")


def test_empty_front_matter_and_blank_title_fall_back_to_lead() -> None:
    assert md("---\n---\nLead.\n").title == "Lead."
    assert md("---\ntitle:\n---\nLead.\n").title == "Lead."
    assert md("---\ntitle: '   '\n---\nLead.\n").title == "Lead."


def test_front_matter_only_recognised_in_markdown() -> None:
    b = txt("---\ntitle: x\n---\nLead.\n")

    assert b.lead == "---"
    assert b.title == "---"


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    raw = "\ufeff---\ntitle: T\n---\nLead.\n".encode()
    b = parse_file(write(tmp_path, "bom.md", raw))

    assert b.title == "T"
    assert b.content_hash == hashlib.sha256(raw).hexdigest()


def test_markdown_suffixes(tmp_path: Path) -> None:
    content = "---\ntitle: T\n---\nLead.\n\n**Why:** Text.\n"

    assert parse_file(write(tmp_path, "a.markdown", content)).title == "T"
    assert parse_file(write(tmp_path, "b.MD", content)).title == "T"
    assert parse_file(write(tmp_path, "c.text", content)).lead == "---"


def test_parse_text_hash_is_of_utf8_text() -> None:
    text = "Lead \u2014 with a dash.\n"
    b = txt(text)

    assert b.content_hash == hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- errors -----------------------------------------------------------------------------


def _error(text: str, *, markdown: bool = True, source: str = "b.md") -> BriefingError:
    with pytest.raises(BriefingError) as info:
        parse_text(text, source=source, markdown=markdown)
    return info.value


@pytest.mark.parametrize("text", ["", "   \n\t\n", "\ufeff\n"])
def test_empty_file(text: str) -> None:
    err = _error(text, markdown=False, source="file.txt")

    assert str(err) == "file.txt: empty file"
    assert err.line is None and err.field is None


def test_only_boilerplate_has_no_lead() -> None:
    err = _error("Already a subscriber? Log in to keep reading.\n", markdown=False, source="f")

    assert "no lead paragraph" in err.reason
    assert str(err).startswith("f: no lead paragraph")


def test_front_matter_without_body() -> None:
    err = _error("---\ntitle: T\n---\n\n")

    assert str(err) == "b.md: no content after front matter"


def test_unterminated_front_matter() -> None:
    err = _error("---\ntitle: T\nLead.\n")

    assert err.line == 1
    assert str(err) == "b.md:1: unterminated front matter: no closing '---' line"


def test_invalid_yaml_reports_file_line() -> None:
    err = _error("---\ntitle: T\ntags: [a, b\nurl: x\n---\nLead.\n")

    assert err.line is not None and err.line >= 4
    assert str(err).startswith(f"b.md:{err.line}: invalid YAML in front matter:")


def test_invalid_yaml_on_a_known_line() -> None:
    err = _error("---\ntitle: T\nbad: : :\n---\nLead.\n")

    assert err.line == 3


def test_front_matter_not_a_mapping() -> None:
    err = _error("---\n- a\n- b\n---\nLead.\n")

    assert err.line == 2
    assert "not a mapping" in err.reason
    assert "list" in err.reason


def test_published_not_a_date_matches_documented_message() -> None:
    err = _error("---\ntitle: T\npublished: tomorrow\n---\nLead.\n", source="path/to/file.md")

    assert str(err) == "path/to/file.md:3: front matter field 'published': not a date: 'tomorrow'"
    assert (err.source, err.line, err.field, err.reason) == (
        "path/to/file.md",
        3,
        "published",
        "not a date: 'tomorrow'",
    )


@pytest.mark.parametrize(
    ("front", "field", "line", "reason"),
    [
        ("title: 42", "title", 2, "not a string: 42"),
        ("title: [a, b]", "title", 2, "not a string: ['a', 'b']"),
        ("x: 1\ntags: {a: 1}", "tags", 3, "not a list or a comma-separated string: {'a': 1}"),
        ("tags: [a, [b]]", "tags", 2, "item 1 is not a string: ['b']"),
        ("url: ftp://example.org/x", "url", 2, "not an http(s) URL: 'ftp://example.org/x'"),
        ("url: not a url", "url", 2, "not an http(s) URL: 'not a url'"),
        ("url: 12", "url", 2, "not a string: 12"),
        ("published: 12", "published", 2, "not a date: 12"),
        ("published: yes", "published", 2, "not a date: True"),
    ],
)
def test_front_matter_field_types(front: str, field: str, line: int, reason: str) -> None:
    err = _error(f"---\n{front}\n---\nLead.\n")

    assert (err.field, err.line, err.reason) == (field, line, reason)
    assert str(err) == f"b.md:{line}: front matter field {field!r}: {reason}"


def test_label_without_any_text() -> None:
    err = _error(
        "Lead.\nWhy it matters: One.\nWhat happens next:\n", markdown=False, source="x.txt"
    )

    assert str(err) == "x.txt:3: label 'What happens next' has no text"


def test_non_utf8_bytes_report_offset_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "latin1.txt", "Lead.\nWhy: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(BriefingError) as info:
        parse_file(path)

    err = info.value
    assert err.line == 2
    assert err.reason == "not valid UTF-8: byte 0xe9 at byte offset 14"
    assert str(err) == f"{path}:2: not valid UTF-8: byte 0xe9 at byte offset 14"


def test_file_larger_than_max_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, "big.txt", "Lead.\n" + "x" * 100)

    with pytest.raises(BriefingError, match="larger than 50 bytes"):
        parse_file(path, max_bytes=50)
    assert parse_file(path, max_bytes=106).lead == "Lead."


def test_missing_file_is_a_briefing_error(tmp_path: Path) -> None:
    with pytest.raises(BriefingError, match="cannot read file"):
        parse_file(tmp_path / "gone.txt")


def test_briefing_error_is_a_value_error_and_pickles() -> None:
    err = BriefingError("f.md", "not a date: 'x'", line=3, field="published")

    assert isinstance(err, ValueError)
    copy = pickle.loads(pickle.dumps(err))  # noqa: S301 - round-trip of our own object
    assert (copy.source, copy.line, copy.field, copy.reason) == (
        "f.md",
        3,
        "published",
        "not a date: 'x'",
    )
    assert str(copy) == str(err)
