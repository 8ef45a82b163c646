"""Tests of the async onboarding workflow (samples/onboarding_async.py) with the durable test kit, as for the
generator version (samples/test_onboarding.py): the kit runs ``async def`` programs the same way."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from transpiler import install_import_hook

install_import_hook(["onboarding_async"])  # compile the workflow's module as it is imported

import onboarding_async  # noqa: E402
from runtime.testing import Signal, spy  # noqa: E402

USER = "ada@example.com"
APPROVED = {"approved": True, "by": "grace"}


def fake_steps(logged_in: bool = False) -> tuple[Any, dict[Any, Any]]:
    outbox = spy(returns="sent", name="send_email")
    return outbox, {onboarding_async.send_email: outbox, onboarding_async.has_logged_in: lambda user: logged_in}


def test_an_approved_user_is_welcomed_nudged_and_told(durable_sim: Any) -> None:
    outbox, steps = fake_steps()
    outcome = durable_sim.run(onboarding_async.onboarding, USER, steps=steps, signals={"approval": APPROVED})
    assert outcome.result() == {"user": USER, "approved": True, "by": "grace"}
    assert [call.args[1] for call in outbox.calls] == [
        "Welcome aboard!", "Need a hand getting started?", "Your account is approved"]
    assert outcome.elapsed == 3.0


def test_the_real_async_step_runs_on_the_loop_once_per_key(durable_sim: Any, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """No fake for ``send_email``: the kit awaits the ``async def`` step itself, with ``current_step()`` set."""
    monkeypatch.setattr(onboarding_async, "OUTBOX", tmp_path / "outbox.log")
    outcome = durable_sim.run(onboarding_async.onboarding, USER, steps={onboarding_async.has_logged_in: lambda u: True},
                              signals={"approval": {"approved": False}})
    assert outcome.result() == {"user": USER, "approved": False, "by": None}
    sent = [json.loads(line) for line in (tmp_path / "outbox.log").read_text().splitlines()]
    assert [m["subject"] for m in sent] == ["Welcome aboard!", "Your account was declined"]
    assert len({m["key"] for m in sent}) == 2


def test_the_async_workflow_survives_a_crash_at_every_point(durable_sim: Any) -> None:
    _, steps = fake_steps()
    for signals in ({"approval": APPROVED}, [Signal("approval", APPROVED, at=1)], []):
        report = durable_sim.assert_survives_crashes(onboarding_async.onboarding, USER, steps=steps,
                                                     signals=signals, points="all")
        assert report.crash_points == report.possible_points
