"""Durable programs (README: "Durable programs"): what a program yields and what it gets back, run by
the runner on a real SQLite store with a virtual clock (no real sleeping).

Each program's outcome is compared with what the same generator does when driven by hand natively
(``drive_natively``): the runner may suspend, persist and restore it at every request, and the
result must not change.
"""
from __future__ import annotations

import importlib
import itertools
import json
import sys
from pathlib import Path

import pytest

from runtime.programs import requests as rq
from runtime import values
from runtime.programs.clock import VirtualClock
from runtime.programs.requests import Checkpoint, Sleep, Step
from runtime.programs.runner import ProgramError, Runner
from runtime.programs.store import CANCELLED, FAILED, FINISHED, SLEEPING, WAITING
from runtime.programs.store.sqlite import SQLiteStore
from runtime.programs.worker import Worker

_ids = itertools.count(1)

PROGRAMS = '''
import json, os
from runtime import (durable, sleep, wait, step, checkpoint, current_step, SignalTimeout, StepFailed)

CALLS = os.environ.get("DG_TEST_CALLS", "calls.log")


def record(*what):
    with open(CALLS, "a") as fh:
        fh.write(json.dumps(what) + "\\n")


def add(a, b):
    record("add", a, b, current_step().idempotency_key)
    return a + b


FLAKY = {"left": 0}


def flaky(value):
    record("flaky", value, current_step().attempt)
    if FLAKY["left"] > 0:
        FLAKY["left"] -= 1
        raise ConnectionError(f"try again ({FLAKY['left']} left)")
    return value * 10


def always_fails():
    raise KeyError("missing")


class Opaque(Exception):
    def __init__(self, handle):
        super().__init__("opaque")
        self.handle = handle


def fails_with_an_uncarriable_exception():
    import threading
    raise Opaque(threading.Lock())  # a lock cannot be carried


@durable
def adder(n):
    total = 0
    for i in range(n):
        total = yield step(add, total, i)
        yield {"done": i + 1}
    return total


@durable
def sleeper(days):
    yield sleep(days * 86400)
    yield checkpoint()
    return "rested"


@durable
def approval(timeout):
    try:
        decision = yield wait("approve", timeout=timeout)
    except SignalTimeout as exc:
        return ["timeout", exc.signal]
    second = yield wait("approve")
    return ["approved", decision, second]


@durable
def retrying(value, attempts):
    try:
        got = yield step(flaky, value).retry(attempts=attempts, backoff=10, factor=3, max_backoff=1000)
    except ConnectionError as exc:
        return ["gave up", str(exc)]
    return ["ok", got]


@durable
def retried_with_cleanup(value):
    try:
        return (yield step(flaky, value).retry(attempts=4, backoff=1))
    finally:
        record("cleanup")


@durable
def handles_failure():
    try:
        yield step(always_fails).retry(attempts=2, backoff=1)
    except KeyError as exc:
        return ["caught", exc.args[0]]


@durable
def uncarriable():
    try:
        yield step(fails_with_an_uncarriable_exception).retry(attempts=1)
    except StepFailed as exc:
        return ["step failed", exc.type_name]


@durable
def crashes():
    yield checkpoint()
    raise ValueError("program bug")


@durable
def child(k):
    got = yield step(add, k, 100)
    yield sleep(5)
    return got


@durable
def parent():
    a = yield from child(1)
    b = yield from child(2)
    return a + b


@durable
def cleanup():
    try:
        yield wait("never")
    finally:
        record("finally ran")


@durable
def holds_a_lock():
    import threading
    lock = threading.Lock()
    yield checkpoint()
    return lock.locked()


def module_level(x):
    return x


def slow(seconds):
    import time
    record("slow started")
    time.sleep(seconds)
    return "slept"


@durable
def long_step(seconds):
    return (yield step(slow, seconds))


@durable
def bad_step():
    try:
        yield step(lambda: 1)
    except TypeError as exc:
        return str(exc)[:40]


@durable
def bad_step_argument():
    import threading
    lock = threading.Lock()
    try:
        yield step(add, 1, b=lock)  # STEP WITH A LOCK
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
'''


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A programs module (unique name) on sys.path, a store, a virtual clock and a runner."""
    name = f"dg_programs_{next(_ids)}"
    (tmp_path / f"{name}.py").write_text(PROGRAMS, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DG_TEST_CALLS", str(tmp_path / "calls.log"))
    importlib.invalidate_caches()
    store = SQLiteStore(tmp_path / "store.db")
    clock = VirtualClock()
    events: list[tuple[str, str, str]] = []
    runner = Runner(store, clock=clock, lease=30, on_event=lambda *e: events.append(e))

    class Env:
        pass

    e = Env()
    e.name, e.store, e.clock, e.runner, e.events, e.dir = name, store, clock, runner, events, tmp_path
    e.module = lambda: importlib.import_module(name)
    e.calls = lambda: [json.loads(line) for line in (tmp_path / "calls.log").read_text().splitlines()] \
        if (tmp_path / "calls.log").exists() else []
    e.worker = Worker(store, clock=clock, lease=30)
    yield e
    store.close()
    sys.modules.pop(name, None)


def start(env, function: str, *args):
    return env.runner.start(f"{env.name}:{function}", list(args))


def run_all(env) -> None:
    env.worker.run_until_idle()


def drive_natively(gen, responses):
    """Drive a program by hand: ``responses(request)`` gives what the runner would send back."""
    value, kind = None, "send"
    while True:
        try:
            request = gen.send(value) if kind == "send" else gen.throw(value)
        except StopIteration as stop:
            return stop.value
        kind, value = responses(request)


def native_responses(request):
    if isinstance(request, Step):
        token = rq._CURRENT.set(rq.StepContext("native", 0, 1))
        try:
            return "send", request.fn(*request.args, **request.kwargs)
        except Exception as exc:  # noqa: BLE001
            return "throw", exc
        finally:
            rq._CURRENT.reset(token)
    if isinstance(request, (Sleep, Checkpoint)):
        return "send", None
    return "send", None  # progress


# ============================================================================ steps and progress


def test_steps_are_recorded_and_their_results_sent_back(env):
    ex = start(env, "adder", 4)
    run_all(env)
    final = env.store.get(ex.id)
    assert final.status == FINISHED
    expected = drive_natively(_native("adder", 4), native_responses)
    assert values.load_value(final.result) == expected
    steps = env.store.steps(ex.id)
    assert [(s.index, s.status, s.attempts) for s in steps] == [(i, "done", 1) for i in range(4)]
    assert final.progress == {"done": 4}
    keys = [c[3] for c in env.calls() if c[0] == "add" and not c[3].startswith("native")]
    assert keys == [f"{ex.id}:{i}:1" for i in range(4)]


def _native(function: str, *args):
    """The program's generator, run natively (the module's source exec'd with @durable a no-op)."""
    namespace: dict = {}
    source = PROGRAMS.replace("from runtime import (durable,", "from runtime import (")
    exec(compile("durable = lambda f: f\n" + source, "native.py", "exec"), namespace)
    return namespace[function](*args)


def test_a_committed_step_is_not_run_again(env):
    ex = start(env, "adder", 3)
    claimed = env.store.claim("w1", now=env.clock.now(), lease=30)
    runner = Runner(env.store, clock=env.clock, owner="w1", lease=30)
    # stop the runner right after the first step's result is committed (before the next snapshot)
    original = runner._run_step

    def run_once(*args, **kwargs):
        outcome = original(*args, **kwargs)
        runner.stop.set()
        return outcome

    runner._run_step = run_once
    runner.advance(claimed)
    assert [s.status for s in env.store.steps(ex.id)] == ["done"]
    assert len([c for c in env.calls() if c[0] == "add"]) == 1
    run_all(env)  # another runner resumes: the recorded result is sent back, add() is not called again
    assert len([c for c in env.calls() if c[0] == "add"]) == 3
    assert env.store.get(ex.id).status == FINISHED


# ============================================================================ timers and signals


def test_sleep_uses_the_clock_and_persists(env):
    ex = start(env, "sleeper", 7)
    t0 = env.clock.now()
    env.runner.claim_and_advance(ex.id)
    sleeping = env.store.get(ex.id)
    assert sleeping.status == SLEEPING and sleeping.wake_at == pytest.approx(t0 + 7 * 86400)
    assert env.runner.claim_and_advance(ex.id) is None  # not due
    run_all(env)  # the virtual clock jumps to the timer
    assert env.store.get(ex.id).status == FINISHED
    assert env.clock.now() >= t0 + 7 * 86400


def test_wait_receives_signals_in_order_including_one_sent_early(env):
    ex = start(env, "approval", 60)
    env.store.send_signal(ex.id, "approve", {"by": "grace"}, now=env.clock.now())  # before the wait
    env.runner.claim_and_advance(ex.id)
    waiting = env.store.get(ex.id)
    assert waiting.status == WAITING and waiting.waiting_for == "approve"  # the second wait
    env.store.send_signal(ex.id, "approve", "second", now=env.clock.now())
    env.runner.claim_and_advance(ex.id)
    final = env.store.get(ex.id)
    assert values.load_value(final.result) == ["approved", {"by": "grace"}, "second"]
    assert [s.consumed for s in env.store.signals(ex.id)] == [True, True]


def test_wait_timeout_raises_inside_the_program(env):
    ex = start(env, "approval", 3600)
    env.runner.claim_and_advance(ex.id)
    assert env.store.get(ex.id).wake_at == pytest.approx(env.clock.now() + 3600)
    run_all(env)
    assert values.load_value(env.store.get(ex.id).result) == ["timeout", "approve"]


# ============================================================================ retries and failures


def test_a_flaky_step_is_retried_with_backoff(env):
    env.module().FLAKY["left"] = 2
    ex = start(env, "retrying", 7, 3)
    t0 = env.clock.now()
    env.runner.claim_and_advance(ex.id)
    assert env.store.get(ex.id).status == SLEEPING
    assert env.store.get(ex.id).wake_at == pytest.approx(t0 + 10)  # backoff * factor**0
    env.clock.advance(10)
    env.runner.claim_and_advance(ex.id)
    assert env.store.get(ex.id).wake_at == pytest.approx(t0 + 10 + 30)  # backoff * factor**1
    run_all(env)
    assert values.load_value(env.store.get(ex.id).result) == ["ok", 70]
    [record] = env.store.steps(ex.id)
    assert (record.status, record.attempts) == ("done", 3)
    assert [c[2] for c in env.calls() if c[0] == "flaky"] == [1, 2, 3]  # attempt numbers


def test_exhausted_retries_raise_the_steps_exception_in_the_program(env):
    env.module().FLAKY["left"] = 5
    ex = start(env, "retrying", 1, 2)
    run_all(env)
    assert values.load_value(env.store.get(ex.id).result) == ["gave up", "try again (3 left)"]
    assert env.store.steps(ex.id)[0].status == "failed"
    ex2 = start(env, "handles_failure")
    run_all(env)
    assert values.load_value(env.store.get(ex2.id).result) == ["caught", "missing"]
    ex3 = start(env, "uncarriable")
    run_all(env)
    assert values.load_value(env.store.get(ex3.id).result) == ["step failed", "Opaque"]


def test_an_uncaught_exception_fails_the_execution(env):
    ex = start(env, "crashes")
    run_all(env)
    failed = env.store.get(ex.id)
    assert failed.status == FAILED
    assert "ValueError: program bug" in failed.error and "Traceback" in failed.error
    assert isinstance(values.load_value(failed.error_value), ValueError)


def test_a_step_needs_a_module_level_function(env):
    ex = start(env, "bad_step")
    run_all(env)
    assert values.load_value(env.store.get(ex.id).result).startswith("step() needs a module-level function")


def test_a_step_argument_that_cannot_be_stored_is_named_with_the_step_and_line(env):
    ex = start(env, "bad_step_argument")
    run_all(env)
    line = [n for n, text in enumerate(PROGRAMS.splitlines(), 1) if text.endswith("# STEP WITH A LOCK")][0]
    message = values.load_value(env.store.get(ex.id).result)
    assert message.startswith(f"UnserializableValueError: cannot store argument 'b' of step {env.name}:add "
                              f"(yielded at line {line} of {env.name}:bad_step_argument): value of type "
                              "'_thread.lock' is not supported"), message
    assert "[0]" not in message and "[1]" not in message


def test_an_unserializable_local_fails_with_its_name(env):
    ex = start(env, "holds_a_lock")
    run_all(env)
    failed = env.store.get(ex.id)
    assert failed.status == FAILED and "lock" in failed.error and "cannot persist" in failed.error


# ============================================================================ composition, cancel


def test_child_programs_compose_with_yield_from(env):
    ex = start(env, "parent")
    run_all(env)
    assert values.load_value(env.store.get(ex.id).result) == 101 + 102
    assert [s.index for s in env.store.steps(ex.id)] == [0, 1]


def test_cancel_closes_the_generator_so_finally_runs(env):
    ex = start(env, "cleanup")
    env.runner.claim_and_advance(ex.id)
    assert env.store.get(ex.id).status == WAITING
    env.store.request_cancel(ex.id, now=env.clock.now())
    env.runner.claim_and_advance(ex.id)
    final = env.store.get(ex.id)
    assert final.status == CANCELLED
    assert env.calls() == [["finally ran"]]


# ============================================================================ bad input, code changes


def test_unknown_functions_and_bad_arguments_write_nothing(env):
    with pytest.raises(ProgramError, match="has no function"):
        env.runner.start(f"{env.name}:nope", [])
    with pytest.raises(ProgramError, match="is not a @durable generator function"):
        env.runner.start(f"{env.name}:module_level", [1])
    with pytest.raises(ProgramError, match="do not fit"):
        env.runner.start(f"{env.name}:adder", [1, 2, 3])
    with pytest.raises(ProgramError, match="cannot import module"):
        env.runner.start("no_such_module_anywhere:f", [])
    with pytest.raises(ProgramError, match="MODULE:FUNCTION"):
        env.runner.start("adder", [])
    with pytest.raises(ProgramError, match="do not fit"):
        env.runner.start(f"{env.name}:adder", [], {"m": 1})
    assert env.store.list() == []


def test_keyword_arguments_reach_the_program(env):
    ex = env.runner.start(f"{env.name}:sleeper", [], {"days": 2})
    assert env.store.get(ex.id).args == {"args": [], "kwargs": {"days": 2}}
    run_all(env)
    assert values.load_value(env.store.get(ex.id).result) == "rested"


def test_a_module_that_does_not_compile_is_a_program_error_naming_the_problem(env):
    """durable run of such a module exited 123 ("internal error ... please report this")."""
    broken = f"dg_broken_{next(_ids)}"
    (env.dir / f"{broken}.py").write_text("from runtime import durable\n\n@durable\ndef f():\n    return 1\n")
    with pytest.raises(ProgramError, match=r"cannot import module .*\n.*:4:.*error: DG004"):
        env.runner.start(f"{broken}:f", [])
    assert broken not in sys.modules and env.store.list() == []


def _deploy(env, source: str) -> None:
    """A new deploy of the program module, in a fresh interpreter state."""
    sys.modules.pop(env.name, None)
    (env.dir / f"{env.name}.py").write_text(source, encoding="utf-8")
    importlib.invalidate_caches()


def test_a_run_the_new_code_cannot_resume_is_blocked_not_retried(env, tmp_path):
    ex = start(env, "sleeper", 1)
    env.runner.claim_and_advance(ex.id)
    before = env.store.get(ex.id)
    assert before.point == "yield sleep(days * 86400)" and before.code_version
    # the suspending statement is rewritten: no point of the new code has its label
    _deploy(env, PROGRAMS.replace("yield sleep(days * 86400)", "yield sleep(days * 86400 + 1)"))
    env.clock.advance(86400 + 1)
    env.runner.claim_and_advance(ex.id)
    after = env.store.get(ex.id)
    assert after.status == before.status == SLEEPING and after.snapshot == before.snapshot
    assert after.request == before.request and after.held_until is None
    assert any(kind == "blocked" and "PointMismatchError" not in text and "no point with this label" in text
               for _, kind, text in env.events)
    # blocked on this code's key: not claimed again by it, whatever is due
    assert after.blocked_on and after.blocked_on[0].startswith(env.name + "@") and "no point" in after.error
    assert after.lease_owner is None and env.runner.claim_and_advance(ex.id) is None
    # the old code deployed again (a rollback) has another key: it resumes the run, which is no longer blocked
    _deploy(env, PROGRAMS)
    env.runner.claim_and_advance(ex.id)
    resumed = env.store.get(ex.id)
    assert resumed.blocked_on is None and resumed.error is None and resumed.status == FINISHED


def test_a_run_blocked_by_a_deploy_can_still_be_cancelled(env, tmp_path):
    ex = start(env, "sleeper", 1)
    env.runner.claim_and_advance(ex.id)
    _deploy(env, PROGRAMS.replace("yield sleep(days * 86400)", "yield sleep(days * 86400 + 1)"))
    env.clock.advance(86400 + 1)
    env.runner.claim_and_advance(ex.id)
    assert env.store.get(ex.id).blocked_on
    # cancelling it still works (its finally blocks cannot run: the code is not there any more)
    env.store.request_cancel(ex.id, now=env.clock.now())
    env.runner.claim_and_advance(ex.id)
    cancelled = env.store.get(ex.id)
    assert cancelled.status == CANCELLED and "could not run" in cancelled.error


def test_a_change_after_the_point_reaches_the_suspended_run(env, tmp_path):
    ex = start(env, "sleeper", 1)
    env.runner.claim_and_advance(ex.id)
    _deploy(env, PROGRAMS.replace('return "rested"', 'return "changed"'))
    env.clock.advance(86400 + 1)
    while env.runner.claim_and_advance(ex.id) is not None:
        pass
    done = env.store.get(ex.id)
    assert done.status == FINISHED and values.load_value(done.result) == "changed"


def test_a_step_longer_than_the_lease_keeps_it(env):
    """The runner renews its lease while a step runs: however long the step takes (here, virtual time
    moves far past the lease while it runs), no other runner can take the execution over."""
    import threading
    import time

    ex = env.runner.start(f"{env.name}:long_step", [0.0])
    gate = threading.Event()
    module = env.module()

    def slow(seconds):  # stands in for the module's `slow`: blocks until the test lets it finish
        module.record("slow started")
        gate.wait(60)
        return "slept"

    slow.__module__, slow.__qualname__ = module.__name__, "slow"
    module.slow = slow
    first = Runner(env.store, clock=env.clock, owner="first", lease=0.3)
    second = Runner(env.store, clock=env.clock, owner="second", lease=0.3)
    claimed = env.store.claim("first", now=env.clock.now(), lease=0.3, execution_id=ex.id)
    thread = threading.Thread(target=first.advance, args=(claimed,))
    thread.start()
    try:
        for _ in range(10):  # 10 × 0.2 s of virtual time: far past a 0.3 s lease
            env.clock.advance(0.2)
            deadline = time.time() + 10
            while env.store.get(ex.id).lease_until < env.clock.now() + 0.25:  # wait for the renewal
                assert time.time() < deadline, "the lease was not renewed"
                time.sleep(0.01)
            assert second.claim_and_advance(ex.id) is None
    finally:
        gate.set()
        thread.join()
    assert env.calls().count(["slow started"]) == 1
    assert values.load_value(env.store.get(ex.id).result) == "slept"


class TickingClock(VirtualClock):
    """Each look at the clock moves it 5 s: a long run of transitions outlives a 30 s lease."""

    def now(self) -> float:
        self.advance(5.0)
        return super().now()


def test_transitions_extend_the_lease_so_a_long_advance_keeps_it(env):
    clock = TickingClock()
    runner = Runner(env.store, clock=clock, lease=30, on_event=lambda *e: env.events.append(e))
    ex = runner.start(f"{env.name}:adder", [25])  # 50 transitions, 10+ clock readings past any lease
    final = runner.claim_and_advance(ex.id)
    assert final.status == FINISHED, [e for e in env.events if e[1] == "conflict"]
    assert values.load_value(final.result) == sum(range(25))


def test_finally_blocks_run_once_however_often_the_program_is_resumed(env):
    """A program restored and suspended again (a step retried after a resume, a wait resumed without
    its signal) is detached, never garbage-collected with its finally blocks running."""
    import gc
    env.module().FLAKY["left"] = 3
    ex = start(env, "retried_with_cleanup", 2)
    run_all(env)  # fails, resumes and fails twice more, then succeeds
    gc.collect()
    assert values.load_value(env.store.get(ex.id).result) == 20
    assert [c for c in env.calls() if c == ["cleanup"]] == [["cleanup"]]


def test_a_worker_with_several_threads_runs_each_execution_once(env):
    """``durable worker --concurrency 4``: threads share one store; every execution finishes once."""
    import threading
    import time

    from runtime.programs.clock import SYSTEM
    ids = [env.runner.start(f"{env.name}:adder", [5]).id for _ in range(8)]
    worker = Worker(env.store, concurrency=4, clock=SYSTEM, lease=30, poll=0.01)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        deadline = time.time() + 60
        while any(env.store.get(i).status != FINISHED for i in ids):
            assert time.time() < deadline, [env.store.get(i).status for i in ids]
            time.sleep(0.05)
    finally:
        worker.stop.set()
        thread.join(30)
    assert not thread.is_alive()
    for execution_id in ids:
        assert values.load_value(env.store.get(execution_id).result) == 10
        assert [(s.index, s.attempts) for s in env.store.steps(execution_id)] == [(i, 1) for i in range(5)]
    adds = [c for c in env.calls() if c[0] == "add"]
    assert len(adds) == 8 * 5 and len({c[3] for c in adds}) == 40  # each step ran once


def test_a_snapshot_from_a_newer_runtime_is_left_for_one_not_failed(env):
    """A rolling deploy runs old and new workers together: a run a newer runtime wrote (a higher snapshot
    format) is set aside by an older one, untouched, never failed as unreadable."""
    import msgpack

    from runtime.programs.records import execution_parts
    from runtime.values import seals

    ex = start(env, "sleeper", 1)
    env.runner.claim_and_advance(ex.id)
    before = env.store.get(ex.id)
    envelope = msgpack.unpackb(before.snapshot, raw=False, strict_map_key=False)
    envelope[1] = values.FORMAT + 1
    newer = msgpack.packb(envelope, use_bin_type=True)
    mac = seals.seal("execution", execution_parts(ex.id, before.function, before.args, newer, before.request,
                                                  before.steps_started, None))
    _update(env, newer, mac, ex.id)  # as a newer worker would have written it (sealed with a checksum)
    env.clock.advance(86400 + 1)
    env.runner.claim_and_advance(ex.id)
    after = env.store.get(ex.id)
    assert after.status == SLEEPING and after.snapshot == newer and after.held_until is not None
    assert "newer than this runtime supports" in after.error


def _update(env, snapshot: bytes, mac: bytes, execution_id: str) -> None:
    import sqlite3

    with sqlite3.connect(env.dir / "store.db") as conn:
        conn.execute("UPDATE executions SET snapshot = ?, mac = ? WHERE id = ?", (snapshot, mac, execution_id))
