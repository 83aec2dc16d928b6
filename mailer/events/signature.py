"""Verifying SendGrid's signed Event Webhook.

SendGrid signs ``timestamp header + raw body`` with ECDSA P-256 / SHA-256 and sends
the base64 DER signature and the timestamp (unix seconds) in two headers. The public
key is shown in the SendGrid console as base64 of a DER SubjectPublicKeyInfo; some
people paste it wrapped in PEM lines, so both forms are accepted.

The check must run on the exact bytes received, before any decoding: re-serialised
JSON would not match the signature. A timestamp window limits replays of a captured
request; SendGrid does not document one, so it is configurable.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

# A DER ECDSA P-256 signature is at most 72 bytes (96 base64 characters); anything much
# longer is not one, and need not be decoded to find out.
_MAX_SIGNATURE_CHARS = 200
# Unix seconds stay below 12 digits for the next 30,000 years.
_MAX_TIMESTAMP_DIGITS = 12
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


class SignatureError(ValueError):
    """The request is not provably from SendGrid: answer 403 and store nothing."""


def load_public_key(public_key: str) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from SendGrid's base64 SPKI, bare or within PEM lines.

    Error messages never repeat the key: it ends up in logs.
    """
    # PEM armour lines are dropped and whitespace ignored, so a key pasted with line
    # breaks, or with its BEGIN/END lines, reads the same as the one-line form.
    body = "".join(
        line.strip() for line in public_key.strip().splitlines() if not line.startswith("-----")
    )
    if not body:
        raise ValueError("the SendGrid webhook public key is empty")
    try:
        der = base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the SendGrid webhook public key is not valid base64") from None
    try:
        key = load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(
            "the SendGrid webhook public key is not a DER SubjectPublicKeyInfo public key"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the SendGrid webhook public key is not an ECDSA P-256 public key")
    return key


class WebhookVerifier:
    """Checks one request's signature and timestamp; built once, used for every request."""

    def __init__(
        self,
        public_key: str,
        *,
        tolerance_seconds: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if tolerance_seconds < 0:
            raise ValueError("tolerance_seconds must not be negative")
        self._key = load_public_key(public_key)
        self._tolerance = tolerance_seconds
        self._clock = clock

    def verify(self, signature_b64: str | None, timestamp: str | None, body: bytes) -> None:
        """Return quietly if SendGrid signed ``timestamp + body`` recently; else raise."""
        if not signature_b64:
            raise SignatureError(f"missing {SIGNATURE_HEADER} header")
        if not timestamp:
            raise SignatureError(f"missing {TIMESTAMP_HEADER} header")
        # isascii() as well: str.isdigit() accepts digits of other scripts, which int()
        # would read, but which SendGrid never sends and the signer would not have seen.
        if not (
            timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= _MAX_TIMESTAMP_DIGITS
        ):
            raise SignatureError(f"malformed {TIMESTAMP_HEADER} header: not unix seconds")
        signature = _decode_signature(signature_b64)
        # Cheap before expensive: the clock check costs nothing, the ECDSA check does.
        skew = int(timestamp) - self._clock()
        if skew < -self._tolerance:
            raise SignatureError(
                f"stale {TIMESTAMP_HEADER}: {int(-skew)} s old, "
                f"outside the {self._tolerance} s window"
            )
        if skew > self._tolerance:
            raise SignatureError(
                f"{TIMESTAMP_HEADER} is {int(skew)} s in the future, "
                f"outside the {self._tolerance} s window"
            )
        try:
            self._key.verify(signature, timestamp.encode("ascii") + body, _ECDSA_SHA256)
        except InvalidSignature:
            raise SignatureError("signature does not match the body and timestamp") from None


def _decode_signature(signature_b64: str) -> bytes:
    value = signature_b64.strip()
    if len(value) > _MAX_SIGNATURE_CHARS or not value.isascii():
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header: not a base64 signature")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header: not valid base64") from None
