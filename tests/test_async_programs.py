"""Async programs (issue 15, stage D): ``async def`` programs run by the runner, the worker and the test kit.

Each async program is driven by a pump on the runner's event loop; its durable awaits (step, sleep, wait,
checkpoint) are the requests a generator program yields, and its transient awaits (asyncio) run between them.
"""
from __future__ import annotations

import asyncio
import gc
import importlib
import itertools
import json
import logging
import os
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import pytest

from runtime import values
from runtime.programs import pump as pumps
from runtime.programs.clock import VirtualClock
from runtime.programs.requests import Step, sleep, step, suspend
from runtime.programs.runner import Runner
from runtime.programs.store import CANCELLED, FAILED, FINISHED, WAITING
from runtime.programs.worker import Worker
from transpiler import install_import_hook

PROGRAMS = '''
import asyncio, json, os, sys
from runtime import durable, sleep, wait, step, checkpoint, current_step, suspend

CALLS = os.environ.get("DG_TEST_CALLS", "calls.log")


def record(*what):
    with open(CALLS, "a") as fh:
        fh.write(json.dumps(what) + "\\n")


def add(a, b):
    return [a + b, current_step().idempotency_key]


async def add_later(a, b):
    await asyncio.sleep(0)
    return [a + b, current_step().idempotency_key, asyncio.current_task() is not None]


async def transient(tag):
    await asyncio.sleep(0.001)
    record("transient", tag)
    return tag


def notify(who):
    return f"notified {who}"


@durable
async def everything(n):
    total, keys = 0, []
    for i in range(n):
        total, key = await step(add, total, i)
        keys.append(key)
        await asyncio.sleep(0)
        total, key, in_task = await step(add_later, total, 1)
        keys.append(key)
        await suspend({"done": i + 1})
    await sleep(3600)
    got = await wait("go")
    await checkpoint()
    return [total, keys, got, asyncio.current_task().get_name()]


@durable
def generator_twin(n):
    total = 0
    for i in range(n):
        total, _ = yield step(add, total, i)
    return total


@durable
async def leaf(k):
    value, _, _ = await step(add_later, k, 100)
    return value


async def helper():
    return await step(add, 1, 2)


@durable
async def awaits_in_a_helper():
    return await helper()


@durable
async def waits_for_a_step():
    return await asyncio.wait_for(step(add, 1, 2), 5)


@durable
async def chain(n):
    got = []
    for k in range(n):
        got.append(await leaf(k))
        got.append(await transient(k))
    return got


@durable
async def gathers_steps():
    return await asyncio.gather(step(add, 1, 2), step(add, 3, 4))


@durable
async def gathers_coroutines():
    second = leaf(2)
    try:
        await asyncio.gather(leaf(1), second)
    except TypeError as exc:
        first = str(exc)
        second.close()  # never reached by gather: it would warn, as it does natively
    try:
        asyncio.get_running_loop().create_task(leaf(3))
    except TypeError as exc:
        return [first, str(exc)]


async def times_out():
    async with asyncio.timeout(0.01):
        await asyncio.sleep(10)


@durable
async def with_timeout():
    first, _ = await step(add, 1, 1)
    try:
        await times_out()
    except TimeoutError:
        timed_out = True
    second, _ = await step(add, first, 1)
    return [second, timed_out]


@durable
async def cleans_up(durably):
    try:
        await wait("never")
    finally:
        await asyncio.sleep(0)
        record("finally ran", asyncio.current_task().get_name())
        if durably:
            await step(add, 1, 1)


async def forever():
    try:
        await asyncio.sleep(3600)
    finally:
        record("background cancelled")


@durable
async def leaves_a_task():
    asyncio.get_running_loop().create_task(forever())
    await asyncio.sleep(0)
    await sleep(10)
    return "slept"


SENT = []


def send_email(to):
    SENT.append(to)


@durable
async def emails_outside_step(user):
    order, _ = await step(add, 1, 2)
    await transient("before the e-mail")
    send_email(user)
    receipt = await step(notify, user)
    return [order, receipt]


@durable
async def emails_in_step(user):
    order, _ = await step(add, 1, 2)
    await transient("before the e-mail")
    receipt = await step(notify, user)
    return [order, receipt]
'''

_ids = itertools.count(1)


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The programs module (unique name), compiled by the import hook; calls are logged to a file."""
    folder = tmp_path_factory.mktemp("async_programs")
    name = f"dg_async_programs_{next(_ids)}"
    (folder / f"{name}.py").write_text(PROGRAMS, encoding="utf-8")
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    install_import_hook([name])
    saved = os.environ.get("DG_TEST_CALLS")
    os.environ["DG_TEST_CALLS"] = str(folder / "calls.log")  # (a fresh interpreter's replay logs there too)
    yield importlib.import_module(name)
    if saved is None:
        os.environ.pop("DG_TEST_CALLS", None)
    else:
        os.environ["DG_TEST_CALLS"] = saved
    sys.path.remove(str(folder))
    sys.modules.pop(name, None)


@pytest.fixture(autouse=True)
def no_asyncio_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No task destroyed while pending, no exception never retrieved (asyncio logs them)."""
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        yield
        gc.collect()
    assert not [r for r in caplog.records if r.name == "asyncio"]


def calls(programs: Any) -> list[list[Any]]:
    path = Path(programs.CALLS)
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return [json.loads(line) for line in lines]


@pytest.fixture
def env(any_store: Any, programs: Any) -> Iterator[Any]:
    clock = VirtualClock()
    worker = Worker(any_store, clock=clock, lease=30)
    calls(programs)
    yield type("Env", (), {"store": any_store, "clock": clock, "worker": worker, "runner": worker.runner,
                           "ref": lambda _, fn: f"{programs.__name__}:{fn}"})()
    worker.runner.close()


# ---------------------------------------------------------------------- the pump alone


def add(a: int, b: int) -> int:
    return a + b


async def hand_program() -> Any:
    first = await step(add, 1, 2)
    await asyncio.sleep(0)  # a bare yield: one loop turn
    await asyncio.sleep(0.001)  # a Future
    progress = await suspend({"p": 1})
    try:
        await asyncio.gather(step(add, 1, 1), step(add, 2, 2))
    except TypeError as exc:
        refused = str(exc)
    return [first, progress, refused, asyncio.current_task().get_name()]


def test_the_pump_hands_durable_awaits_over_and_lets_the_loop_run_the_rest() -> None:
    loop = pumps.new_loop()
    try:
        pump = pumps.Pump(hand_program(), loop)
        kind, request = pump.resume(("next", None))
        assert kind == "yield" and isinstance(request, Step) and request.args == (1, 2)
        assert pump.resume(("send", 3)) == ("yield", {"p": 1})
        kind, value = pump.resume(("send", "answer"))
        assert kind == "return" and value[:2] == [3, "answer"] and value[3] == "program hand_program"
        assert value[2].startswith("step(add) awaited inside asyncio task")
        assert "await them one after another" in value[2]
        pump.close()
        assert not asyncio.all_tasks(loop)
    finally:
        pumps.close_loop(loop)
    assert loop.is_closed()


def test_the_pump_throws_into_the_program_and_reports_how_it_ends() -> None:
    async def program() -> Any:
        try:
            await sleep(5)
        except KeyError:
            await asyncio.sleep(0)
            raise ValueError("after the key error")

    loop = pumps.new_loop()
    try:
        pump = pumps.Pump(program(), loop)
        assert pump.resume(("next", None))[0] == "yield"
        kind, error = pump.resume(("throw", KeyError("k")))
        assert kind == "raise" and isinstance(error, ValueError) and isinstance(error.__context__, KeyError)
    finally:
        pumps.close_loop(loop)


def test_a_cancelled_pump_cancels_the_future_the_program_waits_for_and_a_bad_yield_is_refused() -> None:
    class BadYield:
        def __await__(self) -> Any:
            return (yield "not a Future")

    async def program() -> Any:
        future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(asyncio.current_task().cancel)  # type: ignore[union-attr]
        try:
            await future
        except asyncio.CancelledError:
            cancelled = future.cancelled()
        try:
            await BadYield()
        except RuntimeError as exc:
            bad = str(exc)
        return await suspend([cancelled, bad])

    loop = pumps.new_loop()
    try:
        pump = pumps.Pump(program(), loop)
        kind, (cancelled, bad) = pump.resume(("next", None))
        assert kind == "yield" and cancelled and "got bad yield: 'not a Future'" in bad
    finally:
        pumps.close_loop(loop)


def test_outside_a_program_loop_durable_awaits_are_not_checked() -> None:
    async def main() -> Any:  # a coroutine driven by hand inside someone else's loop, as tests do
        coro = hand_program()
        return coro.send(None), coro.close()

    request, _ = asyncio.run(main())
    assert isinstance(request, Step)


# ---------------------------------------------------------------------- the runner


def test_sleep_wait_step_and_checkpoint_awaited_through_the_runner(env: Any) -> None:
    ex = env.runner.start(env.ref("everything"), [2])
    env.worker.run_until_idle()  # the virtual clock passes the hour of sleep at once
    waiting = env.store.get(ex.id)
    assert waiting.status == WAITING, waiting.error
    assert waiting.waiting_for == "go" and waiting.progress == {"done": 2}
    env.store.send_signal(ex.id, "go", {"by": "ada"}, now=env.clock.now())
    env.worker.run_until_idle()
    final = env.store.get(ex.id)
    assert final.status == FINISHED, final.error
    total, keys, got, task = values.load_value(final.result)
    assert total == 3 and got == {"by": "ada"} and task == "program everything"
    assert keys == [f"{ex.id}:{i}:1" for i in range(4)]  # current_step() in a plain and in an async step
    assert [s.status for s in env.store.steps(ex.id)] == ["done"] * 4


def test_a_sync_and_an_async_program_share_a_store(env: Any, programs: Any) -> None:
    sync = env.runner.start(env.ref("generator_twin"), [3])
    chained = env.runner.start(env.ref("chain"), [2])
    env.worker.run_until_idle()
    assert values.load_value(env.store.get(sync.id).result) == 0 + 1 + 2
    assert values.load_value(env.store.get(chained.id).result) == [100, 0, 101, 1]
    assert [c[1] for c in calls(programs) if c[0] == "transient"] == [0, 1]


def test_a_durable_await_in_a_transient_coroutine_fails_the_program_with_its_line(env: Any) -> None:
    helper = env.runner.start(env.ref("awaits_in_a_helper"), [])
    waits_for = env.runner.start(env.ref("waits_for_a_step"), [])
    env.worker.run_until_idle()
    failed = env.store.get(helper.id)
    assert failed.status == FAILED and env.store.steps(helper.id) == []
    assert "awaits_in_a_helper suspended at line " in failed.error
    assert "it is awaiting coroutine 'helper'" in failed.error and "which is not durable" in failed.error
    failed = env.store.get(waits_for.id)
    assert failed.status == FAILED and env.store.steps(waits_for.id) == []
    if sys.version_info >= (3, 12):  # wait_for awaits in place: its frame is in the program's chain
        assert "it is awaiting coroutine 'wait_for'" in failed.error
    else:  # wait_for runs it in a task of its own
        assert "TypeError: step(add) awaited inside asyncio task" in failed.error


def test_asyncio_gather_of_durable_awaits_is_refused_at_the_call(env: Any) -> None:
    steps = env.runner.start(env.ref("gathers_steps"), [])
    coroutines = env.runner.start(env.ref("gathers_coroutines"), [])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a refused coroutine is closed: no "never awaited"
        env.worker.run_until_idle()
    failed = env.store.get(steps.id)
    assert failed.status == FAILED
    assert "TypeError: step(add) awaited inside asyncio task" in failed.error
    assert "must be awaited by the program itself, not inside asyncio.gather" in failed.error
    first, second = values.load_value(env.store.get(coroutines.id).result)
    assert first.startswith("a durable coroutine (leaf) cannot run in an asyncio task")
    assert second.startswith("a durable coroutine (leaf) cannot run in an asyncio task")
    assert env.store.steps(steps.id) == []


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is 3.11+")
def test_asyncio_timeout_around_transient_work(env: Any) -> None:
    ex = env.runner.start(env.ref("with_timeout"), [])
    env.worker.run_until_idle()
    assert values.load_value(env.store.get(ex.id).result) == [3, True]


def test_cancel_runs_finally_blocks_that_await_transient_work(env: Any, programs: Any) -> None:
    plain = env.runner.start(env.ref("cleans_up"), [False])
    durably = env.runner.start(env.ref("cleans_up"), [True])
    env.worker.run_until_idle()
    assert env.store.get(plain.id).status == WAITING
    for ex in (plain, durably):
        env.store.request_cancel(ex.id, now=env.clock.now())
    env.worker.run_until_idle()
    assert [c[0] for c in calls(programs)] == ["finally ran", "finally ran"]
    assert env.store.get(plain.id).status == CANCELLED and env.store.get(plain.id).error == "cancelled"
    refused = env.store.get(durably.id)
    assert refused.status == CANCELLED
    assert "RuntimeError: a durable await (step/sleep/wait/checkpoint) while the program is being cancelled" \
        in refused.error
    assert env.store.steps(durably.id) == []


def test_tasks_a_program_leaves_running_are_cancelled_when_it_suspends(env: Any, programs: Any) -> None:
    ex = env.runner.start(env.ref("leaves_a_task"), [])
    env.runner.claim_and_advance(ex.id)  # to the sleep
    assert [c[0] for c in calls(programs)] == ["background cancelled"]
    assert not asyncio.all_tasks(env.runner.event_loop())
    env.worker.run_until_idle()
    assert values.load_value(env.store.get(ex.id).result) == "slept"


def test_a_runner_called_inside_a_running_loop_sets_the_program_aside(programs: Any) -> None:
    from runtime.programs.store.memory import MemoryStore

    with Runner(MemoryStore(), clock=VirtualClock()) as runner:
        ex = runner.start(f"{programs.__name__}:chain", [1])

        async def main() -> Any:
            return runner.claim_and_advance(ex.id)

        aside = asyncio.run(main())
    assert aside.held_until is not None and "from inside a running event loop" in aside.error


def test_the_runner_closes_its_loop(programs: Any) -> None:
    from runtime.programs.store.memory import MemoryStore

    with Runner(MemoryStore(), clock=VirtualClock()) as runner:
        ex = runner.start(f"{programs.__name__}:chain", [1])
        runner.claim_and_advance(ex.id)
        loop = runner.event_loop()
    assert loop.is_closed()
    assert values.load_value(runner.store.get(ex.id).result) == [100, 0]


def test_a_worker_runs_async_programs_in_its_scheduler_thread(tmp_path: Path, programs: Any) -> None:
    from runtime.programs.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "store.db")
    worker = Worker(store, poll=0.02, concurrency=2)
    ids = [worker.runner.start(f"{programs.__name__}:chain", [3]).id for _ in range(4)]
    ids.append(worker.runner.start(f"{programs.__name__}:generator_twin", [3]).id)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(store.get(i).status != FINISHED for i in ids):
            time.sleep(0.02)
    finally:
        worker.stop.set()
        thread.join(10)
    assert [values.load_value(store.get(i).result) for i in ids] == [[100, 0, 101, 1, 102, 2]] * 4 + [3]
    store.close()


# ---------------------------------------------------------------------- the test kit


def test_a_simulation_runs_an_async_program(programs: Any) -> None:
    from runtime.testing import Simulation

    sim = Simulation(signals={"go": "yes"})
    outcome = sim.run(programs.everything, 1)
    total, keys, got, _ = outcome.result()
    assert (total, got) == (1, "yes") and len(keys) == 2
    assert outcome.elapsed == 3600


def test_an_async_program_survives_crashes_and_a_fresh_interpreter(programs: Any) -> None:
    from runtime.testing import assert_survives_crashes

    report = assert_survives_crashes(programs.chain, 2, points="all", fresh=1)
    assert report.outcome.result() == [100, 0, 101, 1]
    assert report.crash_points == report.possible_points and report.fresh_points == 1
    transient = [c for c in calls(programs) if c[0] == "transient"]
    assert len(transient) > 2 * (1 + 1)  # the transient awaits ran again after crashes (and in the replay)
    report = assert_survives_crashes(programs.emails_in_step, "ada", points="all", fresh=0)
    assert report.outcome.result() == [3, "notified ada"]


def test_planted_bug_an_email_sent_outside_a_step_of_an_async_program(programs: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.testing import SurvivalError, assert_survives_crashes, spy

    sent = spy(programs.send_email)
    monkeypatch.setattr(programs, "send_email", sent)
    with pytest.raises(SurvivalError) as caught:
        assert_survives_crashes(programs.emails_outside_step, "ada", spies=[sent], points="all", fresh=0)
    assert {f.kind for f in caught.value.findings} == {"ran twice"}
    assert "send_email was called 2 times outside a step (1 without crashes)" in str(caught.value)
