"""An onboarding flow as one durable program: welcome, wait a while, check, nudge, wait for approval.

Run it with the embedded store (see the README): ``durable run onboarding:onboarding '["ada@example.com"]'``
from this folder, then ``durable worker`` and ``durable signal ID approval '{"approved": true, "by": "grace"}'``.
Steps append to ``.durable/outbox.log`` so you can see each e-mail go out exactly once.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from runtime import SignalTimeout, current_step, durable, sleep, step, wait

OUTBOX = Path(os.environ.get("ONBOARDING_OUTBOX", ".durable/outbox.log"))
LOGINS = Path(os.environ.get("ONBOARDING_LOGINS", ".durable/logins.txt"))


def send_email(to: str, subject: str) -> str:
    """An e-mail provider stand-in: records the message once per idempotency key."""
    key = current_step().idempotency_key
    OUTBOX.parent.mkdir(parents=True, exist_ok=True)
    sent = OUTBOX.read_text(encoding="utf-8").splitlines() if OUTBOX.exists() else []
    if not any(json.loads(line)["key"] == key for line in sent):
        with OUTBOX.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"key": key, "to": to, "subject": subject, "at": time.time()}) + "\n")
    return key


def has_logged_in(user: str) -> bool:
    return LOGINS.exists() and user in LOGINS.read_text(encoding="utf-8").split()


@durable
def onboarding(user: str, nudge_after: float = 3.0, approval_timeout: float = 120.0):
    yield step(send_email, user, "Welcome aboard!")
    yield sleep(nudge_after)
    if not (yield step(has_logged_in, user)):
        yield step(send_email, user, "Need a hand getting started?")
    try:
        decision = yield wait("approval", timeout=approval_timeout)
    except SignalTimeout:
        yield step(send_email, user, "Your account review is taking longer than expected")
        return {"user": user, "approved": False, "reason": "no decision in time"}
    approved = bool(decision.get("approved"))
    yield step(send_email, user, "Your account is approved" if approved else "Your account was declined")
    return {"user": user, "approved": approved, "by": decision.get("by")}
