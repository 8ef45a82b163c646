"""Programs the test kit is tried on (tests/test_testing_kit.py): correct ones, and ones with planted bugs."""
from __future__ import annotations

import socket

from runtime import SignalTimeout, checkpoint, current_step, durable, sleep, step, wait


def fetch(i: int) -> int:
    return i * 10


def charge(order: str) -> str:
    return f"charged {order} once ({current_step().idempotency_key})"


def send_email(to: str, subject: str) -> str:
    return f"sent {subject!r} to {to}"


def flaky(value: int) -> int:
    return value + 1


@durable
def tally(n: int, timeout: float = 3600.0):
    """Correct: steps, sleeps, a checkpoint, a signal with a timeout."""
    total = 0
    for i in range(n):
        total += yield step(fetch, i)
        if i % 3 == 0:
            yield sleep(60)
    yield checkpoint()
    try:
        decision = yield wait("approval", timeout=timeout)
    except SignalTimeout:
        decision = None
    return {"total": total, "decision": decision}


@durable
def retried(value: int):
    """Correct: a step with a retry policy; its failures are injected by the tests."""
    got = yield step(flaky, value).retry(attempts=3, backoff=5)
    return got


@durable
def keeps_socket(branch: str):
    """Planted bug: a socket kept across a yield, on one branch only."""
    if branch == "cached":
        answer = yield step(fetch, 1)
        return answer
    conn = socket.socket()
    try:
        answer = yield step(fetch, 2)
    finally:
        conn.close()
    return answer


@durable
def emails_outside_step(user: str):
    """Planted bug: the welcome e-mail is sent by the program itself, not by a step."""
    order = yield step(fetch, 7)
    send_email(user, "welcome")
    receipt = yield step(charge, f"order-{order}")
    return receipt


SEEN: dict[int, int] = {}


@durable
def remembers_in_memory(n: int):
    """Planted bug: the result is computed from a module global, which a crash empties."""
    for i in range(n):
        SEEN[i] = yield step(fetch, i)
    return sum(SEEN.values())


COUNTER = {"runs": 0}


@durable
def counts_in_memory(n: int):
    """Planted bug: a counter kept outside the program's locals (a crash makes the code before it run again)."""
    for i in range(n):
        yield step(fetch, i)
        COUNTER["runs"] += 1
    return COUNTER["runs"]


@durable
def long_run(n: int):
    """Correct: n requests (steps and checkpoints, alternating)."""
    total = 0
    for i in range(n):
        if i % 2:
            yield checkpoint()
        else:
            total += yield step(fetch, i)
    return total


@durable
def forever():
    while True:
        yield sleep(1)


