"""The onboarding flow of ``onboarding.py`` as an ``async def`` program: the same requests, awaited.

Run it like the generator version (see the README): ``durable run onboarding_async:onboarding
'["ada@example.com"]'`` from this folder, then ``durable worker`` and ``durable signal ID approval
'{"approved": true, "by": "grace"}'``. ``python samples/onboarding_demo.py --async`` runs all of it,
with a worker killed mid-flight.

What is different from the generator version:

* each request is awaited (``await step(...)``) instead of yielded;
* ``send_email`` is an ``async def`` step: the worker awaits it on its event loop (a plain function
  step, like ``has_logged_in``, runs as before);
* between two durable awaits the program may await anything, here a short ``asyncio.sleep`` standing
  for a call to a rate-limited API. Such a *transient* await is not recorded: after a crash it runs
  again, like any code between two commits;
* the approval deadline is a ``race`` of the signal and a durable sleep (``runtime.race``), where the
  generator version uses ``wait(..., timeout=...)``.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from runtime import current_step, durable, race, sleep, step, wait

OUTBOX = Path(os.environ.get("ONBOARDING_OUTBOX", ".durable/outbox.log"))
LOGINS = Path(os.environ.get("ONBOARDING_LOGINS", ".durable/logins.txt"))


async def send_email(to: str, subject: str) -> str:
    """An e-mail provider stand-in: records the message once per idempotency key."""
    key = current_step().idempotency_key
    await asyncio.sleep(0)  # where a real client would await its HTTP call
    OUTBOX.parent.mkdir(parents=True, exist_ok=True)
    sent = OUTBOX.read_text(encoding="utf-8").splitlines() if OUTBOX.exists() else []
    if not any(json.loads(line)["key"] == key for line in sent):
        with OUTBOX.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"key": key, "to": to, "subject": subject, "at": time.time()}) + "\n")
    return key


def has_logged_in(user: str) -> bool:
    return LOGINS.exists() and user in LOGINS.read_text(encoding="utf-8").split()


@durable
async def onboarding(user: str, nudge_after: float = 3.0, approval_timeout: float = 120.0):
    await step(send_email, user, "Welcome aboard!")
    await sleep(nudge_after)
    await asyncio.sleep(0.01)  # transient: runs again if the worker dies before the next commit
    if not await step(has_logged_in, user):
        await step(send_email, user, "Need a hand getting started?")
    first, decision = await race(wait("approval"), sleep(approval_timeout))
    if first == 1:  # the deadline came first
        await step(send_email, user, "Your account review is taking longer than expected")
        return {"user": user, "approved": False, "reason": "no decision in time"}
    approved = bool(decision.get("approved"))
    await step(send_email, user, "Your account is approved" if approved else "Your account was declined")
    return {"user": user, "approved": approved, "by": decision.get("by")}
