"""runtime.gather / race / first (issue 15, stage F): several durable awaits at once, outcomes in recorded order.

The combinator alone, driven by hand (results, cancellation, snapshots at every part, tampered state), then
programs run by the runner and the worker on every store, crashes at every commit by the test kit, and the
refusals.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import sys
import threading
import time
from typing import Any, Iterator

import pytest

from runtime import CorruptSnapshotError, durable, restore, snapshot, values
from runtime.programs.clock import VirtualClock
from runtime.programs.combinators import All, Combinator, Delivery, gather, race
from runtime.programs.requests import Sleep, Step, Wait, sleep, step, wait
from runtime.programs.store import FAILED, FINISHED, WAITING
from runtime.programs.worker import Worker
from transpiler import install_import_hook

PROGRAMS = '''
import asyncio, threading, time
from runtime import durable, sleep, wait, step, checkpoint, gather, race, first


def slow(x, seconds=0.0):
    time.sleep(seconds)
    return [x, threading.current_thread().name]


def double(x):
    return 2 * x


FAILS = {"left": 0}


def flaky(x):
    FAILS["left"] -= 1
    if FAILS["left"] >= 0:
        raise ConnectionError(f"flaky {x}")
    return x


def broken(x):
    raise KeyError(x)


@durable
async def child(n):
    await asyncio.sleep(0.001)  # transient, overlapping the others
    first = await step(double, n)
    await checkpoint()
    return first + 1


@durable
async def gathers(n):
    values = await gather(step(double, 1), child(n), sleep(5), child(n + 1))
    index, value = await race(wait("go", timeout=100), sleep(50))
    nested = await gather(step(double, 3), race(step(double, 4), sleep(1000)))
    return [values, index, value, nested]


@durable
async def in_parallel(seconds):
    return await gather(*[step(slow, i, seconds) for i in range(3)])


@durable
async def races_a_slow_step(seconds):
    return await race(step(slow, 1, seconds), sleep(0.3))


@durable
async def approval():
    index, value = await first(wait("approve"), sleep(7 * 24 * 3600))
    return ["approved", value] if index == 0 else ["timed out"]


@durable
async def fails(return_exceptions):
    return await gather(step(double, 1), step(broken, "k").retry(attempts=1), sleep(10),
                        return_exceptions=return_exceptions)


@durable
async def retries():
    return await gather(step(flaky, 1).retry(attempts=3, backoff=5), sleep(3))


async def cleanup_log(log, n):
    try:
        await sleep(n)
    except asyncio.CancelledError:
        log.append(f"cancelled {n}")
        await asyncio.sleep(0)  # transient clean-up is allowed
        raise


@durable
async def loser(n):
    try:
        await sleep(n)
    except asyncio.CancelledError:
        await asyncio.sleep(0)
        raise
    finally:
        await asyncio.sleep(0)


@durable
async def races_coroutines():
    return await race(loser(100), step(double, 21))


@durable
async def two_signals():
    first = await race(wait("approve"), wait("reject"), sleep(100))
    both = await gather(wait("a"), wait("b"), wait("a"))
    return [first, both]


@durable
async def parks_with_a_step(log):
    try:
        await gather(step(flaky, 1).retry(attempts=5, backoff=50), wait("x"))
    finally:
        await asyncio.sleep(0)
        log.append("finally ran")
        return log


@durable
async def abandons():
    index, _ = await race(step(double, 5), sleep(0))
    return index


@durable
def yields_a_gather():
    try:
        yield gather(sleep(1))
    except TypeError as exc:
        return str(exc)


NOTES = []


def note(i):
    NOTES.append(i)
    return i


@durable
async def noted():
    return await gather(step(note, 0), step(note, 1), step(note, 2))


@durable
async def arrival(i, seen):
    await step(note, i)
    seen.append(i)


@durable
async def arrivals():
    seen = []
    await gather(arrival(0, seen), arrival(1, seen), arrival(2, seen))
    return seen
'''

_ids = itertools.count(1)


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    folder = tmp_path_factory.mktemp("combinators")
    name = f"dg_combinator_programs_{next(_ids)}"
    (folder / f"{name}.py").write_text(PROGRAMS, encoding="utf-8")
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    install_import_hook([name])
    yield importlib.import_module(name)
    sys.path.remove(str(folder))
    sys.modules.pop(name, None)


@pytest.fixture
def env(any_store: Any, programs: Any) -> Iterator[Any]:
    clock = VirtualClock()
    worker = Worker(any_store, clock=clock, lease=30)
    events: list[tuple[str, str, str]] = []
    worker.runner.on_event = lambda *event: events.append(event)
    yield type("Env", (), {"store": any_store, "clock": clock, "worker": worker, "runner": worker.runner,
                           "events": events, "ref": lambda _, fn: f"{programs.__name__}:{fn}"})()
    worker.runner.close()


def result(env: Any, execution_id: str) -> Any:
    row = env.store.get(execution_id)
    assert row.status == FINISHED, (row.status, row.error)
    return values.load_value(row.result)


# ---------------------------------------------------------------------- the combinator by hand


def add(a: int, b: int) -> int:
    return a + b


@durable
async def hand_child(n: int) -> int:
    got = await sleep(n)
    return n if got is None else got


@durable
async def hand_program() -> Any:
    values_ = await gather(step(add, 1, 2), hand_child(2), sleep(3))
    won = await race(hand_child(4), sleep(5))
    return [values_, won]


def parts(request: Any) -> list[tuple[tuple[int, ...], str | None]]:
    assert type(request) is All
    return [(part.key, None if part.request is None else type(part.request).__name__) for part in request.parts]


def test_gather_parks_every_child_and_takes_outcomes_in_any_order_across_snapshots() -> None:
    program = hand_program()
    request = program.send(None)
    assert parts(request) == [((0,), "Step"), ((1,), "Sleep"), ((2,), "Sleep")]
    program = restore(snapshot(program))  # at every part: saved, restored, the next outcome delivered
    request = program.send(Delivery((2,), None))
    assert parts(request) == [((0,), None), ((1,), None)]  # the same parkings as before: no new request
    program = restore(snapshot(program))
    request = program.send(Delivery((0,), 3))
    assert parts(request) == [((1,), None)]
    program = restore(snapshot(program))
    request = program.send(Delivery((1,), "slept"))  # the gather is done: the program goes on to its race
    assert parts(request) == [((0,), "Sleep"), ((1,), "Sleep")]
    with pytest.raises(StopIteration) as end:
        restore(snapshot(program)).send(Delivery((1,), None))
    assert end.value.value == [[3, "slept", None], (1, None)]


def test_a_step_failure_reaches_the_child_that_awaits_it_and_gather_raises_it() -> None:
    @durable
    async def catches() -> Any:
        try:
            await sleep(1)
        except KeyError as exc:
            return f"caught {exc}"

    @durable
    async def program() -> Any:
        caught = await gather(catches(), sleep(2))
        try:
            await gather(step(add, 1, 1), sleep(3))
        except ValueError as exc:
            return [caught, str(exc)]

    coro = program()
    coro.send(None)
    coro.send(Delivery((0,), error=KeyError("k")))
    with pytest.raises(StopIteration) as end:
        coro.send(Delivery((1,), None))
        coro.send(Delivery((0,), error=ValueError("step failed")))
    assert end.value.value == [["caught 'k'", None], "step failed"]


def test_race_cancels_the_losers_which_may_clean_up_with_transient_awaits_only() -> None:
    log: list[str] = []

    @durable
    async def slow_child(n: int) -> None:
        try:
            await sleep(n)
        except asyncio.CancelledError:
            log.append(f"cancelled {n}")
            try:
                await sleep(1)  # durable: refused during the clean-up
            except RuntimeError as exc:
                log.append(str(exc).split(":")[0])
            raise

    @durable
    async def program() -> Any:
        return await race(slow_child(10), slow_child(20), sleep(5))

    coro = program()
    assert len(coro.send(None).parts) == 3
    with pytest.raises(StopIteration) as end:
        coro.send(Delivery((2,), None))
    assert end.value.value == (2, None)
    assert log == ["cancelled 10", "a durable await while runtime.race() cancels this awaitable",
                   "cancelled 20", "a durable await while runtime.race() cancels this awaitable"]


@durable
async def quick(n: int) -> int:
    return n


def test_a_child_that_ends_before_its_first_durable_await_decides_a_race_at_once() -> None:
    for combinator, expected in [(race(quick(1), sleep(100)), (0, 1)), (race(quick(1), quick(2)), (0, 1)),
                                 (gather(quick(1), quick(2)), [1, 2])]:
        with pytest.raises(StopIteration) as end:
            combinator.send(None)
        assert end.value.value == expected


def test_an_error_thrown_in_from_outside_cancels_the_children_and_is_raised() -> None:
    seen: list[str] = []

    @durable
    async def child() -> None:
        try:
            await sleep(1)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    combinator = gather(child(), sleep(2))
    combinator.send(None)
    with pytest.raises(ValueError, match="refused by the runner"):
        combinator.throw(ValueError("refused by the runner"))
    assert seen == ["cancelled"]


def test_an_outcome_for_a_part_that_is_not_pending_is_refused() -> None:
    coro = hand_program()
    coro.send(None)
    with pytest.raises(RuntimeError, match=r"got an outcome for part \[7\], which is not pending"):
        coro.send(Delivery((7,), None))


def test_gather_takes_durable_awaitables_only_and_closes_the_coroutines_it_refuses() -> None:
    async def plain() -> None:
        await asyncio.sleep(0)

    coro = plain()
    with pytest.raises(TypeError, match=r"not coroutine '.*plain', which is not durable"):
        gather(step(add, 1, 1), coro)
    assert coro.cr_frame is None  # closed: no "never awaited" warning
    with pytest.raises(TypeError, match="needs at least one awaitable"):
        race()
    twice = sleep(1)
    with pytest.raises(TypeError, match="the same awaitable twice"):
        gather(twice, twice)
    combinator = gather(sleep(1))
    combinator.__await__()
    with pytest.raises(RuntimeError, match="cannot reuse an already awaited runtime.gather"):
        combinator.__await__()


def test_a_tampered_saved_combinator_is_a_corrupt_snapshot() -> None:
    combinator = gather(sleep(1), sleep(2))
    combinator.send(None)
    state = combinator.__getstate__()
    for bad in ({**state, "kind": "exec"}, {**state, "order": [5]}, {**state, "states": ["run", "run"]},
                {**state, "keys": [[[1]], []]}, {**state, "children": [object(), None]}, {"kind": "gather"}):
        with pytest.raises(CorruptSnapshotError, match="does not have the shape of one"):
            Combinator.__new__(Combinator).__setstate__(bad)


def test_a_combinator_with_children_in_transient_awaits_cannot_be_saved() -> None:
    @durable
    async def transient() -> None:
        await asyncio.sleep(0)

    @durable
    async def program() -> Any:
        return await gather(transient(), sleep(1))

    coro = program()
    assert coro.send(None) is None  # the child's loop turn, passed to the task
    with pytest.raises(Exception, match="has children in transient awaits"):
        snapshot(coro)
    coro.close()


# ---------------------------------------------------------------------- programs on the runner and the worker


def test_gather_race_and_nesting_run_on_every_store(env: Any) -> None:
    ex = env.runner.start(env.ref("gathers"), [5])
    env.worker.run_until_idle()  # sleeps to the race's wait, then its sleep wins (no signal)
    assert result(env, ex.id) == [[2, 11, None, 13], 1, None, [6, (0, 8)]]
    assert [(s.index, s.status) for s in env.store.steps(ex.id)] == [(i, "done") for i in range(5)]


def test_a_signal_wins_a_race_against_a_long_sleep(env: Any) -> None:
    ex = env.runner.start(env.ref("approval"), [])
    env.runner.claim_and_advance()  # (not run_until_idle: it would move the clock on to the sleep's end)
    row = env.store.get(ex.id)
    assert row.status == WAITING and row.waiting_for == "approve" and row.request["kind"] == "all"
    env.store.send_signal(ex.id, "approve", {"by": "ada"}, now=env.clock.now())
    env.runner.claim_and_advance()
    assert result(env, ex.id) == ["approved", {"by": "ada"}]


def test_gather_raises_the_first_failure_and_cancels_the_rest_or_returns_it(env: Any) -> None:
    raising = env.runner.start(env.ref("fails"), [False])
    returning = env.runner.start(env.ref("fails"), [True])
    env.worker.run_until_idle()
    row = env.store.get(raising.id)
    assert row.status == FAILED and "KeyError" in row.error
    got = result(env, returning.id)
    assert got[0] == 2 and isinstance(got[1], KeyError) and got[2] is None


def test_a_failing_step_of_a_gather_is_retried_on_its_own_timer(env: Any, programs: Any) -> None:
    programs.FAILS["left"] = 2
    ex = env.runner.start(env.ref("retries"), [])
    env.worker.run_until_idle()
    assert result(env, ex.id) == [1, None]
    [record] = env.store.steps(ex.id)
    assert record.attempts == 3 and record.status == "done"
    assert [e[2] for e in env.events if e[1] == "retry"] == [
        "step 0 failed (ConnectionError: flaky 1); attempt 2 of 3 in 5 s",
        "step 0 failed (ConnectionError: flaky 1); attempt 3 of 3 in 10 s"]


def test_a_lost_race_abandons_its_step_and_cancels_its_coroutines(env: Any) -> None:
    ex = env.runner.start(env.ref("races_coroutines"), [])
    env.worker.run_until_idle()
    assert result(env, ex.id) == (1, 42)
    ex = env.runner.start(env.ref("gathers"), [1])
    env.worker.run_until_idle()
    assert result(env, ex.id)[3] == [6, (0, 8)]


def test_a_step_that_lost_a_race_is_recorded_as_abandoned_when_the_program_moves_on(env: Any) -> None:
    ex = env.runner.start(env.ref("abandons"), [])
    env.worker.run_until_idle()
    assert result(env, ex.id) == 1
    assert [(s.index, s.status, s.attempts) for s in env.store.steps(ex.id)] == [(0, "abandoned", 0)]


def test_cancelling_a_run_parked_on_a_gather_with_a_step_runs_its_finally_blocks(env: Any, programs: Any) -> None:
    programs.FAILS["left"] = 10
    ex = env.runner.start(env.ref("parks_with_a_step"), [[]])
    env.runner.claim_and_advance()
    row = env.store.get(ex.id)
    assert row.status == WAITING and row.request["parts"][0]["retry_at"] == row.wake_at
    env.store.request_cancel(ex.id, now=env.clock.now())
    env.worker.run_until_idle()
    row = env.store.get(ex.id)
    assert row.status == "cancelled" and row.error == "cancelled", row.error


def test_a_generator_program_that_yields_a_gather_gets_a_type_error(env: Any) -> None:
    ex = env.runner.start(env.ref("yields_a_gather"), [])
    env.worker.run_until_idle()
    assert "is for async def programs (await it)" in result(env, ex.id)


def test_a_race_and_a_gather_of_waits_for_several_signal_names(env: Any) -> None:
    ex = env.runner.start(env.ref("two_signals"), [])
    env.runner.claim_and_advance()
    row = env.store.get(ex.id)
    assert row.status == WAITING and row.waiting_for is None and row.waits == ["approve", "reject"]
    env.store.send_signal(ex.id, "unrelated", 0, now=env.clock.now())
    assert env.runner.claim_and_advance() is None  # not woken by another name
    env.store.send_signal(ex.id, "reject", {"why": "no"}, now=env.clock.now())
    env.runner.claim_and_advance()
    row = env.store.get(ex.id)
    assert row.waits == ["a", "b"]  # (the names once each; two parts wait for "a")
    for name, payload in [("b", 2), ("a", 1), ("a", 3)]:
        env.store.send_signal(ex.id, name, payload, now=env.clock.now())
    env.runner.claim_and_advance()
    assert result(env, ex.id) == [(1, {"why": "no"}), [1, 2, 3]]  # each signal once, in the order sent
    assert env.store.get(ex.id).waits is None


@contextlib.contextmanager
def finished_on_a_worker(backend: Any, ref: str, args: list[Any], *, concurrency: int) -> Iterator[Any]:
    """Run ``ref(*args)`` on a real worker (``Worker.run`` in a thread of its own, steps on its pool) until it
    finishes: ``(the store, the run's id, the seconds it took)``; the worker is stopped and the store closed
    after the block."""
    store = backend.open()
    try:
        worker = Worker(store, concurrency=concurrency, poll=0.05)
        ex = worker.runner.start(ref, args)
        thread = threading.Thread(target=worker.run)
        started = time.monotonic()
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while store.get(ex.id).status != FINISHED and time.monotonic() < deadline:
                time.sleep(0.02)
            took = time.monotonic() - started
        finally:
            worker.stop.set()
            thread.join(10)
        yield store, ex.id, took
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_on_the_worker_a_sleep_wins_a_race_against_a_step_still_running(backend: Any, programs: Any) -> None:
    with finished_on_a_worker(backend, f"{programs.__name__}:races_a_slow_step", [1.5], concurrency=2) as (
            store, execution_id, took):
        assert values.load_value(store.get(execution_id).result) == (1, None)
        assert took < 1.2, took  # the sleep's 0.3 s, not the step's 1.5 s
        [record] = store.steps(execution_id)
        assert record.status == "abandoned" and record.result is None  # (its outcome, once it ended, dropped)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_the_worker_runs_the_steps_of_a_gather_at_the_same_time(backend: Any, programs: Any) -> None:
    with finished_on_a_worker(backend, f"{programs.__name__}:in_parallel", [0.4], concurrency=4) as (
            store, execution_id, took):
        got = values.load_value(store.get(execution_id).result)
        assert [x for x, _ in got] == [0, 1, 2]
        assert len({thread_name for _, thread_name in got}) == 3  # three pool threads at once
        assert took < 1.0, took  # not 3 × 0.4 s one after another


# ---------------------------------------------------------------------- crashes at every commit


def test_gather_and_race_survive_a_crash_at_every_point(programs: Any) -> None:
    from runtime.testing import assert_survives_crashes
    report = assert_survives_crashes(programs.gathers, 5, points="all", fresh=1)
    assert report.outcome.result() == [[2, 11, None, 13], 1, None, [6, (0, 8)]]
    assert report.crash_points == report.possible_points >= 20 and report.fresh_points == 1
    print(report.summary())


def test_the_recorded_order_of_outcomes_is_the_order_a_resumed_run_sees() -> None:
    """Hand-driven twin of a runner that dies after committing an outcome and before delivering it: the
    resumed run, given the committed outcome first, ends the same as the run that went on."""
    @durable
    async def order() -> Any:
        seen = []

        @durable
        async def note(i: int) -> None:
            await sleep(i)
            seen.append(i)
        await gather(note(1), note(2), note(3))
        return seen

    live = order()
    live.send(None)
    saved = snapshot(live)
    for key in [(2,), (0,)]:
        live.send(Delivery(key, None))
    resumed = restore(saved)
    for key in [(2,), (0,)]:
        resumed.send(Delivery(key, None))
    ends = []
    for coro in (live, resumed):
        with pytest.raises(StopIteration) as end:
            coro.send(Delivery((1,), None))
        ends.append(end.value.value)
    assert ends == [[3, 1, 2], [3, 1, 2]]


def test_requests_given_to_gather_are_reported_once() -> None:
    combinator = gather(sleep(1), wait("x"), step(add, 1, 1))
    request = combinator.send(None)
    assert [type(p.request) for p in request.parts] == [Sleep, Wait, Step]
    again = combinator.send(Delivery((0,), None))
    assert [p.request for p in again.parts] == [None, None]
    asyncio.run(asyncio.sleep(0))  # (no loop was needed)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_malformed_composite_request_in_the_store_fails_the_run_as_damaged(env: Any) -> None:
    from runtime.programs.records import execution_parts
    from runtime.programs.store.base import Change
    from runtime.values import seals

    ex = env.runner.start(env.ref("approval"), [])
    env.runner.claim_and_advance()
    row = env.store.get(ex.id)
    bad = {"kind": "all", "parts": [{"key": [0], "kind": "wait", "signal": 5}]}
    mac = seals.seal("execution", execution_parts(row.id, row.function, row.args, row.snapshot, bad,
                                                  row.steps_started, None))  # (sealed: a writer's bug, not noise)
    env.store.commit(Change(row.id, row.version, fields={"request": bad, "mac": mac}), now=env.clock.now())
    env.store.send_signal(ex.id, "approve", {"by": "ada"}, now=env.clock.now())
    env.runner.claim_and_advance()
    row = env.store.get(ex.id)
    assert row.status == FAILED and "its composite request is not one" in row.error, row.error


# ---------------------------------------------------------------------- the kit's seeded order of steps


def test_the_kit_runs_the_steps_of_a_gather_in_an_order_drawn_from_its_seed(programs: Any) -> None:
    from runtime.testing import Simulation

    def order(seed: int) -> tuple[int, ...]:
        programs.NOTES.clear()
        assert Simulation(seed=seed).run(programs.noted).result() == [0, 1, 2]  # (values in argument order)
        return tuple(programs.NOTES)

    orders = {seed: order(seed) for seed in range(8)}
    assert all(sorted(o) == [0, 1, 2] for o in orders.values()), orders
    assert len(set(orders.values())) > 1, orders
    assert [order(seed) for seed in range(8)] == list(orders.values())  # the same seed, the same order
    programs.NOTES.clear()
    arrived = Simulation(seed=5).run(programs.arrivals).result()
    assert arrived == programs.NOTES == list(orders[5])  # the program sees the outcomes in that order


def test_a_seeded_order_survives_a_crash_at_every_point_and_replays_in_a_fresh_interpreter(programs: Any) -> None:
    """A resumed run (a forked world, a new engine) goes on in the order the fault-free run took: arrivals
    returns the order its children saw their steps end, so any other order after a crash is a finding (an
    engine whose draws depended on its own history, not on the choice at hand, fails for some of these)."""
    from runtime.testing import Simulation, assert_survives_crashes

    def order(seed: int) -> list[int]:
        programs.NOTES.clear()
        Simulation(seed=seed).run(programs.noted)
        return list(programs.NOTES)

    seeds = [seed for seed in range(30) if order(seed) != [0, 1, 2]][:4]
    programs.NOTES.clear()
    report = assert_survives_crashes(programs.noted, seed=seeds[0], points="all", fresh=2)
    assert report.crash_points == report.possible_points >= 10 and report.fresh_points == 2
    for number, seed in enumerate(seeds):
        report = assert_survives_crashes(programs.arrivals, seed=seed, points="all", fresh=1 if number == 0 else 0)
        assert report.crash_points == report.possible_points >= 10
        assert report.outcome.result() == order(seed) != [0, 1, 2]
