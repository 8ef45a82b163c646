"""Tests of the onboarding workflow (samples/onboarding.py) with the durable test kit: copy them for your own.

``durable_sim`` is the kit's pytest fixture (``runtime.testing``): each run uses an in-memory store and a
virtual clock, so the workflow's sleeps and its two-minute approval timeout pass at once.
"""
from __future__ import annotations

from typing import Any

from transpiler import install_import_hook

install_import_hook(["onboarding"])  # compile the workflow's module as it is imported

import onboarding  # noqa: E402
from runtime.testing import Signal, spy  # noqa: E402

USER = "ada@example.com"
APPROVED = {"approved": True, "by": "grace"}


def fake_steps(logged_in: bool = False) -> tuple[Any, dict[Any, Any]]:
    """Fakes for the workflow's two steps: an outbox that records each e-mail, and a login check."""
    outbox = spy(returns="sent", name="send_email")
    return outbox, {onboarding.send_email: outbox, onboarding.has_logged_in: lambda user: logged_in}


def subjects(outbox: Any) -> list[str]:
    return [call.args[1] for call in outbox.calls]


def test_an_approved_user_is_welcomed_nudged_and_told(durable_sim: Any) -> None:
    outbox, steps = fake_steps()
    outcome = durable_sim.run(onboarding.onboarding, USER, steps=steps, signals={"approval": APPROVED})
    assert outcome.result() == {"user": USER, "approved": True, "by": "grace"}
    assert subjects(outbox) == ["Welcome aboard!", "Need a hand getting started?", "Your account is approved"]
    assert outcome.elapsed == 3.0  # the nudge delay, in virtual seconds


def test_a_user_who_logged_in_is_not_nudged(durable_sim: Any) -> None:
    outbox, steps = fake_steps(logged_in=True)
    outcome = durable_sim.run(onboarding.onboarding, USER, steps=steps, signals={"approval": {"approved": False}})
    assert outcome.result() == {"user": USER, "approved": False, "by": None}
    assert subjects(outbox) == ["Welcome aboard!", "Your account was declined"]


def test_no_decision_in_time(durable_sim: Any) -> None:
    outbox, steps = fake_steps()
    outcome = durable_sim.run(onboarding.onboarding, USER, steps=steps)  # nobody approves
    assert outcome.result() == {"user": USER, "approved": False, "reason": "no decision in time"}
    assert subjects(outbox)[-1] == "Your account review is taking longer than expected"
    assert outcome.elapsed == 3.0 + 120.0


def test_the_workflow_survives_a_crash_at_every_point(durable_sim: Any) -> None:
    _, steps = fake_steps()
    for signals in ({"approval": APPROVED},               # approved while it waits
                    [Signal("approval", APPROVED, at=1)],  # approved before it waits
                    []):                                   # never approved: the timeout path
        report = durable_sim.assert_survives_crashes(onboarding.onboarding, USER, steps=steps, signals=signals,
                                                     points="all")
        assert report.crash_points == report.possible_points
