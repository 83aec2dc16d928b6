"""Addresses, tokens, segment rules and CSV parsing: the audience's pure parts."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from subscribers.addresses import InvalidAddress, normalize_email
from subscribers.importer import ImportFileError, parse_rows
from subscribers.segments import SegmentRuleError, compile_rule
from subscribers.tokens import TokenError, sign_unsubscribe, verify_unsubscribe

KEY = b"k" * 32


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" Reader@Example.COM ", "reader@example.com"),
        ("a.b+tag@news.example.org", "a.b+tag@news.example.org"),
    ],
)
def test_addresses_are_normalised(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "no-at-sign",
        "a@b",
        "two@@example.com",
        "a b@example.com",
        "x@-bad-.com",
        "a..b@example.com",
        "eve@example.com\r\nBcc: all@example.com",
        "<a@example.com>",
    ],
)
def test_bad_addresses_are_refused(raw: str) -> None:
    with pytest.raises(InvalidAddress):
        normalize_email(raw)


def test_tokens_round_trip_and_refuse_tampering() -> None:
    token = sign_unsubscribe(KEY, 42, 7)
    claims = verify_unsubscribe(KEY, token)
    assert (claims.subscriber_id, claims.edition_id) == (42, 7)

    with pytest.raises(TokenError, match="signature"):
        verify_unsubscribe(b"another key entirely, 32 bytes!", token)
    sub, edition, signature = token.split(".")
    with pytest.raises(TokenError, match="signature"):
        verify_unsubscribe(KEY, f"43.{edition}.{signature}")  # someone else's id
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    with pytest.raises(TokenError):
        verify_unsubscribe(KEY, f"{sub}.{edition}.{flipped}")
    for malformed in ["", "42.7", "42.7.short", "x.7." + signature, token + "."]:
        with pytest.raises(TokenError):
            verify_unsubscribe(KEY, malformed)


@pytest.mark.parametrize("key", [b"k", KEY, b"x" * 64, b"long key " * 20])
def test_token_signature_is_hmac_sha256_over_purpose_and_ids(key: bytes) -> None:
    # Tokens already in sent mail must keep verifying: the signature is plain
    # HMAC-SHA256, whatever shortcut computes it, for keys of every length.
    expected = hmac.new(key, b"mailer/unsubscribe/v1:42:7", hashlib.sha256).digest()
    signature = base64.urlsafe_b64encode(expected)[:43].decode()
    assert sign_unsubscribe(key, 42, 7) == f"42.7.{signature}"


def test_segment_rules_are_checked_with_their_place() -> None:
    compile_rule(
        {
            "match": "any",
            "conditions": [
                {"field": "attributes.city", "op": "in", "value": ["Valmere", "Arden"]},
                {"field": "list", "op": "eq", "value": "morning"},
                {"field": "email", "op": "ends_with", "value": "@example.org"},
            ],
        }
    )
    bad = [
        ({"match": "some"}, "match"),
        ({"conditions": [{"field": "age", "op": "eq", "value": "3"}]}, "conditions[0]"),
        ({"conditions": [{"field": "email", "op": "like", "value": "x"}]}, "conditions[0]"),
        ({"conditions": [{"field": "name", "op": "eq", "value": 3}]}, "conditions[0]"),
        ({"conditions": [{"field": "list", "op": "contains", "value": "x"}]}, "conditions[0]"),
        ({"colour": "blue"}, "top level"),
    ]
    for rule, where in bad:
        with pytest.raises(SegmentRuleError, match=where.replace("[", r"\[").replace("]", r"\]")):
            compile_rule(rule)


def test_csv_rows_report_bad_lines_and_keep_good_ones() -> None:
    rows, errors = parse_rows(
        "email,name,city\n"
        "one@example.com,One,Valmere\n"
        "bad address,Two,Arden\n"
        "ONE@example.com,Dup,Arden\n"
        "three@example.com,Three\n"
        "\n"
        "four@example.com,,Porth\n",
        source="readers.csv",
    )
    assert [r.email for r in rows] == ["one@example.com", "four@example.com"]
    assert rows[0].attributes == {"city": "Valmere"} and rows[1].name is None
    assert [line for line, _ in errors] == [3, 4, 5]
    assert "appears earlier" in errors[1][1]
    assert "expected 3 columns" in errors[2][1]


def test_csv_without_email_column_is_refused() -> None:
    with pytest.raises(ImportFileError, match="no email column"):
        parse_rows("name,address\nx,y@example.com\n", source="f.csv")
    # The email column may be anywhere (exports put it where they like).
    assert parse_rows("name,email\nx,y@example.com\n", source="f.csv")[0][0].email == (
        "y@example.com"
    )
    with pytest.raises(ImportFileError, match="empty file"):
        parse_rows("", source="f.csv")


def test_a_timezone_column_sets_the_subscribers_own_zone() -> None:
    rows, errors = parse_rows(
        "email,name,Timezone,city\n"
        "a@example.com,A,Asia/Tokyo,Tokyo\n"
        "b@example.com,B,,Lisbon\n"
        "c@example.com,C,Mars/Olympus,Olympus\n",
        source="f.csv",
    )
    assert [(r.email, r.timezone, r.attributes) for r in rows] == [
        ("a@example.com", "Asia/Tokyo", {"city": "Tokyo"}),
        ("b@example.com", None, {"city": "Lisbon"}),
    ]
    assert len(errors) == 1 and errors[0][0] == 4
    assert "timezone 'Mars/Olympus': not an IANA timezone name" in errors[0][1]
