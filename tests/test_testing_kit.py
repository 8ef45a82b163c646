"""The test kit (runtime.testing, README "Testing your programs"): simulation, crash checks, planted bugs."""
from __future__ import annotations

import unittest.mock
import warnings
from typing import Any

import pytest

from transpiler import install_import_hook

install_import_hook(["kit_programs"])

import kit_programs as kp  # noqa: E402
import kit_values  # noqa: E402
from runtime import SignalTimeout, durable, step  # noqa: E402
from runtime.testing import (DEFAULTS, InjectedFailure, Signal, Simulation, SimulationError,  # noqa: E402
                             SimulationWarning, SurvivalError, assert_survives_crashes, spy)
from runtime.testing.crashes import crash_points  # noqa: E402


def line_of(text: str) -> int:
    """The line of kit_programs.py that holds ``text``."""
    with open(kp.__file__, encoding="utf-8") as fh:
        return next(number for number, line in enumerate(fh, 1) if text in line)


def native_tally(n: int, decision: Any) -> dict[str, Any]:
    """What kp.tally computes, worked out from its step function (not from a run)."""
    return {"total": sum(kp.fetch(i) for i in range(n)), "decision": decision}


# ---------------------------------------------------------------------- simulation


def test_a_simulation_runs_sleeps_and_timeouts_at_once_and_delivers_scripted_signals() -> None:
    sim = Simulation(signals={"approval": "yes"})
    outcome = sim.run(kp.tally, 4)
    assert outcome.status == "finished" and outcome.result() == native_tally(4, "yes")
    assert outcome.elapsed == 2 * 60  # the sleeps after steps 0 and 3, in virtual time
    kinds = [kind for kind, _ in sim.events]
    assert kinds.count("step") == 4 and kinds.count("sleep") == 2 and "signal" in kinds


def test_signals_arrive_at_their_virtual_time_and_a_late_one_meets_the_timeout() -> None:
    on_time = Simulation(signals=[Signal("approval", "early", at=10)]).run(kp.tally, 1)
    assert on_time.result() == native_tally(1, "early")
    assert on_time.elapsed == 60  # the signal was queued during the sleep, so the wait did not wait
    late = Simulation(signals=[("approval", "late", 60 + 500)]).run(kp.tally, 1, timeout=100)
    assert late.result() == native_tally(1, None)
    assert late.elapsed == 60 + 100


def test_the_same_seed_gives_the_same_run() -> None:
    def run(seed: int) -> tuple[str, list[tuple[str, str]]]:
        sim = Simulation(signals={"approval": 1}, seed=seed)
        outcome = sim.run(kp.tally, 3)
        return outcome.execution_id, sim.events

    assert run(5) == run(5)
    assert run(5)[0] != run(6)[0]


def test_fakes_replace_steps_by_function_name_or_reference() -> None:
    for key in (kp.fetch, "fetch", "kit_programs:fetch"):
        fake = spy(lambda i: 1)
        outcome = Simulation(steps={key: fake}, signals={"approval": 0}).run(kp.tally, 3)
        assert outcome.result() == {"total": 3, "decision": 0}
        assert [call.args for call in fake.calls] == [(0,), (1,), (2,)] and all(c.in_step for c in fake.calls)


def test_injected_failures_exercise_the_retry_policy() -> None:
    recovered = Simulation(failures={kp.flaky: 2}).run(kp.retried, 4)
    assert recovered.result() == kp.flaky(4)
    assert recovered.elapsed == 5 + 10  # backoff 5 s, then 10 s (factor 2)
    exhausted = Simulation(failures={"flaky": [1, 2, 3]}).run(kp.retried, 4)
    assert exhausted.status == "failed" and isinstance(exhausted.error, InjectedFailure)
    with pytest.raises(InjectedFailure, match="attempt 3"):
        exhausted.result()
    chosen = Simulation(failures={kp.flaky: {1: ConnectionError("down"), 2: KeyError, 3: ValueError}})
    assert type(chosen.run(kp.retried, 4).error) is ValueError


def test_a_program_holding_a_signal_timeout_across_a_yield_survives() -> None:
    """Found by the kit in the onboarding sample: SignalTimeout could not be snapshotted."""
    report = assert_survives_crashes(kp.tally, 1, timeout=5, points="all", fresh=0)
    assert report.outcome.result() == native_tally(1, None)
    report = assert_survives_crashes(caught_timeout, fresh=1)
    assert report.outcome.result() == "no approval 'approval'"


@durable
def caught_timeout():
    from runtime import wait

    try:
        yield wait("approval", timeout=1)
    except SignalTimeout as exc:
        yield step(kp.fetch, 1)  # the caught exception is held across this yield
        return f"no approval {exc.signal!r}"


# ---------------------------------------------------------------------- bad input


def not_durable(n: int):
    yield n


def test_bad_input_gets_a_clear_error() -> None:
    with pytest.raises(SimulationError, match="'not_durable' is not a durable program"):
        Simulation().run(not_durable, 1)
    with pytest.raises(SimulationError, match="no step function named 'fecth'"):
        Simulation(steps={"fecth": lambda i: i}).run(kp.tally, 1)
    with pytest.raises(SimulationError, match="made more than 50 requests"):
        Simulation(max_requests=50).run(kp.forever)
    with pytest.raises(SimulationError, match="waits for signal 'approval'.*add one to signals="):
        Simulation().run(kp.tally, 1, timeout=None)
    with pytest.raises(SimulationError, match="attempts are numbered from 1"):
        Simulation(failures={kp.flaky: [0]}).run(kp.retried, 1)
    with pytest.raises(TypeError, match="spies= takes functions made by runtime.testing.spy"):
        assert_survives_crashes(kp.tally, 1, spies=[object()], signals={"approval": 1}, fresh=0)
    with pytest.raises(SimulationError, match="cannot start"):
        Simulation().run(kp.tally, "x", "y", "z")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SimulationWarning, match="'reminder', and kit_programs:tally never waited for it"):
            Simulation(signals={"approval": 1, "reminder": 2}).run(kp.tally, 1)


# ---------------------------------------------------------------------- crash checks


def test_a_correct_program_survives_every_crash_point() -> None:
    report = assert_survives_crashes(kp.tally, 4, signals={"approval": "yes"}, points="all", fresh=1)
    assert report.outcome.result() == native_tally(4, "yes")
    assert report.crash_points == report.possible_points > 2 * 4
    assert report.fresh_points == 1
    retried = assert_survives_crashes(kp.retried, 4, failures={kp.flaky: 2}, points="all", fresh=0)
    assert retried.outcome.result() == kp.flaky(4)


def test_crash_points_are_before_every_commit_and_after_those_a_worker_goes_on_from() -> None:
    from runtime.testing.crashes import _Recorder
    from runtime.testing.simulation import START, Engine, World, config_for
    from runtime.programs.store.memory import MemoryStore

    recorder = _Recorder([])
    engine = Engine(config_for(kp.long_run, [4], {}), World(MemoryStore(), START), recorder)
    engine.run(engine.start())
    kinds = [m.kind for m in recorder.marks]
    # step 0, checkpoint 1, step 2, checkpoint 3, the end: each step commits its request and its result
    assert kinds == ["request", "step result", "request", "request", "step result", "request", "other"]
    points = crash_points(recorder.marks)
    assert sum(p.before for p in points) == len(kinds)
    assert {p.mark.index for p in points if not p.before} == set(range(len(kinds) - 1))
    assert points[1].describe() == ("right after request 1 at `for i in range(n): › if i % 2: › else: › total += "
                                    "yield step(fetch, i)` (line 102) was committed, before the step ran")


def test_points_are_sampled_unless_all_are_asked_for() -> None:
    everything = assert_survives_crashes(kp.long_run, 30, points="all", fresh=0)
    assert everything.possible_points > DEFAULTS["points"]
    assert assert_survives_crashes(kp.long_run, 30, fresh=0).crash_points == DEFAULTS["points"]
    assert assert_survives_crashes(kp.long_run, 30, points=5, fresh=0).crash_points == 5
    assert assert_survives_crashes(kp.long_run, 30, points=[0, 5, everything.possible_points + 1],
                                   fresh=0).crash_points == 3  # indices wrap around


def test_planted_bug_a_socket_kept_across_a_yield_on_one_branch() -> None:
    assert_survives_crashes(kp.keeps_socket, "cached", fresh=0)  # the other branch is fine
    with pytest.raises(SurvivalError) as caught:
        assert_survives_crashes(kp.keeps_socket, "live")
    report = str(caught.value)
    assert [f.kind for f in caught.value.findings] == ["unserializable"]
    assert "kit_programs:keeps_socket('live') does not survive crashes (seed 0)" in report
    assert "a value cannot be snapshotted" in report
    assert "local 'conn': value of type 'socket.socket'" in report
    assert f"(in kit_programs:keeps_socket, suspended at line {line_of('answer = yield step(fetch, 2)')})" in report


def test_planted_bug_an_email_sent_outside_a_step(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = spy(kp.send_email)
    monkeypatch.setattr(kp, "send_email", sent)
    with pytest.raises(SurvivalError) as caught:
        assert_survives_crashes(kp.emails_outside_step, "ada", spies=[sent], points="all", fresh=0)
    findings = caught.value.findings
    assert {f.kind for f in findings} == {"ran twice"}
    first = findings[0]
    assert first.where and first.where.startswith("at request 2, `receipt = yield step(charge")
    report = str(caught.value)
    assert "send_email was called 2 times outside a step (1 without crashes)" in report
    assert "again: send_email('ada', 'welcome') at " in report and "kit_programs.py" in report
    assert "`yield step(send_email, ...)`" in report
    # a unittest.mock spy is counted too
    mock = unittest.mock.Mock(wraps=kp.send_email)
    monkeypatch.setattr(kp, "send_email", mock)
    with pytest.raises(SurvivalError, match="was called 2 times outside a step"):
        assert_survives_crashes(kp.emails_outside_step, "ada", spies=[mock], points="all", fresh=0)


def test_an_effect_inside_a_step_may_run_again() -> None:
    charged = spy(kp.charge)
    report = assert_survives_crashes(kp.emails_outside_step, "ada", steps={kp.charge: charged}, points="all",
                                     fresh=0)
    assert report.outcome.status == "finished"
    assert len(charged.calls) > 2  # ran again after crashes between its return and its commit: at-least-once


def test_planted_bug_a_result_from_state_lost_at_a_crash_in_process() -> None:
    with pytest.raises(SurvivalError) as caught:
        assert_survives_crashes(kp.counts_in_memory, 3, points="all", fresh=0)
    assert {f.kind for f in caught.value.findings} == {"differs"}
    report = str(caught.value)
    assert "the run ended differently after a crash" in report
    assert "without crashes: returned " in report and "after the crash: returned " in report
    assert "module globals" in report and "(and " in report  # the other crash points, summed up


def test_planted_bug_a_result_from_state_lost_at_a_crash_in_a_fresh_interpreter() -> None:
    kp.SEEN.clear()
    assert_survives_crashes(kp.remembers_in_memory, 4, fresh=0)  # in process the global is still there
    with pytest.raises(SurvivalError) as caught:
        assert_survives_crashes(kp.remembers_in_memory, 4, fresh=1)
    assert [f.kind for f in caught.value.findings] == ["fresh"]
    report = str(caught.value)
    expected = sum(kp.fetch(i) for i in range(4))
    assert "restored in a fresh interpreter" in report
    assert f"without a crash it returned {expected}" in report


def test_a_program_whose_restore_fails_in_a_fresh_interpreter_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A class that only the test made serializable: the fresh interpreter cannot rebuild it."""
    from runtime.values import kinds
    from runtime.values.allow import SERIALIZABLE, serializable

    monkeypatch.setitem(SERIALIZABLE, "kit_values:Token", kit_values.Token)
    serializable(kit_values.Token)
    try:
        with pytest.raises(SurvivalError) as caught:
            assert_survives_crashes(holds_token, fresh=1)
    finally:
        monkeypatch.undo()
        kinds.changed()
    report = str(caught.value)
    assert "restored in a fresh interpreter" in report
    assert "the snapshot cannot be restored there" in report and "kit_values" in report


@durable
def holds_token():
    token = kit_values.Token("secret")
    yield step(kp.fetch, 1)
    return token.text
