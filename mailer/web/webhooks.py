"""SendGrid's Event Webhook: ``POST /webhooks/sendgrid``.

Answers fast and applies once: the signature is checked over the raw body, the events
are validated, and the body is kept whole (``mailer.events.intake``); matching the
events to the ledger, storing them (duplicates, which SendGrid's 24-hour retries make
normal, are skipped by ``sg_event_id``) and the bounce policy run after the answer.
Status codes:

- 403: missing or bad signature, or a timestamp outside the window, in the same words
  (the reason is logged); nothing stored. Refusals are throttled per client with the
  other credential checks (``mailer.app.credentials``): 429 while a client waits;
- 413: body over the limit; 400: not a JSON array at all; nothing stored;
- 503: verification is on but no public key is configured (SendGrid retries, so
  nothing is lost while an operator fixes it);
- 200: kept, ``{"received", "accepted", "rejected", "rejected_reasons"}``: malformed
  items (a missing field, nested too deep, too large) are counted, and recorded as
  ``rejected`` events, rather than refused, since SendGrid would otherwise retry the
  whole batch for a day.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from mailer.app import credentials
from mailer.app.errors import AuthenticationFailed, Throttled
from mailer.config import Settings
from mailer.events import intake
from mailer.events.intake import apply_batches
from mailer.events.policy import Policy, apply_pending
from mailer.events.sendgrid_events import PayloadError, parse_events
from mailer.events.signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    WebhookVerifier,
)
from mailer.runtime import Runtime
from mailer.web.auth import client_of
from mailer.web.limits import API_BODY_BYTES

log = logging.getLogger(__name__)
router = APIRouter()


def make_verifier(settings: Settings) -> WebhookVerifier | None:
    """The verifier for this deployment, or None when verification is switched off.

    Raises ValueError for a configured key that is not a P-256 public key: better
    to refuse to start than to refuse every event.
    """
    if not settings.sendgrid_webhook_verify:
        log.warning(
            "webhook.verification_off",
            extra={
                "detail": "SendGrid webhook signatures are NOT checked "
                "(MAILER_SENDGRID_WEBHOOK_VERIFY=false): anyone can post events"
            },
        )
        return None
    if not settings.sendgrid_webhook_public_key:
        return None
    return WebhookVerifier(
        settings.sendgrid_webhook_public_key,
        tolerance_seconds=settings.sendgrid_webhook_tolerance_seconds,
    )


class PolicyRunner:
    """Applies kept batches and the bounce policy after webhook answers, one run at a time
    per process.

    Every kept batch asks for a run. One that asks while a run is going only marks
    that another is wanted, so a burst of batches makes a few runs over many events,
    not one run per batch fighting the others for the same rows (SQLite's one write
    lock; on PostgreSQL, deadlocks). A failed run is logged, not raised: its events
    stay pending for the next run, and an exception after the answer would make the
    server drop the keep-alive connection, with any request already sent on it.

    Answers come first: a run applies one batch at a time, and before each it waits
    while answers are being made in this process (up to ``YIELD_SECONDS``), since they
    share its core and, on SQLite, its one writer. A burst is answered at once and
    applied as it eases.
    """

    YIELD_SECONDS = 1.0
    POLICY_CHUNK = 250

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._answering = 0
        self._counting = threading.Lock()

    @contextmanager
    def answering(self) -> Iterator[None]:
        """Around the making of an answer: runs give way meanwhile."""
        with self._counting:
            self._answering += 1
        try:
            yield
        finally:
            with self._counting:
                self._answering -= 1

    def _give_way(self) -> None:
        deadline = time.monotonic() + self.YIELD_SECONDS
        while self._answering and time.monotonic() < deadline:
            time.sleep(0.005)

    def _run(self) -> None:
        policy = Policy.from_settings(self._runtime.settings)
        while True:
            self._give_way()
            report = apply_batches(self._runtime.engine, limit=1)
            # The policy for what that batch stored, in short transactions.
            apply_pending(self._runtime.sessions, policy, chunk=self.POLICY_CHUNK)
            if not (report.batches or report.failed):
                return

    def __call__(self) -> None:
        self._wanted.set()
        while self._wanted.is_set():
            if not self._lock.acquire(blocking=False):
                return  # the run in progress looks at the flag when it ends
            try:
                self._wanted.clear()
                self._run()
            except Exception:
                log.exception("webhook.policy_failed")
            finally:
                self._lock.release()


@router.post("/webhooks/sendgrid", max_body_size=API_BODY_BYTES)
async def sendgrid_events(request: Request, background: BackgroundTasks) -> JSONResponse:
    runner: PolicyRunner = request.app.state.policy_runner
    with runner.answering():
        return await _answer(request, background, runner)


async def _answer(
    request: Request, background: BackgroundTasks, runner: PolicyRunner
) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    settings = runtime.settings
    verifier: WebhookVerifier | None = request.app.state.webhook_verifier
    if verifier is None and settings.sendgrid_webhook_verify:
        log.error("webhook.not_configured", extra={"missing": "MAILER_SENDGRID_WEBHOOK_PUBLIC_KEY"})
        return JSONResponse(
            {"error": "event webhook not configured: no verification key"}, status_code=503
        )
    body = await request.body()
    if verifier is not None:
        signature = request.headers.get(SIGNATURE_HEADER)
        timestamp = request.headers.get(TIMESTAMP_HEADER)

        def check() -> None:
            try:
                verifier.verify(signature, timestamp, body)
            except SignatureError as exc:
                raise credentials.Refused(str(exc)) from None

        try:
            await run_in_threadpool(
                credentials.checked, runtime, client_of(request), "webhook-signature", check
            )
        except Throttled as exc:
            return JSONResponse(
                {"error": exc.message},
                status_code=429,
                headers={"Retry-After": str(max(1, int(exc.retry_after)))},
            )
        except AuthenticationFailed:
            return JSONResponse({"error": "signature not accepted"}, status_code=403)
    try:
        # Off the event loop: a batch of 1,000 takes milliseconds to read and check.
        answer = await run_in_threadpool(_accept, runtime, body)
    except PayloadError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    if answer["received"]:
        background.add_task(runner)
    log.info("webhook.received", extra={k: v for k, v in answer.items() if k != "rejected_reasons"})
    return JSONResponse(answer)


def _accept(runtime: Runtime, body: bytes) -> dict[str, Any]:
    """Check the batch and keep it whole (if this process dies now, the next run applies it)."""
    events, rejected = parse_events(body, max_bytes=API_BODY_BYTES)
    if events or rejected:
        intake.receive(runtime.engine, body)
    return {
        "received": len(events) + len(rejected),
        "accepted": len(events),
        "rejected": len(rejected),
        "rejected_reasons": [item.reason for item in rejected[:20]],
    }
