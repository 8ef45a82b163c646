"""The test kit from pytest: the durable_sim plugin in a fresh pytest process, and the Hypothesis schedules."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

from runtime.testing import InjectedFailure, Signal, Simulation, SurvivalError
from runtime.testing.strategies import Schedule, schedules
from transpiler import install_import_hook

install_import_hook(["kit_programs"])
import kit_programs as kp  # noqa: E402

pytest_plugins = ["pytester"]

# --------------------------------------------------------------------------- the plugin, in a fresh pytest

SAMPLE = 24
"""runtime.testing.DEFAULTS["points"] without --durable-crash-all (this process's may have been given it)."""

INNER_CONFTEST = """
import sys

sys.path.insert(0, {tests!r})
from transpiler import install_import_hook

install_import_hook(["kit_programs"])
"""

RECORD = """
import json
from pathlib import Path


def record(name, *values):
    Path(f"fact-{name}.json").write_text(json.dumps(values))
"""

INNER_SEED = RECORD + """

def test_seed(durable_sim):
    record("seed", durable_sim.seed)
"""

INNER_TESTS = RECORD + """
import kit_programs as kp


def test_run(durable_sim):
    outcome = durable_sim.run(kp.tally, 3, signals={"approval": "ok"})
    record("run", outcome.status, outcome.value)


def test_crashes(durable_sim):
    report = durable_sim.assert_survives_crashes(kp.long_run, 12)
    record("crashes", report.crash_points, report.possible_points, report.fresh_points)


def test_bug(durable_sim):
    record("bug", durable_sim.seed)
    durable_sim.assert_survives_crashes(kp.counts_in_memory, 2, fresh=0)
"""


def run_inner(pytester: pytest.Pytester, *options: str) -> tuple[pytest.RunResult, dict[str, list[Any]]]:
    """Run the inner tests in a new pytest process (the plugin loads from its entry point); the facts they recorded."""
    for old in pytester.path.glob("fact-*.json"):
        old.unlink()
    # without Hypothesis' plugin (it would import all of Hypothesis) and assertion rewriting (pytest would rewrite
    # every module of runtime, the package of a pytest11 plugin): the inner tests need neither
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--assert=plain",
                                           *options, timeout=120)
    facts = {p.stem[len("fact-"):]: json.loads(p.read_text()) for p in pytester.path.glob("fact-*.json")}
    return result, facts


def test_the_pytest_plugin(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(INNER_CONFTEST.format(tests=str(Path(kp.__file__).resolve().parent)))
    pytester.makepyfile(test_kit=INNER_TESTS, test_seed=INNER_SEED)
    expected_total = sum(kp.fetch(i) for i in range(3))

    result, facts = run_inner(pytester)
    result.assert_outcomes(passed=3, failed=1)
    assert facts["run"] == ["finished", {"total": expected_total, "decision": "ok"}]
    seed, bug_seed = facts["seed"][0], facts["bug"][0]
    assert seed != bug_seed  # a seed of each test's own
    sampled, possible, fresh = facts["crashes"]
    assert possible > SAMPLE, "long_run(12) must have more crash points than the sample"
    assert (sampled, fresh) == (SAMPLE, 1)
    output = result.stdout.str()
    assert "FAILED test_kit.py::test_bug" in output
    assert "kit_programs:counts_in_memory(2) does not survive crashes" in output
    assert f"(seed {bug_seed};" in output

    result, facts = run_inner(pytester, "--durable-crash-all", "--durable-fresh", "0", "-k", "seed or crashes")
    result.assert_outcomes(passed=2, deselected=2)
    assert facts["seed"] == [seed]  # stable: the same test gets the same seed in another run
    assert facts["crashes"] == [possible, possible, 0]

    result, facts = run_inner(pytester, "--durable-seed", "7", "test_seed.py")
    result.assert_outcomes(passed=1)
    assert facts["seed"] == [7]


# --------------------------------------------------------------------------- Hypothesis schedules


@settings(max_examples=8, deadline=None)
@given(schedule=schedules(signals={"approval": st.sampled_from(["yes", "no"])}, steps=[kp.fetch]))
def test_a_correct_program_survives_every_schedule(schedule: Schedule) -> None:
    report = schedule.check(kp.tally, 2, fresh=0)
    assert report.outcome.value["total"] == kp.fetch(0) + kp.fetch(1)
    assert report.outcome.value["decision"] in (None, "yes", "no")
    assert 1 <= report.crash_points <= len(schedule.crash_points)


def fails(schedule: Schedule) -> bool:
    """Whether counts_in_memory (which does not survive any crash) is caught under ``schedule``."""
    try:
        schedule.check(kp.counts_in_memory, 2, fresh=0)
    except SurvivalError:
        return True
    return False


# find() runs no explain phase here: on a minimal example it would make ~100 more runs, for nothing a test reads
SHRINKING = settings(database=None, derandomize=True, phases=[Phase.generate, Phase.shrink])


def test_a_failing_schedule_shrinks_to_the_simplest() -> None:
    # the documented shrink targets: no signals, no failures, the first crash point, seed 0
    minimal = find(schedules(steps=[kp.fetch]), fails, settings=SHRINKING)
    assert minimal == Schedule(signals=(), failures={}, crash_points=(0,), seed=0)
    with pytest.raises(SurvivalError, match=r"does not survive crashes \(seed 0;"):
        minimal.check(kp.counts_in_memory, 2, fresh=0)
    # what a predicate needs beyond that shrinks as far as it allows, and the rest to its target
    assert find(schedules(steps=[kp.fetch]), lambda s: bool(s.failures) and fails(s), settings=SHRINKING) \
        == Schedule(failures={kp.fetch: (1,)})
    assert find(schedules(steps=[kp.fetch]), lambda s: s.seed > 0 and len(s.crash_points) > 1 and fails(s),
                settings=SHRINKING) == Schedule(crash_points=(0, 1), seed=1)


def test_a_schedule_passes_failures_through() -> None:
    simulation = Simulation(failures={kp.flaky: (1, 2)})
    outcome = simulation.run(kp.retried, 5)
    assert outcome.result() == kp.flaky(5)
    assert [text for kind, text in simulation.events if kind == "step"] == \
        [f"step 0 kit_programs:flaky attempt {n}" for n in (1, 2, 3)]
    assert Schedule(failures={kp.flaky: (1, 2)}).check(kp.retried, 5, fresh=0).outcome.value == kp.flaky(5)

    outcome = Simulation(failures={kp.flaky: (1, 2, 3)}).run(kp.retried, 5)
    assert outcome.status == "failed" and isinstance(outcome.error, InjectedFailure)
    report = Schedule(failures={kp.flaky: (1, 2, 3)}, crash_points=(0, 1, 2, 3)).check(kp.retried, 5, fresh=0)
    assert report.outcome.same_as(outcome)  # a consistent failure survives
    assert report.crash_points == 4


def test_a_schedule_passes_signals_points_and_seed_through() -> None:
    report = Schedule(signals=(Signal("approval", "yes"),), crash_points=(0, 1), seed=5).check(kp.tally, 1, fresh=0)
    assert report.outcome.value == {"total": 0, "decision": "yes"}
    assert report.outcome.execution_id == Simulation(seed=5, signals={"approval": "yes"}).run(kp.tally, 1).execution_id
    assert report.crash_points == 2
    late = Schedule(signals=(Signal("approval", "late", at=10 ** 6),), crash_points=(0, report.possible_points))
    seeded, report = report, late.check(kp.tally, 1, fresh=0)
    assert report.outcome.value == {"total": 0, "decision": None}  # sent after the wait timed out
    assert report.outcome.execution_id != seeded.outcome.execution_id  # seed 0's
    assert report.crash_points == 1  # the indices wrap around


def test_bad_arguments_of_schedules_are_refused_at_once() -> None:
    with pytest.raises(TypeError, match="payloads of signal 'x' must be a Hypothesis strategy"):
        schedules(signals={"x": 3})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="takes a mapping of signal name"):
        schedules(signals=["x"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a signal name must be a non-empty str, not 3"):
        schedules(signals={3: st.just(1)})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"schedules\(steps=...\): 3 is not a step function"):
        schedules(steps=[3])
    with pytest.raises(ValueError, match="max_failures"):
        schedules(max_failures=-1)
